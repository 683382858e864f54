use super::*;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn face(x: f32, y: f32, probabilities: &[f32]) -> Observation {
    Observation { rect: Rect::new(x, y, 100.0, 100.0), probabilities: probabilities.to_vec() }
}

const HAPPY: [f32; 3] = [0.1, 0.8, 0.1];
const NEUTRAL: [f32; 3] = [0.1, 0.1, 0.8];

#[test]
fn a_moving_face_keeps_its_id() {
    let mut tracker = Tracker::new(TrackerConfig::default());
    let mut ids = Vec::new();
    for frame in 0..30u64 {
        let update = tracker.update(&[face(frame as f32 * 12.0, 50.0 + frame as f32 * 3.0, &HAPPY)], ms(frame * 100));
        ids.push(update.faces[0].id);
        assert!(update.ended.is_empty());
    }
    assert!(ids.iter().all(|&id| id == 1), "{ids:?}");
    assert_eq!(tracker.len(), 1);
}

#[test]
fn two_faces_keep_their_own_ids_whatever_the_order_they_are_reported_in() {
    let mut tracker = Tracker::new(TrackerConfig::default());
    let first = tracker.update(&[face(0.0, 0.0, &HAPPY), face(300.0, 0.0, &NEUTRAL)], ms(0));
    let (left, right) = (first.faces[0].id, first.faces[1].id);
    assert_ne!(left, right);
    for frame in 1..10u64 {
        let dx = frame as f32 * 5.0;
        // The detector's order changes from frame to frame.
        let update = tracker.update(&[face(300.0 - dx, 0.0, &NEUTRAL), face(dx, 0.0, &HAPPY)], ms(frame * 100));
        assert_eq!((update.faces[0].id, update.faces[1].id), (right, left), "frame {frame}");
    }
}

#[test]
fn fast_moves_without_overlap_continue_by_centre_distance_but_jumps_start_a_new_track() {
    let mut tracker = Tracker::new(TrackerConfig::default());
    let a = tracker.update(&[face(0.0, 0.0, &HAPPY)], ms(0)).faces[0].id;
    // 45 px shift of a 100 px box: IoU 0.38 ≥ 0.3, same track.
    assert_eq!(tracker.update(&[face(45.0, 0.0, &HAPPY)], ms(100)).faces[0].id, a);
    // 60 px more: IoU 0.25 < 0.3 and a centre shift of 0.6 sides > 0.5, so a new track.
    let b = tracker.update(&[face(105.0, 0.0, &HAPPY)], ms(200)).faces[0].id;
    assert_ne!(b, a);
    // With IoU matching made strict, a 45 % centre shift still continues the track.
    let mut tracker = Tracker::new(TrackerConfig { min_iou: 0.9, ..TrackerConfig::default() });
    let c = tracker.update(&[face(0.0, 0.0, &HAPPY)], ms(0)).faces[0].id;
    assert_eq!(tracker.update(&[face(45.0, 0.0, &HAPPY)], ms(100)).faces[0].id, c);
}

#[test]
fn tracks_survive_short_gaps_and_end_when_the_face_leaves() {
    let mut tracker = Tracker::new(TrackerConfig { expire_after: ms(500), ..TrackerConfig::default() });
    let id = tracker.update(&[face(0.0, 0.0, &HAPPY)], ms(0)).faces[0].id;
    // Not detected for 400 ms (a blink, a turned head): still alive.
    assert!(tracker.update(&[], ms(200)).ended.is_empty());
    assert_eq!(tracker.update(&[face(5.0, 0.0, &HAPPY)], ms(400)).faces[0].id, id);
    // Gone for longer than 500 ms: ended, exactly once.
    assert!(tracker.update(&[], ms(900)).ended.is_empty());
    assert_eq!(tracker.update(&[], ms(901)).ended, vec![id]);
    assert!(tracker.is_empty());
    assert!(tracker.update(&[], ms(2000)).ended.is_empty());
    // Coming back starts a new track.
    let back = tracker.update(&[face(5.0, 0.0, &HAPPY)], ms(2100)).faces[0].id;
    assert_ne!(back, id);
}

#[test]
fn smoothing_is_an_exponential_moving_average() {
    let mut tracker = Tracker::new(TrackerConfig { smoothing: 0.25, ..TrackerConfig::default() });
    let first = tracker.update(&[face(0.0, 0.0, &[1.0, 0.0])], ms(0));
    assert_eq!(first.faces[0].probabilities, vec![1.0, 0.0]);
    let second = tracker.update(&[face(0.0, 0.0, &[0.0, 1.0])], ms(100));
    assert_eq!(second.faces[0].probabilities, vec![0.75, 0.25]);
    let third = tracker.update(&[face(0.0, 0.0, &[0.0, 1.0])], ms(200));
    assert_eq!(third.faces[0].probabilities, vec![0.5625, 0.4375]);
    assert_eq!(third.faces[0].frames, 3);
    // No smoothing: the frame's own probabilities.
    let mut raw = Tracker::new(TrackerConfig { smoothing: 1.0, ..TrackerConfig::default() });
    raw.update(&[face(0.0, 0.0, &[1.0, 0.0])], ms(0));
    assert_eq!(raw.update(&[face(0.0, 0.0, &[0.2, 0.8])], ms(1)).faces[0].probabilities, vec![0.2, 0.8]);
}

#[test]
fn hysteresis_holds_the_label_through_noise_and_follows_a_real_change() {
    let config = TrackerConfig { smoothing: 0.5, switch_margin: 0.1, ..TrackerConfig::default() };
    let mut tracker = Tracker::new(config.clone());
    // Noisy frames alternating between two close readings: the label never changes.
    let mut labels = Vec::new();
    for frame in 0..40u64 {
        let p = if frame % 2 == 0 { [0.0, 0.56, 0.44] } else { [0.0, 0.44, 0.56] };
        labels.push(tracker.update(&[face(0.0, 0.0, &p)], ms(frame * 50)).faces[0].label);
    }
    assert!(labels.iter().all(|&l| l == 1), "{labels:?}");

    // Without hysteresis and smoothing the same sequence flickers on every frame.
    let mut twitchy = Tracker::new(TrackerConfig { smoothing: 1.0, switch_margin: 0.0, ..config.clone() });
    let flips = (0..40u64)
        .map(|frame| {
            let p = if frame % 2 == 0 { [0.0, 0.56, 0.44] } else { [0.0, 0.44, 0.56] };
            twitchy.update(&[face(0.0, 0.0, &p)], ms(frame * 50)).faces[0].label
        })
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] != w[1])
        .count();
    assert_eq!(flips, 39);

    // A real change from happy to neutral: smoothed happy after n neutral frames is 0.8 * 0.5^n + 0.1,
    // neutral is 0.8 - 0.7 * 0.5^n; neutral leads by ≥ 0.1 from n = 2 on (0.625 vs 0.3).
    let mut tracker = Tracker::new(config);
    tracker.update(&[face(0.0, 0.0, &HAPPY)], ms(0));
    let after: Vec<usize> =
        (1..=4u64).map(|n| tracker.update(&[face(0.0, 0.0, &NEUTRAL)], ms(n * 50)).faces[0].label).collect();
    assert_eq!(after, vec![1, 2, 2, 2]);
}

#[test]
fn a_face_with_a_different_label_count_starts_a_new_track() {
    let mut tracker = Tracker::new(TrackerConfig::default());
    let a = tracker.update(&[face(0.0, 0.0, &[0.5, 0.5])], ms(0)).faces[0].id;
    let b = tracker.update(&[face(0.0, 0.0, &HAPPY)], ms(10)).faces[0].id;
    assert_ne!(a, b);
}

#[test]
fn frames_that_are_not_a_sequence_carry_nothing_over() {
    let mut tracker = Tracker::new(TrackerConfig { across_frames: false, ..TrackerConfig::default() });
    let first = tracker.update(&[face(0.0, 0.0, &HAPPY)], ms(0));
    // The same place in the next photo: another person, reported as classified, under a new id.
    let second = tracker.update(&[face(0.0, 0.0, &NEUTRAL), face(300.0, 0.0, &HAPPY)], ms(100));
    assert_eq!(first.faces[0].probabilities, HAPPY);
    assert_eq!((second.faces[0].label, second.faces[0].probabilities.as_slice()), (2, &NEUTRAL[..]));
    assert_eq!(second.faces[1].label, 1);
    let ids = [first.faces[0].id, second.faces[0].id, second.faces[1].id];
    assert_eq!(ids, [1, 2, 3]);
    assert!(second.faces.iter().all(|f| f.frames == 1));
    // Each photo's faces end with the next photo.
    assert!(first.ended.is_empty());
    assert_eq!(second.ended, [1]);
    assert_eq!(tracker.update(&[], ms(200)).ended, [2, 3]);
    assert!(tracker.is_empty());
    // The same observations tracked: the second photo's face continues the first's track, smoothed.
    let mut tracking = Tracker::new(TrackerConfig::default());
    tracking.update(&[face(0.0, 0.0, &HAPPY)], ms(0));
    let smoothed = tracking.update(&[face(0.0, 0.0, &NEUTRAL)], ms(100));
    assert_eq!(smoothed.faces[0].id, 1);
    let p = &smoothed.faces[0].probabilities;
    assert!((p[1] - 0.52).abs() < 1e-6 && (p[2] - 0.38).abs() < 1e-6, "smoothed with the first photo: {p:?}");
}
