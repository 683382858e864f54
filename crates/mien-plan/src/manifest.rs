//! The `mien.json` manifest: everything the runtime needs besides the graph itself.

use serde::{Deserialize, Serialize};

use crate::PlanError;

/// Version of the plan layout and manifest schema this crate writes and reads.
///
/// Bump it when a change would make an older runtime misread a plan.
pub const FORMAT_VERSION: u32 = 1;

/// The exact tract version plans are written with. Plans from a newer tract patch release may use ops
/// this runtime lacks, so they are refused.
pub const TRACT_VERSION: &str = "0.23.9";

/// The manifest stored as `mien.json` at the root of every plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Plan format version ([`FORMAT_VERSION`] when written by this crate).
    pub format_version: u32,
    /// tract version that wrote the NNEF graph.
    pub tract_version: String,
    /// Where the model came from.
    pub model: ModelInfo,
    /// Class labels, in the order of the model's output.
    pub labels: Vec<String>,
    /// The single image input of the graph.
    pub input: InputSpec,
    /// The single logits output of the graph.
    pub output: OutputSpec,
    /// How an image becomes the input tensor.
    pub preprocessing: Preprocessing,
    /// Numeric precision of the stored graph.
    pub precision: Precision,
    /// What the converter checked after writing the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// How an int8 plan was quantized and how far it drifts from the float model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
    /// How an f16 plan was made and how far it drifts from the float model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half: Option<HalfPrecision>,
    /// Present on detector plans: how to turn the raw output into boxes. Classifier plans omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<DetectorSpec>,
    /// Tool and version that wrote the plan, e.g. `mien-convert 0.1.0`.
    pub created_by: String,
    /// Every graph file of the plan with its size and checksum, so truncation and tampering are caught
    /// before tract parses anything.
    pub files: Vec<FileEntry>,
}

/// How a single-shot detector's output decodes into boxes (MediaPipe BlazeFace's scheme).
///
/// The graph's one output is `[1, anchors, 4 + 2 * keypoints + 1]`: per anchor the box offsets
/// (centre x, centre y, width, height, in input pixels relative to the anchor), the keypoints' (x, y)
/// offsets, and last the face score as a logit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorSpec {
    /// Anchor grids, one per feature map, in output order.
    pub anchor_layers: Vec<AnchorLayer>,
    /// Anchor centre within its cell, as a fraction of the stride (0.5: the cell centre).
    pub anchor_offset: f32,
    /// Keypoints per detection (BlazeFace: eyes, nose tip, mouth, ear tragions = 6).
    pub keypoints: usize,
    /// Score logits are clamped to ±this before the sigmoid, as MediaPipe does.
    pub score_clip: f32,
    /// Default minimum face score (after the sigmoid).
    pub min_score: f32,
    /// Default IoU above which overlapping detections are merged.
    pub nms_iou: f32,
}

/// One feature map's anchors: a square grid of `input_size / stride` cells, `per_cell` anchors each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorLayer {
    /// Input pixels per cell.
    pub stride: usize,
    /// Anchors per cell (all unit size: BlazeFace uses fixed anchor sizes).
    pub per_cell: usize,
}

impl DetectorSpec {
    /// Values per anchor in the output: box, keypoints, score.
    pub fn values_per_anchor(&self) -> usize {
        4 + 2 * self.keypoints + 1
    }

    /// Total anchors for an input of `height` x `width` pixels.
    pub fn anchor_count(&self, height: usize, width: usize) -> usize {
        self.anchor_layers
            .iter()
            .map(|l| height.div_ceil(l.stride) * width.div_ceil(l.stride) * l.per_cell)
            .sum()
    }
}

/// Provenance of the converted model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Human-readable model name (the ONNX file stem unless given).
    pub name: String,
    /// File name of the source model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_file: Option<String>,
    /// SHA-256 of the source model file, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
}

/// Element type of a tensor at the plan's boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    F32,
}

/// Memory layout of the image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Batch, channels, height, width (PyTorch / Hugging Face exports).
    Nchw,
    /// Batch, height, width, channels (Keras / TensorFlow exports).
    Nhwc,
}

/// Order of the colour channels the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (OpenCV-trained models).
    Bgr,
}

/// Resampling filter of the resize step, with Pillow's semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResampleFilter {
    /// Pillow NEAREST.
    Nearest,
    /// Pillow BILINEAR (antialiased when shrinking).
    Bilinear,
    /// Pillow BICUBIC (antialiased when shrinking).
    Bicubic,
}

/// Numeric precision of the stored graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in 32-bit float.
    F32,
    /// Weights and activations in 16-bit float.
    F16,
    /// int8 matmuls with float elsewhere.
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        })
    }
}

/// The image input of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Input name in the graph (e.g. `pixel_values`).
    pub name: String,
    /// Fixed shape, batch first (batch is always 1).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Where the channel axis is.
    pub layout: Layout,
    /// 1 (grayscale) or 3 (colour).
    pub channels: usize,
}

/// The logits output of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// Output name in the graph (e.g. `logits`).
    pub name: String,
    /// Fixed shape, e.g. `[1, 7]`.
    pub shape: Vec<usize>,
}

/// How an image becomes the input tensor, mirroring Hugging Face's image processors:
/// resize to `height`x`width` with `resample`, multiply by `rescale_factor`, then `(x - mean) / std` per
/// channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Target height in pixels.
    pub height: usize,
    /// Target width in pixels.
    pub width: usize,
    /// Resize filter.
    pub resample: ResampleFilter,
    /// Multiplier applied to 0..255 values (1/255 for most models).
    pub rescale_factor: f64,
    /// Per-channel mean, one value per input channel.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, one value per input channel.
    pub std: Vec<f32>,
    /// Channel order of colour inputs.
    pub color_order: ColorOrder,
}

/// The converter's check of the written plan against the source model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// What the plan was compared with, e.g. `tract-onnx`.
    pub reference: String,
    /// Number of inputs compared.
    pub inputs: usize,
    /// Largest absolute logit difference seen.
    pub max_abs_logit_diff: f32,
    /// Tolerance the difference had to stay under.
    pub tolerance: f32,
    /// Fraction of inputs whose top-1 class agreed.
    pub top1_agreement: f32,
}

/// How an int8 plan was made, and its measured drift from the float model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantization {
    /// Activation scheme, e.g. `dynamic-per-token` or `static-mse`.
    pub activations: String,
    /// Outlier smoothing, e.g. `search 0,0.25,0.5` or `off`.
    pub smoothing: String,
    /// Whether per-channel activation shifts were allowed.
    #[serde(default)]
    pub shift: bool,
    /// Weight rounding: `gptq` or `nearest`.
    #[serde(default)]
    pub weight_rounding: String,
    /// Calibration images used.
    pub calibration_images: usize,
    /// Layers with a larger simulated relative error stay in float.
    pub max_layer_error: f32,
    /// Matmuls running in int8.
    pub int8_layers: usize,
    /// Matmuls kept in float, with the reason.
    pub float_layers: Vec<FloatLayer>,
    /// Products of two activations (attention's QKᵀ and PV) running in int8, quantized per row at run
    /// time; not counted in `int8_layers`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub int8_activation_products: usize,
    /// Matmuls left in float that are stored and run in f16 (widened to f32 at load on cores without
    /// FP16 arithmetic); the others left in float are f32.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub f16_float_matmuls: usize,
    /// int8 matmuls whose largest activation channels (outliers) are left to a small float product
    /// beside them, and how many channels that is in all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub layers_with_float_channels: usize,
    /// Activation channels, summed over those matmuls.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub float_channels: usize,
    /// Drift on held-out images, when the converter was given `--validate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// How an f16 plan was made: which ops stayed in f32, and its drift from the float model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HalfPrecision {
    /// Op kinds kept in f32, with why.
    pub kept_f32: Vec<String>,
    /// Drift on held-out images, when the converter was given `--validate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
}

/// A matmul left in float.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatLayer {
    /// Node name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Quantized plan against its float model on held-out images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// What it was compared with, e.g. `float plan`.
    pub reference: String,
    /// Images compared.
    pub images: usize,
    /// Fraction with the same top-1 class.
    pub top1_agreement: f64,
    /// Mean KL(reference ‖ quantized) of the softmax outputs.
    pub mean_kl: f64,
    /// Mean cosine similarity of the logit vectors.
    pub logit_cosine: f64,
    /// Largest absolute logit difference.
    pub max_abs_logit_diff: f64,
    /// Accuracy of the float model, when the images were labelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_reference: Option<f64>,
    /// Accuracy of the quantized plan, when the images were labelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The gate: conversion fails below this agreement.
    pub min_agreement: f64,
}

impl Drift {
    /// One line: agreement, KL, cosine, max difference (the figures both CLIs print).
    pub fn summary(&self) -> String {
        format!(
            "top-1 agreement {:.2}%, mean KL {:.2e}, logit cosine {:.5}, max |logit diff| {:.3}",
            self.top1_agreement * 100.0,
            self.mean_kl,
            self.logit_cosine,
            self.max_abs_logit_diff
        )
    }
}

/// One graph file of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the plan root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32 (IEEE) of the content, 8 lowercase hex digits. A corruption check, not a signature.
    pub crc32: String,
}

fn invalid(field: &str, expected: impl std::fmt::Display) -> PlanError {
    PlanError::InvalidField { field: field.to_string(), expected: expected.to_string() }
}

impl Manifest {
    /// Parses and validates a manifest. `PlanError::InvalidField` / `NewerFormat` / `TractVersion` come back
    /// without a path: [`crate::Plan`] adds it.
    pub fn from_json(text: &str) -> Result<Manifest, PlanError> {
        // Read the version first so a newer plan gets "upgrade mien" rather than a schema error.
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| PlanError::Syntax { message: e.to_string() })?;
        match value.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v > FORMAT_VERSION as u64 => {
                return Err(PlanError::NewerFormat { found: v, supported: FORMAT_VERSION });
            }
            Some(_) => {}
            None => return Err(invalid("format_version", "a positive integer")),
        }
        let manifest: Manifest = serde_json::from_value(value)
            .map_err(|e| PlanError::Syntax { message: e.to_string() })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Serializes to pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serializes")
    }

    /// Checks every field against the others.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(PlanError::NewerFormat {
                found: self.format_version as u64,
                supported: FORMAT_VERSION,
            });
        }
        check_tract_version(&self.tract_version)?;
        if self.labels.is_empty() {
            return Err(invalid("labels", "at least one label"));
        }
        for (i, label) in self.labels.iter().enumerate() {
            if label.trim().is_empty() {
                return Err(invalid(&format!("labels[{i}]"), "a non-empty label"));
            }
            if self.labels[..i].contains(label) {
                return Err(invalid(&format!("labels[{i}]"), format!("unique labels, {label:?} repeats")));
            }
        }
        let input = &self.input;
        if input.name.is_empty() {
            return Err(invalid("input.name", "a non-empty name"));
        }
        if input.channels != 1 && input.channels != 3 {
            return Err(invalid("input.channels", format!("1 or 3, found {}", input.channels)));
        }
        let pre = &self.preprocessing;
        if pre.height == 0 || pre.width == 0 || pre.height > 8192 || pre.width > 8192 {
            return Err(invalid("preprocessing.height/width", "a size between 1 and 8192"));
        }
        let expected_shape = match input.layout {
            Layout::Nchw => vec![1, input.channels, pre.height, pre.width],
            Layout::Nhwc => vec![1, pre.height, pre.width, input.channels],
        };
        if input.shape != expected_shape {
            return Err(invalid(
                "input.shape",
                format!(
                    "{expected_shape:?} (batch 1, {:?}, {} channels, {}x{}), found {:?}",
                    input.layout, input.channels, pre.height, pre.width, input.shape
                ),
            ));
        }
        if let Some(detector) = &self.detector {
            self.validate_detector(detector)?;
        } else {
            self.validate_logits()?;
        }
        if !pre.rescale_factor.is_finite() || pre.rescale_factor <= 0.0 {
            return Err(invalid("preprocessing.rescale_factor", "a finite positive number"));
        }
        for (field, values) in [("preprocessing.mean", &pre.mean), ("preprocessing.std", &pre.std)] {
            if values.len() != input.channels {
                return Err(invalid(
                    field,
                    format!("{} values (one per channel), found {}", input.channels, values.len()),
                ));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(invalid(field, "finite numbers"));
            }
        }
        if pre.std.contains(&0.0) {
            return Err(invalid("preprocessing.std", "non-zero values"));
        }
        self.validate_files()
    }

    fn validate_logits(&self) -> Result<(), PlanError> {
        let logits: usize = self.output.shape.iter().product();
        if self.output.shape.is_empty() || logits != self.labels.len() {
            return Err(invalid(
                "labels",
                format!(
                    "{} labels to match output {:?} shape {:?}, found {}",
                    logits,
                    self.output.name,
                    self.output.shape,
                    self.labels.len()
                ),
            ));
        }
        Ok(())
    }

    fn validate_detector(&self, detector: &DetectorSpec) -> Result<(), PlanError> {
        if self.labels.len() != 1 {
            return Err(invalid("labels", format!("one label on a detector plan, found {}", self.labels.len())));
        }
        if detector.anchor_layers.is_empty() || detector.anchor_layers.iter().any(|l| l.stride == 0 || l.per_cell == 0) {
            return Err(invalid("detector.anchor_layers", "at least one layer, each with a non-zero stride and per_cell"));
        }
        for (field, value, range) in [
            ("detector.anchor_offset", detector.anchor_offset, 0.0..=1.0),
            ("detector.min_score", detector.min_score, 0.0..=1.0),
            ("detector.nms_iou", detector.nms_iou, 0.0..=1.0),
            ("detector.score_clip", detector.score_clip, 0.0..=1000.0),
        ] {
            if !range.contains(&value) {
                return Err(invalid(field, format!("a number in {range:?}, found {value}")));
            }
        }
        let pre = &self.preprocessing;
        let expected = vec![1, detector.anchor_count(pre.height, pre.width), detector.values_per_anchor()];
        if self.output.shape != expected {
            return Err(invalid(
                "output.shape",
                format!("{expected:?} (1, anchors, 4 + 2 x keypoints + 1) for this detector, found {:?}", self.output.shape),
            ));
        }
        Ok(())
    }

    fn validate_files(&self) -> Result<(), PlanError> {
        if !self.files.iter().any(|f| f.path == "graph.nnef") {
            return Err(invalid("files", "an entry for graph.nnef"));
        }
        for (i, f) in self.files.iter().enumerate() {
            if !is_safe_relative_path(&f.path) {
                return Err(invalid(&format!("files[{i}].path"), "a relative path inside the plan"));
            }
            if f.crc32.len() != 8 || !f.crc32.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(&format!("files[{i}].crc32"), "8 hex digits"));
            }
            if self.files[..i].iter().any(|g| g.path == f.path) {
                return Err(invalid(&format!("files[{i}].path"), "unique paths"));
            }
        }
        Ok(())
    }
}

/// A plan written by tract 0.x.y loads in 0.x.z only for z >= y.
fn check_tract_version(found: &str) -> Result<(), PlanError> {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
        Some((parts.next()??, parts.next()??, parts.next()??))
    };
    let ours = parse(TRACT_VERSION).expect("TRACT_VERSION is x.y.z");
    match parse(found) {
        Some((major, minor, patch)) if (major, minor) == (ours.0, ours.1) && patch <= ours.2 => Ok(()),
        _ => Err(PlanError::TractVersion { found: found.to_string(), supported: TRACT_VERSION }),
    }
}

pub(crate) fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            tract_version: TRACT_VERSION.into(),
            model: ModelInfo { name: "tiny".into(), source_file: None, source_sha256: None },
            labels: vec!["a".into(), "b".into(), "c".into()],
            input: InputSpec {
                name: "pixel_values".into(),
                shape: vec![1, 3, 32, 32],
                dtype: DType::F32,
                layout: Layout::Nchw,
                channels: 3,
            },
            output: OutputSpec { name: "logits".into(), shape: vec![1, 3] },
            preprocessing: Preprocessing {
                height: 32,
                width: 32,
                resample: ResampleFilter::Bilinear,
                rescale_factor: 1.0 / 255.0,
                mean: vec![0.5; 3],
                std: vec![0.5; 3],
                color_order: ColorOrder::Rgb,
            },
            precision: Precision::F32,
            verification: None,
            quantization: None,
            half: None,
            detector: None,
            created_by: "test".into(),
            files: vec![FileEntry { path: "graph.nnef".into(), size: 1, crc32: "00000000".into() }],
        }
    }

    #[test]
    fn round_trips_through_json() {
        let m = sample();
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn newer_format_is_refused_before_schema_checks() {
        let text = r#"{"format_version": 9, "something": "new"}"#;
        let err = Manifest::from_json(text).unwrap_err();
        assert!(matches!(err, PlanError::NewerFormat { found: 9, .. }), "{err}");
    }

    #[test]
    fn label_count_must_match_output() {
        let mut m = sample();
        m.labels.pop();
        let err = m.validate().unwrap_err().to_string();
        assert!(err.contains("labels") && err.contains("3 labels"), "{err}");
    }

    fn detector_sample() -> Manifest {
        let mut m = sample();
        m.labels = vec!["face".into()];
        m.detector = Some(DetectorSpec {
            anchor_layers: vec![AnchorLayer { stride: 8, per_cell: 2 }, AnchorLayer { stride: 16, per_cell: 6 }],
            anchor_offset: 0.5,
            keypoints: 6,
            score_clip: 100.0,
            min_score: 0.5,
            nms_iou: 0.3,
        });
        // 32x32 input: 4*4*2 + 2*2*6 = 56 anchors of 4 + 12 + 1 values.
        m.output.shape = vec![1, 56, 17];
        m
    }

    #[test]
    fn detector_output_must_match_its_anchors() {
        let m = detector_sample();
        m.validate().unwrap();
        let back = Manifest::from_json(&m.to_json()).unwrap();
        assert_eq!(back.detector, m.detector);

        let mut wrong = m.clone();
        wrong.output.shape = vec![1, 896, 17];
        let err = wrong.validate().unwrap_err().to_string();
        assert!(err.contains("output.shape") && err.contains("[1, 56, 17]"), "{err}");

        let mut two_labels = m.clone();
        two_labels.labels.push("cat".into());
        assert!(two_labels.validate().unwrap_err().to_string().contains("one label on a detector plan"));

        let mut no_layers = m.clone();
        no_layers.detector.as_mut().unwrap().anchor_layers.clear();
        assert!(no_layers.validate().unwrap_err().to_string().contains("detector.anchor_layers"));

        let mut bad_score = m;
        bad_score.detector.as_mut().unwrap().min_score = 1.5;
        assert!(bad_score.validate().unwrap_err().to_string().contains("detector.min_score"));
    }

    #[test]
    fn classifier_manifests_have_no_detector_section() {
        assert!(!sample().to_json().contains("detector"));
    }

    #[test]
    fn shape_must_match_layout_and_size() {
        let mut m = sample();
        m.input.layout = Layout::Nhwc;
        assert!(m.validate().unwrap_err().to_string().contains("input.shape"));
    }

    #[test]
    fn tract_versions() {
        assert!(check_tract_version("0.23.0").is_ok());
        assert!(check_tract_version(TRACT_VERSION).is_ok());
        assert!(check_tract_version("0.23.99").is_err());
        assert!(check_tract_version("0.22.1").is_err());
        assert!(check_tract_version("banana").is_err());
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        for p in ["../x", "/etc/passwd", "a/../b", "", "a//b", "a\\b"] {
            assert!(!is_safe_relative_path(p), "{p}");
        }
        assert!(is_safe_relative_path("encoder/layer.0/w.dat"));
    }

    #[test]
    fn mean_std_per_channel() {
        let mut m = sample();
        m.preprocessing.std = vec![0.5, 0.0, 0.5];
        assert!(m.validate().unwrap_err().to_string().contains("std"));
        m.preprocessing.std = vec![0.5];
        assert!(m.validate().unwrap_err().to_string().contains("one per channel"));
    }
}
