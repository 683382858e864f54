//! Boxes in image coordinates and the square face crop.

use image::RgbImage;
use serde::Serialize;

/// An axis-aligned box in pixels (floating point: detections are sub-pixel).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Rect {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width (never negative for boxes this crate makes).
    pub width: f32,
    /// Height.
    pub height: f32,
}

impl Rect {
    /// A box from its left, top, width and height.
    pub fn new(x: f32, y: f32, width: f32, height: f32) -> Rect {
        Rect { x, y, width, height }
    }

    /// A box from its centre and size.
    pub fn from_center(cx: f32, cy: f32, width: f32, height: f32) -> Rect {
        Rect { x: cx - width / 2.0, y: cy - height / 2.0, width, height }
    }

    /// Right edge.
    pub fn right(&self) -> f32 {
        self.x + self.width
    }

    /// Bottom edge.
    pub fn bottom(&self) -> f32 {
        self.y + self.height
    }

    /// Centre point.
    pub fn center(&self) -> (f32, f32) {
        (self.x + self.width / 2.0, self.y + self.height / 2.0)
    }

    /// Area; zero for degenerate boxes.
    pub fn area(&self) -> f32 {
        self.width.max(0.0) * self.height.max(0.0)
    }

    /// Area of the overlap with `other`.
    pub fn intersection(&self, other: &Rect) -> f32 {
        let w = self.right().min(other.right()) - self.x.max(other.x);
        let h = self.bottom().min(other.bottom()) - self.y.max(other.y);
        w.max(0.0) * h.max(0.0)
    }

    /// Intersection over union, in [0, 1]; 0 when either box is empty.
    pub fn iou(&self, other: &Rect) -> f32 {
        let inter = self.intersection(other);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }

    /// The square, whole-pixel region to crop for a face in this box: the longer side grown by
    /// `margin` of itself on every side, centred on the box, then moved (never distorted) to lie inside
    /// a `frame_width` x `frame_height` frame; if the frame is too small, the square is the frame's
    /// shorter side. Returns `None` for an empty frame.
    pub fn square_crop(&self, margin: f32, frame_width: u32, frame_height: u32) -> Option<PixelRect> {
        if frame_width == 0 || frame_height == 0 {
            return None;
        }
        let longest = self.width.max(self.height).max(1.0);
        let wanted = (longest * (1.0 + 2.0 * margin.max(0.0))).round().max(1.0);
        let side = (wanted as u32).min(frame_width).min(frame_height);
        let (cx, cy) = self.center();
        let place = |centre: f32, limit: u32| -> u32 {
            let start = (centre - side as f32 / 2.0).round();
            start.clamp(0.0, (limit - side) as f32) as u32
        };
        Some(PixelRect { x: place(cx, frame_width), y: place(cy, frame_height), width: side, height: side })
    }
}

/// A whole-pixel region of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PixelRect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
}

/// Copies `region` out of `src`. The region is clipped to the image, so the result may be smaller.
pub fn crop_rgb(src: &RgbImage, region: PixelRect) -> RgbImage {
    let x = region.x.min(src.width());
    let y = region.y.min(src.height());
    let width = region.width.min(src.width() - x);
    let height = region.height.min(src.height() - y);
    let mut out = RgbImage::new(width, height);
    let row_bytes = width as usize * 3;
    let stride = src.width() as usize * 3;
    for (row, dst) in out.chunks_exact_mut(row_bytes.max(1)).enumerate().take(height as usize) {
        let start = (y as usize + row) * stride + x as usize * 3;
        dst.copy_from_slice(&src.as_raw()[start..start + row_bytes]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        let a = Rect::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&Rect::new(20.0, 0.0, 10.0, 10.0)), 0.0);
        // Half overlap: intersection 50, union 150.
        assert!((a.iou(&Rect::new(5.0, 0.0, 10.0, 10.0)) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(Rect::default().iou(&Rect::default()), 0.0);
    }

    #[test]
    fn square_crop_grows_centres_and_stays_inside() {
        // A 40x60 face at the middle of a 640x480 frame, 25 % margin: side 60 * 1.5 = 90.
        let face = Rect::new(300.0, 200.0, 40.0, 60.0);
        let crop = face.square_crop(0.25, 640, 480).unwrap();
        assert_eq!((crop.width, crop.height), (90, 90));
        assert_eq!((crop.x, crop.y), (275, 185));
        // Near the top-left corner the square moves inside rather than shrinking.
        let corner = Rect::new(-5.0, 2.0, 40.0, 40.0).square_crop(0.25, 640, 480).unwrap();
        assert_eq!((corner.x, corner.y, corner.width), (0, 0, 60));
        // Bottom-right corner.
        let far = Rect::new(620.0, 460.0, 40.0, 40.0).square_crop(0.25, 640, 480).unwrap();
        assert_eq!((far.x + far.width, far.y + far.height), (640, 480));
        // Larger than the frame: the frame's shorter side.
        let huge = Rect::new(0.0, 0.0, 600.0, 600.0).square_crop(0.5, 640, 480).unwrap();
        assert_eq!((huge.width, huge.height, huge.y), (480, 480, 0));
        assert!(face.square_crop(0.25, 0, 480).is_none());
    }

    #[test]
    fn crop_copies_the_region_and_clips() {
        let src = RgbImage::from_fn(8, 6, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let out = crop_rgb(&src, PixelRect { x: 2, y: 1, width: 3, height: 4 });
        assert_eq!(out.dimensions(), (3, 4));
        assert_eq!(out.get_pixel(0, 0).0, [2, 1, 7]);
        assert_eq!(out.get_pixel(2, 3).0, [4, 4, 7]);
        let clipped = crop_rgb(&src, PixelRect { x: 6, y: 4, width: 5, height: 5 });
        assert_eq!(clipped.dimensions(), (2, 2));
        assert_eq!(clipped.get_pixel(1, 1).0, [7, 5, 7]);
        let outside = crop_rgb(&src, PixelRect { x: 9, y: 9, width: 5, height: 5 });
        assert_eq!(outside.dimensions(), (0, 0));
    }
}
