//! Montgomery arithmetic for `rsa.rs`: s^65537 mod n, the only operation an RSA verifier
//! needs, on 28-bit limbs in 32-bit words, summed column by column (product scanning).
//!
//! Why this shape: wasm has no 64×64→128 multiply, so a 32×32→64 product is the widest a
//! scalar instruction gives. With full 32-bit limbs each product needs its carry split off
//! at once (a shift, a mask, adds and a store per product). A 28-bit product is below 2^56,
//! so a whole column of them adds up in one u64 without any carry handling: a product costs
//! a multiply and an add, and the carry is split once per column. That pays for the extra
//! limbs (74 instead of 64 for 2048 bits) with room to spare; measured in Envoy's V8 in
//! docs/performance.md (cold path), where the 32-bit code it replaced is timed beside it
//! (`bench/core-filter` keeps a copy).
//!
//! The reduction is interleaved with the product in each column (Koç's "FIPS" order), and
//! R = 2^(28·limbs) ≥ 4n, so inputs below 2n give results below 2n (Walter): there is no
//! conditional subtraction until the end. A squaring computes each cross product once.
//!
//! Everything here is public (key, signature, message), so nothing needs constant time.

use crypto_bigint::{BoxedUint, NonZero};

/// Bits per limb.
const BITS: usize = 28;
const MASK: u32 = (1 << BITS) - 1;
const MASK64: u64 = MASK as u64;
/// A column (a u64) holds this many 28-bit products and more carries without passing 2^64:
/// 255·(2^28 − 1)² < 2^64 − 2^40.
const MAX_PRODUCTS: usize = 255;
/// 4096-bit keys need 147 limbs; `keep_in_bounds` lets a column hold l + 1 products.
const MAX_LIMBS: usize = MAX_PRODUCTS - 1;

/// A modulus ready for Montgomery arithmetic with R = 2^(28·limbs) ≥ 4n.
pub struct Modulus {
    /// Little-endian 28-bit limbs.
    n: Vec<u32>,
    /// -n⁻¹ mod 2^28.
    n0: u32,
    /// R² mod n, to bring a number into Montgomery form.
    r2: Vec<u32>,
}

impl Modulus {
    /// `n` big-endian, odd, without leading zero bytes (`rsa.rs` trims and checks it).
    pub fn new(n: &[u8]) -> Option<Modulus> {
        let top = *n.first()?;
        let bits = n.len() * 8 - top.leading_zeros() as usize;
        // Two spare bits: R ≥ 4n.
        let limbs = (bits + 2).div_ceil(BITS);
        if limbs > MAX_LIMBS || n.last()? & 1 == 0 {
            return None;
        }
        let r_bits = u32::try_from(limbs * BITS).ok()?;
        // R² mod n by one (variable-time, public-input) division at key load.
        let precision = 2 * r_bits + 64;
        let modulus = BoxedUint::from_be_slice(n, precision).ok()?;
        let nonzero: Option<NonZero<BoxedUint>> = NonZero::new(modulus).into();
        let r2 = BoxedUint::one_with_precision(precision)
            .shl_vartime(2 * r_bits)?
            .rem_vartime(&nonzero?);
        let n = limbs_of(n, limbs)?;
        Some(Modulus {
            n0: neg_inverse(*n.first()?) & MASK,
            r2: limbs_of(&r2.to_be_bytes(), limbs)?,
            n,
        })
    }

    /// `s`^65537 mod n as `len` big-endian bytes, for `s` big-endian and below n (`rsa.rs`
    /// checks both); `None` if `len` cannot hold it.
    pub fn pow_65537(&self, s: &[u8], len: usize) -> Option<Vec<u8>> {
        let l = self.n.len();
        let s = limbs_of(s, l)?;
        // 2l − 1 columns, and the zero rows a short last pass adds past them.
        let mut t = vec![0u64; 2 * l + ROWS];
        let mut x = vec![0u32; l];
        // s·R, then (s·R)^(2^16)·R^(1 - 2^16) = s^(2^16)·R, then times s (not in
        // Montgomery form): s^65537, below 2n.
        self.mul(&s, &self.r2, &mut t);
        self.reduce(&mut t, &mut x);
        for _ in 0..16 {
            self.square(&x, &mut t);
            self.reduce(&mut t, &mut x);
        }
        self.mul(&x, &s, &mut t);
        self.reduce(&mut t, &mut x);
        if !less(&x, &self.n) {
            subtract(&mut x, &self.n);
        }
        to_be_bytes(&x, len)
    }

    /// t = a·b, column sums not carried, four rows of products per pass.
    fn mul(&self, a: &[u32], b: &[u32], t: &mut [u64]) {
        t.fill(0);
        for (c, rows) in a.chunks(ROWS).enumerate() {
            if let Some(t) = t.get_mut(ROWS * c..) {
                add_rows(t, &block(rows, 1), b);
            }
        }
        self.keep_in_bounds(t);
    }

    /// t = a², each cross product a_j·a_k (j < k) once, doubled by taking 2a_j.
    fn square(&self, a: &[u32], t: &mut [u64]) {
        t.fill(0);
        for (c, rows) in a.chunks(ROWS).enumerate() {
            let i = ROWS * c;
            // Row i + r is 2a_{i+r}·a_k for k > i + r, at column i + r + k. Past the block
            // (k ≥ i + ROWS), the rows have the shape `add_rows` adds; within it, one by one.
            for (r, &x) in rows.iter().enumerate() {
                for (k, &y) in rows.iter().enumerate().skip(r + 1) {
                    if let Some(tc) = t.get_mut(2 * i + r + k) {
                        *tc += 2 * u64::from(x) * u64::from(y);
                    }
                }
            }
            if let (Some(t), Some(rest)) = (t.get_mut(2 * i + ROWS..), a.get(i + ROWS..)) {
                add_rows(t, &block(rows, 2), rest);
            }
        }
        for (pair, &x) in t.chunks_exact_mut(2).zip(a) {
            if let Some(t0) = pair.first_mut() {
                *t0 += u64::from(x) * u64::from(x);
            }
        }
        self.keep_in_bounds(t);
    }

    /// Column sums reach (l + 1)·2^56 in `mul` or `square`, and `reduce` adds up to l more
    /// products: fine below 255 in all, so for longer moduli (above 3,554 bits) the columns
    /// are carried into 28-bit digits in between.
    fn keep_in_bounds(&self, t: &mut [u64]) {
        if 2 * self.n.len() < MAX_PRODUCTS {
            return;
        }
        let mut carry = 0u64;
        for c in t.iter_mut() {
            let v = *c + carry;
            *c = v & MASK64;
            carry = v >> BITS;
        }
    }

    /// `out` = t·R⁻¹ mod n, below 2n when t is below 2n·R: l reduction rows m_i·n, four per
    /// pass, each m_i chosen to clear column i once the rows and columns below are in it.
    fn reduce(&self, t: &mut [u64], out: &mut [u32]) {
        let l = self.n.len();
        let n = self.n.as_slice();
        let mut i = 0;
        while i < l {
            let rows = ROWS.min(l - i);
            let mut q = [0u64; ROWS];
            let mut carry = 0u64;
            for r in 0..rows {
                // Column i + r as the rows before r will leave it.
                let below = q
                    .iter()
                    .take(r)
                    .zip(n.get(1..=r).unwrap_or(&[]).iter().rev());
                let column = t.get(i + r).copied().unwrap_or(0)
                    + carry
                    + below.map(|(&q, &n)| q * u64::from(n)).sum::<u64>();
                let m = u64::from((column as u32).wrapping_mul(self.n0) & MASK);
                if let Some(qr) = q.get_mut(r) {
                    *qr = m;
                }
                carry = (column + m * limb(n, 0)) >> BITS;
            }
            let Some(t) = t.get_mut(i..) else {
                return;
            };
            add_rows(t, &q, n);
            // The cleared columns are 0 mod 2^28: carry them on, into the next pass's first
            // column or, after the last pass, the result's lowest digit.
            for r in 0..rows {
                let c = t.get(r).copied().unwrap_or(0) >> BITS;
                if let Some(next) = t.get_mut(r + 1) {
                    *next += c;
                }
            }
            i += rows;
        }
        let mut carry = 0u64;
        for (o, &c) in out.iter_mut().zip(t.get(l..2 * l).unwrap_or(&[])) {
            let v = c + carry;
            *o = (v & MASK64) as u32;
            carry = v >> BITS;
        }
        // Nothing is left, as the result is below 2n < R; should it be, `to_be_bytes`
        // refuses the limb and the signature fails.
        if carry != 0 {
            if let Some(top) = out.last_mut() {
                *top = u32::MAX;
            }
        }
    }
}

/// Rows a pass adds at once: each limb loaded serves four products (measured: docs/performance.md).
const ROWS: usize = 4;

/// The block's limbs times `factor` as row multipliers, zero past a short last block.
fn block(rows: &[u32], factor: u64) -> [u64; ROWS] {
    let mut x = [0u64; ROWS];
    for (x, &r) in x.iter_mut().zip(rows) {
        *x = factor * u64::from(r);
    }
    x
}

/// x_k, or 0 past the end.
fn limb(x: &[u32], k: usize) -> u64 {
    x.get(k).map_or(0, |&v| u64::from(v))
}

/// t_j += Σ_r x_r·y_{j−r}: four rows of products, each one column left of the one before,
/// in one pass, so that each y_j is loaded once and serves all four (the last three y's in
/// locals: an array there is kept in memory by the compiler, and loses the gain).
#[inline(always)]
fn add_rows(t: &mut [u64], &[x0, x1, x2, x3]: &[u64; ROWS], y: &[u32]) {
    let Some(t) = t.get_mut(..y.len() + ROWS - 1) else {
        return;
    };
    let (body, tail) = t.split_at_mut(y.len());
    let (mut y1, mut y2, mut y3) = (0u64, 0u64, 0u64);
    for (tj, &y0) in body.iter_mut().zip(y) {
        let y0 = u64::from(y0);
        *tj += x0 * y0 + x1 * y1 + x2 * y2 + x3 * y3;
        (y1, y2, y3) = (y0, y1, y2);
    }
    for tj in tail {
        *tj += x1 * y1 + x2 * y2 + x3 * y3;
        (y1, y2, y3) = (0, y1, y2);
    }
}

/// a < b, both normalised little-endian limbs and as long.
fn less(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// a −= b, for normalised limbs and a ≥ b.
fn subtract(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0u32;
    for (x, &y) in a.iter_mut().zip(b) {
        let d = x.wrapping_sub(y).wrapping_sub(borrow);
        borrow = d >> 31;
        *x = d & MASK;
    }
}

/// -n⁻¹ mod 2^32 for odd n (Newton's iteration: each step doubles the correct low bits).
fn neg_inverse(n: u32) -> u32 {
    let mut inv = n; // correct to 3 bits for odd n
    for _ in 0..4 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(n.wrapping_mul(inv)));
    }
    inv.wrapping_neg()
}

/// `be` (big-endian) as `l` little-endian 28-bit limbs; `None` if it does not fit.
fn limbs_of(be: &[u8], l: usize) -> Option<Vec<u32>> {
    let mut limbs = Vec::with_capacity(l + 1);
    let (mut acc, mut bits) = (0u64, 0);
    for &byte in be.iter().rev() {
        acc |= u64::from(byte) << bits;
        bits += 8;
        if bits >= BITS {
            limbs.push((acc & MASK64) as u32);
            acc >>= BITS;
            bits -= BITS;
        }
    }
    limbs.push(acc as u32);
    if limbs
        .get(l..)
        .is_some_and(|rest| rest.iter().any(|&x| x != 0))
    {
        return None;
    }
    limbs.resize(l, 0);
    Some(limbs)
}

/// The limbs as `len` big-endian bytes; `None` if a limb is not 28 bits or a non-zero
/// byte does not fit.
fn to_be_bytes(limbs: &[u32], len: usize) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(limbs.len() * 4);
    let (mut acc, mut bits) = (0u64, 0);
    for &limb in limbs {
        if limb > MASK {
            return None;
        }
        acc |= u64::from(limb) << bits;
        bits += BITS;
        while bits >= 8 {
            bytes.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    bytes.push(acc as u8);
    if bytes
        .get(len..)
        .is_some_and(|rest| rest.iter().any(|&b| b != 0))
    {
        return None;
    }
    bytes.resize(len, 0);
    bytes.reverse();
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
    use crypto_bigint::Odd;

    /// s^65537 mod n with crypto-bigint's Montgomery forms (what `rsa.rs` used before).
    fn reference(n: &[u8], s: &[u8]) -> Vec<u8> {
        let bits = u32::try_from(n.len() * 8).unwrap().next_multiple_of(64);
        let modulus = BoxedUint::from_be_slice(n, bits).unwrap();
        let params = BoxedMontyParams::new_vartime(Odd::new(modulus).unwrap());
        let base = BoxedMontyForm::new(BoxedUint::from_be_slice(s, bits).unwrap(), &params);
        let mut m = base.clone();
        for _ in 0..16 {
            m = m.square();
        }
        let m = m.mul(&base).retrieve().to_be_bytes();
        m[m.len() - n.len()..].to_vec()
    }

    struct Rng(u64);
    impl Rng {
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len)
                .map(|_| {
                    self.0 ^= self.0 << 13;
                    self.0 ^= self.0 >> 7;
                    self.0 ^= self.0 << 17;
                    (self.0 >> 24) as u8
                })
                .collect()
        }
    }

    #[test]
    fn pow_65537_agrees_with_crypto_bigint() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // 2048 to 4096 bits, byte counts that are and are not a multiple of a limb.
        for len in [256, 257, 258, 259, 384, 512] {
            for round in 0..10 {
                let mut n = rng.bytes(len);
                n[0] |= 0x80;
                if round == 1 {
                    n[0] = 1; // a modulus of 8·len − 7 bits
                }
                if round == 2 {
                    n.iter_mut().for_each(|b| *b = 0xff); // all ones: the largest carries
                }
                if round >= 3 {
                    n[0] >>= round - 2; // bit lengths around a limb boundary
                    n[0] |= 0x80 >> (round - 2);
                }
                *n.last_mut().unwrap() |= 1;
                let key = Modulus::new(&n).unwrap();
                let mut n_minus_1 = n.clone();
                *n_minus_1.last_mut().unwrap() -= 1;
                let mut one = vec![0u8; len];
                *one.last_mut().unwrap() = 1;
                let mut random = rng.bytes(len);
                random[0] = n[0].saturating_sub(1);
                for s in [vec![0u8; len], one, n_minus_1, random] {
                    let want = reference(&n, &s);
                    assert_eq!(
                        key.pow_65537(&s, len).unwrap(),
                        want,
                        "{len} B, round {round}"
                    );
                }
            }
        }
    }

    #[test]
    fn moduli_that_cannot_be_used_are_refused() {
        assert!(Modulus::new(&[]).is_none());
        assert!(Modulus::new(&[0x80, 0x02]).is_none(), "even");
    }

    #[test]
    fn inverse_is_right() {
        for n in [1u32, 3, 0xffff_ffff, 0x1234_5679] {
            assert_eq!(n.wrapping_mul(neg_inverse(n)), u32::MAX);
        }
    }
}
