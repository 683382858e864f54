//! Self-attention's two products as one op: `softmax(scale · Q · Kᵀ) · V`, each thread taking whole heads.
//! A head's scores (197 × 197 for ViT-B) live in the thread's own buffer, in cache, from the first product
//! to the second: they never become a tensor tract allocates and clears on the calling thread (1.9 MB per
//! ViT-B layer), and the two products run in one parallel section instead of two.

use tract_core::internal::*;
use tract_linalg::multithread::{current_tract_executor, Executor};

use super::batched::{BatchedProduct, Outer, ProductShape};
use super::{multiply_packed, pack_panels, pack_row_groups, Panels, TileKernel, COLS, K_BLOCK};
use mien_kernels::softmax::RowKernel;

/// `out = softmax(scale · q · k) · v` per head, with the two products' shapes as [`BatchedProduct`] found
/// them (the first with its softmax folded in, the second reading the first's output as its left operand).
#[derive(Clone)]
pub struct Attention {
    kernel: TileKernel,
    scores: ProductShape,
    values: ProductShape,
    scale: f32,
    softmax: RowKernel,
    output_shape: TVec<usize>,
}

impl std::fmt::Debug for Attention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Attention(scores {:?}, values {:?}, scale={})",
            self.scores, self.values, self.scale
        )
    }
}

impl PartialEq for Attention {
    fn eq(&self, other: &Self) -> bool {
        self.scores == other.scores
            && self.values == other.values
            && self.scale.to_bits() == other.scale.to_bits()
            && self.output_shape == other.output_shape
    }
}
impl Eq for Attention {}

impl std::hash::Hash for Attention {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scores.hash(state);
        self.values.hash(state);
        self.scale.to_bits().hash(state);
        self.output_shape.hash(state);
    }
}

/// Each head's output rows as slices of `out` (`values.n` wide), for the layouts [`ProductShape`] allows.
fn head_rows<'a>(values: &ProductShape, out: &'a mut [f32]) -> Vec<Vec<&'a mut [f32]>> {
    let ProductShape {
        batch,
        m,
        n,
        out_strides: (batch_stride, row_stride),
        outer,
        ..
    } = *values;
    let mut heads: Vec<Vec<&mut [f32]>> = (0..batch).map(|_| Vec::with_capacity(m)).collect();
    match outer {
        Outer::Batch => {
            for (head, block) in heads.iter_mut().zip(out.chunks_mut(batch_stride)) {
                head.extend(
                    block
                        .chunks_mut(row_stride)
                        .take(m)
                        .map(|row| &mut row[..n]),
                );
            }
        }
        Outer::Rows => {
            for row in out.chunks_mut(row_stride).take(m) {
                for (head, piece) in heads.iter_mut().zip(row.chunks_mut(batch_stride)) {
                    head.push(&mut piece[..n]);
                }
            }
        }
    }
    heads
}

impl Attention {
    /// The output for `q`, `k`, `v` (the first product's left and right operands, the second's right).
    fn run(&self, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) -> TractResult<()> {
        let (s, p) = (&self.scores, &self.values);
        // The scores as the first product would have laid them out, which the second's shape reads.
        let scores_len = s.batch * s.out_strides.0;
        s.check(q.len(), k.len(), scores_len)?;
        p.check(scores_len, v.len(), out.len())?;
        let mut heads = head_rows(p, out);
        ensure!(
            heads.iter().all(|rows| rows.len() == s.m),
            "output of the wrong size for {p:?}"
        );
        let (m, n) = (s.m, s.n);
        // Buffers reused by a thread for each of its heads; panel paddings stay zero.
        let head = |index: usize, rows: &mut Vec<&mut [f32]>, buffers: &mut [Vec<f32>; 4]| {
            let [key_panels, query_groups, scores, value_panels] = buffers;
            let qk = (s.a_strides.1, s.a_strides.2);
            pack_panels(
                &k[index * s.b_strides.0..],
                s.k,
                n,
                (s.b_strides.1, s.b_strides.2),
                K_BLOCK,
                self.scale,
                key_panels,
            );
            pack_row_groups(&q[index * s.a_strides.0..], 0, m, s.k, qk, query_groups);
            let mut score_rows: Vec<&mut [f32]> = scores.chunks_exact_mut(n).collect();
            let panels = Panels {
                data: key_panels,
                k: s.k,
                n,
                k_block: K_BLOCK,
            };
            multiply_packed(
                self.kernel,
                query_groups,
                &panels,
                0..n.div_ceil(COLS),
                None,
                &mut score_rows,
            );
            score_rows.iter_mut().for_each(|row| (self.softmax)(row));
            pack_panels(
                &v[index * p.b_strides.0..],
                n,
                p.n,
                (p.b_strides.1, p.b_strides.2),
                K_BLOCK,
                1.0,
                value_panels,
            );
            pack_row_groups(scores, 0, m, n, (n, 1), query_groups);
            let panels = Panels {
                data: value_panels,
                k: n,
                n: p.n,
                k_block: K_BLOCK,
            };
            multiply_packed(
                self.kernel,
                query_groups,
                &panels,
                0..p.n.div_ceil(COLS),
                None,
                rows,
            );
        };
        let new_buffers = || {
            [
                vec![0f32; s.k * n.div_ceil(COLS) * COLS],
                vec![],
                vec![0f32; m * n],
                vec![0f32; n * p.n.div_ceil(COLS) * COLS],
            ]
        };
        match current_tract_executor() {
            Executor::MultiThread(pool) if pool.current_num_threads() > 1 && heads.len() > 1 => {
                use rayon::prelude::*;
                let share = heads.len().div_ceil(pool.current_num_threads());
                pool.install(|| {
                    heads
                        .par_chunks_mut(share)
                        .enumerate()
                        .for_each(|(part, heads)| {
                            let mut buffers = new_buffers();
                            for (offset, rows) in heads.iter_mut().enumerate() {
                                head(part * share + offset, rows, &mut buffers);
                            }
                        })
                });
            }
            _ => {
                let mut buffers = new_buffers();
                for (index, rows) in heads.iter_mut().enumerate() {
                    head(index, rows, &mut buffers);
                }
            }
        }
        Ok(())
    }
}

impl Op for Attention {
    fn name(&self) -> StaticName {
        "Attention(mien)".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let ProductShape { batch, m, k, n, .. } = self.scores;
        Ok(vec![format!(
            "{batch} heads, {m} queries, {n} keys, {k} → {} per head, scale {}",
            self.values.n, self.scale
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Attention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == 3,
            "Attention takes queries, keys and values"
        );
        let plains = inputs
            .iter()
            .map(|input| input.try_as_plain_ram())
            .collect::<TractResult<Vec<_>>>()?;
        let (q, k, v) = (
            plains[0].as_slice::<f32>()?,
            plains[1].as_slice::<f32>()?,
            plains[2].as_slice::<f32>()?,
        );
        let mut output = Tensor::zero::<f32>(&self.output_shape)?;
        {
            let mut out = output.try_as_plain_ram_mut()?;
            self.run(q, k, v, out.as_slice_mut::<f32>()?)?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Attention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.iter().all(|f| f.datum_type == f32::datum_type()),
            "Attention takes f32"
        );
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (s, p) = (&self.scores, &self.values);
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            (s.batch * s.m * s.k * s.n + p.batch * p.m * p.k * p.n).into()
        )))
    }

    as_op!();
}

/// Replaces each `BatchedProduct` with a folded softmax whose only reader is a second `BatchedProduct`
/// taking it, laid out as written, as its left operand (attention's `P · V`) by one [`Attention`];
/// returns how many were fused.
pub fn fuse_attention(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    'graph: loop {
        for id in model.eval_order()? {
            let node = model.node(id);
            let Some(first) = node.op_as::<BatchedProduct>() else {
                continue;
            };
            let (Some(softmax), scores) = (first.softmax, first.shape) else {
                continue;
            };
            let [only] = &node.outputs[0].successors[..] else {
                continue;
            };
            if model.outputs.contains(&OutletId::new(id, 0)) {
                continue;
            }
            let next = model.node(only.node);
            let Some(second) = next.op_as::<BatchedProduct>() else {
                continue;
            };
            let values = second.shape;
            let ProductShape {
                batch,
                m,
                n,
                out_strides,
                outer,
                ..
            } = scores;
            // The second reads the scores as written: head, row, then the contraction along a row.
            let reads_as_written = only.slot == second.left_slot
                && second.softmax.is_none()
                && outer == Outer::Batch
                && values.batch == batch
                && values.m == m
                && values.k == n
                && values.a_strides == (out_strides.0, out_strides.1, 1);
            if !reads_as_written {
                continue;
            }
            let (left, right) = (
                node.inputs[first.left_slot],
                node.inputs[1 - first.left_slot],
            );
            let v = next.inputs[1 - second.left_slot];
            let op = Attention {
                kernel: first.kernel,
                scores,
                values,
                scale: first.scale,
                softmax,
                output_shape: second.output_shape.clone(),
            };
            let (name, next_id) = (format!("{}.attention", node.name), next.id);
            let mut patch = TypedModelPatch::default();
            let inputs = [
                patch.tap_model(model, left)?,
                patch.tap_model(model, right)?,
                patch.tap_model(model, v)?,
            ];
            let output = patch.wire_node(name, op, &inputs)?[0];
            patch.shunt_outside(model, OutletId::new(next_id, 0), output)?;
            patch.apply(model)?;
            fused += 1;
            continue 'graph;
        }
        return Ok(fused);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{assert_close, run_with_threads};
    use crate::linear::batched::{accelerate_batched_products, tests::attention_model};
    use crate::linear::kernel;

    #[test]
    fn fused_attention_gives_the_same_bits_as_its_two_products() -> TractResult<()> {
        for (heads, tokens, depth) in [(4, 37, 16), (3, 50, 24), (2, 9, 8)] {
            let (mut model, inputs) = attention_model(heads, tokens, depth)?;
            model.declutter()?;
            let mut products = model.clone();
            accelerate_batched_products(&mut products)?;
            if kernel().is_none() || crate::softmax::kernel().is_none() {
                return Ok(());
            }
            let mut fused = products.clone();
            assert_eq!(fuse_attention(&mut fused)?, 1, "{fused}");
            let live: Vec<String> = fused
                .eval_order()?
                .iter()
                .map(|&id| fused.node(id).op().name().to_string())
                .collect();
            assert!(
                live.iter().any(|name| name == "Attention(mien)"),
                "{live:?}"
            );
            assert!(
                !live.iter().any(|name| name.starts_with("BatchedProduct")),
                "{live:?}"
            );
            for threads in [1, 2, 3] {
                let run = |m: &TypedModel| run_with_threads(m, inputs.clone(), threads);
                let got = run(&fused)?;
                assert_eq!(
                    got,
                    run(&products)?,
                    "{heads} heads, {tokens} tokens, {threads} threads"
                );
                assert_close(&got[0], &run(&model)?[0], 1e-5, "vs tract");
            }
        }
        Ok(())
    }
}
