//! One VM's state, shared by its root context and its HTTP contexts (a VM is one thread, so
//! `Rc<RefCell>` is enough): the gate, the parked requests and the callouts in flight.
//!
//! Discipline: the `RefCell` is never held across a host call that can re-enter the VM
//! (resume, local reply, dispatch). Decisions are computed under the borrow, then applied.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use log::{info, warn};

use super::host::{self, HostStore};
use super::metrics::Tally;
use crate::cache::log_tag;
use crate::credentials::Credential;
use crate::gate::{Applied, Fetch, Gate, Headers, Resource, Step};
use crate::outcome::Denial;
use crate::upstream::{self, Edit};

pub type Shared = Rc<RefCell<Worker>>;

struct Parked {
    credential: Credential,
    started_ms: u64,
    deadline_ms: u64,
    /// What it waits for; while that is still being fetched, asking again is pointless.
    waiting: Resource,
}

struct InFlight {
    resource: Resource,
    /// The context the host delivers the answer to; if it goes away, so does the answer.
    owner: u32,
    sent_ms: u64,
}

/// What to do to one request.
pub enum Verdict {
    Allow(Headers),
    Deny(Denial),
}

pub struct Worker {
    pub gate: Gate,
    parked: BTreeMap<u32, Parked>,
    in_flight: HashMap<u32, InFlight>,
    /// Contexts deleted while the worker was borrowed; cleaned up on the next borrow.
    gone: Rc<RefCell<Vec<u32>>>,
    pub tally: Tally,
}

/// The outcome of asking the gate about a request.
pub enum Next {
    Now(Verdict),
    /// Parked; the fetch (if any) must be dispatched by the caller.
    Parked(Option<Fetch>),
}

impl Worker {
    pub fn new(gate: Gate) -> Worker {
        Worker {
            gate,
            parked: BTreeMap::new(),
            in_flight: HashMap::new(),
            gone: Rc::default(),
            tally: Tally::default(),
        }
    }

    pub fn graveyard(&self) -> Rc<RefCell<Vec<u32>>> {
        self.gone.clone()
    }

    /// Asks the gate about the request of `context`; parks it unless decided now.
    pub fn decide(
        &mut self,
        context: u32,
        credential: &Credential,
        started_ms: u64,
        now_ms: u64,
    ) -> Next {
        self.bury();
        let step = self
            .gate
            .authenticate(&mut HostStore, credential, started_ms, now_ms);
        match step {
            Step::Allow(headers) => {
                self.parked.remove(&context);
                self.tally.bump("oidcgate.allowed");
                Next::Now(Verdict::Allow(headers))
            }
            Step::Deny(denial) => {
                self.parked.remove(&context);
                self.denied(context, Some(credential), &denial);
                Next::Now(Verdict::Deny(denial))
            }
            Step::Wait(_) | Step::Fetch(_) => {
                let waiting = match &step {
                    Step::Fetch(f) => f.resource.clone(),
                    Step::Wait(r) => r.clone(),
                    _ => Resource::Jwks,
                };
                match self.parked.get_mut(&context) {
                    Some(p) => p.waiting = waiting,
                    None => {
                        let deadline_ms = started_ms.saturating_add(self.gate.config().timeout_ms);
                        self.tally.bump("oidcgate.parked");
                        let parked = Parked {
                            credential: credential.clone(),
                            started_ms,
                            deadline_ms,
                            waiting,
                        };
                        self.parked.insert(context, parked);
                    }
                }
                Next::Parked(match step {
                    Step::Fetch(f) => Some(f),
                    _ => None,
                })
            }
        }
    }

    pub fn track(&mut self, token: u32, resource: Resource, owner: u32) {
        self.in_flight.insert(
            token,
            InFlight {
                resource,
                owner,
                sent_ms: host::now_ms(),
            },
        );
    }

    /// Counts and logs a denial.
    pub fn denied(&mut self, context: u32, credential: Option<&Credential>, denial: &Denial) {
        self.tally.bump(match denial {
            Denial::Missing => "oidcgate.denied.missing",
            Denial::InvalidToken(_) => "oidcgate.denied.invalid_token",
            Denial::InvalidClient => "oidcgate.denied.invalid_client",
            Denial::InsufficientScope => "oidcgate.denied.insufficient_scope",
            Denial::IdpUnavailable { .. } => "oidcgate.denied.idp_unavailable",
        });
        log_denial(context, credential, denial);
    }

    /// The dispatch itself failed (unknown cluster, host refused): same as no answer.
    pub fn dispatch_failed(&mut self, resource: &Resource, now_ms: u64) {
        warn!(
            "could not send the {} request to the IdP (check idp_cluster)",
            resource.name()
        );
        self.tally.bump(failed_metric(resource));
        self.gate
            .on_answer(&mut HostStore, resource, None, b"", now_ms);
    }

    /// Applies the answer to callout `token`. Returns false if it was not ours.
    pub fn answer(&mut self, token: u32, status: Option<u32>, body: &[u8], now_ms: u64) -> bool {
        let Some(flight) = self.in_flight.remove(&token) else {
            return false;
        };
        let applied = self
            .gate
            .on_answer(&mut HostStore, &flight.resource, status, body, now_ms);
        self.tally.latency(now_ms.saturating_sub(flight.sent_ms));
        let what = flight.resource.name();
        match applied {
            Applied::Stored => {
                self.tally.bump(match flight.resource {
                    Resource::Discovery => "oidcgate.idp.discovery.ok",
                    Resource::Jwks => "oidcgate.idp.jwks.ok",
                    Resource::Token(_) => "oidcgate.idp.token.ok",
                });
                info!("{what} fetched from the IdP");
            }
            Applied::Rejected(error) => {
                self.tally.bump("oidcgate.idp.token.rejected");
                info!("token endpoint refused the client: {error}");
            }
            Applied::Failed(why) => {
                self.tally.bump(failed_metric(&flight.resource));
                warn!("{what} fetch failed: {why}");
            }
        }
        true
    }

    /// Re-asks about every parked request: what is decided leaves the list; what needs a
    /// fetch no one is doing gets it. Past its deadline a request gets 503.
    pub fn rerun(&mut self, now_ms: u64) -> (Vec<(u32, Verdict)>, Vec<Fetch>) {
        self.bury();
        let mut verdicts = Vec::new();
        let mut fetches = Vec::new();
        let contexts: Vec<u32> = self.parked.keys().copied().collect();
        // One shared-data read per awaited resource, not one per parked request: an IdP
        // outage can park thousands.
        let mut busy: Vec<(Resource, bool)> = Vec::new();
        for context in contexts {
            let Some(p) = self.parked.get(&context) else {
                continue;
            };
            let still_busy = match busy.iter().find(|(r, _)| *r == p.waiting) {
                Some((_, b)) => *b,
                None => {
                    let b = self.gate.is_busy(&HostStore, &p.waiting, now_ms);
                    busy.push((p.waiting.clone(), b));
                    b
                }
            };
            if still_busy && now_ms < p.deadline_ms {
                continue;
            }
            if now_ms >= p.deadline_ms {
                let denial = Denial::IdpUnavailable { retry_after_s: 1 };
                let credential = p.credential.clone();
                self.parked.remove(&context);
                self.tally.bump("oidcgate.parked.timeout");
                self.denied(context, Some(&credential), &denial);
                verdicts.push((context, Verdict::Deny(denial)));
                continue;
            }
            let (credential, started) = (p.credential.clone(), p.started_ms);
            match self.decide(context, &credential, started, now_ms) {
                Next::Now(v) => verdicts.push((context, v)),
                Next::Parked(Some(f)) => fetches.push(f),
                Next::Parked(None) => {}
            }
        }
        (verdicts, fetches)
    }

    pub fn background(&mut self, now_ms: u64) -> Vec<Fetch> {
        self.bury();
        self.gate.background(&mut HostStore, now_ms)
    }

    /// Forgets deleted contexts; their callouts were cancelled by the host, so their locks
    /// are released for the next request to take.
    fn bury(&mut self) {
        let gone: Vec<u32> = match self.gone.try_borrow_mut() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(_) => return,
        };
        if gone.is_empty() {
            return;
        }
        let now = host::now_ms();
        for context in gone {
            self.parked.remove(&context);
            let orphaned: Vec<u32> = self
                .in_flight
                .iter()
                .filter(|(_, f)| f.owner == context)
                .map(|(t, _)| *t)
                .collect();
            for token in orphaned {
                if let Some(f) = self.in_flight.remove(&token) {
                    self.gate.abandon(&mut HostStore, &f.resource, now);
                }
            }
        }
    }
}

fn failed_metric(resource: &Resource) -> &'static str {
    match resource {
        Resource::Discovery => "oidcgate.idp.discovery.failed",
        Resource::Jwks => "oidcgate.idp.jwks.failed",
        Resource::Token(_) => "oidcgate.idp.token.failed",
    }
}

fn log_denial(context: u32, credential: Option<&Credential>, denial: &Denial) {
    // Who, without the secret or the token: the client id, or a short hash of the token.
    let who = match credential {
        Some(Credential::Client(c)) => format!("client_id={}", c.id.escape_debug()),
        Some(Credential::Bearer(t)) => format!("token={}", log_tag(t)),
        None => "credential=none".to_string(),
    };
    info!(
        "denied {} status={} {who} ctx={context}",
        denial,
        denial.status()
    );
}

/// Hands the IdP's answer to callout `token` (delivered to context `current`) to the gate,
/// then resumes whatever it unblocked.
pub fn deliver(worker: &Shared, current: u32, token: u32, body_size: usize) {
    let (status, body) = host::callout_response(body_size);
    worker
        .borrow_mut()
        .answer(token, status, &body, host::now_ms());
    pump(worker, current, Vec::new());
}

/// Sends `fetches` from the current context, then re-asks about parked requests and applies
/// the verdicts, until nothing new is to be sent. `current` is the context the host is
/// calling now; it is restored as the effective context at the end.
pub fn pump(worker: &Shared, current: u32, mut fetches: Vec<Fetch>) {
    for _ in 0..4 {
        let now = host::now_ms();
        for fetch in fetches.drain(..) {
            match host::dispatch(&fetch.callout) {
                Ok(token) => worker.borrow_mut().track(token, fetch.resource, current),
                Err(_) => worker.borrow_mut().dispatch_failed(&fetch.resource, now),
            }
        }
        let (verdicts, more) = worker.borrow_mut().rerun(now);
        if !verdicts.is_empty() {
            let (realm, strip) = {
                let w = worker.borrow();
                (w.gate.config().realm.clone(), w.gate.strip_headers())
            };
            for (context, verdict) in verdicts {
                if host::switch_to(context) {
                    apply(&verdict, &realm, &strip, true);
                }
            }
        }
        host::switch_to(current);
        if more.is_empty() {
            return;
        }
        fetches = more;
    }
}

/// Applies a verdict to the effective context; `resume` when the request was paused.
pub fn apply(verdict: &Verdict, realm: &str, strip: &[String], resume: bool) {
    match verdict {
        Verdict::Allow(headers) => allow(headers, strip, resume),
        Verdict::Deny(denial) => host::deny(denial, realm),
    }
}

/// Lets the effective context's request go upstream with `headers` written.
pub fn allow(headers: &Headers, strip: &[String], resume: bool) {
    for edit in upstream::edits(strip, headers) {
        match edit {
            Edit::Set(name, value) => host::set_request_header(name, value),
            Edit::Remove(name) => host::remove_request_header(name),
        }
    }
    if resume {
        host::resume();
    }
}
