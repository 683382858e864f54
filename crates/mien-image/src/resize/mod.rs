//! Pillow-exact resampling of 8-bit images with interleaved channels.
//!
//! [`coeffs`] computes Pillow's filter weights (`precompute_coeffs` + `normalize_coeffs_8bpc`
//! in `libImaging/Resample.c`); the passes that apply them live in a backend module. Only
//! [`scalar`] exists today; a SIMD backend would sit beside it (same functions, same integer
//! arithmetic, so the same bytes) and be picked in [`resample`]. NEAREST does not use weights:
//! it follows `Image.resize`'s affine-transform path ([`nearest`]).

mod coeffs;
mod nearest;
mod scalar;

use crate::Resample;
use coeffs::{Coefficients, Filter};

/// Resizes `src` (`src_w` x `src_h` pixels of `C` interleaved bytes) into `dst`
/// (`dst_w` x `dst_h` pixels, fully overwritten).
pub(crate) fn resize<const C: usize>(
    src: &[u8],
    (src_w, src_h): (u32, u32),
    dst: &mut [u8],
    (dst_w, dst_h): (u32, u32),
    filter: Resample,
) {
    debug_assert_eq!(src.len(), src_w as usize * src_h as usize * C);
    debug_assert_eq!(dst.len(), dst_w as usize * dst_h as usize * C);
    if dst.is_empty() {
        return;
    }
    if (src_w, src_h) == (dst_w, dst_h) {
        // `Image.resize` returns a copy when the size does not change.
        dst.copy_from_slice(src);
        return;
    }
    if src.is_empty() {
        // Nothing to sample: Pillow's sums stay at their rounding offset, which clips to 0.
        dst.fill(0);
        return;
    }
    match filter {
        Resample::Nearest => nearest::resize::<C>(src, (src_w, src_h), dst, (dst_w, dst_h)),
        Resample::Bilinear => {
            resample::<C>(src, (src_w, src_h), dst, (dst_w, dst_h), Filter::Bilinear)
        }
        Resample::Bicubic => {
            resample::<C>(src, (src_w, src_h), dst, (dst_w, dst_h), Filter::Bicubic)
        }
    }
}

/// Pillow's `ImagingResampleInner` (Pillow 13): two passes through a `u8` intermediate. The
/// horizontal pass runs first, over only the source rows the vertical pass reads, unless the
/// height shrinks by more than twice as many pixels as the width does; then the vertical pass
/// runs first, over whole columns. A pass is skipped when its dimension does not change.
/// (Pillow releases older than this rule always run the horizontal pass first; where the
/// order matters the two differ by at most one level on some samples.)
fn resample<const C: usize>(
    src: &[u8],
    (src_w, src_h): (u32, u32),
    dst: &mut [u8],
    (dst_w, dst_h): (u32, u32),
    filter: Filter,
) {
    let (src_w, src_h, dst_w, dst_h) = (
        src_w as usize,
        src_h as usize,
        dst_w as usize,
        dst_h as usize,
    );
    let need_horizontal = dst_w != src_w;
    let need_vertical = dst_h != src_h;
    let shrink_h = src_h as i64 - dst_h as i64;
    let shrink_w = src_w as i64 - dst_w as i64;
    let horizontal_first = !(shrink_h > 0 && shrink_h > shrink_w * 2);

    match (need_horizontal, need_vertical) {
        (false, false) => dst.copy_from_slice(src),
        (true, false) => {
            let horiz = Coefficients::new(src_w, dst_w, filter);
            scalar::horizontal::<C>(src, src_w, 0, &horiz, dst, dst_w);
        }
        (false, true) => {
            let vert = Coefficients::new(src_h, dst_h, filter);
            scalar::vertical(src, src_w * C, &vert, dst);
        }
        (true, true) if horizontal_first => {
            let horiz = Coefficients::new(src_w, dst_w, filter);
            let mut vert = Coefficients::new(src_h, dst_h, filter);
            // Only the source rows the vertical pass reads go through the horizontal pass.
            let first = vert.bounds.first().map_or(0, |b| b.start);
            let last = vert.bounds.last().map_or(0, |b| b.start + b.len);
            let mut tmp = vec![0_u8; (last - first) * dst_w * C];
            scalar::horizontal::<C>(src, src_w, first, &horiz, &mut tmp, dst_w);
            vert.shift(first);
            scalar::vertical(&tmp, dst_w * C, &vert, dst);
        }
        (true, true) => {
            let vert = Coefficients::new(src_h, dst_h, filter);
            let horiz = Coefficients::new(src_w, dst_w, filter);
            let mut tmp = vec![0_u8; src_w * dst_h * C];
            scalar::vertical(src, src_w * C, &vert, &mut tmp);
            scalar::horizontal::<C>(&tmp, src_w, 0, &horiz, dst, dst_w);
        }
    }
}
