//! Tokens in bulk for the benchmark, shaped like the mock IdP's access tokens and signed with
//! the fixture keys: the cold path's pool (a new RS256 token every request) and
//! `bench/core-filter`'s input (one token per algorithm).

use serde_json::{json, Value};

use crate::idp::{access_token_claims, AUDIENCE};
use crate::keys::{self, Sig};

/// `count` distinct tokens for `issuer`, in order, each with the mock IdP's header
/// (`{"alg":"RS256","kid":"rsa-1"}`, fixture key `rsa-1`) and claims
/// ([`access_token_claims`]: a `jti` carrying the token's index, `exp` after `ttl` seconds,
/// client `client_id`, `scp: ["read"]`), so a verifier configured for the mock IdP with that
/// issuer accepts every one. Signs on every available core.
pub fn pool(issuer: &str, client_id: &str, count: usize, ttl: u64) -> Vec<String> {
    let iat = keys::now();
    let mint = |index: usize| {
        let random: u64 = jwt_simple::reexports::rand::random();
        let jti = format!("AT.bench-{index}-{random:016x}");
        let claims = access_token_claims(issuer, client_id, &["read"], iat, ttl, &jti);
        keys::mint_raw(
            &json!({"alg": "RS256", "kid": "rsa-1"}),
            &claims,
            Sig::Key {
                kid: "rsa-1",
                alg: "RS256",
            },
        )
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(count.max(1));
    // Thread t mints the indices t, t + threads, t + 2 * threads, ...
    let mut parts: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| scope.spawn(move || (t..count).step_by(threads).map(mint).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a minting thread panicked"))
            .collect()
    });
    (0..count)
        .map(|i| std::mem::take(&mut parts[i % threads][i / threads]))
        .collect()
}

/// (kid in the key set, fixture key, algorithm) of [`core_bench_input`].
const CORE_CASES: [(&str, &str, &str); 8] = [
    ("rsa-1-RS256", "rsa-1", "RS256"),
    ("rsa-1-RS384", "rsa-1", "RS384"),
    ("rsa-1-RS512", "rsa-1", "RS512"),
    ("rsa-1-PS256", "rsa-1", "PS256"),
    ("rsa-1-PS384", "rsa-1", "PS384"),
    ("rsa-1-PS512", "rsa-1", "PS512"),
    ("ec-1", "ec-1", "ES256"),
    ("ed-1", "ed-1", "EdDSA"),
];

/// The plugin configuration of `bench/core-filter`: a key set, one token per signing
/// algorithm the filter supports and the test kit can sign (RS256/384/512, PS256/384/512,
/// ES256, EdDSA), the issuer the tokens carry and their audience.
///
/// RSA keys are listed once per algorithm (kid `rsa-1-PS256`, ...), each with its `alg`, since
/// a JWK names one algorithm and the filter holds tokens to it.
pub fn core_bench_input(issuer: &str) -> Value {
    let iat = keys::now();
    let mut jwks = Vec::new();
    let mut tokens = Vec::new();
    for (kid, key, alg) in CORE_CASES {
        let mut jwk = keys::jwk(key);
        jwk["kid"] = kid.into();
        jwk["alg"] = alg.into();
        jwks.push(jwk);
        let ttl = 30 * 24 * 3600;
        let jti = format!("AT.core-{alg}");
        let claims = access_token_claims(issuer, "demo-client", &["read"], iat, ttl, &jti);
        let token = keys::mint_raw(
            &json!({"alg": alg, "kid": kid}),
            &claims,
            Sig::Key { kid: key, alg },
        );
        tokens.push(json!({"alg": alg, "token": token}));
    }
    json!({
        "issuer": issuer,
        "audience": AUDIENCE,
        "jwks": {"keys": jwks},
        "tokens": tokens,
    })
}
