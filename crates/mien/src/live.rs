//! `mien run`: live expression recognition — every face found, classified, tracked, smoothed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use mien_capture::{CaptureRequest, PixelFormat};
use mien_detect::{DetectOptions, FaceDetector};
use mien_pipeline::sink::{JsonLinesSink, Notice, Sink, TerminalSink};
use mien_pipeline::source::{is_image, FrameSource, ImageSource, MjpegFileSource, RawVideoSource, Y4mSource, IMAGE_EXTENSIONS};
use mien_pipeline::{Pipeline, PipelineConfig, RunOptions};
use mien_runtime::{Classifier, RuntimeOptions};
use mien_track::TrackerConfig;

/// Arguments of `mien run`.
#[derive(Args, Debug, Clone)]
pub struct LiveArgs {
    /// Settings file (mien.toml; see `mien config --help`): every flag below has a key; flags and
    /// environment variables override it. Default: /etc/mien/mien.toml when running as a systemd service.
    #[arg(long, env = "MIEN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Expression classifier plan. Default: vit-s14-fer112-int8.mien found under ./models, the binary's
    /// ../share/mien/models, or /usr/share/mien/models.
    #[arg(long, env = "MIEN_PLAN", value_name = "PLAN")]
    plan: Option<PathBuf>,
    /// Face detector plan. Default: blazeface-short.mien found like --plan.
    /// blazeface-full.mien finds faces farther away (groups), at about 2.5x the cost.
    #[arg(long, env = "MIEN_DETECTOR", value_name = "PLAN")]
    detector: Option<PathBuf>,
    /// What to read: a camera (/dev/videoN, or part of its name), a folder of images, images (repeat
    /// --source), a .y4m or .mjpeg video, or a raw video with --raw-format and --raw-size. Default: the
    /// first camera that works.
    #[arg(long, value_name = "SOURCE")]
    source: Vec<String>,
    #[command(flatten)]
    camera: crate::CameraFormatArgs,
    /// Raw video: the frames' pixel format.
    #[arg(long, value_name = "FORMAT")]
    raw_format: Option<PixelFormat>,
    /// Raw video: the frames' size.
    #[arg(long, value_parser = crate::parse_size, value_name = "WxH")]
    raw_size: Option<(u32, u32)>,
    /// Raw video and image folders: frames per second of the timeline (tracks expire by it).
    #[arg(long, default_value_t = 10.0, value_name = "FPS")]
    file_fps: f64,
    /// One JSON object per line on stdout: a "frame" line per processed frame (schema mien.run/1,
    /// see README), "notice" lines, and a final "summary" line.
    #[arg(long)]
    json: bool,
    /// No per-frame output: only notices (started, camera lost and back, skipped input) and the closing
    /// summary. For a service, whose output goes to the journal.
    #[arg(long)]
    quiet: bool,
    /// Process at most this many frames per second (the newest frame is taken each time).
    #[arg(long, value_name = "FPS")]
    max_fps: Option<f64>,
    /// Stop after this many processed frames.
    #[arg(long, value_name = "N")]
    max_frames: Option<u64>,
    /// Ignore faces smaller than this (longer side, frame pixels).
    #[arg(long, default_value_t = 40.0, value_name = "PX")]
    min_face: f32,
    /// Minimum detector score in [0, 1]. Default: the detector plan's (0.5 short range, 0.6 full range).
    #[arg(long, value_name = "SCORE")]
    min_score: Option<f32>,
    /// Margin around each face before the square crop, as a fraction of the face box's longer side.
    #[arg(long, default_value_t = 0.1)]
    margin: f32,
    /// Weight of the newest frame in each face's moving average, in (0, 1]; 1 turns smoothing off.
    #[arg(long, default_value_t = 0.4)]
    smoothing: f32,
    /// The reported label changes only when another label's smoothed probability leads it by this much.
    #[arg(long, default_value_t = 0.1)]
    switch_margin: f32,
    /// A face unseen for this long ends its track.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    track_expiry_ms: u64,
    /// Track faces across frames (ids kept, probabilities smoothed, labels held by hysteresis). The
    /// default for cameras and video files; use it for a folder of frames taken from one video.
    #[arg(long, overrides_with = "no_track")]
    track: bool,
    /// Classify every face on its own: no tracking, smoothing or hysteresis, a new id per face; each
    /// face's label is its own classification. The default for image folders and lists of images, whose
    /// photos are of different scenes.
    #[arg(long, overrides_with = "track")]
    no_track: bool,
    /// Save every face crop as DIR/frameNNNNNN-faceK-LABEL.png (debugging).
    #[arg(long, value_name = "DIR")]
    save_crops: Option<PathBuf>,
    /// Stop with an error when the camera goes away, instead of retrying until it is back.
    #[arg(long)]
    exit_on_camera_loss: bool,
    /// Camera: how long one frame may take to arrive before a warning.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    timeout_ms: u64,
    /// Inference threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// How int8 plans run their matmuls: auto, integer or dequantized (see `mien bench --help`).
    #[arg(long, default_value = "auto", value_name = "auto|integer|dequantized")]
    int8_path: mien_runtime::Int8Path,
    /// How f16 plans run: auto, f16 or f32 (see `mien bench --help`).
    #[arg(long, default_value = "auto", value_name = "auto|f16|f32")]
    f16_path: mien_runtime::HalfPath,
    /// Files (a folder, images, a video): start again from the first frame at the end, until stopped.
    #[arg(long = "loop")]
    looped: bool,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    mqtt: MqttArgs,
}

/// `mien run --mqtt`: results to an MQTT broker (Home Assistant, Node-RED, fleets).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "MQTT")]
struct MqttArgs {
    /// Publish state, face events and stats to this broker: mqtt://[USER@]HOST[:PORT] (1883) or
    /// mqtts://... (8883, TLS). Topics under PREFIX/DEVICE-ID/: availability, state, events, stats.
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    /// This device's id in topics and Home Assistant. Default: the host name, made MQTT-safe.
    #[arg(long, value_name = "ID", requires = "mqtt")]
    device_id: Option<String>,
    /// The first topic level.
    #[arg(long, default_value = "mien", value_name = "PREFIX", requires = "mqtt")]
    mqtt_prefix: String,
    /// User name (instead of the URL's).
    #[arg(long, value_name = "USER", requires = "mqtt")]
    mqtt_username: Option<String>,
    /// Read the password from FILE (its first line). MIEN_MQTT_PASSWORD works too; never logged.
    #[arg(long, value_name = "FILE", requires = "mqtt")]
    mqtt_password_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the broker's certificate, for mqtts:// (default: the system's).
    #[arg(long, value_name = "FILE", requires = "mqtt")]
    mqtt_ca: Option<PathBuf>,
    /// Client certificate (PEM), for brokers that ask for one (with --mqtt-key).
    #[arg(long, value_name = "FILE", requires_all = ["mqtt", "mqtt_key"])]
    mqtt_cert: Option<PathBuf>,
    /// Client private key (PEM), with --mqtt-cert.
    #[arg(long, value_name = "FILE", requires_all = ["mqtt", "mqtt_cert"])]
    mqtt_key: Option<PathBuf>,
    /// Publish the state at most this often (and whenever faces or labels change).
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS", requires = "mqtt")]
    mqtt_interval: f64,
    /// Home Assistant's discovery prefix.
    #[arg(long, default_value = "homeassistant", value_name = "PREFIX", requires = "mqtt")]
    ha_prefix: String,
    /// Do not publish Home Assistant discovery configs.
    #[arg(long, requires = "mqtt")]
    no_ha_discovery: bool,
    /// Stop with an error when the broker refuses or fails, instead of retrying.
    #[arg(long, requires = "mqtt")]
    exit_on_mqtt_error: bool,
}

#[cfg(feature = "mqtt")]
impl MqttArgs {
    fn options(&self, url: &str) -> Result<mien_mqtt::MqttOptions> {
        let url: mien_mqtt::BrokerUrl = url.parse().map_err(|e: String| anyhow::anyhow!("--mqtt: {e}"))?;
        let mut options = mien_mqtt::MqttOptions::new(url);
        if let Some(id) = &self.device_id {
            options.device_id = id.clone();
        }
        options.prefix = self.mqtt_prefix.clone();
        if let Some(user) = &self.mqtt_username {
            options.username = Some(user.clone());
        }
        if let Some(file) = &self.mqtt_password_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--mqtt-password-file {}", file.display()))?;
            options.password = Some(text.lines().next().unwrap_or("").to_string());
        } else if let Ok(password) = std::env::var("MIEN_MQTT_PASSWORD") {
            options.password = Some(password);
        }
        if !(self.mqtt_interval > 0.0 && self.mqtt_interval.is_finite()) {
            bail!("--mqtt-interval: expected a positive number of seconds, got {}", self.mqtt_interval);
        }
        options.interval = Duration::from_secs_f64(self.mqtt_interval);
        options.ha_prefix = (!self.no_ha_discovery).then(|| self.ha_prefix.clone());
        options.ca = self.mqtt_ca.clone();
        options.client_auth = self.mqtt_cert.clone().zip(self.mqtt_key.clone());
        options.exit_on_error = self.exit_on_mqtt_error;
        Ok(options)
    }
}

/// `mien run --serve`: the kiosk page and local API.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Kiosk page and API")]
struct ServeArgs {
    /// Serve the kiosk page and the HTTP API (/api/v1/events, latest, health, preview.jpg; /metrics) on
    /// ADDR. Loopback unless another address is given; port 0 picks a free port (the `started` notice
    /// says which).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8080")]
    serve: Option<std::net::SocketAddr>,
    /// Require `Authorization: Bearer TOKEN` on every endpoint but / and /api/v1/health (the page takes
    /// it as http://HOST:PORT/#token=TOKEN).
    #[arg(long, env = "MIEN_API_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Event-stream clients at once; more get 503.
    #[arg(long, default_value_t = 16, value_name = "N", requires = "serve")]
    max_clients: usize,
    /// Serve the latest frame, scaled down, at /api/v1/preview.jpg and behind the page's face boxes:
    /// `local` to this machine's clients only (the default when given), `any` to every client. Camera
    /// images are personal data: off unless given.
    #[arg(long, value_name = "local|any", num_args = 0..=1, default_missing_value = "local", requires = "serve",
          value_parser = ["local", "any"])]
    preview: Option<String>,
    /// Preview width in pixels (the height keeps the frame's aspect ratio).
    #[arg(long, default_value_t = 320, value_name = "PX", requires = "serve")]
    preview_width: u32,
    /// Preview JPEG quality, 1-100.
    #[arg(long, default_value_t = 70, value_name = "Q", requires = "serve")]
    preview_quality: u8,
    /// Health turns 503 (and the page says so) when no frame came for this long.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS", requires = "serve")]
    stale_after: f64,
    /// Allow pages from ORIGIN (e.g. http://dashboard.local:3000) to read the API from JavaScript
    /// (Access-Control-Allow-Origin). No CORS headers without it.
    #[arg(long, value_name = "ORIGIN", requires = "serve")]
    cors_origin: Option<String>,
    /// Show LABEL as NAME on the page, e.g. --label-name happy=fröhlich (repeat for each label).
    #[arg(long, value_name = "LABEL=NAME", value_parser = parse_label_name, requires = "serve")]
    label_name: Vec<(String, String)>,
}

fn parse_label_name(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((label, name)) if !label.trim().is_empty() && !name.trim().is_empty() => {
            Ok((label.trim().to_string(), name.trim().to_string()))
        }
        _ => Err(format!("expected LABEL=NAME such as happy=fröhlich, got `{text}`")),
    }
}

/// The HTTP server, when this binary has one (cargo feature `serve`, on by default; off, the binary
/// is smaller by the HTTP stack and `--serve` is an error).
#[cfg(feature = "serve")]
use mien_serve::Server;

/// Stands in for the server in a build without one; never constructed.
#[cfg(not(feature = "serve"))]
enum Server {}

#[cfg(not(feature = "serve"))]
impl Server {
    fn sink(&self) -> JsonLinesSink<std::io::Sink> {
        match *self {}
    }
    fn url(&self) -> &str {
        match *self {}
    }
    fn stop(self) {}
}

#[cfg(feature = "serve")]
impl ServeArgs {
    fn options(&self, addr: std::net::SocketAddr) -> Result<mien_serve::ServeOptions> {
        let mut options = mien_serve::ServeOptions::new(addr);
        if let Some(token) = &self.api_token {
            if token.len() < 8 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("--api-token: expected at least 8 printable ASCII characters without spaces");
            }
            options.api_token = Some(token.clone());
        }
        if !(self.stale_after > 0.0 && self.stale_after.is_finite()) {
            bail!("--stale-after: expected a positive number of seconds, got {}", self.stale_after);
        }
        if let Some(origin) = &self.cors_origin {
            if origin.is_empty() || !origin.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("--cors-origin: expected an origin such as http://dashboard.local:3000, got `{origin}`");
            }
        }
        options.max_clients = self.max_clients;
        options.preview = match self.preview.as_deref() {
            Some("any") => mien_serve::PreviewMode::Any,
            Some(_) => mien_serve::PreviewMode::Local,
            None => mien_serve::PreviewMode::Off,
        };
        options.preview_width = self.preview_width;
        options.preview_quality = self.preview_quality;
        options.stale_after = Duration::from_secs_f64(self.stale_after);
        options.cors_origin = self.cors_origin.clone();
        options.label_names = self.label_name.iter().cloned().collect();
        Ok(options)
    }
}


/// Where a default plan is looked for, in order.
fn default_plan_candidates(relative: &str) -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from("models").join(relative)];
    if let Some(bin_dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        candidates.push(bin_dir.join("../share/mien/models").join(relative));
        candidates.push(bin_dir.join("models").join(relative));
    }
    candidates.push(PathBuf::from("/usr/share/mien/models").join(relative));
    // A development checkout, wherever it is run from.
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models").join(relative));
    candidates
}

/// The detector plan `mien run` uses when none is given (for `mien bench --pipeline`).
pub fn default_detector() -> PathBuf {
    resolve_plan(None, "MIEN_DETECTOR", "blazeface/blazeface-short.mien", "--detector")
        .unwrap_or_else(|_| PathBuf::from("models/blazeface/blazeface-short.mien"))
}

fn resolve_plan(given: Option<&Path>, env: &str, relative: &str, flag: &str) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let candidates = default_plan_candidates(relative);
    match candidates.iter().find(|p| p.exists()) {
        Some(found) => {
            tracing::info!("{flag}: using {}", found.display());
            Ok(found.clone())
        }
        None => bail!(
            "{flag}: not given, ${env} not set, and no {relative} in {}; pass {flag} PLAN",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A sink that passes on everything but frames when `quiet` (`--quiet`).
struct Quiet<S> {
    inner: S,
    quiet: bool,
}

impl<S: Sink> Sink for Quiet<S> {
    fn frame(&mut self, result: &mien_pipeline::FrameResult) -> std::io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        self.inner.frame(result)
    }

    fn notice(&mut self, notice: &Notice) -> std::io::Result<()> {
        self.inner.notice(notice)
    }

    fn finish(&mut self, summary: &mien_pipeline::RunSummary) -> std::io::Result<()> {
        self.inner.finish(summary)
    }
}

/// A regular file, or a named pipe (`mkfifo`: frames piped in from another program).
fn is_readable_file(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(path).is_ok_and(|m| m.file_type().is_file() || m.file_type().is_fifo())
    }
    #[cfg(not(unix))]
    path.is_file()
}

/// Whether `--source` names files (a folder, images, a video) rather than a camera.
fn is_file_source(args: &LiveArgs) -> bool {
    args.source.len() > 1 || args.source.first().is_some_and(|s| Path::new(s).is_dir() || is_readable_file(Path::new(s)))
}

fn open_source(args: &LiveArgs) -> Result<Box<dyn FrameSource>> {
    if !args.looped {
        return open_once(args);
    }
    if !is_file_source(args) {
        bail!("--loop: only for files (a folder, images or a video); a camera runs until stopped");
    }
    let first = open_once(args)?;
    let again = args.clone();
    let mut first = Some(first);
    let reopen: mien_pipeline::source::Reopen = Box::new(move || match first.take() {
        Some(source) => Ok(source),
        None => open_once(&again).map_err(|e| mien_pipeline::source::SourceError::File {
            path: PathBuf::from(again.source.first().cloned().unwrap_or_default()),
            message: format!("{e:#}"),
        }),
    });
    Ok(Box::new(mien_pipeline::source::LoopingSource::new(reopen)?))
}

fn open_once(args: &LiveArgs) -> Result<Box<dyn FrameSource>> {
    let interval = Duration::from_secs_f64(1.0 / args.file_fps.max(0.001));
    if args.source.len() > 1 {
        let files: Vec<PathBuf> = args.source.iter().map(PathBuf::from).collect();
        if let Some(bad) = files.iter().find(|f| !f.is_file() || !is_image(f)) {
            bail!(
                "--source {}: several sources must all be image files ({}); cameras, folders and videos go one at a time",
                bad.display(),
                IMAGE_EXTENSIONS.join(", ")
            );
        }
        let description = format!("{} images", files.len());
        return Ok(Box::new(ImageSource::files(files, description).with_frame_interval(interval)));
    }
    if let Some(text) = args.source.first() {
        let path = Path::new(text);
        if path.is_dir() {
            return Ok(Box::new(ImageSource::folder(path)?.with_frame_interval(interval)));
        }
        if is_readable_file(path) {
            let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
            if let (Some(format), Some((w, h))) = (args.raw_format, args.raw_size) {
                return Ok(Box::new(RawVideoSource::open(path, format, w, h, args.file_fps)?));
            }
            if args.raw_format.is_some() || args.raw_size.is_some() {
                bail!("--raw-format and --raw-size go together (raw video has no header to say them)");
            }
            if extension == "y4m" {
                return Ok(Box::new(Y4mSource::open(path)?));
            }
            if extension == "mjpeg" || extension == "mjpg" {
                return Ok(Box::new(MjpegFileSource::open(path, args.file_fps)?));
            }
            if is_image(path) {
                return Ok(Box::new(ImageSource::files(vec![path.to_path_buf()], format!("image {}", path.display()))));
            }
            bail!(
                "--source {text}: expected a camera, a folder of images, an image ({}), a .y4m or .mjpeg video, or raw video with --raw-format and --raw-size",
                IMAGE_EXTENSIONS.join(", ")
            );
        }
        let looks_like_path =
            text.starts_with('/') || text.starts_with('.') || text.contains(std::path::MAIN_SEPARATOR);
        if looks_like_path && !text.starts_with("/dev/") {
            bail!("--source {text}: no such file or folder");
        }
    }
    open_camera(args)
}

#[cfg(target_os = "linux")]
fn open_camera(args: &LiveArgs) -> Result<Box<dyn FrameSource>> {
    use mien_pipeline::source::{CameraSource, Reconnect};
    let request = CaptureRequest {
        device: args.source.first().cloned(),
        format: args.camera.format,
        size: args.camera.size,
        fps: args.camera.fps,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        ..CaptureRequest::default()
    };
    let reconnect = Reconnect { exit_on_loss: args.exit_on_camera_loss, ..Reconnect::default() };
    let camera = CameraSource::open(request, reconnect)?;
    if args.source.is_empty() {
        eprintln!("mien: no --source given; reading {}", camera.describe());
    }
    Ok(Box::new(camera))
}

#[cfg(not(target_os = "linux"))]
fn open_camera(_args: &LiveArgs) -> Result<Box<dyn FrameSource>> {
    bail!("cameras are read through V4L2, on Linux only; pass --source with a folder, image or video file")
}

/// Runs `mien run`.
pub fn run(args: LiveArgs, verbose: bool) -> Result<ExitCode> {
    for (flag, value, low, high) in [
        ("--margin", args.margin, 0.0, 2.0),
        ("--smoothing", args.smoothing, f32::MIN_POSITIVE, 1.0),
        ("--switch-margin", args.switch_margin, 0.0, 1.0),
        ("--min-score", args.min_score.unwrap_or(0.5), 0.0, 1.0),
    ] {
        if !(low..=high).contains(&value) {
            bail!("{flag}: expected a number in [{low}, {high}], got {value}");
        }
    }
    if args.max_fps.is_some_and(|f| !(f > 0.0)) {
        bail!("--max-fps: expected a positive number");
    }
    if args.max_frames == Some(0) {
        bail!("--max-frames: expected at least 1");
    }
    let plan = resolve_plan(args.plan.as_deref(), "MIEN_PLAN", "vit-s14-fer112/vit-s14-fer112-int8.mien", "--plan")?;
    let detector_plan =
        resolve_plan(args.detector.as_deref(), "MIEN_DETECTOR", "blazeface/blazeface-short.mien", "--detector")?;

    // The source first: a wrong camera or file fails before the models load.
    let mut source = open_source(&args)?;
    let runtime = RuntimeOptions { threads: args.threads, int8_path: args.int8_path, f16_path: args.f16_path, ..Default::default() };
    let classifier = Classifier::load(&plan, &runtime).with_context(|| format!("--plan {}", plan.display()))?;
    let detector = FaceDetector::load(
        &detector_plan,
        &RuntimeOptions { threads: args.threads, ..RuntimeOptions::default() },
        &DetectOptions { min_score: args.min_score, nms_iou: None, min_face_px: args.min_face },
    )
    .with_context(|| format!("--detector {}", detector_plan.display()))?;
    let config = PipelineConfig {
        margin: args.margin,
        tracker: TrackerConfig {
            smoothing: args.smoothing,
            switch_margin: args.switch_margin,
            expire_after: Duration::from_millis(args.track_expiry_ms),
            across_frames: if args.track || args.no_track { args.track } else { source.is_temporal() },
            ..TrackerConfig::default()
        },
        save_crops: args.save_crops.clone(),
    };
    let mut pipeline = Pipeline::new(detector, classifier, config)?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }

    let server = match args.serve.serve {
        #[cfg(feature = "serve")]
        Some(addr) => {
            let info = mien_serve::RunInfo {
                source: source.describe(),
                classifier: plan.display().to_string(),
                detector: detector_plan.display().to_string(),
                labels: pipeline.classifier().labels().to_vec(),
            };
            Some(mien_serve::Server::start(args.serve.options(addr)?, info).context("--serve")?)
        }
        #[cfg(not(feature = "serve"))]
        Some(_) => bail!("--serve: this mien was built without its HTTP server (cargo feature `serve`)"),
        None => None,
    };

    #[cfg(feature = "mqtt")]
    let publisher = match &args.mqtt.mqtt {
        Some(url) => {
            let model = plan.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Some(mien_mqtt::Publisher::start(args.mqtt.options(url)?, &model).context("--mqtt")?)
        }
        None => None,
    };
    #[cfg(not(feature = "mqtt"))]
    if args.mqtt.mqtt.is_some() {
        bail!("--mqtt: this mien was built without its MQTT client (cargo feature `mqtt`)");
    }

    let mut json_sink;
    let mut terminal_sink;
    let sink: &mut dyn Sink = if args.json {
        json_sink = Quiet { inner: JsonLinesSink::new(std::io::stdout().lock()), quiet: args.quiet };
        &mut json_sink
    } else {
        terminal_sink = Quiet { inner: TerminalSink::stdout(verbose), quiet: args.quiet };
        &mut terminal_sink
    };
    let mut serve_sink = server.as_ref().map(Server::sink);
    let mut sinks: Vec<&mut dyn Sink> = vec![sink];
    if let Some(serve_sink) = serve_sink.as_mut() {
        sinks.push(serve_sink);
    }
    #[cfg(feature = "mqtt")]
    let mut mqtt_sink = publisher.as_ref().map(mien_mqtt::Publisher::sink);
    #[cfg(feature = "mqtt")]
    if let Some(mqtt_sink) = mqtt_sink.as_mut() {
        sinks.push(mqtt_sink);
    }
    // Under systemd (Type=notify): readiness now, watchdog pings while frames flow. A healthy pipeline
    // may go two frame intervals of --max-fps without a frame.
    let slowest_frame = args.max_fps.map_or(Duration::ZERO, |fps| Duration::from_secs_f64(2.0 / fps));
    let notifier = crate::service::ServiceNotifier::from_environment(slowest_frame);
    let mut service_sink = notifier.as_ref().map(crate::service::ServiceNotifier::sink);
    if let Some(service_sink) = service_sink.as_mut() {
        sinks.push(service_sink);
    }
    let started = Notice::Started {
        source: source.describe(),
        classifier: plan.display().to_string(),
        detector: detector_plan.display().to_string(),
        url: server.as_ref().map(|s| s.url().to_string()),
    };
    for sink in sinks.iter_mut() {
        sink.notice(&started)?;
    }
    if let Some(notifier) = &notifier {
        notifier.ready(&source.describe());
    }
    let options = RunOptions { max_fps: args.max_fps, max_frames: args.max_frames };
    let outcome = mien_pipeline::run(source.as_mut(), &mut pipeline, &mut sinks, &options, &stop);
    drop(sinks);
    drop(service_sink);
    if let Some(notifier) = notifier {
        notifier.stop();
    }
    drop(serve_sink);
    if let Some(server) = server {
        server.stop();
    }
    #[cfg(feature = "mqtt")]
    {
        drop(mqtt_sink);
        if let Some(publisher) = publisher {
            publisher.stop();
        }
    }
    let summary = outcome?;
    tracing::info!(frames = summary.frames, fps = summary.fps, stopped_by = %summary.stopped_by, "run finished");
    Ok(ExitCode::SUCCESS)
}
