//! Softmax over a tensor's last axis, row by row, on mien's row kernels (`mien_kernels::softmax`).
//!
//! tract 0.23.9 runs its vectorized softmax only on rows whose length is a multiple of 4; a ViT's
//! attention rows are 197 or 257 long (patches + class token), so it falls back to per-row calls of its
//! generic kernels, which copy each row into an aligned scratch buffer three times. [`RowSoftmax`] is
//! the runtime's replacement, swapped in after tract optimizes the graph.

use mien_kernels::softmax::RowKernel;
use tract_core::internal::*;
use tract_core::ops::nn::{Softmax, SoftmaxKind};

/// The SIMD row kernel for this CPU, if it has one (`mien_kernels::dispatch::softmax_row`).
pub fn kernel() -> Option<RowKernel> {
    mien_kernels::dispatch::softmax_row().map(|choice| choice.kernel)
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
