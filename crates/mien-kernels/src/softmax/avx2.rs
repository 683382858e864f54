//! x86-64 AVX2 + FMA kernel: eight lanes, the scalar reference's arithmetic.

use std::arch::x86_64::*;

use super::scalar::{exp_non_positive, EXP_POLY, EXP_UNDERFLOW, LN2_HI, LN2_LO, LOG2_E};

/// Name of this kernel in `mien info` and the load log.
pub const NAME: &str = "mien_avx2_fma_softmax";

/// Softmax of one row, in place. The caller must have checked that the CPU has AVX2 and FMA.
pub fn softmax_row(row: &mut [f32]) {
    // SAFETY: `crate::dispatch::softmax_row` hands this kernel out only after `is_x86_feature_detected!` saw AVX2 and FMA.
    unsafe { softmax_row_avx2(row) }
}

/// `e^x` for eight `x ≤ 0`.
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    let underflow = _mm256_cmp_ps::<_CMP_NGE_UQ>(x, _mm256_set1_ps(EXP_UNDERFLOW));
    let x = _mm256_max_ps(x, _mm256_set1_ps(EXP_UNDERFLOW));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(
        n,
        _mm256_set1_ps(LN2_LO),
        _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x),
    );
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
    }
    let e = _mm256_add_ps(
        _mm256_fmadd_ps(_mm256_mul_ps(r, r), p, r),
        _mm256_set1_ps(1.0),
    );
    let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    )));
    _mm256_andnot_ps(underflow, _mm256_mul_ps(e, pow2))
}

#[target_feature(enable = "avx2,fma")]
fn horizontal_max(v: __m256) -> f32 {
    let quad = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pair = _mm_max_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_max_ps(pair, _mm_shuffle_ps::<1>(pair, pair)))
}

#[target_feature(enable = "avx2,fma")]
fn horizontal_sum(v: __m256) -> f32 {
    let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_add_ps(pair, _mm_shuffle_ps::<1>(pair, pair)))
}

#[target_feature(enable = "avx2,fma")]
fn softmax_row_avx2(row: &mut [f32]) {
    let (body, tail) = row.split_at_mut(row.len() - row.len() % 8);
    // SAFETY: every pointer below is `body`'s, advanced by whole chunks of 8 within its length (`body`
    // is a multiple of 8 long); unaligned loads and stores are used throughout.
    unsafe {
        let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
        for chunk in body.chunks_exact(8) {
            vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(chunk.as_ptr()));
        }
        let max = tail.iter().fold(horizontal_max(vmax), |m, v| m.max(*v));
        let vmax = _mm256_set1_ps(max);
        let mut vsum = _mm256_setzero_ps();
        for chunk in body.chunks_exact_mut(8) {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(chunk.as_ptr()), vmax));
            _mm256_storeu_ps(chunk.as_mut_ptr(), e);
            vsum = _mm256_add_ps(vsum, e);
        }
        let mut sum = horizontal_sum(vsum);
        for v in tail.iter_mut() {
            *v = exp_non_positive(*v - max);
            sum += *v;
        }
        let inv = sum.recip();
        let vinv = _mm256_set1_ps(inv);
        for chunk in body.chunks_exact_mut(8) {
            _mm256_storeu_ps(
                chunk.as_mut_ptr(),
                _mm256_mul_ps(_mm256_loadu_ps(chunk.as_ptr()), vinv),
            );
        }
        tail.iter_mut().for_each(|v| *v *= inv);
    }
}
