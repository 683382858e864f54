//! Running as a systemd service (`Type=notify`): readiness once the models are loaded and the source is
//! open, watchdog pings while the pipeline makes progress, and a status line for `systemctl status`.
//!
//! The pings come from a thread of their own, but only while frames flow (or notices arrive) or the
//! camera is being retried: a pipeline stuck in a driver call or a deadlock stops them, and systemd's
//! `WatchdogSec` then kills and restarts the service. A stopped process (`kill -STOP`) pings nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mien_pipeline::sink::{Notice, Sink};
use mien_pipeline::{FrameResult, RunSummary};
use sd_notify::NotifyState;

/// What the pipeline thread reports and the watchdog thread reads.
struct Progress {
    started: Instant,
    /// Milliseconds after `started` of the last frame or notice.
    last_ms: AtomicU64,
    frames: AtomicU64,
    camera_retrying: AtomicBool,
    stop: AtomicBool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            camera_retrying: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// The link to systemd, when mien runs under it with `NOTIFY_SOCKET` set.
pub struct ServiceNotifier {
    progress: Arc<Progress>,
    watchdog: Option<JoinHandle<()>>,
}

impl ServiceNotifier {
    /// The notifier when systemd waits for one (`Type=notify`), else `None`. `slowest_frame` is the
    /// longest a healthy pipeline may go without a frame (at least the frame interval of `--max-fps`):
    /// the watchdog is pinged while the last frame is more recent than that or the watchdog period,
    /// whichever is longer.
    pub fn from_environment(slowest_frame: Duration) -> Option<ServiceNotifier> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let progress = Arc::new(Progress::new());
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec).then(|| {
            let period = Duration::from_micros(usec);
            let progress = progress.clone();
            std::thread::Builder::new()
                .name("mien-watchdog".into())
                .spawn(move || ping_while_alive(&progress, period, slowest_frame.max(period)))
                .ok()
        });
        Some(ServiceNotifier { progress, watchdog: watchdog.flatten() })
    }

    /// Tells systemd the service is up (models loaded, source open, server listening).
    pub fn ready(&self, source: &str) {
        self.progress.touch();
        let status = format!("reading {source}");
        if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(&status)]) {
            tracing::warn!("telling systemd the service is ready: {e}");
        }
    }

    /// The sink that reports the pipeline's progress to the watchdog.
    pub fn sink(&self) -> ServiceSink {
        ServiceSink { progress: self.progress.clone() }
    }

    /// Tells systemd the service is stopping and ends the pings.
    pub fn stop(mut self) {
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
        self.progress.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.watchdog.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn ping_while_alive(progress: &Progress, period: Duration, grace: Duration) {
    // systemd's advice: ping at half the period; a third leaves room for a slow scheduler.
    let every = (period / 3).max(Duration::from_millis(50));
    let mut last_status = Instant::now();
    let mut last_frames = progress.frames.load(Ordering::Relaxed);
    while !progress.stop.load(Ordering::Relaxed) {
        let since_progress = progress.started.elapsed().saturating_sub(Duration::from_millis(progress.last_ms.load(Ordering::Relaxed)));
        let retrying = progress.camera_retrying.load(Ordering::Relaxed);
        if retrying || since_progress < grace {
            let mut states = vec![NotifyState::Watchdog];
            let status;
            let elapsed = last_status.elapsed();
            if elapsed >= Duration::from_secs(5) {
                let frames = progress.frames.load(Ordering::Relaxed);
                let fps = (frames - last_frames) as f64 / elapsed.as_secs_f64();
                status = if retrying {
                    "camera lost; retrying".to_string()
                } else {
                    format!("{frames} frames, {fps:.1} fps")
                };
                states.push(NotifyState::Status(&status));
                last_status = Instant::now();
                last_frames = frames;
            }
            if let Err(e) = sd_notify::notify(false, &states) {
                tracing::warn!("watchdog ping: {e}");
            }
        } else {
            tracing::warn!("no frame for {:.1} s: not pinging the watchdog", since_progress.as_secs_f64());
        }
        std::thread::park_timeout(every);
    }
}

/// Feeds the watchdog: frames and notices are progress; a lost camera keeps it fed while retrying.
pub struct ServiceSink {
    progress: Arc<Progress>,
}

impl Sink for ServiceSink {
    fn frame(&mut self, _result: &FrameResult) -> std::io::Result<()> {
        self.progress.frames.fetch_add(1, Ordering::Relaxed);
        self.progress.touch();
        Ok(())
    }

    fn notice(&mut self, notice: &Notice) -> std::io::Result<()> {
        match notice {
            Notice::CameraLost { .. } => self.progress.camera_retrying.store(true, Ordering::Relaxed),
            Notice::CameraRestored { .. } => self.progress.camera_retrying.store(false, Ordering::Relaxed),
            _ => {}
        }
        self.progress.touch();
        Ok(())
    }

    fn finish(&mut self, _summary: &RunSummary) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// The pings a real notify socket receives: while frames flow, and not after they stop.
    #[test]
    fn pings_only_while_frames_flow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let progress = Arc::new(Progress::new());
        // NOTIFY_SOCKET is read per call; the test process has no other user of it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        let pinger = {
            let progress = progress.clone();
            std::thread::spawn(move || ping_while_alive(&progress, Duration::from_millis(150), Duration::from_millis(300)))
        };
        let mut sink = ServiceSink { progress: progress.clone() };
        let frame = FrameResult {
            schema: mien_pipeline::SCHEMA,
            kind: "frame",
            source: "test".into(),
            frame: 0,
            timestamp_ms: 0.0,
            file: None,
            width: 1,
            height: 1,
            faces: vec![],
            ended_tracks: vec![],
            dropped: 0,
            timings: Default::default(),
        };
        let count_pings = |window: Duration| {
            let until = Instant::now() + window;
            let mut buf = [0u8; 256];
            let mut pings = 0;
            while Instant::now() < until {
                if let Ok(n) = socket.recv(&mut buf) {
                    pings += String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "WATCHDOG=1") as u32;
                }
            }
            pings
        };
        // Frames flowing: pings.
        let flowing = {
            let until = Instant::now() + Duration::from_millis(600);
            let mut pings = 0;
            while Instant::now() < until {
                sink.frame(&frame).unwrap();
                pings += count_pings(Duration::from_millis(100));
            }
            pings
        };
        assert!(flowing >= 2, "{flowing} pings while frames flowed");
        // Frames stopped: after the grace period, no more pings.
        std::thread::sleep(Duration::from_millis(400));
        while socket.recv(&mut [0u8; 256]).is_ok() {}
        assert_eq!(count_pings(Duration::from_millis(600)), 0, "pings without frames");
        // The camera being retried keeps the service alive.
        sink.notice(&Notice::CameraLost { reason: "unplugged".into() }).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert!(count_pings(Duration::from_millis(500)) >= 1, "no pings while the camera was retried");
        progress.stop.store(true, Ordering::Relaxed);
        pinger.thread().unpark();
        pinger.join().unwrap();
    }
}
