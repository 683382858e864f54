//! Face detection: a detector plan (MediaPipe BlazeFace, converted by `tools/build_face_detector.py`)
//! run on whole frames.
//!
//! A frame is letterboxed into the detector's square input (aspect kept, black bars), the plan runs on
//! the same runtime as the classifier, anchors are decoded into boxes, overlapping boxes are merged
//! (weighted NMS), and boxes come back in frame pixels.

mod anchors;
mod decode;
mod letterbox;

use std::path::Path;

use mien_image::{Rect, RgbImage};
use mien_plan::DetectorSpec;
use mien_runtime::{Model, RuntimeError, RuntimeOptions};
use serde::Serialize;

pub use anchors::{generate as generate_anchors, Anchor};
pub use decode::{decode, weighted_nms, RawDetection};
pub use letterbox::Letterbox;

/// Errors from loading or running a detector.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The plan could not be loaded or run.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The plan has no detector section.
    #[error("{path}: not a detector plan (mien.json has no detector section); expected e.g. models/blazeface/blazeface-short.mien")]
    NotADetector {
        /// The plan.
        path: String,
    },
}

/// Detection settings; `None` takes the plan's default.
#[derive(Debug, Clone, Default)]
pub struct DetectOptions {
    /// Minimum face score in [0, 1].
    pub min_score: Option<f32>,
    /// IoU above which detections merge.
    pub nms_iou: Option<f32>,
    /// Faces whose longer side is below this many frame pixels are ignored.
    pub min_face_px: f32,
}

/// A face found in a frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Face {
    /// Box in frame pixels (may reach past the frame's edges for faces cut by them).
    #[serde(rename = "box")]
    pub rect: Rect,
    /// Detector score in [0, 1].
    pub score: f32,
    /// Keypoints in frame pixels (BlazeFace: right eye, left eye, nose tip, mouth, right ear, left ear,
    /// as seen from the subject).
    pub keypoints: Vec<(f32, f32)>,
}

/// A loaded detector plan.
#[derive(Debug)]
pub struct FaceDetector {
    model: Model,
    spec: DetectorSpec,
    anchors: Vec<Anchor>,
    input_width: usize,
    input_height: usize,
    min_score: f32,
    nms_iou: f32,
    min_face_px: f32,
}

impl FaceDetector {
    /// Loads and optimizes a detector plan.
    pub fn load(
        path: impl AsRef<Path>,
        runtime: &RuntimeOptions,
        options: &DetectOptions,
    ) -> Result<FaceDetector, DetectError> {
        let opened = std::time::Instant::now();
        let plan = mien_runtime::Plan::open_unverified(path.as_ref()).map_err(RuntimeError::from)?;
        // Refused from the manifest, before the graph is parsed and optimized.
        let Some(spec) = plan.manifest().detector.clone() else {
            return Err(DetectError::NotADetector { path: plan.path().display().to_string() });
        };
        let model = Model::from_plan(plan, opened, runtime)?;
        let manifest = model.manifest();
        let (input_height, input_width) = (manifest.preprocessing.height, manifest.preprocessing.width);
        let anchors = anchors::generate(&spec, input_height, input_width);
        Ok(FaceDetector {
            min_score: options.min_score.unwrap_or(spec.min_score),
            nms_iou: options.nms_iou.unwrap_or(spec.nms_iou),
            min_face_px: options.min_face_px,
            model,
            spec,
            anchors,
            input_width,
            input_height,
        })
    }

    /// The underlying plan.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Finds every face in `frame`, best score first.
    pub fn detect(&self, frame: &RgbImage) -> Result<Vec<Face>, DetectError> {
        if frame.width() == 0 || frame.height() == 0 {
            return Ok(Vec::new());
        }
        let (canvas, letterbox) = Letterbox::fit(
            frame,
            self.input_width as u32,
            self.input_height as u32,
            self.model.manifest().preprocessing.resample,
        );
        let input = self.model.preprocessor().run(&canvas);
        let output = self.model.run(&input)?;
        let found =
            decode::decode(&output, &self.anchors, &self.spec, self.input_width, self.input_height, self.min_score);
        let merged = decode::weighted_nms(found, self.nms_iou);
        Ok(merged
            .into_iter()
            .map(|d| Face {
                rect: letterbox.rect_to_frame(&d.rect),
                score: d.score,
                keypoints: d.keypoints.iter().map(|&(x, y)| letterbox.point_to_frame(x, y)).collect(),
            })
            .filter(|f| f.rect.width.max(f.rect.height) >= self.min_face_px)
            .collect())
    }
}
