//! The crate's error type.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why an image could not be read or decoded.
///
/// Every message is one line and names the file it is about (or says the bytes came from
/// memory), e.g. `cannot decode image "x.jpg": not a JPEG, PNG, BMP or TIFF image`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file could not be read from disk.
    #[error("cannot read image {}: {message}", quoted(.path))]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said, on one line.
        message: String,
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
    },
    /// The file has no bytes at all.
    #[error("cannot decode image {}: the file is empty (0 bytes)", origin(.path))]
    EmptyFile {
        /// The file, or `None` for bytes in memory.
        path: Option<PathBuf>,
    },
    /// The content is not one of the supported formats (detected from content, not name).
    #[error("cannot decode image {}: not a JPEG, PNG, BMP or TIFF image", origin(.path))]
    UnknownFormat {
        /// The file, or `None` for bytes in memory.
        path: Option<PathBuf>,
    },
    /// The data ends before the image does.
    #[error("cannot decode image {}: {format} data is truncated", origin(.path))]
    Truncated {
        /// The file, or `None` for bytes in memory.
        path: Option<PathBuf>,
        /// The detected format: `"JPEG"`, `"PNG"`, `"BMP"` or `"TIFF"`.
        format: &'static str,
    },
    /// The data is not valid for its format.
    #[error("cannot decode image {}: corrupt {format} data: {message}", origin(.path))]
    Corrupt {
        /// The file, or `None` for bytes in memory.
        path: Option<PathBuf>,
        /// The detected format: `"JPEG"`, `"PNG"`, `"BMP"` or `"TIFF"`.
        format: &'static str,
        /// The decoder's explanation, on one line.
        message: String,
    },
    /// The file uses a feature of its format that the decoder does not support.
    #[error("cannot decode image {}: unsupported {format} variant: {message}", origin(.path))]
    Unsupported {
        /// The file, or `None` for bytes in memory.
        path: Option<PathBuf>,
        /// The detected format: `"JPEG"`, `"PNG"`, `"BMP"` or `"TIFF"`.
        format: &'static str,
        /// The decoder's explanation, on one line.
        message: String,
    },
    /// Decoding would need more memory than the decoder's limit (512 MiB).
    #[error("cannot decode image {}: {format} image is too large: {message}", origin(.path))]
    TooLarge {
        /// The file, or `None` for bytes in memory.
        path: Option<PathBuf>,
        /// The detected format: `"JPEG"`, `"PNG"`, `"BMP"` or `"TIFF"`.
        format: &'static str,
        /// The decoder's explanation, on one line.
        message: String,
    },
    /// The image has more pixels than [`crate::MAX_PIXELS`]; refused before its pixels are allocated.
    #[error(
        "cannot decode image {}: {width}x{height} pixels is more than the {} megapixels mien decodes",
        origin(.path),
        crate::MAX_PIXELS / 1_000_000
    )]
    TooManyPixels {
        /// The file, or `None` for bytes in memory.
        path: Option<PathBuf>,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The image has no pixels (a width or height of 0).
    #[error("cannot decode image {}: the image is empty ({width}x{height} pixels)", origin(.path))]
    EmptyImage {
        /// The file, or `None` for bytes in memory.
        path: Option<PathBuf>,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

impl ImageError {
    /// The file the error is about, if it came from a file.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Read { path, .. } => Some(path),
            Self::EmptyFile { path }
            | Self::UnknownFormat { path }
            | Self::Truncated { path, .. }
            | Self::Corrupt { path, .. }
            | Self::Unsupported { path, .. }
            | Self::TooLarge { path, .. }
            | Self::TooManyPixels { path, .. }
            | Self::EmptyImage { path, .. } => path.as_deref(),
        }
    }
}

/// A path in double quotes, with anything unprintable escaped so the message stays one line.
fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

fn origin(path: &Option<PathBuf>) -> Origin<'_> {
    Origin(path.as_deref())
}

struct Origin<'a>(Option<&'a Path>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => f.write_str(&quoted(path)),
            None => f.write_str("(in memory)"),
        }
    }
}

/// Collapses a decoder message onto one line.
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
