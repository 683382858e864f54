//! Helpers shared by the workspace-level tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

/// Whether this run is CI (`CI=true` or `1`), where missing prerequisites fail instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Fails in CI; elsewhere prints why `test` is skipped and returns None.
pub fn missing<T>(test: &str, what: &str) -> Option<T> {
    if in_ci() {
        panic!("CI=true and {what}");
    }
    eprintln!("SKIPPED {test}: {what} (CI would fail here)");
    None
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed tiny ViT export.
pub fn tiny_onnx() -> PathBuf {
    root().join("models/tiny-vit/model.onnx")
}

/// A plan converted from the tiny ViT once per test binary (cached under target/).
pub fn tiny_plan() -> &'static Path {
    static PLAN: OnceLock<PathBuf> = OnceLock::new();
    PLAN.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tiny-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("tiny-vit.mien");
        let options = mien_convert::ConvertOptions::new(tiny_onnx(), &out);
        mien_convert::convert(&options, &mien_convert::Quiet).expect("tiny ViT converts");
        out
    })
}

/// One photo's reference data, made by tools/make_tiny_fixtures.py with the Hugging Face processor and
/// onnxruntime.
pub struct Fixture {
    pub file: String,
    pub photo: PathBuf,
    pub pixel_values: Vec<f32>,
    pub logits: Vec<f32>,
}

pub fn tiny_fixtures() -> Vec<Fixture> {
    let dir = root().join("tests/data/tiny-vit");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    expected["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|image| {
            let bytes = std::fs::read(dir.join(image["pixel_values"].as_str().unwrap())).unwrap();
            let pixel_values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let file = image["file"].as_str().unwrap().to_string();
            Fixture {
                photo: root().join("tests/data/photos").join(&file),
                file,
                pixel_values,
                logits: image["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect(),
            }
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// mien's cache folder: `$MIEN_CACHE`, else `~/.cache/mien`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MIEN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/mien"))
}

/// The Python with tools/requirements's onnx, onnxruntime, Pillow and numpy: `$MIEN_PYTHON` (what
/// `.ci/run` sets), else `$MIEN_CACHE/venv/bin/python`, else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MIEN_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = cache_dir().join("venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// A face photo fetched by tools/fetch_test_photos.sh (single_face.jpg, multi_face.jpg);
/// None (after saying why) when absent outside CI.
pub fn photo(test: &str, name: &str) -> Option<PathBuf> {
    let path = cache_dir().join("photos").join(name);
    if path.is_file() {
        Some(path)
    } else {
        missing(test, &format!("{} is missing (run tools/fetch_test_photos.sh)", path.display()))
    }
}

/// The committed face detector plan.
pub fn detector_plan() -> PathBuf {
    root().join("models/blazeface/blazeface-short.mien")
}

/// A photo committed under tests/data/photos (public domain; see its README).
pub fn committed_photo(name: &str) -> PathBuf {
    root().join("tests/data/photos").join(name)
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the tests run as root (mounts, debootstrap, permission checks as another user).
pub fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
