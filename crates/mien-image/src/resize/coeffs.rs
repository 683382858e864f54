//! Filter weights, computed exactly as Pillow's `precompute_coeffs` and
//! `normalize_coeffs_8bpc` do (same `f64` operations in the same order, same rounding).

/// Pillow's `PRECISION_BITS`: 32 bits less 8 for the result and 2 for overshoot.
pub(crate) const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The resampling filters with weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Triangle filter, support 1.
    Bilinear,
    /// Keys cubic with a = -0.5, support 2.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = if x < 0.0 { -x } else { x };
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// The taps of one output sample: `len` input samples from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub start: usize,
    pub len: usize,
}

/// Fixed-point weights for resampling one dimension from `in_size` to `out_size` samples.
#[derive(Debug, Clone)]
pub(crate) struct Coefficients {
    /// Pillow's `ksize`: the stride of `weights` (taps beyond `bounds[i].len` are 0).
    pub ksize: usize,
    /// Per output sample.
    pub bounds: Vec<Bounds>,
    /// `ksize` weights per output sample, scaled by `1 << PRECISION_BITS`.
    pub weights: Vec<i32>,
}

impl Coefficients {
    /// Pillow's `precompute_coeffs(in_size, 0, in_size, out_size, filter)` followed by
    /// `normalize_coeffs_8bpc`. `out_size` must not be 0.
    pub(crate) fn new(in_size: usize, out_size: usize, filter: Filter) -> Self {
        // Pillow passes the box as `float`, so the input extent goes through f32.
        let in0 = 0.0_f32;
        let in1 = in_size as f32;
        let scale = f64::from(in1 - in0) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;

        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0_i32; out_size * ksize];
        let mut k = vec![0.0_f64; ksize];
        for (xx, out) in weights.chunks_exact_mut(ksize).enumerate() {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            // `(int)` truncates toward zero; `as` does too (and saturates instead of UB).
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (xmax - xmin).clamp(0, ksize as i64) as usize;
            let xmin = xmin as usize;

            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = filter.weight(((x + xmin) as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            for (kx, o) in k.iter_mut().zip(out.iter_mut()).take(n) {
                if ww != 0.0 {
                    *kx /= ww;
                }
                *o = to_fixed(*kx);
            }
            bounds.push(Bounds {
                start: xmin,
                len: n,
            });
        }
        Self {
            ksize,
            bounds,
            weights,
        }
    }

    /// The weights of output sample `i`.
    #[inline]
    pub(crate) fn taps(&self, i: usize) -> (Bounds, &[i32]) {
        let b = self.bounds[i];
        (b, &self.weights[i * self.ksize..][..b.len])
    }

    /// Makes every `start` relative to input sample `first` (Pillow's `ybox_first` shift).
    pub(crate) fn shift(&mut self, first: usize) {
        for b in &mut self.bounds {
            b.start -= first;
        }
    }
}

/// `normalize_coeffs_8bpc` for one weight: round half away from zero, truncating cast.
fn to_fixed(k: f64) -> i32 {
    let scaled = k * f64::from(1_u32 << PRECISION_BITS);
    if k < 0.0 {
        (-0.5 + scaled) as i32
    } else {
        (0.5 + scaled) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_halving() {
        // 4 -> 2: support 2, centers 1.0 and 3.0, weights 1/4 3/4 3/4 1/4 normalised.
        let c = Coefficients::new(4, 2, Filter::Bilinear);
        assert_eq!(c.ksize, 5);
        assert_eq!(c.bounds[0], Bounds { start: 0, len: 3 });
        let (_, w) = c.taps(0);
        let one = 1 << PRECISION_BITS;
        assert_eq!(w.iter().sum::<i32>(), one);
    }

    #[test]
    fn weights_sum_to_one() {
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            for (i, o) in [
                (512, 224),
                (48, 224),
                (37, 224),
                (451, 224),
                (3, 1000),
                (1000, 3),
                (1, 7),
            ] {
                let c = Coefficients::new(i, o, filter);
                for x in 0..o {
                    let (b, w) = c.taps(x);
                    assert!(b.start + b.len <= i);
                    let sum: i32 = w.iter().sum();
                    assert!(
                        (sum - (1 << PRECISION_BITS)).abs() <= w.len() as i32,
                        "{filter:?} {i}->{o} @{x}: {sum}"
                    );
                }
            }
        }
    }
}
