//! The mien plan format, shared by the converter (which writes plans) and the runtime (which loads them).
//!
//! A plan is a shape-fixed tract NNEF graph plus a `mien.json` [`Manifest`], stored either as a
//! directory or as an uncompressed tar named `NAME.mien` (the manifest is its first entry). Loading a
//! plan validates the manifest and checks the size and CRC-32 of every graph file before tract parses
//! anything, so truncated or altered plans fail with a one-line error instead of a confusing tract
//! message.

mod manifest;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

pub use manifest::{
    AnchorLayer, ColorOrder, DetectorSpec, DType, Drift, FileEntry, FloatLayer, InputSpec, Layout, Manifest, ModelInfo, OutputSpec,
    HalfPrecision, Precision, Preprocessing, Quantization, ResampleFilter, Verification, FORMAT_VERSION, TRACT_VERSION,
};
pub use writer::{remove_staging_areas, PlanKind, PlanWriter};

/// Name of the manifest file at the root of a plan.
pub const MANIFEST_FILE: &str = "mien.json";

/// File extension that selects the single-file (tar) plan form.
pub const TAR_EXTENSION: &str = "mien";

/// Everything that can go wrong reading or writing a plan. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A filesystem operation failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// The path holds no manifest.
    #[error("{path} is not a mien plan: no {MANIFEST_FILE} (expected a directory or a NAME.mien file written by mien-convert)")]
    NotAPlan {
        /// The path given.
        path: PathBuf,
    },
    /// The manifest is not valid JSON or does not follow the schema.
    #[error("invalid {MANIFEST_FILE}: {message}")]
    Syntax {
        /// What the JSON parser said.
        message: String,
    },
    /// A manifest field has an unexpected value.
    #[error("invalid {MANIFEST_FILE}: field `{field}`: expected {expected}")]
    InvalidField {
        /// Dotted field name.
        field: String,
        /// What was expected (and what was found).
        expected: String,
    },
    /// The plan was written by a newer mien.
    #[error("plan format version {found} is newer than this mien supports ({supported}): upgrade mien")]
    NewerFormat {
        /// Version in the manifest.
        found: u64,
        /// Newest version this build reads.
        supported: u32,
    },
    /// The plan was written by an incompatible tract.
    #[error("plan was written by tract {found}; this mien runs tract {supported} and loads plans from tract 0.23.0 up to {supported}: re-convert the model")]
    TractVersion {
        /// tract version in the manifest.
        found: String,
        /// tract version of this build.
        supported: &'static str,
    },
    /// A graph file is missing, extra, truncated or altered.
    #[error("plan {path} is corrupt: {detail}")]
    Corrupt {
        /// The plan.
        path: PathBuf,
        /// Which file and how.
        detail: String,
    },
    /// An error inside the manifest, with the plan path attached.
    #[error("{path}: {inner}")]
    InPlan {
        /// The plan.
        path: PathBuf,
        /// The manifest error.
        inner: Box<PlanError>,
    },
}

impl PlanError {
    fn io(path: &Path, cause: std::io::Error) -> PlanError {
        PlanError::Io { path: path.to_path_buf(), cause }
    }

    fn in_plan(self, path: &Path) -> PlanError {
        match self {
            PlanError::Syntax { .. }
            | PlanError::InvalidField { .. }
            | PlanError::NewerFormat { .. }
            | PlanError::TractVersion { .. } => {
                PlanError::InPlan { path: path.to_path_buf(), inner: Box::new(self) }
            }
            other => other,
        }
    }
}

/// A validated plan on disk.
#[derive(Debug, Clone)]
pub struct Plan {
    path: PathBuf,
    kind: PlanKind,
    manifest: Manifest,
}

impl Plan {
    /// Opens a plan (directory or `.mien` tar), validates its manifest and checks every graph file's size
    /// and checksum.
    pub fn open(path: impl AsRef<Path>) -> Result<Plan, PlanError> {
        let plan = Plan::open_unverified(path)?;
        plan.verify_files()?;
        Ok(plan)
    }

    /// Opens a plan and validates its manifest without reading the graph files (fast; for `info`-style
    /// listings). Use [`Plan::open`] before running it.
    pub fn open_unverified(path: impl AsRef<Path>) -> Result<Plan, PlanError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| PlanError::io(path, e))?;
        let (kind, text) = if meta.is_dir() {
            let manifest_path = path.join(MANIFEST_FILE);
            let text = match std::fs::read_to_string(&manifest_path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(PlanError::NotAPlan { path: path.to_path_buf() })
                }
                Err(e) => return Err(PlanError::io(&manifest_path, e)),
            };
            (PlanKind::Directory, text)
        } else {
            (PlanKind::Tar, read_manifest_from_tar(path)?)
        };
        let manifest = Manifest::from_json(&text).map_err(|e| e.in_plan(path))?;
        Ok(Plan { path: path.to_path_buf(), kind, manifest })
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where the plan is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Directory or tar.
    pub fn kind(&self) -> PlanKind {
        self.kind
    }

    /// The path to hand to tract's NNEF loader (`model_for_path`): the directory or the tar itself. tract
    /// ignores `mien.json`.
    pub fn nnef_path(&self) -> &Path {
        &self.path
    }

    /// Total size of the graph files in bytes.
    pub fn graph_bytes(&self) -> u64 {
        self.manifest.files.iter().map(|f| f.size).sum()
    }

    /// Reads every graph file once and compares sizes and CRC-32 with the manifest; also refuses files
    /// the manifest does not list.
    pub fn verify_files(&self) -> Result<(), PlanError> {
        let corrupt = |detail: String| PlanError::Corrupt { path: self.path.clone(), detail };
        let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
        match self.kind {
            PlanKind::Directory => {
                for entry in walkdir::WalkDir::new(&self.path).min_depth(1) {
                    let entry = entry.map_err(|e| corrupt(e.to_string()))?;
                    if entry.file_type().is_dir() {
                        continue;
                    }
                    let rel = relative_name(&self.path, entry.path());
                    if rel == MANIFEST_FILE {
                        continue;
                    }
                    let file = File::open(entry.path()).map_err(|e| PlanError::io(entry.path(), e))?;
                    let (size, crc) = checksum(file).map_err(|e| PlanError::io(entry.path(), e))?;
                    seen.insert(rel, (size, crc));
                }
            }
            PlanKind::Tar => {
                let file = File::open(&self.path).map_err(|e| PlanError::io(&self.path, e))?;
                let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
                let entries = archive.entries().map_err(|e| corrupt(format!("unreadable tar: {e}")))?;
                for entry in entries {
                    let entry = entry.map_err(|e| corrupt(format!("unreadable tar entry: {e}")))?;
                    if !entry.header().entry_type().is_file() {
                        continue;
                    }
                    let rel = entry
                        .path()
                        .map_err(|e| corrupt(format!("bad entry name: {e}")))?
                        .to_string_lossy()
                        .trim_start_matches("./")
                        .to_string();
                    if rel == MANIFEST_FILE {
                        continue;
                    }
                    let declared = entry.header().size().unwrap_or(0);
                    let (size, crc) =
                        checksum(entry).map_err(|e| corrupt(format!("{rel}: {e}")))?;
                    if size != declared {
                        return Err(corrupt(format!("{rel}: truncated ({size} of {declared} bytes)")));
                    }
                    seen.insert(rel, (size, crc));
                }
            }
        }
        for expected in &self.manifest.files {
            match seen.remove(&expected.path) {
                None => return Err(corrupt(format!("{} is missing", expected.path))),
                Some((size, _)) if size != expected.size => {
                    return Err(corrupt(format!(
                        "{}: {} bytes, the manifest records {}",
                        expected.path, size, expected.size
                    )))
                }
                Some((_, crc)) if !crc.eq_ignore_ascii_case(&expected.crc32) => {
                    return Err(corrupt(format!(
                        "{}: checksum {} does not match the manifest's {}",
                        expected.path, crc, expected.crc32
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = seen.keys().next() {
            return Err(corrupt(format!("{extra} is not listed in {MANIFEST_FILE}")));
        }
        Ok(())
    }
}

fn relative_name(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Size and CRC-32 of a stream.
pub(crate) fn checksum(mut reader: impl Read) -> std::io::Result<(u64, String)> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, format!("{:08x}", hasher.finalize())))
}

/// Whether the file's first block carries the ustar magic (tar's format marker, at byte 257).
fn looks_like_tar(path: &Path) -> bool {
    let mut block = [0u8; 512];
    File::open(path).and_then(|mut f| f.read_exact(&mut block)).is_ok() && &block[257..262] == b"ustar"
}

fn read_manifest_from_tar(path: &Path) -> Result<String, PlanError> {
    let file = File::open(path).map_err(|e| PlanError::io(path, e))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let not_a_plan = || PlanError::NotAPlan { path: path.to_path_buf() };
    let mut entries = archive.entries().map_err(|_| not_a_plan())?;
    // The writer puts the manifest first, so it is found without reading the weights.
    let mut first = match entries.next() {
        Some(Ok(entry)) => entry,
        // A tar (its magic in place) whose first header is damaged is a broken plan, not another file.
        Some(Err(e)) if looks_like_tar(path) => {
            return Err(PlanError::Corrupt { path: path.to_path_buf(), detail: format!("unreadable tar entry: {e}") })
        }
        _ => return Err(not_a_plan()),
    };
    let name = first.path().map_err(|_| not_a_plan())?.to_string_lossy().into_owned();
    if name.trim_start_matches("./") != MANIFEST_FILE {
        return Err(not_a_plan());
    }
    if first.header().size().unwrap_or(u64::MAX) > 16 << 20 {
        return Err(PlanError::Corrupt { path: path.to_path_buf(), detail: format!("{MANIFEST_FILE} is implausibly large") });
    }
    let mut text = String::new();
    first.read_to_string(&mut text).map_err(|e| PlanError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("{MANIFEST_FILE}: {e}"),
    })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_sample(dir: &Path, name: &str) -> PathBuf {
        let out = dir.join(name);
        let writer = PlanWriter::new(&out).unwrap();
        std::fs::write(writer.graph_dir().join("graph.nnef"), b"version 1.0;\n").unwrap();
        std::fs::create_dir_all(writer.graph_dir().join("enc")).unwrap();
        std::fs::write(writer.graph_dir().join("enc/w.dat"), vec![7u8; 4096]).unwrap();
        let mut m = manifest::tests::sample();
        m.files.clear();
        writer.finish(m).unwrap();
        out
    }

    #[test]
    fn tar_and_directory_plans_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["p.mien", "pdir"] {
            let path = write_sample(dir.path(), name);
            let plan = Plan::open(&path).unwrap();
            assert_eq!(plan.manifest().files.len(), 2);
            assert_eq!(plan.graph_bytes(), 13 + 4096);
        }
        // Nothing left behind but the two plans.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn truncated_tar_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_sample(dir.path(), "p.mien");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3000]).unwrap();
        let err = Plan::open(&path).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn altered_weight_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_sample(dir.path(), "pdir");
        std::fs::write(path.join("enc/w.dat"), vec![8u8; 4096]).unwrap();
        let err = Plan::open(&path).unwrap_err().to_string();
        assert!(err.contains("enc/w.dat") && err.contains("checksum"), "{err}");
        std::fs::write(path.join("extra.dat"), b"x").unwrap();
        std::fs::write(path.join("enc/w.dat"), vec![7u8; 4096]).unwrap();
        let err = Plan::open(&path).unwrap_err().to_string();
        assert!(err.contains("extra.dat"), "{err}");
    }

    #[test]
    fn not_a_plan() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.mien");
        std::fs::write(&junk, b"hello").unwrap();
        assert!(matches!(Plan::open(&junk), Err(PlanError::NotAPlan { .. })));
        assert!(matches!(Plan::open(dir.path()), Err(PlanError::NotAPlan { .. })));
        let err = Plan::open(dir.path().join("absent")).unwrap_err().to_string();
        assert!(err.contains("absent"), "{err}");
    }

    #[test]
    fn newer_plan_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_sample(dir.path(), "pdir");
        let text = std::fs::read_to_string(path.join(MANIFEST_FILE)).unwrap();
        std::fs::write(path.join(MANIFEST_FILE), text.replace("\"format_version\": 1", "\"format_version\": 2")).unwrap();
        let err = Plan::open(&path).unwrap_err().to_string();
        assert!(err.contains("pdir") && err.contains("upgrade mien"), "{err}");
    }
}
