use super::*;

fn parse(json: &str) -> Result<Config, ConfigError> {
    Config::parse(json.as_bytes())
}

fn key_of(json: &str) -> String {
    match parse(json) {
        Ok(_) => panic!("{json} should be rejected"),
        Err(e) => e.key,
    }
}

#[test]
fn defaults_follow_the_spec() {
    let c = parse(r#"{"issuer":"https://idp.example.com/oauth2/default"}"#).unwrap();
    assert_eq!(
        c.sources(&c.policy).0,
        Sources {
            header: true,
            body: false,
            query: false
        }
    );
    assert_eq!(
        c.sources(&c.policy).1,
        Sources {
            header: true,
            body: false,
            query: false
        }
    );
    assert_eq!(
        c.idp.token_endpoint_auth,
        TokenEndpointAuth::ClientSecretBasic
    );
    assert_eq!(
        c.accept.issuers_allowed,
        vec![
            "https://idp.example.com/oauth2/default",
            "https://idp.example.com/oauth2/default/"
        ]
    );
    assert_eq!(
        c.upstream.token_header,
        Some(TokenHeader {
            name: "authorization".into(),
            scheme: Some("Bearer".into())
        })
    );
    assert_eq!(c.accept.leeway_s, 0);
    assert!(c.accept.cache_tokens);
    assert_eq!(c.accept.neg_ttl_ms, 10_000);
    assert_eq!(c.idp.rediscovery_ms, 30_000);
    assert_eq!(c.idp.timeout_ms, 10_000);
    assert_eq!(c.accept.realm, "idp.example.com");
    assert_eq!(c.policy.clients_allowed, None);
    assert_eq!(
        c.idp.discovery_url.path,
        "/oauth2/default/.well-known/openid-configuration"
    );
    assert_eq!(
        c.idp.cluster_for(&c.idp.discovery_url),
        "idp.example.com:443"
    );
    assert!(!c.reads_body());
}

#[test]
fn kongs_client_id_and_secret_are_the_gateways_own_client() {
    // Kong's form (an array of one string) and a plain string alike.
    for json in [
        r#"{"issuer":"http://i","client_id":["gateway"],"client_secret":["s"]}"#,
        r#"{"issuer":"http://i","client_id":"gateway","client_secret":"s"}"#,
    ] {
        let c = parse(json).unwrap();
        let client = c.idp.gateway_client.unwrap();
        assert_eq!(
            (client.id.as_str(), client.secret.expose()),
            ("gateway", "s")
        );
    }
    // An id without a secret is what an old configuration's allow-list looks like: refused,
    // naming the key it meant.
    for json in [
        r#"{"issuer":"http://i","client_id":["svc-a"]}"#,
        r#"{"issuer":"http://i","client_id":"svc-a"}"#,
    ] {
        let e = parse(json).unwrap_err();
        assert_eq!(e.key, "client_id");
        assert!(e.to_string().contains("clients_allowed"), "{e}");
    }
    for (json, key) in [
        (
            r#"{"issuer":"http://i","client_id":["a","b"],"client_secret":"s"}"#,
            "client_id",
        ),
        (
            r#"{"issuer":"http://i","client_id":"a","client_secret":""}"#,
            "client_secret",
        ),
        (
            r#"{"issuer":"http://i","client_id":"a","client_secret":7}"#,
            "client_secret",
        ),
        (
            r#"{"issuer":"http://i","client_secret":"s"}"#,
            "client_secret",
        ),
    ] {
        assert_eq!(key_of(json), key, "{json}");
    }
    let typed = parse(r#"{"issuer":"http://i","client_id":"a","client_secret":7}"#).unwrap_err();
    assert!(typed.reason.contains("an array of one string"), "{typed}");
}

#[test]
fn introspection_needs_the_gateways_own_client() {
    assert_eq!(
        key_of(r#"{"issuer":"http://i","auth_methods":["introspection"]}"#),
        "auth_methods"
    );
    assert_eq!(
        key_of(r#"{"issuer":"http://i","policies":{"opaque":{"auth_methods":["introspection"]}}}"#),
        "policies.opaque.auth_methods"
    );
    assert_eq!(
        key_of(r#"{"issuer":"http://i","introspect_jwt_tokens":true}"#),
        "introspect_jwt_tokens"
    );
    assert_eq!(
        key_of(r#"{"issuer":"http://i","cache_ttl_max":0}"#),
        "cache_ttl_max"
    );
    assert_eq!(
        key_of(r#"{"issuer":"http://i","introspection_endpoint":"ftp://x"}"#),
        "introspection_endpoint"
    );
    let c = parse(
        r#"{"issuer":"http://i","client_id":"g","client_secret":"s","auth_methods":["introspection"],
            "introspection_endpoint":"https://idp/introspect","introspection_endpoint_auth_method":"client_secret_post",
            "cache_ttl_max":60,"cache_introspection":false,"introspect_jwt_tokens":true}"#,
    )
    .unwrap();
    assert!(c.policy.introspection && !c.policy.bearer);
    // Introspection reads bearer tokens from where bearer tokens are read.
    assert!(c.sources(&c.policy).1.header);
    assert_eq!(
        c.idp.introspection_auth,
        TokenEndpointAuth::ClientSecretPost
    );
    assert_eq!(c.accept.ttl_max_ms, Some(60_000));
    assert!(!c.accept.cache_introspection && c.accept.introspect_jwt);
}

#[test]
fn every_key_is_accepted() {
    let c = parse(
        r#"{"issuer":"http://127.0.0.1:9000/oauth2/default",
                "token_endpoint":"http://127.0.0.1:9000/t","jwks_uri":"http://127.0.0.1:9000/k",
                "idp_cluster":"idp","auth_methods":["bearer"],
                "client_credentials_param_type":["header","body","query"],
                "bearer_token_param_type":["header","query"],
                "token_endpoint_auth_method":"client_secret_post","clients_allowed":["a","b"],
                "scopes":["read"],"scopes_required":["read"],"audience_required":["api://default"],
                "scopes_claim":["perms"],"audience_claim":["aud"],"groups_claim":["realm","groups"],
                "roles_claim":["roles"],"groups_required":["g"],"roles_required":["r"],
                "claims_forbidden":["act"],
                "issuers_allowed":["x","y"],"upstream_headers_claims":["iss","realm.roles"],
                "upstream_headers_names":["Issuer_Header","X-Roles"],
                "upstream_access_token_header":"x-access-token","leeway":5,"cache_tokens":false,
                "cache_ttl_neg":3,"rediscovery_lifetime":7,"timeout":500,"realm":"api"}"#,
    )
    .unwrap();
    assert_eq!(c.sources(&c.policy).0, Sources::default());
    assert_eq!(
        c.sources(&c.policy).1,
        Sources {
            header: true,
            body: false,
            query: true
        }
    );
    assert_eq!(
        c.idp.token_endpoint_auth,
        TokenEndpointAuth::ClientSecretPost
    );
    assert_eq!(
        c.upstream.token_header,
        Some(TokenHeader {
            name: "x-access-token".into(),
            scheme: None
        })
    );
    assert_eq!(
        c.policy.claim_headers[1],
        ClaimHeader {
            claim: "realm.roles".into(),
            header: "X-Roles".into()
        }
    );
    assert_eq!(c.accept.issuers_allowed, vec!["x", "y"]);
    assert_eq!(
        (
            c.accept.leeway_s,
            c.accept.neg_ttl_ms,
            c.idp.rediscovery_ms,
            c.idp.timeout_ms
        ),
        (5, 3000, 7000, 500)
    );
    assert_eq!(
        c.idp.cluster_for(c.idp.token_endpoint.as_ref().unwrap()),
        "idp"
    );
    assert_eq!(c.accept.realm, "api");
}

#[test]
fn null_token_header_means_not_forwarded() {
    let c = parse(r#"{"issuer":"http://i","upstream_access_token_header":null}"#).unwrap();
    assert_eq!(c.upstream.token_header, None);
}

#[test]
fn errors_name_the_key() {
    assert_eq!(key_of(r#"{}"#), "(root)");
    assert_eq!(key_of(r#"[]"#), "(root)");
    assert_eq!(key_of(r#"{"issuer":"http://i","bogus":1}"#), "bogus");
    assert_eq!(key_of(r#"{"issuer":"ftp://i"}"#), "issuer");
    assert_eq!(key_of(r#"{"issuer":"http://"}"#), "issuer");
    assert_eq!(key_of(r#"{"issuer":"http://i","leeway":-1}"#), "leeway");
    assert_eq!(key_of(r#"{"issuer":"http://i","leeway":"5"}"#), "leeway");
    assert_eq!(key_of(r#"{"issuer":"http://i","timeout":0}"#), "timeout");
    assert_eq!(
        key_of(r#"{"issuer":"http://i","auth_methods":["password"]}"#),
        "auth_methods"
    );
    assert_eq!(
        key_of(r#"{"issuer":"http://i","auth_methods":[]}"#),
        "auth_methods"
    );
    assert_eq!(
        key_of(r#"{"issuer":"http://i","bearer_token_param_type":["body"]}"#),
        "bearer_token_param_type"
    );
    assert_eq!(
        key_of(r#"{"issuer":"http://i","token_endpoint":"nope"}"#),
        "token_endpoint"
    );
    assert_eq!(
        key_of(r#"{"issuer":"http://i","upstream_headers_claims":["iss"]}"#),
        "upstream_headers_names"
    );
    assert_eq!(
        key_of(
            r#"{"issuer":"http://i","upstream_headers_claims":["iss"],"upstream_headers_names":["bad header"]}"#
        ),
        "upstream_headers_names"
    );
    assert_eq!(
        key_of(
            r#"{"issuer":"http://i","upstream_headers_claims":["iss"],"upstream_headers_names":["Host"]}"#
        ),
        "upstream_headers_names"
    );
    assert_eq!(
        key_of(r#"{"issuer":"http://i","upstream_access_token_header":"a b"}"#),
        "upstream_access_token_header"
    );
    assert_eq!(
        key_of(r#"{"issuer":"http://i","clients_allowed":[]}"#),
        "clients_allowed"
    );
    for (json, key) in [
        (r#"{"issuer":"http://i","groups_claim":[]}"#, "groups_claim"),
        (
            r#"{"issuer":"http://i","roles_claim":["a",""]}"#,
            "roles_claim",
        ),
        (
            r#"{"issuer":"http://i","scopes_required":[" "]}"#,
            "scopes_required",
        ),
        (
            r#"{"issuer":"http://i","groups_required":[""]}"#,
            "groups_required",
        ),
        (
            r#"{"issuer":"http://i","claims_forbidden":[""]}"#,
            "claims_forbidden",
        ),
        (
            r#"{"issuer":"http://i","client_secret":"s"}"#,
            "client_secret",
        ),
    ] {
        assert_eq!(key_of(json), key, "{json}");
    }
    assert_eq!(
        key_of(r#"{"issuer":"http://i","scopes":["a b"]}"#),
        "scopes"
    );
    assert_eq!(key_of(r#"{"issuer":"http://i","realm":"a\"b"}"#), "realm");
    assert_eq!(
        key_of(r#"{"issuer":"http://i","issuers_allowed":[]}"#),
        "issuers_allowed"
    );
}

#[test]
fn error_message_is_one_short_line() {
    let e = parse(r#"{"issuer":"http://i","bogus":1}"#).unwrap_err();
    let line = e.to_string();
    assert_eq!(
        line,
        "invalid configuration: `bogus`: unknown field `bogus`"
    );
}

#[test]
fn an_error_always_names_a_key() {
    // Found by fuzz/fuzz_targets/config.rs: these used to report the key as ``.
    for input in [
        r#"{"":1}"#,
        r#"{"issuer":"http://i","":1}"#,
        r#"{"[":1}"#,
        r#"{".x":1}"#,
        r#"{"issuer":"http://i","[":"#,
    ] {
        let e = parse(input).unwrap_err();
        assert!(!e.key.is_empty(), "{input}: {e}");
    }
}

#[test]
fn garbage_is_rejected_not_panicking() {
    for input in ["", "nul", "{", "\u{0}", "{\"issuer\":1}", "1e999"] {
        assert!(parse(input).is_err(), "{input:?}");
    }
}

#[test]
fn the_idp_identity_changes_with_what_fetched_records_depend_on_only() {
    let id = |json: &str| parse(json).unwrap().idp.identity();
    let base = id(r#"{"issuer":"http://a"}"#);
    // Policy, upstream and pacing keep the identity: the records stay valid.
    for same in [
        r#"{"issuer":"http://a","scopes_required":["x"]}"#,
        r#"{"issuer":"http://a","upstream_headers_claims":["sub"],"upstream_headers_names":["x-sub"]}"#,
        r#"{"issuer":"http://a","timeout":1234,"rediscovery_lifetime":5}"#,
    ] {
        assert_eq!(id(same), base, "{same}");
    }
    for other in [
        r#"{"issuer":"http://b"}"#,
        r#"{"issuer":"http://a","scopes":["x"]}"#,
        r#"{"issuer":"http://a","jwks_uri":"http://a/keys"}"#,
        r#"{"issuer":"http://a","token_endpoint":"http://a/t"}"#,
        r#"{"issuer":"http://a","idp_cluster":"idp"}"#,
        r#"{"issuer":"http://a","token_endpoint_auth_method":"client_secret_post"}"#,
    ] {
        assert_ne!(id(other), base, "{other}");
    }
}

#[test]
fn keys_lists_exactly_the_accepted_keys() {
    // serde names every field it knows when it refuses an unknown one.
    let e = serde_json::from_str::<RawConfig>(r#"{"zzz":1}"#).unwrap_err();
    let message = e.to_string();
    let known: Vec<&str> = message
        .split_once("expected one of ")
        .map(|(_, list)| list.split(" at line").next().unwrap_or(list))
        .unwrap_or_default()
        .split(", ")
        .map(|k| k.trim_matches('`'))
        .collect();
    assert_eq!(known, KEYS, "{message}");
}

#[test]
fn a_policy_keeps_every_key_it_leaves_out_and_errors_name_the_policy() {
    let c = parse(
        r#"{"issuer":"https://idp","scopes_required":["read"],"clients_allowed":["svc"],
            "upstream_headers_claims":["sub"],"upstream_headers_names":["X-Subject"],
            "policies":{"admin":{"scopes_required":["admin"]},"open":{"public":true},
                        "bearer-only":{"auth_methods":["bearer"],"upstream_headers_claims":[],
                                       "upstream_headers_names":[]}}}"#,
    )
    .unwrap();
    let admin = c.policy(c.policy_named("admin").unwrap());
    assert_eq!(
        admin.requirements[0].any_of,
        vec![vec!["admin".to_string()]]
    );
    assert_eq!(admin.clients_allowed, Some(vec!["svc".to_string()]));
    assert_eq!(admin.claim_headers, c.policy.claim_headers);
    assert!(admin.client_credentials && !admin.public);
    let open = c.policy(c.policy_named("open").unwrap());
    assert!(open.public);
    let bearer = c.policy(c.policy_named("bearer-only").unwrap());
    assert!(bearer.bearer && !bearer.client_credentials && bearer.claim_headers.is_empty());
    assert_eq!(c.policy_name(0), "default");
    assert_eq!(c.policy_named("nosuch"), None);
    for (json, key) in [
        (
            r#"{"issuer":"http://i","policies":{"p":{"scopes_required":[""]}}}"#,
            "policies.p.scopes_required",
        ),
        (
            r#"{"issuer":"http://i","policies":{"p":{"issuer":"http://x"}}}"#,
            "policies.p.issuer",
        ),
        (
            r#"{"issuer":"http://i","policies":{"p":{"upstream_headers_claims":["a"]}}}"#,
            "policies.p.upstream_headers_names",
        ),
        (r#"{"issuer":"http://i","policies":{"":{}}}"#, "policies"),
    ] {
        assert_eq!(key_of(json), key, "{json}");
    }
}

#[test]
fn configuration_errors_read_as_an_operator_wrote_the_json() {
    let line = |json: &str| parse(json).unwrap_err().to_string();
    // A syntax error keeps where it is.
    assert_eq!(
        line("{\"issuer\":\"http://i\",\n \"timeout\": 5,\n}"),
        "invalid configuration: `(json)`: not valid JSON at line 3, column 1: trailing comma"
    );
    // Types as JSON says them.
    assert_eq!(
        line(r#"{"issuer":"http://i","leeway":"soon"}"#),
        "invalid configuration: `leeway`: invalid type: string \"soon\", expected a whole number"
    );
    assert_eq!(
        line(r#"{"issuer":"http://i","scopes_required":"read"}"#),
        "invalid configuration: `scopes_required`: invalid type: string \"read\", expected an array"
    );
    // A typo names what was probably meant, also inside a policy.
    assert_eq!(
        line(r#"{"issuer":"http://i","audiences_required":["x"]}"#),
        "invalid configuration: `audiences_required`: unknown field `audiences_required`; did you mean `audience_required`?"
    );
    assert_eq!(
        line(r#"{"issuer":"http://i","policies":{"p":{"scope_required":["x"]}}}"#),
        "invalid configuration: `policies.p.scope_required`: unknown field `scope_required`; did you mean `scopes_required`?"
    );
    assert!(!line(r#"{"issuer":"http://i","zzzzzz":1}"#).contains("did you mean"));
    // A repeated key is named, not reported on the root.
    assert_eq!(
        parse(r#"{"issuer":"http://i","timeout":5,"timeout":6}"#)
            .unwrap_err()
            .key,
        "timeout"
    );
    // An unknown value keeps the list of the known ones: it is short, and the fix.
    let unknown = line(r#"{"issuer":"http://i","auth_methods":["password"]}"#);
    assert!(
        unknown.ends_with(
            "unknown variant `password`, expected one of `client_credentials`, `bearer`, \
             `introspection`"
        ),
        "{unknown}"
    );
}
