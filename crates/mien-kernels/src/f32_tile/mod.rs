//! The f32 tile kernel of mien's own matrix products (linear layers, batched products, attention): a
//! scalar reference ([`scalar`]) and an x86-64 AVX2 + FMA version ([`avx2`]) that matches it bit for bit.
//!
//! A call computes one `ROWS × COLS` tile of `c = start + x · w` over a block of `kc` contraction steps,
//! `x` packed as `kc` steps of [`ROWS`] activation values and `w` as `kc` steps of [`COLS`] weights. The
//! packing, the blocking over K and the split between threads are the runtime's (`mien_runtime::linear`).

#[cfg(target_arch = "x86_64")]
pub mod avx2;
pub mod scalar;

/// Rows of a tile (activation rows per kernel call).
pub const ROWS: usize = 6;
/// Columns of a tile (output channels per kernel call).
pub const COLS: usize = 16;
/// Values in a tile.
pub const TILE: usize = ROWS * COLS;

/// What a tile starts from before the products are added.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// Zero.
    Zero,
    /// The bias of the tile's channels, on every row.
    Bias(&'a [f32; COLS]),
    /// The tile's current values (a later block of the contraction).
    Accumulate,
    /// The bias plus the tile's current values (a first block onto an output that already holds values:
    /// a residual taken over in place).
    BiasAccumulate(&'a [f32; COLS]),
}

/// A tile kernel: `c = start + x · w` on a `ROWS × COLS` tile whose rows are `c[r][..COLS]`, `x` being
/// `kc` steps of [`ROWS`] activation values and `w` `kc` steps of [`COLS`] weights.
pub type TileKernel = fn(x: &[f32], w: &[f32], c: [&mut [f32]; ROWS], start: Start);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    fn rows(c: &mut [f32], ldc: usize) -> [&mut [f32]; ROWS] {
        let mut rows = c.chunks_mut(ldc);
        std::array::from_fn(|_| rows.next().unwrap())
    }

    /// The scalar reference against plain sums: each output a chain of fused multiply-adds from its start.
    #[test]
    fn scalar_reference_is_a_chain_of_fused_multiply_adds() {
        let kc = 37;
        let (x, w, bias) = (values(kc * ROWS, 1), values(kc * COLS, 2), values(COLS, 3));
        let bias: [f32; COLS] = bias.try_into().unwrap();
        let before = values(ROWS * COLS, 4);
        for start in [Start::Zero, Start::Bias(&bias), Start::Accumulate, Start::BiasAccumulate(&bias)] {
            let mut c = before.clone();
            scalar::tile_kernel(&x, &w, rows(&mut c, COLS), start);
            for r in 0..ROWS {
                for j in 0..COLS {
                    let mut acc = match start {
                        Start::Bias(b) | Start::BiasAccumulate(b) => b[j],
                        _ => 0.0,
                    };
                    for s in 0..kc {
                        acc = x[s * ROWS + r].mul_add(w[s * COLS + j], acc);
                    }
                    let want = match start {
                        Start::Accumulate | Start::BiasAccumulate(_) => before[r * COLS + j] + acc,
                        _ => acc,
                    };
                    assert_eq!(c[r * COLS + j], want, "{start:?} row {r} column {j}");
                }
            }
        }
    }

    #[test]
    fn simd_kernel_matches_its_scalar_twin_bit_for_bit() {
        let Some(choice) = crate::dispatch::f32_tile() else {
            eprintln!("no SIMD f32 tile kernel on this CPU: nothing to compare");
            return;
        };
        let bias: [f32; COLS] = values(COLS, 3).try_into().unwrap();
        // Every remainder of the kernel's four-step unrolling, alone and after whole iterations.
        for kc in [1, 2, 3, 4, 5, 7, 64, 255, 256] {
            let (x, w) = (values(kc * ROWS, 4), values(kc * COLS, 5));
            for (ldc, start) in [
                (COLS, Start::Accumulate),
                (40, Start::Accumulate),
                (COLS, Start::Zero),
                (23, Start::Bias(&bias)),
                (40, Start::BiasAccumulate(&bias)),
            ] {
                let c = values((ROWS - 1) * ldc + COLS, 6);
                let (mut simd, mut reference) = (c.clone(), c);
                (choice.kernel)(&x, &w, rows(&mut simd, ldc), start);
                scalar::tile_kernel(&x, &w, rows(&mut reference, ldc), start);
                assert_eq!(simd, reference, "kc {kc} ldc {ldc} {start:?}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, failure_persistence: None, ..Default::default() })]

        /// Random block lengths, row strides, starts and values (large and small magnitudes): bit for bit.
        #[test]
        fn simd_kernel_matches_scalar_on_random_tiles(kc in 1usize..300, pad in 0usize..20, start_kind in 0u8..4,
                                                      seed in 0u32..u32::MAX, scale in proptest::sample::select(vec![1e-3f32, 1.0, 1e3])) {
            if let Some(choice) = crate::dispatch::f32_tile() {
                let ldc = COLS + pad;
                let x: Vec<f32> = values(kc * ROWS, seed).iter().map(|v| v * scale).collect();
                let w = values(kc * COLS, seed ^ 1);
                let bias: [f32; COLS] = values(COLS, seed ^ 2).try_into().unwrap();
                let start = [Start::Zero, Start::Bias(&bias), Start::Accumulate, Start::BiasAccumulate(&bias)][start_kind as usize];
                let c = values((ROWS - 1) * ldc + COLS, seed ^ 3);
                let (mut simd, mut reference) = (c.clone(), c);
                (choice.kernel)(&x, &w, rows(&mut simd, ldc), start);
                scalar::tile_kernel(&x, &w, rows(&mut reference, ldc), start);
                proptest::prop_assert_eq!(simd, reference);
            }
        }
    }
}
