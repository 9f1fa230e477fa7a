//! The run directory (DESIGN.md "Run directory") and the trackers that write into it.
//!
//! Layout: `config.resolved.yaml`, `log.txt`, `rollout_info.jsonl`,
//! `training_info.jsonl`, `{split}_split_metrics.jsonl`,
//! `epoch_<n>_<split>_predictions.jsonl`, `checkpoints/`, `plots/`.
//! Whole files are written atomically (temp file + rename); checkpoints are written
//! into a temp directory renamed into place, so a crash never leaves half a checkpoint.

use crate::error::{CoreError, Result};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock of a run directory ([`RunDir::lock`]), released when dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// A run directory.
///
/// In a data-parallel run only the primary replica writes it
/// ([`crate::parallel::is_primary`] when opened): the other replicas' writes are no-ops
/// ([`RunDir::write_dir_atomic`] does not even call its `fill`), their reads work as usual.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
    writes: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CoreError + '_ {
    move |source| CoreError::Io { path: path.to_path_buf(), source }
}

impl RunDir {
    /// Opens (creating if needed) a run directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        Ok(RunDir { root, writes: crate::parallel::is_primary() })
    }

    /// Takes the run directory's lock (`.lock`, an advisory file lock held until the
    /// returned guard drops, i.e. by the process for its lifetime): two tril processes
    /// cannot write one run directory. Fails at once, naming the holder's pid, when
    /// another process holds it.
    pub fn lock(&self) -> Result<RunLock> {
        let path = self.join(".lock");
        let mut file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(CoreError::Locked { dir: self.root.clone(), holder: holder.trim().to_string() });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(CoreError::Io { path, source }),
        }
        file.set_len(0).map_err(io(&path))?;
        file.write_all(std::process::id().to_string().as_bytes()).map_err(io(&path))?;
        Ok(RunLock { _file: file })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A path inside the run directory.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Appends one JSON object as a line to `file` (e.g. `rollout_info.jsonl`).
    pub fn append_jsonl<T: Serialize>(&self, file: &str, record: &T) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        let path = self.join(file);
        let mut line = serde_json::to_string(record).map_err(|e| CoreError::WithContext {
            context: format!("serializing a record for {}", path.display()),
            message: e.to_string(),
        })?;
        line.push('\n');
        let mut f: File = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        f.write_all(line.as_bytes()).map_err(io(&path))
    }

    /// Writes a whole file atomically (temp file in the same directory, then rename).
    pub fn write_atomic(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        write_atomic(&self.join(rel), bytes)
    }

    /// Builds a directory atomically: `fill` writes into a temp directory that is renamed
    /// to `rel` only when it succeeds (an older `rel` is replaced).
    pub fn write_dir_atomic<E>(
        &self,
        rel: impl AsRef<Path>,
        fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> std::result::Result<PathBuf, E>
    where
        E: From<CoreError>,
    {
        let target = self.join(rel);
        if !self.writes {
            return Ok(target);
        }
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(io(&parent)).map_err(E::from)?;
        let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp)).map_err(E::from)?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp)).map_err(E::from)?;
        if let Err(e) = fill(&tmp) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if target.exists() {
            let old = parent.join(format!(".{name}.old-{}", std::process::id()));
            std::fs::rename(&target, &old).map_err(io(&target)).map_err(E::from)?;
            std::fs::rename(&tmp, &target).map_err(io(&target)).map_err(E::from)?;
            std::fs::remove_dir_all(&old).map_err(io(&old)).map_err(E::from)?;
        } else {
            std::fs::rename(&tmp, &target).map_err(io(&target)).map_err(E::from)?;
        }
        Ok(target)
    }
}

/// Writes `bytes` to `path` atomically (temp file beside it, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_per_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path().join("run")).unwrap();
        let held = run.lock().unwrap();
        let err = run.lock().unwrap_err().to_string();
        assert!(err.contains("being written by another tril process"), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(held);
        assert!(run.lock().is_ok(), "released when dropped");
    }

    #[test]
    fn jsonl_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path().join("run")).unwrap();
        run.append_jsonl("a.jsonl", &serde_json::json!({"x": 1})).unwrap();
        run.append_jsonl("a.jsonl", &serde_json::json!({"x": 2})).unwrap();
        let text = std::fs::read_to_string(run.join("a.jsonl")).unwrap();
        assert_eq!(text, "{\"x\":1}\n{\"x\":2}\n");
    }

    #[test]
    fn atomic_dir_replaces_only_on_success() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path()).unwrap();
        run.write_dir_atomic::<CoreError>("ckpt/last", |tmp| write_atomic(&tmp.join("w"), b"one")).unwrap();
        let failed = run.write_dir_atomic::<CoreError>("ckpt/last", |tmp| {
            write_atomic(&tmp.join("w"), b"two")?;
            Err(CoreError::WithContext { context: "test".into(), message: "boom".into() })
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(run.join("ckpt/last/w")).unwrap(), b"one");
        run.write_dir_atomic::<CoreError>("ckpt/last", |tmp| write_atomic(&tmp.join("w"), b"three")).unwrap();
        assert_eq!(std::fs::read(run.join("ckpt/last/w")).unwrap(), b"three");
        let leftovers: Vec<_> = std::fs::read_dir(run.join("ckpt")).unwrap().flatten().collect();
        assert_eq!(leftovers.len(), 1, "no temp directories left behind");
    }
}
