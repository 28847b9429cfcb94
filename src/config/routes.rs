//! Which policy a request gets: `routes`, an ordered list of rules (hosts, a path prefix or
//! exact path, methods) each naming a policy; the first rule that matches picks it, and no
//! match means the top-level keys. Kong attaches a plugin per route; Envoy's Wasm filter has
//! no per-route configuration, so one filter carries the rules.

use super::raw::RawRoute;
use super::{err, ConfigError};

/// A policy: 0 is the top-level keys, `n` the `n`-th of `policies` (in name order).
pub type PolicyId = usize;

/// Past this, a typo in generated configuration rather than a gateway's routes.
const MAX_ROUTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// `api.example.com`: any port.
    Name(String),
    /// `api.example.com:8443`: that port only.
    Authority(String),
    /// `*.example.com`: any name below it (not `example.com` itself), any port.
    Below(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Path {
    Any,
    /// Envoy's and Kong's prefix: a plain string prefix (`/admin` matches `/administer`).
    Prefix(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    hosts: Vec<Host>,
    path: Path,
    methods: Vec<String>,
    policy: PolicyId,
}

#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// `names` are the policies' names, in [`PolicyId`] order from 1.
    pub(super) fn from_raw(raw: &[RawRoute], names: &[String]) -> Result<Routes, ConfigError> {
        if raw.len() > MAX_ROUTES {
            return Err(err("routes", format!("at most {MAX_ROUTES} rules")));
        }
        let routes = raw
            .iter()
            .enumerate()
            .map(|(i, r)| route(i, r, names))
            .collect::<Result<_, _>>()?;
        Ok(Routes { routes })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The policy of the first rule the request matches, if any. `path` is `:path` (its
    /// query is ignored); the authority and the method are asked for only when a rule whose
    /// path matched looks at them, each at most once: every read is a host call.
    pub fn select(
        &self,
        path: &str,
        mut authority: impl FnMut() -> String,
        mut method: impl FnMut() -> String,
    ) -> Option<PolicyId> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let mut seen_authority: Option<String> = None;
        let mut seen_method: Option<String> = None;
        for r in &self.routes {
            if !r.path.matches(path) {
                continue;
            }
            if !r.methods.is_empty() {
                let m = seen_method.get_or_insert_with(&mut method);
                if !r.methods.iter().any(|x| x == m) {
                    continue;
                }
            }
            if !r.hosts.is_empty() {
                let a = seen_authority.get_or_insert_with(|| authority().to_ascii_lowercase());
                let name = host_name(a);
                if !r.hosts.iter().any(|h| h.matches(a, name)) {
                    continue;
                }
            }
            return Some(r.policy);
        }
        None
    }
}

/// `authority` without its port (IPv6 literals keep their brackets).
fn host_name(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            if name.starts_with('[') && !name.ends_with(']') {
                authority
            } else {
                name
            }
        }
        _ => authority,
    }
}

impl Host {
    fn matches(&self, authority: &str, name: &str) -> bool {
        match self {
            Host::Name(n) => n == name,
            Host::Authority(a) => a == authority,
            Host::Below(suffix) => name.len() > suffix.len() && name.ends_with(suffix.as_str()),
        }
    }
}

impl Path {
    fn matches(&self, path: &str) -> bool {
        match self {
            Path::Any => true,
            Path::Prefix(p) => path.starts_with(p.as_str()),
            Path::Exact(p) => path == p,
        }
    }
}

fn route(i: usize, raw: &RawRoute, names: &[String]) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    let policy = names
        .iter()
        .position(|n| *n == raw.policy)
        .map(|p| p + 1)
        .ok_or_else(|| {
            err(
                &key("policy"),
                format!("no policy named `{}` in `policies`", raw.policy),
            )
        })?;
    let hosts = raw
        .hosts
        .iter()
        .flatten()
        .map(|h| host(h).ok_or_else(|| err(&key("hosts"), format!("`{h}` is not a host"))))
        .collect::<Result<Vec<_>, _>>()?;
    if raw.hosts.as_ref().is_some_and(Vec::is_empty) {
        return Err(err(
            &key("hosts"),
            "must not be empty (leave it out for any host)",
        ));
    }
    let path = match (&raw.path_prefix, &raw.path_exact) {
        (Some(_), Some(_)) => {
            return Err(err(
                &key("path_exact"),
                "a rule has `path_prefix` or `path_exact`, not both",
            ))
        }
        (Some(p), None) => Path::Prefix(path_of(p).ok_or_else(|| bad_path(&key("path_prefix")))?),
        (None, Some(p)) => Path::Exact(path_of(p).ok_or_else(|| bad_path(&key("path_exact")))?),
        (None, None) => Path::Any,
    };
    let methods = raw.methods.clone().unwrap_or_default();
    if raw.methods.as_ref().is_some_and(Vec::is_empty)
        || methods
            .iter()
            .any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        return Err(err(
            &key("methods"),
            "must be HTTP methods such as GET (leave it out for any method)",
        ));
    }
    Ok(Route {
        hosts,
        path,
        methods: methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
        policy,
    })
}

fn bad_path(key: &str) -> ConfigError {
    err(key, "must start with `/` and hold no `?`")
}

fn path_of(p: &str) -> Option<String> {
    (p.starts_with('/') && !p.contains('?') && !p.chars().any(char::is_control))
        .then(|| p.to_string())
}

fn host(h: &str) -> Option<Host> {
    let h = h.to_ascii_lowercase();
    let valid = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if let Some(suffix) = h.strip_prefix("*.") {
        return valid(suffix).then(|| Host::Below(format!(".{suffix}")));
    }
    match h.rsplit_once(':') {
        Some((name, port)) => {
            (valid(name) && port.parse::<u16>().is_ok()).then(|| Host::Authority(h.clone()))
        }
        None => valid(&h).then(|| Host::Name(h.clone())),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn config(routes: &str) -> Config {
        Config::parse(
            format!(
                r#"{{"issuer":"https://idp","policies":{{"admin":{{}},"orders":{{}},"open":{{"public":true}}}},"routes":{routes}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn pick(c: &Config, authority: &str, path: &str, method: &str) -> &'static str {
        let id = c
            .routes
            .select(path, || authority.to_string(), || method.to_string())
            .unwrap_or(0);
        match c.policy_name(id) {
            "admin" => "admin",
            "orders" => "orders",
            "open" => "open",
            _ => "default",
        }
    }

    #[test]
    fn the_first_matching_rule_picks_the_policy() {
        let c = config(
            r#"[{"path_exact":"/health","policy":"open"},
                {"path_prefix":"/admin","methods":["post","DELETE"],"policy":"admin"},
                {"path_prefix":"/admin","policy":"orders"},
                {"hosts":["*.shop.example","api.example:8443"],"path_prefix":"/","policy":"orders"}]"#,
        );
        for (authority, path, method, want) in [
            ("x", "/health", "GET", "open"),
            ("x", "/health?probe=1", "GET", "open"),
            ("x", "/healthz", "GET", "default"),
            ("x", "/admin/users", "POST", "admin"),
            ("x", "/admin/users", "DELETE", "admin"),
            ("x", "/admin/users", "GET", "orders"),
            // Envoy's and Kong's prefix is a plain string prefix.
            ("x", "/administer", "POST", "admin"),
            ("eu.shop.example", "/cart", "GET", "orders"),
            ("EU.Shop.Example:443", "/cart", "GET", "orders"),
            ("shop.example", "/cart", "GET", "default"),
            ("evilshop.example", "/cart", "GET", "default"),
            ("api.example:8443", "/x", "GET", "orders"),
            ("api.example", "/x", "GET", "default"),
            ("api.example:9443", "/x", "GET", "default"),
        ] {
            assert_eq!(
                pick(&c, authority, path, method),
                want,
                "{authority} {method} {path}"
            );
        }
    }

    #[test]
    fn the_host_and_method_are_read_only_for_a_rule_whose_path_matched() {
        let c = config(
            r#"[{"path_prefix":"/a","hosts":["x"],"policy":"admin"},
                {"path_prefix":"/b","methods":["GET"],"policy":"orders"}]"#,
        );
        let reads = std::cell::Cell::new(0);
        let read = |v: &str| {
            reads.set(reads.get() + 1);
            v.to_string()
        };
        assert_eq!(c.routes.select("/c", || read("x"), || read("GET")), None);
        assert_eq!(reads.get(), 0);
        assert_eq!(
            c.routes.select("/b", || read("x"), || read("GET")),
            c.policy_named("orders")
        );
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn a_host_without_a_port_matches_any_port() {
        let c = config(r#"[{"hosts":["api.example"],"policy":"admin"}]"#);
        assert_eq!(pick(&c, "api.example", "/", "GET"), "admin");
        assert_eq!(pick(&c, "api.example:8080", "/", "GET"), "admin");
        assert_eq!(pick(&c, "[::1]:8080", "/", "GET"), "default");
    }

    #[test]
    fn rules_that_cannot_work_are_refused_naming_the_rule() {
        for (routes, key) in [
            (r#"[{"policy":"nosuch"}]"#, "routes[0].policy"),
            (
                r#"[{"policy":"admin"},{"path_prefix":"admin","policy":"admin"}]"#,
                "routes[1].path_prefix",
            ),
            (
                r#"[{"path_exact":"/a?b","policy":"admin"}]"#,
                "routes[0].path_exact",
            ),
            (
                r#"[{"path_exact":"/a","path_prefix":"/","policy":"admin"}]"#,
                "routes[0].path_exact",
            ),
            (r#"[{"hosts":[],"policy":"admin"}]"#, "routes[0].hosts"),
            (r#"[{"hosts":["a b"],"policy":"admin"}]"#, "routes[0].hosts"),
            (
                r#"[{"methods":["GET POST"],"policy":"admin"}]"#,
                "routes[0].methods",
            ),
            (r#"[{"methods":[],"policy":"admin"}]"#, "routes[0].methods"),
            (r#"[{"policy":"admin","path":"/"}]"#, "routes"),
        ] {
            let json = format!(
                r#"{{"issuer":"https://idp","policies":{{"admin":{{}}}},"routes":{routes}}}"#
            );
            let e = Config::parse(json.as_bytes()).unwrap_err();
            assert_eq!(e.key, key, "{routes}: {e}");
        }
    }
}
