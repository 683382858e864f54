//! ONNX import and shape fixing: one image input, batch 1, fixed height and width, typed and decluttered.

use std::path::Path;

use mien_plan::Layout;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::ConvertError;

/// What the caller (flags, Hugging Face configs) knows about the input before looking at the model.
#[derive(Debug, Clone, Default)]
pub struct InputHints {
    /// Forced layout.
    pub layout: Option<Layout>,
    /// Forced channel count.
    pub channels: Option<usize>,
    /// Size from flags: wins over everything, and must agree with a fixed model size.
    pub size_flag: Option<(usize, usize)>,
    /// Size from preprocessor_config.json: used when the model's size is dynamic.
    pub size_config: Option<(usize, usize)>,
    /// A detector: its output is per-anchor values, not class logits (the manifest checks its shape).
    pub detector: bool,
}

/// An ONNX model with its input fixed to `[1, C, H, W]` / `[1, H, W, C]`, typed and decluttered.
#[derive(Debug, Clone)]
pub struct FixedModel {
    /// The decluttered float model.
    pub model: TypedModel,
    /// Name of the image input.
    pub input_name: String,
    /// Name of the logits output.
    pub output_name: String,
    /// Fixed input shape.
    pub input_shape: Vec<usize>,
    /// Layout of the input.
    pub layout: Layout,
    /// 1 or 3.
    pub channels: usize,
    /// (height, width).
    pub size: (usize, usize),
    /// Fixed output shape.
    pub output_shape: Vec<usize>,
}

fn not_classifier(path: &Path, reason: impl Into<String>) -> ConvertError {
    ConvertError::NotImageClassifier { path: path.to_path_buf(), reason: reason.into() }
}

fn tract_error<'a>(path: &'a Path, stage: &'static str) -> impl Fn(TractError) -> ConvertError + 'a {
    move |e| ConvertError::Tract {
        path: path.to_path_buf(),
        stage,
        message: format!("{e:#}").replace('\n', " "),
    }
}

/// Loads an ONNX model and fixes its input shape.
pub fn load_and_fix(path: &Path, hints: &InputHints) -> Result<FixedModel, ConvertError> {
    // HF / ORT exports carry symbolic value_info that would otherwise pin intermediate shapes.
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(path)
        .map_err(tract_error(path, "read"))?;

    // Operators tract does not know load as placeholders and fail later, when typing, with a message
    // about translation; name them now.
    let mut unsupported: Vec<String> = Vec::new();
    for node in model.nodes() {
        let op = node.op.name();
        if let Some(name) = op.strip_prefix("Unimplemented(").and_then(|rest| rest.strip_suffix(')')) {
            let entry = format!("`{name}` (node {:?})", node.name);
            if !unsupported.iter().any(|e| e.starts_with(&format!("`{name}`"))) {
                unsupported.push(entry);
            }
        }
    }
    if !unsupported.is_empty() {
        return Err(ConvertError::UnsupportedOps { path: path.to_path_buf(), ops: unsupported.join(", ") });
    }

    if model.inputs.len() != 1 {
        let names: Vec<_> = model.inputs.iter().map(|o| model.node(o.node).name.clone()).collect();
        return Err(not_classifier(
            path,
            format!("it has {} inputs ({}); an image classifier has exactly one image input", names.len(), names.join(", ")),
        ));
    }
    if model.outputs.is_empty() {
        return Err(not_classifier(path, "it has no outputs"));
    }
    let input_name = model.node(model.inputs[0].node).name.clone();
    let fact = model.input_fact(0).map_err(tract_error(path, "read"))?.clone();
    if let Some(dt) = fact.datum_type.concretize() {
        if dt != f32::datum_type() {
            return Err(not_classifier(
                path,
                format!("input {input_name:?} is {dt:?}; mien expects a float32 image tensor"),
            ));
        }
    }
    // Each dimension: Some(n) when fixed, None when symbolic or unknown.
    let dims: Option<Vec<Option<usize>>> = if fact.shape.is_open() {
        None
    } else {
        Some(fact.shape.dims().map(|d| d.concretize().and_then(|d| d.as_i64()).and_then(|d| usize::try_from(d).ok())).collect())
    };
    if let Some(dims) = &dims {
        if dims.len() != 4 {
            return Err(not_classifier(
                path,
                format!(
                    "input {input_name:?} has rank {} ({:?}); expected an image tensor [N,C,H,W] or [N,H,W,C]",
                    dims.len(),
                    fact.shape
                ),
            ));
        }
        if let Some(batch) = dims[0] {
            if batch != 1 {
                return Err(not_classifier(path, format!("input {input_name:?} has a fixed batch of {batch}; mien runs batch 1")));
            }
        }
    }
    let dim = |i: usize| dims.as_ref().and_then(|d| d[i]);

    let layout = match hints.layout {
        Some(l) => l,
        None => match (dim(1), dim(3)) {
            (Some(1 | 3), _) => Layout::Nchw,
            (_, Some(1 | 3)) => Layout::Nhwc,
            _ => {
                return Err(ConvertError::Flag {
                    flag: "--layout".into(),
                    expected: format!(
                        "nchw or nhwc: the layout of input {input_name:?} ({:?}) cannot be told from its shape",
                        fact.shape
                    ),
                })
            }
        },
    };
    let (c_axis, h_axis, w_axis) = match layout {
        Layout::Nchw => (1, 2, 3),
        Layout::Nhwc => (3, 1, 2),
    };
    let channels = match (hints.channels, dim(c_axis)) {
        (Some(c), Some(m)) if c != m => {
            return Err(ConvertError::Flag {
                flag: "--channels".into(),
                expected: format!("{m}: the model's input {input_name:?} has {m} channels in {layout:?} layout"),
            })
        }
        (Some(c), _) => c,
        (None, Some(m)) => m,
        (None, None) => {
            return Err(ConvertError::Flag {
                flag: "--channels".into(),
                expected: format!("1 or 3: input {input_name:?} has a dynamic channel dimension"),
            })
        }
    };
    if channels != 1 && channels != 3 {
        return Err(not_classifier(path, format!("input {input_name:?} has {channels} channels; expected 1 or 3")));
    }
    let model_size = match (dim(h_axis), dim(w_axis)) {
        (Some(h), Some(w)) => Some((h, w)),
        _ => None,
    };
    let size = match (hints.size_flag, model_size) {
        (Some(flag), Some(fixed)) if flag != fixed => {
            return Err(ConvertError::Flag {
                flag: "--size".into(),
                expected: format!(
                    "{}x{} or nothing: the model's input {input_name:?} is fixed to that size",
                    fixed.0, fixed.1
                ),
            })
        }
        (Some(flag), _) => flag,
        (None, Some(fixed)) => fixed,
        (None, None) => match hints.size_config {
            Some(size) => size,
            None => {
                return Err(ConvertError::Flag {
                    flag: "--size".into(),
                    expected: format!("HxW: input {input_name:?} ({:?}) has a dynamic height or width", fact.shape),
                })
            }
        },
    };
    let input_shape = match layout {
        Layout::Nchw => vec![1, channels, size.0, size.1],
        Layout::Nhwc => vec![1, size.0, size.1, channels],
    };
    model
        .set_input_fact(0, f32::fact(&input_shape).into())
        .map_err(tract_error(path, "fix the input shape of"))?;
    let model = model.into_typed().map_err(tract_error(path, "type"))?;
    let model = model.into_decluttered().map_err(tract_error(path, "declutter"))?;

    if model.outputs.len() != 1 {
        return Err(not_classifier(
            path,
            format!("it has {} outputs; an image classifier has one (the logits)", model.outputs.len()),
        ));
    }
    // The ONNX tensor name ("logits") survives as the outlet label; node names change with decluttering.
    let output_name = model
        .outlet_label(model.outputs[0])
        .map(str::to_string)
        .unwrap_or_else(|| model.node(model.outputs[0].node).name.clone());
    let output_fact = model.outlet_fact(model.outputs[0]).map_err(tract_error(path, "type"))?;
    let output_shape: Vec<usize> = match output_fact.shape.as_concrete() {
        Some(s) => s.to_vec(),
        None => {
            return Err(not_classifier(path, format!("output {output_name:?} has no fixed shape ({:?})", output_fact.shape)))
        }
    };
    if output_fact.datum_type != f32::datum_type() {
        return Err(not_classifier(path, format!("output {output_name:?} is {:?}, not float logits", output_fact.datum_type)));
    }
    let classes: usize = output_shape.iter().product();
    if !hints.detector && (output_shape.iter().filter(|d| **d > 1).count() > 1 || classes < 2) {
        return Err(not_classifier(
            path,
            format!("output {output_name:?} has shape {output_shape:?}; expected class logits like [1, N]"),
        ));
    }
    Ok(FixedModel { model, input_name, output_name, input_shape, layout, channels, size, output_shape })
}
