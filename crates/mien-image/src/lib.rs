//! Image loading and resizing for mien, matching Hugging Face's `ViTImageProcessor` (Pillow
//! path) before normalisation:
//! `PIL.ImageOps.exif_transpose(Image.open(f)).convert("RGB").resize((W, H), resample)`.
//!
//! * [`open_rgb`] / [`decode_rgb`] decode JPEG, PNG, BMP or TIFF (recognised by content), apply
//!   the EXIF orientation as `exif_transpose` does and convert to RGB8 as `convert("RGB")` does.
//!   Pixels are Pillow's exactly for the lossless formats; JPEG goes through `image`'s decoder,
//!   not libjpeg-turbo, and may differ from Pillow by a level or two on some samples.
//! * [`resize_rgb`] / [`resize_gray`] reproduce Pillow's `Image.resize` bit for bit for
//!   [`Resample::Nearest`], [`Resample::Bilinear`] and [`Resample::Bicubic`].
//! * [`rgb_to_luma_pillow`] is Pillow's `convert("L")`.
//!
//! Known departures from Pillow, all in rarely seen files: malformed EXIF is ignored (Pillow
//! raises), a PNG `eXIf` chunk after the image data or an ImageMagick "Raw profile type exif"
//! text chunk is not read, and CMYK JPEGs are converted by `image`'s decoder.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decode;
mod geometry;
mod error;
mod ifd;
mod orientation;
mod resize;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub use error::ImageError;

/// The most pixels an image file may have: 50 megapixels (e.g. 8660x5773, more than an 8K frame). A
/// larger one is refused from its header, before its pixels are allocated (an RGB 20000x20000 image
/// would take 1.2 GB). Its decoded RGB buffer is at most 150 MB.
pub const MAX_PIXELS: u64 = 50_000_000;
pub use geometry::{crop_rgb, PixelRect, Rect};
pub use image::{GrayImage, RgbImage};

/// A resampling filter, with Pillow's semantics (`PIL.Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// `Resampling.NEAREST`: the source pixel under each output pixel's centre.
    Nearest,
    /// `Resampling.BILINEAR`: triangle filter, widened when shrinking (antialiased).
    Bilinear,
    /// `Resampling.BICUBIC`: Keys cubic (a = -0.5), widened when shrinking (antialiased).
    Bicubic,
}

impl Resample {
    /// The lowercase name: `"nearest"`, `"bilinear"` or `"bicubic"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Resample::Nearest => "nearest",
            Resample::Bilinear => "bilinear",
            Resample::Bicubic => "bicubic",
        }
    }
}

impl fmt::Display for Resample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not `nearest`, `bilinear` or `bicubic`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resampling filter {input:?} (expected nearest, bilinear or bicubic)")]
pub struct ParseResampleError {
    /// The string that was given.
    pub input: String,
}

impl FromStr for Resample {
    type Err = ParseResampleError;

    /// Parses `nearest`, `bilinear` or `bicubic`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Resample::Nearest, Resample::Bilinear, Resample::Bicubic]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseResampleError {
                input: s.to_owned(),
            })
    }
}

/// Reads and decodes an image file (JPEG, PNG, BMP or TIFF, recognised by content, not by
/// extension), applies its EXIF orientation and converts it to RGB8 like Pillow's
/// `convert("RGB")`: gray is replicated, alpha is dropped without compositing, palettes are
/// expanded, 16-bit colour keeps its high byte and 16-bit gray is clipped to 255.
///
/// # Errors
///
/// [`ImageError`] when the file cannot be read, is empty, is not one of the four formats, is
/// truncated or corrupt, has no pixels, or is too large to decode (over 512 MiB). The message
/// names the file.
pub fn open_rgb(path: impl AsRef<Path>) -> Result<RgbImage, ImageError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| ImageError::Read {
        path: path.to_path_buf(),
        message: error::one_line(&e.to_string()),
        kind: e.kind(),
    })?;
    decode::decode(&bytes, Some(path))
}

/// [`open_rgb`] for an image already in memory.
///
/// # Errors
///
/// As [`open_rgb`], except that there is no file to read or to name.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    decode::decode(bytes, None)
}

/// Resizes an RGB8 image to `width` x `height` exactly as Pillow's `Image.resize` does.
///
/// Bilinear and bicubic follow `libImaging/Resample.c` of Pillow 13: the filter support is
/// widened by the scale when shrinking (antialiasing), weights are normalised in `f64` then
/// turned into 22-bit fixed point, and the image goes through two passes with a clipped `u8`
/// intermediate: horizontal then vertical, except that the vertical pass runs first when the
/// height shrinks by more than twice as many pixels as the width (a rule older Pillow releases
/// lack; it changes some samples by one level). A pass whose dimension does not change is
/// skipped. Nearest follows the affine transform path of `Image.resize`
/// (`ImagingScaleAffine`), coordinate accumulation included.
///
/// The same size gives a copy. A zero `width` or `height` gives an empty image; an empty
/// source gives a black image of the requested size.
///
/// # Panics
///
/// Only if the output's byte size overflows `usize` or cannot be allocated.
#[must_use]
pub fn resize_rgb(src: &RgbImage, width: u32, height: u32, filter: Resample) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    resize::resize::<3>(
        src.as_raw(),
        src.dimensions(),
        &mut out,
        (width, height),
        filter,
    );
    out
}

/// [`resize_rgb`] for a one-channel image (Pillow mode `L`).
///
/// # Panics
///
/// Only if the output's byte size overflows `usize` or cannot be allocated.
#[must_use]
pub fn resize_gray(src: &GrayImage, width: u32, height: u32, filter: Resample) -> GrayImage {
    let mut out = GrayImage::new(width, height);
    resize::resize::<1>(
        src.as_raw(),
        src.dimensions(),
        &mut out,
        (width, height),
        filter,
    );
    out
}

/// Pillow's `convert("L")` of an RGB image (ITU-R 601-2 luma in 16-bit fixed point):
/// `L = (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16`.
#[must_use]
pub fn rgb_to_luma_pillow(src: &RgbImage) -> GrayImage {
    let mut out = GrayImage::new(src.width(), src.height());
    for (l, p) in out.iter_mut().zip(src.as_raw().chunks_exact(3)) {
        let sum =
            u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000;
        *l = (sum >> 16) as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resample_names() {
        for r in [Resample::Nearest, Resample::Bilinear, Resample::Bicubic] {
            assert_eq!(r.to_string().parse::<Resample>(), Ok(r));
        }
        assert_eq!("BiCubic".parse::<Resample>(), Ok(Resample::Bicubic));
        let err = "lanczos".parse::<Resample>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown resampling filter "lanczos" (expected nearest, bilinear or bicubic)"#
        );
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let src = RgbImage::from_pixel(5, 3, image::Rgb([10, 20, 30]));
        for f in [Resample::Nearest, Resample::Bilinear, Resample::Bicubic] {
            assert_eq!(resize_rgb(&src, 0, 7, f).dimensions(), (0, 7));
            assert_eq!(resize_rgb(&src, 7, 0, f).dimensions(), (7, 0));
            assert_eq!(resize_rgb(&src, 5, 3, f), src);
            let up = resize_rgb(&src, 1000, 1, f);
            assert!(up.pixels().all(|p| p.0 == [10, 20, 30]), "{f}");
            let down = resize_rgb(&src, 1, 1, f);
            assert_eq!(down.get_pixel(0, 0).0, [10, 20, 30]);
            let empty = RgbImage::new(0, 4);
            assert_eq!(resize_rgb(&empty, 3, 2, f), RgbImage::new(3, 2));
            let g = GrayImage::from_pixel(1, 1, image::Luma([200]));
            assert!(resize_gray(&g, 9, 4, f).pixels().all(|p| p.0 == [200]));
        }
    }

    #[test]
    fn luma_formula() {
        let src = RgbImage::from_raw(3, 1, vec![255, 0, 0, 0, 255, 0, 10, 20, 30]).unwrap();
        let l = rgb_to_luma_pillow(&src);
        assert_eq!(l.as_raw(), &vec![76, 150, 18]);
    }
}
