//! The kiosk page and local API of `mien run --serve`: the last stage of the data path (sink) seen
//! through HTTP.
//!
//! [`Server::start`] binds, then serves on one thread of its own (a single-threaded tokio runtime):
//!
//! | endpoint | what |
//! | --- | --- |
//! | `GET /` | the kiosk page (HTML, CSS and JS built into the binary) |
//! | `GET /api/v1/events` | Server-Sent Events: `frame` and `notice` |
//! | `GET /api/v1/latest` | the latest frame object (204 before the first) |
//! | `GET /api/v1/health` | 200 while frames flow, 503 with the reason otherwise |
//! | `GET /api/v1/preview.jpg` | the latest frame, scaled down (only with preview enabled) |
//! | `GET /metrics` | Prometheus / OpenMetrics text |
//!
//! The pipeline feeds it through [`ServeSink`], which never waits for a client: frames go out through a
//! bounded broadcast channel (a client that falls behind by more than [`BROADCAST_CAPACITY`] events is
//! disconnected and counted), and the latest frame, health and preview are swapped in under locks that
//! handlers hold only to copy a pointer (the preview: the sink skips an update rather than wait).

#![warn(missing_docs)]

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod http;
mod metrics;
mod page;
mod sink;
mod stall;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use sink::ServeSink;

/// Events a client may fall behind before it is disconnected (its browser reconnects and starts from
/// the newest frame).
pub const BROADCAST_CAPACITY: usize = 64;

/// Who may fetch `/api/v1/preview.jpg`. Camera images are personal data: off unless asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreviewMode {
    /// No preview (404).
    #[default]
    Off,
    /// Clients on this machine only (the kiosk's own browser); others get 403.
    Local,
    /// Any client that may use the API.
    Any,
}

impl std::fmt::Display for PreviewMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PreviewMode::Off => "off",
            PreviewMode::Local => "local",
            PreviewMode::Any => "any",
        })
    }
}

impl std::str::FromStr for PreviewMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "off" => Ok(PreviewMode::Off),
            "local" => Ok(PreviewMode::Local),
            "any" => Ok(PreviewMode::Any),
            _ => Err(format!("expected off, local or any, got `{text}`")),
        }
    }
}

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen. Port 0 picks a free one ([`Server::url`] says which).
    pub addr: SocketAddr,
    /// When set, every endpoint but `/` and `/api/v1/health` needs `Authorization: Bearer TOKEN` (or
    /// `?access_token=TOKEN`, for the page's EventSource and image, which cannot send headers).
    pub api_token: Option<String>,
    /// Server-Sent Events clients at once; one more gets 503.
    pub max_clients: usize,
    /// Who gets the preview image.
    pub preview: PreviewMode,
    /// The preview's width in pixels (its height follows the frame's aspect ratio).
    pub preview_width: u32,
    /// The preview's JPEG quality, 1..=100.
    pub preview_quality: u8,
    /// Health turns 503 when no frame has come for this long.
    pub stale_after: Duration,
    /// Sent as `Access-Control-Allow-Origin` on API responses; no CORS headers without it.
    pub cors_origin: Option<String>,
    /// Display names of labels on the page (`happy` → `fröhlich`); labels not named show as they are.
    pub label_names: BTreeMap<String, String>,
    /// A connection whose writes make no progress for this long is closed (its client stopped reading).
    pub write_timeout: Duration,
}

impl ServeOptions {
    /// Defaults for `addr`: no token, 16 clients, no preview (320 px, quality 70 when on), 5 s until
    /// stale, no CORS, labels shown as they are, 10 s for a stalled write.
    pub fn new(addr: SocketAddr) -> ServeOptions {
        ServeOptions {
            addr,
            api_token: None,
            max_clients: 16,
            preview: PreviewMode::Off,
            preview_width: 320,
            preview_quality: 70,
            stale_after: Duration::from_secs(5),
            cors_origin: None,
            label_names: BTreeMap::new(),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// What is being run, for the page, `/metrics` and health.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// The source, as it describes itself.
    pub source: String,
    /// Classifier plan path.
    pub classifier: String,
    /// Detector plan path.
    pub detector: String,
    /// The classifier's labels, in its output order.
    pub labels: Vec<String>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding failed (address in use, not an address of this machine, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An option is out of range.
    #[error("{field}: {message}")]
    Option {
        /// The option (as the command line names it).
        field: &'static str,
        /// What was expected.
        message: String,
    },
    /// The server's thread or runtime could not start.
    #[error("cannot start the HTTP server: {0}")]
    Runtime(std::io::Error),
}

/// A running server. Dropping it (or [`Server::stop`]) ends every stream and stops it.
pub struct Server {
    url: String,
    local_addr: SocketAddr,
    shared: Arc<state::Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `options.addr` and starts serving on a thread of its own.
    pub fn start(options: ServeOptions, info: RunInfo) -> Result<Server, ServeError> {
        if options.max_clients == 0 {
            return Err(ServeError::Option {
                field: "--max-clients",
                message: "expected at least 1".into(),
            });
        }
        if !(1..=100).contains(&options.preview_quality) {
            return Err(ServeError::Option {
                field: "--preview-quality",
                message: format!("expected 1..=100, got {}", options.preview_quality),
            });
        }
        if !(16..=4096).contains(&options.preview_width) {
            return Err(ServeError::Option {
                field: "--preview-width",
                message: format!("expected 16..=4096 pixels, got {}", options.preview_width),
            });
        }
        if let Some(unknown) = options
            .label_names
            .keys()
            .find(|k| !info.labels.contains(k))
        {
            return Err(ServeError::Option {
                field: "--label-name",
                message: format!(
                    "`{unknown}` is not one of the plan's labels ({})",
                    info.labels.join(", ")
                ),
            });
        }
        let listener =
            std::net::TcpListener::bind(options.addr).map_err(|source| ServeError::Bind {
                addr: options.addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: options.addr,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(ServeError::Runtime)?;
        if !options.addr.ip().is_loopback() {
            tracing::warn!(
                "serving on {local_addr}: reachable from other machines{}",
                if options.api_token.is_some() {
                    " (API token required)"
                } else {
                    "; consider --api-token"
                }
            );
        }
        if options.preview == PreviewMode::Any {
            tracing::warn!(
                "preview enabled for every client: camera images leave this machine when asked for"
            );
        }
        let host = match local_addr {
            SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
            SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
            other => other.to_string(),
        };
        let url = format!("http://{host}/");
        let shared = Arc::new(state::Shared::new(options, info, local_addr));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .thread_name("mien-http")
            .build()
            .map_err(ServeError::Runtime)?;
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mien-http".into())
            .spawn(move || runtime.block_on(http::serve(listener, serving)))
            .map_err(ServeError::Runtime)?;
        tracing::info!("serving the kiosk page and API at {url}");
        Ok(Server {
            url,
            local_addr,
            shared,
            thread: Some(thread),
        })
    }

    /// The page's URL as bound (`http://127.0.0.1:PORT/`; an unspecified address is shown as loopback).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A sink that feeds this server (one per run).
    pub fn sink(&self) -> ServeSink {
        ServeSink::new(self.shared.clone())
    }

    /// Ends every event stream, stops accepting, and waits (up to a few seconds) for open requests.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.begin_shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mien_pipeline::sink::Sink;
    use mien_pipeline::{FrameResult, StageTimings, SCHEMA};
    use std::io::{Read, Write};
    use std::time::Instant;

    fn frame(number: u64) -> FrameResult {
        FrameResult {
            schema: SCHEMA,
            kind: "frame",
            // About a kilobyte per event, so the socket's buffers fill after a few thousand.
            source: "x".repeat(1000),
            frame: number,
            timestamp_ms: number as f64,
            file: None,
            width: 640,
            height: 480,
            faces: vec![],
            ended_tracks: vec![],
            dropped: 0,
            timings: StageTimings::default(),
        }
    }

    fn metrics_text(server: &Server) -> String {
        server.shared.metrics.render()
    }

    fn metric(text: &str, name: &str) -> f64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn a_client_that_stops_reading_is_disconnected_and_counted_while_frames_go_on() {
        let mut options = ServeOptions::new("127.0.0.1:0".parse().unwrap());
        options.write_timeout = Duration::from_millis(500);
        let server = Server::start(options, RunInfo::default()).unwrap();
        let mut sink = server.sink();
        let mut stuck = std::net::TcpStream::connect(server.local_addr()).unwrap();
        write!(stuck, "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut head = [0u8; 12];
        stuck.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut number = 0;
        // The client never reads again: the socket's buffers fill, writes stop making progress, and
        // the connection is closed. The sink never waits for it.
        // Bursts smaller than the broadcast's capacity, so the server keeps up until the socket is full
        // (falling behind the broadcast is the other way out, for clients that read slowly).
        while metric(&metrics_text(&server), "mien_http_write_stalls_total") == 0.0 {
            for _ in 0..16 {
                sink.frame(&frame(number)).unwrap();
                number += 1;
            }
            std::thread::sleep(Duration::from_millis(4));
            assert!(Instant::now() < deadline, "the stuck client is still connected after {number} frames:\n{}", metrics_text(&server));
        }
        let gone = Instant::now() + Duration::from_secs(10);
        while metric(&metrics_text(&server), "mien_sse_clients") != 0.0 {
            assert!(Instant::now() < gone, "{}", metrics_text(&server));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(metric(&metrics_text(&server), "mien_frames_total"), number as f64);
        drop(stuck);
        server.stop();
    }

    #[test]
    fn options_out_of_range_and_unknown_labels_are_refused() {
        let addr = "127.0.0.1:0".parse().unwrap();
        let info = RunInfo { labels: vec!["happy".into()], ..RunInfo::default() };
        let refused = |options: ServeOptions| Server::start(options, info.clone()).err().unwrap().to_string();
        let mut o = ServeOptions::new(addr);
        o.max_clients = 0;
        assert_eq!(refused(o), "--max-clients: expected at least 1");
        let mut o = ServeOptions::new(addr);
        o.preview_quality = 0;
        assert_eq!(refused(o), "--preview-quality: expected 1..=100, got 0");
        let mut o = ServeOptions::new(addr);
        o.preview_width = 8;
        assert_eq!(refused(o), "--preview-width: expected 16..=4096 pixels, got 8");
        let mut o = ServeOptions::new(addr);
        o.label_names.insert("glad".into(), "froh".into());
        assert_eq!(refused(o), "--label-name: `glad` is not one of the plan's labels (happy)");
        assert_eq!("any".parse::<PreviewMode>(), Ok(PreviewMode::Any));
        assert!("all".parse::<PreviewMode>().unwrap_err().contains("expected off, local or any"));
    }
}
