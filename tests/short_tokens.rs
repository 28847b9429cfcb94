//! Short-lived tokens in a real Envoy with two workers: the IdP issues 12 s tokens from a
//! token endpoint that takes 500 ms; one client sends 4 requests a second for 27 s. The
//! filter refreshes each token ahead of its expiry, once per lifetime for all workers, and
//! no request after the first waits for the token endpoint.

// A test asserts by panicking; the panic-path lints guard the filter, not its tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::idp::{Endpoint, Fault, MockIdp};
use testkit::Stack;

#[tokio::test]
async fn twelve_second_tokens_from_a_slow_endpoint_are_fetched_once_per_lifetime() {
    let idp = MockIdp::start().await;
    idp.set_token_ttl(Duration::from_secs(12));
    idp.set_fault(Endpoint::Token, Fault::Delay(Duration::from_millis(500)));
    let s = Stack::start(idp, json!({"timeout": 3000}), 2).await;
    let first = s.basic("demo-client", "demo-secret").await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(27) {
        // A new connection each time: Envoy spreads them over its two workers.
        let client = testkit::http_client();
        let sent = Instant::now();
        let a = s
            .send(
                client
                    .get(s.envoy.url("/api"))
                    .basic_auth("demo-client", Some("demo-secret")),
            )
            .await;
        assert_eq!(a.status, 200, "after {:?}: {:?}", started.elapsed(), a.body);
        slowest = slowest.max(sent.elapsed());
        requests += 1;
        tokio::time::sleep(Duration::from_millis(250).saturating_sub(sent.elapsed())).await;
    }
    let calls = s.idp.counts().token;
    // 27 s of 12 s tokens: the first, then a refresh about every 9 s (a quarter of the
    // lifetime before expiry). One per lifetime, plus the first, whatever worker asked.
    assert!(
        (3..=4).contains(&calls),
        "{calls} token calls for {requests} requests"
    );
    // The token endpoint takes 500 ms: a request that waited for it took longer.
    assert!(
        slowest < Duration::from_millis(500),
        "a request waited {slowest:?} (token calls: {calls})"
    );
}
