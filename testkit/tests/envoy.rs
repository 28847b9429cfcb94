//! The Envoy runner against a real Envoy (`ENVOY_BIN` or `.venv`), with a template that does not
//! need the filter, and template rendering against the real e2e template.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use testkit::echo::Echo;
use testkit::envoy::{render, Envoy, EnvoyOpts, Ports, TemplateVars};
use testkit::idp::{Endpoint, Fault, MockIdp};

fn template(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/envoy")
        .join(name)
}

/// Dummy ports 1 to 4, no filter, an empty configuration and no extra placeholders.
fn plain_vars() -> TemplateVars {
    TemplateVars {
        admin_port: 1,
        listen_port: 2,
        idp_port: 3,
        echo_port: 4,
        wasm_path: PathBuf::new(),
        filter_config: json!({}),
        extra: Vec::new(),
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Two free loopback ports, released for Envoy to bind.
fn two_free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

#[test]
fn filter_config_is_rendered_as_one_quoted_yaml_scalar() {
    let config = json!({"issuer": "http://127.0.0.1:1/oauth2/default", "odd": "quote \" backslash \\ newline \n é {{X}}"});
    let vars = TemplateVars {
        wasm_path: PathBuf::from("/x/oidcgate.wasm"),
        filter_config: config.clone(),
        ..plain_vars()
    };
    let yaml = render(&testkit::repo_root().join("envoy/e2e.yaml"), &vars);
    assert!(!yaml.contains("{{ADMIN_PORT}}") && !yaml.contains("{{WASM_PATH}}"));
    assert!(yaml.contains("filename: \"/x/oidcgate.wasm\""));
    let scalar = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("value: "))
        .expect("the configuration line");
    // A JSON string literal is a YAML double-quoted scalar with the same meaning.
    let inner: String = serde_json::from_str(scalar).expect("a JSON string literal");
    assert_eq!(serde_json::from_str::<Value>(&inner).unwrap(), config);
}

#[test]
fn extra_placeholders_are_filled_in_one_pass() {
    let vars = TemplateVars {
        extra: vec![
            ("JWKS".into(), r#"{"keys":[]}"#.into()),
            ("NOTE".into(), "left as is: {{ADMIN_PORT}}".into()),
        ],
        ..plain_vars()
    };
    let rendered = testkit::envoy::render_str(
        "port: {{ADMIN_PORT}}\njwks: '{{JWKS}}'\nnote: {{NOTE}}{{LISTEN_PORT}}\n",
        &vars,
    );
    assert_eq!(
        rendered,
        "port: 1\njwks: '{\"keys\":[]}'\nnote: left as is: {{ADMIN_PORT}}2\n"
    );
}

#[test]
#[should_panic(expected = "unknown placeholder")]
fn an_unclosed_placeholder_is_refused() {
    testkit::envoy::render_str("port: {{ADMIN_PORT}}\nx: {{ADMIN_PORT\n", &plain_vars());
}

#[test]
#[should_panic(expected = "unknown placeholder")]
fn unknown_placeholders_are_refused() {
    testkit::envoy::render_str("port: {{ADMIN_PORT}}\nx: {{ADMIN_PROT}}\n", &plain_vars());
}

#[tokio::test]
async fn envoy_proxies_to_echo_and_idp_and_reports_stats() {
    let idp = MockIdp::start().await;
    let echo = Echo::start().await;
    let mut envoy = Envoy::start(EnvoyOpts {
        template: template("plain.yaml"),
        filter_config: json!({}),
        idp_port: idp.port(),
        echo_port: echo.port,
        concurrency: 2,
        ..EnvoyOpts::default()
    })
    .await;
    let http = testkit::http_client();

    let echoed = get_json(&http, &envoy.url("/api?x=1")).await;
    assert_eq!(echoed["path"], "/api?x=1");
    assert_eq!(echo.requests(), 1);

    let discovery = http
        .get(envoy.url("/oauth2/default/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(discovery.status(), 200);
    // A reset from the IdP reaches Envoy as an upstream reset.
    idp.set_fault(Endpoint::Jwks, Fault::Reset);
    let reset = http
        .get(envoy.url("/oauth2/default/v1/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 503);
    assert!(
        reset.text().await.unwrap().contains("reset"),
        "upstream reset, not a timeout"
    );
    assert_eq!(idp.counts().jwks, 1);

    let stats = envoy.stats().await;
    assert!(
        stats["http.ingress.downstream_rq_total"] >= 3,
        "{:?}",
        stats.get("http.ingress.downstream_rq_total")
    );
    assert_eq!(envoy.stat("cluster.echo.upstream_rq_200").await, 1);
    assert!(envoy.log().contains("starting main dispatch loop"));
    assert!(envoy.config_path().is_file());

    let port = envoy.listen_port;
    envoy.kill();
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
}

#[tokio::test]
async fn a_refused_configuration_returns_the_log() {
    let log = Envoy::start_expect_failure(EnvoyOpts {
        template: template("broken.yaml"),
        filter_config: json!({}),
        idp_port: 1,
        echo_port: 1,
        concurrency: 1,
        ..EnvoyOpts::default()
    })
    .await;
    assert!(log.contains("no-such-cluster"), "{log}");
}

#[tokio::test]
async fn fixed_ports_log_level_and_arguments_reach_envoy() {
    let echo = Echo::start().await;
    let (admin, listen) = two_free_ports();
    let envoy = Envoy::start(EnvoyOpts {
        template: template("plain.yaml"),
        idp_port: 1,
        echo_port: echo.port,
        ports: Some(Ports { admin, listen }),
        log_level: Some("debug".into()),
        args: vec!["--service-node".into(), "testkit-node".into()],
        ..EnvoyOpts::default()
    })
    .await;
    assert_eq!((envoy.admin_port, envoy.listen_port), (admin, listen));
    let http = testkit::http_client();
    let info = get_json(&http, &envoy.admin_url("/server_info")).await;
    let options = &info["command_line_options"];
    assert_eq!(options["log_level"], "debug", "{options}");
    assert_eq!(options["service_node"], "testkit-node", "{options}");
    let answer = http.get(envoy.url("/api")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn a_launched_envoy_is_not_waited_for_and_is_seen_to_exit() {
    let mut envoy = Envoy::launch(EnvoyOpts {
        template: template("broken.yaml"),
        idp_port: 1,
        echo_port: 1,
        ..EnvoyOpts::default()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while envoy.running() {
        assert!(std::time::Instant::now() < deadline, "Envoy did not exit");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(envoy.log().contains("no-such-cluster"), "{}", envoy.log());
}

#[tokio::test]
async fn a_restarted_stack_envoy_binds_the_same_fixed_ports() {
    let (admin, listen) = two_free_ports();
    let opts = || EnvoyOpts {
        template: template("plain.yaml"),
        ports: Some(Ports { admin, listen }),
        ..EnvoyOpts::default()
    };
    let mut stack = testkit::Stack::start_with(MockIdp::start().await, opts()).await;
    assert_eq!(stack.get("/api?n=1").await.status, 200);
    let first = stack.envoy.pid();
    stack.restart_envoy(opts()).await;
    assert_ne!(stack.envoy.pid(), first);
    assert_eq!(stack.envoy.listen_port, listen);
    let again = stack.get("/api?n=2").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["path"], "/api?n=2");
    assert_eq!(stack.echo.requests(), 2);
}
