//! Operator metrics. Requests only bump plain counters in VM memory; the root's tick moves
//! them to the host in one batch, so the hot path makes no metric host calls.

use std::collections::BTreeMap;

use proxy_wasm::types::MetricType;

use super::raw;
use crate::gate::Counters;
use crate::tally::{Tally, COUNTERS, HISTOGRAMS};

pub struct Metrics {
    ids: BTreeMap<&'static str, u32>,
    histograms: BTreeMap<&'static str, u32>,
    reported: Counters,
}

impl Metrics {
    pub fn define() -> Metrics {
        let ids = COUNTERS
            .iter()
            .filter_map(|name| {
                raw::define_metric(MetricType::Counter, name)
                    .ok()
                    .map(|id| (*name, id))
            })
            .collect();
        let histograms = HISTOGRAMS
            .iter()
            .filter_map(|name| {
                raw::define_metric(MetricType::Histogram, name)
                    .ok()
                    .map(|id| (*name, id))
            })
            .collect();
        Metrics {
            ids,
            histograms,
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
            (
                "oidcgate.cache.introspection.hit",
                counters.answer_hits - r.answer_hits,
            ),
            (
                "oidcgate.cache.introspection.miss",
                counters.answer_misses - r.answer_misses,
            ),
        ] {
            self.add(name, delta);
        }
        self.reported = counters;
        let (counts, latencies_ms) = tally.take();
        for (name, delta) in counts {
            self.add(name, delta);
        }
        for (histogram, ms) in latencies_ms {
            if let Some(id) = self.histograms.get(histogram) {
                let _ = raw::record_metric(*id, ms);
            }
        }
    }

    fn add(&self, name: &str, delta: u64) {
        if delta == 0 {
            return;
        }
        if let (Some(id), Ok(delta)) = (self.ids.get(name), i64::try_from(delta)) {
            let _ = raw::increment_metric(*id, delta);
        }
    }
}
