//! Driving a source through the pipeline into sinks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::pipeline::{Pipeline, PipelineError, StageTimings};
use crate::sink::{Notice, Sink};
use crate::source::{FrameSource, SourceError, SourceEvent};

/// Limits of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Process at most this many frames per second (the newest frame is taken at each slot).
    pub max_fps: Option<f64>,
    /// Stop after this many processed frames.
    pub max_frames: Option<u64>,
}

/// What a run did, reported to sinks at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// Frames processed.
    pub frames: u64,
    /// Faces found over all frames.
    pub faces: u64,
    /// Frames with no face.
    pub frames_without_faces: u64,
    /// Distinct tracks (people, roughly).
    pub tracks: u64,
    /// Frames the source dropped (busy pipeline, driver gaps).
    pub dropped: u64,
    /// Inputs skipped (unreadable, corrupt).
    pub skipped: u64,
    /// Times the camera was lost.
    pub camera_losses: u64,
    /// Wall time.
    pub elapsed_s: f64,
    /// Frames processed per second of wall time.
    pub fps: f64,
    /// Mean per-stage time over processed frames.
    pub mean_timings: StageTimings,
    /// `end of source`, `signal`, `max frames`, or `error`.
    pub stopped_by: String,
}

/// Why a run ended early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The source failed for good (camera lost with `exit_on_loss`, unreadable file).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A stage failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A sink could not write.
    #[error("cannot write results: {0}")]
    Sink(std::io::Error),
}

fn to_all(
    sinks: &mut [&mut dyn Sink],
    mut call: impl FnMut(&mut dyn Sink) -> std::io::Result<()>,
) -> Result<bool, RunError> {
    for sink in sinks.iter_mut() {
        match call(&mut **sink) {
            Ok(()) => {}
            // The reader went away (`mien run --json | head`): a normal way to stop.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
            Err(e) => return Err(RunError::Sink(e)),
        }
    }
    Ok(true)
}

/// Runs until the source ends, `stop` is set (SIGINT/SIGTERM), `max_frames` is reached, or an error.
/// The summary goes to every sink and is returned; on error, sinks still get a summary first.
pub fn run(
    source: &mut dyn FrameSource,
    pipeline: &mut Pipeline,
    sinks: &mut [&mut dyn Sink],
    options: &RunOptions,
    stop: &AtomicBool,
) -> Result<RunSummary, RunError> {
    let description = source.describe();
    let started = Instant::now();
    let mut summary = RunSummary::default();
    let mut totals = StageTimings::default();
    let mut last_frame: Option<Instant> = None;
    let interval = options.max_fps.filter(|f| *f > 0.0).map(|f| Duration::from_secs_f64(1.0 / f));

    let outcome: Result<&'static str, RunError> = 'run: loop {
        if stop.load(Ordering::SeqCst) {
            break 'run Ok("signal");
        }
        if options.max_frames.is_some_and(|max| summary.frames >= max) {
            break 'run Ok("max frames");
        }
        if let (Some(interval), Some(last)) = (interval, last_frame) {
            // Wait for the next slot in short steps (signals stay responsive); a camera keeps replacing
            // its frame meanwhile, so the newest one is taken.
            while last.elapsed() < interval && !stop.load(Ordering::SeqCst) {
                std::thread::sleep((interval - last.elapsed()).min(Duration::from_millis(20)));
            }
        }
        let event = match source.next_event(stop) {
            Ok(event) => event,
            Err(e) => break 'run Err(e.into()),
        };
        let notice = match event {
            SourceEvent::End => break 'run Ok(if stop.load(Ordering::SeqCst) { "signal" } else { "end of source" }),
            SourceEvent::Frame(frame) => {
                last_frame = Some(Instant::now());
                let result = match pipeline.process(&frame, &description, source.dropped()) {
                    Ok(result) => result,
                    Err(e) => break 'run Err(e.into()),
                };
                summary.frames += 1;
                summary.faces += result.faces.len() as u64;
                summary.frames_without_faces += result.faces.is_empty() as u64;
                summary.tracks = summary.tracks.max(result.faces.iter().map(|f| f.track).max().unwrap_or(0));
                let t = result.timings;
                totals.detect_ms += t.detect_ms;
                totals.crop_ms += t.crop_ms;
                totals.classify_ms += t.classify_ms;
                totals.track_ms += t.track_ms;
                match to_all(sinks, |s| s.frame(&result)) {
                    Ok(true) => continue,
                    Ok(false) => break 'run Ok("output closed"),
                    Err(e) => break 'run Err(e),
                }
            }
            SourceEvent::Skipped { reason } => {
                summary.skipped += 1;
                tracing::warn!("skipped: {reason}");
                Notice::Skipped { reason }
            }
            SourceEvent::Lost { reason } => {
                summary.camera_losses += 1;
                tracing::warn!("camera lost: {reason}");
                Notice::CameraLost { reason }
            }
            SourceEvent::Restored { description } => {
                tracing::info!("camera back: {description}");
                Notice::CameraRestored { source: description }
            }
        };
        match to_all(sinks, |s| s.notice(&notice)) {
            Ok(true) => {}
            Ok(false) => break 'run Ok("output closed"),
            Err(e) => break 'run Err(e),
        }
    };

    summary.dropped = source.dropped();
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.fps = summary.frames as f64 / summary.elapsed_s.max(1e-9);
    let n = summary.frames.max(1) as f64;
    summary.mean_timings = StageTimings {
        detect_ms: totals.detect_ms / n,
        crop_ms: totals.crop_ms / n,
        classify_ms: totals.classify_ms / n,
        track_ms: totals.track_ms / n,
    };
    summary.stopped_by = match &outcome {
        Ok(reason) => reason.to_string(),
        Err(_) => "error".to_string(),
    };
    let finished = to_all(sinks, |s| s.finish(&summary));
    outcome?;
    finished?;
    Ok(summary)
}
