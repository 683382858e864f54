//! A folder or list of image files, in name order.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::{FrameSource, SourceError, SourceEvent, SourceFrame};

/// File name extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "tif", "tiff", "pgm", "ppm"];

/// Image files read one per frame.
#[derive(Debug)]
pub struct ImageSource {
    description: String,
    files: Vec<PathBuf>,
    next: usize,
    /// Time stamped on each frame: files have no clock, so frames are spaced as if taken at this rate.
    frame_interval: Duration,
}

/// Whether `path` has an image file extension.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl ImageSource {
    /// The image files directly inside `dir` (not its subfolders), sorted by name.
    pub fn folder(dir: &Path) -> Result<ImageSource, SourceError> {
        let entries = std::fs::read_dir(dir).map_err(|e| SourceError::File { path: dir.to_path_buf(), message: e.to_string() })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(SourceError::File {
                path: dir.to_path_buf(),
                message: format!("no image files ({}) in this folder", IMAGE_EXTENSIONS.join(", ")),
            });
        }
        Ok(ImageSource::files(files, format!("folder {}", dir.display())))
    }

    /// These files, in this order.
    pub fn files(files: Vec<PathBuf>, description: String) -> ImageSource {
        ImageSource { description, files, next: 0, frame_interval: Duration::from_millis(100) }
    }

    /// Sets the spacing of frame timestamps (tracks expire by these times).
    pub fn with_frame_interval(mut self, interval: Duration) -> ImageSource {
        self.frame_interval = interval;
        self
    }
}

impl FrameSource for ImageSource {
    fn describe(&self) -> String {
        format!("{} ({} images)", self.description, self.files.len())
    }

    fn is_temporal(&self) -> bool {
        false
    }

    fn next_event(&mut self, _stop: &AtomicBool) -> Result<SourceEvent, SourceError> {
        let Some(path) = self.files.get(self.next).cloned() else { return Ok(SourceEvent::End) };
        let index = self.next as u64;
        self.next += 1;
        match mien_image::open_rgb(&path) {
            Ok(image) => Ok(SourceEvent::Frame(SourceFrame {
                image,
                index,
                timestamp: self.frame_interval * index as u32,
                file: Some(path),
            })),
            Err(e) => Ok(SourceEvent::Skipped { reason: e.to_string() }),
        }
    }
}
