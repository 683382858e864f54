//! Layer normalization, `(x − mean) / sqrt(var + eps) · scale + offset` over each row, in f32: the scalar
//! reference ([`scalar`]) for rows (a ViT's tokens, row-major) and for channel-major columns. The op, its
//! fusion from tract's decomposition and the split of rows between threads are the runtime's
//! (`mien_runtime::norm`).

pub mod scalar;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    /// The parts of a LayerNorm the kernels take.
    struct Norm {
        scale: Option<Vec<f32>>,
        offset: Option<Vec<f32>>,
    }

    impl Norm {
        /// Normalizes `[outer, n, inner]` data as the runtime does: rows when `inner` is 1.
        fn normalize(&self, data: &mut [f32], n: usize, inner: usize) {
            let (scale, offset) = (self.scale.as_deref(), self.offset.as_deref());
            if inner == 1 {
                scalar::normalize_rows(data, n, 1e-6, scale, offset);
            } else {
                scalar::normalize_columns(data, n, inner, 1e-6, scale, offset);
            }
        }
    }

    /// LayerNorm in f64.
    fn exact(x: &[f32], eps: f32, scale: Option<&[f32]>, offset: Option<&[f32]>) -> Vec<f64> {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps as f64).sqrt();
        (0..x.len())
            .map(|i| {
                (x[i] as f64 - mean) * inv * scale.map(|s| s[i] as f64).unwrap_or(1.0)
                    + offset.map(|o| o[i] as f64).unwrap_or(0.0)
            })
            .collect()
    }

    proptest::proptest! {
        // No regression files in the tree: a failure prints its case.
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, failure_persistence: None, ..Default::default() })]

        /// Random widths, layouts (rows or channel-major with any inner size), affine parts and values.
        #[test]
        fn random_rows_match_an_f64_reference(
            n in 1usize..800,
            inner in 1usize..5,
            outer in 1usize..3,
            with_scale: bool,
            with_offset: bool,
            seed: u64,
            // Rows whose mean dwarfs their spread lose digits in any f32 LayerNorm (tract's decomposition
            // too); a ViT's hidden states stay within tens of standard deviations of their mean.
            centre in -20f32..20.0,
            spread in 0.5f32..20.0,
        ) {
            let mut state = seed | 1;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            };
            let scale: Vec<f32> = (0..n).map(|_| next() * 2.0).collect();
            let offset: Vec<f32> = (0..n).map(|_| next()).collect();
            let norm = Norm {
                scale: with_scale.then(|| scale.clone()),
                offset: with_offset.then(|| offset.clone()),
            };
            // [outer, n, inner]: each (outer, inner) pair is one row of n values, inner apart.
            let x: Vec<f32> = (0..outer * n * inner).map(|_| centre + spread * next()).collect();
            let mut got = x.clone();
            norm.normalize(&mut got, n, inner);
            for block in 0..outer {
                for column in 0..inner {
                    let at = |c: usize| block * n * inner + c * inner + column;
                    let row: Vec<f32> = (0..n).map(|c| x[at(c)]).collect();
                    let want = exact(&row, 1e-6, norm.scale.as_deref(), norm.offset.as_deref());
                    for (c, w) in want.iter().enumerate() {
                        let g = got[at(c)] as f64;
                        proptest::prop_assert!((g - w).abs() <= 3e-4 * (1.0 + w.abs()), "n {n} inner {inner}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn rows_and_columns_match_an_f64_reference() {
        for n in [1usize, 7, 8, 9, 64, 384, 768] {
            let (scale, offset) = (values(n, 2), values(n, 3));
            for (with_scale, with_offset) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let norm = Norm {
                    scale: with_scale.then(|| scale.clone()),
                    offset: with_offset.then(|| offset.clone()),
                };
                let (outer, inner) = (3usize, 5usize);
                // Rows (inner 1) with an offset so the mean is far from zero, then the same values laid
                // out channel-major ([outer, n, inner]).
                let x: Vec<f32> = values(outer * n * inner, 1)
                    .iter()
                    .map(|v| v * 4.0 + 10.0)
                    .collect();
                let mut rows = x.clone();
                norm.normalize(&mut rows, n, 1);
                let mut columns = vec![0f32; x.len()];
                for (i, &v) in x.iter().enumerate() {
                    let (block, rest) = (i / (n * inner), i % (n * inner));
                    columns[block * n * inner + (rest % n) * inner + rest / n] = v;
                }
                norm.normalize(&mut columns, n, inner);
                for (r, row) in x.chunks_exact(n).enumerate() {
                    let want = exact(
                        row,
                        1e-6,
                        norm.scale.as_deref(),
                        norm.offset.as_deref(),
                    );
                    let (block, column) = (r / inner, r % inner);
                    for (c, w) in want.iter().enumerate() {
                        let by_row = rows[r * n + c] as f64;
                        let by_column = columns[block * n * inner + c * inner + column] as f64;
                        for got in [by_row, by_column] {
                            assert!(
                                (got - w).abs() <= 2e-5 * (1.0 + w.abs()),
                                "n {n}: {got} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}
