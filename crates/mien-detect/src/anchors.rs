//! SSD anchor centres, in the order the detector's output lists them.

use mien_plan::DetectorSpec;

/// An anchor centre in normalised input coordinates ([0, 1] across the model's input).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    /// Centre x.
    pub x: f32,
    /// Centre y.
    pub y: f32,
}

/// All anchors for an input of `height` x `width`: layer by layer, row by row, cell by cell, then the
/// cell's anchors (MediaPipe's SsdAnchorsCalculator order). BlazeFace anchors have a fixed unit size,
/// so only the centre matters.
pub fn generate(spec: &DetectorSpec, height: usize, width: usize) -> Vec<Anchor> {
    let mut anchors = Vec::with_capacity(spec.anchor_count(height, width));
    for layer in &spec.anchor_layers {
        let rows = height.div_ceil(layer.stride);
        let cols = width.div_ceil(layer.stride);
        for row in 0..rows {
            for col in 0..cols {
                let x = (col as f32 + spec.anchor_offset) / cols as f32;
                let y = (row as f32 + spec.anchor_offset) / rows as f32;
                anchors.extend(std::iter::repeat_n(Anchor { x, y }, layer.per_cell));
            }
        }
    }
    anchors
}

#[cfg(test)]
mod tests {
    use super::*;
    use mien_plan::AnchorLayer;

    pub(crate) fn blazeface_short() -> DetectorSpec {
        DetectorSpec {
            anchor_layers: vec![AnchorLayer { stride: 8, per_cell: 2 }, AnchorLayer { stride: 16, per_cell: 6 }],
            anchor_offset: 0.5,
            keypoints: 6,
            score_clip: 100.0,
            min_score: 0.5,
            nms_iou: 0.3,
        }
    }

    #[test]
    fn blazeface_short_range_has_896_anchors_in_mediapipe_order() {
        let anchors = generate(&blazeface_short(), 128, 128);
        assert_eq!(anchors.len(), 896);
        // First cell of the 16x16 grid, twice.
        assert_eq!(anchors[0], Anchor { x: 0.5 / 16.0, y: 0.5 / 16.0 });
        assert_eq!(anchors[1], anchors[0]);
        // Second cell along the row.
        assert_eq!(anchors[2], Anchor { x: 1.5 / 16.0, y: 0.5 / 16.0 });
        // Last anchor of the first layer: bottom-right cell.
        assert_eq!(anchors[511], Anchor { x: 15.5 / 16.0, y: 15.5 / 16.0 });
        // Second layer: 8x8 cells, 6 anchors each.
        assert_eq!(anchors[512], Anchor { x: 0.5 / 8.0, y: 0.5 / 8.0 });
        assert_eq!(anchors[517], anchors[512]);
        assert_eq!(anchors[518], Anchor { x: 1.5 / 8.0, y: 0.5 / 8.0 });
        assert_eq!(anchors[895], Anchor { x: 7.5 / 8.0, y: 7.5 / 8.0 });
    }
}
