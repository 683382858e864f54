//! Image folders as evaluation sets: `DIR/<label>/*` (labelled) or images directly in `DIR` (unlabelled).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::EvalError;

/// Maps folder names to plan labels for datasets that spell labels differently (JAFFE `AN`, CK+
/// `anger`, ...). Matching is case-insensitive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelMap {
    entries: BTreeMap<String, String>,
}

impl LabelMap {
    /// Parses `from=to` pairs separated by commas or newlines (`#` starts a comment), given inline or
    /// as the path of a file holding them.
    pub fn parse(spec: &str) -> Result<LabelMap, EvalError> {
        let path = Path::new(spec);
        let (text, origin) = if !spec.contains('=') && path.is_file() {
            let text = std::fs::read_to_string(path).map_err(|e| EvalError::Io { path: path.to_path_buf(), message: e.to_string() })?;
            (text, spec.to_string())
        } else {
            (spec.to_string(), "--label-map".to_string())
        };
        let mut entries = BTreeMap::new();
        for item in text.lines().flat_map(|l| l.split('#').next().unwrap_or("").split(',')) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (from, to) = item.split_once('=').ok_or_else(|| EvalError::LabelMap {
                origin: origin.clone(),
                expected: format!("FOLDER=LABEL pairs, got {item:?}"),
            })?;
            let (from, to) = (from.trim(), to.trim());
            if from.is_empty() || to.is_empty() {
                return Err(EvalError::LabelMap { origin, expected: format!("non-empty names in {item:?}") });
            }
            entries.insert(from.to_lowercase(), to.to_lowercase());
        }
        Ok(LabelMap { entries })
    }

    /// The plan label index a folder name stands for.
    pub fn resolve(&self, folder: &str, labels: &[String]) -> Option<usize> {
        let folder = folder.to_lowercase();
        let name = self.entries.get(&folder).unwrap_or(&folder);
        labels.iter().position(|l| l.to_lowercase() == *name)
    }
}

/// One image to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The image file.
    pub path: PathBuf,
    /// Index of its true label in the plan's labels, when the set is labelled.
    pub label: Option<usize>,
}

/// A folder that matched no label; its images are not evaluated.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UnknownFolder {
    /// Folder name.
    pub name: String,
    /// Files in it.
    pub files: usize,
}

/// What a directory holds, ready to evaluate.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Images, sorted by path.
    pub items: Vec<Item>,
    /// Sub-folders that matched no label.
    pub unknown_folders: Vec<UnknownFolder>,
}

impl Dataset {
    /// True when every item has a label.
    pub fn is_labelled(&self) -> bool {
        !self.items.is_empty() && self.items.iter().all(|i| i.label.is_some())
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let io = |e: std::io::Error| EvalError::Io { path: dir.to_path_buf(), message: e.to_string() };
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && !is_hidden(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads `dir`. Sub-folders are label folders, matched to `labels` case-insensitively through `map`;
/// files directly in `dir` are unlabelled items. Every regular, non-hidden file is an item: files that
/// are not images show up as decode failures, never silently skipped.
pub fn scan(dir: &Path, labels: &[String], map: &LabelMap) -> Result<Dataset, EvalError> {
    if !dir.is_dir() {
        return Err(EvalError::Io { path: dir.to_path_buf(), message: "not a directory".into() });
    }
    let mut dataset = Dataset::default();
    for path in files_in(dir)? {
        dataset.items.push(Item { path, label: None });
    }
    let io = |e: std::io::Error| EvalError::Io { path: dir.to_path_buf(), message: e.to_string() };
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && !is_hidden(p))
        .collect();
    folders.sort();
    for folder in folders {
        let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let files = files_in(&folder)?;
        match map.resolve(&name, labels) {
            Some(label) => dataset.items.extend(files.into_iter().map(|path| Item { path, label: Some(label) })),
            None => dataset.unknown_folders.push(UnknownFolder { name, files: files.len() }),
        }
    }
    if dataset.items.is_empty() {
        return Err(EvalError::Empty {
            path: dir.to_path_buf(),
            unknown: dataset.unknown_folders.iter().map(|f| f.name.clone()).collect(),
        });
    }
    Ok(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"].map(String::from).to_vec()
    }

    #[test]
    fn label_maps_inline_and_from_files() {
        let map = LabelMap::parse("AN=angry, DI=disgust,HA = happy").unwrap();
        assert_eq!(map.resolve("an", &labels()), Some(0));
        assert_eq!(map.resolve("HA", &labels()), Some(3));
        assert_eq!(map.resolve("Fear", &labels()), Some(2), "unmapped names match directly");
        assert_eq!(map.resolve("contempt", &labels()), None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ck.map");
        std::fs::write(&file, "# CK+\nanger=angry\nhappiness=happy\n").unwrap();
        let map = LabelMap::parse(file.to_str().unwrap()).unwrap();
        assert_eq!(map.resolve("anger", &labels()), Some(0));
        let err = LabelMap::parse("anger:angry").unwrap_err().to_string();
        assert!(err.contains("--label-map") && err.contains("FOLDER=LABEL"), "{err}");
    }

    #[test]
    fn scans_labelled_and_unknown_folders() {
        let dir = tempfile::tempdir().unwrap();
        for (folder, n) in [("Happy", 2), ("SAD", 1), ("contempt", 3)] {
            std::fs::create_dir(dir.path().join(folder)).unwrap();
            for i in 0..n {
                std::fs::write(dir.path().join(folder).join(format!("{i}.png")), b"x").unwrap();
            }
        }
        std::fs::write(dir.path().join("Happy/.DS_Store"), b"x").unwrap();
        let d = scan(dir.path(), &labels(), &LabelMap::default()).unwrap();
        assert_eq!(d.items.len(), 3);
        assert!(d.is_labelled());
        assert_eq!(d.items[0].label, Some(3));
        assert_eq!(d.unknown_folders, vec![UnknownFolder { name: "contempt".into(), files: 3 }]);
    }

    #[test]
    fn empty_sets_are_errors_naming_unknown_folders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("AN")).unwrap();
        std::fs::write(dir.path().join("AN/1.png"), b"x").unwrap();
        let err = scan(dir.path(), &labels(), &LabelMap::default()).unwrap_err().to_string();
        assert!(err.contains("AN") && err.contains("--label-map"), "{err}");
    }
}
