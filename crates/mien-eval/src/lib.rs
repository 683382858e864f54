//! Evaluation of plans on image folders: accuracy figures for one plan, drift figures between two.
//!
//! This is the drift engine the quantizer's gate uses. The JSON reports have stable, versioned schemas
//! (`mien.eval/1`, `mien.eval.compare/1`), documented in docs/COMMANDS.md.

mod dataset;
mod metrics;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use mien_runtime::{Classifier, Preprocessor, RuntimeError};
use serde::Serialize;

pub use dataset::{scan, Dataset, Item, LabelMap, UnknownFolder};
pub use metrics::{Confusion, Drift};

/// Schema id of [`EvalReport`] JSON.
pub const EVAL_SCHEMA: &str = "mien.eval/1";
/// Schema id of [`CompareReport`] JSON.
pub const COMPARE_SCHEMA: &str = "mien.eval.compare/1";

/// Evaluation errors. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A directory or file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The label map is malformed.
    #[error("{origin}: expected {expected}")]
    LabelMap {
        /// `--label-map` or the map file.
        origin: String,
        /// What was expected.
        expected: String,
    },
    /// Nothing to evaluate.
    #[error("{path}: no images to evaluate{}", if unknown.is_empty() { String::new() } else { format!(" (folders {} match no label of the plan; map them with --label-map FOLDER=LABEL)", unknown.join(", ")) })]
    Empty {
        /// The directory.
        path: PathBuf,
        /// Folders that matched no label.
        unknown: Vec<String>,
    },
    /// The two plans cannot be compared.
    #[error("plans {a} and {b} cannot be compared: {reason}")]
    Incomparable {
        /// First plan.
        a: String,
        /// Second plan.
        b: String,
        /// Why.
        reason: String,
    },
    /// Running a plan failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// An image that could not be decoded; reported, not counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unreadable {
    /// The file.
    pub file: PathBuf,
    /// The decoder's one-line error.
    pub error: String,
}

/// Figures of one plan on one image set (`mien eval PLAN DIR --json`).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Always [`EVAL_SCHEMA`].
    pub schema: &'static str,
    /// The plan evaluated.
    pub plan: PathBuf,
    /// The plan's labels, in output order (the order of `confusion`'s rows and columns).
    pub labels: Vec<String>,
    /// Images evaluated (decoded successfully).
    pub images: usize,
    /// Top-1 accuracy; null for unlabelled sets.
    pub accuracy: Option<f64>,
    /// Macro-averaged F1 over classes present as truth or prediction; null for unlabelled sets.
    pub macro_f1: Option<f64>,
    /// Recall per label; null for labels without images.
    pub recall: BTreeMap<String, Option<f64>>,
    /// `confusion[truth][predicted]` in label order; null for unlabelled sets.
    pub confusion: Option<Vec<Vec<u64>>>,
    /// Predicted label counts.
    pub predicted: BTreeMap<String, u64>,
    /// Throughput of the whole evaluation (decode, preprocess, infer).
    pub images_per_second: f64,
    /// Files that could not be decoded.
    pub unreadable: Vec<Unreadable>,
    /// Sub-folders that matched no label.
    pub unknown_folders: Vec<UnknownFolder>,
}

/// Drift of plan A against reference plan B (`mien eval A --against B DIR --json`).
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// Always [`COMPARE_SCHEMA`].
    pub schema: &'static str,
    /// The candidate plan (e.g. int8).
    pub plan_a: PathBuf,
    /// The reference plan (e.g. f32).
    pub plan_b: PathBuf,
    /// Images compared.
    pub images: usize,
    /// Fraction of images where A's and B's top-1 labels agree.
    pub agreement: f64,
    /// Mean KL(B‖A) of the softmax outputs, in nats.
    pub mean_kl: f64,
    /// Mean cosine similarity of the logit vectors.
    pub logit_cosine: f64,
    /// Mean absolute logit difference.
    pub mean_abs_diff: f64,
    /// Largest absolute logit difference.
    pub max_abs_diff: f64,
    /// A's accuracy; null for unlabelled sets.
    pub accuracy_a: Option<f64>,
    /// B's accuracy; null for unlabelled sets.
    pub accuracy_b: Option<f64>,
    /// Throughput (both plans per image).
    pub images_per_second: f64,
    /// Files that could not be decoded.
    pub unreadable: Vec<Unreadable>,
    /// Sub-folders that matched no label.
    pub unknown_folders: Vec<UnknownFolder>,
}

/// Decodes and preprocesses on a second thread while the caller's closure runs inference, so the
/// evaluation is bound by inference. Returns the files that could not be decoded.
fn run_pipeline(
    items: &[Item],
    preprocessors: Vec<Preprocessor>,
    progress: &dyn Fn(usize, usize),
    mut consume: impl FnMut(&Item, Vec<Vec<f32>>) -> Result<(), EvalError>,
) -> Result<Vec<Unreadable>, EvalError> {
    let mut unreadable = vec![];
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        scope.spawn(move || {
            for item in items {
                let decoded = mien_image::open_rgb(&item.path)
                    .map(|image| preprocessors.iter().map(|p| p.run(&image)).collect::<Vec<_>>());
                if tx.send((item, decoded)).is_err() {
                    break; // the consumer stopped on an error
                }
            }
        });
        for (done, (item, decoded)) in rx.into_iter().enumerate() {
            match decoded {
                Ok(inputs) => consume(item, inputs)?,
                Err(e) => unreadable.push(Unreadable { file: item.path.clone(), error: e.to_string() }),
            }
            progress(done + 1, items.len());
        }
        Ok(unreadable)
    })
}

/// Evaluates one plan on a dataset.
pub fn evaluate(classifier: &Classifier, dataset: &Dataset, progress: &dyn Fn(usize, usize)) -> Result<EvalReport, EvalError> {
    let labels = classifier.labels().to_vec();
    let mut confusion = Confusion::new(labels.len());
    let mut predicted = vec![0u64; labels.len()];
    let mut images = 0usize;
    let start = Instant::now();
    let unreadable = run_pipeline(&dataset.items, vec![classifier.preprocessor().clone()], progress, |item, inputs| {
        let result = classifier.classify_input(&inputs[0])?;
        predicted[result.index] += 1;
        if let Some(truth) = item.label {
            confusion.add(truth, result.index);
        }
        images += 1;
        Ok(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let labelled = dataset.is_labelled() && confusion.total() > 0;
    Ok(EvalReport {
        schema: EVAL_SCHEMA,
        plan: classifier.plan().path().to_path_buf(),
        images,
        accuracy: labelled.then(|| confusion.accuracy()),
        macro_f1: labelled.then(|| confusion.macro_f1()),
        recall: if labelled {
            labels.iter().enumerate().map(|(i, l)| (l.clone(), confusion.recall(i))).collect()
        } else {
            BTreeMap::new()
        },
        confusion: labelled.then(|| confusion.counts().to_vec()),
        predicted: labels.iter().cloned().zip(predicted).collect(),
        images_per_second: images as f64 / seconds.max(1e-9),
        labels,
        unreadable,
        unknown_folders: dataset.unknown_folders.clone(),
    })
}

/// Compares candidate plan A with reference plan B on a dataset. Both must have the same labels in
/// the same order; each uses its own preprocessing.
pub fn compare(a: &Classifier, b: &Classifier, dataset: &Dataset, progress: &dyn Fn(usize, usize)) -> Result<CompareReport, EvalError> {
    if a.labels() != b.labels() {
        return Err(EvalError::Incomparable {
            a: a.plan().path().display().to_string(),
            b: b.plan().path().display().to_string(),
            reason: format!("labels differ ({} vs {})", a.labels().join(","), b.labels().join(",")),
        });
    }
    let n = a.labels().len();
    let mut drift = Drift::default();
    let (mut conf_a, mut conf_b) = (Confusion::new(n), Confusion::new(n));
    let start = Instant::now();
    let preprocessors = vec![a.preprocessor().clone(), b.preprocessor().clone()];
    let unreadable = run_pipeline(&dataset.items, preprocessors, progress, |item, inputs| {
        let la = a.run_logits(&inputs[0])?;
        let lb = b.run_logits(&inputs[1])?;
        if let Some(truth) = item.label {
            conf_a.add(truth, mien_runtime::top_k(&la, 1)[0].0);
            conf_b.add(truth, mien_runtime::top_k(&lb, 1)[0].0);
        }
        drift.add(&la, &lb);
        Ok(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let labelled = dataset.is_labelled() && conf_a.total() > 0;
    Ok(CompareReport {
        schema: COMPARE_SCHEMA,
        plan_a: a.plan().path().to_path_buf(),
        plan_b: b.plan().path().to_path_buf(),
        images: drift.inputs() as usize,
        agreement: drift.agreement(),
        mean_kl: drift.mean_kl(),
        logit_cosine: drift.logit_cosine(),
        mean_abs_diff: drift.mean_abs_diff(),
        max_abs_diff: drift.max_abs_diff(),
        accuracy_a: labelled.then(|| conf_a.accuracy()),
        accuracy_b: labelled.then(|| conf_b.accuracy()),
        images_per_second: drift.inputs() as f64 / seconds.max(1e-9),
        unreadable,
        unknown_folders: dataset.unknown_folders.clone(),
    })
}
