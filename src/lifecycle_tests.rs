//! The request lifecycle on the native target: parking, answers, deadlines, contexts that
//! go away, and workers that wait for each other, with the IdP scripted.

use serde_json::json;

use super::*;
use crate::fetch::Fetch;
use crate::store::MemStore;
use crate::testing::{bearer, client, token, Idp, World, T0};

/// One VM's lifecycle over `world`'s store (which other gates may share).
struct Vm {
    life: Lifecycle,
    next_token: u32,
    /// Callouts the host sent and has not answered yet: (token, fetch).
    sent: Vec<(u32, Fetch)>,
}

impl Vm {
    fn new(world: &mut World) -> Vm {
        let worker = world.add_worker();
        let gate = world.gates.remove(worker);
        Vm {
            life: Lifecycle::new(gate),
            next_token: 1,
            sent: Vec::new(),
        }
    }

    /// Sends everything queued, as the root context does; `refuse` makes the host refuse
    /// them.
    fn send(&mut self, store: &mut MemStore, now_ms: u64, refuse: bool) {
        self.send_from(store, None, now_ms, refuse)
    }

    /// Sends what context `owner` (`None`: the root) may send.
    fn send_from(&mut self, store: &mut MemStore, owner: Option<u32>, now_ms: u64, refuse: bool) {
        while let Some(fetch) = self.life.next_fetch(owner.is_none()) {
            if refuse {
                self.life.on_send_failed(store, &fetch, now_ms);
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            self.life.on_sent(token, fetch.clone(), owner, now_ms);
            self.sent.push((token, fetch));
        }
    }

    /// The IdP answers the oldest callout in flight.
    fn answer_one(&mut self, store: &mut MemStore, idp: &mut Idp, now_ms: u64) -> bool {
        if self.sent.is_empty() {
            return false;
        }
        let (token, fetch) = self.sent.remove(0);
        let (status, body) = idp.answer(&fetch, now_ms);
        assert!(self.life.on_answer(store, token, status, &body, now_ms));
        true
    }

    /// Sends and answers until nothing is left to send or answer.
    fn settle(&mut self, store: &mut MemStore, idp: &mut Idp, now_ms: u64) {
        loop {
            self.send(store, now_ms, false);
            if !self.answer_one(store, idp, now_ms) {
                break;
            }
        }
    }

    fn verdicts(&mut self) -> Vec<(u32, Verdict)> {
        std::iter::from_fn(|| self.life.next_verdict()).collect()
    }

    /// Discovery and the key set in place: a first bearer request (context 1) decided.
    fn warm_up(&mut self, w: &mut World) {
        let t = bearer(&token("rsa-1", json!({})));
        self.life.on_request(&mut w.store, 1, &t, 0, Some(T0));
        self.settle(&mut w.store, &mut w.idp, T0);
        self.verdicts();
    }
}

fn world() -> World {
    World::new("")
}

#[test]
fn a_parked_request_is_resumed_by_the_answers_it_waits_for() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    let t = bearer(&token("rsa-1", json!({})));
    // No key set yet: parked, with discovery to send.
    assert_eq!(vm.life.on_request(&mut w.store, 7, &t, 0, Some(T0)), None);
    assert_eq!(vm.life.parked(), 1);
    assert!(vm.verdicts().is_empty());
    vm.settle(&mut w.store, &mut w.idp, T0 + 5);
    assert_eq!(w.idp.calls, vec!["discovery", "jwks"]);
    let decided = vm.verdicts();
    assert!(
        matches!(decided.as_slice(), [(7, Verdict::Allow(_))]),
        "{decided:?}"
    );
    assert_eq!(vm.life.parked(), 0);
    assert_eq!(vm.life.tally().count("oidcgate.parked"), 1);
    assert_eq!(vm.life.tally().count("oidcgate.allowed"), 1);
    // Decided at once from now on, with nothing to send.
    assert!(matches!(
        vm.life.on_request(&mut w.store, 8, &t, 0, Some(T0 + 6)),
        Some(Verdict::Allow(_))
    ));
    assert!(vm.life.next_fetch(true).is_none());
}

#[test]
fn past_its_deadline_a_parked_request_gets_503() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    let t = bearer(&token("rsa-1", json!({})));
    assert_eq!(vm.life.on_request(&mut w.store, 7, &t, 0, Some(T0)), None);
    // The IdP never answers: the callout is in flight, the request waits.
    vm.send(&mut w.store, T0, false);
    vm.life.on_tick(&mut w.store, T0 + 9_999);
    assert!(vm.verdicts().is_empty());
    vm.life.on_tick(&mut w.store, T0 + 10_000);
    let decided = vm.verdicts();
    assert_eq!(
        decided,
        vec![(
            7,
            Verdict::Deny(Denial::IdpUnavailable { retry_after_s: 1 })
        )]
    );
    assert_eq!(vm.life.parked(), 0);
    assert_eq!(vm.life.tally().count("oidcgate.parked.timeout"), 1);
}

#[test]
fn a_refused_send_answers_the_request_503_at_once_and_leaves_nothing_parked() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    let t = bearer(&token("rsa-1", json!({})));
    assert_eq!(vm.life.on_request(&mut w.store, 7, &t, 0, Some(T0)), None);
    vm.send(&mut w.store, T0, true);
    let decided = vm.verdicts();
    assert!(
        matches!(
            decided.as_slice(),
            [(7, Verdict::Deny(Denial::IdpUnavailable { .. }))]
        ),
        "{decided:?}"
    );
    assert_eq!(vm.life.parked(), 0);
    assert!(
        vm.life.next_fetch(true).is_none(),
        "backs off, sends nothing more"
    );
    assert_eq!(vm.life.tally().count("oidcgate.idp.discovery.failed"), 1);
}

#[test]
fn a_request_that_goes_away_is_forgotten_but_its_fetch_still_lands() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    let t = bearer(&token("rsa-1", json!({})));
    assert_eq!(vm.life.on_request(&mut w.store, 7, &t, 0, Some(T0)), None);
    // Discovery is everyone's: the request context may not send it, the root does.
    assert!(vm.life.next_fetch(false).is_none());
    assert!(vm.life.root_has_work());
    vm.life.on_gone(&mut w.store, 7, T0);
    vm.send(&mut w.store, T0, false);
    assert_eq!(vm.life.parked(), 0);
    // The answers arrive anyway (the callouts belong to the VM) and serve the next caller.
    vm.settle(&mut w.store, &mut w.idp, T0 + 5);
    assert!(vm.verdicts().is_empty(), "nobody to resume");
    // The next request goes on from there: discovery is not asked again.
    assert_eq!(
        vm.life.on_request(&mut w.store, 8, &t, 0, Some(T0 + 6)),
        None
    );
    vm.settle(&mut w.store, &mut w.idp, T0 + 7);
    assert!(matches!(vm.verdicts().as_slice(), [(8, Verdict::Allow(_))]));
    assert_eq!(w.idp.calls, vec!["discovery", "jwks"]);
}

#[test]
fn a_request_waiting_on_another_workers_fetch_is_decided_on_a_tick() {
    let mut w = world();
    let mut a = Vm::new(&mut w);
    let mut b = Vm::new(&mut w);
    let c = client("svc", "good");
    // Keys in place on both; the race is on the client's token.
    let t = bearer(&token("rsa-1", json!({})));
    a.life.on_request(&mut w.store, 1, &t, 0, Some(T0));
    a.settle(&mut w.store, &mut w.idp, T0);
    a.verdicts();
    assert_eq!(a.life.on_request(&mut w.store, 2, &c, 0, Some(T0)), None);
    a.send(&mut w.store, T0, false);
    assert_eq!(b.life.on_request(&mut w.store, 3, &c, 0, Some(T0)), None);
    assert!(b.life.next_fetch(true).is_none(), "b waits for a's fetch");
    // Nothing changes for b until a's answer is in the shared store.
    b.life.on_tick(&mut w.store, T0 + 20);
    assert!(b.verdicts().is_empty());
    a.answer_one(&mut w.store, &mut w.idp, T0 + 30);
    assert!(matches!(a.verdicts().as_slice(), [(2, Verdict::Allow(_))]));
    b.life.on_tick(&mut w.store, T0 + 40);
    assert!(matches!(b.verdicts().as_slice(), [(3, Verdict::Allow(_))]));
    assert_eq!(w.idp.count("token"), 1);
}

#[test]
fn without_a_clock_a_request_is_refused() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    let t = bearer(&token("rsa-1", json!({})));
    assert_eq!(
        vm.life.on_request(&mut w.store, 7, &t, 0, None),
        Some(Verdict::Deny(Denial::IdpUnavailable { retry_after_s: 1 }))
    );
    assert!(vm.life.next_fetch(true).is_none());
}

#[test]
fn a_caller_that_goes_away_cannot_hold_key_rotation_off() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    vm.warm_up(&mut w);
    // The IdP rotates to rsa-2. A caller with an unknown kid starts the refetch and resets
    // its connection before the answer.
    w.idp.keys = vec!["rsa-2"];
    let rotated = bearer(&token("rsa-2", json!({})));
    let now = T0 + 30_000;
    assert_eq!(
        vm.life.on_request(&mut w.store, 10, &rotated, 0, Some(now)),
        None
    );
    vm.send_from(&mut w.store, Some(10), now, false);
    assert!(
        vm.sent.is_empty(),
        "a request context never sends the key-set fetch"
    );
    vm.life.on_gone(&mut w.store, 10, now);
    vm.send(&mut w.store, now + 20, false);
    // The refetch lands all the same.
    assert!(vm.answer_one(&mut w.store, &mut w.idp, now + 50));
    assert_eq!(w.idp.count("jwks"), 2);
    // The new key serves, the removed one does not.
    assert!(matches!(
        vm.life.on_request(&mut w.store, 30, &rotated, 0, Some(now)),
        Some(Verdict::Allow(_))
    ));
    assert!(matches!(
        vm.life.on_request(
            &mut w.store,
            31,
            &bearer(&token("rsa-1", json!({"jti":"n"}))),
            0,
            Some(now)
        ),
        Some(Verdict::Deny(Denial::InvalidToken(_)))
    ));
}

#[test]
fn a_token_fetch_whose_request_goes_away_is_released_for_the_next() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    let t = bearer(&token("rsa-1", json!({})));
    vm.life.on_request(&mut w.store, 1, &t, 0, Some(T0));
    vm.settle(&mut w.store, &mut w.idp, T0);
    vm.verdicts();
    let c = client("svc", "good");
    // The request sends its own token fetch, then is reset: the host cancels the callout.
    assert_eq!(vm.life.on_request(&mut w.store, 2, &c, 0, Some(T0)), None);
    vm.send_from(&mut w.store, Some(2), T0, false);
    assert_eq!(vm.sent.len(), 1);
    vm.sent.clear();
    vm.life.on_gone(&mut w.store, 2, T0 + 5);
    // The next request with those credentials fetches at once instead of waiting for a
    // lock nobody holds.
    assert_eq!(
        vm.life.on_request(&mut w.store, 3, &c, 0, Some(T0 + 6)),
        None
    );
    vm.send_from(&mut w.store, Some(3), T0 + 6, false);
    assert_eq!(vm.sent.len(), 1);
    vm.answer_one(&mut w.store, &mut w.idp, T0 + 7);
    assert!(matches!(vm.verdicts().as_slice(), [(3, Verdict::Allow(_))]));
}

/// A store that counts reads, to show what a rerun costs.
struct Counting<'a> {
    inner: &'a mut MemStore,
    reads: std::cell::Cell<usize>,
}

impl crate::store::SharedStore for Counting<'_> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.reads.set(self.reads.get() + 1);
        self.inner.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        self.inner.set(key, value, cas)
    }
}

fn reads_during(store: &mut MemStore, f: impl FnOnce(&mut Counting<'_>)) -> usize {
    let mut counting = Counting {
        inner: store,
        reads: std::cell::Cell::new(0),
    };
    f(&mut counting);
    counting.reads.get()
}

#[test]
fn a_thousand_parked_requests_cost_no_shared_reads_per_tick_and_one_answer_wakes_one() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    vm.warm_up(&mut w);
    // The token endpoint hangs: a thousand distinct clients park, each with its own fetch.
    for i in 0..1000u32 {
        let c = client(&format!("c{i}"), "s");
        assert_eq!(
            vm.life.on_request(&mut w.store, 10 + i, &c, 0, Some(T0)),
            None
        );
    }
    vm.send(&mut w.store, T0, false);
    assert_eq!(vm.life.parked(), 1000);
    // A tick looks at no parked request's record: this VM awaits every answer itself.
    let reads = reads_during(&mut w.store, |s| vm.life.on_tick(s, T0 + 20));
    assert!(reads <= 4, "{reads} shared reads for one tick");
    assert!(vm.verdicts().is_empty());
    // An answer re-asks only about the request that waited for it.
    let (token, fetch) = vm.sent.remove(0);
    let (status, body) = w.idp.answer(&fetch, T0 + 30);
    let reads = reads_during(&mut w.store, |s| {
        vm.life.on_answer(s, token, status, &body, T0 + 30);
    });
    assert!(reads <= 8, "{reads} shared reads for one answer");
    assert_eq!(vm.verdicts().len(), 1);
    assert_eq!(vm.life.parked(), 999);
}

#[test]
fn a_request_waiting_for_its_token_is_one_token_miss_however_often_it_is_asked() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    vm.warm_up(&mut w);
    let c = client("svc", "good");
    assert_eq!(vm.life.on_request(&mut w.store, 2, &c, 0, Some(T0)), None);
    vm.send(&mut w.store, T0, false);
    // Ticks re-ask while the token endpoint is slow, then the answer comes.
    for t in 1..5 {
        vm.life.on_tick(&mut w.store, T0 + t * 20);
    }
    vm.answer_one(&mut w.store, &mut w.idp, T0 + 100);
    assert!(matches!(vm.verdicts().as_slice(), [(2, Verdict::Allow(_))]));
    assert_eq!(vm.life.gate().counters().token_misses, 1);
}

#[test]
fn a_request_context_is_handed_only_the_fetch_it_waits_for_itself() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    vm.warm_up(&mut w);
    let a = client("svc-a", "good");
    let b = client("svc-b", "good");
    assert_eq!(vm.life.on_request(&mut w.store, 2, &a, 0, Some(T0)), None);
    assert_eq!(vm.life.on_request(&mut w.store, 3, &b, 0, Some(T0)), None);
    // Request 3 is not handed request 2's token fetch, though it is first in line.
    let for_3 = vm.life.next_fetch_for(3).expect("3's own token fetch");
    assert!(matches!(&for_3.resource, Resource::Token(_)));
    assert!(vm.life.next_fetch_for(3).is_none(), "one fetch each");
    let for_2 = vm.life.next_fetch_for(2).expect("2's own token fetch");
    assert_ne!(for_2.resource, for_3.resource);
    // Not parked, or waiting for nothing queued: nothing.
    assert!(vm.life.next_fetch_for(9).is_none());
    assert!(vm.life.next_fetch(false).is_none());
}

#[test]
fn a_request_waiting_for_everyones_keys_is_handed_no_fetch() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    let t = bearer(&token("rsa-1", json!({})));
    assert_eq!(vm.life.on_request(&mut w.store, 7, &t, 0, Some(T0)), None);
    // Discovery goes out from the root only.
    assert!(vm.life.next_fetch_for(7).is_none());
    assert!(vm.life.root_has_work());
}

#[test]
fn has_callout_is_true_only_while_a_request_s_own_callout_is_unanswered() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    vm.warm_up(&mut w);
    let c = client("svc", "good");
    assert_eq!(vm.life.on_request(&mut w.store, 2, &c, 0, Some(T0)), None);
    assert!(!vm.life.has_callout(2), "queued, not sent");
    vm.send_from(&mut w.store, Some(2), T0, false);
    assert!(vm.life.has_callout(2));
    assert!(!vm.life.has_callout(3), "another context's");
    vm.answer_one(&mut w.store, &mut w.idp, T0 + 5);
    assert!(!vm.life.has_callout(2));
    // Sent from the root: owned by no request.
    let d = client("svc-2", "good");
    assert_eq!(
        vm.life.on_request(&mut w.store, 4, &d, 0, Some(T0 + 6)),
        None
    );
    vm.send(&mut w.store, T0 + 6, false);
    assert!(!vm.life.has_callout(4));
}

#[test]
fn give_up_answers_503_forgets_the_request_and_counts_it() {
    let mut w = world();
    let mut vm = Vm::new(&mut w);
    vm.warm_up(&mut w);
    let c = client("svc", "good");
    assert_eq!(vm.life.on_request(&mut w.store, 2, &c, 0, Some(T0)), None);
    assert!(vm.life.is_undecided(2));
    let verdict = vm.life.give_up(2, T0 + 1);
    assert_eq!(
        verdict,
        Verdict::Deny(Denial::IdpUnavailable { retry_after_s: 1 })
    );
    assert!(!vm.life.is_undecided(2));
    assert_eq!(vm.life.parked(), 0);
    assert_eq!(vm.life.tally().count("oidcgate.parked.timeout"), 1);
    assert_eq!(vm.life.tally().count("oidcgate.denied.idp_unavailable"), 1);
    // Its deadline later decides nothing more.
    vm.life.on_tick(&mut w.store, T0 + 60_000);
    assert!(vm.verdicts().is_empty());
}
