//! The shipped configurations, checked without deploying them: every Envoy config passes
//! `envoy --mode validate` with the built filter; Kong's declarative file has the shape of
//! Kong's filter-chain schema; docker-compose.yml parses and mounts only files that exist; the
//! Istio and Envoy Gateway resources carry a configuration the filter accepts; and the README's
//! configuration reference lists exactly the keys the filter accepts.

// A test asserts by panicking; the panic-path lints guard the filter, not its tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use oidcgate::config::{Config, Sources};
use oidcgate::outcome::{ClaimRule, Denial, TokenProblem};
use oidcgate::url::HttpUrl;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use testkit::envoy::{envoy_bin, render_str, wasm_path, TemplateVars};
use testkit::repo_root;

/// Where deployment configs load the filter from (docker-compose.yml mounts it there).
const INSTALLED_WASM: &str = "/etc/envoy/oidcgate.wasm";
/// The build output, relative to the repository root (envoy/demo.yaml, docker-compose.yml).
const BUILT_WASM: &str = "target/wasm32-wasip1/release/oidcgate.wasm";

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: not YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

/// The filter's own parser, with the key and reason on failure.
fn parse_filter_config(json_text: &str, what: &str) -> Config {
    Config::parse(json_text.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: the filter refuses its configuration: {e}"))
}

fn assert_keys_within(v: &Value, allowed: &[&str], what: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not a mapping"));
    for key in obj.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{what}: `{key}` is not a field of the documented schema ({allowed:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Envoy

/// The filter configurations (`StringValue` JSON) of the wasm filters in an Envoy config.
fn envoy_filter_configs(config: &Value) -> Vec<Value> {
    fn walk(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(o) => {
                if o.get("name").and_then(Value::as_str) == Some("envoy.filters.http.wasm") {
                    out.push(v.clone());
                }
                o.values().for_each(|c| walk(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(config, &mut out);
    out
}

fn envoy_configs() -> Vec<PathBuf> {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    configs.sort();
    configs
}

/// `envoy --mode validate` on `yaml`, from the repository root (relative paths in the shipped
/// configs are relative to it). Returns Envoy's output on failure.
fn envoy_validate(yaml: &str, name: &str) -> Result<(), String> {
    let file = std::env::temp_dir().join(format!("oidcgate-configs-{}-{name}", std::process::id()));
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(envoy_bin())
        .current_dir(repo_root())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&file)
        .output()
        .expect("run envoy");
    let _ = std::fs::remove_file(&file);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A CA file for the TLS template's `trusted_ca` (validation reads it), made once per run.
fn template_ca_file() -> PathBuf {
    static CA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let ca = testkit::tls::TestCa::new("oidcgate configs CA");
        let file =
            std::env::temp_dir().join(format!("oidcgate-configs-{}-ca.pem", std::process::id()));
        std::fs::write(&file, ca.pem()).unwrap();
        file
    })
    .clone()
}

/// A shipped config as Envoy should load it in this checkout: templates rendered the way the
/// test kit renders them, the install path pointed at the build.
fn prepare_envoy_config(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let wasm = wasm_path();
    let wasm = wasm.to_str().expect("UTF-8 path");
    if text.contains("{{") {
        let vars = TemplateVars {
            admin_port: 19901,
            listen_port: 19000,
            idp_port: 19002,
            echo_port: 19001,
            wasm_path: PathBuf::from(wasm),
            filter_config: json!({
                "issuer": "http://127.0.0.1:19002/oauth2/default",
                "idp_cluster": "idp",
                "upstream_headers_claims": ["iss", "sub"],
                "upstream_headers_names": ["Issuer_Header", "X-Subject"],
            }),
            // envoy/e2e-tls.yaml's IdP cluster (tests/tls.rs).
            extra: if text.contains("{{IDP_CA_FILE}}") {
                vec![
                    ("IDP_SNI".into(), "idp.example.test".into()),
                    ("IDP_SAN".into(), "idp.example.test".into()),
                    (
                        "IDP_CA_FILE".into(),
                        template_ca_file().to_string_lossy().into_owned(),
                    ),
                ]
            } else {
                Vec::new()
            },
        };
        return render_str(&text, &vars);
    }
    let named = [INSTALLED_WASM, BUILT_WASM]
        .iter()
        .filter(|p| text.contains(&format!("filename: {p}")))
        .count();
    assert_eq!(
        named,
        1,
        "{}: the filter must be loaded from {INSTALLED_WASM} or {BUILT_WASM}",
        path.display()
    );
    // The install path exists only in a deployment; the build path is also pointed at the
    // filter under test, which may be $OIDCGATE_WASM.
    text.replace(
        &format!("filename: {INSTALLED_WASM}"),
        &format!("filename: {wasm}"),
    )
    .replace(
        &format!("filename: {BUILT_WASM}"),
        &format!("filename: {wasm}"),
    )
}

#[test]
fn every_shipped_envoy_config_passes_envoy_validate() {
    let configs = envoy_configs();
    let names: Vec<String> = configs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "compose.yaml",
        "demo.yaml",
        "e2e.yaml",
        "e2e-tls.yaml",
        "production.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "envoy/{expected} missing"
        );
    }
    let mut failures = Vec::new();
    for (path, name) in configs.iter().zip(&names) {
        let yaml = prepare_envoy_config(path);
        // Validation runs the filter's on_configure; this names the key if it refuses.
        let parsed: Value = serde_norway::from_str(&yaml).unwrap();
        let filters = envoy_filter_configs(&parsed);
        assert_eq!(
            filters.len(),
            1,
            "envoy/{name}: one oidcgate filter expected"
        );
        let config = &filters[0]["typed_config"]["config"];
        assert_eq!(config["fail_open"], json!(false), "envoy/{name}: fail_open");
        let value = config["configuration"]["value"].as_str().unwrap();
        parse_filter_config(value, &format!("envoy/{name}"));
        if let Err(log) = envoy_validate(&yaml, name) {
            failures.push(format!("envoy/{name}:\n{log}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The check above is only worth something if validate mode runs the filter's configuration.
#[test]
fn envoy_validate_rejects_a_configuration_the_filter_refuses() {
    let path = repo_root().join("envoy/production.yaml");
    let yaml = prepare_envoy_config(&path).replace(
        "\"idp_cluster\": \"okta\",",
        "\"idp_cluster\": \"okta\", \"audiences_required\": [\"x\"],",
    );
    assert!(yaml.contains("audiences_required"));
    let log = envoy_validate(&yaml, "refused.yaml").expect_err("Envoy accepted it");
    assert!(log.contains("oidcgate"), "{log}");
}

#[test]
fn production_envoy_config_is_production_shaped() {
    let text = prepare_envoy_config(&repo_root().join("envoy/production.yaml"));
    let config: Value = serde_norway::from_str(&text).unwrap();
    let resources = &config["static_resources"];

    // The filter talks to the IdP through the cluster `okta`, fails closed.
    let filter = &envoy_filter_configs(&config)[0]["typed_config"]["config"];
    let filter_config = parse_filter_config(
        filter["configuration"]["value"].as_str().unwrap(),
        "production",
    );
    assert_eq!(filter_config.idp.cluster.as_deref(), Some("okta"));
    assert!(filter_config.idp.issuer.starts_with("https://"));

    // The okta cluster: DNS, TLS with SNI, CA validation, SAN check, a connect timeout.
    let clusters = resources["clusters"].as_array().unwrap();
    let okta = clusters
        .iter()
        .find(|c| c["name"] == "okta")
        .expect("cluster okta");
    assert!(matches!(
        okta["type"].as_str(),
        Some("LOGICAL_DNS" | "STRICT_DNS")
    ));
    assert!(okta["connect_timeout"].is_string());
    let issuer = HttpUrl::parse(&filter_config.idp.issuer).unwrap();
    let endpoint = &okta["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    assert_eq!(
        format!(
            "{}:{}",
            endpoint["address"].as_str().unwrap(),
            endpoint["port_value"]
        ),
        issuer.host_port,
        "the okta cluster must reach the issuer's host"
    );
    let tls = &okta["transport_socket"];
    assert_eq!(tls["name"], "envoy.transport_sockets.tls");
    let tls = &tls["typed_config"];
    assert_eq!(
        tls["sni"],
        json!(issuer.authority),
        "SNI is the issuer's host"
    );
    let validation = &tls["common_tls_context"]["validation_context"];
    assert_eq!(
        validation["trusted_ca"]["filename"],
        "/etc/ssl/certs/ca-certificates.crt"
    );
    assert_eq!(
        validation["match_typed_subject_alt_names"][0]["matcher"]["exact"],
        json!(issuer.authority)
    );

    // An upstream API cluster with a connect timeout and the same header-case formatter.
    let api = clusters.iter().find(|c| c["name"] == "api").expect("api");
    assert!(api["connect_timeout"].is_string());
    assert!(api.to_string().contains("preserve_case"));

    // Listener: preserved header case (PROPER_CASE for Envoy's own headers), timeouts.
    let hcm = &resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(
        hcm["http_protocol_options"]["header_key_format"]["stateful_formatter"]["typed_config"]
            ["formatter_type_on_envoy_headers"],
        "PROPER_CASE"
    );
    assert!(hcm["stream_idle_timeout"].is_string());
    assert!(hcm["request_headers_timeout"].is_string());
    let route = &hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"];
    assert_eq!(route["cluster"], "api");
    assert!(route["timeout"].is_string());

    // The admin interface is not on a public address.
    assert_eq!(
        config["admin"]["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
}

/// What tests/e2e.rs and tests/tls.rs run is what production.yaml ships: the same
/// `stats_tags`, and the IdP cluster's TLS settings with only the names and the CA file
/// changed.
#[test]
fn the_test_templates_carry_production_stats_tags_and_tls_settings() {
    let production: Value = serde_norway::from_str(&prepare_envoy_config(
        &repo_root().join("envoy/production.yaml"),
    ))
    .unwrap();
    let e2e: Value =
        serde_norway::from_str(&prepare_envoy_config(&repo_root().join("envoy/e2e.yaml"))).unwrap();
    let tags = &production["stats_config"]["stats_tags"];
    assert_eq!(tags.as_array().map(Vec::len), Some(2), "{tags}");
    assert_eq!(&e2e["stats_config"], &production["stats_config"]);

    let cluster = |config: &Value, name: &str| {
        config["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("cluster {name}"))
    };
    let tls_template = read("envoy/e2e-tls.yaml")
        .replace("{{IDP_SNI}}", "dev-123456.okta.com")
        .replace("{{IDP_SAN}}", "dev-123456.okta.com")
        .replace("{{IDP_CA_FILE}}", "/etc/ssl/certs/ca-certificates.crt");
    let dir = std::env::temp_dir().join(format!("oidcgate-configs-{}-tls", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("e2e-tls.yaml");
    std::fs::write(&file, tls_template).unwrap();
    let tls: Value = serde_norway::from_str(&prepare_envoy_config(&file)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        cluster(&tls, "idp")["transport_socket"],
        cluster(&production, "okta")["transport_socket"],
        "envoy/e2e-tls.yaml's IdP cluster must speak TLS as production.yaml's does"
    );
}

// ---------------------------------------------------------------------------------------
// Kong

/// Kong's declarative `filter_chains` entity (kong/db/schema/entities/filter_chains.lua,
/// Kong 3.4+): `filters` required (at least one), `name` a string, `enabled` a boolean,
/// `route`/`service` foreign keys (exactly one at the top level; implied when nested), and
/// each filter `{name (required), enabled, config}` where `config` is a string for a filter
/// that ships no JSON schema (3.4/3.5 type it as a string; later versions accept only a
/// string or null without a `<name>.meta.json`).
fn check_kong_filter_chain(chain: &Value, nested_in: Option<&str>, what: &str) -> Vec<String> {
    assert_keys_within(
        chain,
        &[
            "id",
            "name",
            "enabled",
            "route",
            "service",
            "filters",
            "tags",
            "created_at",
            "updated_at",
        ],
        what,
    );
    if let Some(name) = chain.get("name") {
        let name = name.as_str().unwrap_or_else(|| panic!("{what}: name"));
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || "-._~".contains(c)),
            "{what}: `{name}` is not a Kong utf8_name"
        );
    }
    if let Some(enabled) = chain.get("enabled") {
        assert!(enabled.is_boolean(), "{what}: enabled must be a boolean");
    }
    let has = |k: &str| chain.get(k).is_some_and(|v| !v.is_null());
    match nested_in {
        Some(parent) => assert!(
            !has("route") && !has("service"),
            "{what}: nested in a {parent}, it must not name a route or service"
        ),
        None => assert!(
            has("route") != has("service"),
            "{what}: exactly one of route and service"
        ),
    }
    let filters = chain["filters"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: `filters` (array) is required"));
    assert!(!filters.is_empty(), "{what}: `filters` needs at least one");
    let mut configs = Vec::new();
    for (i, filter) in filters.iter().enumerate() {
        let what = format!("{what}.filters[{i}]");
        assert_keys_within(filter, &["name", "enabled", "config"], &what);
        // The filter's name is its file name in wasm_filters_path: oidcgate.wasm.
        assert_eq!(filter["name"], "oidcgate", "{what}: name");
        if let Some(enabled) = filter.get("enabled") {
            assert!(enabled.is_boolean(), "{what}: enabled must be a boolean");
        }
        let config = filter["config"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: config must be the JSON configuration as a string"));
        configs.push(config.to_string());
    }
    configs
}

#[test]
fn kong_declarative_config_matches_the_filter_chain_schema() {
    let doc = yaml("kong/kong.yml");
    assert_eq!(doc["_format_version"], "3.0");
    assert_keys_within(
        &doc,
        &[
            "_format_version",
            "_transform",
            "_comment",
            "services",
            "routes",
            "filter_chains",
            "plugins",
            "upstreams",
            "consumers",
        ],
        "kong.yml",
    );
    let mut configs = Vec::new();
    for (i, chain) in doc["filter_chains"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        configs.extend(check_kong_filter_chain(
            chain,
            None,
            &format!("filter_chains[{i}]"),
        ));
    }
    for (i, service) in doc["services"].as_array().into_iter().flatten().enumerate() {
        let what = format!("services[{i}]");
        assert!(service["name"].is_string(), "{what}: name");
        assert!(
            service["url"].is_string() || service["host"].is_string(),
            "{what}: url or host"
        );
        for (j, chain) in service["filter_chains"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            configs.extend(check_kong_filter_chain(
                chain,
                Some("service"),
                &format!("{what}.filter_chains[{j}]"),
            ));
        }
        for (j, route) in service["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let what = format!("{what}.routes[{j}]");
            assert!(route["name"].is_string(), "{what}: name");
            assert!(
                ["paths", "hosts", "methods", "headers", "snis"]
                    .iter()
                    .any(|k| route.get(*k).is_some()),
                "{what}: a route needs paths, hosts, methods, headers or snis"
            );
            for (k, chain) in route["filter_chains"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                configs.extend(check_kong_filter_chain(
                    chain,
                    Some("route"),
                    &format!("{what}.filter_chains[{k}]"),
                ));
            }
        }
    }
    assert!(
        !configs.is_empty(),
        "kong.yml runs no oidcgate filter chain"
    );
    for config in configs {
        let parsed = parse_filter_config(&config, "kong.yml");
        // In Kong the callout's upstream is the address itself: `idp_cluster`, if set, must
        // be the IdP's host:port, not an Envoy cluster name.
        if let Some(cluster) = &parsed.idp.cluster {
            let issuer = HttpUrl::parse(&parsed.idp.issuer).unwrap();
            assert_eq!(
                cluster, &issuer.host_port,
                "Kong's idp_cluster is host:port"
            );
        }
    }
}

/// `key = value` lines of a kong.conf (comments and blank lines dropped).
fn kong_conf() -> Map<String, Value> {
    read("kong/kong.conf")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("kong.conf: `{l}` is not `key = value`"));
            (k.trim().to_string(), Value::String(v.trim().to_string()))
        })
        .collect()
}

#[test]
fn kong_conf_enables_wasm_and_what_the_filter_needs() {
    let conf = kong_conf();
    let get = |k: &str| {
        conf.get(k)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("kong.conf: `{k}` is not set"))
    };
    assert!(matches!(get("wasm"), "on" | "true"), "wasm = on");
    assert!(
        get("wasm_filters_path").starts_with('/'),
        "absolute wasm_filters_path"
    );
    // DB-less, loading the checked declarative file.
    assert_eq!(get("database"), "off");
    assert!(get("declarative_config").ends_with("kong/kong.yml"));
    // Shared data under `oidcgate/...` needs the zone of that name.
    assert!(get("nginx_wasm_shm_kv_oidcgate").ends_with('m'));
    // TLS to the IdP, verified.
    assert!(get("nginx_wasm_tls_trusted_certificate").starts_with('/'));
    assert_eq!(get("nginx_wasm_tls_verify_cert"), "on");
    assert_eq!(get("nginx_wasm_tls_verify_host"), "on");
    // DNS for callouts from the root context.
    assert!(!get("nginx_wasm_resolver").is_empty());
    // Every nginx_wasm_* key names an ngx_wasm_module wasm{} directive (or a zone).
    let wasm_block = [
        "resolver",
        "resolver_timeout",
        "tls_trusted_certificate",
        "tls_verify_cert",
        "tls_verify_host",
        "tls_no_verify_warn",
        "socket_connect_timeout",
        "socket_read_timeout",
        "socket_send_timeout",
        "socket_buffer_size",
        "socket_large_buffers",
        "backtraces",
        "compiler",
    ];
    for key in conf.keys() {
        if let Some(directive) = key.strip_prefix("nginx_wasm_") {
            assert!(
                directive.starts_with("shm_kv_") || wasm_block.contains(&directive),
                "kong.conf: `{key}` is not an ngx_wasm_module wasm{{}} directive"
            );
        }
    }
}

/// Kong's host wakes a paused request only with its own callouts: kong.conf includes the
/// poll endpoint (kong/oidcgate-wait.conf, a delayed loopback server) and kong.yml's filter
/// configuration names the address it listens on.
#[test]
fn kong_runs_the_poll_endpoint_that_kong_yml_names_as_wait_upstream() {
    let conf = kong_conf();
    let include = conf
        .get("nginx_http_include")
        .and_then(Value::as_str)
        .expect("kong.conf: nginx_http_include (the wait_upstream server) is not set");
    assert!(include.ends_with("/oidcgate-wait.conf"), "{include}");
    let server = read("kong/oidcgate-wait.conf");
    let listen = server
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("listen "))
        .and_then(|l| l.strip_suffix(';'))
        .expect("kong/oidcgate-wait.conf: no listen line");
    assert!(listen.starts_with("127.0.0.1:"), "loopback only: {listen}");
    assert!(server.contains("auth_delay 20ms;"), "each poll must wait");
    let doc = yaml("kong/kong.yml");
    let filter = &doc["services"][0]["filter_chains"][0]["filters"][0];
    let config: Value =
        serde_json::from_str(filter["config"].as_str().expect("config string")).unwrap();
    assert_eq!(config["wait_upstream"], listen);
    // The same server as the test kit's (kong/nginx.conf), but for its port.
    let template = read("kong/nginx.conf");
    for line in [
        "auth_basic \"oidcgate-wait\";",
        "auth_basic_user_file /dev/null;",
        "auth_delay 20ms;",
    ] {
        assert!(template.contains(line) && server.contains(line), "{line}");
    }
}

#[test]
fn kong_readme_says_it_was_not_run() {
    let readme = read("kong/README.md");
    assert!(readme.contains("cannot be installed"));
    assert!(readme.contains("3.11"));
    assert!(readme.contains("host:port"));
}

// ---------------------------------------------------------------------------------------
// docker-compose.yml

/// Host paths a compose service uses: bind-mount sources (short `src:dst[:mode]` or long
/// syntax) and build contexts with their Dockerfiles.
fn compose_host_paths(service: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    for volume in service["volumes"].as_array().into_iter().flatten() {
        match volume {
            Value::String(s) => {
                let source = s.split(':').next().unwrap();
                // A named volume has no path separator; a bind mount starts with . or /.
                if source.starts_with('.') || source.starts_with('/') {
                    paths.push(source.to_string());
                }
            }
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("bind") => {
                paths.push(o["source"].as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    match &service["build"] {
        Value::String(context) => {
            paths.push(context.clone());
            paths.push(format!("{context}/Dockerfile"));
        }
        Value::Object(build) => {
            let context = build
                .get("context")
                .and_then(Value::as_str)
                .unwrap_or(".")
                .to_string();
            let dockerfile = build
                .get("dockerfile")
                .and_then(Value::as_str)
                .unwrap_or("Dockerfile");
            paths.push(format!("{context}/{dockerfile}"));
            paths.push(context);
        }
        _ => {}
    }
    paths
}

#[test]
fn docker_compose_parses_and_everything_it_uses_exists() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    for name in ["envoy", "mock-idp", "echo"] {
        assert!(services.contains_key(name), "service {name}");
    }
    let envoy = &services["envoy"];
    assert_eq!(envoy["image"], "envoyproxy/envoy:v1.40-latest");
    let envoy_volumes = envoy["volumes"].to_string();
    assert!(
        envoy_volumes.contains(&format!("./{BUILT_WASM}:{INSTALLED_WASM}:ro")),
        "the filter is mounted read-only where envoy/compose.yaml loads it"
    );
    assert!(envoy_volumes.contains("./envoy/compose.yaml:/etc/envoy/envoy.yaml"));
    let envoy_config = read("envoy/compose.yaml");
    assert!(envoy_config.contains(&format!("filename: {INSTALLED_WASM}")));

    let mut dockerfiles = BTreeSet::new();
    for (name, service) in services {
        for path in compose_host_paths(service) {
            let rel = path.trim_start_matches("./");
            if rel == BUILT_WASM {
                continue; // a build output: `cargo build --release --target wasm32-wasip1`
            }
            assert!(
                repo_root().join(rel).exists(),
                "service {name} uses {path}, which is not in the repository"
            );
            if rel.contains("Dockerfile") {
                dockerfiles.insert(rel.to_string());
            }
        }
        // The test kit binaries listen on loopback only: they must share Envoy's network.
        if name != "envoy" {
            assert_eq!(service["network_mode"], "service:envoy", "service {name}");
        }
    }
    assert!(dockerfiles.contains("deploy/Dockerfile.testkit"));
    // Everything the Dockerfile copies from the context exists, and the context's ignore file
    // keeps target/ out of it.
    let dockerfile = read("deploy/Dockerfile.testkit");
    let mut copied = 0;
    for line in dockerfile.lines().map(str::trim) {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if args.contains("--from=") {
            continue;
        }
        let mut parts: Vec<&str> = args.split_whitespace().collect();
        parts.pop(); // destination
        for source in parts {
            copied += 1;
            assert!(
                repo_root().join(source).exists(),
                "Dockerfile.testkit copies {source}, which does not exist"
            );
        }
    }
    assert!(copied > 0);
    for bin in ["mock-idp", "echo-upstream"] {
        assert!(dockerfile.contains(bin), "Dockerfile.testkit builds {bin}");
        assert!(repo_root()
            .join(format!("testkit/src/bin/{bin}.rs"))
            .is_file());
    }
    let ignore = read("deploy/Dockerfile.testkit.dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

// ---------------------------------------------------------------------------------------
// Istio and Envoy Gateway

fn find_kind<'a>(docs: &'a [Value], api_version: &str, kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .inspect(|d| {
            assert_eq!(d["apiVersion"], api_version, "{kind}: apiVersion");
            assert!(d["metadata"]["name"].is_string(), "{kind}: metadata.name");
        })
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn istio_wasmplugin_carries_a_configuration_the_filter_accepts() {
    let docs = yaml_docs("deploy/istio-wasmplugin.yaml");
    let plugin = find_kind(&docs, "extensions.istio.io/v1alpha1", "WasmPlugin");
    let spec = &plugin["spec"];
    // istio/api extensions/v1alpha1/wasm.proto, WasmPlugin fields.
    assert_keys_within(
        spec,
        &[
            "selector",
            "targetRef",
            "targetRefs",
            "url",
            "sha256",
            "imagePullPolicy",
            "imagePullSecret",
            "verificationKey",
            "pluginConfig",
            "pluginName",
            "phase",
            "priority",
            "failStrategy",
            "vmConfig",
            "match",
            "type",
        ],
        "WasmPlugin.spec",
    );
    let url = spec["url"].as_str().unwrap();
    assert!(
        ["oci://", "file://", "https://"]
            .iter()
            .any(|s| url.starts_with(s)),
        "url {url}"
    );
    assert_eq!(spec["phase"], "AUTHN");
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert!(matches!(spec["type"].as_str(), None | Some("HTTP")));
    let config = parse_filter_config(&spec["pluginConfig"].to_string(), "WasmPlugin");

    // `idp_cluster` is the cluster Istio makes for the ServiceEntry host and port, and that
    // port originates TLS to the IdP.
    let entry = find_kind(&docs, "networking.istio.io/v1beta1", "ServiceEntry");
    let rule = find_kind(&docs, "networking.istio.io/v1beta1", "DestinationRule");
    let host = entry["spec"]["hosts"][0].as_str().unwrap();
    let port = &entry["spec"]["ports"][0];
    assert_eq!(
        config.idp.cluster.as_deref(),
        Some(format!("outbound|{}||{host}", port["number"]).as_str())
    );
    let issuer = HttpUrl::parse(&config.idp.issuer).unwrap();
    assert_eq!(
        issuer.authority, host,
        "the ServiceEntry is for the issuer's host"
    );
    assert_eq!(port["targetPort"], 443);
    assert_eq!(rule["spec"]["host"], host);
    let tls = &rule["spec"]["trafficPolicy"]["portLevelSettings"][0];
    assert_eq!(tls["port"]["number"], port["number"]);
    assert_eq!(tls["tls"]["mode"], "SIMPLE");
    assert_eq!(tls["tls"]["sni"], host);
}

#[test]
fn envoy_gateway_policy_carries_a_configuration_the_filter_accepts() {
    let docs = yaml_docs("deploy/envoy-gateway-extension-policy.yaml");
    let policy = find_kind(
        &docs,
        "gateway.envoyproxy.io/v1alpha1",
        "EnvoyExtensionPolicy",
    );
    let spec = &policy["spec"];
    assert!(
        spec["targetRefs"].as_array().is_some_and(|t| !t.is_empty())
            || spec["targetRef"].is_object(),
        "a target"
    );
    let wasm = spec["wasm"].as_array().expect("spec.wasm");
    assert_eq!(wasm.len(), 1);
    let wasm = &wasm[0];
    // envoyproxy/gateway api/v1alpha1/wasm_types.go: Wasm and WasmCodeSource.
    assert_keys_within(
        wasm,
        &["name", "rootID", "code", "config", "failOpen"],
        "wasm[0]",
    );
    assert_eq!(wasm["failOpen"], json!(false));
    let code = &wasm["code"];
    assert_keys_within(
        code,
        &["type", "http", "image", "sha256", "pullPolicy"],
        "wasm[0].code",
    );
    match code["type"].as_str() {
        Some("Image") => assert!(code["image"]["url"].is_string() && code.get("http").is_none()),
        Some("HTTP") => assert!(code["http"]["url"].is_string() && code.get("image").is_none()),
        other => panic!("code.type {other:?}"),
    }
    let filter_config = wasm["config"].to_string();
    let config = parse_filter_config(&filter_config, "EnvoyExtensionPolicy");

    // The cluster named by idp_cluster is added by the EnvoyPatchPolicy.
    let patch = find_kind(&docs, "gateway.envoyproxy.io/v1alpha1", "EnvoyPatchPolicy");
    assert_eq!(patch["spec"]["type"], "JSONPatch");
    let add = &patch["spec"]["jsonPatches"][0];
    assert_eq!(
        add["type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert_eq!(add["operation"]["op"], "add");
    assert_eq!(add["operation"]["path"], "");
    let cluster = &add["operation"]["value"];
    assert_eq!(cluster["name"].as_str(), config.idp.cluster.as_deref());

    // Envoy itself checks the added cluster, with the filter and this configuration.
    let wasm_filter = json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "oidcgate",
                "root_id": "oidcgate",
                "vm_config": {
                    "vm_id": "oidcgate",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm_path()}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": filter_config,
                },
                "fail_open": false,
            },
        },
    });
    let router = json!({
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        },
    });
    let route = json!({"match": {"prefix": "/"}, "route": {"cluster": cluster["name"].clone()}});
    let hcm = json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network\
                      .http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "ingress",
            "route_config": {
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}],
            },
            "http_filters": [wasm_filter, router],
        },
    });
    let bootstrap = json!({
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 19100}},
                "filter_chains": [{"filters": [hcm]}],
            }],
            "clusters": [cluster],
        },
    });
    // JSON is YAML.
    envoy_validate(&bootstrap.to_string(), "envoy-gateway.yaml")
        .unwrap_or_else(|log| panic!("Envoy refuses the Envoy Gateway setup:\n{log}"));
}

// ---------------------------------------------------------------------------------------
// Documentation: the README and docs/ say what the filter does

/// A section of a Markdown file: from its `## title` to the next `## `.
fn section(rel: &str, title: &str) -> String {
    let text = read(rel);
    let start = text
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("{rel} has no section `## {title}`"));
    let body = &text[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    body[..end].to_string()
}

fn readme_section(title: &str) -> String {
    section("README.md", title)
}

/// The rows of every table in `text`, as trimmed cells; header separators left out.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The rows of `text`'s tables whose first cell is `first`.
fn rows_starting(text: &str, first: &str) -> Vec<Vec<String>> {
    table_rows(text)
        .into_iter()
        .filter(|r| r.first().is_some_and(|c| c == first))
        .collect()
}

/// The first column of the Configuration reference's first table: `` `key` `` cells.
fn readme_reference_keys() -> Vec<String> {
    let section = readme_section("Configuration reference");
    let mut keys = Vec::new();
    let mut in_table = false;
    for line in section.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            if in_table {
                break; // the first table only
            }
            continue;
        }
        in_table = true;
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if let Some(key) = cells[0].strip_prefix('`').and_then(|c| c.strip_suffix('`')) {
            assert_eq!(
                cells.len(),
                4,
                "README row `{key}`: key, type, default, meaning"
            );
            assert!(
                cells.iter().all(|c| !c.is_empty()),
                "README row `{key}` has an empty cell"
            );
            keys.push(key.to_string());
        }
    }
    keys
}

/// The configuration keys the filter accepts, as the library exports them.
fn accepted_keys() -> Vec<String> {
    oidcgate::config::KEYS
        .iter()
        .map(|k| k.to_string())
        .collect()
}

/// Whether `Config::parse` knows `key` (any error but "unknown field" means it does).
fn filter_accepts_key(key: &str) -> bool {
    if key == "issuer" {
        return Config::parse(br#"{"issuer":"http://i"}"#).is_ok();
    }
    let probe = format!(r#"{{"issuer":"http://i","{key}":null}}"#);
    match Config::parse(probe.as_bytes()) {
        Ok(_) => true,
        Err(e) => !e.reason.contains("unknown field"),
    }
}

#[test]
fn readme_reference_lists_exactly_the_accepted_keys() {
    let documented = readme_reference_keys();
    let fields = accepted_keys();
    assert!(fields.len() > 10, "oidcgate::config::KEYS: {fields:?}");
    let documented_set: BTreeSet<&String> = documented.iter().collect();
    assert_eq!(
        documented.len(),
        documented_set.len(),
        "a key is listed twice"
    );
    let field_set: BTreeSet<&String> = fields.iter().collect();
    let undocumented: Vec<_> = field_set.difference(&documented_set).collect();
    let unknown: Vec<_> = documented_set.difference(&field_set).collect();
    assert!(
        undocumented.is_empty(),
        "accepted but not in README's Configuration reference: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "in README's Configuration reference but not in oidcgate::config::KEYS: {unknown:?}"
    );
    // KEYS and the parser agree: every listed key is accepted, and the probe does tell an
    // unknown key apart (src/config/tests.rs checks KEYS against the parser the other way).
    for key in &documented {
        assert!(
            filter_accepts_key(key),
            "Config::parse rejects `{key}` as unknown"
        );
    }
    assert!(!filter_accepts_key("audiences_required"));
}

#[test]
fn readme_reference_defaults_match_the_parser() {
    // The defaults the table states, checked against a configuration with only `issuer`.
    let section = readme_section("Configuration reference");
    let row = |key: &str| -> Vec<String> {
        let line = section
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("README row {key}"));
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let c = Config::parse(br#"{"issuer":"https://dev-1.okta.com/oauth2/default"}"#).unwrap();
    assert_eq!(row("timeout")[2], format!("`{}`", c.idp.timeout_ms));
    assert_eq!(row("leeway")[2], format!("`{}`", c.accept.leeway_s));
    assert_eq!(
        row("cache_ttl_neg")[2],
        format!("`{}`", c.accept.neg_ttl_ms / 1000)
    );
    assert_eq!(
        row("rediscovery_lifetime")[2],
        format!("`{}`", c.idp.rediscovery_ms / 1000)
    );
    assert_eq!(
        row("cache_tokens")[2],
        format!("`{}`", c.accept.cache_tokens)
    );
    assert_eq!(
        row("issuers_allowed")[2],
        "`issuer`, with and without a trailing `/`"
    );
    let bare = c.idp.issuer.trim_end_matches('/');
    assert_eq!(
        c.accept.issuers_allowed,
        vec![bare.to_string(), format!("{bare}/")]
    );
    assert_eq!(row("client_credentials_param_type")[2], "`[\"header\"]`");
    assert_eq!(
        c.sources(&c.policy).0,
        Sources {
            header: true,
            body: false,
            query: false
        }
    );
    assert_eq!(row("bearer_token_param_type")[2], "`[\"header\"]`");
    assert_eq!(
        c.sources(&c.policy).1,
        Sources {
            header: true,
            body: false,
            query: false
        }
    );
    assert_eq!(
        row("upstream_access_token_header")[2],
        "`\"authorization:bearer\"`"
    );
    let header = c.upstream.token_header.unwrap();
    assert_eq!(
        (header.name.as_str(), header.scheme.as_deref()),
        ("authorization", Some("Bearer"))
    );
    assert_eq!(row("issuer")[2], "required");
    assert!(Config::parse(b"{}").is_err());
    assert_eq!(c.accept.realm, "dev-1.okta.com");
}

/// Every kind of denial, one of each (a `TokenProblem` stands for all: their codes are checked
/// apart).
fn every_denial() -> Vec<Denial> {
    let all = vec![
        Denial::Missing,
        Denial::InvalidToken(TokenProblem::Expired),
        Denial::InvalidClient,
        Denial::InsufficientScope(ClaimRule::Audience),
        Denial::IdpUnavailable { retry_after_s: 1 },
        Denial::UnknownPolicy,
        Denial::HeaderNotRemovable,
    ];
    // A new variant must be added above: this match stops compiling otherwise.
    for denial in &all {
        match denial {
            Denial::Missing
            | Denial::InvalidToken(_)
            | Denial::InvalidClient
            | Denial::InsufficientScope(_)
            | Denial::IdpUnavailable { .. }
            | Denial::UnknownPolicy
            | Denial::HeaderNotRemovable => {}
        }
    }
    all
}

#[test]
fn readme_outcomes_are_what_the_filter_answers() {
    let section = readme_section("Outcomes");
    // | what happened | status and headers | body `error` | log reason | counter |
    let rows = table_rows(&section);
    for denial in every_denial() {
        let counter = format!("`denied.{}`", denial.reason());
        let row = rows
            .iter()
            .find(|r| r.get(4).is_some_and(|c| c.starts_with(&counter)))
            .unwrap_or_else(|| panic!("Outcomes has no row with the counter {counter}"));
        assert_eq!(row.len(), 5, "{row:?}");
        let status = &row[1];
        assert!(
            status.starts_with(&format!("{}, ", denial.status())),
            "{counter}: the status is {}: {status}",
            denial.status()
        );
        for (name, value) in denial.headers("<realm>") {
            let shown = match name {
                "www-authenticate" => format!("`WWW-Authenticate: {value}`"),
                "retry-after" => "`Retry-After: <seconds>`".to_string(),
                other => panic!("a header the README does not know: {other}"),
            };
            assert!(status.contains(&shown), "{counter}: {shown} in {status}");
        }
        let body: Value = serde_json::from_str(&denial.body()).unwrap();
        assert_eq!(
            row[2],
            format!("`{}`", body["error"].as_str().unwrap()),
            "{counter}: body error"
        );
        assert!(
            row[3].starts_with(&format!("`{denial}`"))
                || row[3].starts_with(&format!("`{} (<code>)`", denial.reason()))
                || row[3].starts_with(&format!("`{} (<rule key>)`", denial.reason())),
            "{counter}: log reason {}",
            row[3]
        );
    }
    assert!(
        rows.iter()
            .any(|r| r.get(4).map(String::as_str) == Some("`allowed`")),
        "Outcomes has a row for allowed requests"
    );
    // The codes of invalid_token: exactly those the filter has.
    let mut codes: Vec<String> = rows
        .iter()
        .filter(|r| r.len() == 3 && r[0].starts_with('`'))
        .map(|r| r[0].trim_matches('`').to_string())
        .collect();
    let mut expected: Vec<String> = TokenProblem::ALL
        .iter()
        .map(|p| p.code().to_string())
        .collect();
    codes.sort();
    expected.sort();
    assert_eq!(codes, expected, "the invalid_token codes of Outcomes");
}

#[test]
fn readme_troubleshooting_covers_every_status_reason_and_counter() {
    let section = readme_section("Troubleshooting");
    for denial in every_denial() {
        let first = format!("{} `{}`", denial.status(), denial.reason());
        assert_eq!(
            rows_starting(&section, &first).len(),
            1,
            "Troubleshooting has one row `{first}`"
        );
    }
    // The counter table lists exactly the counters the filter defines.
    let mut listed: Vec<String> = table_rows(&section)
        .into_iter()
        .filter(|r| r.len() == 2)
        .filter_map(|r| {
            let c = r[0].strip_prefix('`')?.strip_suffix('`')?;
            Some(c.to_string())
        })
        .collect();
    let mut defined: Vec<String> = oidcgate::tally::COUNTERS
        .iter()
        .map(|c| c.strip_prefix("oidcgate.").unwrap().to_string())
        .collect();
    listed.sort();
    defined.sort();
    assert_eq!(listed, defined, "the counters of Troubleshooting");
    for needle in [
        "wasmcustom.oidcgate",
        "/stats",
        "denied ",
        "`idp.latency_ms`",
    ] {
        assert!(
            section.contains(needle),
            "Troubleshooting mentions {needle}"
        );
    }
}

#[test]
fn kong_readme_maps_kongs_plugin_settings() {
    let section = section("kong/README.md", "Coming from Kong's openid-connect plugin");
    for needle in [
        "503",
        "client_credentials_param_type",
        "idp_cluster",
        "Body credentials",
        "sessions",
        "authorization-code",
        "introspection",
    ] {
        assert!(
            section.contains(needle),
            "the Kong section mentions {needle}"
        );
    }
    // Every key the section says maps 1:1 is a key the filter accepts.
    let one_to_one = section
        .split("**Maps 1:1**")
        .nth(1)
        .and_then(|s| s.split("**Differs").next())
        .expect("a Maps 1:1 paragraph");
    let accepted = accepted_keys();
    let mut named = 0;
    for token in one_to_one.split('`').skip(1).step_by(2) {
        if token.chars().all(|c| c.is_ascii_lowercase() || c == '_') && token.contains('_') {
            named += 1;
            assert!(
                accepted.iter().any(|k| k == token) || token == "client_credentials",
                "`{token}` is said to map 1:1 but is not a configuration key"
            );
        }
    }
    assert!(named > 10, "the Maps 1:1 paragraph names {named} keys");
}

#[test]
fn readme_points_to_every_setup_and_every_doc() {
    let readme = read("README.md");
    for path in [
        "envoy/demo.yaml",
        "envoy/production.yaml",
        "deploy/",
        "docker-compose.yml",
        "kong/README.md",
        "docs/guarantees.md",
        "docs/design.md",
        "docs/performance.md",
    ] {
        assert!(readme.contains(path), "README points to {path}");
        assert!(repo_root().join(path).exists(), "{path} exists");
    }
    let performance = read("docs/performance.md");
    for report in ["bench.md", "soak.md", "memory.md"] {
        assert!(
            performance.contains(&format!("]({report})")),
            "docs/performance.md links {report}"
        );
        assert!(repo_root().join("docs").join(report).is_file());
    }
}

/// `` `name` (path.rs) `` citations of tests in a document, as (name, path).
fn cited_tests(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("` (") {
        let before = &text[..i];
        let Some(open) = before.rfind('`') else {
            continue;
        };
        let name = &before[open + 1..];
        let after = &text[i + 3..];
        let Some(close) = after.find(')') else {
            continue;
        };
        let path = &after[..close];
        let is_test_file =
            (path.starts_with("src/") || path.starts_with("tests/")) && path.ends_with(".rs");
        if is_test_file
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            out.push((name.to_string(), path.to_string()));
        }
    }
    out
}

#[test]
fn every_guarantee_names_tests_that_exist() {
    let doc = read("docs/guarantees.md");
    let cited = cited_tests(&doc);
    assert!(
        cited.len() > 40,
        "docs/guarantees.md cites {} tests",
        cited.len()
    );
    for (name, path) in &cited {
        let source = read(path);
        let at = source.find(&format!("fn {name}(")).unwrap_or_else(|| {
            panic!("docs/guarantees.md cites `{name}`, not a function of {path}")
        });
        let attributes = &source[source[..at].rfind("\n\n").unwrap_or(0)..at];
        assert!(
            attributes.contains("#[test]") || attributes.contains("#[tokio::test"),
            "docs/guarantees.md cites `{name}` ({path}), which is not a test"
        );
    }
    // Every guarantee is held by at least one test.
    for guarantee in doc.split("\n- **").skip(1) {
        let title = guarantee.split("**").next().unwrap_or(guarantee);
        assert!(
            !cited_tests(guarantee).is_empty(),
            "the guarantee `{title}` names no test"
        );
    }
}
