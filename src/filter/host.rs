//! The host side of the core's ports: shared data, the clock, callouts, and the request and
//! response operations. Every host call is fallible here; none unwraps, and none goes through
//! an SDK wrapper that panics on a status it does not expect ([`raw`]).

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

use super::raw;
use crate::idp::{Callout, MAX_RESPONSE_BYTES};
use crate::outcome::Denial;
use crate::store::SharedStore;

/// proxy-wasm shared data: one store for every VM with the same `vm_id`.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), cas)) => Some((value, cas.unwrap_or(0))),
            _ => None,
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        raw::set_shared_data(key, value, cas).is_ok()
    }
}

/// Milliseconds since the Unix epoch by the host's clock; `None` when it cannot be read.
pub fn now_ms() -> Option<u64> {
    raw::now_ns()
        .ok()
        .map(|ns| ns / 1_000_000)
        .filter(|&ms| ms > 0)
}

/// A request header as text. A value that is not UTF-8 is passed on as lossy text, so it
/// fails parsing downstream rather than reading as absent.
pub fn request_header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
        .map(|v| {
            String::from_utf8(v)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
}

pub fn remove_request_header(name: &str) {
    let _ = raw::remove_header(MapType::HttpRequestHeaders, name);
}

pub fn set_request_header(name: &str, value: &str) {
    let _ = raw::replace_header(MapType::HttpRequestHeaders, name, value);
}

pub fn request_body(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
        .ok()
        .flatten()
}

pub fn replace_request_body(old_size: usize, body: &[u8]) -> bool {
    raw::set_buffer(BufferType::HttpRequestBody, 0, old_size, body).is_ok()
}

pub fn resume() {
    let _ = raw::continue_request();
}

pub fn switch_to(context_id: u32) -> bool {
    raw::set_effective_context(context_id).is_ok()
}

/// Whether `set_effective_context` really switches contexts here, so that a request can be
/// resumed, edited or answered from the root's tick or from another request's callback.
/// Envoy refuses to switch to a context that does not exist; ngx_wasm_module (Kong)
/// accepts any id because the call does nothing there: every request operation acts on the
/// context the host is calling.
pub fn switches_contexts() -> bool {
    raw::set_effective_context(u32::MAX).is_err()
}

/// A poll of `upstream` (`host:port`): its answer, whatever it is, calls the request that
/// sent it back, in a host that wakes a request only in its own callbacks.
pub fn dispatch_poll(upstream: &str, timeout_ms: u64) -> Result<u32, Status> {
    hostcalls::dispatch_http_call(
        upstream,
        vec![
            (":method", "GET"),
            (":path", "/oidcgate/wait"),
            (":authority", upstream),
            (":scheme", "http"),
        ],
        None,
        vec![],
        Duration::from_millis(timeout_ms),
    )
}

/// Leaves the outcome where Envoy's access log can print it (`%FILTER_STATE(…:PLAIN)%`):
/// an allowed request's client in `wasm.oidcgate.client_id`, a refusal's reason in
/// `wasm.oidcgate.reason`. One host call a request: each costs about 0.2 µs in
/// Envoy's V8, on every request. A host without filter state refuses the call; nothing else
/// depends on it.
pub fn record_allowed(client: Option<&str>) {
    if let Some(client) = client {
        let _ = raw::set_property(&["oidcgate.client_id"], client.as_bytes());
    }
}

fn record_refusal(reason: &str) {
    let _ = raw::set_property(&["oidcgate.reason"], reason.as_bytes());
}

/// The policy a request is judged by, for the access log (`wasm.oidcgate.policy`).
pub fn record_policy(name: &str) {
    let _ = raw::set_property(&["oidcgate.policy"], name.as_bytes());
}

/// The policy an Envoy route names in its metadata (`filter_metadata.oidcgate.policy`).
pub fn route_policy() -> Option<String> {
    let value = hostcalls::get_property(vec![
        "xds",
        "route_metadata",
        "filter_metadata",
        "oidcgate",
        "policy",
    ])
    .ok()
    .flatten()?;
    String::from_utf8(value).ok().filter(|s| !s.is_empty())
}

/// Answers the request locally with the denial's status, headers and JSON body.
pub fn deny(denial: &Denial, realm: &str) {
    record_refusal(denial.reason());
    let extra = denial.headers(realm);
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
    ];
    headers.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
    let body = denial.body();
    let _ = raw::send_local_response(denial.status(), &headers, body.as_bytes());
}

/// A last-resort answer when the filter has no usable configuration: fail closed.
pub fn deny_unconfigured() {
    let _ = raw::send_local_response(
        500,
        &[("content-type", "application/json"), ("cache-control", "no-store")],
        br#"{"error":"server_error","error_description":"authentication filter is not configured"}"#,
    );
}

pub fn dispatch(callout: &Callout) -> Result<u32, Status> {
    let headers: Vec<(&str, &str)> = callout
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    hostcalls::dispatch_http_call(
        &callout.upstream,
        headers,
        callout.body.as_deref(),
        vec![],
        Duration::from_millis(callout.timeout_ms),
    )
}

/// The `:status` and body of the callout response being delivered. A body over the limit is
/// read only one byte past it, so the core sees it is too large without us copying 10 MB.
pub fn callout_response(body_size: usize) -> (Option<u32>, Vec<u8>) {
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|v| std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()));
    let wanted = body_size.min(MAX_RESPONSE_BYTES + 1);
    let body = if wanted == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, wanted)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    (status, body)
}
