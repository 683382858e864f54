//! NEAREST as `Image.resize` does it: an affine transform with scale `in / out`
//! (`ImagingTransformAffine` -> `ImagingScaleAffine` in `libImaging/Geometry.c`). Source
//! coordinates are accumulated in `f64` from half a step, exactly as Pillow does, so the
//! picked pixels match Pillow's, rounding drift included.

/// Pillow's `COORD`: -1 for negative coordinates, else truncation.
fn coord(v: f64) -> i64 {
    if v < 0.0 {
        -1
    } else {
        v as i64
    }
}

pub(super) fn resize<const C: usize>(
    src: &[u8],
    (src_w, src_h): (u32, u32),
    dst: &mut [u8],
    (dst_w, dst_h): (u32, u32),
) {
    // `a[0] = (double)(box[2] - box[0]) / xsize` with a float box.
    let a0 = f64::from(src_w as f32 - 0.0) / f64::from(dst_w);
    let a4 = f64::from(src_h as f32 - 0.0) / f64::from(dst_h);
    let (src_w, src_h, dst_w) = (i64::from(src_w), i64::from(src_h), dst_w as usize);

    // Pretabulated source columns; columns outside the source stay black, and columns inside
    // [xmin, xmax) that fell outside read column 0 (Pillow's calloc'd table).
    let mut xintab = vec![0_usize; dst_w];
    let (mut xmin, mut xmax) = (dst_w, 0);
    let mut xo = 0.0 + a0 * 0.5;
    for (x, slot) in xintab.iter_mut().enumerate() {
        let xin = coord(xo);
        if (0..src_w).contains(&xin) {
            xmax = x + 1;
            xmin = xmin.min(x);
            *slot = xin as usize;
        }
        xo += a0;
    }

    let src_stride = src_w as usize * C;
    let mut yo = 0.0 + a4 * 0.5;
    for out_row in dst.chunks_exact_mut(dst_w * C) {
        out_row.fill(0);
        let yi = coord(yo);
        if (0..src_h).contains(&yi) {
            let in_row = &src[yi as usize * src_stride..][..src_stride];
            for x in xmin..xmax {
                let from = xintab[x] * C;
                out_row[x * C..][..C].copy_from_slice(&in_row[from..][..C]);
            }
        }
        yo += a4;
    }
}
