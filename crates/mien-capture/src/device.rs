//! Enumerating V4L2 devices with what they can capture.

use std::path::{Path, PathBuf};

use serde::Serialize;
use v4l::capability::Flags;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::video::Capture;
use v4l::Device;

use crate::{CaptureError, PixelFormat};

/// One `/dev/video*` node and what it offers.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// Device node.
    pub path: PathBuf,
    /// The device's name (V4L2 `card`).
    pub name: String,
    /// Kernel driver (`uvcvideo`, `vivid`, `bcm2835-v4l2`, ...).
    pub driver: String,
    /// Bus location, e.g. `usb-0000:01:00.0-1.2`.
    pub bus: String,
    /// Whether the node streams video capture (single-planar, mmap).
    pub capture: bool,
    /// Capture formats, in the driver's order (empty for non-capture nodes).
    pub formats: Vec<FormatInfo>,
    /// Why the node could not be queried, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One capture format of a device.
#[derive(Debug, Clone, Serialize)]
pub struct FormatInfo {
    /// V4L2 four-character code, e.g. `YUYV`, `MJPG`.
    pub fourcc: String,
    /// The driver's description.
    pub description: String,
    /// The mien name of the format when mien converts it (`--format` takes it).
    pub mien_format: Option<PixelFormat>,
    /// Frame sizes with their frame rates.
    pub sizes: Vec<FrameSizeInfo>,
}

/// A frame size (or range of sizes) of one format.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FrameSizeInfo {
    /// One size, with its frame rates (frames per second).
    Discrete {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Frame rates; for a continuous range, its end points.
        fps: Vec<f64>,
    },
    /// Any size in a range.
    Stepwise {
        /// Smallest width.
        min_width: u32,
        /// Largest width.
        max_width: u32,
        /// Width step.
        step_width: u32,
        /// Smallest height.
        min_height: u32,
        /// Largest height.
        max_height: u32,
        /// Height step.
        step_height: u32,
    },
}

impl std::fmt::Display for FrameSizeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameSizeInfo::Discrete { width, height, fps } => {
                write!(f, "{width}x{height}")?;
                if !fps.is_empty() {
                    let rates: Vec<String> = fps.iter().map(|r| format!("{}", (r * 100.0).round() / 100.0)).collect();
                    write!(f, "@{}", rates.join("/"))?;
                }
                Ok(())
            }
            FrameSizeInfo::Stepwise { min_width, max_width, min_height, max_height, .. } => {
                write!(f, "{min_width}x{min_height}..{max_width}x{max_height}")
            }
        }
    }
}

/// Whether capabilities say "streaming single-planar video capture".
pub(crate) fn is_streaming_capture(flags: Flags) -> bool {
    flags.contains(Flags::VIDEO_CAPTURE) && flags.contains(Flags::STREAMING)
}

/// The printable four-character code.
pub(crate) fn fourcc_string(code: v4l::FourCC) -> String {
    code.repr.iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect()
}

/// Frames per second of a V4L2 frame interval (seconds per frame), when it is a valid fraction.
pub(crate) fn fps_of(interval: v4l::Fraction) -> Option<f64> {
    (interval.numerator > 0 && interval.denominator > 0)
        .then(|| interval.denominator as f64 / interval.numerator as f64)
}

/// Queries one node; errors become [`DeviceInfo::error`] so that one broken node does not hide the rest.
pub fn describe(path: &Path) -> DeviceInfo {
    let mut info = DeviceInfo {
        path: path.to_path_buf(),
        name: String::new(),
        driver: String::new(),
        bus: String::new(),
        capture: false,
        formats: Vec::new(),
        error: None,
    };
    let device = match Device::with_path(path) {
        Ok(d) => d,
        Err(e) => {
            info.error = Some(format!("cannot open: {e}"));
            return info;
        }
    };
    let caps = match device.query_caps() {
        Ok(c) => c,
        Err(e) => {
            info.error = Some(format!("VIDIOC_QUERYCAP: {e}"));
            return info;
        }
    };
    info.name = caps.card;
    info.driver = caps.driver;
    info.bus = caps.bus;
    info.capture = is_streaming_capture(caps.capabilities);
    if !info.capture {
        return info;
    }
    match formats(&device) {
        Ok(f) => info.formats = f,
        Err(e) => info.error = Some(format!("VIDIOC_ENUM_FMT: {e}")),
    }
    info
}

fn formats(device: &Device) -> std::io::Result<Vec<FormatInfo>> {
    let mut out = Vec::new();
    for description in device.enum_formats()? {
        let code = description.fourcc;
        let mut sizes = Vec::new();
        // Some drivers list no sizes (ENOTTY/EINVAL): the format is still usable at its current size.
        for size in device.enum_framesizes(code).unwrap_or_default() {
            match size.size {
                FrameSizeEnum::Discrete(d) => {
                    let mut fps = Vec::new();
                    for interval in device.enum_frameintervals(code, d.width, d.height).unwrap_or_default() {
                        match interval.interval {
                            FrameIntervalEnum::Discrete(f) => fps.extend(fps_of(f)),
                            FrameIntervalEnum::Stepwise(s) => {
                                fps.extend(fps_of(s.max));
                                fps.extend(fps_of(s.min));
                            }
                        }
                    }
                    sizes.push(FrameSizeInfo::Discrete { width: d.width, height: d.height, fps });
                }
                FrameSizeEnum::Stepwise(s) => sizes.push(FrameSizeInfo::Stepwise {
                    min_width: s.min_width,
                    max_width: s.max_width,
                    step_width: s.step_width,
                    min_height: s.min_height,
                    max_height: s.max_height,
                    step_height: s.step_height,
                }),
            }
        }
        out.push(FormatInfo {
            fourcc: fourcc_string(code),
            description: description.description,
            mien_format: PixelFormat::from_fourcc(code.repr),
            sizes,
        });
    }
    Ok(out)
}

/// The `/dev/videoN` nodes in index order. (Our own scan: v4l's `enum_devices` panics on names such as
/// udev's `/dev/video-by-path` links that carry no number.)
pub(crate) fn video_nodes() -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let index = name.to_str()?.strip_prefix("video")?.parse::<u32>().ok()?;
            Some((index, entry.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// Every V4L2 video node with its capabilities, formats, sizes and frame rates.
pub fn list_devices() -> Result<Vec<DeviceInfo>, CaptureError> {
    let nodes = video_nodes();
    if nodes.is_empty() {
        return Err(CaptureError::NoDevices);
    }
    Ok(nodes.iter().map(|p| describe(p)).collect())
}
