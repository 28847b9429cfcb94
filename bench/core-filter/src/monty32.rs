//! `src/monty.rs` as it was until 2026-12-02 (32-bit limbs, carry chains per row), timed
//! beside today's by `rsa_arithmetic` in lib.rs.

#![allow(dead_code)]

use crypto_bigint::{BoxedUint, NonZero};

const LOW: u64 = 0xffff_ffff;

/// A modulus ready for scalar Montgomery arithmetic with R = 2^(32·limbs).
pub struct Modulus {
    /// Little-endian 32-bit limbs.
    n: Vec<u32>,
    /// -n⁻¹ mod 2^32.
    n0: u32,
    /// R² mod n, to bring a number into Montgomery form.
    r2: Vec<u32>,
}

impl Modulus {
    /// `n` big-endian, odd, without leading zero bytes (`rsa.rs` trims and checks it).
    pub fn new(n: &[u8]) -> Option<Modulus> {
        let limbs = n.len().div_ceil(4);
        let low = *n.last()?;
        if low & 1 == 0 {
            return None;
        }
        let r_bits = u32::try_from(limbs * 32).ok()?;
        // R² mod n by one (variable-time, public-input) division at key load.
        let modulus = BoxedUint::from_be_slice(n, r_bits).ok()?;
        let nonzero: Option<NonZero<BoxedUint>> = NonZero::new(modulus).into();
        let r2 = BoxedUint::one_with_precision(2 * r_bits + 32)
            .shl_vartime(2 * r_bits)?
            .rem_vartime(&nonzero?);
        Some(Modulus {
            n0: neg_inverse(limbs_of(n, 1).first().copied()?),
            r2: limbs_of(&r2.to_be_bytes(), limbs),
            n: limbs_of(n, limbs),
        })
    }

    /// `s`^65537 mod n as `len` big-endian bytes, for `s` big-endian and below n (`rsa.rs`
    /// checks both); `None` if `len` cannot hold it.
    pub fn pow_65537(&self, s: &[u8], len: usize) -> Option<Vec<u8>> {
        let l = self.n.len();
        let s = limbs_of(s, l);
        let mut scratch = vec![0u32; 2 * l + 2];
        let mut x = vec![0u32; l];
        // s·R, then (s·R)^(2^16)·R^(1 - 2^16)... = s^(2^16)·R, then times s (not in
        // Montgomery form): s^65537.
        self.mul(&s, &self.r2, &mut x, &mut scratch);
        for _ in 0..16 {
            self.square(&mut x, &mut scratch);
        }
        let mut out = vec![0u32; l];
        self.mul(&x, &s, &mut out, &mut scratch);
        to_be_bytes(&out, len)
    }

    /// `out` = a·b·R⁻¹ mod n. Per limb a_i, one pass adds a_i·b and m·n (m chosen to clear
    /// the lowest limb) with two independent carry chains; rows are written at offset i
    /// instead of shifting the accumulator.
    fn mul(&self, a: &[u32], b: &[u32], out: &mut [u32], t: &mut [u32]) {
        let l = self.n.len();
        let (Some(t), Some(&b0)) = (t.get_mut(..2 * l + 1), b.first()) else {
            return;
        };
        t.fill(0);
        for (i, &ai) in a.iter().enumerate() {
            let Some(window) = t.get_mut(i..i + l + 2) else {
                break;
            };
            let (row, top) = window.split_at_mut(l);
            let Some(&t0) = row.first() else {
                return;
            };
            let ai = u64::from(ai);
            let m = u64::from(
                t0.wrapping_add((ai * u64::from(b0)) as u32)
                    .wrapping_mul(self.n0),
            );
            let (mut c1, mut c2) = (0u64, 0u64);
            for ((tj, &bj), &nj) in row.iter_mut().zip(b).zip(&self.n) {
                let s1 = u64::from(*tj) + ai * u64::from(bj) + c1;
                let s2 = (s1 & 0xffff_ffff) + m * u64::from(nj) + c2;
                *tj = s2 as u32;
                c1 = s1 >> 32;
                c2 = s2 >> 32;
            }
            if let [t_l, t_l1, ..] = top {
                let s = u64::from(*t_l) + c1 + c2;
                *t_l = s as u32;
                *t_l1 = (s >> 32) as u32;
            }
        }
        if let Some(result) = t.get(l..) {
            finish(&self.n, result, out);
        }
    }

    /// x = x²·R⁻¹ mod n: the square with each cross product once, then l reduction rows.
    fn square(&self, x: &mut [u32], t: &mut [u32]) {
        let l = self.n.len();
        let Some(t) = t.get_mut(..2 * l + 1) else {
            return;
        };
        t.fill(0);
        // Cross products a_i·a_j, i < j, at t[i + j].
        for (i, &ai) in x.iter().enumerate() {
            let ai = u64::from(ai);
            let mut c = 0u64;
            let (Some(row), Some(rhs)) = (t.get_mut(2 * i + 1..i + l), x.get(i + 1..)) else {
                continue;
            };
            for (tj, &aj) in row.iter_mut().zip(rhs) {
                let s = u64::from(*tj) + ai * u64::from(aj) + c;
                *tj = s as u32;
                c = s >> 32;
            }
            if let Some(t_il) = t.get_mut(i + l) {
                *t_il = c as u32;
            }
        }
        // Doubled, plus the squares a_i² at t[2i].
        let mut shifted_out = 0u32;
        let mut c = 0u64;
        for (pair, &ai) in t.chunks_exact_mut(2).zip(x.iter()) {
            if let [lo, hi] = pair {
                let lo2 = (*lo << 1) | shifted_out;
                let hi2 = (*hi << 1) | (*lo >> 31);
                shifted_out = *hi >> 31;
                let sq = u64::from(ai) * u64::from(ai);
                let s = u64::from(lo2) + (sq & 0xffff_ffff) + c;
                *lo = s as u32;
                let s = u64::from(hi2) + (sq >> 32) + (s >> 32);
                *hi = s as u32;
                c = s >> 32;
            }
        }
        // The square is below 2^(64·l): no carry out of t[2l - 1] (c and shifted_out are 0).
        // Reduction: l rows, each cancelling the lowest limb, two rows per pass (q1 is
        // chosen after q0's row reached column 1), carries out of the window into `top`.
        let mut top = 0u32;
        let mut i = 0;
        while i + 1 < l {
            let Some(window) = t.get_mut(i..i + l + 2) else {
                return;
            };
            let (Some(&w0), Some(&w1), Some(&n_0), Some(&n_1), Some(&n_top)) = (
                window.first(),
                window.get(1),
                self.n.first(),
                self.n.get(1),
                self.n.last(),
            ) else {
                return;
            };
            let q0 = u64::from(w0.wrapping_mul(self.n0));
            let first = q0 * u64::from(n_0) + u64::from(w0);
            let second = q0 * u64::from(n_1) + u64::from(w1) + (first >> 32);
            let q1 = u64::from((second as u32).wrapping_mul(self.n0));
            let product = q1 * u64::from(n_0);
            let low = (second & LOW) + (product & LOW);
            let mut carry = (second >> 32) + (product >> 32) + (low >> 32);
            let (Some(mid), Some(n_j), Some(n_j1)) =
                (window.get_mut(2..l), self.n.get(2..), self.n.get(1..))
            else {
                return;
            };
            for ((wj, &nj), &nj1) in mid.iter_mut().zip(n_j).zip(n_j1) {
                // Both at most 2^64 - 2^32: q·n_j + w_j, and q·n_{j-1} + carry (< 2^33).
                let a = q0 * u64::from(nj) + u64::from(*wj);
                let b = q1 * u64::from(nj1) + carry;
                let low = (a & LOW) + (b & LOW);
                *wj = low as u32;
                carry = (a >> 32) + (b >> 32) + (low >> 32);
            }
            // Column l has only q1's product; column l + 1 only the carries.
            let product = q1 * u64::from(n_top) + carry;
            if let (Some(&w_l), Some(&w_l1)) = (window.get(l), window.get(l + 1)) {
                let low = (product & LOW) + u64::from(w_l) + u64::from(top);
                let high = u64::from(w_l1) + (product >> 32) + (low >> 32);
                if let Some(w) = window.get_mut(l) {
                    *w = low as u32;
                }
                if let Some(w) = window.get_mut(l + 1) {
                    *w = high as u32;
                }
                top = (high >> 32) as u32;
            }
            i += 2;
        }
        // An odd limb count leaves one row.
        if i < l {
            let Some(window) = t.get_mut(i..i + l + 1) else {
                return;
            };
            let Some(&t0) = window.first() else {
                return;
            };
            let m = u64::from(t0.wrapping_mul(self.n0));
            let mut c = 0u64;
            for (tj, &nj) in window.iter_mut().zip(&self.n) {
                let s = u64::from(*tj) + m * u64::from(nj) + c;
                *tj = s as u32;
                c = s >> 32;
            }
            if let Some(t_l) = window.last_mut() {
                let s = u64::from(*t_l) + c + u64::from(top);
                *t_l = s as u32;
                top = (s >> 32) as u32;
            }
        }
        let Some(result) = t.get_mut(l..2 * l + 1) else {
            return;
        };
        if let Some(last) = result.last_mut() {
            *last = top;
        }
        finish(&self.n, result, x);
    }
}

/// `out` = t mod n, for t (l + 1 or more limbs, the rest zero but the one above l) below 2n.
fn finish(n: &[u32], t: &[u32], out: &mut [u32]) {
    let l = n.len();
    let (low, high) = t.split_at(l.min(t.len()));
    let over = high.first().copied().unwrap_or(0) != 0;
    if over || !less(low, n) {
        let mut borrow = 0i64;
        for ((o, &a), &b) in out.iter_mut().zip(low).zip(n) {
            let d = i64::from(a) - i64::from(b) + borrow;
            *o = d as u32;
            borrow = d >> 32;
        }
    } else {
        out.copy_from_slice(low);
    }
}

/// a < b, both little-endian and as long.
fn less(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// -n⁻¹ mod 2^32 for odd n (Newton's iteration: each step doubles the correct low bits).
fn neg_inverse(n: u32) -> u32 {
    let mut inv = n; // correct to 3 bits for odd n
    for _ in 0..4 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(n.wrapping_mul(inv)));
    }
    inv.wrapping_neg()
}

/// `be` (big-endian, at most 4·l bytes used: the lowest) as l little-endian limbs.
fn limbs_of(be: &[u8], l: usize) -> Vec<u32> {
    let mut limbs = vec![0u32; l];
    for (limb, chunk) in limbs.iter_mut().zip(be.rchunks(4)) {
        *limb = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    }
    limbs
}

/// The limbs as `len` big-endian bytes, `None` if a non-zero byte does not fit.
fn to_be_bytes(limbs: &[u32], len: usize) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = limbs.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
    let skip = bytes.len().checked_sub(len)?;
    let (zeros, value) = bytes.split_at_checked(skip)?;
    zeros.iter().all(|&b| b == 0).then(|| value.to_vec())
}
