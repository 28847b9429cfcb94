//! Claims to upstream headers: strings as they are, numbers as JSON writes them,
//! booleans as `true`/`false`, arrays and objects as standard base64 of their compact JSON
//! (what Kong and Envoy's `claim_to_headers` send).

use base64::Engine;
use serde_json::{Map, Value};

use crate::config::ClaimHeader;

/// Finds `path`: the top-level claim of that exact name first (URIs like
/// `https://example.com/roles` contain dots), else a dotted walk into objects.
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// The header value for a claim, or `None` when it has none (null) or cannot be one.
pub fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(_) | Value::Object(_) => {
            let json = serde_json::to_vec(value).ok()?;
            return Some(base64::engine::general_purpose::STANDARD.encode(json));
        }
    };
    // CR/LF would split the header; any control character is refused.
    if text.chars().any(char::is_control) {
        return None;
    }
    Some(text)
}

/// The `(header, value)` pairs to inject for a verified token's claims.
pub fn headers(mapping: &[ClaimHeader], claims: &Map<String, Value>) -> Vec<(String, String)> {
    mapping
        .iter()
        .filter_map(|m| {
            let value = header_value(lookup(claims, &m.claim)?)?;
            Some((m.header.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Map<String, Value> {
        match json!({
            "iss": "https://idp",
            "exp": 1700000000u64,
            "ratio": 1.5,
            "admin": true,
            "scp": ["read", "write"],
            "realm": {"roles": ["a"], "level": {"n": 3}},
            "https://example.com/roles": "x",
            "evil": "a\r\nX-Injected: 1",
            "tab": "a\tb",
            "nothing": null,
            "utf8": "Zoë",
        }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn encodes_each_json_type() {
        let c = claims();
        let get = |p: &str| lookup(&c, p).and_then(header_value);
        assert_eq!(get("iss").as_deref(), Some("https://idp"));
        assert_eq!(get("exp").as_deref(), Some("1700000000"));
        assert_eq!(get("ratio").as_deref(), Some("1.5"));
        assert_eq!(get("admin").as_deref(), Some("true"));
        // base64 of ["read","write"]
        assert_eq!(get("scp").as_deref(), Some("WyJyZWFkIiwid3JpdGUiXQ=="));
        assert_eq!(get("realm.roles").as_deref(), Some("WyJhIl0="));
        assert_eq!(get("realm.level.n").as_deref(), Some("3"));
        assert_eq!(get("https://example.com/roles").as_deref(), Some("x"));
        assert_eq!(get("utf8").as_deref(), Some("Zoë"));
    }

    #[test]
    fn unusable_values_are_left_out() {
        let c = claims();
        let get = |p: &str| lookup(&c, p).and_then(header_value);
        assert_eq!(get("evil"), None);
        assert_eq!(get("tab"), None);
        assert_eq!(get("nothing"), None);
        assert_eq!(get("missing"), None);
        assert_eq!(get("realm.missing.deeper"), None);
        assert_eq!(get("iss.deeper"), None);
        assert_eq!(get(""), None);
    }

    #[test]
    fn headers_keep_configured_names_and_skip_bad_values() {
        let mapping = vec![
            ClaimHeader {
                claim: "iss".into(),
                header: "Issuer_Header".into(),
            },
            ClaimHeader {
                claim: "evil".into(),
                header: "X-Evil".into(),
            },
            ClaimHeader {
                claim: "admin".into(),
                header: "X-Admin".into(),
            },
        ];
        assert_eq!(
            headers(&mapping, &claims()),
            vec![
                ("Issuer_Header".to_string(), "https://idp".to_string()),
                ("X-Admin".to_string(), "true".to_string())
            ]
        );
    }
}
