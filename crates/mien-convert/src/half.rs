//! The f16 step of the offline path: tract's float translator, with the plan's interface kept in f32.
//!
//! tract's `f32_to_f16` retypes the graph's source and output too, so a caller would have to hand it f16
//! pixels. Here the source stays f32 and is cast to f16 at the graph's entry, and the logits are cast
//! back to f32 at its exit: preprocessing, the manifest's input spec and every consumer of the logits
//! are the same for f16 and f32 plans. Weights are stored as f16 (half the plan size).
//!
//! Sums over a whole axis (the mean of LayerNorm, pooling) stay in f32: a transformer's residual stream
//! carries channels in the hundreds, and 384 or 768 of them summed in f16 lose most of their precision
//! or overflow (f16 tops out at 65504).

use tract_core::floats::FloatPrecisionTranslator;
use tract_core::internal::translator::Translate;
use tract_core::internal::*;
use tract_core::ops::cast::cast;
use tract_core::ops::nn::Reduce;
use tract_core::ops::source::TypedSource;

/// Op kinds left in f32, for reports.
pub const KEPT_IN_F32: &[&str] = &["Reduce (sums over an axis: LayerNorm means, pooling)"];

fn stays_f32(node: &TypedNode) -> bool {
    node.op_is::<Reduce>()
}

/// Rewrites `model` to compute in f16, keeping an f32 input and f32 outputs. Returns the number of
/// nodes left in f32 (see [`KEPT_IN_F32`]).
pub fn to_f16_keeping_f32_io(model: &mut TypedModel) -> TractResult<usize> {
    let kept = model.nodes().iter().filter(|n| stays_f32(n)).count();
    let translator = FloatPrecisionTranslator::with_filter(f32::datum_type(), f16::datum_type(), |n| !stays_f32(n));
    let mut half = translator.translate_model(model)?;

    for input in half.input_outlets()?.to_vec() {
        let fact = half.outlet_fact(input)?.clone();
        if fact.datum_type != f16::datum_type() {
            continue;
        }
        let f32_fact = f32::fact(fact.shape.clone());
        let consumers = half.outlet_successors(input).to_vec();
        let name = half.node(input.node).name.clone();
        half.node_mut(input.node).op = Box::new(TypedSource::new(f32_fact.clone()));
        half.set_outlet_fact(input, f32_fact)?;
        let to_half = half.wire_node(format!("{name}.to_f16"), cast(f16::datum_type()), &[input])?[0];
        for consumer in consumers {
            half.add_edge(to_half, consumer)?;
        }
    }

    let mut outputs = vec![];
    for output in half.output_outlets()?.to_vec() {
        if half.outlet_fact(output)?.datum_type != f16::datum_type() {
            outputs.push(output);
            continue;
        }
        // The cast takes the output's name: the manifest and the runtime find the logits by it.
        let name = half.node(output.node).name.clone();
        half.node_mut(output.node).name = format!("{name}.f16");
        let back = half.wire_node(&name, cast(f32::datum_type()), &[output])?[0];
        if let Some(label) = half.outlet_label(output).map(|s| s.to_string()) {
            half.set_outlet_label(back, label)?;
        }
        outputs.push(back);
    }
    half.select_output_outlets(&outputs)?;
    // The translator casts each f32 constant at run time; declutter folds those casts, so weights are
    // stored in f16.
    *model = half.into_decluttered()?;
    Ok(kept)
}

/// For int8 plans: stores and runs the matmuls that stayed in float (attention's products, layers over
/// the error threshold) in f16, except those named in `keep_f32`. On cores with FP16 arithmetic (Pi 5,
/// Jetson Orin) tract runs them on its f16 kernels, half the arithmetic of f32; elsewhere the runtime
/// widens them back to f32 at load. Their inputs are cast to f16 and outputs back to f32 around each
/// product, so everything else (softmax, LayerNorm, residuals) stays f32. Returns how many.
pub fn float_matmuls_to_f16(model: &mut TypedModel, keep_f32: std::collections::HashSet<String>) -> TractResult<usize> {
    use tract_core::ops::einsum::EinSum;
    // tract's float translator with a node filter keeps the unselected ops in f32 but passes values
    // between them in f16: here only the selected products change, everything else keeps f32 values.
    let mut count = 0;
    for id in model.eval_order()? {
        let node = model.node(id).clone();
        let Some(op) = node.op_as::<EinSum>() else { continue };
        if op.q_params.is_some() || op.operating_dt != f32::datum_type() || keep_f32.contains(&node.name) {
            continue;
        }
        if node.inputs.iter().any(|i| model.outlet_fact(*i).is_ok_and(|f| f.datum_type != f32::datum_type())) {
            continue;
        }
        let mut patch = TypedModelPatch::new(format!("f16 {}", node.name));
        let mut inputs = tvec!();
        for (slot, input) in node.inputs.iter().enumerate() {
            let fact = model.outlet_fact(*input)?;
            inputs.push(match &fact.konst {
                Some(k) => patch.add_const(format!("{}.f16_{slot}", node.name), k.cast_to::<f16>()?.into_owned())?,
                None => {
                    let x = patch.tap_model(model, *input)?;
                    patch.wire_node(format!("{}.to_f16_{slot}", node.name), cast(f16::datum_type()), &[x])?[0]
                }
            });
        }
        let product =
            patch.wire_node(format!("{}.f16", node.name), EinSum::new(op.axes.clone(), f16::datum_type()), &inputs)?[0];
        let back = patch.wire_node(&node.name, cast(f32::datum_type()), &[product])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), back)?;
        // The cast takes the product's name (reports and the runtime's kernel listing name layers by it).
        patch.obliterate(id)?;
        patch.apply(model)?;
        count += 1;
    }
    if count > 0 {
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::konst::Const;
    use tract_core::ops::math::add;
    use tract_core::ops::nn::Reducer;

    fn values(t: &TValue) -> TractResult<Vec<f32>> {
        Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect())
    }

    /// A LayerNorm-like mean over the last axis plus a matmul-free affine step: enough to see where the
    /// casts go.
    fn small_model() -> TractResult<TypedModel> {
        let mut model = TypedModel::default();
        let x = model.add_source("input", f32::fact([1, 4, 6]))?;
        let w = model.add_const("w", Tensor::from_shape(&[1, 1, 6], &[0.5f32, -1.0, 2.0, 0.25, 1.5, -0.75])?)?;
        let y = model.wire_node("affine", tract_core::ops::math::mul(), &[x, w])?[0];
        let s = model.wire_node("mean", Reduce::new(tvec!(2), Reducer::Sum), &[y])?[0];
        let z = model.wire_node("logits", add(), &[y, s])?;
        model.select_output_outlets(&z)?;
        Ok(model)
    }

    #[test]
    fn keeps_f32_interface_and_stores_f16_weights() -> TractResult<()> {
        let mut model = small_model()?;
        let input: Vec<f32> = (0..24).map(|i| (i as f32 - 11.0) * 0.37).collect();
        let input = Tensor::from_shape(&[1, 4, 6], &input)?;
        let expected = model.clone().into_runnable()?.run(tvec!(input.clone().into()))?;

        assert_eq!(to_f16_keeping_f32_io(&mut model)?, 1);
        let source = model.input_outlets()?[0];
        assert_eq!(model.outlet_fact(source)?.datum_type, f32::datum_type());
        let output = model.output_outlets()?[0];
        assert_eq!(model.outlet_fact(output)?.datum_type, f32::datum_type());
        assert_eq!(model.node(output.node).name, "logits");
        let consts: Vec<DatumType> =
            model.nodes().iter().filter_map(|n| n.op_as::<Const>()).map(|c| c.val().datum_type()).collect();
        assert!(consts.contains(&f16::datum_type()), "weights stored as f16: {consts:?}");
        assert!(!consts.contains(&f32::datum_type()), "no f32 weights left: {consts:?}");
        let reduce = model.nodes().iter().find(|n| n.op_is::<Reduce>()).expect("the sum survives");
        assert_eq!(model.outlet_fact(reduce.id.into())?.datum_type, f32::datum_type());

        let got = model.into_runnable()?.run(tvec!(input.into()))?;
        let (got, expected) = (values(&got[0])?, values(&expected[0])?);
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 5e-3 * e.abs().max(1.0), "{g} vs {e}");
        }
        assert!(got.iter().zip(&expected).any(|(g, e)| g != e), "f16 rounding is visible, so the graph did change");
        Ok(())
    }

    #[test]
    fn survives_nnef_round_trip() -> TractResult<()> {
        let mut model = small_model()?;
        to_f16_keeping_f32_io(&mut model)?;
        let mut buffer = vec![];
        tract_nnef::nnef().write_to_tar(&model, &mut buffer)?;
        let reloaded = tract_nnef::nnef().model_for_read(&mut &buffer[..])?.into_decluttered()?;
        let source = reloaded.input_outlets()?[0];
        assert_eq!(reloaded.outlet_fact(source)?.datum_type, f32::datum_type());
        let input = Tensor::from_shape(&[1, 4, 6], &[1f32; 24])?;
        let a = model.into_runnable()?.run(tvec!(input.clone().into()))?;
        let b = reloaded.into_runnable()?.run(tvec!(input.into()))?;
        assert_eq!(values(&a[0])?, values(&b[0])?);
        Ok(())
    }

    #[test]
    fn float_matmuls_go_f16_except_the_kept_ones_and_the_interface_stays_f32() -> TractResult<()> {
        use tract_core::ops::einsum::EinSum;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 4]))?;
        let w: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.7).collect();
        let w = model.add_const("w", Tensor::from_shape(&[4, 4], &w)?)?;
        let y = model.wire_node("attention", EinSum::new("mk,kn->mn".parse()?, f32::datum_type()), &[x, w])?[0];
        let z = model.wire_node("head", EinSum::new("mk,kn->mn".parse()?, f32::datum_type()), &[y, w])?[0];
        // An f32 op reading the source directly must see the exact pixels, not an f16 round trip.
        let two = model.add_const("two", tensor2(&[[2f32]]))?;
        let doubled = model.wire_node("doubled", tract_core::ops::math::mul(), &[x, two])?[0];
        model.select_output_outlets(&[z, doubled])?;
        let pixels = [1f32, -2.0, 0.1, 3.0, 0.25, 0.0, -1.0, 2.0];
        let input = tvec!(Tensor::from_shape(&[2, 4], &pixels)?.into_tvalue());
        let expected = model.clone().into_runnable()?.run(input.clone())?;

        let mut mixed = model.clone();
        let kept: std::collections::HashSet<String> = ["head".to_string()].into();
        assert_eq!(float_matmuls_to_f16(&mut mixed, kept)?, 1);
        let einsum_dt = |name: &str| mixed.node_by_name(name).unwrap().op_as::<EinSum>().unwrap().operating_dt;
        assert_eq!(einsum_dt("attention.f16"), f16::datum_type());
        assert_eq!(einsum_dt("head"), f32::datum_type());
        assert_eq!(mixed.input_fact(0)?.datum_type, f32::datum_type());
        assert_eq!(mixed.output_fact(0)?.datum_type, f32::datum_type());
        let got = mixed.into_runnable()?.run(input)?;
        assert_eq!(values(&got[1])?, pixels.iter().map(|p| p * 2.0).collect::<Vec<f32>>());
        assert_eq!(values(&got[1])?, pixels.iter().map(|p| p * 2.0).collect::<Vec<f32>>());
        let (got, expected) = (values(&got[0])?, values(&expected[0])?);
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-2 * e.abs().max(1.0), "{got:?} vs {expected:?}");
        }
        Ok(())
    }
}
