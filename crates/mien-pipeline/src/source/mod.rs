//! Where frames come from: V4L2 cameras, folders or lists of images, and video files, behind one
//! interface so users without a camera, and the tests, run the same pipeline code.

#[cfg(target_os = "linux")]
mod camera;
mod images;
mod looping;
mod video;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mien_image::RgbImage;

#[cfg(target_os = "linux")]
pub use camera::{CameraSource, Reconnect};
pub use images::{is_image, ImageSource, IMAGE_EXTENSIONS};
pub use looping::{LoopingSource, Reopen};
pub use video::{MjpegFileSource, RawVideoSource, Y4mSource};

/// One frame, converted to RGB.
#[derive(Debug, Clone)]
pub struct SourceFrame {
    /// The frame.
    pub image: RgbImage,
    /// Position in the source: the driver's sequence number for cameras, the index for files.
    pub index: u64,
    /// When it was captured (cameras) or its place in the video's timeline (files).
    pub timestamp: Duration,
    /// The file it came from, for image sources.
    pub file: Option<PathBuf>,
}

/// What a source has for the pipeline.
#[derive(Debug)]
pub enum SourceEvent {
    /// The next frame.
    Frame(SourceFrame),
    /// An input was skipped (unreadable image, corrupt compressed frame); the source goes on.
    Skipped {
        /// What was skipped and why, on one line.
        reason: String,
    },
    /// The camera was lost; the source is retrying.
    Lost {
        /// Why, on one line.
        reason: String,
    },
    /// The camera is back after a loss.
    Restored {
        /// What was reopened.
        description: String,
    },
    /// No more frames (end of files); cameras never end by themselves.
    End,
}

/// Errors that stop a source for good.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The camera could not be opened or configured.
    #[error(transparent)]
    Capture(#[from] mien_capture::CaptureError),
    /// A file or folder could not be read.
    #[error("{}: {message}", .path.display())]
    File {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong, on one line.
        message: String,
    },
}

/// A stream of frames.
pub trait FrameSource: Send {
    /// What is being read, for logs and reports (`/dev/video0 (vivid, YUYV 640x480)`, a folder).
    fn describe(&self) -> String;

    /// Waits for the next event. Sources that block (cameras) return soon after `stop` is set.
    fn next_event(&mut self, stop: &AtomicBool) -> Result<SourceEvent, SourceError>;

    /// Frames the source produced but the pipeline never saw: the driver's gaps plus frames replaced
    /// by newer ones while the pipeline was busy.
    fn dropped(&self) -> u64 {
        0
    }

    /// Whether consecutive frames show the same scene over time (cameras, videos), so faces are tracked
    /// and smoothed across them by default; a folder or list of photos is not (each photo is its own
    /// scene, often of another person).
    fn is_temporal(&self) -> bool {
        true
    }
}

/// A synthetic source for the crate's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// `left` grey 64x48 frames, 100 ms apart from 0, then the end.
    pub struct Grey {
        pub left: u64,
        pub next: u64,
    }

    impl FrameSource for Grey {
        fn describe(&self) -> String {
            "counted".into()
        }
        fn next_event(&mut self, _stop: &AtomicBool) -> Result<SourceEvent, SourceError> {
            if self.left == 0 {
                return Ok(SourceEvent::End);
            }
            self.left -= 1;
            self.next += 1;
            Ok(SourceEvent::Frame(SourceFrame {
                image: RgbImage::from_pixel(64, 48, image::Rgb([128, 128, 128])),
                index: self.next - 1,
                timestamp: Duration::from_millis(100 * (self.next - 1)),
                file: None,
            }))
        }
    }
}
