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
    // Hardening (RFC 7519 §4 allows either): a repeated member name is refused rather than
    // resolved, so no consumer of the token (upstreams included) can read another value.
    let Value::Object(claims) = serde_json::from_slice::<Unique>(&bytes)
        .map_err(|_| TokenProblem::Malformed)?
        .0
    else {
        return Err(TokenProblem::Malformed);
    };
    // Without an expiry nothing bounds the token's life or our cache: refuse it.
    let exp_s = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(TokenProblem::MissingExpiry)?;
    // Hardening: jwt-simple's clock saturates at 2^32 s (year 2106), so a later `exp` was
    // never compared at all (`u64::MAX` meant "valid forever"). Refuse it.
    if exp_s > MAX_NUMERIC_DATE_S {
        return Err(TokenProblem::Malformed);
    }
    Ok(Verified { claims, exp_s })
}

/// The largest `exp` jwt-simple represents faithfully (coarsetime keeps seconds in 32 bits).
const MAX_NUMERIC_DATE_S: u64 = u32::MAX as u64;

/// A JSON value in which no object, at any depth, repeats a member name.
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value without repeated member names")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(value) = map.next_value()?;
            if out.insert(key, value).is_some() {
                return Err(serde::de::Error::custom("repeated member name"));
            }
        }
        Ok(Value::Object(out))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::keys::{jws, Sig};

    const NOW_S: u64 = 1_800_000_000;

    fn keys() -> KeySet {
        KeySet::parse(testkit::keys::jwks(&["rsa-1"]).to_string().as_bytes()).unwrap()
    }

    fn check(payload: &str) -> Result<Verified, TokenProblem> {
        let header = br#"{"alg":"RS256","kid":"rsa-1"}"#;
        let sig = Sig::Key {
            kid: "rsa-1",
            alg: "RS256",
        };
        verify(&jws(header, payload.as_bytes(), sig), &keys(), NOW_S, 0)
    }

    #[test]
    fn repeated_member_names_are_malformed_at_any_depth() {
        let ok = check(r#"{"exp":1800000060,"cid":"svc","realm":{"roles":["a"]}}"#).unwrap();
        assert_eq!(ok.claims["cid"], "svc");
        for payload in [
            r#"{"exp":1800000060,"cid":"intruder","cid":"svc"}"#,
            r#"{"exp":1800000060,"cid":"svc","cid":"intruder"}"#,
            r#"{"exp":1800000060,"realm":{"roles":["a"],"roles":["admin"]}}"#,
            r#"{"exp":1800000060,"l":[{"a":1,"a":2}]}"#,
        ] {
            assert_eq!(check(payload), Err(TokenProblem::Malformed), "{payload}");
        }
    }

    #[test]
    fn an_exp_beyond_the_library_clock_is_refused() {
        assert_eq!(check(r#"{"exp":4294967295}"#).unwrap().exp_s, 4_294_967_295);
        for exp in ["4294967296", "18446744073709551615"] {
            let payload = format!(r#"{{"exp":{exp}}}"#);
            assert_eq!(check(&payload), Err(TokenProblem::Malformed), "{exp}");
        }
    }
}
