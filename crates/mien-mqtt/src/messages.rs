//! What mien publishes: the retained state, face events, periodic stats and Home Assistant's discovery
//! configs, built from the pipeline's frames. Pure functions and a small track book, so they are tested
//! without a broker.

use std::time::Duration;

use mien_pipeline::FrameResult;
use serde_json::{json, Value};

/// Tracks followed at once for events; more are counted in [`TrackBook::overflow`] and get no events.
pub const MAX_TRACKS: usize = 32;

/// One face in the retained state.
fn face_json(face: &mien_pipeline::FaceResult) -> Value {
    json!({
        "track": face.track,
        "label": face.label,
        "score": round3(face.score),
        "probabilities": face.probabilities.iter().map(|(k, v)| (k.clone(), json!(round3(*v)))).collect::<serde_json::Map<_, _>>(),
    })
}

fn round3(x: f32) -> f64 {
    (f64::from(x) * 1000.0).round() / 1000.0
}

/// The state document: faces present, the dominant expression (the most confident face's smoothed label)
/// and its score, and every face. `key` is what a change is judged by (faces present, labels).
pub fn state(frame: &FrameResult) -> (Value, String) {
    let dominant = frame
        .faces
        .iter()
        .max_by(|a, b| a.score.total_cmp(&b.score));
    let value = json!({
        "faces_present": frame.faces.len(),
        "face_present": !frame.faces.is_empty(),
        "dominant_expression": dominant.map(|f| f.label.clone()),
        "dominant_score": dominant.map(|f| round3(f.score)),
        "faces": frame.faces.iter().map(face_json).collect::<Vec<_>>(),
        "frame": frame.frame,
        "timestamp_ms": frame.timestamp_ms,
    });
    let key = frame.faces.iter().map(|f| format!("{}:{}", f.track, f.label)).collect::<Vec<_>>().join(",");
    (value, key)
}

/// A face event.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // The fields say what they are: the track id, its label and score, how long it lived.
pub enum FaceEvent {
    /// A new track.
    Appeared { track: u64, label: String, score: f32 },
    /// A track's reported label changed (the tracker's hysteresis already applied).
    Changed { track: u64, from: String, label: String, score: f32, duration: Duration },
    /// A track ended.
    Left { track: u64, label: String, duration: Duration },
}

impl FaceEvent {
    /// The event as published.
    pub fn to_json(&self) -> Value {
        match self {
            FaceEvent::Appeared { track, label, score } => {
                json!({"event": "appeared", "track": track, "label": label, "score": round3(*score)})
            }
            FaceEvent::Changed { track, from, label, score, duration } => json!({
                "event": "changed", "track": track, "from": from, "label": label, "score": round3(*score),
                "duration_s": (duration.as_secs_f64() * 1000.0).round() / 1000.0,
            }),
            FaceEvent::Left { track, label, duration } => json!({
                "event": "left", "track": track, "label": label,
                "duration_s": (duration.as_secs_f64() * 1000.0).round() / 1000.0,
            }),
        }
    }
}

#[derive(Debug, Clone)]
struct Track {
    label: String,
    first_seen_ms: f64,
    last_seen_ms: f64,
}

/// The live tracks, to turn frames into appear / change / leave events. Bounded: [`MAX_TRACKS`].
#[derive(Debug, Default)]
pub struct TrackBook {
    tracks: heapless::LinearMap<u64, Track, MAX_TRACKS>,
    /// Tracks that got no events because the book was full.
    pub overflow: u64,
}

/// How long from one timestamp to another: zero if the clock went back (or is not a number), the
/// longest duration if the difference is beyond it. Timestamps come from a camera's clock or a file's
/// timeline, not from us: a jump must not stop the run.
fn since(from_ms: f64, to_ms: f64) -> Duration {
    let seconds = (to_ms - from_ms) / 1000.0;
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) => duration,
        Err(_) if seconds > 0.0 => Duration::MAX,
        Err(_) => Duration::ZERO,
    }
}

impl TrackBook {
    /// The events one frame brings, in order: tracks that left, then appeared or changed faces.
    pub fn update(&mut self, frame: &FrameResult, events: &mut Vec<FaceEvent>) {
        let now = frame.timestamp_ms;
        for ended in &frame.ended_tracks {
            if let Some(track) = self.tracks.remove(ended) {
                events.push(FaceEvent::Left { track: *ended, label: track.label, duration: since(track.first_seen_ms, track.last_seen_ms) });
            }
        }
        for face in &frame.faces {
            match self.tracks.get_mut(&face.track) {
                Some(track) => {
                    track.last_seen_ms = now;
                    if track.label != face.label {
                        events.push(FaceEvent::Changed {
                            track: face.track,
                            from: std::mem::replace(&mut track.label, face.label.clone()),
                            label: face.label.clone(),
                            score: face.score,
                            duration: since(track.first_seen_ms, now),
                        });
                    }
                }
                None => {
                    let track = Track { label: face.label.clone(), first_seen_ms: now, last_seen_ms: now };
                    if self.tracks.insert(face.track, track).is_err() {
                        self.overflow += 1;
                        continue;
                    }
                    events.push(FaceEvent::Appeared { track: face.track, label: face.label.clone(), score: face.score });
                }
            }
        }
    }

    /// Every live track as left (a clean stop).
    pub fn finish(&mut self, events: &mut Vec<FaceEvent>) {
        for (id, track) in self.tracks.iter() {
            events.push(FaceEvent::Left { track: *id, label: track.label.clone(), duration: since(track.first_seen_ms, track.last_seen_ms) });
        }
        self.tracks.clear();
    }
}

/// Who this device is, for Home Assistant.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// MQTT-safe device id.
    pub id: String,
    /// The classifier plan's name (Home Assistant's "model").
    pub model: String,
}

/// Home Assistant's MQTT discovery configs: (topic, payload) for the sensors faces present, dominant
/// expression, its score and fps, and the binary sensor face present.
pub fn discovery(ha_prefix: &str, prefix: &str, device: &DeviceInfo) -> Vec<(String, Value)> {
    let base = format!("{prefix}/{}", device.id);
    let device_json = json!({
        "identifiers": [format!("mien_{}", device.id)],
        "name": format!("mien {}", device.id),
        "model": device.model,
        "manufacturer": "mien",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let entity = |component: &str, object: &str, name: &str, state: &str, template: &str, extra: Value| {
        let mut config = json!({
            "name": name,
            "unique_id": format!("mien_{}_{object}", device.id),
            "object_id": format!("mien_{}_{object}", device.id),
            "state_topic": format!("{base}/{state}"),
            "value_template": template,
            "availability_topic": format!("{base}/availability"),
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device_json,
        });
        if let (Value::Object(config), Value::Object(extra)) = (&mut config, extra) {
            config.extend(extra);
        }
        (format!("{ha_prefix}/{component}/{}/{object}/config", device.id), config)
    };
    vec![
        entity("sensor", "faces_present", "Faces present", "state", "{{ value_json.faces_present }}", json!({"state_class": "measurement", "icon": "mdi:account-multiple"})),
        entity("sensor", "dominant_expression", "Dominant expression", "state", "{{ value_json.dominant_expression or 'none' }}", json!({"icon": "mdi:emoticon-outline"})),
        entity("sensor", "dominant_score", "Dominant expression score", "state", "{{ value_json.dominant_score or 0 }}", json!({"state_class": "measurement", "unit_of_measurement": "%", "value_template": "{{ ((value_json.dominant_score or 0) * 100) | round(0) }}"})),
        entity("sensor", "fps", "Frame rate", "stats", "{{ value_json.fps }}", json!({"state_class": "measurement", "unit_of_measurement": "fps", "entity_category": "diagnostic"})),
        entity("binary_sensor", "face_present", "Face present", "state", "{{ 'ON' if value_json.face_present else 'OFF' }}", json!({"device_class": "occupancy"})),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use mien_image::{PixelRect, Rect};
    use mien_pipeline::{FaceResult, StageTimings, SCHEMA};

    fn face(track: u64, label: &str, score: f32) -> FaceResult {
        FaceResult {
            track,
            rect: Rect::new(0.0, 0.0, 10.0, 10.0),
            crop: PixelRect { x: 0, y: 0, width: 10, height: 10 },
            detection_score: 0.9,
            label: label.into(),
            score,
            probabilities: [(label.to_string(), score)].into_iter().collect(),
            frame_label: label.into(),
            frame_score: score,
        }
    }

    fn frame(ms: f64, faces: Vec<FaceResult>, ended: Vec<u64>) -> FrameResult {
        FrameResult {
            schema: SCHEMA,
            kind: "frame",
            source: "t".into(),
            frame: ms as u64,
            timestamp_ms: ms,
            file: None,
            width: 64,
            height: 48,
            faces,
            ended_tracks: ended,
            dropped: 0,
            timings: StageTimings::default(),
        }
    }

    #[test]
    fn durations_survive_any_clock() {
        assert_eq!(since(1000.0, 2500.0), Duration::from_millis(1500));
        assert_eq!(since(2500.0, 1000.0), Duration::ZERO);
        assert_eq!(since(0.0, f64::INFINITY), Duration::MAX);
        assert_eq!(since(-1e308, 1e308), Duration::MAX);
        assert_eq!(since(f64::NAN, 1.0), Duration::ZERO);
        assert_eq!(since(f64::INFINITY, f64::INFINITY), Duration::ZERO);
    }

    #[test]
    fn state_names_the_most_confident_face() {
        let (value, key) = state(&frame(100.0, vec![face(1, "sad", 0.4), face(2, "happy", 0.9)], vec![]));
        assert_eq!(value["faces_present"], 2);
        assert_eq!(value["face_present"], true);
        assert_eq!(value["dominant_expression"], "happy");
        assert_eq!(value["dominant_score"], 0.9);
        assert_eq!(value["faces"][0]["track"], 1);
        assert_eq!(key, "1:sad,2:happy");
        let (empty, key) = state(&frame(200.0, vec![], vec![]));
        assert_eq!((empty["face_present"].as_bool(), empty["dominant_expression"].is_null(), key.as_str()), (Some(false), true, ""));
    }

    #[test]
    fn tracks_appear_change_and_leave() {
        let mut book = TrackBook::default();
        let mut events = Vec::new();
        book.update(&frame(0.0, vec![face(1, "neutral", 0.6)], vec![]), &mut events);
        book.update(&frame(500.0, vec![face(1, "neutral", 0.7)], vec![]), &mut events);
        book.update(&frame(1500.0, vec![face(1, "happy", 0.8)], vec![]), &mut events);
        book.update(&frame(2000.0, vec![], vec![1]), &mut events);
        assert_eq!(
            events,
            vec![
                FaceEvent::Appeared { track: 1, label: "neutral".into(), score: 0.6 },
                FaceEvent::Changed { track: 1, from: "neutral".into(), label: "happy".into(), score: 0.8, duration: Duration::from_millis(1500) },
                FaceEvent::Left { track: 1, label: "happy".into(), duration: Duration::from_millis(1500) },
            ]
        );
        assert_eq!(events[2].to_json()["duration_s"], 1.5);
    }

    #[test]
    fn the_track_book_is_bounded_and_counts_what_it_cannot_follow() {
        let mut book = TrackBook::default();
        let mut events = Vec::new();
        let faces: Vec<FaceResult> = (0..MAX_TRACKS as u64 + 3).map(|t| face(t, "sad", 0.5)).collect();
        book.update(&frame(0.0, faces, vec![]), &mut events);
        assert_eq!((events.len(), book.overflow), (MAX_TRACKS, 3));
        events.clear();
        book.finish(&mut events);
        assert_eq!(events.len(), MAX_TRACKS);
    }

    #[test]
    fn discovery_configs_have_ids_device_and_availability() {
        let configs = discovery("homeassistant", "mien", &DeviceInfo { id: "kiosk-1".into(), model: "vit-s14-fer-int8".into() });
        assert_eq!(configs.len(), 5);
        for (topic, config) in &configs {
            assert!(topic.starts_with("homeassistant/") && topic.ends_with("/config"), "{topic}");
            assert!(config["unique_id"].as_str().unwrap().starts_with("mien_kiosk-1_"));
            assert_eq!(config["availability_topic"], "mien/kiosk-1/availability");
            assert_eq!(config["device"]["identifiers"][0], "mien_kiosk-1");
            assert_eq!(config["device"]["model"], "vit-s14-fer-int8");
            assert!(config["state_topic"].as_str().unwrap().starts_with("mien/kiosk-1/"));
        }
        assert!(configs.iter().any(|(t, _)| t == "homeassistant/binary_sensor/kiosk-1/face_present/config"));
    }
}
