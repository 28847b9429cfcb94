//! What the IdP goes through during a run: key rotations, outages and one fault window, on a
//! schedule, recorded as they happen for the judge and the report.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use testkit::idp::{Endpoint, Fault};
use testkit::Stack;

use crate::judge::GRACE_EXTRA;
use crate::{Error, TIMEOUT_MS};

/// Fixture keys in the order the IdP signs with them; after the last, the first again.
pub const KEY_CYCLE: [&str; 4] = ["rsa-1", "ec-1", "rsa-2", "ed-1"];
pub const ROTATE_EVERY: Duration = Duration::from_secs(30);
/// Lifetime of every valid token, issued by the IdP or minted here. A key that stopped
/// signing stays published this long, so no unexpired token outlives its key (Okta keeps
/// the previous key published the same way).
pub const TOKEN_TTL: Duration = Duration::from_secs(45);
pub const OUTAGE_FIRST: Duration = Duration::from_secs(20);
pub const OUTAGE_EVERY: Duration = Duration::from_secs(45);
pub const OUTAGE_FOR: Duration = Duration::from_secs(5);
/// The one fault window of a full-length run: token endpoint 500, JWKS slower than the
/// filter's timeout. Shorter runs put it at the same fraction of the run.
pub const FAULT_AT: Duration = Duration::from_secs(130);
pub const FAULT_FOR: Duration = Duration::from_secs(15);
pub const FAULT_JWKS_DELAY: Duration = Duration::from_secs(3);

/// What chaos did, in order, and what the judge needs from it.
#[derive(Default)]
pub struct ChaosState {
    pub active_kid: &'static str,
    pub published: Vec<&'static str>,
    /// IdP outages and fault windows: (from, to, grace after `to`); `to` is `None` while on.
    pub disturbances: Vec<(Instant, Option<Instant>, Duration)>,
    /// When each key started signing.
    pub activations: Vec<(&'static str, Instant)>,
    /// For the report: offset from the start and what happened.
    pub log: Vec<(Duration, String)>,
}

pub struct Chaos {
    pub start: Instant,
    pub state: Mutex<ChaosState>,
}

impl Chaos {
    pub fn state(&self) -> MutexGuard<'_, ChaosState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn active_kid(&self) -> &'static str {
        self.state().active_kid
    }

    pub fn note(&self, state: &mut ChaosState, what: String) {
        state.log.push((self.start.elapsed(), what));
    }
}

/// One scheduled chaos action.
#[derive(Clone, Debug)]
pub enum Action {
    Rotate(&'static str),
    Retire(&'static str),
    Down,
    Up,
    FaultOn,
    FaultOff,
}

/// The chaos schedule of a run of `run` length, by offset from the start.
pub fn schedule(run: Duration) -> Vec<(Duration, Action)> {
    let mut plan = Vec::new();
    let mut at = ROTATE_EVERY;
    let mut n = 1;
    while at < run {
        let previous = KEY_CYCLE[(n - 1) % KEY_CYCLE.len()];
        plan.push((at, Action::Rotate(KEY_CYCLE[n % KEY_CYCLE.len()])));
        if at + TOKEN_TTL < run {
            plan.push((at + TOKEN_TTL, Action::Retire(previous)));
        }
        at += ROTATE_EVERY;
        n += 1;
    }
    let mut at = OUTAGE_FIRST;
    while at + OUTAGE_FOR < run {
        plan.push((at, Action::Down));
        plan.push((at + OUTAGE_FOR, Action::Up));
        at += OUTAGE_EVERY;
    }
    let full = Duration::from_secs(300);
    let (fault_at, fault_for) = if run >= full {
        (FAULT_AT, FAULT_FOR)
    } else {
        (
            FAULT_AT.mul_f64(run.as_secs_f64() / full.as_secs_f64()),
            FAULT_FOR.mul_f64(run.as_secs_f64() / full.as_secs_f64()),
        )
    };
    if fault_at + fault_for < run {
        plan.push((fault_at, Action::FaultOn));
        plan.push((fault_at + fault_for, Action::FaultOff));
    }
    plan.sort_by_key(|(at, _)| *at);
    plan
}

pub async fn run_chaos(
    chaos: Arc<Chaos>,
    stack: Arc<Stack>,
    plan: Vec<(Duration, Action)>,
) -> Result<(), Error> {
    let idp = &stack.idp;
    for (at, action) in plan {
        tokio::time::sleep_until((chaos.start + at).into()).await;
        match action {
            Action::Rotate(kid) => {
                let published = {
                    let mut s = chaos.state();
                    if !s.published.contains(&kid) {
                        s.published.push(kid);
                    }
                    // Recorded before the IdP signs with it, so every answer it affects
                    // finds the activation.
                    s.activations.push((kid, Instant::now()));
                    let published = s.published.clone();
                    chaos.note(
                        &mut s,
                        format!("rotate: sign with `{kid}`; publish {published:?}"),
                    );
                    published
                };
                idp.publish(&published);
                idp.rotate_to(kid);
                chaos.state().active_kid = kid;
            }
            Action::Retire(kid) => {
                let published = {
                    let mut s = chaos.state();
                    s.published.retain(|k| *k != kid);
                    let published = s.published.clone();
                    chaos.note(&mut s, format!("retire `{kid}`: publish {published:?}"));
                    published
                };
                idp.publish(&published);
            }
            Action::Down => {
                {
                    let mut s = chaos.state();
                    s.disturbances
                        .push((Instant::now(), None, OUTAGE_FOR + GRACE_EXTRA));
                    chaos.note(&mut s, "IdP down (connections refused)".into());
                }
                idp.down().await;
            }
            Action::FaultOn => {
                {
                    let mut s = chaos.state();
                    s.disturbances
                        .push((Instant::now(), None, FAULT_FOR + GRACE_EXTRA));
                    chaos.note(
                        &mut s,
                        format!(
                            "faults on: token endpoint 500, JWKS delayed {} s (filter timeout {} s)",
                            FAULT_JWKS_DELAY.as_secs(),
                            TIMEOUT_MS / 1000
                        ),
                    );
                }
                idp.set_fault(Endpoint::Token, Fault::Status(500));
                idp.set_fault(Endpoint::Jwks, Fault::Delay(FAULT_JWKS_DELAY));
            }
            Action::Up | Action::FaultOff => {
                if matches!(action, Action::Up) {
                    idp.up().await;
                } else {
                    idp.clear_faults();
                }
                let mut s = chaos.state();
                let now = Instant::now();
                if let Some(open) = s.disturbances.iter_mut().rev().find(|d| d.1.is_none()) {
                    open.1 = Some(now);
                }
                let what = match action {
                    Action::Up => "IdP up",
                    _ => "faults off",
                };
                chaos.note(&mut s, what.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_run_has_every_kind_of_chaos() {
        let plan = schedule(Duration::from_secs(300));
        let count = |f: fn(&Action) -> bool| plan.iter().filter(|(_, a)| f(a)).count();
        assert_eq!(count(|a| matches!(a, Action::Rotate(_))), 9);
        assert_eq!(count(|a| matches!(a, Action::Down)), 7);
        assert_eq!(count(|a| matches!(a, Action::FaultOn)), 1);
        assert!(plan.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
