//! The life of the requests of one VM and of the callouts they wait for. Sans-IO, like the
//! gate: the adapter hands in what the host reports, with the shared store and the time, and
//! drains what to send ([`Lifecycle::next_fetch`]) and which parked requests are decided
//! ([`Lifecycle::next_verdict`]).
//!
//! ```text
//!  headers ─► on_request ─► verdict now ─► continue │ local reply
//!                 │
//!                 ▼ parked, waiting for a resource (its fetch, if any, in the outbox)
//!  on_answer / on_send_failed / on_tick ─► rerun each parked request whose resource settled
//!                 ├─► decided ─► next_verdict ─► the adapter resumes it or replies
//!                 ├─► past started + timeout ─► 503
//!                 └─► still waiting (asked again on the next event)
//!  on_gone ─► forgotten; what it was waiting for is fetched on regardless
//!  headers without a credential, body may hold one ─► await_body ─► on_body (the adapter
//!                 reads it and calls on_request) │ past timeout ─► 401 (body_wait)
//! ```
//!
//! The discovery document and the key set serve every caller, so their fetches go out from
//! the root context ([`Lifecycle::next_fetch`] with `from_root`): a caller that resets its
//! request cannot cancel them, whoever needed them first. A token fetch or an introspection
//! goes out at once from the request that needs it (only holders of that client's secret,
//! or of that token, share it); if that request goes away, the host cancels the callout and
//! the fetch is released for the next.

use std::collections::{BTreeMap, HashMap, VecDeque};

use log::{info, warn};

use crate::body_wait::{BodyWait, Expired};
use crate::cache::log_tag;
use crate::config::PolicyId;
use crate::credentials::Credential;
use crate::fetch::{Applied, Fetch, Look, Resource, Step};
use crate::gate::Gate;
use crate::log_budget::{bounded, Admit, LogBudget};
use crate::outcome::{Denial, Verdict};
use crate::store::SharedStore;
use crate::tally::Tally;

struct Parked {
    credential: Credential,
    policy: PolicyId,
    started_ms: u64,
    deadline_ms: u64,
    /// What it waits for; while that is still being fetched, asking again is pointless.
    waiting: Resource,
}

struct InFlight {
    resource: Resource,
    /// Where it went, for the log line if it fails.
    to: String,
    /// The host's upstream (Envoy cluster) it went through.
    upstream: String,
    /// The request context that sent it; `None` for the root context.
    owner: Option<u32>,
    sent_ms: u64,
}

pub struct Lifecycle {
    gate: Gate,
    parked: BTreeMap<u32, Parked>,
    in_flight: HashMap<u32, InFlight>,
    /// Fetches of one caller's token: sent from whichever context runs next.
    outbox: VecDeque<Fetch>,
    /// Fetches every caller depends on: sent from the root context only.
    outbox_root: VecDeque<Fetch>,
    decided: VecDeque<(u32, Verdict)>,
    tally: Tally,
    denial_log: LogBudget,
    failure_log: LogBudget,
    bodies: BodyWait,
}

impl Lifecycle {
    pub fn new(gate: Gate) -> Lifecycle {
        Lifecycle {
            gate,
            parked: BTreeMap::new(),
            in_flight: HashMap::new(),
            outbox: VecDeque::new(),
            outbox_root: VecDeque::new(),
            decided: VecDeque::new(),
            tally: Tally::default(),
            denial_log: LogBudget::default(),
            failure_log: LogBudget::default(),
            bodies: BodyWait::new(),
        }
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    pub fn tally(&mut self) -> &mut Tally {
        &mut self.tally
    }

    /// `context` has no credential in its headers and may have one in its body: hold its
    /// headers until the body arrives ([`Lifecycle::on_body`]) or `timeout` passes. False
    /// when this host is known not to deliver held requests' bodies: refuse it now.
    pub fn await_body(&mut self, context: u32, now_ms: u64) -> bool {
        let deadline = now_ms.saturating_add(self.gate.config().idp.timeout_ms);
        self.bodies.start(context, deadline)
    }

    /// The host never delivers the body of a request held on its headers (nor wakes a
    /// request from outside its own callbacks, which waiting for one would need): requests
    /// whose credential could only be in their body are refused at once.
    pub fn withhold_bodies(&mut self) {
        self.bodies.withheld();
    }

    /// Body bytes reached `context` while its headers were held.
    pub fn on_body(&mut self, context: u32) {
        self.bodies.arrived(context);
    }

    /// Whether `context` has no verdict yet: it waits for the IdP or for its body. Its body
    /// must be held back meanwhile (a body callback that continues would send the headers
    /// on, undecided).
    pub fn is_undecided(&self, context: u32) -> bool {
        self.parked.contains_key(&context) || self.bodies.is_waiting(context)
    }

    /// How many requests wait for the IdP.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Whether request `context` sent a callout that has not been answered yet: in a host
    /// that wakes a request only in its own callbacks, the answer to it will.
    pub fn has_callout(&self, context: u32) -> bool {
        self.in_flight.values().any(|f| f.owner == Some(context))
    }

    /// Parked request `context` cannot be woken again (a host that resumes a request only
    /// in its own callbacks, with nothing left to call it back): 503 now, as at its deadline,
    /// rather than a request left waiting forever.
    pub fn give_up(&mut self, context: u32, now_ms: u64) -> Verdict {
        let credential = self.parked.remove(&context).map(|p| p.credential);
        self.bodies.forget(context);
        self.tally.bump("oidcgate.parked.timeout");
        let verdict = Verdict::Deny(Denial::IdpUnavailable { retry_after_s: 1 });
        self.count(context, credential.as_ref(), &verdict, now_ms);
        verdict
    }

    /// A new request with its credential, judged by `policy`; `now_ms` is `None` when the
    /// host clock could not be read. `None` back means it is parked.
    pub fn on_request(
        &mut self,
        store: &mut dyn SharedStore,
        context: u32,
        credential: &Credential,
        policy: PolicyId,
        now_ms: Option<u64>,
    ) -> Option<Verdict> {
        let Some(now_ms) = now_ms else {
            // Without the time no expiry can be checked: fail closed.
            warn!("the host clock could not be read; refusing the request");
            let verdict = Verdict::Deny(Denial::IdpUnavailable { retry_after_s: 1 });
            // The log budget's windows then run on a stopped clock: still bounded.
            self.count(context, Some(credential), &verdict, 0);
            return Some(verdict);
        };
        self.decide(
            store,
            context,
            credential,
            policy,
            Look::first(now_ms),
            now_ms,
        )
    }

    /// A request on a public route: let through without a credential.
    pub fn on_public(&mut self) -> Verdict {
        self.tally.bump("oidcgate.allowed");
        Verdict::Allow(crate::outcome::Grant::default())
    }

    /// A request refused before its credential was looked at, for a reason its log line
    /// gives (`why` holds no caller text but what the filter named itself).
    pub fn on_refused_because(
        &mut self,
        context: u32,
        denial: Denial,
        why: String,
        now_ms: u64,
    ) -> Verdict {
        self.gate.note_detail(why);
        self.on_refused(context, denial, now_ms)
    }

    /// A request refused before it showed a usable credential.
    pub fn on_refused(&mut self, context: u32, denial: Denial, now_ms: u64) -> Verdict {
        let verdict = Verdict::Deny(denial);
        self.count(context, None, &verdict, now_ms);
        verdict
    }

    fn decide(
        &mut self,
        store: &mut dyn SharedStore,
        context: u32,
        credential: &Credential,
        policy: PolicyId,
        look: Look,
        now_ms: u64,
    ) -> Option<Verdict> {
        let waiting = match self
            .gate
            .authenticate(store, credential, policy, look, now_ms)
        {
            Step::Done(verdict) => {
                self.parked.remove(&context);
                self.count(context, Some(credential), &verdict, now_ms);
                return Some(verdict);
            }
            Step::Wait(resource) => resource,
            Step::Fetch(fetch) => {
                let resource = fetch.resource.clone();
                self.queue(fetch);
                resource
            }
        };
        match self.parked.get_mut(&context) {
            Some(p) => p.waiting = waiting,
            None => {
                self.tally.bump("oidcgate.parked");
                let deadline_ms = look
                    .started_ms
                    .saturating_add(self.gate.config().idp.timeout_ms);
                self.parked.insert(
                    context,
                    Parked {
                        credential: credential.clone(),
                        policy,
                        started_ms: look.started_ms,
                        deadline_ms,
                        waiting,
                    },
                );
            }
        }
        None
    }

    fn queue(&mut self, fetch: Fetch) {
        match fetch.resource {
            Resource::Token(_) | Resource::Introspection(_) => self.outbox.push_back(fetch),
            Resource::Discovery | Resource::Jwks => self.outbox_root.push_back(fetch),
        }
    }

    /// The next callout to send now: from the root context, any; from a request context,
    /// only what that request may own.
    pub fn next_fetch(&mut self, from_root: bool) -> Option<Fetch> {
        match from_root {
            true => self
                .outbox_root
                .pop_front()
                .or_else(|| self.outbox.pop_front()),
            false => self.outbox.pop_front(),
        }
    }

    /// The queued fetch parked request `context` itself waits for, if any: what a request
    /// context sends in a host that wakes a request only in its own callbacks. There a
    /// request that sent a callout for another request's resource could be decided and go on
    /// before that callout is answered, and ngx_wasm_module then delivers the answer to a
    /// context it has freed (kong/README.md).
    pub fn next_fetch_for(&mut self, context: u32) -> Option<Fetch> {
        let waiting = &self.parked.get(&context)?.waiting;
        let at = self.outbox.iter().position(|f| f.resource == *waiting)?;
        self.outbox.remove(at)
    }

    /// Whether a fetch waits for the root context.
    pub fn root_has_work(&self) -> bool {
        !self.outbox_root.is_empty()
    }

    /// The next parked request decided, and its verdict.
    pub fn next_verdict(&mut self) -> Option<(u32, Verdict)> {
        self.decided.pop_front()
    }

    /// The host accepted the callout for `resource`, sent from request context `owner`
    /// (`None`: the root); its answer will come as `token`.
    pub fn on_sent(&mut self, token: u32, fetch: Fetch, owner: Option<u32>, now_ms: u64) {
        let Fetch { resource, callout } = fetch;
        self.in_flight.insert(
            token,
            InFlight {
                to: callout.describe(),
                upstream: callout.upstream,
                resource,
                owner,
                sent_ms: now_ms,
            },
        );
    }

    /// The host refused to send the callout (unknown cluster, no resolved host): the same
    /// as an answer that never came.
    pub fn on_send_failed(&mut self, store: &mut dyn SharedStore, fetch: &Fetch, now_ms: u64) {
        let resource = &fetch.resource;
        warn!(
            "could not send the {} request to {}: the host refused it (no cluster of that \
             name, or none of its hosts resolved; check idp_cluster)",
            resource.name(),
            fetch.callout.describe()
        );
        self.tally.bump(failed_metric(resource));
        self.gate.on_answer(store, resource, None, b"", now_ms);
        self.rerun(store, now_ms, Some(resource));
    }

    /// The answer to callout `token` (`status` is `None` when it failed or timed out).
    /// Returns false when the callout is not one of ours.
    pub fn on_answer(
        &mut self,
        store: &mut dyn SharedStore,
        token: u32,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
    ) -> bool {
        let Some(flight) = self.in_flight.remove(&token) else {
            return false;
        };
        let applied = self
            .gate
            .on_answer(store, &flight.resource, status, body, now_ms);
        let histogram = match flight.resource {
            Resource::Discovery => "oidcgate.idp.discovery.latency_ms",
            Resource::Jwks => "oidcgate.idp.jwks.latency_ms",
            Resource::Token(_) => "oidcgate.idp.token.latency_ms",
            Resource::Introspection(_) => "oidcgate.idp.introspection.latency_ms",
        };
        self.tally
            .latency(histogram, now_ms.saturating_sub(flight.sent_ms));
        let what = flight.resource.name();
        match applied {
            Applied::Stored => {
                self.tally.bump(match flight.resource {
                    Resource::Discovery => "oidcgate.idp.discovery.ok",
                    Resource::Jwks => "oidcgate.idp.jwks.ok",
                    Resource::Token(_) => "oidcgate.idp.token.ok",
                    Resource::Introspection(_) => "oidcgate.idp.introspection.ok",
                });
                // Not logged: one line per token would flood the log.
                if !matches!(flight.resource, Resource::Introspection(_)) {
                    info!("{what} fetched from the IdP");
                }
            }
            Applied::Inactive => self.tally.bump("oidcgate.idp.introspection.inactive"),
            Applied::Rejected(error) => {
                self.tally.bump("oidcgate.idp.token.rejected");
                info!("token endpoint refused the client: {error}");
            }
            Applied::Failed(why) => {
                self.tally.bump(failed_metric(&flight.resource));
                // Envoy answers a callout it could not complete itself (503 for a refused or
                // failed connection, TLS included; 504 after the timeout), as if the IdP had.
                let hint = match status {
                    None => format!(
                        " (no answer within {} ms)",
                        self.gate.config().idp.timeout_ms
                    ),
                    Some(503 | 504) => {
                        let up = &flight.upstream;
                        match crate::idp::host_reply(status, body) {
                            // Envoy 1.40 says "remote connection failure" for a refused
                            // connection and for every TLS failure alike; its stats tell them
                            // apart.
                            Some(reply) if reply.starts_with("upstream connect error") => format!(
                                " (Envoy could not connect to `{up}`: \"{reply}\"; DNS, a \
                                 refused connection or TLS: see cluster.{up}.upstream_cx_connect_fail \
                                 and cluster.{up}.ssl.*)"
                            ),
                            Some(reply) => format!(
                                " (Envoy's own answer, not the IdP's: \"{reply}\"; see the stats \
                                 of cluster.{up})"
                            ),
                            None => format!(
                                " (from the IdP, or from Envoy when it could not connect or \
                                 timed out: see the stats of cluster.{up})"
                            ),
                        }
                    }
                    Some(_) => String::new(),
                };
                // One introspection per distinct token: in an outage, callers' tokens would
                // make as many lines.
                let admitted = match flight.resource {
                    Resource::Introspection(_) => self.failure_log.admit(now_ms),
                    _ => Admit::Log { suppressed: 0 },
                };
                if let Admit::Log { suppressed } = admitted {
                    if suppressed > 0 {
                        warn!("{suppressed} more introspection failures were not logged");
                    }
                    warn!("{what} fetch from {} failed: {why}{hint}", flight.to);
                }
            }
        }
        self.rerun(store, now_ms, Some(&flight.resource));
        true
    }

    /// The timer: background fetches, deadlines, and requests another worker unblocked.
    pub fn on_tick(&mut self, store: &mut dyn SharedStore, now_ms: u64) {
        log_suppressed(self.denial_log.roll(now_ms).unwrap_or(0));
        for (context, how) in self.bodies.expire(now_ms) {
            match how {
                Expired::Withheld => warn!(
                    "no request body reached the filter while the request was held: set \
                     allow_on_headers_stop_iteration: true in the Wasm PluginConfig (Envoy >= \
                     1.35) to take client credentials from bodies; until then they are refused"
                ),
                Expired::Slow => {}
            }
            let verdict = Verdict::Deny(Denial::Missing);
            self.count(context, None, &verdict, now_ms);
            self.decided.push_back((context, verdict));
        }
        for fetch in self.gate.background(store, now_ms) {
            self.queue(fetch);
        }
        self.rerun(store, now_ms, None);
    }

    /// The request of `context` is gone (answered, reset, timed out by the host). The host
    /// cancelled the callouts it sent: their fetches are released for the next request.
    pub fn on_gone(&mut self, store: &mut dyn SharedStore, context: u32, now_ms: u64) {
        self.parked.remove(&context);
        self.bodies.forget(context);
        let orphaned: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.owner == Some(context))
            .map(|(token, _)| *token)
            .collect();
        for token in orphaned {
            if let Some(f) = self.in_flight.remove(&token) {
                self.gate.abandon(store, &f.resource, now_ms);
            }
        }
    }

    /// Re-asks about the parked requests waiting for `only` (every parked request when
    /// `None`) whose resource is no longer being fetched; past its deadline a request gets
    /// 503. Linear in the parked requests: an IdP outage can park thousands, and each
    /// answer wakes only its own waiters.
    fn rerun(&mut self, store: &mut dyn SharedStore, now_ms: u64, only: Option<&Resource>) {
        // What this VM is fetching itself needs no look at shared data: its answer will come
        // here. Anything else, one shared-data read per awaited resource.
        let mut busy: HashMap<Resource, bool> = self
            .in_flight
            .values()
            .map(|f| (f.resource.clone(), true))
            .collect();
        let contexts: Vec<u32> = self.parked.keys().copied().collect();
        for context in contexts {
            let Some(p) = self.parked.get(&context) else {
                continue;
            };
            if now_ms >= p.deadline_ms {
                let credential = p.credential.clone();
                self.parked.remove(&context);
                self.tally.bump("oidcgate.parked.timeout");
                let verdict = Verdict::Deny(Denial::IdpUnavailable { retry_after_s: 1 });
                self.count(context, Some(&credential), &verdict, now_ms);
                self.decided.push_back((context, verdict));
                continue;
            }
            if only.is_some_and(|r| *r != p.waiting) {
                continue;
            }
            let still_busy = match only {
                // Its answer just came.
                Some(_) => false,
                None => match busy.get(&p.waiting) {
                    Some(b) => *b,
                    None => {
                        let b = self.gate.is_busy(store, &p.waiting, now_ms);
                        busy.insert(p.waiting.clone(), b);
                        b
                    }
                },
            };
            if still_busy {
                continue;
            }
            let (credential, policy, started_ms) = (p.credential.clone(), p.policy, p.started_ms);
            if let Some(verdict) = self.decide(
                store,
                context,
                &credential,
                policy,
                Look::again(started_ms),
                now_ms,
            ) {
                self.decided.push_back((context, verdict));
            }
        }
    }

    /// Counts a verdict; logs a denial.
    fn count(
        &mut self,
        context: u32,
        credential: Option<&Credential>,
        verdict: &Verdict,
        now_ms: u64,
    ) {
        let denial = match verdict {
            Verdict::Allow(_) => {
                self.tally.bump("oidcgate.allowed");
                return;
            }
            Verdict::Deny(denial) => denial,
        };
        self.tally.bump(match denial {
            Denial::Missing => "oidcgate.denied.missing",
            Denial::InvalidToken(_) => "oidcgate.denied.invalid_token",
            Denial::InvalidClient => "oidcgate.denied.invalid_client",
            Denial::InsufficientScope(_) => "oidcgate.denied.insufficient_scope",
            Denial::IdpUnavailable { .. } => "oidcgate.denied.idp_unavailable",
            Denial::UnknownPolicy => "oidcgate.denied.unknown_policy",
            Denial::HeaderNotRemovable => "oidcgate.denied.header_not_removable",
        });
        match denial {
            Denial::InsufficientScope(rule) => self.tally.bump(rule.counter()),
            Denial::InvalidToken(problem) => self.tally.bump(problem.counter()),
            _ => {}
        }
        match self.denial_log.admit(now_ms) {
            Admit::Suppress => {
                self.gate.take_detail();
                return;
            }
            Admit::Log { suppressed } => log_suppressed(suppressed),
        }
        // Who, without the secret or the token: the client id, or a short hash of the token.
        let who = match credential {
            Some(Credential::Client(c)) => format!("client_id={}", bounded(&c.id)),
            Some(Credential::Bearer(t)) => format!("token={}", log_tag(t)),
            None => "credential=none".to_string(),
        };
        let detail = self
            .gate
            .take_detail()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        info!(
            "denied {} status={} {who} ctx={context}{detail}",
            denial,
            denial.status()
        );
    }
}

fn log_suppressed(lines: u64) {
    if lines > 0 {
        info!(
            "{lines} more denials were not logged (the oidcgate.denied.* counters count them all)"
        );
    }
}

fn failed_metric(resource: &Resource) -> &'static str {
    match resource {
        Resource::Discovery => "oidcgate.idp.discovery.failed",
        Resource::Jwks => "oidcgate.idp.jwks.failed",
        Resource::Token(_) => "oidcgate.idp.token.failed",
        Resource::Introspection(_) => "oidcgate.idp.introspection.failed",
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
