//! The int8 tile kernel for aarch64 cores without SDOT (Cortex-A72: Raspberry Pi 4; A53, A55 without
//! the dot-product extension).
//!
//! For each (row, column) pair of the 4 × 4 tile and each 16 contraction steps: SMULL multiplies the low
//! eight i8 pairs into i16, SMLAL2 adds the high eight pairs' products to them (each i16 lane then holds
//! two products), and SADALP adds neighbouring i16 lanes into the pair's four i32 accumulators: 16
//! multiply-adds in 3 instructions, where tract's `arm64simd_mmm_i32_8x8` widens to i16 first and does 4
//! per SMLAL. Two products fit an i16 only while one factor stays within ±127: the weights, which the
//! quantizer clamps there and [`super::PackedInt8Weights`] checks. The 16 accumulators and the 8 operand
//! registers (one `LD1` of four registers for each operand) stay in the 32 NEON registers.

use std::arch::aarch64::*;

use super::{BLOCK_BYTES, COLS, ROWS};

/// [`super::scalar::tile`] on NEON; equal to it whenever `w` holds no −128.
pub fn tile(x: &[i8], w: &[i8]) -> [[i32; COLS]; ROWS] {
    assert!(
        x.len() == w.len() && x.len() % BLOCK_BYTES == 0,
        "packed operands of {} and {} bytes",
        x.len(),
        w.len()
    );
    let blocks = x.len() / BLOCK_BYTES;
    let mut sums = [[0i32; COLS]; ROWS];
    // SAFETY: NEON is part of the aarch64 baseline; each iteration reads BLOCK_BYTES from both operands,
    // `blocks` times, which the assertion above keeps within `x` and `w`; the stores write 4 i32 into each
    // 4-element row of `sums`.
    unsafe {
        let mut acc = [[vdupq_n_s32(0); COLS]; ROWS];
        let (mut xp, mut wp) = (x.as_ptr(), w.as_ptr());
        for _ in 0..blocks {
            let xs = vld1q_s8_x4(xp);
            let ws = vld1q_s8_x4(wp);
            let xs = [xs.0, xs.1, xs.2, xs.3];
            let ws = [ws.0, ws.1, ws.2, ws.3];
            for (acc_row, &x_row) in acc.iter_mut().zip(&xs) {
                for (acc, &w_col) in acc_row.iter_mut().zip(&ws) {
                    let pairs = vmlal_high_s8(
                        vmull_s8(vget_low_s8(x_row), vget_low_s8(w_col)),
                        x_row,
                        w_col,
                    );
                    *acc = vpadalq_s16(*acc, pairs);
                }
            }
            xp = xp.add(BLOCK_BYTES);
            wp = wp.add(BLOCK_BYTES);
        }
        for (row, acc_row) in sums.iter_mut().zip(&acc) {
            let low = vpaddq_s32(acc_row[0], acc_row[1]);
            let high = vpaddq_s32(acc_row[2], acc_row[3]);
            vst1q_s32(row.as_mut_ptr(), vpaddq_s32(low, high));
        }
    }
    sums
}
