//! Accuracy figures and model-to-model drift figures.

/// Confusion matrix over `n` classes: `counts[truth][predicted]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    counts: Vec<Vec<u64>>,
}

impl Confusion {
    /// An empty matrix for `n` classes.
    pub fn new(n: usize) -> Confusion {
        Confusion { counts: vec![vec![0; n]; n] }
    }

    /// Records one prediction.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    /// Rows are true classes, columns predicted classes.
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// Number of recorded predictions.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Fraction of correct predictions (0 when empty).
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        ratio(correct, self.total()).unwrap_or(0.0)
    }

    fn support(&self, class: usize) -> u64 {
        self.counts[class].iter().sum()
    }

    fn predicted(&self, class: usize) -> u64 {
        self.counts.iter().map(|row| row[class]).sum()
    }

    /// Recall of a class; `None` when the class has no true samples.
    pub fn recall(&self, class: usize) -> Option<f64> {
        ratio(self.counts[class][class], self.support(class))
    }

    /// Precision of a class; `None` when nothing was predicted as it.
    pub fn precision(&self, class: usize) -> Option<f64> {
        ratio(self.counts[class][class], self.predicted(class))
    }

    /// F1 of a class (0 when precision or recall is undefined or both are 0).
    pub fn f1(&self, class: usize) -> f64 {
        match (self.precision(class), self.recall(class)) {
            (Some(p), Some(r)) if p + r > 0.0 => 2.0 * p * r / (p + r),
            _ => 0.0,
        }
    }

    /// Mean F1 over the classes that occur as truth or prediction (scikit-learn's `average="macro"`).
    pub fn macro_f1(&self) -> f64 {
        let present: Vec<usize> =
            (0..self.counts.len()).filter(|&c| self.support(c) + self.predicted(c) > 0).collect();
        if present.is_empty() {
            return 0.0;
        }
        present.iter().map(|&c| self.f1(c)).sum::<f64>() / present.len() as f64
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Running drift figures between a reference model B and a candidate A on the same inputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drift {
    inputs: u64,
    agree: u64,
    kl_sum: f64,
    cosine_sum: f64,
    abs_diff_sum: f64,
    values: u64,
    max_abs_diff: f64,
}

/// Softmax in f64, for divergences that must not underflow.
fn softmax64(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

impl Drift {
    /// Adds one input's logits from A (candidate) and B (reference).
    pub fn add(&mut self, logits_a: &[f32], logits_b: &[f32]) {
        assert_eq!(logits_a.len(), logits_b.len(), "both plans have the same labels");
        self.inputs += 1;
        self.agree += (argmax(logits_a) == argmax(logits_b)) as u64;
        let (pa, pb) = (softmax64(logits_a), softmax64(logits_b));
        // KL(B || A): how much information A loses about B's distribution.
        self.kl_sum += pb
            .iter()
            .zip(&pa)
            .filter(|(b, _)| **b > 0.0)
            .map(|(b, a)| b * (b / a.max(f64::MIN_POSITIVE)).ln())
            .sum::<f64>();
        let dot: f64 = logits_a.iter().zip(logits_b).map(|(a, b)| *a as f64 * *b as f64).sum();
        let na: f64 = logits_a.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = logits_b.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        self.cosine_sum += if na > 0.0 && nb > 0.0 { dot / (na * nb) } else { (na == nb) as u8 as f64 };
        for (a, b) in logits_a.iter().zip(logits_b) {
            let d = (*a as f64 - *b as f64).abs();
            self.abs_diff_sum += d;
            self.max_abs_diff = self.max_abs_diff.max(d);
            self.values += 1;
        }
    }

    /// Inputs seen.
    pub fn inputs(&self) -> u64 {
        self.inputs
    }

    /// Fraction of inputs where A and B have the same top-1 class.
    pub fn agreement(&self) -> f64 {
        ratio(self.agree, self.inputs).unwrap_or(0.0)
    }

    /// Mean KL(B‖A) of the softmax distributions, in nats.
    pub fn mean_kl(&self) -> f64 {
        if self.inputs == 0 { 0.0 } else { self.kl_sum / self.inputs as f64 }
    }

    /// Mean cosine similarity of the logit vectors.
    pub fn logit_cosine(&self) -> f64 {
        if self.inputs == 0 { 0.0 } else { self.cosine_sum / self.inputs as f64 }
    }

    /// Mean absolute logit difference over all logits.
    pub fn mean_abs_diff(&self) -> f64 {
        if self.values == 0 { 0.0 } else { self.abs_diff_sum / self.values as f64 }
    }

    /// Largest absolute logit difference.
    pub fn max_abs_diff(&self) -> f64 {
        self.max_abs_diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_figures_match_hand_computation() {
        // truth:     0 0 0 1 1 2
        // predicted: 0 0 1 1 2 2
        let mut c = Confusion::new(3);
        for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (1, 2), (2, 2)] {
            c.add(t, p);
        }
        assert!((c.accuracy() - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(c.recall(0), Some(2.0 / 3.0));
        assert_eq!(c.recall(1), Some(0.5));
        assert_eq!(c.precision(2), Some(0.5));
        // F1: class 0: p=1, r=2/3 -> 0.8; class 1: p=.5 r=.5 -> .5; class 2: p=.5 r=1 -> 2/3
        let expected = (0.8 + 0.5 + 2.0 / 3.0) / 3.0;
        assert!((c.macro_f1() - expected).abs() < 1e-12, "{}", c.macro_f1());
    }

    #[test]
    fn absent_classes_do_not_count_in_macro_f1() {
        let mut c = Confusion::new(4);
        c.add(0, 0);
        c.add(1, 1);
        assert_eq!(c.macro_f1(), 1.0);
        assert_eq!(c.recall(3), None);
    }

    #[test]
    fn identical_models_do_not_drift() {
        let mut d = Drift::default();
        d.add(&[1.0, 2.0, -1.0], &[1.0, 2.0, -1.0]);
        assert_eq!(d.agreement(), 1.0);
        assert!(d.mean_kl().abs() < 1e-12);
        assert!((d.logit_cosine() - 1.0).abs() < 1e-12);
        assert_eq!(d.max_abs_diff(), 0.0);
    }

    #[test]
    fn drift_figures_match_hand_computation() {
        let mut d = Drift::default();
        d.add(&[0.0, 0.0], &[0.0, 2f32.ln()]); // pb = (1/3, 2/3), pa = (1/2, 1/2)
        let kl = (1.0f64 / 3.0) * ((1.0 / 3.0) / 0.5f64).ln() + (2.0 / 3.0) * ((2.0 / 3.0) / 0.5f64).ln();
        assert!((d.mean_kl() - kl).abs() < 1e-7);
        assert_eq!(d.agreement(), 0.0);
        assert!((d.max_abs_diff() - 2f64.ln()).abs() < 1e-6);
        assert!((d.mean_abs_diff() - 2f64.ln() / 2.0).abs() < 1e-6);
    }
}
