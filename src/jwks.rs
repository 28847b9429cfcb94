//! The IdP's JSON Web Key Set, parsed into ready-to-use verification keys.
//!
//! Parsing is lenient the way IdPs need it: keys this filter cannot use (encryption keys,
//! unknown `kty`, bad numbers) are skipped rather than failing the whole set, and a missing
//! `alg` makes the key serve every algorithm of its type.

use std::sync::Arc;

use base64::Engine;
use jwt_simple::prelude::*;
use serde::Deserialize;

use crate::{ecdsa, eddsa, rsa};

/// The asymmetric algorithms accepted. `none` and HMAC have no variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

const RSA_ALGS: [Alg; 6] = [
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
];

impl Alg {
    /// Exact, case-sensitive names (RFC 7518): `None`, `NONE`, `HS256` are not algorithms here.
    pub fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }
}

/// A public key bound to one algorithm, so that a key can never be used with another
/// algorithm than the one it was selected for.
enum AlgKey {
    /// RS* and PS*: this crate's verifier (`rsa.rs`), the key shared by the algorithms of one
    /// JWK so its Montgomery constants are computed once.
    Rsa(Arc<rsa::PublicKey>, rsa::Padding, rsa::Hash),
    /// ES256: this crate's verifier (`ecdsa.rs`), its table of multiples kept with the key.
    Ecdsa(Box<ecdsa::PublicKey>),
    /// EdDSA: this crate's verifier (`eddsa.rs`), the key decoded once, its table kept with it.
    Eddsa(Box<eddsa::PublicKey>),
    Library(Box<LibraryKey>),
}

/// A key jwt-simple verifies with (ES384).
pub enum LibraryKey {
    ES384(ES384PublicKey),
}

/// Why a signature check failed, as jwt-simple reports it.
pub type VerifyError = jwt_simple::Error;

pub type Claims = JWTClaims<serde_json::Map<String, serde_json::Value>>;

impl LibraryKey {
    pub fn verify(&self, token: &str, options: VerificationOptions) -> Result<Claims, VerifyError> {
        let o = Some(options);
        match self {
            LibraryKey::ES384(k) => k.verify_token(token, o),
        }
    }
}

/// How to check a signature with one key.
pub enum Verifier<'a> {
    Rsa(&'a rsa::PublicKey, rsa::Padding, rsa::Hash),
    Ecdsa(&'a ecdsa::PublicKey),
    Eddsa(&'a eddsa::PublicKey),
    Library(&'a LibraryKey),
}

/// A key usable for exactly one algorithm.
pub struct Entry {
    kid: Option<String>,
    alg: Alg,
    key: AlgKey,
}

impl Entry {
    pub fn verifier(&self) -> Verifier<'_> {
        match &self.key {
            AlgKey::Rsa(key, padding, hash) => Verifier::Rsa(key, *padding, *hash),
            AlgKey::Ecdsa(key) => Verifier::Ecdsa(key),
            AlgKey::Eddsa(key) => Verifier::Eddsa(key),
            AlgKey::Library(key) => Verifier::Library(key),
        }
    }
}

/// The usable keys of one JWKS document.
#[derive(Default)]
pub struct KeySet {
    entries: Vec<Entry>,
}

/// Lookup result for a token's `kid` and `alg`.
pub enum Lookup<'a> {
    Found(Vec<&'a Entry>),
    /// No key has that `kid`: the IdP may have rotated; worth a refetch.
    UnknownKid,
    /// The `kid` exists but not for that algorithm (or no key fits a kid-less token).
    NoMatchingKey,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Key sets larger than this are garbage, not key sets.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
const MAX_KEYS: usize = 64;

impl KeySet {
    /// Parses a JWKS document. Fails only when the document itself is unusable: not JSON, no
    /// `keys` array, too large, or without a single usable key.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, &'static str> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err("key set too large");
        }
        let raw: RawSet = serde_json::from_slice(bytes).map_err(|_| "not a JWKS document")?;
        let mut set = KeySet::default();
        for value in raw.keys.into_iter().take(MAX_KEYS) {
            // One odd key must not take the others down.
            if let Ok(key) = serde_json::from_value::<RawKey>(value) {
                set.add(key);
            }
        }
        if set.entries.is_empty() {
            return Err("no usable signing key");
        }
        Ok(set)
    }

    fn add(&mut self, raw: RawKey) {
        if raw.use_.as_deref().is_some_and(|u| u != "sig") {
            return;
        }
        let declared = match raw.alg.as_deref() {
            Some(name) => match Alg::parse(name) {
                Some(alg) => Some(alg),
                None => return,
            },
            None => None,
        };
        let b64 = |s: &Option<String>| {
            s.as_deref().and_then(|v| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(v.trim_end_matches('='))
                    .ok()
            })
        };
        let mut push = |alg: Alg, key: AlgKey| {
            self.entries.push(Entry {
                kid: raw.kid.clone(),
                alg,
                key,
            });
        };
        match (raw.kty.as_str(), raw.crv.as_deref()) {
            ("RSA", _) => {
                let (Some(n), Some(e)) = (b64(&raw.n), b64(&raw.e)) else {
                    return;
                };
                let algs: &[Alg] = match declared {
                    Some(a) if RSA_ALGS.contains(&a) => &[a][..],
                    Some(_) => return,
                    None => &RSA_ALGS[..],
                };
                let Some(key) = rsa::PublicKey::new(&n, &e).map(Arc::new) else {
                    return;
                };
                for &alg in algs {
                    if let Some((padding, hash)) = rsa_scheme(alg) {
                        push(alg, AlgKey::Rsa(key.clone(), padding, hash));
                    }
                }
            }
            ("EC", Some(crv)) => {
                let (Some(x), Some(y)) = (b64(&raw.x), b64(&raw.y)) else {
                    return;
                };
                match (crv, declared) {
                    ("P-256", None | Some(Alg::ES256)) => {
                        if let Some(k) = ecdsa::PublicKey::new(&x, &y) {
                            push(Alg::ES256, AlgKey::Ecdsa(Box::new(k)));
                        }
                    }
                    ("P-384", None | Some(Alg::ES384)) if x.len() == 48 && y.len() == 48 => {
                        let mut point = Vec::with_capacity(1 + x.len() + y.len());
                        point.push(0x04);
                        point.extend_from_slice(&x);
                        point.extend_from_slice(&y);
                        if let Ok(k) = ES384PublicKey::from_bytes(&point) {
                            push(Alg::ES384, AlgKey::Library(Box::new(LibraryKey::ES384(k))));
                        }
                    }
                    _ => {}
                }
            }
            ("OKP", Some("Ed25519")) if matches!(declared, None | Some(Alg::EdDSA)) => {
                if let Some(k) = b64(&raw.x).and_then(|x| eddsa::PublicKey::new(&x)) {
                    push(Alg::EdDSA, AlgKey::Eddsa(Box::new(k)));
                }
            }
            _ => {}
        }
    }

    /// Keys for a token with this `alg` and `kid`. A token without `kid` may use any key of
    /// its algorithm (Envoy `jwt_authn` does the same).
    pub fn lookup(&self, alg: Alg, kid: Option<&str>) -> Lookup<'_> {
        let mut kid_seen = false;
        let mut found = Vec::new();
        for entry in &self.entries {
            let kid_ok = match kid {
                Some(k) => entry.kid.as_deref() == Some(k),
                None => true,
            };
            if !kid_ok {
                continue;
            }
            kid_seen = true;
            if entry.alg == alg {
                found.push(entry);
            }
        }
        if !found.is_empty() {
            Lookup::Found(found)
        } else if kid.is_some() && !kid_seen {
            Lookup::UnknownKid
        } else {
            Lookup::NoMatchingKey
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The distinct `kid`s of the set, in its order (keys without one left out).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = Vec::new();
        for kid in self.entries.iter().filter_map(|e| e.kid.as_deref()) {
            if !kids.contains(&kid) {
                kids.push(kid);
            }
        }
        kids
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn rsa_scheme(alg: Alg) -> Option<(rsa::Padding, rsa::Hash)> {
    use rsa::{Hash, Padding};
    Some(match alg {
        Alg::RS256 => (Padding::Pkcs1, Hash::Sha256),
        Alg::RS384 => (Padding::Pkcs1, Hash::Sha384),
        Alg::RS512 => (Padding::Pkcs1, Hash::Sha512),
        Alg::PS256 => (Padding::Pss, Hash::Sha256),
        Alg::PS384 => (Padding::Pss, Hash::Sha384),
        Alg::PS512 => (Padding::Pss, Hash::Sha512),
        _ => return None,
    })
}
