//! The floors `scripts/bench` measures oidcgate against, in one proxy-wasm filter:
//!
//! - with no configuration, an empty filter: every callback returns `Continue`. The cost of
//!   being a wasm filter at all (VM entry per callback, context creation and teardown).
//! - configured with a comma-separated list of header names, the host calls any filter doing
//!   oidcgate's job must make on a cached request, and nothing else: read `Authorization`,
//!   then set each listed header (the credential header to the value read, the others to a
//!   short constant). What is left between this and oidcgate is oidcgate's own work.
//! - configured with `@price`, the cost of single host calls (`price.rs`).

use std::rc::Rc;

mod price;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { writes: Rc::from([]) })
    });
}}

struct Root {
    writes: Rc<[String]>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.writes = String::from_utf8_lossy(&config)
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect();
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            writes: self.writes.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    writes: Rc<[String]>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.writes.is_empty() {
            return Action::Continue;
        }
        if self.writes.first().is_some_and(|w| w == "@price") {
            price::request();
            return Action::Continue;
        }
        let credential = hostcalls::get_map_value(MapType::HttpRequestHeaders, "authorization")
            .ok()
            .flatten()
            .unwrap_or_default();
        for name in self.writes.iter() {
            // Extra host calls, to measure a floor with them: `@clock`, `@headers` (every
            // header at once), `-name` (remove a header), `=name` (set a filter-state
            // property).
            match name.as_str() {
                "@clock" => {
                    let _ = hostcalls::get_current_time();
                    continue;
                }
                "@headers" => {
                    let _ = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
                    continue;
                }
                _ => {}
            }
            if let Some(header) = name.strip_prefix('-') {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, header, None);
                continue;
            }
            if let Some(property) = name.strip_prefix('=') {
                let _ = hostcalls::set_property(vec![property], Some(b"client-1"));
                continue;
            }
            let value = match name.as_str() {
                "authorization" => credential.as_str(),
                _ => "http://127.0.0.1/oauth2/default",
            };
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
        }
        Action::Continue
    }
}
