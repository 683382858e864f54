//! Which kernel of each family runs on this CPU: the one place that reads the CPU's features for mien's
//! own kernels. A family without a SIMD kernel here returns `None`, and the runtime leaves that work to
//! tract (or, for the conversions, to the scalar reference).
//!
//! x86-64 features are read at run time (`is_x86_feature_detected!`), so one binary picks AVX2 + FMA
//! kernels where the CPU has them. NEON is part of base AArch64, so the aarch64 kernels need no check;
//! the SDOT extension (`dotprod`) is read at run time, since tract's kernel wins where it is present.

use crate::{f16_convert, f32_tile, i8_tile, softmax};
use half::f16;

/// A kernel picked for this CPU, with the name `mien info` and the logs show for it.
#[derive(Clone, Copy)]
pub struct Choice<F> {
    /// The kernel.
    pub kernel: F,
    /// Its name, `mien_<isa>_<what>`.
    pub name: &'static str,
}

impl<F> std::fmt::Debug for Choice<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The f32 tile kernel for this CPU: AVX2 + FMA on x86-64; none elsewhere (tract's products there).
pub fn f32_tile() -> Option<Choice<f32_tile::TileKernel>> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return Some(Choice {
            kernel: f32_tile::avx2::tile_kernel,
            name: f32_tile::avx2::NAME,
        });
    }
    None
}

/// Whether the runtime puts f32 products on [`f32_tile`]'s kernel on this CPU, and why.
///
/// On AVX-512 CPUs tract 0.23.9 runs its 16-wide `avx512_mmm_f32_*` kernels, which beat mien's AVX2 tile
/// there (see docs/BENCHMARKS.md), so mien's products are used on AVX2-only CPUs. `MIEN_F32_PRODUCTS`
/// (`mien` or `tract`) overrides the choice, for comparisons; tests of the kernels call [`f32_tile`]
/// directly.
pub fn f32_products() -> (bool, &'static str) {
    match std::env::var("MIEN_F32_PRODUCTS").as_deref() {
        Ok("mien") => return (f32_tile().is_some(), "MIEN_F32_PRODUCTS"),
        Ok("tract") => return (false, "MIEN_F32_PRODUCTS"),
        _ => {}
    }
    if f32_tile().is_none() {
        return (false, "no tile kernel for this CPU");
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        return (false, "AVX-512: tract's 16-wide kernels are faster here");
    }
    (true, "AVX2 + FMA tile kernel")
}

/// Whether the runtime fuses each LayerNorm into one op on [`crate::layer_norm`]'s kernel instead of
/// tract's five-op decomposition, and why: beside mien's own f32 products ([`f32_products`]).
/// `MIEN_LAYER_NORM` (`mien` or `tract`) overrides the choice, for comparisons.
pub fn layer_norm() -> (bool, &'static str) {
    match std::env::var("MIEN_LAYER_NORM").as_deref() {
        Ok("mien") => return (true, "MIEN_LAYER_NORM"),
        Ok("tract") => return (false, "MIEN_LAYER_NORM"),
        _ => {}
    }
    match f32_products() {
        (true, _) => (true, "beside mien's f32 products"),
        (false, _) => (false, "beside tract's f32 products"),
    }
}

/// The int8 tile kernel for this CPU when mien's product beats tract's here: aarch64 without SDOT
/// (Cortex-A72, the Raspberry Pi 4). Cores with SDOT keep tract's kernel, which does 16 multiply-adds per
/// instruction.
pub fn i8_tile() -> Option<Choice<i8_tile::Int8TileKernel>> {
    #[cfg(target_arch = "aarch64")]
    if !std::arch::is_aarch64_feature_detected!("dotprod") {
        return Some(Choice {
            kernel: i8_tile::neon::tile,
            name: i8_tile::neon::NAME,
        });
    }
    None
}

/// The SIMD softmax row kernel for this CPU, if it has one (x86-64 without AVX2 and FMA, and 32-bit ARM,
/// keep tract's own softmax).
pub fn softmax_row() -> Option<Choice<softmax::RowKernel>> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return Some(Choice {
            kernel: softmax::avx2::softmax_row,
            name: softmax::avx2::NAME,
        });
    }
    #[cfg(target_arch = "aarch64")]
    return Some(Choice {
        kernel: softmax::neon::softmax_row,
        name: softmax::neon::NAME,
    });
    #[allow(unreachable_code)]
    None
}

/// Writes `src` rounded to f16 into `dst` (same length): NEON on aarch64, the scalar reference elsewhere.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "f32 to f16: slices of different lengths");
    #[cfg(target_arch = "aarch64")]
    f16_convert::neon::f32_to_f16(src, dst);
    #[cfg(not(target_arch = "aarch64"))]
    f16_convert::scalar::f32_to_f16(src, dst);
}

/// Writes `src` widened to f32 into `dst` (same length; exact): NEON on aarch64, the scalar reference
/// elsewhere.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16 to f32: slices of different lengths");
    #[cfg(target_arch = "aarch64")]
    f16_convert::neon::f16_to_f32(src, dst);
    #[cfg(not(target_arch = "aarch64"))]
    f16_convert::scalar::f16_to_f32(src, dst);
}

/// Each family's kernel on this CPU, by family: what `mien info` and the load log list. The f32 tile is
/// listed where the runtime uses it ([`f32_products`]).
pub fn summary() -> Vec<(&'static str, &'static str)> {
    let name = |choice: Option<&'static str>| choice.unwrap_or("tract's");
    let f32_tile = f32_tile().filter(|_| f32_products().0);
    vec![
        ("f32 tile", name(f32_tile.map(|c| c.name))),
        ("i8 tile", name(i8_tile().map(|c| c.name))),
        ("softmax", name(softmax_row().map(|c| c.name))),
        ("layer norm", if layer_norm().0 { "mien_scalar_layer_norm" } else { "tract's" }),
        ("f16 convert", if cfg!(target_arch = "aarch64") { "mien_neon_f16_convert" } else { "mien_scalar_f16_convert" }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_products_stay_on_tracts_kernels_on_avx512_cpus() {
        if std::env::var("MIEN_F32_PRODUCTS").is_ok() {
            return;
        }
        let (pays, reason) = f32_products();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(pays, f32_tile().is_some() && !is_x86_feature_detected!("avx512f"), "{reason}");
        #[cfg(not(target_arch = "x86_64"))]
        assert!(!pays, "{reason}");
    }

    #[test]
    fn layer_norm_follows_the_f32_products() {
        if std::env::var("MIEN_LAYER_NORM").is_ok() || std::env::var("MIEN_F32_PRODUCTS").is_ok() {
            return;
        }
        assert_eq!(layer_norm().0, f32_products().0);
    }

    /// What each architecture is expected to pick (under qemu-user, the emulated core's features).
    #[test]
    fn each_architecture_gets_its_kernels() {
        #[cfg(target_arch = "aarch64")]
        {
            assert!(f32_tile().is_none());
            assert_eq!(softmax_row().map(|c| c.name), Some(softmax::neon::NAME));
            let sdot = std::arch::is_aarch64_feature_detected!("dotprod");
            assert_eq!(i8_tile().is_some(), !sdot, "the i8 tile is for cores without SDOT");
        }
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            assert_eq!(f32_tile().is_some(), avx2);
            assert_eq!(softmax_row().is_some(), avx2);
            assert!(i8_tile().is_none());
        }
        #[cfg(target_arch = "arm")]
        {
            assert!(f32_tile().is_none() && i8_tile().is_none() && softmax_row().is_none());
        }
        assert_eq!(summary().len(), 5);
    }
}
