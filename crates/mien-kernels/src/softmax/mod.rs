//! Softmax over a row, in place: a scalar reference ([`scalar`]) and SIMD kernels for x86-64 AVX2 + FMA
//! ([`avx2`], picked at run time) and aarch64 NEON ([`neon`]), all with the same arithmetic
//! (range-reduced polynomial `exp`, about 1 ulp), tested against each other.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod scalar;

/// A row kernel: softmax of one row, in place.
pub type RowKernel = fn(&mut [f32]);

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> Option<RowKernel> {
        crate::dispatch::softmax_row().map(|choice| choice.kernel)
    }

    /// Rows of every length up to 70 plus a ViT's (197, 257): ordinary logits, large spreads (terms that
    /// underflow), constant rows, masked (-inf) entries.
    fn rows() -> Vec<Vec<f32>> {
        let mut state = 0x9e37_79b9u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as f32 / u32::MAX as f32 * 2.0 - 1.0
        };
        let mut rows = vec![];
        for len in (1..=70).chain([197, 257]) {
            for spread in [1.0f32, 8.0, 40.0, 200.0] {
                rows.push((0..len).map(|_| next() * spread).collect());
            }
            rows.push(vec![3.25; len]);
            let mut masked: Vec<f32> = (0..len).map(|_| next() * 5.0).collect();
            masked
                .iter_mut()
                .step_by(3)
                .skip(1)
                .for_each(|v| *v = f32::NEG_INFINITY);
            rows.push(masked);
        }
        rows
    }

    /// Softmax in f64 of the f32 differences `x − max` (the rounding of that subtraction is the input's,
    /// not the kernel's: every f32 softmax has it).
    fn exact(row: &[f32]) -> Vec<f64> {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        let exps: Vec<f64> = row.iter().map(|v| ((*v - max) as f64).exp()).collect();
        let sum: f64 = exps.iter().sum();
        exps.iter().map(|e| e / sum).collect()
    }

    #[test]
    fn exp_is_within_two_ulps_down_to_underflow() {
        let mut x = 0f32;
        while x > scalar::EXP_UNDERFLOW {
            let got = scalar::exp_non_positive(x) as f64;
            let want = (x as f64).exp();
            let ulp = (want as f32).abs() as f64 * f32::EPSILON as f64;
            assert!(
                (got - want).abs() <= 2.0 * ulp,
                "exp({x}) = {got}, want {want}"
            );
            x -= 0.0137;
        }
        assert_eq!(scalar::exp_non_positive(-87.5), 0.0);
        assert_eq!(scalar::exp_non_positive(f32::NEG_INFINITY), 0.0);
        assert_eq!(scalar::exp_non_positive(0.0), 1.0);
    }

    #[test]
    fn scalar_reference_matches_exact_softmax() {
        for row in rows() {
            let mut got = row.clone();
            scalar::softmax_row(&mut got);
            for (g, e) in got.iter().zip(exact(&row)) {
                assert!(
                    (*g as f64 - e).abs() <= 1e-6 * e.max(1e-30) + 1e-37,
                    "{g} vs {e} (row of {})",
                    row.len()
                );
            }
        }
    }

    #[test]
    fn simd_kernel_matches_its_scalar_twin() {
        let Some(kernel) = kernel() else {
            eprintln!("no SIMD softmax kernel on this CPU: nothing to compare");
            return;
        };
        for row in rows() {
            let (mut simd, mut reference) = (row.clone(), row.clone());
            kernel(&mut simd);
            scalar::softmax_row(&mut reference);
            for (s, r) in simd.iter().zip(&reference) {
                // Same arithmetic but the order of the row sum (lanes, then across): a few ulps.
                assert!(
                    (s - r).abs() <= 1e-6 * r.abs(),
                    "{s} vs {r} (row of {})",
                    row.len()
                );
            }
            let sum: f64 = simd.iter().map(|v| *v as f64).sum();
            assert!(
                (sum - 1.0).abs() < 1e-5,
                "row of {} sums to {sum}",
                row.len()
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, failure_persistence: None, ..Default::default() })]

        /// The SIMD kernel against its scalar twin on random rows: lengths 1 to 299 (bodies and tails),
        /// logits from -80 to 80 (underflowing exponentials included).
        #[test]
        fn simd_kernel_matches_scalar_on_random_rows(row in proptest::collection::vec(-80f32..80f32, 1..300)) {
            if let Some(kernel) = kernel() {
                let (mut simd, mut reference) = (row.clone(), row.clone());
                kernel(&mut simd);
                scalar::softmax_row(&mut reference);
                for (s, r) in simd.iter().zip(&reference) {
                    proptest::prop_assert!((s - r).abs() <= 1e-6 * r.abs() + 1e-30, "{s} vs {r} (row of {})", row.len());
                }
            }
        }
    }
}
