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
mod upstream;

use std::fmt;

pub use accept::{Accept, Sources};
pub use idp::IdpSettings;
pub use policy::{ClaimHeader, Policy, Requirement};
pub use raw::{TokenEndpointAuth, KEYS};
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
    pub policy: Policy,
    pub upstream: Upstream,
}

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
        Ok(Config {
            idp: IdpSettings::from_raw(&raw)?,
            policy: Policy::from_raw(&raw)?,
            upstream: Upstream::from_raw(raw.upstream_access_token_header.as_deref())?,
            accept: Accept::from_raw(&raw)?,
        })
    }

    /// Where each method's credential may be read from; nowhere for a method the policy
    /// does not accept.
    pub fn sources(&self) -> (Sources, Sources) {
        let pick = |on: bool, s: Sources| if on { s } else { Sources::default() };
        (
            pick(
                self.policy.client_credentials,
                self.accept.client_credentials,
            ),
            pick(self.policy.bearer, self.accept.bearer),
        )
    }

    /// Whether the filter reads the request body at all; bodies are buffered only then.
    pub fn reads_body(&self) -> bool {
        self.sources().0.body
    }

    /// Whether a credential may be in the query string, so `:path` must be read.
    pub fn reads_query(&self) -> bool {
        let (cc, bearer) = self.sources();
        cc.query || bearer.query
    }
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

#[cfg(test)]
mod tests;
