//! The device binary and the runtime must stay free of tract-onnx and protobuf: they are what makes the
//! converter big, and the device never reads ONNX.

use std::process::Command;

fn dependency_names(package: &str) -> Vec<String> {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", package, "-e", "normal,build", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn device_side_has_no_onnx_or_protobuf() {
    for package in [
        "mien",
        "mien-runtime",
        "mien-plan",
        "mien-image",
        "mien-capture",
        "mien-detect",
        "mien-track",
        "mien-pipeline",
    ] {
        let names = dependency_names(package);
        assert!(names.iter().any(|n| n == package), "{package}: cargo tree listed nothing useful: {names:?}");
        for forbidden in ["tract-onnx", "tract-hir", "tract-onnx-opl", "prost", "prost-derive", "protobuf"] {
            assert!(!names.iter().any(|n| n == forbidden), "{package} depends on {forbidden}");
        }
    }
    // The check can fail: the converter does pull tract-onnx in.
    assert!(dependency_names("mien-convert").iter().any(|n| n == "tract-onnx"));
    assert!(dependency_names("mien").iter().any(|n| n == "tract-nnef"));
}
