//! The plan committed for the README quick start must be what today's converter makes of the committed
//! ONNX (conversion is deterministic), so a converter change cannot silently leave it stale.

use std::path::{Path, PathBuf};

use crate::common::*;
use mien_plan::Plan;

#[test]
fn committed_tiny_plan_is_current() {
    let committed = Plan::open(root().join("models/tiny-vit/tiny-vit.mien")).expect("committed plan loads");
    let fresh = Plan::open(tiny_plan()).unwrap();
    let (c, f) = (committed.manifest(), fresh.manifest());
    assert_eq!(c.files, f.files, "graph files differ: regenerate with mien-convert models/tiny-vit/model.onnx -o models/tiny-vit/tiny-vit.mien");
    assert_eq!(c.labels, f.labels);
    assert_eq!(c.preprocessing, f.preprocessing);
    assert_eq!(c.input, f.input);
    assert_eq!(c.model.source_sha256, f.model.source_sha256);
}

/// The committed plan `models/tiny-vit/NAME` and a fresh conversion of the committed ONNX with
/// `configure`'s settings: each as its manifest and its path (the fresh one in a folder removed at exit).
fn committed_and_fresh(
    name: &str,
    configure: impl FnOnce(&mut mien_convert::ConvertOptions),
) -> ((mien_plan::Manifest, PathBuf), (mien_plan::Manifest, PathBuf)) {
    let committed_path = root().join("models/tiny-vit").join(name);
    let committed = Plan::open(&committed_path).expect("committed plan loads");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("committed-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let mut options = mien_convert::ConvertOptions::new(tiny_onnx(), &out);
    configure(&mut options);
    mien_convert::convert(&options, &mien_convert::Quiet).unwrap();
    let fresh = Plan::open(&out).unwrap().manifest().clone();
    ((committed.manifest().clone(), committed_path), (fresh, out))
}

/// The committed tiny int8 plan (the fixture of the kernel-choice tests that run under qemu) is what the
/// converter makes today from the committed ONNX and the committed photos.
///
/// Not byte for byte: calibration runs the float model on this CPU's kernels, whose summation order
/// differs between CPUs (tract's AVX2, AVX-512 and NEON kernels), so activation statistics, and with them
/// smoothing factors and scales, differ in their last bits, and a rare weight rounds the other way. So:
/// the same files of the same sizes, the same graph text, numbers within 1e-3 relative, int8 weights at
/// most one step apart in at most 1 % of their values.
#[test]
fn committed_tiny_int8_plan_is_current() {
    let (c, f) = committed_and_fresh("tiny-vit-int8.mien", |options| {
        options.precision = mien_plan::Precision::Int8;
        options.int8 = Some(mien_convert::QuantizeSettings {
            calibrate: root().join("tests/data/photos"),
            ..mien_convert::QuantizeSettings::default()
        });
    });
    let regenerate = "regenerate with mien-convert models/tiny-vit/model.onnx -o models/tiny-vit/tiny-vit-int8.mien --precision int8 --calibrate tests/data/photos";
    let shape = |m: &mien_plan::Manifest| m.files.iter().map(|f| (f.path.clone(), f.size)).collect::<Vec<_>>();
    assert_eq!(shape(&c.0), shape(&f.0), "graph files differ: {regenerate}");
    let (cq, fq) = (c.0.quantization.as_ref().unwrap(), f.0.quantization.as_ref().unwrap());
    assert_eq!((cq.int8_layers, &cq.float_layers, &cq.activations), (fq.int8_layers, &fq.float_layers, &fq.activations));
    let (committed, fresh) = (plan_files(&c.1), plan_files(&f.1));
    for (name, a) in &committed {
        let b = &fresh[name];
        if name.ends_with(".nnef") {
            same_text_numbers_within(name, &String::from_utf8_lossy(a), &String::from_utf8_lossy(b), regenerate);
        } else if name.ends_with(".dat") {
            same_tensor_within(name, a, b, regenerate);
        } else {
            assert_eq!(a, b, "{name} differs: {regenerate}");
        }
    }
}

/// Every file of a plan (tar or folder) except its manifest, by path.
fn plan_files(plan: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(plan).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if entry.header().entry_type().is_file() && name != "mien.json" {
            let mut bytes = vec![];
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            files.insert(name, bytes);
        }
    }
    files
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-3 * a.abs().max(b.abs()) + 1e-9
}

/// Graph text: identical once numbers are taken out; the numbers within 1e-3 relative.
fn same_text_numbers_within(name: &str, a: &str, b: &str, regenerate: &str) {
    fn split(text: &str) -> (String, Vec<f64>) {
        let (mut words, mut numbers, mut rest) = (String::new(), vec![], text);
        while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
            // A digit inside an identifier (layers_0) is text; a number starts after a non-word char.
            let prev = rest[..start].chars().last();
            let len = rest[start..].find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c))).unwrap_or(rest.len() - start);
            let token = &rest[start..start + len];
            match (prev.is_some_and(|c| c.is_alphanumeric() || c == '_'), token.parse::<f64>()) {
                (false, Ok(v)) => {
                    words.push_str(&rest[..start]);
                    words.push('#');
                    numbers.push(v);
                }
                _ => words.push_str(&rest[..start + len]),
            }
            rest = &rest[start + len..];
        }
        words.push_str(rest);
        (words, numbers)
    }
    let ((wa, na), (wb, nb)) = (split(a), split(b));
    assert_eq!(wa, wb, "{name}: the graph differs: {regenerate}");
    for (i, (x, y)) in na.iter().zip(&nb).enumerate() {
        assert!(close(*x, *y), "{name}: number {i} is {x} committed, {y} fresh: {regenerate}");
    }
}

/// NNEF tensor files: the same header; f32 data within 1e-3 relative (of the tensor's largest value),
/// int8 data at most one step apart in at most 1 % of the values; anything else identical.
fn same_tensor_within(name: &str, a: &[u8], b: &[u8], regenerate: &str) {
    const HEADER: usize = 128;
    assert_eq!(a[..HEADER], b[..HEADER], "{name}: the tensor header differs: {regenerate}");
    let bits = u32::from_le_bytes(a[44..48].try_into().unwrap());
    let item_type = u16::from_le_bytes(a[48..50].try_into().unwrap());
    let (da, db) = (&a[HEADER..], &b[HEADER..]);
    match (item_type, bits) {
        (0, 32) => {
            let values = |d: &[u8]| d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect::<Vec<_>>();
            let (va, vb) = (values(da), values(db));
            let largest = va.iter().chain(&vb).fold(0f64, |m, v| m.max(v.abs()));
            for (i, (x, y)) in va.iter().zip(&vb).enumerate() {
                assert!((x - y).abs() <= 1e-3 * largest + 1e-9, "{name}: value {i} is {x} committed, {y} fresh: {regenerate}");
            }
        }
        (_, 8) => {
            let steps: Vec<i32> = da.iter().zip(db).map(|(x, y)| (*x as i8 as i32 - *y as i8 as i32).abs()).collect();
            let moved = steps.iter().filter(|s| **s > 0).count();
            assert!(steps.iter().all(|s| *s <= 1), "{name}: int8 values more than a step apart: {regenerate}");
            assert!(moved * 100 <= steps.len(), "{name}: {moved} of {} int8 values moved: {regenerate}", steps.len());
        }
        _ => assert_eq!(da, db, "{name} differs: {regenerate}"),
    }
}

/// The committed tiny f16 plan (the fixture of the f16 kernel tests that run under qemu) is what the
/// converter makes today from the committed ONNX.
#[test]
fn committed_tiny_f16_plan_is_current() {
    let ((c, _), (f, _)) = committed_and_fresh("tiny-vit-f16.mien", |options| options.precision = mien_plan::Precision::F16);
    assert_eq!(
        c.files, f.files,
        "graph files differ: regenerate with mien-convert models/tiny-vit/model.onnx -o models/tiny-vit/tiny-vit-f16.mien --precision f16"
    );
    assert_eq!(c.half, f.half);
}
