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

/// `data` in a temporary file (removed when dropped).
fn scratch_file(name: &str, data: &[u8]) -> Option<tempfile::TempPath> {
    let mut file = tempfile::Builder::new().prefix("mien-fuzz-").suffix(name).tempfile().ok()?;
    file.write_all(data).ok()?;
    Some(file.into_temp_path())
}
