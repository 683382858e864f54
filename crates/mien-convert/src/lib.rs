//! Converts an ONNX image classifier into a mien plan: fix the input shape, type and declutter the graph,
//! write tract NNEF plus a `mien.json` manifest, then reload the written plan with the device runtime
//! and compare its logits with the ONNX model's.
//!
//! The offline path, one module per step: [`onnx`] (import, fix shape) → [`quantize`] (int8) or
//! [`half`] (f16), optional → [`gelu`] (serializer work-around) → plan writing
//! ([`mien_plan::PlanWriter`]) → [`verify`] → for int8 and f16, the drift gate against the float plan
//! ([`quantize::validate`]).

pub mod gelu;
pub mod half;
pub mod hf_config;
pub mod nnef_names;
pub mod onnx;
pub mod quantize;
pub mod verify;

use std::io::Read;
use std::path::{Path, PathBuf};

use mien_plan::{
    ColorOrder, DType, DetectorSpec, InputSpec, Layout, Manifest, ModelInfo, OutputSpec, HalfPrecision, PlanError, PlanWriter,
    Precision, Preprocessing, ResampleFilter, FORMAT_VERSION, TRACT_VERSION,
};
use sha2::Digest;
use mien_runtime::RuntimeOptions;

pub use quantize::QuantizeSettings;
pub use verify::VerifyReport;

/// Errors of a conversion. Messages are one line and name the file or flag involved.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A Hugging Face config file has an unusable value.
    #[error("{path}: field `{field}`: expected {expected}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What was expected.
        expected: String,
    },
    /// The model is not a single-image-input classifier.
    #[error("{path} is not an image classifier mien can run: {reason}")]
    NotImageClassifier {
        /// The ONNX file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A flag is missing or wrong.
    #[error("{flag}: expected {expected}")]
    Flag {
        /// The flag, e.g. `--size`.
        flag: String,
        /// What was expected.
        expected: String,
    },
    /// The model uses ONNX operators tract cannot run.
    #[error("{path}: unsupported ONNX operator {ops}: tract cannot run it; export the model without it")]
    UnsupportedOps {
        /// The model file.
        path: PathBuf,
        /// Each operator once, as `Name` (node "node name"), comma-separated.
        ops: String,
    },
    /// tract failed on the model.
    #[error("{path}: tract could not {stage} the model: {message}")]
    Tract {
        /// The model file.
        path: PathBuf,
        /// What was being done.
        stage: &'static str,
        /// tract's error chain on one line.
        message: String,
    },
    /// The plan could not be written.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The written plan could not be loaded or run by the runtime.
    #[error(transparent)]
    Runtime(#[from] mien_runtime::RuntimeError),
    /// The graph was written but tract cannot read it back: a serialization problem of mien-convert or
    /// tract, not of the model.
    #[error("{path}: the converted graph was written but tract cannot read it back: {what}; no plan was written (a bug in mien-convert or tract: please report it with the model)")]
    Reload {
        /// The ONNX model.
        path: PathBuf,
        /// Where and what, in words: the NNEF line, the op and the tensor it makes, or tract's message.
        what: String,
    },
    /// A verification image could not be read.
    #[error(transparent)]
    Image(#[from] mien_image::ImageError),
    /// The int8 or f16 plan drifts too far from the float model on the validation images.
    #[error("drift gate: the {precision} plan agrees with the float model on {agreement:.2}% of {images} validation images, below --min-agreement {min:.2}%; no plan was written")]
    DriftGate {
        /// The reduced precision (`int8`, `f16`).
        precision: Precision,
        /// Top-1 agreement in percent.
        agreement: f64,
        /// Images compared.
        images: usize,
        /// Required agreement in percent.
        min: f64,
    },
    /// The written plan disagrees with the model it was checked against.
    #[error("verification failed: the written plan's logits differ from {reference} by up to {max_abs_diff:.3e} (tolerance {tolerance:.1e}, top-1 agreement {agreement:.1}%); no plan was written")]
    VerificationFailed {
        /// What the plan was compared with: the ONNX model (f32 plans), or the reduced-precision graph
        /// before serialization (int8 and f16 plans).
        reference: String,
        /// Largest absolute logit difference.
        max_abs_diff: f32,
        /// Allowed difference.
        tolerance: f32,
        /// Top-1 agreement in percent.
        agreement: f32,
    },
}

/// Where labels come from when given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSource {
    /// Comma-separated list.
    List(Vec<String>),
    /// A file with one label per line.
    File(PathBuf),
}

/// Everything a conversion needs. Fields left `None` come from the model, then from Hugging Face
/// config files beside it, then from defaults.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Source ONNX file.
    pub model: PathBuf,
    /// Destination plan (`NAME.mien` tar, or a directory).
    pub output: PathBuf,
    /// Model name for the manifest (default: the ONNX file stem).
    pub name: Option<String>,
    /// Labels override.
    pub labels: Option<LabelSource>,
    /// Input (height, width).
    pub size: Option<(usize, usize)>,
    /// Input layout.
    pub layout: Option<Layout>,
    /// Input channels.
    pub channels: Option<usize>,
    /// Rescale factor.
    pub rescale: Option<f64>,
    /// Per-channel (or single) mean.
    pub mean: Option<Vec<f32>>,
    /// Per-channel (or single) std.
    pub std: Option<Vec<f32>>,
    /// Resize filter.
    pub resample: Option<ResampleFilter>,
    /// Channel order.
    pub color_order: Option<ColorOrder>,
    /// Largest accepted absolute logit difference between plan and ONNX model.
    pub tolerance: f32,
    /// Synthetic inputs to verify with.
    pub verify_inputs: usize,
    /// Real images to verify with, in addition.
    pub verify_images: Vec<PathBuf>,
    /// Threads for verification runs (0: all cores).
    pub threads: usize,
    /// Precision of the plan.
    pub precision: Precision,
    /// Calibration and validation for `Precision::Int8`.
    pub int8: Option<QuantizeSettings>,
    /// Validation for `Precision::F16` (optional: without it the plan is only checked for serialization).
    pub f16: Option<HalfSettings>,
    /// Makes a detector plan: how its output decodes into boxes.
    pub detector: Option<DetectorSpec>,
}

impl ConvertOptions {
    /// Options with defaults for everything but the paths.
    pub fn new(model: impl Into<PathBuf>, output: impl Into<PathBuf>) -> ConvertOptions {
        ConvertOptions {
            model: model.into(),
            output: output.into(),
            name: None,
            labels: None,
            size: None,
            layout: None,
            channels: None,
            rescale: None,
            mean: None,
            std: None,
            resample: None,
            color_order: None,
            tolerance: 1e-3,
            verify_inputs: 3,
            verify_images: vec![],
            threads: 0,
            precision: Precision::F32,
            int8: None,
            f16: None,
            detector: None,
        }
    }
}

/// Held-out images on which an f16 plan is compared with the float model.
#[derive(Debug, Clone)]
pub struct HalfSettings {
    /// Held-out images (`DIR/<label>/*` or unlabelled) for the drift report and gate.
    pub validate: Option<PathBuf>,
    /// Use at most this many validation images, spread evenly (None: all).
    pub validation_count: Option<usize>,
    /// The gate: fail when top-1 agreement with the float plan is below this fraction.
    pub min_agreement: f64,
}

impl Default for HalfSettings {
    fn default() -> Self {
        HalfSettings { validate: None, validation_count: None, min_agreement: 0.99 }
    }
}

/// Receives progress from a conversion (the CLI draws it; libraries may ignore it).
pub trait Progress {
    /// A new step starts.
    fn stage(&self, _name: &str) {}
    /// Something the user should know (fallbacks, ignored settings).
    fn warn(&self, _message: &str) {}
    /// Progress within a long step (images calibrated, validated).
    fn progress(&self, _done: usize, _total: usize) {}
}

/// A [`Progress`] that drops everything.
pub struct Quiet;
impl Progress for Quiet {}

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    /// The plan's manifest as written.
    pub manifest: Manifest,
    /// Where it was written.
    pub output: PathBuf,
    /// Verification figures.
    pub verification: VerifyReport,
    /// GELU nodes expanded for serialization.
    pub gelu_unfused: usize,
    /// For int8 plans: the per-layer decisions.
    pub quantized: Option<quantize::QuantizeOutcome>,
    /// For int8 and f16 plans validated on held-out images: the comparison with the float plan.
    pub validation: Option<mien_eval::CompareReport>,
    /// For int8 and f16 plans: the plan as the device runs it (this CPU's kernels, mien's ops) against the
    /// ONNX model (f32) on the verification inputs. Reported, not gated: it is the precision loss, which
    /// the drift report and gate measure on real images.
    pub float_difference: Option<VerifyReport>,
    /// Warnings issued.
    pub warnings: Vec<String>,
}

fn sha256_file(path: &Path) -> Result<String, ConvertError> {
    let io = |e| ConvertError::Io { path: path.to_path_buf(), source: e };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The file stem, or the folder name for Hugging Face style `FOLDER/model.onnx` exports.
fn default_model_name(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let folder = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned()));
    match (stem.as_str(), folder) {
        ("model" | "", Some(folder)) => folder,
        ("", None) => "model".into(),
        _ => stem,
    }
}

fn per_channel(flag: &str, values: Vec<f32>, channels: usize) -> Result<Vec<f32>, ConvertError> {
    match values.len() {
        1 => Ok(vec![values[0]; channels]),
        n if n == channels => Ok(values),
        n => Err(ConvertError::Flag {
            flag: flag.into(),
            expected: format!("1 or {channels} values (the model has {channels} channels), found {n}"),
        }),
    }
}

fn read_labels(source: &LabelSource) -> Result<Vec<String>, ConvertError> {
    match source {
        LabelSource::List(list) => Ok(list.clone()),
        LabelSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConvertError::Io { path: path.clone(), source: e })?;
            Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
        }
    }
}

/// Runs a whole conversion. Nothing is written at `options.output` unless every step, verification
/// included, succeeds.
pub fn convert(options: &ConvertOptions, progress: &dyn Progress) -> Result<ConvertReport, ConvertError> {
    let mut warnings = Vec::new();
    let mut warn = |m: String| {
        progress.warn(&m);
        warnings.push(m);
    };
    let model_path = &options.model;
    if !model_path.is_file() {
        return Err(ConvertError::Io {
            path: model_path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such ONNX file"),
        });
    }
    let dir = model_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let hints = hf_config::read_hints(dir)?;

    progress.stage("reading the ONNX model and fixing its input shape");
    let fixed = onnx::load_and_fix(
        model_path,
        &onnx::InputHints {
            layout: options.layout,
            channels: options.channels,
            size_flag: options.size,
            size_config: hints.size,
            detector: options.detector.is_some(),
        },
    )?;
    if let (Some(cfg), None) = (hints.size, options.size) {
        if cfg != fixed.size {
            warn(format!(
                "preprocessor_config.json asks for {}x{} but the model's input is fixed to {}x{}; using the model's size",
                cfg.0, cfg.1, fixed.size.0, fixed.size.1
            ));
        }
    }
    // A detector's output is anchors x values, with one label ("face") for what it finds.
    let classes: usize = if options.detector.is_some() { 1 } else { fixed.output_shape.iter().product() };

    let labels = match (&options.labels, &hints.labels) {
        (Some(source), _) => read_labels(source)?,
        (None, Some(labels)) => labels.clone(),
        (None, None) => {
            warn(format!("no labels (no --labels, no id2label in config.json): using class_0..class_{}", classes - 1));
            (0..classes).map(|i| format!("class_{i}")).collect()
        }
    };
    if labels.len() != classes {
        let origin = if options.labels.is_some() { "--labels" } else { "config.json id2label" };
        return Err(ConvertError::Flag {
            flag: origin.into(),
            expected: format!("{classes} labels to match the model's output {:?}, found {}", fixed.output_shape, labels.len()),
        });
    }

    let channels = fixed.channels;
    if hints.rescale.is_none() && options.rescale.is_none() && options.mean.is_none() {
        warn("no preprocessor_config.json and no --rescale/--mean/--std: assuming inputs scaled to [0, 1] (rescale 1/255, mean 0, std 1)".into());
    }
    let mean = per_channel("--mean", options.mean.clone().or(hints.mean.clone()).unwrap_or(vec![0.0]), channels)?;
    let std = per_channel("--std", options.std.clone().or(hints.std.clone()).unwrap_or(vec![1.0]), channels)?;
    let preprocessing = Preprocessing {
        height: fixed.size.0,
        width: fixed.size.1,
        resample: options.resample.or(hints.resample).unwrap_or(ResampleFilter::Bilinear),
        rescale_factor: options.rescale.or(hints.rescale).unwrap_or(1.0 / 255.0),
        mean,
        std,
        color_order: options.color_order.unwrap_or(ColorOrder::Rgb),
    };

    progress.stage("hashing the source model");
    let source_sha256 = sha256_file(model_path)?;
    let name = options.name.clone().unwrap_or_else(|| default_model_name(model_path));
    let mut manifest = Manifest {
        format_version: FORMAT_VERSION,
        tract_version: TRACT_VERSION.into(),
        model: ModelInfo {
            name,
            source_file: model_path.file_name().map(|s| s.to_string_lossy().into_owned()),
            source_sha256: Some(source_sha256),
        },
        labels,
        input: InputSpec {
            name: fixed.input_name.clone(),
            shape: fixed.input_shape.clone(),
            dtype: DType::F32,
            layout: fixed.layout,
            channels,
        },
        output: OutputSpec { name: fixed.output_name.clone(), shape: fixed.output_shape.clone() },
        preprocessing,
        precision: Precision::F32,
        verification: None,
        quantization: None,
        half: None,
        detector: options.detector.clone(),
        created_by: format!("mien-convert {}", env!("CARGO_PKG_VERSION")),
        files: vec![],
    };
    // Catch manifest problems (bad flags) before the slow steps.
    {
        let mut probe = manifest.clone();
        probe.files = vec![mien_plan::FileEntry { path: "graph.nnef".into(), size: 0, crc32: "00000000".into() }];
        probe.validate()?;
    }
    // Held-out images: int8 takes them from its settings (they must not overlap calibration), f16 from
    // its own. A mistyped folder fails now, not after minutes of conversion.
    let gate = match (options.precision, &options.int8, &options.f16) {
        (Precision::Int8, Some(s), _) => s.validate.as_deref().map(|dir| (dir, s.validation_count, s.min_agreement)),
        (Precision::F16, _, Some(s)) => s.validate.as_deref().map(|dir| (dir, s.validation_count, s.min_agreement)),
        _ => None,
    };
    if let Some((dir, _, _)) = gate.filter(|(d, _, _)| !d.is_dir()) {
        return Err(ConvertError::Flag {
            flag: "--validate".into(),
            expected: format!("a folder of held-out images; {} is not a folder", dir.display()),
        });
    }

    let mut plan_model = fixed.model.clone();
    let mut quantized = None;
    match options.precision {
        Precision::F32 => {}
        Precision::Int8 => {
            let settings = options.int8.as_ref().ok_or_else(|| ConvertError::Flag {
                flag: "--calibrate".into(),
                expected: "a folder of calibration images for --precision int8".into(),
            })?;
            if let Some(validate) = &settings.validate {
                if validate.canonicalize().ok() == settings.calibrate.canonicalize().ok() {
                    return Err(ConvertError::Flag {
                        flag: "--validate".into(),
                        expected: "a folder of held-out images, not the calibration folder".into(),
                    });
                }
            }
            let outcome = quantize::quantize(&mut plan_model, &manifest, settings, options.threads, model_path, progress)?;
            for layer in outcome.layers.iter().filter(|l| !l.is_int8()) {
                warn(format!("{} stays in float: {}", layer.name, layer.kept_float.as_deref().unwrap_or("")));
            }
            manifest.precision = Precision::Int8;
            manifest.quantization = Some(outcome.to_manifest(settings));
            quantized = Some(outcome);
        }
        Precision::F16 => {
            progress.stage("translating the graph to f16");
            half::to_f16_keeping_f32_io(&mut plan_model).map_err(|e| ConvertError::Tract {
                path: model_path.to_path_buf(),
                stage: "translate to f16",
                message: format!("{e:#}").replace('\n', " "),
            })?;
            manifest.precision = Precision::F16;
            manifest.half = Some(HalfPrecision { kept_f32: half::KEPT_IN_F32.iter().map(|s| s.to_string()).collect(), drift: None });
        }
    }

    progress.stage("writing the tract NNEF plan");
    let mut writer = PlanWriter::new(&options.output)?;
    let nnef_dir = writer.fresh_dir("nnef");
    let gelu_unfused = write_nnef(&plan_model, &nnef_dir, model_path)?;
    writer.adopt_graph_dir(&nnef_dir)?;
    let staged = writer.stage_manifest(&manifest)?;

    let onnx_reference = verify::Reference { model: &fixed.model, name: format!("the ONNX model (tract-onnx {})", mien_plan::TRACT_VERSION) };
    let (report, float_difference) = if options.precision != Precision::F32 {
        progress.stage(&format!("verifying the written plan against the {} graph and the ONNX model", manifest.precision));
        // Serialization is checked on its own: the written plan and the in-memory reduced-precision graph
        // both run on tract's ops and this CPU's kernels, so what they share cancels out. (With mien's
        // fused ops on one side only, float summation order differs from tract's on some CPUs, e.g. its
        // AVX-512 kernels, and int8 requantization turns ulp differences into whole steps.)
        let serialized = verify::Reference {
            model: &plan_model,
            name: format!("the {} graph before serialization (both run by tract's ops on this CPU's kernels)", manifest.precision),
        };
        let tract_ops = RuntimeOptions {
            threads: options.threads,
            int8_path: mien_runtime::Int8Path::Integer,
            f16_path: mien_runtime::HalfPath::F16,
            tract_ops_only: true,
            ..Default::default()
        };
        let serialization = verify::verify(&fixed, &serialized, &staged, options, &tract_ops)?;
        // The plan as the device runs it, against the float model: the precision loss, reported.
        let device = RuntimeOptions { tract_ops_only: false, ..tract_ops };
        let float_difference = verify::verify(&fixed, &onnx_reference, &staged, options, &device)?;
        (serialization, Some(float_difference))
    } else {
        progress.stage("verifying the written plan against the ONNX model");
        let device = RuntimeOptions { threads: options.threads, ..Default::default() };
        (verify::verify(&fixed, &onnx_reference, &staged, options, &device)?, None)
    };
    drop(plan_model);
    manifest.verification = Some(report.to_manifest(options.tolerance));
    // NaN differences fail too, also against the ONNX model where only the difference is reported.
    let nan_from_onnx = float_difference.as_ref().is_some_and(|d| d.max_abs_diff.is_nan());
    if report.max_abs_diff.is_nan() || report.max_abs_diff > options.tolerance || nan_from_onnx {
        let failed = float_difference.as_ref().filter(|_| nan_from_onnx).unwrap_or(&report);
        return Err(ConvertError::VerificationFailed {
            reference: failed.reference.clone(),
            max_abs_diff: failed.max_abs_diff,
            tolerance: options.tolerance,
            agreement: failed.top1_agreement * 100.0,
        });
    }

    let mut validation = None;
    if let Some((dir, count, min_agreement)) = gate {
        progress.stage("writing the float plan to compare with");
        let scratch = tempfile::Builder::new()
            .prefix(".mien-float-")
            .tempdir_in(writer_parent(&options.output))
            .map_err(|e| ConvertError::Io { path: writer_parent(&options.output).to_path_buf(), source: e })?;
        let float_path = scratch.path().join("float");
        let float_writer = PlanWriter::new(&float_path)?;
        let float_dir = float_writer.fresh_dir("nnef");
        write_nnef(&fixed.model, &float_dir, model_path)?;
        float_writer.adopt_graph_dir(&float_dir)?;
        let mut float_manifest = manifest.clone();
        float_manifest.precision = Precision::F32;
        float_manifest.quantization = None;
        float_manifest.half = None;
        float_manifest.verification = None;
        float_writer.finish(float_manifest)?;
        let calibration_files = quantized.as_ref().map(|q| q.calibration_files.as_slice()).unwrap_or(&[]);
        let (drift, compare) = quantize::validate(
            &staged,
            &float_path,
            &quantize::ValidateSettings { dir, count, min_agreement },
            calibration_files,
            options.threads,
            progress,
        )?;
        let passed = drift.top1_agreement >= min_agreement;
        if let Some(q) = manifest.quantization.as_mut() {
            q.drift = Some(drift.clone());
        }
        if let Some(h) = manifest.half.as_mut() {
            h.drift = Some(drift.clone());
        }
        if !passed {
            return Err(ConvertError::DriftGate {
                precision: manifest.precision,
                agreement: drift.top1_agreement * 100.0,
                images: drift.images,
                min: min_agreement * 100.0,
            });
        }
        validation = Some(compare);
    }

    progress.stage("moving the plan into place");
    let manifest = writer.finish(manifest)?;
    Ok(ConvertReport {
        manifest,
        output: options.output.clone(),
        verification: report,
        gelu_unfused,
        quantized,
        validation,
        float_difference,
        warnings,
    })
}

fn writer_parent(output: &Path) -> &Path {
    output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Writes `model` as NNEF into `dir`, expanding `GeluExact` (which has no serializer) first. Returns the
/// number of GELUs expanded.
fn write_nnef(model: &tract_core::prelude::TypedModel, dir: &Path, model_path: &Path) -> Result<usize, ConvertError> {
    let mut model = model.clone();
    let renamed = nnef_names::rename_literal_lookalikes(&mut model);
    if renamed > 0 {
        tracing::debug!(renamed, "nodes renamed so that tract's NNEF parser reads them as names, not literals");
    }
    let gelus = gelu::unfuse_gelu_exact(&mut model).map_err(|e| ConvertError::Tract {
        path: model_path.to_path_buf(),
        stage: "prepare (GELU expansion)",
        message: format!("{e:#}"),
    })?;
    tract_nnef::nnef().write_to_dir(&model, dir).map_err(|e| {
        // Writing failed (a full or read-only disk): about the destination's folder, where the plan is
        // staged, not the model.
        let os_error = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()).and_then(std::io::Error::raw_os_error);
        match (os_error, dir.parent().and_then(Path::parent)) {
            (Some(code), Some(folder)) => ConvertError::Plan(mien_plan::PlanError::Io {
                path: folder.to_path_buf(),
                cause: std::io::Error::from_raw_os_error(code),
            }),
            _ => ConvertError::Tract {
                path: model_path.to_path_buf(),
                stage: "serialize",
                message: format!("{e:#}").replace('\n', " "),
            },
        }
    })?;
    Ok(gelus)
}
