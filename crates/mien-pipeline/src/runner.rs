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
                std::thread::sleep(interval.saturating_sub(last.elapsed()).min(Duration::from_millis(20)));
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
                match to_all(sinks, |s| s.image(&frame)) {
                    Ok(true) => {}
                    Ok(false) => break 'run Ok("output closed"),
                    Err(e) => break 'run Err(e),
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{FrameResult, PipelineConfig};
    use crate::source::testing::Grey;
    use mien_detect::{DetectOptions, FaceDetector};
    use mien_runtime::{Classifier, RuntimeOptions};
    use std::path::PathBuf;

    /// Counts frames; fails with `error` on frame `fail_at`.
    struct Flaky {
        frames: u64,
        fail_at: u64,
        error: std::io::ErrorKind,
        summary: Option<RunSummary>,
    }

    impl Sink for Flaky {
        fn frame(&mut self, _result: &FrameResult) -> std::io::Result<()> {
            self.frames += 1;
            if self.frames == self.fail_at {
                return Err(self.error.into());
            }
            Ok(())
        }
        fn finish(&mut self, summary: &RunSummary) -> std::io::Result<()> {
            self.summary = Some(summary.clone());
            Ok(())
        }
    }

    fn pipeline() -> Pipeline {
        let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let runtime = RuntimeOptions { threads: 1, ..Default::default() };
        let detector =
            FaceDetector::load(models.join("blazeface/blazeface-short.mien"), &runtime, &DetectOptions::default())
                .unwrap();
        let classifier = Classifier::load(models.join("tiny-vit/tiny-vit.mien"), &runtime).unwrap();
        Pipeline::new(detector, classifier, PipelineConfig::default()).unwrap()
    }

    fn sink(fail_at: u64, error: std::io::ErrorKind) -> Flaky {
        Flaky { frames: 0, fail_at, error, summary: None }
    }

    #[test]
    fn stops_at_the_end_of_the_source_at_max_frames_and_on_the_stop_flag() {
        let mut p = pipeline();
        let mut s = sink(0, std::io::ErrorKind::Other);
        let summary =
            run(&mut Grey { left: 3, next: 0 }, &mut p, &mut [&mut s], &RunOptions::default(), &AtomicBool::new(false))
                .unwrap();
        assert_eq!(
            (summary.frames, summary.frames_without_faces, summary.stopped_by.as_str()),
            (3, 3, "end of source")
        );
        assert_eq!(s.summary.unwrap().frames, 3);

        let options = RunOptions { max_frames: Some(2), ..Default::default() };
        let summary = run(
            &mut Grey { left: 10, next: 0 },
            &mut p,
            &mut [&mut sink(0, std::io::ErrorKind::Other)],
            &options,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!((summary.frames, summary.stopped_by.as_str()), (2, "max frames"));

        let summary = run(
            &mut Grey { left: 10, next: 0 },
            &mut p,
            &mut [&mut sink(0, std::io::ErrorKind::Other)],
            &RunOptions::default(),
            &AtomicBool::new(true),
        )
        .unwrap();
        assert_eq!((summary.frames, summary.stopped_by.as_str()), (0, "signal"));
    }

    #[test]
    fn max_fps_paces_processing() {
        let mut p = pipeline();
        let options = RunOptions { max_fps: Some(20.0), ..Default::default() };
        let start = std::time::Instant::now();
        run(
            &mut Grey { left: 5, next: 0 },
            &mut p,
            &mut [&mut sink(0, std::io::ErrorKind::Other)],
            &options,
            &AtomicBool::new(false),
        )
        .unwrap();
        // Five frames at 20 fps: four 50 ms gaps at least.
        assert!(start.elapsed() >= Duration::from_millis(200), "{:?}", start.elapsed());
    }

    #[test]
    fn a_closed_output_stops_quietly_other_write_errors_fail() {
        let mut p = pipeline();
        let mut closed = sink(2, std::io::ErrorKind::BrokenPipe);
        let summary = run(
            &mut Grey { left: 10, next: 0 },
            &mut p,
            &mut [&mut closed],
            &RunOptions::default(),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!((summary.frames, summary.stopped_by.as_str()), (2, "output closed"));

        let mut full = sink(2, std::io::ErrorKind::StorageFull);
        let err = run(
            &mut Grey { left: 10, next: 0 },
            &mut p,
            &mut [&mut full],
            &RunOptions::default(),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(matches!(err, RunError::Sink(_)), "{err}");
        assert_eq!(full.summary.unwrap().stopped_by, "error", "sinks get a summary even when the run fails");
    }
}
