//! Preprocessing cost: decode-free resize + normalise of real photos, as the classifier does it.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mien_plan::{ColorOrder, DType, InputSpec, Layout, Preprocessing, ResampleFilter};
use mien_runtime::Preprocessor;

fn seed_preprocessor(size: usize) -> Preprocessor {
    let pre = Preprocessing {
        height: size,
        width: size,
        resample: ResampleFilter::Bilinear,
        rescale_factor: 1.0 / 255.0,
        mean: vec![0.5; 3],
        std: vec![0.5; 3],
        color_order: ColorOrder::Rgb,
    };
    let input = InputSpec { name: "pixel_values".into(), shape: vec![1, 3, size, size], dtype: DType::F32, layout: Layout::Nchw, channels: 3 };
    Preprocessor::new(&pre, &input)
}

fn bench(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let photo = mien_image::open_rgb(root.join("tests/data/photos/astronaut.png")).unwrap();
    let vga = image::imageops::resize(&photo, 640, 480, image::imageops::FilterType::Triangle);
    let small = image::imageops::resize(&photo, 48, 48, image::imageops::FilterType::Triangle);
    let mut group = c.benchmark_group("preprocess_to_224");
    let pre = seed_preprocessor(224);
    let mut out = vec![0f32; pre.len()];
    for (name, img) in [("512x512", &photo), ("640x480", &vga), ("48x48_enlarge", &small)] {
        group.bench_with_input(BenchmarkId::from_parameter(name), img, |b, img| b.iter(|| pre.run_into(img, &mut out)));
    }
    group.finish();
    c.bench_function("decode_png_512x512", |b| {
        let bytes = std::fs::read(root.join("tests/data/photos/astronaut.png")).unwrap();
        b.iter(|| mien_image::decode_rgb(&bytes).unwrap())
    });
    c.bench_function("decode_jpeg_640x427", |b| {
        let bytes = std::fs::read(root.join("tests/data/photos/rocket.jpg")).unwrap();
        b.iter(|| mien_image::decode_rgb(&bytes).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
