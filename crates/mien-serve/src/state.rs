//! What the pipeline's thread and the server's thread share.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use mien_image::RgbImage;
use tokio::sync::{broadcast, watch};

use crate::metrics::Metrics;
use crate::{RunInfo, ServeOptions, BROADCAST_CAPACITY};

/// One Server-Sent Event, serialized once for every client.
#[derive(Debug)]
pub(crate) struct Event {
    /// `frame`, `notice` or `summary`.
    pub kind: &'static str,
    /// One line of JSON.
    pub data: String,
    /// The frame number, for `frame` events.
    pub frame: Option<u64>,
}

/// What `/api/v1/health` reports from.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    pub last_frame: Option<Instant>,
    pub frames: u64,
    pub fps: f64,
    pub camera_lost: Option<String>,
    /// Why the run ended, once it has.
    pub ended: Option<String>,
}

/// A health answer: HTTP status and body.
#[derive(Debug)]
pub(crate) struct Health {
    pub ok: bool,
    pub body: serde_json::Value,
}

impl HealthState {
    /// Healthy while frames flow: at least one frame, the latest within `stale_after`, the camera there
    /// and the run not over.
    pub fn judge(&self, now: Instant, stale_after: Duration, uptime: Duration) -> Health {
        let age = self.last_frame.map(|t| now.saturating_duration_since(t));
        let problem = if let Some(why) = &self.ended {
            Some(("stopped", format!("the run ended ({why})")))
        } else if let Some(reason) = &self.camera_lost {
            Some((
                "unavailable",
                format!("camera lost: {reason}; reconnecting"),
            ))
        } else {
            match age {
                None => Some(("starting", "no frame yet".to_string())),
                Some(age) if age > stale_after => Some((
                    "stalled",
                    format!(
                        "no frame for {:.1} s (limit {:.1} s)",
                        age.as_secs_f64(),
                        stale_after.as_secs_f64()
                    ),
                )),
                Some(_) => None,
            }
        };
        let mut body = serde_json::json!({
            "status": problem.as_ref().map_or("ok", |p| p.0),
            "frames": self.frames,
            "fps": (self.fps * 100.0).round() / 100.0,
            "last_frame_age_s": age.map(|a| (a.as_secs_f64() * 1000.0).round() / 1000.0),
            "uptime_s": uptime.as_secs(),
        });
        if let Some((_, reason)) = &problem {
            body["reason"] = reason.clone().into();
        }
        Health {
            ok: problem.is_none(),
            body,
        }
    }
}

/// State shared by the sink (writer) and the request handlers (readers).
pub(crate) struct Shared {
    pub options: ServeOptions,
    /// Whether the listener is on a loopback address: then requests must name a local host (a web page
    /// elsewhere cannot reach the API through DNS rebinding).
    pub loopback_only: bool,
    pub started: Instant,
    pub events: broadcast::Sender<Arc<Event>>,
    /// The latest frame: its number and JSON.
    pub latest: Mutex<Option<(u64, Bytes)>>,
    pub health: Mutex<HealthState>,
    /// The latest preview: the frame number it shows, and the scaled image.
    pub preview: Mutex<Option<(u64, RgbImage)>>,
    pub metrics: Metrics,
    pub page: String,
    pub shutdown: watch::Sender<bool>,
    pub sse_clients: AtomicUsize,
    pub connections: AtomicUsize,
}

/// Locks, ignoring poisoning: every value behind these locks is replaced whole, never left half-written.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(options: ServeOptions, info: RunInfo, local_addr: SocketAddr) -> Shared {
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (shutdown, _) = watch::channel(false);
        let page = crate::page::render(&options, &info);
        Shared {
            loopback_only: local_addr.ip().is_loopback(),
            metrics: Metrics::new(&info),
            page,
            options,
            started: Instant::now(),
            events,
            latest: Mutex::new(None),
            health: Mutex::new(HealthState::default()),
            preview: Mutex::new(None),
            shutdown,
            sse_clients: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        }
    }

    pub fn health(&self) -> Health {
        lock(&self.health).judge(
            Instant::now(),
            self.options.stale_after,
            self.started.elapsed(),
        )
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Sends an event to every client; none connected is fine.
    pub fn broadcast(&self, kind: &'static str, data: String, frame: Option<u64>) {
        let _ = self.events.send(Arc::new(Event { kind, data, frame }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_goes_starting_ok_stalled_lost_and_stopped() {
        let t0 = Instant::now();
        let stale = Duration::from_secs(2);
        let mut state = HealthState::default();
        let h = state.judge(t0, stale, Duration::ZERO);
        assert!(!h.ok);
        assert_eq!(
            (h.body["status"].as_str(), h.body["reason"].as_str()),
            (Some("starting"), Some("no frame yet"))
        );

        state.last_frame = Some(t0);
        state.frames = 3;
        let h = state.judge(
            t0 + Duration::from_millis(1500),
            stale,
            Duration::from_secs(9),
        );
        assert!(h.ok, "{}", h.body);
        assert_eq!(h.body["status"], "ok");
        assert_eq!(h.body["frames"], 3);
        assert_eq!(h.body["uptime_s"], 9);
        assert!(h.body.get("reason").is_none());

        let h = state.judge(t0 + Duration::from_millis(2500), stale, Duration::ZERO);
        assert!(!h.ok);
        assert_eq!(h.body["status"], "stalled");
        assert_eq!(h.body["reason"], "no frame for 2.5 s (limit 2.0 s)");

        state.camera_lost = Some("device gone".into());
        let h = state.judge(t0, stale, Duration::ZERO);
        assert_eq!(
            (h.ok, h.body["reason"].as_str()),
            (false, Some("camera lost: device gone; reconnecting"))
        );

        state.ended = Some("signal".into());
        let h = state.judge(t0, stale, Duration::ZERO);
        assert_eq!((h.ok, h.body["status"].as_str()), (false, Some("stopped")));
    }
}
