//! Which matmul kernels an int8 plan runs on, per CPU: natively, and in CI under qemu-user for aarch64
//! (QEMU_CPU=cortex-a76: SDOT; cortex-a72: mien's SMULL kernel for the linear layers, tract's SMLAL for
//! the rest) and armv7 (NEON, with TRACT_CPU_ARM32_NEON=true since tract reads the host's /proc/cpuinfo
//! under emulation).

use std::path::PathBuf;

use mien_runtime::{Classifier, Int8Path, RuntimeOptions};

fn int8_plan() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-vit/tiny-vit-int8.mien")
}

/// The integer kernel tract must pick on this CPU.
fn expected_integer_kernel() -> &'static str {
    #[cfg(target_arch = "aarch64")]
    {
        let cpu = std::env::var("QEMU_CPU").unwrap_or_default();
        let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
        match cpu.as_str() {
            "cortex-a76" | "cortex-a78" => assert!(dotprod, "{cpu} has dotprod"),
            "cortex-a72" | "cortex-a53" => assert!(!dotprod, "{cpu} has no dotprod"),
            _ => {}
        }
        if dotprod && std::env::var("TRACT_DOTPROD_DISABLE").is_err() {
            "arm64simd_mmm_i32_8x8_dot"
        } else {
            "arm64simd_mmm_i32_8x8"
        }
    }
    #[cfg(target_arch = "arm")]
    {
        "armv7neon_mmm_i32_8x4"
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
    {
        // x86: avx2, avxvnni or avx512vnni depending on the machine; only "integer" is asserted.
        "i32"
    }
}

#[test]
fn every_int8_matmul_runs_on_the_integer_kernel_this_cpu_should_use() {
    let classifier = Classifier::load(
        int8_plan(),
        &RuntimeOptions {
            threads: 1,
            int8_path: Int8Path::Integer,
            ..Default::default()
        },
    )
    .unwrap();
    let quantization = classifier.manifest().quantization.as_ref().unwrap();
    let int8_layers = quantization.int8_layers + quantization.int8_activation_products;
    let kernels = classifier.matmul_kernels();
    let expected = expected_integer_kernel();
    // On cores without SDOT the linear layers run on mien's kernel (all but the head, whose single row
    // stays on tract's matrix-vector kernel); elsewhere none do.
    let mien_linear = kernels
        .get(&format!(
            "{} (int8 linear)",
            mien_runtime::int8_linear::kernel_name()
        ))
        .copied()
        .unwrap_or(0);
    if mien_runtime::int8_linear::kernel().is_some() {
        assert!(
            mien_linear + 1 >= quantization.int8_layers && mien_linear > 0,
            "{kernels:?}"
        );
    } else {
        assert_eq!(mien_linear, 0, "{kernels:?}");
    }
    let int8_layers = int8_layers - mien_linear;
    let integer: usize = kernels
        .iter()
        .filter(|(name, _)| name.contains("i32"))
        .map(|(_, n)| n)
        .sum();
    // Products with a single row (the classifier head on the CLS token) go to tract's integer
    // matrix-vector kernel (`..._i32_64x1`); every other one must use the expected matrix kernel.
    let gemv = |name: &str| name.contains("i32") && name.ends_with("x1");
    let matches = |name: &str| {
        if expected == "i32" {
            name.contains("i32")
        } else {
            name == expected
        }
    };
    let on_expected: usize = kernels
        .iter()
        .filter(|(name, _)| matches(name) && !gemv(name))
        .map(|(_, n)| n)
        .sum();
    let on_gemv: usize = kernels
        .iter()
        .filter(|(name, _)| gemv(name))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        integer, int8_layers,
        "one integer matmul per int8 layer, no float fallback: {kernels:?}"
    );
    assert_eq!(
        on_expected + on_gemv,
        int8_layers,
        "all on {expected} (or the integer GEMV): {kernels:?}"
    );
    assert!(
        on_gemv <= 1 && on_expected + 1 >= int8_layers,
        "{kernels:?}"
    );
    #[cfg(target_arch = "arm")]
    assert!(
        !kernels.keys().any(|k| k.contains("armvfpv2")),
        "scalar fallback kernels: {kernels:?}"
    );
}

#[test]
fn auto_path_follows_the_cpu() {
    let classifier = Classifier::load(
        int8_plan(),
        &RuntimeOptions {
            threads: 1,
            int8_path: Int8Path::Auto,
            ..Default::default()
        },
    )
    .unwrap();
    let choice = classifier.int8_path().unwrap();
    if std::env::var("MIEN_INT8_PATH").is_ok() {
        return;
    }
    if mien_runtime::int8::integer_kernels_pay() {
        assert_eq!(choice.path, Int8Path::Integer);
    } else {
        assert_eq!(choice.path, Int8Path::DequantizedWeights);
        assert!(!classifier
            .matmul_kernels()
            .keys()
            .any(|k| k.contains("i32")));
    }
}

#[test]
fn both_paths_give_the_same_answers() {
    let integer = Classifier::load(
        int8_plan(),
        &RuntimeOptions {
            threads: 1,
            int8_path: Int8Path::Integer,
            ..Default::default()
        },
    )
    .unwrap();
    let dequantized = Classifier::load(
        int8_plan(),
        &RuntimeOptions {
            threads: 1,
            int8_path: Int8Path::DequantizedWeights,
            ..Default::default()
        },
    )
    .unwrap();
    let photos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/photos");
    for name in ["astronaut.png", "camera.png", "chelsea.png", "coffee.png"] {
        let image = mien_image::open_rgb(photos.join(name)).unwrap();
        let a = integer.classify(&image).unwrap();
        let b = dequantized.classify(&image).unwrap();
        let diff = a
            .logits
            .iter()
            .zip(&b.logits)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "{name}: {:?} vs {:?}", a.logits, b.logits);
        assert_eq!(a.label, b.label);
    }
}

#[test]
fn fused_int8_ops_are_in_use_and_bit_identical_to_tracts() {
    let photos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/photos");
    for int8_path in [Int8Path::Integer, Int8Path::DequantizedWeights] {
        // The runtime's softmax differs from tract's by an ulp or two: kept out of this comparison.
        let load = |tract_ops_only| {
            let options = RuntimeOptions {
                threads: 1,
                int8_path,
                tract_ops_only,
                tract_float_kernels: true,
                ..Default::default()
            };
            Classifier::load(int8_plan(), &options).unwrap()
        };
        let (fused, tract) = (load(false), load(true));
        let ops = fused.op_counts();
        // Every per-token quantization (one Abs each in tract's form) is fused.
        let chains = tract.op_counts().get("Abs").copied().unwrap_or(0);
        assert!(chains > 0 && !tract.op_counts().contains_key("QuantizeRowsI8(mien)"));
        assert_eq!(
            ops.get("QuantizeRowsI8(mien)"),
            Some(&chains),
            "{int8_path}: {ops:?}"
        );
        assert!(!ops.contains_key("Abs"), "{int8_path}: {ops:?}");
        // tract packs i8 activations in the SDOT layout only for its dotprod kernels.
        #[cfg(target_arch = "aarch64")]
        if int8_path == Int8Path::Integer && std::arch::is_aarch64_feature_detected!("dotprod") {
            assert!(ops.get("I8K4Pack(mien)").is_some_and(|&n| n > 0), "{ops:?}");
        }
        for name in ["astronaut.png", "camera.png", "chelsea.png", "coffee.png"] {
            let image = mien_image::open_rgb(photos.join(name)).unwrap();
            assert_eq!(
                fused.classify(&image).unwrap().logits,
                tract.classify(&image).unwrap().logits,
                "{int8_path}, {name}"
            );
        }
    }
}

/// How far an int8 plan's outputs may move between CPUs, checked on the committed reference plan.
///
/// Calibration fixed the plan's scales, but a CPU's kernels decide the float products around the
/// integer ones (and their summation order: AVX2, AVX-512, NEON), and requantizing turns a last-bit
/// difference into a whole quantization step now and then. The integer path (the CPU's integer kernels)
/// and the dequantized path (the same int8 weights as f32 products) are the two ends of that: the
/// documented bound (docs/CONVERTING.md, int8 plans) is max |Δprobability| <= 0.08 between them, and the same top-1
/// on these photos. Measured: 0.013-0.026 on an AVX-512 VNNI x86 CPU. Under emulation one photo (each
/// inference of the 30 MB plan takes seconds there); not on armv7, whose int8 kernel choice the tiny
/// plan's tests cover.
#[test]
#[cfg(not(target_arch = "arm"))]
fn vit_s14_fer_int8_paths_stay_within_the_documented_bound() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let plan = root.join("models/vit-s14-fer/vit-s14-fer-int8.mien");
    let load = |int8_path| {
        Classifier::load(
            &plan,
            &RuntimeOptions {
                threads: 2,
                int8_path,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (integer, dequantized) = (load(Int8Path::Integer), load(Int8Path::DequantizedWeights));
    let photos: &[&str] = if cfg!(target_arch = "x86_64") {
        &["astronaut.png", "camera.png", "chelsea.png"]
    } else {
        &["chelsea.png"]
    };
    for name in photos {
        let image = mien_image::open_rgb(root.join("tests/data/photos").join(name)).unwrap();
        let (a, b) = (
            integer.classify(&image).unwrap(),
            dequantized.classify(&image).unwrap(),
        );
        let diff = a
            .probabilities
            .iter()
            .zip(&b.probabilities)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{name}: integer {} {:.3}, dequantized {} {:.3}, max |Δprobability| {diff:.4}",
            a.label, a.score, b.label, b.score
        );
        assert!(
            diff <= 0.08,
            "{name}: max |Δprobability| {diff} > 0.08: {:?} vs {:?}",
            a.probabilities,
            b.probabilities
        );
        // The same label, unless the photo is a near tie that the documented drift can flip (which CPU's
        // kernels run the float parts decides which way: AVX2-only and AVX-512 machines differ).
        let mut sorted = b.probabilities.clone();
        sorted.sort_by(|x, y| y.total_cmp(x));
        if sorted[0] - sorted[1] > 2.0 * diff {
            assert_eq!(a.label, b.label, "{name}");
        } else {
            eprintln!("{name}: a near tie ({:.4} vs {:.4}): labels not compared", sorted[0], sorted[1]);
        }
    }
}
