//! One VM's state, shared by its root context and its HTTP contexts (a VM is one thread, so
//! `Rc<RefCell>` is enough), and the pump that carries out what the core decided.
//!
//! Discipline: the `RefCell` is never held across a host call that can re-enter the VM
//! (resume, local reply, dispatch). Decisions are taken under the borrow, then applied.
//!
//! Two kinds of host ([`Wake`]). Envoy switches contexts (`set_effective_context`): a parked
//! request is resumed or answered from whichever callback decided it, the root's tick
//! included. ngx_wasm_module (Kong) does not: there the call does nothing, and every request
//! operation acts on the request the host is calling — from the tick it traps ("can only set
//! request headers before response is produced"), from another request's callback it would
//! edit, resume or answer that other request. There a parked request is acted on only in
//! its own callbacks, so each parked request always has a callout of its own in flight
//! (its token fetch, or a poll of `wait_upstream`) whose answer calls it back; its verdict,
//! reached by whoever's event decided it, waits in [`Worker::ready`] until then. The host
//! also continues a request by itself once its last callout is answered, so a callback
//! that leaves it undecided must send another callout or answer it: never neither.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use log::warn;

use super::host::{self, HostStore};
use crate::lifecycle::Lifecycle;
use crate::outcome::{Grant, Verdict};
use crate::upstream::{self, Edit};

pub type Shared = Rc<RefCell<Worker>>;

/// Rounds of send-then-resume in one pump; each round can only follow a failed send, and a
/// failure backs off, so a few always suffice.
const PUMP_ROUNDS: usize = 8;

/// The longest a poll of `wait_upstream` may take before it counts as failed.
const POLL_TIMEOUT_MS: u64 = 1000;

/// A poll answered sooner than this shows an endpoint that does not delay its answers.
const POLL_TOO_FAST_MS: u64 = 5;

static POLL_FAST_WARNED: AtomicBool = AtomicBool::new(false);
static CANNOT_WAIT_WARNED: AtomicBool = AtomicBool::new(false);

/// How this host lets the filter act on a parked request (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Envoy: from any callback, after `set_effective_context`.
    AnyContext,
    /// ngx_wasm_module: only in the request's own callbacks; `poll` is `wait_upstream`.
    OwnCallbacks { poll: Option<String> },
}

pub struct Worker {
    pub life: Lifecycle,
    /// The root context: every callout is sent from it.
    root: u32,
    wake: Wake,
    /// Verdicts of parked requests, decided outside their own callbacks, in a host that
    /// acts on a request only in those ([`Wake::OwnCallbacks`]).
    ready: BTreeMap<u32, Verdict>,
    /// Polls in flight: token → (the request that sent it, when).
    polls: BTreeMap<u32, (u32, u64)>,
    /// Contexts deleted while the worker was borrowed; told to the core on the next borrow.
    gone: Rc<RefCell<Vec<u32>>>,
    /// The last time the host clock could be read, for answers that arrive when it cannot.
    pub last_now_ms: u64,
}

impl Worker {
    pub fn new(life: Lifecycle, root: u32, wake: Wake) -> Worker {
        Worker {
            life,
            root,
            wake,
            ready: BTreeMap::new(),
            polls: BTreeMap::new(),
            gone: Rc::default(),
            last_now_ms: 0,
        }
    }

    /// Whether this host acts on a request only in its own callbacks (ngx_wasm_module).
    pub fn own_callbacks_only(&self) -> bool {
        self.wake != Wake::AnyContext
    }

    pub fn graveyard(&self) -> Rc<RefCell<Vec<u32>>> {
        self.gone.clone()
    }

    /// Tells the core about contexts deleted since the last borrow.
    pub fn bury(&mut self) {
        let gone: Vec<u32> = match self.gone.try_borrow_mut() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(_) => return,
        };
        if gone.is_empty() {
            return;
        }
        let now = self.now_ms();
        for context in gone {
            self.ready.remove(&context);
            self.polls.retain(|_, (owner, _)| *owner != context);
            self.life.on_gone(&mut HostStore, context, now);
        }
    }

    /// The time now, or the last time read if the clock fails (only for bookkeeping: the
    /// request path fails closed instead).
    pub fn now_ms(&mut self) -> u64 {
        if let Some(now) = host::now_ms() {
            self.last_now_ms = now;
        }
        self.last_now_ms
    }
}

/// Sends what the core queued that `current` may send (the root context sends every fetch;
/// a request context only its own token fetches) and applies the verdicts of parked
/// requests, until nothing is left. `current` is the context the host is calling. A verdict
/// for `current` itself is returned, not applied: a request in its own headers callback goes
/// on by what that callback returns.
///
/// `answering`: the host is delivering a callout's answer to `current`.
///
/// In a host that acts on a request only in its own callbacks, the verdicts of other
/// requests are kept for them ([`Worker::ready`]); a request context sends only the fetch it
/// waits for itself, and only while undecided (so it never goes on with a callout in
/// flight); the root context sends only from its tick.
pub fn pump(shared: &Shared, current: u32, answering: bool) -> Option<Verdict> {
    let (from_root, any_context) = {
        let w = shared.borrow();
        (w.root == current, w.wake == Wake::AnyContext)
    };
    // ngx_wasm_module: the root context sends nothing while a callout answer is being
    // delivered to it (the next tick does, at most one TICK later). There the answered
    // callout's connection is already closed and back in nginx's free list; a root
    // callout takes a connection at once (its fake request's), often that very one, and
    // the module then clears that connection's pool when it destroys the answered callout
    // (`ngx_wasm_socket_tcp_destroy`), so the new callout's worker segfaults in
    // `ngx_http_proxy_wasm_dispatch_request` (kong/README.md, "Host bugs avoided").
    let root_may_send = from_root && (any_context || !answering);
    let owner = (!from_root).then_some(current);
    let mut own = None;
    for _ in 0..PUMP_ROUNDS {
        let mut progressed = false;
        loop {
            let fetch = {
                let mut w = shared.borrow_mut();
                w.bury();
                if from_root {
                    root_may_send.then(|| w.life.next_fetch(true)).flatten()
                } else if any_context {
                    w.life.next_fetch(false)
                } else if own.is_none() && !w.ready.contains_key(&current) {
                    // Only what it waits for itself: a request that sent another's fetch
                    // could go on before its answer, and ngx_wasm_module would deliver
                    // that answer to a freed context (kong/README.md).
                    w.life.next_fetch_for(current)
                } else {
                    None
                }
            };
            let Some(fetch) = fetch else { break };
            progressed = true;
            let sent = host::dispatch(&fetch.callout);
            let mut w = shared.borrow_mut();
            let now = w.now_ms();
            match sent {
                Ok(token) => w.life.on_sent(token, fetch, owner, now),
                Err(_) => w.life.on_send_failed(&mut HostStore, &fetch, now),
            }
        }
        loop {
            let next = shared.borrow_mut().life.next_verdict();
            let Some((context, verdict)) = next else {
                break;
            };
            progressed = true;
            if context == current {
                own = Some(verdict);
                continue;
            }
            if !any_context {
                shared.borrow_mut().ready.insert(context, verdict);
                continue;
            }
            if host::switch_to(context) {
                let (realm, strip) = realm_and_strip(shared);
                apply(&verdict, &realm, &strip, true);
            }
        }
        if !progressed {
            break;
        }
    }
    if any_context {
        host::switch_to(current);
    } else if own.is_none() && !from_root {
        own = shared.borrow_mut().ready.remove(&current);
    }
    own
}

/// Hands the answer to callout `token`, delivered to context `current` (the root, or the
/// request that sent it), to the core, then carries out what it unblocked.
pub fn deliver(shared: &Shared, current: u32, token: u32, body_size: usize) {
    let (status, body) = host::callout_response(body_size);
    let poll = {
        let mut w = shared.borrow_mut();
        w.bury();
        let now = w.now_ms();
        match w.polls.remove(&token) {
            // A poll only calls its request back; what it waits for is looked at on the tick.
            Some((_, sent_ms)) => Some(now.saturating_sub(sent_ms)),
            None => {
                w.life.on_answer(&mut HostStore, token, status, &body, now);
                None
            }
        }
    };
    if let Some(elapsed) = poll {
        if status.is_some()
            && elapsed < POLL_TOO_FAST_MS
            && !POLL_FAST_WARNED.swap(true, Ordering::Relaxed)
        {
            warn!("wait_upstream answered a poll in {elapsed} ms: it should delay its answer (nginx: auth_delay 20ms; kong/README.md), or waiting requests poll it in a tight loop (logged once)");
        }
    }
    let own = pump(shared, current, true);
    if current == shared.borrow().root {
        return;
    }
    match own {
        // A refusal reached in the answer to the request's own fetch (a POST) is sent from
        // the answer to a poll instead, where the host can (kong/README.md).
        Some(verdict @ Verdict::Deny(_)) if poll.is_none() && defer_denial(shared, current) => {
            shared.borrow_mut().ready.insert(current, verdict);
        }
        // `current` is a request paused in its headers callback, woken by its own answer.
        Some(verdict) => {
            let (realm, strip) = realm_and_strip(shared);
            apply(&verdict, &realm, &strip, true);
        }
        None => {
            let poll_failed = poll.is_some() && status.is_none();
            keep_waiting(shared, current, poll_failed);
        }
    }
}

/// In a host that acts on a request only in its own callbacks: sends a poll of
/// `wait_upstream` for request `context`, whose refusal was reached in the answer to its own
/// token fetch or introspection; true when sent (the refusal is then sent from the poll's
/// answer). ngx_wasm_module builds a local reply's body in a chain link it takes from the
/// request's free list, which then holds the answered callout's request-body link; it
/// empties that link's buffer when it destroys the callout, after the callback: the reply
/// would go out with an empty buffer (`zero size buf in writer`) and its connection closed
/// mid-response. A poll carries no body.
fn defer_denial(shared: &Shared, context: u32) -> bool {
    let upstream = {
        let w = shared.borrow();
        match &w.wake {
            Wake::OwnCallbacks { poll: Some(p) } => p.clone(),
            _ => return false,
        }
    };
    match host::dispatch_poll(&upstream, POLL_TIMEOUT_MS) {
        Ok(token) => {
            let mut w = shared.borrow_mut();
            let now = w.now_ms();
            w.polls.insert(token, (context, now));
            true
        }
        Err(_) => false,
    }
}

/// In a host that acts on a request only in its own callbacks (and continues it by itself
/// once it has no callout left): makes sure undecided request `context` has a callout of
/// its own in flight — a poll of `wait_upstream` when it sent none — or answers it 503 now
/// when none can be sent. Nothing to do in a host that switches contexts.
pub fn keep_waiting(shared: &Shared, context: u32, poll_failed: bool) {
    let poll = {
        let w = shared.borrow();
        let Wake::OwnCallbacks { poll } = &w.wake else {
            return;
        };
        if !w.life.is_undecided(context) || w.life.has_callout(context) {
            return;
        }
        poll.clone()
    };
    let reason = match (&poll, poll_failed) {
        (Some(upstream), false) => {
            let timeout = {
                let w = shared.borrow();
                w.life.gate().config().idp.timeout_ms.min(POLL_TIMEOUT_MS)
            };
            match host::dispatch_poll(upstream, timeout) {
                Ok(token) => {
                    let mut w = shared.borrow_mut();
                    let now = w.now_ms();
                    w.polls.insert(token, (context, now));
                    return;
                }
                Err(_) => format!("the host refused a poll of wait_upstream {upstream}"),
            }
        }
        (Some(upstream), true) => format!("wait_upstream {upstream} did not answer a poll"),
        (None, _) => "wait_upstream is not set".to_string(),
    };
    if !CANNOT_WAIT_WARNED.swap(true, Ordering::Relaxed) {
        warn!("a request waiting for an IdP answer that another request or worker fetches is answered 503: this host wakes a request only in its own callbacks, and {reason} (kong/README.md; logged once)");
    }
    let verdict = {
        let mut w = shared.borrow_mut();
        let now = w.now_ms();
        w.life.give_up(context, now)
    };
    let (realm, strip) = realm_and_strip(shared);
    apply(&verdict, &realm, &strip, true);
}

fn realm_and_strip(shared: &Shared) -> (String, Rc<[String]>) {
    let w = shared.borrow();
    let gate = w.life.gate();
    (gate.config().accept.realm.clone(), gate.strip_headers())
}

/// Applies a verdict to the effective context; `resume` when the request was paused.
pub fn apply(verdict: &Verdict, realm: &str, strip: &[String], resume: bool) {
    match verdict {
        Verdict::Allow(headers) => allow(headers, strip, resume),
        Verdict::Deny(denial) => host::deny(denial, realm),
    }
}

/// Lets the effective context's request go upstream with `headers` written.
pub fn allow(grant: &Grant, strip: &[String], resume: bool) {
    host::record_allowed(grant.client.as_deref());
    for edit in upstream::edits(strip, grant) {
        match edit {
            Edit::Set(name, value) => host::set_request_header(name, value),
            Edit::Remove(name) => host::remove_request_header(name),
        }
    }
    if resume {
        host::resume();
    }
}
