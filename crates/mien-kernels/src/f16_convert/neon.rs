//! aarch64 NEON: FCVTN/FCVTN2 (f32 to f16) and FCVTL/FCVTL2 (f16 to f32) on eight lanes per step, the
//! remainder by the scalar reference.

use std::arch::asm;

use half::f16;

/// Writes `src` rounded to f16 into `dst` (same length).
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len());
    let blocks = src.len() / 8;
    if blocks > 0 {
        // SAFETY: the loop reads `blocks * 8` f32 from `src` and writes `blocks * 8` f16 to `dst`, both
        // within the slices (their length is at least that); it touches only v0-v2, declared clobbered,
        // and no stack.
        unsafe {
            asm!(
                "2:",
                "ld1 {{v0.4s, v1.4s}}, [{src}], #32",
                "fcvtn v2.4h, v0.4s",
                "fcvtn2 v2.8h, v1.4s",
                "st1 {{v2.8h}}, [{dst}], #16",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                src = inout(reg) src.as_ptr() => _,
                dst = inout(reg) dst.as_mut_ptr() => _,
                n = inout(reg) blocks => _,
                out("v0") _, out("v1") _, out("v2") _,
                options(nostack),
            );
        }
    }
    super::scalar::f32_to_f16(&src[blocks * 8..], &mut dst[blocks * 8..]);
}

/// Writes `src` widened to f32 into `dst` (same length; exact).
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let blocks = src.len() / 8;
    if blocks > 0 {
        // SAFETY: the loop reads `blocks * 8` f16 from `src` and writes `blocks * 8` f32 to `dst`, both
        // within the slices; it touches only v0-v2, declared clobbered, and no stack.
        unsafe {
            asm!(
                "2:",
                "ld1 {{v0.8h}}, [{src}], #16",
                "fcvtl v1.4s, v0.4h",
                "fcvtl2 v2.4s, v0.8h",
                "st1 {{v1.4s, v2.4s}}, [{dst}], #32",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                src = inout(reg) src.as_ptr() => _,
                dst = inout(reg) dst.as_mut_ptr() => _,
                n = inout(reg) blocks => _,
                out("v0") _, out("v1") _, out("v2") _,
                options(nostack),
            );
        }
    }
    super::scalar::f16_to_f32(&src[blocks * 8..], &mut dst[blocks * 8..]);
}
