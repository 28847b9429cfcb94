//! One request: read the credential, strip it, hand it to the core, and apply the verdict —
//! or wait, parked, until an answer or the timer decides it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use log::info;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::host::{self, HostStore};
use super::worker::{allow, deliver, pump, Shared};
use crate::credentials::{self, RequestView};
use crate::outcome::{Denial, Verdict};

/// Whether this VM said why a body it cannot read before forwarding was not searched.
static BODY_WARNED: AtomicBool = AtomicBool::new(false);

pub struct Request {
    context_id: u32,
    worker: Option<Shared>,
    /// Where `Drop` reports this context gone, without borrowing the worker. Set only once
    /// the request is parked: a request decided at once leaves nothing behind to clean up.
    gone: Option<Rc<RefCell<Vec<u32>>>>,
    /// The body may hold credential fields: buffer it and strip them before it goes on.
    /// Holds the content type, read at headers time (Envoy forbids header access later).
    strip_body: Option<String>,
    /// How much of the body is buffered so far.
    body_size: usize,
}

impl Request {
    pub fn new(context_id: u32, worker: Option<Shared>) -> Request {
        Request {
            context_id,
            worker,
            gone: None,
            strip_body: None,
            body_size: 0,
        }
    }

    /// The whole body is buffered: removes the credential fields from it.
    fn strip_buffered_body(&mut self) {
        let content_type = self.strip_body.take();
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let body = host::request_body(self.body_size);
        let view = RequestView {
            content_type: content_type.as_deref(),
            ..RequestView::default()
        };
        let stripped =
            credentials::extract(worker.borrow().life.gate().config(), &view, body.as_deref())
                .new_body;
        if let Some(new_body) = stripped {
            host::replace_request_body(self.body_size, &new_body);
        }
    }

    /// Extracts the credential from the headers and query, then decides.
    ///
    /// In proxy-wasm ABI 0.2.1 hosts (Envoy), pausing at headers also withholds the body
    /// from this filter until the request is resumed, and resuming sends the headers
    /// upstream. So the verdict is reached on headers; body credential fields are removed
    /// afterwards, and a credential found only in a body cannot be used (fails closed).
    /// Nothing reaches the upstream but through [`allow`], which strips every caller copy
    /// of the credential and of the headers the filter writes.
    fn authenticate(&mut self, worker: &Shared, end_of_stream: bool) -> Action {
        let (reads_query, reads_body) = {
            let w = worker.borrow();
            let config = w.life.gate().config();
            (config.reads_query(), config.reads_body())
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
        let extracted = {
            let w = worker.borrow();
            let config = w.life.gate().config();
            if !end_of_stream && credentials::needs_body(config, &view) {
                self.strip_body = content_type.clone();
            }
            credentials::extract(config, &view, None)
        };

        if let Some(p) = &extracted.new_path {
            host::set_request_header(":path", p);
        }
        if self.strip_body.is_some() {
            // The body will shrink; Envoy re-frames it (chunked) without a stale length.
            host::remove_request_header("content-length");
        }

        let verdict = match extracted.credential {
            Ok(credential) => {
                let now = host::now_ms();
                let decided = {
                    let mut w = worker.borrow_mut();
                    w.bury();
                    w.life
                        .on_request(&mut HostStore, self.context_id, &credential, now)
                };
                match decided {
                    Some(verdict) => verdict,
                    None => {
                        // Parked in the core: it must hear if this context goes away.
                        self.gone = Some(worker.borrow().graveyard());
                        match pump(worker, self.context_id) {
                            Some(verdict) => verdict,
                            None => return Action::Pause,
                        }
                    }
                }
            }
            Err(denial) => {
                if self.strip_body.is_some()
                    && denial == Denial::Missing
                    && !BODY_WARNED.swap(true, Ordering::Relaxed)
                {
                    info!("a request body may carry client credentials, but this host cannot read a body before forwarding headers: send them in Authorization: Basic (logged once)");
                }
                let mut w = worker.borrow_mut();
                let now = w.now_ms();
                w.life.on_refused(self.context_id, denial, now)
            }
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
        if self.strip_body.is_none() {
            return Action::Continue;
        }
        self.body_size = body_size;
        if !end_of_stream {
            // Buffer until the whole body is here (the end of the stream, or trailers).
            return Action::Pause;
        }
        self.strip_buffered_body();
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // HTTP/2 and chunked HTTP/1 can end a body with trailers: the last body callback was
        // not the end of the stream, so the buffered body is stripped here. Envoy 1.40 drops
        // a buffered body when the trailers callback just continues (the router sees the
        // trailers only); pausing and resuming sends the body, then the trailers.
        if self.strip_body.is_some() {
            self.strip_buffered_body();
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
