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
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            activations: ActivationMode::DynamicPerToken,
            smoothing: Smoothing::Search(vec![0.0, 0.25, 0.5, 0.75]),
            max_layer_error: 0.05,
            error_rows: 256,
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
    /// Per-tensor activation scale (static mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_scale: Option<f32>,
    /// Simulated relative RMS error of the layer's output on calibration rows.
    pub error: f32,
    /// `None` when quantized; otherwise why it stays in float.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_float: Option<String>,
    /// Smoothing factors per channel (not serialized: they are baked into the graph).
    #[serde(skip)]
    pub factors: Option<Vec<f32>>,
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

/// Decides, per target, smoothing and scale, and whether it is quantized at all.
pub fn plan_layers(
    targets: &[MatmulTarget],
    stats: &HashMap<OutletId, ActivationStats>,
    options: &QuantizeOptions,
) -> Result<Vec<LayerDecision>, QuantizeError> {
    let mut decisions = vec![];
    for t in targets {
        let s = stats.get(&t.activation).filter(|s| s.rows_seen > 0).ok_or_else(|| QuantizeError::NoCalibrationData(t.name.clone()))?;
        let w = t.weight_kn()?;
        let rows = s.sample_rows().min(options.error_rows);
        let x = &s.sample[..rows * t.k];
        let reference = arith::matmul(x, &w, rows, t.k, t.n);
        let mut best: Option<LayerDecision> = None;
        for alpha in alphas(&options.smoothing) {
            let factors = (alpha > 0.0).then(|| arith::smoothing_factors(&s.channel_absmax, &w, t.n, alpha));
            let (xs, ws) = match &factors {
                Some(c) => (
                    x.chunks_exact(t.k).flat_map(|r| r.iter().zip(c).map(|(v, c)| v / c)).collect::<Vec<f32>>(),
                    w.chunks_exact(t.n).zip(c).flat_map(|(r, c)| r.iter().map(move |v| v * c)).collect::<Vec<f32>>(),
                ),
                None => (x.to_vec(), w.clone()),
            };
            let (xq, activation_scale) = match options.activations {
                ActivationMode::DynamicPerToken => (arith::fake_quantize_rows(&xs, t.k), None),
                ActivationMode::Static { calibrator } => {
                    let absmax = match &factors {
                        Some(c) => s.channel_absmax.iter().zip(c).fold(0f32, |m, (a, c)| m.max(a / c)),
                        None => s.channel_absmax.iter().fold(0f32, |m, a| m.max(*a)),
                    };
                    let all: Vec<f32> = match &factors {
                        Some(c) => s.sample.chunks_exact(t.k).flat_map(|r| r.iter().zip(c).map(|(v, c)| v / c)).collect(),
                        None => s.sample.clone(),
                    };
                    let scale = arith::choose_static_scale(&all, absmax, calibrator);
                    (arith::fake_quantize_tensor(&xs, scale), Some(scale))
                }
            };
            let (wq, w_scales) = arith::quantize_weight_per_column(&ws, t.k, t.n);
            let wd: Vec<f32> = wq.iter().enumerate().map(|(i, q)| *q as f32 * w_scales[i % t.n]).collect();
            let error = arith::relative_error(&arith::matmul(&xq, &wd, rows, t.k, t.n), &reference);
            if best.as_ref().map(|b| error < b.error).unwrap_or(true) {
                best = Some(LayerDecision {
                    name: t.name.clone(),
                    k: t.k,
                    n: t.n,
                    alpha,
                    activation_scale,
                    error,
                    kept_float: None,
                    factors,
                });
            }
        }
        let mut decision = best.expect("at least one alpha");
        if !(decision.error <= options.max_layer_error) {
            decision.kept_float = Some(format!(
                "simulated int8 error {:.2}% exceeds the {:.2}% threshold",
                decision.error * 100.0,
                options.max_layer_error * 100.0
            ));
        }
        tracing::debug!(layer = %t.name, alpha = decision.alpha, error = decision.error, int8 = decision.is_int8(), "layer planned");
        decisions.push(decision);
    }
    Ok(decisions)
}
