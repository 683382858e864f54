//! Camera pixel formats and their conversion to packed RGB.
//!
//! The YUV formats go through `yuvutils-rs` (SIMD on x86-64 and aarch64); GREY, RGB24 and BGR24 are
//! simple enough that the compiler vectorises our loops. Every path is tested against the scalar
//! reference in [`scalar`], which computes in `f32` from the standard's equations.

pub mod scalar;

use std::fmt;
use std::str::FromStr;

use image::RgbImage;
use serde::Serialize;
use thiserror::Error;

/// The frame layouts mien converts to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PixelFormat {
    /// Packed 4:2:2, bytes Y0 U Y1 V.
    Yuyv,
    /// Packed 4:2:2, bytes U Y0 V Y1.
    Uyvy,
    /// 4:2:0, a Y plane followed by an interleaved U V plane at half resolution.
    Nv12,
    /// 8-bit luma only.
    Grey,
    /// Packed R G B.
    Rgb24,
    /// Packed B G R.
    Bgr24,
    /// Planar 4:2:0 (I420, V4L2 `YU12`): a Y plane, then U and V planes at half resolution with half
    /// the stride. Also what Y4M files hold.
    Yu12,
    /// Motion JPEG: each frame a JPEG image (most USB webcams reach their full frame rate only in it).
    Mjpeg,
}

impl PixelFormat {
    /// Every supported format, in the order mien prefers them when the user does not choose: formats
    /// cameras deliver natively first, then the ones that cost a conversion in the driver.
    pub const ALL: [PixelFormat; 8] = [
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Yu12,
        PixelFormat::Uyvy,
        PixelFormat::Mjpeg,
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Grey,
    ];

    /// The V4L2 four-character code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Uyvy => *b"UYVY",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Grey => *b"GREY",
            PixelFormat::Rgb24 => *b"RGB3",
            PixelFormat::Bgr24 => *b"BGR3",
            PixelFormat::Yu12 => *b"YU12",
            PixelFormat::Mjpeg => *b"MJPG",
        }
    }

    /// The format with this V4L2 four-character code, if mien converts it.
    pub fn from_fourcc(code: [u8; 4]) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    /// Whether this is a YUV format (its conversion depends on [`YuvEncoding`]).
    pub fn is_yuv(self) -> bool {
        matches!(self, PixelFormat::Yuyv | PixelFormat::Uyvy | PixelFormat::Nv12 | PixelFormat::Yu12)
    }

    /// Whether frames are compressed (variable size, no stride).
    pub fn is_compressed(self) -> bool {
        self == PixelFormat::Mjpeg
    }

    /// Bytes per pixel of the first plane, which with the width gives the smallest row stride.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Yuyv | PixelFormat::Uyvy => 2,
            PixelFormat::Nv12 | PixelFormat::Yu12 | PixelFormat::Grey => 1,
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => 3,
            PixelFormat::Mjpeg => 0,
        }
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Uyvy => "UYVY",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Grey => "GREY",
            PixelFormat::Rgb24 => "RGB24",
            PixelFormat::Bgr24 => "BGR24",
            PixelFormat::Yu12 => "I420",
            PixelFormat::Mjpeg => "MJPEG",
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A pixel format name that mien does not know.
#[derive(Debug, Error)]
#[error("unknown pixel format `{0}` (expected one of YUYV, UYVY, NV12, I420, MJPEG, GREY, RGB24, BGR24)")]
pub struct ParsePixelFormatError(String);

impl FromStr for PixelFormat {
    type Err = ParsePixelFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase();
        let found = match upper.as_str() {
            "YUYV" | "YUY2" => Some(PixelFormat::Yuyv),
            "UYVY" => Some(PixelFormat::Uyvy),
            "NV12" => Some(PixelFormat::Nv12),
            "GREY" | "GRAY" | "Y8" => Some(PixelFormat::Grey),
            "RGB24" | "RGB3" | "RGB" => Some(PixelFormat::Rgb24),
            "BGR24" | "BGR3" | "BGR" => Some(PixelFormat::Bgr24),
            "I420" | "YU12" | "YUV420" => Some(PixelFormat::Yu12),
            "MJPEG" | "MJPG" | "JPEG" => Some(PixelFormat::Mjpeg),
            _ => None,
        };
        found.ok_or(ParsePixelFormatError(s.to_string()))
    }
}

/// Which YUV -> RGB matrix the camera used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum YuvMatrix {
    /// ITU-R BT.601 (SD video, JPEG, most webcams below 720p).
    Bt601,
    /// ITU-R BT.709 (HD video).
    Bt709,
}

/// Whether luma spans 16..235 (limited, "TV" range) or 0..255 (full range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum YuvRange {
    /// Y in 16..=235, Cb/Cr in 16..=240.
    Limited,
    /// Y, Cb, Cr in 0..=255.
    Full,
}

/// The YUV encoding of a frame: matrix and range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct YuvEncoding {
    /// Matrix coefficients.
    pub matrix: YuvMatrix,
    /// Quantisation range.
    pub range: YuvRange,
}

impl Default for YuvEncoding {
    /// V4L2's default for SD capture: BT.601, limited range.
    fn default() -> Self {
        YuvEncoding { matrix: YuvMatrix::Bt601, range: YuvRange::Limited }
    }
}

/// Where the pixels of one frame lie in its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FrameLayout {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per row of the first plane (V4L2 `bytesperline`); for NV12 also the chroma plane's.
    pub stride: u32,
}

/// A frame buffer that does not fit its layout.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PixelError {
    /// The layout has no pixels (a width or height of 0).
    #[error("{format} frame {width}x{height}: no pixels")]
    Empty {
        /// Pixel format.
        format: PixelFormat,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The row stride is smaller than a row of pixels.
    #[error("{format} frame of width {width}: stride {stride} is below the {minimum} bytes a row needs")]
    StrideTooSmall {
        /// Pixel format.
        format: PixelFormat,
        /// Width in pixels.
        width: u32,
        /// Given stride.
        stride: u32,
        /// Smallest valid stride.
        minimum: usize,
    },
    /// The buffer is shorter than the layout needs.
    #[error("{format} {width}x{height} frame: buffer holds {actual} bytes, the layout needs {expected}")]
    BufferTooShort {
        /// Pixel format.
        format: PixelFormat,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// A 4:2:2 or 4:2:0 frame whose width (or, for NV12, height) is odd.
    #[error("{format} frame {width}x{height}: chroma subsampling needs an even width{}", if matches!(.format, PixelFormat::Nv12 | PixelFormat::Yu12) { " and height" } else { "" })]
    OddSize {
        /// Pixel format.
        format: PixelFormat,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// A compressed frame that does not decode, or decodes to another size.
    #[error("corrupt {format} frame: {message}")]
    Corrupt {
        /// Pixel format.
        format: PixelFormat,
        /// The decoder's complaint.
        message: String,
    },
    /// The conversion library rejected the frame (should not happen once the layout checks pass).
    #[error("{format} conversion failed: {message}")]
    Conversion {
        /// Pixel format.
        format: PixelFormat,
        /// The library's message.
        message: String,
    },
}

impl FrameLayout {
    /// A layout with the tightest stride for `format`.
    pub fn packed(format: PixelFormat, width: u32, height: u32) -> FrameLayout {
        FrameLayout { format, width, height, stride: width * format.bytes_per_pixel() as u32 }
    }

    /// Bytes a buffer with this layout must hold.
    pub fn required_len(&self) -> usize {
        let plane = self.stride as usize * self.height as usize;
        match self.format {
            PixelFormat::Nv12 => plane + self.stride as usize * (self.height as usize).div_ceil(2),
            PixelFormat::Yu12 => plane + 2 * (self.stride as usize / 2) * (self.height as usize).div_ceil(2),
            // A JPEG has no fixed size; it cannot be empty.
            PixelFormat::Mjpeg => 1,
            _ => plane,
        }
    }

    /// Checks that `buffer_len` bytes hold a frame with this layout.
    pub fn check(&self, buffer_len: usize) -> Result<(), PixelError> {
        // A driver that reports no pixels (found by fuzzing: converters divide rows by the width).
        if self.width == 0 || self.height == 0 {
            return Err(PixelError::Empty { format: self.format, width: self.width, height: self.height });
        }
        let minimum = self.width as usize * self.format.bytes_per_pixel();
        if (self.stride as usize) < minimum {
            return Err(PixelError::StrideTooSmall {
                format: self.format,
                width: self.width,
                stride: self.stride,
                minimum,
            });
        }
        let odd_width =
            matches!(self.format, PixelFormat::Yuyv | PixelFormat::Uyvy | PixelFormat::Nv12 | PixelFormat::Yu12)
                && self.width % 2 == 1;
        let odd_height = matches!(self.format, PixelFormat::Nv12 | PixelFormat::Yu12) && self.height % 2 == 1;
        if odd_width || odd_height {
            return Err(PixelError::OddSize { format: self.format, width: self.width, height: self.height });
        }
        let expected = self.required_len();
        if buffer_len < expected {
            return Err(PixelError::BufferTooShort {
                format: self.format,
                width: self.width,
                height: self.height,
                expected,
                actual: buffer_len,
            });
        }
        Ok(())
    }
}

/// Whether a JPEG reaches its scan without Huffman tables, as many UVC cameras' MJPEG frames do (the
/// MJPEG convention: the standard tables of JPEG Annex K.3 are implied).
fn lacks_huffman_tables(jpeg: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return false;
        }
        match jpeg[i + 1] {
            0xC4 => return false,
            0xDA => return true,
            // Fill bytes and markers without a length.
            0xFF => i += 1,
            0x01 | 0xD0..=0xD8 => i += 2,
            _ => i += 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]])),
        }
    }
    false
}

/// An APP0 "AVI1" segment: it tells zune-jpeg that missing Huffman tables are the standard ones.
const AVI1_APP0: [u8; 9] = [0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0x00];

/// Decodes one Motion-JPEG frame into RGB. `simd: false` keeps zune-jpeg to its portable code
/// (the scalar reference the tests compare against).
pub(crate) fn decode_mjpeg(layout: &FrameLayout, src: &[u8], out: &mut RgbImage, simd: bool) -> Result<(), PixelError> {
    use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    let corrupt = |message: String| PixelError::Corrupt { format: PixelFormat::Mjpeg, message };
    let with_tables;
    let src = if src.len() > 2 && lacks_huffman_tables(src) {
        with_tables = [&src[..2], &AVI1_APP0[..], &src[2..]].concat();
        &with_tables[..]
    } else {
        src
    };
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB).set_use_unsafe(simd);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(src), options);
    decoder.decode_headers().map_err(|e| corrupt(e.to_string()))?;
    let (width, height) = decoder.dimensions().ok_or_else(|| corrupt("no frame header".into()))?;
    if (width, height) != (layout.width as usize, layout.height as usize) {
        return Err(corrupt(format!("decodes to {width}x{height}, the stream is {}x{}", layout.width, layout.height)));
    }
    if out.dimensions() != (layout.width, layout.height) {
        *out = RgbImage::new(layout.width, layout.height);
    }
    decoder.decode_into(out.as_mut()).map_err(|e| corrupt(e.to_string()))
}

/// Converts one frame to RGB, reusing `out`'s allocation when its size already matches.
pub fn to_rgb(layout: &FrameLayout, encoding: YuvEncoding, src: &[u8], out: &mut RgbImage) -> Result<(), PixelError> {
    layout.check(src.len())?;
    if layout.format == PixelFormat::Mjpeg {
        return decode_mjpeg(layout, src, out, true);
    }
    if out.dimensions() != (layout.width, layout.height) {
        *out = RgbImage::new(layout.width, layout.height);
    }
    let (width, height, stride) = (layout.width, layout.height, layout.stride);
    let rgb_stride = width * 3;
    let dst: &mut [u8] = out.as_mut();
    let range = match encoding.range {
        YuvRange::Limited => yuvutils_rs::YuvRange::Limited,
        YuvRange::Full => yuvutils_rs::YuvRange::Full,
    };
    let matrix = match encoding.matrix {
        YuvMatrix::Bt601 => yuvutils_rs::YuvStandardMatrix::Bt601,
        YuvMatrix::Bt709 => yuvutils_rs::YuvStandardMatrix::Bt709,
    };
    let failed = |e: yuvutils_rs::YuvError| PixelError::Conversion { format: layout.format, message: e.to_string() };
    match layout.format {
        PixelFormat::Yuyv | PixelFormat::Uyvy => {
            let convert = if layout.format == PixelFormat::Yuyv {
                yuvutils_rs::yuyv422_to_rgb
            } else {
                yuvutils_rs::uyvy422_to_rgb
            };
            let row_bytes = width as usize * 2;
            if stride as usize == row_bytes {
                let packed = yuvutils_rs::YuvPackedImage { yuy: &src[..layout.required_len()], yuy_stride: stride, width, height };
                convert(&packed, dst, rgb_stride, range, matrix).map_err(failed)
            } else {
                // yuvutils wants packed 4:2:2 rows without padding: padded frames go a row at a time.
                for (row, out_row) in src.chunks(stride as usize).zip(dst.chunks_exact_mut(rgb_stride as usize)) {
                    let packed =
                        yuvutils_rs::YuvPackedImage { yuy: &row[..row_bytes], yuy_stride: row_bytes as u32, width, height: 1 };
                    convert(&packed, out_row, rgb_stride, range, matrix).map_err(failed)?;
                }
                Ok(())
            }
        }
        PixelFormat::Nv12 => {
            let luma_len = stride as usize * height as usize;
            let (luma, chroma) = src.split_at(luma_len);
            let convert = |y_plane: &[u8], uv_plane: &[u8], uv_stride: u32, rows: u32, out: &mut [u8]| {
                let planes = yuvutils_rs::YuvBiPlanarImage { y_plane, y_stride: stride, uv_plane, uv_stride, width, height: rows };
                yuvutils_rs::yuv_nv12_to_rgb(&planes, out, rgb_stride, range, matrix, yuvutils_rs::YuvConversionMode::Balanced)
                    .map_err(failed)
            };
            if stride == width {
                convert(luma, &chroma[..luma_len / 2], stride, height, dst)
            } else {
                // yuvutils wants an unpadded chroma plane: padded frames go two luma rows at a time.
                let pairs = luma.chunks(2 * stride as usize).zip(chroma.chunks(stride as usize));
                for ((y_rows, uv_row), out_rows) in pairs.zip(dst.chunks_exact_mut(2 * rgb_stride as usize)) {
                    convert(y_rows, &uv_row[..width as usize], width, 2, out_rows)?;
                }
                Ok(())
            }
        }
        PixelFormat::Yu12 => {
            let luma_len = stride as usize * height as usize;
            let chroma_stride = stride / 2;
            let chroma_len = chroma_stride as usize * (height as usize).div_ceil(2);
            let planes = yuvutils_rs::YuvPlanarImage {
                y_plane: &src[..luma_len],
                y_stride: stride,
                u_plane: &src[luma_len..luma_len + chroma_len],
                u_stride: chroma_stride,
                v_plane: &src[luma_len + chroma_len..luma_len + 2 * chroma_len],
                v_stride: chroma_stride,
                width,
                height,
            };
            yuvutils_rs::yuv420_to_rgb(&planes, dst, rgb_stride, range, matrix).map_err(failed)
        }
        PixelFormat::Mjpeg => unreachable!("decoded above"),
        PixelFormat::Grey => {
            for (row, out_row) in src.chunks(stride as usize).zip(dst.chunks_exact_mut(rgb_stride as usize)) {
                for (&y, px) in row[..width as usize].iter().zip(out_row.chunks_exact_mut(3)) {
                    px.fill(y);
                }
            }
            Ok(())
        }
        PixelFormat::Rgb24 => {
            for (row, out_row) in src.chunks(stride as usize).zip(dst.chunks_exact_mut(rgb_stride as usize)) {
                out_row.copy_from_slice(&row[..rgb_stride as usize]);
            }
            Ok(())
        }
        PixelFormat::Bgr24 => {
            for (row, out_row) in src.chunks(stride as usize).zip(dst.chunks_exact_mut(rgb_stride as usize)) {
                for (bgr, px) in row[..rgb_stride as usize].chunks_exact(3).zip(out_row.chunks_exact_mut(3)) {
                    px.copy_from_slice(&[bgr[2], bgr[1], bgr[0]]);
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
