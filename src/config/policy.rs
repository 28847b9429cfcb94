//! Who may pass and what the upstream learns of them: the accepted methods, the client
//! allow-list, the claim requirements and the claim headers. Validated by itself, so that
//! a configuration can carry more than one.

use super::raw::{AuthMethod, RawPolicy};
use super::upstream::{check_spellings, is_header_name, is_reserved_header};
use super::{err, ConfigError};
use crate::outcome::ClaimRule;

/// A claim to forward: where to find it, and the header it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    pub claim: String,
    /// As configured: hosts that preserve case send it this way.
    pub header: String,
}

/// A claim rule as Kong reads it: where its values are, and the sets of values that
/// satisfy it. Any one set suffices, and a set needs every value in it (`["read write",
/// "admin"]` = read and write, or admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub rule: ClaimRule,
    /// Paths into the claims; the first that is present is read.
    pub paths: Vec<Vec<String>>,
    pub any_of: Vec<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// No credential is needed; the strip list still applies.
    pub public: bool,
    pub client_credentials: bool,
    /// JWTs, verified locally.
    pub bearer: bool,
    /// Bearer tokens checked at the IdP's introspection endpoint: opaque ones, and JWTs
    /// when `bearer` is off.
    pub introspection: bool,
    /// Callers allowed, by client id; `None` allows any.
    pub clients_allowed: Option<Vec<String>>,
    /// Only the rules that require something, in the order they are checked.
    pub requirements: Vec<Requirement>,
    /// Top-level claim names a token must not carry.
    pub claims_forbidden: Vec<String>,
    pub claim_headers: Vec<ClaimHeader>,
}

impl Policy {
    /// A policy from its keys (every one resolved against the top level); errors name the
    /// key under `prefix` (`""`, or `policies.<name>.`).
    pub(super) fn from_raw(raw: &RawPolicy, prefix: &str) -> Result<Policy, ConfigError> {
        let err = |key: &str, why: &str| err(&format!("{prefix}{key}"), why);
        let auth_methods = raw.auth_methods.as_deref().unwrap_or_default();
        let public = raw.public.unwrap_or(false);
        if auth_methods.is_empty() && !public {
            return Err(err("auth_methods", "must name at least one method"));
        }
        let list = |l: &Option<Vec<String>>| l.clone().unwrap_or_default();
        for (key, list) in [
            (
                "clients_allowed",
                raw.clients_allowed.as_deref().unwrap_or_default(),
            ),
            (
                "claims_forbidden",
                raw.claims_forbidden.as_deref().unwrap_or_default(),
            ),
            (
                "upstream_headers_claims",
                raw.upstream_headers_claims.as_deref().unwrap_or_default(),
            ),
        ] {
            if list.iter().any(|s| s.trim().is_empty()) {
                return Err(err(key, "entries must not be empty"));
            }
        }
        if raw.clients_allowed.as_ref().is_some_and(|l| l.is_empty()) {
            return Err(err(
                "clients_allowed",
                "an empty allow-list would reject every client",
            ));
        }
        let mut requirements = Vec::new();
        for (rule, claim_key, claim, default, required) in [
            (
                ClaimRule::Audience,
                "audience_claim",
                &raw.audience_claim,
                &["aud"][..],
                list(&raw.audience_required),
            ),
            (
                ClaimRule::Scopes,
                "scopes_claim",
                &raw.scopes_claim,
                // Okta writes `scp`; RFC 9068 `scope`.
                &["scope", "scp"][..],
                list(&raw.scopes_required),
            ),
            (
                ClaimRule::Groups,
                "groups_claim",
                &raw.groups_claim,
                &["groups"][..],
                list(&raw.groups_required),
            ),
            (
                ClaimRule::Roles,
                "roles_claim",
                &raw.roles_claim,
                &["roles"][..],
                list(&raw.roles_required),
            ),
        ] {
            let paths = match claim {
                Some(path) => {
                    if path.is_empty() || path.iter().any(String::is_empty) {
                        return Err(err(
                            claim_key,
                            "must be a path of claim names, e.g. [\"realm\", \"groups\"]",
                        ));
                    }
                    vec![path.clone()]
                }
                None => default.iter().map(|c| vec![c.to_string()]).collect(),
            };
            let any_of: Vec<Vec<String>> = required
                .iter()
                .map(|all| all.split_whitespace().map(str::to_string).collect())
                .collect();
            if any_of.iter().any(Vec::is_empty) {
                return Err(err(rule.key(), "entries must not be empty"));
            }
            if !any_of.is_empty() {
                requirements.push(Requirement {
                    rule,
                    paths,
                    any_of,
                });
            }
        }
        Ok(Policy {
            public,
            client_credentials: auth_methods.contains(&AuthMethod::ClientCredentials),
            bearer: auth_methods.contains(&AuthMethod::Bearer),
            introspection: auth_methods.contains(&AuthMethod::Introspection),
            clients_allowed: raw.clients_allowed.clone(),
            requirements,
            claims_forbidden: list(&raw.claims_forbidden),
            claim_headers: claim_headers(
                &list(&raw.upstream_headers_claims),
                &list(&raw.upstream_headers_names),
                prefix,
            )?,
        })
    }
}

fn claim_headers(
    claims: &[String],
    names: &[String],
    prefix: &str,
) -> Result<Vec<ClaimHeader>, ConfigError> {
    let key = &format!("{prefix}upstream_headers_names");
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
