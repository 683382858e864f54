//! The reference int8 tile kernel: plain i32 sums, the definition the SIMD kernels are tested against.

use super::{BLOCK_BYTES, COLS, K_STEP, ROWS};

/// `Σ x[r][kk] · w[c][kk]` over every block of a packed row group `x` and a packed panel `w` (see
/// [`super`] for the layout).
pub fn tile(x: &[i8], w: &[i8]) -> [[i32; COLS]; ROWS] {
    assert!(
        x.len() == w.len() && x.len() % BLOCK_BYTES == 0,
        "packed operands of {} and {} bytes",
        x.len(),
        w.len()
    );
    let mut sums = [[0i32; COLS]; ROWS];
    for (x_block, w_block) in x.chunks_exact(BLOCK_BYTES).zip(w.chunks_exact(BLOCK_BYTES)) {
        for (row, x_row) in sums.iter_mut().zip(x_block.chunks_exact(K_STEP)) {
            for (sum, w_col) in row.iter_mut().zip(w_block.chunks_exact(K_STEP)) {
                *sum += x_row
                    .iter()
                    .zip(w_col)
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum::<i32>();
            }
        }
    }
    sums
}
