//! Inference cost of the tiny ViT plan (the seed's graph with small dimensions), one and two threads.
//! The seed-size comparison with onnxruntime is tools/bench_vs_onnxruntime.py.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mien_runtime::{Classifier, RuntimeOptions};

fn bench(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("tiny.mien");
    let options = mien_convert::ConvertOptions::new(root.join("models/tiny-vit/model.onnx"), &plan);
    mien_convert::convert(&options, &mien_convert::Quiet).unwrap();
    let photo = mien_image::open_rgb(root.join("tests/data/photos/astronaut.png")).unwrap();
    let mut group = c.benchmark_group("tiny_vit");
    for threads in [1, 2] {
        let classifier = Classifier::load(&plan, &RuntimeOptions { threads, ..Default::default() }).unwrap();
        let input = classifier.preprocessor().run(&photo);
        group.bench_with_input(BenchmarkId::new("infer", threads), &input, |b, input| {
            b.iter(|| classifier.run_logits(input).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("classify_photo", threads), &photo, |b, photo| {
            b.iter(|| classifier.classify(photo).unwrap())
        });
    }
    group.finish();
    c.bench_function("tiny_vit_load_and_optimize", |b| {
        b.iter(|| Classifier::load(&plan, &RuntimeOptions { threads: 1, ..Default::default() }).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
