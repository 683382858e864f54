//! How the int8 matmuls of a quantized plan run on this CPU.
//!
//! tract's integer kernels pay on ARM (SDOT on Cortex-A76/A78, SMLAL on A72, NEON on armv7) and on x86
//! with VNNI. On x86 without VNNI its AVX2 i8 kernel widens 8 lanes at a time and loses to float by about
//! 4x, so there the plan's i8 weights are turned back into float at load: the activations are still
//! quantized exactly as the plan says (same rounding, same scales), only the product runs in f32, whose
//! sums of i8 × i8 products are exact up to 2^24 and nearly exact beyond. On aarch64 without SDOT
//! (Cortex-A72) tract's integer kernel costs more than float, and the linear layers run on mien's own
//! ([`crate::int8_linear`]). The rewrite itself lives in
//! `mien-quantize`, beside the rewrite that produces the pattern it undoes.

pub use mien_quantize::rewrite::{dequantize_weights, has_int8_matmuls};

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
            other => Err(format!(
                "expected auto, integer or dequantized, found {other:?}"
            )),
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
    if let Some(env) = crate::env_override(choice, Int8Path::Auto, "MIEN_INT8_PATH") {
        return (env, "MIEN_INT8_PATH");
    }
    match choice {
        Int8Path::Auto if integer_kernels_pay() && crate::int8_linear::kernel().is_some() => (
            Int8Path::Integer,
            "no SDOT: linear layers on mien's SMULL/SADALP kernel",
        ),
        Int8Path::Auto if integer_kernels_pay() => {
            (Int8Path::Integer, "integer kernels pay on this CPU")
        }
        Int8Path::Auto => (
            Int8Path::DequantizedWeights,
            "x86 without VNNI: tract's i8 kernels lose to float here",
        ),
        other => (other, "requested"),
    }
}
