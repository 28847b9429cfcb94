//! Judging the claims of a verified token against the configuration: the issuer and the
//! client allow-list (401 `invalid_token`), then Kong's claim rules (403
//! `insufficient_scope`, each naming the rule that failed).

use serde_json::{Map, Value};

use crate::config::{Config, Policy, Requirement};
use crate::outcome::{ClaimRule, Denial, TokenProblem};

pub fn authorize(
    config: &Config,
    policy: &Policy,
    claims: &Map<String, Value>,
) -> Result<(), Denial> {
    let invalid = |p| Err(Denial::InvalidToken(p));

    let issuer = claims.get("iss").and_then(Value::as_str);
    if !issuer.is_some_and(|iss| config.accept.issuers_allowed.iter().any(|a| a == iss)) {
        return invalid(TokenProblem::WrongIssuer);
    }

    if let Some(allowed) = &policy.clients_allowed {
        if !client_of(claims).is_some_and(|c| allowed.iter().any(|a| a == c)) {
            return invalid(TokenProblem::ClientNotAllowed);
        }
    }

    for requirement in &policy.requirements {
        if !satisfied(requirement, claims) {
            return Err(Denial::InsufficientScope(requirement.rule));
        }
    }
    if policy
        .claims_forbidden
        .iter()
        .any(|name| claims.contains_key(name))
    {
        return Err(Denial::InsufficientScope(ClaimRule::ForbiddenClaim));
    }
    Ok(())
}

/// What the token had beside what `denial` required, for the log line: none of it is a
/// secret, and the token's side is escaped and cut short, as all caller-controlled text.
pub fn explain(
    config: &Config,
    policy: &Policy,
    claims: &Map<String, Value>,
    denial: &Denial,
) -> Option<String> {
    let shown = |v: Option<&Value>| match v {
        Some(Value::String(s)) => format!("`{}`", crate::log_budget::bounded(s)),
        Some(other) => crate::log_budget::bounded(&other.to_string()),
        None => "none".to_string(),
    };
    match denial {
        Denial::InvalidToken(TokenProblem::WrongIssuer) => Some(format!(
            "iss {}, allowed {:?}",
            shown(claims.get("iss")),
            config.accept.issuers_allowed
        )),
        Denial::InvalidToken(TokenProblem::ClientNotAllowed) => Some(format!(
            "client {}, allowed {:?}",
            crate::log_budget::bounded(client_of(claims).unwrap_or("none")),
            policy.clients_allowed.as_deref().unwrap_or_default()
        )),
        Denial::InsufficientScope(ClaimRule::ForbiddenClaim) => {
            let present: Vec<&str> = policy
                .claims_forbidden
                .iter()
                .filter(|n| claims.contains_key(n.as_str()))
                .map(String::as_str)
                .collect();
            Some(format!("carries {present:?}"))
        }
        Denial::InsufficientScope(rule) => {
            let r = policy.requirements.iter().find(|r| r.rule == *rule)?;
            let (path, found) = r
                .paths
                .iter()
                .find_map(|p| values(claims, p).map(|v| (p, v)))
                .map_or_else(
                    || (r.paths.first(), "none".to_string()),
                    |(p, v)| {
                        (
                            Some(p),
                            format!("`{}`", crate::log_budget::bounded(&v.join(" "))),
                        )
                    },
                );
            let path = path.map(|p| p.join(".")).unwrap_or_default();
            let wanted: Vec<String> = r.any_of.iter().map(|all| all.join(" ")).collect();
            Some(format!("{path} has {found}, required one of {wanted:?}"))
        }
        _ => None,
    }
}

/// The token's client: the first present of `client_id` (RFC 9068), `cid` (Okta), `azp`
/// and `sub` (other IdPs). A token cannot pick the claim that suits it.
pub fn client_of(claims: &Map<String, Value>) -> Option<&str> {
    ["client_id", "cid", "azp", "sub"]
        .iter()
        .find_map(|k| claims.get(*k))
        .and_then(Value::as_str)
}

/// Kong's rule: one of the sets of values is wholly present.
fn satisfied(requirement: &Requirement, claims: &Map<String, Value>) -> bool {
    let present = requirement
        .paths
        .iter()
        .find_map(|path| values(claims, path));
    let Some(present) = present else {
        return false;
    };
    requirement
        .any_of
        .iter()
        .any(|all| all.iter().all(|v| present.contains(&v.as_str())))
}

/// The values at `path`, or `None` when nothing is there. A string is split on whitespace
/// (`scope`'s form); an array gives its strings; an array met on the way applies the rest of
/// the path to each of its elements (`{"realm":[{"groups":…},…]}`).
fn values<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<Vec<&'a str>> {
    let (first, rest) = path.split_first()?;
    let start = claims.get(first)?;
    let mut out = Vec::new();
    collect(start, rest, &mut out);
    Some(out)
}

fn collect<'a>(value: &'a Value, path: &[String], out: &mut Vec<&'a str>) {
    match (path.split_first(), value) {
        (None, Value::String(s)) => out.extend(s.split_whitespace()),
        (None, Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str)),
        (Some((next, rest)), Value::Object(map)) => {
            if let Some(v) = map.get(next) {
                collect(v, rest, out);
            }
        }
        (Some(_), Value::Array(items)) => {
            for item in items {
                collect(item, path, out);
            }
        }
        _ => {}
    }
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
            Value::Object(mut m) => {
                m.entry("iss").or_insert(json!("https://idp"));
                m
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn issuer_must_be_allowed() {
        let c = config("");
        assert_eq!(authorize(&c, &c.policy, &claims(json!({}))), Ok(()));
        for bad in [
            json!({"iss": null}),
            json!({"iss":"https://other"}),
            json!({"iss":["https://idp"]}),
        ] {
            assert_eq!(
                authorize(&c, &c.policy, &claims(bad)),
                Err(Denial::InvalidToken(TokenProblem::WrongIssuer))
            );
        }
        let c = config(r#","issuers_allowed":["https://a","https://b"]"#);
        assert_eq!(
            authorize(&c, &c.policy, &claims(json!({"iss":"https://b"}))),
            Ok(())
        );
        assert!(authorize(&c, &c.policy, &claims(json!({}))).is_err());
    }

    #[test]
    fn an_issuer_configured_with_or_without_its_trailing_slash_accepts_both_spellings() {
        for configured in ["https://idp/oauth2/default", "https://idp/oauth2/default/"] {
            let c = Config::parse(format!(r#"{{"issuer":"{configured}"}}"#).as_bytes()).unwrap();
            for iss in ["https://idp/oauth2/default", "https://idp/oauth2/default/"] {
                assert_eq!(
                    authorize(&c, &c.policy, &claims(json!({ "iss": iss }))),
                    Ok(()),
                    "{configured} with {iss}"
                );
            }
            assert_eq!(
                authorize(&c, &c.policy, &claims(json!({"iss": "https://idp/oauth2"}))),
                Err(Denial::InvalidToken(TokenProblem::WrongIssuer))
            );
        }
    }

    #[test]
    fn a_refusal_is_explained_with_what_the_token_had_and_what_was_required() {
        let c = config(
            r#","clients_allowed":["svc"],"groups_claim":["realm","groups"],"groups_required":["ops oncall","admin"],"claims_forbidden":["act"]"#,
        );
        let why = |v: Value| {
            let claims = claims(v);
            let denial = authorize(&c, &c.policy, &claims).unwrap_err();
            explain(&c, &c.policy, &claims, &denial).unwrap()
        };
        assert_eq!(
            why(json!({"iss": "https://evil", "cid": "svc"})),
            r#"iss `https://evil`, allowed ["https://idp", "https://idp/"]"#
        );
        assert_eq!(
            why(json!({"cid": "intruder\n"})),
            r#"client intruder\n, allowed ["svc"]"#
        );
        assert_eq!(
            why(json!({"cid": "svc", "realm": {"groups": ["ops"]}})),
            r#"realm.groups has `ops`, required one of ["ops oncall", "admin"]"#
        );
        assert_eq!(
            why(json!({"cid": "svc"})),
            r#"realm.groups has none, required one of ["ops oncall", "admin"]"#
        );
        assert_eq!(
            why(json!({"cid": "svc", "realm": {"groups": ["admin"]}, "act": {}})),
            r#"carries ["act"]"#
        );
        // Whatever the token holds, the line stays short.
        let long = "g".repeat(10_000);
        assert!(why(json!({"cid": "svc", "realm": {"groups": [long]}})).len() < 200);
    }

    #[test]
    fn client_allow_list_uses_first_present_claim() {
        let c = config(r#","clients_allowed":["svc-a"]"#);
        let check = |v: Value| authorize(&c, &c.policy, &claims(v));
        assert_eq!(check(json!({"cid":"svc-a","sub":"x"})), Ok(()));
        assert_eq!(check(json!({"client_id":"svc-a","cid":"x"})), Ok(()));
        assert_eq!(check(json!({"sub":"svc-a"})), Ok(()));
        // `client_id` wins over `cid`: a token cannot pick the claim that suits it.
        assert_eq!(
            check(json!({"client_id":"x","cid":"svc-a"})),
            Err(Denial::InvalidToken(TokenProblem::ClientNotAllowed))
        );
        assert!(check(json!({})).is_err());
    }

    /// (configuration, claims, passes): Kong's OR of ANDs over every form of value.
    #[test]
    fn the_elements_are_alternatives_and_an_element_needs_all_its_values() {
        let cases = [
            // OR of ANDs.
            (
                r#""scopes_required":["read write","admin"]"#,
                json!({"scope":"write read"}),
                true,
            ),
            (
                r#""scopes_required":["read write","admin"]"#,
                json!({"scope":"admin"}),
                true,
            ),
            (
                r#""scopes_required":["read write","admin"]"#,
                json!({"scope":"read"}),
                false,
            ),
            (
                r#""scopes_required":["read","write"]"#,
                json!({"scope":"read"}),
                true,
            ),
            (
                r#""scopes_required":["read  write"]"#,
                json!({"scp":["read","write","x"]}),
                true,
            ),
            (
                r#""scopes_required":["read"]"#,
                json!({"scope":"readwrite"}),
                false,
            ),
            // Forms of value: space-separated string, array, one string, absent, other types.
            (r#""scopes_required":["a"]"#, json!({"scp":"a"}), true),
            (r#""scopes_required":["a"]"#, json!({"scp":["b","a"]}), true),
            (r#""scopes_required":["a"]"#, json!({}), false),
            (r#""scopes_required":["a"]"#, json!({"scp":[["a"]]}), false),
            (
                r#""scopes_required":["a"]"#,
                json!({"scp":{"a":true}}),
                false,
            ),
            (r#""scopes_required":["1"]"#, json!({"scp":[1]}), false),
            // `scope` first; `scp` only when there is no `scope`.
            (
                r#""scopes_required":["a"]"#,
                json!({"scope":"b","scp":["a"]}),
                false,
            ),
            // Audience, groups, roles, with their default claims.
            (
                r#""audience_required":["api://a","api://b"]"#,
                json!({"aud":["x","api://b"]}),
                true,
            ),
            (
                r#""audience_required":["api://a"]"#,
                json!({"aud":"api://a"}),
                true,
            ),
            (
                r#""audience_required":["api://a"]"#,
                json!({"aud":"api://x"}),
                false,
            ),
            (
                r#""groups_required":["Everyone admins"]"#,
                json!({"groups":["admins","Everyone"]}),
                true,
            ),
            (
                r#""groups_required":["admins"]"#,
                json!({"groups":["Everyone"]}),
                false,
            ),
            (
                r#""roles_required":["ops"]"#,
                json!({"roles":"dev ops"}),
                true,
            ),
            // Paths, and arrays inside them.
            (
                r#""groups_claim":["realm","groups"],"groups_required":["g1"]"#,
                json!({"realm":{"groups":["g1"]}}),
                true,
            ),
            (
                r#""groups_claim":["realm","groups"],"groups_required":["g1"]"#,
                json!({"groups":["g1"]}),
                false,
            ),
            (
                r#""groups_claim":["realm","groups"],"groups_required":["g1 g2"]"#,
                json!({"realm":[{"groups":["g1"]},{"groups":"g2"}]}),
                true,
            ),
            (
                r#""roles_claim":["a","b","c"],"roles_required":["r"]"#,
                json!({"a":{"b":{"c":["r"]}}}),
                true,
            ),
            (
                r#""roles_claim":["a","b","c"],"roles_required":["r"]"#,
                json!({"a":{"b":"r"}}),
                false,
            ),
            (
                r#""scopes_claim":["perms"],"scopes_required":["x"]"#,
                json!({"scope":"x","perms":"y"}),
                false,
            ),
            // Nothing required: nothing checked.
            (r#""groups_claim":["nowhere"]"#, json!({}), true),
        ];
        for (keys, token, passes) in cases {
            let c = config(&format!(",{keys}"));
            let got = authorize(&c, &c.policy, &claims(token.clone()));
            assert_eq!(got.is_ok(), passes, "{keys} with {token}: {got:?}");
            if let Err(denial) = got {
                assert!(matches!(denial, Denial::InsufficientScope(_)), "{denial:?}");
                assert_eq!(denial.status(), 403);
            }
        }
    }

    #[test]
    fn the_denial_names_the_first_rule_that_failed() {
        let c = config(
            r#","audience_required":["api"],"scopes_required":["s"],"groups_required":["g"],"roles_required":["r"],"claims_forbidden":["act"]"#,
        );
        let all = json!({"aud":"api","scp":["s"],"groups":["g"],"roles":["r"]});
        assert_eq!(authorize(&c, &c.policy, &claims(all.clone())), Ok(()));
        for (drop, rule) in [
            ("aud", ClaimRule::Audience),
            ("scp", ClaimRule::Scopes),
            ("groups", ClaimRule::Groups),
            ("roles", ClaimRule::Roles),
        ] {
            let mut token = all.clone();
            token.as_object_mut().unwrap().remove(drop);
            assert_eq!(
                authorize(&c, &c.policy, &claims(token)),
                Err(Denial::InsufficientScope(rule))
            );
        }
        let mut token = all.clone();
        token["act"] = json!({"sub": "someone-else"});
        assert_eq!(
            authorize(&c, &c.policy, &claims(token)),
            Err(Denial::InsufficientScope(ClaimRule::ForbiddenClaim))
        );
        // The issuer is judged first, and is a 401.
        assert_eq!(
            authorize(&c, &c.policy, &claims(json!({"iss":"x"}))),
            Err(Denial::InvalidToken(TokenProblem::WrongIssuer))
        );
    }
}
