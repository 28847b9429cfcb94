//! Checking one JWT: size, header, key choice, signature and time.
//!
//! Policy (issuer, audience, client, scopes) is separate, in `policy.rs`, so a cached
//! signature result can be re-judged cheaply and the order matches Envoy's `jwt_authn`.

use base64::Engine;
use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde_json::{Map, Value};

use crate::jwks::{Alg, KeySet, Lookup, Verifier};
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
        let checked = match key.verifier() {
            Verifier::Rsa(key, padding, hash) => {
                verify_signed(token, &meta, now_s, leeway_s, |m, s| {
                    key.verify(padding, hash, m, s)
                })
            }
            Verifier::Ecdsa(key) => {
                verify_signed(token, &meta, now_s, leeway_s, |m, s| key.verify(m, s))
            }
            Verifier::Eddsa(key) => {
                verify_signed(token, &meta, now_s, leeway_s, |m, s| key.verify(m, s))
            }
            Verifier::Library(key) => {
                let options = VerificationOptions {
                    // Our clock and our leeway, never the library's 15-minute default.
                    artificial_time: Some(UnixTimeStamp::from_secs(now_s)),
                    time_tolerance: Some(Duration::from_secs(leeway_s)),
                    max_token_length: Some(MAX_TOKEN_BYTES),
                    ..VerificationOptions::default()
                };
                key.verify(token, options)
                    .map(|_| ())
                    .map_err(|e| classify(&e))
            }
        };
        match checked {
            Ok(()) => return finish(token, now_s, leeway_s),
            Err(p) => problem = p,
        }
    }
    Err(problem)
}

/// Key sets longer than this are named in part in an `unknown_kid` log line.
const KIDS_SHOWN: usize = 8;

/// For the log line of an `unknown_kid` refusal: the token's `kid` (the caller wrote it:
/// escaped and cut short) beside the `kid`s of the key set, e.g. ``kid `rsa-2`, the key set
/// has `rsa-1`, `ec-1` ``.
pub fn explain_unknown_kid(token: &str, keys: &KeySet) -> String {
    use crate::log_budget::bounded;
    let kid = Token::decode_metadata(token)
        .ok()
        .and_then(|m| m.key_id().map(|k| format!("`{}`", bounded(k))))
        .unwrap_or_else(|| "none".to_string());
    let kids = keys.kids();
    let mut known: Vec<String> = kids
        .iter()
        .take(KIDS_SHOWN)
        .map(|k| format!("`{}`", bounded(k)))
        .collect();
    if kids.len() > KIDS_SHOWN {
        known.push(format!("… ({} in all)", kids.len()));
    }
    if known.is_empty() {
        return format!("kid {kid}, the key set has no kid");
    }
    format!("kid {kid}, the key set has {}", known.join(", "))
}

/// RS*, PS* (`rsa.rs`), ES256 (`ecdsa.rs`) and EdDSA (`eddsa.rs`): the checks jwt-simple's `verify_token` makes
/// for the other algorithms, in its order (form, header, signature, standard claim types,
/// times), so the two paths accept and refuse the same tokens. `signature_ok` gets the
/// signing input and the decoded signature.
fn verify_signed(
    token: &str,
    meta: &TokenMetadata,
    now_s: u64,
    leeway_s: u64,
    signature_ok: impl FnOnce(&[u8], &[u8]) -> bool,
) -> Result<(), TokenProblem> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenProblem::Malformed);
    };
    if meta.critical().is_some_and(|c| !c.is_empty()) {
        return Err(TokenProblem::Malformed);
    }
    if let Some(typ) = meta.signature_type() {
        let typ = typ.to_ascii_uppercase();
        if typ != "JWT" && !typ.ends_with("+JWT") {
            return Err(TokenProblem::Malformed);
        }
    }
    let decode = |part: &str| {
        Base64UrlSafeNoPadding::decode_to_vec(part, None).map_err(|_| TokenProblem::Malformed)
    };
    let signature = decode(signature)?;
    let signed = token
        .get(..header.len() + 1 + payload.len())
        .ok_or(TokenProblem::Malformed)?;
    if !signature_ok(signed.as_bytes(), &signature) {
        return Err(TokenProblem::BadSignature);
    }
    let claims: JWTClaims<NoCustomClaims> =
        serde_json::from_slice(&decode(payload)?).map_err(|_| TokenProblem::Malformed)?;
    let secs = |t: Option<UnixTimeStamp>| t.map(|t| t.as_secs());
    if secs(claims.issued_at).is_some_and(|iat| iat > now_s.saturating_add(leeway_s)) {
        return Err(TokenProblem::IssuedInFuture);
    }
    if secs(claims.invalid_before).is_some_and(|nbf| now_s.saturating_add(leeway_s) < nbf) {
        return Err(TokenProblem::NotYetValid);
    }
    if secs(claims.expires_at).is_some_and(|exp| now_s >= exp.saturating_add(leeway_s)) {
        return Err(TokenProblem::Expired);
    }
    Ok(())
}

/// The signature is good: read every claim (jwt-simple keeps only the standard ones typed).
fn finish(token: &str, now_s: u64, leeway_s: u64) -> Result<Verified, TokenProblem> {
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
    // RFC 7519 §4.1.4: expired "on or after" `exp`; jwt-simple still accepts `exp == now`.
    if now_s >= exp_s.saturating_add(leeway_s) {
        return Err(TokenProblem::Expired);
    }
    Ok(Verified { claims, exp_s })
}

/// A JSON object in which no object repeats a member name; `None` for anything else.
pub fn unique_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Unique>(bytes).ok()?.0 {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Whether `token` has the form of a JWS compact serialisation: a first segment, before a
/// `.`, that decodes to a JSON object (RFC 7515 §7.1). Then it is verified locally, and a
/// defect past its header is the JWT's, not a reason to ask the IdP; anything else is
/// opaque.
pub fn is_jwt(token: &str) -> bool {
    let Some((header, _)) = token.split_once('.') else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<Map<String, Value>>(&h).ok())
        .is_some()
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
        Some(
            JWTError::CompactEncodingError
            | JWTError::HeaderTooLarge
            | JWTError::UnknownCriticalExtension
            | JWTError::NotJWT,
        ) => TokenProblem::Malformed,
        // A part that is not base64url, or signed claims that are not the JSON a JWT holds.
        _ if e.downcast_ref::<serde_json::Error>().is_some()
            || e.downcast_ref::<jwt_simple::reexports::ct_codecs::Error>()
                .is_some() =>
        {
            TokenProblem::Malformed
        }
        _ => TokenProblem::BadSignature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ecdsa, eddsa, rsa};
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

    /// Our path (`verify_signed`) and jwt-simple's own must agree on every token, for
    /// PKCS#1 v1.5, PSS, ES256 and EdDSA: the same accepted, the same refused, for the same reason.
    #[test]
    fn our_path_and_jwt_simple_agree() {
        let b64 = |jwk: &Value, f: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwk[f].as_str().unwrap())
                .unwrap()
        };
        let rsa_jwk = &testkit::keys::jwks(&["rsa-1"])["keys"][0];
        let (n, e) = (b64(rsa_jwk, "n"), b64(rsa_jwk, "e"));
        let rsa_key = rsa::PublicKey::new(&n, &e).unwrap();
        let rs256 = RS256PublicKey::from_components(&n, &e).unwrap();
        let ps256 = PS256PublicKey::from_components(&n, &e).unwrap();
        let ec_jwk = &testkit::keys::jwks(&["ec-1"])["keys"][0];
        let (x, y) = (b64(ec_jwk, "x"), b64(ec_jwk, "y"));
        let ec_key = ecdsa::PublicKey::new(&x, &y).unwrap();
        let es256 = ES256PublicKey::from_bytes(&[&[4][..], &x, &y].concat()).unwrap();
        let ed_x = b64(&testkit::keys::jwks(&["ed-1"])["keys"][0], "x");
        let ed_key = eddsa::PublicKey::new(&ed_x).unwrap();
        let ed25519 = Ed25519PublicKey::from_bytes(&ed_x).unwrap();
        type Check<'a> = Box<dyn Fn(&[u8], &[u8]) -> bool + 'a>;
        type Library<'a> =
            Box<dyn Fn(&str, VerificationOptions) -> Result<(), jwt_simple::Error> + 'a>;
        let sha256 = rsa::Hash::Sha256;
        let cases: [(&str, &str, Check, Library); 4] = [
            (
                "RS256",
                "rsa-1",
                Box::new(|m, s| rsa_key.verify(rsa::Padding::Pkcs1, sha256, m, s)),
                Box::new(|t, o| rs256.verify_token::<NoCustomClaims>(t, Some(o)).map(|_| ())),
            ),
            (
                "PS256",
                "rsa-1",
                Box::new(|m, s| rsa_key.verify(rsa::Padding::Pss, sha256, m, s)),
                Box::new(|t, o| ps256.verify_token::<NoCustomClaims>(t, Some(o)).map(|_| ())),
            ),
            (
                "ES256",
                "ec-1",
                Box::new(|m, s| ec_key.verify(m, s)),
                Box::new(|t, o| es256.verify_token::<NoCustomClaims>(t, Some(o)).map(|_| ())),
            ),
            (
                "EdDSA",
                "ed-1",
                Box::new(|m, s| ed_key.verify(m, s)),
                Box::new(|t, o| {
                    ed25519
                        .verify_token::<NoCustomClaims>(t, Some(o))
                        .map(|_| ())
                }),
            ),
        ];
        for (alg, kid, ours, library) in cases {
            let sig = || Sig::Key { kid, alg };
            let good_header = format!(r#"{{"alg":"{alg}","kid":"{kid}"}}"#);
            let crit = format!(r#"{{"alg":"{alg}","kid":"{kid}","crit":["exp"]}}"#);
            let no_crit = format!(r#"{{"alg":"{alg}","kid":"{kid}","crit":[]}}"#);
            let at_jwt = format!(r#"{{"alg":"{alg}","typ":"at+jwt"}}"#);
            let jose = format!(r#"{{"alg":"{alg}","typ":"JOSE"}}"#);
            let good = good_header.as_str();
            let mut tokens = vec![];
            for (header, payload) in [
                (good, r#"{"exp":1800000060}"#),
                (good, r#"{"exp":1799999999}"#),
                (good, r#"{"exp":1800000000}"#),
                (good, r#"{"exp":1800000060,"nbf":1800000010}"#),
                (good, r#"{"exp":1800000060,"nbf":1800000005}"#),
                (good, r#"{"exp":1800000060,"iat":1800000010}"#),
                (good, r#"{"exp":1800000060,"iat":1800000005}"#),
                (good, r#"{"exp":"1800000060"}"#),
                (good, r#"{"exp":1800000060,"aud":{"a":1}}"#),
                (good, r#"{"exp":1800000060,"iss":7}"#),
                (good, r#"{"exp":1800000060,"aud":["a","b"],"sub":"s"}"#),
                (good, r#"["exp"]"#),
                (good, "not json"),
                (&crit, r#"{"exp":1800000060}"#),
                (&no_crit, r#"{"exp":1800000060}"#),
                (&at_jwt, r#"{"exp":1800000060}"#),
                (&jose, r#"{"exp":1800000060}"#),
            ] {
                tokens.push(jws(header.as_bytes(), payload.as_bytes(), sig()));
            }
            let first = tokens[0].clone();
            let (signed, signature) = first.rsplit_once('.').unwrap();
            tokens.push(format!("{first}."));
            tokens.push(format!("{first}="));
            tokens.push(format!("{signed}.{}", &signature[1..]));
            tokens.push(format!("{signed}X.{signature}"));
            tokens.push(format!("{signed}.{signature}A"));
            tokens.push(signed.to_string());
            // Signatures of other shapes: r‖s with s negated (high s), zero, n; one byte
            // short or long; all ones.
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(signature)
                .unwrap();
            let mut shapes = vec![
                raw[..raw.len() - 1].to_vec(),
                [&raw[..], &[0]].concat(),
                vec![0xff; raw.len()],
                vec![0; raw.len()],
            ];
            if alg == "ES256" {
                use p256::elliptic_curve::ff::PrimeField;
                let s = p256::Scalar::from_repr(p256::FieldBytes::try_from(&raw[32..]).unwrap())
                    .unwrap();
                let n = hex32("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
                shapes.push([&raw[..32], &(-s).to_repr()[..]].concat());
                shapes.push([&raw[..32], &n[..]].concat());
                shapes.push([&n[..], &raw[32..]].concat());
                shapes.push([&[0; 32][..], &raw[32..]].concat());
            }
            if alg == "EdDSA" {
                // s + L (non-canonical), s = L; R the identity (small order); R with y ≥ p.
                let l = hex32("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
                let mut s_plus_l = [0u8; 32];
                let mut carry = 0u16;
                for (o, (a, b)) in s_plus_l.iter_mut().zip(raw[32..].iter().zip(&l)) {
                    let sum = u16::from(*a) + u16::from(*b) + carry;
                    *o = sum as u8;
                    carry = sum >> 8;
                }
                let mut identity = [0u8; 32];
                identity[0] = 1;
                shapes.push([&raw[..32], &s_plus_l[..]].concat());
                shapes.push([&raw[..32], &l[..]].concat());
                shapes.push([&identity[..], &raw[32..]].concat());
                shapes.push([&[0xff; 32][..], &raw[32..]].concat());
            }
            for shape in shapes {
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(shape);
                tokens.push(format!("{signed}.{b64}"));
            }
            let mut accepted = 0;
            for token in &tokens {
                let Ok(meta) = Token::decode_metadata(token) else {
                    continue;
                };
                let options = VerificationOptions {
                    artificial_time: Some(UnixTimeStamp::from_secs(NOW_S)),
                    time_tolerance: Some(Duration::from_secs(5)),
                    max_token_length: Some(MAX_TOKEN_BYTES),
                    ..VerificationOptions::default()
                };
                let theirs = library(token, options).map_err(|e| classify(&e));
                let ours = verify_signed(token, &meta, NOW_S, 5, &ours);
                assert_eq!(ours, theirs, "{alg} {token}");
                accepted += usize::from(ours.is_ok());
            }
            // Not a comparison of refusals alone (for ES256 the high-s token too).
            assert!(accepted >= 4, "{alg}: {accepted} accepted");
            let meta = Token::decode_metadata(&first).unwrap();
            assert_eq!(
                verify_signed(&first, &meta, NOW_S, 5, &ours),
                Ok(()),
                "{alg}"
            );
        }
    }

    fn hex32(hex: &str) -> [u8; 32] {
        let mut out = [0; 32];
        for (o, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
            *o = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
        }
        out
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
