//! `oidcgate::ecdsa` against `p256`'s own ECDSA verifier (what jwt-simple calls): the same
//! key, message and signature must get the same verdict from both. Signatures are a valid
//! one patched, its s negated (high s, which both accept), its r or s replaced by a number
//! from the input (0, n, above n, n − 1 reach the range checks), a valid one of the input as
//! the message (maybe with one bit changed), or the input as is.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oidcgate::ecdsa::PublicKey;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::ff::PrimeField;
use p256::elliptic_curve::point::AffineCoordinates;
use p256::{FieldBytes, Scalar};

struct Key {
    signing: SigningKey,
    reference: VerifyingKey,
    ours: PublicKey,
}

/// Three fixed keys: secret scalars 1 (Q = G: the two tables hold the same points), 2 and
/// one with no structure.
fn keys() -> &'static [Key; 3] {
    static KEYS: OnceLock<[Key; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut secrets = [[0u8; 32]; 3];
        secrets[0][31] = 1;
        secrets[1][31] = 2;
        secrets[2] = *b"oidcgate ecdsa_differential key!";
        secrets.map(|secret| {
            let signing = SigningKey::from_slice(&secret).expect("a scalar below n");
            let reference = *signing.verifying_key();
            let point = reference.as_affine();
            let ours = PublicKey::new(&point.x(), &point.y()).expect("a point on the curve");
            Key {
                signing,
                reference,
                ours,
            }
        })
    })
}

const MESSAGE: &[u8] = b"eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjLTEifQ.eyJzdWIiOiJmdXp6In0";

fn sign(key: &Key, message: &[u8]) -> Vec<u8> {
    let signature: Signature = key.signing.sign(message);
    signature.to_bytes().to_vec()
}

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

/// The input's first 32 bytes (zero-padded) as a number, or n + small, n − small, 0.
fn number(rest: &[u8]) -> [u8; 32] {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let (how, rest) = rest.split_first().unwrap_or((&0, &[]));
    let mut out = [0u8; 32];
    match how % 4 {
        0 => {
            let take = rest.len().min(32);
            out[32 - take..].copy_from_slice(&rest[..take]);
        }
        1 | 2 => {
            // n plus or minus the next byte, a small number.
            let delta = rest.first().copied().unwrap_or(0);
            let big = u32::from_be_bytes([N[28], N[29], N[30], N[31]]);
            let low = if how % 4 == 1 {
                big.wrapping_add(u32::from(delta))
            } else {
                big.wrapping_sub(u32::from(delta))
            };
            out = N;
            out[28..].copy_from_slice(&low.to_be_bytes());
        }
        _ => {}
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [mode, choice, rest @ ..] = data else {
        return;
    };
    let key = &keys()[usize::from(*choice) % 3];
    let (message, signature): (Vec<u8>, Vec<u8>) = match mode % 6 {
        // A valid signature patched, shortened or lengthened.
        0 => {
            let mut sig = sign(key, MESSAGE);
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
            (MESSAGE.to_vec(), sig)
        }
        // A valid signature with s negated (high s), maybe patched.
        1 => {
            let sig = sign(key, MESSAGE);
            let s = FieldBytes::try_from(&sig[32..]).expect("32 bytes");
            let s = Scalar::from_repr(s).expect("s below n");
            let mut sig = [&sig[..32], &(-s).to_repr()[..]].concat();
            patch(&mut sig, rest);
            (MESSAGE.to_vec(), sig)
        }
        // r or s of a valid signature replaced.
        2 | 3 => {
            let mut sig = sign(key, MESSAGE);
            let at = if mode % 6 == 2 { 0 } else { 32 };
            sig[at..at + 32].copy_from_slice(&number(rest));
            (MESSAGE.to_vec(), sig)
        }
        // The input as the message, its signature, and maybe one bit of it changed.
        4 => {
            let sig = sign(key, rest);
            let mut message = rest.to_vec();
            if let Some(last) = rest.last() {
                let at = usize::from(*last) % message.len();
                if last & 1 == 1 {
                    message[at] ^= 1 << (last % 8);
                }
            }
            (message, sig)
        }
        // The input as the signature.
        _ => (MESSAGE.to_vec(), rest.to_vec()),
    };
    let ours = key.ours.verify(&message, &signature);
    let theirs =
        Signature::from_slice(&signature).is_ok_and(|s| key.reference.verify(&message, &s).is_ok());
    assert_eq!(
        ours, theirs,
        "mode {mode}: ours {ours}, p256 {theirs}, signature {signature:02x?}"
    );
});
