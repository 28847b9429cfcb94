//! The RSA public-key operation (s^65537 mod n, 2048 bits) run `count` times, for counting
//! instructions natively: `valgrind --tool=callgrind target/release/examples/rsa_cost
//! <impl> <count>`, once with count 0 and once with count N; the difference over N is one
//! operation. `impl`: `rsa` (src/rsa.rs) or `crypto-bigint` (its BoxedMontyForm, as rsa.rs
//! was until 2026-12).
#![allow(clippy::expect_used, clippy::indexing_slicing)] // a measurement tool: fixed inputs

use std::hint::black_box;

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};

fn bytes(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 24) as u8
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map_or("rsa", String::as_str);
    let count: usize = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(100);
    let mut seed = 0x2545_f491_4f6c_dd1d;
    let mut n = bytes(&mut seed, 256);
    n[0] |= 0x80;
    n[255] |= 1;
    let mut s = bytes(&mut seed, 256);
    s[0] &= 0x7f;
    match which {
        "rsa" => {
            let key = oidcgate::rsa::PublicKey::new(&n, &[1, 0, 1]).expect("a 2048-bit key");
            for _ in 0..count {
                black_box(key.raw_open(black_box(&s)));
            }
        }
        "crypto-bigint" => {
            let modulus = BoxedUint::from_be_slice(&n, 2048).expect("2048 bits");
            let params = BoxedMontyParams::new_vartime(Odd::new(modulus).expect("odd"));
            for _ in 0..count {
                let x = BoxedUint::from_be_slice(black_box(&s), 2048).expect("2048 bits");
                let base = BoxedMontyForm::new(x, &params);
                let mut m = base.clone();
                for _ in 0..16 {
                    m = m.square();
                }
                black_box(m.mul(&base).retrieve().to_be_bytes());
            }
        }
        other => eprintln!("unknown implementation {other}"),
    }
}
