//! Opening a camera, negotiating its format, and streaming frames from mmap buffers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use image::RgbImage;
use serde::Serialize;
use v4l::buffer::Type;
use v4l::format::{Colorspace, Quantization};
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use crate::device::{fourcc_string, fps_of, is_streaming_capture, video_nodes};
use crate::pixel::{self, FrameLayout, PixelFormat, YuvEncoding, YuvMatrix, YuvRange};
use crate::CaptureError;

/// What to open and how to configure it. Unset fields keep the device's own choice.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    /// A device node path (`/dev/video2`) or a case-insensitive substring of the device's name
    /// (`"C920"`). `None`: the first node that captures in a format mien converts.
    pub device: Option<String>,
    /// Pixel format; `None`: the first of [`PixelFormat::ALL`] the device offers.
    pub format: Option<PixelFormat>,
    /// Frame size (width, height); drivers may pick the nearest size they support.
    pub size: Option<(u32, u32)>,
    /// Frame rate; drivers may pick the nearest rate they support.
    pub fps: Option<u32>,
    /// Number of mmap buffers (the driver may change it).
    pub buffers: u32,
    /// How long one dequeue may wait for a frame.
    pub timeout: Duration,
}

impl Default for CaptureRequest {
    fn default() -> Self {
        CaptureRequest { device: None, format: None, size: None, fps: None, buffers: 4, timeout: Duration::from_secs(5) }
    }
}

/// What was negotiated with the device.
#[derive(Debug, Clone, Serialize)]
pub struct CameraInfo {
    /// Device node.
    pub path: PathBuf,
    /// Device name.
    pub name: String,
    /// Kernel driver.
    pub driver: String,
    /// The frame layout the driver accepted.
    pub layout: FrameLayout,
    /// The YUV encoding the driver reports (ignored for RGB and GREY formats).
    pub encoding: YuvEncoding,
    /// The frame rate the driver accepted, when it reports one.
    pub fps: Option<f64>,
}

/// One captured frame, borrowed from the driver's buffer until the next dequeue.
pub struct Frame<'a> {
    /// The frame's bytes as the driver filled them.
    pub data: &'a [u8],
    /// Its layout.
    pub layout: FrameLayout,
    /// Its YUV encoding.
    pub encoding: YuvEncoding,
    /// The driver's sequence number (gaps are dropped frames).
    pub sequence: u32,
    /// The driver's capture timestamp (monotonic clock on most drivers).
    pub timestamp: Duration,
}

impl Frame<'_> {
    /// Converts the frame to RGB into `out` (reallocated only when the size changes).
    pub fn to_rgb(&self, out: &mut RgbImage) -> Result<(), crate::PixelError> {
        pixel::to_rgb(&self.layout, self.encoding, self.data, out)
    }
}

/// A streaming V4L2 capture device.
pub struct Camera {
    info: CameraInfo,
    stream: Stream<'static>,
    timeout: Duration,
    last_sequence: Option<u32>,
    dropped: u64,
    frames: u64,
    /// A dequeue timed out: v4l's `next()` would re-queue a buffer the driver still holds, so the next
    /// call first takes one buffer back.
    resync: bool,
}

impl Camera {
    /// Opens and configures a device, and allocates its buffers. Streaming starts on the first
    /// [`Camera::next_frame`].
    pub fn open(request: &CaptureRequest) -> Result<Camera, CaptureError> {
        let (path, device) = select(request)?;
        configure(&path, device, request)
    }

    /// What was negotiated.
    pub fn info(&self) -> &CameraInfo {
        &self.info
    }

    /// Frames the driver produced that this camera never handed out (gaps in sequence numbers).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Frames handed out so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Waits (at most the request's timeout) for the next frame.
    pub fn next_frame(&mut self) -> Result<Frame<'_>, CaptureError> {
        let path = &self.info.path;
        let timeout_ms = self.timeout.as_millis() as u64;
        let stream_error = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::TimedOut {
                CaptureError::Timeout { path: path.clone(), timeout_ms }
            } else {
                CaptureError::Stream { path: path.clone(), cause: source }
            }
        };
        if self.resync {
            CaptureStream::dequeue(&mut self.stream).map_err(stream_error)?;
            self.resync = false;
        }
        let (data, meta) = match CaptureStream::next(&mut self.stream) {
            Ok(frame) => frame,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    self.resync = true;
                }
                return Err(stream_error(e));
            }
        };
        if let Some(last) = self.last_sequence {
            self.dropped += frames_skipped(last, meta.sequence);
        }
        self.last_sequence = Some(meta.sequence);
        self.frames += 1;
        let used = if meta.bytesused > 0 { (meta.bytesused as usize).min(data.len()) } else { data.len() };
        let data = &data[..used];
        let layout = self.info.layout;
        layout.check(data.len()).map_err(|problem| CaptureError::BadFrame {
            path: path.clone(),
            sequence: meta.sequence,
            problem,
        })?;
        let timestamp = Duration::from_secs(meta.timestamp.sec.max(0) as u64)
            + Duration::from_micros(meta.timestamp.usec.max(0) as u64);
        Ok(Frame { data, layout, encoding: self.info.encoding, sequence: meta.sequence, timestamp })
    }
}

fn open_node(path: &Path) -> Result<(Device, v4l::Capabilities), CaptureError> {
    let device = Device::with_path(path).map_err(|source| CaptureError::Open { path: path.to_path_buf(), cause: source })?;
    let caps = device.query_caps().map_err(|source| {
        // ENOTTY: the ioctl is not one this node's driver knows, so it is no V4L2 device.
        if source.raw_os_error() == Some(25) {
            CaptureError::NotV4l2 { path: path.to_path_buf() }
        } else {
            CaptureError::Configure { path: path.to_path_buf(), what: "VIDIOC_QUERYCAP", cause: source }
        }
    })?;
    Ok((device, caps))
}

fn offered_formats(path: &Path, device: &Device) -> Result<Vec<FourCC>, CaptureError> {
    let formats = device
        .enum_formats()
        .map_err(|source| CaptureError::Configure { path: path.to_path_buf(), what: "VIDIOC_ENUM_FMT", cause: source })?;
    Ok(formats.into_iter().map(|f| f.fourcc).collect())
}

/// Finds the device the request names, or the first usable one.
fn select(request: &CaptureRequest) -> Result<(PathBuf, Device), CaptureError> {
    let wanted = request.device.as_deref();
    if let Some(path) = wanted.filter(|d| d.contains('/')) {
        let path = PathBuf::from(path);
        let (device, caps) = open_node(&path)?;
        if !is_streaming_capture(caps.capabilities) {
            return Err(CaptureError::NotCapture { path, card: caps.card });
        }
        return Ok((path, device));
    }
    let nodes = video_nodes();
    if nodes.is_empty() {
        return Err(CaptureError::NoDevices);
    }
    let mut checked = Vec::new();
    let mut capture_names = Vec::new();
    for path in nodes {
        let (device, caps) = match open_node(&path) {
            Ok(opened) => opened,
            Err(e) => {
                checked.push(format!("{} ({e})", path.display()));
                continue;
            }
        };
        if !is_streaming_capture(caps.capabilities) {
            checked.push(format!("{} (`{}`: not video capture)", path.display(), caps.card));
            continue;
        }
        capture_names.push(format!("{} `{}`", path.display(), caps.card));
        if let Some(name) = wanted {
            if caps.card.to_lowercase().contains(&name.to_lowercase()) {
                tracing::info!("{}: `{}` matches `{name}`", path.display(), caps.card);
                return Ok((path, device));
            }
            continue;
        }
        let offered = offered_formats(&path, &device)?;
        if offered.iter().any(|f| PixelFormat::from_fourcc(f.repr).is_some()) {
            tracing::info!("{}: using `{}`, the first capture device with a format mien reads", path.display(), caps.card);
            return Ok((path, device));
        }
        let names: Vec<String> = offered.into_iter().map(fourcc_string).collect();
        checked.push(format!("{} (`{}`: only {})", path.display(), caps.card, names.join("/")));
    }
    match wanted {
        Some(name) => Err(CaptureError::NoMatch { name: name.to_string(), available: capture_names }),
        None => Err(CaptureError::NoCaptureDevice { checked }),
    }
}

/// The YUV encoding V4L2 reports, with its documented defaults: BT.709 for Rec. 709 colorspace, full
/// range for JPEG colorspace or explicit full-range quantisation, BT.601 limited otherwise.
fn encoding_of(format: &v4l::Format) -> YuvEncoding {
    let matrix = if matches!(format.colorspace, Colorspace::Rec709) { YuvMatrix::Bt709 } else { YuvMatrix::Bt601 };
    let range = match format.quantization {
        Quantization::FullRange => YuvRange::Full,
        Quantization::LimitedRange => YuvRange::Limited,
        _ if matches!(format.colorspace, Colorspace::JPEG) => YuvRange::Full,
        _ => YuvRange::Limited,
    };
    YuvEncoding { matrix, range }
}

fn configure(path: &Path, device: Device, request: &CaptureRequest) -> Result<Camera, CaptureError> {
    let failed = |what: &'static str| move |cause| CaptureError::Configure { path: path.to_path_buf(), what, cause };
    let caps = device.query_caps().map_err(failed("VIDIOC_QUERYCAP"))?;
    let offered = offered_formats(path, &device)?;
    let offered_names = || offered.iter().copied().map(fourcc_string).collect::<Vec<_>>();
    let format = match request.format {
        Some(wanted) => {
            if !offered.iter().any(|f| f.repr == wanted.fourcc()) {
                return Err(CaptureError::FormatUnsupported {
                    path: path.to_path_buf(),
                    requested: wanted,
                    offered: offered_names(),
                });
            }
            wanted
        }
        None => PixelFormat::ALL
            .into_iter()
            .find(|f| offered.iter().any(|o| o.repr == f.fourcc()))
            .ok_or_else(|| CaptureError::NoUsableFormat { path: path.to_path_buf(), offered: offered_names() })?,
    };
    let mut wanted = device.format().map_err(failed("VIDIOC_G_FMT"))?;
    wanted.fourcc = FourCC::new(&format.fourcc());
    if let Some((width, height)) = request.size {
        wanted.width = width;
        wanted.height = height;
    }
    // Let the driver compute stride and image size for the new format.
    wanted.stride = 0;
    wanted.size = 0;
    let actual = device.set_format(&wanted).map_err(failed("VIDIOC_S_FMT"))?;
    if actual.fourcc.repr != format.fourcc() {
        return Err(CaptureError::FormatUnsupported {
            path: path.to_path_buf(),
            requested: format,
            offered: offered_names(),
        });
    }
    if let Some((width, height)) = request.size {
        if (actual.width, actual.height) != (width, height) {
            tracing::warn!(
                "{}: asked for {width}x{height}, the driver chose {}x{}",
                path.display(),
                actual.width,
                actual.height
            );
        }
    }
    let fps = match request.fps {
        Some(rate) => {
            let params = device.set_params(&Parameters::with_fps(rate)).map_err(failed("VIDIOC_S_PARM"))?;
            fps_of(params.interval)
        }
        None => device.params().ok().and_then(|p| fps_of(p.interval)),
    };
    let stride = if actual.stride > 0 { actual.stride } else { actual.width * format.bytes_per_pixel() as u32 };
    let layout = FrameLayout { format, width: actual.width, height: actual.height, stride };
    let mut stream =
        Stream::with_buffers(&device, Type::VideoCapture, request.buffers.max(2)).map_err(failed("VIDIOC_REQBUFS"))?;
    stream.set_timeout(request.timeout);
    let info = CameraInfo {
        path: path.to_path_buf(),
        name: caps.card,
        driver: caps.driver,
        layout,
        encoding: encoding_of(&actual),
        fps,
    };
    tracing::info!(
        "{}: {} {}x{} stride {} {:?}, {:?} fps",
        path.display(),
        format,
        layout.width,
        layout.height,
        layout.stride,
        info.encoding,
        info.fps
    );
    Ok(Camera {
        info,
        stream,
        timeout: request.timeout,
        last_sequence: None,
        dropped: 0,
        frames: 0,
        resync: false,
    })
}


/// Frames the driver numbered between two consecutive dequeues. Its 32-bit counter may wrap; a number
/// that repeats or goes back (a driver restarting its count) is not counted as drops.
fn frames_skipped(last: u32, current: u32) -> u64 {
    let gap = current.wrapping_sub(last);
    if gap == 0 || gap > u32::MAX / 2 {
        0
    } else {
        u64::from(gap - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_frames_come_from_sequence_gaps_across_the_wrap() {
        assert_eq!(frames_skipped(4, 5), 0);
        assert_eq!(frames_skipped(4, 9), 4);
        assert_eq!(frames_skipped(u32::MAX, 0), 0);
        assert_eq!(frames_skipped(u32::MAX - 1, 2), 3);
        // Repeated or backwards numbers (a driver restarting its count) are not drops.
        assert_eq!(frames_skipped(7, 7), 0);
        assert_eq!(frames_skipped(100, 0), 0);
    }
}
