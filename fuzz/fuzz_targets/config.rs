//! The plugin configuration: any bytes an operator (or a broken control plane) may send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidcgate::config::Config;
use oidcgate::gate::Gate;

fuzz_target!(|data: &[u8]| {
    match Config::parse(data) {
        Ok(config) => {
            // Everything derived at configure time.
            let gate = Gate::new(config);
            let _ = gate.strip_headers();
            let _ = gate.config().accept.realm.len();
        }
        Err(e) => {
            // The error is logged: it must render, and name a key.
            assert!(!e.to_string().is_empty());
            assert!(!e.key.is_empty());
        }
    }
});
