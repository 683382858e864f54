//! Video files: YUV4MPEG2 (`.y4m`, what ffmpeg writes with `-f yuv4mpegpipe`), Motion JPEG
//! (`.mjpeg`: JPEGs back to back, `ffmpeg -f mjpeg` or a recording of an MJPEG camera), and raw frames
//! of a known format and size (`ffmpeg -f rawvideo -pix_fmt yuyv422`, `v4l2-ctl --stream-to`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mien_capture::{pixel, FrameLayout, PixelFormat, YuvEncoding, YuvRange};
use mien_image::RgbImage;

use super::{FrameSource, SourceError, SourceEvent, SourceFrame};

fn file_error(path: &Path, message: impl Into<String>) -> SourceError {
    SourceError::File { path: path.to_path_buf(), message: message.into() }
}

/// Frames above mien's pixel limit are refused before a buffer is allocated for them.
fn check_pixels(path: &Path, width: u32, height: u32) -> Result<(), SourceError> {
    if u64::from(width) * u64::from(height) > mien_image::MAX_PIXELS {
        return Err(file_error(
            path,
            format!("{width}x{height} frames are more than the {} megapixels mien decodes", mien_image::MAX_PIXELS / 1_000_000),
        ));
    }
    Ok(())
}

/// Reads whole frames; `Ok(false)` at a clean end of file, an error for a frame cut short.
fn read_frame(reader: &mut impl Read, buffer: &mut [u8], path: &Path, index: u64) -> Result<bool, SourceError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(file_error(
                    path,
                    format!("frame {index} is cut short: {filled} of {} bytes", buffer.len()),
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(file_error(path, e.to_string())),
        }
    }
    Ok(true)
}

/// A file of fixed-size uncompressed frames: what Y4M and raw video share.
#[derive(Debug)]
struct FrameFile {
    path: PathBuf,
    reader: BufReader<File>,
    layout: FrameLayout,
    encoding: YuvEncoding,
    frame_interval: Duration,
    buffer: Vec<u8>,
    next: u64,
    ended: bool,
}

impl FrameFile {
    fn new(
        path: &Path,
        reader: BufReader<File>,
        layout: FrameLayout,
        encoding: YuvEncoding,
        frame_interval: Duration,
    ) -> FrameFile {
        FrameFile {
            path: path.to_path_buf(),
            reader,
            layout,
            encoding,
            frame_interval,
            buffer: vec![0; layout.required_len()],
            next: 0,
            ended: false,
        }
    }

    /// Reads the next frame's bytes; `Ok(false)` at a clean end of file.
    fn read(&mut self) -> Result<bool, SourceError> {
        let read = read_frame(&mut self.reader, &mut self.buffer, &self.path, self.next);
        if !matches!(read, Ok(true)) {
            self.ended = true;
        }
        read
    }

    /// The frame just read, in RGB.
    fn frame(&mut self) -> Result<SourceEvent, SourceError> {
        let index = self.next;
        self.next += 1;
        let mut image = RgbImage::new(0, 0);
        pixel::to_rgb(&self.layout, self.encoding, &self.buffer, &mut image)
            .map_err(|e| file_error(&self.path, e.to_string()))?;
        Ok(SourceEvent::Frame(SourceFrame { image, index, timestamp: self.frame_interval * index as u32, file: None }))
    }
}

/// A YUV4MPEG2 file, 4:2:0 (any chroma siting) or mono.
#[derive(Debug)]
pub struct Y4mSource {
    frames: FrameFile,
}

impl Y4mSource {
    /// Opens a file and reads its header.
    pub fn open(path: &Path) -> Result<Y4mSource, SourceError> {
        let file = File::open(path).map_err(|e| file_error(path, e.to_string()))?;
        let mut reader = BufReader::new(file);
        // The header line is short; a file without a newline near its start is not Y4M (and is not read
        // whole into memory to find out).
        let mut header = Vec::new();
        (&mut reader).take(4096).read_until(b'\n', &mut header).map_err(|e| file_error(path, e.to_string()))?;
        let header = String::from_utf8_lossy(&header);
        let mut fields = header.trim_end().split(' ');
        if fields.next() != Some("YUV4MPEG2") {
            return Err(file_error(path, "not a YUV4MPEG2 file (expected the header `YUV4MPEG2 W.. H.. ...`)"));
        }
        let (mut width, mut height, mut fps, mut format, mut range) =
            (0u32, 0u32, (25u32, 1u32), PixelFormat::Yu12, YuvRange::Limited);
        for field in fields.filter(|f| !f.is_empty()) {
            // The tag is the first character, whatever its width (found by fuzzing: a multi-byte one).
            let (tag, value) = field.split_at(field.chars().next().map_or(0, char::len_utf8));
            let bad = |what: &str| file_error(path, format!("header field `{field}`: expected {what}"));
            match tag {
                "W" => width = value.parse().map_err(|_| bad("a width"))?,
                "H" => height = value.parse().map_err(|_| bad("a height"))?,
                "F" => {
                    let (n, d) = value.split_once(':').ok_or_else(|| bad("a frame rate N:D"))?;
                    fps = (
                        n.parse().map_err(|_| bad("a frame rate N:D"))?,
                        d.parse().map_err(|_| bad("a frame rate N:D"))?,
                    );
                }
                "C" => {
                    format = match value {
                        "420" | "420jpeg" | "420paldv" | "420mpeg2" => PixelFormat::Yu12,
                        "mono" => PixelFormat::Grey,
                        _ => return Err(bad("colour space 420, 420jpeg, 420mpeg2, 420paldv or mono")),
                    }
                }
                "X" if value == "COLORRANGE=FULL" => range = YuvRange::Full,
                _ => {}
            }
        }
        if width == 0 || height == 0 || fps.0 == 0 || fps.1 == 0 {
            return Err(file_error(path, "header lacks a width (W), height (H) or a non-zero frame rate (F)"));
        }
        check_pixels(path, width, height)?;
        check_pixels(path, width, height)?;
        let layout = FrameLayout::packed(format, width, height);
        layout.check(usize::MAX).map_err(|e| file_error(path, e.to_string()))?;
        let encoding = YuvEncoding { range, ..YuvEncoding::default() };
        let interval = Duration::from_secs_f64(f64::from(fps.1) / f64::from(fps.0));
        Ok(Y4mSource { frames: FrameFile::new(path, reader, layout, encoding, interval) })
    }
}

impl FrameSource for Y4mSource {
    fn describe(&self) -> String {
        let f = &self.frames;
        let fps = 1.0 / f.frame_interval.as_secs_f64();
        format!("{} (Y4M {} {}x{}, {fps:.2} fps)", f.path.display(), f.layout.format, f.layout.width, f.layout.height)
    }

    fn next_event(&mut self, _stop: &AtomicBool) -> Result<SourceEvent, SourceError> {
        let f = &mut self.frames;
        if f.ended {
            return Ok(SourceEvent::End);
        }
        let mut marker = Vec::new();
        f.reader.read_until(b'\n', &mut marker).map_err(|e| file_error(&f.path, e.to_string()))?;
        if marker.is_empty() {
            f.ended = true;
            return Ok(SourceEvent::End);
        }
        if !marker.starts_with(b"FRAME") {
            f.ended = true;
            return Err(file_error(&f.path, format!("frame {}: expected a FRAME marker", f.next)));
        }
        if !f.read()? {
            return Err(file_error(&f.path, format!("frame {} has a FRAME marker but no data", f.next)));
        }
        f.frame()
    }
}

/// Frames of one uncompressed format and size, back to back.
#[derive(Debug)]
pub struct RawVideoSource {
    frames: FrameFile,
}

impl RawVideoSource {
    /// Opens `path` as frames of `format` at `width` x `height` (tight rows), timed at `fps`.
    pub fn open(
        path: &Path,
        format: PixelFormat,
        width: u32,
        height: u32,
        fps: f64,
    ) -> Result<RawVideoSource, SourceError> {
        if format.is_compressed() {
            return Err(file_error(path, format!("raw video cannot be {format}; expected an uncompressed format")));
        }
        check_pixels(path, width, height)?;
        let layout = FrameLayout::packed(format, width, height);
        layout.check(usize::MAX).map_err(|e| file_error(path, e.to_string()))?;
        let file = File::open(path).map_err(|e| file_error(path, e.to_string()))?;
        let frame_len = layout.required_len() as u64;
        let file_len = file.metadata().map_err(|e| file_error(path, e.to_string()))?.len();
        if file_len % frame_len != 0 {
            tracing::warn!(
                "{}: {file_len} bytes is not a whole number of {frame_len}-byte {format} {width}x{height} frames",
                path.display()
            );
        }
        let interval = Duration::from_secs_f64(1.0 / fps.max(0.001));
        Ok(RawVideoSource {
            frames: FrameFile::new(path, BufReader::new(file), layout, YuvEncoding::default(), interval),
        })
    }
}

impl FrameSource for RawVideoSource {
    fn describe(&self) -> String {
        let f = &self.frames;
        format!("{} (raw {} {}x{})", f.path.display(), f.layout.format, f.layout.width, f.layout.height)
    }

    fn next_event(&mut self, _stop: &AtomicBool) -> Result<SourceEvent, SourceError> {
        if self.frames.ended {
            return Ok(SourceEvent::End);
        }
        match self.frames.read() {
            Ok(true) => self.frames.frame(),
            Ok(false) => Ok(SourceEvent::End),
            // A cut-off last frame (a recording stopped mid-write) is reported, not fatal.
            Err(e) => Ok(SourceEvent::Skipped { reason: e.to_string() }),
        }
    }
}

/// Motion JPEG recordings: JPEG frames back to back (`ffmpeg -f mjpeg`, `v4l2-ctl --stream-to` of an
/// MJPEG camera). Frames are split at their start-of-image markers; one that does not decode is
/// skipped and counted, as a camera's corrupt frame would be.
#[derive(Debug)]
pub struct MjpegFileSource {
    path: PathBuf,
    reader: BufReader<File>,
    frame_interval: Duration,
    /// Bytes read past the current frame: the start of the next one.
    pending: Vec<u8>,
    next: u64,
    ended: bool,
}

impl MjpegFileSource {
    /// Opens `path`, timed at `fps`.
    pub fn open(path: &Path, fps: f64) -> Result<MjpegFileSource, SourceError> {
        let file = File::open(path).map_err(|e| file_error(path, e.to_string()))?;
        let mut reader = BufReader::new(file);
        let mut head = [0u8; 2];
        reader.read_exact(&mut head).map_err(|_| file_error(path, "too short to be Motion JPEG"))?;
        if head != [0xFF, 0xD8] {
            return Err(file_error(path, "not Motion JPEG (expected a JPEG start-of-image marker FF D8 first)"));
        }
        Ok(MjpegFileSource {
            path: path.to_path_buf(),
            reader,
            frame_interval: Duration::from_secs_f64(1.0 / fps.max(0.001)),
            pending: head.to_vec(),
            next: 0,
            ended: false,
        })
    }

    /// The next frame's bytes: from one FF D8 up to the next FF D8 that follows an FF D9 (end of
    /// image), or the end of the file.
    fn next_jpeg(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        let mut frame = std::mem::take(&mut self.pending);
        if frame.is_empty() {
            return Ok(None);
        }
        let mut chunk = [0u8; 64 * 1024];
        let mut scanned: usize = 2;
        loop {
            // A new image starts at FF D8 right after an FF D9.
            if let Some(at) = frame[scanned.saturating_sub(3)..]
                .windows(4)
                .position(|w| w == [0xFF, 0xD9, 0xFF, 0xD8])
                .map(|p| p + scanned.saturating_sub(3))
            {
                self.pending = frame.split_off(at + 2);
                return Ok(Some(frame));
            }
            scanned = frame.len();
            let n = self.reader.read(&mut chunk).map_err(|e| file_error(&self.path, e.to_string()))?;
            if n == 0 {
                return Ok(Some(frame));
            }
            frame.extend_from_slice(&chunk[..n]);
        }
    }
}

impl FrameSource for MjpegFileSource {
    fn describe(&self) -> String {
        format!("{} (Motion JPEG)", self.path.display())
    }

    fn next_event(&mut self, _stop: &AtomicBool) -> Result<SourceEvent, SourceError> {
        if self.ended {
            return Ok(SourceEvent::End);
        }
        let Some(jpeg) = self.next_jpeg()? else {
            self.ended = true;
            return Ok(SourceEvent::End);
        };
        let index = self.next;
        self.next += 1;
        match mien_image::decode_rgb(&jpeg) {
            Ok(image) => Ok(SourceEvent::Frame(SourceFrame {
                image,
                index,
                timestamp: self.frame_interval * index as u32,
                file: None,
            })),
            Err(e) => Ok(SourceEvent::Skipped { reason: format!("{}: frame {index}: {e}", self.path.display()) }),
        }
    }
}
