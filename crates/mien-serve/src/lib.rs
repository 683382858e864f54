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

mod http;
mod metrics;
mod page;
mod sink;
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
}

impl ServeOptions {
    /// Defaults for `addr`: no token, 16 clients, no preview (320 px, quality 70 when on), 5 s until
    /// stale, no CORS, labels shown as they are.
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
