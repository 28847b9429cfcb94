//! JWT verification against the fixture key set, then the policy and claim headers on what
//! verifies. The payload of any input is also judged unverified, so `policy` and `claims`
//! see arbitrary claim sets (signed seeds alone would barely move them).
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use oidcgate::{claims, policy, verify};
use oidcgate_fuzz::{fixture_keys, strict_config, NOW_S};
use serde_json::{Map, Value};

fn judge(claims_map: &Map<String, Value>) {
    let config = strict_config();
    let _ = policy::authorize(config, &config.policy, claims_map);
    for (name, value) in claims::headers(&config.policy.claim_headers, claims_map) {
        assert!(!name.is_empty());
        assert!(!value.chars().any(char::is_control), "{value:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let (now_s, leeway_s) = (NOW_S, strict_config().accept.leeway_s);
    if let Ok(verified) = verify::verify(&token, fixture_keys(), now_s, leeway_s) {
        assert!(verified.exp_s + leeway_s >= now_s);
        assert_eq!(
            verified.claims.get("exp").and_then(Value::as_u64),
            Some(verified.exp_s)
        );
        judge(&verified.claims);
    }
    if let Some(payload) = token.split('.').nth(1) {
        if let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) {
            if let Ok(Value::Object(map)) = serde_json::from_slice(&bytes) {
                judge(&map);
            }
        }
    }
});
