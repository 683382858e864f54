//! EXIF orientation, found and applied the way `PIL.ImageOps.exif_transpose` does.
//!
//! Pillow takes the Orientation tag (274) from the image's EXIF block (for TIFF files, from the
//! file's own first IFD); only when that tag is absent does it look in the XMP packet for
//! `tiff:Orientation="N"` or `<tiff:Orientation>N`. Values 2..=8 transpose the image; any
//! other value, or a tag holding several values, leaves it as it is.

use crate::ifd;
use image::imageops;
use image::RgbImage;

/// The Orientation tag of a TIFF structure (an EXIF block, optionally behind `Exif\0\0`, or a
/// whole TIFF file): `None` when the tag is absent or the block cannot be parsed,
/// `Some(value)` when present (`Some(0)` when it holds other than a single number).
pub(crate) fn exif_orientation(mut data: &[u8]) -> Option<u32> {
    while let Some(rest) = data.strip_prefix(b"Exif\0\0") {
        data = rest;
    }
    ifd::first_ifd_value(data, 274)
}

/// Pillow's XMP fallback: the first match of `tiff:Orientation(="|>)([0-9])`.
pub(crate) fn xmp_orientation(xmp: &[u8]) -> Option<u32> {
    const KEY: &[u8] = b"tiff:Orientation";
    let mut start = 0;
    while let Some(pos) = find(&xmp[start..], KEY) {
        let after = &xmp[start + pos + KEY.len()..];
        let digit = match after {
            [b'=', b'"', d, ..] | [b'>', d, ..] => Some(*d),
            _ => None,
        };
        if let Some(d) = digit.filter(u8::is_ascii_digit) {
            return Some(u32::from(d - b'0'));
        }
        start += pos + 1;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Transposes `img` as `exif_transpose` does for an Orientation value.
pub(crate) fn apply(img: RgbImage, orientation: u32) -> RgbImage {
    match orientation {
        2 => imageops::flip_horizontal(&img), // FLIP_LEFT_RIGHT
        3 => imageops::rotate180(&img),       // ROTATE_180
        4 => imageops::flip_vertical(&img),   // FLIP_TOP_BOTTOM
        5 => imageops::flip_horizontal(&imageops::rotate90(&img)), // TRANSPOSE
        6 => imageops::rotate90(&img),        // ROTATE_270 (counter-clockwise)
        7 => imageops::flip_horizontal(&imageops::rotate270(&img)), // TRANSVERSE
        8 => imageops::rotate270(&img),       // ROTATE_90 (counter-clockwise)
        _ => img,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exif(little: bool, tag: u16, typ: u16, value: u32) -> Vec<u8> {
        let mut v = Vec::new();
        let w16 = |v: &mut Vec<u8>, x: u16| {
            v.extend(if little {
                x.to_le_bytes()
            } else {
                x.to_be_bytes()
            })
        };
        let w32 = |v: &mut Vec<u8>, x: u32| {
            v.extend(if little {
                x.to_le_bytes()
            } else {
                x.to_be_bytes()
            })
        };
        v.extend(b"Exif\0\0");
        v.extend(if little { b"II" } else { b"MM" });
        w16(&mut v, 42);
        w32(&mut v, 8);
        w16(&mut v, 1);
        w16(&mut v, tag);
        w16(&mut v, typ);
        w32(&mut v, 1);
        if typ == 3 {
            w16(&mut v, value as u16);
            w16(&mut v, 0);
        } else {
            w32(&mut v, value);
        }
        w32(&mut v, 0);
        v
    }

    #[test]
    fn exif_tag() {
        assert_eq!(exif_orientation(&exif(true, 274, 3, 6)), Some(6));
        assert_eq!(exif_orientation(&exif(false, 274, 3, 8)), Some(8));
        assert_eq!(exif_orientation(&exif(false, 274, 4, 3)), Some(3));
        assert_eq!(exif_orientation(&exif(true, 275, 3, 6)), None);
        assert_eq!(exif_orientation(b"Exif\0\0garbage"), None);
        assert_eq!(exif_orientation(b""), None);
        let mut short = exif(true, 274, 3, 6);
        short.truncate(20);
        assert_eq!(exif_orientation(&short), None);
    }

    #[test]
    fn xmp() {
        assert_eq!(xmp_orientation(br#"<x tiff:Orientation="6"/>"#), Some(6));
        assert_eq!(
            xmp_orientation(b"<tiff:Orientation>3</tiff:Orientation>"),
            Some(3)
        );
        assert_eq!(
            xmp_orientation(br#"tiff:Orientation='6' tiff:Orientation="8""#),
            Some(8)
        );
        assert_eq!(xmp_orientation(b"tiff:Orientation"), None);
        assert_eq!(xmp_orientation(b""), None);
    }
}
