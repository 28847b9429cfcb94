//! An upstream that answers every request with a JSON description of what it received, so a
//! test can see, through Envoy, exactly what the filter forwarded.
//!
//! Answer: `200 {"method": "GET", "path": "/api?x=1", "headers": {"authorization": "Bearer …"},
//! "body": "…"}` — header names lower-cased, repeated headers joined with `", "`, the body as
//! lossy UTF-8.
//!
//! [`Echo::start_raw_on`] also reports the header names as they came on the wire, in their
//! case and order (`"raw_header_names": ["Host", "Issuer_Header", …]`), which hyper's parsing
//! folds to lower case: to see what an HTTP/1 upstream that cares about case receives. It
//! then serves one request per connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::server::{self, ConnOpts, HttpServer, RawHead};

#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    last: Mutex<Option<Value>>,
}

/// A running echo upstream. Stops when dropped.
pub struct Echo {
    pub port: u16,
    seen: Arc<Seen>,
    _server: HttpServer,
}

impl Echo {
    /// Starts on a free loopback port.
    pub async fn start() -> Echo {
        Echo::start_on(0).await
    }

    /// Starts on `127.0.0.1:port` (`0`: any free port).
    pub async fn start_on(port: u16) -> Echo {
        Echo::serve(port, false).await
    }

    /// [`Echo::start_on`], also reporting the header names as sent (see the module docs).
    pub async fn start_raw_on(port: u16) -> Echo {
        Echo::serve(port, true).await
    }

    async fn serve(port: u16, raw_heads: bool) -> Echo {
        let seen = Arc::new(Seen::default());
        let router = Router::new()
            .fallback(echo)
            // Tests send large bodies on purpose; the upstream must not be what refuses them.
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(seen.clone());
        let opts = ConnOpts {
            raw_heads,
            ..ConnOpts::default()
        };
        let server = HttpServer::serve(server::listen(port).await, router, opts);
        Echo {
            port: server.port(),
            seen,
            _server: server,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", server::origin(self.port))
    }

    /// How many requests reached this upstream.
    pub fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }

    /// The JSON answer given to the last request.
    pub fn last_request(&self) -> Option<Value> {
        self.seen.last.lock().unwrap().clone()
    }
}

async fn echo(
    State(seen): State<Arc<Seen>>,
    raw: Option<Extension<RawHead>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let mut names = Map::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match names.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                names.insert(name.as_str().to_string(), value.into());
            }
        }
    }
    let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let mut answer = json!({
        "method": method.as_str(),
        "path": path,
        "headers": names,
        "body": String::from_utf8_lossy(&body),
    });
    if let Some(Extension(raw)) = raw {
        answer["raw_header_names"] = json!(raw.header_names());
    }
    seen.requests.fetch_add(1, Ordering::SeqCst);
    *seen.last.lock().unwrap() = Some(answer.clone());
    Json(answer)
}
