//! Who may pass and what the upstream learns of them: the accepted methods, the client
//! allow-list, the claim requirements and the claim headers. Validated by itself, so that
//! a configuration can carry more than one.

use super::raw::{AuthMethod, RawConfig};
use super::upstream::{check_spellings, is_header_name, is_reserved_header};
use super::{err, ConfigError};

/// A claim to forward: where to find it, and the header it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    pub claim: String,
    /// As configured: hosts that preserve case send it this way.
    pub header: String,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub client_credentials: bool,
    pub bearer: bool,
    /// Callers allowed, by client id; `None` allows any.
    pub clients_allowed: Option<Vec<String>>,
    pub scopes_required: Vec<String>,
    pub audience_required: Vec<String>,
    pub claim_headers: Vec<ClaimHeader>,
}

impl Policy {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<Policy, ConfigError> {
        if raw.auth_methods.is_empty() {
            return Err(err("auth_methods", "must name at least one method"));
        }
        for (key, list) in [
            ("client_id", raw.client_id.as_deref().unwrap_or_default()),
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
        Ok(Policy {
            client_credentials: raw.auth_methods.contains(&AuthMethod::ClientCredentials),
            bearer: raw.auth_methods.contains(&AuthMethod::Bearer),
            clients_allowed: raw.client_id.clone(),
            scopes_required: raw.scopes_required.clone(),
            audience_required: raw.audience_required.clone(),
            claim_headers: claim_headers(
                &raw.upstream_headers_claims,
                &raw.upstream_headers_names,
            )?,
        })
    }
}

fn claim_headers(claims: &[String], names: &[String]) -> Result<Vec<ClaimHeader>, ConfigError> {
    let key = "upstream_headers_names";
    if claims.len() != names.len() {
        return Err(err(
            key,
            format!(
                "has {} entries but upstream_headers_claims has {}",
                names.len(),
                claims.len()
            ),
        ));
    }
    claims
        .iter()
        .zip(names)
        .map(|(claim, header)| {
            if !is_header_name(header) {
                return Err(err(key, format!("`{header}` is not a valid header name")));
            }
            if is_reserved_header(header) {
                return Err(err(key, format!("`{header}` cannot be set from a claim")));
            }
            check_spellings(key, header)?;
            Ok(ClaimHeader {
                claim: claim.clone(),
                header: header.clone(),
            })
        })
        .collect()
}
