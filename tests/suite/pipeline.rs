//! The pipeline end to end on sequences built from a real photo: a face moving through a Y4M video
//! keeps one track; a face that leaves ends its track; raw YUYV video and image files give the same
//! faces; a corrupt frame in a Motion JPEG file is skipped and counted; unreadable inputs are reported;
//! JSON lines follow the mien.run/1 schema.

use crate::common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use image::RgbImage;
use mien_capture::pixel::scalar::from_rgb;
use mien_capture::{PixelFormat, YuvEncoding};
use mien_detect::{DetectOptions, FaceDetector};
use mien_pipeline::sink::{JsonLinesSink, Notice, Sink};
use mien_pipeline::source::{ImageSource, MjpegFileSource, RawVideoSource, Y4mSource};
use mien_pipeline::{FrameResult, Pipeline, PipelineConfig, RunOptions, RunSummary};
use mien_runtime::{Classifier, RuntimeOptions};
use mien_track::TrackerConfig;

#[derive(Default)]
struct Collect {
    frames: Vec<FrameResult>,
    notices: Vec<Notice>,
    summary: Option<RunSummary>,
}

impl Sink for Collect {
    fn frame(&mut self, result: &FrameResult) -> std::io::Result<()> {
        self.frames.push(result.clone());
        Ok(())
    }
    fn notice(&mut self, notice: &Notice) -> std::io::Result<()> {
        self.notices.push(notice.clone());
        Ok(())
    }
    fn finish(&mut self, summary: &RunSummary) -> std::io::Result<()> {
        self.summary = Some(summary.clone());
        Ok(())
    }
}

fn pipeline(config: PipelineConfig) -> Pipeline {
    let runtime = RuntimeOptions { threads: 1, ..Default::default() };
    let detector = FaceDetector::load(common::detector_plan(), &runtime, &DetectOptions::default()).unwrap();
    // The tiny ViT: tracking and plumbing do not depend on what the classifier says.
    let classifier = Classifier::load(common::tiny_plan(), &runtime).unwrap();
    Pipeline::new(detector, classifier, config).unwrap()
}

/// The astronaut's head and shoulders (256x256) pasted into a grey 640x480 frame at (x, y); `None`
/// gives an empty frame.
fn frame_with_face(portrait: &RgbImage, at: Option<(i64, i64)>) -> RgbImage {
    let mut frame = RgbImage::from_pixel(640, 480, image::Rgb([96, 96, 96]));
    if let Some((x, y)) = at {
        image::imageops::replace(&mut frame, portrait, x, y);
    }
    frame
}

fn portrait() -> RgbImage {
    let astronaut = mien_image::open_rgb(common::committed_photo("astronaut.png")).unwrap();
    mien_image::crop_rgb(&astronaut, mien_image::PixelRect { x: 96, y: 0, width: 256, height: 256 })
}

fn write_y4m(path: &Path, frames: &[RgbImage]) {
    let (w, h) = frames[0].dimensions();
    let mut bytes = format!("YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n").into_bytes();
    for frame in frames {
        bytes.extend_from_slice(b"FRAME\n");
        bytes.extend(from_rgb(frame, PixelFormat::Yu12, YuvEncoding::default()));
    }
    std::fs::write(path, bytes).unwrap();
}

fn run(source: &mut dyn mien_pipeline::source::FrameSource, pipeline: &mut Pipeline) -> Collect {
    let mut collect = Collect::default();
    mien_pipeline::run(source, pipeline, &mut [&mut collect], &RunOptions::default(), &AtomicBool::new(false)).unwrap();
    collect
}

#[test]
fn a_face_moving_through_a_y4m_video_keeps_one_track() {
    let portrait = portrait();
    let frames: Vec<RgbImage> = (0..10).map(|i| frame_with_face(&portrait, Some((20 + 30 * i, 100 + 5 * i)))).collect();
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("moving.y4m");
    write_y4m(&video, &frames);
    let mut source = Y4mSource::open(&video).unwrap();
    let collect = run(&mut source, &mut pipeline(PipelineConfig::default()));
    assert_eq!(collect.frames.len(), 10);
    let tracks: Vec<u64> = collect.frames.iter().map(|f| {
        assert_eq!(f.faces.len(), 1, "frame {}: {:?}", f.frame, f.faces);
        f.faces[0].track
    }).collect();
    assert!(tracks.iter().all(|&t| t == tracks[0]), "track ids changed: {tracks:?}");
    // Boxes follow the face: 30 px right and 5 px down per frame.
    for pair in collect.frames.windows(2) {
        let (a, b) = (pair[0].faces[0].rect.center(), pair[1].faces[0].rect.center());
        assert!((b.0 - a.0 - 30.0).abs() < 8.0 && (b.1 - a.1 - 5.0).abs() < 8.0, "{a:?} -> {b:?}");
    }
    // 10 fps timeline.
    assert_eq!(collect.frames[3].timestamp_ms, 300.0);
    let summary = collect.summary.unwrap();
    assert_eq!((summary.frames, summary.faces, summary.tracks), (10, 10, 1));
    assert_eq!(summary.stopped_by, "end of source");
}

#[test]
fn a_face_that_leaves_ends_its_track_and_comes_back_as_a_new_one() {
    let portrait = portrait();
    let dir = tempfile::tempdir().unwrap();
    // Frames 0-2: face; 3-8: none (600 ms at 10 fps); 9-10: the face again.
    let layout: Vec<Option<(i64, i64)>> =
        (0..11).map(|i| if (3..9).contains(&i) { None } else { Some((200, 100)) }).collect();
    let mut files = Vec::new();
    for (i, at) in layout.iter().enumerate() {
        let path = dir.path().join(format!("frame{i:02}.png"));
        frame_with_face(&portrait, *at).save(&path).unwrap();
        files.push(path);
    }
    let config = PipelineConfig {
        tracker: TrackerConfig { expire_after: Duration::from_millis(300), ..TrackerConfig::default() },
        ..PipelineConfig::default()
    };
    let mut source = ImageSource::files(files, "test frames".into());
    let collect = run(&mut source, &mut pipeline(config));
    let first = collect.frames[0].faces[0].track;
    for f in &collect.frames[3..9] {
        assert!(f.faces.is_empty(), "frame {} should have no face", f.frame);
    }
    // Last seen at 200 ms; unseen for more than 300 ms at 600 ms (frame 6).
    let ended_at: Vec<u64> = collect.frames.iter().filter(|f| f.ended_tracks.contains(&first)).map(|f| f.frame).collect();
    assert_eq!(ended_at, vec![6]);
    let back = collect.frames[9].faces[0].track;
    assert_ne!(back, first);
    assert_eq!(collect.frames[10].faces[0].track, back);
    assert_eq!(collect.summary.unwrap().frames_without_faces, 6);
}

#[test]
fn raw_yuyv_video_finds_the_faces_the_images_show() {
    let portrait = portrait();
    let frames: Vec<RgbImage> = [Some((40, 60)), None, Some((300, 200))].iter().map(|at| frame_with_face(&portrait, *at)).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut raw = Vec::new();
    let mut files = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        raw.extend(from_rgb(frame, PixelFormat::Yuyv, YuvEncoding::default()));
        let path = dir.path().join(format!("{i}.png"));
        frame.save(&path).unwrap();
        files.push(path);
    }
    // A recording cut off mid-frame: the partial frame is reported, not processed.
    raw.extend_from_slice(&[16u8; 1000]);
    let video = dir.path().join("clip.yuyv");
    std::fs::write(&video, &raw).unwrap();

    let mut from_video = RawVideoSource::open(&video, PixelFormat::Yuyv, 640, 480, 10.0).unwrap();
    let video_run = run(&mut from_video, &mut pipeline(PipelineConfig::default()));
    let mut from_images = ImageSource::files(files, "pngs".into());
    let image_run = run(&mut from_images, &mut pipeline(PipelineConfig::default()));
    assert_eq!(video_run.frames.len(), 3);
    assert_eq!(video_run.summary.as_ref().unwrap().skipped, 1);
    assert!(matches!(&video_run.notices[0], Notice::Skipped { reason } if reason.contains("cut short")), "{:?}", video_run.notices);
    for (v, i) in video_run.frames.iter().zip(&image_run.frames) {
        assert_eq!(v.faces.len(), i.faces.len(), "frame {}", v.frame);
        for (a, b) in v.faces.iter().zip(&i.faces) {
            let (ac, bc) = (a.rect.center(), b.rect.center());
            assert!((ac.0 - bc.0).abs() < 4.0 && (ac.1 - bc.1).abs() < 4.0, "{:?} vs {:?}", a.rect, b.rect);
        }
    }
    assert_eq!(video_run.frames.iter().map(|f| f.faces.len()).collect::<Vec<_>>(), vec![1, 0, 1]);
}

#[test]
fn unreadable_images_are_reported_and_json_lines_follow_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    RgbImage::from_pixel(64, 48, image::Rgb([10, 20, 30])).save(dir.path().join("a.png")).unwrap();
    std::fs::write(dir.path().join("b.jpg"), b"not a jpeg").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored: not an image name").unwrap();
    let mut source = ImageSource::folder(dir.path()).unwrap();
    let mut out = Vec::new();
    {
        let mut sink = JsonLinesSink::new(&mut out);
        mien_pipeline::run(&mut source, &mut pipeline(PipelineConfig::default()), &mut [&mut sink], &RunOptions::default(), &AtomicBool::new(false))
            .unwrap();
    }
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["frame", "notice", "summary"]);
    assert!(lines.iter().all(|l| l["schema"] == "mien.run/1"));
    let frame = &lines[0];
    assert_eq!(frame["faces"], serde_json::json!([]), "no face is reported as an empty list");
    for field in ["source", "frame", "timestamp_ms", "width", "height", "dropped", "timings", "ended_tracks"] {
        assert!(frame.get(field).is_some(), "frame line lacks {field}: {frame}");
    }
    assert_eq!(lines[1]["event"], "skipped");
    assert!(lines[1]["reason"].as_str().unwrap().contains("b.jpg"), "{}", lines[1]);
    assert_eq!(lines[2]["skipped"], 1);
    assert_eq!(lines[2]["frames"], 1);

    let empty = tempfile::tempdir().unwrap();
    let err = ImageSource::folder(empty.path()).unwrap_err().to_string();
    assert!(err.contains("no image files"), "{err}");
}

#[test]
fn a_corrupt_frame_in_motion_jpeg_is_skipped_and_counted() {
    let portrait = portrait();
    let jpeg = |at: Option<(i64, i64)>| {
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
            .encode_image(&frame_with_face(&portrait, at))
            .unwrap();
        bytes
    };
    // Frame 1 is what a glitching camera sends: a start and end marker around noise, no frame header.
    let mut corrupt = vec![0xFF, 0xD8];
    corrupt.extend((0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 & 0x7F));
    corrupt.extend([0xFF, 0xD9]);
    let mut stream = Vec::new();
    for frame in [jpeg(Some((100, 80))), corrupt, jpeg(Some((110, 80))), jpeg(None)] {
        stream.extend(frame);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mjpeg");
    std::fs::write(&path, &stream).unwrap();

    let mut source = MjpegFileSource::open(&path, 10.0).unwrap();
    let collect = run(&mut source, &mut pipeline(PipelineConfig::default()));
    let faces: Vec<(u64, usize)> = collect.frames.iter().map(|f| (f.frame, f.faces.len())).collect();
    assert_eq!(faces, vec![(0, 1), (2, 1), (3, 0)], "frames and their face counts");
    assert_eq!(collect.frames[0].faces[0].track, collect.frames[1].faces[0].track, "one person across the glitch");
    assert!(
        matches!(&collect.notices[..], [Notice::Skipped { reason }] if reason.contains("frame 1")),
        "{:?}",
        collect.notices
    );
    let summary = collect.summary.unwrap();
    assert_eq!((summary.frames, summary.skipped), (3, 1));

    std::fs::write(&path, b"GIF89a").unwrap();
    let err = MjpegFileSource::open(&path, 10.0).unwrap_err().to_string();
    assert!(err.contains("not Motion JPEG"), "{err}");
}

/// Found by fuzzing: a Y4M header field starting with a multi-byte character panicked (a split inside
/// the character); a header without a newline was read whole.
#[test]
fn y4m_headers_nobody_planned_for_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // (file, contents, whether opening must fail): an unknown field is ignored, as the format says.
    let cases: [(&str, &[u8], bool); 3] = [
        ("multibyte.y4m", "YUV4MPEG2 W16 H8 \u{b4}\u{b4}\u{b4}\nFRAME\n".as_bytes(), false),
        ("no-newline.y4m", &[b'Y'; 10_000], true),
        ("huge.y4m", b"YUV4MPEG2 W60000 H60000 F10:1\nFRAME\n", true),
    ];
    for (name, bytes, must_fail) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let opened = std::panic::catch_unwind(|| Y4mSource::open(&path).is_err());
        assert_eq!(opened.ok(), Some(must_fail), "{name}: a panic, or the wrong outcome");
    }
}
