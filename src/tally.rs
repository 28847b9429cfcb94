//! What happened since the host last heard: counts by metric name and IdP latencies. Plain
//! memory, bumped on the request path; the adapter moves it to the host on the timer, so a
//! request makes no metric host call.

use std::collections::BTreeMap;

/// Most callout latencies kept between two flushes; more are dropped, not buffered.
const MAX_SAMPLES: usize = 256;

/// Every counter name, so all exist (at zero) from the start and dashboards see them.
pub const COUNTERS: [&str; 43] = [
    "oidcgate.allowed",
    "oidcgate.denied.missing",
    "oidcgate.denied.invalid_token",
    "oidcgate.denied.invalid_token.token_too_large",
    "oidcgate.denied.invalid_token.malformed",
    "oidcgate.denied.invalid_token.disallowed_alg",
    "oidcgate.denied.invalid_token.unknown_kid",
    "oidcgate.denied.invalid_token.bad_signature",
    "oidcgate.denied.invalid_token.expired",
    "oidcgate.denied.invalid_token.not_yet_valid",
    "oidcgate.denied.invalid_token.iat_in_future",
    "oidcgate.denied.invalid_token.missing_exp",
    "oidcgate.denied.invalid_token.wrong_issuer",
    "oidcgate.denied.invalid_token.client_not_allowed",
    "oidcgate.denied.invalid_token.inactive",
    "oidcgate.denied.invalid_client",
    "oidcgate.denied.insufficient_scope",
    "oidcgate.denied.insufficient_scope.audience",
    "oidcgate.denied.insufficient_scope.scopes",
    "oidcgate.denied.insufficient_scope.groups",
    "oidcgate.denied.insufficient_scope.roles",
    "oidcgate.denied.insufficient_scope.claims_forbidden",
    "oidcgate.denied.idp_unavailable",
    "oidcgate.denied.unknown_policy",
    "oidcgate.denied.header_not_removable",
    "oidcgate.idp.discovery.ok",
    "oidcgate.idp.discovery.failed",
    "oidcgate.idp.jwks.ok",
    "oidcgate.idp.jwks.failed",
    "oidcgate.idp.token.ok",
    "oidcgate.idp.token.rejected",
    "oidcgate.idp.token.failed",
    "oidcgate.idp.introspection.ok",
    "oidcgate.idp.introspection.inactive",
    "oidcgate.idp.introspection.failed",
    "oidcgate.cache.verify.hit",
    "oidcgate.cache.verify.miss",
    "oidcgate.cache.token.hit",
    "oidcgate.cache.token.miss",
    "oidcgate.cache.introspection.hit",
    "oidcgate.cache.introspection.miss",
    "oidcgate.parked",
    "oidcgate.parked.timeout",
];

#[derive(Debug, Default)]
pub struct Tally {
    counts: BTreeMap<&'static str, u64>,
    /// (histogram, ms): each callout's latency, under its endpoint's histogram.
    latencies_ms: Vec<(&'static str, u64)>,
}

/// The IdP latency histograms: every callout, and per endpoint.
pub const HISTOGRAMS: [&str; 5] = [
    "oidcgate.idp.latency_ms",
    "oidcgate.idp.discovery.latency_ms",
    "oidcgate.idp.jwks.latency_ms",
    "oidcgate.idp.token.latency_ms",
    "oidcgate.idp.introspection.latency_ms",
];

impl Tally {
    pub fn bump(&mut self, name: &'static str) {
        *self.counts.entry(name).or_default() += 1;
    }

    /// A callout's latency, in `histogram` (one of [`HISTOGRAMS`]) and in the overall one.
    pub fn latency(&mut self, histogram: &'static str, ms: u64) {
        if self.latencies_ms.len() + 2 <= MAX_SAMPLES {
            self.latencies_ms.push((HISTOGRAMS[0], ms));
            self.latencies_ms.push((histogram, ms));
        }
    }

    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// Hands over everything counted and sampled, leaving the tally empty.
    pub fn take(&mut self) -> (BTreeMap<&'static str, u64>, Vec<(&'static str, u64)>) {
        (
            std::mem::take(&mut self.counts),
            std::mem::take(&mut self.latencies_ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_goes_to_its_endpoint_and_to_the_overall_histogram_and_samples_are_bounded() {
        let mut t = Tally::default();
        t.latency("oidcgate.idp.token.latency_ms", 7);
        let (_, samples) = t.take();
        assert_eq!(
            samples,
            vec![
                ("oidcgate.idp.latency_ms", 7),
                ("oidcgate.idp.token.latency_ms", 7)
            ]
        );
        for ms in 0..10_000 {
            t.latency("oidcgate.idp.jwks.latency_ms", ms);
        }
        assert!(t.take().1.len() <= MAX_SAMPLES);
    }
}
