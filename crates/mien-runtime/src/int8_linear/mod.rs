//! int8 linear layers (`i8 activation · constant i8 weight → i32`) on a product of mien's own, for cores
//! whose integer matmul in tract costs more than float: aarch64 without SDOT (Cortex-A72, the Raspberry
//! Pi 4). There tract 0.23.9 runs `arm64simd_mmm_i32_8x8`, which widens both operands to i16 and does
//! 4 multiply-adds per SMLAL; an int8 ViT then took more instructions than its f32 plan. The [`neon`]
//! kernel (`mien_kernels::i8_tile`) does 16 per 3 instructions, beside the scalar reference it is tested
//! against.
//!
//! [`accelerate_int8_linear_layers`] runs on the loaded graph when int8 plans take the integer path: each
//! quantized `EinSum` the quantizer wrote (nine inputs, zero points 0 and scales 1, so the plain integer
//! product) with a constant i8 weight that is one matrix product becomes a [`PackedInt8Linear`]. It gives
//! the same i32 sums, so the plan's outputs do not change by a bit; the dequantization that follows stays
//! as it is. Cores with SDOT keep tract's kernel, which does 16 multiply-adds per instruction.
//!
//! Layout: operands are packed in blocks of [`K_STEP`] contraction steps. A weight panel holds [`COLS`]
//! output channels, block after block, each block the columns' 16 values one after the other; a row group
//! holds [`ROWS`] activation rows the same way. A tile kernel call sums one row group against one panel
//! over the whole contraction.


use std::sync::Arc;

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_linalg::multithread::{current_tract_executor, Executor};

use crate::linear::{analyse_product, replace_each, transpose_into, Layout, LinearLayer};

pub use mien_kernels::i8_tile::{Int8TileKernel, BLOCK_BYTES, COLS, K_STEP, ROWS};
/// The reference int8 tile kernel (`mien_kernels::i8_tile::scalar`).
pub use mien_kernels::i8_tile::scalar;

/// Weight bytes a thread keeps hot while it passes all its row groups over them (a share of a 1 MB L2).
const PANEL_BYTES_PER_PASS: usize = 64 * 1024;

/// The kernel for this CPU when mien's product beats tract's here: aarch64 without SDOT
/// (`mien_kernels::dispatch::i8_tile`).
pub fn kernel() -> Option<Int8TileKernel> {
    mien_kernels::dispatch::i8_tile().map(|choice| choice.kernel)
}

/// The name of [`kernel`]'s kernel (or of the scalar reference where there is none), as `mien info` and
/// the profiles list it.
pub fn kernel_name() -> &'static str {
    mien_kernels::dispatch::i8_tile().map_or("mien_scalar_i8_tile", |choice| choice.name)
}

/// A `k × n` i8 weight packed into panels of [`COLS`] channels (channels and steps beyond the matrix are
/// zero). Every value is within ±127, which the SIMD kernels need.
#[derive(Debug, Clone)]
pub struct PackedInt8Weights {
    k: usize,
    n: usize,
    blocks: usize,
    data: Vec<i8>,
}

impl PackedInt8Weights {
    /// Packs the `k × n` matrix whose element `(kk, nn)` is `src[kk * k_stride + nn * n_stride]`; refuses
    /// a matrix holding −128 (two of its products with −128 overflow the kernels' i16 pairs).
    pub fn pack_strided(
        src: &[i8],
        k: usize,
        n: usize,
        k_stride: usize,
        n_stride: usize,
    ) -> TractResult<Self> {
        ensure!(k > 0 && n > 0, "empty weight ({k} × {n})");
        ensure!(
            (k - 1) * k_stride + (n - 1) * n_stride < src.len(),
            "a {k} × {n} weight with strides ({k_stride}, {n_stride}) does not fit in {} values",
            src.len()
        );
        let blocks = k.div_ceil(K_STEP);
        let panels = n.div_ceil(COLS);
        let mut data = vec![0i8; panels * blocks * BLOCK_BYTES];
        for (panel_index, panel) in data.chunks_exact_mut(blocks * BLOCK_BYTES).enumerate() {
            for col in 0..COLS.min(n - panel_index * COLS) {
                let channel = panel_index * COLS + col;
                for kk in 0..k {
                    let value = src[kk * k_stride + channel * n_stride];
                    ensure!(
                        value != i8::MIN,
                        "weight value -128 at ({kk}, {channel}): the kernels need ±127"
                    );
                    panel[(kk / K_STEP) * BLOCK_BYTES + col * K_STEP + kk % K_STEP] = value;
                }
            }
        }
        Ok(PackedInt8Weights { k, n, blocks, data })
    }

    /// Contraction length.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    fn panel(&self, index: usize) -> &[i8] {
        &self.data[index * self.blocks * BLOCK_BYTES..][..self.blocks * BLOCK_BYTES]
    }

    /// `out = x · W` for `x` (`m × k`, or `k × m` when `layout.input_transposed`) and `out` (`m × n`, or
    /// `n × m`), row groups split between the current tract executor's threads.
    pub fn multiply(
        &self,
        kernel: Int8TileKernel,
        x: &[i8],
        out: &mut [i32],
        layout: Layout,
    ) -> TractResult<()> {
        let (k, n) = (self.k, self.n);
        ensure!(
            x.len() % k == 0 && out.len() % n == 0 && out.len() / n == x.len() / k,
            "{} inputs for {} outputs, k {k}, n {n}",
            x.len(),
            out.len()
        );
        let m = x.len() / k;
        let executor = current_tract_executor();
        let pool = match &executor {
            Executor::MultiThread(pool) if pool.current_num_threads() > 1 => Some(&**pool),
            _ => None,
        };
        with_packed_rows(|rows| {
            pack_row_groups(x, m, k, layout.input_transposed, rows);
            if layout.output_transposed {
                let mut row_major = vec![0i32; m * n];
                self.fill_rows(kernel, rows, &mut row_major, pool);
                transpose_into(&row_major, m, n, out, pool);
            } else {
                self.fill_rows(kernel, rows, out, pool);
            }
        });
        Ok(())
    }

    /// Every row of the row-major `out` from the packed row groups, each thread a contiguous share of
    /// the groups.
    fn fill_rows(
        &self,
        kernel: Int8TileKernel,
        packed_rows: &[i8],
        out: &mut [i32],
        pool: Option<&rayon::ThreadPool>,
    ) {
        let n = self.n;
        let group_bytes = self.blocks * BLOCK_BYTES;
        let groups = packed_rows.len() / group_bytes;
        let share = |first_group: usize, out: &mut [i32]| {
            let panels_per_pass = (PANEL_BYTES_PER_PASS / group_bytes).max(1);
            let panel_count = n.div_ceil(COLS);
            for first_panel in (0..panel_count).step_by(panels_per_pass) {
                for (group_offset, group_out) in out.chunks_mut(ROWS * n).enumerate() {
                    let x =
                        &packed_rows[(first_group + group_offset) * group_bytes..][..group_bytes];
                    let valid_rows = group_out.len() / n;
                    for panel in first_panel..panel_count.min(first_panel + panels_per_pass) {
                        let sums = kernel(x, self.panel(panel));
                        let first_col = panel * COLS;
                        let width = COLS.min(n - first_col);
                        for (row, row_sums) in sums.iter().enumerate().take(valid_rows) {
                            group_out[row * n + first_col..][..width]
                                .copy_from_slice(&row_sums[..width]);
                        }
                    }
                }
            }
        };
        match pool {
            Some(pool) if groups > 1 => {
                use rayon::prelude::*;
                let threads = pool.current_num_threads().min(groups);
                let groups_per_share = groups.div_ceil(threads);
                pool.install(|| {
                    out.par_chunks_mut(groups_per_share * ROWS * n)
                        .enumerate()
                        .for_each(|(index, out)| share(index * groups_per_share, out))
                });
            }
            _ => share(0, out),
        }
    }
}

/// Packs the `m × k` activation (`k × m` when `transposed`) into row groups of [`ROWS`] rows, blocks of
/// [`K_STEP`] steps; rows and steps beyond the matrix are zero.
pub fn pack_row_groups(x: &[i8], m: usize, k: usize, transposed: bool, dst: &mut Vec<i8>) {
    let blocks = k.div_ceil(K_STEP);
    let group_bytes = blocks * BLOCK_BYTES;
    dst.clear();
    dst.resize(m.div_ceil(ROWS) * group_bytes, 0);
    for (group_index, group) in dst.chunks_exact_mut(group_bytes).enumerate() {
        for row in 0..ROWS.min(m - group_index * ROWS) {
            let i = group_index * ROWS + row;
            if transposed {
                for kk in 0..k {
                    group[(kk / K_STEP) * BLOCK_BYTES + row * K_STEP + kk % K_STEP] = x[kk * m + i];
                }
            } else {
                let source = &x[i * k..][..k];
                for (block, steps) in source.chunks(K_STEP).enumerate() {
                    group[block * BLOCK_BYTES + row * K_STEP..][..steps.len()]
                        .copy_from_slice(steps);
                }
            }
        }
    }
}

thread_local! {
    /// This thread's packed activation rows, kept from one product to the next.
    static PACKED_ROWS: std::cell::Cell<Vec<i8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's packed-rows buffer (an empty one if a product on this thread is already
/// using it).
fn with_packed_rows<R>(f: impl FnOnce(&mut Vec<i8>) -> R) -> R {
    let mut buffer = PACKED_ROWS.take();
    let result = f(&mut buffer);
    PACKED_ROWS.set(buffer);
    result
}

/// An int8 linear layer on [`PackedInt8Weights`]: the i8 activation is an `m × k` matrix (or `k × m`)
/// whose other axes are all 1; the i32 output is `output_shape`, an `m × n` (or `n × m`) matrix.
#[derive(Clone)]
pub struct PackedInt8Linear {
    weights: Arc<PackedInt8Weights>,
    kernel: Int8TileKernel,
    layout: Layout,
    output_shape: TVec<usize>,
}

impl std::fmt::Debug for PackedInt8Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedInt8Linear(k={}, n={}, {:?})",
            self.weights.k, self.weights.n, self.layout
        )
    }
}

impl PartialEq for PackedInt8Linear {
    fn eq(&self, other: &Self) -> bool {
        // The same op only with the same weights: tract merges equal ops on equal inputs.
        Arc::ptr_eq(&self.weights, &other.weights)
            && self.layout == other.layout
            && self.output_shape == other.output_shape
    }
}
impl Eq for PackedInt8Linear {}

impl std::hash::Hash for PackedInt8Linear {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.weights) as usize).hash(state);
        self.layout.hash(state);
        self.output_shape.hash(state);
    }
}

impl Op for PackedInt8Linear {
    fn name(&self) -> StaticName {
        "PackedInt8Linear(mien)".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "k={} n={} input_transposed={} output_transposed={}",
            self.weights.k,
            self.weights.n,
            self.layout.input_transposed,
            self.layout.output_transposed
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PackedInt8Linear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == 1,
            "PackedInt8Linear: {} inputs",
            inputs.len()
        );
        let plain = inputs[0].try_as_plain_ram()?;
        let x = plain.as_slice::<i8>()?;
        let mut output = Tensor::zero::<i32>(&self.output_shape)?;
        {
            let mut out = output.try_as_plain_ram_mut()?;
            self.weights
                .multiply(self.kernel, x, out.as_slice_mut::<i32>()?, self.layout)?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for PackedInt8Linear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 1 && inputs[0].datum_type == i8::datum_type(),
            "PackedInt8Linear takes one i8 input"
        );
        Ok(tvec!(i32::fact(&*self.output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let m = self.output_shape.iter().product::<usize>() / self.weights.n;
        Ok(tvec!((
            Cost::FMA(i32::datum_type()),
            (m * self.weights.k * self.weights.n).into()
        )))
    }

    as_op!();
}

/// Replaces each plain int8 linear layer of a loaded model with [`PackedInt8Linear`] on `kernel`;
/// returns how many were replaced.
///
/// A layer qualifies when it is a quantized `EinSum` whose seven extra inputs are the trivial
/// quantization parameters (zero points 0, scales 1: the quantizer's i8 × i8 → i32 product), with an i8
/// activation and a constant i8 weight within ±127 that form one matrix product (see
/// [`crate::linear::accelerate_linear_layers`] for the shapes accepted). Layers are replaced one at a time
/// and the graph compacted after each, so a weight's tract copy is freed as soon as its packed copy exists.
pub fn accelerate_int8_linear_layers(
    model: &mut TypedModel,
    kernel: Int8TileKernel,
) -> TractResult<usize> {
    let replaced = replace_each(
        model,
        analyse,
        |model, layer| replace(model, layer, kernel),
        NOT_A_CANDIDATE,
        "int8 layer left to tract's kernels",
    )?;
    tracing::debug!(replaced, "int8 linear layers on mien's product");
    Ok(replaced)
}

/// What [`analyse`] says of nodes that are not plain int8 products of a constant weight.
const NOT_A_CANDIDATE: &str = "not a plain int8 product with a constant weight";

fn analyse(
    model: &TypedModel,
    node: &TypedNode,
) -> Result<(LinearLayer, PackedInt8Weights), &'static str> {
    let Some(op) = node.op_as::<EinSum>() else {
        return Err(NOT_A_CANDIDATE);
    };
    if op.q_params.is_none() || node.inputs.len() != 9 {
        return Err(NOT_A_CANDIDATE);
    }
    let output = model
        .outlet_fact(OutletId::new(node.id, 0))
        .map_err(|_| NOT_A_CANDIDATE)?;
    if output.datum_type != i32::datum_type() {
        return Err(NOT_A_CANDIDATE);
    }
    // bias, a0, a_scale, b0, b_scale, c0, c_scale: the quantizer's 0 and 1, which leave the plain product.
    for (slot, expected) in (2..9).zip([0f32, 0., 1., 0., 1., 0., 1.]) {
        let fact = model
            .outlet_fact(node.inputs[slot])
            .map_err(|_| NOT_A_CANDIDATE)?;
        if !fact
            .konst
            .as_ref()
            .is_some_and(|value| all_equal(value, expected))
        {
            return Err("quantization parameters other than the plain integer product");
        }
    }
    let (act_slot, weight) =
        mien_quantize::target::constant_operand(model, node).ok_or(NOT_A_CANDIDATE)?;
    let activation = model
        .outlet_fact(node.inputs[act_slot])
        .map_err(|_| NOT_A_CANDIDATE)?;
    if weight.datum_type() != i8::datum_type() || activation.datum_type != i8::datum_type() {
        return Err(NOT_A_CANDIDATE);
    }
    let layer = analyse_product(model, node, op, act_slot, weight, 1)?;
    let plain = layer
        .weight
        .try_as_plain_ram()
        .map_err(|_| "the weight is not in memory")?;
    let stored = plain.as_slice::<i8>().map_err(|_| NOT_A_CANDIDATE)?;
    let packed = PackedInt8Weights::pack_strided(
        stored,
        layer.k,
        layer.n,
        layer.weight_strides.0,
        layer.weight_strides.1,
    )
    .map_err(|_| "the weight holds -128")?;
    drop(plain);
    Ok((layer, packed))
}

/// True when every value of `tensor` is `expected`.
fn all_equal(tensor: &Tensor, expected: f32) -> bool {
    let Ok(values) = tensor.cast_to::<f32>() else {
        return false;
    };
    let Ok(plain) = values.try_as_plain_ram() else {
        return false;
    };
    plain
        .as_slice::<f32>()
        .is_ok_and(|values| values.iter().all(|&v| v == expected))
}

fn replace(
    model: &mut TypedModel,
    (layer, weights): (LinearLayer, PackedInt8Weights),
    kernel: Int8TileKernel,
) -> TractResult<()> {
    let name = model.node(layer.node).name.clone();
    let op = PackedInt8Linear {
        weights: Arc::new(weights),
        kernel,
        layout: layer.layout,
        output_shape: layer.output_shape.into(),
    };
    let mut patch = TypedModelPatch::default();
    let input = patch.tap_model(model, layer.input)?;
    let output = patch.wire_node(format!("{name}.packed_i8"), op, &[input])?[0];
    patch.shunt_outside(model, OutletId::new(layer.node, 0), output)?;
    patch.apply(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no extra dependency for unit tests).
    struct Lcg(u64);
    impl Lcg {
        fn next_i8(&mut self) -> i8 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 56) as i8
        }
        fn weight(&mut self) -> i8 {
            self.next_i8().max(-127)
        }
    }

    fn reference(x: &[i8], w_kn: &[i8], m: usize, k: usize, n: usize) -> Vec<i32> {
        let mut out = vec![0i32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|kk| i32::from(x[i * k + kk]) * i32::from(w_kn[kk * n + j]))
                    .sum();
            }
        }
        out
    }

    fn transposed<T: Copy>(matrix: &[T], rows: usize, cols: usize) -> Vec<T> {
        (0..cols)
            .flat_map(|c| (0..rows).map(move |r| matrix[r * cols + c]))
            .collect()
    }

    /// The kernels this machine can run: the scalar reference, and the NEON one on aarch64.
    fn kernels() -> Vec<(&'static str, Int8TileKernel)> {
        #[allow(unused_mut)]
        let mut kernels: Vec<(&'static str, Int8TileKernel)> = vec![("scalar", scalar::tile)];
        #[cfg(target_arch = "aarch64")]
        kernels.push(("neon", mien_kernels::i8_tile::neon::tile));
        kernels
    }

    #[test]
    fn products_equal_plain_integer_sums_in_every_layout() -> TractResult<()> {
        let mut rng = Lcg(7);
        // Sizes off the tile and block grid, and the extremes of i8 in the activation.
        for (m, k, n) in [
            (1, 1, 1),
            (5, 17, 6),
            (4, 16, 4),
            (13, 40, 9),
            (23, 100, 13),
        ] {
            let mut x: Vec<i8> = (0..m * k).map(|_| rng.next_i8()).collect();
            x[0] = i8::MIN;
            let mut w: Vec<i8> = (0..k * n).map(|_| rng.weight()).collect();
            w[0] = -127;
            let expected = reference(&x, &w, m, k, n);
            let packed = PackedInt8Weights::pack_strided(&w, k, n, n, 1)?;
            let packed_t = PackedInt8Weights::pack_strided(&transposed(&w, k, n), k, n, 1, k)?;
            for (name, kernel) in kernels() {
                for input_transposed in [false, true] {
                    for output_transposed in [false, true] {
                        let layout = Layout {
                            input_transposed,
                            output_transposed,
                        };
                        let x_laid = if input_transposed {
                            transposed(&x, m, k)
                        } else {
                            x.clone()
                        };
                        for weights in [&packed, &packed_t] {
                            let mut out = vec![0i32; m * n];
                            weights.multiply(kernel, &x_laid, &mut out, layout)?;
                            let out = if output_transposed {
                                transposed(&out, n, m)
                            } else {
                                out
                            };
                            assert_eq!(
                                out, expected,
                                "{name} kernel, m {m} k {k} n {n}, {layout:?}"
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    proptest::proptest! {
        // Random sizes around the tile and block grid, any i8 activations, weights within ±127.
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, failure_persistence: None, ..Default::default() })]
        #[test]
        fn any_sizes_and_values_give_the_plain_sums(m in 1usize..23, k in 1usize..70, n in 1usize..19, seed: u64,
                                                     input_transposed: bool, output_transposed: bool) {
            let mut rng = Lcg(seed);
            let x: Vec<i8> = (0..m * k).map(|_| rng.next_i8()).collect();
            let w: Vec<i8> = (0..k * n).map(|_| rng.weight()).collect();
            let expected = reference(&x, &w, m, k, n);
            let packed = PackedInt8Weights::pack_strided(&w, k, n, n, 1).unwrap();
            let layout = Layout { input_transposed, output_transposed };
            let x_laid = if input_transposed { transposed(&x, m, k) } else { x.clone() };
            for (name, kernel) in kernels() {
                let mut out = vec![0i32; m * n];
                packed.multiply(kernel, &x_laid, &mut out, layout).unwrap();
                let out = if output_transposed { transposed(&out, n, m) } else { out };
                proptest::prop_assert_eq!(&out, &expected, "{} kernel, m {} k {} n {}", name, m, k, n);
            }
        }
    }

    #[test]
    fn threads_split_row_groups_without_changing_a_value() -> TractResult<()> {
        let (m, k, n) = (37, 64, 20);
        let mut rng = Lcg(11);
        let x: Vec<i8> = (0..m * k).map(|_| rng.next_i8()).collect();
        let w: Vec<i8> = (0..k * n).map(|_| rng.weight()).collect();
        let packed = PackedInt8Weights::pack_strided(&w, k, n, n, 1)?;
        let expected = reference(&x, &w, m, k, n);
        for threads in [2, 3, 16] {
            let executor = Executor::multithread(threads);
            let mut out = vec![0i32; m * n];
            tract_linalg::multithread::multithread_tract_scope(executor, || {
                packed.multiply(scalar::tile, &x, &mut out, Layout::default())
            })?;
            assert_eq!(out, expected, "{threads} threads");
        }
        Ok(())
    }

    /// `x · W` as the quantizer writes it (a nine-input quantized EinSum with zero points 0 and scales 1),
    /// in `expr`'s layout, with x and W random i8 (W within ±127, or holding −128 when asked).
    fn quantized_product(
        expr: &str,
        x_shape: &[usize],
        w_shape: &[usize],
        with_minus_128: bool,
    ) -> TractResult<(TypedModel, Tensor)> {
        let mut rng = Lcg(3);
        let x_len: usize = x_shape.iter().product();
        let x = Tensor::from_shape(
            x_shape,
            &(0..x_len).map(|_| rng.next_i8()).collect::<Vec<_>>(),
        )?;
        let mut w: Vec<i8> = (0..w_shape.iter().product())
            .map(|_| rng.weight())
            .collect();
        if with_minus_128 {
            w[1] = i8::MIN;
        }
        let mut model = TypedModel::default();
        let input = model.add_source("x", i8::fact(x_shape))?;
        let weight = model.add_const("w", Tensor::from_shape(w_shape, &w)?)?;
        let zero = model.add_const("zero", tensor0(0i32))?;
        let one = model.add_const("one", tensor0(1f32))?;
        let (ins, out) = expr.split_once("->").unwrap();
        let axes: AxesMapping = format!("{ins},,,,,,,->{out}").parse()?;
        let op = EinSum::newq(axes, i32::datum_type(), i32::datum_type());
        let y = model.wire_node(
            "product",
            op,
            &[input, weight, zero, zero, one, zero, one, zero, one],
        )?[0];
        model.select_output_outlets(&[y])?;
        Ok((model, x))
    }

    fn run(model: TypedModel, x: &Tensor) -> TractResult<Tensor> {
        let outputs = model.into_runnable()?.run(tvec!(x.clone().into_tvalue()))?;
        Ok(outputs[0].clone().into_tensor())
    }

    #[test]
    fn replaces_the_quantizers_products_and_gives_tracts_exact_sums() -> TractResult<()> {
        // The layouts tract's declutter leaves linear layers in, as the quantizer's tests list them.
        let layouts: [(&str, &[usize], &[usize]); 6] = [
            ("amk,akn->amn", &[1, 12, 16], &[1, 16, 8]),
            ("amk,kn->mn", &[1, 12, 16], &[16, 8]),
            ("mk,nk->mn", &[12, 16], &[8, 16]),
            ("mk,kn->amn", &[12, 16], &[16, 8]),
            ("mbk,bkn->amn", &[12, 1, 16], &[1, 16, 8]),
            ("km,kn->nm", &[40, 7], &[40, 9]),
        ];
        for (name, kernel) in kernels() {
            for (expr, x_shape, w_shape) in layouts {
                let (model, x) = quantized_product(expr, x_shape, w_shape, false)?;
                let expected = run(model.clone().into_optimized()?, &x)?;
                let mut ours = model;
                assert_eq!(
                    accelerate_int8_linear_layers(&mut ours, kernel)?,
                    1,
                    "{expr}"
                );
                assert!(
                    ours.nodes().iter().any(|n| n.op_is::<PackedInt8Linear>()),
                    "{expr}"
                );
                assert_eq!(
                    run(ours.into_optimized()?, &x)?,
                    expected,
                    "{name} kernel, {expr}"
                );
            }
        }
        // A weight holding −128 stays on tract's kernel.
        let (mut model, _) = quantized_product("mk,kn->mn", &[12, 16], &[16, 8], true)?;
        assert_eq!(accelerate_int8_linear_layers(&mut model, scalar::tile)?, 0);
        Ok(())
    }

    #[test]
    fn a_weight_holding_minus_128_is_refused() {
        let w = [1i8, -128, 3, 4];
        let error = PackedInt8Weights::pack_strided(&w, 2, 2, 2, 1)
            .unwrap_err()
            .to_string();
        assert!(error.contains("-128 at (0, 1)"), "{error}");
        assert!(
            PackedInt8Weights::pack_strided(&w, 2, 3, 2, 1).is_err(),
            "a weight beyond its slice"
        );
    }
}
