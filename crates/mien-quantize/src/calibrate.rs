//! Calibration: runs the float model on preprocessed inputs and records, for every activation that feeds a
//! target matmul, each channel's largest magnitude (exact, over every row seen) and a reservoir sample of
//! whole rows (for percentile / MSE scales and the per-layer error check).

use std::collections::HashMap;

use tract_core::internal::*;
use tract_core::ndarray::Axis;
use tract_linalg::multithread::{multithread_tract_scope, Executor};

use crate::target::MatmulTarget;

/// What calibration saw on one activation.
#[derive(Debug, Clone, Default)]
pub struct ActivationStats {
    /// Channels (the contraction length of the matmuls it feeds).
    pub k: usize,
    /// Largest magnitude per channel over every row seen.
    pub channel_absmax: Vec<f32>,
    /// Smallest value per channel.
    pub channel_min: Vec<f32>,
    /// Largest value per channel.
    pub channel_max: Vec<f32>,
    /// Calibration inputs seen.
    pub inputs: u64,
    /// Sampled rows, row-major `[rows, k]`.
    pub sample: Vec<f32>,
    /// Rows seen in total.
    pub rows_seen: u64,
}

impl ActivationStats {
    /// Rows in the sample.
    pub fn sample_rows(&self) -> usize {
        if self.k == 0 {
            0
        } else {
            self.sample.len() / self.k
        }
    }
}

/// Accumulates [`ActivationStats`] over calibration inputs.
pub struct Calibration {
    runnable: Arc<TypedRunnableModel>,
    /// Model outputs 0.. are the distinct activation outlets, each with its first channel axis and the
    /// number of consecutive axes that together hold the channels.
    outlets: Vec<(OutletId, usize, usize)>,
    stats: Vec<ActivationStats>,
    capacity_rows: usize,
    rng: u64,
    executor: Executor,
}

impl Calibration {
    /// Prepares a run of `model` that also outputs every target's activation. `sample_rows` rows are kept
    /// per activation; `threads` > 1 runs tract's matmuls on that many threads.
    pub fn new(model: &TypedModel, targets: &[MatmulTarget], sample_rows: usize, threads: usize) -> TractResult<Calibration> {
        let mut outlets: Vec<(OutletId, usize, usize)> = vec![];
        for t in targets {
            if !outlets.iter().any(|(o, _, _)| *o == t.activation) {
                outlets.push((t.activation, t.k_axis, t.k_span));
            }
        }
        let mut observed = model.clone();
        observed.select_output_outlets(&outlets.iter().map(|(o, _, _)| *o).collect::<Vec<_>>())?;
        let runnable = observed.into_optimized()?.into_runnable()?;
        let stats = outlets.iter().map(|_| ActivationStats::default()).collect();
        let executor = if threads > 1 { Executor::multithread(threads) } else { Executor::SingleThread };
        Ok(Calibration { runnable, outlets, stats, capacity_rows: sample_rows, rng: 0x9E3779B97F4A7C15, executor })
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic, so a conversion is reproducible.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545F4914F6CDD1D)
    }

    /// Runs one preprocessed input through the model and records its activations.
    pub fn observe(&mut self, input: Tensor) -> TractResult<()> {
        let runnable = self.runnable.clone();
        let outputs = multithread_tract_scope(self.executor.clone(), || runnable.run(tvec!(input.into_tvalue())))?;
        for (ix, value) in outputs.iter().enumerate() {
            let (_, k_axis, k_span) = self.outlets[ix];
            let merged;
            let value: &Tensor = if k_span > 1 {
                let shape = value.shape();
                let mut to = shape[..k_axis].to_vec();
                to.push(shape[k_axis..k_axis + k_span].iter().product());
                to.extend_from_slice(&shape[k_axis + k_span..]);
                merged = value.clone().into_tensor().into_shape(&to)?;
                &merged
            } else {
                value
            };
            let view = value.to_plain_array_view::<f32>()?;
            let k = view.shape()[k_axis];
            if self.stats[ix].k == 0 {
                self.stats[ix].k = k;
                self.stats[ix].channel_absmax = vec![0.0; k];
                self.stats[ix].channel_min = vec![f32::INFINITY; k];
                self.stats[ix].channel_max = vec![f32::NEG_INFINITY; k];
            }
            self.stats[ix].inputs += 1;
            for lane in view.lanes(Axis(k_axis)) {
                let stats = &mut self.stats[ix];
                for (c, v) in lane.iter().enumerate() {
                    stats.channel_absmax[c] = stats.channel_absmax[c].max(v.abs());
                    stats.channel_min[c] = stats.channel_min[c].min(*v);
                    stats.channel_max[c] = stats.channel_max[c].max(*v);
                }
                stats.rows_seen += 1;
                let seen = stats.rows_seen;
                // Reservoir sampling (algorithm R): every row seen so far is kept with equal probability.
                let slot = if stats.sample_rows() < self.capacity_rows {
                    Some(stats.sample_rows())
                } else {
                    let r = (self.next_random() % seen) as usize;
                    (r < self.capacity_rows).then_some(r)
                };
                let stats = &mut self.stats[ix];
                match slot {
                    Some(s) if s == stats.sample_rows() => stats.sample.extend(lane.iter()),
                    Some(s) => {
                        for (dst, v) in stats.sample[s * k..(s + 1) * k].iter_mut().zip(lane.iter()) {
                            *dst = *v;
                        }
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// The statistics per activation outlet.
    pub fn finish(self) -> HashMap<OutletId, ActivationStats> {
        self.outlets.into_iter().map(|(o, _, _)| o).zip(self.stats).collect()
    }
}
