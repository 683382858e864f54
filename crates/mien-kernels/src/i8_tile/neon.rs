//! The int8 tile kernel for aarch64 cores without SDOT (Cortex-A72: Raspberry Pi 4; A53, A55 without
//! the dot-product extension).
//!
//! For each (row, column) pair of the 4 × 4 tile and each 16 contraction steps: SMULL multiplies the low
//! eight i8 pairs into i16, SMLAL2 adds the high eight pairs' products to them (each i16 lane then holds
//! two products), and SADALP adds neighbouring i16 lanes into the pair's four i32 accumulators: 16
//! multiply-adds in 3 instructions, where tract's `arm64simd_mmm_i32_8x8` widens to i16 first and does 4
//! per SMLAL. Two products fit an i16 only while one factor stays within ±127: the weights, which the
//! quantizer clamps there and the runtime's packing checks.
//!
//! The loop is written out in assembly because the register use is the point: the 16 accumulators
//! (v16–v31), both operands' 16 bytes for four rows and four columns (v0–v7, one post-indexed `LD1` of
//! four registers each) and eight product registers (v8–v15) fill the 32 NEON registers, 52 instructions
//! per 256 multiply-adds. The same loop from intrinsics compiled to 56 (two `LDP`s and an `ADD` per
//! operand).

use super::{BLOCK_BYTES, COLS, ROWS};

/// Name of this kernel in `mien info` and the load log.
pub const NAME: &str = "mien_neon_i8_smull_4x4";

/// [`super::scalar::tile`] on NEON; equal to it whenever `w` holds no −128.
pub fn tile(x: &[i8], w: &[i8]) -> [[i32; COLS]; ROWS] {
    assert!(
        x.len() == w.len() && x.len() % BLOCK_BYTES == 0,
        "packed operands of {} and {} bytes",
        x.len(),
        w.len()
    );
    let mut sums = [[0i32; COLS]; ROWS];
    // SAFETY: NEON is part of the aarch64 baseline. The loop reads BLOCK_BYTES from each operand per
    // block, `x.len() / BLOCK_BYTES` times, which the assertion keeps within `x` and `w`; the stores
    // write 16 i32 into `sums`. Every vector register the code writes is declared clobbered (the
    // compiler saves v8–v15's callee-saved halves), and it touches no stack.
    unsafe {
        std::arch::asm!(
            "movi v16.4s, #0",
            "movi v17.4s, #0",
            "movi v18.4s, #0",
            "movi v19.4s, #0",
            "movi v20.4s, #0",
            "movi v21.4s, #0",
            "movi v22.4s, #0",
            "movi v23.4s, #0",
            "movi v24.4s, #0",
            "movi v25.4s, #0",
            "movi v26.4s, #0",
            "movi v27.4s, #0",
            "movi v28.4s, #0",
            "movi v29.4s, #0",
            "movi v30.4s, #0",
            "movi v31.4s, #0",
            "cbz {blocks}, 3f",
            "2:",
            "ld1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{x}], #64",
            "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [{w}], #64",
            "smull v8.8h, v0.8b, v4.8b",
            "smull v9.8h, v0.8b, v5.8b",
            "smull v10.8h, v0.8b, v6.8b",
            "smull v11.8h, v0.8b, v7.8b",
            "smull v12.8h, v1.8b, v4.8b",
            "smull v13.8h, v1.8b, v5.8b",
            "smull v14.8h, v1.8b, v6.8b",
            "smull v15.8h, v1.8b, v7.8b",
            "smlal2 v8.8h, v0.16b, v4.16b",
            "smlal2 v9.8h, v0.16b, v5.16b",
            "smlal2 v10.8h, v0.16b, v6.16b",
            "smlal2 v11.8h, v0.16b, v7.16b",
            "smlal2 v12.8h, v1.16b, v4.16b",
            "smlal2 v13.8h, v1.16b, v5.16b",
            "smlal2 v14.8h, v1.16b, v6.16b",
            "smlal2 v15.8h, v1.16b, v7.16b",
            "sadalp v16.4s, v8.8h",
            "sadalp v17.4s, v9.8h",
            "sadalp v18.4s, v10.8h",
            "sadalp v19.4s, v11.8h",
            "sadalp v20.4s, v12.8h",
            "sadalp v21.4s, v13.8h",
            "sadalp v22.4s, v14.8h",
            "sadalp v23.4s, v15.8h",
            "smull v8.8h, v2.8b, v4.8b",
            "smull v9.8h, v2.8b, v5.8b",
            "smull v10.8h, v2.8b, v6.8b",
            "smull v11.8h, v2.8b, v7.8b",
            "smull v12.8h, v3.8b, v4.8b",
            "smull v13.8h, v3.8b, v5.8b",
            "smull v14.8h, v3.8b, v6.8b",
            "smull v15.8h, v3.8b, v7.8b",
            "smlal2 v8.8h, v2.16b, v4.16b",
            "smlal2 v9.8h, v2.16b, v5.16b",
            "smlal2 v10.8h, v2.16b, v6.16b",
            "smlal2 v11.8h, v2.16b, v7.16b",
            "smlal2 v12.8h, v3.16b, v4.16b",
            "smlal2 v13.8h, v3.16b, v5.16b",
            "smlal2 v14.8h, v3.16b, v6.16b",
            "smlal2 v15.8h, v3.16b, v7.16b",
            "sadalp v24.4s, v8.8h",
            "sadalp v25.4s, v9.8h",
            "sadalp v26.4s, v10.8h",
            "sadalp v27.4s, v11.8h",
            "sadalp v28.4s, v12.8h",
            "sadalp v29.4s, v13.8h",
            "sadalp v30.4s, v14.8h",
            "sadalp v31.4s, v15.8h",
            "subs {blocks}, {blocks}, #1",
            "b.ne 2b",
            "3:",
            "addp v16.4s, v16.4s, v17.4s",
            "addp v18.4s, v18.4s, v19.4s",
            "addp v16.4s, v16.4s, v18.4s",
            "str q16, [{sums}, #0]",
            "addp v20.4s, v20.4s, v21.4s",
            "addp v22.4s, v22.4s, v23.4s",
            "addp v20.4s, v20.4s, v22.4s",
            "str q20, [{sums}, #16]",
            "addp v24.4s, v24.4s, v25.4s",
            "addp v26.4s, v26.4s, v27.4s",
            "addp v24.4s, v24.4s, v26.4s",
            "str q24, [{sums}, #32]",
            "addp v28.4s, v28.4s, v29.4s",
            "addp v30.4s, v30.4s, v31.4s",
            "addp v28.4s, v28.4s, v30.4s",
            "str q28, [{sums}, #48]",
            x = inout(reg) x.as_ptr() => _,
            w = inout(reg) w.as_ptr() => _,
            blocks = inout(reg) x.len() / BLOCK_BYTES => _,
            sums = in(reg) sums.as_mut_ptr(),
            out("v0") _,
            out("v1") _,
            out("v2") _,
            out("v3") _,
            out("v4") _,
            out("v5") _,
            out("v6") _,
            out("v7") _,
            out("v8") _,
            out("v9") _,
            out("v10") _,
            out("v11") _,
            out("v12") _,
            out("v13") _,
            out("v14") _,
            out("v15") _,
            out("v16") _,
            out("v17") _,
            out("v18") _,
            out("v19") _,
            out("v20") _,
            out("v21") _,
            out("v22") _,
            out("v23") _,
            out("v24") _,
            out("v25") _,
            out("v26") _,
            out("v27") _,
            out("v28") _,
            out("v29") _,
            out("v30") _,
            out("v31") _,
            options(nostack),
        );
    }
    sums
}
