//! An OIDC discovery document as the IdP (or whatever answers in its place) sends it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidcgate::idp::parse_discovery;
use oidcgate::url::HttpUrl;
use oidcgate_fuzz::ISSUER;

fuzz_target!(|data: &[u8]| {
    if let Ok(endpoints) = parse_discovery(ISSUER, Some(200), data) {
        // What is accepted is usable as-is by the gate.
        assert!(HttpUrl::parse(&endpoints.jwks_uri).is_ok());
        if let Some(t) = &endpoints.token_endpoint {
            assert!(HttpUrl::parse(t).is_ok());
        }
    }
    assert!(parse_discovery(ISSUER, Some(503), data).is_err());
    assert!(parse_discovery(ISSUER, None, data).is_err());
});
