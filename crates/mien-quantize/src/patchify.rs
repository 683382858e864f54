//! A vision transformer's patch embedding is a convolution whose kernel equals its stride: every output
//! position sees one disjoint patch. That is a plain matmul of the flattened patches by the flattened
//! kernel, so rewriting it as one lets the int8 machinery (calibration, smoothing, the error threshold)
//! treat it like every other linear layer. Without it the plan keeps the kernel in f32: 0.7 % of a
//! ViT-B/16 plan, 2.6 % of its int8 plan.
//!
//! ```text
//! x [N, C, H, W] → [N, gh, kh, gw, kw]·C → [N, gh, gw, C·kh·kw] → [N, P, K] · W[K, O] + b → [N, O, gh, gw]
//! ```

use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::add;
use tract_core::ops::nn::DataFormat;

/// The parts of a convolution the rewrite needs, when it is a patchifying one.
struct Patchify {
    channels: usize,
    outputs: usize,
    kernel_hw: (usize, usize),
    grid_hw: (usize, usize),
    batch: usize,
    /// `[C·kh·kw, O]`, rows in `(c, i, j)` order.
    weight: Tensor,
    /// `[O]`, or None for no bias.
    bias: Option<Vec<f32>>,
}

fn analyse(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Patchify>> {
    let spec = &conv.pool_spec;
    if conv.q_params.is_some()
        || conv.group != 1
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.data_format != DataFormat::NCHW
        || spec.kernel_shape.len() != 2
        || node.inputs.len() != 3
    {
        return Ok(None);
    }
    let zero_padding = match &spec.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(before, after) => before.iter().chain(after).all(|p| *p == 0),
        _ => false,
    };
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    let strides = spec.strides.clone().unwrap_or_else(|| tvec!(1, 1));
    let dilations = spec.dilations.clone().unwrap_or_else(|| tvec!(1, 1));
    if !zero_padding || strides[..] != [kh, kw] || dilations.iter().any(|d| *d != 1) {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let Some(shape) = input.shape.as_concrete() else { return Ok(None) };
    if input.datum_type != f32::datum_type() || shape.len() != 4 || shape[2] % kh != 0 || shape[3] % kw != 0 {
        return Ok(None);
    }
    let Some(kernel) = model.outlet_fact(node.inputs[1])?.konst.clone() else { return Ok(None) };
    let (o, c) = (spec.output_channels, spec.input_channels);
    if kernel.datum_type() != f32::datum_type() || kernel.shape() != [o, c, kh, kw] || shape[1] != c {
        return Ok(None);
    }
    let bias = match model.outlet_fact(node.inputs[2])?.konst.clone() {
        Some(b) if b.datum_type() == f32::datum_type() && b.len() == o => Some(floats(&b)?),
        Some(b) if b.datum_type() == f32::datum_type() && b.len() == 1 => Some(vec![floats(&b)?[0]; o]),
        _ => return Ok(None),
    };
    let k = c * kh * kw;
    let src = floats(&kernel)?;
    let mut kn = vec![0f32; k * o];
    for (oc, filter) in src.chunks_exact(k).enumerate() {
        for (row, v) in filter.iter().enumerate() {
            kn[row * o + oc] = *v;
        }
    }
    let bias = bias.filter(|b| b.iter().any(|v| *v != 0.0));
    Ok(Some(Patchify {
        channels: c,
        outputs: o,
        kernel_hw: (kh, kw),
        grid_hw: (shape[2] / kh, shape[3] / kw),
        batch: shape[0],
        weight: Tensor::from_shape(&[k, o], &kn)?,
        bias,
    }))
}

/// The tensor's values in row-major order.
fn floats(t: &Tensor) -> TractResult<Vec<f32>> {
    Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect())
}

fn dims(values: &[usize]) -> TVec<TDim> {
    values.iter().map(|v| v.to_dim()).collect()
}

/// Rewrites every f32 convolution whose kernel equals its stride (no padding, no dilation, one group,
/// constant kernel, input size a multiple of the kernel) into reshapes and one `amk,kn->amn` matmul with
/// the same output. Returns the names of the convolutions rewritten (the matmuls keep them).
pub fn patchify_convs_to_matmuls(model: &mut TypedModel) -> TractResult<Vec<String>> {
    let mut rewritten = vec![];
    for id in model.eval_order()? {
        let node = model.node(id).clone();
        let Some(conv) = node.op_as::<Conv>() else { continue };
        let Some(p) = analyse(model, &node, conv)? else { continue };
        let name = node.name.clone();
        let (kh, kw) = p.kernel_hw;
        let (gh, gw) = p.grid_hw;
        let k = p.channels * kh * kw;
        let mut patch = TypedModelPatch::new(format!("patchify {name}"));
        let mut x = patch.tap_model(model, node.inputs[0])?;
        let wire = |patch: &mut TypedModelPatch, suffix: &str, op: AxisOp, x: OutletId| -> TractResult<OutletId> {
            Ok(patch.wire_node(format!("{name}.patchify.{suffix}"), op, &[x])?[0])
        };
        // [N, C, H, W] -> [N, C, gh, kh, gw, kw] -> [N, gh, gw, C, kh, kw] -> [N, gh·gw, C·kh·kw]
        x = wire(&mut patch, "split_w", AxisOp::Reshape(3, dims(&[gw * kw]), dims(&[gw, kw])), x)?;
        x = wire(&mut patch, "split_h", AxisOp::Reshape(2, dims(&[gh * kh]), dims(&[gh, kh])), x)?;
        x = wire(&mut patch, "grid_h_first", AxisOp::Move(2, 1), x)?;
        x = wire(&mut patch, "grid_w_second", AxisOp::Move(4, 2), x)?;
        x = wire(&mut patch, "flatten_patch", AxisOp::Reshape(3, dims(&[p.channels, kh, kw]), dims(&[k])), x)?;
        x = wire(&mut patch, "flatten_grid", AxisOp::Reshape(1, dims(&[gh, gw]), dims(&[gh * gw])), x)?;
        let w = patch.add_const(format!("{name}.weight"), p.weight)?;
        let mut y = patch.wire_node(&name, EinSum::new("amk,kn->amn".parse()?, f32::datum_type()), &[x, w])?[0];
        if let Some(bias) = &p.bias {
            let b = patch.add_const(format!("{name}.bias"), Tensor::from_shape(&[1, 1, p.outputs], bias)?)?;
            y = patch.wire_node(format!("{name}.add_bias"), add(), &[y, b])?[0];
        }
        // [N, P, O] -> [N, gh, gw, O] -> [N, O, gh, gw], the convolution's layout.
        y = wire(&mut patch, "unflatten_grid", AxisOp::Reshape(1, dims(&[gh * gw]), dims(&[gh, gw])), y)?;
        y = wire(&mut patch, "channels_first", AxisOp::Move(3, 1), y)?;
        debug_assert_eq!(patch.outlet_fact(y)?.shape.as_concrete(), Some(&[p.batch, p.outputs, gh, gw][..]));
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
        rewritten.push(name);
    }
    if !rewritten.is_empty() {
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::cnn::PoolSpec;

    fn wave(i: usize, f: f32) -> f32 {
        (i as f32 * f).sin() * 0.5
    }

    /// A ViT patch embedding: 16x16 kernel, stride 16, 3 -> 8 channels, on a 32x48 image.
    fn patch_embedding(padding: PaddingSpec, strides: usize) -> TractResult<TypedModel> {
        let kernel: Vec<f32> = (0..8 * 3 * 16 * 16).map(|i| wave(i, 0.37)).collect();
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 3, 32, 48]))?;
        let k = model.add_const("kernel", Tensor::from_shape(&[8, 3, 16, 16], &kernel)?)?;
        let bias: Vec<f32> = (0..8).map(|i| i as f32 * 0.1 - 0.3).collect();
        let b = model.add_const("bias", Tensor::from_shape(&[8], &bias)?)?;
        let pool = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(16, 16),
            padding,
            dilations: None,
            strides: Some(tvec!(strides, strides)),
            input_channels: 3,
            output_channels: 8,
        };
        let conv = Conv { pool_spec: pool, kernel_fmt: KernelFormat::OIHW, group: 1, q_params: None };
        let y = model.wire_node("patch_embedding", conv, &[x, k, b])?;
        model.select_output_outlets(&y)?;
        Ok(model)
    }

    fn run(model: &TypedModel) -> TractResult<Tensor> {
        let image: Vec<f32> = (0..3 * 32 * 48).map(|i| wave(i, 0.11) * 4.0).collect();
        let input = Tensor::from_shape(&[1, 3, 32, 48], &image)?;
        Ok(model.clone().into_optimized()?.into_runnable()?.run(tvec!(input.into_tvalue()))?.remove(0).into_tensor())
    }

    #[test]
    fn patchifying_conv_becomes_one_matmul_with_the_same_output() -> TractResult<()> {
        for padding in [PaddingSpec::Valid, PaddingSpec::Explicit(tvec!(0, 0), tvec!(0, 0))] {
            let conv = patch_embedding(padding, 16)?;
            let mut matmul = conv.clone();
            assert_eq!(patchify_convs_to_matmuls(&mut matmul)?, vec!["patch_embedding".to_string()]);
            assert!(!matmul.nodes().iter().any(|n| n.op_is::<Conv>()));
            let (targets, unsupported) = crate::find_targets(&matmul)?;
            assert_eq!((targets.len(), unsupported.len()), (1, 0), "the int8 rewrite can take it");
            assert_eq!((targets[0].name.as_str(), targets[0].k, targets[0].n), ("patch_embedding", 768, 8));
            let (a, b) = (run(&conv)?, run(&matmul)?);
            assert_eq!(a.shape(), [1, 8, 2, 3]);
            assert_eq!(b.shape(), a.shape());
            let (a, b) = (floats(&a)?, floats(&b)?);
            let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
            assert!(diff <= 1e-5 * scale, "max diff {diff} (outputs up to {scale})");
        }
        Ok(())
    }

    #[test]
    fn overlapping_or_padded_convs_stay_convs() -> TractResult<()> {
        for (padding, strides) in [(PaddingSpec::Valid, 8), (PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)), 16)] {
            let mut model = patch_embedding(padding, strides)?;
            assert!(patchify_convs_to_matmuls(&mut model)?.is_empty());
            assert!(model.nodes().iter().any(|n| n.op_is::<Conv>()));
        }
        Ok(())
    }
}
