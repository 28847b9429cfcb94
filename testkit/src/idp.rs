//! A mock IdP shaped like an Okta custom authorization server (`/oauth2/default`): OIDC
//! discovery, a JWKS, a `client_credentials` token endpoint issuing Okta-shaped JWT access
//! tokens (or opaque ones, for clients set so), and an RFC 7662 introspection endpoint —
//! plus controls for tests: key rotation, injected faults, going down and up again,
//! revocation, request counts.
//!
//! ```no_run
//! # async fn demo() {
//! use testkit::idp::{Endpoint, Fault, MockIdp};
//! let idp = MockIdp::start().await;
//! idp.set_fault(Endpoint::Token, Fault::Status(503));
//! assert_eq!(idp.counts().token, 0);
//! # }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::keys::{self, Sig};
use crate::server::{self, ConnHandle, ConnOpts, HttpServer};
use crate::tls::{IdpTls, TlsSeen};

/// The audience of every access token, like Okta's default authorization server.
pub const AUDIENCE: &str = "api://default";

/// An IdP endpoint, for [`MockIdp::set_fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Discovery,
    Jwks,
    Token,
    Introspection,
    /// All four.
    All,
}

/// What an endpoint does instead of (or before) answering normally.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Answer normally after this delay.
    Delay(Duration),
    /// This status with a small OAuth-style JSON error body.
    Status(u16),
    /// 200, `content-type: application/json`, a body that is not JSON (nor UTF-8).
    Garbage,
    /// 200, the first half of the normal JSON body.
    Truncated,
    /// 200, a valid JSON array of about 10 MiB.
    Huge,
    /// Close the TCP connection with a reset, without answering.
    Reset,
}

/// Requests received per endpoint, counting failed and faulted ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub discovery: u64,
    pub jwks: u64,
    pub token: u64,
    pub introspection: u64,
}

/// What the token endpoint saw in the last request whose client credentials it could read
/// (recorded before they are checked, so a rejected request is visible too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequestSeen {
    /// `"client_secret_basic"` or `"client_secret_post"`.
    pub auth_method: &'static str,
    pub client_id: String,
    pub client_secret: String,
    pub grant_type: Option<String>,
    /// The raw `scope` parameter, if sent.
    pub scope: Option<String>,
}

/// A token to mint with [`MockIdp::mint`]: Okta-shaped default claims for `demo-client`, with
/// `claims` merged over them and the names in `remove` dropped. The header is exactly
/// `{"alg": alg, "kid": kid}`; for any other header use [`keys::mint_raw`].
#[derive(Clone, Debug)]
pub struct MintSpec<'a> {
    /// Fixture key to sign with (`rsa-1`, `rsa-2`, `ec-1`, `ed-1`), also the header's `kid`.
    pub kid: &'a str,
    /// RS256/384/512 or PS256/384/512 with RSA keys, ES256 with `ec-1`, EdDSA with `ed-1`.
    pub alg: &'a str,
    /// A JSON object merged over the defaults (`null` or `{}` for none).
    pub claims: Value,
    /// Claims to leave out, after merging.
    pub remove: Vec<&'a str>,
}

impl Default for MintSpec<'_> {
    fn default() -> Self {
        MintSpec {
            kid: "rsa-1",
            alg: "RS256",
            claims: json!({}),
            remove: Vec::new(),
        }
    }
}

struct Client {
    secret: String,
    allowed_scopes: Vec<String>,
    default_scopes: Vec<String>,
    /// Issues opaque access tokens (as Okta's org authorization server does), not JWTs.
    opaque: bool,
}

/// An opaque token this IdP issued: what its introspection answers with.
struct OpaqueToken {
    claims: Value,
    exp: u64,
}

/// Mutable settings, behind one lock: every access is short and never held across an await.
struct Settings {
    active_kid: String,
    jwks: Value,
    faults: [Fault; 4],
    token_ttl: Duration,
    clients: HashMap<String, Client>,
    opaque: HashMap<String, OpaqueToken>,
    revoked: std::collections::HashSet<String>,
    last_token_request: Option<TokenRequestSeen>,
    /// How the last introspection request authenticated, as whom, and the `Host` it named.
    last_introspection_auth: Option<(&'static str, String, String)>,
    jwks_uri_override: Option<String>,
    token_endpoint_override: Option<String>,
}

struct Shared {
    issuer: String,
    counts: [AtomicU64; 4],
    settings: Mutex<Settings>,
}

/// A running mock IdP. Stops when dropped.
pub struct MockIdp {
    shared: Arc<Shared>,
    server: HttpServer,
    tls: Option<IdpTls>,
}

/// Where a [`MockIdp`] listens and what its issuer is:
/// `http[s]://<host>:<port>/oauth2/default`, `https` when it serves TLS.
#[derive(Clone, Default)]
pub struct IdpOpts {
    /// `127.0.0.1:port`; `0`: any free port.
    pub port: u16,
    /// The issuer's host (the IdP always listens on 127.0.0.1; Envoy reaches it through its
    /// cluster whatever the name). `None`: `127.0.0.1`.
    pub host: Option<String>,
    /// Serve HTTPS with this certificate (see [`crate::tls`]).
    pub tls: Option<IdpTls>,
}

impl IdpOpts {
    /// HTTPS on a free port, with the issuer `https://<host>:<port>/oauth2/default`.
    pub fn tls(host: &str, tls: IdpTls) -> IdpOpts {
        IdpOpts {
            port: 0,
            host: Some(host.to_string()),
            tls: Some(tls),
        }
    }
}

impl MockIdp {
    /// Starts on a free loopback port.
    pub async fn start() -> MockIdp {
        MockIdp::start_on(0).await
    }

    /// Starts on `127.0.0.1:port` (`0`: any free port).
    pub async fn start_on(port: u16) -> MockIdp {
        MockIdp::start_with(IdpOpts {
            port,
            ..IdpOpts::default()
        })
        .await
    }

    /// Starts as `opts` says: its port, issuer host, plain HTTP or TLS.
    pub async fn start_with(opts: IdpOpts) -> MockIdp {
        // Bound first: the issuer, and so every document and token, contains the port.
        let listener = server::listen(opts.port).await;
        let port = listener.local_addr().expect("bound").port();
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let host = opts.host.as_deref().unwrap_or("127.0.0.1");
        let shared = Arc::new(Shared {
            issuer: format!("{scheme}://{host}:{port}/oauth2/default"),
            counts: Default::default(),
            settings: Mutex::new(Settings {
                active_kid: "rsa-1".into(),
                jwks: keys::jwks(&["rsa-1", "ec-1", "ed-1"]),
                faults: Default::default(),
                token_ttl: Duration::from_secs(3600),
                clients: HashMap::new(),
                opaque: HashMap::new(),
                revoked: Default::default(),
                last_token_request: None,
                last_introspection_auth: None,
                jwks_uri_override: None,
                token_endpoint_override: None,
            }),
        });
        let acceptor = opts.tls.as_ref().map(IdpTls::acceptor);
        let idp = MockIdp {
            server: HttpServer::serve(
                listener,
                router(shared.clone()),
                ConnOpts {
                    tls: acceptor,
                    ..ConnOpts::default()
                },
            ),
            shared,
            tls: opts.tls,
        };
        idp.add_client("demo-client", "demo-secret", &["read", "write"], &["read"]);
        idp
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `http://127.0.0.1:<port>/oauth2/default`, or as [`IdpOpts`] made it.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// What its TLS side has seen (SNI, handshakes); `None` for plain HTTP.
    pub fn tls_seen(&self) -> Option<TlsSeen> {
        self.tls.as_ref().map(IdpTls::seen)
    }

    /// `<issuer>/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.shared.issuer)
    }

    /// `<issuer>/v1/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/v1/token", self.shared.issuer)
    }

    /// `<issuer>/v1/introspect`.
    pub fn introspection_endpoint(&self) -> String {
        format!("{}/v1/introspect", self.shared.issuer)
    }

    /// `<issuer>/v1/keys`.
    pub fn jwks_uri(&self) -> String {
        format!("{}/v1/keys", self.shared.issuer)
    }

    /// Registers (or replaces) a confidential client. A token request without `scope` is
    /// granted `default_scopes`; one asking for a scope outside `allowed_scopes` is refused.
    pub fn add_client(
        &self,
        id: &str,
        secret: &str,
        allowed_scopes: &[&str],
        default_scopes: &[&str],
    ) {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        self.shared.settings().clients.insert(
            id.to_string(),
            Client {
                secret: secret.to_string(),
                allowed_scopes: strings(allowed_scopes),
                default_scopes: strings(default_scopes),
                opaque: false,
            },
        );
    }

    /// Makes the token endpoint issue opaque tokens to client `id` (registered already), as
    /// Okta's org authorization server does; only introspection can tell what they are.
    pub fn issue_opaque_to(&self, id: &str) {
        if let Some(client) = self.shared.settings().clients.get_mut(id) {
            client.opaque = true;
        }
    }

    /// An opaque access token, as this IdP would issue to `client_id` with `scopes`, for
    /// `ttl`; `extra` (a JSON object) is merged over what introspection answers of it.
    pub fn issue_opaque(
        &self,
        client_id: &str,
        scopes: &[&str],
        ttl: Duration,
        extra: Value,
    ) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.shared
            .opaque_token(client_id, &scopes, ttl.as_secs(), extra)
    }

    /// Revokes `token` (opaque or JWT): introspection calls it inactive from now on.
    pub fn revoke(&self, token: &str) {
        self.shared.settings().revoked.insert(token.to_string());
    }

    /// Unregisters a client: its credentials become `invalid_client`.
    pub fn remove_client(&self, id: &str) {
        self.shared.settings().clients.remove(id);
    }

    /// Makes fixture key `kid` sign the tokens the token endpoint issues from now on, with its
    /// default algorithm. Does not change the published JWKS (see [`MockIdp::publish`]).
    pub fn rotate_to(&self, kid: &str) {
        keys::default_alg(kid); // panics on an unknown kid, here rather than in the server
        self.shared.settings().active_kid = kid.to_string();
    }

    /// The kid currently signing issued tokens.
    pub fn active_kid(&self) -> String {
        self.shared.settings().active_kid.clone()
    }

    /// Publishes exactly these fixture keys, in this order (default `rsa-1, ec-1, ed-1`).
    pub fn publish(&self, kids: &[&str]) {
        self.publish_jwks(keys::jwks(kids));
    }

    /// Publishes this JWKS document verbatim: for odd key sets (a JWK without `alg`, a
    /// different `alg`, duplicate kids, symmetric keys). Build entries with [`keys::jwk`].
    pub fn publish_jwks(&self, jwks: Value) {
        self.shared.settings().jwks = jwks;
    }

    /// The JWKS document currently published.
    pub fn jwks(&self) -> Value {
        self.shared.settings().jwks.clone()
    }

    /// Injects `fault` at `endpoint` until changed; `Fault::None` clears it.
    pub fn set_fault(&self, endpoint: Endpoint, fault: Fault) {
        let mut settings = self.shared.settings();
        match endpoint.index() {
            Some(i) => settings.faults[i] = fault,
            None => settings.faults = [fault.clone(), fault.clone(), fault.clone(), fault],
        }
    }

    pub fn clear_faults(&self) {
        self.set_fault(Endpoint::All, Fault::None);
    }

    /// Stops listening and cuts open connections: connections are refused until [`up`].
    ///
    /// [`up`]: MockIdp::up
    pub async fn down(&self) {
        self.server.down().await;
    }

    /// Listens again on the same port, with all settings, clients and counts kept.
    pub async fn up(&self) {
        self.server.up().await;
    }

    pub fn counts(&self) -> Counts {
        let [discovery, jwks, token, introspection] = self
            .shared
            .counts
            .each_ref()
            .map(|c| c.load(Ordering::SeqCst));
        Counts {
            discovery,
            jwks,
            token,
            introspection,
        }
    }

    pub fn reset_counts(&self) {
        for count in &self.shared.counts {
            count.store(0, Ordering::SeqCst);
        }
    }

    /// Lifetime of issued tokens (`exp - iat` and `expires_in`); default one hour.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.shared.settings().token_ttl = ttl;
    }

    /// Makes discovery advertise other `jwks_uri` / `token_endpoint` values (`None`: the real
    /// ones).
    pub fn set_discovery_override(&self, jwks_uri: Option<&str>, token_endpoint: Option<&str>) {
        let mut settings = self.shared.settings();
        settings.jwks_uri_override = jwks_uri.map(str::to_string);
        settings.token_endpoint_override = token_endpoint.map(str::to_string);
    }

    /// How the last introspection request authenticated (`client_secret_basic` or
    /// `client_secret_post`), its client id and the `Host` it was sent to, recorded before
    /// the secret is checked.
    pub fn last_introspection_auth(&self) -> Option<(&'static str, String, String)> {
        self.shared.settings().last_introspection_auth.clone()
    }

    pub fn last_token_request(&self) -> Option<TokenRequestSeen> {
        self.shared.settings().last_token_request.clone()
    }

    /// A token as this IdP would issue it, but with the key, algorithm and claims of `spec`.
    pub fn mint(&self, spec: MintSpec<'_>) -> String {
        let mut claims = okta_claims(&self.shared.issuer, "demo-client", &["read".into()], 3600);
        let defaults = claims.as_object_mut().expect("claims object");
        match spec.claims {
            Value::Null => {}
            Value::Object(extra) => defaults.extend(extra),
            other => panic!("MintSpec.claims must be a JSON object, not {other}"),
        }
        for name in spec.remove {
            defaults.remove(name);
        }
        keys::mint_raw(
            &json!({"alg": spec.alg, "kid": spec.kid}),
            &claims,
            Sig::Key {
                kid: spec.kid,
                alg: spec.alg,
            },
        )
    }
}

impl Endpoint {
    /// Slot in the per-endpoint arrays; `None` for `All`.
    fn index(self) -> Option<usize> {
        match self {
            Endpoint::Discovery => Some(0),
            Endpoint::Jwks => Some(1),
            Endpoint::Token => Some(2),
            Endpoint::Introspection => Some(3),
            Endpoint::All => None,
        }
    }
}

impl Shared {
    fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap()
    }

    /// Counts the request, then answers it per the endpoint's fault, `normal` being the
    /// fault-free answer.
    async fn serve(
        &self,
        endpoint: Endpoint,
        conn: &ConnHandle,
        normal: impl FnOnce() -> Response,
    ) -> Response {
        let i = endpoint.index().expect("a single endpoint");
        self.counts[i].fetch_add(1, Ordering::SeqCst);
        let fault = self.settings().faults[i].clone();
        match fault {
            Fault::None => normal(),
            Fault::Delay(delay) => {
                tokio::time::sleep(delay).await;
                normal()
            }
            Fault::Status(code) => status_response(code),
            Fault::Garbage => json_bytes(Bytes::from_static(
                b"<html><body>upstream error</body></html>\xff\xfe",
            )),
            Fault::Truncated => {
                let body = axum::body::to_bytes(normal().into_body(), usize::MAX)
                    .await
                    .expect("in-memory body");
                json_bytes(body.slice(..body.len() / 2))
            }
            Fault::Huge => json_bytes(huge_json()),
            Fault::Reset => conn.reset().await,
        }
    }

    fn discovery(&self) -> Value {
        let issuer = &self.issuer;
        let settings = self.settings();
        let jwks_uri = settings
            .jwks_uri_override
            .clone()
            .unwrap_or(format!("{issuer}/v1/keys"));
        let token_endpoint = settings
            .token_endpoint_override
            .clone()
            .unwrap_or(format!("{issuer}/v1/token"));
        let mut scopes: Vec<&str> = vec![
            "openid",
            "profile",
            "email",
            "address",
            "phone",
            "offline_access",
        ];
        for client in settings.clients.values() {
            scopes.extend(client.allowed_scopes.iter().map(String::as_str));
        }
        scopes.sort_unstable();
        scopes.dedup();
        // The fields of an Okta custom authorization server's document.
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/v1/authorize"),
            "token_endpoint": token_endpoint,
            "userinfo_endpoint": format!("{issuer}/v1/userinfo"),
            "registration_endpoint": format!("{}/oauth2/v1/clients", issuer.trim_end_matches("/oauth2/default")),
            "jwks_uri": jwks_uri,
            "response_types_supported": ["code", "id_token", "code id_token", "code token", "id_token token", "code id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post", "okta_post_message"],
            "grant_types_supported": ["authorization_code", "implicit", "refresh_token", "password", "client_credentials"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": scopes,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "claims_supported": ["ver", "jti", "iss", "aud", "iat", "exp", "cid", "uid", "scp", "sub"],
            "code_challenge_methods_supported": ["S256"],
            "introspection_endpoint": format!("{issuer}/v1/introspect"),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint": format!("{issuer}/v1/revoke"),
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "end_session_endpoint": format!("{issuer}/v1/logout"),
            "request_parameter_supported": true,
        })
    }

    /// RFC 6749 §4.4 client-credentials grant with §2.3.1 client authentication.
    fn token(&self, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
        let form = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form {
            return Err(OAuthError::request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let mut params = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if params
                .insert(name.to_string(), value.into_owned())
                .is_some()
            {
                // RFC 6749 §3.2: parameters must not be included more than once.
                return Err(OAuthError::request(&format!("repeated parameter {name}")));
            }
        }
        let grant_type = params.get("grant_type").filter(|g| !g.is_empty()).cloned();
        let Some(grant_type) = grant_type else {
            return Err(OAuthError::request("missing grant_type"));
        };

        let (auth_method, client_id, client_secret) = client_auth(headers, &params)?;
        let basic = auth_method == "client_secret_basic";

        let mut settings = self.settings();
        settings.last_token_request = Some(TokenRequestSeen {
            auth_method,
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            grant_type: Some(grant_type.clone()),
            scope: params.get("scope").cloned(),
        });
        let client = match settings.clients.get(&client_id) {
            Some(client) if client.secret == client_secret => client,
            _ => return Err(OAuthError::client(basic)),
        };
        if grant_type != "client_credentials" {
            return Err(OAuthError {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                description: "The authorization grant type is not supported by the authorization server. Configured grant types: [client_credentials].".into(),
                basic_challenge: false,
            });
        }
        let requested: Vec<String> = params
            .get("scope")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let scopes = if requested.is_empty() {
            client.default_scopes.clone()
        } else {
            if let Some(bad) = requested
                .iter()
                .find(|s| !client.allowed_scopes.contains(s))
            {
                return Err(OAuthError {
                    status: StatusCode::BAD_REQUEST,
                    error: "invalid_scope",
                    description: format!("The following scopes are not allowed: {bad}"),
                    basic_challenge: false,
                });
            }
            requested
        };

        let ttl = settings.token_ttl.as_secs();
        let kid = settings.active_kid.clone();
        let opaque = client.opaque;
        drop(settings); // signing is the slow part; do not hold the lock for it
        if opaque {
            let access_token = self.opaque_token(&client_id, &scopes, ttl, json!({}));
            let body = json!({
                "token_type": "Bearer",
                "expires_in": ttl,
                "access_token": access_token,
                "scope": scopes.join(" "),
            });
            return Ok((
                [(CACHE_CONTROL, "no-store"), (PRAGMA, "no-cache")],
                Json(body),
            )
                .into_response());
        }
        let alg = keys::default_alg(&kid);
        let access_token = keys::mint_raw(
            &json!({"alg": alg, "kid": kid}),
            &okta_claims(&self.issuer, &client_id, &scopes, ttl),
            Sig::Key { kid: &kid, alg },
        );
        let body = json!({
            "token_type": "Bearer",
            "expires_in": ttl,
            "access_token": access_token,
            "scope": scopes.join(" "),
        });
        // RFC 6749 §5.1: token responses must not be cached.
        Ok((
            [(CACHE_CONTROL, "no-store"), (PRAGMA, "no-cache")],
            Json(body),
        )
            .into_response())
    }
}

impl Shared {
    /// Issues an opaque token: random, with what introspection will answer of it.
    fn opaque_token(&self, client_id: &str, scopes: &[String], ttl: u64, extra: Value) -> String {
        let random: u128 = jwt_simple::reexports::rand::random();
        let token = keys::b64url(random.to_be_bytes());
        let iat = keys::now();
        let mut claims = json!({
            "scope": scopes.join(" "),
            "username": client_id,
            "exp": iat + ttl,
            "iat": iat,
            "sub": client_id,
            "aud": AUDIENCE,
            "iss": self.issuer,
            "jti": new_jti(),
            "token_type": "Bearer",
            "client_id": client_id,
        });
        if let (Some(c), Value::Object(more)) = (claims.as_object_mut(), extra) {
            c.extend(more);
        }
        self.settings().opaque.insert(
            token.clone(),
            OpaqueToken {
                claims,
                exp: iat + ttl,
            },
        );
        token
    }

    /// RFC 7662 §2: what is known of the token, to a client that authenticates (Basic or
    /// form, as at the token endpoint). A JWT this IdP could have issued is active until its
    /// `exp` unless revoked (its signature is not checked here).
    fn introspect(&self, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
        let params: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        let (method, id, secret) = client_auth(headers, &params)?;
        let basic = method == "client_secret_basic";
        let mut settings = self.settings();
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        settings.last_introspection_auth = Some((method, id.clone(), host));
        if settings.clients.get(&id).is_none_or(|c| c.secret != secret) {
            return Err(OAuthError::client(basic));
        }
        let Some(token) = params.get("token").filter(|t| !t.is_empty()) else {
            return Err(OAuthError::request("missing token"));
        };
        let now = keys::now();
        let inactive = Json(json!({"active": false})).into_response();
        if settings.revoked.contains(token) {
            return Ok(inactive);
        }
        let mut claims = match settings.opaque.get(token) {
            Some(o) if o.exp > now => o.claims.clone(),
            Some(_) => return Ok(inactive),
            None => match jwt_payload(token) {
                Some(c)
                    if c["iss"] == self.issuer.as_str()
                        && c["exp"].as_u64().is_some_and(|exp| exp > now) =>
                {
                    c
                }
                _ => return Ok(inactive),
            },
        };
        claims["active"] = json!(true);
        Ok(Json(claims).into_response())
    }
}

/// A JWT's payload, unverified.
fn jwt_payload(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The claims of an access token as this IdP issues them, an Okta custom authorization
/// server's: `ver`, `jti`, `iss`, `aud` ([`AUDIENCE`]), `iat`, `exp` (`iat + ttl`), `cid` and
/// `sub` (the client), `scp`.
pub fn access_token_claims<S: AsRef<str>>(
    issuer: &str,
    client_id: &str,
    scopes: &[S],
    iat: u64,
    ttl: u64,
    jti: &str,
) -> Value {
    let scopes: Vec<&str> = scopes.iter().map(AsRef::as_ref).collect();
    json!({
        "ver": 1,
        "jti": jti,
        "iss": issuer,
        "aud": AUDIENCE,
        "iat": iat,
        "exp": iat + ttl,
        "cid": client_id,
        "sub": client_id,
        "scp": scopes,
    })
}

/// [`access_token_claims`] issued now, with a new `jti`.
fn okta_claims(issuer: &str, client_id: &str, scopes: &[String], ttl: u64) -> Value {
    access_token_claims(issuer, client_id, scopes, keys::now(), ttl, &new_jti())
}

/// `AT.<random>`, the shape of Okta's access-token ids.
fn new_jti() -> String {
    let random: u128 = jwt_simple::reexports::rand::random();
    format!("AT.{}", keys::b64url(random.to_be_bytes()))
}

/// RFC 6749 §2.3.1 client authentication, Basic or form, as the token and introspection
/// endpoints read it: the method, the id and the secret (not yet checked).
fn client_auth(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(&'static str, String, String), OAuthError> {
    match headers.get(AUTHORIZATION) {
        Some(value) => {
            // RFC 6749 §2.3: a client must not use more than one authentication method.
            if params.contains_key("client_secret") {
                return Err(OAuthError::request(
                    "more than one client authentication method",
                ));
            }
            let Some((id, secret)) = parse_basic(value) else {
                return Err(OAuthError::client(true));
            };
            if params
                .get("client_id")
                .is_some_and(|form_id| *form_id != id)
            {
                return Err(OAuthError::request(
                    "client_id does not match the Basic credentials",
                ));
            }
            Ok(("client_secret_basic", id, secret))
        }
        None => match (params.get("client_id"), params.get("client_secret")) {
            (Some(id), Some(secret)) => Ok(("client_secret_post", id.clone(), secret.clone())),
            _ => Err(OAuthError::client(false)),
        },
    }
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`, RFC 6749 §2.3.1: the id
/// and secret are form-urlencoded before being joined, so both are decoded after splitting.
fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(credentials.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// application/x-www-form-urlencoded decoding of one component: `+` is a space, then
/// percent-decoding (a literal `+` arrives as `%2B`).
fn form_decode(component: &str) -> Option<String> {
    let spaced = component.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// An RFC 6749 §5.2 error answer.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// Whether the client tried `Authorization: Basic`; then a 401 must carry a Basic challenge.
    basic_challenge: bool,
}

impl OAuthError {
    fn request(description: &str) -> OAuthError {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            description: description.to_string(),
            basic_challenge: false,
        }
    }

    fn client(basic_challenge: bool) -> OAuthError {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: "The client secret supplied for a confidential client is invalid.".into(),
            basic_challenge,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.error, "error_description": self.description}));
        let mut response = (self.status, [(CACHE_CONTROL, "no-store")], body).into_response();
        if self.basic_challenge {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"oidcgate-mock-idp\""),
            );
        }
        response
    }
}

fn status_response(code: u16) -> Response {
    let status = StatusCode::from_u16(code)
        .unwrap_or_else(|_| panic!("Fault::Status({code}) is not an HTTP status"));
    let error = match code {
        400 => "invalid_request",
        401 => "invalid_client",
        503 => "temporarily_unavailable",
        _ => "server_error",
    };
    let description = format!("mock IdP fault: status {code}");
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn json_bytes(body: Bytes) -> Response {
    (StatusCode::OK, [(CONTENT_TYPE, "application/json")], body).into_response()
}

/// `["xxxx…", …]`, 10 MiB; built once, then shared without copying.
fn huge_json() -> Bytes {
    static HUGE: OnceLock<Bytes> = OnceLock::new();
    HUGE.get_or_init(|| {
        const SIZE: usize = 10 * 1024 * 1024;
        let item = format!("\"{}\",", "x".repeat(1022)); // 1 KiB per element
        let mut body = String::with_capacity(SIZE + item.len());
        body.push('[');
        while body.len() + item.len() < SIZE {
            body.push_str(&item);
        }
        body.push_str("\"end\"]");
        Bytes::from(body)
    })
    .clone()
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/oauth2/default/.well-known/openid-configuration",
            get(discovery),
        )
        .route(
            "/oauth2/default/.well-known/oauth-authorization-server",
            get(discovery),
        )
        .route("/oauth2/default/v1/keys", get(jwks))
        .route("/oauth2/default/v1/token", post(token))
        .route("/oauth2/default/v1/introspect", post(introspect))
        .with_state(shared)
}

async fn discovery(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<ConnHandle>,
) -> Response {
    shared
        .serve(Endpoint::Discovery, &conn, || {
            Json(shared.discovery()).into_response()
        })
        .await
}

async fn jwks(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<ConnHandle>,
) -> Response {
    shared
        .serve(Endpoint::Jwks, &conn, || {
            Json(shared.settings().jwks.clone()).into_response()
        })
        .await
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<ConnHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared
        .serve(Endpoint::Token, &conn, || {
            shared
                .token(&headers, &body)
                .unwrap_or_else(IntoResponse::into_response)
        })
        .await
}

async fn introspect(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<ConnHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared
        .serve(Endpoint::Introspection, &conn, || {
            shared
                .introspect(&headers, &body)
                .unwrap_or_else(IntoResponse::into_response)
        })
        .await
}
