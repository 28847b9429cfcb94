//! Finding the caller's credential (header, then body, then query) and stripping every
//! credential field from what goes upstream.

use std::borrow::Cow;
use std::fmt;
use std::rc::Rc;

use base64::Engine;

use crate::config::{Config, Policy};
use crate::outcome::{Denial, TokenProblem};

/// A client secret: never printed, never sent anywhere but to the token endpoint.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCredentials {
    pub id: String,
    pub secret: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Client(ClientCredentials),
    Bearer(Rc<str>),
}

/// The parts of a request that can carry a credential.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestView<'a> {
    pub authorization: Option<&'a str>,
    /// `:path`, with its query.
    pub path: &'a str,
    pub content_type: Option<&'a str>,
}

/// What was found, and how the request must be rewritten so no credential goes upstream.
/// The `Authorization` header is always removed by the caller of this module.
#[derive(Debug, PartialEq, Eq)]
pub struct Extracted {
    pub credential: Result<Credential, Denial>,
    /// The path without credential query parameters, when it changed.
    pub new_path: Option<String>,
    /// The body without credential fields, when it changed.
    pub new_body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Form,
    Json,
}

fn body_kind(content_type: Option<&str>) -> Option<BodyKind> {
    let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Some(BodyKind::Form),
        "application/json" => Some(BodyKind::Json),
        _ => None,
    }
}

/// The largest body searched for a credential when the headers carry none (Envoy, with
/// `allow_on_headers_stop_iteration`): a larger one is refused as carrying none. Bodies are
/// stripped of credential fields whatever their size, within the host's buffer limit.
pub const MAX_SEARCHED_BODY: usize = 64 * 1024;

/// Whether the body must be buffered before deciding: only when the operator allowed body
/// credentials and the body is of a kind that can hold them.
pub fn needs_body(config: &Config, policy: &Policy, view: &RequestView) -> bool {
    config.sources(policy).0.body && body_kind(view.content_type).is_some()
}

const CLIENT_FIELDS: [&str; 3] = ["client_id", "client_secret", "grant_type"];
const BEARER_FIELD: &str = "access_token";

/// Finds the credential. `body` is `Some` only when [`needs_body`] said so.
pub fn extract(
    config: &Config,
    policy: &Policy,
    view: &RequestView,
    body: Option<&[u8]>,
) -> Extracted {
    let (cc, bearer) = config.sources(policy);
    let mut found: Option<Result<Credential, Denial>> = None;

    if let Some(value) = view.authorization {
        found = from_authorization(value, cc.header, bearer.header);
    }

    let mut new_body = None;
    if let (true, Some(body), Some(kind)) = (cc.body, body, body_kind(view.content_type)) {
        let (cred, stripped) = match kind {
            BodyKind::Form => from_form_body(body),
            BodyKind::Json => from_json_body(body),
        };
        if found.is_none() {
            found = cred.map(Ok);
        }
        new_body = stripped;
    }

    let mut new_path = None;
    if cc.query || bearer.query {
        if let Some((base, query)) = view.path.split_once('?') {
            let (cred, kept) = from_query(query, cc.query, bearer.query);
            if found.is_none() {
                found = cred.map(Ok);
            }
            if let Some(kept) = kept {
                new_path = Some(if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{kept}")
                });
            }
        }
    }

    Extracted {
        credential: found.unwrap_or(Err(Denial::Missing)),
        new_path,
        new_body,
    }
}

fn from_authorization(
    value: &str,
    basic: bool,
    bearer: bool,
) -> Option<Result<Credential, Denial>> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") && basic {
        Some(decode_basic(rest).ok_or(Denial::InvalidClient))
    } else if scheme.eq_ignore_ascii_case("bearer") && bearer {
        // A space inside the token is refused by the gate, past its cache.
        if rest.is_empty() {
            Some(Err(Denial::InvalidToken(TokenProblem::Malformed)))
        } else {
            Some(Ok(Credential::Bearer(rest.into())))
        }
    } else {
        None
    }
}

/// RFC 7617: `base64(id ":" secret)`, both as they are. A caller's request to the API is
/// not an OAuth token request, so RFC 6749 §2.3.1's form-encoding does not apply to it
/// (`ab+c` is that secret, not `ab c`); it applies where the filter itself asks the token
/// endpoint ([`basic_header`]). The id ends at the first colon; the secret may hold more.
fn decode_basic(b64: &str) -> Option<Credential> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    client(id.to_string(), secret.to_string())
}

fn client(id: String, secret: String) -> Option<Credential> {
    if id.is_empty() || secret.is_empty() || id.chars().any(char::is_control) {
        return None;
    }
    Some(Credential::Client(ClientCredentials {
        id,
        secret: Secret(secret),
    }))
}

fn form_decode(s: &str) -> String {
    if !s.contains(['%', '+']) {
        return s.to_string();
    }
    form_urlencoded::parse(format!("k={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn from_form_body(body: &[u8]) -> (Option<Credential>, Option<Vec<u8>>) {
    let mut id = None;
    let mut secret = None;
    let mut stripped = false;
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "client_id" => id = Some(v.into_owned()),
            "client_secret" => secret = Some(v.into_owned()),
            "grant_type" => {}
            _ => {
                kept.append_pair(&k, &v);
                continue;
            }
        }
        stripped = true;
    }
    let cred = id.zip(secret).and_then(|(i, s)| client(i, s));
    (cred, stripped.then(|| kept.finish().into_bytes()))
}

fn from_json_body(body: &[u8]) -> (Option<Credential>, Option<Vec<u8>>) {
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice(body) else {
        return (None, None);
    };
    let mut take = |k: &str| map.remove(k);
    let id = take("client_id");
    let secret = take("client_secret");
    let grant = take("grant_type");
    if id.is_none() && secret.is_none() && grant.is_none() {
        return (None, None);
    }
    let as_string = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    let cred = as_string(id)
        .zip(as_string(secret))
        .and_then(|(i, s)| client(i, s));
    let stripped = serde_json::to_vec(&serde_json::Value::Object(map)).ok();
    (cred, stripped)
}

/// Works on the raw query so that parameters the upstream needs keep their exact encoding.
fn from_query(query: &str, cc: bool, bearer: bool) -> (Option<Credential>, Option<String>) {
    let mut id = None;
    let mut secret = None;
    let mut token = None;
    let mut kept: Vec<Cow<str>> = Vec::new();
    let mut changed = false;
    let is_field = |k: &str| {
        let key = form_decode(k);
        (cc && CLIENT_FIELDS.contains(&key.as_str())) || (bearer && key == BEARER_FIELD)
    };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !is_field(k) {
            match without_semicolon_fields(pair, is_field) {
                Some(rest) => {
                    changed = true;
                    if !rest.is_empty() {
                        kept.push(rest.into());
                    }
                }
                None => kept.push(pair.into()),
            }
            continue;
        }
        let key = form_decode(k);
        changed = true;
        match key.as_str() {
            "client_id" => id = Some(form_decode(v)),
            "client_secret" => secret = Some(form_decode(v)),
            "access_token" => token = Some(form_decode(v)),
            _ => {}
        }
    }
    let cred = match (id.zip(secret).and_then(|(i, s)| client(i, s)), token) {
        (Some(c), _) => Some(c),
        (None, Some(t)) if !t.is_empty() => Some(Credential::Bearer(t.into())),
        _ => None,
    };
    (cred, changed.then(|| kept.join("&")))
}

/// `pair` without the `;`-separated parts that name a credential parameter, if it has any.
/// Only `&` separates parameters here (as for WHATWG URLs, Kong and Envoy's `jwt_authn`), so
/// these are not taken as credentials; but some upstreams split on `;` too, so they are not
/// passed on either.
fn without_semicolon_fields(pair: &str, is_field: impl Fn(&str) -> bool) -> Option<String> {
    fn name(seg: &str) -> &str {
        seg.split_once('=').map_or(seg, |(k, _)| k)
    }
    if !pair.contains(';') || !pair.split(';').any(|seg| is_field(name(seg))) {
        return None;
    }
    let kept: Vec<&str> = pair.split(';').filter(|seg| !is_field(name(seg))).collect();
    Some(kept.join(";"))
}

/// `Authorization: Basic` for the token endpoint, RFC 6749 §2.3.1.
pub fn basic_header(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse(format!(r#"{{"issuer":"http://idp"{extra}}}"#).as_bytes()).unwrap()
    }

    fn client_cred(id: &str, secret: &str) -> Result<Credential, Denial> {
        Ok(Credential::Client(ClientCredentials {
            id: id.into(),
            secret: Secret::new(secret),
        }))
    }

    fn view<'a>(auth: Option<&'a str>, path: &'a str, ct: Option<&'a str>) -> RequestView<'a> {
        RequestView {
            authorization: auth,
            path,
            content_type: ct,
        }
    }

    #[test]
    fn basic_carries_id_and_secret_as_they_are() {
        let c = config("");
        let raw_basic = |pair: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        for (id, secret) in [
            ("demo-client", "demo-secret"),
            ("svc", "ab+c&d"),
            ("svc", "100%25 sure%"),
            ("svc", "s3cr:t:with:colons"),
            ("my client", "zoë-ß-密码"),
            ("a+b", "x=y&z"),
        ] {
            let header = raw_basic(&format!("{id}:{secret}"));
            let got = extract(&c, &c.policy, &view(Some(&header), "/", None), None);
            assert_eq!(got.credential, client_cred(id, secret), "{id}:{secret}");
        }
        for bad in ["nocolon", ":secret", "id:", "a\u{1}b:s"] {
            let got = extract(&c, &c.policy, &view(Some(&raw_basic(bad)), "/", None), None);
            assert_eq!(got.credential, Err(Denial::InvalidClient), "{bad}");
        }
    }

    #[test]
    fn bearer_from_header() {
        let c = config("");
        let got = extract(
            &c,
            &c.policy,
            &view(Some("Bearer abc.def.ghi"), "/x", None),
            None,
        );
        assert_eq!(got.credential, Ok(Credential::Bearer("abc.def.ghi".into())));
        let got = extract(&c, &c.policy, &view(Some("bearer   abc"), "/x", None), None);
        assert_eq!(got.credential, Ok(Credential::Bearer("abc".into())));
    }

    #[test]
    fn malformed_and_missing() {
        let c = config("");
        for (auth, want) in [
            (None, Denial::Missing),
            (Some(""), Denial::Missing),
            (Some("Digest x"), Denial::Missing),
            (Some("Bearer"), Denial::Missing),
            (Some("Basic !!!"), Denial::InvalidClient),
            (Some("Basic bm9jb2xvbg=="), Denial::InvalidClient), // "nocolon"
            (Some("Basic Og=="), Denial::InvalidClient),         // ":"
            (Some("Basic /w=="), Denial::InvalidClient),         // not UTF-8
        ] {
            assert_eq!(
                extract(&c, &c.policy, &view(auth, "/", None), None).credential,
                Err(want),
                "{auth:?}"
            );
        }
    }

    #[test]
    fn disabled_methods_are_not_credentials() {
        let only_bearer = config(r#","auth_methods":["bearer"]"#);
        let basic = basic_header("a", "b");
        assert_eq!(
            extract(
                &only_bearer,
                &only_bearer.policy,
                &view(Some(&basic), "/", None),
                None
            )
            .credential,
            Err(Denial::Missing)
        );
        let only_cc = config(r#","auth_methods":["client_credentials"]"#);
        assert_eq!(
            extract(
                &only_cc,
                &only_cc.policy,
                &view(Some("Bearer t"), "/", None),
                None
            )
            .credential,
            Err(Denial::Missing)
        );
    }

    #[test]
    fn a_credential_after_a_semicolon_is_neither_taken_nor_passed_on() {
        let c = config(
            r#","client_credentials_param_type":["query"],"bearer_token_param_type":["query"]"#,
        );
        let got = extract(
            &c,
            &c.policy,
            &view(
                None,
                "/a?x=1;client_id=id;client_secret=s;y=2&access_token=t;z&q=a;b",
                None,
            ),
            None,
        );
        // `&` alone separates: the only credential is the token, ending at `;z`.
        assert_eq!(got.credential, Ok(Credential::Bearer("t;z".into())));
        assert_eq!(got.new_path.as_deref(), Some("/a?x=1;y=2&q=a;b"));
        let got = extract(&c, &c.policy, &view(None, "/a?q=a;b;c=d", None), None);
        assert_eq!(got.new_path, None);
        // What is left must not look like a credential either.
        let got = extract(
            &c,
            &c.policy,
            &view(None, "/a?grant_type;client_id&x", None),
            None,
        );
        assert_eq!(got.new_path.as_deref(), Some("/a?x"));
        assert_eq!(got.credential, Err(Denial::Missing));
    }

    #[test]
    fn query_credentials_are_read_and_stripped_keeping_other_params_exact() {
        let c = config(
            r#","client_credentials_param_type":["query"],"bearer_token_param_type":["query"]"#,
        );
        let got = extract(
            &c,
            &c.policy,
            &view(
                None,
                "/a?x=%2F1&client_id=id&client_secret=s%2B&grant_type=client_credentials&y",
                None,
            ),
            None,
        );
        assert_eq!(got.credential, client_cred("id", "s+"));
        assert_eq!(got.new_path.as_deref(), Some("/a?x=%2F1&y"));
        let got = extract(
            &c,
            &c.policy,
            &view(None, "/a?access_token=tok", None),
            None,
        );
        assert_eq!(got.credential, Ok(Credential::Bearer("tok".into())));
        assert_eq!(got.new_path.as_deref(), Some("/a"));
        // Query parameters are left alone when query credentials are not enabled.
        let header_only = config("");
        let got = extract(
            &header_only,
            &header_only.policy,
            &view(None, "/a?client_id=id&client_secret=s", None),
            None,
        );
        assert_eq!(got.credential, Err(Denial::Missing));
        assert_eq!(got.new_path, None);
    }

    #[test]
    fn form_and_json_bodies() {
        let c = config(r#","client_credentials_param_type":["body"]"#);
        let form = view(
            None,
            "/",
            Some("application/x-www-form-urlencoded; charset=utf-8"),
        );
        assert!(needs_body(&c, &c.policy, &form));
        let got = extract(
            &c,
            &c.policy,
            &form,
            Some(b"a=1&client_id=id&client_secret=s%26&grant_type=client_credentials&b=x+y"),
        );
        assert_eq!(got.credential, client_cred("id", "s&"));
        assert_eq!(got.new_body.as_deref(), Some(&b"a=1&b=x+y"[..]));

        let json = view(None, "/", Some("application/json"));
        let got = extract(
            &c,
            &c.policy,
            &json,
            Some(br#"{"client_id":"id","client_secret":"s","keep":1}"#),
        );
        assert_eq!(got.credential, client_cred("id", "s"));
        assert_eq!(got.new_body.as_deref(), Some(&br#"{"keep":1}"#[..]));

        let got = extract(&c, &c.policy, &json, Some(b"[1,2]"));
        assert_eq!((got.credential, got.new_body), (Err(Denial::Missing), None));
        let got = extract(
            &c,
            &c.policy,
            &json,
            Some(br#"{"client_id":5,"client_secret":"s"}"#),
        );
        assert_eq!(got.credential, Err(Denial::Missing));
        assert_eq!(got.new_body.as_deref(), Some(&b"{}"[..]));

        assert!(!needs_body(
            &c,
            &c.policy,
            &view(None, "/", Some("text/plain"))
        ));
        let header_only = config("");
        assert!(!needs_body(&header_only, &header_only.policy, &form));
    }

    #[test]
    fn header_wins_but_body_is_still_stripped() {
        let c = config(r#","client_credentials_param_type":["header","body","query"]"#);
        let basic = basic_header("hdr", "1");
        let got = extract(
            &c,
            &c.policy,
            &view(
                Some(&basic),
                "/?client_id=q&client_secret=2",
                Some("application/x-www-form-urlencoded"),
            ),
            Some(b"client_id=b&client_secret=3"),
        );
        assert_eq!(got.credential, client_cred("hdr", "1"));
        assert_eq!(got.new_body.as_deref(), Some(&b""[..]));
        assert_eq!(got.new_path.as_deref(), Some("/"));
        // Body before query.
        let got = extract(
            &c,
            &c.policy,
            &view(
                None,
                "/?client_id=q&client_secret=2",
                Some("application/x-www-form-urlencoded"),
            ),
            Some(b"client_id=b&client_secret=3"),
        );
        assert_eq!(got.credential, client_cred("b", "3"));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let c = ClientCredentials {
            id: "id".into(),
            secret: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
