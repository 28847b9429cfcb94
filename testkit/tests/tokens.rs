//! Tokens in bulk: every one distinct and accepted by a strict verifier with the keys it names.

use serde_json::Value;
use testkit::keys;
use testkit::tokens::{core_bench_input, pool};

const ISSUER: &str = "http://127.0.0.1:1/oauth2/default";

#[test]
fn a_pool_is_distinct_valid_tokens_in_order() {
    let tokens = pool(ISSUER, "bench-client", 7, 600);
    assert_eq!(tokens.len(), 7);
    let jwks = keys::jwks(&["rsa-1"]);
    for (i, token) in tokens.iter().enumerate() {
        let claims = keys::verify(token, &jwks).unwrap();
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["sub"], "bench-client");
        assert_eq!(
            claims["exp"].as_u64(),
            claims["iat"].as_u64().map(|t| t + 600)
        );
        let jti = claims["jti"].as_str().unwrap();
        assert!(jti.starts_with(&format!("AT.bench-{i}-")), "{jti}");
    }
    let mut unique = tokens.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), tokens.len());
    assert!(pool(ISSUER, "bench-client", 0, 600).is_empty());
}

#[test]
fn the_core_bench_input_holds_one_valid_token_per_algorithm() {
    let input = core_bench_input(ISSUER);
    assert_eq!(input["issuer"], ISSUER);
    let tokens = input["tokens"].as_array().unwrap();
    let algs: Vec<&str> = tokens.iter().filter_map(|t| t["alg"].as_str()).collect();
    assert_eq!(
        algs,
        ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "EdDSA"]
    );
    for token in tokens {
        let token = token["token"].as_str().unwrap();
        let claims: Value = keys::verify(token, &input["jwks"]).unwrap();
        assert_eq!(claims["aud"], input["audience"]);
    }
}
