//! Reloads a written plan with the device runtime and compares it with the ONNX model run by tract-onnx.

use std::path::Path;

use mien_image::RgbImage;
use mien_plan::Verification;
use mien_runtime::{Model as PlanModel, RuntimeOptions};
use tract_onnx::prelude::*;

use crate::onnx::FixedModel;
use crate::{ConvertError, ConvertOptions};

/// The model a written plan is checked against.
pub struct Reference<'a> {
    /// The graph, run by tract-core in memory.
    pub model: &'a TypedModel,
    /// What it is, for the manifest.
    pub name: String,
}

/// Agreement between a plan and its source model.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// Inputs compared.
    pub inputs: usize,
    /// Largest absolute logit difference.
    pub max_abs_diff: f32,
    /// Fraction of inputs with the same top-1 class.
    pub top1_agreement: f32,
    /// What the plan was compared with.
    pub reference: String,
}

impl VerifyReport {
    /// The manifest form.
    pub fn to_manifest(&self, tolerance: f32) -> Verification {
        Verification {
            reference: self.reference.clone(),
            inputs: self.inputs,
            max_abs_logit_diff: self.max_abs_diff,
            tolerance,
            top1_agreement: self.top1_agreement,
        }
    }
}

/// A deterministic test picture 1.5x the model's input size (so the resize path runs): smooth colour
/// ramps, a bright disc and hashed noise, different for each `seed`.
pub fn synthetic_image(height: usize, width: usize, seed: u32) -> RgbImage {
    let (w, h) = ((width * 3 / 2).max(2) as u32, (height * 3 / 2).max(2) as u32);
    RgbImage::from_fn(w, h, |x, y| {
        let mut n = x.wrapping_mul(374761393) ^ y.wrapping_mul(668265263) ^ seed.wrapping_mul(2246822519);
        n = (n ^ (n >> 13)).wrapping_mul(1274126177);
        let noise = (n >> 24) as i32 - 128;
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let (cx, cy) = (fx - 0.3 - 0.1 * (seed % 4) as f32, fy - 0.5);
        let disc = if cx * cx + cy * cy < 0.04 { 90 } else { 0 };
        let channel = |base: f32| (base * 255.0) as i32 + disc + noise / 3;
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        image::Rgb([clamp(channel(fx)), clamp(channel(fy)), clamp(channel(1.0 - fx * fy))])
    })
}

/// tract's NNEF parse errors as words: `0: at line 17, in Tag:   truediv = mul(sub, x);   ^` becomes
/// "line 17 of the NNEF graph, the mul that makes `truediv` (`truediv = mul(sub, x);`)"; other errors
/// are passed on with their whitespace collapsed.
pub fn describe_parse_error(message: &str) -> String {
    let collapsed = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let parsed = (|| {
        let after_line = &message[message.find("at line ")? + "at line ".len()..];
        let line: usize = after_line[..after_line.find(',')?].trim().parse().ok()?;
        let statement = after_line[after_line.find(':')? + 1..].trim();
        let statement = statement[..statement.find(';')? + 1].trim();
        let (tensor, value) = statement.split_once('=')?;
        let op = value.trim().split('(').next()?.trim();
        Some(format!("line {line} of the NNEF graph, the {op} that makes `{}` (`{statement}`)", tensor.trim()))
    })();
    match parsed {
        Some(words) => format!("tract's NNEF parser stopped at {words}"),
        None => format!("tract says: {collapsed}"),
    }
}

fn argmax(v: &[f32]) -> usize {
    mien_runtime::top_k(v, 1)[0].0
}

/// Runs the staged plan (through the runtime's [`PlanModel`] with `plan_options`; the defaults are how
/// the device runs it) once per input and compares it with the reference model, run by tract in memory,
/// on the same inputs.
pub fn verify(
    fixed: &FixedModel,
    reference: &Reference,
    plan_dir: &Path,
    options: &ConvertOptions,
    plan_options: &RuntimeOptions,
) -> Result<VerifyReport, ConvertError> {
    let plan = PlanModel::load(plan_dir, plan_options).map_err(|e| match e {
        mien_runtime::RuntimeError::Tract { stage: "load", message, .. } => {
            ConvertError::Reload { path: options.model.clone(), what: describe_parse_error(&message) }
        }
        other => other.into(),
    })?;
    let mut images: Vec<RgbImage> = (0..options.verify_inputs)
        .map(|i| synthetic_image(fixed.size.0, fixed.size.1, i as u32 + 1))
        .collect();
    for path in &options.verify_images {
        images.push(mien_image::open_rgb(path)?);
    }
    if images.is_empty() {
        return Err(ConvertError::Flag { flag: "--verify-inputs".into(), expected: "at least one input".into() });
    }
    let tract_err = |e: TractError| ConvertError::Tract {
        path: options.model.clone(),
        stage: "run",
        message: format!("{e:#}").replace('\n', " "),
    };
    let runnable = reference.model.clone().into_optimized().and_then(|m| m.into_runnable()).map_err(tract_err)?;
    let (mut max_abs_diff, mut agree) = (0f32, 0usize);
    for image in &images {
        let input = plan.preprocessor().run(image);
        let ours = plan.run(&input)?;
        let tensor = Tensor::from_shape(&fixed.input_shape, &input).map_err(tract_err)?;
        let theirs = runnable.run(tvec!(tensor.into_tvalue())).map_err(tract_err)?;
        let theirs = theirs[0].cast_to::<f32>().map_err(tract_err)?;
        let theirs: Vec<f32> = theirs.to_plain_array_view::<f32>().map_err(tract_err)?.iter().copied().collect();
        for (a, b) in ours.iter().zip(&theirs) {
            let d = (a - b).abs();
            // NaN must fail verification, not slip past a max().
            max_abs_diff = if d.is_nan() || max_abs_diff.is_nan() { f32::NAN } else { max_abs_diff.max(d) };
        }
        agree += (argmax(&ours) == argmax(&theirs)) as usize;
    }
    Ok(VerifyReport {
        inputs: images.len(),
        max_abs_diff,
        top1_agreement: agree as f32 / images.len() as f32,
        reference: reference.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::describe_parse_error;

    #[test]
    fn parse_errors_become_words() {
        let tract = "0: at line 17, in Tag:\n  truediv = mul(sub, truediv_fix_rank_3);\n  ^\n";
        assert_eq!(
            describe_parse_error(tract),
            "tract's NNEF parser stopped at line 17 of the NNEF graph, the mul that makes `truediv` \
             (`truediv = mul(sub, truediv_fix_rank_3);`)"
        );
        assert_eq!(describe_parse_error("no graph.nnef\n  found"), "tract says: no graph.nnef found");
    }
}
