//! The token endpoint's answer, for a success status and for an error status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidcgate::idp::{parse_token_response, unverified_exp, TokenAnswer};
use oidcgate::verify::MAX_TOKEN_BYTES;

fuzz_target!(|data: &[u8]| {
    if let TokenAnswer::Issued { access_token, .. } = parse_token_response(Some(200), data) {
        assert!(!access_token.is_empty() && access_token.len() <= MAX_TOKEN_BYTES);
        let _ = unverified_exp(&access_token);
    }
    for status in [400, 401] {
        match parse_token_response(Some(status), data) {
            // The error code is logged: short and printable.
            TokenAnswer::Rejected { error } => {
                assert!(error.len() <= 64 && error.bytes().all(|b| b.is_ascii_graphic()))
            }
            other => panic!("{status} read as {other:?}"),
        }
    }
    let _ = unverified_exp(&String::from_utf8_lossy(data));
});
