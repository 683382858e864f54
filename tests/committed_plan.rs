//! The plan committed for the README quick start must be what today's converter makes of the committed
//! ONNX (conversion is deterministic), so a converter change cannot silently leave it stale.

mod common;

use common::*;
use mien_plan::Plan;

#[test]
fn committed_tiny_plan_is_current() {
    let committed = Plan::open(root().join("models/tiny-vit/tiny-vit.mien")).expect("committed plan loads");
    let fresh = Plan::open(tiny_plan()).unwrap();
    let (c, f) = (committed.manifest(), fresh.manifest());
    assert_eq!(c.files, f.files, "graph files differ: regenerate with mien-convert models/tiny-vit/model.onnx -o models/tiny-vit/tiny-vit.mien");
    assert_eq!(c.labels, f.labels);
    assert_eq!(c.preprocessing, f.preprocessing);
    assert_eq!(c.input, f.input);
    assert_eq!(c.model.source_sha256, f.model.source_sha256);
}

/// The committed plan `models/tiny-vit/NAME` and a fresh conversion of the committed ONNX with
/// `configure`'s settings, as manifests.
fn committed_and_fresh(name: &str, configure: impl FnOnce(&mut mien_convert::ConvertOptions)) -> (mien_plan::Manifest, mien_plan::Manifest) {
    let committed = Plan::open(root().join("models/tiny-vit").join(name)).expect("committed plan loads");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(name);
    let mut options = mien_convert::ConvertOptions::new(tiny_onnx(), &out);
    configure(&mut options);
    mien_convert::convert(&options, &mien_convert::Quiet).unwrap();
    (committed.manifest().clone(), Plan::open(&out).unwrap().manifest().clone())
}

/// The committed tiny int8 plan (the fixture of the kernel-choice tests that run under qemu) is what the
/// converter makes today from the committed ONNX and the committed photos.
#[test]
fn committed_tiny_int8_plan_is_current() {
    let (c, f) = committed_and_fresh("tiny-vit-int8.mien", |options| {
        options.precision = mien_plan::Precision::Int8;
        options.int8 = Some(mien_convert::QuantizeSettings {
            calibrate: root().join("tests/data/photos"),
            ..mien_convert::QuantizeSettings::default()
        });
    });
    assert_eq!(
        c.files, f.files,
        "graph files differ: regenerate with mien-convert models/tiny-vit/model.onnx -o models/tiny-vit/tiny-vit-int8.mien --precision int8 --calibrate tests/data/photos"
    );
    let (cq, fq) = (c.quantization.as_ref().unwrap(), f.quantization.as_ref().unwrap());
    assert_eq!((cq.int8_layers, &cq.float_layers, &cq.activations), (fq.int8_layers, &fq.float_layers, &fq.activations));
}

/// The committed tiny f16 plan (the fixture of the f16 kernel tests that run under qemu) is what the
/// converter makes today from the committed ONNX.
#[test]
fn committed_tiny_f16_plan_is_current() {
    let (c, f) = committed_and_fresh("tiny-vit-f16.mien", |options| options.precision = mien_plan::Precision::F16);
    assert_eq!(
        c.files, f.files,
        "graph files differ: regenerate with mien-convert models/tiny-vit/model.onnx -o models/tiny-vit/tiny-vit-f16.mien --precision f16"
    );
    assert_eq!(c.half, f.half);
}
