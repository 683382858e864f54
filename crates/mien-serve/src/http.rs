//! The server's side: connections, limits, authorization and the endpoints.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tower::ServiceExt;

use crate::stall::StallGuard;
use crate::state::{lock, Event, Shared};
use crate::PreviewMode;

/// A request's line and headers must fit in this (hyper answers 431 otherwise).
pub(crate) const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Headers per request at most (431 beyond).
const MAX_HEADERS: usize = 64;
/// No endpoint takes a body; a declared one above this is refused with 413.
pub(crate) const MAX_REQUEST_BODY: u64 = 16 * 1024;
/// A client must send its request head within this time of connecting (or of its previous request).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections beyond the event clients' limit, for the page, API calls and scrapes; past this many
/// at once a new connection is closed unanswered (bounds file descriptors and memory).
const EXTRA_CONNECTIONS: usize = 64;
/// How long stopping waits for open requests to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Keep-alive comments on event streams: proxies and browsers keep idle streams open, and a vanished
/// client is noticed when the write fails.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How soon a browser reconnects its event stream after it drops.
const SSE_RETRY: Duration = Duration::from_secs(2);

/// Decrements the open-connection count when a connection ends.
struct ConnectionSlot(Arc<Shared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts connections until shutdown, then lets open requests finish (event streams end at once).
pub(crate) async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("HTTP server: {e}");
            return;
        }
    };
    let router = router(shared.clone());
    let graceful = GracefulShutdown::new();
    let mut shutdown = shared.shutdown.subscribe();
    let max_connections = shared.options.max_clients + EXTRA_CONNECTIONS;
    let http = connection_builder();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tracing::warn!("HTTP server: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= max_connections {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!(%peer, "too many connections; closed");
            continue;
        }
        let slot = ConnectionSlot(shared.clone());
        let _ = stream.set_nodelay(true);
        let guarded = StallGuard::new(stream, shared.options.write_timeout, shared.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(guarded), service(&router, peer)));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP server: stopped with requests still open");
    }
}

/// How every connection is read: hyper's HTTP/1.1 with the head size, header count and header timeout
/// limits.
pub(crate) fn connection_builder() -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .max_headers(MAX_HEADERS);
    http
}

/// The router as one connection's hyper service, its requests marked as coming from `peer`.
pub(crate) fn service(
    router: &Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response, Infallible>> + Send,
> + Clone {
    let router = router.clone();
    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    })
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/v1/events", get(events))
        .route("/api/v1/latest", get(latest))
        .route("/api/v1/health", get(health))
        .route("/api/v1/preview.jpg", get(preview))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Whether `host` (a Host header) names this machine: what a page on another site cannot make a
/// browser send, even through DNS rebinding.
fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The token a request presents: `Authorization: Bearer TOKEN`, else `?access_token=TOKEN`.
fn presented_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    bearer.or_else(|| {
        query?
            .split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
    })
}

/// Compares without an early exit, so response times do not reveal how much of a guess was right.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut difference = (a.len() != b.len()) as u8;
    for i in 0..b.len() {
        difference |= b[i] ^ a.get(i).copied().unwrap_or(0);
    }
    difference == 0
}

/// Every request passes here: host check on loopback listeners, body limit, token, then the response
/// headers every answer carries.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if shared.loopback_only {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        if let Some(host) = host.filter(|h| !is_local_host(h)) {
            return error(
                StatusCode::FORBIDDEN,
                format!("host `{host}` is not this machine; this server answers on loopback only"),
            );
        }
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_REQUEST_BODY} bytes"),
        );
    }
    if let Some(expected) = &shared.options.api_token {
        if path != "/" && path != "/api/v1/health" {
            let given = presented_token(request.headers(), request.uri().query());
            if !given.is_some_and(|g| same_secret(g, expected)) {
                let mut response = error(
                    StatusCode::UNAUTHORIZED,
                    "this endpoint needs `Authorization: Bearer TOKEN` (mien run --api-token)",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path != "/" {
        if let Some(origin) = shared
            .options
            .cors_origin
            .as_deref()
            .and_then(|o| HeaderValue::from_str(o).ok())
        {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    response
}

async fn not_found(method: Method, request: Request) -> Response {
    let path = request.uri().path();
    if method != Method::GET && method != Method::HEAD {
        // Unknown paths say 404 whatever the method; known ones answer 405 through their route.
        return error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}"),
        );
    }
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {path} (try /, /api/v1/events, /api/v1/latest, /api/v1/health, /api/v1/preview.jpg, /metrics)"),
    )
}

async fn page(State(shared): State<Arc<Shared>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything is inline; the page talks only to this server.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob:; connect-src 'self'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        shared.page.clone(),
    )
        .into_response()
}

async fn latest(State(shared): State<Arc<Shared>>) -> Response {
    match lock(&shared.latest).clone() {
        Some((_, json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let health = shared.health();
    let status = if health.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health.body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

async fn preview(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    match shared.options.preview {
        PreviewMode::Off => {
            return error(
                StatusCode::NOT_FOUND,
                "the preview is off (mien run --preview local|any)",
            );
        }
        PreviewMode::Local if !peer.ip().to_canonical().is_loopback() => {
            return error(
                StatusCode::FORBIDDEN,
                "the preview is served to this machine only (mien run --preview any serves it to others)",
            );
        }
        _ => {}
    }
    let mut jpeg = Vec::new();
    let frame: u64;
    {
        let slot = lock(&shared.preview);
        let Some((number, image)) = slot.as_ref() else {
            return StatusCode::NO_CONTENT.into_response();
        };
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut jpeg,
            shared.options.preview_quality,
        );
        if let Err(e) = image.write_with_encoder(encoder) {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding the preview: {e}"),
            );
        }
        frame = *number;
    }
    // The frame it shows, so the page draws that frame's boxes over it.
    let headers = [
        (header::CONTENT_TYPE, "image/jpeg".to_string()),
        (HeaderName::from_static("x-mien-frame"), frame.to_string()),
    ];
    (headers, Bytes::from(jpeg)).into_response()
}

/// One event-stream client: counted while it lives.
struct Client {
    events: broadcast::Receiver<Arc<Event>>,
    shutdown: watch::Receiver<bool>,
    shared: Arc<Shared>,
    /// The latest frame when it connected, sent first so a page shows something at once.
    first: Option<(u64, Bytes)>,
    retry_sent: bool,
    /// Frames at or before this number were sent already (the first frame may come twice otherwise).
    last_frame: Option<u64>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.sse_clients.fetch_sub(1, Ordering::SeqCst);
        self.shared.metrics.sse_clients.dec();
    }
}

enum Wait {
    Event(Arc<Event>),
    Lagged,
    End,
}

async fn events(State(shared): State<Arc<Shared>>) -> Response {
    let max = shared.options.max_clients;
    if shared.sse_clients.fetch_add(1, Ordering::SeqCst) >= max {
        shared.sse_clients.fetch_sub(1, Ordering::SeqCst);
        shared.metrics.sse_rejected.inc();
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{max} event clients already connected (mien run --max-clients)"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    }
    shared.metrics.sse_clients.inc();
    // Subscribe before reading the latest frame: nothing falls between the two.
    let client = Client {
        events: shared.events.subscribe(),
        shutdown: shared.shutdown.subscribe(),
        first: lock(&shared.latest).clone(),
        shared: shared.clone(),
        retry_sent: false,
        last_frame: None,
    };
    let stream = futures_util::stream::unfold(client, |mut client| async move {
        if !client.retry_sent {
            client.retry_sent = true;
            return Some((
                Ok::<_, Infallible>(SseEvent::default().retry(SSE_RETRY)),
                client,
            ));
        }
        if let Some((frame, json)) = client.first.take() {
            client.last_frame = Some(frame);
            let data = String::from_utf8_lossy(&json).into_owned();
            return Some((Ok(SseEvent::default().event("frame").data(data)), client));
        }
        loop {
            let next = tokio::select! {
                received = client.events.recv() => match received {
                    Ok(event) => Wait::Event(event),
                    Err(RecvError::Lagged(_)) => Wait::Lagged,
                    Err(RecvError::Closed) => Wait::End,
                },
                _ = client.shutdown.wait_for(|stop| *stop) => Wait::End,
            };
            match next {
                Wait::Event(event) => {
                    if let (Some(frame), Some(last)) = (event.frame, client.last_frame) {
                        if frame <= last {
                            continue;
                        }
                    }
                    if event.frame.is_some() {
                        client.last_frame = event.frame;
                    }
                    return Some((
                        Ok(SseEvent::default()
                            .event(event.kind)
                            .data(event.data.as_str())),
                        client,
                    ));
                }
                Wait::Lagged => {
                    // Behind by a whole buffer: disconnect; the browser reconnects at the newest frame.
                    client.shared.metrics.sse_lagged.inc();
                    return None;
                }
                Wait::End => return None,
            }
        }
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
        .into_response();
    // Reverse proxies (nginx) must pass events through as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts_are_loopback_names_and_addresses_with_or_without_port() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.1.2.3:9",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_local_host(host), "{host}");
        }
        for host in [
            "example.com",
            "example.com:8080",
            "10.0.0.2:8080",
            "[fe80::1]:80",
            "localhost.evil.com",
            "",
            "::1x",
        ] {
            assert!(!is_local_host(host), "{host}");
        }
    }

    #[test]
    fn tokens_come_from_the_bearer_header_or_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            presented_token(&headers, Some("a=1&access_token=s3cret")),
            Some("s3cret")
        );
        assert_eq!(presented_token(&headers, Some("a=1")), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(
            presented_token(&headers, Some("access_token=zzz")),
            Some("abc")
        );
        assert!(same_secret("abc", "abc"));
        assert!(
            !same_secret("abd", "abc")
                && !same_secret("ab", "abc")
                && !same_secret("abcd", "abc")
                && !same_secret("", "abc")
        );
    }
}
