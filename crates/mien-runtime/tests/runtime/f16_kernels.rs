//! Which matmul kernels an f16 plan runs on, per CPU: natively, and in CI under qemu-user for aarch64
//! (QEMU_CPU=cortex-a76 has FP16 arithmetic: tract's f16 NEON kernels; cortex-a72 has not: the plan is
//! widened to f32 at load) and armv7 (widened). tract reads FP16 support from /proc/cpuinfo, which
//! under qemu-user is the host's, so CI tells it with TRACT_CPU_ISA=+fp16 on the A76 run.

use std::path::PathBuf;

use mien_runtime::{Classifier, HalfPath, RuntimeOptions};

fn f16_plan() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-vit/tiny-vit-f16.mien")
}

fn f32_plan() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-vit/tiny-vit.mien")
}

fn load(plan: PathBuf, f16_path: HalfPath) -> Classifier {
    Classifier::load(
        plan,
        &RuntimeOptions {
            threads: 1,
            f16_path,
            ..Default::default()
        },
    )
    .unwrap()
}

fn photo() -> Vec<f32> {
    let image = mien_image::open_rgb(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/photos/astronaut.png"),
    )
    .unwrap();
    let classifier = load(f32_plan(), HalfPath::Auto);
    classifier.preprocessor().run(&image)
}

#[test]
fn auto_path_follows_the_cpu_and_picks_the_kernels_it_should() {
    let classifier = load(f16_plan(), HalfPath::Auto);
    let choice = classifier.f16_path().expect("an f16 plan reports its path");
    let kernels = classifier.matmul_kernels();
    if std::env::var("MIEN_F16_PATH").is_ok() {
        return;
    }
    #[cfg(target_arch = "aarch64")]
    match std::env::var("QEMU_CPU").unwrap_or_default().as_str() {
        "cortex-a76" | "cortex-a78" => {
            assert!(
                std::arch::is_aarch64_feature_detected!("fp16"),
                "A76/A78 have FP16 arithmetic"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                assert!(
                    mien_runtime::half::fp16_arithmetic(),
                    "CI runs the A76 tests with TRACT_CPU_ISA=+fp16"
                );
            }
        }
        "cortex-a72" | "cortex-a53" => {
            assert!(
                !std::arch::is_aarch64_feature_detected!("fp16"),
                "A72/A53 have no FP16 arithmetic"
            );
            assert!(!mien_runtime::half::fp16_arithmetic());
        }
        _ => {}
    }
    if mien_runtime::half::fp16_arithmetic() {
        assert_eq!(choice.path, HalfPath::F16);
        #[cfg(target_arch = "aarch64")]
        {
            let native: usize = kernels
                .iter()
                .filter(|(k, _)| k.starts_with("arm64fp16_mmm_f16"))
                .map(|(_, n)| n)
                .sum();
            let total: usize = kernels.values().sum();
            assert!(
                native > 0 && native == total,
                "every matmul on tract's FP16 NEON kernels: {kernels:?}"
            );
        }
    } else {
        assert_eq!(choice.path, HalfPath::F32);
        assert!(
            kernels
                .keys()
                .all(|k| k.contains("f32") && !k.contains("f16")),
            "f32 kernels only: {kernels:?}"
        );
    }
}

#[test]
fn f16_and_widened_paths_track_the_f32_plan() {
    let input = photo();
    let reference = load(f32_plan(), HalfPath::Auto).run_logits(&input).unwrap();
    for path in [HalfPath::F16, HalfPath::F32] {
        let got = load(f16_plan(), path).run_logits(&input).unwrap();
        let diff = got
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 2e-2,
            "{path}: max |logit diff| {diff} vs the f32 plan"
        );
        assert!(diff > 0.0, "{path}: f16 weights must change something");
    }
}

#[test]
fn slice_casts_are_in_use_on_the_f16_path_and_change_nothing() {
    let input = photo();
    let load_with = |tract_ops_only| {
        Classifier::load(
            f16_plan(),
            &RuntimeOptions {
                threads: 1,
                f16_path: HalfPath::F16,
                tract_ops_only,
                tract_float_kernels: true,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (ours, tracts) = (load_with(false), load_with(true));
    // Every run-time cast (the plan's input and logits, and around the sums kept in f32).
    let casts = tracts.op_counts().get("Cast").copied().unwrap_or(0);
    assert!(casts >= 2, "{:?}", tracts.op_counts());
    assert_eq!(
        ours.op_counts().get("SliceCast(mien)"),
        Some(&casts),
        "{:?}",
        ours.op_counts()
    );
    assert!(
        !ours.op_counts().contains_key("Cast"),
        "{:?}",
        ours.op_counts()
    );
    assert_eq!(
        ours.run_logits(&input).unwrap(),
        tracts.run_logits(&input).unwrap()
    );
}
