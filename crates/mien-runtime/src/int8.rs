//! How the int8 matmuls of a quantized plan run on this CPU.
//!
//! tract's integer kernels pay on ARM (SDOT on Cortex-A76/A78, SMLAL on A72, NEON on armv7) and on x86
//! with VNNI. On x86 without VNNI its AVX2 i8 kernel widens 8 lanes at a time and loses to float by about
//! 4x, so there the plan's i8 weights are turned back into float at load: the activations are still
//! quantized exactly as the plan says (same rounding, same scales), only the product runs in f32, whose
//! sums of i8 × i8 products are exact up to 2^24 and nearly exact beyond.

use tract_core::internal::*;
use tract_core::ops::cast::{cast, Cast};
use tract_core::ops::einsum::EinSum;

/// The caller's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Int8Path {
    /// Integer kernels where they pay, dequantized weights elsewhere (`MIEN_INT8_PATH` overrides).
    #[default]
    Auto,
    /// Always tract's integer kernels.
    Integer,
    /// Always float kernels on weights dequantized at load.
    DequantizedWeights,
}

impl std::str::FromStr for Int8Path {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Int8Path::Auto),
            "integer" => Ok(Int8Path::Integer),
            "dequantized" | "float" => Ok(Int8Path::DequantizedWeights),
            other => Err(format!("expected auto, integer or dequantized, found {other:?}")),
        }
    }
}

impl std::fmt::Display for Int8Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Int8Path::Auto => "auto",
            Int8Path::Integer => "integer",
            Int8Path::DequantizedWeights => "dequantized",
        })
    }
}

/// True when tract's integer matmul kernels beat its float ones on this CPU.
pub fn integer_kernels_pay() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// Resolves `Auto` (and the `MIEN_INT8_PATH` environment override) to a concrete path, with the reason.
pub fn resolve(choice: Int8Path) -> (Int8Path, &'static str) {
    let choice = match (choice, std::env::var("MIEN_INT8_PATH").ok().and_then(|v| v.parse().ok())) {
        (Int8Path::Auto, Some(env)) if env != Int8Path::Auto => return (env, "MIEN_INT8_PATH"),
        (choice, _) => choice,
    };
    match choice {
        Int8Path::Auto if integer_kernels_pay() => (Int8Path::Integer, "integer kernels pay on this CPU"),
        Int8Path::Auto => (Int8Path::DequantizedWeights, "x86 without VNNI: tract's i8 kernels lose to float here"),
        other => (other, "requested"),
    }
}

/// True when the model holds at least one quantized matmul.
pub fn has_int8_matmuls(model: &TypedModel) -> bool {
    model.nodes().iter().any(|n| n.op_as::<EinSum>().map(|op| op.q_params.is_some()).unwrap_or(false))
}

/// Rewrites each `i8 × const i8 → i32` EinSum followed by a cast to f32 into an f32 EinSum of the cast
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
        let konst = |slot: usize| model.outlet_fact(node.inputs[slot]).ok().and_then(|f| f.konst.clone());
        let (act_slot, weight) = match (konst(0), konst(1)) {
            (None, Some(w)) => (0, w),
            (Some(w), None) => (1, w),
            _ => continue,
        };
        let expr = op.axes.to_string();
        let (ins, out) = expr.split_once("->").context("einsum expression")?;
        let two: Vec<&str> = ins.split(',').take(2).collect();
        let axes: AxesMapping = format!("{},{}->{out}", two[0], two[1]).parse()?;

        let mut patch = TypedModelPatch::new(format!("dequantize {}", node.name));
        let act = patch.tap_model(model, node.inputs[act_slot])?;
        let act = patch.wire_node(format!("{}.act_f32", node.name), cast(f32::datum_type()), &[act])?[0];
        let w = patch.add_const(format!("{}.weight_f32", node.name), weight.cast_to::<f32>()?.into_owned())?;
        let inputs = if act_slot == 0 { [act, w] } else { [w, act] };
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
