//! One request: read the credential, strip it, ask the gate, and apply the verdict — or
//! wait, parked, until the root or a callout answer applies it.

use std::cell::RefCell;
use std::rc::Rc;

use log::info;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::host;
use super::worker::{allow, apply, deliver, Next, Shared, Verdict};
use crate::credentials::{self, Credential, RequestView};
use crate::outcome::Denial;

pub struct Request {
    context_id: u32,
    worker: Option<Shared>,
    /// Where `Drop` reports this context gone, without borrowing the worker. Set only once
    /// the request is parked: a request decided at once leaves nothing behind to clean up.
    gone: Option<Rc<RefCell<Vec<u32>>>>,
    started_ms: u64,
    /// The body may hold credential fields: buffer it and strip them before it goes on.
    /// Holds the content type, read at headers time (Envoy forbids header access later).
    strip_body: Option<String>,
}

impl Request {
    pub fn new(context_id: u32, worker: Option<Shared>) -> Request {
        Request {
            context_id,
            worker,
            gone: None,
            started_ms: 0,
            strip_body: None,
        }
    }

    /// Extracts the credential from the headers and query, then decides.
    ///
    /// In proxy-wasm ABI 0.2.1 hosts (Envoy), pausing at headers also withholds the body
    /// from this filter until the request is resumed, and resuming sends the headers
    /// upstream. So the verdict is reached on headers; body credential fields are removed
    /// afterwards, and a credential found only in a body cannot be used (fails closed).
    /// Nothing reaches the upstream but through [`apply`] of an allow, which strips every
    /// caller copy of the credential and of the headers the filter writes.
    fn authenticate(&mut self, worker: &Shared, end_of_stream: bool) -> Action {
        let (reads_query, reads_body) = {
            let w = worker.borrow();
            (w.gate.config().reads_query(), w.gate.config().reads_body())
        };
        // Only the headers this configuration needs: every read is a host call.
        let authorization = host::request_header("authorization");
        let path = match reads_query {
            true => host::request_header(":path").unwrap_or_default(),
            false => String::new(),
        };
        let content_type = match reads_body {
            true => host::request_header("content-type"),
            false => None,
        };
        let view = RequestView {
            authorization: authorization.as_deref(),
            path: &path,
            content_type: content_type.as_deref(),
        };
        let (extracted, strip) = {
            let w = worker.borrow();
            let config = w.gate.config();
            if !end_of_stream && credentials::needs_body(config, &view) {
                self.strip_body = content_type.clone();
            }
            (
                credentials::extract(config, &view, None),
                w.gate.strip_headers(),
            )
        };

        if let Some(p) = &extracted.new_path {
            host::set_request_header(":path", p);
        }
        if self.strip_body.is_some() {
            // The body will shrink; Envoy re-frames it (chunked) without a stale length.
            host::remove_request_header("content-length");
        }

        let credential = match extracted.credential {
            Ok(c) => c,
            Err(denial) => {
                if self.strip_body.is_some() && denial == Denial::Missing {
                    info!("a request body may carry client credentials, but this host cannot read a body before forwarding headers: send them in Authorization: Basic");
                }
                worker.borrow_mut().denied(self.context_id, None, &denial);
                host::deny(&denial, &realm(worker));
                return Action::Pause;
            }
        };
        self.decide(worker, &credential, &strip)
    }

    fn decide(&mut self, worker: &Shared, credential: &Credential, strip: &[String]) -> Action {
        let mut now_ms = self.started_ms;
        // A failed dispatch records a failure, so the second round answers 503.
        for _ in 0..2 {
            let next =
                worker
                    .borrow_mut()
                    .decide(self.context_id, credential, self.started_ms, now_ms);
            match next {
                Next::Now(Verdict::Allow(headers)) => {
                    allow(&headers, strip, false);
                    return Action::Continue;
                }
                Next::Now(deny) => {
                    apply(&deny, &realm(worker), strip, false);
                    return Action::Pause;
                }
                Next::Parked(fetch) => {
                    // Parked in the worker: it must hear if this context goes away.
                    if self.gone.is_none() {
                        self.gone = Some(worker.borrow().graveyard());
                    }
                    let Some(fetch) = fetch else {
                        return Action::Pause;
                    };
                    match host::dispatch(&fetch.callout) {
                        Ok(token) => {
                            worker
                                .borrow_mut()
                                .track(token, fetch.resource, self.context_id);
                            return Action::Pause;
                        }
                        Err(_) => {
                            now_ms = host::now_ms();
                            worker.borrow_mut().dispatch_failed(&fetch.resource, now_ms)
                        }
                    }
                }
            }
        }
        host::deny(&Denial::IdpUnavailable { retry_after_s: 1 }, &realm(worker));
        Action::Pause
    }
}

/// The realm of `WWW-Authenticate`, read only when a request is refused.
fn realm(worker: &Shared) -> String {
    worker.borrow().gate.config().realm.clone()
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
            // Wakes this request and every other one parked in this VM.
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
        self.started_ms = host::now_ms();
        self.authenticate(&worker, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.strip_body.is_none() {
            return Action::Continue;
        }
        if !end_of_stream {
            // Buffer until the whole body is here.
            return Action::Pause;
        }
        let content_type = self.strip_body.take();
        let Some(worker) = self.worker.clone() else {
            return Action::Continue;
        };
        let body = host::request_body(body_size);
        let view = RequestView {
            content_type: content_type.as_deref(),
            ..RequestView::default()
        };
        let stripped =
            credentials::extract(worker.borrow().gate.config(), &view, body.as_deref()).new_body;
        if let Some(new_body) = stripped {
            host::replace_request_body(body_size, &new_body);
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
