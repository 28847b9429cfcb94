//! Configured with `@price`: what single host calls cost in this host (scripts/bench, "core
//! costs"), timed inside a request's headers callback: each call RUNS times in a row with the
//! clock read around the run, and of the means over REQUESTS requests the lowest is logged
//! (the least disturbed by whatever else the machine runs). Calls in a row find the host's
//! caches warm: these are lower bounds, good for comparing calls with each other.

use std::cell::RefCell;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType};

const RUNS: u64 = 64;
const REQUESTS: u32 = 400;

/// One host call, as a closure to time.
type Op = Box<dyn FnMut()>;

struct Prices {
    seen: u32,
    best: Vec<(&'static str, u64)>,
}

thread_local! {
    static PRICES: RefCell<Prices> = const { RefCell::new(Prices { seen: 0, best: Vec::new() }) };
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn time(op: &mut dyn FnMut()) -> u64 {
    let t0 = now_ns();
    for _ in 0..RUNS {
        op();
    }
    (now_ns() - t0) / RUNS
}

pub fn request() {
    let h = MapType::HttpRequestHeaders;
    let mut ops: Vec<(&'static str, Op)> = vec![
        (
            "clock (get_current_time)",
            Box::new(|| {
                let _ = hostcalls::get_current_time();
            }),
        ),
        (
            "read one header (authorization)",
            Box::new(move || {
                let _ = hostcalls::get_map_value_bytes(h, "authorization");
            }),
        ),
        (
            "read one absent header",
            Box::new(move || {
                let _ = hostcalls::get_map_value_bytes(h, "x-absent");
            }),
        ),
        (
            "read all headers (SDK get_map_bytes)",
            Box::new(move || {
                let _ = hostcalls::get_map_bytes(h);
            }),
        ),
        (
            "set a header",
            Box::new(move || {
                let _ = hostcalls::set_map_value(h, "x-subject", Some("00u1abcdefghijklmnop"));
            }),
        ),
        (
            "remove an absent header",
            Box::new(move || {
                let _ = hostcalls::set_map_value(h, "x_subject_absent", None);
            }),
        ),
        (
            "set a filter-state property",
            Box::new(|| {
                let _ = hostcalls::set_property(vec!["oidcgate.client_id"], Some(b"demo-client"));
            }),
        ),
    ];
    let means: Vec<(&'static str, u64)> = ops
        .iter_mut()
        .map(|(n, op)| (*n, time(op.as_mut())))
        .collect();
    PRICES.with(|p| {
        let mut p = p.borrow_mut();
        if p.best.is_empty() {
            p.best = means;
        } else {
            for ((_, best), (_, mean)) in p.best.iter_mut().zip(&means) {
                *best = (*best).min(*mean);
            }
        }
        p.seen += 1;
        if p.seen == REQUESTS {
            // The lines bench/core-filter logs, so that the bench reads both alike.
            let runs = RUNS * u64::from(REQUESTS);
            for (name, ns) in &p.best {
                let line = format!("core-bench host call: {name} {ns} ns/op {runs} runs");
                let _ = hostcalls::log(LogLevel::Warn, &line);
            }
            let _ = hostcalls::log(LogLevel::Warn, "core-bench done");
        }
    });
}
