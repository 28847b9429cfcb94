//! The configuration as the operator writes it: one JSON object, names after Kong's plugin.
//! Only shape and types are checked here; meaning is checked by each group in `config`.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum AuthMethod {
    ClientCredentials,
    Bearer,
    Introspection,
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

/// A string, or Kong's form of one: an array holding one string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(super) enum OneString {
    One(String),
    List(Vec<String>),
}

impl OneString {
    /// The string; `None` for an array that does not hold exactly one.
    pub fn get(&self) -> Option<&str> {
        match self {
            OneString::One(s) => Some(s),
            OneString::List(l) => match l.as_slice() {
                [one] => Some(one),
                _ => None,
            },
        }
    }
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
    "introspection_endpoint",
    "introspection_endpoint_auth_method",
    "introspect_jwt_tokens",
    "cache_introspection",
    "cache_ttl_max",
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
    "policies",
    "routes",
    "wait_upstream",
];

/// The keys a named policy may set (each defaults to its top-level value), and `public`.
pub const POLICY_KEYS: &[&str] = &[
    "auth_methods",
    "clients_allowed",
    "scopes_claim",
    "audience_claim",
    "groups_claim",
    "roles_claim",
    "scopes_required",
    "audience_required",
    "groups_required",
    "roles_required",
    "claims_forbidden",
    "upstream_headers_claims",
    "upstream_headers_names",
    "public",
];

/// The per-route keys, as a named policy writes them; `None`: the top-level value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub auth_methods: Option<Vec<AuthMethod>>,
    pub clients_allowed: Option<Vec<String>>,
    pub scopes_claim: Option<Vec<String>>,
    pub audience_claim: Option<Vec<String>>,
    pub groups_claim: Option<Vec<String>>,
    pub roles_claim: Option<Vec<String>>,
    pub scopes_required: Option<Vec<String>>,
    pub audience_required: Option<Vec<String>>,
    pub groups_required: Option<Vec<String>>,
    pub roles_required: Option<Vec<String>>,
    pub claims_forbidden: Option<Vec<String>>,
    pub upstream_headers_claims: Option<Vec<String>>,
    pub upstream_headers_names: Option<Vec<String>>,
    pub public: Option<bool>,
}

impl RawPolicy {
    /// This policy's keys, each it leaves out taken from `base`.
    pub fn over(&self, base: &RawPolicy) -> RawPolicy {
        let pick = |a: &Option<Vec<String>>, b: &Option<Vec<String>>| a.clone().or(b.clone());
        RawPolicy {
            auth_methods: self.auth_methods.clone().or(base.auth_methods.clone()),
            clients_allowed: pick(&self.clients_allowed, &base.clients_allowed),
            scopes_claim: pick(&self.scopes_claim, &base.scopes_claim),
            audience_claim: pick(&self.audience_claim, &base.audience_claim),
            groups_claim: pick(&self.groups_claim, &base.groups_claim),
            roles_claim: pick(&self.roles_claim, &base.roles_claim),
            scopes_required: pick(&self.scopes_required, &base.scopes_required),
            audience_required: pick(&self.audience_required, &base.audience_required),
            groups_required: pick(&self.groups_required, &base.groups_required),
            roles_required: pick(&self.roles_required, &base.roles_required),
            claims_forbidden: pick(&self.claims_forbidden, &base.claims_forbidden),
            upstream_headers_claims: pick(
                &self.upstream_headers_claims,
                &base.upstream_headers_claims,
            ),
            upstream_headers_names: pick(
                &self.upstream_headers_names,
                &base.upstream_headers_names,
            ),
            public: self.public.or(base.public),
        }
    }
}

/// One entry of `routes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub hosts: Option<Vec<String>>,
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    pub methods: Option<Vec<String>>,
    pub policy: String,
}

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
    /// The gateway's own client at the IdP (Kong's meaning), for introspection.
    pub client_id: Option<OneString>,
    pub client_secret: Option<OneString>,
    pub introspection_endpoint: Option<String>,
    #[serde(default = "default_token_auth")]
    pub introspection_endpoint_auth_method: TokenEndpointAuth,
    #[serde(default)]
    pub introspect_jwt_tokens: bool,
    #[serde(default = "default_true")]
    pub cache_introspection: bool,
    pub cache_ttl_max: Option<u64>,
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
    pub policies: Option<std::collections::BTreeMap<String, RawPolicy>>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Kong (ngx_wasm_module): the `host:port` a waiting request polls.
    pub wait_upstream: Option<String>,
}

impl RawConfig {
    /// The top-level per-route keys, every one given (defaults filled in).
    pub fn top_policy(&self) -> RawPolicy {
        RawPolicy {
            auth_methods: Some(self.auth_methods.clone()),
            clients_allowed: self.clients_allowed.clone(),
            scopes_claim: self.scopes_claim.clone(),
            audience_claim: self.audience_claim.clone(),
            groups_claim: self.groups_claim.clone(),
            roles_claim: self.roles_claim.clone(),
            scopes_required: Some(self.scopes_required.clone()),
            audience_required: Some(self.audience_required.clone()),
            groups_required: Some(self.groups_required.clone()),
            roles_required: Some(self.roles_required.clone()),
            claims_forbidden: Some(self.claims_forbidden.clone()),
            upstream_headers_claims: Some(self.upstream_headers_claims.clone()),
            upstream_headers_names: Some(self.upstream_headers_names.clone()),
            public: Some(false),
        }
    }
}
