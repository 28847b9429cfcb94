//! The production-shaped IdP path, run: the built `oidcgate.wasm` in a real Envoy whose IdP
//! cluster is envoy/production.yaml's `okta` cluster (TLS, SNI, a trusted CA, a SAN match;
//! template envoy/e2e-tls.yaml), in front of the mock IdP serving HTTPS with a certificate
//! from a CA made for the test. Good TLS lets requests through; each way of getting TLS wrong
//! is a 503 with `Retry-After` at once, the filter's warning, and the Envoy counter the
//! README's troubleshooting table names.

// A test asserts by panicking; the panic-path lints guard the filter, not its tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::envoy::EnvoyOpts;
use testkit::idp::{IdpOpts, MintSpec, MockIdp};
use testkit::tls::{IdpTls, TestCa, UnknownName};
use testkit::{repo_root, Stack};

/// The IdP's name: in its certificate, the issuer, Envoy's SNI and SAN match.
const IDP_HOST: &str = "idp.example.test";

/// The filter's `timeout`: every TLS failure must be answered well before it.
const TIMEOUT_MS: u64 = 5000;

/// How Envoy's IdP cluster is set up, and what the IdP serves.
struct Case {
    /// Envoy's `sni`.
    sni: &'static str,
    /// Envoy's `match_typed_subject_alt_names` exact DNS name.
    san: &'static str,
    /// Envoy trusts another CA than the one that signed the IdP's certificate.
    untrusted_ca: bool,
    /// What the IdP serves to a ClientHello naming another host.
    unknown_name: fn(&TestCa) -> UnknownName,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            sni: IDP_HOST,
            san: IDP_HOST,
            untrusted_ca: false,
            unknown_name: |_| UnknownName::Refuse,
        }
    }
}

/// Envoy with envoy/e2e-tls.yaml in front of an HTTPS mock IdP, set up as `case` says. The
/// CAs live as long as the stack (Envoy reads the trusted one's file).
struct TlsStack {
    s: Stack,
    _cas: [TestCa; 2],
}

async fn tls_stack(case: Case) -> TlsStack {
    let ca = TestCa::new("oidcgate test CA");
    let other_ca = TestCa::new("some other CA");
    let cert = ca.server_cert(&[IDP_HOST, "127.0.0.1"]);
    let tls = IdpTls::with_unknown_name(cert, (case.unknown_name)(&ca));
    let idp = MockIdp::start_with(IdpOpts::tls(IDP_HOST, tls)).await;
    let trusted = if case.untrusted_ca { &other_ca } else { &ca };
    let opts = EnvoyOpts {
        template: repo_root().join("envoy/e2e-tls.yaml"),
        filter_config: json!({
            "timeout": TIMEOUT_MS,
            "upstream_headers_claims": ["iss", "sub"],
            "upstream_headers_names": ["Issuer_Header", "X-Subject"],
        }),
        extra_vars: vec![
            ("IDP_SNI".into(), case.sni.into()),
            ("IDP_SAN".into(), case.san.into()),
            (
                "IDP_CA_FILE".into(),
                trusted.pem_file().to_string_lossy().into_owned(),
            ),
        ],
        ..EnvoyOpts::default()
    };
    let s = Stack::start_with(idp, opts).await;
    TlsStack {
        s,
        _cas: [ca, other_ca],
    }
}

/// Envoy's TLS failure counters of the IdP cluster; a case expects exactly one to move.
const SSL_FAILURES: [&str; 3] = [
    "cluster.idp.ssl.connection_error",
    "cluster.idp.ssl.fail_verify_san",
    "cluster.idp.ssl.fail_verify_error",
];

#[tokio::test]
async fn good_tls_lets_client_credentials_and_bearer_tokens_through() {
    let t = tls_stack(Case::default()).await;
    let s = &t.s;
    assert!(s.idp.issuer().starts_with("https://idp.example.test:"));
    let a = s.basic("demo-client", "demo-secret").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.upstream("Issuer_Header"), Some(s.idp.issuer().as_str()));
    assert_eq!(a.upstream("X-Subject"), Some("demo-client"));
    let token = s.idp.mint(MintSpec::default());
    let a = s.bearer(&token).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        a.upstream("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    let counts = s.idp.counts();
    assert_eq!((counts.discovery, counts.jwks, counts.token), (1, 1, 1));

    // Over TLS, with the name Envoy was told to send.
    let seen = s.idp.tls_seen().unwrap();
    assert!(seen.handshakes >= 1, "{seen:?}");
    assert_eq!(seen.failed_handshakes, 0, "{seen:?}");
    assert!(
        seen.server_names
            .iter()
            .all(|n| n.as_deref() == Some(IDP_HOST)),
        "{seen:?}"
    );
    assert!(s.envoy.stat("cluster.idp.ssl.handshake").await >= 1);
    for stat in SSL_FAILURES {
        assert_eq!(s.envoy.stat(stat).await, 0, "{stat}");
    }
}

/// `case` breaks TLS: both kinds of credential get 503 with `Retry-After` long before the
/// `timeout`, nothing reaches the upstream, the filter warns naming the URL, the cluster and
/// what to look at, and of Envoy's TLS failure counters exactly `stat` moves.
async fn assert_tls_failure(case: Case, stat: &str) {
    let sni = case.sni;
    let t = tls_stack(case).await;
    let s = &t.s;
    let started = Instant::now();
    let a = s.basic("demo-client", "demo-secret").await;
    let took = started.elapsed();
    assert_eq!(a.status, 503, "{:?}", a.body);
    assert_eq!(a.body["error"], "temporarily_unavailable");
    assert!(a.headers.contains_key("retry-after"), "no Retry-After");
    assert!(
        took < Duration::from_millis(TIMEOUT_MS / 5),
        "answered after {took:?}, not at once"
    );
    let token = s.idp.mint(MintSpec::default());
    let b = s.bearer(&token).await;
    assert_eq!(b.status, 503, "{:?}", b.body);
    assert!(b.headers.contains_key("retry-after"));
    assert_eq!(s.echo.requests(), 0);
    let counts = s.idp.counts();
    assert_eq!(
        (counts.discovery, counts.jwks, counts.token),
        (0, 0, 0),
        "no request got through TLS"
    );

    // The IdP saw the ClientHello, with Envoy's SNI, and the handshake fail.
    let seen = s.idp.tls_seen().unwrap();
    assert_eq!(seen.server_names.first(), Some(&Some(sni.to_string())));
    assert_eq!(seen.handshakes, 0, "{seen:?}");
    assert!(seen.failed_handshakes >= 1, "{seen:?}");

    // The README's troubleshooting row: the warning, the denial line, the counters.
    let warning = format!(
        "wasm log oidcgate: discovery fetch from {}/.well-known/openid-configuration via `idp` \
         failed: answered 503 (Envoy could not connect to `idp`: \"upstream connect error or \
         disconnect/reset before headers. reset reason: remote connection failure\"; DNS, a \
         refused connection or TLS: see cluster.idp.upstream_cx_connect_fail and \
         cluster.idp.ssl.*)",
        s.idp.issuer()
    );
    let log = s.envoy.log();
    assert!(
        log.contains(&warning),
        "no `{warning}` in:\n{}",
        s.envoy.log_tail(15)
    );
    assert!(
        log.contains("wasm log oidcgate: denied idp_unavailable status=503 client_id=demo-client"),
        "{}",
        s.envoy.log_tail(15)
    );
    assert!(s.envoy.stat_reaches(stat, 1).await >= 1, "{stat}");
    assert!(
        s.envoy
            .stat_reaches("cluster.idp.upstream_cx_connect_fail", 1)
            .await
            >= 1
    );
    assert_eq!(s.envoy.stat("cluster.idp.ssl.handshake").await, 0);
    for other in SSL_FAILURES.iter().filter(|o| **o != stat) {
        assert_eq!(s.envoy.stat(other).await, 0, "{other} moved too");
    }
}

#[tokio::test]
async fn wrong_sni_to_a_server_that_refuses_other_names_is_503_and_ssl_connection_error() {
    let case = Case {
        sni: "other.example.test",
        ..Case::default()
    };
    assert_tls_failure(case, "cluster.idp.ssl.connection_error").await;
}

#[tokio::test]
async fn wrong_sni_to_a_server_with_a_default_certificate_is_503_and_ssl_fail_verify_san() {
    let case = Case {
        sni: "other.example.test",
        unknown_name: |ca| UnknownName::Default(ca.server_cert(&["default.cdn.example.test"])),
        ..Case::default()
    };
    assert_tls_failure(case, "cluster.idp.ssl.fail_verify_san").await;
}

#[tokio::test]
async fn a_san_match_naming_another_host_is_503_and_ssl_fail_verify_san() {
    let case = Case {
        san: "wrong.example.test",
        ..Case::default()
    };
    assert_tls_failure(case, "cluster.idp.ssl.fail_verify_san").await;
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_503_and_ssl_fail_verify_error() {
    let case = Case {
        untrusted_ca: true,
        ..Case::default()
    };
    assert_tls_failure(case, "cluster.idp.ssl.fail_verify_error").await;
}
