//! `mien bench`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
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
    /// peak_rss_mb, threads, runs. With --pipeline: stages_ms {STAGE: {p50, p90, mean}} and totals.
    #[arg(long)]
    json: bool,
    /// Time the camera pipeline's stages on a 640x480 frame made from --image (fitted, grey bars): MJPEG
    /// decode, YUYV conversion, face detection, crop, classifier preprocessing, classification.
    #[arg(long, requires = "image")]
    pipeline: bool,
    /// --pipeline: a photo with one face.
    #[arg(long, value_name = "FILE")]
    image: Option<std::path::PathBuf>,
    /// --pipeline: the face detector plan (default: models/blazeface/blazeface-short.mien, as mien run).
    #[arg(long, value_name = "PLAN")]
    detector: Option<std::path::PathBuf>,
    /// --pipeline: run only these stages (comma-separated: mjpeg_decode, yuyv_convert, detect, crop,
    /// classifier_preprocess, classify), e.g. to count one kernel's ARM instructions.
    #[arg(long, value_delimiter = ',', value_name = "STAGES")]
    only: Vec<String>,
    /// Also time every node of the graph (--threads threads, --runs inferences) and list the time per op
    /// type, slowest first (JSON: profile [{op, nodes, ms, share}]).
    #[arg(long, conflicts_with = "pipeline")]
    profile: bool,
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
    if args.pipeline {
        return pipeline(args);
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
    let profile = if args.profile { Some(classifier.profile(&input, args.runs)?) } else { None };
    // Opening, parsing and checksum verification (which overlap): what a user waits for before optimizing.
    let load_ms = t.load_ms;
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
            "int8_path": crate::path_json(classifier.int8_path()),
            "f16_path": crate::path_json(classifier.f16_path()),
        });
        let mut value = value;
        if let Some(profile) = &profile {
            value["profile"] = serde_json::to_value(profile)?;
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("plan        {} ({}, {} threads)", classifier.plan().path().display(), m.precision, classifier.threads());
        if let Some(c) = classifier.int8_path() {
            println!("int8 path   {} ({})", c.path, c.reason);
        }
        if let Some(c) = classifier.f16_path() {
            println!("f16 path    {} ({})", c.path, c.reason);
        }
        println!("load        {load_ms:.0} ms (checksums {:.0} ms alongside parsing), optimize {:.0} ms", t.verify_ms, t.optimize_ms);
        println!("preprocess  {preprocess_ms:.2} ms (640x480 -> {}x{})", m.preprocessing.width, m.preprocessing.height);
        println!("latency     p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, mean {mean:.1} ms over {} runs", args.runs);
        match peak_rss_mb {
            Some(rss) => println!("peak RSS    {rss:.0} MB"),
            None => println!("peak RSS    unknown (no /proc/self/status)"),
        }
        if let Some(profile) = &profile {
            println!("profile     per inference, {} threads, {} runs:", classifier.threads(), args.runs);
            for op in profile {
                println!("  {:>9.2} ms {:>5.1}%  {:>4} x {}", op.ms, op.share * 100.0, op.nodes, op.op);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// p50, p90 and mean of a list of milliseconds.
fn stats(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    json!({"p50": percentile(&ms, 50.0), "p90": percentile(&ms, 90.0), "mean": mean})
}

/// `mien bench --pipeline`: each stage of `mien run` on one camera-sized frame with a face.
fn pipeline(args: BenchArgs) -> Result<ExitCode> {
    use mien_capture::{pixel, FrameLayout, PixelFormat, YuvEncoding};
    let image_path = args.image.as_ref().expect("clap requires --image");
    let photo = mien_image::open_rgb(image_path).with_context(|| format!("--image {}", image_path.display()))?;
    // The photo fitted into 640x480, as a camera would frame it.
    let scale = (640.0 / photo.width() as f64).min(480.0 / photo.height() as f64);
    let (w, h) = (((photo.width() as f64 * scale) as u32).max(1), ((photo.height() as f64 * scale) as u32).max(1));
    let fitted = mien_image::resize_rgb(&photo, w, h, mien_image::Resample::Bilinear);
    let mut frame = RgbImage::from_pixel(640, 480, image::Rgb([90, 90, 90]));
    image::imageops::replace(&mut frame, &fitted, i64::from((640 - w) / 2), i64::from((480 - h) / 2));

    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&frame)?;
    let encoding = YuvEncoding::default();
    let yuyv = pixel::scalar::from_rgb(&frame, PixelFormat::Yuyv, encoding);

    let runtime = args.run.options();
    let classifier = Classifier::load(&args.run.plan, &runtime)?;
    let detector_plan = args.detector.clone().unwrap_or_else(|| crate::live::default_detector());
    let detector = mien_detect::FaceDetector::load(&detector_plan, &runtime, &mien_detect::DetectOptions::default())
        .with_context(|| format!("--detector {}", detector_plan.display()))?;
    let faces = detector.detect(&frame)?;
    let Some(face) = faces.first() else {
        bail!("--image {}: no face found in the 640x480 frame made from it; give a photo with a face", image_path.display());
    };
    let region = face.rect.square_crop(0.1, 640, 480).expect("non-empty frame");

    let mjpeg_layout = FrameLayout::packed(PixelFormat::Mjpeg, 640, 480);
    let yuyv_layout = FrameLayout::packed(PixelFormat::Yuyv, 640, 480);
    let mut rgb = RgbImage::new(640, 480);
    let mut timings: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    const STAGES: [&str; 6] = ["mjpeg_decode", "yuyv_convert", "detect", "crop", "classifier_preprocess", "classify"];
    if let Some(unknown) = args.only.iter().find(|s| !STAGES.contains(&s.as_str())) {
        bail!("--only: unknown stage `{unknown}` (expected some of {})", STAGES.join(", "));
    }
    let only = args.only.clone();
    let time = |timings: &mut std::collections::BTreeMap<&'static str, Vec<f64>>,
                    stage: &'static str,
                    f: &mut dyn FnMut() -> Result<()>|
     -> Result<()> {
        if !only.is_empty() && !only.iter().any(|s| s == stage) {
            return Ok(());
        }
        let start = Instant::now();
        f()?;
        timings.entry(stage).or_default().push(start.elapsed().as_secs_f64() * 1e3);
        Ok(())
    };
    for i in 0..args.warmup + args.runs {
        let mut crop = RgbImage::new(0, 0);
        let mut input = Vec::new();
        time(&mut timings, "mjpeg_decode", &mut || Ok(pixel::to_rgb(&mjpeg_layout, encoding, &jpeg, &mut rgb)?))?;
        time(&mut timings, "yuyv_convert", &mut || Ok(pixel::to_rgb(&yuyv_layout, encoding, &yuyv, &mut rgb)?))?;
        time(&mut timings, "detect", &mut || {
            detector.detect(&rgb)?;
            Ok(())
        })?;
        time(&mut timings, "crop", &mut || {
            crop = mien_image::crop_rgb(&rgb, region);
            Ok(())
        })?;
        time(&mut timings, "classifier_preprocess", &mut || {
            input = classifier.preprocessor().run(&crop);
            Ok(())
        })?;
        time(&mut timings, "classify", &mut || {
            classifier.run_logits(&input)?;
            Ok(())
        })?;
        if i < args.warmup {
            timings.clear();
        }
    }
    let p50 = |stage: &str| {
        let mut v = timings.get(stage).cloned().unwrap_or_default();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        percentile(&v, 50.0)
    };
    let before_classify = |convert: &str| p50(convert) + p50("detect") + p50("crop") + p50("classifier_preprocess");
    let yuyv_total = before_classify("yuyv_convert");
    let mjpeg_total = before_classify("mjpeg_decode");
    if args.json {
        let stages: serde_json::Map<String, serde_json::Value> =
            timings.iter().map(|(k, v)| (k.to_string(), stats(v.clone()))).collect();
        let value = json!({
            "image": image_path,
            "frame": {"width": 640, "height": 480, "jpeg_bytes": jpeg.len()},
            "face": face.rect,
            "detector": detector_plan,
            "plan": classifier.plan().path(),
            "threads": classifier.threads(),
            "runs": args.runs,
            "stages_ms": stages,
            "yuyv_frame_to_classifier_input_ms": yuyv_total,
            "mjpeg_frame_to_classifier_input_ms": mjpeg_total,
            "frame_with_classification_ms": yuyv_total + p50("classify"),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("frame       640x480 from {} (JPEG {} bytes), face {:.0}x{:.0}", image_path.display(), jpeg.len(), face.rect.width, face.rect.height);
        println!("threads     {}", classifier.threads());
        for (stage, v) in &timings {
            let s = stats(v.clone());
            println!("{stage:<22} p50 {:>7.2} ms  p90 {:>7.2} ms", s["p50"].as_f64().unwrap(), s["p90"].as_f64().unwrap());
        }
        println!("YUYV frame to classifier input   {yuyv_total:.2} ms (p50 sum)");
        println!("MJPEG frame to classifier input  {mjpeg_total:.2} ms (p50 sum)");
        println!("whole frame, one face            {:.2} ms", yuyv_total + p50("classify"));
    }
    Ok(ExitCode::SUCCESS)
}
