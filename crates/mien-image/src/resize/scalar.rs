//! Portable passes of the convolution resampler: Pillow's `ImagingResampleHorizontal_8bpc` and
//! `ImagingResampleVertical_8bpc`, with its integer arithmetic (an `i32` sum that starts at
//! half a unit, `>> PRECISION_BITS`, clipped to `0..=255`).
//!
//! A SIMD backend must keep this arithmetic to give the same bytes.

use super::coeffs::{Coefficients, PRECISION_BITS};

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's `clip8`.
#[inline]
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resamples rows `first_row..first_row + dst.len() / (dst_w * C)` of `src` (rows of `src_w`
/// pixels of `C` bytes) horizontally into `dst` (rows of `dst_w` pixels).
pub(crate) fn horizontal<const C: usize>(
    src: &[u8],
    src_w: usize,
    first_row: usize,
    coeffs: &Coefficients,
    dst: &mut [u8],
    dst_w: usize,
) {
    let src_stride = src_w * C;
    let src_rows = src[first_row * src_stride..].chunks_exact(src_stride);
    for (out_row, in_row) in dst.chunks_exact_mut(dst_w * C).zip(src_rows) {
        for (xx, out_px) in out_row.chunks_exact_mut(C).enumerate() {
            let (b, k) = coeffs.taps(xx);
            let taps = in_row[b.start * C..][..b.len * C].chunks_exact(C);
            let mut ss = [HALF; C];
            for (px, &w) in taps.zip(k) {
                for (s, &v) in ss.iter_mut().zip(px) {
                    // Cannot overflow (weights are normalised); wrapping keeps it panic-free.
                    *s = s.wrapping_add(i32::from(v).wrapping_mul(w));
                }
            }
            for (o, s) in out_px.iter_mut().zip(ss) {
                *o = clip8(s);
            }
        }
    }
}

/// Resamples `src` (rows of `stride` bytes) vertically into `dst` (rows of `stride` bytes).
/// Channels are independent, so this works on bytes.
pub(crate) fn vertical(src: &[u8], stride: usize, coeffs: &Coefficients, dst: &mut [u8]) {
    let mut ss = vec![HALF; stride];
    for (yy, out_row) in dst.chunks_exact_mut(stride).enumerate() {
        let (b, k) = coeffs.taps(yy);
        ss.fill(HALF);
        let rows = src[b.start * stride..][..b.len * stride].chunks_exact(stride);
        for (row, &w) in rows.zip(k) {
            for (s, &v) in ss.iter_mut().zip(row) {
                *s = s.wrapping_add(i32::from(v).wrapping_mul(w));
            }
        }
        for (o, &s) in out_row.iter_mut().zip(&ss) {
            *o = clip8(s);
        }
    }
}
