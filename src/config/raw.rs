//! The configuration as the operator writes it: one JSON object, names after Kong's plugin.
//! Only shape and types are checked here; meaning is checked by each group in `config`.

use serde::de::IgnoredAny;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum AuthMethod {
    ClientCredentials,
    Bearer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ParamType {
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

/// Every key of [`RawConfig`], for documentation and tooling checks (the configuration
/// reference must name each one).
pub const KEYS: &[&str] = &[
    "issuer",
    "token_endpoint",
    "jwks_uri",
    "idp_cluster",
    "auth_methods",
    "client_credentials_param_type",
    "bearer_token_param_type",
    "token_endpoint_auth_method",
    "client_id",
    "client_secret",
    "clients_allowed",
    "scopes",
    "scopes_claim",
    "audience_claim",
    "groups_claim",
    "roles_claim",
    "scopes_required",
    "audience_required",
    "groups_required",
    "roles_required",
    "claims_forbidden",
    "issuers_allowed",
    "upstream_headers_claims",
    "upstream_headers_names",
    "upstream_access_token_header",
    "leeway",
    "cache_tokens",
    "cache_ttl_neg",
    "rediscovery_lifetime",
    "timeout",
    "realm",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub issuer: String,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub idp_cluster: Option<String>,
    #[serde(default = "default_auth_methods")]
    pub auth_methods: Vec<AuthMethod>,
    #[serde(default = "default_header_only")]
    pub client_credentials_param_type: Vec<ParamType>,
    #[serde(default = "default_header_only")]
    pub bearer_token_param_type: Vec<ParamType>,
    #[serde(default = "default_token_auth")]
    pub token_endpoint_auth_method: TokenEndpointAuth,
    /// The gateway's own client at the IdP (Kong's meaning), for introspection: refused
    /// whatever its form until then.
    pub client_id: Option<IgnoredAny>,
    pub client_secret: Option<IgnoredAny>,
    pub clients_allowed: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub scopes_claim: Option<Vec<String>>,
    pub audience_claim: Option<Vec<String>>,
    pub groups_claim: Option<Vec<String>>,
    pub roles_claim: Option<Vec<String>>,
    #[serde(default)]
    pub scopes_required: Vec<String>,
    #[serde(default)]
    pub audience_required: Vec<String>,
    #[serde(default)]
    pub groups_required: Vec<String>,
    #[serde(default)]
    pub roles_required: Vec<String>,
    #[serde(default)]
    pub claims_forbidden: Vec<String>,
    pub issuers_allowed: Option<Vec<String>>,
    #[serde(default)]
    pub upstream_headers_claims: Vec<String>,
    #[serde(default)]
    pub upstream_headers_names: Vec<String>,
    // `null` means "do not forward"; absent means the default.
    #[serde(default = "default_token_header")]
    pub upstream_access_token_header: Option<String>,
    #[serde(default)]
    pub leeway: u64,
    #[serde(default = "default_true")]
    pub cache_tokens: bool,
    #[serde(default = "default_neg_ttl")]
    pub cache_ttl_neg: u64,
    #[serde(default = "default_rediscovery")]
    pub rediscovery_lifetime: u64,
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    pub realm: Option<String>,
}
