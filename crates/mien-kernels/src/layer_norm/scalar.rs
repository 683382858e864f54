//! The reference LayerNorm: the arithmetic a SIMD version must follow (sums in eight lanes, added at the
//! end).

/// Sum of `term(v)` over a slice, in eight lanes (vectorizable), the lanes added at the end.
fn slice_sum(row: &[f32], term: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += term(v);
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *lane += term(v);
    }
    lanes.iter().sum()
}

/// Normalizes each row of `n` values of `data` in place: `(x − mean) / sqrt(var + eps) · scale + offset`,
/// the mean and (biased) variance summed in eight lanes.
pub fn normalize_rows(data: &mut [f32], n: usize, eps: f32, scale: Option<&[f32]>, offset: Option<&[f32]>) {
    let count = n as f32;
    for row in data.chunks_exact_mut(n) {
        let mean = slice_sum(row, |v| v) / count;
        let variance = slice_sum(row, |v| (v - mean) * (v - mean)) / count;
        let inv = 1.0 / (variance + eps).sqrt();
        match (scale, offset) {
            (Some(s), Some(o)) => row
                .iter_mut()
                .zip(s)
                .zip(o)
                .for_each(|((x, s), o)| *x = (*x - mean) * inv * s + o),
            (Some(s), None) => row
                .iter_mut()
                .zip(s)
                .for_each(|(x, s)| *x = (*x - mean) * inv * s),
            (None, Some(o)) => row
                .iter_mut()
                .zip(o)
                .for_each(|(x, o)| *x = (*x - mean) * inv + o),
            (None, None) => row.iter_mut().for_each(|x| *x = (*x - mean) * inv),
        }
    }
}

/// Normalizes `data`, laid out as `[outer, n, inner]` (channel-major: each of the `inner` columns of a
/// block is one row of `n` values, `inner` apart), in place: the statistics of all `inner` columns at once,
/// a channel's row of them at a time.
pub fn normalize_columns(
    data: &mut [f32],
    n: usize,
    inner: usize,
    eps: f32,
    scale: Option<&[f32]>,
    offset: Option<&[f32]>,
) {
    let count = n as f32;
    let (mut mean, mut inv) = (vec![0f32; inner], vec![0f32; inner]);
    for block in data.chunks_exact_mut(n * inner) {
        mean.fill(0.0);
        for channel in block.chunks_exact(inner) {
            mean.iter_mut().zip(channel).for_each(|(m, &v)| *m += v);
        }
        mean.iter_mut().for_each(|m| *m /= count);
        inv.fill(0.0);
        for channel in block.chunks_exact(inner) {
            inv.iter_mut()
                .zip(channel)
                .zip(&mean)
                .for_each(|((s, &v), &m)| *s += (v - m) * (v - m));
        }
        inv.iter_mut()
            .for_each(|s| *s = 1.0 / (*s / count + eps).sqrt());
        for (c, channel) in block.chunks_exact_mut(inner).enumerate() {
            let (s, o) = (
                scale.map(|s| s[c]).unwrap_or(1.0),
                offset.map(|o| o[c]).unwrap_or(0.0),
            );
            channel
                .iter_mut()
                .zip(&mean)
                .zip(&inv)
                .for_each(|((x, &m), &i)| *x = (*x - m) * i * s + o);
        }
    }
}
