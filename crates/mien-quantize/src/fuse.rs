//! One op for the per-token quantization [`crate::rewrite`] writes as a chain of tract ops.
//!
//! A plan stores per-token quantization of a matmul's activation as ops that all save to NNEF:
//!
//! ```text
//! x (× smoothing) ─ abs ─ reduce max ─ max ε ─ recip ─ × 127 ─┐
//!        └──────────────────────────────────────────────────── × ─ + magic ─ − magic ─ cast i8
//! ```
//!
//! tract runs that as six or seven passes over the activation (abs, reduce, the fused multiply-and-round
//! chain, the cast, each with its temporary buffers): on an emulated Cortex-A76 more instructions than the
//! SDOT matmul that consumes it costs per element. [`fuse_per_token_quantization`] replaces each such chain
//! in a loaded plan with one [`QuantizeRowsI8`], which makes two passes per row (absolute maximum, then
//! scale-round-narrow) and computes every value with the same IEEE operations in the same order, so the
//! codes and row maxima are bit-identical to the chain's (tested against tract's optimized chain). It is
//! how the runtime executes a plan, not part of the plan: plans keep the portable chain.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::cast::Cast;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::math::{Abs, Add, Max, Mul, Recip, Sub};
use tract_core::ops::nn::{Reduce, Reducer};

use crate::arith::QMAX;

/// Per-token symmetric int8 quantization along the last axis: for each row, `m = max(max|x|, eps)`,
/// codes `round_half_even(x · ((1 / m) · 127))` as i8. Outputs the codes and `m` (the last axis reduced
/// to 1), which the matmul's dequantization multiplies back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuantizeRowsI8 {
    /// Smallest row maximum (keeps all-zero rows finite).
    pub eps: OrderedF32,
    /// Per-channel factors the activation is multiplied by first (SmoothQuant smoothing), if any.
    pub channel_factors: Option<Arc<Tensor>>,
}

/// An f32 that can be hashed and compared as its bits (ops must be `Hash + Eq`).
#[derive(Debug, Clone, Copy)]
pub struct OrderedF32(pub f32);

impl PartialEq for OrderedF32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for OrderedF32 {}
impl std::hash::Hash for OrderedF32 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}

/// Largest absolute value of `row` (times `factors`, element by element, when given); eight independent
/// maxima over fixed-size chunks so the compiler keeps them in vector lanes.
fn abs_max(row: &[f32], factors: Option<&[f32]>) -> f32 {
    let mut lanes = [0f32; 8];
    let whole = row.len() / 8 * 8;
    match factors {
        None => {
            for chunk in row[..whole].chunks_exact(8) {
                let chunk: &[f32; 8] = chunk.try_into().expect("chunks of 8");
                for i in 0..8 {
                    lanes[i] = lanes[i].max(chunk[i].abs());
                }
            }
        }
        Some(factors) => {
            for (chunk, f) in row[..whole].chunks_exact(8).zip(factors[..whole].chunks_exact(8)) {
                let (chunk, f): (&[f32; 8], &[f32; 8]) = (chunk.try_into().expect("8"), f.try_into().expect("8"));
                for i in 0..8 {
                    lanes[i] = lanes[i].max((chunk[i] * f[i]).abs());
                }
            }
        }
    }
    let tail = row[whole..].iter().enumerate().fold(0f32, |m, (i, v)| {
        let v = match factors {
            Some(f) => v * f[whole + i],
            None => *v,
        };
        m.max(v.abs())
    });
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// Quantizes one row (times `factors` when given, rounded to f32 first as the plan's multiply does) into
/// `codes`, returning its (ε-floored) maximum.
pub fn quantize_row(row: &[f32], factors: Option<&[f32]>, eps: f32, codes: &mut [i8]) -> f32 {
    let row_max = abs_max(row, factors).max(eps);
    // Two roundings, as the plan's recip then multiply: not 127 / row_max.
    let multiplier = row_max.recip() * QMAX;
    // |v| ≤ row_max, so codes lie within ±127 and narrowing from i32 needs no clamp (NaN becomes 0, as
    // tract's cast makes it).
    let code = |v: f32| ((v * multiplier).round_ties_even() as i32) as i8;
    match factors {
        None => codes.iter_mut().zip(row).for_each(|(c, &v)| *c = code(v)),
        Some(factors) => codes.iter_mut().zip(row.iter().zip(factors)).for_each(|(c, (&v, &f))| *c = code(v * f)),
    }
    row_max
}

impl Op for QuantizeRowsI8 {
    fn name(&self) -> StaticName {
        "QuantizeRowsI8(mien)".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("eps {:e}, smoothing {}", self.eps.0, self.channel_factors.is_some())])
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizeRowsI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        let k = *shape.last().context("QuantizeRowsI8 on a scalar")?;
        let input_view = input.try_as_plain_ram()?;
        let x = input_view.as_slice::<f32>()?;
        let mut codes = Tensor::zero::<i8>(shape)?;
        let mut max_shape: TVec<usize> = shape.into();
        *max_shape.last_mut().unwrap() = 1;
        let mut maxima = Tensor::zero::<f32>(&max_shape)?;
        let factor_view = self.channel_factors.as_ref().map(|f| f.try_as_plain_ram()).transpose()?;
        let factors = factor_view.as_ref().map(|v| v.as_slice::<f32>()).transpose()?;
        {
            let mut codes_view = codes.try_as_plain_ram_mut()?;
            let mut maxima_view = maxima.try_as_plain_ram_mut()?;
            let code_rows = codes_view.as_slice_mut::<i8>()?.chunks_exact_mut(k.max(1));
            for ((row, codes), row_max) in
                x.chunks_exact(k.max(1)).zip(code_rows).zip(maxima_view.as_slice_mut::<f32>()?)
            {
                *row_max = quantize_row(row, factors, self.eps.0, codes);
            }
        }
        Ok(tvec!(codes.into_tvalue(), maxima.into_tvalue()))
    }
}

impl TypedOp for QuantizeRowsI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type(), "QuantizeRowsI8 needs f32, got {:?}", inputs[0].datum_type);
        let mut max_shape = inputs[0].shape.to_tvec();
        *max_shape.last_mut().context("QuantizeRowsI8 on a scalar")? = 1.to_dim();
        Ok(tvec!(i8::fact(inputs[0].shape.iter()), f32::fact(max_shape)))
    }

    as_op!();
}

/// The outlet `outlet` copies: plans as loaded from NNEF have identity casts (f32 to f32) in front of
/// binary ops, which tract's declutter would remove later.
fn through_identity_casts(model: &TypedModel, mut outlet: OutletId) -> OutletId {
    loop {
        let node = model.node(outlet.node);
        match node.op_as::<Cast>() {
            Some(cast) if model.outlet_fact(node.inputs[0]).is_ok_and(|f| f.datum_type == cast.to) => {
                outlet = node.inputs[0]
            }
            _ => return outlet,
        }
    }
}

fn bin_op<T: tract_core::ops::binary::BinMiniOp>(model: &TypedModel, outlet: OutletId) -> Option<&TypedNode> {
    let node = model.node(through_identity_casts(model, outlet).node);
    node.op_as::<TypedBinOp>().filter(|op| op.0.is::<T>()).map(|_| node)
}

fn element_wise<T: tract_core::ops::element_wise::ElementWiseMiniOp>(
    model: &TypedModel,
    outlet: OutletId,
) -> Option<&TypedNode> {
    let node = model.node(through_identity_casts(model, outlet).node);
    node.op_as::<ElementWiseOp>().filter(|op| op.0.is::<T>()).map(|_| node)
}

/// The scalar value of a constant outlet.
fn scalar_const(model: &TypedModel, outlet: OutletId) -> Option<f32> {
    let outlet = through_identity_casts(model, outlet);
    let konst = model.outlet_fact(outlet).ok()?.konst.clone()?;
    if konst.len() != 1 || konst.datum_type() != f32::datum_type() {
        return None;
    }
    konst.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.first().copied()
}

/// Of a binary node's two inputs, the constant scalar equal to `value` and the other one.
fn split_scalar(model: &TypedModel, node: &TypedNode, value: Option<f32>) -> Option<(OutletId, f32)> {
    for (c, other) in [(1, 0), (0, 1)] {
        if let Some(v) = scalar_const(model, node.inputs[c]) {
            if value.is_none_or(|want| want.to_bits() == v.to_bits()) {
                return Some((node.inputs[other], v));
            }
        }
    }
    None
}

/// How many nodes read `outlet`, counting the readers of identity casts of it instead of the casts.
fn consumers_through_identity_casts(model: &TypedModel, outlet: OutletId) -> usize {
    model.node(outlet.node).outputs[outlet.slot]
        .successors
        .iter()
        .map(|s| {
            let node = model.node(s.node);
            match node.op_as::<Cast>() {
                Some(cast) if model.outlet_fact(outlet).is_ok_and(|f| f.datum_type == cast.to) => {
                    consumers_through_identity_casts(model, OutletId::new(node.id, 0))
                }
                _ => 1,
            }
        })
        .sum()
}

/// A matched chain: the activation fed to it, its ε, smoothing factors, and the outlets the fused op
/// replaces (codes, row maxima).
struct Chain {
    input: OutletId,
    eps: f32,
    channel_factors: Option<Arc<Tensor>>,
    codes: OutletId,
    row_max: OutletId,
}

fn match_chain(model: &TypedModel, cast_node: &TypedNode) -> Option<Chain> {
    if cast_node.op_as::<Cast>()?.to != i8::datum_type() {
        return None;
    }
    let sub = bin_op::<Sub>(model, cast_node.inputs[0])?;
    let (biased, magic) = (sub.inputs[0], scalar_const(model, sub.inputs[1])?);
    if magic != crate::rewrite::ROUNDING_MAGIC {
        return None;
    }
    let add = bin_op::<Add>(model, biased)?;
    let (scaled, _) = split_scalar(model, add, Some(magic))?;
    let scale_mul = bin_op::<Mul>(model, scaled)?;
    // x × multiplier, where multiplier = recip(max(reduce_max(abs(x)), ε)) × 127.
    let [x, multiplier] = [scale_mul.inputs[0], scale_mul.inputs[1]].map(|o| through_identity_casts(model, o));
    let qmax_mul = bin_op::<Mul>(model, multiplier)?;
    let (inverse, _) = split_scalar(model, qmax_mul, Some(QMAX))?;
    let recip = element_wise::<Recip>(model, inverse)?;
    let eps_max = bin_op::<Max>(model, recip.inputs[0])?;
    let (reduced, eps) = split_scalar(model, eps_max, None)?;
    let reduce_node = model.node(through_identity_casts(model, reduced).node);
    let reduce = reduce_node.op_as::<Reduce>()?;
    let rank = model.outlet_fact(x).ok()?.rank();
    if reduce.reducer != Reducer::Max || reduce.axes.as_slice() != [rank - 1] {
        return None;
    }
    let abs = element_wise::<Abs>(model, reduce_node.inputs[0])?;
    if through_identity_casts(model, abs.inputs[0]) != x || model.outlet_fact(x).ok()?.datum_type != f32::datum_type() {
        return None;
    }
    // Fold the smoothing multiply when nothing else reads the smoothed activation.
    let (input, channel_factors) = match bin_op::<Mul>(model, x) {
        Some(smooth) if consumers_through_identity_casts(model, x) == 2 => {
            let k = model.outlet_fact(x).ok()?.shape.last()?.to_usize().ok()?;
            let factors_of = |c: usize| -> Option<Arc<Tensor>> {
                let konst = model.outlet_fact(through_identity_casts(model, smooth.inputs[c])).ok()?.konst.clone()?;
                let per_last_axis = konst.datum_type() == f32::datum_type()
                    && konst.len() == k
                    && konst.shape().last() == Some(&k)
                    && konst.rank() == rank;
                if !per_last_axis {
                    return None;
                }
                Some(Arc::new(konst.as_ref().clone().into_shape(&[k]).ok()?))
            };
            match (factors_of(1), factors_of(0)) {
                (Some(f), _) => (through_identity_casts(model, smooth.inputs[0]), Some(f)),
                (None, Some(f)) => (through_identity_casts(model, smooth.inputs[1]), Some(f)),
                _ => (x, None),
            }
        }
        _ => (x, None),
    };
    Some(Chain {
        input,
        eps,
        channel_factors,
        codes: OutletId::new(cast_node.id, 0),
        row_max: OutletId::new(eps_max.id, 0),
    })
}

/// Replaces each per-token quantization chain of `model` (a plan as loaded, before tract's optimizer)
/// with one [`QuantizeRowsI8`]; returns how many.
pub fn fuse_per_token_quantization(model: &mut TypedModel) -> TractResult<usize> {
    let chains: Vec<Chain> = model.nodes().iter().filter_map(|node| match_chain(model, node)).collect();
    for (ix, chain) in chains.iter().enumerate() {
        let mut patch = TypedModelPatch::new(format!("fuse per-token quantization {ix}"));
        let input = patch.tap_model(model, chain.input)?;
        let op = QuantizeRowsI8 { eps: OrderedF32(chain.eps), channel_factors: chain.channel_factors.clone() };
        let name = format!("{}.fused", model.node(chain.codes.node).name);
        let outputs = patch.wire_node(name, op, &[input])?;
        patch.shunt_outside(model, chain.codes, outputs[0])?;
        patch.shunt_outside(model, chain.row_max, outputs[1])?;
        patch.apply(model)?;
    }
    if !chains.is_empty() {
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(chains.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::{quantize_all, quantized_in, run, three_projections, LAYOUTS};
    use crate::ActivationMode;

    /// Inputs scaled so that row maxima land on awkward float values, and an all-zero one.
    fn stressed(inputs: &[Tensor]) -> Vec<Tensor> {
        let mut out = vec![];
        for input in inputs {
            for factor in [1.0f32, 1e-3, 3.7e5, -0.1, 0.0] {
                out.push(input.to_plain_array_view::<f32>().unwrap().mapv(|v| v * factor).into_tensor());
            }
        }
        out
    }

    #[test]
    fn fused_graph_is_bit_identical_to_tracts_optimized_chain() -> TractResult<()> {
        for layout in LAYOUTS {
            let (_, q, inputs) = quantized_in(ActivationMode::DynamicPerToken, layout)?;
            let mut fused = q.clone();
            assert_eq!(fuse_per_token_quantization(&mut fused)?, 1, "{}", layout.0);
            let op = fused.nodes().iter().find_map(|n| n.op_as::<QuantizeRowsI8>()).unwrap();
            assert!(op.channel_factors.is_some(), "{}: the smoothing multiply is folded in", layout.0);
            for input in stressed(&inputs) {
                assert_eq!(run(&fused, &input)?, run(&q, &input)?, "{}", layout.0);
            }
        }
        Ok(())
    }

    #[test]
    fn a_shared_quantized_input_is_fused_once_and_calibrated_scales_are_left_alone() -> TractResult<()> {
        let (model, inputs) = three_projections(8)?;
        let (q, _) = quantize_all(&model, &inputs, 0.0)?;
        let mut fused = q.clone();
        assert_eq!(fuse_per_token_quantization(&mut fused)?, 1);
        let plan = |m: &TypedModel| m.clone().into_optimized().unwrap().into_runnable().unwrap();
        let (fused_plan, plan_q) = (plan(&fused), plan(&q));
        for input in stressed(&inputs) {
            let a = fused_plan.run(tvec!(input.clone().into_tvalue()))?;
            let b = plan_q.run(tvec!(input.into_tvalue()))?;
            assert_eq!(a, b);
        }

        let (_, mut calibrated, _) =
            quantized_in(ActivationMode::Static { calibrator: crate::StaticCalibrator::MinMax }, LAYOUTS[0])?;
        assert_eq!(fuse_per_token_quantization(&mut calibrated)?, 0);
        Ok(())
    }

    #[test]
    fn row_quantization_rounds_half_to_even_and_floors_the_maximum() {
        let mut codes = [0i8; 5];
        let m = quantize_row(&[127.0, 0.5, -1.5, 2.5, -127.0], None, 1e-8, &mut codes);
        assert_eq!((m, codes), (127.0, [127, 0, -2, 2, -127]));
        let m = quantize_row(&[0.0; 5], None, 1e-8, &mut codes);
        assert_eq!((m, codes), (1e-8, [0; 5]));
        let mut long = [0i8; 19];
        let row: Vec<f32> = (0..19).map(|i| i as f32 - 9.0).collect();
        assert_eq!(quantize_row(&row, None, 1e-8, &mut long), 9.0, "maximum found in the tail too");
        let factors: Vec<f32> = (0..19).map(|i| if i == 1 { 2.0 } else { 0.5 }).collect();
        assert_eq!(quantize_row(&row, Some(&factors), 1e-8, &mut long), 16.0, "the smoothed maximum (-8 x 2)");
        assert_eq!((long[1], long[18]), (-127, 36), "codes of the smoothed values (9 x 0.5 x 127 / 16 = 35.7)");
    }

    #[test]
    fn attention_operands_quantized_along_their_last_axis_are_fused_bit_identically() -> TractResult<()> {
        let (float, inputs) = crate::rewrite::tests::attention_model(19, 3, 8)?;
        let mut q = float.clone();
        crate::rewrite::quantize_activation_products(&mut q, crate::ActivationProducts::All)?;
        let mut fused = q.clone();
        // q, k and the probabilities are quantized along their last axis; v along its first stays as is.
        assert_eq!(fuse_per_token_quantization(&mut fused)?, 3);
        let plan = |m: &TypedModel| m.clone().into_optimized().unwrap().into_runnable().unwrap();
        let (fused_plan, q_plan) = (plan(&fused), plan(&q));
        for input in inputs {
            assert_eq!(fused_plan.run(input.clone())?, q_plan.run(input)?);
        }
        Ok(())
    }
}
