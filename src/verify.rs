//! Checking one JWT: size, header, key choice, signature and time (SPEC §4).
//!
//! Policy (issuer, audience, client, scopes) is separate, in `policy.rs`, so a cached
//! signature result can be re-judged cheaply and the order matches Envoy's `jwt_authn`.

use base64::Engine;
use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde_json::{Map, Value};

use crate::jwks::{Alg, KeySet, Lookup};
use crate::outcome::TokenProblem;

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A token whose signature and times were verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// All claims of the payload, standard ones included.
    pub claims: Map<String, Value>,
    pub exp_s: u64,
}

/// Verifies `token` against `keys` at `now_s`, allowing exactly `leeway_s` of clock skew.
pub fn verify(
    token: &str,
    keys: &KeySet,
    now_s: u64,
    leeway_s: u64,
) -> Result<Verified, TokenProblem> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenProblem::TooLarge);
    }
    let meta = Token::decode_metadata(token).map_err(|_| TokenProblem::Malformed)?;
    let alg = Alg::parse(meta.algorithm()).ok_or(TokenProblem::DisallowedAlgorithm)?;
    let candidates = match keys.lookup(alg, meta.key_id()) {
        Lookup::Found(c) => c,
        Lookup::UnknownKid => return Err(TokenProblem::UnknownKey),
        // The kid names a key of another type or algorithm: never cross-use keys.
        Lookup::NoMatchingKey => return Err(TokenProblem::DisallowedAlgorithm),
    };
    let mut problem = TokenProblem::BadSignature;
    for key in candidates {
        let options = VerificationOptions {
            // Our clock and our leeway, never the library's 15-minute default.
            artificial_time: Some(UnixTimeStamp::from_secs(now_s)),
            time_tolerance: Some(Duration::from_secs(leeway_s)),
            max_token_length: Some(MAX_TOKEN_BYTES),
            ..VerificationOptions::default()
        };
        match key.verify(token, options) {
            Ok(_) => return finish(token),
            Err(e) => problem = classify(&e),
        }
    }
    Err(problem)
}

/// The signature is good: read every claim (jwt-simple keeps only the standard ones typed).
fn finish(token: &str) -> Result<Verified, TokenProblem> {
    let payload = token.split('.').nth(1).ok_or(TokenProblem::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenProblem::Malformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenProblem::Malformed)?;
    // Without an expiry nothing bounds the token's life or our cache: refuse it.
    let exp_s = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(TokenProblem::MissingExpiry)?;
    Ok(Verified { claims, exp_s })
}

fn classify(e: &jwt_simple::Error) -> TokenProblem {
    match e.downcast_ref::<JWTError>() {
        Some(JWTError::TokenHasExpired) => TokenProblem::Expired,
        Some(JWTError::TokenNotValidYet) => TokenProblem::NotYetValid,
        Some(JWTError::ClockDrift) => TokenProblem::IssuedInFuture,
        Some(JWTError::InvalidSignature) => TokenProblem::BadSignature,
        Some(JWTError::AlgorithmMismatch) => TokenProblem::DisallowedAlgorithm,
        Some(JWTError::CompactEncodingError | JWTError::HeaderTooLarge) => TokenProblem::Malformed,
        // Signature checks come before claim parsing, so anything else means the signed
        // bytes did not verify or did not parse as claims.
        _ => TokenProblem::BadSignature,
    }
}
