//! x86-64 AVX2 + FMA tile kernel: the 6 × 16 tile lives in twelve ymm registers for the whole K block;
//! each K step loads two vectors of weights and broadcasts six activations (fifteen registers of
//! sixteen). A later block's sum is added to the output at the end, its rows prefetched at the start.

use std::arch::x86_64::*;

use super::{Start, COLS, ROWS};

/// Name of this kernel in `mien info` and the load log.
pub const NAME: &str = "mien_avx2_fma_f32_tile";

/// `c = start + x · w` on one tile (see [`super::scalar::tile_kernel`], which this matches bit for bit).
/// The caller must have checked that the CPU has AVX2 and FMA.
pub fn tile_kernel(x: &[f32], w: &[f32], c: [&mut [f32]; ROWS], start: Start) {
    let kc = w.len() / COLS;
    assert!(
        w.len() == kc * COLS && x.len() == kc * ROWS,
        "block lengths"
    );
    assert!(
        c.iter().all(|row| row.len() >= COLS),
        "tile rows shorter than a tile"
    );
    let [r0, r1, r2, r3, r4, r5] = c;
    let rows = [
        r0.as_mut_ptr(),
        r1.as_mut_ptr(),
        r2.as_mut_ptr(),
        r3.as_mut_ptr(),
        r4.as_mut_ptr(),
        r5.as_mut_ptr(),
    ];
    // SAFETY: `crate::dispatch::f32_tile` hands this kernel out only after `is_x86_feature_detected!` saw AVX2 and FMA;
    // the lengths were checked just above.
    unsafe { tile_kernel_avx2(kc, x, w, rows, start) }
}

#[target_feature(enable = "avx2,fma")]
fn tile_kernel_avx2(kc: usize, x: &[f32], w: &[f32], rows: [*mut f32; ROWS], start: Start) {
    // SAFETY: `x` holds `kc * ROWS` values and `w` `kc * COLS`, and the loop reads steps `0..kc` of each;
    // each of `rows` points to `COLS` values of a distinct row slice (all checked by the caller). All loads
    // and stores are unaligned; prefetches are hints that never fault.
    unsafe {
        let row = |r: usize| rows[r];
        // The tile's rows are needed only at the end: fetched meanwhile (they may be in L3, far apart).
        if let Start::Accumulate | Start::BiasAccumulate(_) = start {
            for r in 0..ROWS {
                _mm_prefetch::<_MM_HINT_T0>(row(r).cast());
                _mm_prefetch::<_MM_HINT_T0>(row(r).add(COLS - 1).cast());
            }
        }
        let initial = match start {
            Start::Bias(bias) | Start::BiasAccumulate(bias) => (
                _mm256_loadu_ps(bias.as_ptr()),
                _mm256_loadu_ps(bias.as_ptr().add(8)),
            ),
            Start::Zero | Start::Accumulate => (_mm256_setzero_ps(), _mm256_setzero_ps()),
        };
        let [(mut a00, mut a01), (mut a10, mut a11), (mut a20, mut a21), (mut a30, mut a31), (mut a40, mut a41), (mut a50, mut a51)] =
            [initial; ROWS];
        // One contraction step: two vectors of weights, six broadcast activations, twelve FMAs.
        macro_rules! step {
            ($xp:expr, $wp:expr) => {
                let w0 = _mm256_loadu_ps($wp);
                let w1 = _mm256_loadu_ps($wp.add(8));
                let b = _mm256_broadcast_ss(&*$xp);
                a00 = _mm256_fmadd_ps(b, w0, a00);
                a01 = _mm256_fmadd_ps(b, w1, a01);
                let b = _mm256_broadcast_ss(&*$xp.add(1));
                a10 = _mm256_fmadd_ps(b, w0, a10);
                a11 = _mm256_fmadd_ps(b, w1, a11);
                let b = _mm256_broadcast_ss(&*$xp.add(2));
                a20 = _mm256_fmadd_ps(b, w0, a20);
                a21 = _mm256_fmadd_ps(b, w1, a21);
                let b = _mm256_broadcast_ss(&*$xp.add(3));
                a30 = _mm256_fmadd_ps(b, w0, a30);
                a31 = _mm256_fmadd_ps(b, w1, a31);
                let b = _mm256_broadcast_ss(&*$xp.add(4));
                a40 = _mm256_fmadd_ps(b, w0, a40);
                a41 = _mm256_fmadd_ps(b, w1, a41);
                let b = _mm256_broadcast_ss(&*$xp.add(5));
                a50 = _mm256_fmadd_ps(b, w0, a50);
                a51 = _mm256_fmadd_ps(b, w1, a51);
            };
        }
        let mut xp = x.as_ptr();
        let mut wp = w.as_ptr();
        // Four steps per iteration: a quarter of the loop's counter and branch work, which competes
        // for the front end with the FMAs (measured ~5 % faster in L1, up to 10 % when this core's
        // sibling thread on the host is busy).
        for _ in 0..kc / 4 {
            step!(xp, wp);
            step!(xp.add(ROWS), wp.add(COLS));
            step!(xp.add(2 * ROWS), wp.add(2 * COLS));
            step!(xp.add(3 * ROWS), wp.add(3 * COLS));
            xp = xp.add(4 * ROWS);
            wp = wp.add(4 * COLS);
        }
        for _ in 0..kc % 4 {
            step!(xp, wp);
            xp = xp.add(ROWS);
            wp = wp.add(COLS);
        }
        for (r, (lo, hi)) in [
            (a00, a01),
            (a10, a11),
            (a20, a21),
            (a30, a31),
            (a40, a41),
            (a50, a51),
        ]
        .into_iter()
        .enumerate()
        {
            let (lo, hi) = match start {
                Start::Accumulate | Start::BiasAccumulate(_) => (
                    _mm256_add_ps(_mm256_loadu_ps(row(r)), lo),
                    _mm256_add_ps(_mm256_loadu_ps(row(r).add(8)), hi),
                ),
                Start::Bias(_) | Start::Zero => (lo, hi),
            };
            _mm256_storeu_ps(row(r), lo);
            _mm256_storeu_ps(row(r).add(8), hi);
        }
    }
}
