//! Softmax over a tensor's last axis, row by row: a scalar reference ([`scalar`]) and SIMD kernels for
//! x86-64 AVX2 + FMA ([`avx2`], picked at run time) and aarch64 NEON ([`neon`]), all with the same
//! arithmetic (range-reduced polynomial `exp`, about 1 ulp), tested against each other.
//!
//! tract 0.23.9 runs its vectorized softmax only on rows whose length is a multiple of 4; a ViT's
//! attention rows are 197 or 257 long (patches + class token), so it falls back to per-row calls of its
//! generic kernels, which copy each row into an aligned scratch buffer three times. [`RowSoftmax`] is
//! the runtime's replacement, swapped in after tract optimizes the graph.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod scalar;

use tract_core::internal::*;
use tract_core::ops::nn::{Softmax, SoftmaxKind};

/// A row kernel: softmax of one row, in place.
pub type RowKernel = fn(&mut [f32]);

/// The SIMD kernel for this CPU, if it has one (x86-64 without AVX2 and FMA, and 32-bit ARM, keep
/// tract's own softmax).
pub fn kernel() -> Option<RowKernel> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return Some(avx2::softmax_row);
    }
    #[cfg(target_arch = "aarch64")]
    return Some(neon::softmax_row);
    #[allow(unreachable_code)]
    None
}

/// Softmax over the last axis of an f32 tensor, rows split across the inference threads.
#[derive(Clone)]
pub struct RowSoftmax {
    kernel: RowKernel,
}

impl std::fmt::Debug for RowSoftmax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowSoftmax")
    }
}

impl PartialEq for RowSoftmax {
    fn eq(&self, _other: &Self) -> bool {
        // One kernel per process: every instance computes the same thing.
        true
    }
}
impl Eq for RowSoftmax {}

impl std::hash::Hash for RowSoftmax {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "RowSoftmax".hash(state)
    }
}

impl Op for RowSoftmax {
    fn name(&self) -> StaticName {
        "RowSoftmax(mien)".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RowSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let mut output = input.into_tensor();
        let row_len = output.shape().last().copied().unwrap_or(1).max(1);
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            let data = plain.as_slice_mut::<f32>()?;
            let total = data.len();
            let kernel = self.kernel;
            tract_linalg::multithread::par_chunks_mut(data, row_len, total, |_, rows| {
                rows.chunks_exact_mut(row_len).for_each(kernel);
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for RowSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].datum_type.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Replaces each of tract's f32 softmaxes over the last axis in an optimized model with [`RowSoftmax`],
/// when this CPU has a kernel; returns how many.
pub fn vectorize_softmax(model: &mut TypedModel) -> TractResult<usize> {
    let Some(kernel) = kernel() else { return Ok(0) };
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(softmax) = node.op_as::<Softmax>() else {
            continue;
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let rank = input.rank();
        let last_axis = rank > 0 && softmax.axes.as_slice() == [rank - 1];
        if softmax.kind != SoftmaxKind::Softmax
            || softmax.quant_output_dt.is_some()
            || input.datum_type != f32::datum_type()
            || !last_axis
        {
            continue;
        }
        model.node_mut(id).op = Box::new(RowSoftmax { kernel });
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn replaces_tracts_softmax_and_agrees_with_it() -> TractResult<()> {
        for (shape, threads) in [
            ([1usize, 6, 197, 197], 1usize),
            ([1, 3, 5, 257], 2),
            ([2, 1, 4, 13], 2),
        ] {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact(shape))?;
            let y = model.wire_node(
                "softmax",
                Softmax::new(tvec!(3), None, SoftmaxKind::Softmax),
                &[x],
            )?;
            model.select_output_outlets(&y)?;
            let input: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 37.0)
                .collect();
            let input = Tensor::from_shape(&shape, &input)?;
            let tract = model.clone().into_optimized()?;
            let mut ours = tract.clone();
            let replaced = vectorize_softmax(&mut ours)?;
            assert_eq!(replaced, usize::from(kernel().is_some()));
            let run = |m: TypedModel| -> TractResult<Vec<f32>> {
                let plan = m.into_runnable()?;
                let out = tract_linalg::multithread::multithread_tract_scope(
                    tract_linalg::multithread::Executor::multithread(threads),
                    || plan.run(tvec!(input.clone().into_tvalue())),
                )?;
                Ok(out[0]
                    .to_plain_array_view::<f32>()?
                    .iter()
                    .copied()
                    .collect())
            };
            let (want, got) = (run(tract)?, run(ours)?);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs() + 1e-12,
                    "{g} vs tract's {w} ({shape:?})"
                );
            }
        }
        Ok(())
    }
}
