//! Small questions about tract graphs that the runtime's rewrites (linear layers, attention products,
//! LayerNorm) all ask.

use tract_core::internal::*;
use tract_core::ops::binary::{BinMiniOp, TypedBinOp};

/// Whether `node` is a binary op of kind `B` on two inputs, without a quantized output.
pub fn is_binary<B: BinMiniOp>(node: &TypedNode) -> bool {
    node.inputs.len() == 2
        && node
            .op_as::<TypedBinOp>()
            .map(|op| op.0.is::<B>() && op.1.is_none())
            .unwrap_or(false)
}

/// The values of an f32 constant that holds one value per position of `axis` of a rank-`rank` tensor
/// (`len` positions) and is 1 along every other axis, aligned to the right as broadcasting does; a single
/// value stands for every position.
pub fn per_axis_values(konst: &Tensor, rank: usize, axis: usize, len: usize) -> Option<Vec<f32>> {
    if konst.datum_type() != f32::datum_type() || konst.rank() > rank {
        return None;
    }
    let values: Vec<f32> = konst
        .to_plain_array_view::<f32>()
        .ok()?
        .iter()
        .copied()
        .collect();
    if values.len() == 1 {
        return Some(vec![values[0]; len]);
    }
    let along_axis_only = values.len() == len
        && konst.shape().iter().enumerate().all(|(index, &size)| {
            size == if index + rank - konst.rank() == axis {
                len
            } else {
                1
            }
        });
    along_axis_only.then_some(values)
}

/// Pseudo-random values in [-1, 1) (xorshift), the same for the same seed: test data.
#[cfg(test)]
pub fn test_values(len: usize, seed: u32) -> Vec<f32> {
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

/// Every output of `model`, optimized, run on `inputs` with `threads` inference threads: test runs.
#[cfg(test)]
pub fn run_with_threads(
    model: &TypedModel,
    inputs: TVec<TValue>,
    threads: usize,
) -> TractResult<Vec<Vec<f32>>> {
    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    let plan = model.clone().into_optimized()?.into_runnable()?;
    let outputs = multithread_tract_scope(Executor::multithread(threads), || plan.run(inputs))?;
    outputs
        .iter()
        .map(|output| {
            Ok(output
                .to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect())
        })
        .collect()
}

/// Asserts that `got` has `want`'s length and each value is within `tolerance` times `want`'s largest
/// magnitude of it.
#[cfg(test)]
pub fn assert_close(got: &[f32], want: &[f32], tolerance: f32, context: &str) {
    assert_eq!(got.len(), want.len(), "{context}");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tolerance * scale, "{context}: {g} vs {w}");
    }
}
