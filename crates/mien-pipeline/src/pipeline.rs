//! One frame through detect → crop → classify → track.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use mien_detect::{DetectError, FaceDetector};
use mien_image::{PixelRect, Rect};
use mien_runtime::{Classifier, RuntimeError};
use mien_track::{Observation, Tracker, TrackerConfig};
use serde::Serialize;

use crate::source::SourceFrame;

/// Version of the JSON objects [`FrameResult`] serializes to (`schema` field). Bump on any change
/// that could break a reader; adding fields is not one.
pub const SCHEMA: &str = "mien.run/1";

/// Errors that stop the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The detector failed.
    #[error(transparent)]
    Detect(#[from] DetectError),
    /// The classifier failed.
    #[error(transparent)]
    Classify(#[from] RuntimeError),
    /// A crop could not be saved.
    #[error("{}: cannot save the crop: {message}", .path.display())]
    SaveCrop {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Settings of the per-frame stages.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Margin added around each face box on every side, as a fraction of its longer side, before the
    /// square crop.
    pub margin: f32,
    /// Association, smoothing, hysteresis.
    pub tracker: TrackerConfig,
    /// Write every face crop as PNG here (debugging).
    pub save_crops: Option<PathBuf>,
}

impl Default for PipelineConfig {
    fn default() -> PipelineConfig {
        PipelineConfig { margin: 0.1, tracker: TrackerConfig::default(), save_crops: None }
    }
}

/// Milliseconds spent in each stage for one frame.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimings {
    /// Detection (letterbox, detector plan, decoding).
    pub detect_ms: f64,
    /// Cropping all faces.
    pub crop_ms: f64,
    /// Preprocessing and classifying all faces.
    pub classify_ms: f64,
    /// Tracking and smoothing.
    pub track_ms: f64,
}

/// One face in a processed frame.
#[derive(Debug, Clone, Serialize)]
pub struct FaceResult {
    /// Track id: the same person keeps it while in view.
    pub track: u64,
    /// Face box in frame pixels.
    #[serde(rename = "box")]
    pub rect: Rect,
    /// The square region that was classified.
    pub crop: PixelRect,
    /// Detector score.
    pub detection_score: f32,
    /// Reported label (smoothed, held by hysteresis).
    pub label: String,
    /// Smoothed probability of the reported label.
    pub score: f32,
    /// Smoothed probabilities, by label.
    pub probabilities: BTreeMap<String, f32>,
    /// This frame's own top label, before smoothing.
    pub frame_label: String,
    /// This frame's own probability of `frame_label`.
    pub frame_score: f32,
}

/// Everything the pipeline says about one frame: what sinks receive.
#[derive(Debug, Clone, Serialize)]
pub struct FrameResult {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Always `frame` (other JSON lines are `notice` and `summary`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The source, as described by it.
    pub source: String,
    /// The frame's index in its source.
    pub frame: u64,
    /// The frame's timestamp in milliseconds (capture clock or file timeline).
    pub timestamp_ms: f64,
    /// The image file, for image sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Frame size.
    pub width: u32,
    /// Frame size.
    pub height: u32,
    /// Faces found, best detection first; empty when there is no face.
    pub faces: Vec<FaceResult>,
    /// Tracks that ended with this frame (their faces left).
    pub ended_tracks: Vec<u64>,
    /// Frames the source dropped so far (the pipeline was busy, or the driver skipped them).
    pub dropped: u64,
    /// Per-stage time for this frame.
    pub timings: StageTimings,
}

/// The per-frame stages with their models and tracking state.
#[derive(Debug)]
pub struct Pipeline {
    detector: FaceDetector,
    classifier: Classifier,
    tracker: Tracker,
    config: PipelineConfig,
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

impl Pipeline {
    /// A pipeline over a loaded detector and classifier.
    pub fn new(
        detector: FaceDetector,
        classifier: Classifier,
        config: PipelineConfig,
    ) -> Result<Pipeline, PipelineError> {
        if let Some(dir) = &config.save_crops {
            std::fs::create_dir_all(dir)
                .map_err(|e| PipelineError::SaveCrop { path: dir.clone(), message: e.to_string() })?;
        }
        Ok(Pipeline { tracker: Tracker::new(config.tracker.clone()), detector, classifier, config })
    }

    /// The classifier.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// The detector.
    pub fn detector(&self) -> &FaceDetector {
        &self.detector
    }

    /// Runs every stage on one frame. `source` and `dropped` are copied into the result.
    pub fn process(&mut self, frame: &SourceFrame, source: &str, dropped: u64) -> Result<FrameResult, PipelineError> {
        let image = &frame.image;
        let start = Instant::now();
        let detections = self.detector.detect(image)?;
        let detect_ms = ms_since(start);

        let start = Instant::now();
        // Each face with its crop, so every later stage stays aligned with the detections it keeps.
        let crops: Vec<(&mien_detect::Face, PixelRect, mien_image::RgbImage)> = detections
            .iter()
            .filter_map(|face| {
                let region = face.rect.square_crop(self.config.margin, image.width(), image.height())?;
                Some((face, region, mien_image::crop_rgb(image, region)))
            })
            .collect();
        let crop_ms = ms_since(start);

        let start = Instant::now();
        let mut classified = Vec::with_capacity(crops.len());
        for (_, _, crop) in &crops {
            classified.push(self.classifier.classify(crop)?);
        }
        let classify_ms = ms_since(start);

        if let Some(dir) = &self.config.save_crops {
            for (i, (_, _, crop)) in crops.iter().enumerate() {
                let path = dir.join(format!("frame{:06}-face{i}-{}.png", frame.index, classified[i].label));
                save_png(crop, &path)?;
            }
        }

        let start = Instant::now();
        let observations: Vec<Observation> = crops
            .iter()
            .zip(&classified)
            .map(|((face, _, _), c)| Observation { rect: face.rect, probabilities: c.probabilities.clone() })
            .collect();
        let update = self.tracker.update(&observations, frame.timestamp);
        let track_ms = ms_since(start);

        let labels = self.classifier.labels();
        let faces = crops
            .iter()
            .zip(classified.iter().zip(&update.faces))
            .map(|((face, region, _), (c, tracked))| FaceResult {
                track: tracked.id,
                rect: face.rect,
                crop: *region,
                detection_score: face.score,
                label: labels[tracked.label].clone(),
                score: tracked.probabilities[tracked.label],
                probabilities: labels.iter().cloned().zip(tracked.probabilities.iter().copied()).collect(),
                frame_label: c.label.clone(),
                frame_score: c.score,
            })
            .collect();
        Ok(FrameResult {
            schema: SCHEMA,
            kind: "frame",
            source: source.to_string(),
            frame: frame.index,
            timestamp_ms: frame.timestamp.as_secs_f64() * 1e3,
            file: frame.file.clone(),
            width: image.width(),
            height: image.height(),
            faces,
            ended_tracks: update.ended,
            dropped,
            timings: StageTimings { detect_ms, crop_ms, classify_ms, track_ms },
        })
    }
}

/// Writes a PNG under a temporary name, then renames it: a crash never leaves half a file.
fn save_png(image: &mien_image::RgbImage, path: &std::path::Path) -> Result<(), PipelineError> {
    let error = |message: String| PipelineError::SaveCrop { path: path.to_path_buf(), message };
    let tmp = path.with_extension("png.part");
    image.save_with_format(&tmp, image::ImageFormat::Png).map_err(|e| error(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| error(e.to_string()))
}
