//! mien's compute kernels, apart from the graph code that uses them (as tract keeps `tract-linalg` apart
//! from `tract-core`).
//!
//! Each family is a folder with one scalar reference (`scalar.rs`: the arithmetic every SIMD version
//! follows, and the definition the tests hold them to) and a module per architecture beside it (`avx2.rs`
//! for x86-64 AVX2 + FMA, `neon.rs` for aarch64 NEON):
//!
//! - [`f32_tile`]: the 6 × 16 f32 tile of the linear layers, batched products and attention;
//! - [`i8_tile`]: the 4 × 4 i8 × i8 → i32 tile of int8 linear layers on cores without SDOT;
//! - [`softmax`]: softmax of a row, in place;
//! - [`layer_norm`]: layer normalization of rows or of channel-major columns;
//! - [`f16_convert`]: f32 ↔ f16 conversion of whole slices.
//!
//! [`dispatch`] is the one place that reads the CPU's features and picks a kernel of each family for it;
//! [`cpu`] reports those features. Every `unsafe` block is inside a SIMD kernel, with a `// SAFETY:` line,
//! and every SIMD kernel is tested against its scalar twin (the NEON ones under qemu-user in CI). The
//! crate does not depend on tract, so its tests build in seconds for every target.

pub mod cpu;
pub mod dispatch;
pub mod f16_convert;
pub mod f32_tile;
pub mod i8_tile;
pub mod layer_norm;
pub mod softmax;

#[cfg(test)]
pub(crate) mod test_values {
    /// Deterministic values in [-1, 1) (xorshift), different for each seed.
    pub fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as f32 / u32::MAX as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Deterministic i8 values over the whole range (xorshift).
    pub fn bytes(len: usize, seed: u32) -> Vec<i8> {
        let mut state = seed.wrapping_mul(0x2545_f491) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8 as i8
            })
            .collect()
    }
}
