//! mien's live pipeline, stage by stage:
//! capture ([`source`]) → detect ([`mien_detect`]) → crop ([`mien_image::Rect::square_crop`]) →
//! classify ([`mien_runtime::Classifier`]) → smooth ([`mien_track`]) → sink ([`sink`]).
//!
//! [`Pipeline`] processes one frame; [`run`] drives a source through it into sinks, with frame-rate
//! limiting, a stop flag (signals), and a summary. Results leave only through [`sink::Sink`], so new
//! outputs (HTTP, MQTT) plug in without touching the pipeline.

mod pipeline;
mod runner;
pub mod sink;
pub mod source;

pub use pipeline::{FaceResult, FrameResult, Pipeline, PipelineConfig, PipelineError, StageTimings, SCHEMA};
pub use runner::{run, RunError, RunOptions, RunSummary};
