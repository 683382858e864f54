//! Runs mien plans: load, optimize for this CPU, preprocess exactly like the model's image processor,
//! infer, softmax, top-k.
//!
//! Depends on tract-nnef and tract-core only (never tract-onnx or protobuf), so it stays small enough
//! for the device binary. Its SIMD kernels are in `mien-kernels`: no `unsafe` here.

#![forbid(unsafe_code)]

pub mod activation;
mod graph;
pub mod half;
pub mod int8;
pub mod int8_linear;
pub mod linear;
pub mod norm;
pub mod pack;
mod preprocess;
pub mod softmax;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tract_core::ops::matmul::optimized::OptMatMul;
use tract_core::prelude::*;
use tract_linalg::multithread::{multithread_tract_scope, Executor};

pub use half::HalfPath;
/// The CPU features that decide which kernels run (`mien_kernels::cpu`).
pub use mien_kernels::cpu;

/// mien's own kernel of each family on this CPU (`mien_kernels::dispatch::summary`): `("softmax",
/// "mien_neon_softmax")`, or `"tract's"` where the family's work stays on tract here.
pub fn own_kernels() -> Vec<(&'static str, &'static str)> {
    mien_kernels::dispatch::summary()
}
pub use int8::Int8Path;
pub use mien_image::RgbImage;
pub use mien_plan::{Manifest, Plan, PlanError};
pub use preprocess::Preprocessor;

/// Errors from loading or running a plan. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The plan itself is invalid, missing or corrupt.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// tract could not load, optimize or run the graph.
    #[error("{path}: tract could not {stage} the graph: {message}")]
    Tract {
        /// The plan.
        path: String,
        /// `load`, `optimize` or `run`.
        stage: &'static str,
        /// tract's error chain on one line.
        message: String,
    },
    /// The graph loaded but does not match what the manifest says.
    #[error("{path}: the graph does not match mien.json: {message}")]
    GraphMismatch {
        /// The plan.
        path: String,
        /// What differs.
        message: String,
    },
    /// A detector plan was given where a classifier is needed.
    #[error(
        "{path}: this is a detector plan (mien.json has a detector section), not a classifier"
    )]
    NotAClassifier {
        /// The plan.
        path: String,
    },
    /// An input tensor of the wrong size was given.
    #[error("input has {found} values, the plan expects {expected}")]
    InputSize {
        /// Values expected.
        expected: usize,
        /// Values given.
        found: usize,
    },
}

fn one_line(e: &TractError) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// How to run plans.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Threads for matrix products and large element-wise ops; 0 means all available cores.
    pub threads: usize,
    /// How int8 plans run their matmuls (ignored for float plans).
    pub int8_path: Int8Path,
    /// Whether f16 plans compute in f16 or are widened to f32 at load (ignored for other plans).
    pub f16_path: HalfPath,
    /// Run the graph with tract's ops only. By default int8 plans run their per-token quantization and
    /// the packing of i8 activations with mien's fused ops ([`mien_quantize::fuse`], [`pack`]), and casts
    /// between f32 and f16 convert whole slices ([`half::SliceCast`]): bit-identical results in fewer
    /// instructions; softmaxes over the last axis run on [`softmax::RowSoftmax`] (within an ulp or two of
    /// tract's, faster on rows whose length is not a multiple of 4); and f32 linear layers run on
    /// [`linear::PackedLinear`] and attention's products on [`linear::batched::BatchedProduct`] where the
    /// CPU has their kernel (the same products summed in another order: within rounding of tract's,
    /// faster). This switch is for comparisons and debugging.
    pub tract_ops_only: bool,
    /// Keep tract's softmax, f32 linear layers and products, and its int8 products on cores without SDOT
    /// ([`int8_linear`]), while using mien's other ops (for checking those bit for bit against tract).
    pub tract_float_kernels: bool,
}

impl RuntimeOptions {
    /// The thread count actually used.
    pub fn effective_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// Time spent getting a plan ready.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadTimings {
    /// Checking the graph files' sizes and checksums; it runs on its own thread while tract parses them,
    /// so it is part of `load_ms`, not added to it.
    pub verify_ms: f64,
    /// From opening the plan until its graph is parsed into a tract model and its files verified.
    pub load_ms: f64,
    /// tract's optimisation for this CPU (kernel choice, packing) and plan building.
    pub optimize_ms: f64,
}

/// Result of classifying one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// Index of the top class.
    pub index: usize,
    /// Label of the top class.
    pub label: String,
    /// Probability of the top class.
    pub score: f32,
    /// Softmax of the logits, in label order.
    pub probabilities: Vec<f32>,
    /// Raw model outputs, in label order.
    pub logits: Vec<f32>,
}

/// A loaded, CPU-optimized plan: any mien plan, classifier or detector. It runs preprocessed inputs
/// and returns the flat output; [`Classifier`] adds labels and softmax on top.
pub struct Model {
    plan: Plan,
    runnable: Arc<TypedRunnableModel>,
    optimized: Arc<TypedModel>,
    preprocessor: Preprocessor,
    executor: Executor,
    threads: usize,
    timings: LoadTimings,
    int8: Option<Int8Choice>,
    half: Option<HalfChoice>,
}

/// How a plan's reduced-precision ops run on this CPU (an [`Int8Path`] or a [`HalfPath`]), and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathChoice<P> {
    /// The path taken.
    pub path: P,
    /// Why.
    pub reason: &'static str,
}

/// The int8 path a model took: integer kernels or dequantized weights.
pub type Int8Choice = PathChoice<Int8Path>;
/// The f16 path a model took: f16 arithmetic, or widened to f32.
pub type HalfChoice = PathChoice<HalfPath>;

/// A `MIEN_*_PATH` environment variable that overrides an `Auto` choice: `Some` only when the caller
/// asked for `auto` and the variable names another path.
fn env_override<P: std::str::FromStr + PartialEq + Copy>(
    choice: P,
    auto: P,
    var: &str,
) -> Option<P> {
    let env = std::env::var(var).ok()?.parse().ok()?;
    (choice == auto && env != auto).then_some(env)
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("plan", &self.plan.path())
            .field("threads", &self.threads)
            .finish()
    }
}

impl Model {
    /// Opens, verifies, loads and optimizes a plan.
    pub fn load(path: impl AsRef<Path>, options: &RuntimeOptions) -> Result<Model, RuntimeError> {
        let start = Instant::now();
        let plan = Plan::open_unverified(path.as_ref())?;
        Model::from_plan(plan, start, options)
    }

    /// Verifies, loads and optimizes an opened plan; `opened` is when opening started, for the timings.
    ///
    /// The graph files' checksums are checked on a second thread while tract parses them (reading them
    /// twice in a row made checksums a quarter of the load time of a large plan); a plan that fails
    /// verification is refused with that error, whatever the parse gave. Open the plan with
    /// [`Plan::open_unverified`]: one opened with [`Plan::open`] is verified twice.
    pub fn from_plan(
        plan: Plan,
        opened: Instant,
        options: &RuntimeOptions,
    ) -> Result<Model, RuntimeError> {
        let plan_name = plan.path().display().to_string();
        let tract_err = |stage: &'static str| {
            let path = plan_name.clone();
            move |e: TractError| RuntimeError::Tract {
                path,
                stage,
                message: one_line(&e),
            }
        };

        let (verified, parsed) = std::thread::scope(|scope| {
            let verifier = scope.spawn(|| {
                let start = Instant::now();
                plan.verify_files()
                    .map(|()| start.elapsed().as_secs_f64() * 1e3)
            });
            let parsed = tract_nnef::nnef().model_for_path(plan.nnef_path());
            (
                verifier
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                parsed,
            )
        });
        let verify_ms = verified?;
        let model = parsed.map_err(tract_err("load"))?;
        let load_ms = opened.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(
            rss_mb = current_rss_mb(),
            load_ms,
            verify_ms,
            "graph loaded and verified"
        );
        check_graph(&plan, &model).map_err(|message| RuntimeError::GraphMismatch {
            path: plan_name.clone(),
            message,
        })?;

        let mut model = model;
        let int8_choice = if int8::has_int8_matmuls(&model) {
            let (path, reason) = int8::resolve(options.int8_path);
            if path == Int8Path::DequantizedWeights {
                let n = int8::dequantize_weights(&mut model).map_err(tract_err("dequantize"))?;
                tracing::debug!(matmuls = n, "int8 weights dequantized at load");
            }
            tracing::debug!(%path, reason, "int8 path");
            Some(Int8Choice { path, reason })
        } else {
            None
        };
        let fused_quantizations = if options.tract_ops_only {
            0
        } else {
            mien_quantize::fuse::fuse_per_token_quantization(&mut model)
                .map_err(tract_err("fuse"))?
        };
        let half_choice = if half::has_f16(&model) {
            let (path, reason) = half::resolve(options.f16_path);
            if path == HalfPath::F32 {
                half::widen_to_f32(&mut model).map_err(tract_err("widen f16 to f32"))?;
            }
            tracing::debug!(%path, reason, "f16 path");
            Some(HalfChoice { path, reason })
        } else {
            None
        };

        // On cores without SDOT the int8 products run on mien's kernel; tract's costs more than f32 there.
        let int8_linears = match (int8_choice, int8_linear::kernel()) {
            (
                Some(Int8Choice {
                    path: Int8Path::Integer,
                    ..
                }),
                Some(kernel),
            ) if !options.tract_ops_only && !options.tract_float_kernels => {
                int8_linear::accelerate_int8_linear_layers(&mut model, kernel)
                    .map_err(tract_err("optimize"))?
            }
            _ => 0,
        };

        let start = Instant::now();
        let (products_pay, products_reason) = mien_kernels::dispatch::f32_products();
        tracing::debug!(
            products_pay,
            products_reason,
            "f32 products on mien's tile kernel"
        );
        let packed_linears = if options.tract_ops_only
            || options.tract_float_kernels
            || !products_pay
        {
            0
        } else {
            // Linear layers are packed before declutter, whose axis changes would otherwise copy every
            // weight, and again after it for layers (and bias additions) it brings into shape.
            let early =
                linear::accelerate_linear_layers(&mut model).map_err(tract_err("optimize"))?;
            let early_ms = start.elapsed().as_secs_f64() * 1e3;
            model.declutter().map_err(tract_err("optimize"))?;
            let decluttered_ms = start.elapsed().as_secs_f64() * 1e3 - early_ms;
            let replaced = early
                + linear::accelerate_linear_layers(&mut model).map_err(tract_err("optimize"))?;
            let products = linear::batched::accelerate_batched_products(&mut model)
                .map_err(tract_err("optimize"))?;
            let attention =
                linear::attention::fuse_attention(&mut model).map_err(tract_err("optimize"))?;
            let layer_norms = if mien_kernels::dispatch::layer_norm().0 {
                norm::fuse_layer_norms(&mut model).map_err(tract_err("optimize"))?
            } else {
                0
            };
            tracing::debug!(
                early_ms,
                decluttered_ms,
                packed_ms = start.elapsed().as_secs_f64() * 1e3 - decluttered_ms - early_ms,
                replaced,
                products,
                attention,
                layer_norms,
                "linear layers packed"
            );
            replaced
        };
        // Where the products stay on tract's kernels, LayerNorm can still be one op of mien's.
        if !products_pay
            && !options.tract_ops_only
            && !options.tract_float_kernels
            && mien_kernels::dispatch::layer_norm().0
        {
            model.declutter().map_err(tract_err("optimize"))?;
            let layer_norms = norm::fuse_layer_norms(&mut model).map_err(tract_err("optimize"))?;
            tracing::debug!(layer_norms, "layer norms fused beside tract's products");
        }
        let mut optimized = model.into_optimized().map_err(tract_err("optimize"))?;
        let (fast_packs, slice_casts, row_softmaxes) = if options.tract_ops_only {
            (0, 0, 0)
        } else {
            (
                pack::speed_up_int8_packing(&mut optimized).map_err(tract_err("optimize"))?,
                half::vectorize_half_casts(&mut optimized).map_err(tract_err("optimize"))?,
                if options.tract_float_kernels {
                    0
                } else {
                    softmax::vectorize_softmax(&mut optimized).map_err(tract_err("optimize"))?
                },
            )
        };
        let optimized = Arc::new(optimized);
        let runnable = optimized
            .clone()
            .into_runnable()
            .map_err(tract_err("optimize"))?;
        let optimize_ms = start.elapsed().as_secs_f64() * 1e3;

        let threads = options.effective_threads();
        let executor = if threads > 1 {
            Executor::multithread(threads)
        } else {
            Executor::SingleThread
        };

        let manifest = plan.manifest();
        let preprocessor = Preprocessor::new(&manifest.preprocessing, &manifest.input);
        tracing::debug!(cpu = %cpu::summary(), own_kernels = ?own_kernels(), kernels = ?kernel_names(&optimized), fused_quantizations, fast_packs, slice_casts, row_softmaxes, packed_linears, int8_linears, "kernels chosen");
        tracing::debug!(plan = %plan_name, verify_ms, load_ms, optimize_ms, threads, rss_mb = current_rss_mb(), peak_rss_mb = peak_rss_mb(), "plan ready");
        Ok(Model {
            plan,
            runnable,
            optimized,
            preprocessor,
            executor,
            threads,
            timings: LoadTimings {
                verify_ms,
                load_ms,
                optimize_ms,
            },
            int8: int8_choice,
            half: half_choice,
        })
    }

    /// For f16 plans: whether they compute in f16 or were widened to f32, and why; `None` otherwise.
    pub fn f16_path(&self) -> Option<HalfChoice> {
        self.half
    }

    /// For plans with int8 matmuls: the path they run on and why; `None` for float plans.
    pub fn int8_path(&self) -> Option<Int8Choice> {
        self.int8
    }

    /// The plan's manifest.
    pub fn manifest(&self) -> &Manifest {
        self.plan.manifest()
    }

    /// The plan on disk.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Threads used for inference.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs later inferences on `threads` threads (0: all cores). Only the thread pool changes: the
    /// optimized graph does not depend on the thread count, so trying several counts needs one load.
    pub fn set_threads(&mut self, threads: usize) {
        let threads = RuntimeOptions {
            threads,
            ..Default::default()
        }
        .effective_threads();
        self.executor = if threads > 1 {
            Executor::multithread(threads)
        } else {
            Executor::SingleThread
        };
        self.threads = threads;
    }

    /// How long loading took.
    pub fn timings(&self) -> LoadTimings {
        self.timings
    }

    /// The image-to-tensor step of this plan.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Runs the graph on a preprocessed input and returns its output, flattened.
    pub fn run(&self, input: &[f32]) -> Result<Vec<f32>, RuntimeError> {
        let tensor = self.input_tensor(input)?;
        let outputs = multithread_tract_scope(self.executor.clone(), || {
            self.runnable.run(tvec!(tensor.into_tvalue()))
        })
        .map_err(|e| self.run_error(e))?;
        let output = outputs[0].cast_to::<f32>().map_err(|e| self.run_error(e))?;
        let output = output
            .to_plain_array_view::<f32>()
            .map_err(|e| self.run_error(e))?;
        Ok(output.iter().copied().collect())
    }

    /// A preprocessed input as the plan's input tensor, its length checked.
    fn input_tensor(&self, input: &[f32]) -> Result<Tensor, RuntimeError> {
        let expected = self.preprocessor.len();
        if input.len() != expected {
            return Err(RuntimeError::InputSize {
                expected,
                found: input.len(),
            });
        }
        Tensor::from_shape(&self.plan.manifest().input.shape, input).map_err(|e| self.run_error(e))
    }

    fn run_error(&self, e: TractError) -> RuntimeError {
        RuntimeError::Tract {
            path: self.plan.path().display().to_string(),
            stage: "run",
            message: one_line(&e),
        }
    }

    /// Runs the graph `runs` times on `input`, timing every node, and returns the time per op type,
    /// slowest first. On the model's threads; for finding where inference time goes (e.g. int8's quantize
    /// chain against its matmuls, or which ops do not scale with threads), not for latency figures.
    pub fn profile(&self, input: &[f32], runs: usize) -> Result<Vec<OpProfile>, RuntimeError> {
        let tensor = self.input_tensor(input)?;
        let mut by_op: BTreeMap<String, (usize, std::time::Duration)> = BTreeMap::new();
        let mut state = self.runnable.spawn().map_err(|e| self.run_error(e))?;
        for _ in 0..runs.max(1) {
            multithread_tract_scope(self.executor.clone(), || {
                state.run_plan_with_eval(
                    tvec!(tensor.clone().into_tvalue()),
                    |ctx, op_state, node, inputs| {
                        let start = Instant::now();
                        let out = tract_core::plan::eval(ctx, op_state, node, inputs);
                        let entry = by_op.entry(node.op.name().to_string()).or_default();
                        entry.0 += 1;
                        entry.1 += start.elapsed();
                        out
                    },
                )
            })
            .map_err(|e| self.run_error(e))?;
        }
        let runs = runs.max(1);
        let total: f64 = by_op.values().map(|(_, d)| d.as_secs_f64()).sum();
        let mut profile: Vec<OpProfile> = by_op
            .into_iter()
            .map(|(op, (evals, d))| OpProfile {
                op,
                nodes: evals / runs,
                ms: d.as_secs_f64() * 1e3 / runs as f64,
                share: if total > 0.0 {
                    d.as_secs_f64() / total
                } else {
                    0.0
                },
            })
            .collect();
        profile.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(profile)
    }

    /// Number of nodes of each op type in the optimized graph.
    pub fn op_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for node in self.optimized.nodes() {
            *counts.entry(node.op.name().to_string()).or_insert(0) += 1;
        }
        counts
    }

    /// Matrix-multiplication kernels on this CPU, with the number of products using each: tract's by name, and
    /// mien's own tile kernel as `mien_avx2_fma_f32_tile (linear | batched product | attention)`.
    pub fn matmul_kernels(&self) -> BTreeMap<String, usize> {
        kernel_names(&self.optimized)
    }
}

/// Time spent in one op type during [`Model::profile`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpProfile {
    /// tract's op name, e.g. `OptMatMul`, `Reduce<Max>`.
    pub op: String,
    /// Nodes of this type evaluated per inference.
    pub nodes: usize,
    /// Milliseconds per inference.
    pub ms: f64,
    /// Fraction of the profiled time.
    pub share: f64,
}

/// A classifier plan: a [`Model`] whose output is one logit per label. Derefs to the model for
/// manifest, timings, kernels and raw runs.
#[derive(Debug)]
pub struct Classifier {
    model: Model,
}

impl std::ops::Deref for Classifier {
    type Target = Model;
    fn deref(&self) -> &Model {
        &self.model
    }
}

impl Classifier {
    /// Opens, verifies, loads and optimizes a classifier plan; detector plans are refused.
    pub fn load(
        path: impl AsRef<Path>,
        options: &RuntimeOptions,
    ) -> Result<Classifier, RuntimeError> {
        let opened = Instant::now();
        let plan = Plan::open_unverified(path.as_ref())?;
        // Refused from the manifest, before the graph is parsed and optimized.
        if plan.manifest().detector.is_some() {
            return Err(RuntimeError::NotAClassifier {
                path: plan.path().display().to_string(),
            });
        }
        Ok(Classifier {
            model: Model::from_plan(plan, opened, options)?,
        })
    }

    /// Runs later inferences on `threads` threads (0: all cores); see [`Model::set_threads`].
    pub fn set_threads(&mut self, threads: usize) {
        self.model.set_threads(threads);
    }

    /// Class labels in output order.
    pub fn labels(&self) -> &[String] {
        &self.model.manifest().labels
    }

    /// Runs the graph on a preprocessed input and returns the logits.
    pub fn run_logits(&self, input: &[f32]) -> Result<Vec<f32>, RuntimeError> {
        self.model.run(input)
    }

    /// Classifies a preprocessed input.
    pub fn classify_input(&self, input: &[f32]) -> Result<Classification, RuntimeError> {
        let logits = self.run_logits(input)?;
        let probabilities = softmax(&logits);
        let (index, score) = top_k(&probabilities, 1)[0];
        Ok(Classification {
            index,
            label: self.labels()[index].clone(),
            score,
            probabilities,
            logits,
        })
    }

    /// Preprocesses and classifies an RGB image.
    pub fn classify(&self, image: &RgbImage) -> Result<Classification, RuntimeError> {
        let input = self.preprocessor().run(image);
        self.classify_input(&input)
    }
}

fn kernel_names(model: &TypedModel) -> BTreeMap<String, usize> {
    let mut kernels = BTreeMap::new();
    for node in model.nodes() {
        if let Some(op) = node.op_as::<OptMatMul>() {
            for mmm in &op.mmm {
                *kernels.entry(mmm.name().to_string()).or_insert(0) += 1;
            }
        }
        let name = node.op.name();
        if name.starts_with("PackedInt8Linear") {
            *kernels
                .entry(format!("{} (int8 linear)", int8_linear::kernel_name()))
                .or_insert(0) += 1;
            continue;
        }
        // mien's own f32 products run its tile kernel (`mien_kernels::dispatch::f32_tile`).
        let family = if name.starts_with("PackedLinear") {
            "linear"
        } else if name.starts_with("BatchedProduct") {
            "batched product"
        } else if name.starts_with("Attention(mien)") {
            "attention"
        } else {
            continue;
        };
        *kernels
            .entry(format!("{} ({family})", linear::kernel_name()))
            .or_insert(0) += 1;
    }
    kernels
}

/// Checks that the NNEF graph has the input and output the manifest promises.
fn check_graph(plan: &Plan, model: &TypedModel) -> Result<(), String> {
    let manifest = plan.manifest();
    if model.inputs.len() != 1 || model.outputs.len() != 1 {
        return Err(format!(
            "expected 1 input and 1 output, the graph has {} and {}",
            model.inputs.len(),
            model.outputs.len()
        ));
    }
    let input_fact = model
        .outlet_fact(model.inputs[0])
        .map_err(|e| one_line(&e))?;
    let input_shape: Option<Vec<usize>> = input_fact.shape.as_concrete().map(|s| s.to_vec());
    if input_shape.as_deref() != Some(&manifest.input.shape[..]) {
        return Err(format!(
            "input shape is {:?}, mien.json says {:?}",
            input_fact.shape, manifest.input.shape
        ));
    }
    if input_fact.datum_type != f32::datum_type() {
        return Err(format!(
            "input type is {:?}, mien.json says f32",
            input_fact.datum_type
        ));
    }
    let output_fact = model
        .outlet_fact(model.outputs[0])
        .map_err(|e| one_line(&e))?;
    let output_len: Option<usize> = output_fact.shape.as_concrete().map(|s| s.iter().product());
    let expected: usize = manifest.output.shape.iter().product();
    if output_len != Some(expected) {
        return Err(match manifest.detector {
            None => format!(
                "output shape is {:?}, which does not hold the {} labels of mien.json",
                output_fact.shape,
                manifest.labels.len()
            ),
            Some(_) => format!(
                "output shape is {:?}, mien.json's detector says {:?}",
                output_fact.shape, manifest.output.shape
            ),
        });
    }
    Ok(())
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` largest values with their indices, largest first (ties keep the lower index first).
pub fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut indexed: Vec<(usize, f32)> = values.iter().copied().enumerate().collect();
    indexed.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    indexed.truncate(k);
    indexed
}

fn proc_status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mb() -> Option<f64> {
    proc_status_mb("VmHWM:")
}

/// Current resident set size of this process in MiB (Linux `VmRSS`), if known.
pub fn current_rss_mb() -> Option<f64> {
    proc_status_mb("VmRSS:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[0] - 0.5).abs() < 1e-6 && p[2] == 0.0);
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[0.1, 0.4, 0.4, 0.1], 2), vec![(1, 0.4), (2, 0.4)]);
        assert_eq!(top_k(&[0.1], 3).len(), 1);
    }
}
