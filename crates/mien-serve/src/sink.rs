//! The pipeline's side: a [`Sink`] that publishes each result to the server without ever waiting for a
//! client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use mien_image::{resize_rgb, Resample};
use mien_pipeline::sink::{Notice, Sink, Tagged};
use mien_pipeline::source::SourceFrame;
use mien_pipeline::{FrameResult, RunSummary};

use crate::state::{lock, Shared};
use crate::PreviewMode;

/// The preview is refreshed at most this often: a kiosk page fetches it after frames arrive, and
/// scaling every frame of a 30 fps camera would cost the pipeline for nothing.
const PREVIEW_INTERVAL: Duration = Duration::from_millis(100);

/// Feeds a [`crate::Server`]: the latest frame, health, metrics, the preview and the event stream.
pub struct ServeSink {
    shared: Arc<Shared>,
    last_frame: Option<Instant>,
    /// Mean seconds between frames, exponentially weighted.
    mean_interval: Option<f64>,
    last_preview: Option<Instant>,
    /// The source's dropped-frame total at the previous frame (the counter takes the difference).
    dropped: u64,
}

impl ServeSink {
    pub(crate) fn new(shared: Arc<Shared>) -> ServeSink {
        ServeSink {
            shared,
            last_frame: None,
            mean_interval: None,
            last_preview: None,
            dropped: 0,
        }
    }

    fn publish_notice(&self, notice: &Notice) -> std::io::Result<()> {
        let data = serde_json::to_string(&Tagged::notice(notice))?;
        self.shared.broadcast("notice", data, None);
        Ok(())
    }
}

impl Sink for ServeSink {
    fn image(&mut self, frame: &SourceFrame) -> std::io::Result<()> {
        if self.shared.options.preview == PreviewMode::Off
            || self
                .last_preview
                .is_some_and(|t| t.elapsed() < PREVIEW_INTERVAL)
        {
            return Ok(());
        }
        let (w, h) = frame.image.dimensions();
        if w == 0 || h == 0 {
            return Ok(());
        }
        let width = self.shared.options.preview_width.min(w);
        let height =
            ((u64::from(h) * u64::from(width) + u64::from(w) / 2) / u64::from(w)).max(1) as u32;
        let scaled = resize_rgb(&frame.image, width, height, Resample::Bilinear);
        // A request may be encoding the previous one: skip this update rather than wait for it.
        if let Ok(mut slot) = self.shared.preview.try_lock() {
            *slot = Some((frame.index, scaled));
            self.last_preview = Some(Instant::now());
        }
        Ok(())
    }

    fn frame(&mut self, result: &FrameResult) -> std::io::Result<()> {
        let now = Instant::now();
        if let Some(last) = self.last_frame {
            let interval = now.duration_since(last).as_secs_f64();
            // About the last ten frames.
            self.mean_interval = Some(match self.mean_interval {
                Some(mean) => 0.9 * mean + 0.1 * interval,
                None => interval,
            });
        }
        self.last_frame = Some(now);
        let fps = self
            .mean_interval
            .filter(|m| *m > 0.0)
            .map_or(0.0, |m| 1.0 / m);

        let json = serde_json::to_string(result)?;
        *lock(&self.shared.latest) = Some((result.frame, Bytes::from(json.clone())));
        {
            let mut health = lock(&self.shared.health);
            health.last_frame = Some(now);
            health.frames += 1;
            health.fps = fps;
        }
        let metrics = &self.shared.metrics;
        metrics.frames.inc();
        metrics.faces.inc_by(result.faces.len() as u64);
        metrics
            .dropped
            .inc_by(result.dropped.saturating_sub(self.dropped));
        self.dropped = self.dropped.max(result.dropped);
        metrics.fps.set(fps);
        metrics.observe_stages(&result.timings);
        self.shared.broadcast("frame", json, Some(result.frame));
        Ok(())
    }

    fn notice(&mut self, notice: &Notice) -> std::io::Result<()> {
        match notice {
            Notice::Skipped { .. } => {
                self.shared.metrics.skipped.inc();
            }
            Notice::CameraLost { reason } => {
                self.shared.metrics.camera_losses.inc();
                lock(&self.shared.health).camera_lost = Some(reason.clone());
            }
            Notice::CameraRestored { .. } => {
                lock(&self.shared.health).camera_lost = None;
            }
            Notice::Started { .. } => {}
        }
        self.publish_notice(notice)
    }

    fn finish(&mut self, summary: &RunSummary) -> std::io::Result<()> {
        lock(&self.shared.health).ended = Some(summary.stopped_by.clone());
        let data = serde_json::to_string(&Tagged::summary(summary))?;
        self.shared.broadcast("summary", data, None);
        Ok(())
    }
}
