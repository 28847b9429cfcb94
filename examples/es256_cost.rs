//! ES256 verification (jwt-simple, p256) run `count` times, for profiling natively:
//! `valgrind --tool=callgrind target/release/examples/es256_cost <count>`.
#![allow(clippy::expect_used)] // a measurement tool: fixed inputs, nothing from outside

use std::hint::black_box;

use jwt_simple::prelude::*;

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(100);
    let pair = ES256KeyPair::generate();
    let key = pair.public_key();
    let token = pair
        .sign(Claims::create(Duration::from_hours(1)))
        .expect("signing");
    for _ in 0..count {
        black_box(key.verify_token::<NoCustomClaims>(black_box(&token), None)).ok();
    }
}
