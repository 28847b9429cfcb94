//! The proxy-wasm adapter: contexts, callouts and timers. It moves bytes between the host
//! and the core ([`crate::lifecycle::Lifecycle`]) and decides nothing itself.

mod host;
mod http;
mod metrics;
mod raw;
mod worker;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use log::{error, info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::config::Config;
use crate::gate::Gate;
use crate::lifecycle::Lifecycle;
use host::HostStore;
use worker::{deliver, pump, Shared, Wake, Worker};

/// Parked requests are re-checked this often: how quickly a request on one worker sees a
/// fetch finished by another, and how precisely deadlines are kept.
const TICK: Duration = Duration::from_millis(20);

proxy_wasm::main! {{
    // Also installs a panic hook that logs at critical level before the VM aborts.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root { context_id, worker: None, metrics: None })
    });
}}

struct Root {
    context_id: u32,
    worker: Option<Shared>,
    metrics: Option<metrics::Metrics>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(worker) = &self.worker {
            deliver(worker, self.context_id, token, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                error!("{e}");
                return false;
            }
        };
        info!("configured for issuer {}", config.idp.issuer);
        let wake = host_wake(&config);
        let mut gate = Gate::new(config);
        // Never waits on the IdP: the first tick starts discovery in the background.
        gate.init_shared(&mut HostStore, host::now_ms().unwrap_or(0));
        let mut life = Lifecycle::new(gate);
        if wake != Wake::AnyContext {
            life.withhold_bodies();
        }
        self.worker = Some(Rc::new(RefCell::new(Worker::new(
            life,
            self.context_id,
            wake,
        ))));
        self.metrics = Some(metrics::Metrics::define());
        self.set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let Some(worker) = &self.worker else { return };
        {
            let mut w = worker.borrow_mut();
            w.bury();
            let now = w.now_ms();
            w.life.on_tick(&mut HostStore, now);
        }
        pump(worker, self.context_id, false);
        if let Some(m) = &mut self.metrics {
            let mut w = worker.borrow_mut();
            let counters = w.life.gate().counters();
            m.flush(w.life.tally(), counters);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(http::Request::new(
            context_id,
            self.worker.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// How this host lets the filter act on parked requests, and what that means for this
/// configuration, said once at configure time (kong/README.md lists the differences).
fn host_wake(config: &Config) -> Wake {
    let poll = config.idp.wait_upstream.clone();
    if host::switches_contexts() {
        if let Some(p) = &poll {
            warn!("wait_upstream {p} is not used: this host resumes a request from any context (it is for ngx_wasm_module / Kong)");
        }
        return Wake::AnyContext;
    }
    match &poll {
        Some(p) => info!("this host (ngx_wasm_module) acts on a request only in its own callbacks: a request waiting for an IdP answer that another request or worker fetches polls wait_upstream {p}"),
        None => warn!("this host (ngx_wasm_module) acts on a request only in its own callbacks and wait_upstream is not set: a request that would wait for an IdP answer another request or worker fetches (the first requests after start, concurrent first requests of one client) is answered 503 with Retry-After instead (kong/README.md)"),
    }
    if config.reads_body() {
        warn!("this host does not hand a request's body to the filter while its headers are held: a client credential only in the body is refused (401)");
    }
    if !config.policies.is_empty() {
        info!("this host has no route metadata: policies are chosen by `routes` only");
    }
    Wake::OwnCallbacks { poll }
}
