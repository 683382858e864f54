//! Atomic plan writing: everything is staged beside the destination and renamed into place at the end,
//! so a failed or interrupted conversion never leaves a partial plan under the requested name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::manifest::{FileEntry, Manifest};
use crate::{checksum, relative_name, PlanError, MANIFEST_FILE, TAR_EXTENSION};

/// The two on-disk forms of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// A directory holding `mien.json` and the NNEF files.
    Directory,
    /// An uncompressed tar (`NAME.mien`) with `mien.json` as its first entry.
    Tar,
}

impl PlanKind {
    /// `.mien` selects the tar form; anything else is a directory.
    pub fn for_path(path: &Path) -> PlanKind {
        match path.extension() {
            Some(ext) if ext == TAR_EXTENSION => PlanKind::Tar,
            _ => PlanKind::Directory,
        }
    }
}

/// Stages a plan next to its destination and moves it into place on [`PlanWriter::finish`]. Dropping the
/// writer without finishing removes the staging area.
pub struct PlanWriter {
    destination: PathBuf,
    kind: PlanKind,
    staging: tempfile::TempDir,
    /// Graph file entries recorded by [`PlanWriter::stage_manifest`], so `finish` does not read the
    /// (possibly hundreds of MB of) graph files a second time.
    staged_files: Option<Vec<FileEntry>>,
}

impl PlanWriter {
    /// Prepares to write a plan at `destination` (form chosen by [`PlanKind::for_path`]). Refuses to
    /// replace an existing directory that is not a plan.
    pub fn new(destination: impl AsRef<Path>) -> Result<PlanWriter, PlanError> {
        let destination = destination.as_ref().to_path_buf();
        let kind = PlanKind::for_path(&destination);
        if destination.is_dir() && !destination.join(MANIFEST_FILE).is_file() {
            return Err(PlanError::Io {
                path: destination,
                cause: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a mien plan; refusing to replace it",
                ),
            });
        }
        let parent = match destination.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        remove_stale_staging(&parent);
        // Created and registered under the lock, so a signal's cleanup sees every staging area.
        let mut live = LIVE_STAGING.lock().unwrap_or_else(|e| e.into_inner());
        // The process id in the name lets a later writer tell a staging area whose writer was killed.
        let staging = tempfile::Builder::new()
            .prefix(&format!("{STAGING_PREFIX}{}-", std::process::id()))
            .tempdir_in(&parent)
            // The OS's words alone: tempfile's would add the staging area's random name.
            .map_err(|e| PlanError::Io { path: parent.clone(), cause: without_path(e) })?;
        if !live.contains(&parent) {
            live.push(parent.clone());
        }
        drop(live);
        std::fs::create_dir(staging.path().join("plan"))
            .map_err(|e| PlanError::Io { path: staging.path().to_path_buf(), cause: e })?;
        Ok(PlanWriter { destination, kind, staging, staged_files: None })
    }

    /// The (empty, existing) directory the NNEF graph files go into.
    pub fn graph_dir(&self) -> PathBuf {
        self.staging.path().join("plan")
    }

    /// A path that does not exist yet inside the staging area, for writers that insist on creating the
    /// directory themselves (tract's `write_to_dir`); pass it to [`PlanWriter::adopt_graph_dir`].
    pub fn fresh_dir(&self, name: &str) -> PathBuf {
        self.staging.path().join(name)
    }

    /// Uses `dir` (created inside the staging area) as the graph directory.
    pub fn adopt_graph_dir(&self, dir: &Path) -> Result<(), PlanError> {
        let target = self.graph_dir();
        std::fs::remove_dir(&target).map_err(|e| PlanError::Io { path: target.clone(), cause: e })?;
        std::fs::rename(dir, &target).map_err(|e| PlanError::Io { path: target, cause: e })
    }

    fn record_files(&self) -> Result<Vec<FileEntry>, PlanError> {
        let graph_dir = self.graph_dir();
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(&graph_dir).min_depth(1).sort_by_file_name() {
            let entry = entry.map_err(|e| PlanError::Io {
                path: graph_dir.clone(),
                cause: std::io::Error::other(e.to_string()),
            })?;
            if entry.file_type().is_dir() {
                continue;
            }
            let rel = relative_name(&graph_dir, entry.path());
            if rel == MANIFEST_FILE {
                continue;
            }
            let file = File::open(entry.path())
                .map_err(|e| PlanError::Io { path: entry.path().to_path_buf(), cause: e })?;
            let (size, crc32) = checksum(file)
                .map_err(|e| PlanError::Io { path: entry.path().to_path_buf(), cause: e })?;
            files.push(FileEntry { path: rel, size, crc32 });
        }
        Ok(files)
    }

    /// Writes a provisional manifest into the staging area and returns the path of the staged plan (a
    /// complete directory plan), so it can be loaded and checked before [`PlanWriter::finish`] commits it.
    /// The graph directory must not change between this call and `finish`.
    pub fn stage_manifest(&mut self, manifest: &Manifest) -> Result<PathBuf, PlanError> {
        let mut manifest = manifest.clone();
        manifest.files = self.record_files()?;
        self.staged_files = Some(manifest.files.clone());
        manifest.validate()?;
        let path = self.graph_dir().join(MANIFEST_FILE);
        std::fs::write(&path, manifest.to_json()).map_err(|e| PlanError::Io { path: path.clone(), cause: e })?;
        Ok(self.graph_dir())
    }

    /// Records the graph files in `manifest.files`, validates the manifest, writes it and moves the plan
    /// into place. Returns the final manifest.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<Manifest, PlanError> {
        let graph_dir = self.graph_dir();
        manifest.files = match self.staged_files.take() {
            Some(files) => files,
            None => self.record_files()?,
        };
        manifest.validate()?;
        let json = manifest.to_json();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e| PlanError::Io { path, cause: e }
        };
        match self.kind {
            PlanKind::Directory => {
                let manifest_path = graph_dir.join(MANIFEST_FILE);
                std::fs::write(&manifest_path, json.as_bytes()).map_err(io(&manifest_path))?;
                replace_dir(&graph_dir, &self.destination, self.staging.path())?;
            }
            PlanKind::Tar => {
                let tar_path = self.staging.path().join("plan.mien");
                let file = File::create(&tar_path).map_err(io(&tar_path))?;
                let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
                builder.mode(tar::HeaderMode::Deterministic);
                let mut header = tar::Header::new_gnu();
                header.set_size(json.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder
                    .append_data(&mut header, MANIFEST_FILE, json.as_bytes())
                    .map_err(io(&tar_path))?;
                for entry in &manifest.files {
                    let src = graph_dir.join(&entry.path);
                    let mut f = File::open(&src).map_err(io(&src))?;
                    builder.append_file(&entry.path, &mut f).map_err(io(&tar_path))?;
                }
                let mut writer = builder.into_inner().map_err(io(&tar_path))?;
                writer.flush().map_err(io(&tar_path))?;
                let file = writer.into_inner().map_err(|e| PlanError::Io {
                    path: tar_path.clone(),
                    cause: e.into_error(),
                })?;
                file.sync_all().map_err(io(&tar_path))?;
                if self.destination.is_dir() {
                    return Err(PlanError::Io {
                        path: self.destination.clone(),
                        cause: std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "is a directory; cannot replace it with a .mien file",
                        ),
                    });
                }
                std::fs::rename(&tar_path, &self.destination).map_err(io(&self.destination))?;
            }
        }
        Ok(manifest)
    }
}

const STAGING_PREFIX: &str = ".mien-staging-";

/// An I/O error as the OS reported it, without a path some library wrapped into its message.
pub(crate) fn without_path(error: std::io::Error) -> std::io::Error {
    let text = error.to_string();
    match text.find(" at path ") {
        Some(end) => std::io::Error::new(error.kind(), text[..end].to_string()),
        None => error,
    }
}

/// The folders this process's writers staged plans in, for [`remove_staging_areas`].
static LIVE_STAGING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes the staging areas of this process's unfinished writers. For a program stopping on a signal
/// (SIGTERM, SIGINT), from a normal thread, just before it exits: what it was writing is not left behind.
/// Writers created afterwards block: call it only on the way out.
/// A destination is never touched: it holds the old plan or none.
pub fn remove_staging_areas() {
    let live = LIVE_STAGING.lock().unwrap_or_else(|e| e.into_inner());
    let ours = format!("{STAGING_PREFIX}{}-", std::process::id());
    for folder in live.iter() {
        let Ok(entries) = std::fs::read_dir(folder) else { continue };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&ours) {
                continue;
            }
            // The writer may still be adding files while they are removed: try until the area is gone.
            let path = entry.path();
            for _ in 0..20 {
                if std::fs::remove_dir_all(&path).is_ok() || !path.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
    // Held until the process exits: no writer starts a new staging area after the cleanup.
    std::mem::forget(live);
}

/// Removes staging areas in `dir` left by writers that were killed (SIGKILL, power loss): those named
/// with the id of a process that no longer exists. Linux only (it asks /proc); errors are ignored.
fn remove_stale_staging(dir: &Path) {
    let proc = Path::new("/proc/self");
    if !proc.exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(STAGING_PREFIX)).and_then(|rest| rest.split_once('-')).and_then(|(pid, _)| pid.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Moves `staged` to `destination`, replacing an existing plan directory there.
fn replace_dir(staged: &Path, destination: &Path, staging_root: &Path) -> Result<(), PlanError> {
    let io = |path: &Path, e| PlanError::Io { path: path.to_path_buf(), cause: e };
    if destination.exists() {
        // Swap the old plan out first so a crash leaves either the old or the new plan, never a mix.
        let old = staging_root.join("old");
        std::fs::rename(destination, &old).map_err(|e| io(destination, e))?;
        std::fs::rename(staged, destination).map_err(|e| io(destination, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    } else {
        std::fs::rename(staged, destination).map_err(|e| io(destination, e))?;
    }
    Ok(())
}
