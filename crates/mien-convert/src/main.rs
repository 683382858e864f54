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
  mien-convert model.onnx -o plans/model --json

  # int8: calibrate on 256 training images, gate on held-out labelled images (DIR/<label>/*):
  mien-convert vit-s14-fer.onnx -o vit-s14-fer-int8.mien --precision int8 \\
      --calibrate fer2013/train --validate fer2013/public_test --min-agreement 97

  # f16 (for Cortex-A76/A78 cores with FP16 arithmetic), with the same drift report and gate:
  mien-convert vit-s14-fer.onnx -o vit-s14-fer-f16.mien --precision f16 --validate fer2013/public_test

  # int8 with the layers left in float (attention's products, fc2 over 1.3 % error) stored in f16:
  mien-convert vit-s14-fer.onnx -o vit-s14-fer-int8.mien --precision int8 --calibrate fer2013/train \
      --validate fer2013/public_test --max-layer-error 1.3 --float-matmuls f16";

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
    #[arg(required_unless_present = "man_page")]
    model: Option<PathBuf>,
    /// Output plan: NAME.mien for a single file (uncompressed tar), any other name for a directory.
    #[arg(short, long, required_unless_present = "man_page")]
    output: Option<PathBuf>,
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
    /// Largest accepted absolute logit difference between the written plan and its reference (the ONNX
    /// model; for int8, the quantized graph before serialization). Default 1e-3.
    #[arg(long)]
    tolerance: Option<f32>,
    /// Number of synthetic images to verify with.
    #[arg(long, default_value_t = 3)]
    verify_inputs: usize,
    /// Real images to verify with as well (repeatable).
    #[arg(long = "verify-image")]
    verify_images: Vec<PathBuf>,
    /// Threads for the verification runs (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Plan precision. int8 quantizes every matmul with a constant weight (weights per output channel,
    /// activations per --activations) and needs --calibrate. f16 computes and stores weights in 16-bit
    /// float (input and logits stay f32); it pays on CPUs with FP16 arithmetic (Cortex-A76/A78: Pi 5,
    /// Jetson Orin) and is much slower elsewhere.
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionArg,
    /// int8: folder of calibration images, searched recursively (e.g. part of the training set).
    #[arg(long, value_name = "DIR")]
    calibrate: Option<PathBuf>,
    /// int8: calibration images to use, spread evenly over the folder's sorted files.
    #[arg(long, default_value_t = 256, value_name = "N")]
    calibration_count: usize,
    /// int8 and f16: held-out images for the drift report and gate: DIR/<label>/* (accuracy is reported
    /// too) or a flat folder. Never the calibration images.
    #[arg(long, value_name = "DIR")]
    validate: Option<PathBuf>,
    /// int8 and f16: use at most N validation images, spread evenly (default: all).
    #[arg(long, value_name = "N")]
    validation_count: Option<usize>,
    /// int8 and f16: fail, writing nothing, when top-1 agreement with the float model on --validate is below
    /// this percentage.
    #[arg(long, default_value_t = 99.0, value_name = "PERCENT")]
    min_agreement: f64,
    /// int8 activations: dynamic (per token, scale from the row's maximum at run time), or one static
    /// calibrated scale per tensor chosen by minmax, percentile (see --percentile) or mse.
    #[arg(long, value_enum, default_value = "dynamic")]
    activations: ActivationsArg,
    /// int8 static percentile activations: the percentile of magnitudes that maps to 127.
    #[arg(long, default_value_t = 99.99)]
    percentile: f32,
    /// int8 outlier smoothing (SmoothQuant): `search` (per layer, the α from 0, 0.25, 0.5, 0.6, 0.7,
    /// 0.8, 0.9 with the smallest simulated error), `off`, or one α in (0, 1).
    #[arg(long, default_value = "search", value_parser = parse_smoothing)]
    smoothing: mien_quantize::Smoothing,
    /// int8: layers whose simulated error (relative RMS of their output on calibration rows, in %)
    /// exceeds this stay in float.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    max_layer_error: f32,
    /// int8 weight rounding: gptq (error feedback from calibration activations; slower to convert) or
    /// nearest.
    #[arg(long, value_enum, default_value = "gptq")]
    weight_rounding: WeightRoundingArg,
    /// int8: never shift activations to the centre of their per-channel range (by default the shift is
    /// tried per layer and kept where it lowers the error; its product with the weight becomes a bias).
    #[arg(long)]
    no_shift: bool,
    /// int8: also run attention's products of two activations in int8, both operands quantized per row
    /// at run time: scores (QKᵀ), weighted (softmax · V) or all. Fewer ARM instructions, more drift:
    /// check it with --validate.
    #[arg(long, value_enum, value_name = "PRODUCTS")]
    int8_attention: Option<AttentionArg>,
    /// int8: precision of the matmuls that stay in float (attention's products, layers over
    /// --max-layer-error): f16 halves their arithmetic on cores with FP16 (Pi 5, Jetson Orin) and is
    /// widened to f32 at load elsewhere; tiny layers kept exact stay f32.
    #[arg(long, value_enum, default_value = "f32", value_name = "PRECISION")]
    float_matmuls: FloatMatmulsArg,
    /// int8: for a layer over --max-layer-error, take its activation's N largest channels (by calibrated
    /// magnitude) out of the int8 product into a small float one beside it, trying these counts in
    /// order until the layer is within the threshold (e.g. 8,16,32,64); `off` keeps such layers in float.
    #[arg(long, default_value = "off", value_name = "COUNTS", value_parser = parse_counts)]
    outlier_channels: OutlierCounts,
    /// Make a detector plan: a JSON file with the anchor and decoding parameters (mien.json's
    /// `detector` section; see models/blazeface/detector.json). Labels default to `face`.
    #[arg(long, value_name = "FILE")]
    detector: Option<PathBuf>,
    /// Print a JSON report on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// More logging (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Write the man page mien-convert.1 into DIR and exit (for packages).
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    man_page: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum PrecisionArg {
    F32,
    F16,
    Int8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FloatMatmulsArg {
    F32,
    F16,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AttentionArg {
    Scores,
    Weighted,
    All,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WeightRoundingArg {
    Gptq,
    Nearest,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ActivationsArg {
    Dynamic,
    Minmax,
    Percentile,
    Mse,
}

/// `--outlier-channels`: the float channel counts to try, ascending (empty: off).
#[derive(Clone, Debug)]
struct OutlierCounts(Vec<usize>);

/// `off`, or comma-separated positive counts in ascending order.
fn parse_counts(s: &str) -> Result<OutlierCounts, String> {
    if s == "off" {
        return Ok(OutlierCounts(vec![]));
    }
    let counts: Vec<usize> = s
        .split(',')
        .map(|c| c.trim().parse::<usize>().ok().filter(|c| *c > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("expected `off` or positive counts like 8,16,32, got {s:?}"))?;
    if counts.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("expected ascending counts, got {s:?}"));
    }
    Ok(OutlierCounts(counts))
}

fn parse_smoothing(s: &str) -> Result<mien_quantize::Smoothing, String> {
    match s {
        "search" => Ok(mien_quantize::Smoothing::Search(mien_quantize::DEFAULT_ALPHAS.to_vec())),
        "off" | "0" => Ok(mien_quantize::Smoothing::Off),
        _ => match s.parse::<f32>() {
            Ok(a) if a > 0.0 && a < 1.0 => Ok(mien_quantize::Smoothing::Alpha(a)),
            _ => Err(format!("expected search, off or a number between 0 and 1, got {s:?}")),
        },
    }
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
        self.bar.set_style(spinner_style());
        self.bar.set_length(0);
        self.bar.set_message(name.to_string());
        tracing::info!(elapsed_s = self.started.elapsed().as_secs_f32(), "{name}");
    }
    fn warn(&self, message: &str) {
        self.bar.suspend(|| eprintln!("warning: {message}"));
    }
    fn progress(&self, done: usize, total: usize) {
        if self.bar.length() != Some(total as u64) {
            self.bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({eta} left)").expect("valid template"),
            );
            self.bar.set_length(total as u64);
        }
        self.bar.set_position(done as u64);
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template")
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
    // clap requires both unless --man-page was given, which returned before this.
    let (Some(model), Some(output)) = (&cli.model, &cli.output) else { bail!("MODEL and --output are required") };
    let mut options = ConvertOptions::new(model, output);
    if let Some(path) = &cli.detector {
        let text = std::fs::read_to_string(path).with_context(|| format!("--detector {}", path.display()))?;
        let spec: mien_plan::DetectorSpec = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--detector {}: expected the detector section of mien.json: {e}", path.display()))?;
        options.detector = Some(spec);
    }
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
    options.tolerance = cli.tolerance.unwrap_or(1e-3);
    let tolerance = options.tolerance;
    options.verify_inputs = cli.verify_inputs;
    options.verify_images = cli.verify_images;
    options.threads = cli.threads;
    if cli.precision != PrecisionArg::F32 && !(0.0..=100.0).contains(&cli.min_agreement) {
        bail!("--min-agreement: expected a percentage between 0 and 100, got {}", cli.min_agreement);
    }
    if cli.int8_attention.is_some() && cli.precision != PrecisionArg::Int8 {
        bail!("--int8-attention: only used with --precision int8");
    }
    if cli.float_matmuls == FloatMatmulsArg::F16 && cli.precision != PrecisionArg::Int8 {
        bail!("--float-matmuls: only used with --precision int8 (use --precision f16 for a whole f16 plan)");
    }
    if cli.precision == PrecisionArg::F16 {
        if cli.calibrate.is_some() {
            bail!("--calibrate: only used with --precision int8 (f16 needs no calibration)");
        }
        options.precision = mien_plan::Precision::F16;
        options.f16 = Some(mien_convert::HalfSettings {
            validate: cli.validate.clone(),
            validation_count: cli.validation_count,
            min_agreement: cli.min_agreement / 100.0,
        });
    } else if cli.precision == PrecisionArg::Int8 {
        options.precision = mien_plan::Precision::Int8;
        let Some(calibrate) = cli.calibrate.clone() else {
            bail!("--calibrate: expected a folder of calibration images for --precision int8");
        };
        if cli.calibration_count == 0 {
            bail!("--calibration-count: expected at least 1");
        }
        if !(cli.percentile > 0.0 && cli.percentile <= 100.0) {
            bail!("--percentile: expected a value in (0, 100], got {}", cli.percentile);
        }
        if !(cli.max_layer_error > 0.0) {
            bail!("--max-layer-error: expected a positive percentage, got {}", cli.max_layer_error);
        }
        let activations = match cli.activations {
            ActivationsArg::Dynamic => mien_quantize::ActivationMode::DynamicPerToken,
            ActivationsArg::Minmax => mien_quantize::ActivationMode::Static { calibrator: mien_quantize::StaticCalibrator::MinMax },
            ActivationsArg::Percentile => {
                mien_quantize::ActivationMode::Static { calibrator: mien_quantize::StaticCalibrator::Percentile(cli.percentile) }
            }
            ActivationsArg::Mse => mien_quantize::ActivationMode::Static { calibrator: mien_quantize::StaticCalibrator::Mse },
        };
        options.int8 = Some(mien_convert::QuantizeSettings {
            calibrate,
            calibration_count: cli.calibration_count,
            validate: cli.validate.clone(),
            validation_count: cli.validation_count,
            min_agreement: cli.min_agreement / 100.0,
            f16_float_matmuls: cli.float_matmuls == FloatMatmulsArg::F16,
            options: mien_quantize::QuantizeOptions {
                activations,
                smoothing: cli.smoothing.clone(),
                max_layer_error: cli.max_layer_error / 100.0,
                shift: !cli.no_shift,
                gptq: matches!(cli.weight_rounding, WeightRoundingArg::Gptq),
                activation_products: match cli.int8_attention {
                    None => mien_quantize::ActivationProducts::Off,
                    Some(AttentionArg::Scores) => mien_quantize::ActivationProducts::Scores,
                    Some(AttentionArg::Weighted) => mien_quantize::ActivationProducts::Weighted,
                    Some(AttentionArg::All) => mien_quantize::ActivationProducts::All,
                },
                float_channel_counts: cli.outlier_channels.0.clone(),
                ..Default::default()
            },
        });
    } else if cli.calibrate.is_some() || cli.validate.is_some() {
        bail!("--calibrate/--validate: only used with --precision int8 or f16");
    }

    let bar = ProgressBar::new_spinner();
    bar.set_style(spinner_style());
    bar.enable_steady_tick(Duration::from_millis(120));
    let progress = Spinner { bar, started: Instant::now() };
    let result = convert(&options, &progress);
    progress.bar.finish_and_clear();
    // Every ConvertError names its file or flag; printing its sources as well would repeat them.
    let report = result.map_err(|e| anyhow::anyhow!("{e}"))?;
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
                "reference": v.reference,
                "inputs": v.inputs,
                "max_abs_logit_diff": v.max_abs_diff,
                "top1_agreement": v.top1_agreement,
                "tolerance": tolerance,
            },
            "gelu_unfused": report.gelu_unfused,
            "quantization": m.quantization,
            "half": m.half,
            "float_difference": report.float_difference.as_ref().map(|d| serde_json::json!({
                "reference": d.reference,
                "inputs": d.inputs,
                "max_abs_logit_diff": d.max_abs_diff,
                "top1_agreement": d.top1_agreement,
            })),
            "layers": report.quantized.as_ref().map(|q| &q.layers),
            "validation": report.validation,
            "warnings": report.warnings,
            "seconds": seconds,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let mb = m.files.iter().map(|f| f.size).sum::<u64>() as f64 / 1e6;
        println!("wrote {} ({:.1} MB, {}, {} labels, input {:?} {:?})", report.output.display(), mb, m.precision, m.labels.len(), m.input.shape, m.input.layout);
        println!(
            "verified against {} on {} inputs: max |logit diff| {:.2e} (tolerance {:.0e}), top-1 agreement {:.0}%  [{:.1} s]",
            v.reference,
            v.inputs,
            v.max_abs_diff,
            tolerance,
            v.top1_agreement * 100.0,
            seconds
        );
        if let Some(q) = &m.quantization {
            println!(
                "int8: {} of {} matmuls, activations {}, smoothing {}, {} calibration images",
                q.int8_layers,
                q.int8_layers + q.float_layers.len(),
                q.activations,
                q.smoothing,
                q.calibration_images
            );
            if let Some(layers) = report.quantized.as_ref().map(|q| &q.layers) {
                let worst = layers.iter().filter(|l| l.is_int8()).map(|l| l.error).fold(0f32, f32::max);
                let mean = layers.iter().filter(|l| l.is_int8()).map(|l| l.error).sum::<f32>() / q.int8_layers.max(1) as f32;
                println!("      simulated layer error: mean {:.2}%, worst {:.2}%", mean * 100.0, worst * 100.0);
            }
            if q.int8_activation_products > 0 {
                println!("      and {} products of two activations (attention) in int8", q.int8_activation_products);
            }
            if q.f16_float_matmuls > 0 {
                println!("      {} matmuls left in float are stored and run in f16", q.f16_float_matmuls);
            }
            if q.layers_with_float_channels > 0 {
                println!(
                    "      {} int8 matmuls leave {} outlier activation channels to a float product",
                    q.layers_with_float_channels, q.float_channels
                );
            }
            for layer in &q.float_layers {
                println!("      float: {} ({})", layer.name, layer.reason);
            }
            print_float_difference(report.float_difference.as_ref());
            print_drift(m.precision, q.drift.as_ref());
        }
        if let Some(h) = &m.half {
            println!("f16: computes in 16-bit float; kept in f32: {}", h.kept_f32.join(", "));
            print_float_difference(report.float_difference.as_ref());
            print_drift(m.precision, h.drift.as_ref());
        }
    }
    Ok(())
}

/// The plan as the device runs it against the f32 ONNX model: the precision loss on the verification
/// inputs (not a check; the drift report is).
fn print_float_difference(difference: Option<&mien_convert::VerifyReport>) {
    if let Some(d) = difference {
        println!(
            "      on this CPU's kernels, against the ONNX model (f32) on {} inputs: max |logit diff| {:.2e}, top-1 agreement {:.0}%",
            d.inputs,
            d.max_abs_diff,
            d.top1_agreement * 100.0
        );
    }
}

/// The drift report of an int8 or f16 plan against the float plan, or how to get one.
fn print_drift(precision: mien_plan::Precision, drift: Option<&mien_plan::Drift>) {
    match drift {
        Some(d) => {
            println!("drift on {} held-out images: {} (gate {:.2}%)", d.images, d.summary(), d.min_agreement * 100.0);
            if let (Some(f), Some(q)) = (d.accuracy_reference, d.accuracy) {
                println!("accuracy: {precision} {:.2}%, float {:.2}% ({:+.2} points)", q * 100.0, f * 100.0, (q - f) * 100.0);
            }
        }
        None => println!("no drift report: pass --validate DIR (held-out images) to measure and gate it"),
    }
}

/// Writes mien-convert.1 (clap_mangen) into `dir`, through a temporary name.
fn write_man_page(dir: &std::path::Path) -> Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    let temporary = dir.join(".mien-convert.1.partial");
    std::fs::write(&temporary, page).with_context(|| format!("{}: cannot write", temporary.display()))?;
    std::fs::rename(&temporary, dir.join("mien-convert.1")).with_context(|| format!("{}: cannot write", dir.display()))?;
    Ok(())
}

/// SIGTERM and SIGINT stop a conversion without leaving its staging area behind (the destination keeps
/// the old plan, or stays absent). A second signal exits at once.
fn stop_cleanly_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) else { return };
    let _ = std::thread::Builder::new().name("mien-convert-signals".into()).spawn(move || {
        if let Some(signal) = signals.forever().next() {
            mien_plan::remove_staging_areas();
            eprintln!("mien-convert: stopped by signal {signal}; no plan written");
            std::process::exit(128 + signal);
        }
    });
}

fn main() -> ExitCode {
    // Parsed before the required arguments are checked: `--man-page DIR` goes alone.
    let cli = Cli::parse();
    stop_cleanly_on_signals();
    if let Some(dir) = &cli.man_page {
        return match write_man_page(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mien-convert: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
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
