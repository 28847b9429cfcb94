//! The built `oidcgate.wasm` inside a real Envoy, against the mock IdP over real HTTP, with
//! an echo upstream that reports what it received. Each test gets its own IdP, echo and
//! Envoy on free loopback ports, so IdP call counts belong to the test alone. The core cases
//! live in tests/cases/, shared with tests/kong_host.rs (Kong's wasm host).

// A test asserts by panicking; the panic-path lints guard the filter, not its tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod cases;

use std::time::Duration;

use cases::{assert_invalid_token, filter_config, idp_token, EnvoyHost};
use serde_json::{json, Value};
use testkit::echo::Echo;
use testkit::envoy::{Envoy, EnvoyOpts};
use testkit::idp::{Endpoint, Fault, MintSpec, MockIdp};
use testkit::Stack;

async fn stack_with(extra: Value, concurrency: u32) -> Stack {
    Stack::start(MockIdp::start().await, filter_config(extra), concurrency).await
}

async fn stack() -> Stack {
    stack_with(json!({}), 1).await
}

#[tokio::test]
async fn no_credentials_is_401_with_a_bearer_challenge() {
    cases::no_credentials_is_401_with_a_bearer_challenge(&EnvoyHost).await;
}

#[tokio::test]
async fn client_credentials_are_exchanged_and_the_secret_never_reaches_upstream() {
    cases::client_credentials_are_exchanged_and_the_secret_never_reaches_upstream(&EnvoyHost).await;
}

#[tokio::test]
async fn the_upstream_receives_claim_headers_in_their_configured_case() {
    // The echo reports header names as they came on the wire; envoy/e2e.yaml has the
    // preserve_case formatter (README "Header case").
    let echo = Echo::start_raw_on(0).await;
    let opts = EnvoyOpts {
        filter_config: filter_config(json!({})),
        ..EnvoyOpts::default()
    };
    let s = Stack::start_with_upstream(MockIdp::start().await, echo, opts).await;
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "demo-client:demo-secret",
    );
    // Sent raw: HTTP clients lower-case names (reqwest does), a caller may not.
    let raw = testkit::raw_http(
        s.envoy.listen_port,
        format!(
            "GET /api HTTP/1.1\r\nHost: gate\r\nAuthorization: Basic {basic}\r\n\
             X-Caller-Header: kept\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw:.200}");
    let body: Value = serde_json::from_str(&raw[raw.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let names: Vec<&str> = body["raw_header_names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "Issuer_Header",
        "X-Subject",
        "X-Scopes",
        "Authorization",
        "X-Caller-Header",
    ] {
        assert!(names.contains(&want), "no `{want}` in {names:?}");
    }
    // The token replaces the caller's Authorization value; the name keeps the caller's
    // spelling, lower case from a client that sends it so.
    let a = s.basic("demo-client", "demo-secret").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let names = a.upstream_names();
    for want in ["Issuer_Header", "X-Subject", "X-Scopes", "authorization"] {
        assert!(names.contains(&want), "no `{want}` in {names:?}");
    }
    assert!(!names.contains(&"issuer_header"), "{names:?}");
}

#[tokio::test]
async fn cached_client_token_means_no_more_idp_calls() {
    cases::cached_client_token_means_no_more_idp_calls(&EnvoyHost).await;
}

#[tokio::test]
async fn wrong_secret_right_after_a_cached_right_one_is_401() {
    cases::wrong_secret_right_after_a_cached_right_one_is_401(&EnvoyHost).await;
}

#[tokio::test]
async fn bearer_token_from_the_idp_is_verified_and_forwarded() {
    cases::bearer_token_from_the_idp_is_verified_and_forwarded(&EnvoyHost).await;
}

#[tokio::test]
async fn every_algorithm_of_the_key_set_verifies() {
    let s = stack().await;
    for (kid, alg) in [
        ("rsa-1", "RS256"),
        ("rsa-1", "RS384"),
        ("rsa-1", "RS512"),
        ("rsa-1", "PS256"),
        ("ec-1", "ES256"),
        ("ed-1", "EdDSA"),
    ] {
        let token = s.idp.mint(MintSpec {
            kid,
            alg,
            ..MintSpec::default()
        });
        let a = s.bearer(&token).await;
        // rsa-1 is published as RS256 only: other RSA algorithms must not use it.
        let want = if kid == "rsa-1" && alg != "RS256" {
            401
        } else {
            200
        };
        assert_eq!(a.status, want, "{kid} {alg}: {:?}", a.body);
    }
}

#[tokio::test]
async fn bad_tokens_are_401_invalid_token() {
    let s = stack_with(json!({"audience_required": ["api://default"]}), 1).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = s.idp.mint(MintSpec::default());
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[2] = format!("{}AA", &parts[2][..parts[2].len() - 2]);
    let tampered = parts.join(".");
    let cases = vec![
        ("tampered", tampered),
        (
            "expired",
            s.idp.mint(MintSpec {
                claims: json!({"exp": now - 60, "iat": now - 120}),
                ..MintSpec::default()
            }),
        ),
        (
            "not yet valid",
            s.idp.mint(MintSpec {
                claims: json!({"nbf": now + 600}),
                ..MintSpec::default()
            }),
        ),
        (
            "wrong issuer",
            s.idp.mint(MintSpec {
                claims: json!({"iss": "https://evil.example.com"}),
                ..MintSpec::default()
            }),
        ),
        (
            "unknown kid",
            s.idp.mint(MintSpec {
                kid: "rsa-2",
                ..MintSpec::default()
            }),
        ),
        (
            "alg none",
            testkit::keys::unsigned_token(
                &json!({"alg": "none"}),
                &json!({"iss": s.idp.issuer(), "exp": now + 600}),
            ),
        ),
        (
            "hs256 with public key",
            testkit::keys::hs256_token_with_rsa_public_key(
                &s.idp.jwks(),
                "rsa-1",
                &json!({"iss": s.idp.issuer(), "exp": now + 600}),
            ),
        ),
        ("garbage", "a.b.c".to_string()),
    ];
    for (name, token) in cases {
        let a = s.bearer(&token).await;
        assert_eq!(a.status, 401, "{name}: {:?}", a.body);
        assert_invalid_token(&a);
    }
    assert_eq!(s.echo.requests(), 0);
    // The unknown kid's line names it beside the key set's.
    let line = s
        .envoy
        .log()
        .lines()
        .find(|l| l.contains("denied invalid_token (unknown_kid)"))
        .map(str::to_string)
        .expect("an unknown_kid line");
    assert!(
        line.ends_with(": kid `rsa-2`, the key set has `rsa-1`, `ec-1`, `ed-1`"),
        "{line}"
    );
}

#[tokio::test]
async fn missing_scope_is_403_insufficient_scope() {
    let s = stack_with(json!({"scopes_required": ["admin"]}), 1).await;
    let a = s.basic("demo-client", "demo-secret").await;
    assert_eq!(a.status, 403);
    assert!(a
        .www_authenticate()
        .contains("error=\"insufficient_scope\""));
    let ok = s.idp.mint(MintSpec {
        claims: json!({"scp": ["read", "admin"]}),
        ..MintSpec::default()
    });
    assert_eq!(s.bearer(&ok).await.status, 200);
}

#[tokio::test]
async fn caller_copies_of_claim_headers_are_replaced() {
    cases::caller_copies_of_claim_headers_are_replaced(&EnvoyHost).await;
}

#[tokio::test]
async fn a_second_authorization_header_never_reaches_upstream() {
    let s = stack().await;
    let good = idp_token(&s).await;
    let forged = testkit::keys::unsigned_token(&json!({"alg": "none"}), &json!({"sub": "admin"}));
    for (first, second) in [(&good, &forged), (&forged, &good)] {
        let a = s
            .send(
                s.http
                    .get(s.envoy.url("/api"))
                    .header("authorization", format!("Bearer {first}"))
                    .header("authorization", format!("Bearer {second}")),
            )
            .await;
        // Either refused, or only the verified token goes on: never the forged one.
        if a.status == 200 {
            assert_eq!(
                a.upstream("authorization"),
                Some(format!("Bearer {good}").as_str())
            );
        } else {
            assert_invalid_token(&a);
        }
    }
    let basic_then_forged = s
        .send(
            s.http
                .get(s.envoy.url("/api"))
                .basic_auth("demo-client", Some("demo-secret"))
                .header("authorization", format!("Bearer {forged}")),
        )
        .await;
    if basic_then_forged.status == 200 {
        let upstream = basic_then_forged.upstream("authorization").unwrap_or("");
        assert!(!upstream.contains(&forged), "{upstream:.60}");
    } else {
        assert_eq!(basic_then_forged.status, 401);
    }
}

#[tokio::test]
async fn thirty_concurrent_first_requests_on_two_workers_make_one_token_call() {
    cases::thirty_concurrent_first_requests_on_two_workers_make_one_token_call(&EnvoyHost).await;
}

#[tokio::test]
async fn key_rotation_is_picked_up_without_restart() {
    cases::key_rotation_is_picked_up_without_restart(&EnvoyHost).await;
}

#[tokio::test]
async fn idp_down_cached_credentials_pass_new_ones_get_503_then_recover() {
    cases::idp_down_cached_credentials_pass_new_ones_get_503_then_recover(&EnvoyHost).await;
}

#[tokio::test]
async fn slow_idp_is_503_at_the_timeout_not_a_hang() {
    cases::slow_idp_is_503_at_the_timeout_not_a_hang(&EnvoyHost).await;
}

#[tokio::test]
async fn idp_errors_and_garbage_are_503_never_401() {
    cases::idp_errors_and_garbage_are_503_never_401(&EnvoyHost).await;
}

#[tokio::test]
async fn envoy_started_with_the_idp_down_recovers_when_it_comes_up() {
    cases::started_with_the_idp_down_recovers_when_it_comes_up(&EnvoyHost).await;
}

#[tokio::test]
async fn garbage_authorization_values_are_401_and_envoy_keeps_serving() {
    let s = stack().await;
    let long = "A".repeat(20_000);
    let values = [
        "Bearer",
        "Bearer ",
        "Basic",
        "Basic !!!!",
        "Basic Og==",
        "Bearer a.b",
        "Bearer ....",
        "Negotiate x",
        long.as_str(),
    ];
    for v in values {
        let a = s
            .send(s.http.get(s.envoy.url("/api")).header("authorization", v))
            .await;
        assert_eq!(a.status, 401, "{v:.40}");
    }
    // Bytes that are not UTF-8, and control characters, sent raw.
    for auth in [
        &b"Bearer \xff\xfe\xfd"[..],
        b"Basic \xff\xff",
        b"Bearer a\x01b",
    ] {
        let mut request =
            b"GET /api HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: ".to_vec();
        request.extend_from_slice(auth);
        request.extend_from_slice(b"\r\n\r\n");
        let raw = testkit::raw_http(s.envoy.listen_port, &request).await;
        assert!(
            raw.starts_with("HTTP/1.1 401") || raw.starts_with("HTTP/1.1 400"),
            "{raw:.80}"
        );
    }
    assert_eq!(s.basic("demo-client", "demo-secret").await.status, 200);
    assert_eq!(s.echo.requests(), 1);
}

#[tokio::test]
async fn body_credential_fields_never_reach_upstream() {
    let s = stack_with(
        json!({"client_credentials_param_type": ["header", "body"]}),
        1,
    )
    .await;
    let form = [
        ("client_id", "demo-client"),
        ("client_secret", "demo-secret"),
        ("grant_type", "client_credentials"),
        ("keep", "me"),
    ];
    let a = s
        .send(
            s.http
                .post(s.envoy.url("/api"))
                .basic_auth("demo-client", Some("demo-secret"))
                .form(&form),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["body"], "keep=me");
    let json_body = json!({"client_id": "demo-client", "client_secret": "demo-secret", "n": 1});
    let a = s
        .send(
            s.http
                .post(s.envoy.url("/api"))
                .basic_auth("demo-client", Some("demo-secret"))
                .json(&json_body),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["body"], "{\"n\":1}");
    assert!(!a.body.to_string().contains("demo-secret"));
    // Without allow_on_headers_stop_iteration, Envoy holds a paused request's body back
    // from the filter: a credential only in the body is refused, never half-trusted. The
    // first such request waits for a body that cannot come; the log names the setting.
    let a = s.send(s.http.post(s.envoy.url("/api")).form(&form)).await;
    assert_eq!(a.status, 401);
    assert!(s
        .envoy
        .log()
        .contains("allow_on_headers_stop_iteration: true"));
    let a = s.send(s.http.post(s.envoy.url("/api")).form(&form)).await;
    assert_eq!(a.status, 401);
    assert_eq!(s.echo.requests(), 2);
}

#[tokio::test]
async fn query_credentials_are_read_and_stripped() {
    let s = stack_with(
        json!({"client_credentials_param_type": ["query"], "bearer_token_param_type": ["query"]}),
        1,
    )
    .await;
    let a = s
        .get("/api?x=1&client_id=demo-client&client_secret=demo-secret")
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["path"], "/api?x=1");
    let token = idp_token(&s).await;
    let a = s.get(&format!("/api?access_token={token}")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["path"], "/api");
}

#[tokio::test]
async fn client_secret_post_and_a_custom_token_header() {
    let s = stack_with(
        json!({"token_endpoint_auth_method": "client_secret_post", "upstream_access_token_header": "x-access-token", "scopes": ["write"]}),
        1,
    )
    .await;
    let a = s.basic("demo-client", "demo-secret").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let seen = s.idp.last_token_request().unwrap();
    assert_eq!(seen.auth_method, "client_secret_post");
    assert_eq!(seen.scope.as_deref(), Some("write"));
    assert_eq!(a.upstream("authorization"), None);
    assert_eq!(
        a.upstream("x-access-token").map(|t| t.split('.').count()),
        Some(3)
    );
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_naming_the_key() {
    let idp = MockIdp::start().await;
    let echo = Echo::start().await;
    let config = json!({"issuer": idp.issuer(), "leeway": "soon"});
    let log = Envoy::start_expect_failure(EnvoyOpts {
        filter_config: config,
        idp_port: idp.port(),
        echo_port: echo.port,
        concurrency: 1,
        ..EnvoyOpts::default()
    })
    .await;
    assert!(log.contains("invalid configuration: `leeway`"), "{log}");
}

#[tokio::test]
async fn logs_never_hold_a_secret_or_a_whole_token() {
    let s = stack_with(json!({"scopes_required": ["read"]}), 1).await;
    let token = idp_token(&s).await;
    s.basic("demo-client", "demo-secret").await;
    s.basic("demo-client", "wrong-secret-value").await;
    s.bearer(&token).await;
    s.bearer(&format!("{token}x")).await;
    let log = s.envoy.log();
    assert!(log.contains("denied"), "denials are logged");
    for secret in [
        "demo-secret",
        "wrong-secret-value",
        token.as_str(),
        token.split('.').nth(2).unwrap(),
    ] {
        assert!(!log.contains(secret), "log contains a secret or token");
    }
}

#[tokio::test]
async fn metrics_move_as_requests_are_allowed_and_denied() {
    let s = stack_with(json!({"scopes_required": ["read"]}), 1).await;
    s.basic("demo-client", "demo-secret").await;
    s.basic("demo-client", "demo-secret").await;
    s.get("/api").await;
    s.bearer("a.b.c").await;
    s.basic("demo-client", "wrong").await;
    let no_scope = s.idp.mint(MintSpec {
        claims: json!({"scp": ["write"]}),
        ..MintSpec::default()
    });
    s.bearer(&no_scope).await;
    let p = "wasmcustom.oidcgate";
    for (name, want) in [
        ("allowed", 2),
        ("denied.missing", 1),
        ("denied.invalid_token", 1),
        ("denied.invalid_client", 1),
        ("denied.insufficient_scope", 1),
        ("denied.insufficient_scope.scopes", 1),
        ("denied.insufficient_scope.audience", 0),
        ("idp.token.ok", 1),
        ("idp.token.rejected", 1),
        ("idp.jwks.ok", 1),
        ("idp.discovery.ok", 1),
    ] {
        assert_eq!(
            s.envoy.stat_reaches(&format!("{p}.{name}"), want).await,
            want,
            "{p}.{name}"
        );
    }
    // Token-cache lookups also count re-checks of parked requests: at least one of each.
    for name in [
        "cache.token.hit",
        "cache.token.miss",
        "cache.verify.hit",
        "cache.verify.miss",
    ] {
        assert!(
            s.envoy.stat_reaches(&format!("{p}.{name}"), 1).await >= 1,
            "{p}.{name}"
        );
    }
    let stats = s.envoy.stats().await;
    assert_eq!(
        stats.get(&format!("{p}.denied.idp_unavailable")),
        Some(&0),
        "defined at zero from the start"
    );
}

#[tokio::test]
async fn prometheus_carries_the_refusal_reason_and_the_claim_rule_as_labels() {
    // envoy/e2e.yaml has envoy/production.yaml's stats_tags.
    let s = stack_with(json!({"scopes_required": ["admin"]}), 1).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = s.idp.mint(MintSpec {
        claims: json!({"exp": now - 60, "iat": now - 120}),
        ..MintSpec::default()
    });
    assert_eq!(s.bearer(&expired).await.status, 401);
    assert_eq!(s.bearer(&expired).await.status, 401);
    assert_eq!(s.basic("demo-client", "demo-secret").await.status, 403);
    let p = "wasmcustom.oidcgate.denied";
    assert_eq!(
        s.envoy
            .stat_reaches(&format!("{p}.invalid_token.expired"), 2)
            .await,
        2
    );
    assert_eq!(
        s.envoy
            .stat_reaches(&format!("{p}.insufficient_scope.scopes"), 1)
            .await,
        1
    );
    let text = s
        .http
        .get(s.envoy.admin_url("/stats/prometheus"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("oidcgate_denied"))
        .collect();
    for want in [
        "oidcgate_denied_invalid_token{reason=\"expired\"} 2",
        "oidcgate_denied_invalid_token{reason=\"wrong_issuer\"} 0",
        "oidcgate_denied_insufficient_scope{rule=\"scopes\"} 1",
        "oidcgate_denied_insufficient_scope{rule=\"audience\"} 0",
        // The totals keep their names, without the label.
        "oidcgate_denied_invalid_token{} 2",
        "oidcgate_denied_insufficient_scope{} 1",
    ] {
        assert!(
            lines.contains(&want),
            "no `{want}` in:\n{}",
            lines.join("\n")
        );
    }
    // No name still carries a reason: every one was made a label.
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("oidcgate_denied_invalid_token_")
                || l.starts_with("oidcgate_denied_insufficient_scope_")),
        "{}",
        lines.join("\n")
    );
}

#[tokio::test]
async fn a_caller_resetting_its_request_cannot_hold_key_rotation_off() {
    // One refetch per 2 s at most: an abandoned refetch must not use that allowance up.
    let s = stack_with(json!({"rediscovery_lifetime": 2}), 1).await;
    let first = idp_token(&s).await;
    assert_eq!(s.bearer(&first).await.status, 200);
    assert_eq!(s.idp.counts().jwks, 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The IdP rotates, and its key set answers slowly, as a real one far away does.
    s.idp.publish(&["rsa-2", "rsa-1", "ec-1", "ed-1"]);
    s.idp.rotate_to("rsa-2");
    s.idp
        .set_fault(Endpoint::Jwks, Fault::Delay(Duration::from_millis(400)));
    let rotated = idp_token(&s).await;
    // A caller sends a token with the new kid and gives up long before the key set comes.
    let gave_up = s
        .http
        .get(s.envoy.url("/api"))
        .bearer_auth(&rotated)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(
        gave_up.is_err(),
        "the caller reset its request: {gave_up:?}"
    );
    // The refetch it started lands anyway, and the next caller with the new key passes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.idp.clear_faults();
    let a = s.bearer(&rotated).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(s.idp.counts().jwks, 2);
}

#[tokio::test]
async fn basic_secrets_with_reserved_characters_are_taken_as_sent() {
    let s = stack().await;
    let secret = "ab+c&d%25:zoë";
    s.idp.add_client("svc+plus", secret, &["read"], &["read"]);
    // reqwest sends RFC 7617 Basic: base64(id ":" secret), nothing encoded.
    let a = s.basic("svc+plus", secret).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let seen = s.idp.last_token_request().unwrap();
    assert_eq!(
        (seen.client_id.as_str(), seen.client_secret.as_str()),
        ("svc+plus", secret)
    );
    // The same bytes read as a form-encoded secret would be another secret: refused.
    assert_eq!(s.basic("svc+plus", "ab c&d%:zoë").await.status, 401);
}

#[tokio::test]
async fn body_credentials_are_stripped_when_the_request_ends_with_trailers() {
    let s = stack_with(
        json!({"client_credentials_param_type": ["header", "body"]}),
        1,
    )
    .await;
    let url = s.envoy.url("/api");
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // HTTP/2 (prior knowledge): headers, the body in two frames, then trailers.
    let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "demo-client:demo-secret"
        )
    );
    let request = http::Request::post(&url)
        .header("authorization", basic)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream
        .send_data(bytes::Bytes::from_static(b"client_id=demo-client&"), false)
        .unwrap();
    stream
        .send_data(
            bytes::Bytes::from_static(b"client_secret=demo-secret&keep=me"),
            false,
        )
        .unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("1"));
    stream.send_trailers(trailers).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let echoed: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(echoed["body"], "keep=me", "{echoed}");
    assert!(!echoed.to_string().contains("demo-secret"));
}

#[tokio::test]
async fn an_issuer_configured_with_a_trailing_slash_still_accepts_its_tokens() {
    let idp = MockIdp::start().await;
    let issuer = format!("{}/", idp.issuer());
    let s = Stack::start(idp, filter_config(json!({ "issuer": issuer })), 1).await;
    // The mock's tokens carry the issuer without the slash, as Okta's do.
    let a = s.basic("demo-client", "demo-secret").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let t = s.idp.mint(MintSpec::default());
    assert_eq!(s.bearer(&t).await.status, 200);
}

#[tokio::test]
async fn refused_credentials_are_remembered_by_every_worker_then_forgotten() {
    cases::refused_credentials_are_remembered_by_every_worker_then_forgotten(&EnvoyHost).await;
}

#[tokio::test]
async fn a_client_token_signed_with_a_new_key_waits_for_the_refetch() {
    cases::a_client_token_signed_with_a_new_key_waits_for_the_refetch(&EnvoyHost).await;
}

#[tokio::test]
async fn an_opaque_token_is_introspected_once_and_its_claims_go_upstream() {
    cases::an_opaque_token_is_introspected_once_and_its_claims_go_upstream(&EnvoyHost).await;
}
