//! The plugin configuration: parsed and validated once, at `on_configure`, into four
//! groups that each validate themselves: the IdP, what is accepted, the policy, and what
//! goes upstream.
//!
//! Everything the request path needs is precomputed here (lower-cased header names, split
//! URLs, the realm) so that a request never re-derives it.

mod accept;
mod idp;
mod policy;
mod raw;
mod routes;
mod upstream;

use std::fmt;

pub use accept::{Accept, Sources};
pub use idp::IdpSettings;
pub use policy::{ClaimHeader, Policy, Requirement};
pub use raw::{TokenEndpointAuth, KEYS, POLICY_KEYS};
pub use routes::{PolicyId, Routes};
pub use upstream::{is_header_name, TokenHeader, Upstream};

use raw::RawConfig;

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

/// Upper bound that keeps a typo from configuring an absurd duration.
const MAX_SECONDS: u64 = 86_400;

fn seconds(key: &str, value: u64) -> Result<u64, ConfigError> {
    if value > MAX_SECONDS {
        return Err(err(key, format!("must be at most {MAX_SECONDS} seconds")));
    }
    Ok(value)
}

/// A validated configuration, built only by [`Config::parse`].
#[derive(Debug, Clone)]
pub struct Config {
    pub idp: IdpSettings,
    pub accept: Accept,
    /// The top-level per-route keys: the policy of a request no rule picks.
    pub policy: Policy,
    /// `policies`, by name (the [`PolicyId`] of the `n`-th is `n + 1`).
    pub policies: Vec<(String, Policy)>,
    pub routes: Routes,
    pub upstream: Upstream,
    /// Whether any policy reads the query and the body, worked out once.
    reads: (bool, bool),
}

/// Past this, generated configuration gone wrong rather than a gateway's policies.
const MAX_POLICIES: usize = 256;

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.inner();
            if matches!(
                inner.classify(),
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof
            ) {
                return err(
                    "(json)",
                    format!(
                        "not valid JSON at line {}, column {}: {}",
                        inner.line(),
                        inner.column(),
                        short_serde_reason(&inner.to_string())
                    ),
                );
            }
            let message = inner.to_string();
            let named = named_field(&message);
            let key = if path == "." {
                // Unknown and repeated fields, and a non-object document, are reported on
                // the root.
                named.clone().unwrap_or_else(|| "(root)".to_string())
            } else if named.is_some() && path.starts_with("policies.") {
                // A key inside a policy: serde's path is `policies.<name>.<key>`.
                path.clone()
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
            let mut reason = short_serde_reason(&message);
            if message.starts_with("unknown field") {
                let known = if path.starts_with("policies.") {
                    POLICY_KEYS
                } else {
                    KEYS
                };
                if let Some(close) = named.as_deref().and_then(|n| nearest(n, known)) {
                    reason.push_str(&format!("; did you mean `{close}`?"));
                }
            }
            err(&key, reason)
        })?;
        let top = raw.top_policy();
        let mut policies = Vec::new();
        for (name, p) in raw.policies.iter().flatten() {
            if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(err("policies", format!("`{name}` is not a policy name")));
            }
            policies.push((
                name.clone(),
                Policy::from_raw(&p.over(&top), &format!("policies.{name}."))?,
            ));
        }
        if policies.len() > MAX_POLICIES {
            return Err(err("policies", format!("at most {MAX_POLICIES}")));
        }
        let names: Vec<String> = policies.iter().map(|(n, _)| n.clone()).collect();
        let mut config = Config {
            idp: IdpSettings::from_raw(&raw)?,
            policy: Policy::from_raw(&top, "")?,
            routes: Routes::from_raw(&raw.routes, &names)?,
            policies,
            upstream: Upstream::from_raw(raw.upstream_access_token_header.as_deref())?,
            accept: Accept::from_raw(&raw)?,
            reads: (false, false),
        };
        if config.idp.gateway_client.is_none() {
            if config.accept.introspect_jwt {
                return Err(err(
                    "introspect_jwt_tokens",
                    "needs the gateway's own client: set `client_id` and `client_secret`",
                ));
            }
            if let Some(id) =
                (0..=config.policies.len()).find(|id| config.policy(*id).introspection)
            {
                let key = match id {
                    0 => "auth_methods".to_string(),
                    _ => format!("policies.{}.auth_methods", config.policy_name(id)),
                };
                return Err(err(
                    &key,
                    "`introspection` needs the gateway's own client: set `client_id` and \
                     `client_secret`",
                ));
            }
        }
        let reads_query = config.all_policies().any(|p| {
            let (cc, bearer) = config.sources(p);
            cc.query || bearer.query
        });
        let reads_body = config.all_policies().any(|p| config.sources(p).0.body);
        config.reads = (reads_query, reads_body);
        Ok(config)
    }

    /// The policy `id` names; the top-level one for 0 (ids come from this configuration).
    pub fn policy(&self, id: PolicyId) -> &Policy {
        id.checked_sub(1)
            .and_then(|i| self.policies.get(i))
            .map_or(&self.policy, |(_, p)| p)
    }

    /// The name of policy `id`, for logs and access logs; `default` for the top level.
    pub fn policy_name(&self, id: PolicyId) -> &str {
        id.checked_sub(1)
            .and_then(|i| self.policies.get(i))
            .map_or("default", |(n, _)| n.as_str())
    }

    pub fn policy_named(&self, name: &str) -> Option<PolicyId> {
        self.policies
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| i + 1)
    }

    /// The top-level policy and every named one.
    pub fn all_policies(&self) -> impl Iterator<Item = &Policy> {
        std::iter::once(&self.policy).chain(self.policies.iter().map(|(_, p)| p))
    }

    /// Where each method's credential may be read from under `policy`; nowhere for a
    /// method it does not accept.
    pub fn sources(&self, policy: &Policy) -> (Sources, Sources) {
        let pick = |on: bool, s: Sources| if on { s } else { Sources::default() };
        (
            pick(policy.client_credentials, self.accept.client_credentials),
            pick(policy.bearer || policy.introspection, self.accept.bearer),
        )
    }

    /// Whether the filter reads the request body at all; bodies are buffered only then.
    pub fn reads_body(&self) -> bool {
        self.reads.1
    }

    /// Whether a credential may be in the query string, so `:path` must be read.
    pub fn reads_query(&self) -> bool {
        self.reads.0
    }
}

/// The key serde names in an unknown-field or duplicate-field message.
fn named_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("duplicate field `"))?;
    rest.split('`').next().map(str::to_string)
}

/// The known key a typo most likely meant: at most two edits away.
fn nearest<'a>(typo: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(typo, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut prev = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let (Some(&up), Some(&left)) = (row.get(j + 1), row.get(j)) else {
                continue;
            };
            let cost = usize::from(ca != *cb);
            let value = (up + 1).min(left + 1).min(prev + cost);
            prev = up;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = value;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

/// serde's messages end with a position and, for unknown keys, the list of every key; the
/// log line should stay one short line.
fn short_serde_reason(message: &str) -> String {
    let without_pos = message.split(" at line ").next().unwrap_or(message);
    // Unknown fields come with the list of every key: too long for one line (a suggestion
    // follows instead). Unknown values keep theirs: it is short, and the fix.
    let short = match without_pos.split_once(", expected one of") {
        Some((head, _)) if head.starts_with("unknown field") => head.to_string(),
        _ => without_pos.to_string(),
    };
    // Say types as JSON does, not as Rust does.
    [
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("expected struct RawPolicy", "expected an object"),
        ("expected struct RawRoute", "expected an object"),
        ("expected a boolean", "expected true or false"),
        (
            "data did not match any variant of untagged enum OneString",
            "expected a string, or an array of one string",
        ),
    ]
    .iter()
    .fold(short, |s, (rust, json)| s.replace(rust, json))
}

#[cfg(test)]
mod tests;
