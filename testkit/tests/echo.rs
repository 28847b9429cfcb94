//! The echo upstream reports method, path with query, headers and body.

use serde_json::{json, Value};
use testkit::echo::Echo;

#[tokio::test]
async fn echoes_what_it_received() {
    let echo = Echo::start().await;
    assert_eq!(echo.requests(), 0);
    let body: Value = testkit::http_client()
        .post(echo.url("/api/x?a=1&b=%20"))
        .header("X-Thing", "one")
        .header("x-thing", "two")
        .header("Authorization", "Bearer t")
        .body(b"caf\xc3\xa9 \xff".to_vec())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/api/x?a=1&b=%20");
    assert_eq!(body["headers"]["x-thing"], "one, two");
    assert_eq!(body["headers"]["authorization"], "Bearer t");
    assert_eq!(body["headers"]["content-length"], "7");
    assert_eq!(body["body"], "café \u{fffd}");
    assert_eq!(echo.requests(), 1);
    assert_eq!(echo.last_request(), Some(body));

    let any = testkit::http_client()
        .delete(echo.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(any.status(), 200);
    let any: Value = any.json().await.unwrap();
    assert_eq!(
        (
            any["method"].clone(),
            any["path"].clone(),
            any["body"].clone()
        ),
        (json!("DELETE"), json!("/"), json!(""))
    );
    assert_eq!(echo.requests(), 2);
}

#[tokio::test]
async fn raw_http_sends_bytes_verbatim() {
    let echo = Echo::start().await;
    let raw = testkit::raw_http(
        echo.port,
        b"GET /raw HTTP/1.1\r\nHost: x\r\nX-Bin: \xff\xfe\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("\"path\":\"/raw\""), "{raw}");
}
