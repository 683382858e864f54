//! `mien bench`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use mien_runtime::{Classifier, RgbImage};
use serde_json::json;

use crate::RunArgs;

/// Arguments of `mien bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Timed inferences.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed inferences first (caches, thread pool start-up).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Print JSON: load_ms, optimize_ms, latency_ms {p50, p90, p99, mean, min, max}, preprocess_ms,
    /// peak_rss_mb, threads, runs.
    #[arg(long)]
    json: bool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    // Nearest-rank percentile.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    if args.runs == 0 {
        bail!("--runs: expected at least 1");
    }
    let classifier = Classifier::load(&args.run.plan, &args.run.options())?;
    let t = classifier.timings();
    let m = classifier.manifest();
    // A camera-sized picture, so preprocessing includes a real downscale.
    let image = RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]));
    let start = Instant::now();
    let input = classifier.preprocessor().run(&image);
    let preprocess_ms = start.elapsed().as_secs_f64() * 1e3;
    for _ in 0..args.warmup {
        classifier.run_logits(&input)?;
    }
    let mut latencies = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let start = Instant::now();
        classifier.run_logits(&input)?;
        latencies.push(start.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
    let (p50, p90, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 90.0), percentile(&latencies, 99.0));
    let peak_rss_mb = mien_runtime::peak_rss_mb();
    // Verification (checksums) is part of what a user waits for at start-up, so it counts as loading.
    let load_ms = t.verify_ms + t.load_ms;
    if args.json {
        let value = json!({
            "plan": classifier.plan().path(),
            "model": m.model.name,
            "precision": m.precision,
            "threads": classifier.threads(),
            "runs": args.runs,
            "load_ms": load_ms,
            "optimize_ms": t.optimize_ms,
            "preprocess_ms": preprocess_ms,
            "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "mean": mean, "min": latencies[0], "max": latencies[latencies.len() - 1]},
            "peak_rss_mb": peak_rss_mb,
            "matmul_kernels": classifier.matmul_kernels(),
            "int8_path": crate::int8_path_json(&classifier),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("plan        {} ({}, {} threads)", classifier.plan().path().display(), m.precision, classifier.threads());
        if let Some(c) = classifier.int8_path() {
            println!("int8 path   {} ({})", c.path, c.reason);
        }
        println!("load        {load_ms:.0} ms (of which checksums {:.0} ms), optimize {:.0} ms", t.verify_ms, t.optimize_ms);
        println!("preprocess  {preprocess_ms:.2} ms (640x480 -> {}x{})", m.preprocessing.width, m.preprocessing.height);
        println!("latency     p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, mean {mean:.1} ms over {} runs", args.runs);
        match peak_rss_mb {
            Some(rss) => println!("peak RSS    {rss:.0} MB"),
            None => println!("peak RSS    unknown (no /proc/self/status)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
