//! Layer normalization as one op ([`LayerNorm`]) instead of the chain tract declutters it into.
//!
//! tract 0.23.9 loads a LayerNorm as `Reduce<Sum>` → `Mul` by `1/n` → `Sub` → `RmsNorm`, then `Mul` by
//! the scale and `Add` of the offset when they are not trivial: four to six passes over the activation,
//! each single-threaded, ~9 ms of a ViT-B inference. [`fuse_layer_norms`] finds that chain and replaces it
//! with [`LayerNorm`], which reads a row (or, for channel-major layouts, a block of columns) for the
//! mean, again for the variance, and writes the result once, in place when the input is not shared.
//! Its sums are kept in eight lanes so the compiler vectorizes them on any CPU.

use std::sync::Arc;

use tract_core::internal::*;
use tract_core::ops::math::{Add, Mul, Sub};
use tract_core::ops::nn::{Reduce, Reducer, RmsNorm};
use tract_linalg::multithread::{current_tract_executor, Executor};

use crate::graph::{is_binary, per_axis_values};

/// `y = (x − mean) / sqrt(var + eps) · scale + offset` along `axis`, mean and (biased) variance taken over
/// that axis; `scale` and `offset` hold one value per position on the axis.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    /// The normalized axis.
    pub axis: usize,
    /// Added to the variance.
    pub eps: f32,
    /// Per-position scale (gamma), if any.
    pub scale: Option<Arc<Vec<f32>>>,
    /// Per-position offset (beta), if any.
    pub offset: Option<Arc<Vec<f32>>>,
}

impl Eq for LayerNorm {}

impl std::hash::Hash for LayerNorm {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.axis.hash(state);
        self.eps.to_bits().hash(state);
        for values in [&self.scale, &self.offset] {
            values
                .as_ref()
                .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                .hash(state);
        }
    }
}

impl LayerNorm {
    /// Normalizes `data`, laid out as `[outer, n, inner]` with `n` the normalized axis, in place. Rows
    /// (`inner` 1) are split between the current tract executor's threads: each row's arithmetic is the
    /// same on any thread, so the result does not depend on their number.
    pub fn normalize(&self, data: &mut [f32], n: usize, inner: usize) {
        let (scale, offset) = (
            self.scale.as_deref().map(|v| &v[..]),
            self.offset.as_deref().map(|v| &v[..]),
        );
        if inner == 1 {
            let executor = current_tract_executor();
            let rows = data.len() / n.max(1);
            match &executor {
                // Worth a parallel section from a few dozen rows (a ViT's 197 tokens: ~0.1 ms serial).
                Executor::MultiThread(pool)
                    if pool.current_num_threads() > 1 && rows >= 32 && n > 0 =>
                {
                    use rayon::prelude::*;
                    let share = rows.div_ceil(pool.current_num_threads()) * n;
                    pool.install(|| {
                        data.par_chunks_mut(share)
                            .for_each(|rows| self.normalize_rows(rows, n))
                    });
                }
                _ => self.normalize_rows(data, n),
            }
            return;
        }
        mien_kernels::layer_norm::scalar::normalize_columns(data, n, inner, self.eps, scale, offset);
    }

    /// Normalizes each row of `n` values of `data`, in place.
    fn normalize_rows(&self, data: &mut [f32], n: usize) {
        let (scale, offset) = (
            self.scale.as_deref().map(|v| &v[..]),
            self.offset.as_deref().map(|v| &v[..]),
        );
        mien_kernels::layer_norm::scalar::normalize_rows(data, n, self.eps, scale, offset);
    }
}

impl Op for LayerNorm {
    fn name(&self) -> StaticName {
        "LayerNorm(mien)".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "axis {}, eps {}, scale {}, offset {}",
            self.axis,
            self.eps,
            self.scale.is_some(),
            self.offset.is_some()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for LayerNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape().to_vec();
        ensure!(
            self.axis < shape.len(),
            "LayerNorm axis {} of a rank {} input",
            self.axis,
            shape.len()
        );
        let (n, inner) = (
            shape[self.axis],
            shape[self.axis + 1..].iter().product::<usize>(),
        );
        // In place when this op holds the only reference (tract copies it otherwise).
        let mut output = input.into_tensor();
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            self.normalize(plain.as_slice_mut::<f32>()?, n, inner);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for LayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].datum_type == f32::datum_type(),
            "LayerNorm takes f32"
        );
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}

/// The node feeding `node`'s input `slot`.
fn producer(node: &TypedNode, slot: usize) -> Option<usize> {
    node.inputs.get(slot).map(|outlet| outlet.node)
}

/// A LayerNorm chain ending at the `RmsNorm` node `rms`: the activation it normalizes, the op, and the
/// last node of the chain (after a scale and offset when there are).
fn analyse(model: &TypedModel, rms: &TypedNode) -> Option<(OutletId, LayerNorm, usize)> {
    let op = rms.op_as::<RmsNorm>()?;
    let sub = model.node(producer(rms, 0)?);
    if !is_binary::<Sub>(sub) {
        return None;
    }
    let x = sub.inputs[0];
    let fact = model.outlet_fact(x).ok()?;
    let shape = fact.shape.as_concrete()?.to_vec();
    if fact.datum_type != f32::datum_type() || op.axis >= shape.len() {
        return None;
    }
    let n = shape[op.axis];
    // The mean: Reduce<Sum> over the axis of x, times a constant 1/n (either operand order).
    let mean = model.node(producer(sub, 1)?);
    if !is_binary::<Mul>(mean) {
        return None;
    }
    let factor_of = |slot: usize| {
        model
            .outlet_fact(mean.inputs[slot])
            .ok()
            .and_then(|f| f.konst.clone())
    };
    let (sum_slot, factor) = match (factor_of(0), factor_of(1)) {
        (None, Some(f)) => (0, f),
        (Some(f), None) => (1, f),
        _ => return None,
    };
    let factor = (factor.len() == 1 && factor.datum_type() == f32::datum_type())
        .then(|| {
            factor
                .to_plain_array_view::<f32>()
                .ok()?
                .iter()
                .next()
                .copied()
        })
        .flatten()?;
    if (factor * n as f32 - 1.0).abs() > 1e-6 {
        return None;
    }
    let sum = model.node(mean.inputs[sum_slot].node);
    let reduce = sum.op_as::<Reduce>()?;
    if reduce.reducer != Reducer::Sum || reduce.axes.as_slice() != [op.axis] || sum.inputs[0] != x {
        return None;
    }
    let eps = (op.eps.len() == 1)
        .then(|| op.eps.cast_to_scalar::<f32>().ok())
        .flatten()?;
    let mut norm = LayerNorm {
        axis: op.axis,
        eps,
        scale: None,
        offset: None,
    };
    // A scale, then an offset, each a constant per position of the axis, each the only successor.
    let mut last = rms.id;
    let take = |last: &mut usize, want_mul: bool| -> Option<Vec<f32>> {
        let node = model.node(*last);
        let [only] = &node.outputs[0].successors[..] else {
            return None;
        };
        let next = model.node(only.node);
        let kind_matches = if want_mul {
            is_binary::<Mul>(next)
        } else {
            is_binary::<Add>(next)
        };
        if !kind_matches {
            return None;
        }
        let konst = model
            .outlet_fact(next.inputs[1 - only.slot])
            .ok()?
            .konst
            .clone()?;
        let same_shape = model
            .outlet_fact(OutletId::new(next.id, 0))
            .ok()?
            .shape
            .as_concrete()?
            == &shape[..];
        let values = per_axis_values(&konst, shape.len(), op.axis, n).filter(|_| same_shape)?;
        *last = next.id;
        Some(values)
    };
    norm.scale = take(&mut last, true).map(Arc::new);
    norm.offset = take(&mut last, false).map(Arc::new);
    Some((x, norm, last))
}

/// Replaces each f32 LayerNorm chain of a decluttered model (see the module doc) with [`LayerNorm`];
/// returns how many.
pub fn fuse_layer_norms(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for id in model.eval_order()? {
        let Some((input, op, last)) = analyse(model, model.node(id)) else {
            continue;
        };
        let name = model.node(id).name.clone();
        let mut patch = TypedModelPatch::default();
        let tapped = patch.tap_model(model, input)?;
        let output = patch.wire_node(format!("{name}.layer_norm"), op, &[tapped])?[0];
        patch.shunt_outside(model, OutletId::new(last, 0), output)?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::graph::test_values as values;

    #[test]
    fn rows_split_between_threads_give_the_same_bits() -> TractResult<()> {
        let (rows, n) = (197usize, 96usize);
        let norm = LayerNorm {
            axis: 1,
            eps: 1e-6,
            scale: Some(Arc::new(values(n, 5))),
            offset: None,
        };
        let x: Vec<f32> = values(rows * n, 6).iter().map(|v| v * 3.0 - 1.0).collect();
        let mut single = x.clone();
        norm.normalize(&mut single, n, 1);
        for threads in [2, 3, 4] {
            let mut split = x.clone();
            tract_linalg::multithread::multithread_tract_scope(
                Executor::multithread(threads),
                || norm.normalize(&mut split, n, 1),
            );
            assert_eq!(split, single, "{threads} threads");
        }
        assert_ne!(single, x);
        Ok(())
    }

    /// A LayerNorm as tract declutters one: `Reduce<Sum>`, `Mul` by 1/n, `Sub`, `RmsNorm`, then a scale
    /// and an offset per position, over `axis` of an input of `shape`; the result feeds two consumers.
    fn decomposed(shape: &[usize], axis: usize, affine: bool) -> TractResult<TypedModel> {
        let n = shape[axis];
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape))?;
        let sum = model.wire_node("sum", Reduce::new(tvec!(axis), Reducer::Sum), &[x])?[0];
        let mut reduced = shape.to_vec();
        reduced[axis] = 1;
        let factor = model.add_const(
            "factor",
            Tensor::from_shape(&vec![1; shape.len()], &[1.0 / n as f32])?,
        )?;
        let mean = model.wire_node("mean", tract_core::ops::math::mul(), &[sum, factor])?[0];
        let centred = model.wire_node("centred", tract_core::ops::math::sub(), &[x, mean])?[0];
        let eps = Arc::new(tensor0(1e-6f32));
        let mut y = model.wire_node("rms", RmsNorm { axis, eps }, &[centred])?[0];
        if affine {
            let mut per_axis = vec![1; shape.len()];
            per_axis[axis] = n;
            let scale = model.add_const("scale", Tensor::from_shape(&per_axis, &values(n, 5))?)?;
            let offset =
                model.add_const("offset", Tensor::from_shape(&per_axis, &values(n, 6))?)?;
            y = model.wire_node("scaled", tract_core::ops::math::mul(), &[y, scale])?[0];
            y = model.wire_node("shifted", tract_core::ops::math::add(), &[y, offset])?[0];
        }
        let doubled = model.wire_node("doubled", tract_core::ops::math::add(), &[y, y])?[0];
        model.select_output_outlets(&[y, doubled])?;
        Ok(model)
    }

    #[test]
    fn fuses_tracts_decomposition_and_agrees_with_it() -> TractResult<()> {
        for (shape, axis) in [(vec![1usize, 197, 768], 2usize), (vec![1, 384, 257], 1)] {
            for affine in [false, true] {
                let model = decomposed(&shape, axis, affine)?;
                let mut ours = model.clone();
                assert_eq!(fuse_layer_norms(&mut ours)?, 1, "{shape:?} axis {axis}");
                let op = ours
                    .nodes()
                    .iter()
                    .find_map(|n| n.op_as::<LayerNorm>())
                    .expect("a LayerNorm");
                assert_eq!((op.scale.is_some(), op.offset.is_some()), (affine, affine));
                let input = Tensor::from_shape(&shape, &values(shape.iter().product(), 7))?;
                let run = |m: &TypedModel| -> TractResult<TVec<TValue>> {
                    m.clone()
                        .into_optimized()?
                        .into_runnable()?
                        .run(tvec!(input.clone().into_tvalue()))
                };
                let (want, got) = (run(&model)?, run(&ours)?);
                for (w, g) in want.iter().zip(&got) {
                    let (w, g) = (
                        w.to_plain_array_view::<f32>()?,
                        g.to_plain_array_view::<f32>()?,
                    );
                    for (w, g) in w.iter().zip(g.iter()) {
                        assert!(
                            (w - g).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{shape:?}: {g} vs tract's {w}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn leaves_other_chains_alone() -> TractResult<()> {
        // A mean over another axis than the RmsNorm's is not a LayerNorm.
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([4, 6]))?;
        let sum = model.wire_node("sum", Reduce::new(tvec!(0), Reducer::Sum), &[x])?[0];
        let factor = model.add_const("factor", Tensor::from_shape(&[1, 1], &[0.25f32])?)?;
        let mean = model.wire_node("mean", tract_core::ops::math::mul(), &[sum, factor])?[0];
        let centred = model.wire_node("centred", tract_core::ops::math::sub(), &[x, mean])?[0];
        let y = model.wire_node(
            "rms",
            RmsNorm {
                axis: 1,
                eps: Arc::new(tensor0(1e-6f32)),
            },
            &[centred],
        )?;
        model.select_output_outlets(&y)?;
        assert_eq!(fuse_layer_norms(&mut model)?, 0);
        Ok(())
    }
}
