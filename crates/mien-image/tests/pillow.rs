//! Our decoding and resizing against Pillow's own output, from the fixtures that
//! `tools/make_resize_fixtures.py` writes into `tests/data/resize/` (see its `manifest.txt`).
//!
//! Run with `--nocapture` to see the agreement figures per fixture.

use std::path::{Path, PathBuf};

use mien_image::{
    decode_rgb, open_rgb, resize_gray, resize_rgb, rgb_to_luma_pillow, ImageError, Resample,
    RgbImage,
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

/// Lines of the manifest, split on whitespace.
fn manifest(kind: &str) -> Vec<Vec<String>> {
    let path = data_dir().join("resize/manifest.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases: Vec<Vec<String>> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| f[0] == kind)
        .collect();
    assert!(!cases.is_empty(), "no {kind} cases in {}", path.display());
    cases
}

/// A lossless PNG as Pillow wrote it, read with `image` directly.
fn load_png(rel: &str) -> image::DynamicImage {
    let path = data_dir().join(rel);
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Agreement between two byte buffers of the same shape.
#[derive(Debug)]
struct Agreement {
    values: usize,
    identical: usize,
    within_1: usize,
    within_2: usize,
    max_diff: u8,
}

impl Agreement {
    fn of(ours: &[u8], pillow: &[u8]) -> Self {
        assert_eq!(ours.len(), pillow.len());
        let mut a = Agreement {
            values: ours.len(),
            identical: 0,
            within_1: 0,
            within_2: 0,
            max_diff: 0,
        };
        for (&x, &y) in ours.iter().zip(pillow) {
            let d = x.abs_diff(y);
            a.identical += usize::from(d == 0);
            a.within_1 += usize::from(d <= 1);
            a.within_2 += usize::from(d <= 2);
            a.max_diff = a.max_diff.max(d);
        }
        a
    }

    fn pct(&self, n: usize) -> f64 {
        100.0 * n as f64 / self.values as f64
    }

    fn report(&self, name: &str) {
        println!(
            "{name:<48} {:>7} values  identical {:>8.4} %  <=1 {:>8.4} %  <=2 {:>8.4} %  max diff {}",
            self.values,
            self.pct(self.identical),
            self.pct(self.within_1),
            self.pct(self.within_2),
            self.max_diff
        );
    }

    /// The resizer's bar: >= 99.9 % identical and never more than 1 level off.
    fn assert_resize_grade(&self, name: &str) {
        assert!(
            self.max_diff <= 1 && self.pct(self.identical) >= 99.9,
            "{name}: {self:?}"
        );
    }
}

#[test]
fn resize_matches_pillow() {
    for case in manifest("resize") {
        let [_, mode, filter, w, h, input, expected] = &case[..] else {
            panic!("bad line {case:?}")
        };
        let filter: Resample = filter.parse().unwrap();
        let (w, h): (u32, u32) = (w.parse().unwrap(), h.parse().unwrap());
        let (ours, pillow) = match mode.as_str() {
            "rgb" => {
                let src = open_rgb(data_dir().join(input)).unwrap();
                let pillow = load_png(expected).to_rgb8();
                (resize_rgb(&src, w, h, filter).into_raw(), pillow)
            }
            "gray" => {
                let src = load_png(input);
                assert!(
                    matches!(src, image::DynamicImage::ImageLuma8(_)),
                    "{input} is not 8-bit gray"
                );
                let pillow = load_png(expected);
                assert!(
                    matches!(pillow, image::DynamicImage::ImageLuma8(_)),
                    "{expected} is not 8-bit gray"
                );
                let out = resize_gray(&src.to_luma8(), w, h, filter);
                assert_eq!(
                    (out.dimensions(), pillow.width(), pillow.height()),
                    ((w, h), w, h),
                    "{expected}"
                );
                let agreement = Agreement::of(out.as_raw(), pillow.as_bytes());
                agreement.report(expected);
                agreement.assert_resize_grade(expected);
                continue;
            }
            other => panic!("bad mode {other}"),
        };
        assert_eq!(pillow.dimensions(), (w, h), "{expected}");
        let agreement = Agreement::of(&ours, pillow.as_raw());
        agreement.report(expected);
        agreement.assert_resize_grade(expected);
    }
}

#[test]
fn decode_matches_pillow() {
    for case in manifest("decode") {
        let [_, kind, input, expected] = &case[..] else {
            panic!("bad line {case:?}")
        };
        let ours = open_rgb(data_dir().join(input)).unwrap_or_else(|e| panic!("{e}"));
        let pillow: RgbImage = load_png(expected).to_rgb8();
        assert_eq!(ours.dimensions(), pillow.dimensions(), "{input}");
        let agreement = Agreement::of(ours.as_raw(), pillow.as_raw());
        agreement.report(input);
        match kind.as_str() {
            "exact" => assert_eq!(
                agreement.identical, agreement.values,
                "{input}: {agreement:?}"
            ),
            // image's JPEG decoder is not libjpeg-turbo: a level or two off on a few values.
            "approx" => assert!(
                agreement.pct(agreement.within_2) >= 99.0,
                "{input}: {agreement:?}"
            ),
            other => panic!("bad kind {other}"),
        }
    }
}

#[test]
fn luma_matches_pillow() {
    for case in manifest("luma") {
        let [_, input, expected] = &case[..] else {
            panic!("bad line {case:?}")
        };
        let ours = rgb_to_luma_pillow(&open_rgb(data_dir().join(input)).unwrap());
        let pillow = load_png(expected).to_luma8();
        assert_eq!(ours, pillow, "{input}");
    }
}

#[test]
fn files_pillow_refuses_are_errors_naming_the_file() {
    for case in manifest("error") {
        let path = data_dir().join(&case[1]);
        let err = open_rgb(&path).expect_err(&case[1]);
        let message = err.to_string();
        println!("{message}");
        assert!(
            message.contains(&format!("{:?}", path.display().to_string())),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
        assert_eq!(err.path(), Some(path.as_path()));
        let expected_kind = match case[1].as_str() {
            "resize/bad_empty.png" => matches!(err, ImageError::EmptyFile { .. }),
            "resize/bad_text.png" => matches!(err, ImageError::UnknownFormat { .. }),
            name if name.contains("truncated") || name.contains("no_eoi") => {
                matches!(err, ImageError::Truncated { .. })
            }
            _ => matches!(
                err,
                ImageError::Corrupt { .. } | ImageError::Truncated { .. }
            ),
        };
        assert!(expected_kind, "{}: {err:?}", case[1]);
        // The same bytes from memory fail the same way, without a name.
        if let Ok(bytes) = std::fs::read(&path) {
            let err = decode_rgb(&bytes).unwrap_err();
            assert!(
                err.path().is_none() && err.to_string().contains("(in memory)"),
                "{err}"
            );
        }
    }
}

#[test]
fn error_messages() {
    let missing = data_dir().join("resize/no such file.jpg");
    let err = open_rgb(&missing).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Read {
                kind: std::io::ErrorKind::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().starts_with(&format!(
        "cannot read image {:?}: ",
        missing.display().to_string()
    )));

    let text = data_dir().join("resize/bad_text.png");
    assert_eq!(
        open_rgb(&text).unwrap_err().to_string(),
        format!(
            "cannot decode image {:?}: not a JPEG, PNG, BMP or TIFF image",
            text.display().to_string()
        )
    );
    assert_eq!(
        decode_rgb(b"").unwrap_err().to_string(),
        "cannot decode image (in memory): the file is empty (0 bytes)"
    );
    let rocket = std::fs::read(data_dir().join("photos/rocket.jpg")).unwrap();
    assert_eq!(
        decode_rgb(&rocket[..rocket.len() / 3])
            .unwrap_err()
            .to_string(),
        "cannot decode image (in memory): JPEG data is truncated"
    );
}

#[test]
fn empty_images_are_errors() {
    // A BMP header for 0 x 0 pixels, 24 bits, no data.
    let mut bmp = Vec::new();
    bmp.extend(b"BM");
    bmp.extend(54_u32.to_le_bytes()); // file size
    bmp.extend([0; 4]);
    bmp.extend(54_u32.to_le_bytes()); // pixel data offset
    bmp.extend(40_u32.to_le_bytes()); // BITMAPINFOHEADER
    bmp.extend(0_i32.to_le_bytes()); // width
    bmp.extend(0_i32.to_le_bytes()); // height
    bmp.extend(1_u16.to_le_bytes());
    bmp.extend(24_u16.to_le_bytes());
    bmp.extend([0; 24]);
    // A PNG whose IHDR says 0 x 5.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend(0_u32.to_be_bytes());
    png.extend(5_u32.to_be_bytes());
    png.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]); // depth, colour type, methods, (bad) CRC
    for (bytes, dims) in [(bmp, (0, 0)), (png, (0, 5))] {
        let err = decode_rgb(&bytes).unwrap_err();
        println!("{err}");
        assert!(
            matches!(err, ImageError::EmptyImage { width, height, .. } if (width, height) == dims),
            "{err:?}"
        );
        assert!(err.to_string().ends_with(&format!(
            "the image is empty ({}x{} pixels)",
            dims.0, dims.1
        )));
    }
}

#[test]
fn all_four_formats_decode() {
    for (file, dims) in [
        ("photos/rocket.jpg", (640, 427)),
        ("resize/in_rgb_32x24.png", (32, 24)),
        ("resize/in_rgb.bmp", (32, 24)),
        ("resize/in_rgb.tif", (32, 24)),
    ] {
        let img = open_rgb(data_dir().join(file)).unwrap();
        assert_eq!(img.dimensions(), dims, "{file}");
    }
}

#[test]
fn exif_orientation_turns_the_image() {
    // 80 x 60 crop saved with orientation 6 and 8 comes out 60 x 80, 3 stays 80 x 60.
    for (file, dims) in [
        ("orient6.jpg", (60, 80)),
        ("orient8.jpg", (60, 80)),
        ("orient3.jpg", (80, 60)),
    ] {
        let img = open_rgb(data_dir().join("resize").join(file)).unwrap();
        assert_eq!(img.dimensions(), dims, "{file}");
    }
    // Lossless: every orientation against the untransposed image.
    let base = open_rgb(data_dir().join("resize/orient1.png")).unwrap();
    let (w, h) = base.dimensions();
    let at = |img: &RgbImage, x: u32, y: u32| img.get_pixel(x, y).0;
    for o in 2..=8 {
        let img = open_rgb(data_dir().join(format!("resize/orient{o}.png"))).unwrap();
        for y in 0..h {
            for x in 0..w {
                // Where the source pixel (x, y) lands after Pillow's transpose.
                let (tx, ty) = match o {
                    2 => (w - 1 - x, y),
                    3 => (w - 1 - x, h - 1 - y),
                    4 => (x, h - 1 - y),
                    5 => (y, x),
                    6 => (h - 1 - y, x),
                    7 => (h - 1 - y, w - 1 - x),
                    _ => (y, w - 1 - x),
                };
                assert_eq!(
                    at(&img, tx, ty),
                    at(&base, x, y),
                    "orientation {o} at ({x}, {y})"
                );
            }
        }
    }
}

#[test]
fn gray_becomes_rgb_by_replication() {
    let gray = load_png("resize/in_camera_face_48x48_L.png").to_luma8();
    let rgb = open_rgb(data_dir().join("resize/in_camera_face_48x48_L.png")).unwrap();
    assert_eq!(rgb.dimensions(), gray.dimensions());
    for (p, l) in rgb.pixels().zip(gray.pixels()) {
        assert_eq!(p.0, [l.0[0]; 3]);
    }
}

/// Informational: how close `image`'s JPEG decoder comes to Pillow's libjpeg-turbo.
#[test]
fn jpeg_decoder_versus_libjpeg() {
    let ours = open_rgb(data_dir().join("photos/rocket.jpg")).unwrap();
    let pillow = load_png("resize/rocket_pillow.png").to_rgb8();
    let a = Agreement::of(ours.as_raw(), pillow.as_raw());
    a.report("rocket.jpg decode vs libjpeg-turbo");
    assert!(a.pct(a.within_2) >= 99.0, "{a:?}");
    // And after the resize to the model's input size.
    let ours = resize_rgb(&ours, 224, 224, Resample::Bilinear);
    let pillow = load_png("resize/rocket_224x224_bilinear.png").to_rgb8();
    let a = Agreement::of(ours.as_raw(), pillow.as_raw());
    a.report("rocket.jpg decode+resize vs Pillow");
}
