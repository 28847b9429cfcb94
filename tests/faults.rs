//! IdP faults against the built `oidcgate.wasm` in a real Envoy: a reset connection, a 10 MB
//! answer, a key set without a usable key, and discovery pointing elsewhere. Whatever the
//! IdP does, the filter answers 503 (never 200, never a hang), Envoy keeps serving, and it
//! recovers by itself once the IdP behaves.

// A test asserts by panicking; the panic-path lints guard the filter, not its tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::echo::Echo;
use testkit::idp::{Endpoint, Fault, MintSpec, MockIdp};
use testkit::{Answer, Stack};

/// Starts Envoy in front of an IdP that `prepare` has already set up (faults, key sets).
async fn stack_with(extra: Value, prepare: impl FnOnce(&MockIdp)) -> Stack {
    let idp = MockIdp::start().await;
    prepare(&idp);
    let config = testkit::merged(
        json!({
            "timeout": 1000,
            "upstream_headers_claims": ["iss", "sub"],
            "upstream_headers_names": ["Issuer_Header", "X-Subject"],
        }),
        extra,
    );
    Stack::start(idp, config, 1).await
}

/// Asks with `ask` every 250 ms until it answers `want` or `within` passes; the last status.
async fn poll<F, Fut>(want: u16, within: Duration, ask: F) -> u16
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let deadline = Instant::now() + within;
    loop {
        let a = ask().await;
        // On the way to recovery nothing but 503 (or the goal) is acceptable.
        assert!(
            a.status == want || a.status == 503,
            "{}: {:?}",
            a.status,
            a.body
        );
        if a.status == want || Instant::now() >= deadline {
            return a.status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn assert_unavailable(a: &Answer, what: &str) {
    assert_eq!(a.status, 503, "{what}: {:?}", a.body);
    assert!(
        a.headers.contains_key("retry-after"),
        "{what}: no Retry-After"
    );
    assert_eq!(a.body["error"], "temporarily_unavailable", "{what}");
}

#[tokio::test]
async fn connection_reset_by_the_idp_is_503_then_recovers() {
    let s = stack_with(json!({}), |_| {}).await;
    s.idp.set_fault(Endpoint::Token, Fault::Reset);
    let started = Instant::now();
    let a = s.basic("demo-client", "demo-secret").await;
    assert_unavailable(&a, "token endpoint reset");
    assert!(started.elapsed() < Duration::from_secs(3), "no hang");
    assert!(s.idp.counts().token >= 1, "the token endpoint was asked");

    // Every endpoint resetting, before any key set: a bearer token cannot be checked either.
    let s = stack_with(json!({}), |idp| idp.set_fault(Endpoint::All, Fault::Reset)).await;
    let token = s.idp.mint(MintSpec::default());
    assert_unavailable(&s.bearer(&token).await, "every endpoint reset");
    s.idp.clear_faults();
    let last = poll(200, Duration::from_secs(10), || s.bearer(&token)).await;
    assert_eq!(last, 200, "recovers once the IdP answers");
    assert_eq!(s.echo.requests(), 1);
}

#[tokio::test]
async fn ten_megabytes_from_the_token_endpoint_is_503_and_envoy_keeps_serving() {
    let s = stack_with(json!({}), |_| {}).await;
    // Keys are fetched normally; only the token endpoint misbehaves.
    let token = s.idp.mint(MintSpec::default());
    assert_eq!(s.bearer(&token).await.status, 200);
    s.idp.set_fault(Endpoint::Token, Fault::Huge);
    for _ in 0..3 {
        let a = s.basic("demo-client", "demo-secret").await;
        assert_unavailable(&a, "10 MB token response");
    }
    // Envoy is still there and still judging requests.
    assert_eq!(s.anonymous().await.status, 401);
    assert_eq!(s.bearer(&token).await.status, 200);
    s.idp.clear_faults();
    let last = poll(200, Duration::from_secs(10), || {
        s.basic("demo-client", "demo-secret")
    })
    .await;
    assert_eq!(last, 200, "recovers once the token endpoint answers sanely");
    assert_eq!(s.echo.requests(), 3);
}

#[tokio::test]
async fn a_key_set_without_a_usable_key_is_503_until_a_good_one_is_published() {
    let s = stack_with(json!({"timeout": 500}), |idp| {
        idp.publish_jwks(json!({"keys": [{"kty": "oct", "k": "AAAA"}]}));
    })
    .await;
    let token = s.idp.mint(MintSpec::default());
    let a = s.bearer(&token).await;
    assert_unavailable(&a, "JWKS without a usable key");
    assert!(s.idp.counts().jwks >= 1, "the key set was fetched");
    // Client credentials get a token, but it cannot be verified either.
    assert_unavailable(
        &s.basic("demo-client", "demo-secret").await,
        "client token without keys",
    );
    assert_eq!(s.echo.requests(), 0);

    s.idp.publish(&["rsa-1", "ec-1", "ed-1"]);
    // Failed fetches back off from 1 s, doubling: the next try comes within a few seconds.
    let last = poll(200, Duration::from_secs(15), || s.bearer(&token)).await;
    assert_eq!(last, 200, "recovers without a restart");
    assert_eq!(s.basic("demo-client", "demo-secret").await.status, 200);
}

#[tokio::test]
async fn discovery_pointing_elsewhere_is_503_never_200() {
    // Something does listen at the other address; it just is not the IdP's key set. (With
    // `idp_cluster`, every callout goes to the operator's IdP cluster whatever the URL's
    // authority; without it, to a cluster named after that authority, which Envoy lacks.)
    let elsewhere = Echo::start().await;
    let jwks_uri = format!("http://127.0.0.1:{}/keys", elsewhere.port);
    let s = stack_with(json!({"timeout": 500}), |idp| {
        idp.set_discovery_override(Some(&jwks_uri), None)
    })
    .await;
    let token = s.idp.mint(MintSpec::default());
    for _ in 0..3 {
        assert_unavailable(&s.bearer(&token).await, "jwks_uri elsewhere (bearer)");
        assert_unavailable(
            &s.basic("demo-client", "demo-secret").await,
            "jwks_uri elsewhere (client credentials)",
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(s.idp.counts().discovery >= 1, "discovery was read");
    assert_eq!(s.idp.counts().jwks, 0, "the real key set was never asked");
    assert_eq!(s.echo.requests(), 0);
}
