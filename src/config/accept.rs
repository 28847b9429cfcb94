//! What the filter accepts as proof: where credentials are read from, which tokens are
//! valid, how long answers are kept, and how a refusal names the realm.

use super::raw::{ParamType, RawConfig};
use super::{err, ConfigError};
use crate::url::HttpUrl;

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

#[derive(Debug, Clone)]
pub struct Accept {
    /// Where client id and secret are read from, when the policy accepts them.
    pub client_credentials: Sources,
    /// Where a bearer token is read from, when the policy accepts one.
    pub bearer: Sources,
    pub issuers_allowed: Vec<String>,
    pub leeway_s: u64,
    pub cache_tokens: bool,
    pub neg_ttl_ms: u64,
    /// Whether introspection answers are kept until their `exp` (else asked per request).
    pub cache_introspection: bool,
    /// JWTs that verified locally are introspected too.
    pub introspect_jwt: bool,
    /// The longest a client token or an introspection answer is trusted once fetched.
    pub ttl_max_ms: Option<u64>,
    /// The `WWW-Authenticate` realm.
    pub realm: String,
}

impl Accept {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<Accept, ConfigError> {
        if raw.client_credentials_param_type.is_empty() {
            return Err(err("client_credentials_param_type", "must not be empty"));
        }
        let bearer = Sources::from(&raw.bearer_token_param_type);
        if raw.bearer_token_param_type.is_empty() {
            return Err(err("bearer_token_param_type", "must not be empty"));
        }
        if bearer.body {
            return Err(err(
                "bearer_token_param_type",
                "only `header` and `query` are supported",
            ));
        }
        let issuers_allowed = match &raw.issuers_allowed {
            Some(list) if list.is_empty() => {
                return Err(err("issuers_allowed", "must not be empty"));
            }
            Some(list) => list.clone(),
            // Discovery treats `…/default` and `…/default/` as one issuer, and IdPs differ
            // on which their tokens carry (Okta: none; Auth0: the slash): both are accepted.
            None => {
                let bare = raw.issuer.trim_end_matches('/');
                vec![bare.to_string(), format!("{bare}/")]
            }
        };
        let realm = match &raw.realm {
            Some(r)
                if r.is_empty() || r.chars().any(|c| c == '"' || c == '\\' || c.is_control()) =>
            {
                return Err(err(
                    "realm",
                    "must be non-empty, without quotes, backslashes or control characters",
                ));
            }
            Some(r) => r.clone(),
            None => {
                HttpUrl::parse(&raw.issuer)
                    .map_err(|r| err("issuer", r))?
                    .authority
            }
        };
        Ok(Accept {
            client_credentials: Sources::from(&raw.client_credentials_param_type),
            bearer,
            issuers_allowed,
            leeway_s: super::seconds("leeway", raw.leeway)?,
            cache_tokens: raw.cache_tokens,
            neg_ttl_ms: super::seconds("cache_ttl_neg", raw.cache_ttl_neg)?.saturating_mul(1000),
            cache_introspection: raw.cache_introspection,
            introspect_jwt: raw.introspect_jwt_tokens,
            ttl_max_ms: match raw.cache_ttl_max {
                Some(0) => return Err(err("cache_ttl_max", "must be at least 1 second")),
                Some(s) => Some(super::seconds("cache_ttl_max", s)?.saturating_mul(1000)),
                None => None,
            },
            realm,
        })
    }
}
