//! s^65537 mod n with wasm `simd128`: `i64x2.extmul_{low,high}_i32x4_u` gives two 32×32→64
//! products per instruction, and 64-bit lanes accumulate many of them if the limbs are
//! narrower than 32 bits. Limbs here are w = 28 bits (27 above 3,556-bit moduli), so a
//! column of the Montgomery accumulator holds up to 2·l products of 2w bits without
//! overflowing 64 bits and no carry is propagated inside a row: per limb a_i, the row adds
//! a_i·b and q·n (q clearing the lowest limb) to the accumulator two columns per lane pair,
//! and only the one column that decides the next q is carried. R = 2^(w·l) > 4n, so the
//! operands stay below 2n without a subtraction until the end.
//!
//! The accumulator is pairs of 64-bit lanes; a row starting at an odd column uses the
//! operands shifted by one limb (`Packed::odd`), so every lane pair stays aligned.

use core::arch::wasm32::{
    u32x4, u32x4_splat, u64x2, u64x2_add, u64x2_extmul_high_u32x4, u64x2_extmul_low_u32x4,
    u64x2_extract_lane, u64x2_splat, v128, v128_and,
};

use crypto_bigint::{BoxedUint, NonZero};

pub struct Modulus {
    /// Limb width in bits, and its mask.
    w: u32,
    mask: u64,
    /// n in w-bit limbs (a multiple of 4 of them, the top ones zero).
    n: Vec<u32>,
    packed: Packed,
    /// -n⁻¹ mod 2^w.
    n0: u64,
    /// R² mod n in w-bit limbs.
    r2: Vec<u32>,
}

/// An operand as groups of four limbs, at even and odd alignment.
struct Packed {
    /// limbs 4g .. 4g+3
    even: Vec<v128>,
    /// limbs 4g-1 .. 4g+2 (limb -1 is zero)
    odd: Vec<v128>,
}

impl Packed {
    fn new(limbs: &[u32]) -> Packed {
        let at = |k: usize| limbs.get(k).copied().unwrap_or(0);
        let groups = limbs.len() / 4 + 1;
        let even = (0..groups)
            .map(|g| u32x4(at(4 * g), at(4 * g + 1), at(4 * g + 2), at(4 * g + 3)))
            .collect();
        let odd = (0..groups)
            .map(|g| {
                let below = (4 * g).checked_sub(1).map_or(0, at);
                u32x4(below, at(4 * g), at(4 * g + 1), at(4 * g + 2))
            })
            .collect();
        Packed { even, odd }
    }
}

impl Modulus {
    /// `n` big-endian, odd, without leading zero bytes.
    pub fn new(n: &[u8]) -> Option<Modulus> {
        let bits = n.len() * 8;
        // R > 4n, and 2·l products of 2w bits (plus a carry) fit a 64-bit lane.
        let (w, l) = [28u32, 27, 26].into_iter().find_map(|w| {
            let l = (bits + 2).div_ceil(w as usize).next_multiple_of(4);
            (2 * l < 1 << (64 - 2 * w)).then_some((w, l))
        })?;
        let r_bits = u32::try_from(l).ok()?.checked_mul(w)?;
        let modulus = BoxedUint::from_be_slice(n, r_bits).ok()?;
        let nonzero: Option<NonZero<BoxedUint>> = NonZero::new(modulus).into();
        let r2 = BoxedUint::one_with_precision(2 * r_bits + 64)
            .shl_vartime(2 * r_bits)?
            .rem_vartime(&nonzero?);
        let limbs = to_limbs(n, w, l);
        let low = *limbs.first()?;
        if low & 1 == 0 {
            return None;
        }
        let mask = (1u64 << w) - 1;
        Some(Modulus {
            w,
            mask,
            packed: Packed::new(&limbs),
            n: limbs,
            n0: u64::from(super::neg_inverse(low)) & mask,
            r2: to_limbs(&r2.to_be_bytes(), w, l),
        })
    }

    /// `s`^65537 mod n as `len` big-endian bytes, for `s` below n.
    pub fn pow_65537(&self, s: &[u8], len: usize) -> Option<Vec<u8>> {
        let l = self.n.len();
        let s = to_limbs(s, self.w, l);
        let mut t = vec![u64x2_splat(0); l + 2];
        // s·R; 16 squarings: s^(2^16)·R; times s: s^65537 (below 2n).
        let mut x = self.mul(&s, &self.r2, &mut t);
        for _ in 0..16 {
            x = self.square(&x, &mut t);
        }
        let mut y = self.mul(&x, &s, &mut t);
        if !less(&y, &self.n) {
            let mut borrow = 0i64;
            for (yk, &nk) in y.iter_mut().zip(&self.n) {
                let d = i64::from(*yk) - i64::from(nk) + borrow;
                *yk = (d & self.mask as i64) as u32;
                borrow = d >> self.w;
            }
        }
        to_be_bytes(&y, self.w, len)
    }

    /// a·b·R⁻¹ mod n, below 2n, for a and b below 2n (w-bit limbs, l of them).
    fn mul(&self, a: &[u32], b: &[u32], t: &mut [v128]) -> Vec<u32> {
        let b0 = u64::from(b.first().copied().unwrap_or(0));
        let b = Packed::new(b);
        let groups = b.even.len();
        t.fill(u64x2_splat(0));
        for (i, &ai) in a.iter().enumerate() {
            let base = i / 2;
            let odd = i % 2 == 1;
            let Some(&pair) = t.get(base) else {
                break;
            };
            let ti = if odd {
                u64x2_extract_lane::<1>(pair)
            } else {
                u64x2_extract_lane::<0>(pair)
            };
            let q = (((ti + u64::from(ai) * b0) & self.mask) * self.n0) & self.mask;
            let av = u32x4_splat(ai);
            let qv = u32x4_splat(q as u32);
            let (bg, ng) = if odd {
                (&b.odd, &self.packed.odd)
            } else {
                (&b.even, &self.packed.even)
            };
            let Some(row) = t.get_mut(base..base + 2 * groups) else {
                break;
            };
            for ((tp, &bv), &nv) in row.chunks_exact_mut(2).zip(bg).zip(ng) {
                if let [t0, t1] = tp {
                    let lo = u64x2_add(
                        u64x2_extmul_low_u32x4(av, bv),
                        u64x2_extmul_low_u32x4(qv, nv),
                    );
                    let hi = u64x2_add(
                        u64x2_extmul_high_u32x4(av, bv),
                        u64x2_extmul_high_u32x4(qv, nv),
                    );
                    *t0 = u64x2_add(*t0, lo);
                    *t1 = u64x2_add(*t1, hi);
                }
            }
            self.carry(t, i);
        }
        self.top_half(t)
    }
}

impl Modulus {
    /// x²·R⁻¹ mod n, below 2n, for x below 2n: each cross product once (x_i · 2x_j for
    /// j > i, the first group of a row masked to j > i), the squares, then l reduction rows.
    /// A column then holds at most l/2 products of 2w + 1 bits and l + 1 of 2w bits, within
    /// the bound `new` chose w for.
    fn square(&self, x: &[u32], t: &mut [v128]) -> Vec<u32> {
        const KEEP: [v128; 4] = [
            u32x4(!0, !0, !0, !0),
            u32x4(0, !0, !0, !0),
            u32x4(0, 0, !0, !0),
            u32x4(0, 0, 0, !0),
        ];
        let doubled: Vec<u32> = x.iter().map(|&v| v << 1).collect();
        let d = Packed::new(&doubled);
        let groups = d.even.len();
        t.fill(u64x2_splat(0));
        for (i, &xi) in x.iter().enumerate() {
            let xi64 = u64::from(xi);
            if let Some(p) = t.get_mut(i) {
                *p = u64x2_add(*p, u64x2(xi64 * xi64, 0));
            }
            let base = i / 2;
            // The first group holding a limb j > i, and how many of its lanes are j <= i.
            let (first, packs, start) = if i % 2 == 1 {
                let g = (i + 2) / 4;
                (g, &d.odd, (4 * g).wrapping_sub(1))
            } else {
                let g = (i + 1) / 4;
                (g, &d.even, 4 * g)
            };
            let drop = (i + 1).wrapping_sub(start).min(3);
            let xv = u32x4_splat(xi);
            let (Some(row), Some(packs)) = (
                t.get_mut(base + 2 * first..base + 2 * groups),
                packs.get(first..),
            ) else {
                continue;
            };
            let keep = KEEP.get(drop).copied().unwrap_or(KEEP[0]);
            for (k, (tp, &dv)) in row.chunks_exact_mut(2).zip(packs).enumerate() {
                let dv = if k == 0 { v128_and(dv, keep) } else { dv };
                if let [t0, t1] = tp {
                    *t0 = u64x2_add(*t0, u64x2_extmul_low_u32x4(xv, dv));
                    *t1 = u64x2_add(*t1, u64x2_extmul_high_u32x4(xv, dv));
                }
            }
        }
        self.reduce(t)
    }

    /// l Montgomery reduction rows on the double-width t, then its top half normalised.
    fn reduce(&self, t: &mut [v128]) -> Vec<u32> {
        let l = self.n.len();
        let groups = self.packed.even.len();
        for i in 0..l {
            let base = i / 2;
            let odd = i % 2 == 1;
            let Some(&pair) = t.get(base) else {
                break;
            };
            let ti = if odd {
                u64x2_extract_lane::<1>(pair)
            } else {
                u64x2_extract_lane::<0>(pair)
            };
            let q = ((ti & self.mask) * self.n0) & self.mask;
            let qv = u32x4_splat(q as u32);
            let ng = if odd {
                &self.packed.odd
            } else {
                &self.packed.even
            };
            let Some(row) = t.get_mut(base..base + 2 * groups) else {
                break;
            };
            for (tp, &nv) in row.chunks_exact_mut(2).zip(ng) {
                if let [t0, t1] = tp {
                    *t0 = u64x2_add(*t0, u64x2_extmul_low_u32x4(qv, nv));
                    *t1 = u64x2_add(*t1, u64x2_extmul_high_u32x4(qv, nv));
                }
            }
            self.carry(t, i);
        }
        self.top_half(t)
    }

    /// Column i is a multiple of 2^w: its high part goes into column i + 1.
    #[inline(always)]
    fn carry(&self, t: &mut [v128], i: usize) {
        let base = i / 2;
        if i % 2 == 1 {
            let c = t.get(base).map_or(0, |&p| u64x2_extract_lane::<1>(p)) >> self.w;
            if let Some(next) = t.get_mut(base + 1) {
                *next = u64x2_add(*next, u64x2(c, 0));
            }
        } else if let Some(p) = t.get_mut(base) {
            let c = u64x2_extract_lane::<0>(*p) >> self.w;
            *p = u64x2_add(*p, u64x2(0, c));
        }
    }

    /// Columns l .. 2l as w-bit limbs.
    fn top_half(&self, t: &[v128]) -> Vec<u32> {
        let l = self.n.len();
        let mut out = Vec::with_capacity(l);
        let mut c = 0u64;
        for &p in t.iter().skip(l / 2).take(l / 2) {
            for v in [u64x2_extract_lane::<0>(p), u64x2_extract_lane::<1>(p)] {
                let v = v + c;
                out.push((v & self.mask) as u32);
                c = v >> self.w;
            }
        }
        out
    }
}

/// a < b, both little-endian and as long.
fn less(a: &[u32], b: &[u32]) -> bool {
    super::less(a, b)
}

/// Big-endian bytes as `l` little-endian limbs of `w` bits.
fn to_limbs(be: &[u8], w: u32, l: usize) -> Vec<u32> {
    let mut limbs = Vec::with_capacity(l);
    let (mut acc, mut have) = (0u64, 0u32);
    for &byte in be.iter().rev() {
        acc |= u64::from(byte) << have;
        have += 8;
        while have >= w {
            limbs.push((acc & ((1 << w) - 1)) as u32);
            acc >>= w;
            have -= w;
        }
    }
    limbs.push(acc as u32);
    limbs.resize(l, 0);
    limbs
}

/// `w`-bit limbs as `len` big-endian bytes, `None` if a non-zero bit does not fit.
fn to_be_bytes(limbs: &[u32], w: u32, len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len + 8);
    let (mut acc, mut have) = (0u64, 0u32);
    for &limb in limbs {
        acc |= u64::from(limb) << have;
        have += w;
        while have >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            have -= 8;
        }
    }
    out.push(acc as u8);
    let (value, rest) = out.split_at_checked(len)?;
    if rest.iter().any(|&b| b != 0) {
        return None;
    }
    Some(value.iter().rev().copied().collect())
}
