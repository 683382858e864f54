//! The int8 tile kernel (`i8 × i8 → i32`) of mien's int8 linear layers on cores without SDOT: a scalar
//! reference ([`scalar`]) and an aarch64 NEON version ([`neon`]: SMULL + SMLAL2 + SADALP, 16
//! multiply-adds per 3 instructions) equal to it whenever the weights stay within ±127.
//!
//! Layout: operands are packed in blocks of [`K_STEP`] contraction steps. A weight panel holds [`COLS`]
//! output channels, block after block, each block the columns' 16 values one after the other; a row group
//! holds [`ROWS`] activation rows the same way. A call sums one row group against one panel over the whole
//! contraction. The packing and the split between threads are the runtime's (`mien_runtime::int8_linear`).

#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod scalar;

/// Activation rows per tile.
pub const ROWS: usize = 4;
/// Output channels per tile.
pub const COLS: usize = 4;
/// Contraction steps per packed block.
pub const K_STEP: usize = 16;
/// Bytes of one packed block of a row group or a panel.
pub const BLOCK_BYTES: usize = ROWS * K_STEP;

/// A tile kernel: the `ROWS × COLS` sums of a packed row group `x` and a packed panel `w` of equal length.
pub type Int8TileKernel = fn(x: &[i8], w: &[i8]) -> [[i32; COLS]; ROWS];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::bytes;

    /// The kernels this machine can run: the scalar reference, and the NEON one on aarch64 (with or
    /// without SDOT: the kernel needs only base NEON).
    fn kernels() -> Vec<(&'static str, Int8TileKernel)> {
        #[allow(unused_mut)]
        let mut kernels: Vec<(&'static str, Int8TileKernel)> = vec![("scalar", scalar::tile)];
        #[cfg(target_arch = "aarch64")]
        kernels.push(("neon", neon::tile));
        kernels
    }

    /// `w` with −128 moved to −127: the range the kernels are for.
    fn weights(len: usize, seed: u32) -> Vec<i8> {
        bytes(len, seed).into_iter().map(|v| v.max(-127)).collect()
    }

    /// Plain sums over the packed layout, written from the layout's definition.
    fn plain(x: &[i8], w: &[i8]) -> [[i32; COLS]; ROWS] {
        let mut sums = [[0i32; COLS]; ROWS];
        for block in 0..x.len() / BLOCK_BYTES {
            for (r, row) in sums.iter_mut().enumerate() {
                for (c, sum) in row.iter_mut().enumerate() {
                    for s in 0..K_STEP {
                        let a = x[block * BLOCK_BYTES + r * K_STEP + s];
                        let b = w[block * BLOCK_BYTES + c * K_STEP + s];
                        *sum += i32::from(a) * i32::from(b);
                    }
                }
            }
        }
        sums
    }

    #[test]
    fn every_kernel_gives_the_plain_sums() {
        for blocks in [1, 2, 3, 48, 192] {
            let (x, w) = (bytes(blocks * BLOCK_BYTES, 1), weights(blocks * BLOCK_BYTES, 2));
            for (name, kernel) in kernels() {
                assert_eq!(kernel(&x, &w), plain(&x, &w), "{name}, {blocks} blocks");
            }
        }
        // The extremes: every product at its largest, of either sign, over a ViT-B MLP contraction.
        let blocks = 3072 / K_STEP;
        for (a, b) in [(-128i8, 127i8), (-128, -127), (127, 127), (127, -127)] {
            let (x, w) = (vec![a; blocks * BLOCK_BYTES], vec![b; blocks * BLOCK_BYTES]);
            for (name, kernel) in kernels() {
                assert_eq!(kernel(&x, &w), plain(&x, &w), "{name}, {a} x {b}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, failure_persistence: None, ..Default::default() })]

        /// Random lengths, any activation byte, weights within ±127.
        #[test]
        fn kernels_give_the_plain_sums_on_random_blocks(blocks in 1usize..64, seed in 0u32..u32::MAX) {
            let (x, w) = (bytes(blocks * BLOCK_BYTES, seed), weights(blocks * BLOCK_BYTES, seed ^ 7));
            let want = plain(&x, &w);
            for (name, kernel) in kernels() {
                proptest::prop_assert_eq!(kernel(&x, &w), want, "{} kernel, {} blocks", name, blocks);
            }
        }
    }
}
