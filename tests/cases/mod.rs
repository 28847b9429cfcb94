//! The core end-to-end cases, written once for any gateway: tests/e2e.rs runs them in a real
//! Envoy, tests/kong_host.rs in Kong's wasm host (nginx + ngx_wasm_module + wasmtime). Each
//! case starts its own IdP, echo upstream and gateway through a [`Host`], so IdP call counts
//! belong to it alone.

// Each test crate that includes this module uses only some of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::envoy::Envoy;
use testkit::idp::{Endpoint, Fault, MintSpec, MockIdp};
use testkit::nginx::Nginx;
use testkit::{Answer, Gateway, Stack};

/// Starts a stack of one kind of gateway.
pub(crate) trait Host {
    type G: Gateway;
    /// The gateway with `workers` workers (each its own wasm VM) in front of `idp`, running
    /// the filter with `config` merged over `{"issuer": <idp>}` (and whatever the host needs
    /// to reach it).
    async fn start(&self, idp: MockIdp, config: Value, workers: u32) -> Stack<Self::G>;
}

/// A real Envoy (`ENVOY_BIN`).
pub(crate) struct EnvoyHost;

impl Host for EnvoyHost {
    type G = Envoy;
    async fn start(&self, idp: MockIdp, config: Value, workers: u32) -> Stack<Envoy> {
        Stack::start(idp, config, workers).await
    }
}

/// Kong's wasm host: the nginx binary `KONG_HOST_BIN` names.
pub(crate) struct NginxHost(pub PathBuf);

impl Host for NginxHost {
    type G = Nginx;
    async fn start(&self, idp: MockIdp, config: Value, workers: u32) -> Stack<Nginx> {
        Stack::start_nginx(self.0.clone(), idp, config, workers).await
    }
}

/// The configuration every test starts from; `extra` keys are merged over it.
pub(crate) fn filter_config(extra: Value) -> Value {
    testkit::merged(
        json!({
            "timeout": 2000,
            "upstream_headers_claims": ["iss", "sub", "scp"],
            "upstream_headers_names": ["Issuer_Header", "X-Subject", "X-Scopes"],
        }),
        extra,
    )
}

async fn stack_with<H: Host>(host: &H, extra: Value, workers: u32) -> Stack<H::G> {
    host.start(MockIdp::start().await, filter_config(extra), workers)
        .await
}

async fn stack<H: Host>(host: &H) -> Stack<H::G> {
    stack_with(host, json!({}), 1).await
}

/// A token straight from the IdP, as a caller with its own client would get one.
pub(crate) async fn idp_token<G: Gateway>(s: &Stack<G>) -> String {
    let resp: Value = s
        .http
        .post(s.idp.token_endpoint())
        .basic_auth("demo-client", Some("demo-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"].as_str().unwrap().to_string()
}

pub(crate) fn assert_invalid_token(a: &Answer) {
    assert_eq!(a.status, 401, "{:?}", a.body);
    assert!(
        a.www_authenticate().contains("error=\"invalid_token\""),
        "{}",
        a.www_authenticate()
    );
    assert_eq!(a.body["error"], "invalid_token");
}

pub(crate) async fn no_credentials_is_401_with_a_bearer_challenge<H: Host>(host: &H) {
    let s = stack(host).await;
    let a = s.get("/api").await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.www_authenticate(),
        format!("Bearer realm=\"127.0.0.1:{}\"", s.idp.port())
    );
    assert_eq!(a.body["error"], "unauthorized");
    assert_eq!(s.echo.requests(), 0);
}

pub(crate) async fn client_credentials_are_exchanged_and_the_secret_never_reaches_upstream<
    H: Host,
>(
    host: &H,
) {
    let s = stack(host).await;
    let a = s.basic("demo-client", "demo-secret").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let auth = a.upstream("authorization").unwrap();
    let token = auth.strip_prefix("Bearer ").expect("bearer token upstream");
    assert_eq!(token.split('.').count(), 3);
    assert_eq!(a.upstream("Issuer_Header"), Some(s.idp.issuer().as_str()));
    assert_eq!(a.upstream("X-Subject"), Some("demo-client"));
    let echoed = a.body.to_string();
    assert!(!echoed.contains("demo-secret"));
    assert!(!echoed.contains("Basic "));
    let seen = s.idp.last_token_request().unwrap();
    assert_eq!(seen.auth_method, "client_secret_basic");
    assert_eq!(seen.client_id, "demo-client");
}

pub(crate) async fn cached_client_token_means_no_more_idp_calls<H: Host>(host: &H) {
    let s = stack(host).await;
    let first = s.basic("demo-client", "demo-secret").await;
    for _ in 0..5 {
        let again = s.basic("demo-client", "demo-secret").await;
        assert_eq!(again.status, 200);
        assert_eq!(
            again.upstream("authorization"),
            first.upstream("authorization")
        );
    }
    assert_eq!(s.idp.counts().token, 1);
}

/// A wrong secret, and the negative cache: remembered for `cache_ttl_neg`, the IdP is not
/// asked again.
pub(crate) async fn wrong_secret_right_after_a_cached_right_one_is_401<H: Host>(host: &H) {
    let s = stack(host).await;
    assert_eq!(s.basic("demo-client", "demo-secret").await.status, 200);
    let a = s.basic("demo-client", "wrong").await;
    assert_eq!(a.status, 401);
    assert!(a.www_authenticate().contains("error=\"invalid_client\""));
    assert_eq!(s.idp.counts().token, 2);
    // Remembered for cache_ttl_neg: the IdP is not asked again.
    assert_eq!(s.basic("demo-client", "wrong").await.status, 401);
    assert_eq!(s.idp.counts().token, 2);
    assert_eq!(s.echo.requests(), 1);
}

/// The negative cache holds across workers, and lapses after `cache_ttl_neg`.
pub(crate) async fn refused_credentials_are_remembered_by_every_worker_then_forgotten<H: Host>(
    host: &H,
) {
    let s = stack_with(host, json!({"cache_ttl_neg": 1}), 2).await;
    assert_eq!(s.basic("demo-client", "wrong").await.status, 401);
    assert_eq!(s.idp.counts().token, 1);
    // New connections, spread over both workers: each must find the refusal shared.
    for _ in 0..8 {
        let fresh = testkit::http_client();
        let a = s
            .send(
                fresh
                    .get(s.url("/api"))
                    .basic_auth("demo-client", Some("wrong")),
            )
            .await;
        assert_eq!(a.status, 401);
        assert!(a.www_authenticate().contains("error=\"invalid_client\""));
    }
    assert_eq!(s.idp.counts().token, 1, "the refusal is shared data");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(s.basic("demo-client", "wrong").await.status, 401);
    assert_eq!(s.idp.counts().token, 2, "asked again after cache_ttl_neg");
}

pub(crate) async fn bearer_token_from_the_idp_is_verified_and_forwarded<H: Host>(host: &H) {
    let s = stack(host).await;
    let token = idp_token(&s).await;
    let a = s.bearer(&token).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        a.upstream("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(a.upstream("Issuer_Header"), Some(s.idp.issuer().as_str()));
    // scp ["read"] travels as base64 of its JSON.
    assert_eq!(a.upstream("X-Scopes"), Some("WyJyZWFkIl0="));
    // Verified once: a second use does not touch the IdP either.
    let jwks = s.idp.counts().jwks;
    assert_eq!(s.bearer(&token).await.status, 200);
    assert_eq!(s.idp.counts().jwks, jwks);
    // Tampered (a character in the middle of the signature changed): refused.
    let at = token.rfind('.').unwrap() + 20;
    let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
    assert_invalid_token(&s.bearer(&tampered).await);
}

pub(crate) async fn caller_copies_of_claim_headers_are_replaced<H: Host>(host: &H) {
    let s = stack(host).await;
    // Two copies each: overwriting one copy in place would leave the other to the upstream.
    let spoofed = |req: reqwest::RequestBuilder| {
        req.header("Issuer_Header", "https://evil.example.com")
            .header("Issuer_Header", "https://evil.example.org")
            .header("X-Subject", "admin")
            .header("X-Subject", "root")
            .header("X-Scopes", "spoof")
            // Spellings CGI, WSGI and Rack upstreams read as the same headers.
            .header("X_Subject", "admin")
            .header("issuer-header", "https://evil.example.net")
            .header("x_scopes", "spoof")
    };
    let no_other_spelling = |a: &Answer| {
        for name in ["x_subject", "issuer-header", "x_scopes"] {
            assert!(
                a.upstream(name).is_none(),
                "{name} reached the upstream: {:?}",
                a.body
            );
        }
    };
    let a = s
        .send(spoofed(
            s.http
                .get(s.url("/api"))
                .basic_auth("demo-client", Some("demo-secret")),
        ))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream("Issuer_Header"), Some(s.idp.issuer().as_str()));
    assert_eq!(a.upstream("X-Subject"), Some("demo-client"));
    no_other_spelling(&a);
    // A claim the token lacks: the caller's copy is removed, not passed through.
    let no_sub = s.idp.mint(MintSpec {
        remove: vec!["sub"],
        ..MintSpec::default()
    });
    let a = s
        .send(spoofed(s.http.get(s.url("/api")).bearer_auth(no_sub)))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.upstream("X-Subject"), None);
    no_other_spelling(&a);
}

/// Thirty concurrent first requests of one client over two workers: one token call, one
/// key-set fetch, one discovery, and every request answered (none left waiting).
pub(crate) async fn thirty_concurrent_first_requests_on_two_workers_make_one_token_call<H: Host>(
    host: &H,
) {
    let s = stack_with(host, json!({}), 2).await;
    let http = testkit::http_client_with_timeout(Duration::from_secs(15));
    let requests = (0..30).map(|_| {
        s.send(
            http.get(s.url("/api"))
                .basic_auth("demo-client", Some("demo-secret")),
        )
    });
    let answers = futures::future::join_all(requests).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{:?}", a.body);
    }
    assert_eq!(s.idp.counts().token, 1);
    assert_eq!(s.idp.counts().jwks, 1);
    assert_eq!(s.idp.counts().discovery, 1);
}

pub(crate) async fn key_rotation_is_picked_up_without_restart<H: Host>(host: &H) {
    let s = stack_with(host, json!({"rediscovery_lifetime": 1}), 1).await;
    assert_eq!(s.basic("demo-client", "demo-secret").await.status, 200);
    s.idp.publish(&["rsa-2", "rsa-1", "ec-1", "ed-1"]);
    s.idp.rotate_to("rsa-2");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let token = idp_token(&s).await;
    let a = s.bearer(&token).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(s.idp.counts().jwks, 2);
}

/// Client credentials whose fresh token is signed with a key the filter has not seen: the
/// request waits for the key-set refetch (sent from the root context) and then passes.
pub(crate) async fn a_client_token_signed_with_a_new_key_waits_for_the_refetch<H: Host>(host: &H) {
    let s = stack_with(host, json!({"rediscovery_lifetime": 1}), 1).await;
    assert_eq!(s.basic("demo-client", "demo-secret").await.status, 200);
    s.idp.publish(&["rsa-2", "rsa-1", "ec-1", "ed-1"]);
    s.idp.rotate_to("rsa-2");
    s.idp
        .add_client("late-client", "late-secret", &["read"], &["read"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = s.basic("late-client", "late-secret").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.upstream("X-Subject"), Some("late-client"));
    assert_eq!(s.idp.counts().jwks, 2);
    assert!(!a.body.to_string().contains("late-secret"));
}

pub(crate) async fn idp_down_cached_credentials_pass_new_ones_get_503_then_recover<H: Host>(
    host: &H,
) {
    let s = stack_with(host, json!({"timeout": 1000}), 1).await;
    assert_eq!(s.basic("demo-client", "demo-secret").await.status, 200);
    let token = idp_token(&s).await;
    s.idp
        .add_client("late-client", "late-secret", &["read"], &["read"]);
    s.idp.down().await;

    assert_eq!(
        s.basic("demo-client", "demo-secret").await.status,
        200,
        "cached token keeps serving"
    );
    assert_eq!(
        s.bearer(&token).await.status,
        200,
        "cached key set keeps serving"
    );
    let started = Instant::now();
    let a = s.basic("late-client", "late-secret").await;
    assert_eq!(a.status, 503);
    assert!(a.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "answered within the timeout"
    );

    s.idp.up().await;
    let mut status = 0;
    for _ in 0..80 {
        status = s.basic("late-client", "late-secret").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200, "recovers by itself once the IdP is back");
}

pub(crate) async fn slow_idp_is_503_at_the_timeout_not_a_hang<H: Host>(host: &H) {
    let s = stack_with(host, json!({"timeout": 500}), 1).await;
    s.idp
        .set_fault(Endpoint::Token, Fault::Delay(Duration::from_secs(5)));
    let started = Instant::now();
    let a = s.basic("demo-client", "demo-secret").await;
    assert_eq!(a.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

pub(crate) async fn idp_errors_and_garbage_are_503_never_401<H: Host>(host: &H) {
    for fault in [Fault::Status(500), Fault::Garbage, Fault::Truncated] {
        let s = stack(host).await;
        s.idp.set_fault(Endpoint::Token, fault);
        let a = s.basic("demo-client", "demo-secret").await;
        assert_eq!(a.status, 503, "{:?}", a.body);
        assert!(a.headers.contains_key("retry-after"));
    }
}

pub(crate) async fn started_with_the_idp_down_recovers_when_it_comes_up<H: Host>(host: &H) {
    let idp = MockIdp::start().await;
    idp.down().await;
    let s = host
        .start(idp, filter_config(json!({"timeout": 500})), 1)
        .await;
    assert_eq!(s.basic("demo-client", "demo-secret").await.status, 503);
    s.idp.up().await;
    let mut status = 0;
    for _ in 0..80 {
        status = s.basic("demo-client", "demo-secret").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200);
}

/// An opaque bearer token (RFC 7662 introspection, as the gateway's own client): verified
/// once at the IdP, its claims upstream, the answer cached; an unknown one refused.
pub(crate) async fn an_opaque_token_is_introspected_once_and_its_claims_go_upstream<H: Host>(
    host: &H,
) {
    let idp = MockIdp::start().await;
    idp.add_client("gateway", "gateway-secret", &[], &[]);
    let config = filter_config(json!({
        "client_id": "gateway",
        "client_secret": "gateway-secret",
        "auth_methods": ["bearer", "introspection"],
    }));
    let s = host.start(idp, config, 1).await;
    let token = s.idp.issue_opaque(
        "svc-orders",
        &["read", "write"],
        Duration::from_secs(3600),
        json!({}),
    );
    assert!(!token.contains('.'), "opaque: {token}");
    for _ in 0..3 {
        let a = s.bearer(&token).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.upstream("Issuer_Header"), Some(s.idp.issuer().as_str()));
        assert_eq!(a.upstream("X-Subject"), Some("svc-orders"));
        assert_eq!(
            a.upstream("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
    }
    assert_eq!(s.idp.counts().introspection, 1);
    let a = s.bearer("not-a-token-this-idp-issued").await;
    assert_invalid_token(&a);
    assert_eq!(s.echo.requests(), 3);
}
