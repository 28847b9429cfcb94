//! Credential extraction from a request: the input is
//! `authorization \n path \n content-type \n body` (an empty line is an absent header).
//! Besides not panicking, what is stripped must leave no credential behind.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oidcgate::config::Config;
use oidcgate::credentials::{extract, needs_body, RequestView};

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::parse(
            br#"{"issuer":"http://idp.example.com",
                 "client_credentials_param_type":["header","body","query"],
                 "bearer_token_param_type":["header","query"]}"#,
        )
        .expect("credentials fuzz config")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let mut line = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (authorization, path, content_type) = (line(), line(), line());
    let body = parts.next().unwrap_or_default();
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let (authorization, content_type) = (opt(&authorization), opt(&content_type));
    let view = RequestView {
        authorization: authorization.as_deref(),
        path: &path,
        content_type: content_type.as_deref(),
    };
    let config = config();
    let body = needs_body(config, &config.policy, &view).then_some(body);
    let got = extract(config, &config.policy, &view, body);

    // Stripping is complete: what goes upstream yields no credential and needs no more strip.
    let path = got.new_path.clone().unwrap_or(path.clone());
    let body = got.new_body.as_deref().or(body);
    let again = extract(
        config,
        &config.policy,
        &RequestView {
            authorization: None,
            path: &path,
            content_type: view.content_type,
        },
        body,
    );
    assert!(again.credential.is_err(), "credential left in {path:?}");
    assert_eq!(again.new_path, None, "query not fully stripped: {path:?}");
    if got.new_body.is_some() {
        assert_eq!(again.new_body, None, "body not fully stripped");
    }
});
