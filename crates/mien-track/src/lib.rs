//! Tracking faces across frames: each face keeps an id while it stays in view, its expression
//! probabilities are smoothed (exponential moving average), and its reported label changes only when
//! another label leads clearly (hysteresis), so the output does not flicker from frame to frame.

use std::time::Duration;

use mien_image::Rect;
use serde::Serialize;

/// How faces are associated and smoothed.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// A face continues a track when their boxes overlap by at least this IoU.
    pub min_iou: f32,
    /// Failing that, when its centre is within this fraction of the larger box's side of the track's
    /// (fast movement at low frame rates).
    pub max_center_shift: f32,
    /// Weight of the newest frame in the moving average, in (0, 1]; 1 means no smoothing.
    pub smoothing: f32,
    /// A new label replaces the reported one only when its smoothed probability exceeds the reported
    /// label's by this much.
    pub switch_margin: f32,
    /// A track unseen for longer than this ends.
    pub expire_after: Duration,
    /// Whether frames are a sequence in time. When false (photos of different scenes), nothing carries
    /// over: every face gets a new id and its own probabilities and label, and no track is kept.
    pub across_frames: bool,
}

impl Default for TrackerConfig {
    fn default() -> TrackerConfig {
        TrackerConfig {
            min_iou: 0.3,
            max_center_shift: 0.5,
            smoothing: 0.4,
            switch_margin: 0.1,
            expire_after: Duration::from_millis(1000),
            across_frames: true,
        }
    }
}

/// One classified face in the current frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Where the face is, in frame pixels.
    pub rect: Rect,
    /// The classifier's probabilities for this frame, in label order.
    pub probabilities: Vec<f32>,
}

/// A face's tracked state after an update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackedFace {
    /// Track id, unique for the tracker's lifetime, counting from 1.
    pub id: u64,
    /// Smoothed probabilities, in label order.
    pub probabilities: Vec<f32>,
    /// Index of the reported (hysteresis-held) label.
    pub label: usize,
    /// Frames this track has been seen in, this one included.
    pub frames: u64,
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    rect: Rect,
    probabilities: Vec<f32>,
    label: usize,
    frames: u64,
    last_seen: Duration,
}

/// Associates faces across frames.
#[derive(Debug, Clone)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
    /// Without tracking across frames: the previous frame's ids, which end with the next frame.
    alone: Vec<u64>,
}

/// What an update did.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// One entry per observation, in the order given.
    pub faces: Vec<TrackedFace>,
    /// Ids of tracks that ended in this update (unseen for longer than `expire_after`).
    pub ended: Vec<u64>,
}

fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

impl Tracker {
    /// A tracker with no tracks.
    pub fn new(config: TrackerConfig) -> Tracker {
        Tracker { config, tracks: Vec::new(), next_id: 1, alone: Vec::new() }
    }

    /// Tracks alive now.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// Whether no track is alive.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// How well `rect` continues `track`: IoU-based matches rank above centre-distance ones; `None`
    /// when neither criterion holds.
    fn affinity(&self, track: &Track, rect: &Rect) -> Option<f32> {
        let iou = track.rect.iou(rect);
        if iou >= self.config.min_iou && iou > 0.0 {
            return Some(1.0 + iou);
        }
        let (tx, ty) = track.rect.center();
        let (cx, cy) = rect.center();
        let side = track.rect.width.max(track.rect.height).max(rect.width).max(rect.height);
        let shift = (tx - cx).hypot(ty - cy) / side.max(1.0);
        (shift <= self.config.max_center_shift).then_some(1.0 - shift)
    }

    /// Frames that are not a sequence: each face is reported as classified, under a new id that ends
    /// with the next frame (its photo is over).
    fn each_face_alone(&mut self, observations: &[Observation]) -> Update {
        let ended = std::mem::take(&mut self.alone);
        let faces: Vec<TrackedFace> = observations
            .iter()
            .map(|obs| {
                let id = self.next_id;
                self.next_id += 1;
                TrackedFace { id, probabilities: obs.probabilities.clone(), label: argmax(&obs.probabilities), frames: 1 }
            })
            .collect();
        self.alone.extend(faces.iter().map(|f| f.id));
        Update { faces, ended }
    }

    /// Feeds one frame's faces, taken at `now` (any monotonic clock: capture timestamps or frame times).
    pub fn update(&mut self, observations: &[Observation], now: Duration) -> Update {
        if !self.config.across_frames {
            return self.each_face_alone(observations);
        }
        // Greedy assignment by affinity, best pairs first: with a handful of faces per frame this is
        // what the Hungarian algorithm would choose in all but contrived cases.
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (t, track) in self.tracks.iter().enumerate() {
            for (o, obs) in observations.iter().enumerate() {
                if let Some(a) = self.affinity(track, &obs.rect) {
                    pairs.push((a, t, o));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_of: Vec<Option<usize>> = vec![None; observations.len()];
        let mut taken = vec![false; self.tracks.len()];
        for (_, t, o) in pairs {
            if !taken[t] && track_of[o].is_none() {
                taken[t] = true;
                track_of[o] = Some(t);
            }
        }

        let alpha = self.config.smoothing.clamp(f32::MIN_POSITIVE, 1.0);
        let mut faces = Vec::with_capacity(observations.len());
        for (o, obs) in observations.iter().enumerate() {
            let t = match track_of[o] {
                Some(t) if self.tracks[t].probabilities.len() == obs.probabilities.len() => {
                    let track = &mut self.tracks[t];
                    for (s, p) in track.probabilities.iter_mut().zip(&obs.probabilities) {
                        *s = (1.0 - alpha) * *s + alpha * p;
                    }
                    let best = argmax(&track.probabilities);
                    if track.probabilities[best] >= track.probabilities[track.label] + self.config.switch_margin {
                        track.label = best;
                    }
                    track.rect = obs.rect;
                    track.frames += 1;
                    track.last_seen = now;
                    t
                }
                _ => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        rect: obs.rect,
                        probabilities: obs.probabilities.clone(),
                        label: argmax(&obs.probabilities),
                        frames: 1,
                        last_seen: now,
                    });
                    self.next_id += 1;
                    self.tracks.len() - 1
                }
            };
            let track = &self.tracks[t];
            faces.push(TrackedFace {
                id: track.id,
                probabilities: track.probabilities.clone(),
                label: track.label,
                frames: track.frames,
            });
        }

        let expire_after = self.config.expire_after;
        let mut ended = Vec::new();
        self.tracks.retain(|track| {
            let alive = now.saturating_sub(track.last_seen) <= expire_after;
            if !alive {
                ended.push(track.id);
            }
            alive
        });
        Update { faces, ended }
    }
}

#[cfg(test)]
mod tests;
