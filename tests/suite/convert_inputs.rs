//! mien-convert on models that are not Hugging Face ViTs, and on models it must refuse.


use std::path::{Path, PathBuf};

use crate::common::*;
use mien_convert::{convert, ConvertError, ConvertOptions, LabelSource, Quiet};
use mien_plan::{Layout, Plan};
use mien_runtime::{Classifier, RuntimeOptions};

fn onnx(name: &str) -> PathBuf {
    root().join("tests/data/onnx").join(name)
}

fn out_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn assert_nothing_written(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "partial output left behind: {left:?}");
}

#[test]
fn dynamic_size_without_flags_is_refused_by_name() {
    let dir = out_dir();
    let err = convert(&ConvertOptions::new(onnx("dynamic_hw.onnx"), dir.path().join("p.mien")), &Quiet).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConvertError::Flag { .. }), "{msg}");
    assert!(msg.contains("--size") && msg.contains("image"), "{msg}");
    assert!(!msg.contains('\n'));
    assert_nothing_written(dir.path());
}

#[test]
fn dynamic_size_with_flags_converts_and_falls_back_to_class_n_labels() {
    let dir = out_dir();
    let out = dir.path().join("p.mien");
    let mut options = ConvertOptions::new(onnx("dynamic_hw.onnx"), &out);
    options.size = Some((40, 56));
    let report = convert(&options, &Quiet).unwrap();
    assert_eq!(report.manifest.labels, ["class_0", "class_1", "class_2", "class_3"]);
    assert!(report.warnings.iter().any(|w| w.contains("class_0")), "{:?}", report.warnings);
    assert_eq!(report.manifest.input.shape, [1, 3, 40, 56]);
    let classifier = Classifier::load(&out, &RuntimeOptions { threads: 1, ..Default::default() }).unwrap();
    let image = mien_image::open_rgb(root().join("tests/data/photos/coffee.png")).unwrap();
    let result = classifier.classify(&image).unwrap();
    assert!(result.label.starts_with("class_"));
}

#[test]
fn keras_style_grayscale_nhwc_from_flags() {
    let dir = out_dir();
    let out = dir.path().join("fer");
    let mut options = ConvertOptions::new(onnx("nhwc_gray.onnx"), &out);
    options.labels = Some(LabelSource::List(
        ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"].map(String::from).to_vec(),
    ));
    options.mean = Some(vec![0.0]);
    options.std = Some(vec![1.0]);
    let report = convert(&options, &Quiet).unwrap();
    let m = &report.manifest;
    assert_eq!(m.input.layout, Layout::Nhwc);
    assert_eq!(m.input.channels, 1);
    assert_eq!(m.input.shape, [1, 48, 48, 1]);
    assert_eq!(m.labels[6], "neutral");
    // A directory plan.
    assert!(out.join("mien.json").is_file() && out.join("graph.nnef").is_file());
    Plan::open(&out).unwrap();
}

#[test]
fn wrong_label_count_is_refused() {
    let dir = out_dir();
    let mut options = ConvertOptions::new(onnx("nhwc_gray.onnx"), dir.path().join("p.mien"));
    options.labels = Some(LabelSource::List(vec!["a".into(), "b".into()]));
    let msg = convert(&options, &Quiet).unwrap_err().to_string();
    assert!(msg.contains("--labels") && msg.contains("7 labels") && msg.contains("found 2"), "{msg}");
    assert_nothing_written(dir.path());
}

#[test]
fn models_that_are_not_image_classifiers_are_refused() {
    for (name, needle) in [("two_inputs.onnx", "2 inputs"), ("text_input.onnx", "I64")] {
        let dir = out_dir();
        let err = convert(&ConvertOptions::new(onnx(name), dir.path().join("p.mien")), &Quiet).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConvertError::NotImageClassifier { .. }), "{name}: {msg}");
        assert!(msg.contains(name) && msg.contains(needle), "{name}: {msg}");
        assert_nothing_written(dir.path());
    }
}

#[test]
fn garbage_onnx_is_a_one_line_error() {
    let dir = out_dir();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"this is not protobuf at all").unwrap();
    let out = dir.path().join("p.mien");
    let msg = convert(&ConvertOptions::new(&bad, &out), &Quiet).unwrap_err().to_string();
    assert!(msg.contains("bad.onnx"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    assert!(!out.exists());
}

#[test]
fn mean_with_wrong_channel_count_is_refused() {
    let dir = out_dir();
    let mut options = ConvertOptions::new(tiny_onnx(), dir.path().join("p.mien"));
    options.mean = Some(vec![0.1, 0.2]);
    let msg = convert(&options, &Quiet).unwrap_err().to_string();
    assert!(msg.contains("--mean") && msg.contains("3 channels"), "{msg}");
}

#[test]
fn fixed_size_cannot_be_overridden() {
    let dir = out_dir();
    let mut options = ConvertOptions::new(tiny_onnx(), dir.path().join("p.mien"));
    options.size = Some((32, 32));
    let msg = convert(&options, &Quiet).unwrap_err().to_string();
    assert!(msg.contains("--size") && msg.contains("64x64"), "{msg}");
}
