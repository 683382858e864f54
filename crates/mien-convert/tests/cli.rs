//! The `mien-convert` binary: reports, exit codes, one-line errors, no partial output.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn convert(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mien-convert")).args(args).output().expect("mien-convert runs")
}

#[test]
fn json_report_and_plan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.mien");
    let onnx = root().join("models/tiny-vit/model.onnx");
    let result = convert(&[onnx.as_os_str(), "-o".as_ref(), out.as_os_str(), "--json".as_ref()]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let v: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(v["model"], "tiny-vit");
    assert!(v["verification"]["max_abs_logit_diff"].as_f64().unwrap() <= 1e-5);
    assert_eq!(v["verification"]["top1_agreement"], 1.0);
    assert!(out.is_file());
}

#[test]
fn errors_are_one_line_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.mien");
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (vec!["/nonexistent/model.onnx".into(), "-o".into(), out.clone().into()], "/nonexistent/model.onnx"),
        (
            vec![root().join("tests/data/onnx/dynamic_hw.onnx").into(), "-o".into(), out.clone().into()],
            "--size",
        ),
        (
            vec![root().join("tests/data/onnx/two_inputs.onnx").into(), "-o".into(), out.clone().into()],
            "2 inputs",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let result = convert(&args);
        assert_eq!(result.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(result.stderr).unwrap();
        let lines: Vec<_> = stderr.lines().filter(|l| !l.starts_with("warning:")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(needle), "{stderr}");
        assert!(!stderr.contains("panicked"));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "partial output: {left:?}");
    }
}

#[test]
fn bad_size_flag_is_a_usage_error() {
    let result = convert(&["m.onnx".as_ref(), "-o".as_ref(), "x".as_ref(), "--size".as_ref(), "224".as_ref()]);
    assert_eq!(result.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&result.stderr).contains("HxW"));
}

#[test]
fn help_has_examples() {
    let out = convert(&["--help".as_ref()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Examples:") && text.contains("--labels"), "{text}");
}

#[test]
fn int8_json_report_lists_layers_and_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-int8.mien");
    let onnx = root().join("models/tiny-vit/model.onnx");
    let photos = root().join("tests/data/photos");
    let result = convert(&[
        onnx.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--precision".as_ref(),
        "int8".as_ref(),
        "--calibrate".as_ref(),
        photos.as_os_str(),
        "--activations".as_ref(),
        "mse".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let v: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(v["precision"], "int8");
    assert_eq!(v["quantization"]["activations"], "static-mse");
    assert_eq!(v["quantization"]["int8_layers"], 14);
    assert_eq!(v["layers"].as_array().unwrap().len(), 14);
    assert!(v["layers"][0]["error"].as_f64().unwrap() > 0.0);
    assert!(out.is_file());

    // Flag mistakes: one line, exit 1, nothing written.
    let bad = dir.path().join("bad.mien");
    for (args, needle) in [
        (vec!["--precision", "int8"], "--calibrate"),
        (vec!["--precision", "int8", "--calibrate", "x", "--min-agreement", "120"], "--min-agreement"),
        (vec!["--precision", "int8", "--calibrate", "x", "--smoothing", "2"], "--smoothing"),
        (vec!["--calibrate", "x"], "--precision int8"),
        (vec!["--float-matmuls", "f16"], "--float-matmuls"),
        (vec!["--precision", "f16", "--int8-attention", "all"], "--int8-attention"),
        (vec!["--precision", "int8", "--calibrate", "x", "--float-matmuls", "f8"], "--float-matmuls"),
    ] {
        let mut full: Vec<&std::ffi::OsStr> = vec![onnx.as_os_str(), "-o".as_ref(), bad.as_os_str()];
        full.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        let result = convert(&full);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{args:?}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!bad.exists());
    }
}

#[test]
fn int8_attention_and_f16_float_matmuls_are_recorded_and_the_plan_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-mixed.mien");
    let onnx = root().join("models/tiny-vit/model.onnx");
    let photos = root().join("tests/data/photos");
    let mut args: Vec<&std::ffi::OsStr> = vec![onnx.as_os_str(), "-o".as_ref(), out.as_os_str()];
    args.extend(
        ["--precision", "int8", "--calibrate"].iter().map(std::ffi::OsStr::new).chain([photos.as_os_str()]).chain(
            ["--int8-attention", "scores", "--float-matmuls", "f16", "--json"].iter().map(std::ffi::OsStr::new),
        ),
    );
    let result = convert(&args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let v: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    // Two blocks: their q·kᵀ in int8, their softmax·v stored in f16.
    assert_eq!(v["quantization"]["int8_activation_products"], 2, "{v}");
    assert_eq!(v["quantization"]["f16_float_matmuls"], 2, "{v}");
    // The runtime's fused f32 ops (LayerNorm, attention products) sum in another order than tract's
    // reference: rounding-level differences only.
    let diff = v["verification"]["max_abs_logit_diff"].as_f64().unwrap();
    assert!(diff <= 1e-4, "{v}");
    let plan = mien_plan::Plan::open(&out).unwrap();
    assert_eq!(plan.manifest().quantization.as_ref().unwrap().f16_float_matmuls, 2);
}

#[test]
fn f16_json_report_and_refused_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-f16.mien");
    let onnx = root().join("models/tiny-vit/model.onnx");
    let result = convert(&[onnx.as_os_str(), "-o".as_ref(), out.as_os_str(), "--precision".as_ref(), "f16".as_ref(), "--json".as_ref()]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let v: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(v["precision"], "f16");
    assert!(v["half"]["kept_f32"].as_array().is_some_and(|k| !k.is_empty()), "{v}");
    assert_eq!(v["verification"]["max_abs_logit_diff"], 0.0);
    let difference = v["float_difference"]["max_abs_logit_diff"].as_f64().unwrap();
    assert!(difference > 0.0 && difference < 2e-2, "{difference}");
    assert!(out.is_file());

    let bad = dir.path().join("bad.mien");
    for (args, needle) in [
        (vec!["--precision", "f16", "--calibrate", "x"], "--calibrate"),
        (vec!["--precision", "f16", "--min-agreement", "101"], "--min-agreement"),
        (vec!["--precision", "f16", "--validate", "/no/such/folder"], "--validate"),
    ] {
        let mut full: Vec<&std::ffi::OsStr> = vec![onnx.as_os_str(), "-o".as_ref(), bad.as_os_str()];
        full.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        let result = convert(&full);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{args:?}");
        assert!(stderr.contains(needle) && stderr.trim().lines().count() == 1, "{args:?}: {stderr}");
        assert!(!bad.exists());
    }
}
