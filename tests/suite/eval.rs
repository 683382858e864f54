//! `mien eval` logic on a small labelled tree whose answers are known from per-image classification.


use std::path::Path;

use crate::common::*;
use mien_eval::{compare, evaluate, scan, LabelMap};
use mien_runtime::{Classifier, RuntimeOptions};

const PHOTOS: [&str; 5] = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg"];

fn copy_photo(dir: &Path, folder: &str, photo: &str) {
    std::fs::create_dir_all(dir.join(folder)).unwrap();
    std::fs::copy(root().join("tests/data/photos").join(photo), dir.join(folder).join(photo)).unwrap();
}

#[test]
fn labelled_tree_with_label_map_unknown_folder_and_bad_file() {
    let classifier = Classifier::load(tiny_plan(), &RuntimeOptions { threads: 1, ..Default::default() }).unwrap();
    let labels = classifier.labels().to_vec();
    let predicted: Vec<usize> = PHOTOS
        .iter()
        .map(|p| classifier.classify(&mien_image::open_rgb(root().join("tests/data/photos").join(p)).unwrap()).unwrap().index)
        .collect();

    // Photos 0-2 go into the folder of their predicted label (correct); photo 3 into the next label's
    // folder (wrong); photo 4 into a JAFFE-style folder mapped to the label after its prediction (wrong).
    let dir = tempfile::tempdir().unwrap();
    let mut truth = vec![];
    for (i, photo) in PHOTOS.iter().enumerate() {
        let t = if i < 3 { predicted[i] } else { (predicted[i] + 1) % labels.len() };
        truth.push(t);
        let folder = if i == 4 { "XX".to_string() } else { labels[t].to_uppercase() };
        copy_photo(dir.path(), &folder, photo);
    }
    copy_photo(dir.path(), "contempt", "camera.png");
    std::fs::write(dir.path().join(labels[truth[0]].to_uppercase()).join("notes.jpg"), b"not a jpeg").unwrap();

    let map = LabelMap::parse(&format!("xx={}", labels[truth[4]])).unwrap();
    let dataset = scan(dir.path(), &labels, &map).unwrap();
    let report = evaluate(&classifier, &dataset, &|_, _| {}).unwrap();

    assert_eq!(report.images, 5);
    assert_eq!(report.accuracy, Some(3.0 / 5.0));
    let confusion = report.confusion.clone().unwrap();
    for i in 0..5 {
        assert!(confusion[truth[i]][predicted[i]] >= 1, "image {i} missing from confusion");
    }
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 5);
    assert_eq!(report.unreadable.len(), 1);
    assert!(report.unreadable[0].error.contains("notes.jpg"));
    assert_eq!(report.unknown_folders.len(), 1);
    assert_eq!(report.unknown_folders[0].name, "contempt");
    // Recall: null for labels without images, 1 for a label whose only image is right.
    let empty_label = (0..labels.len()).find(|l| !truth.contains(l)).unwrap();
    assert_eq!(report.recall[&labels[empty_label]], None);
    assert_eq!(report.recall[&labels[truth[0]]], Some(1.0));
    assert!(report.macro_f1.unwrap() > 0.0 && report.macro_f1.unwrap() < 1.0);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["schema"], "mien.eval/1");
    for field in ["accuracy", "macro_f1", "recall", "confusion", "images", "images_per_second"] {
        assert!(!json[field].is_null(), "{field}");
    }
}

#[test]
fn a_plan_against_itself_and_an_unlabelled_folder() {
    let dir = tempfile::tempdir().unwrap();
    for photo in PHOTOS {
        std::fs::copy(root().join("tests/data/photos").join(photo), dir.path().join(photo)).unwrap();
    }
    let a = Classifier::load(tiny_plan(), &RuntimeOptions { threads: 1, ..Default::default() }).unwrap();
    let b = Classifier::load(root().join("models/tiny-vit/tiny-vit.mien"), &RuntimeOptions { threads: 2, ..Default::default() }).unwrap();
    let dataset = scan(dir.path(), a.labels(), &LabelMap::default()).unwrap();
    assert!(!dataset.is_labelled());
    let report = compare(&a, &b, &dataset, &|_, _| {}).unwrap();
    assert_eq!(report.images, 5);
    assert_eq!(report.agreement, 1.0);
    assert!(report.mean_kl < 1e-9 && report.max_abs_diff < 1e-5, "{report:?}");
    assert!((report.logit_cosine - 1.0).abs() < 1e-9);
    assert_eq!(report.accuracy_a, None);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["schema"], "mien.eval.compare/1");
    for field in ["agreement", "mean_kl", "logit_cosine", "mean_abs_diff", "max_abs_diff"] {
        assert!(json[field].is_number(), "{field}");
    }
    assert!(json["accuracy_a"].is_null() && json["accuracy_b"].is_null());
    let single = evaluate(&a, &dataset, &|_, _| {}).unwrap();
    assert_eq!(single.accuracy, None);
    assert_eq!(single.predicted.values().sum::<u64>(), 5);
}

#[test]
fn plans_with_different_labels_are_not_compared() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.mien");
    let mut options = mien_convert::ConvertOptions::new(tiny_onnx(), &other);
    options.labels = Some(mien_convert::LabelSource::List((0..7).map(|i| format!("c{i}")).collect()));
    mien_convert::convert(&options, &mien_convert::Quiet).unwrap();
    let a = Classifier::load(tiny_plan(), &RuntimeOptions { threads: 1, ..Default::default() }).unwrap();
    let b = Classifier::load(&other, &RuntimeOptions { threads: 1, ..Default::default() }).unwrap();
    let photos = root().join("tests/data/photos");
    let dataset = scan(&photos, a.labels(), &LabelMap::default()).unwrap();
    let err = compare(&a, &b, &dataset, &|_, _| {}).unwrap_err().to_string();
    assert!(err.contains("labels differ"), "{err}");
}
