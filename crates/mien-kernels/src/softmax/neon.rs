//! aarch64 NEON kernel: four lanes, the scalar reference's arithmetic. NEON is part of base AArch64.

use std::arch::aarch64::*;

use super::scalar::{exp_non_positive, EXP_POLY, EXP_UNDERFLOW, LN2_HI, LN2_LO, LOG2_E};

/// Name of this kernel in `mien info` and the load log.
pub const NAME: &str = "mien_neon_softmax";

/// `e^x` for four `x ≤ 0`.
#[inline(always)]
fn exp4(x: float32x4_t) -> float32x4_t {
    // SAFETY: register-only NEON arithmetic; NEON is part of every aarch64 core.
    unsafe {
        let keep = vcgeq_f32(x, vdupq_n_f32(EXP_UNDERFLOW));
        let x = vmaxq_f32(x, vdupq_n_f32(EXP_UNDERFLOW));
        let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(LOG2_E)));
        let r = vfmsq_f32(vfmsq_f32(x, n, vdupq_n_f32(LN2_HI)), n, vdupq_n_f32(LN2_LO));
        let mut p = vdupq_n_f32(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = vfmaq_f32(vdupq_n_f32(*c), p, r);
        }
        let e = vaddq_f32(vfmaq_f32(r, vmulq_f32(r, r), p), vdupq_n_f32(1.0));
        let pow2 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
            vcvtq_s32_f32(n),
            vdupq_n_s32(127),
        )));
        vreinterpretq_f32_u32(vandq_u32(keep, vreinterpretq_u32_f32(vmulq_f32(e, pow2))))
    }
}

/// Softmax of one row, in place.
pub fn softmax_row(row: &mut [f32]) {
    let (body, tail) = row.split_at_mut(row.len() - row.len() % 4);
    // SAFETY: every pointer below is `body`'s, advanced by whole chunks of 4 within its length (`body`
    // is a multiple of 4 long); NEON loads and stores have no alignment requirement.
    unsafe {
        let mut vmax = vdupq_n_f32(f32::NEG_INFINITY);
        for chunk in body.chunks_exact(4) {
            vmax = vmaxq_f32(vmax, vld1q_f32(chunk.as_ptr()));
        }
        let max = tail.iter().fold(vmaxvq_f32(vmax), |m, v| m.max(*v));
        let vmax = vdupq_n_f32(max);
        let mut vsum = vdupq_n_f32(0.0);
        for chunk in body.chunks_exact_mut(4) {
            let e = exp4(vsubq_f32(vld1q_f32(chunk.as_ptr()), vmax));
            vst1q_f32(chunk.as_mut_ptr(), e);
            vsum = vaddq_f32(vsum, e);
        }
        let mut sum = vaddvq_f32(vsum);
        for v in tail.iter_mut() {
            *v = exp_non_positive(*v - max);
            sum += *v;
        }
        let inv = sum.recip();
        let vinv = vdupq_n_f32(inv);
        for chunk in body.chunks_exact_mut(4) {
            vst1q_f32(
                chunk.as_mut_ptr(),
                vmulq_f32(vld1q_f32(chunk.as_ptr()), vinv),
            );
        }
        tail.iter_mut().for_each(|v| *v *= inv);
    }
}
