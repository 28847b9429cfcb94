//! Client credentials in a request body, in a real Envoy whose Wasm `PluginConfig` sets
//! `allow_on_headers_stop_iteration: true` (Envoy ≥ 1.35): the filter holds the headers,
//! reads the body, exchanges the credential, strips it, re-frames the body and forwards the
//! rest, as Kong does. And with a verdict pending, the body is held too, so nothing reaches
//! the upstream undecided. Without the flag: tests/e2e.rs
//! (`body_credential_fields_never_reach_upstream`).

// A test asserts by panicking; the panic-path lints guard the filter, not its tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::idp::{Endpoint, Fault, MockIdp};

use testkit::envoy::EnvoyOpts;
use testkit::{Answer, Stack};

/// `envoy/e2e.yaml` with the flag set, written where the test can point Envoy at it.
fn template_with_the_flag() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let yaml = std::fs::read_to_string(root.join("envoy/e2e.yaml")).unwrap();
    let flagged = yaml.replacen(
        "                fail_open: false",
        "                allow_on_headers_stop_iteration: true\n                fail_open: false",
        1,
    );
    assert_ne!(
        flagged, yaml,
        "envoy/e2e.yaml has the filter's fail_open line"
    );
    // One file per stack: tests run in parallel, and Envoy must not read a half-written one.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("oidcgate-body-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("e2e-body-{n}.yaml"));
    std::fs::write(&path, flagged).unwrap();
    path
}

async fn stack() -> Stack {
    let opts = EnvoyOpts {
        template: template_with_the_flag(),
        filter_config: json!({
            "timeout": 2000,
            "client_credentials_param_type": ["header", "body"],
            "upstream_headers_claims": ["sub"],
            "upstream_headers_names": ["X-Subject"],
        }),
        ..EnvoyOpts::default()
    };
    Stack::start_with(MockIdp::start().await, opts).await
}

/// `POST /api` with a form body.
fn form_post(s: &Stack) -> reqwest::RequestBuilder {
    s.http
        .post(s.envoy.url("/api"))
        .header("content-type", "application/x-www-form-urlencoded")
}

const FORM: &str =
    "client_id=demo-client&keep=me&client_secret=demo-secret&grant_type=client_credentials";

fn assert_forwarded_without_the_secret(a: &Answer, body: &str) {
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["body"], body);
    assert_eq!(a.upstream("X-Subject"), Some("demo-client"));
    assert!(a
        .upstream("authorization")
        .is_some_and(|v| v.starts_with("Bearer ")));
    assert!(!a.body.to_string().contains("demo-secret"), "{:?}", a.body);
}

#[tokio::test]
async fn form_and_json_body_credentials_are_exchanged_stripped_and_reframed() {
    let s = stack().await;
    let a = s.send(form_post(&s).body(FORM)).await;
    assert_forwarded_without_the_secret(&a, "keep=me");
    // The headers were held until the body was read: its new length is exact.
    assert_eq!(a.upstream("content-length"), Some("7"));
    let seen = s.idp.last_token_request().unwrap();
    assert_eq!(
        (seen.client_id.as_str(), seen.client_secret.as_str()),
        ("demo-client", "demo-secret")
    );
    let json_body = json!({"client_id": "demo-client", "client_secret": "demo-secret", "n": 1});
    let a = s
        .send(s.http.post(s.envoy.url("/api")).json(&json_body))
        .await;
    assert_forwarded_without_the_secret(&a, "{\"n\":1}");
    assert_eq!(a.upstream("content-length"), Some("7"));
    // The token was cached: one exchange for both.
    assert_eq!(s.idp.counts().token, 1);
}

#[tokio::test]
async fn a_chunked_body_in_several_pieces_is_read_whole() {
    let s = stack().await;
    let pieces: Vec<Result<&'static str, std::io::Error>> = FORM
        .as_bytes()
        .chunks(9)
        .map(|c| Ok(std::str::from_utf8(c).unwrap()))
        .collect();
    let stream = futures::stream::iter(pieces);
    let a = s
        .send(form_post(&s).body(reqwest::Body::wrap_stream(stream)))
        .await;
    assert_forwarded_without_the_secret(&a, "keep=me");
}

#[tokio::test]
async fn a_wrong_secret_in_the_body_is_401_invalid_client_and_nothing_goes_upstream() {
    let s = stack().await;
    let a = s
        .send(form_post(&s).body("client_id=demo-client&client_secret=wrong"))
        .await;
    assert_eq!(a.status, 401, "{:?}", a.body);
    assert!(a.www_authenticate().contains("error=\"invalid_client\""));
    assert_eq!(s.echo.requests(), 0);
}

#[tokio::test]
async fn a_body_over_the_bound_is_not_searched_and_is_401() {
    let s = stack().await;
    let padding = "x".repeat(70 * 1024);
    let a = s
        .send(form_post(&s).body(format!("pad={padding}&{FORM}")))
        .await;
    assert_eq!(a.status, 401, "{:?}", a.body);
    assert_eq!(s.echo.requests(), 0);
    assert!(s.envoy.log().contains("is not searched for credentials"));
}

#[tokio::test]
async fn a_body_arriving_while_the_verdict_waits_on_the_idp_is_held_not_forwarded() {
    let s = stack().await;
    // The first token exchange takes 600 ms: the body arrives while the verdict is pending.
    s.idp
        .set_fault(Endpoint::Token, Fault::Delay(Duration::from_millis(600)));
    let wrong = s
        .send(
            s.http
                .post(s.envoy.url("/api"))
                .basic_auth("demo-client", Some("wrong-secret"))
                .header("content-type", "application/json")
                .body(r#"{"n":1}"#),
        )
        .await;
    assert_eq!(wrong.status, 401, "{:?}", wrong.body);
    assert_eq!(
        s.echo.requests(),
        0,
        "nothing went upstream before the verdict"
    );
    let right = s
        .send(
            form_post(&s)
                .basic_auth("demo-client", Some("demo-secret"))
                .body("keep=me&client_secret=demo-secret"),
        )
        .await;
    assert_forwarded_without_the_secret(&right, "keep=me");
    assert_eq!(s.echo.requests(), 1);
}

#[tokio::test]
async fn a_header_credential_still_decides_and_the_body_is_stripped() {
    let s = stack().await;
    let a = s
        .send(
            form_post(&s)
                .basic_auth("demo-client", Some("demo-secret"))
                .body(FORM),
        )
        .await;
    assert_forwarded_without_the_secret(&a, "keep=me");
    let body: Value = a.body.clone();
    assert!(!body.to_string().contains("client_id=demo-client"));
}
