//! Element-wise functions a linear layer applies to its own output (folded from the node that followed
//! it): each thread applies it to the share it just computed, while that share is still in its cache,
//! instead of the calling thread making a pass of its own over the whole tensor.

use tract_core::internal::*;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::nn::GeluExact;
use tract_linalg::routines::Func;

/// Values per call of tract's erf kernel (its scratch buffer's size).
const CHUNK: usize = 1024;

/// A function applied to every value of a layer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `0.5 · x · (1 + erf(x / √2))`, computed as tract's `GeluExact` computes it (same erf kernel, same
    /// operation order), so folding it changes no bit.
    GeluExact,
}

impl Activation {
    /// The activation `node` computes on its single f32 input, if it is one of these.
    pub fn of(node: &TypedNode) -> Option<Activation> {
        let op = node.op_as::<ElementWiseOp>()?;
        (op.0.is::<GeluExact>() && op.1.is_none()).then_some(Activation::GeluExact)
    }

    /// Its name in profiles (`PackedLinear+Gelu(mien)`).
    pub fn name(self) -> &'static str {
        match self {
            Activation::GeluExact => "Gelu",
        }
    }

    /// Applies it to `values` in place.
    pub fn apply(self, values: &mut [f32]) -> TractResult<()> {
        self.apply_each(&mut [values])
    }

    /// Applies it to each of `slices` in place (the kernel looked up once for all of them).
    pub fn apply_each(self, slices: &mut [&mut [f32]]) -> TractResult<()> {
        match self {
            Activation::GeluExact => {
                let erf = Func::Erf.ew_f32()?;
                let inv_sqrt2 = (2.0f32).sqrt().recip();
                let mut scratch = [0f32; CHUNK];
                for chunk in slices
                    .iter_mut()
                    .flat_map(|values| values.chunks_mut(CHUNK))
                {
                    let scaled = &mut scratch[..chunk.len()];
                    scaled
                        .iter_mut()
                        .zip(chunk.iter())
                        .for_each(|(s, x)| *s = *x * inv_sqrt2);
                    erf.run(scaled)?;
                    chunk
                        .iter_mut()
                        .zip(scaled.iter())
                        .for_each(|(x, e)| *x = (*x * 0.5) * (*e + 1.0));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::test_values;

    #[test]
    fn gelu_matches_tracts_op_bit_for_bit() -> TractResult<()> {
        // Lengths around the chunk and the SIMD kernels' widths; values over GELU's whole curve.
        for len in [1, 7, 16, 1023, 1024, 3000] {
            let values: Vec<f32> = test_values(len, len as u32)
                .iter()
                .map(|v| v * 6.0)
                .collect();
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([len]))?;
            let y = model.wire_node("gelu", tract_core::ops::nn::gelu_exact::gelu_exact(), &[x])?;
            model.select_output_outlets(&y)?;
            assert_eq!(
                Activation::of(model.node(y[0].node)),
                Some(Activation::GeluExact)
            );
            let input = Tensor::from_shape(&[len], &values)?;
            let want = model.into_runnable()?.run(tvec!(input.into_tvalue()))?;
            let mut got = values.clone();
            Activation::GeluExact.apply(&mut got)?;
            assert_eq!(
                want[0].try_as_plain_ram()?.as_slice::<f32>()?,
                &got[..],
                "length {len}"
            );
        }
        Ok(())
    }
}
