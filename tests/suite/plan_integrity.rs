//! Damaged, altered and foreign plans must fail to load with a one-line error naming the plan.


use std::path::{Path, PathBuf};

use crate::common::*;
use mien_runtime::{Classifier, RuntimeError, RuntimeOptions};

fn directory_plan(dir: &Path) -> PathBuf {
    let out = dir.join("plan");
    mien_convert::convert(&mien_convert::ConvertOptions::new(tiny_onnx(), &out), &mien_convert::Quiet).unwrap();
    out
}

fn load_err(path: &Path) -> String {
    let err = Classifier::load(path, &RuntimeOptions { threads: 1, ..Default::default() }).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg}");
    msg
}

fn edit_manifest(plan: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = plan.join("mien.json");
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

#[test]
fn truncated_tar_plan() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(tiny_plan()).unwrap();
    let cut = dir.path().join("cut.mien");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let msg = load_err(&cut);
    assert!(msg.contains("cut.mien") && msg.contains("corrupt"), "{msg}");
}

#[test]
fn altered_weights() {
    let dir = tempfile::tempdir().unwrap();
    let plan = directory_plan(dir.path());
    let dat = walk(&plan).into_iter().find(|p| p.extension().is_some_and(|e| e == "dat")).unwrap();
    let mut bytes = std::fs::read(&dat).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&dat, bytes).unwrap();
    let msg = load_err(&plan);
    assert!(msg.contains("corrupt") && msg.contains("checksum"), "{msg}");
}

#[test]
fn newer_format_version() {
    let dir = tempfile::tempdir().unwrap();
    let plan = directory_plan(dir.path());
    edit_manifest(&plan, |m| m["format_version"] = 99.into());
    let msg = load_err(&plan);
    assert!(msg.contains("format version 99") && msg.contains("upgrade mien"), "{msg}");
}

#[test]
fn newer_tract() {
    let dir = tempfile::tempdir().unwrap();
    let plan = directory_plan(dir.path());
    edit_manifest(&plan, |m| m["tract_version"] = "0.24.1".into());
    let msg = load_err(&plan);
    assert!(msg.contains("tract 0.24.1"), "{msg}");
}

#[test]
fn label_count_not_matching_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let plan = directory_plan(dir.path());
    edit_manifest(&plan, |m| {
        m["labels"].as_array_mut().unwrap().pop();
    });
    let msg = load_err(&plan);
    assert!(msg.contains("labels") && msg.contains("7 labels"), "{msg}");

    // Consistent manifest, inconsistent graph: caught when the graph loads.
    edit_manifest(&plan, |m| m["output"]["shape"] = serde_json::json!([1, 6]));
    let err = Classifier::load(&plan, &RuntimeOptions { threads: 1, ..Default::default() }).unwrap_err();
    assert!(matches!(err, RuntimeError::GraphMismatch { .. }), "{err}");
    assert!(err.to_string().contains("6 labels"), "{err}");
}

#[test]
fn malformed_manifest_json() {
    let dir = tempfile::tempdir().unwrap();
    let plan = directory_plan(dir.path());
    std::fs::write(plan.join("mien.json"), "{\"format_version\": 1, \"labels\": ").unwrap();
    let msg = load_err(&plan);
    assert!(msg.contains("mien.json") && msg.contains("plan"), "{msg}");
}

#[test]
fn graph_text_changed_with_its_checksum() {
    // Someone edits graph.nnef and fixes up the manifest: tract's own parse error still comes back as
    // one line naming the plan.
    let dir = tempfile::tempdir().unwrap();
    let plan = directory_plan(dir.path());
    let graph = plan.join("graph.nnef");
    let text = std::fs::read_to_string(&graph).unwrap().replacen("graph ", "grpah ", 1);
    std::fs::write(&graph, &text).unwrap();
    let crc = format!("{:08x}", crc32fast::hash(text.as_bytes()));
    edit_manifest(&plan, |m| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["path"] == "graph.nnef" {
                f["size"] = text.len().into();
                f["crc32"] = crc.clone().into();
            }
        }
    });
    let msg = load_err(&plan);
    assert!(msg.contains("plan") && msg.contains("tract could not load"), "{msg}");
}

#[test]
fn not_a_plan_at_all() {
    let msg = load_err(&root().join("tests/data/photos/astronaut.png"));
    assert!(msg.contains("astronaut.png") && msg.contains("not a mien plan"), "{msg}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}
