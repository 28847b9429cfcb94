//! What goes upstream with an allowed request besides claim headers: the verified token,
//! in the header and scheme the upstream expects.

use super::{err, ConfigError};

/// Where the verified token goes upstream: `header[:scheme]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    /// Lower-case header name.
    pub name: String,
    /// `Bearer` in `Authorization: Bearer <t>`; none for a bare value.
    pub scheme: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// `None`: the token is not forwarded.
    pub token_header: Option<TokenHeader>,
}

impl Upstream {
    pub(super) fn from_raw(token_header: Option<&str>) -> Result<Upstream, ConfigError> {
        Ok(Upstream {
            token_header: token_header.map(parse_token_header).transpose()?,
        })
    }
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
    check_spellings(key, name)?;
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

/// A header the filter writes must have few enough spellings to strip them all.
pub(super) fn check_spellings(key: &str, name: &str) -> Result<(), ConfigError> {
    match crate::upstream::spellings(name) {
        Some(_) => Ok(()),
        None => Err(err(
            key,
            format!(
                "`{name}` has more than {} `-` or `_`",
                crate::upstream::MAX_SEPARATORS
            ),
        )),
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
pub(super) fn is_reserved_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "te" | "upgrade"
    ) || lower.starts_with(':')
}
