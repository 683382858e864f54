//! Exported-classifier graph patterns (tests/data/onnx/patterns/, made by
//! tools/make_classifier_patterns.py): tf2onnx-style NHWC graphs with their preprocessing inside (Sub,
//! Mul, Div by constants of lower rank than the image), Transpose, depthwise convolutions, Pad,
//! BatchNormalization, GlobalAveragePool, Flatten or Reshape, Gemm, a Softmax at the output; grayscale
//! and RGB, NCHW and NHWC, static and dynamic batch. Every one must convert, and its plan must give
//! onnxruntime's outputs (within the converter's tolerance, same top-1) on the same input.

use std::path::PathBuf;

use crate::common::*;
use mien_convert::{convert, ConvertOptions, Quiet};
use mien_runtime::{Classifier, RuntimeOptions};
use serde_json::Value;

fn patterns() -> PathBuf {
    root().join("tests/data/onnx/patterns")
}

/// The generator's input: element i is ((i * 2654435761) mod 2^32) / 2^32.
fn deterministic_input(len: usize) -> Vec<f32> {
    (0..len as u64).map(|i| ((i * 2654435761) % (1 << 32)) as f64 / (1u64 << 32) as f64).map(|v| v as f32).collect()
}

fn argmax(v: &[f32]) -> usize {
    mien_runtime::top_k(v, 1)[0].0
}

#[test]
fn every_exported_classifier_pattern_converts_and_matches_onnxruntime() {
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(patterns().join("expected.json")).unwrap()).unwrap();
    let models = expected["models"].as_object().unwrap();
    assert!(models.len() >= 5, "{models:?}");
    let mut failures = vec![];
    for (name, model) in models {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(format!("{name}.mien"));
        let mut options = ConvertOptions::new(patterns().join(format!("{name}.onnx")), &out);
        let floats = |key: &str| model["flags"][key].as_array().map(|a| a.iter().map(|v| v.as_f64().unwrap() as f32).collect());
        options.mean = floats("mean");
        options.std = floats("std");
        let report = match convert(&options, &Quiet) {
            Ok(report) => report,
            Err(e) => {
                failures.push(format!("{name}: conversion failed: {e}"));
                continue;
            }
        };
        let shape: Vec<usize> = model["input_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(report.manifest.input.shape, shape, "{name}");
        let classifier = Classifier::load(&out, &RuntimeOptions { threads: 1, ..Default::default() }).unwrap();
        let ours = classifier.run_logits(&deterministic_input(shape.iter().product())).unwrap();
        let theirs: Vec<f32> = model["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let diff = max_abs_diff(&ours, &theirs);
        eprintln!("{name}: max |output diff| against onnxruntime {diff:.2e}");
        if !(diff <= options.tolerance) || argmax(&ours) != argmax(&theirs) {
            failures.push(format!("{name}: max |diff| {diff:.3e} (tolerance {:.0e}), ours {ours:?}, onnxruntime {theirs:?}", options.tolerance));
        }
    }
    assert!(failures.is_empty(), "{} of {} patterns failed:\n{}", failures.len(), models.len(), failures.join("\n"));
}
