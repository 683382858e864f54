//! Products of two runtime operands — attention's `Q · Kᵀ` (with its scale) and `P · V` — on the same tile
//! kernels as the linear layers.
//!
//! tract 0.23.9 runs these with an `OptMatMulPack` per operand and its `16x6` kernel on a 64-step
//! contraction, where a tile's setup and stores weigh as much as its products: ~44 ms of a ViT-B inference
//! at 2 threads, against ~13 ms in onnxruntime. Here each batch entry (head) packs its right operand into
//! panels and its left into row groups and runs [`multiply_packed`]; the threads split the output's
//! outermost axis (the heads of `Q · Kᵀ`, the tokens of `P · V`), so each writes one contiguous part. A
//! softmax over the rows that follows (attention's) runs on each head's rows as soon as they are done,
//! while they are still in cache, instead of as a pass of its own.
//!
//! Where the softmaxed `Q · Kᵀ` feeds `P · V` alone, [`super::attention::fuse_attention`] then replaces the
//! pair by one op that keeps each head's scores in the thread's own buffer.

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::Mul;
use tract_core::ops::nn::{Softmax, SoftmaxKind};
use tract_linalg::multithread::{current_tract_executor, Executor};

use super::{
    kernel, multiply_packed, pack_panels, pack_row_groups, Panels, TileKernel, K_BLOCK, ROWS,
};
use crate::graph::is_binary;
use mien_kernels::softmax::RowKernel;

/// The output axis the threads split: it is the outermost, so each thread's part is contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outer {
    /// The batch axis (heads): `out` is `batch × m × n`, rows and columns within.
    Batch,
    /// The row axis: `out` is `m × (batch, n)`, the batch entries side by side in each row.
    Rows,
}

/// Sizes and strides (in values) of `out[b, i, j] = scale · Σ_s a[b, i, s] · b[b, s, j]`, whose columns
/// `j` are consecutive in `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProductShape {
    /// Batch entries (1 without a batch axis).
    pub batch: usize,
    /// Rows.
    pub m: usize,
    /// Contraction length.
    pub k: usize,
    /// Columns.
    pub n: usize,
    /// Strides of the left operand's batch, row and contraction axes.
    pub a_strides: (usize, usize, usize),
    /// Strides of the right operand's batch, contraction and column axes.
    pub b_strides: (usize, usize, usize),
    /// Strides of the output's batch and row axes.
    pub out_strides: (usize, usize),
    /// The outermost output axis.
    pub outer: Outer,
}

impl ProductShape {
    /// Checks that the operands hold every value the strides reach and that the threads' parts of `out`
    /// (whole entries of its outer axis) are disjoint and cover it.
    pub(super) fn check(&self, a: usize, b: usize, out: usize) -> TractResult<()> {
        let ProductShape {
            batch,
            m,
            k,
            n,
            a_strides,
            b_strides,
            out_strides,
            outer,
        } = *self;
        ensure!(
            batch > 0 && m > 0 && k > 0 && n > 0,
            "empty product {self:?}"
        );
        let last = |strides: [usize; 3], lengths: [usize; 3]| -> usize {
            strides
                .iter()
                .zip(lengths)
                .map(|(stride, len)| stride * (len - 1))
                .sum()
        };
        ensure!(
            a > last([a_strides.0, a_strides.1, a_strides.2], [batch, m, k]),
            "left operand too short: {self:?}"
        );
        ensure!(
            b > last([b_strides.0, b_strides.1, b_strides.2], [batch, k, n]),
            "right operand too short: {self:?}"
        );
        let (batch_stride, row_stride) = out_strides;
        let fits = match outer {
            Outer::Batch => {
                row_stride >= n && batch_stride >= m * row_stride && out == batch * batch_stride
            }
            Outer::Rows => {
                batch_stride >= n && row_stride >= batch * batch_stride && out == m * row_stride
            }
        };
        ensure!(
            fits || batch == 1 && out >= (m - 1) * row_stride + n,
            "output of {out} values for {self:?}"
        );
        Ok(())
    }
}

/// `out = scale · a · b` per batch entry, as `shape` lays them out, then `softmax` on each output row when
/// given; split between the current tract executor's threads along the outer axis.
pub fn batched_multiply(
    kernel: TileKernel,
    shape: &ProductShape,
    scale: f32,
    softmax: Option<RowKernel>,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
) -> TractResult<()> {
    shape.check(a.len(), b.len(), out.len())?;
    let ProductShape {
        batch,
        m,
        k,
        n,
        a_strides,
        b_strides,
        out_strides,
        outer,
    } = *shape;
    let panel_len = k * n.div_ceil(super::COLS) * super::COLS;
    // Batch entries `entries` of rows `first_row..first_row + rows`, written to `out` (from the first
    // entry's first row). The right operand is repacked per entry into one buffer: its padding stays zero.
    let part = |entries: std::ops::Range<usize>, first_row: usize, rows: usize, out: &mut [f32]| {
        let (mut panels, mut groups) = (vec![0f32; panel_len], vec![]);
        for (index, entry) in entries.enumerate() {
            pack_panels(
                &b[entry * b_strides.0..],
                k,
                n,
                (b_strides.1, b_strides.2),
                K_BLOCK,
                scale,
                &mut panels,
            );
            pack_row_groups(
                &a[entry * a_strides.0..],
                first_row,
                rows,
                k,
                (a_strides.1, a_strides.2),
                &mut groups,
            );
            let panels = Panels {
                data: &panels,
                k,
                n,
                k_block: K_BLOCK,
            };
            let entry_out = &mut out[index * out_strides.0..];
            let mut row_slices: Vec<&mut [f32]> = entry_out
                .chunks_mut(out_strides.1)
                .take(rows)
                .map(|row| &mut row[..n])
                .collect();
            multiply_packed(
                kernel,
                &groups,
                &panels,
                0..n.div_ceil(super::COLS),
                None,
                &mut row_slices,
            );
            if let Some(softmax) = softmax {
                row_slices.iter_mut().for_each(|row| softmax(row));
            }
        }
    };
    let executor = current_tract_executor();
    let threads = match &executor {
        Executor::MultiThread(pool) => pool.current_num_threads(),
        _ => 1,
    };
    let (units, unit_len) = match outer {
        Outer::Batch => (batch, out_strides.0),
        Outer::Rows => (m.div_ceil(ROWS), ROWS * out_strides.1),
    };
    match (&executor, threads > 1 && units > 1) {
        (Executor::MultiThread(pool), true) => {
            use rayon::prelude::*;
            let share = units.div_ceil(threads);
            pool.install(|| {
                out.par_chunks_mut(share * unit_len)
                    .enumerate()
                    .for_each(|(index, out)| {
                        let first = index * share;
                        match outer {
                            Outer::Batch => part(first..batch.min(first + share), 0, m, out),
                            Outer::Rows => {
                                let first_row = first * ROWS;
                                part(0..batch, first_row, (share * ROWS).min(m - first_row), out)
                            }
                        }
                    })
            });
        }
        _ => part(0..batch, 0, m, out),
    }
    Ok(())
}

/// A batched product of two runtime f32 operands on the tile kernels ([`batched_multiply`]), with the
/// scale of a following multiplication by a constant folded into the right operand's packing.
#[derive(Clone)]
pub struct BatchedProduct {
    pub(super) kernel: TileKernel,
    pub(super) shape: ProductShape,
    pub(super) scale: f32,
    /// A softmax over each output row, folded in.
    pub(super) softmax: Option<RowKernel>,
    /// Which input is the left operand.
    pub(super) left_slot: usize,
    pub(super) output_shape: TVec<usize>,
}

impl std::fmt::Debug for BatchedProduct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BatchedProduct({:?}, scale={}, softmax={})",
            self.shape,
            self.scale,
            self.softmax.is_some()
        )
    }
}

impl PartialEq for BatchedProduct {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape
            && self.scale.to_bits() == other.scale.to_bits()
            && self.left_slot == other.left_slot
            && self.output_shape == other.output_shape
            && std::ptr::fn_addr_eq(self.kernel, other.kernel)
            && match (self.softmax, other.softmax) {
                (Some(a), Some(b)) => std::ptr::fn_addr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
    }
}

impl Eq for BatchedProduct {}

impl std::hash::Hash for BatchedProduct {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.shape.hash(state);
        self.scale.to_bits().hash(state);
        self.left_slot.hash(state);
        self.output_shape.hash(state);
        self.softmax.is_some().hash(state);
    }
}

impl Op for BatchedProduct {
    fn name(&self) -> StaticName {
        // Profiles group time by name: a folded softmax's time shows where it went.
        if self.softmax.is_some() {
            "BatchedProduct+Softmax(mien)"
        } else {
            "BatchedProduct(mien)"
        }
        .into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let ProductShape {
            batch,
            m,
            k,
            n,
            outer,
            ..
        } = self.shape;
        Ok(vec![format!(
            "{batch} × ({m} × {k}) · ({k} × {n}), scale {}, softmax {}, threads split {outer:?}",
            self.scale,
            self.softmax.is_some()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for BatchedProduct {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (left, right) = (&inputs[self.left_slot], &inputs[1 - self.left_slot]);
        let (left, right) = (left.try_as_plain_ram()?, right.try_as_plain_ram()?);
        let mut output = Tensor::zero::<f32>(&self.output_shape)?;
        {
            let mut out = output.try_as_plain_ram_mut()?;
            batched_multiply(
                self.kernel,
                &self.shape,
                self.scale,
                self.softmax,
                left.as_slice::<f32>()?,
                right.as_slice::<f32>()?,
                out.as_slice_mut::<f32>()?,
            )?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for BatchedProduct {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.iter().all(|f| f.datum_type == f32::datum_type()),
            "BatchedProduct takes f32"
        );
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let ProductShape { batch, m, k, n, .. } = self.shape;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            (batch * m * k * n).into()
        )))
    }

    as_op!();
}

/// A product [`BatchedProduct`] can compute, as found in the graph.
struct Candidate {
    node: usize,
    shape: ProductShape,
    left_slot: usize,
    output_shape: Vec<usize>,
    /// The output axis of the columns.
    column_axis: usize,
}

/// What [`analyse`] says of nodes that are not products of two runtime f32 operands at all.
const NOT_A_CANDIDATE: &str = "not an f32 product of two runtime operands";

fn analyse(model: &TypedModel, node: &TypedNode) -> Result<Candidate, &'static str> {
    let Some(op) = node.op_as::<EinSum>() else {
        return Err(NOT_A_CANDIDATE);
    };
    if op.q_params.is_some() || node.inputs.len() != 2 || op.operating_dt != f32::datum_type() {
        return Err(NOT_A_CANDIDATE);
    }
    let facts: Vec<&TypedFact> = node
        .inputs
        .iter()
        .filter_map(|&i| model.outlet_fact(i).ok())
        .collect();
    if facts.len() != 2
        || facts
            .iter()
            .any(|f| f.konst.is_some() || f.datum_type != f32::datum_type())
    {
        return Err(NOT_A_CANDIDATE);
    }
    let concrete = |fact: &TypedFact| fact.shape.as_concrete().map(|s| s.to_vec());
    let shapes = [concrete(facts[0]), concrete(facts[1])];
    let [Some(shape0), Some(shape1)] = shapes else {
        return Err("an operand's shape is symbolic");
    };
    let output_shape = model
        .outlet_fact(OutletId::new(node.id, 0))
        .ok()
        .and_then(concrete)
        .ok_or("the output's shape is symbolic")?;
    let strides = |shape: &[usize]| -> Vec<usize> {
        natural_strides(shape).iter().map(|&s| s as usize).collect()
    };
    let (strides0, strides1, out_strides) =
        (strides(&shape0), strides(&shape1), strides(&output_shape));
    // For each kind of axis: its stride in input 0, input 1 and the output (0 where absent), its length,
    // and its position in the output.
    type Axis = (usize, usize, usize, usize, usize);
    let (mut batch, mut private0, mut private1, mut contraction): (
        Option<Axis>,
        Option<Axis>,
        Option<Axis>,
        Option<Axis>,
    ) = (None, None, None, None);
    for axis in op.axes.iter_all_axes() {
        let (i0, i1, o) = (&axis.inputs[0], &axis.inputs[1], &axis.outputs[0]);
        if i0.len() > 1 || i1.len() > 1 || o.len() > 1 {
            return Err("an axis repeats inside one operand");
        }
        let sizes = [
            i0.first().map(|&i| shape0[i]),
            i1.first().map(|&i| shape1[i]),
            o.first().map(|&i| output_shape[i]),
        ];
        let size = sizes.iter().flatten().copied().max().unwrap_or(1);
        if size == 1 {
            continue;
        }
        if sizes.iter().flatten().any(|&s| s != size) {
            return Err("an axis broadcasts");
        }
        let found = (
            i0.first().map(|&i| strides0[i]).unwrap_or(0),
            i1.first().map(|&i| strides1[i]).unwrap_or(0),
            o.first().map(|&i| out_strides[i]).unwrap_or(0),
            size,
            o.first().copied().unwrap_or(usize::MAX),
        );
        let slot = match (i0.is_empty(), i1.is_empty(), o.is_empty()) {
            (false, false, false) => &mut batch,
            (false, true, false) => &mut private0,
            (true, false, false) => &mut private1,
            (false, false, true) => &mut contraction,
            _ => return Err("an axis is summed out of one operand"),
        };
        if slot.replace(found).is_some() {
            return Err("several batch, row, column or contraction axes");
        }
    }
    let (Some(private0), Some(private1), Some(contraction)) = (private0, private1, contraction)
    else {
        return Err("not a matrix product (a row, column or contraction axis is missing)");
    };
    // The right operand is the one whose own axis runs along the output's consecutive values.
    let (left_slot, rows, columns) = match (private0.2, private1.2) {
        (_, 1) => (0, private0, private1),
        (1, _) => (1, private1, private0),
        _ => return Err("the output's columns are not consecutive"),
    };
    let pick = |axis: Axis, slot: usize| if slot == 0 { axis.0 } else { axis.1 };
    let (right_slot, batch) = (1 - left_slot, batch.unwrap_or((0, 0, 0, 1, usize::MAX)));
    let outer = if batch.4 < rows.4 {
        Outer::Batch
    } else {
        Outer::Rows
    };
    let shape = ProductShape {
        batch: batch.3,
        m: rows.3,
        k: contraction.3,
        n: columns.3,
        a_strides: (
            pick(batch, left_slot),
            pick(rows, left_slot),
            pick(contraction, left_slot),
        ),
        b_strides: (
            pick(batch, right_slot),
            pick(contraction, right_slot),
            pick(columns, right_slot),
        ),
        out_strides: (batch.2, rows.2),
        outer,
    };
    let out_len = output_shape.iter().product::<usize>();
    let [len0, len1] = [
        shape0.iter().product::<usize>(),
        shape1.iter().product::<usize>(),
    ];
    let (left_len, right_len) = if left_slot == 0 {
        (len0, len1)
    } else {
        (len1, len0)
    };
    shape
        .check(left_len, right_len, out_len)
        .map_err(|_| "the output's parts would overlap")?;
    Ok(Candidate {
        node: node.id,
        shape,
        left_slot,
        output_shape,
        column_axis: columns.4,
    })
}

/// Replaces the f32 products of two runtime operands in a (loaded, not yet optimized) model with
/// [`BatchedProduct`] when this CPU has a tile kernel, folding in a multiplication by a constant scalar
/// that follows; returns how many.
///
/// A product qualifies when it is an `EinSum` with at most one batch axis, one row axis, one column axis
/// and one contraction axis (other axes of size 1), whose output has its columns consecutive and its
/// batch or row axis outermost.
pub fn accelerate_batched_products(model: &mut TypedModel) -> TractResult<usize> {
    let Some(kernel) = kernel() else { return Ok(0) };
    let mut replaced = 0;
    let mut reported = std::collections::HashSet::new();
    loop {
        let mut found = None;
        for id in model.eval_order()? {
            match analyse(model, model.node(id)) {
                Ok(candidate) => {
                    found = Some(candidate);
                    break;
                }
                Err(NOT_A_CANDIDATE) => {}
                Err(reason) => {
                    if reported.insert(id) {
                        tracing::debug!(product = %model.node(id).name, reason, "product left to tract's kernels");
                    }
                }
            }
        }
        let Some(candidate) = found else { break };
        replace(model, candidate, kernel)?;
        replaced += 1;
    }
    tracing::debug!(
        replaced,
        "products of runtime operands on mien's tile kernels"
    );
    Ok(replaced)
}

fn replace(model: &mut TypedModel, candidate: Candidate, kernel: TileKernel) -> TractResult<()> {
    let node = model.node(candidate.node);
    let name = node.name.clone();
    let inputs = node.inputs.clone();
    // The scale: a single successor multiplying by a constant scalar.
    let (mut scale, mut last) = (1.0f32, candidate.node);
    if let [only] = &node.outputs[0].successors[..] {
        let next = model.node(only.node);
        if is_binary::<Mul>(next) {
            let factor = model.outlet_fact(next.inputs[1 - only.slot])?.konst.clone();
            let next_shape = model
                .outlet_fact(OutletId::new(next.id, 0))?
                .shape
                .as_concrete()
                .map(|s| s.to_vec());
            if let (Some(factor), Some(next_shape)) = (factor, next_shape) {
                if factor.datum_type() == f32::datum_type()
                    && factor.len() == 1
                    && next_shape == candidate.output_shape
                {
                    scale = factor
                        .to_plain_array_view::<f32>()?
                        .iter()
                        .copied()
                        .next()
                        .unwrap_or(1.0);
                    last = next.id;
                }
            }
        }
    }
    // The softmax: a single successor normalizing the output's rows (the columns' axis), f32.
    let mut softmax = None;
    if let ([only], Some(row_kernel)) = (
        &model.node(last).outputs[0].successors[..],
        crate::softmax::kernel(),
    ) {
        let next = model.node(only.node);
        if let Some(op) = next.op_as::<Softmax>() {
            let f32_out =
                model.outlet_fact(OutletId::new(next.id, 0))?.datum_type == f32::datum_type();
            if op.kind == SoftmaxKind::Softmax
                && op.quant_output_dt.is_none()
                && op.axes.as_slice() == [candidate.column_axis]
                && f32_out
            {
                softmax = Some(row_kernel);
                last = next.id;
            }
        }
    }
    let op = BatchedProduct {
        kernel,
        shape: candidate.shape,
        scale,
        softmax,
        left_slot: candidate.left_slot,
        output_shape: candidate.output_shape.into(),
    };
    let mut patch = TypedModelPatch::default();
    let tapped = [
        patch.tap_model(model, inputs[0])?,
        patch.tap_model(model, inputs[1])?,
    ];
    let output = patch.wire_node(format!("{name}.batched"), op, &tapped)?[0];
    patch.shunt_outside(model, OutletId::new(last, 0), output)?;
    patch.apply(model)
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::scalar;
    use super::*;
    use mien_kernels::softmax::scalar::softmax_row;

    use crate::graph::{assert_close, run_with_threads, test_values as values};

    /// The product in the kernels' order: per block of [`K_BLOCK`] steps one fused multiply-add per step
    /// from zero (the right operand scaled first), later blocks' sums added to the first's.
    fn reference(
        shape: &ProductShape,
        scale: f32,
        a: &[f32],
        b: &[f32],
        out_len: usize,
    ) -> Vec<f32> {
        let ProductShape {
            batch,
            m,
            k,
            n,
            a_strides: sa,
            b_strides: sb,
            out_strides: so,
            ..
        } = *shape;
        let mut out = vec![0f32; out_len];
        for e in 0..batch {
            for i in 0..m {
                for j in 0..n {
                    let mut total = 0f32;
                    for block_start in (0..k).step_by(K_BLOCK) {
                        let mut acc = 0f32;
                        for s in block_start..k.min(block_start + K_BLOCK) {
                            let right = b[e * sb.0 + s * sb.1 + j * sb.2] * scale;
                            acc = a[e * sa.0 + i * sa.1 + s * sa.2].mul_add(right, acc);
                        }
                        total = if block_start == 0 { acc } else { total + acc };
                    }
                    out[e * so.0 + i * so.1 + j] = total;
                }
            }
        }
        out
    }

    /// Attention's two products for `heads` heads of `d` values over `t` tokens, `k` the contraction of
    /// `P · V` (`t` in a model): `Q · Kᵀ` (`mak,nak->amn`) and `P · V` (`amk,kan->man`).
    fn attention_shapes(heads: usize, t: usize, d: usize) -> [ProductShape; 2] {
        [
            ProductShape {
                batch: heads,
                m: t,
                k: d,
                n: t,
                a_strides: (d, heads * d, 1),
                b_strides: (d, 1, heads * d),
                out_strides: (t * t, t),
                outer: Outer::Batch,
            },
            ProductShape {
                batch: heads,
                m: t,
                k: t,
                n: d,
                a_strides: (t * t, t, 1),
                b_strides: (d, heads * d, 1),
                out_strides: (d, heads * d),
                outer: Outer::Rows,
            },
        ]
    }

    fn lengths(shape: &ProductShape) -> (usize, usize, usize) {
        let ProductShape { batch, m, k, n, .. } = *shape;
        (batch * m * k, batch * k * n, batch * m * n)
    }

    #[test]
    fn matches_the_reference_in_every_layout_and_thread_count() -> TractResult<()> {
        let mut shapes = vec![];
        for (heads, t, d) in [(3, 13, 64), (2, 5, 7), (4, 37, 20), (2, 300, 16)] {
            shapes.extend(attention_shapes(heads, t, d));
        }
        // No batch axis, a transposed left operand, and a contraction across blocks.
        shapes.push(ProductShape {
            batch: 1,
            m: 19,
            k: 600,
            n: 33,
            a_strides: (0, 1, 19),
            b_strides: (0, 33, 1),
            out_strides: (0, 33),
            outer: Outer::Rows,
        });
        for shape in shapes {
            let (a_len, b_len, out_len) = lengths(&shape);
            let (a, b) = (values(a_len, 1), values(b_len, 2));
            let want = reference(&shape, 0.125, &a, &b, out_len);
            // The same with each output row then normalized by the scalar softmax.
            let mut normalized = want.clone();
            for e in 0..shape.batch {
                for i in 0..shape.m {
                    let start = e * shape.out_strides.0 + i * shape.out_strides.1;
                    softmax_row(&mut normalized[start..start + shape.n]);
                }
            }
            for threads in [1, 2, 3] {
                let run =
                    |kernel: TileKernel, softmax: Option<RowKernel>| -> TractResult<Vec<f32>> {
                        let mut got = vec![f32::NAN; out_len];
                        tract_linalg::multithread::multithread_tract_scope(
                            Executor::multithread(threads),
                            || batched_multiply(kernel, &shape, 0.125, softmax, &a, &b, &mut got),
                        )?;
                        Ok(got)
                    };
                assert_eq!(
                    run(scalar::tile_kernel, None)?,
                    want,
                    "{shape:?}, {threads} threads"
                );
                assert_eq!(
                    run(scalar::tile_kernel, Some(softmax_row))?,
                    normalized,
                    "softmax, {shape:?}"
                );
                if let Some(simd) = kernel() {
                    assert_eq!(
                        run(simd, None)?,
                        want,
                        "SIMD kernel, {shape:?}, {threads} threads"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() {
        let [shape, _] = attention_shapes(2, 5, 4);
        let (a_len, b_len, out_len) = lengths(&shape);
        let run = |a: usize, b: usize, out: usize| {
            batched_multiply(
                scalar::tile_kernel,
                &shape,
                1.0,
                None,
                &vec![0.0; a],
                &vec![0.0; b],
                &mut vec![0.0; out],
            )
        };
        assert!(run(a_len, b_len, out_len).is_ok());
        assert!(run(a_len - 1, b_len, out_len).is_err());
        assert!(run(a_len, b_len - 1, out_len).is_err());
        assert!(run(a_len, b_len, out_len + 1).is_err());
    }

    /// Self-attention as tract loads a ViT export after declutter: `Q · Kᵀ`, a scale, softmax, `P · V`.
    pub(in crate::linear) fn attention_model(
        heads: usize,
        t: usize,
        d: usize,
    ) -> TractResult<(TypedModel, TVec<TValue>)> {
        let mut model = TypedModel::default();
        let q = model.add_source("q", f32::fact([t, heads, d]))?;
        let k = model.add_source("k", f32::fact([t, heads, d]))?;
        let v = model.add_source("v", f32::fact([t, heads, d]))?;
        let scores = model.wire_node(
            "qk",
            EinSum::new("mak,nak->amn".parse()?, f32::datum_type()),
            &[q, k],
        )?[0];
        let scale = model.add_const(
            "scale",
            Tensor::from_shape(&[1, 1, 1], &[1.0f32 / (d as f32).sqrt()])?,
        )?;
        let scores = model.wire_node("scaled", tract_core::ops::math::mul(), &[scores, scale])?[0];
        let probs = model.wire_node(
            "softmax",
            tract_core::ops::nn::Softmax::new(
                tvec!(2),
                None,
                tract_core::ops::nn::SoftmaxKind::default(),
            ),
            &[scores],
        )?[0];
        let out = model.wire_node(
            "pv",
            EinSum::new("amk,kan->man".parse()?, f32::datum_type()),
            &[probs, v],
        )?;
        model.select_output_outlets(&out)?;
        let inputs = (0..3)
            .map(|i| {
                Ok(
                    Tensor::from_shape(&[t, heads, d], &values(t * heads * d, 40 + i))?
                        .into_tvalue(),
                )
            })
            .collect::<TractResult<_>>()?;
        Ok((model, inputs))
    }

    #[test]
    fn replaces_attention_products_and_agrees_with_tract() -> TractResult<()> {
        let (mut model, inputs) = attention_model(4, 37, 16)?;
        model.declutter()?;
        let mut ours = model.clone();
        let replaced = accelerate_batched_products(&mut ours)?;
        if kernel().is_none() {
            assert_eq!(replaced, 0);
            return Ok(());
        }
        assert_eq!(replaced, 2, "{ours}");
        let ops: Vec<&BatchedProduct> = ours
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<BatchedProduct>())
            .collect();
        assert_eq!(ops.len(), 2);
        let folded = crate::softmax::kernel().is_some();
        assert!(
            ops.iter().any(|op| op.scale == 0.25
                && op.shape.outer == Outer::Batch
                && op.softmax.is_some() == folded),
            "scale and softmax folded: {ops:?}"
        );
        assert!(
            ops.iter()
                .any(|op| op.scale == 1.0 && op.shape.outer == Outer::Rows && op.softmax.is_none()),
            "{ops:?}"
        );
        let live: Vec<String> = ours
            .eval_order()?
            .iter()
            .map(|&id| ours.node(id).op().name().to_string())
            .collect();
        assert_eq!(
            live.iter().any(|name| name == "Softmax"),
            !folded,
            "{live:?}"
        );
        for threads in [1, 2] {
            let (want, got) = (
                run_with_threads(&model, inputs.clone(), threads)?,
                run_with_threads(&ours, inputs.clone(), threads)?,
            );
            assert_close(
                &got[0],
                &want[0],
                1e-5,
                &format!("vs tract, {threads} threads"),
            );
        }
        Ok(())
    }
}
