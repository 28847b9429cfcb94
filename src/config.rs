//! The plugin configuration: parsed and validated once, at `on_configure`.
//!
//! Everything the request path needs is precomputed here (lower-cased header names, split
//! URLs, the realm) so that a request never re-derives it.

use std::fmt;

use serde::Deserialize;

use crate::url::HttpUrl;

/// A configuration that cannot be used, naming the key so the operator can fix it.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: `{}`: {}", self.key, self.reason)
    }
}

fn err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AuthMethod {
    ClientCredentials,
    Bearer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ParamType {
    Header,
    Body,
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

fn default_auth_methods() -> Vec<AuthMethod> {
    vec![AuthMethod::ClientCredentials, AuthMethod::Bearer]
}
fn default_header_only() -> Vec<ParamType> {
    vec![ParamType::Header]
}
fn default_token_header() -> Option<String> {
    Some("authorization:bearer".to_string())
}
fn default_token_auth() -> TokenEndpointAuth {
    TokenEndpointAuth::ClientSecretBasic
}
fn default_true() -> bool {
    true
}
fn default_neg_ttl() -> u64 {
    10
}
fn default_rediscovery() -> u64 {
    30
}
fn default_timeout() -> u64 {
    10_000
}

/// The configuration as the operator writes it (SPEC §2). Names follow Kong's plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuer: String,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    idp_cluster: Option<String>,
    #[serde(default = "default_auth_methods")]
    auth_methods: Vec<AuthMethod>,
    #[serde(default = "default_header_only")]
    client_credentials_param_type: Vec<ParamType>,
    #[serde(default = "default_header_only")]
    bearer_token_param_type: Vec<ParamType>,
    #[serde(default = "default_token_auth")]
    token_endpoint_auth_method: TokenEndpointAuth,
    client_id: Option<Vec<String>>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    scopes_required: Vec<String>,
    #[serde(default)]
    audience_required: Vec<String>,
    issuers_allowed: Option<Vec<String>>,
    #[serde(default)]
    upstream_headers_claims: Vec<String>,
    #[serde(default)]
    upstream_headers_names: Vec<String>,
    // `null` means "do not forward"; absent means the default.
    #[serde(default = "default_token_header")]
    upstream_access_token_header: Option<String>,
    #[serde(default)]
    leeway: u64,
    #[serde(default = "default_true")]
    cache_tokens: bool,
    #[serde(default = "default_neg_ttl")]
    cache_ttl_neg: u64,
    #[serde(default = "default_rediscovery")]
    rediscovery_lifetime: u64,
    #[serde(default = "default_timeout")]
    timeout: u64,
    realm: Option<String>,
}

/// Where a credential may be read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sources {
    pub header: bool,
    pub body: bool,
    pub query: bool,
}

impl Sources {
    fn from(list: &[ParamType]) -> Self {
        Sources {
            header: list.contains(&ParamType::Header),
            body: list.contains(&ParamType::Body),
            query: list.contains(&ParamType::Query),
        }
    }
}

/// Where the verified token goes upstream: `header[:scheme]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    /// Lower-case header name.
    pub name: String,
    /// `Bearer` in `Authorization: Bearer <t>`; none for a bare value.
    pub scheme: Option<String>,
}

/// A claim to forward: where to find it, and the header it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    pub claim: String,
    /// As configured: hosts that preserve case send it this way.
    pub header: String,
}

/// A validated configuration. Fields are public for the core modules; it is built only by
/// [`Config::parse`].
#[derive(Debug, Clone)]
pub struct Config {
    pub issuer: String,
    pub token_endpoint: Option<HttpUrl>,
    pub jwks_uri: Option<HttpUrl>,
    pub discovery_url: HttpUrl,
    pub idp_cluster: Option<String>,
    /// `None` means the method is not accepted.
    pub client_credentials: Option<Sources>,
    pub bearer: Option<Sources>,
    pub token_endpoint_auth: TokenEndpointAuth,
    pub client_ids: Option<Vec<String>>,
    pub scopes: Vec<String>,
    pub scopes_required: Vec<String>,
    pub audience_required: Vec<String>,
    pub issuers_allowed: Vec<String>,
    pub claim_headers: Vec<ClaimHeader>,
    pub token_header: Option<TokenHeader>,
    pub leeway_s: u64,
    pub cache_tokens: bool,
    pub neg_ttl_ms: u64,
    pub rediscovery_ms: u64,
    pub timeout_ms: u64,
    pub realm: String,
    /// Distinguishes this configuration's shared-data keys from another filter instance's
    /// in the same VM group (two listeners may protect different issuers).
    pub fingerprint: String,
}

/// Upper bounds that keep a typo from configuring something absurd.
const MAX_TIMEOUT_MS: u64 = 60_000;
const MAX_SECONDS: u64 = 86_400;

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." {
                // Unknown fields and a non-object document are reported on the root.
                unknown_field(&e.inner().to_string()).unwrap_or_else(|| "(root)".to_string())
            } else {
                path.split(['.', '['])
                    .next()
                    .unwrap_or("(root)")
                    .to_string()
            };
            // A member named "" (or starting with `[`/`.`) would leave the log line nameless.
            let key = if key.is_empty() {
                "(root)".to_string()
            } else {
                key
            };
            err(&key, short_serde_reason(&e.inner().to_string()))
        })?;
        Self::validate(raw, bytes)
    }

    fn validate(raw: RawConfig, bytes: &[u8]) -> Result<Config, ConfigError> {
        let issuer_url = HttpUrl::parse(&raw.issuer).map_err(|r| err("issuer", r))?;
        let issuer = raw.issuer.clone();
        let discovery_url = HttpUrl::parse(&format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
        .map_err(|r| err("issuer", r))?;
        let token_endpoint = parse_opt_url("token_endpoint", raw.token_endpoint.as_deref())?;
        let jwks_uri = parse_opt_url("jwks_uri", raw.jwks_uri.as_deref())?;

        if let Some(cluster) = &raw.idp_cluster {
            if cluster.trim().is_empty() {
                return Err(err("idp_cluster", "must not be empty"));
            }
        }
        if raw.auth_methods.is_empty() {
            return Err(err("auth_methods", "must name at least one method"));
        }
        let cc_sources = Sources::from(&raw.client_credentials_param_type);
        if raw.client_credentials_param_type.is_empty() {
            return Err(err("client_credentials_param_type", "must not be empty"));
        }
        let bearer_sources = Sources::from(&raw.bearer_token_param_type);
        if raw.bearer_token_param_type.is_empty() {
            return Err(err("bearer_token_param_type", "must not be empty"));
        }
        if bearer_sources.body {
            return Err(err(
                "bearer_token_param_type",
                "only `header` and `query` are supported",
            ));
        }
        for (key, list) in [
            ("client_id", raw.client_id.as_deref().unwrap_or_default()),
            ("scopes", &raw.scopes),
            ("scopes_required", &raw.scopes_required),
            ("audience_required", &raw.audience_required),
            ("upstream_headers_claims", &raw.upstream_headers_claims),
        ] {
            if list.iter().any(|s| s.is_empty()) {
                return Err(err(key, "entries must not be empty"));
            }
        }
        if raw.client_id.as_ref().is_some_and(|l| l.is_empty()) {
            return Err(err(
                "client_id",
                "an empty allow-list would reject every client",
            ));
        }
        for scope in &raw.scopes {
            if scope.chars().any(|c| c == ' ' || c.is_control()) {
                return Err(err("scopes", "a scope cannot contain spaces"));
            }
        }
        let issuers_allowed = match raw.issuers_allowed {
            Some(list) if list.is_empty() => {
                return Err(err("issuers_allowed", "must not be empty"));
            }
            Some(list) => list,
            None => vec![issuer.clone()],
        };
        if raw.upstream_headers_claims.len() != raw.upstream_headers_names.len() {
            return Err(err(
                "upstream_headers_names",
                format!(
                    "has {} entries but upstream_headers_claims has {}",
                    raw.upstream_headers_names.len(),
                    raw.upstream_headers_claims.len()
                ),
            ));
        }
        let mut claim_headers = Vec::new();
        for (claim, header) in raw
            .upstream_headers_claims
            .iter()
            .zip(&raw.upstream_headers_names)
        {
            if !is_header_name(header) {
                return Err(err(
                    "upstream_headers_names",
                    format!("`{header}` is not a valid header name"),
                ));
            }
            if is_reserved_header(header) {
                return Err(err(
                    "upstream_headers_names",
                    format!("`{header}` cannot be set from a claim"),
                ));
            }
            claim_headers.push(ClaimHeader {
                claim: claim.clone(),
                header: header.clone(),
            });
        }
        let token_header = match raw.upstream_access_token_header.as_deref() {
            None => None,
            Some(spec) => Some(parse_token_header(spec)?),
        };
        if raw.timeout == 0 || raw.timeout > MAX_TIMEOUT_MS {
            return Err(err(
                "timeout",
                format!("must be between 1 and {MAX_TIMEOUT_MS} ms"),
            ));
        }
        for (key, value) in [
            ("leeway", raw.leeway),
            ("cache_ttl_neg", raw.cache_ttl_neg),
            ("rediscovery_lifetime", raw.rediscovery_lifetime),
        ] {
            if value > MAX_SECONDS {
                return Err(err(key, format!("must be at most {MAX_SECONDS} seconds")));
            }
        }
        let realm = match raw.realm {
            Some(r)
                if r.is_empty() || r.chars().any(|c| c == '"' || c == '\\' || c.is_control()) =>
            {
                return Err(err(
                    "realm",
                    "must be non-empty, without quotes, backslashes or control characters",
                ));
            }
            Some(r) => r,
            None => issuer_url.authority.clone(),
        };

        let has = |m| raw.auth_methods.contains(&m);
        Ok(Config {
            fingerprint: format!("{:016x}", fnv1a(bytes)),
            issuer,
            token_endpoint,
            jwks_uri,
            discovery_url,
            idp_cluster: raw.idp_cluster,
            client_credentials: has(AuthMethod::ClientCredentials).then_some(cc_sources),
            bearer: has(AuthMethod::Bearer).then_some(bearer_sources),
            token_endpoint_auth: raw.token_endpoint_auth_method,
            client_ids: raw.client_id,
            scopes: raw.scopes,
            scopes_required: raw.scopes_required,
            audience_required: raw.audience_required,
            issuers_allowed,
            claim_headers,
            token_header,
            leeway_s: raw.leeway,
            cache_tokens: raw.cache_tokens,
            neg_ttl_ms: raw.cache_ttl_neg.saturating_mul(1000),
            rediscovery_ms: raw.rediscovery_lifetime.saturating_mul(1000),
            timeout_ms: raw.timeout,
            realm,
        })
    }

    /// The upstream (Envoy cluster, Kong `host:port`) a callout to `url` goes to.
    pub fn cluster_for<'a>(&'a self, url: &'a HttpUrl) -> &'a str {
        self.idp_cluster.as_deref().unwrap_or(&url.host_port)
    }

    /// Whether the filter reads the request body at all; bodies are buffered only then.
    pub fn reads_body(&self) -> bool {
        self.client_credentials.is_some_and(|s| s.body)
    }

    /// Whether a credential may be in the query string, so `:path` must be read.
    pub fn reads_query(&self) -> bool {
        self.client_credentials.is_some_and(|s| s.query) || self.bearer.is_some_and(|s| s.query)
    }
}

fn parse_opt_url(key: &str, value: Option<&str>) -> Result<Option<HttpUrl>, ConfigError> {
    value
        .map(|v| HttpUrl::parse(v).map_err(|r| err(key, r)))
        .transpose()
}

fn parse_token_header(spec: &str) -> Result<TokenHeader, ConfigError> {
    let key = "upstream_access_token_header";
    let (name, scheme) = match spec.split_once(':') {
        Some((n, s)) => (n, Some(s)),
        None => (spec, None),
    };
    if !is_header_name(name) {
        return Err(err(key, format!("`{name}` is not a valid header name")));
    }
    let scheme = match scheme {
        Some(s) if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
            return Err(err(key, format!("`{s}` is not a valid scheme")));
        }
        // Written as users read it: `Authorization: Bearer`.
        Some(s) => Some(capitalise(s)),
        None => None,
    };
    Ok(TokenHeader {
        name: name.to_ascii_lowercase(),
        scheme,
    })
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => {
            first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
        }
        None => String::new(),
    }
}

/// RFC 9110 token characters.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Headers a claim must never overwrite: routing and framing belong to the proxy.
fn is_reserved_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "te" | "upgrade"
    ) || lower.starts_with(':')
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next().map(str::to_string)
}

/// serde's messages end with a position and, for unknown keys, the list of every key; the
/// log line should stay one short line.
fn short_serde_reason(message: &str) -> String {
    let without_pos = message.split(" at line ").next().unwrap_or(message);
    match without_pos.split_once(", expected one of") {
        Some((head, _)) => head.to_string(),
        None => without_pos.to_string(),
    }
}

/// A stable, non-cryptographic fingerprint of the configuration bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
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
            c.client_credentials,
            Some(Sources {
                header: true,
                body: false,
                query: false
            })
        );
        assert_eq!(
            c.bearer,
            Some(Sources {
                header: true,
                body: false,
                query: false
            })
        );
        assert_eq!(c.token_endpoint_auth, TokenEndpointAuth::ClientSecretBasic);
        assert_eq!(
            c.issuers_allowed,
            vec!["https://idp.example.com/oauth2/default"]
        );
        assert_eq!(
            c.token_header,
            Some(TokenHeader {
                name: "authorization".into(),
                scheme: Some("Bearer".into())
            })
        );
        assert_eq!(c.leeway_s, 0);
        assert!(c.cache_tokens);
        assert_eq!(c.neg_ttl_ms, 10_000);
        assert_eq!(c.rediscovery_ms, 30_000);
        assert_eq!(c.timeout_ms, 10_000);
        assert_eq!(c.realm, "idp.example.com");
        assert_eq!(c.client_ids, None);
        assert_eq!(
            c.discovery_url.path,
            "/oauth2/default/.well-known/openid-configuration"
        );
        assert_eq!(c.cluster_for(&c.discovery_url), "idp.example.com:443");
        assert!(!c.reads_body());
    }

    #[test]
    fn every_key_is_accepted() {
        let c = parse(
            r#"{"issuer":"http://127.0.0.1:9000/oauth2/default",
                "token_endpoint":"http://127.0.0.1:9000/t","jwks_uri":"http://127.0.0.1:9000/k",
                "idp_cluster":"idp","auth_methods":["bearer"],
                "client_credentials_param_type":["header","body","query"],
                "bearer_token_param_type":["header","query"],
                "token_endpoint_auth_method":"client_secret_post","client_id":["a","b"],
                "scopes":["read"],"scopes_required":["read"],"audience_required":["api://default"],
                "issuers_allowed":["x","y"],"upstream_headers_claims":["iss","realm.roles"],
                "upstream_headers_names":["Issuer_Header","X-Roles"],
                "upstream_access_token_header":"x-access-token","leeway":5,"cache_tokens":false,
                "cache_ttl_neg":3,"rediscovery_lifetime":7,"timeout":500,"realm":"api"}"#,
        )
        .unwrap();
        assert_eq!(c.client_credentials, None);
        assert_eq!(
            c.bearer,
            Some(Sources {
                header: true,
                body: false,
                query: true
            })
        );
        assert_eq!(c.token_endpoint_auth, TokenEndpointAuth::ClientSecretPost);
        assert_eq!(
            c.token_header,
            Some(TokenHeader {
                name: "x-access-token".into(),
                scheme: None
            })
        );
        assert_eq!(
            c.claim_headers[1],
            ClaimHeader {
                claim: "realm.roles".into(),
                header: "X-Roles".into()
            }
        );
        assert_eq!(c.issuers_allowed, vec!["x", "y"]);
        assert_eq!(
            (c.leeway_s, c.neg_ttl_ms, c.rediscovery_ms, c.timeout_ms),
            (5, 3000, 7000, 500)
        );
        assert_eq!(c.cluster_for(c.token_endpoint.as_ref().unwrap()), "idp");
        assert_eq!(c.realm, "api");
    }

    #[test]
    fn null_token_header_means_not_forwarded() {
        let c = parse(r#"{"issuer":"http://i","upstream_access_token_header":null}"#).unwrap();
        assert_eq!(c.token_header, None);
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
            key_of(r#"{"issuer":"http://i","client_id":[]}"#),
            "client_id"
        );
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
    fn fingerprint_changes_with_the_configuration() {
        let a = parse(r#"{"issuer":"http://a"}"#).unwrap();
        let b = parse(r#"{"issuer":"http://b"}"#).unwrap();
        assert_ne!(a.fingerprint, b.fingerprint);
    }
}
