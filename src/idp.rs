//! Talking to the IdP: the requests the filter sends and how it reads the answers
//! (OIDC Discovery 1.0, RFC 6749 §4.4 client credentials, RFC 6749 §5 responses, RFC 7662
//! introspection).

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::{IdpSettings, TokenEndpointAuth};
use crate::credentials::{basic_header, ClientCredentials};
use crate::url::HttpUrl;

/// IdP answers larger than this are treated as garbage.
pub const MAX_RESPONSE_BYTES: usize = 512 * 1024;

/// An HTTP request for the host to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    /// The host's upstream name (Envoy cluster).
    pub upstream: String,
    /// Pseudo-headers first, as proxy-wasm hosts expect.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

impl Callout {
    /// The URL and upstream it goes to, for log lines: `https://host/path via cluster okta`.
    /// Neither holds a secret (credentials travel in headers and the body).
    pub fn describe(&self) -> String {
        let h = |name: &str| {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        format!(
            "{}://{}{} via `{}`",
            h(":scheme"),
            h(":authority"),
            h(":path"),
            self.upstream
        )
    }

    pub fn get(idp: &IdpSettings, url: &HttpUrl) -> Callout {
        Callout {
            upstream: idp.cluster_for(url).to_string(),
            headers: vec![
                (":method".into(), "GET".into()),
                (":path".into(), url.path.clone()),
                (":authority".into(), url.authority.clone()),
                (
                    ":scheme".into(),
                    if url.https { "https" } else { "http" }.into(),
                ),
                ("accept".into(), "application/json".into()),
            ],
            body: None,
            timeout_ms: idp.timeout_ms,
        }
    }

    /// `grant_type=client_credentials` with the caller's credentials.
    pub fn token(idp: &IdpSettings, url: &HttpUrl, client: &ClientCredentials) -> Callout {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if !idp.scopes.is_empty() {
            form.append_pair("scope", &idp.scopes.join(" "));
        }
        Callout::post_form(idp, url, form, client, idp.token_endpoint_auth)
    }

    /// RFC 7662 §2.1: is `token` active? Asked as `client` (the gateway's own).
    pub fn introspect(
        idp: &IdpSettings,
        url: &HttpUrl,
        token: &str,
        client: &ClientCredentials,
    ) -> Callout {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", token);
        form.append_pair("token_type_hint", "access_token");
        Callout::post_form(idp, url, form, client, idp.introspection_auth)
    }

    /// A form POST authenticated as `client` (RFC 6749 §2.3.1).
    fn post_form(
        idp: &IdpSettings,
        url: &HttpUrl,
        mut form: form_urlencoded::Serializer<'_, String>,
        client: &ClientCredentials,
        auth: TokenEndpointAuth,
    ) -> Callout {
        let mut callout = Callout::get(idp, url);
        if let Some(method) = callout.headers.get_mut(0) {
            method.1 = "POST".into();
        }
        callout.headers.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
        match auth {
            TokenEndpointAuth::ClientSecretBasic => callout.headers.push((
                "authorization".into(),
                basic_header(&client.id, client.secret.expose()),
            )),
            TokenEndpointAuth::ClientSecretPost => {
                form.append_pair("client_id", &client.id);
                form.append_pair("client_secret", client.secret.expose());
            }
        }
        callout.body = Some(form.finish().into_bytes());
        callout
    }
}

/// The endpoints discovery yields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    pub token_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
}

#[derive(Deserialize)]
struct DiscoveryDoc {
    issuer: String,
    jwks_uri: String,
    token_endpoint: Option<String>,
    introspection_endpoint: Option<String>,
}

/// Reads a discovery document. Its `issuer` must be ours (OIDC Discovery §4.3): a document
/// for another issuer would make us trust another issuer's keys.
pub fn parse_discovery(
    issuer: &str,
    status: Option<u32>,
    body: &[u8],
) -> Result<Endpoints, String> {
    ok_status(status)?;
    let doc: DiscoveryDoc =
        serde_json::from_slice(body).map_err(|_| "the document is not valid JSON".to_string())?;
    if doc.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!(
            "the document is for issuer `{}`, not the configured `{issuer}`",
            crate::log_budget::bounded(&doc.issuer)
        ));
    }
    HttpUrl::parse(&doc.jwks_uri).map_err(|e| format!("jwks_uri {e}"))?;
    if let Some(t) = &doc.token_endpoint {
        HttpUrl::parse(t).map_err(|e| format!("token_endpoint {e}"))?;
    }
    // Only introspection needs it: a bad one is left out, not the whole document refused.
    let introspection_endpoint = doc
        .introspection_endpoint
        .filter(|u| HttpUrl::parse(u).is_ok());
    Ok(Endpoints {
        token_endpoint: doc.token_endpoint,
        jwks_uri: doc.jwks_uri,
        introspection_endpoint,
    })
}

/// Introspection answers larger than this are treated as garbage: each is kept in shared
/// data, whose records must stay bounded.
pub const MAX_INTROSPECTION_BYTES: usize = 16 * 1024;

/// What the introspection endpoint said of a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Introspected {
    /// `active: true`, with every other member of the answer (its claims).
    Active(serde_json::Map<String, serde_json::Value>),
    /// `active: false`, or no `active` at all (RFC 7662 §2.2: then it is not active).
    Inactive,
    /// 401/403: the IdP refused the gateway's own client.
    ClientRefused(u32),
    /// Anything else: the IdP is not able to answer now.
    Unavailable(String),
}

/// Reads an RFC 7662 §2.2 answer.
pub fn parse_introspection(status: Option<u32>, body: &[u8]) -> Introspected {
    match status {
        Some(200) if body.len() > MAX_INTROSPECTION_BYTES => Introspected::Unavailable(format!(
            "the answer is over {MAX_INTROSPECTION_BYTES} bytes"
        )),
        Some(200) => match crate::verify::unique_object(body) {
            Some(mut claims) => match claims.remove("active") {
                Some(serde_json::Value::Bool(true)) => Introspected::Active(claims),
                _ => Introspected::Inactive,
            },
            None => Introspected::Unavailable(
                "the answer is not a JSON object (or repeats a member)".into(),
            ),
        },
        Some(code @ (401 | 403)) => Introspected::ClientRefused(code),
        Some(code) => Introspected::Unavailable(format!("introspection endpoint answered {code}")),
        None => Introspected::Unavailable("introspection endpoint did not answer".into()),
    }
}

/// What the token endpoint said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAnswer {
    Issued {
        access_token: String,
        expires_in_s: Option<u64>,
    },
    /// 400/401: the client's credentials (or its request) were refused.
    Rejected { error: String },
    /// Anything else: the IdP is not able to answer now.
    Unavailable(String),
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

pub fn parse_token_response(status: Option<u32>, body: &[u8]) -> TokenAnswer {
    match status {
        Some(200) => match serde_json::from_slice::<TokenBody>(body) {
            Ok(t)
                if !t.access_token.is_empty()
                    && t.access_token.len() <= crate::verify::MAX_TOKEN_BYTES =>
            {
                TokenAnswer::Issued {
                    access_token: t.access_token,
                    expires_in_s: t.expires_in,
                }
            }
            _ => TokenAnswer::Unavailable("token response without a usable access_token".into()),
        },
        Some(400 | 401) => {
            let error = serde_json::from_slice::<ErrorBody>(body)
                .map(|e| e.error)
                .ok()
                .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_graphic()))
                .unwrap_or_else(|| "invalid_client".into());
            TokenAnswer::Rejected { error }
        }
        Some(code) => TokenAnswer::Unavailable(format!("token endpoint answered {code}")),
        None => TokenAnswer::Unavailable("token endpoint did not answer".into()),
    }
}

fn ok_status(status: Option<u32>) -> Result<(), String> {
    match status {
        Some(200) => Ok(()),
        Some(code) => Err(format!("answered {code}")),
        None => Err("did not answer (timeout or connection failure)".into()),
    }
}

/// Envoy's own answer to a callout it could not complete, told apart from an IdP's by the
/// fixed wording of Envoy's router (an IdP behind a load balancer may answer 503 too):
/// `upstream connect error or disconnect/reset before headers. reset reason: remote
/// connection failure` (a refused connection, and any TLS failure: the cluster's `ssl.*`
/// stats say which), `upstream request timeout`, `no healthy upstream`. The text, escaped and cut to
/// [`HOST_REPLY_CHARS`] characters, for the fetch's warning; `None` for any other answer.
pub fn host_reply(status: Option<u32>, body: &[u8]) -> Option<String> {
    const ENVOY_REPLIES: [&str; 3] = [
        "upstream connect error or disconnect/reset before headers",
        "upstream request timeout",
        "no healthy upstream",
    ];
    if !matches!(status, Some(503 | 504)) || body.len() > 4096 {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?.trim();
    if !ENVOY_REPLIES.iter().any(|r| text.starts_with(r)) {
        return None;
    }
    Some(crate::log_budget::bounded_to(text, HOST_REPLY_CHARS))
}

/// How much of Envoy's own answer a warning quotes: all of the reasons above.
pub const HOST_REPLY_CHARS: usize = 320;

/// A JWKS answer, checked for status; the caller parses the key set.
pub fn check_jwks_response(status: Option<u32>) -> Result<(), String> {
    ok_status(status)
}

/// The `exp` of a token, read without verification: only to decide how long to keep a
/// token the filter verifies before every use anyway.
pub fn unverified_exp(token: &str) -> Option<u64> {
    unverified_claims(token)?.get("exp")?.as_u64()
}

/// A JWT's payload, read without verification.
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Secret;

    #[test]
    fn envoys_own_answer_to_a_failed_callout_is_quoted_and_an_idps_is_not() {
        // What Envoy 1.40 answers a callout it could not connect for: a refused connection
        // and every TLS failure alike (tests/tls.rs).
        let refused = b"upstream connect error or disconnect/reset before headers. reset reason: \
            remote connection failure";
        assert_eq!(
            host_reply(Some(503), refused).as_deref(),
            std::str::from_utf8(refused).ok()
        );
        assert_eq!(
            host_reply(Some(504), b"upstream request timeout").as_deref(),
            Some("upstream request timeout")
        );
        // An IdP's (or its load balancer's) 503, another status, or no answer: not Envoy's.
        for (status, body) in [
            (Some(503), &br#"{"error":"temporarily_unavailable"}"#[..]),
            (Some(503), b"<html>Service Unavailable</html>"),
            (Some(500), b"upstream request timeout"),
            (None, b"upstream request timeout"),
            (Some(503), b"\xff\xfe"),
        ] {
            assert_eq!(host_reply(status, body), None, "{status:?}");
        }
        // Escaped and bounded: a control character cannot break the log line.
        let mut long = b"no healthy upstream\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', 1000));
        let quoted = host_reply(Some(503), &long).unwrap();
        assert!(quoted.starts_with("no healthy upstream\\nxxx"), "{quoted}");
        assert!(quoted.ends_with('…'));
        assert!(quoted.chars().count() <= HOST_REPLY_CHARS + 2);
    }

    fn config(extra: &str) -> IdpSettings {
        crate::config::Config::parse(
            format!(r#"{{"issuer":"https://idp.example.com/oauth2/default"{extra}}}"#).as_bytes(),
        )
        .unwrap()
        .idp
    }

    fn client() -> ClientCredentials {
        ClientCredentials {
            id: "svc one".into(),
            secret: Secret::new("p@ss:w+rd"),
        }
    }

    fn header<'a>(c: &'a Callout, name: &str) -> Option<&'a str> {
        c.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn token_request_with_basic_auth() {
        let c = config(r#","scopes":["read","write"]"#);
        let url = HttpUrl::parse("https://idp.example.com/oauth2/default/v1/token").unwrap();
        let call = Callout::token(&c, &url, &client());
        assert_eq!(call.upstream, "idp.example.com:443");
        assert_eq!(header(&call, ":method"), Some("POST"));
        assert_eq!(header(&call, ":path"), Some("/oauth2/default/v1/token"));
        assert_eq!(header(&call, ":authority"), Some("idp.example.com"));
        // base64("svc+one:p%40ss%3Aw%2Brd")
        assert_eq!(
            header(&call, "authorization"),
            Some("Basic c3ZjK29uZTpwJTQwc3MlM0F3JTJCcmQ=")
        );
        assert_eq!(
            call.body.as_deref(),
            Some(&b"grant_type=client_credentials&scope=read+write"[..])
        );
        assert_eq!(call.timeout_ms, 10_000);
    }

    #[test]
    fn token_request_with_post_auth() {
        let c =
            config(r#","token_endpoint_auth_method":"client_secret_post","idp_cluster":"okta""#);
        let url = HttpUrl::parse("https://idp.example.com/t").unwrap();
        let call = Callout::token(&c, &url, &client());
        assert_eq!(call.upstream, "okta");
        assert_eq!(header(&call, "authorization"), None);
        assert_eq!(
            call.body.as_deref(),
            Some(
                &b"grant_type=client_credentials&client_id=svc+one&client_secret=p%40ss%3Aw%2Brd"[..]
            )
        );
    }

    #[test]
    fn discovery() {
        let iss = "https://idp.example.com/oauth2/default";
        let doc = br#"{"issuer":"https://idp.example.com/oauth2/default","jwks_uri":"https://idp.example.com/k","token_endpoint":"https://idp.example.com/t"}"#;
        let e = parse_discovery(iss, Some(200), doc).unwrap();
        assert_eq!(e.jwks_uri, "https://idp.example.com/k");
        assert!(parse_discovery(iss, Some(500), doc).is_err());
        assert!(parse_discovery(iss, None, doc).is_err());
        assert!(parse_discovery(iss, Some(200), b"<html>").is_err());
        // The log line names both issuers.
        assert_eq!(
            parse_discovery("https://other", Some(200), doc).unwrap_err(),
            "the document is for issuer `https://idp.example.com/oauth2/default`, not the \
             configured `https://other`"
        );
        assert!(parse_discovery(
            iss,
            Some(200),
            br#"{"issuer":"https://idp.example.com/oauth2/default","jwks_uri":"file:///etc"}"#
        )
        .is_err());
    }

    #[test]
    fn a_callout_describes_its_url_and_upstream_without_its_credentials() {
        let idp = config(r#","idp_cluster":"okta""#);
        let url = HttpUrl::parse("https://idp.example.com/oauth2/default/v1/token").unwrap();
        let client = ClientCredentials {
            id: "svc".into(),
            secret: Secret::new("s3cret"),
        };
        let described = Callout::token(&idp, &url, &client).describe();
        assert_eq!(
            described,
            "https://idp.example.com/oauth2/default/v1/token via `okta`"
        );
    }

    #[test]
    fn token_responses() {
        assert_eq!(
            parse_token_response(
                Some(200),
                br#"{"access_token":"a.b.c","expires_in":3600,"token_type":"Bearer"}"#
            ),
            TokenAnswer::Issued {
                access_token: "a.b.c".into(),
                expires_in_s: Some(3600)
            }
        );
        assert_eq!(
            parse_token_response(Some(401), br#"{"error":"invalid_client"}"#),
            TokenAnswer::Rejected {
                error: "invalid_client".into()
            }
        );
        assert_eq!(
            parse_token_response(Some(400), b"garbage"),
            TokenAnswer::Rejected {
                error: "invalid_client".into()
            }
        );
        for (status, body) in [
            (Some(200), &b"{}"[..]),
            (Some(200), b"garbage"),
            (Some(503), b""),
            (None, b""),
            (Some(200), br#"{"access_token":""}"#),
        ] {
            assert!(
                matches!(
                    parse_token_response(status, body),
                    TokenAnswer::Unavailable(_)
                ),
                "{status:?}"
            );
        }
    }

    #[test]
    fn unverified_exp_reads_payload() {
        // {"exp":42}
        assert_eq!(unverified_exp("e30.eyJleHAiOjQyfQ.sig"), Some(42));
        assert_eq!(unverified_exp("garbage"), None);
    }
}
