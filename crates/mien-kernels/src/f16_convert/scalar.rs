//! The reference: one element at a time with the `half` crate (IEEE round to nearest, ties to even).

use half::f16;

/// Writes `src` rounded to f16 into `dst`.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(*s);
    }
}

/// Writes `src` widened to f32 into `dst`.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}
