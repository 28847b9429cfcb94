//! `core-bench-input --issuer URL`: prints the plugin configuration of `bench/core-filter` (one
//! JSON line): a key set, one token per signing algorithm the filter supports and the test kit
//! can sign (RS256/384/512, PS256/384/512, ES256, EdDSA), and the issuer the tokens carry.
//!
//! RSA keys are listed once per algorithm (kid `rsa-1-PS256`, ...), each with its `alg`, since
//! a JWK names one algorithm and the filter holds tokens to it.

use std::process::exit;

use serde_json::{json, Value};
use testkit::idp::AUDIENCE;
use testkit::keys::{self, Sig};

const USAGE: &str = "usage: core-bench-input --issuer URL";

/// (kid in the key set, fixture key, algorithm).
const CASES: [(&str, &str, &str); 8] = [
    ("rsa-1-RS256", "rsa-1", "RS256"),
    ("rsa-1-RS384", "rsa-1", "RS384"),
    ("rsa-1-RS512", "rsa-1", "RS512"),
    ("rsa-1-PS256", "rsa-1", "PS256"),
    ("rsa-1-PS384", "rsa-1", "PS384"),
    ("rsa-1-PS512", "rsa-1", "PS512"),
    ("ec-1", "ec-1", "ES256"),
    ("ed-1", "ed-1", "EdDSA"),
];

fn main() {
    let mut args = std::env::args().skip(1);
    let issuer = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--issuer"), Some(issuer), None) => issuer,
        (Some("--help" | "-h"), None, None) => {
            println!("{USAGE}");
            exit(0)
        }
        _ => {
            eprintln!("core-bench-input: {USAGE}");
            exit(2)
        }
    };
    let iat = keys::now();
    let mut jwks = Vec::new();
    let mut tokens = Vec::new();
    for (kid, key, alg) in CASES {
        let mut jwk = keys::jwk(key);
        jwk["kid"] = kid.into();
        jwk["alg"] = alg.into();
        jwks.push(jwk);
        let claims = json!({
            "ver": 1, "jti": format!("AT.core-{alg}"), "iss": issuer, "aud": AUDIENCE,
            "iat": iat, "exp": iat + 30 * 24 * 3600, "cid": "demo-client", "sub": "demo-client",
            "scp": ["read"],
        });
        let token = keys::mint_raw(
            &json!({"alg": alg, "kid": kid}),
            &claims,
            Sig::Key { kid: key, alg },
        );
        tokens.push(json!({"alg": alg, "token": token}));
    }
    let input: Value = json!({
        "issuer": issuer,
        "audience": AUDIENCE,
        "jwks": {"keys": jwks},
        "tokens": tokens,
    });
    println!("{input}");
}
