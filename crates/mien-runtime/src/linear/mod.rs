//! f32 linear layers (`activation · constant weight + bias`) on a cache-blocked matrix product of mien's
//! own, over the tile kernels of `mien_kernels::f32_tile` (a scalar reference and an x86-64 AVX2 + FMA
//! version, picked at run time, that matches it bit for bit).
//!
//! tract 0.23.9 runs these on its `fma_mmm_f32_16x6` kernel over the whole contraction at once: for a
//! ViT-B layer (K = 768 or 3072) a 16-wide weight panel is 48–196 KB, so each tile streams both operands
//! from L2 and the kernel idles on loads. Here the weights are packed once at load in blocks of
//! [`K_BLOCK`] steps (a 16-wide panel of a block is 48 KB, read from L2 by every row group of the
//! thread's share while it passes over the panel), and the bias of a following `Add` is folded in as the
//! tiles' starting value. Rows are split between the inference threads, one contiguous share each.
//!
//! [`accelerate_linear_layers`] runs on the loaded graph before tract optimizes it: each f32 `EinSum` with
//! a constant weight that is one matrix product becomes a [`PackedLinear`], whether tract left its
//! activation and output row-major (HF ViT) or channel-major (DINOv2: the packing reads the activation by
//! stride, and a transposed output is written through a scratch buffer). Other CPUs (no AVX2, ARM) keep
//! tract's products: on ARM the int8 plans are the fast path.

pub mod attention;
pub mod batched;

use std::sync::Arc;

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::{Add, Mul};
use tract_linalg::multithread::{current_tract_executor, Executor};

pub use mien_kernels::f32_tile::{Start, TileKernel, COLS, ROWS, TILE};
/// The scalar reference tile kernel (`mien_kernels::f32_tile::scalar`).
pub use mien_kernels::f32_tile::scalar;

use crate::activation::Activation;
use crate::graph::{is_binary, per_axis_values};

/// Contraction steps per block, by default. Blocks of 256 (a panel's block in L1) were measured slower
/// at two threads: each block's pass loads and stores every output tile again, and a thread's output
/// rows (1.2 MB for a ViT-B MLP layer) live in the shared L3. ViT-B's layers at 2 threads, 40 alternated
/// runs each: 768 vs 256 was 2-4 % faster for K = 768 → 3072 and 3072 → 768, up to 10 % for 768 → 768.
pub const K_BLOCK: usize = 768;

/// How a linear layer's activation (`m × k`) and output (`m × n`) lie in memory: row-major, or
/// transposed (`k × m`, `n × m`). tract's declutter leaves some ViT exports channel-major (DINOv2's,
/// whose patch embedding's transpose it moves down the graph), so both occur.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Layout {
    /// The activation is `k × m`.
    pub input_transposed: bool,
    /// The output is `n × m`.
    pub output_transposed: bool,
}

/// The SIMD tile kernel for this CPU, if it has one (`mien_kernels::dispatch::f32_tile`).
pub fn kernel() -> Option<TileKernel> {
    mien_kernels::dispatch::f32_tile().map(|choice| choice.kernel)
}

/// The name of [`kernel`]'s kernel (or of the scalar reference where there is none), for reports.
pub fn kernel_name() -> &'static str {
    mien_kernels::dispatch::f32_tile().map_or("mien_scalar_f32_tile", |choice| choice.name)
}

/// What each thread does to its share of a product's (row-major) output once it is computed, while the
/// share is still in its cache: folded from the nodes that followed the layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// The output already holds values the products are added to (a residual connection taken over in
    /// place: no output to allocate and clear, no pass to add it).
    pub onto_output: bool,
    /// Added first, laid out like the output (a residual connection that could not be taken over).
    pub residual: Option<&'a [f32]>,
    /// Then applied to every value.
    pub activation: Option<Activation>,
}

impl Epilogue<'_> {
    /// Applies it to `rows`, pieces of the output's rows `first_row..` (each `n` wide) from column
    /// `first_col` on.
    fn apply(
        &self,
        rows: &mut [&mut [f32]],
        first_row: usize,
        first_col: usize,
        n: usize,
    ) -> TractResult<()> {
        if let Some(residual) = self.residual {
            for (index, piece) in rows.iter_mut().enumerate() {
                let start = (first_row + index) * n + first_col;
                piece
                    .iter_mut()
                    .zip(&residual[start..])
                    .for_each(|(v, r)| *v += r);
            }
        }
        match self.activation {
            Some(activation) => activation.apply_each(rows),
            None => Ok(()),
        }
    }
}

/// A `k × n` weight matrix and its bias, packed for the tile kernels: for each block of `k_block`
/// contraction steps, the panels of [`COLS`] output channels one after the other, each panel `kc` steps
/// of `COLS` weights (channels beyond `n` are zero).
#[derive(Debug, Clone)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    k_block: usize,
    panels: usize,
    /// The packed values start at `data[offset]`, 64-byte aligned (a panel row is one cache line).
    data: Vec<f32>,
    offset: usize,
    /// Padded with zeros to whole panels.
    bias: Option<Vec<f32>>,
}

impl PackedWeights {
    /// Packs a row-major `k × n` matrix.
    pub fn pack(kn: &[f32], k: usize, n: usize) -> TractResult<PackedWeights> {
        PackedWeights::pack_strided(kn, k, n, n, 1)
    }

    /// Packs a `k × n` matrix whose element `(kk, nn)` is `src[kk * k_stride + nn * n_stride]` (a
    /// transposed `n × k` weight has `k_stride` 1 and `n_stride` `k`).
    pub fn pack_strided(
        src: &[f32],
        k: usize,
        n: usize,
        k_stride: usize,
        n_stride: usize,
    ) -> TractResult<PackedWeights> {
        PackedWeights::pack_blocked(src, k, n, k_stride, n_stride, K_BLOCK)
    }

    /// [`PackedWeights::pack_strided`] with blocks of `k_block` contraction steps instead of [`K_BLOCK`]
    /// (for tuning to a CPU's L1 size).
    pub fn pack_blocked(
        src: &[f32],
        k: usize,
        n: usize,
        k_stride: usize,
        n_stride: usize,
        k_block: usize,
    ) -> TractResult<PackedWeights> {
        ensure!(
            k > 0 && n > 0 && k_block > 0,
            "empty {k} × {n} weight or block of {k_block}"
        );
        let last = (k - 1) * k_stride + (n - 1) * n_stride;
        ensure!(
            src.len() > last,
            "weight is {} values, too few for {k} × {n} with strides {k_stride}, {n_stride}",
            src.len()
        );
        let panels = n.div_ceil(COLS);
        // A zeroed Vec of this size comes from fresh pages: no clearing pass before the packing writes.
        let len = k * panels * COLS;
        let mut data = vec![0f32; len + 15];
        let offset = (64 - data.as_ptr() as usize % 64) % 64 / std::mem::size_of::<f32>();
        pack_panels(
            src,
            k,
            n,
            (k_stride, n_stride),
            k_block,
            1.0,
            &mut data[offset..][..len],
        );
        Ok(PackedWeights {
            k,
            n,
            k_block,
            panels,
            data,
            offset,
            bias: None,
        })
    }

    /// Adds a bias of one value per output channel.
    pub fn with_bias(mut self, bias: Vec<f32>) -> TractResult<PackedWeights> {
        ensure!(
            bias.len() == self.n,
            "bias has {} values, expected {}",
            bias.len(),
            self.n
        );
        let mut padded = bias;
        padded.resize(self.panels * COLS, 0.0);
        self.bias = Some(padded);
        Ok(self)
    }

    /// Multiplies every output channel `j` (its weights and bias) by `factors[j]`.
    pub fn scale_channels(&mut self, factors: &[f32]) -> TractResult<()> {
        ensure!(
            factors.len() == self.n,
            "{} factors for {} channels",
            factors.len(),
            self.n
        );
        let (k, n, k_block, panels) = (self.k, self.n, self.k_block, self.panels);
        let len = k * panels * COLS;
        let data = &mut self.data[self.offset..][..len];
        for (block_start, block) in (0..k)
            .step_by(k_block)
            .zip(data.chunks_mut(k_block * panels * COLS))
        {
            let kc = k_block.min(k - block_start);
            for (panel, values) in block.chunks_exact_mut(kc * COLS).enumerate() {
                let factors = &factors[panel * COLS..n.min(panel * COLS + COLS)];
                for step in values.chunks_exact_mut(COLS) {
                    step.iter_mut().zip(factors).for_each(|(w, f)| *w *= f);
                }
            }
        }
        if let Some(bias) = &mut self.bias {
            bias.iter_mut().zip(factors).for_each(|(b, f)| *b *= f);
        }
        Ok(())
    }

    /// Adds `offsets` (one per output channel) to the bias.
    pub fn add_to_bias(&mut self, offsets: &[f32]) -> TractResult<()> {
        ensure!(
            offsets.len() == self.n,
            "{} offsets for {} channels",
            offsets.len(),
            self.n
        );
        let bias = self
            .bias
            .get_or_insert_with(|| vec![0.0; self.panels * COLS]);
        bias.iter_mut().zip(offsets).for_each(|(b, o)| *b += o);
        Ok(())
    }

    /// The packed values.
    fn packed(&self) -> &[f32] {
        &self.data[self.offset..][..self.k * self.panels * COLS]
    }

    /// Contraction length.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `out = x · W (+ bias)` for row-major `x` (`m × k`) and `out` (`m × n`), rows split between the
    /// current tract executor's threads.
    pub fn multiply(&self, kernel: TileKernel, x: &[f32], out: &mut [f32]) -> TractResult<()> {
        self.multiply_laid_out(kernel, x, out, Layout::default())
    }

    /// [`PackedWeights::multiply`] with `x` and `out` laid out as `layout` says. A transposed output is
    /// computed row-major into a scratch buffer and transposed into `out`.
    pub fn multiply_laid_out(
        &self,
        kernel: TileKernel,
        x: &[f32],
        out: &mut [f32],
        layout: Layout,
    ) -> TractResult<()> {
        self.multiply_with(kernel, x, out, layout, Epilogue::default())
    }

    /// [`PackedWeights::multiply_laid_out`], then `epilogue` on every output value, each thread on its
    /// own share as soon as it is computed.
    pub fn multiply_with(
        &self,
        kernel: TileKernel,
        x: &[f32],
        out: &mut [f32],
        layout: Layout,
        epilogue: Epilogue,
    ) -> TractResult<()> {
        let (k, n) = (self.k, self.n);
        ensure!(
            x.len() % k == 0 && out.len() % n == 0 && out.len() / n == x.len() / k,
            "{} inputs for {} outputs, k {k}, n {n}",
            x.len(),
            out.len()
        );
        if let Some(residual) = epilogue.residual {
            ensure!(
                residual.len() == out.len(),
                "residual of {} values for {} outputs",
                residual.len(),
                out.len()
            );
        }
        ensure!(
            !(layout.output_transposed && (epilogue.residual.is_some() || epilogue.onto_output)),
            "a residual is added to row-major outputs only"
        );
        let packed = self.packed();
        let m = x.len() / k;
        let executor = current_tract_executor();
        let pool = match &executor {
            Executor::MultiThread(pool) if pool.current_num_threads() > 1 => Some(&**pool),
            _ => None,
        };
        if layout.output_transposed {
            let mut rows = vec![0f32; m * n];
            self.fill_rows(
                kernel,
                packed,
                x,
                layout.input_transposed,
                &mut rows,
                epilogue,
                pool,
            )?;
            transpose_into(&rows, m, n, out, pool);
            Ok(())
        } else {
            self.fill_rows(
                kernel,
                packed,
                x,
                layout.input_transposed,
                out,
                epilogue,
                pool,
            )
        }
    }

    /// All rows of the row-major `out`. With several threads, each takes a contiguous share of the tiles
    /// in row order (see [`tile_shares`]) and packs its rows itself; when there are too few rows for
    /// that, a contiguous share of the weight's panels. Each thread then applies `epilogue` to its share.
    #[allow(clippy::too_many_arguments)]
    fn fill_rows(
        &self,
        kernel: TileKernel,
        packed: &[f32],
        x: &[f32],
        input_transposed: bool,
        out: &mut [f32],
        epilogue: Epilogue,
        pool: Option<&rayon::ThreadPool>,
    ) -> TractResult<()> {
        use rayon::prelude::*;
        let (k, n) = (self.k, self.n);
        let m = out.len() / n;
        let strides = if input_transposed { (1, m) } else { (k, 1) };
        let panels = Panels {
            data: packed,
            k,
            n,
            k_block: self.k_block,
        };
        let panel_count = n.div_ceil(COLS);
        let bias = self.bias.as_deref();
        let mut rows: Vec<&mut [f32]> = out.chunks_exact_mut(n).collect();
        let threads = pool.map(|pool| pool.current_num_threads()).unwrap_or(1);
        // The epilogue on row pieces `rows` of output rows `first_row..`, from column `first_col`.
        let finish = |first_row: usize, first_col: usize, rows: &mut [&mut [f32]]| {
            epilogue.apply(rows, first_row, first_col, n)
        };
        match pool {
            Some(pool) if m >= threads * 2 * ROWS => {
                let shares = tile_shares(rows, n, threads);
                pool.install(|| {
                    shares.into_par_iter().try_for_each(|share| {
                        let Some(first_group) = share.first().map(|tiles| tiles.group) else {
                            return Ok(());
                        };
                        let group_count = share
                            .last()
                            .map_or(0, |tiles| tiles.group + 1 - first_group);
                        let first_row = first_group * ROWS;
                        let row_count = (m - first_row).min(group_count * ROWS);
                        with_packed_rows(|packed_rows| {
                            pack_row_groups(x, first_row, row_count, k, strides, packed_rows);
                            let groups: Vec<(usize, usize)> = share
                                .iter()
                                .map(|tiles| (tiles.group, tiles.panels.start))
                                .collect();
                            let mut tiles: Vec<GroupTiles> = share
                                .into_iter()
                                .map(|tiles| GroupTiles {
                                    x: &packed_rows[(tiles.group - first_group) * k * ROWS..]
                                        [..k * ROWS],
                                    panels: tiles.panels,
                                    rows: tiles.rows,
                                })
                                .collect();
                            multiply_groups(
                                kernel,
                                &panels,
                                bias,
                                epilogue.onto_output,
                                &mut tiles,
                            );
                            tiles.iter_mut().zip(groups).try_for_each(
                                |(tiles, (group, first_panel))| {
                                    finish(group * ROWS, first_panel * COLS, &mut tiles.rows)
                                },
                            )
                        })
                    })
                })
            }
            Some(pool) if panel_count >= threads * 2 => with_packed_rows(|groups| {
                pack_row_groups(x, 0, m, k, strides, groups);
                let share = panel_count.div_ceil(threads);
                let ranges: Vec<std::ops::Range<usize>> = (0..panel_count)
                    .step_by(share)
                    .map(|first| first..panel_count.min(first + share))
                    .collect();
                // Each row cut at the shares' first columns: one list of row pieces per thread.
                let mut parts: Vec<Vec<&mut [f32]>> =
                    ranges.iter().map(|_| Vec::with_capacity(m)).collect();
                for row in rows {
                    let mut rest = row;
                    for (part, range) in parts.iter_mut().zip(&ranges) {
                        let width = n.min(range.end * COLS) - range.start * COLS;
                        let (piece, others) = std::mem::take(&mut rest).split_at_mut(width);
                        part.push(piece);
                        rest = others;
                    }
                }
                pool.install(|| {
                    parts
                        .into_par_iter()
                        .zip(ranges)
                        .try_for_each(|(mut rows, range)| {
                            let first_col = range.start * COLS;
                            let tiles = &mut row_groups(groups, &panels, range, &mut rows);
                            multiply_groups(kernel, &panels, bias, epilogue.onto_output, tiles);
                            finish(0, first_col, &mut rows)
                        })
                })
            }),
            _ => with_packed_rows(|groups| {
                pack_row_groups(x, 0, m, k, strides, groups);
                let tiles = &mut row_groups(groups, &panels, 0..panel_count, &mut rows);
                multiply_groups(kernel, &panels, bias, epilogue.onto_output, tiles);
                finish(0, 0, &mut rows)
            }),
        }
    }
}

thread_local! {
    /// This thread's packed activation rows, kept from one product to the next: [`pack_row_groups`]
    /// zero-fills only what a buffer grows by, so a fresh one per product would be cleared every time.
    static PACKED_ROWS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's packed-rows buffer (an empty one if a product on this thread is already
/// using it, as when a thread waiting for its pool runs another job meanwhile).
fn with_packed_rows<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    let mut buffer = PACKED_ROWS.take();
    let result = f(&mut buffer);
    PACKED_ROWS.set(buffer);
    result
}

/// Packs the `k × n` matrix whose element `(kk, nn)` is `src[kk * strides.0 + nn * strides.1]`, times
/// `scale`, into `dst` as [`PackedWeights`] lays it out (blocks of `k_block` steps, panels of [`COLS`]
/// channels, channels beyond `n` left as they are: zero in a zeroed `dst`).
pub fn pack_panels(
    src: &[f32],
    k: usize,
    n: usize,
    strides: (usize, usize),
    k_block: usize,
    scale: f32,
    dst: &mut [f32],
) {
    let (k_stride, n_stride) = strides;
    let panels = n.div_ceil(COLS);
    for (block_start, block) in (0..k)
        .step_by(k_block)
        .zip(dst[..k * panels * COLS].chunks_mut(k_block * panels * COLS))
    {
        let kc = k_block.min(k - block_start);
        if n_stride == 1 {
            // Row-major: each source row read in order (the prefetchers follow it), its panels' pieces
            // written `kc` steps apart.
            for step in 0..kc {
                let row = &src[(block_start + step) * k_stride..][..n];
                for (panel, piece) in row.chunks(COLS).enumerate() {
                    let dst = &mut block[(panel * kc + step) * COLS..][..piece.len()];
                    dst.iter_mut().zip(piece).for_each(|(d, &s)| *d = s * scale);
                }
            }
        } else {
            for (panel, out) in block.chunks_exact_mut(kc * COLS).enumerate() {
                for col in 0..COLS.min(n - panel * COLS) {
                    let column = &src[(panel * COLS + col) * n_stride..];
                    for (step, dst) in out.chunks_exact_mut(COLS).enumerate() {
                        dst[col] = column[(block_start + step) * k_stride] * scale;
                    }
                }
            }
        }
    }
}

/// Packs rows `first_row..first_row + m` of a matrix whose element `(row, kk)` is
/// `src[row * strides.0 + kk * strides.1]` into the start of `groups` as the tile kernels read
/// activations: row groups of [`ROWS`], each `k` steps of `ROWS` values (rows past the last are zero).
/// `groups` grows to fit and is never shrunk.
pub fn pack_row_groups(
    src: &[f32],
    first_row: usize,
    m: usize,
    k: usize,
    strides: (usize, usize),
    groups: &mut Vec<f32>,
) {
    let (row_stride, k_stride) = strides;
    // Every value of a whole group is written below; only the missing rows of a last, short group are
    // zeroed. A reused buffer is neither cleared nor shrunk (growing it again would zero-fill the growth):
    // values past the groups are left as they were.
    let len = m.div_ceil(ROWS) * k * ROWS;
    if groups.len() < len {
        groups.resize(len, 0.0);
    }
    for (group_index, group) in groups[..len].chunks_exact_mut(k * ROWS).enumerate() {
        let row = first_row + group_index * ROWS;
        let rows = ROWS.min(m - group_index * ROWS);
        if row_stride == 1 {
            // Transposed (k × m): a step's ROWS values are consecutive.
            if rows == ROWS {
                for (step, dst) in group.chunks_exact_mut(ROWS).enumerate() {
                    dst.copy_from_slice(&src[step * k_stride + row..][..ROWS]);
                }
            } else {
                for (step, dst) in group.chunks_exact_mut(ROWS).enumerate() {
                    dst[..rows].copy_from_slice(&src[step * k_stride + row..][..rows]);
                    dst[rows..].fill(0.0);
                }
            }
        } else if k_stride == 1 && rows == ROWS {
            // Row-major: six rows read side by side, the group written in order.
            let sources: [&[f32]; ROWS] =
                std::array::from_fn(|r| &src[(row + r) * row_stride..][..k]);
            for (step, dst) in group.chunks_exact_mut(ROWS).enumerate() {
                for (d, source) in dst.iter_mut().zip(&sources) {
                    *d = source[step];
                }
            }
        } else {
            for (step, dst) in group.chunks_exact_mut(ROWS).enumerate() {
                for (r, d) in dst.iter_mut().enumerate() {
                    *d = if r < rows {
                        src[(row + r) * row_stride + step * k_stride]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// A `k × n` matrix packed as [`pack_panels`] lays it out.
#[derive(Debug, Clone, Copy)]
pub struct Panels<'a> {
    /// The packed values.
    pub data: &'a [f32],
    /// Contraction length.
    pub k: usize,
    /// Columns (output channels).
    pub n: usize,
    /// Contraction steps per block.
    pub k_block: usize,
}

/// `rows = groups · panels (+ bias)` on the panels `panel_range`, for the rows packed by
/// [`pack_row_groups`] (one group per [`ROWS`] of `rows`): each of `rows` holds the output columns of
/// those panels, from the first panel's first column.
pub fn multiply_packed(
    kernel: TileKernel,
    groups: &[f32],
    panels: &Panels,
    panel_range: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    rows: &mut [&mut [f32]],
) {
    multiply_groups(
        kernel,
        panels,
        bias,
        false,
        &mut row_groups(groups, panels, panel_range, rows),
    )
}

/// `rows` (one group per [`ROWS`]) and their packed `groups` as [`GroupTiles`] on the panels `panel_range`.
fn row_groups<'a>(
    groups: &'a [f32],
    panels: &Panels,
    panel_range: std::ops::Range<usize>,
    rows: &'a mut [&mut [f32]],
) -> Vec<GroupTiles<'a>> {
    rows.chunks_mut(ROWS)
        .zip(groups.chunks_exact(panels.k * ROWS))
        .map(|(rows, x)| GroupTiles {
            x,
            panels: panel_range.clone(),
            rows: rows.iter_mut().map(|row| &mut **row).collect(),
        })
        .collect()
}

/// One row group's share of a product: its packed activations (`k` steps of [`ROWS`] values, as
/// [`pack_row_groups`] lays a group out), the weight panels it takes, and its output rows (at most
/// [`ROWS`]), each holding the columns of those panels from the first panel's first column.
#[derive(Debug)]
pub struct GroupTiles<'a> {
    /// The group's packed activations.
    pub x: &'a [f32],
    /// The weight panels this share covers.
    pub panels: std::ops::Range<usize>,
    /// The output rows' pieces.
    pub rows: Vec<&'a mut [f32]>,
}

/// `rows = x · panels (+ bias)` for each of `groups` on its own panels (`rows +=` with `onto_output`).
/// Blocks of the contraction run outermost and each weight panel once per block across all groups that
/// take it, so a panel is read from memory once while it sits in L1.
pub fn multiply_groups(
    kernel: TileKernel,
    panels: &Panels,
    bias: Option<&[f32]>,
    onto_output: bool,
    groups: &mut [GroupTiles],
) {
    let Panels {
        data,
        k,
        n,
        k_block,
    } = *panels;
    let panel_count = n.div_ceil(COLS);
    let first = groups
        .iter()
        .map(|group| group.panels.start)
        .min()
        .unwrap_or(0);
    let end = groups
        .iter()
        .map(|group| group.panels.end)
        .max()
        .unwrap_or(0);
    let mut edge = [0f32; TILE];
    for (block_start, block) in (0..k)
        .step_by(k_block)
        .zip(data.chunks(k_block * panel_count * COLS))
    {
        let kc = k_block.min(k - block_start);
        for panel in first..end {
            let w = &block[panel * kc * COLS..][..kc * COLS];
            let col = panel * COLS;
            let cols = COLS.min(n - col);
            let start = match bias.map(|bias| <&[f32; COLS]>::try_from(&bias[col..col + COLS])) {
                _ if block_start > 0 => Start::Accumulate,
                Some(Ok(bias)) if onto_output => Start::BiasAccumulate(bias),
                Some(Ok(bias)) => Start::Bias(bias),
                None if onto_output => Start::Accumulate,
                None | Some(Err(_)) => Start::Zero,
            };
            for group in groups
                .iter_mut()
                .filter(|group| group.panels.contains(&panel))
            {
                let local = (panel - group.panels.start) * COLS;
                let xs = &group.x[block_start * ROWS..][..kc * ROWS];
                match &mut group.rows[..] {
                    [a, b, c, d, e, f] if cols == COLS => {
                        let span = local..local + COLS;
                        let tile = [
                            &mut a[span.clone()],
                            &mut b[span.clone()],
                            &mut c[span.clone()],
                            &mut d[span.clone()],
                            &mut e[span.clone()],
                            &mut f[span],
                        ];
                        kernel(xs, w, tile, start);
                    }
                    tile_rows => {
                        // A tile over the edge of the output: through a full-size copy.
                        for (row, copy) in tile_rows.iter().zip(edge.chunks_exact_mut(COLS)) {
                            copy[..cols].copy_from_slice(&row[local..local + cols]);
                        }
                        let mut pieces = edge.chunks_exact_mut(COLS);
                        kernel(
                            xs,
                            w,
                            std::array::from_fn(|_| pieces.next().expect("a tile of rows")),
                            start,
                        );
                        for (row, copy) in tile_rows.iter_mut().zip(edge.chunks_exact(COLS)) {
                            row[local..local + cols].copy_from_slice(&copy[..cols]);
                        }
                    }
                }
            }
        }
    }
}

/// A thread's share of a row-split product, one row group at a time.
struct ShareTiles<'a> {
    group: usize,
    panels: std::ops::Range<usize>,
    rows: Vec<&'a mut [f32]>,
}

/// Splits the `(row group, panel)` tiles of the output `rows` (each `n` wide) into `threads` runs of
/// consecutive tiles, as even as whole tiles allow: a row group at a boundary is shared by column. An
/// odd number of row groups (ViT-B's 197 tokens make 33) would otherwise leave one thread a whole
/// group's work longer than the other.
fn tile_shares(rows: Vec<&mut [f32]>, n: usize, threads: usize) -> Vec<Vec<ShareTiles<'_>>> {
    let panel_count = n.div_ceil(COLS);
    let groups = rows.len().div_ceil(ROWS);
    let tiles = groups * panel_count;
    let bounds: Vec<usize> = (0..=threads).map(|share| share * tiles / threads).collect();
    let mut shares: Vec<Vec<ShareTiles>> = (0..threads).map(|_| vec![]).collect();
    let mut rows = rows.into_iter();
    for group in 0..groups {
        let mut group_rows: Vec<&mut [f32]> = rows.by_ref().take(ROWS).collect();
        let (group_first, group_end) = (group * panel_count, (group + 1) * panel_count);
        for (share, bound) in shares.iter_mut().zip(bounds.windows(2)) {
            let (first, end) = (bound[0].max(group_first), bound[1].min(group_end));
            if first >= end {
                continue;
            }
            let panels = first - group_first..end - group_first;
            let width = n.min(panels.end * COLS) - panels.start * COLS;
            let mut pieces = Vec::with_capacity(group_rows.len());
            for row in group_rows.iter_mut() {
                let (piece, rest) = std::mem::take(row).split_at_mut(width);
                pieces.push(piece);
                *row = rest;
            }
            share.push(ShareTiles {
                group,
                panels,
                rows: pieces,
            });
        }
    }
    shares
}

/// `out` (`n × m`) = the transpose of `rows` (`m × n`), channels split between the threads. A band of
/// [`COLS`] channels is read a row at a time (one cache line), so each source line is read once.
pub(crate) fn transpose_into<T: Copy + Send + Sync>(
    rows: &[T],
    m: usize,
    n: usize,
    out: &mut [T],
    pool: Option<&rayon::ThreadPool>,
) {
    let band = |first_channel: usize, out: &mut [T]| {
        let channels = out.len() / m;
        for band_start in (0..channels).step_by(COLS) {
            let width = COLS.min(channels - band_start);
            for (row_index, row) in rows.chunks_exact(n).enumerate() {
                for (offset, &v) in row[first_channel + band_start..][..width]
                    .iter()
                    .enumerate()
                {
                    out[(band_start + offset) * m + row_index] = v;
                }
            }
        }
    };
    match pool {
        Some(pool) => {
            use rayon::prelude::*;
            let share = n.div_ceil(pool.current_num_threads());
            pool.install(|| {
                out.par_chunks_mut(share * m)
                    .enumerate()
                    .for_each(|(index, out)| band(index * share, out))
            });
        }
        None => band(0, out),
    }
}

/// A linear layer on [`PackedWeights`]: the activation is an `m × k` matrix (or `k × m`, as `layout`
/// says) whose other axes are all 1; the output is `output_shape`, an `m × n` (or `n × m`) matrix.
#[derive(Clone)]
pub struct PackedLinear {
    weights: Arc<PackedWeights>,
    kernel: TileKernel,
    layout: Layout,
    output_shape: TVec<usize>,
    /// The output axis that holds the channels.
    channel_axis: usize,
    /// A second input, laid out like the output, is added to it (a residual connection that followed).
    residual: bool,
    /// Then applied to the output (folded from the node that followed).
    activation: Option<Activation>,
}

impl std::fmt::Debug for PackedLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedLinear(k={}, n={}, bias={}, {:?}, residual={}, {:?})",
            self.weights.k,
            self.weights.n,
            self.weights.bias.is_some(),
            self.layout,
            self.residual,
            self.activation
        )
    }
}

impl PartialEq for PackedLinear {
    fn eq(&self, other: &Self) -> bool {
        // Two layers are the same op only with the same weights: tract merges equal ops on equal inputs,
        // and a ViT's query, key and value layers read the same activation.
        Arc::ptr_eq(&self.weights, &other.weights)
            && self.layout == other.layout
            && self.output_shape == other.output_shape
            && self.residual == other.residual
            && self.activation == other.activation
    }
}
impl Eq for PackedLinear {}

impl std::hash::Hash for PackedLinear {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.weights) as usize).hash(state);
        self.layout.hash(state);
        self.output_shape.hash(state);
        self.residual.hash(state);
        self.activation.hash(state);
    }
}

impl Op for PackedLinear {
    fn name(&self) -> StaticName {
        // Profiles group time by name: what was folded in shows.
        match (self.residual, self.activation) {
            (false, None) => "PackedLinear(mien)".into(),
            (residual, activation) => {
                let residual = if residual { "+Residual" } else { "" };
                let activation = activation
                    .map(|a| format!("+{}", a.name()))
                    .unwrap_or_default();
                format!("PackedLinear{residual}{activation}(mien)").into()
            }
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "k={} n={} bias={} input_transposed={} output_transposed={} residual={} activation={:?}",
            self.weights.k,
            self.weights.n,
            self.weights.bias.is_some(),
            self.layout.input_transposed,
            self.layout.output_transposed,
            self.residual,
            self.activation
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PackedLinear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == 1 + usize::from(self.residual),
            "PackedLinear: {} inputs",
            inputs.len()
        );
        let residual = if self.residual { inputs.pop() } else { None };
        let plain = inputs[0].try_as_plain_ram()?;
        let x = plain.as_slice::<f32>()?;
        // A residual this op holds the only reference to becomes the output, the products added onto it:
        // no output to allocate and clear, and no pass to add it.
        let (mut output, residual) = match residual {
            Some(residual)
                if residual.is_exclusive() && residual.shape() == &*self.output_shape =>
            {
                (residual.into_tensor(), None)
            }
            residual => (Tensor::zero::<f32>(&self.output_shape)?, residual),
        };
        let onto_output = self.residual && residual.is_none();
        let residual = residual
            .as_ref()
            .map(|residual| residual.try_as_plain_ram())
            .transpose()?;
        let residual = residual
            .as_ref()
            .map(|residual| residual.as_slice::<f32>())
            .transpose()?;
        {
            let mut out = output.try_as_plain_ram_mut()?;
            let epilogue = Epilogue {
                onto_output,
                residual,
                activation: self.activation,
            };
            self.weights.multiply_with(
                self.kernel,
                x,
                out.as_slice_mut::<f32>()?,
                self.layout,
                epilogue,
            )?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for PackedLinear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs
                .iter()
                .all(|input| input.datum_type == f32::datum_type()),
            "PackedLinear takes f32"
        );
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let m = self.output_shape.iter().product::<usize>() / self.weights.n;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            (m * self.weights.k * self.weights.n).into()
        )))
    }

    as_op!();
}

/// Replaces the f32 linear layers of a (loaded, not yet optimized) model with [`PackedLinear`] when this
/// CPU has a tile kernel, then folds the constant additions and multiplications that follow them
/// ([`fold_into_linear_layers`]); returns how many layers were replaced.
///
/// The runtime calls it before tract's declutter (so that declutter's axis changes do not copy every
/// weight, ~0.3 s for ViT-B) and again after it (for layers only declutter brings into shape, and for
/// the bias additions declutter brings next to them).
///
/// A layer qualifies when it is an `EinSum` of an activation and a constant weight that is one matrix
/// product: a single row axis (the tokens), a single output-channel axis, and contraction axes that nest
/// alike in both operands (attention's merged heads), every other axis of size 1; with the activation and
/// output each row-major or transposed ([`Layout`]), and at least [`ROWS`] rows. Layers are replaced one at
/// a time and the graph compacted after each, so a layer's float weight is freed as soon as its packed
/// copy exists instead of all of them being held twice at the peak.
pub fn accelerate_linear_layers(model: &mut TypedModel) -> TractResult<usize> {
    let Some(kernel) = kernel() else { return Ok(0) };
    let replaced = replace_each(
        model,
        analyse,
        |model, layer| replace(model, layer, kernel),
        NOT_A_CANDIDATE,
        "linear layer left to tract's kernels",
    )?;
    let folded = fold_into_linear_layers(model)?;
    tracing::debug!(replaced, folded, "linear layers on mien's packed product");
    Ok(replaced)
}

/// Replaces every node `analyse` accepts with `replace`, one at a time, compacting the graph after each so
/// that a layer's tract weight is freed as soon as its packed copy exists; then logs at debug level why
/// each node refused for another reason than `not_a_candidate` was left (`left`). Returns how many were
/// replaced. Shared by the f32 and int8 layers' rewrites.
pub(crate) fn replace_each<L>(
    model: &mut TypedModel,
    analyse: impl Fn(&TypedModel, &TypedNode) -> Result<L, &'static str>,
    mut replace: impl FnMut(&mut TypedModel, L) -> TractResult<()>,
    not_a_candidate: &str,
    left: &str,
) -> TractResult<usize> {
    let mut replaced = 0;
    loop {
        let order = model.eval_order()?;
        let Some(layer) = order
            .into_iter()
            .find_map(|id| analyse(model, model.node(id)).ok())
        else {
            break;
        };
        replace(model, layer)?;
        model.compact()?;
        replaced += 1;
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        for node in model.nodes() {
            if let Err(reason) = analyse(model, node) {
                if reason != not_a_candidate {
                    tracing::debug!(layer = %node.name, reason, "{left}");
                }
            }
        }
    }
    Ok(replaced)
}

/// What [`analyse`] says of nodes that are not constant-weight f32 products at all.
const NOT_A_CANDIDATE: &str = "not a constant-weight f32 product";

/// A linear layer [`PackedLinear`] can compute, as found in the graph.
pub(crate) struct LinearLayer {
    pub(crate) node: usize,
    pub(crate) input: OutletId,
    pub(crate) weight: Arc<Tensor>,
    pub(crate) k: usize,
    pub(crate) n: usize,
    /// Strides of the weight's (merged) contraction axis and of its channel axis, in values.
    pub(crate) weight_strides: (usize, usize),
    pub(crate) layout: Layout,
    pub(crate) output_shape: Vec<usize>,
    /// The output axis that holds the channels.
    pub(crate) channel_axis: usize,
}

fn analyse(model: &TypedModel, node: &TypedNode) -> Result<LinearLayer, &'static str> {
    let Some(op) = node.op_as::<EinSum>() else {
        return Err(NOT_A_CANDIDATE);
    };
    if op.q_params.is_some() || node.inputs.len() != 2 || op.operating_dt != f32::datum_type() {
        return Err(NOT_A_CANDIDATE);
    }
    let (act_slot, weight) =
        mien_quantize::target::constant_operand(model, node).ok_or(NOT_A_CANDIDATE)?;
    if weight.datum_type() != f32::datum_type() {
        return Err(NOT_A_CANDIDATE);
    }
    analyse_product(model, node, op, act_slot, weight, ROWS)
}

/// The shape of a constant-weight `EinSum` (`op`, of `node`) read as one matrix product of the activation
/// in `act_slot` and `weight`, with at least `min_rows` rows; shared with the int8 layers' rewrite.
pub(crate) fn analyse_product(
    model: &TypedModel,
    node: &TypedNode,
    op: &EinSum,
    act_slot: usize,
    weight: Arc<Tensor>,
    min_rows: usize,
) -> Result<LinearLayer, &'static str> {
    let concrete = |outlet: OutletId| {
        model
            .outlet_fact(outlet)
            .ok()
            .and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()))
    };
    let act_shape = concrete(node.inputs[act_slot]).ok_or("the activation's shape is symbolic")?;
    let output_shape =
        concrete(OutletId::new(node.id, 0)).ok_or("the output's shape is symbolic")?;
    let weight_shape = weight.shape().to_vec();
    let strides = |shape: &[usize]| -> Vec<usize> {
        natural_strides(shape).iter().map(|&s| s as usize).collect()
    };
    let (act_strides, weight_strides, out_strides) = (
        strides(&act_shape),
        strides(&weight_shape),
        strides(&output_shape),
    );
    // (activation stride, weight stride, length) of each contraction axis; (weight, output) positions and
    // length of the channel axis; (activation, output) positions and length of the row axis.
    let (mut contraction, mut channel, mut row) = (vec![], None, None);
    for axis in op.axes.iter_all_axes() {
        let (a, w, o) = (
            &axis.inputs[act_slot],
            &axis.inputs[1 - act_slot],
            &axis.outputs[0],
        );
        if a.len() > 1 || w.len() > 1 || o.len() > 1 {
            return Err("an axis repeats inside one operand");
        }
        let sizes = [
            a.first().map(|&i| act_shape[i]),
            w.first().map(|&i| weight_shape[i]),
            o.first().map(|&i| output_shape[i]),
        ];
        let size = sizes.iter().flatten().copied().max().unwrap_or(1);
        if size == 1 {
            continue;
        }
        if sizes.iter().flatten().any(|&s| s != size) {
            return Err("an axis broadcasts");
        }
        match (a.first(), w.first(), o.first()) {
            (Some(&ia), Some(&iw), None) => contraction.push((act_strides[ia], weight_strides[iw], size)),
            (None, Some(&iw), Some(&io)) if channel.is_none() => channel = Some((iw, io, size)),
            (Some(&ia), None, Some(&io)) if row.is_none() => row = Some((ia, io, size)),
            (Some(_), Some(_), Some(_)) => return Err("the weight is batched"),
            _ => {
                return Err(
                    "not one matrix product (several row or channel axes, or an axis summed out of one operand)",
                )
            }
        }
    }
    let (weight_channel_axis, channel_axis, n) = channel.ok_or("no output-channel axis")?;
    let (act_row_axis, out_row_axis, m) = row.ok_or("a single row")?;
    if m < min_rows {
        return Err("fewer rows than a tile");
    }
    contraction.sort_by_key(|&(act_stride, _, _)| std::cmp::Reverse(act_stride));
    let nested = contraction.windows(2).all(|pair| {
        let ((outer_a, outer_w, _), (inner_a, inner_w, inner_len)) = (pair[0], pair[1]);
        outer_a == inner_a * inner_len && outer_w == inner_w * inner_len
    });
    if !nested {
        return Err("the contraction axes do not nest alike in both operands");
    }
    let &(act_k_stride, weight_k_stride, _) = contraction.last().ok_or("no contraction axis")?;
    let k: usize = contraction.iter().map(|&(_, _, len)| len).product();
    let input_transposed = match (act_k_stride, act_strides[act_row_axis]) {
        (1, row_stride) if row_stride == k => false,
        (k_stride, 1) if k_stride == m => true,
        _ => return Err("the activation is not a plain or transposed matrix"),
    };
    let output_transposed = match (out_strides[channel_axis], out_strides[out_row_axis]) {
        (1, row_stride) if row_stride == n => false,
        (channel_stride, 1) if channel_stride == m => true,
        _ => return Err("the output is not a plain or transposed matrix"),
    };
    Ok(LinearLayer {
        node: node.id,
        input: node.inputs[act_slot],
        weight,
        k,
        n,
        weight_strides: (weight_k_stride, weight_strides[weight_channel_axis]),
        layout: Layout {
            input_transposed,
            output_transposed,
        },
        output_shape,
        channel_axis,
    })
}

fn replace(model: &mut TypedModel, layer: LinearLayer, kernel: TileKernel) -> TractResult<()> {
    let plain = layer.weight.try_as_plain_ram()?;
    let stored = plain.as_slice::<f32>()?;
    let weights = PackedWeights::pack_strided(
        stored,
        layer.k,
        layer.n,
        layer.weight_strides.0,
        layer.weight_strides.1,
    )?;
    drop(plain);
    let name = model.node(layer.node).name.clone();
    let op = PackedLinear {
        weights: Arc::new(weights),
        kernel,
        layout: layer.layout,
        output_shape: layer.output_shape.into(),
        channel_axis: layer.channel_axis,
        residual: false,
        activation: None,
    };
    let mut patch = TypedModelPatch::default();
    let input = patch.tap_model(model, layer.input)?;
    let output = patch.wire_node(format!("{name}.packed"), op, &[input])?[0];
    patch.shunt_outside(model, OutletId::new(layer.node, 0), output)?;
    patch.apply(model)
}

/// Folds into each [`PackedLinear`] the additions and multiplications by per-channel (or single)
/// constants that follow it alone — a bias, a scale (attention's on queries and keys, DINOv2's layer
/// scale) — as its bias and scaled weights, then an [`Activation`] that follows (the MLP's GELU), which
/// its threads apply to their shares; returns how many were folded.
pub fn fold_into_linear_layers(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    'graph: loop {
        for id in model.eval_order()? {
            if fold_next_node(model, id)? {
                folded += 1;
                continue 'graph;
            }
        }
        return Ok(folded);
    }
}

/// Folds the node that follows `id` alone into it, if `id` is a [`PackedLinear`] and the node is a
/// constant addition or multiplication, a residual addition or an [`Activation`]; returns whether it did.
fn fold_next_node(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(op) = node.op_as::<PackedLinear>() else {
        return Ok(false);
    };
    // Nothing folds after an activation (it would apply before it), nor when the layer's own output is
    // also one of the model's.
    let [only] = &node.outputs[0].successors[..] else {
        return Ok(false);
    };
    if op.activation.is_some() || model.outputs.contains(&OutletId::new(id, 0)) {
        return Ok(false);
    }
    let next = model.node(only.node);
    let next_id = next.id;
    if let Some(activation) = Activation::of(next) {
        if let Some(op) = model.node_mut(id).op_as_mut::<PackedLinear>() {
            op.activation = Some(activation);
        }
        bypass(model, id, next_id)?;
        return Ok(true);
    }
    let (is_add, is_mul) = (is_binary::<Add>(next), is_binary::<Mul>(next));
    let next_shape = model
        .outlet_fact(OutletId::new(next_id, 0))?
        .shape
        .as_concrete()
        .map(|s| s.to_vec());
    if !(is_add || is_mul) || op.residual || next_shape.as_deref() != Some(&op.output_shape[..]) {
        return Ok(false);
    }
    let other = next.inputs[1 - only.slot];
    let other_fact = model.outlet_fact(other)?;
    let Some(konst) = other_fact.konst.clone() else {
        // A runtime tensor of the output's own shape and type: a residual connection, a second input.
        let same = other_fact.datum_type == f32::datum_type()
            && other_fact.shape.as_concrete() == Some(&op.output_shape[..]);
        if !is_add || !same || op.layout.output_transposed {
            return Ok(false);
        }
        let (name, input) = (format!("{}.residual", node.name), node.inputs[0]);
        let op = PackedLinear {
            residual: true,
            ..op.clone()
        };
        let mut patch = TypedModelPatch::default();
        let inputs = [
            patch.tap_model(model, input)?,
            patch.tap_model(model, other)?,
        ];
        let output = patch.wire_node(name, op, &inputs)?[0];
        patch.shunt_outside(model, OutletId::new(next_id, 0), output)?;
        patch.apply(model)?;
        return Ok(true);
    };
    let Some(values) =
        per_axis_values(&konst, op.output_shape.len(), op.channel_axis, op.weights.n)
    else {
        return Ok(false);
    };
    // The node's op is the weights' only holder: changed in place, not copied.
    let Some(op) = model.node_mut(id).op_as_mut::<PackedLinear>() else {
        return Ok(false);
    };
    let weights = Arc::make_mut(&mut op.weights);
    if is_add {
        weights.add_to_bias(&values)?;
    } else {
        weights.scale_channels(&values)?;
    }
    bypass(model, id, next_id)?;
    Ok(true)
}

/// Rewires the readers of `next`'s output to `id`'s, which now computes it.
fn bypass(model: &mut TypedModel, id: usize, next: usize) -> TractResult<()> {
    let mut patch = TypedModelPatch::default();
    let output = patch.tap_model(model, OutletId::new(id, 0))?;
    patch.shunt_outside(model, OutletId::new(next, 0), output)?;
    patch.apply(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::graph::{assert_close, run_with_threads, test_values as values};

    /// `x · W + bias` with each sum in the kernels' order (per block of `k_block` steps, each step one fused
    /// multiply-add from the bias or zero; later blocks' sums added to the first's), in f32.
    fn reference(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        k: usize,
        n: usize,
        k_block: usize,
    ) -> Vec<f32> {
        let m = x.len() / k;
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                for block_start in (0..k).step_by(k_block) {
                    let mut acc = if block_start == 0 {
                        bias.map(|b| b[j]).unwrap_or(0.0)
                    } else {
                        0.0
                    };
                    for s in block_start..k.min(block_start + k_block) {
                        acc = x[i * k + s].mul_add(w[s * n + j], acc);
                    }
                    out[i * n + j] = if block_start == 0 {
                        acc
                    } else {
                        out[i * n + j] + acc
                    };
                }
            }
        }
        out
    }

    /// Shapes around every edge: rows and channels not multiples of the tile, K shorter than, equal to
    /// and across blocks (with a short last block).
    const SHAPES: [(usize, usize, usize); 7] = [
        (1, 1, 1),
        (6, 16, 768),
        (7, 17, 5),
        (13, 33, 769),
        (197, 48, 1600),
        (12, 768, 64),
        (25, 7, 256),
    ];

    #[test]
    fn scalar_driver_matches_a_plain_matrix_product() -> TractResult<()> {
        for (m, n, k) in SHAPES {
            let (x, w, b) = (values(m * k, 1), values(k * n, 2), values(n, 3));
            for bias in [None, Some(&b[..])] {
                let mut packed = PackedWeights::pack(&w, k, n)?;
                if let Some(bias) = bias {
                    packed = packed.with_bias(bias.to_vec())?;
                }
                let mut out = vec![f32::NAN; m * n];
                packed.multiply(scalar::tile_kernel, &x, &mut out)?;
                assert_eq!(
                    out,
                    reference(&x, &w, bias, k, n, K_BLOCK),
                    "m {m} n {n} k {k} bias {}",
                    bias.is_some()
                );
                // Short blocks: many accumulation passes, and a short last one.
                let mut short = PackedWeights::pack_blocked(&w, k, n, n, 1, 7)?;
                if let Some(bias) = bias {
                    short = short.with_bias(bias.to_vec())?;
                }
                short.multiply(scalar::tile_kernel, &x, &mut out)?;
                assert_eq!(
                    out,
                    reference(&x, &w, bias, k, n, 7),
                    "m {m} n {n} k {k}, blocks of 7"
                );
            }
        }
        Ok(())
    }

    /// The SIMD tile kernel through the packing and blocking (the kernel alone is tested against its twin
    /// in `mien_kernels::f32_tile`).
    #[test]
    fn simd_products_match_the_scalar_kernels_bit_for_bit() -> TractResult<()> {
        let Some(kernel) = kernel() else {
            eprintln!("no SIMD linear kernel on this CPU: nothing to compare");
            return Ok(());
        };
        for (m, n, k) in SHAPES {
            let (x, w) = (values(m * k, 7), values(k * n, 8));
            let packed = PackedWeights::pack(&w, k, n)?.with_bias(values(n, 9))?;
            let (mut simd, mut reference) = (vec![0f32; m * n], vec![0f32; m * n]);
            packed.multiply(kernel, &x, &mut simd)?;
            packed.multiply(scalar::tile_kernel, &x, &mut reference)?;
            assert_eq!(simd, reference, "m {m} n {n} k {k}");
        }
        Ok(())
    }

    #[test]
    fn threads_split_rows_or_columns_without_changing_a_bit() -> TractResult<()> {
        // More rows than channels (split by rows, a row group at a share's boundary shared by column,
        // short last groups and panels), more channels than rows (by panels, with a short last panel
        // and shares of unequal length).
        for (m, n, k) in [
            (197, 40, 300),
            (61, 100, 70),
            (13, 100, 300),
            (20, 770, 40),
            (7, 33, 5),
        ] {
            let (x, w) = (values(m * k, 10), values(k * n, 11));
            let packed = PackedWeights::pack(&w, k, n)?.with_bias(values(n, 12))?;
            let mut single = vec![0f32; m * n];
            packed.multiply(scalar::tile_kernel, &x, &mut single)?;
            for threads in [2, 3, 4] {
                let mut multi = vec![0f32; m * n];
                tract_linalg::multithread::multithread_tract_scope(
                    Executor::multithread(threads),
                    || packed.multiply(scalar::tile_kernel, &x, &mut multi),
                )?;
                assert_eq!(multi, single, "m {m} n {n} k {k}, {threads} threads");
            }
        }
        Ok(())
    }

    fn transposed(matrix: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| matrix[(i % rows) * cols + i / rows])
            .collect()
    }

    #[test]
    fn transposed_layouts_give_the_same_bits() -> TractResult<()> {
        for (m, n, k) in [(7, 17, 5), (197, 48, 600), (25, 7, 768)] {
            let (x, w) = (values(m * k, 13), values(k * n, 14));
            let packed = PackedWeights::pack(&w, k, n)?.with_bias(values(n, 15))?;
            let mut want = vec![0f32; m * n];
            packed.multiply(scalar::tile_kernel, &x, &mut want)?;
            let x_t = transposed(&x, m, k);
            for threads in [1, 2, 3] {
                for (input_transposed, output_transposed) in
                    [(true, false), (false, true), (true, true)]
                {
                    let layout = Layout {
                        input_transposed,
                        output_transposed,
                    };
                    let input = if input_transposed { &x_t } else { &x };
                    let mut got = vec![f32::NAN; m * n];
                    tract_linalg::multithread::multithread_tract_scope(
                        Executor::multithread(threads),
                        || packed.multiply_laid_out(scalar::tile_kernel, input, &mut got, layout),
                    )?;
                    let got = if output_transposed {
                        transposed(&got, n, m)
                    } else {
                        got
                    };
                    assert_eq!(got, want, "m {m} n {n} k {k} {layout:?} {threads} threads");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn packing_a_transposed_weight_reads_it_by_column() -> TractResult<()> {
        for (k, n) in [(1, 1), (5, 17), (300, 40)] {
            let kn = values(k * n, 12);
            let nk: Vec<f32> = (0..n * k).map(|i| kn[(i % k) * n + i / k]).collect();
            let (a, b) = (
                PackedWeights::pack(&kn, k, n)?,
                PackedWeights::pack_strided(&nk, k, n, 1, k)?,
            );
            assert_eq!(a.packed(), b.packed(), "{k} × {n}");
        }
        assert!(PackedWeights::pack_strided(&[0.0; 5], 2, 3, 1, 2).is_err());
        Ok(())
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(PackedWeights::pack(&[0.0; 5], 2, 3).is_err());
        let packed = PackedWeights::pack(&[0.0; 6], 2, 3).unwrap();
        assert!(packed
            .multiply(scalar::tile_kernel, &[0.0; 5], &mut [0.0; 6])
            .is_err());
        assert!(PackedWeights::pack(&[0.0; 6], 2, 3)
            .unwrap()
            .with_bias(vec![0.0; 2])
            .is_err());
    }

    /// A ViT-like block in tract's own terms: linear with bias (`amk,kn->amn` + Add), a linear whose
    /// weight comes first and has no bias, a merged-heads projection (`mhd,hdn->amn`), and two layers
    /// reading the same activation (tract must not merge them).
    fn vit_like_model() -> TractResult<(TypedModel, Tensor)> {
        let (m, d, h) = (197usize, 64usize, 4usize);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, m, d]))?;
        let w1 = model.add_const(
            "w1",
            Tensor::from_shape(&[d, 3 * d], &values(d * 3 * d, 20))?,
        )?;
        let b1 = model.add_const(
            "b1",
            Tensor::from_shape(&[1, 1, 3 * d], &values(3 * d, 21))?,
        )?;
        let y = model.wire_node(
            "fc1",
            EinSum::new("amk,kn->amn".parse()?, f32::datum_type()),
            &[x, w1],
        )?[0];
        let y = model.wire_node("fc1.bias", tract_core::ops::math::add(), &[y, b1])?[0];
        let w2 = model.add_const(
            "w2",
            Tensor::from_shape(&[d, 3 * d], &values(d * 3 * d, 22))?,
        )?;
        let y = model.wire_node(
            "fc2",
            EinSum::new("nk,amk->amn".parse()?, f32::datum_type()),
            &[w2, y],
        )?[0];
        let heads = model.wire_node(
            "split",
            AxisOp::Reshape(2, tvec!(d.into()), tvec!(h.into(), (d / h).into())),
            &[y],
        )?[0];
        let heads = model.wire_node("drop", AxisOp::Rm(0), &[heads])?[0];
        let w3 = model.add_const(
            "w3",
            Tensor::from_shape(&[h, d / h, d], &values(d * d, 23))?,
        )?;
        let y = model.wire_node(
            "proj",
            EinSum::new("mhk,hkn->amn".parse()?, f32::datum_type()),
            &[heads, w3],
        )?[0];
        let wq = model.add_const("wq", Tensor::from_shape(&[d, d], &values(d * d, 24))?)?;
        let wk = model.add_const("wk", Tensor::from_shape(&[d, d], &values(d * d, 25))?)?;
        let q = model.wire_node(
            "q",
            EinSum::new("amk,kn->amn".parse()?, f32::datum_type()),
            &[y, wq],
        )?[0];
        let kk = model.wire_node(
            "k",
            EinSum::new("amk,kn->amn".parse()?, f32::datum_type()),
            &[y, wk],
        )?[0];
        let sum = model.wire_node("q+k", tract_core::ops::math::add(), &[q, kk])?;
        model.select_output_outlets(&sum)?;
        let input = Tensor::from_shape(&[1, m, d], &values(m * d, 26))?;
        Ok((model, input))
    }

    /// The same kinds of layer as tract leaves a channel-major ViT (DINOv2's export): activations `k × m`
    /// (`akm,kn->anm` with a bias of shape `[1, n, 1]`, `akm,kn->mn`) and outputs `n × m` (merged heads,
    /// `mhk,hkn->anm`).
    fn channel_major_model() -> TractResult<(TypedModel, Tensor)> {
        let (m, d, h) = (197usize, 64usize, 4usize);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, d, m]))?;
        let w1 = model.add_const(
            "w1",
            Tensor::from_shape(&[d, 2 * d], &values(d * 2 * d, 30))?,
        )?;
        let b1 = model.add_const(
            "b1",
            Tensor::from_shape(&[1, 2 * d, 1], &values(2 * d, 31))?,
        )?;
        let y = model.wire_node(
            "fc1",
            EinSum::new("akm,kn->anm".parse()?, f32::datum_type()),
            &[x, w1],
        )?[0];
        let y = model.wire_node("fc1.bias", tract_core::ops::math::add(), &[y, b1])?[0];
        let w2 = model.add_const(
            "w2",
            Tensor::from_shape(&[2 * d, d], &values(2 * d * d, 32))?,
        )?;
        let y = model.wire_node(
            "fc2",
            EinSum::new("akm,kn->mn".parse()?, f32::datum_type()),
            &[y, w2],
        )?[0];
        let heads = model.wire_node(
            "split",
            AxisOp::Reshape(1, tvec!(d.into()), tvec!(h.into(), (d / h).into())),
            &[y],
        )?[0];
        let w3 = model.add_const(
            "w3",
            Tensor::from_shape(&[h, d / h, d], &values(d * d, 33))?,
        )?;
        let y = model.wire_node(
            "proj",
            EinSum::new("mhk,hkn->anm".parse()?, f32::datum_type()),
            &[heads, w3],
        )?;
        model.select_output_outlets(&y)?;
        let input = Tensor::from_shape(&[1, d, m], &values(m * d, 34))?;
        Ok((model, input))
    }

    #[test]
    fn replaces_tracts_linear_layers_and_agrees_with_them() -> TractResult<()> {
        // (model, layers, of which with a bias, of which with a transposed input, output)
        for (name, (model, input), layers, biased, transposed_inputs, transposed_outputs) in [
            ("ViT-like", vit_like_model()?, 5, 1, 0, 0),
            ("channel-major", channel_major_model()?, 3, 1, 2, 2),
        ] {
            agrees_with_tract(
                name,
                model,
                input,
                layers,
                biased,
                transposed_inputs,
                transposed_outputs,
            )?;
        }
        Ok(())
    }

    #[test]
    fn folds_following_biases_and_scales() -> TractResult<()> {
        // linear → + bias → × scalar → × per-channel scale → + offset, then a linear layer and a residual
        // addition (a runtime tensor: added by the layer's threads).
        let (m, k, n) = (20usize, 48usize, 40usize);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, m, k]))?;
        let w = model.add_const("w", Tensor::from_shape(&[k, n], &values(k * n, 50))?)?;
        let mut y = model.wire_node(
            "fc",
            EinSum::new("amk,kn->amn".parse()?, f32::datum_type()),
            &[x, w],
        )?[0];
        for (index, (shape, is_add)) in [
            (vec![1, 1, n], true),
            (vec![1, 1, 1], false),
            (vec![1, 1, n], false),
            (vec![1, 1, n], true),
        ]
        .into_iter()
        .enumerate()
        {
            let len = shape.iter().product();
            let konst = model.add_const(
                format!("c{index}"),
                Tensor::from_shape(&shape, &values(len, 51 + index as u32))?,
            )?;
            let op = if is_add {
                tract_core::ops::math::add()
            } else {
                tract_core::ops::math::mul()
            };
            y = model.wire_node(format!("op{index}"), op, &[konst, y])?[0];
        }
        let w2 = model.add_const("w2", Tensor::from_shape(&[n, k], &values(k * n, 60))?)?;
        let skip = model.wire_node(
            "skip",
            EinSum::new("amn,nk->amk".parse()?, f32::datum_type()),
            &[y, w2],
        )?[0];
        let out = model.wire_node("residual", tract_core::ops::math::add(), &[skip, x])?;
        model.select_output_outlets(&out)?;
        let input = Tensor::from_shape(&[1, m, k], &values(m * k, 61))?;
        let mut ours = model.clone();
        let replaced = accelerate_linear_layers(&mut ours)?;
        if kernel().is_none() {
            return Ok(());
        }
        assert_eq!(replaced, 2);
        let live: Vec<String> = ours
            .eval_order()?
            .iter()
            .map(|&id| ours.node(id).op().name().to_string())
            .collect();
        assert!(
            !live.iter().any(|name| name == "Add" || name == "Mul"),
            "all folded: {live:?}"
        );
        assert!(
            live.iter()
                .any(|name| name == "PackedLinear+Residual(mien)"),
            "{live:?}"
        );
        let run = |m: &TypedModel| run_with_threads(m, tvec!(input.clone().into_tvalue()), 1);
        assert_close(&run(&ours)?[0], &run(&model)?[0], 1e-5, "vs tract");
        Ok(())
    }

    #[test]
    fn folds_gelu_and_residual_but_nothing_after_the_gelu() -> TractResult<()> {
        // linear → + bias → GELU → × 2 → linear → + x: the bias and GELU fold into the first layer; the
        // multiplication after the GELU must not (it would run before it); the residual folds into the
        // second.
        let (m, k, n) = (40usize, 136usize, 144usize);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, m, k]))?;
        let w = model.add_const("w", Tensor::from_shape(&[k, n], &values(k * n, 70))?)?;
        let b = model.add_const("b", Tensor::from_shape(&[1, 1, n], &values(n, 71))?)?;
        let two = model.add_const("two", tensor3(&[[[2f32]]]))?;
        let y = model.wire_node(
            "fc1",
            EinSum::new("amk,kn->amn".parse()?, f32::datum_type()),
            &[x, w],
        )?[0];
        let y = model.wire_node("bias", tract_core::ops::math::add(), &[y, b])?[0];
        let y = model.wire_node("gelu", tract_core::ops::nn::gelu_exact::gelu_exact(), &[y])?[0];
        let y = model.wire_node("double", tract_core::ops::math::mul(), &[y, two])?[0];
        let w2 = model.add_const("w2", Tensor::from_shape(&[n, k], &values(k * n, 72))?)?;
        let y = model.wire_node(
            "fc2",
            EinSum::new("amn,nk->amk".parse()?, f32::datum_type()),
            &[y, w2],
        )?[0];
        let out = model.wire_node("residual", tract_core::ops::math::add(), &[x, y])?;
        model.select_output_outlets(&out)?;
        let input = Tensor::from_shape(&[1, m, k], &values(m * k, 73))?;
        let mut ours = model.clone();
        accelerate_linear_layers(&mut ours)?;
        if kernel().is_none() {
            return Ok(());
        }
        let live: Vec<String> = ours
            .eval_order()?
            .iter()
            .map(|&id| ours.node(id).op().name().to_string())
            .collect();
        assert_eq!(
            live.iter()
                .filter(|name| *name == "PackedLinear+Gelu(mien)")
                .count(),
            1,
            "{live:?}"
        );
        assert_eq!(
            live.iter().filter(|name| *name == "Mul").count(),
            1,
            "the doubling stays: {live:?}"
        );
        assert_eq!(
            live.iter()
                .filter(|name| *name == "PackedLinear+Residual(mien)")
                .count(),
            1,
            "{live:?}"
        );
        assert!(
            !live.iter().any(|name| name == "Add" || name == "GeluExact"),
            "{live:?}"
        );
        // One thread, a row split (2 threads) and a panel split (4: 40 rows are too few for a row split;
        // both layers have 9 panels).
        for threads in [1, 2, 4] {
            let run =
                |m: &TypedModel| run_with_threads(m, tvec!(input.clone().into_tvalue()), threads);
            assert_close(
                &run(&ours)?[0],
                &run(&model)?[0],
                1e-5,
                &format!("vs tract, {threads} threads"),
            );
        }
        Ok(())
    }

    #[test]
    fn products_added_onto_the_output_equal_the_residual_added_after() -> TractResult<()> {
        // Blocks of 7 steps: the first block adds bias and products onto the output, the others accumulate.
        let (m, k, n) = (31usize, 50usize, 40usize);
        let (x, w, residual) = (values(m * k, 83), values(k * n, 84), values(m * n, 85));
        let packed = PackedWeights::pack_blocked(&w, k, n, n, 1, 7)?.with_bias(values(n, 86))?;
        let want: Vec<f32> = reference(&x, &w, Some(&values(n, 86)), k, n, 7)
            .iter()
            .zip(&residual)
            .map(|(product, r)| product + r)
            .collect();
        for threads in [1, 2, 4] {
            for onto_output in [false, true] {
                let mut out = if onto_output {
                    residual.clone()
                } else {
                    vec![f32::NAN; m * n]
                };
                let epilogue = Epilogue {
                    onto_output,
                    residual: (!onto_output).then_some(&residual[..]),
                    activation: None,
                };
                tract_linalg::multithread::multithread_tract_scope(
                    Executor::multithread(threads),
                    || {
                        packed.multiply_with(
                            scalar::tile_kernel,
                            &x,
                            &mut out,
                            Layout::default(),
                            epilogue,
                        )
                    },
                )?;
                for (g, w) in out.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{g} vs {w}, onto_output {onto_output}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_residual_still_needed_elsewhere_is_added_not_taken_over() -> TractResult<()> {
        // x + x · W with x also a model output: the layer must not write into x.
        let (m, k) = (30usize, 64usize);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, m, k]))?;
        let w = model.add_const("w", Tensor::from_shape(&[k, k], &values(k * k, 80))?)?;
        let b = model.add_const("b", Tensor::from_shape(&[1, 1, k], &values(k, 81))?)?;
        let y = model.wire_node(
            "fc",
            EinSum::new("amk,kn->amn".parse()?, f32::datum_type()),
            &[x, w],
        )?[0];
        let y = model.wire_node("bias", tract_core::ops::math::add(), &[y, b])?[0];
        let y = model.wire_node("residual", tract_core::ops::math::add(), &[y, x])?[0];
        model.select_output_outlets(&[y, x])?;
        let input = Tensor::from_shape(&[1, m, k], &values(m * k, 82))?;
        let mut ours = model.clone();
        accelerate_linear_layers(&mut ours)?;
        if kernel().is_none() {
            return Ok(());
        }
        assert!(
            ours.nodes()
                .iter()
                .any(|node| node.op().name() == "PackedLinear+Residual(mien)"),
            "{ours}"
        );
        let run = |m: &TypedModel| run_with_threads(m, tvec!(input.clone().into_tvalue()), 1);
        let (want, got) = (run(&model)?, run(&ours)?);
        assert_eq!(got[1], want[1], "the residual itself, returned unchanged");
        assert_close(&got[0], &want[0], 1e-5, "vs tract");
        Ok(())
    }

    fn agrees_with_tract(
        name: &str,
        model: TypedModel,
        input: Tensor,
        layers: usize,
        biased: usize,
        transposed_inputs: usize,
        transposed_outputs: usize,
    ) -> TractResult<()> {
        let mut ours = model.clone();
        let replaced = accelerate_linear_layers(&mut ours)?;
        if kernel().is_none() {
            assert_eq!(replaced, 0);
            return Ok(());
        }
        assert_eq!(replaced, layers, "{name}: {ours}");
        let ops: Vec<&PackedLinear> = ours
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<PackedLinear>())
            .collect();
        assert_eq!(ops.len(), layers, "{name}");
        assert_eq!(
            ops.iter().filter(|op| op.weights.bias.is_some()).count(),
            biased,
            "{name}: biases folded"
        );
        assert_eq!(
            ops.iter().filter(|op| op.layout.input_transposed).count(),
            transposed_inputs,
            "{name}"
        );
        assert_eq!(
            ops.iter().filter(|op| op.layout.output_transposed).count(),
            transposed_outputs,
            "{name}"
        );
        for threads in [1, 2] {
            let run =
                |m: &TypedModel| run_with_threads(m, tvec!(input.clone().into_tvalue()), threads);
            assert_close(
                &run(&ours)?[0],
                &run(&model)?[0],
                1e-5,
                &format!("{name} vs tract, {threads} threads"),
            );
        }
        Ok(())
    }
}
