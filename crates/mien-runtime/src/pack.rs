//! Packing of i8 activations for tract's SDOT kernels, done a word at a time instead of a byte at a time.
//!
//! Before an integer matmul, tract packs the runtime i8 operand (the activations) into the layout of its
//! SDOT kernels, `PackedI8K4`: panels of `r` rows, and inside a panel, for each group of four K values,
//! the `r` rows' four bytes side by side. tract 0.23.9 writes that layout one byte at a time with a
//! strided store per byte; on an emulated Cortex-A76 this was 12 % of an int8 ViT inference, as much as
//! all the softmaxes and GELUs together. When K is the operand's innermost axis and a multiple of four,
//! each group of four K values is one contiguous 4-byte word in the source and in the packed layout, so
//! packing is a gather of words (`pack_i8k4`, a quarter of the moves and no per-byte address arithmetic);
//! when the rows are contiguous instead (attention's V), four rows are read side by side to build each
//! word. On the committed ViT int8 plan: 149 M instructions per inference down to 22 M.
//!
//! [`speed_up_int8_packing`] runs on the optimized graph at load: every `OptMatMulPack` whose packer is
//! `PackedI8K4` becomes an [`I8K4Pack`], which produces the same packed values, one per batch coordinate
//! (tested byte for byte against tract's packer), and hands operands for other packers back to tract's op.
//! Nothing is saved in plans: it is purely how this runtime executes them.

use tract_core::internal::*;
use tract_core::ndarray::Dimension;
use tract_core::ops::matmul::pack::{DynPackedExoticFact, OptMatMulPack};
use tract_linalg::mmm::{EagerPackedInput, MMMInputFormat, PackedExoticFact, PackedMatrixStorage};
use tract_linalg::pack::PackedI8K4;

/// Where a matrix operand lies in its tensor's bytes: element `(i, kk)` is at
/// `offset + i * mn_stride + kk * k_stride`.
#[derive(Debug, Clone, Copy)]
pub struct MatrixLayout {
    /// First element.
    pub offset: usize,
    /// Rows (the M or N side of the product).
    pub mn: usize,
    /// Distance between rows.
    pub mn_stride: usize,
    /// Contraction length.
    pub k: usize,
    /// Distance between consecutive K values of a row.
    pub k_stride: usize,
}

/// Packs an i8 matrix into tract's `PackedI8K4` layout with `r` rows per panel: element `(i, kk)` lands at
/// `(i / r) * kp * r + (kk / 4) * 4 * r + (i % r) * 4 + kk % 4`, `kp` being `k` rounded up to 4.
///
/// `dst` must be exactly `mn.div_ceil(r) * kp * r` bytes; padding (K beyond `k`, lanes of a last partial
/// panel) is left as it is: zero in a fresh buffer, as tract's packer leaves it. With K contiguous and a
/// multiple of 4, four K values are one 4-byte word in both layouts and packing is a gather of words; with
/// the rows contiguous instead (K strided), four rows are read side by side to build each word.
pub fn pack_i8k4(src: &[u8], at: MatrixLayout, r: usize, dst: &mut [u8]) {
    let MatrixLayout {
        offset,
        mn,
        mn_stride,
        k,
        k_stride,
    } = at;
    let k_padded = k.div_ceil(4) * 4;
    assert_eq!(
        dst.len(),
        mn.div_ceil(r) * k_padded * r,
        "packed buffer size"
    );
    let k_block = 4 * r;
    for (panel_index, panel) in dst.chunks_exact_mut(k_padded * r).enumerate() {
        let first_row = panel_index * r;
        let lanes = r.min(mn - first_row);
        if k_stride == 1 && k % 4 == 0 {
            for lane in 0..lanes {
                let row = &src[offset + (first_row + lane) * mn_stride..][..k];
                for (block, word) in panel.chunks_exact_mut(k_block).zip(row.chunks_exact(4)) {
                    block[lane * 4..lane * 4 + 4].copy_from_slice(word);
                }
            }
        } else if mn_stride == 1 {
            let row_of_k = |kk: usize| &src[offset + first_row + kk * k_stride..][..lanes];
            for (kb, block) in panel.chunks_exact_mut(k_block).enumerate() {
                if kb * 4 + 4 <= k {
                    let [a, b, c, d] = [0, 1, 2, 3].map(|kr| row_of_k(kb * 4 + kr));
                    for (lane, word) in block.chunks_exact_mut(4).take(lanes).enumerate() {
                        word.copy_from_slice(&[a[lane], b[lane], c[lane], d[lane]]);
                    }
                } else {
                    for kk in kb * 4..k {
                        for (lane, &v) in row_of_k(kk).iter().enumerate() {
                            block[lane * 4 + kk % 4] = v;
                        }
                    }
                }
            }
        } else {
            for lane in 0..lanes {
                let row = offset + (first_row + lane) * mn_stride;
                for kk in 0..k {
                    panel[(kk / 4) * k_block + lane * 4 + kk % 4] = src[row + kk * k_stride];
                }
            }
        }
    }
}

/// tract's `OptMatMulPack`, with i8 operands packed for SDOT kernels by [`pack_i8k4`]; operands for other
/// packers go to the wrapped op.
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
        let index = if self.packers.len() == 2 {
            (mn > 1) as usize
        } else {
            0
        };
        self.packers.get(index)?.downcast_ref::<PackedI8K4>()
    }

    /// Packs `input` if this op covers it; `None` hands it to tract's op.
    fn pack(&self, input: &Tensor) -> TractResult<Option<Tensor>> {
        let shape = input.shape();
        let (k, mn) = (shape[self.k_axis], shape[self.mn_axis]);
        let Some(packer) = self.packer_for(mn) else {
            return Ok(None);
        };
        if input.datum_type() != i8::datum_type() {
            return Ok(None);
        }
        let strides = input.strides();
        let bytes = input.as_bytes();
        // One packed matrix per coordinate of the other (batch) axes, in row-major order as tract's op.
        let mut batch_shape: TVec<usize> = shape.into();
        batch_shape[self.k_axis] = 1;
        batch_shape[self.mn_axis] = 1;
        let mut values: TVec<Box<dyn tract_linalg::mmm::MMMInputValue>> = tvec!();
        for coord in tract_ndarray::indices(&*batch_shape) {
            let offset: isize = coord
                .as_array_view()
                .iter()
                .zip(strides)
                .map(|(c, s)| *c as isize * s)
                .sum();
            let layout = MatrixLayout {
                offset: offset as usize,
                mn,
                mn_stride: strides[self.mn_axis] as usize,
                k,
                k_stride: strides[self.k_axis] as usize,
            };
            let mut blob = Tensor::zero_aligned::<i8>(&[packer.len(k, mn)], packer.alignment())?
                .into_blob()?;
            pack_i8k4(bytes, layout, packer.r, blob.as_bytes_mut());
            values.push(Box::new(EagerPackedInput {
                fact: PackedExoticFact {
                    format: Box::new(packer.clone()),
                    mn: mn.to_dim(),
                    k,
                },
                packed: Arc::new(blob),
                panel_bytes: packer.single_panel_len(k),
                mn,
            }));
        }
        let output_shape = self.tract_op.output_shape(shape);
        Ok(Some(
            PackedMatrixStorage::new_batched(&output_shape, values).into_tensor(input.datum_type()),
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

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
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
        let Some(tract_op) = node.op_as::<OptMatMulPack>() else {
            continue;
        };
        let Some(packed) = node.outputs[0]
            .fact
            .exotic_fact()
            .and_then(|f| f.downcast_ref::<DynPackedExoticFact>())
        else {
            continue;
        };
        if !packed
            .packers
            .iter()
            .any(|p| p.downcast_ref::<PackedI8K4>().is_some())
        {
            continue;
        }
        let input_fact = model.outlet_fact(node.inputs[0])?;
        let mapping = tract_op.axes_mapping(&[input_fact], &[&node.outputs[0].fact])?;
        let k_axis = mapping.axis('K')?.inputs[0][0];
        let mn_axis = mapping.axis('M')?.inputs[0][0];
        let op = I8K4Pack {
            tract_op: tract_op.clone(),
            packers: packed.packers.clone(),
            k_axis,
            mn_axis,
        };
        model.node_mut(id).op = Box::new(op);
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tract_packed_bytes(
        packer: &PackedI8K4,
        input: &Tensor,
        k_axis: usize,
        mn_axis: usize,
    ) -> Vec<u8> {
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

    /// Every stride case against tract's packer: K contiguous (multiple of 4 or not), rows contiguous, and
    /// neither, taken from views of one tensor.
    #[test]
    fn packing_matches_tract_byte_for_byte_for_every_layout() {
        for (mn, k, r) in [
            (257, 384, 8),
            (1, 64, 8),
            (7, 4, 8),
            (8, 8, 8),
            (9, 12, 8),
            (33, 1536, 8),
            (40, 32, 32),
            (5, 16, 4),
            (11, 7, 8),
            (3, 1, 8),
        ] {
            check_packing(mn, k, r);
        }
    }

    proptest::proptest! {
        // No regression files in the tree: a failure prints its case, which goes into the list above.
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, failure_persistence: None, ..Default::default() })]

        /// Random sizes, panel widths and (through the three views) strides.
        #[test]
        fn packing_matches_tract_on_random_shapes(mn in 1usize..80, k in 1usize..160, r in proptest::sample::select(vec![4usize, 8, 16, 32])) {
            check_packing(mn, k, r);
        }
    }

    /// Packs an `mn × k` operand with panel width `r` from three views (K contiguous, rows contiguous,
    /// neither) and checks each against tract's packer.
    fn check_packing(mn: usize, k: usize, r: usize) {
        {
            let data = pseudo_random_i8(mn * k * 2, (mn * 31 + k) as u32);
            // [mn, 2k]: rows 2k apart, K contiguous; its transpose [2k, mn] read as (mn, k): rows contiguous.
            let wide = Tensor::from_shape(&[mn, 2 * k], &data).unwrap();
            let tall = Tensor::from_shape(&[2 * k, mn], &data).unwrap();
            // [mn, k, 2]: neither axis contiguous.
            let spread = Tensor::from_shape(&[mn, k, 2], &data).unwrap();
            let cases = [
                (
                    wide.slice(1, 0, k).unwrap(),
                    1,
                    0,
                    MatrixLayout {
                        offset: 0,
                        mn,
                        mn_stride: 2 * k,
                        k,
                        k_stride: 1,
                    },
                    &wide,
                ),
                (
                    tall.slice(0, k, 2 * k).unwrap(),
                    0,
                    1,
                    MatrixLayout {
                        offset: k * mn,
                        mn,
                        mn_stride: 1,
                        k,
                        k_stride: mn,
                    },
                    &tall,
                ),
                (
                    spread.slice(2, 1, 2).unwrap(),
                    1,
                    0,
                    MatrixLayout {
                        offset: 1,
                        mn,
                        mn_stride: 2 * k,
                        k,
                        k_stride: 2,
                    },
                    &spread,
                ),
            ];
            for (view, k_axis, mn_axis, layout, whole) in cases {
                let packer = PackedI8K4::new(r);
                let expected = tract_packed_bytes(&packer, &view, k_axis, mn_axis);
                let mut ours = vec![0u8; packer.len(k, mn)];
                pack_i8k4(whole.as_bytes(), layout, r, &mut ours);
                assert_eq!(ours, expected, "mn {mn}, k {k}, r {r}, {layout:?}");
            }
        }
    }

    /// An i8 product through tract's optimizer (so the graph holds real `OptMatMulPack`s), run with and
    /// without the replacement. `weight` makes the first operand a constant.
    fn compare_with_tract(expr: &str, a_shape: &[usize], b_shape: &[usize], weight: bool) {
        let mut model = TypedModel::default();
        let len = |s: &[usize]| s.iter().product::<usize>();
        let a_value = Tensor::from_shape(a_shape, &pseudo_random_i8(len(a_shape), 3)).unwrap();
        let b_value = Tensor::from_shape(b_shape, &pseudo_random_i8(len(b_shape), 5)).unwrap();
        let mut inputs = tvec!();
        let a = if weight {
            model.add_const("a", a_value).unwrap()
        } else {
            inputs.push(a_value.into_tvalue());
            model.add_source("a", i8::fact(a_shape)).unwrap()
        };
        let b = model.add_source("b", i8::fact(b_shape)).unwrap();
        inputs.push(b_value.into_tvalue());
        let mm = tract_core::ops::einsum::EinSum::new(expr.parse().unwrap(), i32::datum_type());
        let y = model.wire_node("mm", mm, &[a, b]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let optimized = model.into_optimized().unwrap();
        let reference = optimized
            .clone()
            .into_runnable()
            .unwrap()
            .run(inputs.clone())
            .unwrap();

        let mut fast = optimized.clone();
        let replaced = speed_up_int8_packing(&mut fast).unwrap();
        let i8k4_packs = optimized
            .nodes()
            .iter()
            .filter(|node| {
                node.outputs[0]
                    .fact
                    .exotic_fact()
                    .and_then(|f| f.downcast_ref::<DynPackedExoticFact>())
                    .is_some_and(|p| {
                        p.packers
                            .iter()
                            .any(|p| p.downcast_ref::<PackedI8K4>().is_some())
                    })
            })
            .count();
        assert_eq!(
            replaced, i8k4_packs,
            "{expr}: every SDOT-format pack is replaced, nothing else"
        );
        // tract packs i8 activations as I8K4 for its SDOT kernels: on a dotprod CPU the op must be in use.
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            assert!(
                replaced > 0,
                "{expr}: no I8K4 pack replaced on a dotprod CPU"
            );
        }
        let got = fast.into_runnable().unwrap().run(inputs).unwrap();
        assert_eq!(got[0], reference[0], "{expr}");
    }

    #[test]
    fn op_output_equals_tract_op_output() {
        // A linear layer, attention's scores (batched over heads) and its weighted sum (K strided).
        compare_with_tract("mk,bnk->bnm", &[16, 12], &[1, 9, 12], true);
        compare_with_tract("mak,nak->amn", &[19, 3, 8], &[19, 3, 8], false);
        compare_with_tract("amk,kan->man", &[3, 19, 19], &[19, 3, 8], false);
    }
}
