//! The committed BlazeFace plans on real photos (fetched by tools/fetch_test_photos.sh): one face,
//! several faces, none, a face moved within the frame, the minimum face size.
//!
//! Expected face positions were marked by hand on the photos (centres in pixels), independently of
//! the detector's output; a detection matches when its centre is within a third of its size of a mark.

use crate::common;

use mien_detect::{DetectOptions, Face, FaceDetector};
use mien_image::{Rect, RgbImage};
use mien_runtime::RuntimeOptions;

fn load(plan: &str, options: &DetectOptions) -> FaceDetector {
    FaceDetector::load(common::root().join("models/blazeface").join(plan), &RuntimeOptions { threads: 1, ..Default::default() }, options)
        .expect("committed detector plan loads")
}

fn short_range() -> FaceDetector {
    load("blazeface-short.mien", &DetectOptions::default())
}

/// Each mark is matched by exactly one face and each face matches a mark.
fn assert_faces_at(faces: &[Face], marks: &[(f32, f32)], what: &str) {
    assert_eq!(faces.len(), marks.len(), "{what}: {} faces found, {} marked: {faces:?}", faces.len(), marks.len());
    for &(mx, my) in marks {
        let hits: Vec<&Face> = faces
            .iter()
            .filter(|f| {
                let (cx, cy) = f.rect.center();
                (cx - mx).hypot(cy - my) < f.rect.width.max(f.rect.height) / 3.0
            })
            .collect();
        assert_eq!(hits.len(), 1, "{what}: the face marked at ({mx}, {my}) matched {} detections: {faces:?}", hits.len());
    }
}

#[test]
fn one_face_with_keypoints_inside_its_box() {
    let Some(path) = common::photo("one_face_with_keypoints_inside_its_box", "single_face.jpg") else { return };
    let frame = mien_image::open_rgb(&path).unwrap();
    let faces = short_range().detect(&frame).unwrap();
    assert_faces_at(&faces, &[(282.0, 292.0)], "single_face.jpg");
    let face = &faces[0];
    assert!(face.score > 0.8, "score {}", face.score);
    // A head about 200 px wide; the box is face-sized, not head- or frame-sized.
    assert!((150.0..260.0).contains(&face.rect.width), "{:?}", face.rect);
    assert_eq!(face.keypoints.len(), 6);
    let (right_eye, left_eye) = (face.keypoints[0], face.keypoints[1]);
    // Eyes level and apart, inside the box, above the mouth.
    assert!((right_eye.1 - left_eye.1).abs() < 20.0 && left_eye.0 - right_eye.0 > 50.0, "{:?}", face.keypoints);
    for (x, y) in &face.keypoints[..4] {
        assert!(*x > face.rect.x && *x < face.rect.right() && *y > face.rect.y && *y < face.rect.bottom());
    }
    assert!(face.keypoints[3].1 > right_eye.1 + 40.0, "mouth below eyes: {:?}", face.keypoints);
}

#[test]
fn five_faces_in_a_group_photo_with_the_full_range_model() {
    let Some(path) = common::photo("five_faces_in_a_group_photo_with_the_full_range_model", "multi_face.jpg") else { return };
    let frame = mien_image::open_rgb(&path).unwrap();
    let faces = load("blazeface-full.mien", &DetectOptions::default()).detect(&frame).unwrap();
    let marks = [(267.0, 125.0), (363.0, 297.0), (478.0, 263.0), (575.0, 375.0), (730.0, 355.0)];
    assert_faces_at(&faces, &marks, "multi_face.jpg (full range)");
    // Sorted best first.
    assert!(faces.windows(2).all(|w| w[0].score >= w[1].score));
}

#[test]
fn two_faces_side_by_side_with_the_short_range_model() {
    let astronaut = mien_image::open_rgb(common::committed_photo("astronaut.png")).unwrap();
    // The astronaut's head and shoulders twice, in a 640x320 frame.
    let portrait = mien_image::crop_rgb(&astronaut, mien_image::PixelRect { x: 96, y: 0, width: 256, height: 256 });
    let mut frame = RgbImage::from_pixel(640, 320, image::Rgb([40, 40, 40]));
    image::imageops::replace(&mut frame, &portrait, 30, 40);
    image::imageops::replace(&mut frame, &portrait, 350, 20);
    let faces = short_range().detect(&frame).unwrap();
    // The face's centre in astronaut.png is about (224, 127).
    assert_faces_at(&faces, &[(224.0 - 96.0 + 30.0, 127.0 + 40.0), (224.0 - 96.0 + 350.0, 127.0 + 20.0)], "two astronauts");
}

#[test]
fn moving_a_face_moves_its_box_by_the_same_amount() {
    let astronaut = mien_image::open_rgb(common::committed_photo("astronaut.png")).unwrap();
    let portrait = mien_image::crop_rgb(&astronaut, mien_image::PixelRect { x: 96, y: 0, width: 256, height: 256 });
    let detector = short_range();
    let place = |x: i64, y: i64| -> Rect {
        let mut frame = RgbImage::from_pixel(640, 480, image::Rgb([90, 90, 90]));
        image::imageops::replace(&mut frame, &portrait, x, y);
        let faces = detector.detect(&frame).unwrap();
        assert_eq!(faces.len(), 1, "portrait at ({x}, {y}): {faces:?}");
        faces[0].rect
    };
    let a = place(20, 30);
    let b = place(360, 200);
    let (ax, ay) = a.center();
    let (bx, by) = b.center();
    // Within the detector's resolution: one 128-px input pixel is 5 frame pixels here.
    assert!((bx - ax - 340.0).abs() < 10.0 && (by - ay - 170.0).abs() < 10.0, "{a:?} -> {b:?}");
    assert!((a.width - b.width).abs() < 10.0, "{a:?} vs {b:?}");
}

#[test]
fn no_face_in_a_face_free_frame_and_faces_below_the_minimum_size_are_ignored() {
    let detector = short_range();
    let blank = RgbImage::from_pixel(640, 480, image::Rgb([128, 128, 128]));
    assert!(detector.detect(&blank).unwrap().is_empty());
    let gradient = RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x / 3) as u8, (y / 2) as u8, 90]));
    assert!(detector.detect(&gradient).unwrap().is_empty());
    assert!(detector.detect(&RgbImage::new(0, 0)).unwrap().is_empty());

    let astronaut = mien_image::open_rgb(common::committed_photo("astronaut.png")).unwrap();
    let faces = detector.detect(&astronaut).unwrap();
    assert_eq!(faces.len(), 1);
    let size = faces[0].rect.width.max(faces[0].rect.height);
    let strict = load("blazeface-short.mien", &DetectOptions { min_face_px: size + 1.0, ..Default::default() });
    assert!(strict.detect(&astronaut).unwrap().is_empty(), "a {size}-px face passed a {}-px minimum", size + 1.0);
    let lenient = load("blazeface-short.mien", &DetectOptions { min_face_px: size - 1.0, ..Default::default() });
    assert_eq!(lenient.detect(&astronaut).unwrap().len(), 1);
}

#[test]
fn a_classifier_plan_is_not_a_detector() {
    let err = FaceDetector::load(common::tiny_plan(), &RuntimeOptions::default(), &DetectOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a detector plan"), "{err}");
    let err = mien_runtime::Classifier::load(common::detector_plan(), &RuntimeOptions::default()).unwrap_err();
    assert!(err.to_string().contains("detector plan"), "{err}");
}
