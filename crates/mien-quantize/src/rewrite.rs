//! Rewrites planned matmuls into tract's integer path, with ops that all have NNEF serializers:
//!
//! ```text
//! x ─(× 1/(c·s) | dynamic: × 1/c, s = max|row|/127)─ round_even ─ clamp ±127 ─ cast i8 ─┐
//!                                                                  W·c → i8 per column ─┤ einsum_q (i32)
//!                       y = cast_f32(acc) × s × s_w[n]  ◄──────────────────────────────┘
//! ```
//!
//! The quantized EinSum has nine inputs (A, B, bias, a0, a_scale, b0, b_scale, c0, c_scale) with zero
//! points and bias 0 and scales 1, so tract's zero-point and requantization machinery folds away and only
//! the plain i8 × i8 → i32 kernel remains. The real scales are applied in float afterwards: with scales
//! other than 1 and a float output tract would round the result to integers.

use std::collections::HashMap;

use tract_core::internal::*;
use tract_core::ops::cast::{cast, Cast};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::{abs, add, max, min, mul, recip, sub};
use tract_core::ops::nn::{Reduce, Reducer};

use crate::arith::QMAX;
use crate::target::MatmulTarget;
use crate::LayerDecision;

/// 1.5 · 2^23: adding it to an f32 of magnitude below 2^22 rounds it to an integer, half to even.
pub(crate) const ROUNDING_MAGIC: f32 = 12_582_912.0;

/// A vector laid along `axis` of a rank-`rank` tensor (all other axes 1), for broadcasting.
fn along_axis(values: &[f32], rank: usize, axis: usize) -> TractResult<Tensor> {
    let mut shape = vec![1; rank];
    shape[axis] = values.len();
    Tensor::from_shape(&shape, values)
}

fn scalar_of_rank(value: f32, rank: usize) -> TractResult<Tensor> {
    tensor0(value).broadcast_into_rank(rank)
}

/// The target's weight with smoothing applied, quantized per output channel, in its (merged) layout.
fn quantized_weight(t: &MatmulTarget, d: &LayerDecision) -> TractResult<(Tensor, Vec<f32>)> {
    let (q_kn, scales) = match &d.weight_q {
        Some((q, scales)) => (q.clone(), scales.clone()),
        None => {
            let mut kn = t.weight_kn()?;
            if let Some(c) = &d.factors {
                for (row, c) in kn.chunks_exact_mut(t.n).zip(c) {
                    row.iter_mut().for_each(|v| *v *= c);
                }
            }
            for &c in &d.float_channels {
                kn[c * t.n..(c + 1) * t.n].fill(0.0);
            }
            crate::arith::quantize_weight_per_column(&kn, t.k, t.n)
        }
    };
    let mut q = Tensor::zero::<i8>(&t.weight_shape)?;
    {
        let mut view = q.to_plain_array_view_mut::<i8>()?;
        for (ix, value) in view.indexed_iter_mut() {
            *value = q_kn[ix[t.weight_k_axis] * t.n + ix[t.weight_n_axis]];
        }
    }
    Ok((q, scales))
}

/// The quantized activation (and per-token row maxima) another int8 matmul of the same input already
/// computes, when `d` shares it.
fn shared_input(model: &TypedModel, d: &LayerDecision) -> TractResult<Option<(OutletId, Option<OutletId>)>> {
    let Some(leader) = &d.input_shared_with else { return Ok(None) };
    let xq = OutletId::new(model.node_by_name(format!("{leader}.q.i8"))?.id, 0);
    let row_max = match d.activation_scale {
        Some(_) => None,
        None => Some(OutletId::new(model.node_by_name(format!("{leader}.q.row_max_eps"))?.id, 0)),
    };
    Ok(Some((xq, row_max)))
}

/// `127 / max(max|x| along k_axis, ε)` as tract ops (recip then multiply), and the floored maxima.
fn per_row_multiplier(
    patch: &mut TypedModelPatch,
    name: &str,
    x: OutletId,
    k_axis: usize,
    rank: usize,
) -> TractResult<(OutletId, OutletId)> {
    let magnitude = patch.wire_node(format!("{name}.q.abs"), abs(), &[x])?[0];
    let rmax = patch.wire_node(format!("{name}.q.row_max"), Reduce::new(tvec!(k_axis), Reducer::Max), &[magnitude])?[0];
    let eps = patch.add_const(format!("{name}.q.eps"), scalar_of_rank(1e-8, rank)?)?;
    let rmax = patch.wire_node(format!("{name}.q.row_max_eps"), max(), &[rmax, eps])?[0];
    let inv = patch.wire_node(format!("{name}.q.row_inv"), recip(), &[rmax])?[0];
    let qmax = patch.add_const(format!("{name}.q.qmax"), scalar_of_rank(QMAX, rank)?)?;
    let inv = patch.wire_node(format!("{name}.q.row_multiplier"), mul(), &[inv, qmax])?[0];
    Ok((inv, rmax))
}

/// Round half to even by adding and subtracting 1.5 · 2^23: for |x| < 2^22 the sum's last mantissa bit
/// is worth 1, so the add itself rounds (IEEE round-to-nearest-even) and the subtraction is exact. Two
/// binary ops join the scale multiply in one of tract's fused element-wise chains; tract's
/// RoundHalfToEven was a separate pass costing ~5 % of an int8 ViT's ARM instructions.
fn round_half_even(patch: &mut TypedModelPatch, name: &str, x: OutletId, rank: usize) -> TractResult<OutletId> {
    let magic = patch.add_const(format!("{name}.q.round_magic"), scalar_of_rank(ROUNDING_MAGIC, rank)?)?;
    let biased = patch.wire_node(format!("{name}.q.round_add"), add(), &[x, magic])?[0];
    Ok(patch.wire_node(format!("{name}.q.round"), sub(), &[biased, magic])?[0])
}

/// Wires `source` into the canonical layout of `t`'s product: contraction axes merged, dropped axes
/// removed. `prefix` names the nodes.
fn canonical_activation(
    patch: &mut TypedModelPatch,
    model: &TypedModel,
    t: &MatmulTarget,
    source: OutletId,
    prefix: &str,
) -> TractResult<OutletId> {
    let mut x = patch.tap_model(model, source)?;
    if t.k_span > 1 {
        let shape = patch.outlet_fact(x)?.shape.to_tvec();
        let from: TVec<TDim> = shape[t.k_axis..t.k_axis + t.k_span].iter().cloned().collect();
        x = patch.wire_node(format!("{prefix}.merge_k"), AxisOp::Reshape(t.k_axis, from, tvec!(t.k.to_dim())), &[x])?[0];
    }
    for (removed, axis) in t.dropped_axes.iter().enumerate() {
        x = patch.wire_node(format!("{prefix}.rm_axis{axis}"), AxisOp::Rm(axis - removed), &[x])?[0];
    }
    Ok(x)
}

/// Per-channel multipliers with the float channels set to 0 (they leave the int8 product).
fn without_float_channels(mut multipliers: Vec<f32>, d: &LayerDecision) -> Vec<f32> {
    for &c in &d.float_channels {
        multipliers[c] = 0.0;
    }
    multipliers
}

/// Wires `source` → canonical layout → shift, smoothing, scale → round → (clamp) → i8. Returns the i8
/// wire and, in per-token mode, the row maxima.
fn quantized_input(
    patch: &mut TypedModelPatch,
    model: &TypedModel,
    t: &MatmulTarget,
    d: &LayerDecision,
    source: OutletId,
) -> TractResult<(OutletId, Option<OutletId>)> {
    let name = &t.name;
    let rank = t.rank;
    let mut x = canonical_activation(patch, model, t, source, &format!("{name}.q"))?;
    // Contraction axis once the dropped axes are gone: where the output has its channels.
    let k_axis = t.n_axis;
    if let Some(z) = &d.shift {
        let minus: Vec<f32> = z.iter().map(|z| -z).collect();
        let minus = patch.add_const(format!("{name}.q.shift"), along_axis(&minus, rank, k_axis)?)?;
        x = patch.wire_node(format!("{name}.q.shifted"), add(), &[x, minus])?[0];
    }
    let factors = d.factors.as_deref();

    // Quantize the activation in float ops.
    let mut row_max = None;
    let scaled = match d.activation_scale {
        Some(scale) => {
            let m = match factors {
                Some(c) => along_axis(&without_float_channels(c.iter().map(|c| 1.0 / (c * scale)).collect(), d), rank, k_axis)?,
                None if !d.float_channels.is_empty() => {
                    along_axis(&without_float_channels(vec![1.0 / scale; t.k], d), rank, k_axis)?
                }
                None => scalar_of_rank(1.0 / scale, rank)?,
            };
            let m = patch.add_const(format!("{name}.q.multiplier"), m)?;
            patch.wire_node(format!("{name}.q.scaled"), mul(), &[x, m])?[0]
        }
        None => {
            // Smoothing and the float channels' removal are one per-channel multiply (folded into the
            // runtime's fused quantize op).
            let inv: Option<Vec<f32>> = match factors {
                Some(c) => Some(c.iter().map(|c| 1.0 / c).collect()),
                None => (!d.float_channels.is_empty()).then(|| vec![1.0; t.k]),
            };
            if let Some(inv) = inv {
                let inv = without_float_channels(inv, d);
                let inv = patch.add_const(format!("{name}.q.smooth"), along_axis(&inv, rank, k_axis)?)?;
                x = patch.wire_node(format!("{name}.q.smoothed"), mul(), &[x, inv])?[0];
            }
            let (inv, rmax) = per_row_multiplier(patch, name, x, k_axis, rank)?;
            row_max = Some(rmax);
            patch.wire_node(format!("{name}.q.scaled"), mul(), &[x, inv])?[0]
        }
    };
    let rounded = round_half_even(patch, name, scaled, rank)?;
    // Per token, |x| · 127 / max|x| ≤ 127 already: the clamp is only needed for a calibrated scale
    // (two passes over the activation saved per matmul).
    let clamped = if d.activation_scale.is_some() {
        let hi = patch.add_const(format!("{name}.q.hi"), scalar_of_rank(QMAX, rank)?)?;
        let lo = patch.add_const(format!("{name}.q.lo"), scalar_of_rank(-QMAX, rank)?)?;
        let clamped = patch.wire_node(format!("{name}.q.clamp_hi"), min(), &[rounded, hi])?[0];
        patch.wire_node(format!("{name}.q.clamp_lo"), max(), &[clamped, lo])?[0]
    } else {
        rounded
    };
    let xq = patch.wire_node(format!("{name}.q.i8"), cast(i8::datum_type()), &[clamped])?[0];

    Ok((xq, row_max))
}

/// The float channels' product `x[.., S] · w[S, ..]` in `t`'s canonical layout: a gather of the
/// channels and a small float EinSum with the same expression as the int8 one.
fn float_channel_product(
    patch: &mut TypedModelPatch,
    model: &TypedModel,
    t: &MatmulTarget,
    d: &LayerDecision,
    source: OutletId,
) -> TractResult<OutletId> {
    let name = &t.name;
    let x = canonical_activation(patch, model, t, source, &format!("{name}.float_channels"))?;
    let indices: Vec<i64> = d.float_channels.iter().map(|c| *c as i64).collect();
    let indices = patch.add_const(format!("{name}.float_channels.indices"), tensor1(&indices))?;
    let gathered = patch.wire_node(
        format!("{name}.float_channels.gather"),
        tract_core::ops::array::Gather::new(t.n_axis),
        &[x, indices],
    )?[0];
    let kn = t.weight_kn()?;
    let mut shape = t.weight_shape.clone();
    shape[t.weight_k_axis] = d.float_channels.len();
    let mut w = Tensor::zero::<f32>(&shape)?;
    {
        let mut view = w.to_plain_array_view_mut::<f32>()?;
        for (ix, value) in view.indexed_iter_mut() {
            *value = kn[d.float_channels[ix[t.weight_k_axis]] * t.n + ix[t.weight_n_axis]];
        }
    }
    let w = patch.add_const(format!("{name}.float_channels.weight"), w)?;
    let mut inputs = tvec!(gathered, w);
    if t.activation_slot == 1 {
        inputs.swap(0, 1);
    }
    let axes: AxesMapping = t.expression.parse()?;
    Ok(patch.wire_node(format!("{name}.float_channels.product"), EinSum::new(axes, f32::datum_type()), &inputs)?[0])
}

/// Replaces every target whose decision is int8. Targets and decisions are parallel slices. Returns the
/// number of matmuls rewritten.
pub fn apply(model: &mut TypedModel, targets: &[MatmulTarget], decisions: &[LayerDecision]) -> TractResult<usize> {
    // A target's activation may be another target's output: follow replacements.
    let mut replaced: HashMap<OutletId, OutletId> = HashMap::new();
    let mut count = 0;
    for (t, d) in targets.iter().zip(decisions) {
        if !d.is_int8() {
            continue;
        }
        let node = model.node(t.node).clone();
        ensure!(node.op_is::<EinSum>(), "target {} is not an EinSum", node.name);
        let name = &node.name;
        let mut patch = TypedModelPatch::new(format!("int8 {name}"));
        let rank = t.rank;
        let (xq, row_max) = match shared_input(model, d)? {
            Some((xq, row_max)) => (patch.tap_model(model, xq)?, row_max.map(|r| patch.tap_model(model, r)).transpose()?),
            None => quantized_input(&mut patch, model, t, d, *replaced.get(&t.activation).unwrap_or(&t.activation))?,
        };

        // The integer matmul.
        let (wq, w_scales) = quantized_weight(t, d)?;
        let wq = patch.add_const(format!("{name}.weight_i8"), wq)?;
        let axes: AxesMapping = nine_input_expression(&t.expression)?.parse()?;
        let zero = patch.add_const(format!("{name}.zero"), tensor0(0i32))?;
        let one = patch.add_const(format!("{name}.one"), tensor0(1f32))?;
        let mut inputs = tvec!(xq, wq);
        if t.activation_slot == 1 {
            inputs.swap(0, 1);
        }
        inputs.extend([zero, zero, one, zero, one, zero, one]);
        let acc = patch.wire_node(
            format!("{name}.int8"),
            EinSum::newq(axes, i32::datum_type(), i32::datum_type()),
            &inputs,
        )?[0];

        // Back to float with the combined scales.
        let accf = patch.wire_node(format!("{name}.dequant.f32"), cast(f32::datum_type()), &[acc])?[0];
        let column_scale: Vec<f32> = match d.activation_scale {
            Some(s) => w_scales.iter().map(|w| w * s).collect(),
            None => w_scales.iter().map(|w| w / QMAX).collect(),
        };
        let column_scale = patch.add_const(format!("{name}.dequant.scale"), along_axis(&column_scale, rank, t.n_axis)?)?;
        let mut y = patch.wire_node(format!("{name}.dequant"), mul(), &[accf, column_scale])?[0];
        if let Some(rmax) = row_max {
            y = patch.wire_node(format!("{name}.dequant.rows"), mul(), &[y, rmax])?[0];
        }
        if !d.float_channels.is_empty() {
            let source = *replaced.get(&t.activation).unwrap_or(&t.activation);
            let float_y = float_channel_product(&mut patch, model, t, d, source)?;
            y = patch.wire_node(format!("{name}.float_channels.add"), add(), &[y, float_y])?[0];
        }
        if let Some(z) = &d.shift {
            // The shift times the float weight, as a bias.
            let w = t.weight_kn()?;
            let bias = crate::arith::matmul(z, &w, 1, t.k, t.n);
            let bias = patch.add_const(format!("{name}.dequant.shift_bias"), along_axis(&bias, rank, t.n_axis)?)?;
            y = patch.wire_node(format!("{name}.dequant.unshift"), add(), &[y, bias])?[0];
        }
        for axis in &t.added_axes {
            y = patch.wire_node(format!("{name}.dequant.add_axis{axis}"), AxisOp::Add(*axis), &[y])?[0];
        }
        let y_name = patch.node(y.node).name.clone();
        patch.shunt_outside(model, OutletId::new(t.node, 0), y)?;
        patch.apply(model)?;
        // Patch application appends nodes; find the output by name.
        let y_node = model.node_by_name(&y_name)?.id;
        replaced.insert(OutletId::new(t.node, 0), OutletId::new(y_node, 0));
        count += 1;
    }
    *model = std::mem::take(model).into_compact()?;
    Ok(count)
}

/// Rewrites every product of two activations (attention's QKᵀ and PV) into int8: each operand quantized
/// per row along the contraction axis at run time (scale `max|row| / 127`, as the per-token mode), an
/// `i8 × i8 → i32` EinSum, and the result multiplied back by both operands' row maxima. Returns the
/// names of the products rewritten.
pub fn quantize_activation_products(model: &mut TypedModel, which: crate::ActivationProducts) -> TractResult<Vec<String>> {
    let mut names = vec![];
    for id in model.eval_order()? {
        let node = model.node(id).clone();
        let Some(op) = node.op_as::<EinSum>() else { continue };
        if op.q_params.is_some() || node.inputs.len() != 2 || op.operating_dt != f32::datum_type() {
            continue;
        }
        let facts = [model.outlet_fact(node.inputs[0])?.clone(), model.outlet_fact(node.inputs[1])?.clone()];
        if facts.iter().any(|f| f.konst.is_some() || f.datum_type != f32::datum_type()) {
            continue;
        }
        let reads_softmax = node.inputs.iter().any(|i| model.node(i.node).op_is::<tract_core::ops::nn::Softmax>());
        if !which.selects(reads_softmax) {
            continue;
        }
        let axes: Vec<&tract_core::axes::Axis> = op.axes.iter_all_axes().collect();
        let contraction: Vec<&&tract_core::axes::Axis> =
            axes.iter().filter(|a| a.inputs[0].len() == 1 && a.inputs[1].len() == 1 && a.outputs[0].is_empty()).collect();
        let [k] = contraction[..] else { continue };
        // Plain products only: no repeated axis, nothing summed away but the contraction.
        if axes.iter().any(|a| a.inputs[0].len() > 1 || a.inputs[1].len() > 1 || a.outputs[0].len() > 1 || (a.repr != k.repr && a.outputs[0].is_empty())) {
            continue;
        }
        let name = &node.name;
        let mut patch = TypedModelPatch::new(format!("int8 {name}"));
        let mut codes = tvec!();
        let mut maxima = tvec!();
        for slot in 0..2 {
            let operand = format!("{name}.{}", ["a", "b"][slot]);
            let rank = facts[slot].rank();
            let k_axis = k.inputs[slot][0];
            let x = patch.tap_model(model, node.inputs[slot])?;
            let (inv, rmax) = per_row_multiplier(&mut patch, &operand, x, k_axis, rank)?;
            let scaled = patch.wire_node(format!("{operand}.q.scaled"), mul(), &[x, inv])?[0];
            let rounded = round_half_even(&mut patch, &operand, scaled, rank)?;
            codes.push(patch.wire_node(format!("{operand}.q.i8"), cast(i8::datum_type()), &[rounded])?[0]);
            maxima.push(along_output_axes(&mut patch, &operand, rmax, &op.axes, slot, k.repr)?);
        }
        let quantized_axes: AxesMapping = nine_input_expression(&op.axes.to_string())?.parse()?;
        let zero = patch.add_const(format!("{name}.zero"), tensor0(0i32))?;
        let one = patch.add_const(format!("{name}.one"), tensor0(1f32))?;
        let mut inputs = codes.clone();
        inputs.extend([zero, zero, one, zero, one, zero, one]);
        let acc =
            patch.wire_node(format!("{name}.int8"), EinSum::newq(quantized_axes, i32::datum_type(), i32::datum_type()), &inputs)?[0];
        let out_rank = patch.outlet_fact(acc)?.rank();
        let accf = patch.wire_node(format!("{name}.dequant.f32"), cast(f32::datum_type()), &[acc])?[0];
        let unit = patch.add_const(format!("{name}.dequant.scale"), scalar_of_rank(1.0 / (QMAX * QMAX), out_rank)?)?;
        let mut y = patch.wire_node(format!("{name}.dequant"), mul(), &[accf, unit])?[0];
        for (slot, m) in maxima.iter().enumerate() {
            y = patch.wire_node(format!("{name}.dequant.rows{slot}"), mul(), &[y, *m])?[0];
        }
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
        names.push(name.clone());
    }
    if !names.is_empty() {
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(names)
}

/// An operand's row maxima (its shape with the contraction axis reduced to 1) laid along the product's
/// output axes, size 1 on the other operand's, for broadcasting.
fn along_output_axes(
    patch: &mut TypedModelPatch,
    name: &str,
    row_max: OutletId,
    axes: &AxesMapping,
    slot: usize,
    contraction: char,
) -> TractResult<OutletId> {
    let rank = patch.outlet_fact(row_max)?.rank();
    let letter_at = |slot_axes: &dyn Fn(&tract_core::axes::Axis) -> Option<usize>, pos: usize| {
        axes.iter_all_axes().find(|a| slot_axes(a) == Some(pos)).map(|a| a.repr).context("axis of the product")
    };
    let mut current: Vec<char> =
        (0..rank).map(|pos| letter_at(&|a: &tract_core::axes::Axis| a.inputs[slot].first().copied(), pos)).collect::<TractResult<_>>()?;
    let output: Vec<char> = (0..axes.rank(InOut::Out(0)))
        .map(|pos| letter_at(&|a: &tract_core::axes::Axis| a.outputs[0].first().copied(), pos))
        .collect::<TractResult<_>>()?;
    let mut x = row_max;
    let mut step = 0;
    let mut wire = |patch: &mut TypedModelPatch, x: OutletId, op: AxisOp| -> TractResult<OutletId> {
        step += 1;
        Ok(patch.wire_node(format!("{name}.q.row_max_axes{step}"), op, &[x])?[0])
    };
    let k_pos = current.iter().position(|&c| c == contraction).context("contraction axis")?;
    x = wire(patch, x, AxisOp::Rm(k_pos))?;
    current.remove(k_pos);
    for &letter in &output {
        if !current.contains(&letter) {
            x = wire(patch, x, AxisOp::Add(current.len()))?;
            current.push(letter);
        }
    }
    for (target, &letter) in output.iter().enumerate() {
        let from = current.iter().position(|&c| c == letter).context("output axis")?;
        if from != target {
            x = wire(patch, x, AxisOp::Move(from, target))?;
            let moved = current.remove(from);
            current.insert(target, moved);
        }
    }
    Ok(x)
}

/// `A,B->C` to the quantized EinSum's `A,B,,,,,,,->C` (bias, zero points and scales are scalars).
fn nine_input_expression(two: &str) -> TractResult<String> {
    let (ins, out) = two.split_once("->").context("einsum expression")?;
    Ok(format!("{ins},,,,,,,->{out}"))
}

/// The inverse of [`nine_input_expression`].
fn two_input_expression(nine: &str) -> TractResult<String> {
    let (ins, out) = nine.split_once("->").context("einsum expression")?;
    let operands: Vec<&str> = ins.split(',').take(2).collect();
    ensure!(operands.len() == 2, "einsum expression {nine}");
    Ok(format!("{},{}->{out}", operands[0], operands[1]))
}

/// True when the model holds at least one quantized matmul.
pub fn has_int8_matmuls(model: &TypedModel) -> bool {
    model.nodes().iter().any(|n| n.op_as::<EinSum>().map(|op| op.q_params.is_some()).unwrap_or(false))
}

/// The inverse of [`apply`]'s product, for CPUs where tract's integer kernels lose to float (x86 without
/// VNNI): rewrites each `i8 × const i8 → i32` EinSum followed by a cast to f32 into an f32 EinSum of the cast
/// activation and the weight converted to f32. Returns the number rewritten.
pub fn dequantize_weights(model: &mut TypedModel) -> TractResult<usize> {
    let mut count = 0;
    for id in model.eval_order()? {
        let node = model.node(id).clone();
        let Some(op) = node.op_as::<EinSum>() else { continue };
        if op.q_params.is_none() || node.inputs.len() != 9 {
            continue;
        }
        let successors = &node.outputs[0].successors;
        let [consumer] = &successors[..] else { continue };
        let cast_node = model.node(consumer.node);
        if cast_node.op_as::<Cast>().map(|c| c.to != f32::datum_type()).unwrap_or(true) {
            continue;
        }
        let axes: AxesMapping = two_input_expression(&op.axes.to_string())?.parse()?;
        let mut patch = TypedModelPatch::new(format!("dequantize {}", node.name));
        let inputs: TVec<OutletId> = match crate::target::constant_operand(model, &node) {
            Some((act_slot, weight)) => {
                let act = patch.tap_model(model, node.inputs[act_slot])?;
                let act = patch.wire_node(format!("{}.act_f32", node.name), cast(f32::datum_type()), &[act])?[0];
                let w = patch.add_const(format!("{}.weight_f32", node.name), weight.cast_to::<f32>()?.into_owned())?;
                if act_slot == 0 { tvec![act, w] } else { tvec![w, act] }
            }
            // A product of two activations: both i8 operands in f32 (sums of products of magnitude ≤ 127²
            // stay exact in f32 for contractions up to 1,040 long: attention's 64 and 257 here).
            None => (0..2)
                .map(|slot| {
                    let x = patch.tap_model(model, node.inputs[slot])?;
                    Ok(patch.wire_node(format!("{}.act_f32.{slot}", node.name), cast(f32::datum_type()), &[x])?[0])
                })
                .collect::<TractResult<_>>()?,
        };
        let y = patch.wire_node(format!("{}.f32", node.name), EinSum::new(axes, f32::datum_type()), &inputs)?[0];
        patch.shunt_outside(model, OutletId::new(cast_node.id, 0), y)?;
        patch.apply(model)?;
        count += 1;
    }
    if count > 0 {
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(count)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{plan_layers, ActivationMode, Calibration, QuantizeOptions, Smoothing, StaticCalibrator};

    /// y = x · W with x [1, 12, 16] (channel 5 an outlier) and W [16, 8], in the layouts tract's declutter
    /// leaves Linear layers in.
    pub(crate) const LAYOUTS: [(&str, &[usize], &[usize]); 6] = [
        ("amk,akn->amn", &[1, 12, 16], &[1, 16, 8]),
        ("amk,kn->mn", &[1, 12, 16], &[16, 8]),
        ("mk,nk->mn", &[12, 16], &[8, 16]),
        ("mk,kn->amn", &[12, 16], &[16, 8]),
        ("mbk,bkn->amn", &[12, 1, 16], &[1, 16, 8]),
        ("mhd,hdn->amn", &[12, 4, 4], &[4, 4, 8]),
    ];

    fn linear_model() -> TractResult<(TypedModel, Vec<Tensor>)> {
        linear_model_in(LAYOUTS[0])
    }

    fn linear_model_in((expr, x_shape, w_shape): (&str, &[usize], &[usize])) -> TractResult<(TypedModel, Vec<Tensor>)> {
        let mut seed = 1u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let w: Vec<f32> = (0..16 * 8).map(|_| next()).collect();
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(x_shape))?;
        let w = model.add_const("w", Tensor::from_shape(w_shape, &w)?)?;
        let y = model.wire_node("linear", EinSum::new(expr.parse()?, f32::datum_type()), &[x, w])?;
        model.select_output_outlets(&y)?;
        let inputs = (0..6)
            .map(|_| {
                let v: Vec<f32> = (0..12 * 16).enumerate().map(|(i, _)| next() * if i % 16 == 5 { 30.0 } else { 1.0 }).collect();
                Tensor::from_shape(x_shape, &v).unwrap()
            })
            .collect();
        Ok((model, inputs))
    }

    fn quantized(mode: ActivationMode) -> TractResult<(TypedModel, TypedModel, Vec<Tensor>)> {
        quantized_in(mode, LAYOUTS[0])
    }

    pub(crate) fn quantized_in(mode: ActivationMode, layout: (&str, &[usize], &[usize])) -> TractResult<(TypedModel, TypedModel, Vec<Tensor>)> {
        let (model, inputs) = linear_model_in(layout)?;
        let (targets, unsupported) = crate::find_targets(&model)?;
        assert_eq!((targets.len(), unsupported.len()), (1, 0));
        let mut calibration = Calibration::new(&model, &targets, 64, 1)?;
        for input in &inputs[..4] {
            calibration.observe(input.clone())?;
        }
        let stats = calibration.finish();
        let options = QuantizeOptions { activations: mode, max_layer_error: 0.2, ..QuantizeOptions::default() };
        let decisions = plan_layers(&targets, &stats, &options).unwrap();
        assert!(decisions[0].alpha > 0.0, "smoothing chosen for the outlier channel: {decisions:?}");
        let mut q = model.clone();
        assert_eq!(apply(&mut q, &targets, &decisions)?, 1);
        Ok((model, q, inputs))
    }

    /// Both activation modes, each with every layout.
    fn modes_and_layouts() -> impl Iterator<Item = (ActivationMode, (&'static str, &'static [usize], &'static [usize]))> {
        [ActivationMode::DynamicPerToken, ActivationMode::Static { calibrator: StaticCalibrator::MinMax }]
            .into_iter()
            .flat_map(|m| LAYOUTS.into_iter().map(move |l| (m, l)))
    }

    pub(crate) fn run(model: &TypedModel, input: &Tensor) -> TractResult<Vec<f32>> {
        let out = model.clone().into_optimized()?.into_runnable()?.run(tvec!(input.clone().into_tvalue()))?;
        Ok(out[0].to_plain_array_view::<f32>()?.iter().copied().collect())
    }

    #[test]
    fn int8_graph_tracks_float_saves_and_reloads_bit_identical() -> TractResult<()> {
        for (mode, layout) in modes_and_layouts() {
            let (float, q, inputs) = quantized_in(mode, layout)?;
            assert!(q.nodes().iter().any(|n| n.op_as::<EinSum>().map(|e| e.q_params.is_some()).unwrap_or(false)));
            let mut buffer = vec![];
            tract_nnef::nnef().write_to_tar(&q, &mut buffer)?;
            let reloaded = tract_nnef::nnef().model_for_read(&mut &buffer[..])?;
            for input in &inputs[4..] {
                let expected = run(&float, input)?;
                let got = run(&q, input)?;
                let err = crate::arith::relative_error(&got, &expected);
                assert!(err < 0.03, "{mode:?} {}: relative error {err}", layout.0);
                assert_eq!(run(&reloaded, input)?, got, "{mode:?} {}: NNEF round trip changes nothing", layout.0);
            }
        }
        Ok(())
    }

    /// Plans the single linear layer of `layout` with the outlier channel left to float when its int8
    /// error is over 0.5 %.
    fn quantized_with_float_channels(
        mode: ActivationMode,
        layout: (&str, &[usize], &[usize]),
        counts: Vec<usize>,
    ) -> TractResult<(TypedModel, TypedModel, Vec<Tensor>, LayerDecision)> {
        let (model, inputs) = linear_model_in(layout)?;
        let (targets, _) = crate::find_targets(&model)?;
        let mut calibration = Calibration::new(&model, &targets, 64, 1)?;
        for input in &inputs[..4] {
            calibration.observe(input.clone())?;
        }
        let options = QuantizeOptions {
            activations: mode,
            smoothing: Smoothing::Off,
            shift: false,
            gptq: false,
            max_layer_error: 0.005,
            float_channel_counts: counts,
            ..QuantizeOptions::default()
        };
        let decisions = plan_layers(&targets, &calibration.finish(), &options).unwrap();
        let mut q = model.clone();
        apply(&mut q, &targets, &decisions)?;
        Ok((model, q, inputs, decisions[0].clone()))
    }

    #[test]
    fn outlier_channels_leave_the_int8_product_for_a_float_one() -> TractResult<()> {
        for (mode, layout) in modes_and_layouts() {
            let (_, _, _, without) = quantized_with_float_channels(mode, layout, vec![])?;
            assert!(without.float_channels.is_empty() && !without.is_int8(), "{mode:?} {}: {without:?}", layout.0);
            let (float, q, inputs, with) = quantized_with_float_channels(mode, layout, vec![1, 2])?;
            // Channel 5 (30x the others) is the one taken out, and that alone brings the error under 0.5 %.
            assert_eq!(with.float_channels, [5], "{mode:?} {}", layout.0);
            assert!(with.is_int8() && with.error < without.error / 4.0, "{mode:?} {}: {} vs {}", layout.0, with.error, without.error);
            let mut buffer = vec![];
            tract_nnef::nnef().write_to_tar(&q, &mut buffer)?;
            let reloaded = tract_nnef::nnef().model_for_read(&mut &buffer[..])?;
            let mut fused = reloaded.clone();
            let fusions = crate::fuse::fuse_per_token_quantization(&mut fused)?;
            assert_eq!(fusions, usize::from(mode == ActivationMode::DynamicPerToken));
            for input in &inputs[4..] {
                let expected = run(&float, input)?;
                let got = run(&q, input)?;
                let err = crate::arith::relative_error(&got, &expected);
                assert!(err < 0.02, "{mode:?} {}: relative error {err}", layout.0);
                assert_eq!(run(&reloaded, input)?, got, "{mode:?} {}: NNEF round trip changes nothing", layout.0);
                assert_eq!(run(&fused, input)?, got, "{mode:?} {}: the runtime's fused quantize op agrees", layout.0);
            }
        }
        Ok(())
    }

    #[test]
    fn per_token_codes_stay_within_127_without_a_clamp() -> TractResult<()> {
        let (_, mut q, inputs) = quantized(ActivationMode::DynamicPerToken)?;
        assert!(!q.nodes().iter().any(|n| n.name.ends_with(".q.clamp_hi")));
        let codes = q.node_by_name("linear.q.i8")?.id;
        q.select_output_outlets(&[OutletId::new(codes, 0)])?;
        let plan = q.into_optimized()?.into_runnable()?;
        for input in &inputs {
            // Rows scaled so that their largest magnitude lands on awkward float values.
            for factor in [1.0f32, 1e-3, 3.7e5, -0.1] {
                let x = input.to_plain_array_view::<f32>()?.mapv(|v| v * factor).into_tensor();
                let out = plan.run(tvec!(x.into_tvalue()))?;
                let view = out[0].to_plain_array_view::<i8>()?;
                let codes: Vec<i8> = view.iter().copied().collect();
                assert!(codes.iter().all(|c| (-127..=127).contains(c)), "{codes:?}");
                // Each of the 12 rows reaches ±127 at its largest magnitude.
                for row in codes.chunks(16) {
                    assert_eq!(row.iter().map(|c| c.unsigned_abs()).max(), Some(127), "{row:?}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn magic_rounding_is_half_to_even_after_tract_optimizes_it() -> TractResult<()> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 24]))?;
        let magic = model.add_const("magic", scalar_of_rank(ROUNDING_MAGIC, 2)?)?;
        let biased = model.wire_node("add", add(), &[x, magic])?[0];
        let rounded = model.wire_node("sub", sub(), &[biased, magic])?[0];
        let codes = model.wire_node("i8", cast(i8::datum_type()), &[rounded])?;
        model.select_output_outlets(&codes)?;
        let values: Vec<f32> = vec![
            0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 127.0, -127.0, 0.49999997, 0.50000006, -3.4999998,
            42.25, -42.75, 0.0, -0.0, 99.5, 100.5, 1e-7, -1e-7, 63.500004, 7.0, -8.5,
        ];
        let input = Tensor::from_shape(&[1, 24], &values)?;
        for model in [model.clone().into_runnable()?, model.into_optimized()?.into_runnable()?] {
            let out = model.run(tvec!(input.clone().into_tvalue()))?;
            let got: Vec<i8> = out[0].to_plain_array_view::<i8>()?.iter().copied().collect();
            let expected: Vec<i8> = values.iter().map(|v| v.round_ties_even() as i8).collect();
            assert_eq!(got, expected);
        }
        Ok(())
    }

    /// Attention's q, k and v: three matmuls of one activation (channel 5 an outlier); q has `q_outputs`
    /// output channels, k and v 8.
    pub(crate) fn three_projections(q_outputs: usize) -> TractResult<(TypedModel, Vec<Tensor>)> {
        let (single, inputs) = linear_model()?;
        let w = single.node_by_name("w")?.op_as::<tract_core::ops::konst::Const>().unwrap().val().clone();
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 12, 16]))?;
        let mut outputs = tvec!();
        for (i, name) in ["q", "k", "v"].iter().enumerate() {
            let mut scaled = w.to_plain_array_view::<f32>()?.mapv(|v| v * (i + 1) as f32 - 0.1 * i as f32).into_tensor();
            if i == 0 {
                scaled = scaled.slice(2, 0, q_outputs)?;
            }
            let wi = model.add_const(format!("w_{name}"), scaled)?;
            outputs.push(model.wire_node(*name, EinSum::new("amk,akn->amn".parse()?, f32::datum_type()), &[x, wi])?[0]);
        }
        model.select_output_outlets(&outputs)?;
        Ok((model, inputs))
    }

    pub(crate) fn quantize_all(model: &TypedModel, inputs: &[Tensor], min_weight_fraction: f64) -> TractResult<(TypedModel, Vec<LayerDecision>)> {
        let (targets, _) = crate::find_targets(model)?;
        let mut calibration = Calibration::new(model, &targets, 64, 1)?;
        for input in &inputs[..4] {
            calibration.observe(input.clone())?;
        }
        let options = QuantizeOptions { max_layer_error: 0.2, min_weight_fraction, ..QuantizeOptions::default() };
        let decisions = plan_layers(&targets, &calibration.finish(), &options).unwrap();
        let mut q = model.clone();
        apply(&mut q, &targets, &decisions)?;
        Ok((q, decisions))
    }

    #[test]
    fn matmuls_of_one_input_quantize_it_once() -> TractResult<()> {
        let (float, inputs) = three_projections(8)?;
        let (q, decisions) = quantize_all(&float, &inputs, 0.0)?;
        let shared: Vec<Option<&str>> = decisions.iter().map(|d| d.input_shared_with.as_deref()).collect();
        assert_eq!(shared, [None, Some("q"), Some("q")]);
        assert!(decisions.iter().all(|d| d.factors == decisions[0].factors && d.shift == decisions[0].shift));
        let count = |suffix: &str| q.nodes().iter().filter(|n| n.name.ends_with(suffix)).count();
        assert_eq!((count(".q.i8"), count(".q.row_max"), count(".int8")), (1, 1, 3));
        let mut buffer = vec![];
        tract_nnef::nnef().write_to_tar(&q, &mut buffer)?;
        let reloaded = tract_nnef::nnef().model_for_read(&mut &buffer[..])?.into_optimized()?.into_runnable()?;
        let float = float.into_optimized()?.into_runnable()?;
        for input in &inputs[4..] {
            let expected = float.run(tvec!(input.clone().into_tvalue()))?;
            let got = reloaded.run(tvec!(input.clone().into_tvalue()))?;
            for (e, g) in expected.iter().zip(&got) {
                let e: Vec<f32> = e.to_plain_array_view::<f32>()?.iter().copied().collect();
                let g: Vec<f32> = g.to_plain_array_view::<f32>()?.iter().copied().collect();
                let err = crate::arith::relative_error(&g, &e);
                assert!(err < 0.03, "relative error {err}");
            }
        }
        Ok(())
    }

    #[test]
    fn a_group_whose_first_matmul_stays_float_is_led_by_the_next() -> TractResult<()> {
        // q holds 2 / 18 of the weights: below a 20 % floor it stays float, and k leads.
        let (float, inputs) = three_projections(2)?;
        let (q, decisions) = quantize_all(&float, &inputs, 0.2)?;
        assert!(!decisions[0].is_int8());
        let shared: Vec<Option<&str>> = decisions.iter().map(|d| d.input_shared_with.as_deref()).collect();
        assert_eq!(shared, [None, None, Some("k")]);
        assert_eq!(q.nodes().iter().filter(|n| n.name.ends_with(".q.i8")).count(), 1);
        assert_eq!(q.nodes().iter().filter(|n| n.name.ends_with(".int8")).count(), 2);
        Ok(())
    }

    #[test]
    fn optimized_int8_graph_uses_an_integer_kernel() -> TractResult<()> {
        let (_, q, _) = quantized(ActivationMode::DynamicPerToken)?;
        let optimized = q.into_optimized()?;
        let kernels: Vec<String> = optimized
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<tract_core::ops::matmul::optimized::OptMatMul>())
            .flat_map(|op| op.mmm.iter().map(|m| m.name().to_string()))
            .collect();
        assert!(!kernels.is_empty() && kernels.iter().all(|k| k.contains("i32")), "{kernels:?}");
        Ok(())
    }

    #[test]
    fn a_shift_centres_one_sided_channels_and_stays_exact() -> TractResult<()> {
        // Activations like GELU outputs or LayerNorm outputs with a large beta: every channel offset.
        let (model, inputs) = linear_model()?;
        let offset: Vec<f32> = (0..16).map(|c| 3.0 + c as f32 * 0.5).collect();
        let shifted_inputs: Vec<Tensor> = inputs
            .iter()
            .map(|t| {
                let v: Vec<f32> = t.to_plain_array_view::<f32>().unwrap().iter().enumerate().map(|(i, v)| v + offset[i % 16]).collect();
                Tensor::from_shape(t.shape(), &v).unwrap()
            })
            .collect();
        let (targets, _) = crate::find_targets(&model)?;
        let mut calibration = Calibration::new(&model, &targets, 64, 1)?;
        for input in &shifted_inputs[..4] {
            calibration.observe(input.clone())?;
        }
        let stats = calibration.finish();
        let with = plan_layers(&targets, &stats, &QuantizeOptions::default()).unwrap();
        let without = plan_layers(&targets, &stats, &QuantizeOptions { shift: false, ..QuantizeOptions::default() }).unwrap();
        assert!(with[0].shifted, "{with:?}");
        assert!(with[0].error < without[0].error * 0.8, "shift {} vs none {}", with[0].error, without[0].error);
        let mut q = model.clone();
        apply(&mut q, &targets, &with)?;
        for input in &shifted_inputs[4..] {
            let err = crate::arith::relative_error(&run(&q, input)?, &run(&model, input)?);
            assert!(err < 0.02, "{err}");
        }
        Ok(())
    }

    #[test]
    fn smoothing_off_keeps_alpha_zero() -> TractResult<()> {
        let (model, inputs) = linear_model()?;
        let (targets, _) = crate::find_targets(&model)?;
        let mut calibration = Calibration::new(&model, &targets, 64, 1)?;
        calibration.observe(inputs[0].clone())?;
        let options = QuantizeOptions { smoothing: Smoothing::Off, ..QuantizeOptions::default() };
        let decisions = plan_layers(&targets, &calibration.finish(), &options).unwrap();
        assert_eq!(decisions[0].alpha, 0.0);
        assert!(decisions[0].factors.is_none());
        Ok(())
    }

    /// Attention over `t` tokens, `a` heads of `d` channels: softmax(q·kᵀ)·v from three activations.
    pub(crate) fn attention_model(t: usize, a: usize, d: usize) -> TractResult<(TypedModel, Vec<TVec<TValue>>)> {
        let mut model = TypedModel::default();
        let q = model.add_source("q", f32::fact([t, a, d]))?;
        let k = model.add_source("k", f32::fact([t, a, d]))?;
        let v = model.add_source("v", f32::fact([t, a, d]))?;
        let scores = model.wire_node("qk", EinSum::new("mak,nak->amn".parse()?, f32::datum_type()), &[q, k])?[0];
        let probs = model.wire_node(
            "softmax",
            tract_core::ops::nn::Softmax::new(tvec!(2), None, tract_core::ops::nn::SoftmaxKind::default()),
            &[scores],
        )?[0];
        let out = model.wire_node("pv", EinSum::new("amk,kan->man".parse()?, f32::datum_type()), &[probs, v])?;
        model.select_output_outlets(&out)?;
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let inputs = (0..3)
            .map(|_| {
                (0..3)
                    .map(|i| {
                        let scale = if i == 2 { 1.0 } else { 2.0 };
                        let v: Vec<f32> = (0..t * a * d).map(|_| next() * scale).collect();
                        Tensor::from_shape(&[t, a, d], &v).unwrap().into_tvalue()
                    })
                    .collect()
            })
            .collect();
        Ok((model, inputs))
    }

    #[test]
    fn attention_products_in_int8_track_float_on_both_paths_and_reload() -> TractResult<()> {
        let (float, inputs) = attention_model(19, 3, 8)?;
        let mut q = float.clone();
        let mut scores_only = float.clone();
        assert_eq!(quantize_activation_products(&mut scores_only, crate::ActivationProducts::Scores)?, vec!["qk".to_string()]);
        let mut weighted_only = float.clone();
        assert_eq!(quantize_activation_products(&mut weighted_only, crate::ActivationProducts::Weighted)?, vec!["pv".to_string()]);
        assert_eq!(quantize_activation_products(&mut q, crate::ActivationProducts::All)?, vec!["qk".to_string(), "pv".to_string()]);
        assert!(has_int8_matmuls(&q));
        let mut dequantized = q.clone();
        assert_eq!(dequantize_weights(&mut dequantized)?, 2);
        let mut buffer = vec![];
        tract_nnef::nnef().write_to_tar(&q, &mut buffer)?;
        let reloaded = tract_nnef::nnef().model_for_read(&mut &buffer[..])?;
        let plan = |m: &TypedModel| m.clone().into_optimized().unwrap().into_runnable().unwrap();
        let (float_plan, q_plan, dq_plan, re_plan) = (plan(&float), plan(&q), plan(&dequantized), plan(&reloaded));
        let values = |out: TVec<TValue>| -> Vec<f32> { out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect() };
        for input in inputs {
            let expected = values(float_plan.run(input.clone())?);
            let got = values(q_plan.run(input.clone())?);
            let err = crate::arith::relative_error(&got, &expected);
            assert!(err < 0.03, "relative error {err}");
            assert!(err > 0.0, "the products really are quantized");
            let dq = values(dq_plan.run(input.clone())?);
            assert!(crate::arith::relative_error(&dq, &got) < 1e-5, "dequantized path");
            assert_eq!(values(re_plan.run(input)?), got, "NNEF round trip changes nothing");
        }
        Ok(())
    }
}
