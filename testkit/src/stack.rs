//! The stack every real-gateway run drives: the mock IdP, the echo upstream, a gateway with the
//! built filter in front of them (Envoy; or Kong's wasm host, nginx with ngx_wasm_module, in
//! `Stack<Nginx>`), and one HTTP client for all three (and Envoy's admin endpoint).

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::echo::Echo;
use crate::envoy::{Envoy, EnvoyOpts};
use crate::idp::MockIdp;
use crate::nginx::{Nginx, NginxOpts};

/// A proxy running the filter, as the cases that run in every host see it.
pub trait Gateway {
    /// Which host this is, for messages: `Envoy`, `nginx`.
    const NAME: &'static str;
    /// `http://127.0.0.1:<listen port><path>`.
    fn url(&self, path: &str) -> String;
    /// Everything it has logged so far.
    fn log(&self) -> String;
}

impl Gateway for Envoy {
    const NAME: &'static str = "Envoy";
    fn url(&self, path: &str) -> String {
        Envoy::url(self, path)
    }
    fn log(&self) -> String {
        Envoy::log(self)
    }
}

impl Gateway for Nginx {
    const NAME: &'static str = "nginx";
    fn url(&self, path: &str) -> String {
        Nginx::url(self, path)
    }
    fn log(&self) -> String {
        Nginx::log(self)
    }
}

/// The mock IdP, the echo upstream and a gateway in front of them, with the one client the
/// caller sends its requests through.
pub struct Stack<G: Gateway = Envoy> {
    pub idp: MockIdp,
    pub echo: Echo,
    /// The gateway: Envoy, or nginx in a `Stack<Nginx>` (the field is named after the first).
    pub envoy: G,
    /// [`crate::http_client`]: never a proxy, a 30 s timeout. Reuse it (it pools
    /// connections); set a shorter timeout per request where one matters.
    pub http: reqwest::Client,
}

/// An answer from Envoy, its body parsed as JSON when it is JSON (the echo upstream's account
/// of what it received, or a denial), else kept as a JSON string.
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

    /// The header names the upstream received, as sent on the wire; empty unless the echo
    /// was started with [`Echo::start_raw_on`].
    pub fn upstream_names(&self) -> Vec<&str> {
        self.body["raw_header_names"]
            .as_array()
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The `WWW-Authenticate` header, `""` when absent.
    pub fn www_authenticate(&self) -> &str {
        self.headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Stack<Envoy> {
    /// Envoy (`envoy/e2e.yaml`, `concurrency` workers) in front of `idp`, which the caller has
    /// set up already (keys, clients, token lifetime): Envoy's first requests then see the IdP
    /// as it will be. `filter_config` is merged over `{"issuer": <idp>, "idp_cluster": "idp"}`.
    pub async fn start(idp: MockIdp, filter_config: Value, concurrency: u32) -> Stack {
        let opts = EnvoyOpts {
            filter_config,
            concurrency,
            ..EnvoyOpts::default()
        };
        Stack::start_with(idp, opts).await
    }

    /// [`Stack::start`] with any Envoy options (another template, fixed ports, a CPU).
    /// `opts.idp_port` and `opts.echo_port` are filled in; `opts.filter_config` is merged over
    /// `{"issuer": <idp>, "idp_cluster": "idp"}`.
    pub async fn start_with(idp: MockIdp, opts: EnvoyOpts) -> Stack {
        Stack::start_with_upstream(idp, Echo::start().await, opts).await
    }

    /// [`Stack::start_with`] in front of this upstream (say, [`Echo::start_raw_on`]).
    pub async fn start_with_upstream(idp: MockIdp, echo: Echo, opts: EnvoyOpts) -> Stack {
        let envoy = Envoy::start(envoy_opts(&idp, &echo, opts)).await;
        Stack {
            idp,
            echo,
            envoy,
            http: crate::http_client(),
        }
    }

    /// Stops Envoy, then starts another with `opts` in front of the same IdP and upstream
    /// (`opts` completed as by [`Stack::start_with`]). The old one stops first, so the new one
    /// can bind the same fixed ports.
    pub async fn restart_envoy(&mut self, opts: EnvoyOpts) {
        self.envoy.kill();
        self.envoy = Envoy::start(envoy_opts(&self.idp, &self.echo, opts)).await;
    }
}

impl Stack<Nginx> {
    /// nginx (`kong/nginx.conf`, `workers` worker processes, the binary `bin`) in front of
    /// `idp`. `filter_config` is merged over `{"issuer": <idp>}` (callouts go to the IdP URL's
    /// `host:port`, as in Kong); `wait_upstream` is the template's poll endpoint.
    pub async fn start_nginx(
        bin: PathBuf,
        idp: MockIdp,
        filter_config: Value,
        workers: u32,
    ) -> Stack<Nginx> {
        let echo = Echo::start().await;
        let opts = NginxOpts {
            filter_config: merged(json!({ "issuer": idp.issuer() }), filter_config),
            echo_port: echo.port,
            workers,
            ..NginxOpts::new(bin)
        };
        let nginx = Nginx::start(opts).await;
        Stack {
            idp,
            echo,
            envoy: nginx,
            http: crate::http_client(),
        }
    }
}

impl<G: Gateway> Stack<G> {
    /// `http://127.0.0.1:<gateway port><path>`.
    pub fn url(&self, path: &str) -> String {
        self.envoy.url(path)
    }

    /// Sends `request` (built from [`Stack::http`]) and reads the whole answer. Panics if the
    /// gateway does not answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} answers: {e}", G::NAME));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `GET <path>` through the gateway, without a credential.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.url(path))).await
    }

    /// `GET /api` without a credential.
    pub async fn anonymous(&self) -> Answer {
        self.get("/api").await
    }

    /// `GET /api` with `Authorization: Basic` client credentials.
    pub async fn basic(&self, id: &str, secret: &str) -> Answer {
        let request = self.http.get(self.url("/api"));
        self.send(request.basic_auth(id, Some(secret))).await
    }

    /// `GET /api` with `Authorization: Bearer <token>`.
    pub async fn bearer(&self, token: &str) -> Answer {
        let request = self.http.get(self.url("/api"));
        self.send(request.bearer_auth(token)).await
    }
}

/// `opts` pointed at this IdP and upstream, its filter configuration naming the IdP.
fn envoy_opts(idp: &MockIdp, echo: &Echo, opts: EnvoyOpts) -> EnvoyOpts {
    let base = json!({ "issuer": idp.issuer(), "idp_cluster": "idp" });
    EnvoyOpts {
        filter_config: merged(base, opts.filter_config),
        idp_port: idp.port(),
        echo_port: echo.port,
        ..opts
    }
}

/// `extra`'s keys merged over `base`, when both are JSON objects; else `base` unchanged.
pub fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(more)) = (base.as_object_mut(), extra) {
        b.extend(more);
    }
    base
}
