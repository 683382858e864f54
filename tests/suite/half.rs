//! f16 conversion of the tiny ViT fixture: the written plan's interface and weights, the drift report
//! against the float plan, both runtime paths, and the flags f16 refuses.


use std::path::{Path, PathBuf};

use crate::common::*;
use mien_convert::{convert, ConvertOptions, HalfSettings, Quiet};
use mien_plan::{DType, Plan, Precision};
use mien_runtime::{Classifier, HalfPath, RuntimeOptions};

fn validation_dir(dir: &Path, count: u32) -> PathBuf {
    let out = dir.join("validate");
    std::fs::create_dir_all(&out).unwrap();
    for seed in 0..count {
        mien_convert::verify::synthetic_image(64, 64, 200 + seed)
            .save(out.join(format!("synthetic-{seed:02}.png")))
            .unwrap();
    }
    out
}

fn load(plan: &Path, f16_path: HalfPath) -> Classifier {
    Classifier::load(plan, &RuntimeOptions { threads: 1, f16_path, ..Default::default() }).unwrap()
}

#[test]
fn tiny_vit_f16_plan_keeps_f32_io_stores_f16_weights_and_tracks_the_float_plan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-f16.mien");
    let mut options = ConvertOptions::new(tiny_onnx(), &out);
    options.precision = Precision::F16;
    options.threads = 1;
    options.f16 = Some(HalfSettings {
        validate: Some(validation_dir(dir.path(), 16)),
        validation_count: None,
        min_agreement: 0.9,
    });
    let report = convert(&options, &Quiet).unwrap();

    let m = &report.manifest;
    assert_eq!(m.precision, Precision::F16);
    assert_eq!(m.input.dtype, DType::F32, "callers keep f32 input");
    assert!(m.quantization.is_none());
    let half = m.half.as_ref().expect("f16 section");
    assert!(half.kept_f32.iter().any(|k| k.contains("Reduce")), "{:?}", half.kept_f32);
    let drift = half.drift.as_ref().expect("drift on --validate");
    assert_eq!(drift.images, 16);
    assert!(drift.top1_agreement >= 0.9 && drift.logit_cosine > 0.999, "{drift:?}");
    // Serialization is exact; the precision loss is visible against the ONNX model, and small.
    assert_eq!(report.verification.max_abs_diff, 0.0);
    let float_difference = report.float_difference.as_ref().expect("f16 vs ONNX measured");
    assert!(float_difference.max_abs_diff > 0.0 && float_difference.max_abs_diff < 2e-2, "{float_difference:?}");

    // Every weight tensor is stored in f16: half the bytes of the float plan's weights.
    let weight_bytes = |plan: &Plan| -> u64 {
        plan.manifest().files.iter().filter(|f| f.path.ends_with(".dat")).map(|f| f.size).sum()
    };
    let (f16_plan, f32_plan) = (Plan::open(&out).unwrap(), Plan::open(tiny_plan()).unwrap());
    let (a, b) = (weight_bytes(&f16_plan), weight_bytes(&f32_plan));
    assert!((a as f64) < 0.55 * b as f64, "f16 weights {a} bytes vs f32 {b}");
    assert_eq!(f16_plan.manifest().half, m.half);

    // Both runtime paths run it and stay close to the float plan; on this x86 box auto widens to f32.
    let f16 = load(&out, HalfPath::F16);
    let widened = load(&out, HalfPath::F32);
    let float = load(tiny_plan(), HalfPath::Auto);
    assert_eq!(f16.f16_path().unwrap().path, HalfPath::F16);
    assert_eq!(widened.f16_path().unwrap().path, HalfPath::F32);
    assert!(float.f16_path().is_none());
    if !mien_runtime::half::fp16_arithmetic() {
        assert_eq!(load(&out, HalfPath::Auto).f16_path().unwrap().path, HalfPath::F32);
    }
    for fixture in tiny_fixtures() {
        let image = mien_image::open_rgb(&fixture.photo).unwrap();
        let (h, w, f) =
            (f16.classify(&image).unwrap(), widened.classify(&image).unwrap(), float.classify(&image).unwrap());
        assert!(max_abs_diff(&h.logits, &f.logits) < 2e-2, "{}: {:?} vs {:?}", fixture.file, h.logits, f.logits);
        assert!(max_abs_diff(&w.logits, &f.logits) < 2e-2, "{}: {:?} vs {:?}", fixture.file, w.logits, f.logits);
        assert!(max_abs_diff(&h.logits, &f.logits) > 0.0, "f16 must differ from float somewhere");
    }
}
