//! The int8 step of the offline path: calibration images through the model's own preprocessing, then
//! [`mien_quantize`] (layer planning and the graph rewrite), then the drift check of the written plan
//! against the float plan on held-out images.

use std::path::{Path, PathBuf};

use mien_plan::{Drift, FloatLayer, Manifest, Quantization};
use mien_quantize::{ActivationMode, LayerDecision, QuantizeOptions, Smoothing};
use mien_runtime::{Classifier, Preprocessor, RuntimeOptions};
use tract_core::internal::*;

use crate::{ConvertError, Progress};

/// Settings of an int8 conversion.
#[derive(Debug, Clone)]
pub struct QuantizeSettings {
    /// Folder of calibration images (searched recursively).
    pub calibrate: PathBuf,
    /// How many calibration images to use, spread evenly over the sorted file list.
    pub calibration_count: usize,
    /// Held-out images (`DIR/<label>/*` or unlabelled) for the drift report and gate.
    pub validate: Option<PathBuf>,
    /// Use at most this many validation images, spread evenly (None: all).
    pub validation_count: Option<usize>,
    /// The gate: fail when top-1 agreement with the float plan is below this fraction.
    pub min_agreement: f64,
    /// Quantizer settings.
    pub options: QuantizeOptions,
    /// Store and run the matmuls that stay in float in f16 ([`crate::half::float_matmuls_to_f16`]).
    pub f16_float_matmuls: bool,
}

impl Default for QuantizeSettings {
    fn default() -> Self {
        QuantizeSettings {
            calibrate: PathBuf::new(),
            calibration_count: 256,
            validate: None,
            validation_count: None,
            min_agreement: 0.99,
            options: QuantizeOptions::default(),
            f16_float_matmuls: false,
        }
    }
}

/// Rows sampled per activation during calibration (percentile/MSE scales, GPTQ's Hessian and the error
/// simulation).
const SAMPLE_ROWS: usize = 2048;

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp"];

/// Image files under `dir`, sorted, thinned to `count` spread evenly over the list (so class folders are
/// all represented).
pub fn pick_images(dir: &Path, count: Option<usize>, flag: &str) -> Result<Vec<PathBuf>, ConvertError> {
    if !dir.is_dir() {
        return Err(ConvertError::Flag { flag: flag.into(), expected: format!("a folder of images; {} is not a folder", dir.display()) });
    }
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| {
            p.extension().map(|x| IMAGE_EXTENSIONS.contains(&x.to_string_lossy().to_lowercase().as_str())).unwrap_or(false)
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ConvertError::Flag { flag: flag.into(), expected: format!("a folder of images; {} holds none", dir.display()) });
    }
    if let Some(count) = count.filter(|c| *c < files.len()) {
        let len = files.len();
        files = (0..count).map(|i| files[i * len / count].clone()).collect();
    }
    Ok(files)
}

fn tract_err<'a>(path: &'a Path, stage: &'static str) -> impl Fn(TractError) -> ConvertError + 'a {
    move |e| ConvertError::Tract { path: path.to_path_buf(), stage, message: format!("{e:#}").replace('\n', " ") }
}

/// Describes the activation scheme for reports.
pub fn describe_activations(mode: &ActivationMode) -> String {
    match mode {
        ActivationMode::DynamicPerToken => "dynamic-per-token".into(),
        ActivationMode::Static { calibrator } => match calibrator {
            mien_quantize::StaticCalibrator::MinMax => "static-minmax".into(),
            mien_quantize::StaticCalibrator::Percentile(p) => format!("static-percentile-{p}"),
            mien_quantize::StaticCalibrator::Mse => "static-mse".into(),
        },
    }
}

/// Describes the smoothing setting for reports.
pub fn describe_smoothing(smoothing: &Smoothing) -> String {
    match smoothing {
        Smoothing::Off => "off".into(),
        Smoothing::Alpha(a) => format!("alpha {a}"),
        Smoothing::Search(grid) => format!("search {}", grid.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")),
    }
}

/// What quantization did to the model.
#[derive(Debug, Clone)]
pub struct QuantizeOutcome {
    /// Per matmul: what was decided.
    pub layers: Vec<LayerDecision>,
    /// Matmuls the rewrite does not handle.
    pub unsupported: Vec<mien_quantize::Unsupported>,
    /// Calibration images used.
    pub calibration_images: usize,
    /// The calibration files picked (validation must not overlap them).
    pub calibration_files: Vec<PathBuf>,
    /// Calibration files that could not be read (skipped with a warning).
    pub unreadable: Vec<String>,
    /// Products of two activations rewritten to int8 (with `activation_products`).
    pub activation_products: Vec<String>,
    /// Float matmuls stored and run in f16 (with `f16_float_matmuls`).
    pub f16_float_matmuls: usize,
}

impl QuantizeOutcome {
    /// The manifest section (drift filled in later).
    pub fn to_manifest(&self, settings: &QuantizeSettings) -> Quantization {
        let mut float_layers: Vec<FloatLayer> = self
            .layers
            .iter()
            .filter_map(|l| l.kept_float.as_ref().map(|r| FloatLayer { name: l.name.clone(), reason: r.clone() }))
            .collect();
        float_layers.extend(self.unsupported.iter().map(|u| FloatLayer { name: u.name.clone(), reason: u.reason.clone() }));
        Quantization {
            activations: describe_activations(&settings.options.activations),
            smoothing: describe_smoothing(&settings.options.smoothing),
            shift: settings.options.shift,
            weight_rounding: if settings.options.gptq { "gptq".into() } else { "nearest".into() },
            calibration_images: self.calibration_images,
            max_layer_error: settings.options.max_layer_error,
            int8_layers: self.layers.iter().filter(|l| l.is_int8()).count(),
            float_layers,
            int8_activation_products: self.activation_products.len(),
            f16_float_matmuls: self.f16_float_matmuls,
            layers_with_float_channels: self.layers.iter().filter(|l| l.is_int8() && !l.float_channels.is_empty()).count(),
            float_channels: self.layers.iter().filter(|l| l.is_int8()).map(|l| l.float_channels.len()).sum(),
            drift: None,
        }
    }
}

/// Calibrates on the settings' images and rewrites `model` in place.
pub fn quantize(
    model: &mut TypedModel,
    manifest: &Manifest,
    settings: &QuantizeSettings,
    threads: usize,
    model_path: &Path,
    progress: &dyn Progress,
) -> Result<QuantizeOutcome, ConvertError> {
    let files = pick_images(&settings.calibrate, Some(settings.calibration_count), "--calibrate")?;
    // A ViT's patch embedding becomes a matmul, so it is quantized like the others.
    mien_quantize::patchify::patchify_convs_to_matmuls(model).map_err(tract_err(model_path, "rewrite the patch embedding of"))?;
    let (targets, unsupported) = mien_quantize::find_targets(model).map_err(tract_err(model_path, "analyse"))?;
    if targets.is_empty() {
        return Err(ConvertError::NotImageClassifier {
            path: model_path.to_path_buf(),
            reason: "it has no matmul with a constant weight to quantize".into(),
        });
    }
    let threads = RuntimeOptions { threads, ..Default::default() }.effective_threads();
    let mut calibration =
        mien_quantize::Calibration::new(model, &targets, SAMPLE_ROWS, threads).map_err(tract_err(model_path, "prepare calibration of"))?;
    let preprocessor = Preprocessor::new(&manifest.preprocessing, &manifest.input);
    let mut unreadable = vec![];
    let mut used = 0;
    progress.stage(&format!("calibrating on {} images from {}", files.len(), settings.calibrate.display()));
    for (i, file) in files.iter().enumerate() {
        match mien_image::open_rgb(file) {
            Ok(image) => {
                let input = Tensor::from_shape(&manifest.input.shape, &preprocessor.run(&image)).map_err(tract_err(model_path, "calibrate"))?;
                calibration.observe(input).map_err(tract_err(model_path, "calibrate"))?;
                used += 1;
            }
            Err(e) => {
                progress.warn(&format!("calibration image skipped: {e}"));
                unreadable.push(e.to_string());
            }
        }
        progress.progress(i + 1, files.len());
    }
    if used == 0 {
        return Err(ConvertError::Flag {
            flag: "--calibrate".into(),
            expected: format!("readable images; none of the {} files in {} could be decoded", files.len(), settings.calibrate.display()),
        });
    }
    progress.stage(&format!("choosing smoothing and scales for {} matmuls", targets.len()));
    let stats = calibration.finish();
    let layers = mien_quantize::plan_layers(&targets, &stats, &settings.options)
        .map_err(|e| ConvertError::Tract { path: model_path.to_path_buf(), stage: "quantize", message: e.to_string() })?;
    progress.stage("rewriting matmuls to int8");
    mien_quantize::rewrite::apply(model, &targets, &layers).map_err(tract_err(model_path, "quantize"))?;
    let activation_products = if settings.options.activation_products != mien_quantize::ActivationProducts::Off {
        progress.stage("rewriting products of two activations to int8");
        mien_quantize::rewrite::quantize_activation_products(model, settings.options.activation_products)
            .map_err(tract_err(model_path, "quantize attention of"))?
    } else {
        vec![]
    };
    let f16_float_matmuls = if settings.f16_float_matmuls {
        progress.stage("storing the matmuls left in float as f16");
        // Float layers within the error threshold were kept for being tiny (the classifier head): they stay
        // f32, their error would go straight into the logits and they cost nothing.
        let exact: std::collections::HashSet<String> = layers
            .iter()
            .filter(|l| !l.is_int8() && l.error <= settings.options.max_layer_error)
            .map(|l| l.name.clone())
            .collect();
        crate::half::float_matmuls_to_f16(model, exact).map_err(tract_err(model_path, "translate float matmuls to f16 in"))?
    } else {
        0
    };
    Ok(QuantizeOutcome {
        layers,
        unsupported,
        calibration_images: used,
        calibration_files: files,
        unreadable,
        activation_products,
        f16_float_matmuls,
    })
}

/// Where and how hard [`validate`] compares.
#[derive(Debug, Clone, Copy)]
pub struct ValidateSettings<'a> {
    /// Held-out images (`DIR/<label>/*` or unlabelled).
    pub dir: &'a Path,
    /// Use at most this many, spread evenly (None: all).
    pub count: Option<usize>,
    /// The gate, recorded in the drift report.
    pub min_agreement: f64,
}

/// Compares the staged int8 or f16 plan with the float plan on held-out images, which must not include
/// any of `calibration_files`.
pub fn validate(
    reduced_plan: &Path,
    float_plan: &Path,
    settings: &ValidateSettings,
    calibration_files: &[PathBuf],
    threads: usize,
    progress: &dyn Progress,
) -> Result<(Drift, mien_eval::CompareReport), ConvertError> {
    let dir = settings.dir;
    let options = RuntimeOptions { threads, ..Default::default() };
    // f16 plans are measured in f16 arithmetic, as the cores they are made for run them (not widened to
    // f32, which `auto` does on this machine when it lacks FP16).
    let reduced_options = RuntimeOptions { f16_path: mien_runtime::HalfPath::F16, ..options.clone() };
    let quantized = Classifier::load(reduced_plan, &reduced_options)?;
    let float = Classifier::load(float_plan, &options)?;
    let eval_err = |e: mien_eval::EvalError| ConvertError::Flag { flag: "--validate".into(), expected: e.to_string() };
    let mut dataset = mien_eval::scan(dir, float.labels(), &mien_eval::LabelMap::default()).map_err(eval_err)?;
    let calibration: std::collections::HashSet<PathBuf> = calibration_files.iter().filter_map(|p| p.canonicalize().ok()).collect();
    let overlap = dataset.items.iter().filter(|i| i.path.canonicalize().map(|p| calibration.contains(&p)).unwrap_or(false)).count();
    if overlap > 0 {
        return Err(ConvertError::Flag {
            flag: "--validate".into(),
            expected: format!("held-out images; {overlap} files of {} are also calibration images", dir.display()),
        });
    }
    if let Some(count) = settings.count.filter(|c| *c < dataset.items.len()) {
        let len = dataset.items.len();
        dataset.items = (0..count).map(|i| dataset.items[i * len / count].clone()).collect();
    }
    for folder in &dataset.unknown_folders {
        progress.warn(&format!("validation folder {} ({} files) matches no label and is skipped", folder.name, folder.files));
    }
    progress.stage(&format!("validating on {} held-out images from {}", dataset.items.len(), dir.display()));
    let report = mien_eval::compare(&quantized, &float, &dataset, &|done, total| progress.progress(done, total)).map_err(eval_err)?;
    let drift = Drift {
        reference: "float plan (same preprocessing)".into(),
        images: report.images,
        top1_agreement: report.agreement,
        mean_kl: report.mean_kl,
        logit_cosine: report.logit_cosine,
        max_abs_logit_diff: report.max_abs_diff,
        accuracy_reference: report.accuracy_b,
        accuracy: report.accuracy_a,
        min_agreement: settings.min_agreement,
    };
    Ok((drift, report))
}
