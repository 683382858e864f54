//! `mien classify`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use mien_runtime::Classifier;
use serde_json::json;

use crate::RunArgs;

/// Arguments of `mien classify`.
#[derive(Args, Debug)]
pub struct ClassifyArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Images to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// One JSON object per image on stdout: file, label, score, probabilities, latency_ms.
    #[arg(long)]
    json: bool,
    /// Also show the next most likely labels in the table.
    #[arg(long, default_value_t = 1)]
    top: usize,
}

pub fn run(args: ClassifyArgs) -> Result<ExitCode> {
    let classifier = Classifier::load(&args.run.plan, &args.run.options())?;
    let labels = classifier.labels().to_vec();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failures = 0usize;
    if !args.json {
        writeln!(out, "{:<40} {:<12} {:>7} {:>10}", "FILE", "LABEL", "SCORE", "LATENCY")?;
    }
    for path in &args.images {
        let image = match mien_image::open_rgb(path) {
            Ok(image) => image,
            Err(e) => {
                // Keep going with the other images; the exit code reports the failure.
                eprintln!("mien: {e}");
                failures += 1;
                continue;
            }
        };
        let start = Instant::now();
        let result = classifier.classify(&image)?;
        let latency_ms = start.elapsed().as_secs_f64() * 1e3;
        if args.json {
            let probabilities: serde_json::Map<String, serde_json::Value> =
                labels.iter().cloned().zip(result.probabilities.iter().map(|p| json!(p))).collect();
            let line = json!({
                "file": path,
                "label": result.label,
                "score": result.score,
                "probabilities": probabilities,
                "latency_ms": latency_ms,
            });
            writeln!(out, "{line}")?;
        } else {
            let mut label = result.label.clone();
            for (index, p) in mien_runtime::top_k(&result.probabilities, args.top.max(1)).into_iter().skip(1) {
                label.push_str(&format!(", {} {:.2}", labels[index], p));
            }
            writeln!(out, "{:<40} {:<12} {:>7.3} {:>8.1}ms", path.display(), label, result.score, latency_ms)?;
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
