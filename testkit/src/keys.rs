//! The fixture signing keys (`tests/fixtures/*.pem`), their public JWKs, and hand-built JWS.
//!
//! jwt-simple only signs headers it builds itself (always `typ: JWT`, its own `alg`), so tokens
//! are assembled here from raw JSON — `base64url(header) "." base64url(claims) "." base64url(sig)`
//! — and signed with the key's primitive. That gives tests full control: `alg: none`, HS256
//! signed with a public key, a header `alg` that does not match the key, odd claim encodings.
//!
//! | kid     | file            | key         | algorithms                             |
//! |---------|-----------------|-------------|----------------------------------------|
//! | `rsa-1` | `rsa-1.pem`     | RSA-2048    | RS256 RS384 RS512 PS256 PS384 PS512    |
//! | `rsa-2` | `rsa-2.pem`     | RSA-2048    | (same)                                 |
//! | `ec-1`  | `ec-1.pem`      | P-256       | ES256                                  |
//! | `ed-1`  | `ed25519-1.pem` | Ed25519     | EdDSA                                  |

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use p256::ecdsa::signature::Signer as _;
use serde_json::{json, Map, Value};
use superboring::hash::MessageDigest;
use superboring::pkey::PKey;
use superboring::rsa::Padding;

/// Every fixture key id.
pub const KIDS: [&str; 4] = ["rsa-1", "rsa-2", "ec-1", "ed-1"];

/// `<repo>/tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    crate::repo_root().join("tests/fixtures")
}

enum KeyPair {
    // Boxed only to keep the variants of similar size (clippy::large_enum_variant).
    Rsa(Box<RS256KeyPair>),
    Ec(ES256KeyPair),
    Ed(Ed25519KeyPair),
}

struct Fixture {
    kid: &'static str,
    pair: KeyPair,
}

/// Parsed once per process: RSA PEM parsing is not free and every minted token needs a key.
fn fixtures() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let pem = |file: &str| {
            let path = fixtures_dir().join(file);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("fixture key {}: {e}", path.display()))
        };
        let rsa = |file| KeyPair::Rsa(Box::new(RS256KeyPair::from_pem(&pem(file)).expect(file)));
        vec![
            Fixture {
                kid: "rsa-1",
                pair: rsa("rsa-1.pem"),
            },
            Fixture {
                kid: "rsa-2",
                pair: rsa("rsa-2.pem"),
            },
            Fixture {
                kid: "ec-1",
                pair: KeyPair::Ec(ES256KeyPair::from_pem(&pem("ec-1.pem")).expect("ec-1.pem")),
            },
            Fixture {
                kid: "ed-1",
                pair: KeyPair::Ed(
                    Ed25519KeyPair::from_pem(&pem("ed25519-1.pem")).expect("ed25519-1.pem"),
                ),
            },
        ]
    })
}

fn fixture(kid: &str) -> &'static Fixture {
    fixtures()
        .iter()
        .find(|f| f.kid == kid)
        .unwrap_or_else(|| panic!("no fixture key {kid:?}; known: {KIDS:?}"))
}

/// The algorithm a key signs with by default and is published with: RS256, ES256 or EdDSA.
pub fn default_alg(kid: &str) -> &'static str {
    match fixture(kid).pair {
        KeyPair::Rsa(_) => "RS256",
        KeyPair::Ec(_) => "ES256",
        KeyPair::Ed(_) => "EdDSA",
    }
}

/// Base64url without padding, the JOSE encoding.
pub fn b64url(data: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The public JWK of a fixture key, as an Okta JWKS lists it (`kty`, `kid`, `use: sig`, `alg`
/// and the key's components).
pub fn jwk(kid: &str) -> Value {
    let f = fixture(kid);
    let mut jwk = match &f.pair {
        KeyPair::Rsa(k) => {
            let c = k.public_key().to_components();
            json!({"kty": "RSA", "n": b64url(c.n), "e": b64url(c.e)})
        }
        KeyPair::Ec(k) => {
            // SEC1 uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
            let point = k.public_key().public_key().to_bytes_uncompressed();
            let (x, y) = point[1..].split_at(32);
            json!({"kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y)})
        }
        KeyPair::Ed(k) => {
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(k.public_key().to_bytes())})
        }
    };
    jwk["kid"] = f.kid.into();
    jwk["use"] = "sig".into();
    jwk["alg"] = default_alg(kid).into();
    jwk
}

/// `{"keys": [jwk(kid) for kid in kids]}`.
pub fn jwks(kids: &[&str]) -> Value {
    json!({ "keys": kids.iter().map(|kid| jwk(kid)).collect::<Vec<_>>() })
}

/// The SPKI PEM of a fixture key's public half.
pub fn public_key_pem(kid: &str) -> String {
    match &fixture(kid).pair {
        KeyPair::Rsa(k) => k.public_key().to_pem().expect("RSA public PEM"),
        KeyPair::Ec(k) => k.public_key().to_pem().expect("EC public PEM"),
        KeyPair::Ed(k) => k.public_key().to_pem(),
    }
}

/// Signs a JWS signing input (`header.payload`) with fixture key `kid` using `alg`.
///
/// Panics when `alg` does not fit the key type: tests that want a mismatch put one `alg` in the
/// header and sign with another.
pub fn sign(kid: &str, alg: &str, signing_input: &[u8]) -> Vec<u8> {
    match (&fixture(kid).pair, alg) {
        (KeyPair::Rsa(k), _) => {
            let (digest, padding) = match alg {
                "RS256" => (MessageDigest::sha256(), Padding::PKCS1),
                "RS384" => (MessageDigest::sha384(), Padding::PKCS1),
                "RS512" => (MessageDigest::sha512(), Padding::PKCS1),
                "PS256" => (MessageDigest::sha256(), Padding::PKCS1_PSS),
                "PS384" => (MessageDigest::sha384(), Padding::PKCS1_PSS),
                "PS512" => (MessageDigest::sha512(), Padding::PKCS1_PSS),
                _ => panic!("{kid} is an RSA key; cannot sign {alg}"),
            };
            // The same calls jwt-simple makes for its own RS*/PS* tokens (PSS salt = hash size).
            let pkey = PKey::from_rsa(k.key_pair().as_ref().clone()).expect("RSA key");
            let mut signer = superboring::sign::Signer::new(digest, &pkey).expect("signer");
            signer.set_rsa_padding(padding).expect("padding");
            signer.update(signing_input).expect("update");
            signer.sign_to_vec().expect("RSA signature")
        }
        (KeyPair::Ec(k), "ES256") => {
            // JWS wants the fixed-size r || s form (RFC 7518 §3.4), not DER.
            let signature: p256::ecdsa::Signature = k.key_pair().as_ref().sign(signing_input);
            signature.to_bytes().to_vec()
        }
        (KeyPair::Ed(k), "EdDSA" | "Ed25519") => {
            k.key_pair().as_ref().sk.sign(signing_input, None).to_vec()
        }
        _ => panic!("{kid} cannot sign {alg}"),
    }
}

/// How [`jws`] / [`mint_raw`] produce the third part of a token.
#[derive(Clone, Debug)]
pub enum Sig<'a> {
    /// Sign with fixture key `kid` using `alg` (see [`sign`]); independent of the header's claims.
    Key { kid: &'a str, alg: &'a str },
    /// HMAC-SHA256 keyed with these bytes (for `alg: HS256` confusion tests).
    Hs256(&'a [u8]),
    /// An empty signature (`alg: none` tokens end in a bare `.`).
    Empty,
    /// These exact signature bytes.
    Bytes(Vec<u8>),
}

/// A compact JWS from raw header and payload bytes, which need not even be JSON.
pub fn jws(header: &[u8], payload: &[u8], sig: Sig<'_>) -> String {
    let signing_input = format!("{}.{}", b64url(header), b64url(payload));
    let signature = match sig {
        Sig::Key { kid, alg } => sign(kid, alg, signing_input.as_bytes()),
        Sig::Hs256(secret) => hmac_sha256::HMAC::mac(signing_input.as_bytes(), secret).to_vec(),
        Sig::Empty => Vec::new(),
        Sig::Bytes(bytes) => bytes,
    };
    format!("{signing_input}.{}", b64url(signature))
}

/// A token with exactly this header and these claims (serialized compactly), signed per `sig`.
///
/// ```no_run
/// use serde_json::json;
/// use testkit::keys::{mint_raw, Sig};
/// // ES256 in the header, RS256 signature from rsa-1: an alg/key mismatch.
/// let t = mint_raw(
///     &json!({"alg": "ES256", "kid": "rsa-1"}),
///     &json!({"sub": "x"}),
///     Sig::Key { kid: "rsa-1", alg: "RS256" },
/// );
/// ```
pub fn mint_raw(header: &Value, claims: &Value, sig: Sig<'_>) -> String {
    jws(
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
        sig,
    )
}

/// An unsigned token (`header.claims.` — empty signature), e.g. with `{"alg": "none"}`.
pub fn unsigned_token(header: &Value, claims: &Value) -> String {
    mint_raw(header, claims, Sig::Empty)
}

/// The classic algorithm-confusion attack: `alg: HS256`, `kid` of an RSA key in `jwks`, HMAC
/// keyed with that public key's PEM (what a verifier that trusts the header's `alg` and uses
/// "the key bytes" as an HMAC secret would accept).
///
/// The PEM is rebuilt from the JWK in `jwks`, the document the IdP publishes, so the token is
/// "signed" with exactly what an attacker could download.
pub fn hs256_token_with_rsa_public_key(jwks: &Value, kid: &str, claims: &Value) -> String {
    let jwk = find_jwk(jwks, kid).unwrap_or_else(|| panic!("{kid} is not published"));
    assert_eq!(jwk["kty"], "RSA", "{kid} is not an RSA key");
    let pem = RS256PublicKey::from_components(&b64_field(jwk, "n"), &b64_field(jwk, "e"))
        .expect("RSA JWK")
        .to_pem()
        .expect("PEM");
    mint_raw(
        &json!({"alg": "HS256", "kid": kid, "typ": "JWT"}),
        claims,
        Sig::Hs256(pem.as_bytes()),
    )
}

fn part(token: &str, index: usize) -> Value {
    let part = token
        .split('.')
        .nth(index)
        .unwrap_or_else(|| panic!("token has no part {index}"));
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url part");
    serde_json::from_slice(&bytes).expect("JSON part")
}

/// The decoded (unverified) JOSE header of a token. Panics on a malformed token.
pub fn decode_header(token: &str) -> Value {
    part(token, 0)
}

/// The decoded (unverified) claims of a token. Panics on a malformed token.
pub fn decode_claims(token: &str) -> Value {
    part(token, 1)
}

fn find_jwk<'a>(jwks: &'a Value, kid: &str) -> Option<&'a Value> {
    jwks["keys"].as_array()?.iter().find(|k| k["kid"] == kid)
}

fn b64_field(jwk: &Value, name: &str) -> Vec<u8> {
    let text = jwk[name]
        .as_str()
        .unwrap_or_else(|| panic!("JWK without {name}"));
    URL_SAFE_NO_PAD
        .decode(text)
        .unwrap_or_else(|e| panic!("JWK {name}: {e}"))
}

/// Verifies `token` against a JWKS document the way a strict verifier would: key chosen by the
/// header's `kid`, the JWK's `alg` (when present) must equal the header's, signature checked,
/// and `exp`/`nbf` with zero leeway. Returns the claims.
///
/// Independent of the filter (it uses jwt-simple with keys built from the JWK components), so
/// tests can check what the IdP issued or what reached the upstream.
pub fn verify(token: &str, jwks: &Value) -> Result<Value, String> {
    let header = token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .ok_or("malformed header")?;
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let alg = header["alg"].as_str().ok_or("no alg")?;
    let jwk = find_jwk(jwks, kid).ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
    if let Some(jwk_alg) = jwk["alg"].as_str() {
        if jwk_alg != alg {
            return Err(format!("token alg {alg} but JWK alg {jwk_alg}"));
        }
    }
    // jwt-simple's own clock is coarse (it may lag the real time by a few ms), so a token
    // issued this very second could look issued in the future; compare with the precise time.
    let precise_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let options = VerificationOptions {
        time_tolerance: Some(Duration::from_secs(0)),
        artificial_time: Some(Duration::from_millis(precise_now.as_millis() as u64)),
        ..Default::default()
    };
    let n_e = || (b64_field(jwk, "n"), b64_field(jwk, "e"));
    // One macro arm per key type: each jwt-simple public-key type has the same two calls but no
    // common trait for construction.
    macro_rules! rsa {
        ($key:ty) => {{
            let (n, e) = n_e();
            <$key>::from_components(&n, &e)
                .map_err(|e| e.to_string())?
                .verify_token::<Map<String, Value>>(token, Some(options))
        }};
    }
    let claims = match (jwk["kty"].as_str(), alg) {
        (Some("RSA"), "RS256") => rsa!(RS256PublicKey),
        (Some("RSA"), "RS384") => rsa!(RS384PublicKey),
        (Some("RSA"), "RS512") => rsa!(RS512PublicKey),
        (Some("RSA"), "PS256") => rsa!(PS256PublicKey),
        (Some("RSA"), "PS384") => rsa!(PS384PublicKey),
        (Some("RSA"), "PS512") => rsa!(PS512PublicKey),
        (Some("EC"), "ES256") => {
            let mut point = vec![0x04];
            point.extend(b64_field(jwk, "x"));
            point.extend(b64_field(jwk, "y"));
            ES256PublicKey::from_bytes(&point)
                .map_err(|e| e.to_string())?
                .verify_token::<Map<String, Value>>(token, Some(options))
        }
        (Some("OKP"), "EdDSA") => Ed25519PublicKey::from_bytes(&b64_field(jwk, "x"))
            .map_err(|e| e.to_string())?
            .verify_token::<Map<String, Value>>(token, Some(options)),
        (kty, alg) => return Err(format!("unsupported kty {kty:?} / alg {alg}")),
    }
    .map_err(|e| e.to_string())?;
    serde_json::to_value(claims).map_err(|e| e.to_string())
}
