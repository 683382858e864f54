//! Finds the matmuls worth quantizing: `EinSum`s that multiply an activation by a constant float weight,
//! in a form whose int8 rewrite keeps the output layout (so per-row and per-column scales broadcast).

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

/// A matmul `activation · weight` with a constant weight, and where its axes sit.
#[derive(Debug, Clone)]
pub struct MatmulTarget {
    /// The `EinSum` node.
    pub node: usize,
    /// Its name (stable across the rewrite; used in reports).
    pub name: String,
    /// The activation wire.
    pub activation: OutletId,
    /// Input slot (0 or 1) of the activation; the weight is in the other.
    pub activation_slot: usize,
    /// Contraction axis in the activation.
    pub k_axis: usize,
    /// Activation axes of size 1 that the output drops (removed before quantizing, ascending).
    pub dropped_axes: Vec<usize>,
    /// Output axes of size 1 that come from neither operand (added back after the int8 product,
    /// ascending).
    pub added_axes: Vec<usize>,
    /// The einsum expression without the dropped and added axes (two inputs).
    pub expression: String,
    /// Contraction axis in the weight.
    pub weight_k_axis: usize,
    /// Output-channel axis in the weight.
    pub weight_n_axis: usize,
    /// Output-channel axis in the int8 product's output (before the added axes), equal to the
    /// contraction axis of the activation once the dropped axes are gone (so per-row scales broadcast).
    pub n_axis: usize,
    /// Contraction length.
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// Rank of the int8 product's output (and of the activation once the dropped axes are gone).
    pub rank: usize,
    /// The float weight as stored.
    pub weight: Arc<Tensor>,
}

impl MatmulTarget {
    /// Multiply-accumulates per inference (rows × k × n).
    pub fn macs(&self, rows: usize) -> usize {
        rows * self.k * self.n
    }

    /// The weight as a `[k, n]` row-major matrix.
    pub fn weight_kn(&self) -> TractResult<Vec<f32>> {
        let view = self.weight.to_plain_array_view::<f32>()?;
        let mut out = vec![0f32; self.k * self.n];
        for (ix, value) in view.indexed_iter() {
            let (k, n) = (ix[self.weight_k_axis], ix[self.weight_n_axis]);
            out[k * self.n + n] = *value;
        }
        Ok(out)
    }
}

/// A matmul left in float because its shape is not one the rewrite handles.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsupported {
    /// Node name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Every constant-weight float `EinSum` of the model: the ones the int8 rewrite handles, and the others with
/// the reason they stay float. Activation-by-activation products (attention's QKᵀ and PV) are not listed.
pub fn find_targets(model: &TypedModel) -> TractResult<(Vec<MatmulTarget>, Vec<Unsupported>)> {
    let mut targets = vec![];
    let mut unsupported = vec![];
    for node in model.eval_order()?.into_iter().map(|id| model.node(id)) {
        let Some(op) = node.op_as::<EinSum>() else { continue };
        if op.q_params.is_some() || node.inputs.len() != 2 || op.operating_dt != f32::datum_type() {
            continue;
        }
        let konst = |slot: usize| model.outlet_fact(node.inputs[slot]).ok().and_then(|f| f.konst.clone());
        let (activation_slot, weight) = match (konst(0), konst(1)) {
            (None, Some(w)) => (0, w),
            (Some(w), None) => (1, w),
            _ => continue,
        };
        if weight.datum_type() != f32::datum_type() {
            continue;
        }
        match analyse(model, node, op, activation_slot, weight) {
            Ok(target) => targets.push(target),
            Err(reason) => unsupported.push(Unsupported { name: node.name.clone(), reason: format!("{reason} (einsum {})", op.axes) }),
        }
    }
    Ok((targets, unsupported))
}

fn analyse(
    model: &TypedModel,
    node: &TypedNode,
    op: &EinSum,
    activation_slot: usize,
    weight: Arc<Tensor>,
) -> Result<MatmulTarget, String> {
    let weight_slot = 1 - activation_slot;
    let act_fact = model.outlet_fact(node.inputs[activation_slot]).map_err(|e| e.to_string())?;
    let act_shape = act_fact.shape.as_concrete().ok_or("the activation has a symbolic shape")?.to_vec();
    let (mut k_axes, mut n_axes, mut dropped, mut added) = (vec![], vec![], vec![], vec![]);
    // Activation axis -> output axis, for axes the output keeps.
    let mut kept: Vec<(usize, usize)> = vec![];
    for axis in op.axes.iter_all_axes() {
        let (a, w, o) = (&axis.inputs[activation_slot], &axis.inputs[weight_slot], &axis.outputs[0]);
        if a.len() > 1 || w.len() > 1 || o.len() > 1 {
            return Err("an axis repeats inside one operand".into());
        }
        match (a.first(), w.first(), o.first()) {
            (Some(&ia), Some(&iw), None) if act_shape[ia] == 1 && weight.shape()[iw] == 1 => dropped.push(ia),
            (Some(&ka), Some(&kw), None) => k_axes.push((ka, kw)),
            (None, Some(&nw), Some(&no)) => n_axes.push((nw, no)),
            (Some(&ia), None, Some(&io)) => kept.push((ia, io)),
            (Some(&ia), None, None) if act_shape[ia] == 1 => dropped.push(ia),
            (Some(&ia), Some(&iw), Some(&io)) if weight.shape()[iw] == 1 => kept.push((ia, io)),
            (Some(_), Some(_), Some(_)) => return Err("batched weights are not supported".into()),
            (None, Some(&iw), None) if weight.shape()[iw] == 1 => {}
            (None, None, Some(&io)) => added.push(io),
            _ => return Err("an axis is summed out of one operand alone".into()),
        }
    }
    let [(k_axis, weight_k_axis)] = k_axes[..] else { return Err(format!("{} contraction axes, expected 1", k_axes.len())) };
    let [(weight_n_axis, n_axis)] = n_axes[..] else { return Err(format!("{} output-channel axes, expected 1", n_axes.len())) };
    dropped.sort();
    added.sort();
    let reduced = |axis: usize| axis - dropped.iter().filter(|d| **d < axis).count();
    let reduced_out = |axis: usize| axis - added.iter().filter(|d| **d < axis).count();
    if reduced(k_axis) != reduced_out(n_axis) || kept.iter().any(|(ia, io)| reduced(*ia) != reduced_out(*io)) {
        return Err("the output does not keep the activation's axes in place with channels where it contracts".into());
    }
    let rank = op.axes.rank(InOut::Out(0)) - added.len();
    if act_shape.len() - dropped.len() != rank {
        return Err("the output rank does not match the activation's".into());
    }
    let expr = op.axes.to_string();
    let (ins, out) = expr.split_once("->").ok_or("einsum expression")?;
    let mut operands: Vec<String> = ins.split(',').map(str::to_string).collect();
    operands[activation_slot] =
        operands[activation_slot].chars().enumerate().filter(|(i, _)| !dropped.contains(i)).map(|(_, c)| c).collect();
    let out: String = out.chars().enumerate().filter(|(i, _)| !added.contains(i)).map(|(_, c)| c).collect();
    let expression = format!("{}->{out}", operands.join(","));
    let n_axis = reduced_out(n_axis);
    let k = weight.shape()[weight_k_axis];
    let n = weight.shape()[weight_n_axis];
    if weight.shape().iter().product::<usize>() != k * n {
        return Err("the weight has more than two non-trivial axes".into());
    }
    Ok(MatmulTarget {
        node: node.id,
        name: node.name.clone(),
        activation: node.inputs[activation_slot],
        activation_slot,
        k_axis,
        dropped_axes: dropped,
        added_axes: added,
        expression,
        weight_k_axis,
        weight_n_axis,
        n_axis,
        k,
        n,
        rank,
        weight,
    })
}
