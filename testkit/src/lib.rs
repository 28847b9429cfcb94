//! Test kit for `oidcgate`: everything the end-to-end tests need around the filter.
//!
//! - [`idp`]: a mock IdP shaped like an Okta custom authorization server, with fault injection.
//! - [`echo`]: an upstream that answers with what it received.
//! - [`envoy`]: runs a real Envoy with the built filter from a YAML template.
//! - [`nginx`]: runs Kong's wasm host (nginx + ngx_wasm_module + wasmtime, `KONG_HOST_BIN`)
//!   with the built filter from `kong/nginx.conf`.
//! - [`keys`]: the fixture keys, JWKs, and hand-built tokens.
//! - [`Stack`]: the three together with one HTTP client, as every real-Envoy run drives them.
//! - [`load`]: what the long runs (`soak`, `memory`, `bench`) share: memory and counter
//!   sampling, settings, reports.
//! - [`tokens`]: tokens in bulk for the benchmark.
//! - [`tls`]: a certificate authority made per run and the IdP's HTTPS side.
//!
//! Everything listens on 127.0.0.1 only, on free ports unless asked otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod echo;
pub mod envoy;
pub mod idp;
pub mod keys;
pub mod load;
pub mod nginx;
mod process;
mod server;
mod stack;
pub mod tls;
pub mod tokens;

pub use stack::{merged, Answer, Gateway, Stack};

#[doc(hidden)]
pub mod cli;

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives inside the repository")
        .to_path_buf()
}

/// A reqwest client for loopback tests: never uses a proxy from the environment (a proxy would
/// turn "connection refused" into a proxy's 502) and gives up after 30 s instead of hanging.
pub fn http_client() -> reqwest::Client {
    http_client_with_timeout(Duration::from_secs(30))
}

/// [`http_client`] giving up after `timeout`.
pub fn http_client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("reqwest client")
}

/// Writes `request` verbatim to `127.0.0.1:port` and returns what comes back, as lossy UTF-8:
/// for requests no HTTP client would send (bytes that are not UTF-8, broken framing).
///
/// Reads until the peer closes, or until it has said something and then stayed quiet for
/// 300 ms (a keep-alive server does not close); at most 10 s in all.
pub async fn raw_http(port: u16, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    stream.write_all(request).await.expect("write request");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let quiet = if response.is_empty() {
            deadline
        } else {
            (tokio::time::Instant::now() + Duration::from_millis(300)).min(deadline)
        };
        match tokio::time::timeout_at(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}
