//! How an f16 plan runs on this CPU.
//!
//! f16 pays only where the cores do FP16 arithmetic (Armv8.2 FEAT_FP16: Cortex-A76/A78, so Pi 5 and
//! Jetson Orin), where tract runs its f16 NEON kernels on half the memory traffic. Elsewhere (Pi 4's
//! A72, armv7, x86) tract falls back to slow generic f16 code, so the plan is widened to f32 at load:
//! the weights keep their f16-rounded values, only the arithmetic runs in f32.

use tract_core::floats::FloatPrecisionTranslator;
use tract_core::internal::translator::Translate;
use tract_core::internal::*;

/// The caller's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HalfPath {
    /// f16 where the CPU has FP16 arithmetic, f32 elsewhere (`MIEN_F16_PATH` overrides).
    #[default]
    Auto,
    /// Always compute in f16.
    F16,
    /// Always widen to f32 at load.
    F32,
}

impl std::str::FromStr for HalfPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(HalfPath::Auto),
            "f16" => Ok(HalfPath::F16),
            "f32" => Ok(HalfPath::F32),
            other => Err(format!("expected auto, f16 or f32, found {other:?}")),
        }
    }
}

impl std::fmt::Display for HalfPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HalfPath::Auto => "auto",
            HalfPath::F16 => "f16",
            HalfPath::F32 => "f32",
        })
    }
}

/// True when tract will run f16 matmuls on its FP16 NEON kernels here: the CPU does FP16 arithmetic
/// as tract sees it. tract reads `asimdhp` from /proc/cpuinfo, which under qemu-user describes the host,
/// so emulated A76 runs need `TRACT_CPU_ISA=+fp16` (as CI sets); on a real board both views agree.
pub fn fp16_arithmetic() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        tract_linalg::isa::native().has(tract_linalg::isa::Isa::Aarch64Fp16)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

/// Resolves `Auto` (and the `MIEN_F16_PATH` environment override) to a concrete path, with the reason.
pub fn resolve(choice: HalfPath) -> (HalfPath, &'static str) {
    if let Some(env) = crate::env_override(choice, HalfPath::Auto, "MIEN_F16_PATH") {
        return (env, "MIEN_F16_PATH");
    }
    match choice {
        HalfPath::Auto if fp16_arithmetic() => (HalfPath::F16, "this CPU has FP16 arithmetic"),
        HalfPath::Auto => (
            HalfPath::F32,
            "no FP16 arithmetic on this CPU: tract's f16 fallback is slower than f32",
        ),
        other => (other, "requested"),
    }
}

/// True when the graph computes anything in f16.
pub fn has_f16(model: &TypedModel) -> bool {
    model.nodes().iter().any(|n| {
        n.outputs
            .iter()
            .any(|o| o.fact.datum_type == f16::datum_type())
    })
}

/// Rewrites every f16 computation and constant of `model` to f32 (the f16 → f32 casts at the plan's
/// interface become no-ops that tract's declutter removes).
pub fn widen_to_f32(model: &mut TypedModel) -> TractResult<()> {
    *model = FloatPrecisionTranslator::new(f16::datum_type(), f32::datum_type())
        .translate_model(model)?;
    Ok(())
}

/// A cast between f32 and f16 over a whole tensor with `mien_kernels::f16_convert` (eight NEON lanes at a
/// time on aarch64), in place of tract's cast, which converts one element at a time through a
/// per-element feature check. Same IEEE round-to-nearest-even values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SliceCast {
    /// f16 or f32.
    pub to: DatumType,
}

impl Op for SliceCast {
    fn name(&self) -> StaticName {
        "SliceCast(mien)".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("to {:?}", self.to)])
    }

    op_as_typed_op!();
}

impl EvalOp for SliceCast {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let source = input.try_as_plain_ram()?;
        let output = if self.to == f16::datum_type() {
            let mut out = Tensor::zero::<f16>(input.shape())?;
            mien_kernels::dispatch::f32_to_f16(
                source.as_slice::<f32>()?,
                out.try_as_plain_ram_mut()?.as_slice_mut::<f16>()?,
            );
            out
        } else {
            let mut out = Tensor::zero::<f32>(input.shape())?;
            mien_kernels::dispatch::f16_to_f32(
                source.as_slice::<f16>()?,
                out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
            );
            out
        };
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for SliceCast {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.to.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Replaces, in an optimized graph, each run-time cast between f32 and f16 with a [`SliceCast`]; returns
/// how many.
pub fn vectorize_half_casts(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(cast) = node.op_as::<tract_core::ops::cast::Cast>() else {
            continue;
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let pair = (input.datum_type, cast.to);
        if input.konst.is_some()
            || !(pair == (f32::datum_type(), f16::datum_type())
                || pair == (f16::datum_type(), f32::datum_type()))
        {
            continue;
        }
        let to = cast.to;
        model.node_mut(id).op = Box::new(SliceCast { to });
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_keeps_values_and_drops_f16() -> TractResult<()> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([3]))?;
        let half = model.wire_node(
            "x.f16",
            tract_core::ops::cast::cast(f16::datum_type()),
            &[x],
        )?[0];
        let w = model.add_const(
            "w",
            tensor1(&[f16::from_f32(0.5), f16::from_f32(-2.0), f16::from_f32(0.1)]),
        )?;
        let y = model.wire_node("y", tract_core::ops::math::mul(), &[half, w])?[0];
        let out = model.wire_node(
            "logits",
            tract_core::ops::cast::cast(f32::datum_type()),
            &[y],
        )?;
        model.select_output_outlets(&out)?;
        assert!(has_f16(&model));

        widen_to_f32(&mut model)?;
        let model = model.into_decluttered()?;
        assert!(!has_f16(&model));
        let got = model
            .into_runnable()?
            .run(tvec!(tensor1(&[2f32, 3.0, 10.0]).into()))?;
        let got: Vec<f32> = got[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        // The weights keep their f16-rounded values (0.1 is 0.0999756 in f16).
        assert_eq!(got, vec![1.0, -6.0, 10.0 * f16::from_f32(0.1).to_f32()]);
        Ok(())
    }

    #[test]
    fn parses_and_prints() {
        for path in [HalfPath::Auto, HalfPath::F16, HalfPath::F32] {
            assert_eq!(path.to_string().parse::<HalfPath>(), Ok(path));
        }
        assert!("half".parse::<HalfPath>().is_err());
    }

    #[test]
    fn slice_casts_give_tracts_values() -> TractResult<()> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 9]))?;
        let half = model.wire_node(
            "x.f16",
            tract_core::ops::cast::cast(f16::datum_type()),
            &[x],
        )?[0];
        let back = model.wire_node(
            "x.f32",
            tract_core::ops::cast::cast(f32::datum_type()),
            &[half],
        )?;
        model.select_output_outlets(&[half, back[0]])?;
        // Ties, subnormals, overflow, signed zero, and plain values.
        let values = [
            1.0f32,
            0.1,
            -2.5e-3,
            65504.0,
            70000.0,
            -1e6,
            6e-8,
            3e-5,
            -0.0,
            1.0009766,
            1.00048828125,
            2049.0,
            2051.0,
            -3.14159,
            1e-10,
            0.33333,
            123.456,
            -65519.0,
        ];
        let input = tvec!(Tensor::from_shape(&[2, 9], &values)?.into_tvalue());
        let optimized = model.into_optimized()?;
        let expected = optimized.clone().into_runnable()?.run(input.clone())?;
        let mut vectorized = optimized;
        assert_eq!(vectorize_half_casts(&mut vectorized)?, 2);
        let got = vectorized.into_runnable()?.run(input)?;
        assert_eq!(got, expected);
        Ok(())
    }
}
