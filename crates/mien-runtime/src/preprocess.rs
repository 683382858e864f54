//! Image to input tensor, with the arithmetic of Hugging Face's image processors (Pillow path).

use mien_image::{Resample, RgbImage};
use mien_plan::{ColorOrder, InputSpec, Layout, Preprocessing, ResampleFilter};

/// Turns RGB images into the flat `f32` input a plan expects.
///
/// Per channel, a 256-entry table holds `((v as f64 * rescale) as f32 - mean) / std`: the same float64
/// rescale then float32 normalise that `ViTImageProcessor` performs, so values match it to the last bit.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    height: u32,
    width: u32,
    filter: Resample,
    layout: Layout,
    channels: usize,
    color_order: ColorOrder,
    tables: Vec<[f32; 256]>,
}

impl Preprocessor {
    /// Builds the preprocessor a plan's manifest describes.
    pub fn new(pre: &Preprocessing, input: &InputSpec) -> Preprocessor {
        let tables = (0..input.channels)
            .map(|c| {
                let mut table = [0f32; 256];
                for (v, slot) in table.iter_mut().enumerate() {
                    let rescaled = (v as f64 * pre.rescale_factor) as f32;
                    *slot = (rescaled - pre.mean[c]) / pre.std[c];
                }
                table
            })
            .collect();
        Preprocessor {
            height: pre.height as u32,
            width: pre.width as u32,
            filter: match pre.resample {
                ResampleFilter::Nearest => Resample::Nearest,
                ResampleFilter::Bilinear => Resample::Bilinear,
                ResampleFilter::Bicubic => Resample::Bicubic,
            },
            layout: input.layout,
            channels: input.channels,
            color_order: pre.color_order,
            tables,
        }
    }

    /// Number of `f32` values in one input tensor.
    pub fn len(&self) -> usize {
        self.height as usize * self.width as usize * self.channels
    }

    /// Never true: a plan's input has at least one pixel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resizes (Pillow-exact) and normalises an image into `out`, which must hold [`Self::len`] values.
    /// One-channel models see Pillow's `convert("L")` of the image, taken before the resize.
    pub fn run_into(&self, image: &RgbImage, out: &mut [f32]) {
        assert_eq!(out.len(), self.len(), "output buffer size");
        let plane = self.height as usize * self.width as usize;
        if self.channels == 1 {
            let gray = mien_image::rgb_to_luma_pillow(image);
            let resized = mien_image::resize_gray(&gray, self.width, self.height, self.filter);
            let table = &self.tables[0];
            for (o, v) in out.iter_mut().zip(resized.as_raw()) {
                *o = table[*v as usize];
            }
            return;
        }
        let resized = mien_image::resize_rgb(image, self.width, self.height, self.filter);
        let source_channel = |c: usize| match self.color_order {
            ColorOrder::Rgb => c,
            ColorOrder::Bgr => 2 - c,
        };
        let pixels = resized.as_raw().chunks_exact(3);
        match self.layout {
            Layout::Nchw => {
                for (i, px) in pixels.enumerate() {
                    for c in 0..3 {
                        out[c * plane + i] = self.tables[c][px[source_channel(c)] as usize];
                    }
                }
            }
            Layout::Nhwc => {
                for (o, px) in out.chunks_exact_mut(3).zip(pixels) {
                    for c in 0..3 {
                        o[c] = self.tables[c][px[source_channel(c)] as usize];
                    }
                }
            }
        }
    }

    /// Allocating variant of [`Self::run_into`].
    pub fn run(&self, image: &RgbImage) -> Vec<f32> {
        let mut out = vec![0f32; self.len()];
        self.run_into(image, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mien_plan::DType;

    fn spec(layout: Layout, channels: usize) -> (Preprocessing, InputSpec) {
        let pre = Preprocessing {
            height: 2,
            width: 2,
            resample: ResampleFilter::Bilinear,
            rescale_factor: 1.0 / 255.0,
            mean: vec![0.5; channels],
            std: vec![0.5; channels],
            color_order: ColorOrder::Rgb,
        };
        let shape = match layout {
            Layout::Nchw => vec![1, channels, 2, 2],
            Layout::Nhwc => vec![1, 2, 2, channels],
        };
        (
            pre,
            InputSpec {
                name: "x".into(),
                shape,
                dtype: DType::F32,
                layout,
                channels,
            },
        )
    }

    fn image() -> RgbImage {
        RgbImage::from_raw(2, 2, vec![0, 255, 51, 255, 0, 0, 0, 255, 0, 0, 0, 255]).unwrap()
    }

    #[test]
    fn nchw_planes_and_normalisation() {
        let (pre, input) = spec(Layout::Nchw, 3);
        let out = Preprocessor::new(&pre, &input).run(&image());
        assert_eq!(&out[0..4], &[-1.0, 1.0, -1.0, -1.0]); // red plane
        assert_eq!(&out[4..8], &[1.0, -1.0, 1.0, -1.0]); // green plane
        assert!((out[8] - (-0.6)).abs() < 1e-6); // 51/255 = 0.2 -> (0.2-0.5)/0.5
    }

    #[test]
    fn nhwc_interleaves_and_bgr_swaps() {
        let (mut pre, input) = spec(Layout::Nhwc, 3);
        pre.color_order = ColorOrder::Bgr;
        let out = Preprocessor::new(&pre, &input).run(&image());
        assert!((out[0] - (-0.6)).abs() < 1e-6);
        assert_eq!(&out[1..3], &[1.0, -1.0]);
    }

    #[test]
    fn grayscale_uses_pillow_luma() {
        let (pre, input) = spec(Layout::Nhwc, 1);
        let out = Preprocessor::new(&pre, &input).run(&image());
        // Pillow L of pure red = (255*19595 + 0x8000) >> 16 = 76.
        let expected = ((76.0f64 / 255.0) as f32 - 0.5) / 0.5;
        assert_eq!(out[1], expected);
    }
}
