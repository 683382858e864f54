//! Scalar reference: the arithmetic every SIMD kernel of [`super`] follows, one lane at a time.

/// Below this, `exp` is returned as 0: `exp(-87)` is 1.6e-38, at the bottom of f32's normal range, and
/// a softmax term that small next to the row maximum's `exp(0) = 1` is 0 to f32 precision anyway.
pub const EXP_UNDERFLOW: f32 = -87.0;

/// log2(e).
pub const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two (Cody–Waite): `n · LN2_HI` is exact for the `n` in range, so the reduced argument
/// keeps its low bits.
pub const LN2_HI: f32 = 0.693_359_4;
/// ln 2 − `LN2_HI`.
pub const LN2_LO: f32 = -2.121_944_4e-4;
/// Minimax polynomial for `(e^r − 1 − r) / r²` on |r| ≤ ln2/2 (Cephes `expf`; its last coefficient,
/// 0.50000001, is 0.5 in f32), highest degree first.
pub const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` for `x ≤ 0` (a softmax's `x − max`): range reduction `x = n·ln2 + r`, a degree-7 polynomial for
/// `e^r`, and `2^n` built in the exponent bits. About 1 ulp from the correctly rounded value.
#[inline]
pub fn exp_non_positive(x: f32) -> f32 {
    if x.is_nan() || x < EXP_UNDERFLOW {
        return 0.0;
    }
    let n = (x * LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let p = EXP_POLY[1..]
        .iter()
        .fold(EXP_POLY[0], |p, c| p.mul_add(r, *c));
    let e = (r * r).mul_add(p, r) + 1.0;
    // n is in [-126, 0] here: a normal power of two.
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Softmax of one row, in place.
pub fn softmax_row(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = exp_non_positive(*v - max);
        sum += *v;
    }
    let inv = sum.recip();
    row.iter_mut().for_each(|v| *v *= inv);
}
