//! `oidcgate::eddsa` against `ed25519-compact` (what jwt-simple calls, its key validated as
//! jwt-simple's `Ed25519PublicKey::from_bytes` does): the same key, message and signature
//! must get the same verdict from both, with and without the key's table. Signatures are a
//! valid one patched; its s replaced by a number from the input (s + L, L ± small, any
//! 256-bit value reach the canonical-s check); its R replaced by the input, a small-order
//! point, R plus a torsion point, or a non-canonical y; a key from the input (decoding, small
//! order, torsion); a valid one of the input as the message; the input as the signature; or
//! one made here with torsion points in R and A, which the cofactored check accepts.
#![no_main]

use std::sync::OnceLock;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::Scalar;
use ed25519_compact::{KeyPair, Seed, Signature};
use libfuzzer_sys::fuzz_target;
use oidcgate::eddsa::PublicKey;

struct Key {
    pair: KeyPair,
    /// Its table made: verified 32 times.
    warm: PublicKey,
}

/// Three fixed keys, from seeds 1, 2 (little-endian) and one with no structure.
fn keys() -> &'static [Key; 3] {
    static KEYS: OnceLock<[Key; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut seeds = [[0u8; 32]; 3];
        seeds[0][0] = 1;
        seeds[1][0] = 2;
        seeds[2] = *b"oidcgate eddsa_differential key!";
        seeds.map(|seed| {
            let pair = KeyPair::from_seed(Seed::new(seed));
            let warm = PublicKey::new(pair.pk.as_ref()).expect("a valid key");
            let sig = pair.sk.sign(MESSAGE, None);
            for _ in 0..32 {
                assert!(warm.verify(MESSAGE, sig.as_ref()));
            }
            Key { pair, warm }
        })
    })
}

const MESSAGE: &[u8] = b"eyJhbGciOiJFZERTQSIsImtpZCI6ImVkLTEifQ.eyJzdWIiOiJmdXp6In0";

/// The group order L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// XORs `patches` into `bytes`: each two input bytes are a position and a mask.
fn patch(bytes: &mut [u8], patches: &[u8]) {
    let len = bytes.len();
    if len == 0 {
        return;
    }
    for p in patches.chunks_exact(2) {
        bytes[usize::from(p[0]) % len] ^= p[1];
    }
}

/// The input's first 32 bytes (zero-padded), little-endian.
fn bytes32(rest: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let take = rest.len().min(32);
    out[..take].copy_from_slice(&rest[..take]);
    out
}

/// Little-endian a + b (the carry out of 2^256 dropped), or a − b (wrapping).
fn add(a: &[u8; 32], b: &[u8; 32], negate: bool) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0i32;
    for i in 0..32 {
        let v = if negate {
            i32::from(a[i]) - i32::from(b[i]) + carry
        } else {
            i32::from(a[i]) + i32::from(b[i]) + carry
        };
        out[i] = v as u8;
        carry = v >> 8;
    }
    out
}

/// s replacements: the input, s + L, L ± the next byte, s + k·L for the input's k.
fn number(s: &[u8; 32], rest: &[u8]) -> [u8; 32] {
    let (how, rest) = rest.split_first().unwrap_or((&0, &[]));
    let small = bytes32(&rest[..rest.len().min(1)]);
    match how % 5 {
        0 => bytes32(rest),
        1 => add(s, &L, false),
        2 => add(&L, &small, false),
        3 => add(&L, &small, true),
        _ => {
            // s + L·m for m in 0..16: out of range unless m = 0.
            let mut out = *s;
            for _ in 0..small[0] % 16 {
                out = add(&out, &L, false);
            }
            out
        }
    }
}

/// Encodings to put in R or A: the input; a torsion point; the point plus one; y + p for a
/// small y (non-canonical) with either sign.
fn point(valid: &[u8; 32], rest: &[u8]) -> [u8; 32] {
    let (how, rest) = rest.split_first().unwrap_or((&0, &[]));
    let pick = usize::from(rest.first().copied().unwrap_or(0));
    match how % 4 {
        0 => bytes32(rest),
        1 => EIGHT_TORSION[pick % 8].compress().0,
        2 => match CompressedEdwardsY(*valid).decompress() {
            Some(p) => (p + EIGHT_TORSION[pick % 8]).compress().0,
            None => *valid,
        },
        _ => {
            // y = p + (pick % 19): 2^255 − 19 + small, sign bit from pick.
            let mut out = [0xff; 32];
            out[0] = 0xed + (pick % 19) as u8;
            out[31] = 0x7f | (((pick >> 5) as u8) << 7);
            out
        }
    }
}

/// A signature with torsion made by hand: A = [a]B + T_A, R = [r]B + T_R, s = r + k·a.
fn torsion_signature(rest: &[u8]) -> ([u8; 32], Vec<u8>, Vec<u8>) {
    let (a, rest) = rest.split_at(rest.len().min(32));
    let (r, rest) = rest.split_at(rest.len().min(32));
    let (picks, message) = rest.split_at(rest.len().min(1));
    let pick = usize::from(picks.first().copied().unwrap_or(0));
    let a = Scalar::from_bytes_mod_order(bytes32(a));
    let r = Scalar::from_bytes_mod_order(bytes32(r));
    let key = (ED25519_BASEPOINT_POINT * a + EIGHT_TORSION[pick % 8])
        .compress()
        .0;
    let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[(pick >> 3) % 8])
        .compress()
        .0;
    let mut h = hmac_sha512::Hash::new();
    h.update(big_r);
    h.update(key);
    h.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize());
    let mut s = r + k * a;
    if pick & 0x40 != 0 {
        s += Scalar::ONE;
    }
    let sig = [&big_r[..], &s.to_bytes()[..]].concat();
    (key, message.to_vec(), sig)
}

fuzz_target!(|data: &[u8]| {
    let [mode, choice, rest @ ..] = data else {
        return;
    };
    let key = &keys()[usize::from(*choice) % 3];
    let pk: [u8; 32] = *key.pair.pk;
    let good: [u8; 64] = *key.pair.sk.sign(MESSAGE, None);
    let (r, s) = good.split_at(32);
    let (r, s): ([u8; 32], [u8; 32]) = (r.try_into().unwrap(), s.try_into().unwrap());
    let (public, message, signature): ([u8; 32], Vec<u8>, Vec<u8>) = match mode % 8 {
        // A valid signature patched, shortened or lengthened.
        0 => {
            let mut sig = good.to_vec();
            let (resize, patches) = rest.split_first().unwrap_or((&0, &[]));
            patch(&mut sig, patches);
            match resize % 4 {
                1 => {
                    sig.pop();
                }
                2 => sig.insert(0, 0),
                3 => sig.push(0),
                _ => {}
            }
            (pk, MESSAGE.to_vec(), sig)
        }
        // s replaced.
        1 => (pk, MESSAGE.to_vec(), [&r[..], &number(&s, rest)].concat()),
        // R replaced.
        2 => (pk, MESSAGE.to_vec(), [&point(&r, rest)[..], &s].concat()),
        // The key replaced; the valid signature, or the input as one.
        3 => {
            let public = point(&pk, rest);
            let sig = match rest.get(33..) {
                Some(sig) if sig.len() >= 64 => sig[..64].to_vec(),
                _ => good.to_vec(),
            };
            (public, MESSAGE.to_vec(), sig)
        }
        // The input as the message, its signature, and maybe one bit of it changed.
        4 => {
            let sig = key.pair.sk.sign(rest, None).to_vec();
            let mut message = rest.to_vec();
            if let Some(last) = rest.last() {
                let at = usize::from(*last) % message.len();
                if last & 1 == 1 {
                    message[at] ^= 1 << (last % 8);
                }
            }
            (pk, message, sig)
        }
        // Torsion in R and A, made here.
        5 | 6 => torsion_signature(rest),
        // The input as the signature.
        _ => (pk, MESSAGE.to_vec(), rest.to_vec()),
    };
    let theirs = ed25519_compact::PublicKey::from_slice(&public).is_ok_and(|k| {
        k.validate().is_ok()
            && Signature::from_slice(&signature).is_ok_and(|s| k.verify(&message, &s).is_ok())
    });
    // Without a table (a new key), and with one when the key is a fixed one.
    let fresh = PublicKey::new(&public).is_some_and(|k| k.verify(&message, &signature));
    assert_eq!(
        fresh, theirs,
        "mode {mode}: ours (no table) {fresh}, ed25519-compact {theirs}, key {public:02x?}, signature {signature:02x?}"
    );
    if public == pk {
        let warm = key.warm.verify(&message, &signature);
        assert_eq!(
            warm, theirs,
            "mode {mode}: ours (table) {warm}, ed25519-compact {theirs}, signature {signature:02x?}"
        );
    }
});
