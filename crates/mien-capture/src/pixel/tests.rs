use super::*;

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

const ENCODINGS: [YuvEncoding; 4] = [
    YuvEncoding { matrix: YuvMatrix::Bt601, range: YuvRange::Limited },
    YuvEncoding { matrix: YuvMatrix::Bt601, range: YuvRange::Full },
    YuvEncoding { matrix: YuvMatrix::Bt709, range: YuvRange::Limited },
    YuvEncoding { matrix: YuvMatrix::Bt709, range: YuvRange::Full },
];

fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

/// Sizes that exercise SIMD bodies and scalar tails, with padded strides as drivers deliver them.
const SIZES: [(u32, u32, u32); 4] = [(64, 48, 0), (62, 10, 6), (6, 4, 0), (638, 6, 130)];

/// The fast paths agree with the scalar reference on random frames, every format, every encoding.
/// YUV: within 3 levels (yuvutils computes in fixed point; its BT.709 limited-range path is off by up
/// to 3 on saturated colours, BT.601 by up to 2); the others exactly.
#[test]
fn fast_paths_match_scalar_reference() {
    for format in PixelFormat::ALL.into_iter().filter(|f| !f.is_compressed()) {
        for (i, &(width, height, padding)) in SIZES.iter().enumerate() {
            let layout = FrameLayout {
                format,
                width,
                height,
                stride: width * format.bytes_per_pixel() as u32 + padding,
            };
            let full_noise = noise(layout.required_len(), 7 + i as u64);
            // Limited-range frames hold legal values (16..=235): below black, yuvutils' SIMD body and its
            // scalar tail disagree with each other (one clips footroom, the other does not).
            let legal_noise: Vec<u8> = full_noise.iter().map(|&v| 16 + (v as u16 * 219 / 255) as u8).collect();
            let encodings: &[YuvEncoding] = if format.is_yuv() { &ENCODINGS } else { &ENCODINGS[..1] };
            for &encoding in encodings {
                let src = if format.is_yuv() && encoding.range == YuvRange::Limited { &legal_noise } else { &full_noise };
                let reference = scalar::to_rgb(&layout, encoding, src).unwrap();
                let mut fast = RgbImage::new(1, 1);
                to_rgb(&layout, encoding, src, &mut fast).unwrap();
                let diff = max_abs_diff(&reference, &fast);
                let allowed = if format.is_yuv() { 3 } else { 0 };
                assert!(
                    diff <= allowed,
                    "{format} {width}x{height} stride {} {encoding:?}: max |fast - scalar| = {diff} > {allowed}",
                    layout.stride
                );
            }
        }
    }
}

/// The reference itself: primaries and greys encoded with the standards' equations come back.
#[test]
fn scalar_reference_round_trips_known_colours() {
    let colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [0, 0, 0], [255, 255, 255], [200, 150, 100]];
    for encoding in ENCODINGS {
        for rgb in colours {
            let [y, cb, cr] = scalar::rgb_to_yuv_pixel(rgb, encoding);
            let back = scalar::yuv_to_rgb_pixel(y, cb, cr, encoding);
            for c in 0..3 {
                assert!(back[c].abs_diff(rgb[c]) <= 2, "{encoding:?} {rgb:?} -> {:?} -> {back:?}", [y, cb, cr]);
            }
        }
    }
    // Well-known anchors: BT.601 limited black is Y=16, white Y=235, both with neutral chroma.
    let bt601 = ENCODINGS[0];
    assert_eq!(scalar::rgb_to_yuv_pixel([0, 0, 0], bt601), [16, 128, 128]);
    assert_eq!(scalar::rgb_to_yuv_pixel([255, 255, 255], bt601), [235, 128, 128]);
}

/// Each byte of a packed or planar frame lands on the pixel it describes.
#[test]
fn layouts_place_chroma_and_luma_where_v4l2_puts_them() {
    let enc = ENCODINGS[1]; // full range: Y passes through when chroma is neutral
    // YUYV: two pixels of different luma sharing neutral chroma.
    let layout = FrameLayout::packed(PixelFormat::Yuyv, 2, 1);
    let mut out = RgbImage::new(1, 1);
    to_rgb(&layout, enc, &[10, 128, 200, 128], &mut out).unwrap();
    assert_eq!(out.as_raw(), &[10, 10, 10, 200, 200, 200]);
    let layout = FrameLayout::packed(PixelFormat::Uyvy, 2, 1);
    to_rgb(&layout, enc, &[128, 10, 128, 200], &mut out).unwrap();
    assert_eq!(out.as_raw(), &[10, 10, 10, 200, 200, 200]);
    // NV12 2x2: four lumas, one neutral chroma pair after the luma plane.
    let layout = FrameLayout::packed(PixelFormat::Nv12, 2, 2);
    to_rgb(&layout, enc, &[1, 2, 3, 4, 128, 128], &mut out).unwrap();
    assert_eq!(out.as_raw(), &[1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]);
    let layout = FrameLayout::packed(PixelFormat::Bgr24, 1, 1);
    to_rgb(&layout, enc, &[1, 2, 3], &mut out).unwrap();
    assert_eq!(out.as_raw(), &[3, 2, 1]);
}

#[test]
fn bad_layouts_are_errors_not_panics() {
    let mut out = RgbImage::new(1, 1);
    let short = FrameLayout::packed(PixelFormat::Yuyv, 4, 2);
    assert_eq!(
        to_rgb(&short, YuvEncoding::default(), &[0; 15], &mut out),
        Err(PixelError::BufferTooShort { format: PixelFormat::Yuyv, width: 4, height: 2, expected: 16, actual: 15 })
    );
    let narrow = FrameLayout { stride: 7, ..short };
    assert!(matches!(to_rgb(&narrow, YuvEncoding::default(), &[0; 64], &mut out), Err(PixelError::StrideTooSmall { .. })));
    let odd = FrameLayout::packed(PixelFormat::Nv12, 4, 3);
    let message = to_rgb(&odd, YuvEncoding::default(), &[0; 64], &mut out).unwrap_err().to_string();
    assert_eq!(message, "NV12 frame 4x3: chroma subsampling needs an even width and height");
}

#[test]
fn formats_parse_from_names_and_fourccs() {
    for format in PixelFormat::ALL {
        assert_eq!(format.name().parse::<PixelFormat>().unwrap(), format);
        assert_eq!(PixelFormat::from_fourcc(format.fourcc()), Some(format));
    }
    assert_eq!("yuy2".parse::<PixelFormat>().unwrap(), PixelFormat::Yuyv);
    assert_eq!("mjpg".parse::<PixelFormat>().unwrap(), PixelFormat::Mjpeg);
    assert_eq!("yu12".parse::<PixelFormat>().unwrap(), PixelFormat::Yu12);
    assert!("H264".parse::<PixelFormat>().unwrap_err().to_string().contains("unknown pixel format `H264`"));
}



fn jpeg_of(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(image)
        .expect("JPEG encodes");
    bytes
}

fn smooth_picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, ((x + y) * 2 % 256) as u8])
    })
}

/// Motion JPEG: the SIMD decoder agrees with zune-jpeg's portable path, and both give back the picture
/// that was encoded (within JPEG's loss).
#[test]
fn mjpeg_decodes_like_the_portable_path_and_the_source() {
    for (width, height) in [(640, 480), (62, 34), (8, 8)] {
        let picture = smooth_picture(width, height);
        let jpeg = jpeg_of(&picture, 95);
        let layout = FrameLayout::packed(PixelFormat::Mjpeg, width, height);
        let reference = scalar::to_rgb(&layout, YuvEncoding::default(), &jpeg).unwrap();
        let mut fast = RgbImage::new(1, 1);
        to_rgb(&layout, YuvEncoding::default(), &jpeg, &mut fast).unwrap();
        let diff = max_abs_diff(&reference, &fast);
        assert!(diff <= 2, "{width}x{height}: max |simd - portable| = {diff}");
        let mean_error: f64 = fast.as_raw().iter().zip(picture.as_raw()).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>()
            / picture.as_raw().len() as f64;
        assert!(mean_error < 4.0, "{width}x{height}: mean |decoded - source| = {mean_error:.2}");
    }
}

/// Broken frames are errors naming the format, never panics or silently grey frames.
#[test]
fn corrupt_mjpeg_frames_are_errors() {
    let layout = FrameLayout::packed(PixelFormat::Mjpeg, 64, 48);
    let mut out = RgbImage::new(1, 1);
    let garbage = noise(5000, 3);
    let err = to_rgb(&layout, YuvEncoding::default(), &garbage, &mut out).unwrap_err();
    assert!(matches!(err, PixelError::Corrupt { .. }), "{err}");
    assert!(err.to_string().starts_with("corrupt MJPEG frame"), "{err}");
    let empty = to_rgb(&layout, YuvEncoding::default(), &[], &mut out).unwrap_err();
    assert!(matches!(empty, PixelError::BufferTooShort { .. }), "{empty}");
    // A valid JPEG of another size than the stream's.
    let other = jpeg_of(&smooth_picture(32, 32), 90);
    let err = to_rgb(&layout, YuvEncoding::default(), &other, &mut out).unwrap_err();
    assert!(err.to_string().contains("decodes to 32x32"), "{err}");
    // Cut short: only the headers.
    let jpeg = jpeg_of(&smooth_picture(64, 48), 90);
    let err = to_rgb(&layout, YuvEncoding::default(), &jpeg[..300.min(jpeg.len() / 2)], &mut out);
    assert!(err.is_err(), "a truncated JPEG decoded");
}

/// Removes every DHT segment before the scan, as cameras that rely on the standard tables send frames.
fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut i = 2;
    loop {
        let marker = jpeg[i + 1];
        if marker == 0xDA {
            out.extend_from_slice(&jpeg[i..]);
            return out;
        }
        let len = 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if marker != 0xC4 {
            out.extend_from_slice(&jpeg[i..i + len]);
        }
        i += len;
    }
}

/// Webcam MJPEG frames often carry no Huffman tables; they decode with the standard ones, exactly as
/// the same frame with its tables does.
#[test]
fn mjpeg_frames_without_huffman_tables_decode() {
    let picture = smooth_picture(96, 64);
    let jpeg = jpeg_of(&picture, 90);
    let bare = strip_huffman_tables(&jpeg);
    assert!(bare.len() < jpeg.len() && lacks_huffman_tables(&bare) && !lacks_huffman_tables(&jpeg));
    let layout = FrameLayout::packed(PixelFormat::Mjpeg, 96, 64);
    let (mut with, mut without) = (RgbImage::new(1, 1), RgbImage::new(1, 1));
    to_rgb(&layout, YuvEncoding::default(), &jpeg, &mut with).unwrap();
    to_rgb(&layout, YuvEncoding::default(), &bare, &mut without).unwrap();
    assert_eq!(with, without);
    // Without mien's fix-up, zune-jpeg alone refuses such a frame.
    use zune_jpeg::zune_core::{bytestream::ZCursor, options::DecoderOptions};
    let plain = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(&bare), DecoderOptions::default()).decode();
    assert!(plain.is_err(), "zune-jpeg decoded a table-less frame by itself");
}

/// Frames made by `scalar::from_rgb` convert back to their colours.
#[test]
fn frames_encoded_from_rgb_convert_back() {
    let picture = RgbImage::from_fn(8, 4, |x, _| if x < 4 { image::Rgb([200, 60, 30]) } else { image::Rgb([20, 120, 220]) });
    for format in [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Yu12] {
        let frame = scalar::from_rgb(&picture, format, YuvEncoding::default());
        let layout = FrameLayout::packed(format, 8, 4);
        assert_eq!(frame.len(), layout.required_len(), "{format}");
        let back = scalar::to_rgb(&layout, YuvEncoding::default(), &frame).unwrap();
        assert!(max_abs_diff(&back, &picture) <= 2, "{format}: {:?}", back.as_raw());
    }
}

/// Found by fuzzing: a layout without pixels reached the converters, which chunk rows by the width.
#[test]
fn layouts_without_pixels_are_errors() {
    for format in [PixelFormat::Yuyv, PixelFormat::Uyvy, PixelFormat::Rgb24, PixelFormat::Nv12, PixelFormat::Mjpeg] {
        for (width, height) in [(0, 8), (8, 0), (0, 0)] {
            let layout = FrameLayout { format, width, height, stride: 0 };
            let mut out = RgbImage::new(0, 0);
            let err = to_rgb(&layout, YuvEncoding::default(), &[0u8; 64], &mut out).unwrap_err();
            assert_eq!(err, PixelError::Empty { format, width, height });
        }
    }
}

proptest::proptest! {
    // No regression files in the source tree: a failure prints its inputs, which go into a test here.
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, failure_persistence: None, ..Default::default() })]

    /// The fast paths against the scalar reference on random layouts: any format, even widths up to 96,
    /// heights up to 20, strides padded by up to 40 bytes, any encoding, random bytes.
    #[test]
    fn fast_paths_match_scalar_on_random_layouts(
        format_index in 0usize..7,
        half_width in 1u32..48,
        rows in 1u32..10,
        padding in 0u32..40,
        seed in proptest::prelude::any::<u64>(),
        encoding_index in 0usize..4,
    ) {
        let formats: Vec<PixelFormat> = PixelFormat::ALL.into_iter().filter(|f| !f.is_compressed()).collect();
        let format = formats[format_index % formats.len()];
        let width = half_width * 2;
        let height = if matches!(format, PixelFormat::Nv12 | PixelFormat::Yu12) { rows * 2 } else { rows };
        let layout = FrameLayout { format, width, height, stride: width * format.bytes_per_pixel() as u32 + padding };
        let encoding = if format.is_yuv() { ENCODINGS[encoding_index] } else { ENCODINGS[0] };
        let mut src = noise(layout.required_len(), seed);
        // Limited range: legal values only (see fast_paths_match_scalar_reference).
        if format.is_yuv() && encoding.range == YuvRange::Limited {
            src.iter_mut().for_each(|v| *v = 16 + (*v as u16 * 219 / 255) as u8);
        }
        let reference = scalar::to_rgb(&layout, encoding, &src).unwrap();
        let mut fast = RgbImage::new(1, 1);
        to_rgb(&layout, encoding, &src, &mut fast).unwrap();
        let allowed = if format.is_yuv() { 3 } else { 0 };
        proptest::prop_assert!(max_abs_diff(&reference, &fast) <= allowed, "{format} {width}x{height} stride {} {encoding:?}", layout.stride);
    }
}
