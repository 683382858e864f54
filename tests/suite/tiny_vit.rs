//! The tiny ViT (the seed's graph with small dimensions) end to end: ONNX → plan → runtime, against the
//! Hugging Face processor and onnxruntime.


use crate::common::*;
use mien_runtime::{Classifier, RuntimeOptions};

fn classifier() -> Classifier {
    Classifier::load(tiny_plan(), &RuntimeOptions { threads: 1, ..Default::default() }).unwrap()
}

#[test]
fn plan_matches_onnxruntime_on_the_processors_pixel_values() {
    let classifier = classifier();
    for fixture in tiny_fixtures() {
        let logits = classifier.run_logits(&fixture.pixel_values).unwrap();
        let diff = max_abs_diff(&logits, &fixture.logits);
        assert!(diff <= 1e-4, "{}: max |logit diff| {diff:e} > 1e-4", fixture.file);
    }
}

#[test]
fn preprocessing_matches_the_hugging_face_processor() {
    let classifier = classifier();
    // One uint8 level after normalisation by std 0.5 is 2/255.
    let level = 2.0 / 255.0;
    for fixture in tiny_fixtures() {
        let image = mien_image::open_rgb(&fixture.photo).unwrap();
        let ours = classifier.preprocessor().run(&image);
        let identical = ours.iter().zip(&fixture.pixel_values).filter(|(a, b)| a == b).count();
        let share = identical as f64 / ours.len() as f64;
        let diff = max_abs_diff(&ours, &fixture.pixel_values);
        eprintln!("{}: {:.3}% identical, max diff {:.2} levels", fixture.file, share * 100.0, diff / level);
        if fixture.file.ends_with(".png") {
            // Lossless input: only the resize is under test, and it must be Pillow's.
            assert!(share >= 0.999, "{}: only {:.3}% identical", fixture.file, share * 100.0);
            assert!(diff <= level * 1.0001, "{}: off by {:.2} levels", fixture.file, diff / level);
        } else {
            // JPEG: libjpeg (Pillow) and zune-jpeg may differ by a level on some pixels before the resize.
            assert!(diff <= 3.0 * level, "{}: off by {:.2} levels", fixture.file, diff / level);
        }
    }
}

#[test]
fn photos_classify_like_onnxruntime_end_to_end() {
    let classifier = classifier();
    for fixture in tiny_fixtures().into_iter().filter(|f| f.file.ends_with(".png")) {
        let image = mien_image::open_rgb(&fixture.photo).unwrap();
        let result = classifier.classify(&image).unwrap();
        let diff = max_abs_diff(&result.logits, &fixture.logits);
        assert!(diff <= 1e-4, "{}: max |logit diff| {diff:e}", fixture.file);
        let expected_top = mien_runtime::top_k(&fixture.logits, 1)[0].0;
        assert_eq!(result.index, expected_top, "{}", fixture.file);
        assert!((result.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn manifest_records_the_seed_preprocessing_and_verification() {
    let classifier = classifier();
    let m = classifier.manifest();
    assert_eq!(m.labels, ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]);
    assert_eq!(m.input.shape, [1, 3, 64, 64]);
    assert_eq!(m.input.name, "pixel_values");
    assert_eq!(m.preprocessing.resample, mien_plan::ResampleFilter::Bilinear);
    assert_eq!(m.preprocessing.mean, [0.5; 3]);
    assert_eq!(m.preprocessing.std, [0.5; 3]);
    assert_eq!(m.preprocessing.rescale_factor, 1.0 / 255.0);
    let v = m.verification.as_ref().unwrap();
    assert!(v.max_abs_logit_diff <= 1e-5 && v.top1_agreement == 1.0, "{v:?}");
    let sha = m.model.source_sha256.as_deref().unwrap();
    assert_eq!(sha.len(), 64);
}

#[test]
fn gelu_expansion_is_fused_again_at_load() {
    // The plan holds the erf expansion (tract has no NNEF serializer for GeluExact); after the runtime's
    // optimisation the expansion must be fused again, not run as five separate ops.
    let classifier = classifier();
    let ops = classifier.op_counts();
    assert!(!ops.contains_key("Erf"), "GELU was not re-fused: {ops:?}");
}

#[test]
fn threads_do_not_change_results() {
    let one = classifier();
    let two = Classifier::load(tiny_plan(), &RuntimeOptions { threads: 2, ..Default::default() }).unwrap();
    let fixture = &tiny_fixtures()[0];
    let a = one.run_logits(&fixture.pixel_values).unwrap();
    let b = two.run_logits(&fixture.pixel_values).unwrap();
    assert!(max_abs_diff(&a, &b) <= 1e-5);
    assert_eq!(two.threads(), 2);
}
