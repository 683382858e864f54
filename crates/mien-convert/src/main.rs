//! `mien-convert`: ONNX image classifier → verified mien plan.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use mien_convert::{convert, ConvertOptions, LabelSource, Progress};
use mien_plan::{ColorOrder, Layout, ResampleFilter};

const EXAMPLES: &str = "\
Examples:
  # A Hugging Face export (config.json and preprocessor_config.json beside the ONNX):
  mien-convert models/vit-face-expression/model.onnx -o vit-face-expression.mien

  # A Keras export without configs: 48x48 grayscale NHWC, inputs scaled to [0, 1]:
  mien-convert fer.onnx -o fer.mien --layout nhwc --channels 1 --size 48x48 \\
      --rescale 0.00392156862745098 --mean 0 --std 1 \\
      --labels angry,disgust,fear,happy,sad,surprise,neutral

  # Plan as a directory, machine-readable report:
  mien-convert model.onnx -o plans/model --json";

/// Convert an ONNX image classifier into a shape-fixed, verified mien plan.
///
/// Labels and preprocessing come from config.json / preprocessor_config.json next to the ONNX file
/// (as Hugging Face exports them); flags override them. After writing, the plan is reloaded with the
/// device runtime and its logits are compared with the ONNX model's; above --tolerance nothing is
/// written and the exit code is 1.
#[derive(Parser, Debug)]
#[command(name = "mien-convert", version, after_help = EXAMPLES)]
struct Cli {
    /// The ONNX model (one float image input, one logits output).
    model: PathBuf,
    /// Output plan: NAME.mien for a single file (uncompressed tar), any other name for a directory.
    #[arg(short, long)]
    output: PathBuf,
    /// Model name recorded in the plan (default: the ONNX file name without extension).
    #[arg(long)]
    name: Option<String>,
    /// Class labels in output order: a comma-separated list, or a file with one label per line.
    #[arg(long)]
    labels: Option<String>,
    /// Input size as HxW (e.g. 224x224); required when the model's size is dynamic and no config gives it.
    #[arg(long, value_parser = parse_size)]
    size: Option<(usize, usize)>,
    /// Input layout.
    #[arg(long, value_enum)]
    layout: Option<LayoutArg>,
    /// Input channels (1 = grayscale, 3 = colour).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    channels: Option<u8>,
    /// Factor applied to 0..255 pixel values before normalisation (default 1/255).
    #[arg(long)]
    rescale: Option<f64>,
    /// Normalisation mean: one value, or one per channel (a,b,c).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    mean: Option<Vec<f32>>,
    /// Normalisation standard deviation: one value, or one per channel.
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// Resize filter, with Pillow's semantics (default bilinear).
    #[arg(long, value_enum)]
    resample: Option<ResampleArg>,
    /// Channel order the model expects.
    #[arg(long, value_enum)]
    color_order: Option<ColorOrderArg>,
    /// Largest accepted absolute logit difference between the plan and the ONNX model.
    #[arg(long, default_value_t = 1e-3)]
    tolerance: f32,
    /// Number of synthetic images to verify with.
    #[arg(long, default_value_t = 3)]
    verify_inputs: usize,
    /// Real images to verify with as well (repeatable).
    #[arg(long = "verify-image")]
    verify_images: Vec<PathBuf>,
    /// Threads for the verification runs (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print a JSON report on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// More logging (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LayoutArg {
    Nchw,
    Nhwc,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ResampleArg {
    Nearest,
    Bilinear,
    Bicubic,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ColorOrderArg {
    Rgb,
    Bgr,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(|| format!("expected HxW like 224x224, got {s:?}"))?;
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|n| *n > 0);
    match (parse(h), parse(w)) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(format!("expected HxW with positive integers, got {s:?}")),
    }
}

struct Spinner {
    bar: ProgressBar,
    started: Instant,
}

impl Progress for Spinner {
    fn stage(&self, name: &str) {
        self.bar.set_message(name.to_string());
        tracing::info!(elapsed_s = self.started.elapsed().as_secs_f32(), "{name}");
    }
    fn warn(&self, message: &str) {
        self.bar.suspend(|| eprintln!("warning: {message}"));
    }
}

fn run(cli: Cli) -> Result<()> {
    let labels = cli.labels.as_ref().map(|l| {
        let path = PathBuf::from(l);
        if !l.contains(',') && path.is_file() {
            LabelSource::File(path)
        } else {
            LabelSource::List(l.split(',').map(|s| s.trim().to_string()).collect())
        }
    });
    if let Some(LabelSource::List(list)) = &labels {
        if list.iter().any(|l| l.is_empty()) {
            bail!("--labels: expected a comma-separated list of non-empty labels or an existing file");
        }
    }
    let mut options = ConvertOptions::new(&cli.model, &cli.output);
    options.name = cli.name;
    options.labels = labels;
    options.size = cli.size;
    options.layout = cli.layout.map(|l| match l {
        LayoutArg::Nchw => Layout::Nchw,
        LayoutArg::Nhwc => Layout::Nhwc,
    });
    options.channels = cli.channels.map(usize::from);
    options.rescale = cli.rescale;
    options.mean = cli.mean;
    options.std = cli.std;
    options.resample = cli.resample.map(|r| match r {
        ResampleArg::Nearest => ResampleFilter::Nearest,
        ResampleArg::Bilinear => ResampleFilter::Bilinear,
        ResampleArg::Bicubic => ResampleFilter::Bicubic,
    });
    options.color_order = cli.color_order.map(|c| match c {
        ColorOrderArg::Rgb => ColorOrder::Rgb,
        ColorOrderArg::Bgr => ColorOrder::Bgr,
    });
    options.tolerance = cli.tolerance;
    options.verify_inputs = cli.verify_inputs;
    options.verify_images = cli.verify_images;
    options.threads = cli.threads;

    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let progress = Spinner { bar, started: Instant::now() };
    let result = convert(&options, &progress);
    progress.bar.finish_and_clear();
    let report = result.with_context(|| format!("converting {}", cli.model.display()))?;
    let seconds = progress.started.elapsed().as_secs_f64();

    let m = &report.manifest;
    let v = &report.verification;
    if cli.json {
        let json = serde_json::json!({
            "output": report.output,
            "model": m.model.name,
            "source_sha256": m.model.source_sha256,
            "labels": m.labels,
            "input": m.input,
            "preprocessing": m.preprocessing,
            "precision": m.precision,
            "plan_bytes": m.files.iter().map(|f| f.size).sum::<u64>(),
            "verification": {
                "inputs": v.inputs,
                "max_abs_logit_diff": v.max_abs_diff,
                "top1_agreement": v.top1_agreement,
                "tolerance": cli.tolerance,
            },
            "gelu_unfused": report.gelu_unfused,
            "warnings": report.warnings,
            "seconds": seconds,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let mb = m.files.iter().map(|f| f.size).sum::<u64>() as f64 / 1e6;
        println!("wrote {} ({:.1} MB, {}, {} labels, input {:?} {:?})", report.output.display(), mb, m.precision, m.labels.len(), m.input.shape, m.input.layout);
        println!(
            "verified on {} inputs: max |logit diff| {:.2e} (tolerance {:.0e}), top-1 agreement {:.0}%  [{:.1} s]",
            v.inputs,
            v.max_abs_diff,
            cli.tolerance,
            v.top1_agreement * 100.0,
            seconds
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mien-convert: {e:#}");
            ExitCode::FAILURE
        }
    }
}
