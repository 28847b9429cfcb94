//! The mock IdP over real HTTP: documents, the token endpoint's OAuth behaviour, tokens that
//! verify against the published keys, and every control a test relies on.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::idp::{Counts, Endpoint, Fault, MintSpec, MockIdp};
use testkit::keys;

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {:.200}", self.text))
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("IdP answers");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.expect("body"),
    }
}

async fn get(url: &str) -> Answer {
    send(testkit::http_client().get(url)).await
}

/// A client-credentials request with Basic authentication and optional scope.
async fn token_basic(idp: &MockIdp, id: &str, secret: &str, scope: Option<&str>) -> Answer {
    let mut form = vec![("grant_type", "client_credentials")];
    form.extend(scope.map(|s| ("scope", s)));
    send(
        testkit::http_client()
            .post(idp.token_endpoint())
            .basic_auth(id, Some(secret))
            .form(&form),
    )
    .await
}

async fn token_post(idp: &MockIdp, form: &[(&str, &str)]) -> Answer {
    send(testkit::http_client().post(idp.token_endpoint()).form(form)).await
}

/// Sends a bare GET and reads until the server closes: the raw outcome of a `Reset`.
async fn read_raw(port: u16, path: &str) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: idp\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(response)
}

fn assert_oauth_error(a: &Answer, status: u16, error: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.json()["error"], error, "{}", a.text);
    assert!(a.json()["error_description"].is_string());
}

#[tokio::test]
async fn discovery_document_is_okta_shaped() {
    let idp = MockIdp::start().await;
    let issuer = idp.issuer();
    assert_eq!(
        issuer,
        format!("http://127.0.0.1:{}/oauth2/default", idp.port())
    );
    let a = get(&format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    let doc = a.json();
    assert_eq!(doc["issuer"], issuer);
    assert_eq!(doc["token_endpoint"], format!("{issuer}/v1/token"));
    assert_eq!(doc["jwks_uri"], format!("{issuer}/v1/keys"));
    assert!(doc["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("client_credentials")));
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );

    idp.set_discovery_override(Some("http://127.0.0.1:1/keys"), None);
    let doc = get(&idp.discovery_url()).await.json();
    assert_eq!(doc["jwks_uri"], "http://127.0.0.1:1/keys");
    assert_eq!(doc["token_endpoint"], idp.token_endpoint());
}

#[tokio::test]
async fn jwks_publishes_the_default_keys_with_unpadded_components() {
    let idp = MockIdp::start().await;
    let jwks = get(&idp.jwks_uri()).await.json();
    let keys = jwks["keys"].as_array().unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, ["rsa-1", "ec-1", "ed-1"]);
    for k in keys {
        assert_eq!(k["use"], "sig");
    }
    let (rsa, ec, ed) = (&keys[0], &keys[1], &keys[2]);
    assert_eq!(
        (rsa["kty"].as_str(), rsa["alg"].as_str(), rsa["e"].as_str()),
        (Some("RSA"), Some("RS256"), Some("AQAB"))
    );
    assert_eq!(
        rsa["n"].as_str().unwrap().len(),
        342,
        "2048-bit modulus, base64url unpadded"
    );
    assert_eq!(
        (ec["kty"].as_str(), ec["crv"].as_str(), ec["alg"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert_eq!(
        (
            ec["x"].as_str().unwrap().len(),
            ec["y"].as_str().unwrap().len()
        ),
        (43, 43)
    );
    assert_eq!(
        (ed["kty"].as_str(), ed["crv"].as_str(), ed["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert_eq!(ed["x"].as_str().unwrap().len(), 43);
    assert!(!jwks.to_string().contains('='), "no base64 padding");
}

#[tokio::test]
async fn basic_auth_token_is_an_okta_shaped_jwt_that_verifies() {
    let idp = MockIdp::start().await;
    let a = token_basic(&idp, "demo-client", "demo-secret", None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.headers["cache-control"], "no-store");
    let body = a.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "read");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        keys::decode_header(token),
        json!({"alg": "RS256", "kid": "rsa-1"})
    );

    let claims = keys::verify(token, &get(&idp.jwks_uri()).await.json()).expect("verifies");
    assert_eq!(claims["ver"], 1);
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["aud"], "api://default");
    assert_eq!(claims["cid"], "demo-client");
    assert_eq!(claims["sub"], "demo-client");
    assert_eq!(claims["scp"], json!(["read"]));
    assert!(claims["jti"].as_str().unwrap().starts_with("AT."));
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(keys::now()) <= 2);
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 3600);

    let again = token_basic(&idp, "demo-client", "demo-secret", None)
        .await
        .json();
    let again = keys::decode_claims(again["access_token"].as_str().unwrap());
    assert_ne!(again["jti"], claims["jti"], "jti is unique");

    let seen = idp.last_token_request().unwrap();
    assert_eq!(seen.auth_method, "client_secret_basic");
    assert_eq!(
        (seen.client_id.as_str(), seen.client_secret.as_str()),
        ("demo-client", "demo-secret")
    );
    assert_eq!(seen.scope, None);
}

#[tokio::test]
async fn post_auth_with_scopes_and_ttl() {
    let idp = MockIdp::start().await;
    idp.set_token_ttl(Duration::from_secs(60));
    let a = token_post(
        &idp,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
            ("scope", "read write"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let body = a.json();
    assert_eq!(
        (body["scope"].as_str(), body["expires_in"].as_u64()),
        (Some("read write"), Some(60))
    );
    let claims = keys::decode_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["scp"], json!(["read", "write"]));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    let seen = idp.last_token_request().unwrap();
    assert_eq!(seen.auth_method, "client_secret_post");
    assert_eq!(seen.scope.as_deref(), Some("read write"));
}

#[tokio::test]
async fn basic_credentials_are_form_urlencoded_before_base64() {
    let idp = MockIdp::start().await;
    let (id, secret) = ("svc:one é", "p@ss:w/rd+%");
    idp.add_client(id, secret, &["read"], &["read"]);
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let a = token_basic(&idp, &enc(id), &enc(secret), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        keys::decode_claims(a.json()["access_token"].as_str().unwrap())["cid"],
        id
    );
}

#[tokio::test]
async fn oauth_errors_follow_rfc_6749() {
    let idp = MockIdp::start().await;
    idp.add_client("reader", "s3cret", &["read"], &[]);

    let a = token_basic(&idp, "demo-client", "wrong", None).await;
    assert_oauth_error(&a, 401, "invalid_client");
    assert!(a.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let a = token_basic(&idp, "nobody", "x", None).await;
    assert_oauth_error(&a, 401, "invalid_client");

    let a = token_post(
        &idp,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "demo-client"),
            ("client_secret", "nope"),
        ],
    )
    .await;
    assert_oauth_error(&a, 401, "invalid_client");
    assert!(
        a.headers.get("www-authenticate").is_none(),
        "no Basic challenge when Basic was not used"
    );
    let a = token_post(&idp, &[("grant_type", "client_credentials")]).await;
    assert_oauth_error(&a, 401, "invalid_client");

    assert_oauth_error(
        &token_basic(&idp, "reader", "s3cret", Some("write")).await,
        400,
        "invalid_scope",
    );
    assert_oauth_error(
        &token_basic(&idp, "demo-client", "demo-secret", Some("read admin")).await,
        400,
        "invalid_scope",
    );

    let client = testkit::http_client();
    let req = |form: &[(&str, &str)]| {
        client
            .post(idp.token_endpoint())
            .basic_auth("demo-client", Some("demo-secret"))
            .form(form)
    };
    assert_oauth_error(
        &send(req(&[("grant_type", "password")])).await,
        400,
        "unsupported_grant_type",
    );
    assert_oauth_error(
        &send(req(&[("scope", "read")])).await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &send(req(&[
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
        ]))
        .await,
        400,
        "invalid_request",
    );
    let json_body = client
        .post(idp.token_endpoint())
        .basic_auth("demo-client", Some("demo-secret"))
        .json(&json!({"grant_type": "client_credentials"}));
    assert_oauth_error(&send(json_body).await, 400, "invalid_request");
    let both = req(&[
        ("grant_type", "client_credentials"),
        ("client_secret", "demo-secret"),
    ]);
    assert_oauth_error(&send(both).await, 400, "invalid_request");
}

#[tokio::test]
async fn minted_tokens_of_every_algorithm_verify_against_the_jwks() {
    let idp = MockIdp::start().await;
    let published = get(&idp.jwks_uri()).await.json();
    // The published RSA key is for RS256 only; the PS/RS384/512 variants verify against the
    // same key published without `alg`.
    let mut rsa_any = keys::jwk("rsa-1");
    rsa_any.as_object_mut().unwrap().remove("alg");
    let rsa_any = json!({"keys": [rsa_any]});
    for (kid, alg) in [("rsa-1", "RS256"), ("ec-1", "ES256"), ("ed-1", "EdDSA")] {
        let token = idp.mint(MintSpec {
            kid,
            alg,
            ..MintSpec::default()
        });
        keys::verify(&token, &published).unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
    for alg in ["RS384", "RS512", "PS256", "PS384", "PS512"] {
        let token = idp.mint(MintSpec {
            alg,
            ..MintSpec::default()
        });
        assert!(
            keys::verify(&token, &published).is_err(),
            "{alg} must not match an RS256 JWK"
        );
        keys::verify(&token, &rsa_any).unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
    // Signed by a key the IdP does not publish.
    let unpublished = idp.mint(MintSpec {
        kid: "rsa-2",
        ..MintSpec::default()
    });
    assert!(keys::verify(&unpublished, &published).is_err());
}

#[tokio::test]
async fn mint_merges_and_removes_claims() {
    let idp = MockIdp::start().await;
    let token = idp.mint(MintSpec {
        claims: json!({"aud": ["a", "b"], "extra": {"x": 1}}),
        remove: vec!["sub", "jti"],
        ..MintSpec::default()
    });
    let claims = keys::decode_claims(&token);
    assert_eq!(claims["aud"], json!(["a", "b"]));
    assert_eq!(claims["extra"], json!({"x": 1}));
    assert_eq!(claims["cid"], "demo-client");
    assert_eq!(claims["scp"], json!(["read"]));
    assert_eq!(claims["iss"], idp.issuer());
    assert!(claims.get("sub").is_none() && claims.get("jti").is_none());

    let expired = idp.mint(MintSpec {
        claims: json!({"exp": keys::now() - 10}),
        ..MintSpec::default()
    });
    assert!(keys::verify(&expired, &idp.jwks())
        .unwrap_err()
        .contains("xpired"));
}

#[tokio::test]
async fn hand_built_tokens() {
    let idp = MockIdp::start().await;
    let claims = json!({"iss": idp.issuer(), "exp": keys::now() + 60});

    let none = keys::unsigned_token(&json!({"alg": "none"}), &claims);
    assert!(none.ends_with('.'));
    assert_eq!(keys::decode_header(&none), json!({"alg": "none"}));

    let hs = keys::hs256_token_with_rsa_public_key(&idp.jwks(), "rsa-1", &claims);
    assert_eq!(keys::decode_header(&hs)["alg"], "HS256");
    // The HMAC really is keyed with the public key's PEM, as an attacker would compute it.
    let pem = keys::public_key_pem("rsa-1");
    let (input, sig) = hs.rsplit_once('.').unwrap();
    assert_eq!(
        sig,
        keys::b64url(hmac_sha256::HMAC::mac(input.as_bytes(), pem.as_bytes()))
    );
    assert!(keys::verify(&hs, &idp.jwks()).is_err());

    // A header alg that disagrees with the key that signed.
    let mismatch = keys::mint_raw(
        &json!({"alg": "ES256", "kid": "rsa-1"}),
        &claims,
        keys::Sig::Key {
            kid: "rsa-1",
            alg: "RS256",
        },
    );
    assert!(keys::verify(&mismatch, &idp.jwks()).is_err());
    let honest = keys::mint_raw(
        &json!({"alg": "RS256", "kid": "rsa-1"}),
        &claims,
        keys::Sig::Key {
            kid: "rsa-1",
            alg: "RS256",
        },
    );
    keys::verify(&honest, &idp.jwks()).unwrap();
}

#[tokio::test]
async fn rotation_changes_the_signing_key() {
    let idp = MockIdp::start().await;
    idp.rotate_to("rsa-2");
    assert_eq!(idp.active_kid(), "rsa-2");
    let token = token_basic(&idp, "demo-client", "demo-secret", None)
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(keys::decode_header(&token)["kid"], "rsa-2");
    assert!(
        keys::verify(&token, &get(&idp.jwks_uri()).await.json()).is_err(),
        "rsa-2 not yet published"
    );
    idp.publish(&["rsa-2", "rsa-1"]);
    let jwks = get(&idp.jwks_uri()).await.json();
    assert_eq!(jwks, keys::jwks(&["rsa-2", "rsa-1"]));
    keys::verify(&token, &jwks).unwrap();

    idp.rotate_to("ec-1");
    let token = token_basic(&idp, "demo-client", "demo-secret", None)
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        keys::decode_header(&token),
        json!({"alg": "ES256", "kid": "ec-1"})
    );
    keys::verify(&token, &keys::jwks(&["ec-1"])).unwrap();
}

#[tokio::test]
async fn faults_do_what_they_say() {
    let idp = MockIdp::start().await;
    let discovery = idp.discovery_url();

    idp.set_fault(
        Endpoint::Discovery,
        Fault::Delay(Duration::from_millis(300)),
    );
    let started = Instant::now();
    assert_eq!(get(&discovery).await.json()["issuer"], idp.issuer());
    assert!(started.elapsed() >= Duration::from_millis(300));

    idp.set_fault(Endpoint::Discovery, Fault::Status(503));
    let a = get(&discovery).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["error"], "temporarily_unavailable");

    idp.set_fault(Endpoint::Discovery, Fault::Garbage);
    let a = get(&discovery).await;
    assert_eq!(
        (a.status, a.headers["content-type"].to_str().unwrap()),
        (200, "application/json")
    );
    assert!(serde_json::from_str::<Value>(&a.text).is_err());
    idp.set_fault(Endpoint::Discovery, Fault::None);

    idp.set_fault(Endpoint::Token, Fault::Truncated);
    let a = token_basic(&idp, "demo-client", "demo-secret", None).await;
    assert_eq!(a.status, 200);
    assert!(
        a.text.starts_with("{\"access_token\":\"ey"),
        "{:.60}",
        a.text
    );
    assert!(serde_json::from_str::<Value>(&a.text).is_err());

    idp.set_fault(Endpoint::Jwks, Fault::Huge);
    let a = get(&idp.jwks_uri()).await;
    assert_eq!(a.status, 200);
    assert!(a.text.len() >= 10_000_000, "{} bytes", a.text.len());
    assert!(a.json().is_array());

    idp.set_fault(Endpoint::Jwks, Fault::Reset);
    let err = testkit::http_client()
        .get(idp.jwks_uri())
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert_eq!(
        read_raw(idp.port(), "/oauth2/default/v1/keys")
            .await
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::ConnectionReset
    );
    // Only that exchange is cut: the server keeps serving.
    assert_eq!(get(&discovery).await.json()["issuer"], idp.issuer());

    idp.set_fault(Endpoint::All, Fault::Status(500));
    assert_eq!(get(&discovery).await.status, 500);
    assert_eq!(get(&idp.jwks_uri()).await.status, 500);
    assert_eq!(
        token_basic(&idp, "demo-client", "demo-secret", None)
            .await
            .status,
        500
    );

    idp.clear_faults();
    assert_eq!(get(&discovery).await.json()["issuer"], idp.issuer());
    assert!(get(&idp.jwks_uri()).await.json()["keys"].is_array());
    assert_eq!(
        token_basic(&idp, "demo-client", "demo-secret", None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn down_refuses_connections_and_up_restores_the_same_idp() {
    let idp = MockIdp::start().await;
    let port = idp.port();
    // Holds a keep-alive connection across `down`: it must be cut too.
    let client = testkit::http_client();
    assert_eq!(
        client
            .get(idp.discovery_url())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    idp.down().await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "connection refused"
    );
    assert!(client.get(idp.discovery_url()).send().await.is_err());
    idp.add_client("while-down", "x", &["read"], &["read"]);
    idp.down().await; // idempotent

    idp.up().await;
    idp.up().await; // idempotent
    assert_eq!(idp.port(), port);
    assert_eq!(
        client
            .get(idp.discovery_url())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(token_basic(&idp, "while-down", "x", None).await.status, 200);
    assert_eq!(
        idp.counts(),
        Counts {
            discovery: 2,
            jwks: 0,
            token: 1,
            introspection: 0
        }
    );
}

#[tokio::test]
async fn counts_include_failed_requests_and_reset() {
    let idp = MockIdp::start().await;
    get(&idp.discovery_url()).await;
    get(&idp.jwks_uri()).await;
    get(&idp.jwks_uri()).await;
    token_basic(&idp, "demo-client", "demo-secret", None).await;
    token_basic(&idp, "demo-client", "wrong", None).await;
    idp.set_fault(Endpoint::Token, Fault::Status(502));
    token_basic(&idp, "demo-client", "demo-secret", None).await;
    assert_eq!(
        idp.counts(),
        Counts {
            discovery: 1,
            jwks: 2,
            token: 3,
            introspection: 0
        }
    );
    idp.reset_counts();
    assert_eq!(idp.counts(), Counts::default());
}

/// An RFC 7662 request to the mock's introspection endpoint, as `id`/`secret` (Basic).
async fn introspect(idp: &MockIdp, id: &str, secret: &str, token: &str) -> Answer {
    send(
        testkit::http_client()
            .post(idp.introspection_endpoint())
            .basic_auth(id, Some(secret))
            .form(&[("token", token), ("token_type_hint", "access_token")]),
    )
    .await
}

#[tokio::test]
async fn introspection_answers_okta_shaped_for_opaque_tokens_and_jwts_and_needs_a_client() {
    let idp = MockIdp::start().await;
    let token = idp.issue_opaque(
        "svc",
        &["read", "write"],
        Duration::from_secs(60),
        json!({}),
    );
    let a = introspect(&idp, "demo-client", "demo-secret", &token).await;
    assert_eq!(a.status, 200);
    let body = a.json();
    assert_eq!(body["active"], true);
    assert_eq!(body["scope"], "read write");
    assert_eq!(body["client_id"], "svc");
    assert_eq!(body["iss"], idp.issuer());
    assert!(body["exp"].as_u64().unwrap() > keys::now());
    // A JWT this IdP issued is active too, until revoked.
    let jwt = idp.mint(MintSpec::default());
    assert_eq!(
        introspect(&idp, "demo-client", "demo-secret", &jwt)
            .await
            .json()["active"],
        true
    );
    idp.revoke(&jwt);
    idp.revoke(&token);
    for t in [jwt.as_str(), token.as_str(), "never-issued"] {
        assert_eq!(
            introspect(&idp, "demo-client", "demo-secret", t)
                .await
                .json(),
            json!({"active": false})
        );
    }
    // Only a registered client may ask.
    let refused = introspect(&idp, "demo-client", "wrong", "never-issued").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"], "invalid_client");
    // Discovery names the endpoint; faults and counts apply to it as to the others.
    assert_eq!(
        get(&idp.discovery_url()).await.json()["introspection_endpoint"],
        idp.introspection_endpoint()
    );
    idp.set_fault(Endpoint::Introspection, Fault::Status(503));
    assert_eq!(
        introspect(&idp, "demo-client", "demo-secret", &token)
            .await
            .status,
        503
    );
    assert_eq!(idp.counts().introspection, 7);
}

#[tokio::test]
async fn a_client_set_to_opaque_tokens_gets_them_from_the_token_endpoint() {
    let idp = MockIdp::start().await;
    idp.issue_opaque_to("demo-client");
    let a = token_basic(&idp, "demo-client", "demo-secret", None).await;
    assert_eq!(a.status, 200);
    let token = a.json()["access_token"].as_str().unwrap().to_string();
    assert!(!token.contains('.'), "{token}");
    let answer = introspect(&idp, "demo-client", "demo-secret", &token)
        .await
        .json();
    assert_eq!(
        (answer["active"].clone(), answer["sub"].clone()),
        (json!(true), json!("demo-client"))
    );
}
