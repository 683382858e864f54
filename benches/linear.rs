//! ViT-B/16's linear layers (197 tokens; 768 → 768, 768 → 3072, 3072 → 768) on mien's packed f32 product
//! against tract's own (the same `EinSum` optimized by tract), one and two threads. Where the CPU has no
//! tile kernel (no AVX2 + FMA, or ARM) only tract's is measured.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mien_runtime::linear::{self, PackedWeights};
use tract_core::ops::einsum::EinSum;
use tract_core::prelude::*;
use tract_linalg::multithread::{multithread_tract_scope, Executor};

fn values(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 1000.0).collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("vit_b_linear");
    group.sample_size(20);
    for (m, k, n) in [(197usize, 768usize, 768usize), (197, 768, 3072), (197, 3072, 768)] {
        let (x, w) = (values(m * k), values(k * n));
        group.throughput(Throughput::Elements((m * k * n) as u64));
        let mut model = TypedModel::default();
        let source = model.add_source("x", f32::fact([1, m, k])).unwrap();
        let weight = model.add_const("w", Tensor::from_shape(&[k, n], &w).unwrap()).unwrap();
        let y = model
            .wire_node("linear", EinSum::new("amk,kn->amn".parse().unwrap(), f32::datum_type()), &[source, weight])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        let tract_plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let input = Tensor::from_shape(&[1, m, k], &x).unwrap();
        let packed = PackedWeights::pack(&w, k, n).unwrap();
        let mut out = vec![0f32; m * n];
        for threads in [1, 2] {
            let executor = if threads > 1 { Executor::multithread(threads) } else { Executor::SingleThread };
            let shape = format!("{m}x{k}x{n}/{threads}t");
            group.bench_function(BenchmarkId::new("tract", &shape), |b| {
                b.iter(|| {
                    multithread_tract_scope(executor.clone(), || {
                        tract_plan.run(tvec!(input.clone().into_tvalue())).unwrap()
                    })
                })
            });
            if let Some(kernel) = linear::kernel() {
                group.bench_function(BenchmarkId::new("mien", &shape), |b| {
                    b.iter(|| {
                        multithread_tract_scope(executor.clone(), || packed.multiply(kernel, &x, &mut out).unwrap())
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
