//! `mien info`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use mien_runtime::Model;
use serde_json::json;

use crate::RunArgs;

/// Arguments of `mien info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The plan: a NAME.mien file or a plan directory (not needed with --cpu).
    #[arg(required_unless_present = "cpu")]
    plan: Option<PathBuf>,
    /// Only the CPU: architecture and the features tract's kernel choice depends on (NEON, dotprod, fp16,
    /// i8mm; AVX2, FMA, AVX-512 VNNI).
    #[arg(long)]
    cpu: bool,
    /// Inference threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// How int8 plans run their matmuls: auto, integer or dequantized (see `mien classify --help`).
    #[arg(long, default_value = "auto", value_name = "auto|integer|dequantized")]
    int8_path: mien_runtime::Int8Path,
    /// How f16 plans run: auto, f16 or f32 (see `mien classify --help`).
    #[arg(long, default_value = "auto", value_name = "auto|f16|f32")]
    f16_path: mien_runtime::HalfPath,
    /// Print JSON: manifest, op_counts, matmul_kernels, int8_path, f16_path, cpu, timings (with --cpu:
    /// cpu only).
    #[arg(long)]
    json: bool,
}

fn cpu_json() -> serde_json::Value {
    let (arch, features) = mien_runtime::cpu::features();
    let kernels: std::collections::BTreeMap<_, _> = mien_runtime::own_kernels().into_iter().collect();
    json!({"arch": arch, "features": features.into_iter().collect::<std::collections::BTreeMap<_, _>>(), "kernels": kernels})
}

/// mien's own kernel of each family on this CPU, one line: `f32 tile: mien_avx2_fma_f32_tile, ...`.
fn own_kernels_line() -> String {
    mien_runtime::own_kernels().iter().map(|(family, name)| format!("{family}: {name}")).collect::<Vec<_>>().join(", ")
}

pub fn run(args: InfoArgs) -> Result<ExitCode> {
    let plan = match (&args.plan, args.cpu) {
        (Some(plan), false) => plan,
        _ => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&json!({"cpu": cpu_json()}))?);
            } else {
                println!("cpu         {}", mien_runtime::cpu::summary());
                println!("kernels     {}", own_kernels_line());
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let options =
        RunArgs { plan: plan.clone(), threads: args.threads, int8_path: args.int8_path, f16_path: args.f16_path, tract_kernels: false }
            .options();
    // Any plan: classifiers and detectors.
    let classifier = Model::load(plan, &options)?;
    let m = classifier.manifest();
    let ops = classifier.op_counts();
    let kernels = classifier.matmul_kernels();
    let t = classifier.timings();
    if args.json {
        let value = json!({
            "plan": classifier.plan().path(),
            "manifest": m,
            "op_counts": ops,
            "matmul_kernels": kernels,
            "int8_path": crate::path_json(classifier.int8_path()),
            "f16_path": crate::path_json(classifier.f16_path()),
            "cpu": cpu_json(),
            "threads": classifier.threads(),
            "verify_ms": t.verify_ms,
            "load_ms": t.load_ms,
            "optimize_ms": t.optimize_ms,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let p = &m.preprocessing;
    println!("plan        {}", classifier.plan().path().display());
    println!("model       {} ({} {}, written by {}, tract {})", m.model.name, m.precision, format_bytes(classifier.plan().graph_bytes()), m.created_by, m.tract_version);
    if let Some(sha) = &m.model.source_sha256 {
        println!("source      {} sha256 {}", m.model.source_file.as_deref().unwrap_or("?"), sha);
    }
    println!("labels      {}", m.labels.join(", "));
    println!("input       {} {:?} {:?} f32, {} channel(s)", m.input.name, m.input.shape, m.input.layout, m.input.channels);
    println!("output      {} {:?}", m.output.name, m.output.shape);
    if let Some(d) = &m.detector {
        let layers: Vec<String> = d.anchor_layers.iter().map(|l| format!("stride {} x{}", l.stride, l.per_cell)).collect();
        println!(
            "detector    {} anchors ({}), {} keypoints, min score {}, NMS IoU {}",
            d.anchor_count(p.height, p.width),
            layers.join(", "),
            d.keypoints,
            d.min_score,
            d.nms_iou
        );
    }
    println!(
        "preprocess  {:?} resize to {}x{}, x*{:.6}, mean {:?}, std {:?}, {:?}",
        p.resample, p.height, p.width, p.rescale_factor, p.mean, p.std, p.color_order
    );
    if let Some(v) = &m.verification {
        println!(
            "verified    against {} on {} inputs: max |logit diff| {:.2e} (tolerance {:.0e}), top-1 agreement {:.0}%",
            v.reference,
            v.inputs,
            v.max_abs_logit_diff,
            v.tolerance,
            v.top1_agreement * 100.0
        );
    }
    if let Some(q) = &m.quantization {
        println!(
            "int8        {} of {} matmuls, activations {}, smoothing {}{}, weights {}, calibrated on {} images",
            q.int8_layers,
            q.int8_layers + q.float_layers.len(),
            q.activations,
            q.smoothing,
            if q.shift { " + shift" } else { "" },
            if q.weight_rounding.is_empty() { "not recorded" } else { &q.weight_rounding },
            q.calibration_images
        );
        if q.int8_activation_products > 0 {
            println!("  and {} products of two activations (attention) in int8", q.int8_activation_products);
        }
        if q.f16_float_matmuls > 0 {
            println!("  {} matmuls left in float are stored and run in f16", q.f16_float_matmuls);
        }
        if q.layers_with_float_channels > 0 {
            println!("  {} int8 matmuls leave {} outlier activation channels to a float product", q.layers_with_float_channels, q.float_channels);
        }
        for layer in &q.float_layers {
            println!("  float: {} ({})", layer.name, layer.reason);
        }
        print_drift(q.drift.as_ref());
    }
    if let Some(h) = &m.half {
        println!("f16         kept in f32: {}", h.kept_f32.join(", "));
        print_drift(h.drift.as_ref());
    }
    if let Some(c) = classifier.int8_path() {
        println!("int8 path   {} ({})", c.path, c.reason);
    }
    if let Some(c) = classifier.f16_path() {
        println!("f16 path    {} ({})", c.path, c.reason);
    }
    println!("timings     load {:.0} ms (checksums {:.0} ms alongside parsing), optimize {:.0} ms", t.load_ms, t.verify_ms, t.optimize_ms);
    println!("cpu         {}", mien_runtime::cpu::summary());
    println!("kernels     (matmul kernels tract chose on this CPU)");
    for (name, count) in &kernels {
        println!("  {count:>5} x {name}");
    }
    println!("ops         (optimized graph)");
    for (name, count) in &ops {
        println!("  {count:>5} x {name}");
    }
    Ok(ExitCode::SUCCESS)
}

fn format_bytes(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

/// The manifest's drift figures of an int8 or f16 plan against its float plan.
fn print_drift(drift: Option<&mien_plan::Drift>) {
    if let Some(d) = drift {
        println!("drift       vs {} on {} images: {}", d.reference, d.images, d.summary());
        if let (Some(a), Some(b)) = (d.accuracy_reference, d.accuracy) {
            println!("accuracy    {:.2}% (float {:.2}%)", b * 100.0, a * 100.0);
        }
    }
}
