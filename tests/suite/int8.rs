//! int8 conversion of the tiny ViT fixture: calibration, the written plan's contents, both runtime paths,
//! the drift report and gate, and the refusals.


use std::path::{Path, PathBuf};

use crate::common::*;
use mien_convert::{convert, ConvertError, ConvertOptions, QuantizeSettings, Quiet};
use mien_plan::{Plan, Precision};
use mien_quantize::{ActivationMode, QuantizeOptions, StaticCalibrator};
use mien_runtime::{Classifier, Int8Path, RuntimeOptions};

/// Held-out images: deterministic synthetic pictures, so they never overlap the calibration photos.
fn validation_dir(dir: &Path, count: u32) -> PathBuf {
    let out = dir.join("validate");
    std::fs::create_dir_all(&out).unwrap();
    for seed in 0..count {
        mien_convert::verify::synthetic_image(64, 64, 100 + seed).save(out.join(format!("synthetic-{seed:02}.png"))).unwrap();
    }
    out
}

fn int8_options(out: &Path, validate: Option<PathBuf>) -> ConvertOptions {
    let mut options = ConvertOptions::new(tiny_onnx(), out);
    options.precision = Precision::Int8;
    options.threads = 1;
    options.int8 = Some(QuantizeSettings {
        calibrate: root().join("tests/data/photos"),
        validate,
        min_agreement: 0.9,
        ..QuantizeSettings::default()
    });
    options
}

fn load(plan: &Path, int8_path: Int8Path) -> Classifier {
    Classifier::load(plan, &RuntimeOptions { threads: 1, int8_path, ..Default::default() }).unwrap()
}

fn assert_nothing_written(dir: &Path, except: &[&str]) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !except.contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "partial output left behind: {left:?}");
}

#[test]
fn tiny_vit_int8_plan_quantizes_every_linear_layer_and_tracks_the_float_plan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-int8.mien");
    let validate = validation_dir(dir.path(), 24);
    let report = convert(&int8_options(&out, Some(validate)), &Quiet).unwrap();

    let m = &report.manifest;
    assert_eq!(m.precision, Precision::Int8);
    let q = m.quantization.as_ref().expect("quantization section");
    // Patch embedding (a patchifying convolution, rewritten as a matmul) + 2 layers x (q, k, v, o, fc1,
    // fc2) + classifier.
    assert_eq!(q.int8_layers, 14, "{:?}", q.float_layers);
    assert!(q.float_layers.is_empty(), "{:?}", q.float_layers);
    assert_eq!(q.calibration_images, 5);
    let drift = q.drift.as_ref().expect("drift on --validate");
    assert_eq!(drift.images, 24);
    assert!(drift.top1_agreement >= 0.9 && drift.logit_cosine > 0.99, "{drift:?}");
    assert!(drift.accuracy.is_none(), "flat folder: no labels, no accuracy");
    let layers = &report.quantized.as_ref().unwrap().layers;
    assert!(layers.iter().all(|l| l.error < 0.05), "{layers:?}");

    // The manifest on disk says the same; the weights are stored as i8 (the tiny model's graph text and
    // per-channel vectors outweigh its weights, so whole-plan size is measured on real models instead).
    let plan = Plan::open(&out).unwrap();
    let on_disk = plan.manifest().quantization.as_ref().unwrap();
    assert_eq!((on_disk.int8_layers, &on_disk.float_layers, &on_disk.activations), (q.int8_layers, &q.float_layers, &q.activations));
    // JSON keeps floats to within one unit in the last place.
    assert!((on_disk.drift.as_ref().unwrap().logit_cosine - drift.logit_cosine).abs() < 1e-12);
    let i8_weights: Vec<_> = plan.manifest().files.iter().filter(|f| f.path.ends_with(".weight_i8.dat")).collect();
    assert_eq!(i8_weights.len(), 14, "{:?}", plan.manifest().files);
    assert!(i8_weights.iter().any(|f| f.path.contains("patch_embeddings")), "{i8_weights:?}");

    // Both runtime paths run it; the integer path on integer kernels, the other on float ones, and they
    // agree closely (the same quantized activations, exact vs f32 accumulation).
    let integer = load(&out, Int8Path::Integer);
    let dequantized = load(&out, Int8Path::DequantizedWeights);
    let float = load(tiny_plan(), Int8Path::Auto);
    assert_eq!(integer.int8_path().unwrap().path, Int8Path::Integer);
    assert_eq!(dequantized.int8_path().unwrap().path, Int8Path::DequantizedWeights);
    assert!(float.int8_path().is_none());
    let has_integer_kernel = |c: &Classifier| c.matmul_kernels().keys().any(|k| k.contains("i32"));
    assert!(has_integer_kernel(&integer), "{:?}", integer.matmul_kernels());
    assert!(!has_integer_kernel(&dequantized), "{:?}", dequantized.matmul_kernels());
    for fixture in tiny_fixtures() {
        let image = mien_image::open_rgb(&fixture.photo).unwrap();
        let a = integer.classify(&image).unwrap();
        let b = dequantized.classify(&image).unwrap();
        let f = float.classify(&image).unwrap();
        assert!(max_abs_diff(&a.logits, &b.logits) < 1e-3, "{}: {:?} vs {:?}", fixture.file, a.logits, b.logits);
        // Quantization moves logits a little, not a lot (logits of this random model span ~1).
        assert!(max_abs_diff(&a.logits, &f.logits) < 0.2, "{}: {:?} vs {:?}", fixture.file, a.logits, f.logits);
        assert!(max_abs_diff(&a.logits, &f.logits) > 0.0, "int8 must differ from float somewhere");
    }
}

#[test]
fn static_calibrators_convert_too() {
    for calibrator in [StaticCalibrator::MinMax, StaticCalibrator::Percentile(99.9), StaticCalibrator::Mse] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.mien");
        let mut options = int8_options(&out, None);
        options.int8.as_mut().unwrap().options =
            QuantizeOptions { activations: ActivationMode::Static { calibrator }, ..QuantizeOptions::default() };
        let report = convert(&options, &Quiet).unwrap();
        let q = report.manifest.quantization.unwrap();
        assert!(q.activations.starts_with("static-"), "{}", q.activations);
        assert!(q.drift.is_none());
        let layers = report.quantized.unwrap().layers;
        assert!(layers.iter().all(|l| l.activation_scale.is_some()));
        let image = mien_image::open_rgb(root().join("tests/data/photos/chelsea.png")).unwrap();
        let a = load(&out, Int8Path::Integer).classify(&image).unwrap();
        let f = load(tiny_plan(), Int8Path::Auto).classify(&image).unwrap();
        assert!(max_abs_diff(&a.logits, &f.logits) < 0.3, "{calibrator:?}: {:?} vs {:?}", a.logits, f.logits);
    }
}

#[test]
fn layers_over_the_error_threshold_stay_float_and_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.mien");
    let mut options = int8_options(&out, None);
    options.int8.as_mut().unwrap().options.max_layer_error = 1e-6;
    let report = convert(&options, &Quiet).unwrap();
    let q = report.manifest.quantization.unwrap();
    assert_eq!(q.int8_layers, 0);
    assert_eq!(q.float_layers.len(), 14);
    assert!(q.float_layers.iter().all(|l| l.reason.contains("exceeds")), "{:?}", q.float_layers);
    assert!(report.warnings.iter().any(|w| w.contains("stays in float")));
}

#[test]
fn drift_gate_refuses_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.mien");
    let validate = validation_dir(dir.path(), 16);
    let mut options = int8_options(&out, Some(validate));
    // Clip activations at their median magnitude: a quantization bad enough to change answers.
    options.int8.as_mut().unwrap().options = QuantizeOptions {
        activations: ActivationMode::Static { calibrator: StaticCalibrator::Percentile(50.0) },
        smoothing: mien_quantize::Smoothing::Off,
        max_layer_error: 10.0,
        ..QuantizeOptions::default()
    };
    options.int8.as_mut().unwrap().min_agreement = 1.0;
    let err = convert(&options, &Quiet).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConvertError::DriftGate { .. }), "{msg}");
    assert!(msg.contains("--min-agreement") && !msg.contains('\n'), "{msg}");
    assert_nothing_written(dir.path(), &["validate"]);
}

#[test]
fn int8_refusals_name_the_flag_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.mien");

    let mut options = int8_options(&out, None);
    options.int8 = None;
    let msg = convert(&options, &Quiet).unwrap_err().to_string();
    assert!(msg.contains("--calibrate"), "{msg}");

    let mut options = int8_options(&out, Some(root().join("tests/data/photos")));
    let msg = convert(&options, &Quiet).unwrap_err().to_string();
    assert!(msg.contains("--validate") && msg.contains("calibration"), "{msg}");

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    options.int8.as_mut().unwrap().calibrate = empty.clone();
    options.int8.as_mut().unwrap().validate = None;
    let msg = convert(&options, &Quiet).unwrap_err().to_string();
    assert!(msg.contains("--calibrate") && msg.contains("holds none"), "{msg}");
    assert!(!msg.contains('\n'));
    assert_nothing_written(dir.path(), &["empty"]);
}
