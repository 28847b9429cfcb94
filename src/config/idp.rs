//! Where the IdP is and how the filter talks to it.

use super::raw::{OneString, RawConfig, TokenEndpointAuth};
use super::{err, ConfigError};
use crate::credentials::{ClientCredentials, Secret};
use crate::url::HttpUrl;

/// Upper bound that keeps a typo from configuring an absurd callout timeout.
const MAX_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, Clone)]
pub struct IdpSettings {
    /// As configured; tokens' `iss` is compared with it (through `issuers_allowed`).
    pub issuer: String,
    pub discovery_url: HttpUrl,
    /// Overrides of what discovery says.
    pub token_endpoint: Option<HttpUrl>,
    pub jwks_uri: Option<HttpUrl>,
    pub introspection_endpoint: Option<HttpUrl>,
    pub cluster: Option<String>,
    pub token_endpoint_auth: TokenEndpointAuth,
    /// The gateway's own client, which introspection calls authenticate as.
    pub gateway_client: Option<ClientCredentials>,
    pub introspection_auth: TokenEndpointAuth,
    /// `scope` sent in token requests.
    pub scopes: Vec<String>,
    pub timeout_ms: u64,
    /// Least time between two key-set refetches an unknown `kid` asks for.
    pub rediscovery_ms: u64,
    /// The `host:port` a request waiting for another request's or worker's IdP answer polls,
    /// in hosts that wake a request only in its own callbacks (ngx_wasm_module, Kong): an
    /// endpoint that answers after a short delay (nginx `auth_delay`). Unused in Envoy.
    pub wait_upstream: Option<String>,
}

impl IdpSettings {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<IdpSettings, ConfigError> {
        HttpUrl::parse(&raw.issuer).map_err(|r| err("issuer", r))?;
        let discovery_url = HttpUrl::parse(&format!(
            "{}/.well-known/openid-configuration",
            raw.issuer.trim_end_matches('/')
        ))
        .map_err(|r| err("issuer", r))?;
        if let Some(cluster) = &raw.idp_cluster {
            if cluster.trim().is_empty() {
                return Err(err("idp_cluster", "must not be empty"));
            }
        }
        if raw.scopes.iter().any(|s| s.is_empty()) {
            return Err(err("scopes", "entries must not be empty"));
        }
        if raw
            .scopes
            .iter()
            .any(|s| s.chars().any(|c| c == ' ' || c.is_control()))
        {
            return Err(err("scopes", "a scope cannot contain spaces"));
        }
        if let Some(wait) = &raw.wait_upstream {
            if wait.trim().is_empty() {
                return Err(err("wait_upstream", "must not be empty"));
            }
            if wait
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
            {
                return Err(err(
                    "wait_upstream",
                    "must be a host:port, without spaces or a path",
                ));
            }
        }
        if raw.timeout == 0 || raw.timeout > MAX_TIMEOUT_MS {
            return Err(err(
                "timeout",
                format!("must be between 1 and {MAX_TIMEOUT_MS} ms"),
            ));
        }
        Ok(IdpSettings {
            issuer: raw.issuer.clone(),
            discovery_url,
            token_endpoint: parse_opt_url("token_endpoint", raw.token_endpoint.as_deref())?,
            jwks_uri: parse_opt_url("jwks_uri", raw.jwks_uri.as_deref())?,
            introspection_endpoint: parse_opt_url(
                "introspection_endpoint",
                raw.introspection_endpoint.as_deref(),
            )?,
            cluster: raw.idp_cluster.clone(),
            token_endpoint_auth: raw.token_endpoint_auth_method,
            gateway_client: gateway_client(raw)?,
            introspection_auth: raw.introspection_endpoint_auth_method,
            scopes: raw.scopes.clone(),
            timeout_ms: raw.timeout,
            rediscovery_ms: super::seconds("rediscovery_lifetime", raw.rediscovery_lifetime)?
                .saturating_mul(1000),
            wait_upstream: raw.wait_upstream.clone(),
        })
    }

    /// What the shared records fetched from this IdP depend on: two filter instances (or
    /// two revisions of one configuration) with the same identity share them. Timeouts and
    /// refresh pacing are left out: they change how records are fetched, not what they hold.
    pub fn identity(&self) -> u64 {
        let url = |u: Option<&HttpUrl>| {
            u.map(|u| format!("{} {}{}", u.https, u.authority, u.path))
                .unwrap_or_default()
        };
        let parts = [
            self.issuer.clone(),
            url(Some(&self.discovery_url)),
            url(self.token_endpoint.as_ref()),
            url(self.jwks_uri.as_ref()),
            self.cluster.clone().unwrap_or_default(),
            format!("{:?}", self.token_endpoint_auth),
            self.scopes.join(" "),
        ];
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        let [a, b, c, d, e, f, g, h, ..] = crate::cache::key_of(&parts);
        u64::from_le_bytes([a, b, c, d, e, f, g, h])
    }

    /// The upstream (Envoy cluster, Kong `host:port`) a callout to `url` goes to.
    pub fn cluster_for<'a>(&'a self, url: &'a HttpUrl) -> &'a str {
        self.cluster.as_deref().unwrap_or(&url.host_port)
    }
}

/// Kong's `client_id` and `client_secret`: both or neither. Here `client_id` used to be the
/// caller allow-list, so an old configuration (an id without a secret) is refused with the
/// key it meant, rather than changing meaning.
fn gateway_client(raw: &RawConfig) -> Result<Option<ClientCredentials>, ConfigError> {
    let one = |key: &str, v: &OneString| match v.get() {
        Some(s) if !s.is_empty() && !s.chars().any(char::is_control) => Ok(s.to_string()),
        _ => Err(err(
            key,
            "must be one non-empty string (or an array of exactly one, Kong's form)",
        )),
    };
    match (&raw.client_id, &raw.client_secret) {
        (None, None) => Ok(None),
        (Some(id), Some(secret)) => Ok(Some(ClientCredentials {
            id: one("client_id", id)?,
            secret: Secret::new(one("client_secret", secret)?),
        })),
        (Some(_), None) => Err(err(
            "client_id",
            "is the gateway's own client at the IdP (for introspection) and needs              `client_secret`; to allow callers by client id, use `clients_allowed`",
        )),
        (None, Some(_)) => Err(err("client_secret", "needs `client_id`")),
    }
}

fn parse_opt_url(key: &str, value: Option<&str>) -> Result<Option<HttpUrl>, ConfigError> {
    value
        .map(|v| HttpUrl::parse(v).map_err(|r| err(key, r)))
        .transpose()
}
