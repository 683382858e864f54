//! Conversion of whole slices between f32 and f16, for the casts around an f16 computation.
//!
//! A scalar reference ([`scalar`], the `half` crate's conversions) and an aarch64 NEON kernel ([`neon`],
//! FCVTN/FCVTL eight lanes at a time: part of base AArch64 Advanced SIMD, so every aarch64 core has it),
//! picked at compile time since NEON is always there on aarch64 ([`crate::dispatch::f32_to_f16`],
//! [`crate::dispatch::f16_to_f32`]). Both round to nearest, ties to even
//! (the NEON kernel under the default FPCR rounding mode), so they agree bit for bit; the tests check
//! the kernel against its scalar twin (under qemu-user in CI).

#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod scalar;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::{f16_to_f32, f32_to_f16};
    use half::f16;

    /// Edge values (ties, subnormals, overflow, signed zeros, infinities) and a spread of ordinary ones.
    pub(crate) fn samples() -> Vec<f32> {
        let mut values = vec![
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            0.1,
            65504.0,
            65519.0,
            65520.0,
            70000.0,
            -1e6,
            f32::INFINITY,
            f32::NEG_INFINITY,
            6e-8,
            5.96e-8,
            2.98e-8,
            3e-5,
            6.1e-5,
            1.0009766,
            1.00048828125,
            1.00146484375,
            2049.0,
            2051.0,
            -3.14159,
            1e-10,
            f32::MIN_POSITIVE,
            123.456,
        ];
        let mut state = 0x2545_f491u32;
        for _ in 0..1000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            // Any bit pattern but NaNs: every exponent, both signs.
            let v = f32::from_bits(state);
            if !v.is_nan() {
                values.push(v);
            }
        }
        values
    }

    #[test]
    fn dispatch_matches_the_scalar_reference_both_ways_at_every_length() {
        let values = samples();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, values.len()] {
            let src = &values[..len];
            let (mut ours, mut reference) = (vec![f16::ZERO; len], vec![f16::ZERO; len]);
            f32_to_f16(src, &mut ours);
            scalar::f32_to_f16(src, &mut reference);
            assert_eq!(
                ours.iter().map(|h| h.to_bits()).collect::<Vec<_>>(),
                reference.iter().map(|h| h.to_bits()).collect::<Vec<_>>()
            );
            let (mut wide, mut wide_reference) = (vec![0f32; len], vec![0f32; len]);
            f16_to_f32(&reference, &mut wide);
            scalar::f16_to_f32(&reference, &mut wide_reference);
            assert_eq!(
                wide.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                wide_reference
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn nan_stays_nan() {
        let (mut half, mut wide) = ([f16::ZERO; 9], [0f32; 9]);
        f32_to_f16(&[f32::NAN; 9], &mut half);
        assert!(half.iter().all(|h| h.is_nan()));
        f16_to_f32(&half, &mut wide);
        assert!(wide.iter().all(|v| v.is_nan()));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, failure_persistence: None, ..Default::default() })]

        /// The dispatched conversions (NEON on aarch64) against the scalar reference, bit for bit, on random
        /// lengths and any f32 bit pattern (NaNs compared as NaNs).
        #[test]
        fn dispatch_matches_scalar_on_random_values(bits in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..100)) {
            let src: Vec<f32> = bits.iter().map(|b| f32::from_bits(*b)).collect();
            let (mut ours, mut reference) = (vec![f16::ZERO; src.len()], vec![f16::ZERO; src.len()]);
            f32_to_f16(&src, &mut ours);
            scalar::f32_to_f16(&src, &mut reference);
            for (o, r) in ours.iter().zip(&reference) {
                proptest::prop_assert!(o.to_bits() == r.to_bits() || (o.is_nan() && r.is_nan()), "{o:?} vs {r:?}");
            }
            let (mut wide, mut wide_reference) = (vec![0f32; src.len()], vec![0f32; src.len()]);
            f16_to_f32(&reference, &mut wide);
            scalar::f16_to_f32(&reference, &mut wide_reference);
            for (w, r) in wide.iter().zip(&wide_reference) {
                proptest::prop_assert!(w.to_bits() == r.to_bits() || (w.is_nan() && r.is_nan()), "{w} vs {r}");
            }
        }
    }
}
