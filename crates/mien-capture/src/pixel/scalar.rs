//! Scalar reference conversions: one pixel at a time, in `f32`, straight from the standards'
//! equations. Slow and obviously right; the fast paths in [`super::to_rgb`] are tested against them.

use image::RgbImage;

use super::{FrameLayout, PixelError, PixelFormat, YuvEncoding, YuvMatrix, YuvRange};

/// `(Kr, Kb)` luma coefficients of a matrix.
fn coefficients(matrix: YuvMatrix) -> (f32, f32) {
    match matrix {
        YuvMatrix::Bt601 => (0.299, 0.114),
        YuvMatrix::Bt709 => (0.2126, 0.0722),
    }
}

/// One Y'CbCr sample to R'G'B', rounded and clamped to 0..=255.
pub fn yuv_to_rgb_pixel(y: u8, cb: u8, cr: u8, encoding: YuvEncoding) -> [u8; 3] {
    let (kr, kb) = coefficients(encoding.matrix);
    let kg = 1.0 - kr - kb;
    let (luma, blue_diff, red_diff) = match encoding.range {
        YuvRange::Limited => (
            (y as f32 - 16.0) * 255.0 / 219.0,
            (cb as f32 - 128.0) * 255.0 / 224.0,
            (cr as f32 - 128.0) * 255.0 / 224.0,
        ),
        YuvRange::Full => (y as f32, cb as f32 - 128.0, cr as f32 - 128.0),
    };
    let r = luma + 2.0 * (1.0 - kr) * red_diff;
    let b = luma + 2.0 * (1.0 - kb) * blue_diff;
    let g = luma - (2.0 * kb * (1.0 - kb) / kg) * blue_diff - (2.0 * kr * (1.0 - kr) / kg) * red_diff;
    [r, g, b].map(|v| v.round().clamp(0.0, 255.0) as u8)
}

/// Converts one frame to RGB. Chroma is taken from the sample covering each pixel (no interpolation),
/// as V4L2 cameras site it.
/// Motion JPEG goes through zune-jpeg's portable (non-SIMD) code.
pub fn to_rgb(layout: &FrameLayout, encoding: YuvEncoding, src: &[u8]) -> Result<RgbImage, PixelError> {
    layout.check(src.len())?;
    let stride = layout.stride as usize;
    let mut out = RgbImage::new(layout.width, layout.height);
    if layout.format == PixelFormat::Mjpeg {
        super::decode_mjpeg(layout, src, &mut out, false)?;
        return Ok(out);
    }
    let luma_len = stride * layout.height as usize;
    let chroma_len = stride / 2 * (layout.height as usize).div_ceil(2);
    for y in 0..layout.height as usize {
        let row = &src[y * stride..];
        for x in 0..layout.width as usize {
            let rgb = match layout.format {
                PixelFormat::Yuyv | PixelFormat::Uyvy => {
                    let pair = &row[(x / 2) * 4..(x / 2) * 4 + 4];
                    let (luma, cb, cr) = if layout.format == PixelFormat::Yuyv {
                        (pair[(x % 2) * 2], pair[1], pair[3])
                    } else {
                        (pair[1 + (x % 2) * 2], pair[0], pair[2])
                    };
                    yuv_to_rgb_pixel(luma, cb, cr, encoding)
                }
                PixelFormat::Nv12 => {
                    let chroma = &src[stride * layout.height as usize + (y / 2) * stride + (x / 2) * 2..];
                    yuv_to_rgb_pixel(row[x], chroma[0], chroma[1], encoding)
                }
                PixelFormat::Yu12 => {
                    let at = (y / 2) * (stride / 2) + x / 2;
                    yuv_to_rgb_pixel(row[x], src[luma_len + at], src[luma_len + chroma_len + at], encoding)
                }
                PixelFormat::Mjpeg => unreachable!("decoded above"),
                PixelFormat::Grey => [row[x]; 3],
                PixelFormat::Rgb24 => [row[x * 3], row[x * 3 + 1], row[x * 3 + 2]],
                PixelFormat::Bgr24 => [row[x * 3 + 2], row[x * 3 + 1], row[x * 3]],
            };
            out.put_pixel(x as u32, y as u32, image::Rgb(rgb));
        }
    }
    Ok(out)
}

/// Encodes RGB to one Y'CbCr sample (the inverse of [`yuv_to_rgb_pixel`]); tests use it to build
/// frames of known content.
pub fn rgb_to_yuv_pixel(rgb: [u8; 3], encoding: YuvEncoding) -> [u8; 3] {
    let (kr, kb) = coefficients(encoding.matrix);
    let [r, g, b] = rgb.map(f32::from);
    let luma = kr * r + (1.0 - kr - kb) * g + kb * b;
    let blue_diff = (b - luma) / (2.0 * (1.0 - kb));
    let red_diff = (r - luma) / (2.0 * (1.0 - kr));
    let (y, cb, cr) = match encoding.range {
        YuvRange::Limited => (16.0 + luma * 219.0 / 255.0, 128.0 + blue_diff * 224.0 / 255.0, 128.0 + red_diff * 224.0 / 255.0),
        YuvRange::Full => (luma, 128.0 + blue_diff, 128.0 + red_diff),
    };
    [y, cb, cr].map(|v| v.round().clamp(0.0, 255.0) as u8)
}

/// Encodes an RGB image as a tightly packed YUYV, NV12 or I420 frame (chroma from the top-left pixel
/// of each 2x1 or 2x2 block); tests and benchmarks use it to make camera-like frames of known content.
///
/// # Panics
///
/// For other formats, and for odd sizes.
pub fn from_rgb(image: &RgbImage, format: PixelFormat, encoding: YuvEncoding) -> Vec<u8> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    assert!(w % 2 == 0 && h % 2 == 0, "even sizes only");
    let yuv: Vec<[u8; 3]> = image.pixels().map(|p| rgb_to_yuv_pixel(p.0, encoding)).collect();
    let luma = || yuv.iter().map(|p| p[0]);
    let block_tops = || (0..h).step_by(2).flat_map(move |y| (0..w).step_by(2).map(move |x| y * w + x));
    match format {
        PixelFormat::Yuyv => yuv.chunks_exact(2).flat_map(|p| [p[0][0], p[0][1], p[1][0], p[0][2]]).collect(),
        PixelFormat::Nv12 => luma().chain(block_tops().flat_map(|i| [yuv[i][1], yuv[i][2]])).collect(),
        PixelFormat::Yu12 => {
            luma().chain(block_tops().map(|i| yuv[i][1])).chain(block_tops().map(|i| yuv[i][2])).collect()
        }
        other => panic!("from_rgb encodes YUYV, NV12 and I420, not {other}"),
    }
}
