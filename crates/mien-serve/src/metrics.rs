//! `/metrics`: counters, gauges and per-stage latency histograms in the OpenMetrics text format that
//! Prometheus scrapes. Updates are atomics (histograms: a short uncontended lock) on the pipeline's thread.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::RunInfo;

type StageLabel = [(&'static str, &'static str); 1];

fn stage_histogram() -> Histogram {
    // 0.5 ms to ~4 s: a Pi's whole ViT-B inference fits, and so does a 1 ms crop.
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// Every metric mien serves, registered once.
pub(crate) struct Metrics {
    registry: Registry,
    pub frames: Counter,
    pub faces: Counter,
    pub dropped: Counter,
    pub skipped: Counter,
    pub camera_losses: Counter,
    stage_seconds: Family<StageLabel, Histogram, fn() -> Histogram>,
    pub fps: Gauge<f64, AtomicU64>,
    pub sse_clients: Gauge,
    pub sse_rejected: Counter,
    pub sse_lagged: Counter,
    pub write_stalls: Counter,
}

impl Metrics {
    pub fn new(info: &RunInfo) -> Metrics {
        let mut registry = Registry::with_prefix("mien");
        let metrics = Metrics {
            registry: Registry::default(),
            frames: Counter::default(),
            faces: Counter::default(),
            dropped: Counter::default(),
            skipped: Counter::default(),
            camera_losses: Counter::default(),
            stage_seconds: Family::new_with_constructor(stage_histogram as fn() -> Histogram),
            fps: Gauge::default(),
            sse_clients: Gauge::default(),
            sse_rejected: Counter::default(),
            sse_lagged: Counter::default(),
            write_stalls: Counter::default(),
        };
        let counters = [
            ("frames", "Frames processed", &metrics.frames),
            ("faces", "Faces found, over all frames", &metrics.faces),
            ("dropped_frames", "Frames the source dropped (busy pipeline, driver gaps)", &metrics.dropped),
            ("skipped_inputs", "Inputs skipped (unreadable image, corrupt frame)", &metrics.skipped),
            ("camera_losses", "Times the camera was lost", &metrics.camera_losses),
            ("sse_rejected", "Event clients turned away (too many at once)", &metrics.sse_rejected),
            ("sse_lagged", "Event clients disconnected for falling behind the broadcast", &metrics.sse_lagged),
            ("http_write_stalls", "Connections closed because the client stopped reading", &metrics.write_stalls),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register_with_unit(
            "stage",
            "Time per frame in each pipeline stage (detect, crop, classify, track)",
            prometheus_client::registry::Unit::Seconds,
            metrics.stage_seconds.clone(),
        );
        registry.register("fps", "Frames processed per second, recent average", metrics.fps.clone());
        registry.register("sse_clients", "Server-Sent Events clients connected", metrics.sse_clients.clone());
        let build = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("classifier", info.classifier.clone()),
            ("detector", info.detector.clone()),
            ("source", info.source.clone()),
        ]);
        registry.register("build", "mien's version and what it runs", build);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Records one frame's stage times (milliseconds).
    pub fn observe_stages(&self, timings: &mien_pipeline::StageTimings) {
        for (stage, ms) in [
            ("detect", timings.detect_ms),
            ("crop", timings.crop_ms),
            ("classify", timings.classify_ms),
            ("track", timings.track_ms),
        ] {
            self.stage_seconds
                .get_or_create(&[("stage", stage)])
                .observe(ms / 1e3);
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
