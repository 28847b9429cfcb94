//! An empty proxy-wasm HTTP filter: the cost of being a wasm filter at all (VM entry per
//! callback, context creation and teardown), with no work of its own. `scripts/bench` uses it
//! as the floor oidcgate's hot paths are measured against.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EmptyRoot) });
}}

struct EmptyRoot;

impl Context for EmptyRoot {}

impl RootContext for EmptyRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EmptyHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Every `HttpContext` callback keeps its default: `Action::Continue`.
struct EmptyHttp;

impl Context for EmptyHttp {}

impl HttpContext for EmptyHttp {}
