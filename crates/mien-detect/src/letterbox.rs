//! Fitting a frame into the detector's square input without distorting faces.

use mien_image::{Rect, Resample, RgbImage};
use mien_plan::ResampleFilter;

/// How a frame was placed in the detector input: scaled by the same factor on both axes and centred
/// between black bars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    input_width: f32,
    input_height: f32,
    pad_x: f32,
    pad_y: f32,
    scale_x: f32,
    scale_y: f32,
}

impl Letterbox {
    /// Resizes `frame` into an `input_width` x `input_height` canvas, keeping its aspect ratio.
    pub fn fit(frame: &RgbImage, input_width: u32, input_height: u32, filter: ResampleFilter) -> (RgbImage, Letterbox) {
        let (fw, fh) = (frame.width() as f32, frame.height() as f32);
        let scale = (input_width as f32 / fw).min(input_height as f32 / fh);
        let content_w = ((fw * scale).round() as u32).clamp(1, input_width);
        let content_h = ((fh * scale).round() as u32).clamp(1, input_height);
        let filter = match filter {
            ResampleFilter::Nearest => Resample::Nearest,
            ResampleFilter::Bilinear => Resample::Bilinear,
            ResampleFilter::Bicubic => Resample::Bicubic,
        };
        let content = mien_image::resize_rgb(frame, content_w, content_h, filter);
        let pad_x = (input_width - content_w) / 2;
        let pad_y = (input_height - content_h) / 2;
        let mut canvas = RgbImage::new(input_width, input_height);
        let row = content_w as usize * 3;
        let stride = input_width as usize * 3;
        for (y, src) in content.as_raw().chunks_exact(row).enumerate() {
            let start = (pad_y as usize + y) * stride + pad_x as usize * 3;
            canvas.as_mut()[start..start + row].copy_from_slice(src);
        }
        let letterbox = Letterbox {
            input_width: input_width as f32,
            input_height: input_height as f32,
            pad_x: pad_x as f32,
            pad_y: pad_y as f32,
            scale_x: content_w as f32 / fw,
            scale_y: content_h as f32 / fh,
        };
        (canvas, letterbox)
    }

    /// A point in normalised input coordinates, in frame pixels.
    pub fn point_to_frame(&self, x: f32, y: f32) -> (f32, f32) {
        ((x * self.input_width - self.pad_x) / self.scale_x, (y * self.input_height - self.pad_y) / self.scale_y)
    }

    /// A box in normalised input coordinates, in frame pixels.
    pub fn rect_to_frame(&self, rect: &Rect) -> Rect {
        let (x0, y0) = self.point_to_frame(rect.x, rect.y);
        let (x1, y1) = self.point_to_frame(rect.right(), rect.bottom());
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_frame_gets_bars_above_and_below_and_maps_back() {
        let frame = RgbImage::from_pixel(640, 480, image::Rgb([200, 100, 50]));
        let (canvas, lb) = Letterbox::fit(&frame, 128, 128, ResampleFilter::Bilinear);
        assert_eq!(canvas.dimensions(), (128, 128));
        // 640x480 -> 128x96, 16 rows of black above and below.
        assert_eq!(canvas.get_pixel(64, 15).0, [0, 0, 0]);
        assert_eq!(canvas.get_pixel(64, 16).0, [200, 100, 50]);
        assert_eq!(canvas.get_pixel(64, 111).0, [200, 100, 50]);
        assert_eq!(canvas.get_pixel(64, 112).0, [0, 0, 0]);
        // The content's corners map to the frame's corners.
        let (x, y) = lb.point_to_frame(0.0, 16.0 / 128.0);
        assert!(x.abs() < 1e-4 && y.abs() < 1e-4);
        let (x, y) = lb.point_to_frame(1.0, 112.0 / 128.0);
        assert!((x - 640.0).abs() < 1e-3 && (y - 480.0).abs() < 1e-3);
        let r = lb.rect_to_frame(&Rect::new(0.25, 0.25, 0.5, 0.5));
        assert!((r.width - 320.0).abs() < 1e-3 && (r.height - 320.0).abs() < 1e-3, "{r:?}");
    }

    #[test]
    fn tall_frame_gets_bars_left_and_right() {
        let frame = RgbImage::from_pixel(100, 200, image::Rgb([255, 255, 255]));
        let (canvas, lb) = Letterbox::fit(&frame, 128, 128, ResampleFilter::Bilinear);
        assert_eq!(canvas.get_pixel(31, 64).0, [0, 0, 0]);
        assert_eq!(canvas.get_pixel(32, 64).0, [255, 255, 255]);
        assert_eq!(canvas.get_pixel(95, 64).0, [255, 255, 255]);
        assert_eq!(canvas.get_pixel(96, 64).0, [0, 0, 0]);
        let (x, y) = lb.point_to_frame(0.5, 0.5);
        assert!((x - 50.0).abs() < 1e-3 && (y - 100.0).abs() < 1e-3);
    }
}
