//! The fuzz targets' bodies. Each takes arbitrary bytes and runs one parser of untrusted input the way
//! mien runs it; it must return (any `Err` is fine) without panicking, hanging or allocating without
//! bound. `fuzz/` wraps each in a libFuzzer harness (`cargo fuzz run NAME`); the suite's corpus test
//! runs each over its committed corpus, `fuzz/corpus/NAME/`, so findings stay fixed.

use std::io::Write;
use std::sync::atomic::AtomicBool;

use mien_capture::{FrameLayout, PixelFormat, YuvEncoding, YuvMatrix, YuvRange};
use mien_pipeline::source::{FrameSource, MjpegFileSource, RawVideoSource, SourceEvent, Y4mSource};

/// Every target, by name (the folder of its corpus and the name of its libFuzzer harness).
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("plan_manifest", plan_manifest),
    ("plan_file", plan_file),
    ("image_decode", image_decode),
    ("camera_frame", camera_frame),
    ("video_file", video_file),
    ("http_request", http_request),
    ("mqtt_messages", mqtt_messages),
    ("config_file", config_file),
];

/// A plan's `mien.json`: parsed, then checked for consistency (shapes, labels, files, detector section).
pub fn plan_manifest(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(manifest) = mien_plan::Manifest::from_json(text) {
            let _ = manifest.validate();
        }
    }
}

/// A whole `.mien` file: the tar container, the manifest, the file table and every file's checksum,
/// before tract parses anything.
pub fn plan_file(data: &[u8]) {
    let Some(path) = scratch_file("plan.mien", data) else { return };
    if let Ok(plan) = mien_plan::Plan::open_unverified(&*path) {
        let _ = plan.verify_files();
    }
}

/// An image file through decode → orientation → RGB (JPEG, PNG, BMP, TIFF; EXIF and XMP).
pub fn image_decode(data: &[u8]) {
    if let Ok(image) = mien_image::decode_rgb(data) {
        assert!(u64::from(image.width()) * u64::from(image.height()) <= mien_image::MAX_PIXELS);
    }
}

const FORMATS: [PixelFormat; 8] = [
    PixelFormat::Yuyv,
    PixelFormat::Uyvy,
    PixelFormat::Nv12,
    PixelFormat::Grey,
    PixelFormat::Rgb24,
    PixelFormat::Bgr24,
    PixelFormat::Yu12,
    PixelFormat::Mjpeg,
];

/// A camera frame: the first 7 bytes choose the pixel format, width and height (up to 255), the stride
/// and the YUV encoding, the rest is the driver's buffer; every converter, and MJPEG decoding.
pub fn camera_frame(data: &[u8]) {
    let [format, width, height, stride_low, stride_high, matrix, range, frame @ ..] = data else { return };
    let layout = FrameLayout {
        format: FORMATS[usize::from(*format) % FORMATS.len()],
        width: u32::from(*width),
        height: u32::from(*height),
        stride: u32::from(u16::from_le_bytes([*stride_low, *stride_high])),
    };
    let encoding = YuvEncoding {
        matrix: if matrix & 1 == 0 { YuvMatrix::Bt601 } else { YuvMatrix::Bt709 },
        range: if range & 1 == 0 { YuvRange::Limited } else { YuvRange::Full },
    };
    let mut out = mien_image::RgbImage::new(0, 0);
    if mien_capture::pixel::to_rgb(&layout, encoding, frame, &mut out).is_ok() {
        assert_eq!(out.dimensions(), (layout.width, layout.height));
    }
}

/// A video file: the first byte chooses the reader (Y4M, MJPEG, raw YUYV 16x8), the rest is the file;
/// up to 8 events are read.
pub fn video_file(data: &[u8]) {
    let [kind, file @ ..] = data else { return };
    let Some(path) = scratch_file("video", file) else { return };
    let source: Result<Box<dyn FrameSource>, _> = match kind % 3 {
        0 => Y4mSource::open(&*path).map(|s| Box::new(s) as Box<dyn FrameSource>),
        1 => MjpegFileSource::open(&*path, 10.0).map(|s| Box::new(s) as Box<dyn FrameSource>),
        _ => RawVideoSource::open(&*path, PixelFormat::Yuyv, 16, 8, 10.0).map(|s| Box::new(s) as Box<dyn FrameSource>),
    };
    let Ok(mut source) = source else { return };
    let stop = AtomicBool::new(false);
    for _ in 0..8 {
        match source.next_event(&stop) {
            Ok(SourceEvent::End) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// One client connection's bytes through the kiosk server's whole HTTP stack (hyper's parser with the
/// server's limits, the host and token guard, every endpoint), served in memory by a server with a token,
/// a preview and a published frame. Whatever the bytes, the answer is nothing or an HTTP response, never
/// a server error.
pub fn http_request(data: &[u8]) {
    static HARNESS: std::sync::OnceLock<mien_serve::fuzzing::Harness> = std::sync::OnceLock::new();
    let response = HARNESS.get_or_init(mien_serve::fuzzing::Harness::new).exchange(data);
    // An HTTP/1.0 request gets an HTTP/1.0 answer.
    let status = response.strip_prefix(b"HTTP/1.1 ").or_else(|| response.strip_prefix(b"HTTP/1.0 "));
    assert!(response.is_empty() || status.is_some(), "not an HTTP response: {:?}", &response[..response.len().min(64)]);
    assert!(!status.is_some_and(|s| s.starts_with(b"500")), "a server error");
}

/// What `mien run --mqtt` builds from untrusted text and from frames: the broker URL (from the command
/// line or mien.toml; what logs show of it has no password), topic levels made MQTT-safe, Home
/// Assistant's discovery configs, and the state and face events of a run of frames decoded from the bytes
/// (labels, scores and timestamps of any value, more tracks than the track book holds). Every payload
/// must serialize.
pub fn mqtt_messages(data: &[u8]) {
    use mien_mqtt::messages::{discovery, state, DeviceInfo, TrackBook};
    let mut parts = data.splitn(4, |&b| b == 0);
    let (url, id, prefix) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let frames = parts.next().unwrap_or_default();
    if let Ok(url) = String::from_utf8_lossy(url).parse::<mien_mqtt::BrokerUrl>() {
        // What logs show parses back to the same broker without a password.
        let shown = url.redacted();
        let again: mien_mqtt::BrokerUrl = shown.parse().unwrap_or_else(|e| panic!("{shown}: {e}"));
        assert_eq!((again.password, again.host, again.port), (None, url.host, url.port), "{shown}");
    }
    let id = mien_mqtt::mqtt_safe(&String::from_utf8_lossy(id));
    assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
    let prefix = String::from_utf8_lossy(prefix);
    for (topic, payload) in discovery(&prefix, &prefix, &DeviceInfo { id, model: prefix.to_string() }) {
        assert!(!topic.is_empty());
        serde_json::to_string(&payload).expect("a discovery config serializes");
    }

    const LABELS: [&str; 5] = ["happy", "sad", "", "ü\"\\\n", "a/b+#"];
    let mut book = TrackBook::default();
    let mut events = Vec::new();
    let mut timestamp_ms = 0.0;
    // Per frame: a header byte (faces, ended tracks, how the clock moves) and 8 bytes of clock, then
    // per face its track, label and 4 bytes of score.
    let mut rest = frames;
    for _ in 0..64 {
        let Some((&header, after)) = rest.split_first() else { break };
        let Some((clock, after)) = after.split_first_chunk::<8>() else { break };
        timestamp_ms = match header >> 6 {
            0 => timestamp_ms + f64::from(u16::from_le_bytes([clock[0], clock[1]])),
            1 => f64::from_le_bytes(*clock),
            _ => timestamp_ms,
        };
        rest = after;
        let mut faces = Vec::new();
        for _ in 0..(header & 7) {
            let Some((face, after)) = rest.split_first_chunk::<6>() else { break };
            rest = after;
            let label = LABELS[usize::from(face[1]) % LABELS.len()].to_string();
            let score = f32::from_le_bytes([face[2], face[3], face[4], face[5]]);
            faces.push(mien_pipeline::FaceResult {
                track: u64::from(face[0]),
                rect: mien_image::Rect::new(0.0, 0.0, 1.0, 1.0),
                crop: mien_image::PixelRect { x: 0, y: 0, width: 1, height: 1 },
                detection_score: score,
                probabilities: [(label.clone(), score)].into_iter().collect(),
                frame_label: label.clone(),
                frame_score: score,
                label,
                score,
            });
        }
        let ended_tracks = (0..u64::from((header >> 3) & 7)).map(|i| u64::from(clock[(i % 8) as usize])).collect();
        let frame = mien_pipeline::FrameResult {
            schema: mien_pipeline::SCHEMA,
            kind: "frame",
            source: "fuzz".into(),
            frame: 0,
            timestamp_ms,
            file: None,
            width: 1,
            height: 1,
            faces,
            ended_tracks,
            dropped: 0,
            timings: mien_pipeline::StageTimings::default(),
        };
        book.update(&frame, &mut events);
        let (document, _key) = state(&frame);
        serde_json::to_string(&document).expect("a state serializes");
        for event in events.drain(..) {
            serde_json::to_string(&event.to_json()).expect("an event serializes");
        }
    }
    book.finish(&mut events);
    for event in events.drain(..) {
        serde_json::to_string(&event.to_json()).expect("an event serializes");
    }
}

/// A mien.toml's text into the `mien run` flags it stands for: each setting a known key with flags, or a
/// one-line message naming the key or line.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match mien_config::parse(text) {
        Ok(settings) => {
            for setting in settings {
                assert!(mien_config::KEYS.iter().any(|k| std::ptr::eq(k, setting.key)));
                if let Some(first) = setting.args.first() {
                    assert!(first.to_string_lossy().starts_with("--"), "{:?}", setting.args);
                }
            }
        }
        Err(message) => assert!(!message.is_empty() && !message.contains('\n'), "{message:?}"),
    }
}

/// `data` in a temporary file (removed when dropped).
fn scratch_file(name: &str, data: &[u8]) -> Option<tempfile::TempPath> {
    let mut file = tempfile::Builder::new().prefix("mien-fuzz-").suffix(name).tempfile().ok()?;
    file.write_all(data).ok()?;
    Some(file.into_temp_path())
}
