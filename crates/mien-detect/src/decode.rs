//! Raw detector output to scored boxes, and the weighted overlap merge MediaPipe applies.

use mien_image::Rect;
use mien_plan::DetectorSpec;

use crate::anchors::Anchor;

/// One detection in normalised input coordinates ([0, 1] across the model's input).
#[derive(Debug, Clone, PartialEq)]
pub struct RawDetection {
    /// Box.
    pub rect: Rect,
    /// Face probability.
    pub score: f32,
    /// Keypoints (x, y).
    pub keypoints: Vec<(f32, f32)>,
}

/// Decodes every anchor whose score reaches `min_score`. `output` holds
/// `anchors.len() * spec.values_per_anchor()` values; offsets are in input pixels, so they are divided
/// by the input's `width` and `height`.
pub fn decode(
    output: &[f32],
    anchors: &[Anchor],
    spec: &DetectorSpec,
    width: usize,
    height: usize,
    min_score: f32,
) -> Vec<RawDetection> {
    let per_anchor = spec.values_per_anchor();
    debug_assert_eq!(output.len(), anchors.len() * per_anchor);
    let (w, h) = (width as f32, height as f32);
    let mut found = Vec::new();
    for (values, anchor) in output.chunks_exact(per_anchor).zip(anchors) {
        let logit = values[per_anchor - 1].clamp(-spec.score_clip, spec.score_clip);
        let score = 1.0 / (1.0 + (-logit).exp());
        // NaN scores fail this comparison and are dropped with the low ones.
        if !(score >= min_score) {
            continue;
        }
        let rect = Rect::from_center(values[0] / w + anchor.x, values[1] / h + anchor.y, values[2] / w, values[3] / h);
        let keypoints =
            (0..spec.keypoints).map(|k| (values[4 + 2 * k] / w + anchor.x, values[5 + 2 * k] / h + anchor.y)).collect();
        found.push(RawDetection { rect, score, keypoints });
    }
    found
}

/// Weighted non-maximum suppression: the best remaining detection absorbs every other one that
/// overlaps it by more than `iou`; the merged box and keypoints are the score-weighted mean of the
/// group, with the best one's score. This steadies boxes across frames more than plain suppression.
pub fn weighted_nms(mut detections: Vec<RawDetection>, iou: f32) -> Vec<RawDetection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut merged = Vec::new();
    while !detections.is_empty() {
        let best = detections[0].rect;
        let (group, rest): (Vec<_>, Vec<_>) =
            detections.into_iter().partition(|d| d.rect.iou(&best) > iou || d.rect == best);
        detections = rest;
        let total: f32 = group.iter().map(|d| d.score).sum();
        let mean = |f: &dyn Fn(&RawDetection) -> f32| group.iter().map(|d| f(d) * d.score).sum::<f32>() / total;
        let (x0, y0) = (mean(&|d| d.rect.x), mean(&|d| d.rect.y));
        let (x1, y1) = (mean(&|d| d.rect.right()), mean(&|d| d.rect.bottom()));
        let keypoints =
            (0..group[0].keypoints.len()).map(|k| (mean(&|d| d.keypoints[k].0), mean(&|d| d.keypoints[k].1))).collect();
        merged.push(RawDetection { rect: Rect::new(x0, y0, x1 - x0, y1 - y0), score: group[0].score, keypoints });
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anchors::generate;
    use mien_plan::AnchorLayer;

    fn spec() -> DetectorSpec {
        DetectorSpec {
            anchor_layers: vec![AnchorLayer { stride: 64, per_cell: 1 }],
            anchor_offset: 0.5,
            keypoints: 1,
            score_clip: 100.0,
            min_score: 0.5,
            nms_iou: 0.3,
        }
    }

    #[test]
    fn decodes_offsets_relative_to_anchors_and_filters_scores() {
        let spec = spec();
        // 128x128 input, stride 64: a 2x2 grid, anchors at 0.25 and 0.75.
        let anchors = generate(&spec, 128, 128);
        assert_eq!(anchors.len(), 4);
        let mut out = vec![0f32; 4 * 7];
        // Anchor 3 (bottom-right): centre moved by (+12.8, -6.4) px, 32x64 px, keypoint at +(6.4, 0), logit 2.
        out[3 * 7..4 * 7].copy_from_slice(&[12.8, -6.4, 32.0, 64.0, 6.4, 0.0, 2.0]);
        // Anchor 0: logit -2 (score 0.12), below the threshold.
        out[6] = -2.0;
        // Anchor 1: NaN score, dropped.
        out[7 + 6] = f32::NAN;
        // Anchor 2: logit exactly 0 = score 0.5, kept (>= threshold).
        let found = decode(&out, &anchors, &spec, 128, 128, 0.5);
        assert_eq!(found.len(), 2);
        let d = &found[1];
        assert!((d.score - 1.0 / (1.0 + (-2f32).exp())).abs() < 1e-6);
        let (cx, cy) = d.rect.center();
        assert!((cx - 0.85).abs() < 1e-6 && (cy - 0.70).abs() < 1e-6, "{cx} {cy}");
        assert!((d.rect.width - 0.25).abs() < 1e-6 && (d.rect.height - 0.5).abs() < 1e-6);
        assert!((d.keypoints[0].0 - 0.80).abs() < 1e-6 && (d.keypoints[0].1 - 0.75).abs() < 1e-6);
        assert_eq!(found[0].score, 0.5);
    }

    #[test]
    fn score_logits_are_clipped() {
        let mut spec = spec();
        spec.score_clip = 1.0;
        let anchors = generate(&spec, 128, 128);
        let mut out = vec![0f32; 4 * 7];
        out[6] = 1000.0;
        let found = decode(&out, &anchors, &spec, 128, 128, 0.6);
        assert_eq!(found.len(), 1);
        assert!((found[0].score - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
    }

    fn det(x: f32, score: f32) -> RawDetection {
        RawDetection { rect: Rect::new(x, 0.0, 10.0, 10.0), score, keypoints: vec![(x, 1.0)] }
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_separate_faces() {
        // Two overlapping boxes (IoU 0.67) and one far away.
        let merged = weighted_nms(vec![det(2.0, 0.6), det(0.0, 0.9), det(100.0, 0.7)], 0.3);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].score, 0.9);
        // Score-weighted left edge: (0 * 0.9 + 2 * 0.6) / 1.5 = 0.8.
        assert!((merged[0].rect.x - 0.8).abs() < 1e-6);
        assert!((merged[0].rect.width - 10.0).abs() < 1e-5);
        assert!((merged[0].keypoints[0].0 - 0.8).abs() < 1e-6);
        assert_eq!(merged[1].rect.x, 100.0);
        assert_eq!(merged[1].score, 0.7);
        assert!(weighted_nms(vec![], 0.3).is_empty());
    }

    #[test]
    fn weighted_nms_threshold_is_strict() {
        // IoU of boxes shifted by 5 is 1/3: merged at 0.3, kept apart at 0.4.
        assert_eq!(weighted_nms(vec![det(0.0, 0.9), det(5.0, 0.8)], 0.3).len(), 1);
        assert_eq!(weighted_nms(vec![det(0.0, 0.9), det(5.0, 0.8)], 0.4).len(), 2);
    }
}
