//! Work-around for tract 0.23.5..0.23.9: declutter fuses the erf GELU chain into `GeluExact`, which has no
//! NNEF serializer. Before writing, each `GeluExact` is expanded back into
//! `(x * 0.5) * (1 + erf(x * (1/sqrt 2)))`, with the exact constants tract's fusion rule looks for, so the
//! runtime's own declutter fuses it again and runs the fast kernel.

use tract_core::internal::*;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::math::{add, erf, mul};
use tract_core::ops::nn::GeluExact;

fn is_gelu_exact(node: &TypedNode) -> bool {
    node.op_as::<ElementWiseOp>().map(|op| op.0.is::<GeluExact>()).unwrap_or(false)
}

/// Replaces every `GeluExact` node by its serializable expansion. Returns how many were replaced.
pub fn unfuse_gelu_exact(model: &mut TypedModel) -> TractResult<usize> {
    let targets: Vec<usize> = model.nodes().iter().filter(|n| is_gelu_exact(n)).map(|n| n.id).collect();
    for &id in &targets {
        let node = model.node(id).clone();
        let fact = model.outlet_fact(node.inputs[0])?.clone();
        let rank = fact.rank();
        let constant = |value: f32| -> TractResult<Tensor> {
            tensor0(value).cast_to_dt(fact.datum_type)?.into_owned().broadcast_into_rank(rank)
        };
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, node.inputs[0])?;
        let inv_sqrt2 = patch.add_const(format!("{}.inv_sqrt2", node.name), constant(2f32.sqrt().recip())?)?;
        let one = patch.add_const(format!("{}.one", node.name), constant(1.0)?)?;
        let half = patch.add_const(format!("{}.half", node.name), constant(0.5)?)?;
        let scaled = patch.wire_node(format!("{}.scaled", node.name), mul(), &[x, inv_sqrt2])?[0];
        let erfed = patch.wire_node(format!("{}.erf", node.name), erf(), &[scaled])?[0];
        let one_plus = patch.wire_node(format!("{}.one_plus", node.name), add(), &[erfed, one])?[0];
        let half_x = patch.wire_node(format!("{}.half_x", node.name), mul(), &[x, half])?[0];
        let out = patch.wire_node(format!("{}.gelu", node.name), mul(), &[half_x, one_plus])?[0];
        patch.shunt_outside(model, id.into(), out)?;
        patch.apply(model)?;
    }
    if !targets.is_empty() {
        *model = model.clone().into_compact()?;
    }
    Ok(targets.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::nn::gelu_exact::gelu_exact;

    #[test]
    fn expansion_serializes_and_refuses_to_the_same_values() -> TractResult<()> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 5]))?;
        let y = model.wire_node("act", gelu_exact(), &[x])?;
        model.select_output_outlets(&y)?;
        let input = tensor2(&[[-3f32, -1.0, 0.0, 0.5, 2.0], [4.0, -0.25, 1.5, -2.5, 0.1]]);
        let expected = model.clone().into_runnable()?.run(tvec!(input.clone().into()))?;

        assert_eq!(unfuse_gelu_exact(&mut model)?, 1);
        assert!(!model.nodes().iter().any(is_gelu_exact));
        let mut buffer = vec![];
        tract_nnef::nnef().write_to_tar(&model, &mut buffer)?;
        let reloaded = tract_nnef::nnef().model_for_read(&mut &buffer[..])?.into_decluttered()?;
        assert!(reloaded.nodes().iter().any(is_gelu_exact), "runtime declutter fuses GELU again");
        let got = reloaded.into_runnable()?.run(tvec!(input.into()))?;
        got[0].close_enough(&expected[0], true)?;
        Ok(())
    }
}
