//! Symmetric int8 arithmetic, scale choice and error simulation. Pure functions over `f32` slices, shared
//! by calibration (to choose) and the tests (to check the graph does what was simulated).

/// Largest quantized magnitude: symmetric int8 uses [-127, 127] so negation never overflows and no
/// zero point is needed.
pub const QMAX: f32 = 127.0;

/// Quantizes one value with a precomputed `1/scale`: round half to even (as `tract_core_round_even`),
/// clamp to ±127.
#[inline]
pub fn quantize(value: f32, inv_scale: f32) -> i8 {
    (value * inv_scale).round_ties_even().clamp(-QMAX, QMAX) as i8
}

/// The scale that maps `absmax` to 127; a tiny positive value for all-zero data so nothing divides by 0.
#[inline]
pub fn scale_for(absmax: f32) -> f32 {
    absmax.max(1e-8) / QMAX
}

/// Per-output-channel weight quantization of a row-major `[k, n]` matrix: the i8 matrix and the `n` scales.
pub fn quantize_weight_per_column(weight_kn: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let mut absmax = vec![0f32; n];
    for row in weight_kn.chunks_exact(n).take(k) {
        for (m, w) in absmax.iter_mut().zip(row) {
            *m = m.max(w.abs());
        }
    }
    let scales: Vec<f32> = absmax.iter().map(|m| scale_for(*m)).collect();
    let inv: Vec<f32> = scales.iter().map(|s| s.recip()).collect();
    let q = weight_kn.iter().enumerate().map(|(i, w)| quantize(*w, inv[i % n])).collect();
    (q, scales)
}

/// SmoothQuant factors `c_k = max|x_k|^α / max|w_k|^(1-α)`: dividing activation channel k by `c_k` and
/// multiplying weight row k by it leaves the product unchanged and moves outlier range into the weights.
/// Channels that are all zero on either side keep 1.
pub fn smoothing_factors(act_absmax: &[f32], weight_kn: &[f32], n: usize, alpha: f32) -> Vec<f32> {
    act_absmax
        .iter()
        .zip(weight_kn.chunks_exact(n))
        .map(|(a, row)| {
            let w = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            if *a <= 0.0 || w <= 0.0 {
                return 1.0;
            }
            (a.powf(alpha) / w.powf(1.0 - alpha)).clamp(1e-4, 1e4)
        })
        .collect()
}

/// How activation scales are chosen for static (calibrated, per-tensor) quantization.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaticCalibrator {
    /// The largest magnitude seen.
    MinMax,
    /// A percentile of the magnitudes (e.g. 99.99).
    Percentile(f32),
    /// The clipping point (from a grid of fractions of the maximum) with the smallest squared error.
    Mse,
}

/// Chooses a per-tensor scale for `values` (already smoothed) given their exact maximum magnitude.
pub fn choose_static_scale(values: &[f32], absmax: f32, calibrator: StaticCalibrator) -> f32 {
    match calibrator {
        StaticCalibrator::MinMax => scale_for(absmax),
        StaticCalibrator::Percentile(p) => {
            if values.is_empty() {
                return scale_for(absmax);
            }
            let mut mags: Vec<f32> = values.iter().map(|v| v.abs()).collect();
            let rank = (((p as f64 / 100.0) * (mags.len() - 1) as f64).round() as usize).min(mags.len() - 1);
            let (_, nth, _) = mags.select_nth_unstable_by(rank, f32::total_cmp);
            scale_for(*nth)
        }
        StaticCalibrator::Mse => {
            let mut best = (f64::INFINITY, scale_for(absmax));
            for step in 0..40 {
                let clip = absmax * (1.0 - step as f32 * 0.02);
                let scale = scale_for(clip);
                let inv = scale.recip();
                let err: f64 = values
                    .iter()
                    .map(|v| {
                        let d = (quantize(*v, inv) as f32 * scale - v) as f64;
                        d * d
                    })
                    .sum();
                if err < best.0 {
                    best = (err, scale);
                }
            }
            best.1
        }
    }
}

/// GPTQ (Frantar et al., 2022): quantizes the rows of `weight_kn` one input channel at a time with the
/// given per-column scales, and spreads each row's rounding error over the rows not yet quantized, in
/// proportion to how the activations `x` (`rows × k`) correlate them. This minimises the error of
/// `x · W` rather than of `W` itself. Returns the i8 matrix, row-major `[k, n]`.
pub fn gptq_quantize(weight_kn: &[f32], k: usize, n: usize, x: &[f32], rows: usize, scales: &[f32], damp: f64) -> Vec<i8> {
    // H = Xᵀ X, damped.
    let mut h = vec![0f64; k * k];
    let mut row64 = vec![0f64; k];
    for r in 0..rows {
        for (d, v) in row64.iter_mut().zip(&x[r * k..(r + 1) * k]) {
            *d = *v as f64;
        }
        for i in 0..k {
            let xi = row64[i];
            if xi == 0.0 {
                continue;
            }
            for (hij, xj) in h[i * k..(i + 1) * k].iter_mut().zip(&row64) {
                *hij += xi * xj;
            }
        }
    }
    let mut w: Vec<f64> = weight_kn.iter().map(|v| *v as f64).collect();
    let mean_diag = (0..k).map(|i| h[i * k + i]).sum::<f64>() / k as f64;
    for i in 0..k {
        if h[i * k + i] == 0.0 {
            // A channel calibration never saw: its weights cannot matter.
            h[i * k + i] = 1.0;
            w[i * n..(i + 1) * n].iter_mut().for_each(|v| *v = 0.0);
        }
        h[i * k + i] += damp * mean_diag.max(1e-12);
    }
    let Some(u) = upper_cholesky_of_inverse(&h, k) else {
        // Not positive definite even after damping: fall back to rounding to nearest.
        let inv: Vec<f32> = scales.iter().map(|s| s.recip()).collect();
        return weight_kn.iter().enumerate().map(|(i, v)| quantize(*v, inv[i % n])).collect();
    };
    let inv: Vec<f64> = scales.iter().map(|s| 1.0 / *s as f64).collect();
    let mut q = vec![0i8; k * n];
    let mut err = vec![0f64; n];
    for i in 0..k {
        let d = u[i * k + i];
        for c in 0..n {
            let v = w[i * n + c];
            let qi = (v * inv[c]).round_ties_even().clamp(-QMAX as f64, QMAX as f64);
            q[i * n + c] = qi as i8;
            err[c] = (v - qi * scales[c] as f64) / d;
        }
        for j in i + 1..k {
            let f = u[i * k + j];
            if f == 0.0 {
                continue;
            }
            for (wj, e) in w[j * n..(j + 1) * n].iter_mut().zip(&err) {
                *wj -= f * e;
            }
        }
    }
    q
}

/// Lower Cholesky factor `L` of a symmetric positive definite `k × k` matrix (`A = L Lᵀ`).
fn cholesky(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|p| l[i * k + p] * l[j * k + p]).sum();
            let v = a[i * k + j] - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * k + i] = v.sqrt();
            } else {
                l[i * k + j] = v / l[j * k + j];
            }
        }
    }
    Some(l)
}

/// `U` upper triangular with `A⁻¹ = Uᵀ U`, as GPTQ needs.
fn upper_cholesky_of_inverse(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let l = cholesky(a, k)?;
    // L⁻¹ (lower triangular), stored transposed (row c holds column c) so every inner sum runs over
    // contiguous memory.
    let mut linv_t = vec![0f64; k * k];
    for c in 0..k {
        linv_t[c * k + c] = 1.0 / l[c * k + c];
        for i in c + 1..k {
            let s: f64 = l[i * k + c..i * k + i].iter().zip(&linv_t[c * k + c..c * k + i]).map(|(a, b)| a * b).sum();
            linv_t[c * k + i] = -s / l[i * k + i];
        }
    }
    // A⁻¹ = L⁻ᵀ L⁻¹: entry (i, j) is the dot product of columns i and j of L⁻¹.
    let mut inv = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            let s: f64 = linv_t[i * k + i..(i + 1) * k].iter().zip(&linv_t[j * k + i..(j + 1) * k]).map(|(a, b)| a * b).sum();
            inv[i * k + j] = s;
            inv[j * k + i] = s;
        }
    }
    let l2 = cholesky(&inv, k)?;
    // Uᵀ = L2, so U = L2ᵀ.
    let mut u = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            u[j * k + i] = l2[i * k + j];
        }
    }
    Some(u)
}

/// `a [m, k] · b [k, n]` in f64 accumulation (small sizes only: calibration samples).
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    let mut acc = vec![0f64; n];
    for i in 0..m {
        acc.iter_mut().for_each(|v| *v = 0.0);
        for (kk, a_ik) in a[i * k..(i + 1) * k].iter().enumerate() {
            if *a_ik == 0.0 {
                continue;
            }
            let a_ik = *a_ik as f64;
            for (acc, b) in acc.iter_mut().zip(&b[kk * n..(kk + 1) * n]) {
                *acc += a_ik * *b as f64;
            }
        }
        for (o, v) in out[i * n..(i + 1) * n].iter_mut().zip(&acc) {
            *o = *v as f32;
        }
    }
    out
}

/// Relative RMS error `‖a − b‖ / ‖b‖`.
pub fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        num += ((x - y) as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    if den == 0.0 {
        return if num == 0.0 { 0.0 } else { f32::INFINITY };
    }
    (num / den).sqrt() as f32
}

/// Rounds each value to its int8 grid and back ("fake quantization"), per tensor.
pub fn fake_quantize_tensor(values: &[f32], scale: f32) -> Vec<f32> {
    let inv = scale.recip();
    values.iter().map(|v| quantize(*v, inv) as f32 * scale).collect()
}

/// Fake quantization with one scale per row of `k` values (the dynamic per-token mode).
pub fn fake_quantize_rows(values: &[f32], k: usize) -> Vec<f32> {
    values
        .chunks_exact(k)
        .flat_map(|row| {
            let scale = scale_for(row.iter().fold(0f32, |m, v| m.max(v.abs())));
            let inv = scale.recip();
            row.iter().map(move |v| quantize(*v, inv) as f32 * scale)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator so the property tests need no extra crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        let mut rng = Lcg(7);
        for trial in 0..200 {
            let magnitude = 10f32.powf(rng.next() * 4.0);
            let values: Vec<f32> = (0..257).map(|_| rng.next() * magnitude).collect();
            let absmax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = scale_for(absmax);
            for (v, q) in values.iter().zip(fake_quantize_tensor(&values, scale)) {
                assert!((v - q).abs() <= scale * 0.5 * (1.0 + 1e-5), "trial {trial}: {v} -> {q}, step {scale}");
            }
            let k = 16;
            for (row, qrow) in values.chunks_exact(k).zip(fake_quantize_rows(&values, k).chunks_exact(k)) {
                let step = scale_for(row.iter().fold(0f32, |m, v| m.max(v.abs())));
                for (v, q) in row.iter().zip(qrow) {
                    assert!((v - q).abs() <= step * 0.5 * (1.0 + 1e-5));
                }
            }
        }
    }

    #[test]
    fn quantize_is_symmetric_and_saturates() {
        assert_eq!(quantize(1000.0, 1.0), 127);
        assert_eq!(quantize(-1000.0, 1.0), -127);
        assert_eq!(quantize(2.5, 1.0), 2, "half to even");
        assert_eq!(quantize(-2.5, 1.0), -2);
        assert_eq!(quantize(3.5, 1.0), 4);
    }

    #[test]
    fn per_column_weights_use_each_column_range() {
        // Column 0 spans ±1, column 1 spans ±100: each keeps full resolution.
        let w = [1.0, 100.0, -0.5, -50.0, 0.25, 25.0];
        let (q, scales) = quantize_weight_per_column(&w, 3, 2);
        assert_eq!(q, vec![127, 127, -64, -64, 32, 32]);
        assert!((scales[0] - 1.0 / 127.0).abs() < 1e-9 && (scales[1] - 100.0 / 127.0).abs() < 1e-6);
    }

    #[test]
    fn smoothing_is_exact_before_rounding() {
        let mut rng = Lcg(3);
        let (m, k, n) = (5, 8, 4);
        let mut x: Vec<f32> = (0..m * k).map(|_| rng.next()).collect();
        for row in x.chunks_exact_mut(k) {
            row[3] *= 60.0; // an outlier channel
        }
        let w: Vec<f32> = (0..k * n).map(|_| rng.next()).collect();
        let absmax: Vec<f32> = (0..k).map(|c| x.chunks_exact(k).fold(0f32, |a, r| a.max(r[c].abs()))).collect();
        let c = smoothing_factors(&absmax, &w, n, 0.5);
        assert!(c[3] > 4.0 * c[0], "the outlier channel gets the largest factor: {c:?}");
        let xs: Vec<f32> = x.chunks_exact(k).flat_map(|r| r.iter().zip(&c).map(|(v, c)| v / c).collect::<Vec<_>>()).collect();
        let ws: Vec<f32> = w.chunks_exact(n).zip(&c).flat_map(|(r, c)| r.iter().map(move |v| v * c)).collect();
        let err = relative_error(&matmul(&xs, &ws, m, k, n), &matmul(&x, &w, m, k, n));
        assert!(err < 1e-6, "{err}");
        // And it helps per-tensor int8: the outlier no longer sets the step for every channel.
        let plain = {
            let s = scale_for(x.iter().fold(0f32, |a, v| a.max(v.abs())));
            let (wq, ws_) = quantize_weight_per_column(&w, k, n);
            let wd: Vec<f32> = wq.iter().enumerate().map(|(i, q)| *q as f32 * ws_[i % n]).collect();
            relative_error(&matmul(&fake_quantize_tensor(&x, s), &wd, m, k, n), &matmul(&x, &w, m, k, n))
        };
        let smoothed = {
            let s = scale_for(xs.iter().fold(0f32, |a, v| a.max(v.abs())));
            let (wq, ws_) = quantize_weight_per_column(&ws, k, n);
            let wd: Vec<f32> = wq.iter().enumerate().map(|(i, q)| *q as f32 * ws_[i % n]).collect();
            relative_error(&matmul(&fake_quantize_tensor(&xs, s), &wd, m, k, n), &matmul(&x, &w, m, k, n))
        };
        assert!(smoothed < plain, "smoothed {smoothed} vs plain {plain}");
    }

    #[test]
    fn gptq_beats_rounding_to_nearest_on_correlated_activations() {
        let mut rng = Lcg(5);
        let (rows, k, n) = (256, 24, 6);
        // Correlated channels: a few latent factors mixed into k channels.
        let latent: Vec<f32> = (0..rows * 4).map(|_| rng.next()).collect();
        let mix: Vec<f32> = (0..4 * k).map(|_| rng.next()).collect();
        let x = matmul(&latent, &mix, rows, 4, k);
        let x: Vec<f32> = x.iter().map(|v| v + 0.05 * rng.next()).collect();
        let w: Vec<f32> = (0..k * n).map(|_| rng.next()).collect();
        let (rtn, scales) = quantize_weight_per_column(&w, k, n);
        let gptq = gptq_quantize(&w, k, n, &x, rows, &scales, 0.01);
        let dequant = |q: &[i8]| q.iter().enumerate().map(|(i, q)| *q as f32 * scales[i % n]).collect::<Vec<f32>>();
        let reference = matmul(&x, &w, rows, k, n);
        let e_rtn = relative_error(&matmul(&x, &dequant(&rtn), rows, k, n), &reference);
        let e_gptq = relative_error(&matmul(&x, &dequant(&gptq), rows, k, n), &reference);
        assert!(e_gptq < e_rtn * 0.8, "gptq {e_gptq} vs rtn {e_rtn}");
    }

    #[test]
    fn cholesky_inverse_factor_is_right() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let u = upper_cholesky_of_inverse(&a, 3).unwrap();
        // Uᵀ U A = I.
        let mut utu = [0f64; 9];
        for i in 0..3 {
            for j in 0..3 {
                utu[i * 3 + j] = (0..3).map(|p| u[p * 3 + i] * u[p * 3 + j]).sum();
            }
        }
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|p| utu[i * 3 + p] * a[p * 3 + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9);
            }
            for j in 0..i {
                assert_eq!(u[i * 3 + j], 0.0, "upper triangular");
            }
        }
    }

    #[test]
    fn calibrators_clip_no_more_than_the_maximum() {
        let mut rng = Lcg(11);
        let mut values: Vec<f32> = (0..4000).map(|_| rng.next()).collect();
        values[17] = 80.0;
        let minmax = choose_static_scale(&values, 80.0, StaticCalibrator::MinMax);
        let pct = choose_static_scale(&values, 80.0, StaticCalibrator::Percentile(99.9));
        let mse = choose_static_scale(&values, 80.0, StaticCalibrator::Mse);
        assert!((minmax - 80.0 / 127.0).abs() < 1e-6);
        assert!(pct < minmax / 10.0, "the percentile ignores the lone outlier: {pct}");
        assert!(mse <= minmax && mse > 0.0);
        let err = |s: f32| relative_error(&fake_quantize_tensor(&values, s), &values);
        assert!(err(mse) <= err(minmax));
    }
}
