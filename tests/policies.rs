//! Per-route policies in a real Envoy: `routes` rules, Envoy route metadata
//! (`filter_metadata.oidcgate.policy`, in envoy/e2e.yaml), a public route, one token judged
//! differently on two routes, an unknown policy (500), and the access-log fields.

// A test asserts by panicking; the panic-path lints guard the filter, not its tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use serde_json::{json, Value};
use testkit::envoy::EnvoyOpts;
use testkit::idp::{MintSpec, MockIdp};
use testkit::{Answer, Stack};

fn config() -> Value {
    json!({
        "upstream_headers_claims": ["sub"],
        "upstream_headers_names": ["X-Subject"],
        "policies": {
            "admin": {
                "scopes_required": ["admin"],
                "upstream_headers_claims": ["cid"],
                "upstream_headers_names": ["X-Client"]
            },
            "orders": {"scopes_required": ["orders:read"], "auth_methods": ["bearer"]},
            "open": {"public": true}
        },
        "routes": [
            {"path_exact": "/health", "policy": "open"},
            {"path_prefix": "/admin", "policy": "admin"},
            {"path_prefix": "/orders", "methods": ["GET"], "policy": "orders"}
        ]
    })
}

async fn stack() -> Stack {
    let opts = EnvoyOpts {
        filter_config: config(),
        // Access-log lines reach the log at once (Envoy's default is every 10 s).
        args: vec!["--file-flush-interval-msec".into(), "20".into()],
        ..EnvoyOpts::default()
    };
    Stack::start_with(MockIdp::start().await, opts).await
}

fn token(s: &Stack, scopes: &[&str]) -> String {
    s.idp.mint(MintSpec {
        claims: json!({ "scp": scopes }),
        ..MintSpec::default()
    })
}

async fn bearer_at(s: &Stack, path: &str, token: &str, id: &str) -> Answer {
    s.send(
        s.http
            .get(s.envoy.url(path))
            .bearer_auth(token)
            .header("x-test-id", id),
    )
    .await
}

#[tokio::test]
async fn one_token_is_judged_by_each_routes_policy_and_verified_once() {
    let s = stack().await;
    let read = token(&s, &["read"]);
    let a = bearer_at(&s, "/api", &read, "a").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(a.upstream("X-Subject").is_some());
    let a = bearer_at(&s, "/admin/users", &read, "b").await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    let admin = token(&s, &["admin"]);
    let a = bearer_at(&s, "/admin/users", &admin, "c").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // The admin policy's own claim headers, not the top level's.
    assert_eq!(a.upstream("X-Client"), Some("demo-client"));
    assert_eq!(a.upstream("X-Subject"), None);
    // GET /orders needs orders:read and takes bearer tokens only; POST falls to the top level.
    let a = bearer_at(&s, "/orders/1", &read, "d").await;
    assert_eq!(a.status, 403);
    let a = s
        .send(
            s.http
                .get(s.envoy.url("/orders/1"))
                .basic_auth("demo-client", Some("demo-secret")),
        )
        .await;
    assert_eq!(a.status, 401, "client credentials are not accepted there");
    let a = s
        .send(
            s.http
                .post(s.envoy.url("/orders/1"))
                .basic_auth("demo-client", Some("demo-secret")),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // `read` was verified on /api and judged on /admin and /orders without a second check.
    let misses = s
        .envoy
        .stat_reaches("wasmcustom.oidcgate.cache.verify.miss", 3)
        .await;
    assert_eq!(
        misses, 3,
        "one verification per distinct token (read, admin, cc)"
    );
}

#[tokio::test]
async fn a_public_route_needs_no_credential_and_still_strips_claim_headers() {
    let s = stack().await;
    let a = s
        .send(
            s.http
                .get(s.envoy.url("/health"))
                .header("X-Subject", "admin")
                .header("x_client", "root")
                .header("Authorization", "Basic ZGVtby1jbGllbnQ6ZGVtby1zZWNyZXQ="),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    for name in ["x-subject", "x_client", "x-client", "authorization"] {
        assert!(a.upstream(name).is_none(), "{name} reached the upstream");
    }
    assert_eq!(s.idp.counts().token, 0, "nothing was exchanged");
    // Only the exact path is public.
    assert_eq!(s.get("/health/x").await.status, 401);
}

#[tokio::test]
async fn route_metadata_names_the_policy_and_an_unknown_one_is_500() {
    let s = stack().await;
    let read = token(&s, &["read"]);
    // /meta/admin carries filter_metadata.oidcgate.policy: admin (envoy/e2e.yaml).
    assert_eq!(bearer_at(&s, "/meta/admin", &read, "m1").await.status, 403);
    let admin = token(&s, &["admin"]);
    assert_eq!(bearer_at(&s, "/meta/admin", &admin, "m2").await.status, 200);
    let a = bearer_at(&s, "/meta/missing", &admin, "m3").await;
    assert_eq!(a.status, 500, "{:?}", a.body);
    assert_eq!(a.body["error"], "server_error");
    assert!(s
        .envoy
        .log()
        .contains("the route names policy `nosuch`, which is not in `policies`"));
    assert_eq!(s.echo.requests(), 1);
}

#[tokio::test]
async fn the_access_log_shows_the_policy_the_client_and_the_reason() {
    let s = stack().await;
    let read = token(&s, &["read"]);
    bearer_at(&s, "/admin/x", &read, "denied").await;
    bearer_at(&s, "/api", &read, "allowed").await;
    s.send(
        s.http
            .get(s.envoy.url("/health"))
            .header("x-test-id", "public"),
    )
    .await;
    let want = [
        "id=denied status=403 policy=admin client=- reason=insufficient_scope",
        "id=allowed status=200 policy=- client=demo-client reason=-",
        "id=public status=200 policy=open client=- reason=-",
    ];
    let mut log = String::new();
    for _ in 0..100 {
        log = s.envoy.log();
        if want.iter().all(|w| log.contains(w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in want {
        assert!(
            log.contains(w),
            "{w} not in the access log:\n{}",
            access_lines(&log)
        );
    }
}

fn access_lines(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("oidcgate-access"))
        .collect::<Vec<_>>()
        .join("\n")
}
