//! Decoding to RGB8 the way `ImageOps.exif_transpose(Image.open(f)).convert("RGB")` does.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::error::one_line;
use crate::ImageError;
use crate::{ifd, orientation};

/// The formats accepted, recognised from their first bytes as Pillow's plugins do.
fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    const TIFF: [&[u8]; 6] = [
        b"MM\x00\x2A",
        b"II\x2A\x00",
        b"MM\x2A\x00",
        b"II\x00\x2A",
        b"MM\x00\x2B",
        b"II\x2B\x00",
    ];
    if bytes.starts_with(b"\xFF\xD8\xFF") {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(b"BM") {
        Some(ImageFormat::Bmp)
    } else if TIFF.iter().any(|p| bytes.starts_with(p)) {
        Some(ImageFormat::Tiff)
    } else {
        None
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::Bmp => "BMP",
        _ => "TIFF",
    }
}

/// Decodes `bytes`; `path` only names the source in errors.
pub(crate) fn decode(bytes: &[u8], path: Option<&Path>) -> Result<RgbImage, ImageError> {
    let owned = || path.map(Path::to_path_buf);
    if bytes.is_empty() {
        return Err(ImageError::EmptyFile { path: owned() });
    }
    let format = sniff(bytes).ok_or_else(|| ImageError::UnknownFormat { path: owned() })?;
    let name = format_name(format);
    // A decoder may refuse an image without pixels in its own words; say what it is.
    let fail = |e: image::ImageError| match header_dimensions(format, bytes) {
        Some((width, height)) if width == 0 || height == 0 => ImageError::EmptyImage {
            path: owned(),
            width,
            height,
        },
        _ => classify(e, name, owned()),
    };

    // libjpeg reports a missing end-of-image marker and Pillow then refuses the file as
    // truncated; image's JPEG decoder pads missing data instead, so check it here.
    if format == ImageFormat::Jpeg && !jpeg_has_eoi(bytes) {
        return Err(ImageError::Truncated {
            path: owned(),
            format: name,
        });
    }

    // The size from the header, before any decoder allocates for it.
    if let Some((width, height)) = header_dimensions(format, bytes) {
        check_pixels(width, height, path)?;
    }

    // Palette TIFFs: image's TIFF decoder has none; the TIFF crate reads the indices of the same
    // file calling itself grayscale, and they are looked up in the colour map here.
    if format == ImageFormat::Tiff {
        if let Some(palette) = tiff_palette(bytes) {
            let rgb = palette.decode().map_err(|e| classify(image::ImageError::Decoding(
                image::error::DecodingError::new(image::error::ImageFormatHint::Exact(format), e),
            ), name, owned()))?;
            return Ok(orientation::apply(rgb, orientation::exif_orientation(bytes).unwrap_or(1)));
        }
    }

    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(fail)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::EmptyImage {
            path: owned(),
            width,
            height,
        });
    }
    check_pixels(width, height, path)?;
    let orientation = find_orientation(&mut decoder, format, bytes);
    let image = DynamicImage::from_decoder(decoder).map_err(fail)?;
    let gray16 = format == ImageFormat::Png && png_is_gray16(bytes);
    let rgb = to_rgb_like_pillow(image, gray16);
    Ok(orientation::apply(rgb, orientation))
}

fn check_pixels(width: u32, height: u32, path: Option<&Path>) -> Result<(), ImageError> {
    if u64::from(width) * u64::from(height) > crate::MAX_PIXELS {
        return Err(ImageError::TooManyPixels { path: path.map(Path::to_path_buf), width, height });
    }
    Ok(())
}

/// A palette TIFF (photometric interpretation 3) made decodable: the same file calling itself
/// grayscale (BlackIsZero), and the colour map to look its values up in.
struct TiffPalette {
    as_gray: Vec<u8>,
    bits: u32,
    /// 2^bits reds, then greens, then blues, 16-bit.
    colormap: Vec<u16>,
}

const TIFF_PHOTOMETRIC: u16 = 262;
const TIFF_BITS_PER_SAMPLE: u16 = 258;
const TIFF_COLORMAP: u16 = 320;

fn tiff_palette(bytes: &[u8]) -> Option<TiffPalette> {
    if ifd::first_ifd_value(bytes, TIFF_PHOTOMETRIC)? != 3 {
        return None;
    }
    let bits = ifd::first_ifd_value(bytes, TIFF_BITS_PER_SAMPLE)?;
    let colormap = ifd::first_ifd_shorts(bytes, TIFF_COLORMAP)?;
    if !matches!(bits, 1 | 2 | 4 | 8) || colormap.len() != 3 << bits {
        return None;
    }
    let as_gray = ifd::with_first_ifd_short(bytes, TIFF_PHOTOMETRIC, 1)?;
    Some(TiffPalette { as_gray, bits, colormap })
}

impl TiffPalette {
    /// Pillow's `convert("RGB")` of the `P` image: each index's colour map entry, high bytes
    /// (`TiffImagePlugin`: `b // 256`). Indices of fewer than 8 bits come packed, first pixel in
    /// the high bits, each row starting on a byte.
    fn decode(&self) -> Result<RgbImage, tiff::TiffError> {
        let mut decoder = tiff::decoder::Decoder::new(Cursor::new(&self.as_gray[..]))?;
        let (width, height) = decoder.dimensions()?;
        let tiff::decoder::DecodingResult::U8(packed) = decoder.read_image()? else {
            return Err(tiff::TiffError::UnsupportedError(tiff::TiffUnsupportedError::UnknownInterpretation));
        };
        let n = 1usize << self.bits;
        let bits = self.bits as usize;
        let row_bytes = (width as usize * bits).div_ceil(8);
        if packed.len() < row_bytes * height as usize {
            return Err(tiff::TiffError::FormatError(tiff::TiffFormatError::InconsistentSizesEncountered));
        }
        let mut data = Vec::with_capacity(width as usize * height as usize * 3);
        for row in packed.chunks_exact(row_bytes).take(height as usize) {
            for x in 0..width as usize {
                let bit = x * bits;
                let index = usize::from(row[bit / 8] >> (8 - bits - bit % 8)) & (n - 1);
                data.extend([0, 1, 2].map(|c| (self.colormap[c * n + index] >> 8) as u8));
            }
        }
        Ok(RgbImage::from_raw(width, height, data).unwrap_or_else(|| RgbImage::new(width, height)))
    }
}

/// The EXIF orientation as Pillow's `getexif()` finds it (1 when there is none).
/// Metadata that cannot be read counts as absent.
fn find_orientation(decoder: &mut impl ImageDecoder, format: ImageFormat, bytes: &[u8]) -> u32 {
    let exif = match format {
        // A TIFF file's own first IFD is its EXIF.
        ImageFormat::Tiff => orientation::exif_orientation(bytes),
        _ => decoder
            .exif_metadata()
            .ok()
            .flatten()
            .and_then(|e| orientation::exif_orientation(&e)),
    };
    exif.or_else(|| {
        decoder
            .xmp_metadata()
            .ok()
            .flatten()
            .and_then(|x| orientation::xmp_orientation(&x))
    })
    .unwrap_or(1)
}

/// Whether a PNG is 16-bit grayscale (Pillow's mode `I;16`), from its IHDR.
fn png_is_gray16(bytes: &[u8]) -> bool {
    bytes.get(12..16) == Some(b"IHDR") && bytes.get(24) == Some(&16) && bytes.get(25) == Some(&0)
}

/// The marker segments of a JPEG stream up to and including its first SOS (or EOI), as
/// `(marker, position of the 0xFF)`; `Err(())` when the data ends first.
fn jpeg_segments(bytes: &[u8]) -> Result<Vec<(u8, usize)>, ()> {
    let mut segments = Vec::new();
    let mut pos = 2; // after SOI
    loop {
        // Fill bytes before a marker.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if bytes.get(pos) != Some(&0xFF) {
            // Not at a marker: corrupt; the decoder will say so.
            return Ok(segments);
        }
        let marker = *bytes.get(pos + 1).ok_or(())?;
        segments.push((marker, pos));
        match marker {
            0xD9 | 0xDA => return Ok(segments),
            0xD8 | 0x01 | 0xD0..=0xD7 => pos += 2,
            _ => {
                let len = bytes.get(pos + 2..pos + 4).ok_or(())?;
                pos += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
                if pos >= bytes.len() {
                    return Err(());
                }
            }
        }
    }
}

/// Whether a JPEG stream has an EOI marker after its first scan header.
fn jpeg_has_eoi(bytes: &[u8]) -> bool {
    match jpeg_segments(bytes).as_deref() {
        Err(()) => false,
        Ok([.., (0xDA, pos)]) => {
            // Entropy-coded data stuffs every 0xFF, so 0xFF 0xD9 only appears as a marker.
            bytes[pos + 2..].windows(2).any(|w| w == [0xFF, 0xD9])
        }
        Ok(_) => true,
    }
}

/// Width and height as the header states them (PNG IHDR, BMP info header, TIFF tags 256 and
/// 257, JPEG SOF), when they can be read.
fn header_dimensions(format: ImageFormat, bytes: &[u8]) -> Option<(u32, u32)> {
    let get = |at: usize, n: usize| bytes.get(at..at + n);
    let be16 = |at| get(at, 2).map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])));
    let le16 = |at| get(at, 2).map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])));
    let be32 = |at| get(at, 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let le32 = |at| get(at, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    match format {
        ImageFormat::Png => Some((be32(16)?, be32(20)?)),
        ImageFormat::Bmp if le32(14)? == 12 => Some((le16(18)?, le16(20)?)),
        ImageFormat::Bmp => Some((
            (le32(18)? as i32).unsigned_abs(),
            (le32(22)? as i32).unsigned_abs(),
        )),
        ImageFormat::Tiff => Some((
            ifd::first_ifd_value(bytes, 256)?,
            ifd::first_ifd_value(bytes, 257)?,
        )),
        _ => {
            let segments = jpeg_segments(bytes).ok()?;
            let &(_, pos) = segments
                .iter()
                .find(|(m, _)| matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC))?;
            Some((be16(pos + 7)?, be16(pos + 5)?))
        }
    }
}

/// `Image.convert("RGB")` for what the decoders produce: gray replicated, alpha dropped without
/// compositing, 16-bit colour channels reduced to their high byte (Pillow's `RGB;16B` raw mode),
/// 16-bit grayscale (`I;16`) clipped to 255. Palettes are expanded by the decoders.
fn to_rgb_like_pillow(image: DynamicImage, png_gray16: bool) -> RgbImage {
    fn gray((w, h): (u32, u32), samples: impl Iterator<Item = u8>) -> RgbImage {
        let data: Vec<u8> = samples.flat_map(|v| [v, v, v]).collect();
        RgbImage::from_raw(w, h, data).unwrap_or_else(|| RgbImage::new(w, h))
    }
    let clip16 = |v: u16| v.min(255) as u8;
    let high = |v: u16| (v >> 8) as u8;
    let dims = (image.width(), image.height());
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(l) => gray(dims, l.into_raw().into_iter()),
        DynamicImage::ImageLumaA8(la) => gray(dims, la.into_raw().into_iter().step_by(2)),
        DynamicImage::ImageRgba8(rgba) => {
            let data = rgba
                .into_raw()
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            RgbImage::from_raw(dims.0, dims.1, data)
                .unwrap_or_else(|| RgbImage::new(dims.0, dims.1))
        }
        DynamicImage::ImageLuma16(l) => gray(dims, l.into_raw().into_iter().map(clip16)),
        DynamicImage::ImageLumaA16(la) if png_gray16 => {
            gray(dims, la.into_raw().into_iter().step_by(2).map(clip16))
        }
        DynamicImage::ImageLumaA16(la) => {
            gray(dims, la.into_raw().into_iter().step_by(2).map(high))
        }
        DynamicImage::ImageRgb16(rgb) => {
            let data = rgb.into_raw().into_iter().map(high).collect();
            RgbImage::from_raw(dims.0, dims.1, data)
                .unwrap_or_else(|| RgbImage::new(dims.0, dims.1))
        }
        DynamicImage::ImageRgba16(rgba) => {
            let data = rgba
                .into_raw()
                .chunks_exact(4)
                .flat_map(|p| [high(p[0]), high(p[1]), high(p[2])])
                .collect();
            RgbImage::from_raw(dims.0, dims.1, data)
                .unwrap_or_else(|| RgbImage::new(dims.0, dims.1))
        }
        other => other.to_rgb8(),
    }
}

/// Maps an `image` error onto ours.
fn classify(
    error: image::ImageError,
    format: &'static str,
    path: Option<std::path::PathBuf>,
) -> ImageError {
    use image::ImageError as E;
    if is_eof(&error) {
        return ImageError::Truncated { path, format };
    }
    let message = one_line(&error.to_string());
    match error {
        E::Limits(_) => ImageError::TooLarge {
            path,
            format,
            message,
        },
        E::Unsupported(_) => ImageError::Unsupported {
            path,
            format,
            message,
        },
        _ => ImageError::Corrupt {
            path,
            format,
            message,
        },
    }
}

/// Whether the error, or any error it wraps, says the data ended early.
fn is_eof(error: &image::ImageError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return true;
            }
        }
        let text = e.to_string().to_ascii_lowercase();
        if [
            "unexpected eof",
            "unexpected end",
            "end of file",
            "truncated",
            "no more bytes",
            "not enough data",
            "failed to fill whole buffer",
        ]
        .iter()
        .any(|needle| text.contains(needle))
        {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG of WIDTHxHEIGHT grey pixels, encoded (a flat grey compresses to almost nothing).
    fn grey_png(width: u32, height: u32) -> Vec<u8> {
        use image::ImageEncoder;
        let mut bytes = Vec::new();
        let pixels = vec![128u8; width as usize * height as usize];
        image::codecs::png::PngEncoder::new(&mut bytes)
            .write_image(&pixels, width, height, image::ExtendedColorType::L8)
            .unwrap();
        bytes
    }

    #[test]
    fn images_above_the_pixel_limit_are_refused_before_decoding() {
        // 8000x6251 = 50,008,000 pixels: just over the limit; the file is 60 KB.
        let bytes = grey_png(8000, 6251);
        let err = decode(&bytes, Some(Path::new("big.png"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot decode image \"big.png\": 8000x6251 pixels is more than the 50 megapixels mien decodes"
        );
        assert!(matches!(err, ImageError::TooManyPixels { width: 8000, height: 6251, .. }));
        // One pixel is an image.
        let one = decode(&grey_png(1, 1), None).unwrap();
        assert_eq!(one.dimensions(), (1, 1));
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0"), Some(ImageFormat::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(ImageFormat::Png));
        assert_eq!(sniff(b"BM...."), Some(ImageFormat::Bmp));
        assert_eq!(sniff(b"II*\0...."), Some(ImageFormat::Tiff));
        assert_eq!(sniff(b"MM\0*...."), Some(ImageFormat::Tiff));
        assert_eq!(sniff(b"GIF89a"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn eoi_scan() {
        assert!(jpeg_has_eoi(
            b"\xFF\xD8\xFF\xDA\x00\x02\x12\x34\xFF\x00\xFF\xD9"
        ));
        assert!(!jpeg_has_eoi(b"\xFF\xD8\xFF\xDA\x00\x02\x12\x34\xFF\x00"));
        // an EOI inside an APP segment (thumbnail) before the scan does not count
        assert!(!jpeg_has_eoi(
            b"\xFF\xD8\xFF\xE1\x00\x04\xFF\xD9\xFF\xDA\x00\x02\x12"
        ));
        assert!(!jpeg_has_eoi(b"\xFF\xD8\xFF\xE1\x00\x40"));
        assert!(!jpeg_has_eoi(b"\xFF\xD8\xFF"));
    }
}
