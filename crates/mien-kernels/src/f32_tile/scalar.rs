//! Scalar reference of the tile kernel: the same products in the same order as the SIMD kernels, each a
//! fused multiply-add, so the SIMD kernels must match it bit for bit.

use super::{Start, COLS, ROWS};

/// `c = start + x · w` on one tile: `x` is `kc` steps of [`ROWS`] activation values, `w` `kc` steps of
/// [`COLS`] weights; the tile's rows are `c[r][..COLS]`. The products are summed from the bias or
/// zero; with [`Start::Accumulate`] or [`Start::BiasAccumulate`] the sum is added to `c` at the end (so
/// the SIMD kernels can start before `c` has arrived from memory).
pub fn tile_kernel(x: &[f32], w: &[f32], mut c: [&mut [f32]; ROWS], start: Start) {
    let kc = w.len() / COLS;
    assert!(
        w.len() == kc * COLS && x.len() == kc * ROWS,
        "block lengths"
    );
    assert!(
        c.iter().all(|row| row.len() >= COLS),
        "tile rows shorter than a tile"
    );
    for (r, row) in c.iter_mut().enumerate() {
        let mut sums = match start {
            Start::Bias(bias) | Start::BiasAccumulate(bias) => *bias,
            Start::Zero | Start::Accumulate => [0.0; COLS],
        };
        for (xs, ws) in x.chunks_exact(ROWS).zip(w.chunks_exact(COLS)) {
            for (acc, &wv) in sums.iter_mut().zip(ws) {
                *acc = xs[r].mul_add(wv, *acc);
            }
        }
        let row = &mut row[..COLS];
        match start {
            Start::Accumulate | Start::BiasAccumulate(_) => {
                row.iter_mut().zip(sums).for_each(|(c, sum)| *c += sum)
            }
            Start::Bias(_) | Start::Zero => row.copy_from_slice(&sums),
        }
    }
}
