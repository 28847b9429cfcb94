//! The introspection endpoint's answer: any bytes, any status. An answer is active only when
//! it is a JSON object with `active: true`, and reading its times never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidcgate::idp::{parse_introspection, Introspected, MAX_INTROSPECTION_BYTES};
use oidcgate::introspection::check_times;

fuzz_target!(|data: &[u8]| {
    match parse_introspection(Some(200), data) {
        Introspected::Active(claims) => {
            assert!(data.len() <= MAX_INTROSPECTION_BYTES);
            assert!(!claims.contains_key("active"));
            let text = String::from_utf8_lossy(data);
            assert!(text.contains("true"), "active without `true`: {text}");
            for now_s in [0, 1_800_000_000, u64::MAX] {
                let _ = check_times(&claims, now_s, 60);
            }
        }
        Introspected::Inactive | Introspected::Unavailable(_) => {}
        Introspected::ClientRefused(code) => panic!("200 read as refused {code}"),
    }
    for status in [401, 403] {
        assert_eq!(
            parse_introspection(Some(status), data),
            Introspected::ClientRefused(status)
        );
    }
    assert!(matches!(
        parse_introspection(Some(503), data),
        Introspected::Unavailable(_)
    ));
});
