//! `oidcgate::rsa` against RustCrypto's `rsa` crate: the same key, message and signature
//! must get the same verdict from both. Signatures are made from valid ones: the encoded
//! message patched before the private-key operation (so the fuzzer reaches every branch of
//! the EMSA-PKCS1-v1_5 and EMSA-PSS checks with a correctly exponentiated value), the
//! signature patched or resized after it, the message changed, or the input taken as is.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use ::rsa as reference;
use libfuzzer_sys::fuzz_target;
use oidcgate::rsa::{Hash, Padding, PublicKey};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reference::hazmat::{rsa_decrypt, rsa_encrypt};
use reference::pkcs1::DecodeRsaPrivateKey;
use reference::sha2::{Digest, Sha256, Sha384, Sha512};
use reference::traits::PublicKeyParts;
use reference::{BigUint, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};

struct Key {
    private: RsaPrivateKey,
    public: RsaPublicKey,
    ours: PublicKey,
}

/// 2048 bits, and 3072 (not a power of two: another limb count). Made with `openssl genrsa`
/// for this target only; generating them here would take longer than an input may.
const KEYS_DER: [&[u8]; 2] = [
    include_bytes!("../fixtures/rsa-2048.der"),
    include_bytes!("../fixtures/rsa-3072.der"),
];

fn keys() -> &'static [Key; 2] {
    static KEYS: OnceLock<[Key; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        KEYS_DER.map(|der| {
            let private = RsaPrivateKey::from_pkcs1_der(der).expect("fixtures/rsa-*.der");
            let public = RsaPublicKey::from(&private);
            let ours = PublicKey::new(&public.n().to_bytes_be(), &public.e().to_bytes_be())
                .expect("a 65537 key of 2048 or 3072 bits is within the policy");
            Key {
                private,
                public,
                ours,
            }
        })
    })
}

fn digest(hash: Hash, message: &[u8]) -> Vec<u8> {
    match hash {
        Hash::Sha256 => Sha256::digest(message).to_vec(),
        Hash::Sha384 => Sha384::digest(message).to_vec(),
        Hash::Sha512 => Sha512::digest(message).to_vec(),
    }
}

fn scheme_pkcs1(hash: Hash) -> Pkcs1v15Sign {
    match hash {
        Hash::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
        Hash::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
        Hash::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
    }
}

/// PSS as JWS uses it: MGF1 with the same hash, a salt as long as the hash.
fn scheme_pss(hash: Hash) -> Pss {
    match hash {
        Hash::Sha256 => Pss::new::<Sha256>(),
        Hash::Sha384 => Pss::new::<Sha384>(),
        Hash::Sha512 => Pss::new::<Sha512>(),
    }
}

fn reference_verdict(key: &Key, padding: Padding, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
    let hashed = digest(hash, msg);
    match padding {
        Padding::Pkcs1 => key.public.verify(scheme_pkcs1(hash), &hashed, sig),
        Padding::Pss => key.public.verify(scheme_pss(hash), &hashed, sig),
    }
    .is_ok()
}

fn sign(key: &Key, padding: Padding, hash: Hash, msg: &[u8], seed: u64) -> Vec<u8> {
    let hashed = digest(hash, msg);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match padding {
        Padding::Pkcs1 => key.private.sign(scheme_pkcs1(hash), &hashed),
        Padding::Pss => key
            .private
            .sign_with_rng(&mut rng, scheme_pss(hash), &hashed),
    }
    .expect("signing")
}

/// A valid signature of [`MESSAGE`] and its encoded message, made once per choice: a
/// private-key operation is most of an input's time.
fn valid(choice: u8, key: &Key, padding: Padding, hash: Hash) -> (Vec<u8>, Vec<u8>) {
    static VALID: Mutex<BTreeMap<u8, (Vec<u8>, Vec<u8>)>> = Mutex::new(BTreeMap::new());
    let mut made = VALID.lock().expect("no other thread");
    made.entry(choice)
        .or_insert_with(|| {
            let sig = sign(key, padding, hash, MESSAGE, 1);
            // Otherwise every comparison below would be of two refusals.
            assert!(key.ours.verify(padding, hash, MESSAGE, &sig));
            let em = rsa_encrypt(&key.public, &BigUint::from_bytes_be(&sig)).expect("public op");
            let em = to_len(&em, key.public.size());
            (sig, em)
        })
        .clone()
}

/// `value` as a big-endian number `len` bytes long (it is below the modulus).
fn to_len(value: &BigUint, len: usize) -> Vec<u8> {
    let bytes = value.to_bytes_be();
    let mut out = vec![0; len.saturating_sub(bytes.len())];
    out.extend_from_slice(&bytes);
    out
}

/// XORs `patches` into `bytes`: each three input bytes are a position (15 bits, counted
/// from the end when the top bit is set, so that one input means the same field for
/// either key size) and a mask.
fn patch(bytes: &mut [u8], patches: &[u8]) {
    let len = bytes.len();
    if len == 0 {
        return;
    }
    for p in patches.chunks_exact(3) {
        let offset = usize::from(u16::from_be_bytes([p[0] & 0x7f, p[1]])) % len;
        let at = if p[0] & 0x80 == 0 {
            offset
        } else {
            len - 1 - offset
        };
        bytes[at] ^= p[2];
    }
}

const MESSAGE: &[u8] = b"eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.eyJzdWIiOiJmdXp6In0";

fuzz_target!(|data: &[u8]| {
    let [mode, choice, rest @ ..] = data else {
        return;
    };
    // Two keys, two paddings, three hashes.
    let choice = choice % 12;
    let key = &keys()[usize::from(choice & 1)];
    let padding = if choice & 2 == 0 {
        Padding::Pkcs1
    } else {
        Padding::Pss
    };
    let hash = [Hash::Sha256, Hash::Sha384, Hash::Sha512][usize::from(choice >> 2) % 3];
    let k = key.public.size();
    let (message, signature): (Vec<u8>, Vec<u8>) = match mode % 4 {
        // The encoded message, patched, then raised to d: a well-formed number.
        0 => {
            let (_, mut em) = valid(choice, key, padding, hash);
            patch(&mut em, rest);
            let em = BigUint::from_bytes_be(&em);
            if &em >= key.public.n() {
                return;
            }
            let sig = rsa_decrypt::<ChaCha8Rng>(None, &key.private, &em).expect("private op");
            (MESSAGE.to_vec(), to_len(&sig, k))
        }
        // A valid signature patched, shortened or lengthened.
        1 => {
            let (mut sig, _) = valid(choice, key, padding, hash);
            let (resize, patches) = rest.split_first().unwrap_or((&0, &[]));
            patch(&mut sig, patches);
            match resize % 4 {
                1 => sig.truncate(k - 1),
                2 => sig.insert(0, 0),
                3 => sig.push(0),
                _ => {}
            }
            (MESSAGE.to_vec(), sig)
        }
        // The input as the message, its signature, and maybe one bit of it changed.
        2 => {
            let sig = sign(key, padding, hash, rest, 2);
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
    let ours = key.ours.verify(padding, hash, &message, &signature);
    let theirs = reference_verdict(key, padding, hash, &message, &signature);
    assert_eq!(
        ours,
        theirs,
        "{padding:?} {hash:?} {} bits, mode {mode}: ours {ours}, reference {theirs}",
        k * 8
    );
});
