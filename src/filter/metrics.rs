//! Operator metrics. Requests only bump plain counters in VM memory; the root's tick moves
//! them to the host in one batch, so the hot path makes no metric host calls.

use std::collections::BTreeMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::gate::Counters;

/// What happened since the last flush.
#[derive(Default)]
pub struct Tally {
    counts: BTreeMap<&'static str, u64>,
    latencies_ms: Vec<u64>,
}

/// Most callout latencies kept between two flushes; more are dropped, not buffered.
const MAX_SAMPLES: usize = 256;

impl Tally {
    pub fn bump(&mut self, name: &'static str) {
        *self.counts.entry(name).or_default() += 1;
    }

    pub fn latency(&mut self, ms: u64) {
        if self.latencies_ms.len() < MAX_SAMPLES {
            self.latencies_ms.push(ms);
        }
    }
}

/// Every counter name, so all exist (at zero) from the start and dashboards see them.
pub const COUNTERS: [&str; 19] = [
    "oidcgate.allowed",
    "oidcgate.denied.missing",
    "oidcgate.denied.invalid_token",
    "oidcgate.denied.invalid_client",
    "oidcgate.denied.insufficient_scope",
    "oidcgate.denied.idp_unavailable",
    "oidcgate.idp.discovery.ok",
    "oidcgate.idp.discovery.failed",
    "oidcgate.idp.jwks.ok",
    "oidcgate.idp.jwks.failed",
    "oidcgate.idp.token.ok",
    "oidcgate.idp.token.rejected",
    "oidcgate.idp.token.failed",
    "oidcgate.cache.verify.hit",
    "oidcgate.cache.verify.miss",
    "oidcgate.cache.token.hit",
    "oidcgate.cache.token.miss",
    "oidcgate.parked",
    "oidcgate.parked.timeout",
];

pub struct Metrics {
    ids: BTreeMap<&'static str, u32>,
    latency: Option<u32>,
    reported: Counters,
}

impl Metrics {
    pub fn define() -> Metrics {
        let ids = COUNTERS
            .iter()
            .filter_map(|name| {
                hostcalls::define_metric(MetricType::Counter, name)
                    .ok()
                    .map(|id| (*name, id))
            })
            .collect();
        let latency =
            hostcalls::define_metric(MetricType::Histogram, "oidcgate.idp.latency_ms").ok();
        Metrics {
            ids,
            latency,
            reported: Counters::default(),
        }
    }

    /// Moves the tally and the gate's cache counters to the host.
    pub fn flush(&mut self, tally: &mut Tally, counters: Counters) {
        let r = self.reported;
        for (name, delta) in [
            (
                "oidcgate.cache.verify.hit",
                counters.decision_hits - r.decision_hits,
            ),
            (
                "oidcgate.cache.verify.miss",
                counters.decision_misses - r.decision_misses,
            ),
            (
                "oidcgate.cache.token.hit",
                counters.token_hits - r.token_hits,
            ),
            (
                "oidcgate.cache.token.miss",
                counters.token_misses - r.token_misses,
            ),
        ] {
            self.add(name, delta);
        }
        self.reported = counters;
        for (name, delta) in std::mem::take(&mut tally.counts) {
            self.add(name, delta);
        }
        if let Some(id) = self.latency {
            for ms in tally.latencies_ms.drain(..) {
                let _ = hostcalls::record_metric(id, ms);
            }
        }
    }

    fn add(&self, name: &str, delta: u64) {
        if delta == 0 {
            return;
        }
        if let (Some(id), Ok(delta)) = (self.ids.get(name), i64::try_from(delta)) {
            let _ = hostcalls::increment_metric(*id, delta);
        }
    }
}
