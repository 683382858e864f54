//! The MQTT client on a thread of its own (a single-threaded tokio runtime running rumqttc), and the
//! sink that feeds it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mien_pipeline::sink::{Notice, Sink};
use mien_pipeline::{FrameResult, RunSummary};
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use tokio::sync::Notify;

use crate::messages::{self, DeviceInfo, FaceEvent, TrackBook};
use crate::queue::{Kind, Outgoing, Queue};
use crate::{MqttError, MqttOptions};

/// Reconnection waits: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_LAST: Duration = Duration::from_secs(30);
/// How long a clean stop waits for `offline` to reach the broker.
const STOP_GRACE: Duration = Duration::from_secs(3);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the sink and the client's thread share.
struct Shared {
    options: MqttOptions,
    device: DeviceInfo,
    queue: Mutex<Queue>,
    /// The newest state document, republished (retained) after every reconnect.
    latest_state: Mutex<Option<String>>,
    wake: Notify,
    stopping: AtomicBool,
    connected: AtomicBool,
    /// Set with --exit-on-mqtt-error when the broker fails: the sink's next call returns it.
    fatal: Mutex<Option<String>>,
    published: AtomicU64,
    connections: AtomicU64,
}

/// A running publisher. [`Publisher::stop`] publishes `offline` and disconnects.
pub struct Publisher {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    /// Starts connecting to the broker in the background (a broker that is not there yet is retried;
    /// frames are processed meanwhile). `model` is the classifier plan's name, for Home Assistant.
    pub fn start(options: MqttOptions, model: &str) -> Result<Publisher, MqttError> {
        if options.device_id.is_empty() || options.device_id != crate::mqtt_safe(&options.device_id) {
            return Err(MqttError::Option {
                field: "--device-id",
                message: format!("expected lowercase letters, digits, - and _, got `{}`", options.device_id),
            });
        }
        if options.prefix.is_empty() || options.prefix.contains(['#', '+']) || options.prefix.ends_with('/') {
            return Err(MqttError::Option {
                field: "--mqtt-prefix",
                message: format!("expected topic levels without # or + or a trailing /, got `{}`", options.prefix),
            });
        }
        let mqtt = client_options(&options)?;
        let device = DeviceInfo { id: options.device_id.clone(), model: model.to_string() };
        let shared = Arc::new(Shared {
            options,
            device,
            queue: Mutex::new(Queue::default()),
            latest_state: Mutex::new(None),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            fatal: Mutex::new(None),
            published: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("mien-mqtt")
            .build()
            .map_err(MqttError::Runtime)?;
        let running = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mien-mqtt".into())
            .spawn(move || runtime.block_on(run(running, mqtt)))
            .map_err(MqttError::Runtime)?;
        Ok(Publisher { shared, thread: Some(thread) })
    }

    /// A sink feeding this publisher (one per run).
    pub fn sink(&self) -> MqttSink {
        MqttSink {
            shared: self.shared.clone(),
            last_state: None,
            tracks: TrackBook::default(),
            events: Vec::new(),
            started: Instant::now(),
            stats: Stats::default(),
            last_stats: Instant::now(),
        }
    }

    /// Whether the broker has accepted the connection at least once (for tests and logs).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Publishes `offline`, disconnects, and waits (a few seconds at most) for it to be sent.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|e| MqttError::File { path: path.to_path_buf(), message: e.to_string() })
}

fn client_options(options: &MqttOptions) -> Result<rumqttc::MqttOptions, MqttError> {
    let client_id = format!("mien-{}", options.device_id);
    let mut mqtt = rumqttc::MqttOptions::new(client_id, options.url.host.clone(), options.url.port);
    mqtt.set_keep_alive(Duration::from_secs(15));
    mqtt.set_clean_session(true);
    mqtt.set_max_packet_size(256 * 1024, 256 * 1024);
    mqtt.set_last_will(LastWill::new(options.topic("availability"), "offline", QoS::AtLeastOnce, true));
    if let Some(user) = &options.username {
        mqtt.set_credentials(user.clone(), options.password.clone().unwrap_or_default());
    }
    if options.url.tls {
        let client_auth = match &options.client_auth {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        let transport = match &options.ca {
            Some(ca) => rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
                ca: read(ca)?,
                alpn: None,
                client_auth,
            }),
            None if client_auth.is_some() => {
                return Err(MqttError::Option {
                    field: "--mqtt-cert",
                    message: "a client certificate needs --mqtt-ca too".into(),
                })
            }
            None => rumqttc::Transport::tls_with_default_config(),
        };
        mqtt.set_transport(transport);
    } else if options.ca.is_some() || options.client_auth.is_some() {
        return Err(MqttError::Option {
            field: "--mqtt-ca",
            message: format!("certificates need an mqtts:// broker, got {}", options.url.redacted()),
        });
    }
    Ok(mqtt)
}

/// One line for a connection error, naming its cause.
fn describe(error: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectionError as E;
    match error {
        E::ConnectionRefused(code) => format!("the broker refused the connection ({code:?}: check the user name and password)"),
        E::Io(e) => format!("{e}"),
        other => {
            let text = other.to_string();
            if text.contains("certificate") {
                format!("{text} (is --mqtt-ca the CA that signed the broker's certificate, and the URL's host a name in it?)")
            } else {
                text
            }
        }
    }
}

async fn run(shared: Arc<Shared>, mqtt: rumqttc::MqttOptions) {
    let (client, mut events) = AsyncClient::new(mqtt, 64);
    let broker = shared.options.url.redacted();
    let availability = shared.options.topic("availability");
    let ha_status = shared.options.ha_prefix.as_ref().map(|p| format!("{p}/status"));
    let resync = Arc::new(Notify::new());

    // Drives the connection: reconnects with backoff, and asks for a resync after each connect and
    // when Home Assistant announces itself.
    let poller = {
        let (shared, resync, ha_status, broker) = (shared.clone(), resync.clone(), ha_status.clone(), broker.clone());
        async move {
            let mut backoff = BACKOFF_FIRST;
            let mut reported = false;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        shared.connected.store(true, Ordering::SeqCst);
                        let n = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
                        if reported || n > 1 {
                            tracing::warn!("MQTT broker {broker}: connected again");
                        } else {
                            tracing::info!("MQTT broker {broker}: connected");
                        }
                        reported = false;
                        backoff = BACKOFF_FIRST;
                        resync.notify_one();
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if Some(&p.topic) == ha_status.as_ref() && p.payload.as_ref() == b"online" {
                            tracing::info!("Home Assistant is online: discovery published again");
                            resync.notify_one();
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        shared.connected.store(false, Ordering::SeqCst);
                        if shared.stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        let cause = describe(&e);
                        if shared.options.exit_on_error {
                            *lock(&shared.fatal) = Some(format!("MQTT broker {broker}: {cause}"));
                            return;
                        }
                        if !reported {
                            tracing::warn!("MQTT broker {broker}: {cause}; retrying (every {:.1} s at first, then less often)", backoff.as_secs_f64());
                            reported = true;
                        } else {
                            tracing::debug!("MQTT broker {broker}: {cause}; retrying in {:.1} s", backoff.as_secs_f64());
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_LAST);
                    }
                }
            }
        }
    };

    // Publishes: availability, discovery and the latest state after each (re)connect, then the queue.
    let publisher = {
        let shared = shared.clone();
        let client = client.clone();
        async move {
            loop {
                tokio::select! {
                    _ = resync.notified() => {
                        if shared.connected.load(Ordering::SeqCst) {
                            let _ = client.publish(&availability, QoS::AtLeastOnce, true, "online").await;
                            if let Some(topic) = &ha_status {
                                let _ = client.subscribe(topic, QoS::AtLeastOnce).await;
                            }
                            if let Some(prefix) = &shared.options.ha_prefix {
                                for (topic, config) in messages::discovery(prefix, &shared.options.prefix, &shared.device) {
                                    let _ = client.publish(topic, QoS::AtLeastOnce, true, config.to_string()).await;
                                }
                            }
                            let state = lock(&shared.latest_state).clone();
                            if let Some(state) = state {
                                let _ = client.publish(shared.options.topic("state"), QoS::AtMostOnce, true, state).await;
                            }
                        }
                    }
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                while shared.connected.load(Ordering::SeqCst) {
                    let Some(message) = lock(&shared.queue).pop() else { break };
                    let qos = if message.at_least_once { QoS::AtLeastOnce } else { QoS::AtMostOnce };
                    if client.publish(message.topic, qos, message.retain, message.payload).await.is_ok() {
                        shared.published.fetch_add(1, Ordering::SeqCst);
                    }
                }
                if shared.stopping.load(Ordering::SeqCst) {
                    // What is still queued (the broker away) is lost with the process; say goodbye.
                    if shared.connected.load(Ordering::SeqCst) {
                        let _ = client.publish(&availability, QoS::AtLeastOnce, true, "offline").await;
                    }
                    let _ = client.disconnect().await;
                    return;
                }
            }
        }
    };

    let poll_until_stopped = async {
        tokio::pin!(poller);
        tokio::pin!(publisher);
        let mut publisher_done = false;
        loop {
            tokio::select! {
                _ = &mut poller => return,
                _ = &mut publisher, if !publisher_done => {
                    publisher_done = true;
                }
            }
        }
    };
    // A stop waits for `offline` and the disconnect to go out, but not forever (the broker may be gone).
    let stopping = async {
        while !shared.stopping.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        _ = poll_until_stopped => {}
        _ = stopping => {}
    }
    if let Some(fatal) = lock(&shared.fatal).as_ref() {
        tracing::error!("{fatal}");
    }
}

/// Stats gathered between two `stats` messages.
#[derive(Debug, Default)]
struct Stats {
    frames: u64,
    detect_ms: f64,
    crop_ms: f64,
    classify_ms: f64,
    track_ms: f64,
    dropped: u64,
    skipped: u64,
    camera_losses: u64,
}

/// Feeds a [`Publisher`] from the pipeline; never waits for the broker.
pub struct MqttSink {
    shared: Arc<Shared>,
    /// When the state was last queued, and what it said (faces and labels).
    last_state: Option<(Instant, String)>,
    tracks: TrackBook,
    /// Reused for each frame's events.
    events: Vec<FaceEvent>,
    started: Instant,
    stats: Stats,
    last_stats: Instant,
}

impl MqttSink {
    fn enqueue(&self, leaf: &str, payload: String, kind: Kind) {
        let (retain, at_least_once) = match kind {
            Kind::State => (true, false),
            Kind::Event => (false, true),
            Kind::Stats => (false, false),
        };
        lock(&self.shared.queue).push(Outgoing { topic: self.shared.options.topic(leaf), payload, retain, at_least_once, kind });
        self.shared.wake.notify_one();
    }

    fn check_fatal(&self) -> std::io::Result<()> {
        match lock(&self.shared.fatal).as_ref() {
            Some(message) => Err(std::io::Error::other(message.clone())),
            None => Ok(()),
        }
    }

    fn publish_events(&mut self) {
        // Taken and put back: the buffer is reused frame after frame.
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            self.enqueue("events", event.to_json().to_string(), Kind::Event);
        }
        self.events = events;
    }

    fn publish_stats(&mut self) {
        let elapsed = self.last_stats.elapsed().as_secs_f64().max(1e-9);
        let n = self.stats.frames.max(1) as f64;
        let queue = lock(&self.shared.queue);
        let (dropped_states, dropped_events) = (queue.dropped_states, queue.dropped_events);
        drop(queue);
        let stats = serde_json::json!({
            "fps": ((self.stats.frames as f64 / elapsed) * 100.0).round() / 100.0,
            "latency_ms": {
                "detect": self.stats.detect_ms / n,
                "crop": self.stats.crop_ms / n,
                "classify": self.stats.classify_ms / n,
                "track": self.stats.track_ms / n,
            },
            "dropped": self.stats.dropped,
            "skipped": self.stats.skipped,
            "camera_losses": self.stats.camera_losses,
            "uptime_s": self.started.elapsed().as_secs(),
            "mqtt": {
                "published": self.shared.published.load(Ordering::SeqCst),
                "dropped_states": dropped_states,
                "dropped_events": dropped_events,
                "untracked_faces": self.tracks.overflow,
            },
        });
        self.enqueue("stats", stats.to_string(), Kind::Stats);
        let kept = (self.stats.dropped, self.stats.skipped, self.stats.camera_losses);
        self.stats = Stats { dropped: kept.0, skipped: kept.1, camera_losses: kept.2, ..Stats::default() };
        self.last_stats = Instant::now();
    }
}

impl Sink for MqttSink {
    fn frame(&mut self, frame: &FrameResult) -> std::io::Result<()> {
        self.check_fatal()?;
        let s = &mut self.stats;
        s.frames += 1;
        s.detect_ms += frame.timings.detect_ms;
        s.crop_ms += frame.timings.crop_ms;
        s.classify_ms += frame.timings.classify_ms;
        s.track_ms += frame.timings.track_ms;
        s.dropped = frame.dropped;

        self.tracks.update(frame, &mut self.events);
        self.publish_events();

        let (state, key) = messages::state(frame);
        let due = match &self.last_state {
            None => true,
            Some((at, last_key)) => *last_key != key || at.elapsed() >= self.shared.options.interval,
        };
        if due {
            let text = state.to_string();
            *lock(&self.shared.latest_state) = Some(text.clone());
            self.enqueue("state", text, Kind::State);
            self.last_state = Some((Instant::now(), key));
        }
        if self.last_stats.elapsed() >= self.shared.options.stats_interval {
            self.publish_stats();
        }
        Ok(())
    }

    fn notice(&mut self, notice: &Notice) -> std::io::Result<()> {
        match notice {
            Notice::Skipped { .. } => self.stats.skipped += 1,
            Notice::CameraLost { .. } => self.stats.camera_losses += 1,
            _ => {}
        }
        self.check_fatal()
    }

    fn finish(&mut self, _summary: &RunSummary) -> std::io::Result<()> {
        self.tracks.finish(&mut self.events);
        self.publish_events();
        self.publish_stats();
        Ok(())
    }
}
