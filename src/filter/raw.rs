//! The host calls whose proxy-wasm SDK wrappers panic on a status they do not expect
//! (`hostcalls::set_property` panics on anything but `Ok`, `send_http_response` likewise, and
//! so on): a host that refuses a call would abort the VM, and every request in it with it.
//! ngx_wasm_module (Kong) answers `set_property` of an Envoy filter-state name with
//! `NotFound`, on every allowed request. These call the same `env.proxy_*` imports and hand
//! every status back as a `Result`; they never panic. Calls that return host memory (reads)
//! stay with the SDK, whose wrappers map the statuses hosts give them, and so does
//! `dispatch_http_call`: the SDK must see every callout's token to route its answer (it maps
//! the `BadArgument` and `InternalFailure` hosts refuse a callout with).

use proxy_wasm::types::{BufferType, MapType, MetricType};

/// A status other than `Ok`, as the host gave it (proxy-wasm ABI `proxy_status_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub u32);

const OK: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

fn status(s: u32) -> Result<(), Refused> {
    match s {
        OK => Ok(()),
        other => Err(Refused(other)),
    }
}

/// ABI 0.2.1 `proxy_stream_type_t`: the HTTP request.
const STREAM_HTTP_REQUEST: u32 = 0;

/// A property path as the ABI passes it: the segments joined by NUL.
fn property_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

/// A header map as the ABI passes it: the count, each (name, value) length, then each name
/// and value NUL-terminated; lengths as little-endian u32 (a length that does not fit is
/// sent as 0 rather than panicking: no header is that large).
fn header_map(headers: &[(&str, &str)]) -> Vec<u8> {
    let len = |n: usize| u32::try_from(n).unwrap_or(0).to_le_bytes();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&len(headers.len()));
    for (name, value) in headers {
        bytes.extend_from_slice(&len(name.len()));
        bytes.extend_from_slice(&len(value.len()));
    }
    for (name, value) in headers {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Refused> {
    let path = property_path(path);
    // SAFETY: the pointers and lengths describe live buffers for the duration of the call.
    status(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

pub fn replace_header(map: MapType, name: &str, value: &str) -> Result<(), Refused> {
    // SAFETY: as above.
    status(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map: MapType, name: &str) -> Result<(), Refused> {
    // SAFETY: as above.
    status(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

pub fn send_local_response(
    status_code: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), Refused> {
    let headers = header_map(headers);
    // SAFETY: as above; an empty details string is passed as a null pointer and 0.
    status(unsafe {
        proxy_send_local_response(
            status_code,
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

pub fn continue_request() -> Result<(), Refused> {
    // SAFETY: no memory is passed.
    status(unsafe { proxy_continue_stream(STREAM_HTTP_REQUEST) })
}

pub fn set_buffer(
    buffer: BufferType,
    start: usize,
    size: usize,
    data: &[u8],
) -> Result<(), Refused> {
    // SAFETY: as above.
    status(unsafe { proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len()) })
}

/// `cas` 0: no compare-and-swap.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Refused> {
    // SAFETY: as above.
    status(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

pub fn set_effective_context(context_id: u32) -> Result<(), Refused> {
    // SAFETY: no memory is passed.
    status(unsafe { proxy_set_effective_context(context_id) })
}

pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Refused> {
    let mut id = 0u32;
    // SAFETY: as above; `id` outlives the call.
    status(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, delta: i64) -> Result<(), Refused> {
    // SAFETY: no memory is passed.
    status(unsafe { proxy_increment_metric(id, delta) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), Refused> {
    // SAFETY: no memory is passed.
    status(unsafe { proxy_record_metric(id, value) })
}

/// Nanoseconds since the Unix epoch by the host's clock.
pub fn now_ns() -> Result<u64, Refused> {
    let mut ns = 0u64;
    // SAFETY: `ns` outlives the call.
    status(unsafe { proxy_get_current_time_nanoseconds(&mut ns) })?;
    Ok(ns)
}

/// The names in a header map, lower-cased (the SDK's `get_map` panics on a status it does
/// not expect and on a value that is not UTF-8).
pub fn header_names(map: MapType) -> Result<Vec<String>, Refused> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to memory it allocated through the SDK's exported
    // allocator (`proxy_on_memory_allocate`, the global allocator) and its size; the Vec
    // takes ownership of exactly that allocation, as the SDK's own wrapper does.
    let bytes = unsafe {
        status(proxy_get_header_map_pairs(map as u32, &mut data, &mut size))?;
        if data.is_null() {
            return Ok(Vec::new());
        }
        Vec::from_raw_parts(data, size, size)
    };
    Ok(map_names(&bytes))
}

/// The keys of a serialized proxy-wasm map (count, then each key's and value's length, then
/// each key and value NUL-terminated), lower-cased; whatever cannot be read is left out.
fn map_names(bytes: &[u8]) -> Vec<String> {
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let mut names = Vec::new();
    let Some(count) = word(0) else {
        return names;
    };
    let mut sizes = 4usize;
    let Some(mut data) = count.checked_mul(8).and_then(|n| n.checked_add(4)) else {
        return names;
    };
    for _ in 0..count {
        let (Some(key_len), Some(value_len)) = (word(sizes), word(sizes + 4)) else {
            break;
        };
        sizes += 8;
        if let Some(key) = data
            .checked_add(key_len)
            .and_then(|end| bytes.get(data..end))
        {
            names.push(String::from_utf8_lossy(key).to_ascii_lowercase());
        }
        data = data
            .saturating_add(key_len)
            .saturating_add(1)
            .saturating_add(value_len)
            .saturating_add(1);
    }
    names
}
