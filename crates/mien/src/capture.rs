//! `mien capture`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use image::RgbImage;
use mien_capture::{Camera, CaptureError, CaptureRequest};
use mien_runtime::Classifier;
use serde_json::json;

/// Arguments of `mien capture`.
#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// Camera: a device node (/dev/video2) or part of its name ("C920"). Default: the first device that
    /// captures in a format mien reads (see `mien devices`).
    #[arg(long)]
    device: Option<String>,
    #[command(flatten)]
    camera: crate::CameraFormatArgs,
    /// Frames to capture.
    #[arg(long, default_value_t = 30)]
    count: u64,
    /// Save every frame as DIR/frame-NNNNNN.png (the directory is created).
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,
    /// Classify each whole frame with this plan (no face detection: that is `mien run`).
    #[arg(long, value_name = "PLAN")]
    classify: Option<PathBuf>,
    /// Inference threads for --classify (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Give up when no frame arrives for this long.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    timeout_ms: u64,
    /// JSON lines on stdout: one {"type":"frame",...} per frame (frame, sequence, timestamp_ms, mean_rgb,
/// grid_rgb: 4x4 cell means, saved, classification), then one {"type":"summary",...} (device, format, size, fps, dropped, ...).
    #[arg(long)]
    json: bool,
}


/// Writes a PNG under a temporary name, then renames it: a reader never sees half a file.
fn save_png(dir: &Path, index: u64, frame: &RgbImage) -> Result<PathBuf> {
    let path = dir.join(format!("frame-{index:06}.png"));
    let partial = dir.join(format!(".frame-{index:06}.png.partial"));
    image::save_buffer_with_format(&partial, frame.as_raw(), frame.width(), frame.height(), image::ExtendedColorType::Rgb8, image::ImageFormat::Png)
        .with_context(|| format!("{}: cannot write", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("{}: cannot rename into place", path.display()))?;
    Ok(path)
}

/// Cells per side of the colour grid.
const GRID_CELLS: u32 = 4;

/// Mean colour of the frame and of each cell of a 4x4 grid, row by row (a 16-pixel thumbnail), in one
/// pass: the mean tells a black (lens cap) or washed-out frame at a glance, the grid shows framing and
/// lets tests compare pixel formats region by region.
fn colour_summary(image: &RgbImage) -> ([f64; 3], Vec<[f64; 3]>) {
    let mut cells = vec![[0u64; 4]; (GRID_CELLS * GRID_CELLS) as usize];
    let (w, h) = image.dimensions();
    for (x, y, pixel) in image.enumerate_pixels() {
        let cell = &mut cells[((y * GRID_CELLS / h) * GRID_CELLS + x * GRID_CELLS / w) as usize];
        for (sum, &v) in cell.iter_mut().zip(pixel.0.iter()) {
            *sum += u64::from(v);
        }
        cell[3] += 1;
    }
    let total = cells.iter().fold([0u64; 4], |acc, c| [0, 1, 2, 3].map(|i| acc[i] + c[i]));
    let mean = [0, 1, 2].map(|c| total[c] as f64 / total[3].max(1) as f64);
    let grid = cells.iter().map(|s| [0, 1, 2].map(|c| (s[c] as f64 / s[3].max(1) as f64 * 10.0).round() / 10.0)).collect();
    (mean, grid)
}

pub fn run(args: CaptureArgs) -> Result<ExitCode> {
    if args.count == 0 {
        bail!("--count: expected at least 1 frame");
    }
    let classifier = match &args.classify {
        Some(plan) => Some(Classifier::load(plan, &mien_runtime::RuntimeOptions { threads: args.threads, ..Default::default() })?),
        None => None,
    };
    if let Some(dir) = &args.save {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the --save directory", dir.display()))?;
    }
    let request = CaptureRequest {
        device: args.device.clone(),
        format: args.camera.format,
        size: args.camera.size,
        fps: args.camera.fps,
        timeout: Duration::from_millis(args.timeout_ms),
        ..Default::default()
    };
    let mut camera = Camera::open(&request)?;
    let info = camera.info().clone();
    let layout = info.layout;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let fps_text = info.fps.map(|f| format!("{f:.1} fps")).unwrap_or_else(|| "rate not reported".into());
    if !args.json {
        writeln!(
            out,
            "{} `{}` ({}): {} {}x{} (stride {}), {fps_text}",
            info.path.display(),
            info.name,
            info.driver,
            layout.format,
            layout.width,
            layout.height,
            layout.stride
        )?;
    } else {
        tracing::info!("{}: {} {}x{}, {fps_text}", info.path.display(), layout.format, layout.width, layout.height);
    }
    let mut rgb = RgbImage::new(layout.width, layout.height);
    let mut bad_frames = 0u64;
    let mut saved = 0u64;
    let mut first_frame_at = None;
    let labels = classifier.as_ref().map(|c| c.labels().to_vec()).unwrap_or_default();
    let mut index = 0u64;
    while index < args.count {
        let frame = match camera.next_frame() {
            Ok(frame) => frame,
            Err(CaptureError::BadFrame { path, sequence, problem }) => {
                tracing::warn!("{}: skipping frame {sequence}: {problem}", path.display());
                bad_frames += 1;
                if bad_frames > args.count {
                    bail!("{}: {bad_frames} frames in a row were not whole frames", path.display());
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        first_frame_at.get_or_insert_with(Instant::now);
        let (sequence, timestamp) = (frame.sequence, frame.timestamp);
        frame.to_rgb(&mut rgb)?;
        let (mean_rgb, grid) = colour_summary(&rgb);
        let saved_path = match &args.save {
            Some(dir) => {
                saved += 1;
                Some(save_png(dir, index, &rgb)?)
            }
            None => None,
        };
        let classification = match &classifier {
            Some(c) => {
                let start = Instant::now();
                let result = c.classify(&rgb)?;
                Some((result, start.elapsed().as_secs_f64() * 1e3))
            }
            None => None,
        };
        if args.json {
            let classification = classification.as_ref().map(|(r, latency_ms)| {
                let probabilities: serde_json::Map<String, serde_json::Value> =
                    labels.iter().cloned().zip(r.probabilities.iter().map(|p| json!(p))).collect();
                json!({"label": r.label, "score": r.score, "probabilities": probabilities, "latency_ms": latency_ms})
            });
            let line = json!({
                "type": "frame",
                "frame": index,
                "sequence": sequence,
                "timestamp_ms": timestamp.as_secs_f64() * 1e3,
                "mean_rgb": mean_rgb,
                "grid_rgb": grid,
                "saved": saved_path,
                "classification": classification,
            });
            writeln!(out, "{line}")?;
        } else {
            let [r, g, b] = mean_rgb;
            let mut line = format!("frame {index:>4}  seq {sequence:>6}  mean rgb {r:>5.1} {g:>5.1} {b:>5.1}");
            if let Some((r, latency_ms)) = &classification {
                line.push_str(&format!("  {:<10} {:.3}  {latency_ms:.1} ms", r.label, r.score));
            }
            if let Some(p) = &saved_path {
                line.push_str(&format!("  {}", p.display()));
            }
            writeln!(out, "{line}")?;
        }
        index += 1;
    }
    let elapsed = first_frame_at.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    // Rate over the intervals between frames, the first frame's arrival being the start.
    let measured_fps = if index > 1 && elapsed > 0.0 { (index - 1) as f64 / elapsed } else { 0.0 };
    if args.json {
        let summary = json!({
            "type": "summary",
            "device": info.path,
            "name": info.name,
            "driver": info.driver,
            "format": layout.format,
            "width": layout.width,
            "height": layout.height,
            "stride": layout.stride,
            "encoding": info.encoding,
            "fps_negotiated": info.fps,
            "fps_measured": measured_fps,
            "frames": index,
            "dropped": camera.dropped(),
            "bad_frames": bad_frames,
            "saved": saved,
            "plan": args.classify,
        });
        writeln!(out, "{summary}")?;
    } else {
        writeln!(
            out,
            "{index} frames, {measured_fps:.1} fps measured, {} dropped, {bad_frames} not whole{}",
            camera.dropped(),
            args.save.as_ref().map(|d| format!(", {saved} saved to {}", d.display())).unwrap_or_default()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
