//! The committed tiny plan against onnxruntime's logits for the committed fixtures, and the end-to-end
//! path (decode, resize, plan) on the photos. Runs natively and, in CI, under qemu-user for aarch64 and
//! armv7: plan outputs on ARM must match x86 (and onnxruntime) within 1e-4.

use std::path::PathBuf;

use mien_runtime::{Classifier, RuntimeOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn committed_tiny_plan_matches_onnxruntime_on_the_fixtures() {
    let dir = root().join("tests/data/tiny-vit");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    for threads in [1, 2] {
        let classifier = Classifier::load(
            root().join("models/tiny-vit/tiny-vit.mien"),
            &RuntimeOptions {
                threads,
                ..Default::default()
            },
        )
        .unwrap();
        for image in expected["images"].as_array().unwrap() {
            let bytes = std::fs::read(dir.join(image["pixel_values"].as_str().unwrap())).unwrap();
            let pixels: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let theirs: Vec<f32> = image["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let ours = classifier.run_logits(&pixels).unwrap();
            let diff = max_abs_diff(&ours, &theirs);
            assert!(
                diff <= 1e-4,
                "{} ({threads} threads): max |logit diff| {diff:.2e}",
                image["file"]
            );
            if image["file"].as_str().unwrap().ends_with(".png") {
                // PNGs decode identically everywhere: the whole path (decode, resize, plan) matches too.
                let photo = mien_image::open_rgb(
                    root()
                        .join("tests/data/photos")
                        .join(image["file"].as_str().unwrap()),
                )
                .unwrap();
                let logits = classifier.classify(&photo).unwrap().logits;
                let diff = max_abs_diff(&logits, &theirs);
                assert!(
                    diff <= 1e-4,
                    "{} end to end: max |logit diff| {diff:.2e}",
                    image["file"]
                );
            }
        }
    }
}
