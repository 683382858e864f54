//! Labels and preprocessing from the `config.json` / `preprocessor_config.json` files Hugging Face
//! exports put beside the ONNX model.

use std::path::{Path, PathBuf};

use mien_plan::ResampleFilter;
use serde_json::Value;

use crate::ConvertError;

/// What the Hugging Face config files say, every field optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HfHints {
    /// `id2label` in index order, when complete.
    pub labels: Option<Vec<String>>,
    /// Model type (`vit`, `dinov2`, ...), for the manifest's model name.
    pub model_type: Option<String>,
    /// `size` as (height, width).
    pub size: Option<(usize, usize)>,
    /// `resample` mapped to our filters.
    pub resample: Option<ResampleFilter>,
    /// Effective rescale factor (1 when `do_rescale` is false).
    pub rescale: Option<f64>,
    /// Effective mean (0 when `do_normalize` is false).
    pub mean: Option<Vec<f32>>,
    /// Effective std (1 when `do_normalize` is false).
    pub std: Option<Vec<f32>>,
    /// Files that were read.
    pub sources: Vec<PathBuf>,
}

fn bad(path: &Path, field: &str, expected: &str) -> ConvertError {
    ConvertError::Config { path: path.to_path_buf(), field: field.to_string(), expected: expected.to_string() }
}

fn read_json(path: &Path) -> Result<Option<Value>, ConvertError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| bad(path, "(file)", &format!("valid JSON ({e})"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConvertError::Io { path: path.to_path_buf(), source: e }),
    }
}

fn float_list(path: &Path, field: &str, value: &Value) -> Result<Vec<f32>, ConvertError> {
    match value {
        Value::Number(n) => Ok(vec![n.as_f64().unwrap_or(f64::NAN) as f32]),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32).ok_or_else(|| bad(path, field, "a list of numbers")))
            .collect(),
        _ => Err(bad(path, field, "a number or a list of numbers")),
    }
}

/// Reads `config.json` and `preprocessor_config.json` from `dir` if they exist.
pub fn read_hints(dir: &Path) -> Result<HfHints, ConvertError> {
    let mut hints = HfHints::default();
    let config_path = dir.join("config.json");
    if let Some(config) = read_json(&config_path)? {
        hints.sources.push(config_path.clone());
        hints.model_type = config.get("model_type").and_then(|v| v.as_str()).map(str::to_string);
        if let Some(map) = config.get("id2label") {
            let map = map.as_object().ok_or_else(|| bad(&config_path, "id2label", "an object of index -> label"))?;
            let mut pairs = Vec::with_capacity(map.len());
            for (k, v) in map {
                let index: usize = k.parse().map_err(|_| bad(&config_path, "id2label", "integer keys"))?;
                let label = v.as_str().ok_or_else(|| bad(&config_path, "id2label", "string labels"))?;
                pairs.push((index, label.to_string()));
            }
            pairs.sort();
            if pairs.iter().enumerate().any(|(i, (k, _))| *k != i) {
                return Err(bad(&config_path, "id2label", "indices 0..N-1 without gaps"));
            }
            if !pairs.is_empty() {
                hints.labels = Some(pairs.into_iter().map(|(_, l)| l).collect());
            }
        }
    }

    let pre_path = dir.join("preprocessor_config.json");
    if let Some(pre) = read_json(&pre_path)? {
        hints.sources.push(pre_path.clone());
        let flag = |name: &str| pre.get(name).and_then(|v| v.as_bool()).unwrap_or(true);
        if flag("do_resize") {
            if let Some(size) = pre.get("size") {
                hints.size = Some(match size {
                    Value::Number(n) => {
                        let s = n.as_u64().ok_or_else(|| bad(&pre_path, "size", "a positive integer"))? as usize;
                        (s, s)
                    }
                    Value::Object(o) => match (o.get("height"), o.get("width")) {
                        (Some(h), Some(w)) => (
                            h.as_u64().ok_or_else(|| bad(&pre_path, "size.height", "a positive integer"))? as usize,
                            w.as_u64().ok_or_else(|| bad(&pre_path, "size.width", "a positive integer"))? as usize,
                        ),
                        _ => {
                            return Err(bad(
                                &pre_path,
                                "size",
                                "{\"height\": H, \"width\": W} (shortest_edge resizing with a centre crop is not supported yet; pass --size HxW if the model was trained on whole resized images)",
                            ))
                        }
                    },
                    _ => return Err(bad(&pre_path, "size", "an integer or {\"height\", \"width\"}")),
                });
            }
            if let Some(r) = pre.get("resample") {
                // PIL.Image.Resampling values, as Hugging Face stores them.
                hints.resample = Some(match r.as_u64() {
                    Some(0) => ResampleFilter::Nearest,
                    Some(2) => ResampleFilter::Bilinear,
                    Some(3) => ResampleFilter::Bicubic,
                    _ => {
                        return Err(bad(
                            &pre_path,
                            "resample",
                            "0 (nearest), 2 (bilinear) or 3 (bicubic); lanczos, box and hamming are not supported",
                        ))
                    }
                });
            }
        }
        hints.rescale = Some(if flag("do_rescale") {
            match pre.get("rescale_factor") {
                Some(v) => v.as_f64().ok_or_else(|| bad(&pre_path, "rescale_factor", "a number"))?,
                None => 1.0 / 255.0,
            }
        } else {
            1.0
        });
        if flag("do_normalize") {
            if let Some(m) = pre.get("image_mean") {
                hints.mean = Some(float_list(&pre_path, "image_mean", m)?);
            }
            if let Some(s) = pre.get("image_std") {
                hints.std = Some(float_list(&pre_path, "image_std", s)?);
            }
        } else {
            hints.mean = Some(vec![0.0]);
            hints.std = Some(vec![1.0]);
        }
    }
    Ok(hints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vit_style_configs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type":"vit","id2label":{"1":"disgust","0":"angry","2":"fear"}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("preprocessor_config.json"),
            r#"{"do_normalize":true,"do_rescale":true,"do_resize":true,"image_mean":[0.5,0.5,0.5],
                "image_std":[0.5,0.5,0.5],"resample":2,"rescale_factor":0.00392156862745098,
                "size":{"height":224,"width":224}}"#,
        )
        .unwrap();
        let h = read_hints(dir.path()).unwrap();
        assert_eq!(h.labels.unwrap(), ["angry", "disgust", "fear"]);
        assert_eq!(h.size, Some((224, 224)));
        assert_eq!(h.resample, Some(ResampleFilter::Bilinear));
        assert_eq!(h.rescale, Some(0.00392156862745098));
        assert_eq!(h.mean.unwrap(), [0.5; 3]);
    }

    #[test]
    fn missing_files_give_empty_hints() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_hints(dir.path()).unwrap(), HfHints::default());
    }

    #[test]
    fn bad_values_name_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("preprocessor_config.json"), r#"{"resample": 1}"#).unwrap();
        let err = read_hints(dir.path()).unwrap_err().to_string();
        assert!(err.contains("preprocessor_config.json") && err.contains("resample"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{oops").unwrap();
        let err = read_hints(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("JSON"), "{err}");
    }
}
