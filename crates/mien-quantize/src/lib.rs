//! Post-training int8 quantization of tract graphs, written for vision transformers.
//!
//! tract runs integer matmuls but has no calibration or quantize transform. This crate supplies them,
//! using only tract-core ops that save to NNEF, so a quantized plan loads with tract-nnef + tract-core:
//!
//! 1. [`target::find_targets`]: every `EinSum` that multiplies an activation by a constant float weight.
//! 2. [`calibrate::Calibration`]: run the float model on calibration inputs, record per-channel ranges and
//!    a row sample of each target's activation.
//! 3. [`plan_layers`]: per layer, choose outlier smoothing (SmoothQuant factor α from a grid) and the
//!    activation scale, simulate the int8 error on the sample, and keep in float any layer whose error
//!    exceeds the threshold.
//! 4. [`rewrite::apply`]: replace each chosen matmul with `quantize (f32 ops) → i8 × i8 → i32 EinSum
//!    (tract_core_einsum_q with trivial zero points) → cast → × scales`.
//!
//! Weights are symmetric int8 per output channel; activations symmetric int8, either per tensor with a
//! calibrated scale or per token with the scale computed at run time from the row's largest magnitude.
//! Smoothing divides activation channel k by `c_k` and multiplies weight row k by `c_k`; the division is
//! folded into the quantize multiplier, so it costs nothing at run time.

pub mod arith;
pub mod calibrate;
pub mod fuse;
pub mod patchify;
pub mod rewrite;
pub mod target;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tract_core::internal::*;

pub use arith::StaticCalibrator;
pub use calibrate::{ActivationStats, Calibration};
pub use target::{find_targets, MatmulTarget, Unsupported};

/// How activations are quantized.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum ActivationMode {
    /// One calibrated scale per tensor.
    Static {
        /// How the scale is chosen.
        calibrator: StaticCalibrator,
    },
    /// One scale per token (row), computed at run time from the row's largest magnitude.
    DynamicPerToken,
}

/// Outlier smoothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Smoothing {
    /// No smoothing.
    Off,
    /// One α for every layer.
    Alpha(f32),
    /// Per layer, the α from this grid (0 = none) with the smallest simulated error.
    Search(Vec<f32>),
}

/// The smoothing grid searched by default.
pub const DEFAULT_ALPHAS: [f32; 7] = [0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Products of two activations to run in int8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationProducts {
    /// None: attention stays in float.
    #[default]
    Off,
    /// Products none of whose operands is a softmax output (attention's scores, QKᵀ).
    Scores,
    /// Products reading a softmax output (attention's probabilities times V).
    Weighted,
    /// Both.
    All,
}

impl ActivationProducts {
    /// Whether a product whose operands do (`true`) or do not read a softmax is selected.
    pub fn selects(self, reads_softmax: bool) -> bool {
        match self {
            ActivationProducts::Off => false,
            ActivationProducts::Scores => !reads_softmax,
            ActivationProducts::Weighted => reads_softmax,
            ActivationProducts::All => true,
        }
    }
}

/// Quantization settings.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeOptions {
    /// Activation scheme.
    pub activations: ActivationMode,
    /// Outlier smoothing.
    pub smoothing: Smoothing,
    /// Layers whose simulated relative output error exceeds this stay in float.
    pub max_layer_error: f32,
    /// Rows of the calibration sample used for the error simulation.
    pub error_rows: usize,
    /// Try a per-channel shift of the activation to the centre of its calibrated range (the shift's
    /// product with the weight becomes a float bias), and keep it where it lowers the error.
    pub shift: bool,
    /// Round weights with GPTQ (error feedback weighted by the calibration activations) instead of to
    /// nearest, where it lowers the simulated error.
    pub gptq: bool,
    /// Matmuls holding less than this fraction of all targets' weights stay in float: too small to
    /// matter for size or speed (a classifier head), and their error goes straight into the logits.
    pub min_weight_fraction: f64,
    /// Which products of two activations (attention's QKᵀ and PV) also run in int8, both operands
    /// quantized per row at run time ([`rewrite::quantize_activation_products`]). Off by default.
    pub activation_products: ActivationProducts,
    /// Outlier channels kept in float, tried in this order (ascending counts) for layers whose int8
    /// error exceeds `max_layer_error`: the activation's `count` largest channels (by calibrated
    /// magnitude) leave the int8 product and multiply their weight rows in a small float product added to
    /// its output, so they no longer set every token's scale. Empty: off.
    pub float_channel_counts: Vec<usize>,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            activations: ActivationMode::DynamicPerToken,
            smoothing: Smoothing::Search(DEFAULT_ALPHAS.to_vec()),
            max_layer_error: 0.05,
            error_rows: 256,
            shift: true,
            gptq: true,
            min_weight_fraction: 0.001,
            activation_products: ActivationProducts::Off,
            float_channel_counts: vec![],
        }
    }
}

/// What was decided for one matmul.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDecision {
    /// Node name in the graph.
    pub name: String,
    /// Contraction length.
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// Smoothing α used (0: none).
    pub alpha: f32,
    /// Whether the activation is shifted to the centre of its per-channel range before quantizing.
    pub shifted: bool,
    /// Whether the weights were rounded by GPTQ (else to nearest).
    pub gptq: bool,
    /// Per-tensor activation scale (static mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_scale: Option<f32>,
    /// Simulated relative RMS error of the layer's output on calibration rows.
    pub error: f32,
    /// `None` when quantized; otherwise why it stays in float.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_float: Option<String>,
    /// Multiply-accumulates per inference.
    pub macs: u64,
    /// Smoothing factors per channel (not serialized: they are baked into the graph).
    #[serde(skip)]
    pub factors: Option<Vec<f32>>,
    /// Per-channel shift (not serialized: baked into the graph).
    #[serde(skip)]
    pub shift: Option<Vec<f32>>,
    /// Weights already quantized (row-major `[k, n]` i8, smoothing applied) with their per-column scales,
    /// when the rounding was not to nearest.
    #[serde(skip)]
    pub weight_q: Option<(Vec<i8>, Vec<f32>)>,
    /// Activation channels kept out of the int8 product (ascending): they multiply their weight rows in
    /// a float product added to the int8 one's output. Empty for most layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub float_channels: Vec<usize>,
    /// The int8 matmul whose quantized activation this one reuses (q, k and v read the same input, so it
    /// is quantized once); `None` when it quantizes its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_shared_with: Option<String>,
}

impl LayerDecision {
    /// True when the layer runs in int8.
    pub fn is_int8(&self) -> bool {
        self.kept_float.is_none()
    }
}

/// Errors of the quantizer.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// Calibration saw nothing for a layer.
    #[error("calibration recorded no data for {0}; give at least one calibration input")]
    NoCalibrationData(String),
    /// tract failed.
    #[error("tract: {0}")]
    Tract(String),
}

impl From<TractError> for QuantizeError {
    fn from(e: TractError) -> Self {
        QuantizeError::Tract(format!("{e:#}").replace('\n', " "))
    }
}

fn alphas(smoothing: &Smoothing) -> Vec<f32> {
    match smoothing {
        Smoothing::Off => vec![0.0],
        Smoothing::Alpha(a) => vec![*a],
        Smoothing::Search(grid) if grid.is_empty() => vec![0.0],
        Smoothing::Search(grid) => grid.clone(),
    }
}

/// How an activation is prepared before rounding: shared by every matmul that reads it.
#[derive(Debug, Clone)]
struct InputTransform {
    alpha: f32,
    /// Per-channel centre subtracted first.
    centre: Option<Vec<f32>>,
    /// Per-channel smoothing divisors.
    factors: Option<Vec<f32>>,
    /// Static mode's per-tensor scale.
    activation_scale: Option<f32>,
    /// Channels left out of the int8 product (ascending; their centre is 0).
    float_channels: Vec<usize>,
}

impl InputTransform {
    /// `(x - centre) / factors`, row by row; the float channels are 0.
    fn prepare(&self, x: &[f32], k: usize) -> Vec<f32> {
        let kept = int8_channel_mask(k, &self.float_channels);
        x.chunks_exact(k)
            .flat_map(|r| {
                r.iter().zip(&kept).enumerate().map(|(i, (v, kept))| {
                    if !kept {
                        return 0.0;
                    }
                    let v = v - self.centre.as_ref().map(|z| z[i]).unwrap_or(0.0);
                    v / self.factors.as_ref().map(|c| c[i]).unwrap_or(1.0)
                })
            })
            .collect()
    }

    /// The float channels' share of `x · w`: `x[:, S] · w[S, :]`.
    fn float_part(&self, x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * n];
        for (row, y) in x.chunks_exact(k).take(rows).zip(out.chunks_exact_mut(n)) {
            for &c in &self.float_channels {
                let v = row[c];
                y.iter_mut().zip(&w[c * n..(c + 1) * n]).for_each(|(y, w)| *y += v * w);
            }
        }
        out
    }

    fn fake_quantize(&self, prepared: &[f32], k: usize) -> Vec<f32> {
        match self.activation_scale {
            Some(scale) => arith::fake_quantize_tensor(prepared, scale),
            None => arith::fake_quantize_rows(prepared, k),
        }
    }

    /// Weight rows multiplied by the smoothing factors; the float channels' rows are 0 (they do not
    /// take part in the int8 product, and must not widen its per-column scales).
    fn smooth_weight(&self, w: &[f32], n: usize) -> Vec<f32> {
        let mut out = match &self.factors {
            Some(c) => w.chunks_exact(n).zip(c).flat_map(|(r, c)| r.iter().map(move |v| v * c)).collect(),
            None => w.to_vec(),
        };
        for &c in &self.float_channels {
            out[c * n..(c + 1) * n].fill(0.0);
        }
        out
    }
}

/// `true` for the channels that go through the int8 product, `false` for the float ones.
pub fn int8_channel_mask(k: usize, float_channels: &[usize]) -> Vec<bool> {
    let mut kept = vec![true; k];
    for &c in float_channels {
        kept[c] = false;
    }
    kept
}

/// The `count` channels of largest calibrated magnitude (after the shift when `shifted`), ascending.
fn outlier_channels(s: &ActivationStats, count: usize, shifted: bool) -> Vec<usize> {
    let magnitude = |c: usize| if shifted { (s.channel_max[c] - s.channel_min[c]) / 2.0 } else { s.channel_absmax[c] };
    let mut order: Vec<usize> = (0..s.channel_absmax.len()).collect();
    order.sort_by(|a, b| magnitude(*b).total_cmp(&magnitude(*a)));
    let mut chosen: Vec<usize> = order.into_iter().take(count).collect();
    chosen.sort_unstable();
    chosen
}

/// Matmuls reading the same activation in the same canonical layout (a transformer's q, k and v): they
/// share one quantized activation in the graph, so one smoothing and shift must serve them all.
fn input_groups(targets: &[MatmulTarget]) -> Vec<Vec<usize>> {
    let key = |t: &MatmulTarget| (t.activation, t.k, t.k_axis, t.k_span, t.dropped_axes.clone(), t.rank, t.n_axis);
    let mut groups: Vec<Vec<usize>> = vec![];
    for (i, t) in targets.iter().enumerate() {
        match groups.iter_mut().find(|g| key(&targets[g[0]]) == key(t)) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

/// The shift and smoothing (from the options' grid) with the smallest simulated error of `x · w`, `w` being
/// `[k, n]` (for a group, its members' weights side by side).
/// With `float_count` > 0 the activation's largest channels are left to a float product
/// ([`QuantizeOptions::float_channel_counts`]).
#[allow(clippy::too_many_arguments)]
fn choose_transform(
    k: usize,
    n: usize,
    w: &[f32],
    s: &ActivationStats,
    x: &[f32],
    rows: usize,
    options: &QuantizeOptions,
    float_count: usize,
) -> InputTransform {
    let reference = arith::matmul(x, w, rows, k, n);
    let mut best: Option<(f32, InputTransform)> = None;
    let shifts: &[bool] = if options.shift { &[false, true] } else { &[false] };
    for &shifted in shifts {
        let float_channels = outlier_channels(s, float_count.min(k), shifted);
        let kept = int8_channel_mask(k, &float_channels);
        let centre: Option<Vec<f32>> = shifted.then(|| {
            s.channel_min.iter().zip(&s.channel_max).zip(&kept).map(|((lo, hi), kept)| if *kept { (lo + hi) / 2.0 } else { 0.0 }).collect()
        });
        // Per-channel magnitude after the shift; the float channels' is 0.
        let amax: Vec<f32> = match &centre {
            Some(_) => s.channel_min.iter().zip(&s.channel_max).map(|(lo, hi)| (hi - lo) / 2.0).collect(),
            None => s.channel_absmax.clone(),
        };
        let amax: Vec<f32> = amax.iter().zip(&kept).map(|(a, kept)| if *kept { *a } else { 0.0 }).collect();
        // The shift's product with the weight, added back in float.
        let bias: Option<Vec<f32>> = centre.as_ref().map(|z| arith::matmul(z, w, 1, k, n));
        for alpha in alphas(&options.smoothing) {
            let factors = (alpha > 0.0).then(|| arith::smoothing_factors(&amax, w, n, alpha));
            let mut transform = InputTransform {
                alpha,
                centre: centre.clone(),
                factors,
                activation_scale: None,
                float_channels: float_channels.clone(),
            };
            if let ActivationMode::Static { calibrator } = options.activations {
                let absmax = match &transform.factors {
                    Some(c) => amax.iter().zip(c).fold(0f32, |m, (a, c)| m.max(a / c)),
                    None => amax.iter().fold(0f32, |m, a| m.max(*a)),
                };
                let all = transform.prepare(&s.sample, k);
                transform.activation_scale = Some(arith::choose_static_scale(&all, absmax, calibrator));
            }
            let xq = transform.fake_quantize(&transform.prepare(x, k), k);
            let (wq, w_scales) = arith::quantize_weight_per_column(&transform.smooth_weight(w, n), k, n);
            let wd: Vec<f32> = wq.iter().enumerate().map(|(i, q)| *q as f32 * w_scales[i % n]).collect();
            let mut approx = arith::matmul(&xq, &wd, rows, k, n);
            if let Some(b) = &bias {
                approx.chunks_exact_mut(n).for_each(|r| r.iter_mut().zip(b).for_each(|(y, b)| *y += b));
            }
            if !transform.float_channels.is_empty() {
                approx.iter_mut().zip(transform.float_part(x, w, rows, k, n)).for_each(|(y, f)| *y += f);
            }
            let error = arith::relative_error(&approx, &reference);
            if best.as_ref().map(|(e, _)| error < *e).unwrap_or(true) {
                best = Some((error, transform));
            }
        }
    }
    best.expect("at least one alpha").1
}

/// Decides, per target, smoothing, shift and scale, and whether it is quantized at all. Targets reading
/// the same activation share one smoothing, shift and quantized activation (see [`LayerDecision::input_shared_with`]).
pub fn plan_layers(
    targets: &[MatmulTarget],
    stats: &HashMap<OutletId, ActivationStats>,
    options: &QuantizeOptions,
) -> Result<Vec<LayerDecision>, QuantizeError> {
    let macs_of = |t: &MatmulTarget, s: &ActivationStats| (s.rows_seen / s.inputs.max(1)) * (t.k * t.n) as u64;
    for t in targets {
        stats.get(&t.activation).filter(|s| s.rows_seen > 0).ok_or_else(|| QuantizeError::NoCalibrationData(t.name.clone()))?;
    }
    let total_weights: usize = targets.iter().map(|t| t.k * t.n).sum();
    let mut decisions: Vec<Option<LayerDecision>> = vec![None; targets.len()];
    for group in input_groups(targets) {
        let leader = &targets[group[0]];
        let (k, s) = (leader.k, &stats[&leader.activation]);
        let rows = s.sample_rows().min(options.error_rows);
        let x = &s.sample[..rows * k];
        let weights: Vec<Vec<f32>> = group.iter().map(|&i| targets[i].weight_kn()).collect::<TractResult<_>>()?;
        let n_total: usize = group.iter().map(|&i| targets[i].n).sum();
        let side_by_side: Vec<f32> = if group.len() == 1 {
            weights[0].clone()
        } else {
            (0..k).flat_map(|row| group.iter().zip(&weights).flat_map(move |(&i, w)| w[row * targets[i].n..(row + 1) * targets[i].n].iter().copied())).collect()
        };
        let plan_with = |float_count: usize| -> TractResult<Vec<LayerDecision>> {
            let transform = choose_transform(k, n_total, &side_by_side, s, x, rows, options, float_count);
            // One quantized activation serves every member.
            let prepared = transform.prepare(x, k);
            let xq = transform.fake_quantize(&prepared, k);
            let sample = Sample { x, prepared: &prepared, xq: &xq, rows };
            group
                .iter()
                .zip(&weights)
                .map(|(&i, w)| plan_member(&targets[i], w, s, &sample, &transform, options, macs_of(&targets[i], s), total_weights, targets.len()))
                .collect()
        };
        let mut planned = plan_with(0)?;
        let over = |planned: &[LayerDecision]| planned.iter().any(|d| d.error.is_nan() || d.error > options.max_layer_error);
        if over(&planned) {
            for &count in options.float_channel_counts.iter().filter(|c| **c > 0 && **c < k) {
                let attempt = plan_with(count)?;
                tracing::debug!(layer = %leader.name, count, errors = ?attempt.iter().map(|d| d.error).collect::<Vec<_>>(), "outlier channels in float");
                if !over(&attempt) {
                    planned = attempt;
                    break;
                }
            }
        }
        for (&i, decision) in group.iter().zip(planned) {
            tracing::debug!(layer = %decision.name, alpha = decision.alpha, shifted = decision.shifted, float_channels = decision.float_channels.len(), error = decision.error, int8 = decision.is_int8(), "layer planned");
            decisions[i] = Some(decision);
        }
        // Members after the first int8 one reuse its quantized activation.
        let mut first_int8: Option<String> = None;
        for &i in &group {
            let d = decisions[i].as_mut().expect("planned");
            if !d.is_int8() {
                continue;
            }
            match &first_int8 {
                Some(leader) => d.input_shared_with = Some(leader.clone()),
                None => first_int8 = Some(d.name.clone()),
            }
        }
    }
    Ok(decisions.into_iter().map(|d| d.expect("every target is in one group")).collect())
}

/// A group's calibration rows: as recorded, prepared (shift, smoothing, float channels out) and
/// fake-quantized.
struct Sample<'a> {
    x: &'a [f32],
    prepared: &'a [f32],
    xq: &'a [f32],
    rows: usize,
}

/// The decision for one member of an input group, given the group's transform: its simulated error
/// (GPTQ weight rounding where it lowers it) and whether it stays in float.
#[allow(clippy::too_many_arguments)]
fn plan_member(
    t: &MatmulTarget,
    w: &[f32],
    s: &ActivationStats,
    sample: &Sample,
    transform: &InputTransform,
    options: &QuantizeOptions,
    macs: u64,
    total_weights: usize,
    target_count: usize,
) -> TractResult<LayerDecision> {
    let (k, n) = (t.k, t.n);
    let Sample { x, prepared, xq, rows } = *sample;
    let reference = arith::matmul(x, w, rows, k, n);
    let bias = transform.centre.as_ref().map(|z| arith::matmul(z, w, 1, k, n));
    // What the int8 product leaves out, added back exactly: the shift's product with the weight and the
    // float channels' product.
    let float_part = (!transform.float_channels.is_empty()).then(|| transform.float_part(x, w, rows, k, n));
    let with_bias = |mut y: Vec<f32>| {
        if let Some(b) = &bias {
            y.chunks_exact_mut(n).for_each(|r| r.iter_mut().zip(b).for_each(|(y, b)| *y += b));
        }
        if let Some(f) = &float_part {
            y.iter_mut().zip(f).for_each(|(y, f)| *y += f);
        }
        y
    };
    let ws = transform.smooth_weight(w, n);
    let (wq, w_scales) = arith::quantize_weight_per_column(&ws, k, n);
    let wd: Vec<f32> = wq.iter().enumerate().map(|(i, q)| *q as f32 * w_scales[i % n]).collect();
    let error = arith::relative_error(&with_bias(arith::matmul(xq, &wd, rows, k, n)), &reference);
    let mut decision = LayerDecision {
        name: t.name.clone(),
        k,
        n,
        alpha: transform.alpha,
        shifted: transform.centre.is_some(),
        activation_scale: transform.activation_scale,
        error,
        kept_float: None,
        macs,
        factors: transform.factors.clone(),
        shift: transform.centre.clone(),
        gptq: false,
        weight_q: None,
        input_shared_with: None,
        float_channels: transform.float_channels.clone(),
    };
    let fit_rows = s.sample_rows() - rows;
    if options.gptq && fit_rows >= 16 {
        // Fit on the sample rows the error is not measured on.
        let fit = transform.prepare(&s.sample[rows * k..], k);
        let q = arith::gptq_quantize(&ws, k, n, &fit, fit_rows, &w_scales, 0.01);
        let wd: Vec<f32> = q.iter().enumerate().map(|(i, q)| *q as f32 * w_scales[i % n]).collect();
        let gptq_error = arith::relative_error(&with_bias(arith::matmul(xq, &wd, rows, k, n)), &reference);
        tracing::debug!(layer = %t.name, rtn = decision.error, gptq = gptq_error, "weight rounding");
        if gptq_error < decision.error {
            decision.error = gptq_error;
            decision.gptq = true;
            decision.weight_q = Some((q, w_scales.clone()));
        }
    }
    if tracing::enabled!(tracing::Level::TRACE) {
        // Where the error comes from: weights alone, activations alone (same smoothing and shift).
        let weight_only = arith::relative_error(&with_bias(arith::matmul(prepared, &wd, rows, k, n)), &reference);
        let act_only = arith::relative_error(&with_bias(arith::matmul(xq, &ws, rows, k, n)), &reference);
        tracing::trace!(layer = %t.name, error = decision.error, weight_only, act_only, "error split");
    }
    let share = (k * n) as f64 / total_weights.max(1) as f64;
    if decision.error.is_nan() || decision.error > options.max_layer_error {
        decision.kept_float = Some(format!(
            "simulated int8 error {:.2}% exceeds the {:.2}% threshold",
            decision.error * 100.0,
            options.max_layer_error * 100.0
        ));
    } else if share < options.min_weight_fraction && target_count > 1 {
        decision.kept_float =
            Some(format!("{:.3}% of the weights: too small to matter for size or speed, kept exact", share * 100.0));
    }
    Ok(decision)
}
