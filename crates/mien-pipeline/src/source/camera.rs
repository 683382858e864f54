//! A V4L2 camera read on its own thread, so capture never waits for inference: the newest frame
//! replaces an unread one (counted as dropped), and memory stays at a few frames whatever the speed.
//! The thread only copies the driver's bytes; conversion to RGB (or MJPEG decoding) happens when the
//! pipeline takes a frame, so frames that are dropped cost a copy, not a conversion.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mien_capture::{pixel, Camera, CaptureError, CaptureRequest, FrameLayout, YuvEncoding};
use mien_image::RgbImage;

use super::{FrameSource, SourceError, SourceEvent, SourceFrame};

/// What to do when the camera goes away (unplugged, driver reloaded, stream error).
#[derive(Debug, Clone)]
pub struct Reconnect {
    /// Stop instead of retrying.
    pub exit_on_loss: bool,
    /// First wait before reopening; doubled after each failed attempt.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect {
            exit_on_loss: false,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Events other than frames are few (losses, skipped frames); past this many unread, old ones go.
const MAX_PENDING_EVENTS: usize = 16;

/// A frame as the driver delivered it.
struct RawFrame {
    data: Vec<u8>,
    layout: FrameLayout,
    encoding: YuvEncoding,
    sequence: u32,
    timestamp: Duration,
}

#[derive(Default)]
struct Slot {
    frame: Option<RawFrame>,
    events: VecDeque<SourceEvent>,
    /// A spent byte buffer handed back for the next copy.
    spare: Option<Vec<u8>>,
    replaced: u64,
    driver_dropped: u64,
    fatal: Option<SourceError>,
    finished: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn push_event(&self, event: SourceEvent) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.events.len() == MAX_PENDING_EVENTS {
            slot.events.pop_front();
        }
        slot.events.push_back(event);
        self.ready.notify_all();
    }
}

/// A camera streaming on a background thread.
pub struct CameraSource {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    description: String,
}

impl std::fmt::Debug for CameraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSource").field("description", &self.description).finish()
    }
}

fn describe(camera: &Camera) -> String {
    let info = camera.info();
    let layout = info.layout;
    format!("{} ({}, {} {}x{})", info.path.display(), info.name, layout.format, layout.width, layout.height)
}

impl CameraSource {
    /// Opens the camera now (so a wrong device fails at once) and starts streaming in the background.
    pub fn open(request: CaptureRequest, reconnect: Reconnect) -> Result<CameraSource, SourceError> {
        let camera = Camera::open(&request)?;
        let description = describe(&camera);
        let shared =
            Arc::new(Shared { slot: Mutex::new(Slot::default()), ready: Condvar::new(), stop: AtomicBool::new(false) });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("mien-capture".into())
                .spawn(move || capture_loop(camera, request, reconnect, &shared))
                .map_err(|e| SourceError::File { path: "capture thread".into(), message: e.to_string() })?
        };
        Ok(CameraSource { shared, thread: Some(thread), description })
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn one_line(e: &CaptureError) -> String {
    e.to_string().replace('\n', " ")
}

fn capture_loop(mut camera: Camera, request: CaptureRequest, reconnect: Reconnect, shared: &Shared) {
    // Driver drops counted by cameras closed after a loss.
    let mut dropped_before = 0u64;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let result = camera.next_frame().map(|frame| {
            let mut data = shared.slot.lock().unwrap_or_else(|e| e.into_inner()).spare.take().unwrap_or_default();
            data.clear();
            data.extend_from_slice(frame.data);
            RawFrame {
                data,
                layout: frame.layout,
                encoding: frame.encoding,
                sequence: frame.sequence,
                timestamp: frame.timestamp,
            }
        });
        match result {
            Ok(frame) => {
                let mut slot = shared.slot.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(old) = slot.frame.replace(frame) {
                    slot.replaced += 1;
                    slot.spare = Some(old.data);
                }
                slot.driver_dropped = dropped_before + camera.dropped();
                shared.ready.notify_all();
            }
            Err(e @ CaptureError::BadFrame { .. }) => shared.push_event(SourceEvent::Skipped { reason: one_line(&e) }),
            Err(e @ CaptureError::Timeout { .. }) => {
                // A stalled stream (no frames, but the device is there): say so and keep waiting.
                tracing::warn!("{}", one_line(&e));
            }
            Err(e) => {
                dropped_before += camera.dropped();
                drop(camera);
                shared.push_event(SourceEvent::Lost { reason: one_line(&e) });
                if reconnect.exit_on_loss {
                    let mut slot = shared.slot.lock().unwrap_or_else(|e| e.into_inner());
                    slot.fatal = Some(SourceError::Capture(e));
                    break;
                }
                match reopen(&request, &reconnect, shared) {
                    Some(reopened) => {
                        shared.push_event(SourceEvent::Restored { description: describe(&reopened) });
                        camera = reopened;
                    }
                    None => break,
                }
            }
        }
    }
    let mut slot = shared.slot.lock().unwrap_or_else(|e| e.into_inner());
    slot.finished = true;
    shared.ready.notify_all();
}

/// Retries with exponential backoff until the camera opens again or the source is stopped.
fn reopen(request: &CaptureRequest, reconnect: &Reconnect, shared: &Shared) -> Option<Camera> {
    let mut backoff = reconnect.initial_backoff;
    let mut attempts = 0u32;
    loop {
        // Sleep in short steps so a stop request is honoured quickly.
        let mut waited = Duration::ZERO;
        while waited < backoff {
            if shared.stop.load(Ordering::SeqCst) {
                return None;
            }
            let step = Duration::from_millis(50).min(backoff - waited);
            std::thread::sleep(step);
            waited += step;
        }
        attempts += 1;
        match Camera::open(request) {
            Ok(camera) => {
                tracing::info!(attempts, "camera reopened");
                return Some(camera);
            }
            Err(e) => {
                tracing::debug!(attempts, "camera not back yet: {}", one_line(&e));
                backoff = (backoff * 2).min(reconnect.max_backoff);
            }
        }
    }
}

impl CameraSource {
    /// RGB of a raw frame; a frame that does not convert (a corrupt MJPEG frame) is skipped.
    fn convert(&self, raw: RawFrame) -> SourceEvent {
        // The frame goes to the pipeline with its own pixels (a 640x480 allocation per processed frame,
        // not per captured one).
        let mut image = RgbImage::new(0, 0);
        let converted = pixel::to_rgb(&raw.layout, raw.encoding, &raw.data, &mut image);
        let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.spare = Some(raw.data);
        drop(slot);
        match converted {
            Ok(()) => SourceEvent::Frame(SourceFrame {
                image,
                index: u64::from(raw.sequence),
                timestamp: raw.timestamp,
                file: None,
            }),
            Err(problem) => {
                SourceEvent::Skipped { reason: format!("{}: frame {}: {problem}", self.description, raw.sequence) }
            }
        }
    }
}

impl FrameSource for CameraSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn next_event(&mut self, stop: &AtomicBool) -> Result<SourceEvent, SourceError> {
        let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(event) = slot.events.pop_front() {
                return Ok(event);
            }
            if let Some(raw) = slot.frame.take() {
                drop(slot);
                return Ok(self.convert(raw));
            }
            if let Some(error) = slot.fatal.take() {
                return Err(error);
            }
            if slot.finished || stop.load(Ordering::SeqCst) {
                return Ok(SourceEvent::End);
            }
            slot =
                self.shared.ready.wait_timeout(slot, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn dropped(&self) -> u64 {
        let slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.replaced + slot.driver_dropped
    }
}
