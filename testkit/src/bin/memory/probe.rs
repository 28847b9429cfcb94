//! Around the main run: a probe of each algorithm on an Envoy of its own, and Envoy without the
//! filter for comparison.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use testkit::envoy::EnvoyOpts;
use testkit::idp::MockIdp;
use testkit::load::{self, EnvoyMemory};
use testkit::Stack;

use crate::send::{send, Tokens};
use crate::tokens::{Alg, Minter};
use crate::Error;

pub struct Probe {
    pub alg: Alg,
    pub sign_us: f64,
    pub verify_rate: f64,
    pub tokens: u64,
    pub failed: u64,
}

impl Probe {
    /// Tokens per second if one core both signed and verified them.
    pub fn one_core_rate(&self) -> f64 {
        1.0 / (self.sign_us / 1e6 + 1.0 / self.verify_rate)
    }
}

/// Signing cost here and the filter's rate for `count` distinct tokens of `alg`, on an
/// Envoy of its own so the main run starts clean.
pub async fn probe(alg: Alg, count: u64, connections: u64, config: &Value) -> Result<Probe, Error> {
    let stack = Stack::start(MockIdp::start().await, config.clone(), 1).await;
    let minter = Minter::new(stack.idp.issuer(), alg);
    let signing = Instant::now();
    let tokens: Vec<String> = (0..count).map(|i| minter.mint(i)).collect();
    let sign_us = signing.elapsed().as_secs_f64() * 1e6 / count as f64;
    // The first request also fetches discovery and the key set: not part of the rate.
    let warm = send(&stack, Tokens::Ready(vec![minter.mint(count)]), 1, None).await?;
    let run = send(&stack, Tokens::Ready(tokens), connections, None).await?;
    Ok(Probe {
        alg,
        sign_us,
        verify_rate: count as f64 / run.elapsed.as_secs_f64(),
        tokens: count,
        failed: run.failed + warm.failed,
    })
}

/// An Envoy like the test template but without the filter: the listener routes straight to
/// the echo upstream.
pub const NO_FILTER_TEMPLATE: &str = r#"admin:
  address: { socket_address: { address: 127.0.0.1, port_value: {{ADMIN_PORT}} } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: {{LISTEN_PORT}} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: api
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: echo }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{ECHO_PORT}} } } }
"#;

pub struct Baseline {
    pub requests: u64,
    pub before: EnvoyMemory,
    pub after: EnvoyMemory,
    pub failed: u64,
}

/// Envoy without the filter, idle and after `requests` requests with one bearer token.
pub async fn baseline(requests: u64, connections: u64) -> Result<Baseline, Error> {
    let dir = std::env::temp_dir().join(format!("oidcgate-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let template = dir.join("no-filter.yaml");
    std::fs::write(&template, NO_FILTER_TEMPLATE)?;
    let opts = EnvoyOpts {
        template,
        ..EnvoyOpts::default()
    };
    let stack = Stack::start_with(MockIdp::start().await, opts).await;
    let before = load::envoy_memory(&stack.http, &stack.envoy).await?;
    let token = Minter::new(stack.idp.issuer(), Alg::EdDsa).mint(0);
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (sent, failed, token) = (sent.clone(), failed.clone(), token.clone());
        // A client each, as in `send`.
        let (http, url) = (testkit::http_client(), stack.envoy.url("/api/memory"));
        tasks.spawn(async move {
            while sent.fetch_add(1, Ordering::Relaxed) < requests {
                let ok = match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) => r.status().as_u16() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    let after = load::envoy_memory(&stack.http, &stack.envoy).await?;
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Baseline {
        requests,
        before,
        after,
        failed: failed.load(Ordering::Relaxed),
    })
}
