//! A JWKS document, then a lookup and a signature check against whatever parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidcgate::jwks::{Alg, KeySet, Lookup};
use oidcgate::verify;
use oidcgate_fuzz::NOW_S;

const TOKEN: &str = include_str!("../corpus/jwt/rs256-rsa-1.jwt");
const ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fuzz_target!(|data: &[u8]| {
    let Ok(set) = KeySet::parse(data) else {
        return;
    };
    assert!(!set.is_empty());
    for name in ALGS {
        let alg = Alg::parse(name).expect("known algorithm");
        for kid in [None, Some("rsa-1"), Some("")] {
            if let Lookup::Found(keys) = set.lookup(alg, kid) {
                assert!(!keys.is_empty());
            }
        }
    }
    let _ = verify::verify(TOKEN.trim(), &set, NOW_S, 0);
});
