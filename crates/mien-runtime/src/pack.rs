//! Packing of i8 activations for tract's SDOT kernels, done a word at a time instead of a byte at a time.
//!
//! Before an integer matmul, tract packs the runtime i8 operand (the activations) into the layout of its
//! SDOT kernels, `PackedI8K4`: panels of `r` rows, and inside a panel, for each group of four K values,
//! the `r` rows' four bytes side by side. tract 0.23.9 writes that layout one byte at a time with a
//! strided store per byte; on an emulated Cortex-A76 this was 12 % of an int8 ViT inference, as much as
//! all the softmaxes and GELUs together. When K is the operand's innermost axis and a multiple of four,
//! each group of four K values is one contiguous 4-byte word in the source and in the packed layout, so
//! packing is a gather of words (`pack_i8k4`, a quarter of the moves and no per-byte address arithmetic).
//!
//! [`speed_up_int8_packing`] runs on the optimized graph at load: every `OptMatMulPack` whose packer is
//! `PackedI8K4` becomes an [`I8K4Pack`], which produces the same packed value (tested byte for byte
//! against tract's packer) and hands any input it does not cover back to tract's op. Nothing is saved
//! in plans: it is purely how this runtime executes them.

use tract_core::internal::*;
use tract_core::ops::matmul::pack::{DynPackedExoticFact, OptMatMulPack};
use tract_linalg::mmm::{EagerPackedInput, MMMInputFormat, PackedExoticFact, PackedMatrixStorage};
use tract_linalg::pack::PackedI8K4;

/// Packs `mn` rows of `k` bytes (row `i` starts at `src[i * row_stride]`, K contiguous) into tract's
/// `PackedI8K4` layout with `r` rows per panel: byte `kk` of row `i` lands at
/// `(i / r) * k * r + (kk / 4) * 4 * r + (i % r) * 4 + kk % 4`.
///
/// `k` must be a multiple of 4 and `dst` exactly `mn.div_ceil(r) * k * r` bytes; lanes of a last,
/// partial panel are left as they are (zero in a fresh buffer, as tract's packer leaves them).
pub fn pack_i8k4(src: &[u8], mn: usize, row_stride: usize, k: usize, r: usize, dst: &mut [u8]) {
    assert!(k % 4 == 0, "K = {k} is not a multiple of 4");
    assert_eq!(dst.len(), mn.div_ceil(r) * k * r, "packed buffer size");
    let k_block = 4 * r;
    for (panel_index, panel) in dst.chunks_exact_mut(k * r).enumerate() {
        let first_row = panel_index * r;
        for lane in 0..r.min(mn - first_row) {
            let row = &src[(first_row + lane) * row_stride..][..k];
            for (block, word) in panel.chunks_exact_mut(k_block).zip(row.chunks_exact(4)) {
                block[lane * 4..lane * 4 + 4].copy_from_slice(word);
            }
        }
    }
}

/// tract's `OptMatMulPack`, with i8 operands packed for SDOT kernels by [`pack_i8k4`]; everything else
/// (other packers, strided K, K not a multiple of 4, batched operands) goes to the wrapped op.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct I8K4Pack {
    tract_op: OptMatMulPack,
    /// The packers in the order tract's op picks them: one, or one for a single row and one for more.
    packers: Vec<Box<dyn MMMInputFormat>>,
    k_axis: usize,
    mn_axis: usize,
}

impl I8K4Pack {
    fn packer_for(&self, mn: usize) -> Option<&PackedI8K4> {
        let index = if self.packers.len() == 2 { (mn > 1) as usize } else { 0 };
        self.packers.get(index)?.downcast_ref::<PackedI8K4>()
    }

    /// Packs `input` if this op covers it; `None` hands it to tract's op.
    fn pack(&self, input: &Tensor) -> TractResult<Option<Tensor>> {
        let shape = input.shape();
        let (k, mn) = (shape[self.k_axis], shape[self.mn_axis]);
        let Some(packer) = self.packer_for(mn) else { return Ok(None) };
        let single_matrix =
            shape.iter().enumerate().all(|(axis, &dim)| dim == 1 || axis == self.k_axis || axis == self.mn_axis);
        if input.datum_type() != i8::datum_type() || input.strides()[self.k_axis] != 1 || k % 4 != 0 || !single_matrix {
            return Ok(None);
        }
        let row_stride = input.strides()[self.mn_axis] as usize;
        let mut blob = Tensor::zero_aligned::<i8>(&[packer.len(k, mn)], packer.alignment())?.into_blob()?;
        pack_i8k4(input.as_bytes(), mn, row_stride, k, packer.r, blob.as_bytes_mut());
        let value = EagerPackedInput {
            fact: PackedExoticFact { format: Box::new(packer.clone()), mn: mn.to_dim(), k },
            packed: Arc::new(blob),
            panel_bytes: packer.single_panel_len(k),
            mn,
        };
        let batch_shape = self.tract_op.output_shape(shape);
        Ok(Some(
            PackedMatrixStorage::new_batched(&batch_shape, tvec![Box::new(value) as _]).into_tensor(input.datum_type()),
        ))
    }
}

impl Op for I8K4Pack {
    fn name(&self) -> StaticName {
        "I8K4Pack(mien)".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        self.tract_op.info()
    }

    op_as_typed_op!();
}

impl EvalOp for I8K4Pack {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        match self.pack(&inputs[0])? {
            Some(packed) => Ok(tvec!(packed.into_tvalue())),
            None => self.tract_op.eval(ctx, inputs),
        }
    }
}

impl TypedOp for I8K4Pack {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.tract_op.output_facts(inputs)
    }

    fn axes_mapping(&self, inputs: &[&TypedFact], outputs: &[&TypedFact]) -> TractResult<AxesMapping> {
        self.tract_op.axes_mapping(inputs, outputs)
    }

    as_op!();
}

/// Replaces, in an optimized graph, every `OptMatMulPack` that may pack for SDOT kernels with an
/// [`I8K4Pack`]; returns how many.
pub fn speed_up_int8_packing(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(tract_op) = node.op_as::<OptMatMulPack>() else { continue };
        let Some(packed) = node.outputs[0].fact.exotic_fact().and_then(|f| f.downcast_ref::<DynPackedExoticFact>())
        else {
            continue;
        };
        if !packed.packers.iter().any(|p| p.downcast_ref::<PackedI8K4>().is_some()) {
            continue;
        }
        let input_fact = model.outlet_fact(node.inputs[0])?;
        let mapping = tract_op.axes_mapping(&[input_fact], &[&node.outputs[0].fact])?;
        let k_axis = mapping.axis('K')?.inputs[0][0];
        let mn_axis = mapping.axis('M')?.inputs[0][0];
        let op = I8K4Pack { tract_op: tract_op.clone(), packers: packed.packers.clone(), k_axis, mn_axis };
        model.node_mut(id).op = Box::new(op);
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tract_packed_bytes(packer: &PackedI8K4, input: &Tensor, k_axis: usize, mn_axis: usize) -> Vec<u8> {
        let value = packer.pack_view(&input.view(), k_axis, mn_axis).unwrap();
        let eager = value.downcast_ref::<EagerPackedInput>().unwrap();
        eager.packed.as_bytes().to_vec()
    }

    fn pseudo_random_i8(len: usize, seed: u32) -> Vec<i8> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as i8
            })
            .collect()
    }

    #[test]
    fn word_packing_matches_tract_byte_for_byte() {
        for (mn, k, r) in
            [(257, 384, 8), (1, 64, 8), (7, 4, 8), (8, 8, 8), (9, 12, 8), (33, 1536, 8), (40, 32, 32), (5, 16, 4)]
        {
            let input = Tensor::from_shape(&[mn, k], &pseudo_random_i8(mn * k, (mn * 31 + k) as u32)).unwrap();
            let packer = PackedI8K4::new(r);
            let expected = tract_packed_bytes(&packer, &input, 1, 0);
            let mut ours = vec![0u8; packer.len(k, mn)];
            pack_i8k4(input.as_bytes(), mn, k, k, r, &mut ours);
            assert_eq!(ours, expected, "mn {mn}, k {k}, r {r}");
        }
    }

    #[test]
    fn row_stride_wider_than_k_is_honoured() {
        // A [mn, 2k] matrix whose first k columns are packed: rows are 2k apart in memory.
        let (mn, k) = (11, 8);
        let wide = Tensor::from_shape(&[mn, 2 * k], &pseudo_random_i8(mn * 2 * k, 7)).unwrap();
        let narrow = wide.slice(1, 0, k).unwrap();
        let packer = PackedI8K4::new(8);
        let expected = tract_packed_bytes(&packer, &narrow, 1, 0);
        let mut ours = vec![0u8; packer.len(k, mn)];
        pack_i8k4(wide.as_bytes(), mn, 2 * k, k, 8, &mut ours);
        assert_eq!(ours, expected);
    }

    #[test]
    fn op_output_equals_tract_op_output_and_falls_back_where_it_must() {
        // An int8 matmul through tract's optimizer, so the graph holds a real OptMatMulPack.
        let mut model = TypedModel::default();
        let (m, k, n) = (16, 12, 9);
        let weights = Tensor::from_shape(&[m, k], &pseudo_random_i8(m * k, 3)).unwrap();
        let activations = Tensor::from_shape(&[1, n, k], &pseudo_random_i8(n * k, 5)).unwrap();
        let x = model.add_source("x", i8::fact([1, n, k])).unwrap();
        let w = model.add_const("w", weights.clone()).unwrap();
        let mm = tract_core::ops::einsum::EinSum::new("mk,bnk->bnm".parse().unwrap(), i32::datum_type());
        let y = model.wire_node("mm", mm, &[w, x]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let optimized = model.into_optimized().unwrap();
        let reference = optimized.clone().into_runnable().unwrap().run(tvec!(activations.clone().into())).unwrap();

        let mut fast = optimized.clone();
        let replaced = speed_up_int8_packing(&mut fast).unwrap();
        let has_i8k4 = optimized.nodes().iter().any(|node| {
            node.outputs[0]
                .fact
                .exotic_fact()
                .and_then(|f| f.downcast_ref::<DynPackedExoticFact>())
                .is_some_and(|p| p.packers.iter().any(|p| p.downcast_ref::<PackedI8K4>().is_some()))
        });
        assert_eq!(replaced > 0, has_i8k4, "every SDOT-format pack is replaced, nothing else");
        // tract packs i8 activations as I8K4 for its SDOT kernels: on a dotprod CPU the op must be in use.
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            assert!(replaced > 0, "no I8K4 pack replaced on a dotprod CPU");
        }
        let got = fast.into_runnable().unwrap().run(tvec!(activations.into())).unwrap();
        assert_eq!(got[0], reference[0]);
    }
}
