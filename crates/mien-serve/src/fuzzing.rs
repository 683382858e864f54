//! One client connection's bytes through the server's whole HTTP stack (hyper's parser with the server's
//! limits, the guard, every handler), without a socket: the body of the `http_request` fuzz target
//! (crates/mien-fuzz). Built only with the `fuzzing` feature.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mien_pipeline::source::SourceFrame;
use mien_pipeline::sink::Sink;
use mien_pipeline::{FaceResult, FrameResult, StageTimings, SCHEMA};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::Shared;
use crate::{PreviewMode, RunInfo, ServeOptions};

/// The token the harness's server asks for, so inputs can reach the guarded endpoints.
pub const TOKEN: &str = "fuzz-token";
/// How long a response may keep the connection silent before the exchange ends (event streams never
/// end by themselves).
const QUIET: Duration = Duration::from_millis(50);
/// The most response bytes kept.
const MAX_RESPONSE: usize = 1 << 20;

/// A server as `mien run --serve --api-token fuzz-token --preview local --cors-origin ...` would run it,
/// with one frame (a face) and its preview published, answering connections handed to it in memory.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

impl Harness {
    /// Starts the runtime and publishes one frame.
    pub fn new() -> Harness {
        let labels: Vec<String> = ["angry", "happy", "neutral"].map(String::from).into();
        let mut options = ServeOptions::new(SocketAddr::from(([127, 0, 0, 1], 8080)));
        options.api_token = Some(TOKEN.into());
        options.preview = PreviewMode::Local;
        options.cors_origin = Some("http://kiosk.local".into());
        options.label_names.insert("happy".into(), "fröhlich".into());
        let info = RunInfo { source: "fuzz".into(), classifier: "c.mien".into(), detector: "d.mien".into(), labels: labels.clone() };
        let shared = Arc::new(Shared::new(options.clone(), info, options.addr));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .expect("a tokio runtime starts");
        let mut sink = crate::sink::ServeSink::new(shared.clone());
        let image = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 128]));
        sink.image(&SourceFrame { image, index: 1, timestamp: Duration::from_millis(40), file: None })
            .expect("the preview is kept");
        let face = FaceResult {
            track: 1,
            rect: mien_image::Rect::new(8.0, 6.0, 20.0, 20.0),
            crop: mien_image::PixelRect { x: 6, y: 4, width: 24, height: 24 },
            detection_score: 0.9,
            label: "happy".into(),
            score: 0.8,
            probabilities: labels.iter().map(|l| (l.clone(), if l == "happy" { 0.8 } else { 0.1 })).collect(),
            frame_label: "happy".into(),
            frame_score: 0.8,
        };
        let frame = FrameResult {
            schema: SCHEMA,
            kind: "frame",
            source: "fuzz".into(),
            frame: 1,
            timestamp_ms: 40.0,
            file: None,
            width: 64,
            height: 48,
            faces: vec![face],
            ended_tracks: vec![],
            dropped: 0,
            timings: StageTimings::default(),
        };
        sink.frame(&frame).expect("the frame is published");
        let router = crate::http::router(shared);
        Harness { runtime, router }
    }

    /// Writes `request` as one connection from a loopback client, closes its sending side, and returns
    /// what the server answered until it closed the connection or stayed quiet for a moment.
    pub fn exchange(&self, request: &[u8]) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let peer = SocketAddr::from(([127, 0, 0, 1], 50000));
        // Half-closed: the client's end of input is not an abort, so every request gets its answer and
        // the exchange ends when the server closes (a real client keeps its side open instead).
        let connection = crate::http::connection_builder()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), crate::http::service(&self.router, peer));
        self.runtime.block_on(async move {
            let serving = tokio::spawn(connection);
            let mut response = Vec::new();
            // Reads while writing: a response can come before the whole request was taken.
            let (mut reader, mut writer) = tokio::io::split(&mut client);
            let write = async {
                let _ = writer.write_all(request).await;
                let _ = writer.shutdown().await;
            };
            let read = async {
                let mut buffer = [0u8; 8192];
                while let Ok(Ok(n)) = tokio::time::timeout(QUIET, reader.read(&mut buffer)).await {
                    if n == 0 || response.len() >= MAX_RESPONSE {
                        break;
                    }
                    response.extend_from_slice(&buffer[..n]);
                }
            };
            tokio::join!(write, read);
            serving.abort();
            response
        })
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_answers_like_the_server() {
        let harness = Harness::new();
        let answer = |request: &str| String::from_utf8_lossy(&harness.exchange(request.as_bytes())).into_owned();
        let health = answer("GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        assert!(health.starts_with("HTTP/1.1 "), "{health}");
        let denied = answer("GET /api/v1/latest HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
        let latest = answer(&format!("GET /api/v1/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"));
        assert!(latest.starts_with("HTTP/1.1 200") && latest.contains("\"happy\""), "{latest}");
        let events = answer(&format!("GET /api/v1/events?access_token={TOKEN} HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        assert!(events.starts_with("HTTP/1.1 200") && events.contains("text/event-stream"), "{events}");
        let preview = harness.exchange(format!("GET /api/v1/preview.jpg HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes());
        assert!(preview.starts_with(b"HTTP/1.1 200") && preview.windows(2).any(|w| w == [0xff, 0xd8]), "no JPEG");
        let garbage = answer("\x00\x01 nonsense\r\n\r\n");
        assert!(garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    }
}
