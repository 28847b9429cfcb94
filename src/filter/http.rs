//! One request: read the credential, strip it, hand it to the core, and apply the verdict —
//! or wait, parked, until an answer or the timer decides it.
//!
//! Envoy's `allow_on_headers_stop_iteration` (Wasm `PluginConfig`, Envoy ≥ 1.35) changes what
//! pausing on headers means. Without it, the body is held back from this filter until the
//! request is resumed, and resuming sends the headers on: the verdict is reached on headers
//! and query, and a credential only in the body is refused. With it, the body reaches the
//! filter while the headers wait, and a body callback that continues sends the headers on
//! too; so an undecided request holds its body back, and a request whose credential can only
//! be in its body waits for it ([`crate::body_wait`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use super::host::{self, HostStore};
use super::raw;
use super::worker::{allow, deliver, keep_waiting, pump, Shared};
use crate::config::PolicyId;
use crate::credentials::{self, RequestView, MAX_SEARCHED_BODY};
use crate::log_budget::bounded;
use crate::outcome::{Denial, Verdict};

/// Whether this VM said why a body it cannot read before forwarding was not searched.
static BODY_WARNED: AtomicBool = AtomicBool::new(false);

pub struct Request {
    context_id: u32,
    worker: Option<Shared>,
    /// Where `Drop` reports this context gone, without borrowing the worker. Set only once
    /// the request waits: a request decided at once leaves nothing behind to clean up.
    gone: Option<Rc<RefCell<Vec<u32>>>>,
    /// The body may hold credential fields: buffer it and strip them before it goes on.
    /// Holds the content type, read at headers time.
    strip_body: Option<String>,
    /// The headers are held until the body shows a credential.
    searching_body: bool,
    /// How much of the body is buffered so far.
    body_size: usize,
    /// The policy the request is judged by.
    policy: PolicyId,
}

/// How a request decided in a body or trailers callback goes on.
enum Decided {
    Allowed,
    Denied,
    Waiting,
}

impl Request {
    pub fn new(context_id: u32, worker: Option<Shared>) -> Request {
        Request {
            context_id,
            worker,
            gone: None,
            strip_body: None,
            searching_body: false,
            body_size: 0,
            policy: 0,
        }
    }

    /// The whole body is buffered: reads it under this request's policy and puts it back
    /// without its credential fields; what it held, for the caller to decide on.
    fn take_buffered_body(&mut self, worker: &Shared) -> credentials::Extracted {
        let content_type = self.strip_body.take();
        let body = host::request_body(self.body_size);
        let view = RequestView {
            content_type: content_type.as_deref(),
            ..RequestView::default()
        };
        let extracted = {
            let w = worker.borrow();
            let config = w.life.gate().config();
            credentials::extract(config, config.policy(self.policy), &view, body.as_deref())
        };
        if let Some(new_body) = &extracted.new_body {
            host::replace_request_body(self.body_size, new_body);
        }
        extracted
    }

    /// Extracts the credential from the headers and query, then decides, or waits for the
    /// body when only it can hold the credential.
    ///
    /// Nothing reaches the upstream but through [`allow`], which strips every caller copy
    /// of the credential and of the headers the filter writes.
    fn authenticate(&mut self, worker: &Shared, end_of_stream: bool) -> Action {
        if let Some(name) = self.unremovable_header(worker) {
            let verdict = {
                let mut w = worker.borrow_mut();
                let now = w.now_ms();
                let why = format!(
                    "carries `{name}`, a header the filter sets, which this host cannot remove"
                );
                w.life
                    .on_refused_because(self.context_id, Denial::HeaderNotRemovable, why, now)
            };
            self.apply_here(worker, &verdict);
            return Action::Pause;
        }
        let (reads_query, reads_body, routed) = {
            let w = worker.borrow();
            let config = w.life.gate().config();
            (
                config.reads_query(),
                config.reads_body(),
                !config.policies.is_empty(),
            )
        };
        // Only the headers this configuration needs: every read is a host call, and one that
        // returns a value costs Envoy ~10,000 instructions (it calls into the VM to allocate
        // it), five times a read that finds nothing. So the route's metadata is asked first:
        // a route that names its policy needs no `:path` (unless the query is searched).
        let authorization = host::request_header("authorization");
        let named = match routed {
            true => host::route_policy(),
            false => None,
        };
        let path = match reads_query || (routed && named.is_none()) {
            true => host::request_header(":path").unwrap_or_default(),
            false => String::new(),
        };
        if routed {
            match self.route(worker, named, &path) {
                Some(policy) => self.policy = policy,
                None => return Action::Pause,
            }
        }
        let path = if reads_query { path } else { String::new() };
        let content_type = match reads_body {
            true => host::request_header("content-type"),
            false => None,
        };
        let view = RequestView {
            authorization: authorization.as_deref(),
            path: &path,
            content_type: content_type.as_deref(),
        };
        let (extracted, public) = {
            let w = worker.borrow();
            let config = w.life.gate().config();
            let policy = config.policy(self.policy);
            if !end_of_stream && credentials::needs_body(config, policy, &view) {
                self.strip_body = content_type.clone();
            }
            (
                credentials::extract(config, policy, &view, None),
                policy.public,
            )
        };

        if let Some(p) = &extracted.new_path {
            host::set_request_header(":path", p);
        }
        if self.strip_body.is_some() {
            // The body will shrink. Where the headers are held until the body is read, the
            // new length is set then; otherwise Envoy re-frames it (chunked).
            host::remove_request_header("content-length");
        }

        let verdict = match extracted.credential {
            // Whatever the caller sent was stripped above; nothing is needed here.
            _ if public => worker.borrow_mut().life.on_public(),
            Ok(credential) => match self.decide(worker, &credential) {
                Some(verdict) => verdict,
                None => return Action::Pause,
            },
            Err(Denial::Missing) if self.strip_body.is_some() => {
                let waits = {
                    let mut w = worker.borrow_mut();
                    let now = w.now_ms();
                    w.life.await_body(self.context_id, now)
                };
                if waits {
                    self.searching_body = true;
                    self.gone = Some(worker.borrow().graveyard());
                    return Action::Pause;
                }
                if !BODY_WARNED.swap(true, Ordering::Relaxed) {
                    info!("a request body may carry client credentials, but this host does not deliver a held request's body: set allow_on_headers_stop_iteration: true in the Wasm PluginConfig, or send them in Authorization: Basic (logged once)");
                }
                self.refuse(worker, Denial::Missing)
            }
            Err(denial) => self.refuse(worker, denial),
        };
        match verdict {
            Verdict::Allow(headers) => {
                let strip = worker.borrow().life.gate().strip_headers();
                allow(&headers, &strip, false);
                Action::Continue
            }
            Verdict::Deny(denial) => {
                let realm = worker.borrow().life.gate().config().accept.realm.clone();
                host::deny(&denial, &realm);
                Action::Pause
            }
        }
    }

    /// The policy this request is judged by: the one its Envoy route names in metadata, else
    /// the first rule of `routes` it matches, else the top level. `None` when the route names
    /// a policy that does not exist: answered 500, never judged by a weaker one.
    fn route(&self, worker: &Shared, named: Option<String>, path: &str) -> Option<PolicyId> {
        let picked = {
            let w = worker.borrow();
            let config = w.life.gate().config();
            let id = match &named {
                Some(name) => config.policy_named(name),
                None => Some(
                    config
                        .routes
                        .select(
                            path,
                            || host::request_header(":authority").unwrap_or_default(),
                            || host::request_header(":method").unwrap_or_default(),
                        )
                        .unwrap_or(0),
                ),
            };
            // The top level is left unwritten (`-` in the access log): a host call saved.
            if let Some(policy) = id.filter(|p| *p != 0) {
                host::record_policy(config.policy_name(policy));
            }
            id
        };
        if picked.is_none() {
            let name = named.as_deref().map(bounded).unwrap_or_default();
            error!("the route names policy `{name}`, which is not in `policies`: refused (500)");
            let verdict = self.refuse(worker, Denial::UnknownPolicy);
            let realm = worker.borrow().life.gate().config().accept.realm.clone();
            if let Verdict::Deny(denial) = verdict {
                host::deny(&denial, &realm);
            }
        }
        picked
    }

    /// Hands `credential` to the core: its verdict, or `None` when the request is parked.
    fn decide(&mut self, worker: &Shared, credential: &credentials::Credential) -> Option<Verdict> {
        let now = host::now_ms();
        let decided = {
            let mut w = worker.borrow_mut();
            w.bury();
            w.life.on_request(
                &mut HostStore,
                self.context_id,
                credential,
                self.policy,
                now,
            )
        };
        if decided.is_some() {
            return decided;
        }
        // Parked in the core: it must hear if this context goes away.
        self.gone = Some(worker.borrow().graveyard());
        let verdict = pump(worker, self.context_id, false);
        if verdict.is_none() {
            // Where only its own callouts can wake it, it needs one (or is answered now).
            keep_waiting(worker, self.context_id, false);
        }
        verdict
    }

    /// In a host whose header removal does not hold (ngx_wasm_module forwards a "removed"
    /// header: kong/README.md), a caller's copy of a header the filter sets cannot be taken
    /// out: the first such header, for the request to be refused (fails closed). `None` in
    /// Envoy, where removal holds, without a host call.
    fn unremovable_header(&self, worker: &Shared) -> Option<String> {
        let strip = {
            let w = worker.borrow();
            if !w.own_callbacks_only() {
                return None;
            }
            w.life.gate().strip_headers()
        };
        // A host that cannot list the headers gives nothing to check: refuse, as a spoofed
        // header could not be told from none.
        let names = match raw::header_names(MapType::HttpRequestHeaders) {
            Ok(names) => names,
            Err(_) => return Some("(the request's headers could not be read)".to_string()),
        };
        names
            .into_iter()
            .find(|n| n != "authorization" && strip.iter().any(|s| s == n))
    }

    fn refuse(&self, worker: &Shared, denial: Denial) -> Verdict {
        let mut w = worker.borrow_mut();
        let now = w.now_ms();
        w.life.on_refused(self.context_id, denial, now)
    }

    /// The body the headers were held for is complete: takes the credential from it, strips
    /// it, gives the body its new length, and decides.
    fn decide_on_body(&mut self, worker: &Shared) -> Decided {
        self.searching_body = false;
        let extracted = self.take_buffered_body(worker);
        if let Some(new_body) = &extracted.new_body {
            // The headers are still held: the new length can be given.
            host::set_request_header("content-length", &new_body.len().to_string());
        }
        let verdict = match extracted.credential {
            Ok(credential) => match self.decide(worker, &credential) {
                Some(verdict) => verdict,
                None => return Decided::Waiting,
            },
            Err(denial) => self.refuse(worker, denial),
        };
        self.apply_here(worker, &verdict)
    }

    fn apply_here(&self, worker: &Shared, verdict: &Verdict) -> Decided {
        match verdict {
            Verdict::Allow(headers) => {
                let strip = worker.borrow().life.gate().strip_headers();
                allow(headers, &strip, false);
                Decided::Allowed
            }
            Verdict::Deny(denial) => {
                let realm = worker.borrow().life.gate().config().accept.realm.clone();
                host::deny(denial, &realm);
                Decided::Denied
            }
        }
    }

    /// A body too large to search: refused as carrying no credential.
    fn refuse_large_body(&mut self, worker: &Shared) {
        self.searching_body = false;
        self.strip_body = None;
        worker.borrow_mut().life.on_body(self.context_id);
        info!(
            "a request body over {MAX_SEARCHED_BODY} bytes is not searched for credentials (ctx={})",
            self.context_id
        );
        let verdict = self.refuse(worker, Denial::Missing);
        self.apply_here(worker, &verdict);
    }
}

impl Context for Request {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(worker) = &self.worker {
            // A token fetch this request sent: it wakes every request it unblocked.
            deliver(worker, self.context_id, token, body_size);
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(worker) = self.worker.clone() else {
            host::deny_unconfigured();
            return Action::Pause;
        };
        self.authenticate(&worker, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(worker) = self.worker.clone() else {
            return Action::Continue;
        };
        self.body_size = body_size;
        if self.searching_body {
            worker.borrow_mut().life.on_body(self.context_id);
            if body_size > MAX_SEARCHED_BODY {
                self.refuse_large_body(&worker);
                return Action::Pause;
            }
            if !end_of_stream {
                return Action::Pause;
            }
            return match self.decide_on_body(&worker) {
                Decided::Allowed => Action::Continue,
                Decided::Denied | Decided::Waiting => Action::Pause,
            };
        }
        if self.strip_body.is_some() && end_of_stream {
            self.take_buffered_body(&worker);
        }
        // Continuing would send the held headers on before the verdict.
        let undecided = worker.borrow().life.is_undecided(self.context_id);
        if undecided || (self.strip_body.is_some() && !end_of_stream) {
            // Buffer until the whole body is here (the end of the stream, or trailers).
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // HTTP/2 and chunked HTTP/1 can end a body with trailers: the last body callback was
        // not the end of the stream, so the buffered body is handled here. Envoy 1.40 drops
        // a buffered body when the trailers callback just continues (the router sees the
        // trailers only); pausing and resuming sends the body, then the trailers.
        let Some(worker) = self.worker.clone() else {
            return Action::Continue;
        };
        if self.searching_body {
            if let Decided::Allowed = self.decide_on_body(&worker) {
                host::resume();
            }
            return Action::Pause;
        }
        let buffered = self.strip_body.is_some();
        if buffered {
            self.take_buffered_body(&worker);
        }
        if worker.borrow().life.is_undecided(self.context_id) {
            return Action::Pause;
        }
        if buffered {
            host::resume();
            return Action::Pause;
        }
        Action::Continue
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(gone) = &self.gone {
            if let Ok(mut g) = gone.try_borrow_mut() {
                g.push(self.context_id);
            }
        }
    }
}
