//! Finds the matmuls worth quantizing: `EinSum`s that multiply an activation by a constant float weight,
//! in a form whose int8 rewrite keeps the output layout (so per-row and per-column scales broadcast).
//!
//! tract's declutter leaves Linear layers in several shapes: `amk,akn->amn`, `amk,kn->mn`, `mk,nk->mn`,
//! `mk,kn->amn`, and for attention's output projection `mhd,hdn->amn` (the heads and head dimension
//! contracted together). Each is brought to one canonical product: contraction axes merged into one,
//! size-1 activation axes the output drops removed first, size-1 output axes from neither operand added
//! back after.

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
    /// First contraction axis of the activation as stored.
    pub k_axis: usize,
    /// Number of consecutive contraction axes starting at `k_axis` (merged into one before the product).
    pub k_span: usize,
    /// Activation axes of size 1 that the output drops, in the coordinates after merging (ascending).
    pub dropped_axes: Vec<usize>,
    /// Output axes of size 1 that come from neither operand (added back after the product, ascending).
    pub added_axes: Vec<usize>,
    /// The canonical two-input einsum expression.
    pub expression: String,
    /// The weight shape with its contraction axes merged.
    pub weight_shape: Vec<usize>,
    /// Contraction axis in the merged weight.
    pub weight_k_axis: usize,
    /// Output-channel axis in the merged weight.
    pub weight_n_axis: usize,
    /// Channel axis of the canonical product's output, which is also the contraction axis of the
    /// canonical activation (so per-row scales broadcast onto the output).
    pub n_axis: usize,
    /// Contraction length.
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// Rank of the canonical activation and product.
    pub rank: usize,
    /// The float weight as stored.
    pub weight: Arc<Tensor>,
}

impl MatmulTarget {
    /// The weight as a `[k, n]` row-major matrix.
    pub fn weight_kn(&self) -> TractResult<Vec<f32>> {
        let merged = self.weight.clone().into_tensor().into_shape(&self.weight_shape)?;
        let view = merged.to_plain_array_view::<f32>()?;
        let mut out = vec![0f32; self.k * self.n];
        for (ix, value) in view.indexed_iter() {
            out[ix[self.weight_k_axis] * self.n + ix[self.weight_n_axis]] = *value;
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
        let Some((activation_slot, weight)) = constant_operand(model, node) else { continue };
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

/// For a two-operand product where exactly one of the first two inputs is a constant: the slot of the
/// other (the activation) and the constant (the weight).
pub fn constant_operand(model: &TypedModel, node: &TypedNode) -> Option<(usize, Arc<Tensor>)> {
    let konst = |slot: usize| model.outlet_fact(node.inputs[slot]).ok().and_then(|f| f.konst.clone());
    match (konst(0), konst(1)) {
        (None, Some(w)) => Some((0, w)),
        (Some(w), None) => Some((1, w)),
        _ => None,
    }
}

fn without(s: &str, remove: &[char]) -> String {
    s.chars().filter(|c| !remove.contains(c)).collect()
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
    let wshape = weight.shape().to_vec();
    // (activation position, weight position, repr) of contraction axes; reprs of the other kinds.
    let (mut k_axes, mut n_axes, mut dropped, mut added) = (vec![], vec![], vec![], vec![]);
    for axis in op.axes.iter_all_axes() {
        let (a, w, o) = (&axis.inputs[activation_slot], &axis.inputs[weight_slot], &axis.outputs[0]);
        if a.len() > 1 || w.len() > 1 || o.len() > 1 {
            return Err("an axis repeats inside one operand".into());
        }
        match (a.first(), w.first(), o.first()) {
            (Some(&ia), Some(&iw), None) if act_shape[ia] == 1 && wshape[iw] == 1 => dropped.push(axis.repr),
            (Some(&ka), Some(&kw), None) => k_axes.push((ka, kw, axis.repr)),
            (None, Some(&nw), Some(_)) => n_axes.push((nw, axis.repr)),
            (Some(_), None, Some(_)) => {}
            (Some(&ia), None, None) if act_shape[ia] == 1 => dropped.push(axis.repr),
            (Some(_), Some(&iw), Some(_)) if wshape[iw] == 1 => {}
            (Some(_), Some(_), Some(_)) => return Err("batched weights are not supported".into()),
            (None, Some(&iw), None) if wshape[iw] == 1 => {}
            (None, None, Some(_)) => added.push(axis.repr),
            _ => return Err("an axis is summed out of one operand alone".into()),
        }
    }
    if k_axes.is_empty() {
        return Err("no contraction axis".into());
    }
    k_axes.sort();
    let consecutive = k_axes.windows(2).all(|w| w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1);
    if !consecutive {
        return Err("the contraction axes are not adjacent and in the same order in both operands".into());
    }
    let [(weight_n_stored, n_repr)] = n_axes[..] else { return Err(format!("{} output-channel axes, expected 1", n_axes.len())) };
    let (k_axis, weight_k_stored, k_repr) = k_axes[0];
    let k_span = k_axes.len();
    let merged_away: Vec<char> = k_axes[1..].iter().map(|k| k.2).collect();

    let expr = op.axes.to_string();
    let (ins, out) = expr.split_once("->").ok_or("einsum expression")?;
    let operands: Vec<&str> = ins.split(',').collect();
    let act_s = without(&without(operands[activation_slot], &merged_away), &dropped);
    let weight_s = without(operands[weight_slot], &merged_away);
    let out_s = without(out, &added);
    // Canonical layout: the activation's axes sit where the output has them, channels replacing k.
    let layout_ok = act_s.len() == out_s.len()
        && act_s.chars().zip(out_s.chars()).all(|(a, o)| a == o || (a == k_repr && o == n_repr));
    if !layout_ok {
        return Err("the output does not keep the activation's axes in place with channels where it contracts".into());
    }
    let n_axis = act_s.find(k_repr).expect("k is in the activation");
    let added_axes: Vec<usize> = out.chars().enumerate().filter(|(_, c)| added.contains(c)).map(|(i, _)| i).collect();
    // Dropped axes in the activation's coordinates after merging.
    let merged_act = without(operands[activation_slot], &merged_away);
    let dropped_axes: Vec<usize> = merged_act.chars().enumerate().filter(|(_, c)| dropped.contains(c)).map(|(i, _)| i).collect();

    let k: usize = wshape[weight_k_stored..weight_k_stored + k_span].iter().product();
    let n = wshape[weight_n_stored];
    let mut weight_shape = wshape[..weight_k_stored].to_vec();
    weight_shape.push(k);
    weight_shape.extend_from_slice(&wshape[weight_k_stored + k_span..]);
    let weight_n_axis = if weight_n_stored > weight_k_stored { weight_n_stored - (k_span - 1) } else { weight_n_stored };
    if weight_shape.iter().product::<usize>() != k * n {
        return Err("the weight has more than two non-trivial axes".into());
    }
    Ok(MatmulTarget {
        node: node.id,
        name: node.name.clone(),
        activation: node.inputs[activation_slot],
        activation_slot,
        k_axis,
        k_span,
        dropped_axes,
        added_axes,
        expression: format!(
            "{}->{out_s}",
            if activation_slot == 0 { format!("{act_s},{weight_s}") } else { format!("{weight_s},{act_s}") }
        ),
        weight_shape,
        weight_k_axis: weight_k_stored,
        weight_n_axis,
        n_axis,
        k,
        n,
        rank: out_s.len(),
        weight,
    })
}
