//! One VM's state, shared by its root context and its HTTP contexts (a VM is one thread, so
//! `Rc<RefCell>` is enough), and the pump that carries out what the core decided.
//!
//! Discipline: the `RefCell` is never held across a host call that can re-enter the VM
//! (resume, local reply, dispatch). Decisions are taken under the borrow, then applied.

use std::cell::RefCell;
use std::rc::Rc;

use super::host::{self, HostStore};
use crate::lifecycle::Lifecycle;
use crate::outcome::{Grant, Verdict};
use crate::upstream::{self, Edit};

pub type Shared = Rc<RefCell<Worker>>;

/// Rounds of send-then-resume in one pump; each round can only follow a failed send, and a
/// failure backs off, so a few always suffice.
const PUMP_ROUNDS: usize = 8;

pub struct Worker {
    pub life: Lifecycle,
    /// The root context: every callout is sent from it.
    root: u32,
    /// Contexts deleted while the worker was borrowed; told to the core on the next borrow.
    gone: Rc<RefCell<Vec<u32>>>,
    /// The last time the host clock could be read, for answers that arrive when it cannot.
    pub last_now_ms: u64,
}

impl Worker {
    pub fn new(life: Lifecycle, root: u32) -> Worker {
        Worker {
            life,
            root,
            gone: Rc::default(),
            last_now_ms: 0,
        }
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
pub fn pump(shared: &Shared, current: u32) -> Option<Verdict> {
    let from_root = shared.borrow().root == current;
    let owner = (!from_root).then_some(current);
    let mut own = None;
    for _ in 0..PUMP_ROUNDS {
        let mut progressed = false;
        loop {
            let fetch = {
                let mut w = shared.borrow_mut();
                w.bury();
                w.life.next_fetch(from_root)
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
            if host::switch_to(context) {
                let (realm, strip) = realm_and_strip(shared);
                apply(&verdict, &realm, &strip, true);
            }
        }
        if !progressed {
            break;
        }
    }
    host::switch_to(current);
    own
}

/// Hands the answer to callout `token`, delivered to context `current` (the root, or the
/// request that sent it), to the core, then carries out what it unblocked.
pub fn deliver(shared: &Shared, current: u32, token: u32, body_size: usize) {
    let (status, body) = host::callout_response(body_size);
    {
        let mut w = shared.borrow_mut();
        w.bury();
        let now = w.now_ms();
        w.life.on_answer(&mut HostStore, token, status, &body, now);
    }
    if let Some(verdict) = pump(shared, current) {
        // `current` is a request paused in its headers callback, woken by its own answer.
        let (realm, strip) = realm_and_strip(shared);
        apply(&verdict, &realm, &strip, true);
    }
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
    for edit in upstream::edits(strip, &grant.headers) {
        match edit {
            Edit::Set(name, value) => host::set_request_header(name, value),
            Edit::Remove(name) => host::remove_request_header(name),
        }
    }
    if resume {
        host::resume();
    }
}
