//! Judging the claims of a verified token against the configuration: issuer, audience,
//! client allow-list, then scopes (the only check that answers 403).

use serde_json::{Map, Value};

use crate::config::Config;
use crate::outcome::{Denial, TokenProblem};

pub fn authorize(config: &Config, claims: &Map<String, Value>) -> Result<(), Denial> {
    let invalid = |p| Err(Denial::InvalidToken(p));

    let issuer = claims.get("iss").and_then(Value::as_str);
    if !issuer.is_some_and(|iss| config.accept.issuers_allowed.iter().any(|a| a == iss)) {
        return invalid(TokenProblem::WrongIssuer);
    }

    if !config.policy.audience_required.is_empty() {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => config.policy.audience_required.contains(a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| config.policy.audience_required.iter().any(|r| r == a)),
            _ => false,
        };
        if !ok {
            return invalid(TokenProblem::WrongAudience);
        }
    }

    if let Some(allowed) = &config.policy.clients_allowed {
        // Okta says `cid`, RFC 9068 says `client_id`; `azp` and `sub` cover other IdPs.
        let client = ["client_id", "cid", "azp", "sub"]
            .iter()
            .find_map(|k| claims.get(*k))
            .and_then(Value::as_str);
        if !client.is_some_and(|c| allowed.iter().any(|a| a == c)) {
            return invalid(TokenProblem::ClientNotAllowed);
        }
    }

    if !config.policy.scopes_required.is_empty() {
        let granted = scopes(claims);
        if !config
            .policy
            .scopes_required
            .iter()
            .all(|s| granted.contains(&s.as_str()))
        {
            return Err(Denial::InsufficientScope);
        }
    }
    Ok(())
}

/// `scope` as a space-separated string (RFC 8693/9068) or `scp` as an array (Okta, Azure).
fn scopes(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out = Vec::new();
    if let Some(Value::String(s)) = claims.get("scope") {
        out.extend(s.split(' ').filter(|s| !s.is_empty()));
    }
    match claims.get("scp") {
        Some(Value::Array(list)) => out.extend(list.iter().filter_map(Value::as_str)),
        Some(Value::String(s)) => out.extend(s.split(' ').filter(|s| !s.is_empty())),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: &str) -> Config {
        Config::parse(format!(r#"{{"issuer":"https://idp"{extra}}}"#).as_bytes()).unwrap()
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn issuer_must_be_allowed() {
        let c = config("");
        assert_eq!(authorize(&c, &claims(json!({"iss":"https://idp"}))), Ok(()));
        for bad in [
            json!({}),
            json!({"iss":"https://other"}),
            json!({"iss":["https://idp"]}),
        ] {
            assert_eq!(
                authorize(&c, &claims(bad)),
                Err(Denial::InvalidToken(TokenProblem::WrongIssuer))
            );
        }
        let c = config(r#","issuers_allowed":["https://a","https://b"]"#);
        assert_eq!(authorize(&c, &claims(json!({"iss":"https://b"}))), Ok(()));
        assert!(authorize(&c, &claims(json!({"iss":"https://idp"}))).is_err());
    }

    #[test]
    fn audience_string_or_array() {
        let c = config(r#","audience_required":["api://default","other"]"#);
        let ok = |aud: Value| authorize(&c, &claims(json!({"iss":"https://idp","aud":aud})));
        assert_eq!(ok(json!("api://default")), Ok(()));
        assert_eq!(ok(json!(["x", "other"])), Ok(()));
        for bad in [
            json!("x"),
            json!([]),
            json!({"api://default":1}),
            json!(null),
            json!(["x"]),
        ] {
            assert_eq!(
                ok(bad),
                Err(Denial::InvalidToken(TokenProblem::WrongAudience))
            );
        }
    }

    #[test]
    fn client_allow_list_uses_first_present_claim() {
        let c = config(r#","client_id":["svc-a"]"#);
        let check = |v: Value| authorize(&c, &claims(v));
        assert_eq!(
            check(json!({"iss":"https://idp","cid":"svc-a","sub":"x"})),
            Ok(())
        );
        assert_eq!(
            check(json!({"iss":"https://idp","client_id":"svc-a","cid":"x"})),
            Ok(())
        );
        assert_eq!(check(json!({"iss":"https://idp","sub":"svc-a"})), Ok(()));
        // `client_id` wins over `cid`: a token cannot pick the claim that suits it.
        assert_eq!(
            check(json!({"iss":"https://idp","client_id":"x","cid":"svc-a"})),
            Err(Denial::InvalidToken(TokenProblem::ClientNotAllowed))
        );
        assert!(check(json!({"iss":"https://idp"})).is_err());
    }

    #[test]
    fn scopes_from_scope_or_scp() {
        let c = config(r#","scopes_required":["read","write"]"#);
        let check = |v: Value| authorize(&c, &claims(v));
        assert_eq!(
            check(json!({"iss":"https://idp","scope":"write  read"})),
            Ok(())
        );
        assert_eq!(
            check(json!({"iss":"https://idp","scp":["read","write","x"]})),
            Ok(())
        );
        assert_eq!(
            check(json!({"iss":"https://idp","scp":["read"]})),
            Err(Denial::InsufficientScope)
        );
        assert_eq!(
            check(json!({"iss":"https://idp","scope":"readwrite"})),
            Err(Denial::InsufficientScope)
        );
        // A bad issuer is reported as such even when scopes are missing too.
        assert_eq!(
            check(json!({"iss":"x"})),
            Err(Denial::InvalidToken(TokenProblem::WrongIssuer))
        );
    }
}
