//! Frame capture for mien: V4L2 cameras on Linux, and the conversion of their pixel formats to RGB.
//!
//! - [`pixel`]: YUYV, UYVY, NV12, GREY, RGB24 and BGR24 to RGB, with a scalar reference that the fast
//!   paths are tested against.
//! - [`list_devices`] and [`Camera`] (Linux): enumerate `/dev/video*` with their formats, sizes and
//!   frame rates; open a camera by path or by name, negotiate format, size and rate, and stream with
//!   mmap buffers, each dequeue bounded by a timeout.

pub mod pixel;

#[cfg(target_os = "linux")]
mod camera;
#[cfg(target_os = "linux")]
mod device;

#[cfg(target_os = "linux")]
pub use camera::{Camera, CameraInfo, CaptureRequest, Frame};
#[cfg(target_os = "linux")]
pub use device::{list_devices, DeviceInfo, FormatInfo, FrameSizeInfo};

pub use pixel::{FrameLayout, PixelError, PixelFormat, YuvEncoding, YuvMatrix, YuvRange};

use std::path::PathBuf;

/// Why a camera could not be listed, opened, configured or read.
/// The OS errors are part of each message rather than chained sources, so a report prints them once.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// No V4L2 video node exists at all.
    #[error("no video devices found (no /dev/video* nodes); is a camera connected and its driver loaded?")]
    NoDevices,
    /// Nodes exist, but none captures video in a format mien converts.
    #[error("no usable capture device among {}; see `mien devices`", .checked.join(", "))]
    NoCaptureDevice {
        /// The nodes looked at, each with why it was passed over.
        checked: Vec<String>,
    },
    /// `--device NAME` matched no capture device's name.
    #[error("no capture device named like `{name}` (available: {})", if .available.is_empty() { "none".to_string() } else { .available.join(", ") })]
    NoMatch {
        /// The requested name substring.
        name: String,
        /// Names of the capture devices present.
        available: Vec<String>,
    },
    /// The device node could not be opened.
    #[error("{}: cannot open: {cause}", .path.display())]
    Open {
        /// Device node.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The node is not a V4L2 device at all (e.g. /dev/null): it does not answer VIDIOC_QUERYCAP.
    #[error("{}: not a V4L2 video device (it does not answer VIDIOC_QUERYCAP)", .path.display())]
    NotV4l2 {
        /// The node.
        path: PathBuf,
    },
    /// The node is not a streaming video capture device (e.g. an output, radio or metadata node).
    #[error("{}: `{card}` is not a streaming video capture device", .path.display())]
    NotCapture {
        /// Device node.
        path: PathBuf,
        /// The device's name.
        card: String,
    },
    /// The requested pixel format is not offered by the device.
    #[error("{}: does not capture {requested} (it offers {})", .path.display(), .offered.join(", "))]
    FormatUnsupported {
        /// Device node.
        path: PathBuf,
        /// Requested format.
        requested: PixelFormat,
        /// Formats the device lists.
        offered: Vec<String>,
    },
    /// None of the device's formats is one mien converts.
    #[error("{}: offers no format mien converts (it offers {}; mien reads YUYV, UYVY, NV12, I420, MJPEG, GREY, RGB24, BGR24)", .path.display(), .offered.join(", "))]
    NoUsableFormat {
        /// Device node.
        path: PathBuf,
        /// Formats the device lists.
        offered: Vec<String>,
    },
    /// An ioctl while configuring the device failed.
    #[error("{}: {what}: {cause}", .path.display())]
    Configure {
        /// Device node.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        cause: std::io::Error,
    },
    /// Streaming failed (device unplugged, driver error).
    #[error("{}: streaming failed: {cause}", .path.display())]
    Stream {
        /// Device node.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// No frame arrived within the timeout.
    #[error("{}: no frame within {} ms", .path.display(), .timeout_ms)]
    Timeout {
        /// Device node.
        path: PathBuf,
        /// The timeout.
        timeout_ms: u64,
    },
    /// A dequeued buffer does not hold a whole frame of the negotiated layout.
    #[error("{}: frame {sequence}: {problem}", .path.display())]
    BadFrame {
        /// Device node.
        path: PathBuf,
        /// The driver's frame sequence number.
        sequence: u32,
        /// What is wrong with it.
        problem: PixelError,
    },
}

impl CaptureError {
    /// Whether the device is gone (unplugged): ENODEV from any call.
    pub fn is_disconnect(&self) -> bool {
        let cause = match self {
            CaptureError::Open { cause, .. } | CaptureError::Configure { cause, .. } | CaptureError::Stream { cause, .. } => {
                cause
            }
            _ => return false,
        };
        cause.raw_os_error() == Some(19)
    }
}
