//! What the real-Envoy suites share: the stack (mock IdP, echo upstream, Envoy with the built
//! filter, built by `testkit::load::Stack`), a client, and the answers they judge.

// Each suite uses part of this module.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;
use testkit::echo::Echo;
use testkit::envoy::Envoy;
use testkit::idp::MockIdp;

pub struct Stack {
    pub idp: MockIdp,
    pub echo: Echo,
    pub envoy: Envoy,
    pub http: reqwest::Client,
}

/// Envoy (`envoy/e2e.yaml`, `concurrency` workers) in front of `idp`, set up already, with
/// `config` merged over `{"issuer": <idp>, "idp_cluster": "idp"}`.
pub async fn start(idp: MockIdp, config: Value, concurrency: u32) -> Stack {
    let s = testkit::load::Stack::start(idp, config, concurrency, None).await;
    Stack {
        idp: s.idp,
        echo: s.echo,
        envoy: s.envoy,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("a client"),
    }
}

/// `extra` keys merged over `base`.
pub fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(more)) = (base.as_object_mut(), extra) {
        b.extend(more);
    }
    base
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// A header the upstream received (the echo lower-cases names).
    pub fn upstream(&self, name: &str) -> Option<&str> {
        self.body["headers"][name.to_ascii_lowercase()].as_str()
    }
    pub fn www_authenticate(&self) -> &str {
        self.headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Stack {
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("Envoy answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }
    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.envoy.url(path))).await
    }
    pub async fn anonymous(&self) -> Answer {
        self.get("/api").await
    }
    pub async fn basic(&self, id: &str, secret: &str) -> Answer {
        self.send(
            self.http
                .get(self.envoy.url("/api"))
                .basic_auth(id, Some(secret)),
        )
        .await
    }
    pub async fn bearer(&self, token: &str) -> Answer {
        self.send(self.http.get(self.envoy.url("/api")).bearer_auth(token))
            .await
    }
}
