//! Checkpoint integrity and retention, the same for every loop.
//!
//! A checkpoint `checkpoints/iter_<n>/` is written to a temporary directory and renamed
//! into place ([`tril_core::run_dir::RunDir::write_dir_atomic`]), so a crash never leaves
//! a half-written one under its final name, and a failed write (full disk, permissions)
//! leaves the previous checkpoints untouched. Its last file, `manifest.json`, lists the
//! size and sha256 of every other file; `--resume` verifies it and, when the newest
//! checkpoint was truncated or corrupted since, falls back to the newest good one with a
//! warning.
//!
//! After each write, `checkpoint.save_total_limit` keeps the newest K checkpoints plus
//! the best by `checkpoint.best_metric` (its value at each checkpoint is in the manifest);
//! the others are removed (renamed away first, so an interrupted removal never leaves a
//! checkpoint that looks complete).

use crate::AlgorithmError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use tril_core::plugin::PluginError;
use tril_core::safety::{BestMode, CheckpointConfig};

/// The manifest's file name (written last).
pub const MANIFEST: &str = "manifest.json";

/// The file whose presence marks a complete checkpoint (written before the manifest).
pub const STATE: &str = "trainer_state.json";

/// `manifest.json`: what a checkpoint holds, to verify it before resuming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Every other file of the checkpoint, by `/`-separated path relative to it.
    pub files: BTreeMap<String, FileEntry>,
    /// `checkpoint.best_metric` and its value when the checkpoint was written.
    #[serde(default)]
    pub metric: Option<(String, f64)>,
}

/// One file of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the contents.
    pub sha256: String,
}

/// Writes `dir/manifest.json` over every file below `dir` (call it last).
pub fn write_manifest(dir: &Path, metric: Option<(String, f64)>) -> Result<Manifest, PluginError> {
    let mut files = BTreeMap::new();
    for path in files_below(dir)? {
        let rel = relative(dir, &path);
        if rel != MANIFEST {
            files.insert(rel, hash_file(&path)?);
        }
    }
    let manifest = Manifest { files, metric };
    let text = serde_json::to_string_pretty(&manifest)?;
    tril_core::run_dir::write_atomic(&dir.join(MANIFEST), text.as_bytes())?;
    Ok(manifest)
}

/// Checks `dir` against its manifest: every listed file present with its size and
/// sha256, and no file missing from the list. `Err` says what is wrong.
pub fn verify(dir: &Path) -> Result<Manifest, String> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).map_err(|e| format!("{MANIFEST}: {e}"))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| format!("{MANIFEST} is not valid: {e}"))?;
    for (rel, expected) in &manifest.files {
        let path = dir.join(rel);
        let size = std::fs::metadata(&path).map_err(|e| format!("{rel}: {e}"))?.len();
        if size != expected.size {
            return Err(format!("{rel}: {size} bytes, the manifest says {} (truncated?)", expected.size));
        }
        let found = hash_file(&path).map_err(|e| e.to_string())?;
        if found.sha256 != expected.sha256 {
            return Err(format!(
                "{rel}: sha256 {} differs from the manifest's {} (corrupted)",
                found.sha256, expected.sha256
            ));
        }
    }
    let present = files_below(dir).map_err(|e| e.to_string())?;
    if let Some(extra) =
        present.iter().map(|p| relative(dir, p)).find(|r| r != MANIFEST && !manifest.files.contains_key(r))
    {
        return Err(format!("{extra} is not in the manifest"));
    }
    Ok(manifest)
}

/// Every complete checkpoint of `run_dir` (holding `trainer_state.json`), oldest first.
pub fn complete_checkpoints(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>, PluginError> {
    let dir = run_dir.join("checkpoints");
    let entries = std::fs::read_dir(&dir).map_err(|e| AlgorithmError::NoCheckpoint {
        run_dir: run_dir.display().to_string(),
        dir: dir.display().to_string(),
        io_error: Some(e.to_string()),
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = name.strip_prefix("iter_").and_then(|n| n.parse::<usize>().ok()) else { continue };
        if entry.path().join(STATE).is_file() {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The checkpoint `--resume RUN_DIR` continues from: the newest complete one whose
/// manifest verifies. A newer one that fails is skipped with a warning naming what is
/// wrong (a checkpoint without a manifest, from an older tril, is used unverified).
pub fn latest_checkpoint(run_dir: &Path) -> Result<(usize, PathBuf), PluginError> {
    let all = complete_checkpoints(run_dir)?;
    let mut rejected: Vec<(PathBuf, String)> = Vec::new();
    for (n, dir) in all.into_iter().rev() {
        if !dir.join(MANIFEST).exists() {
            tracing::warn!(checkpoint = %dir.display(), "no {MANIFEST} (written by an older tril): not verified");
            return Ok((n, dir));
        }
        match verify(&dir) {
            Ok(_) => {
                if let Some((bad, why)) = rejected.first() {
                    tracing::warn!(
                        "checkpoint {} is damaged ({why}); resuming from {}, the newest good one",
                        bad.display(),
                        dir.display()
                    );
                }
                return Ok((n, dir));
            }
            Err(why) => rejected.push((dir, why)),
        }
    }
    let dir = run_dir.join("checkpoints");
    match rejected.first() {
        None => Err(AlgorithmError::NoCheckpoint {
            run_dir: run_dir.display().to_string(),
            dir: dir.display().to_string(),
            io_error: None,
        }
        .into()),
        Some((bad, why)) => Err(AlgorithmError::Checkpoint {
            path: bad.display().to_string(),
            message: format!("damaged ({why}), and no older checkpoint verifies ({} checked)", rejected.len()),
        }
        .into()),
    }
}

/// Applies `keep` after a checkpoint was written: removes every complete checkpoint but
/// the newest `save_total_limit` and the best by `best_metric`. Returns the removed ones.
pub fn prune(run_dir: &Path, keep: &CheckpointConfig) -> Result<Vec<PathBuf>, PluginError> {
    let Some(limit) = keep.save_total_limit else { return Ok(Vec::new()) };
    let all = complete_checkpoints(run_dir)?;
    let mut kept: Vec<usize> = all.iter().rev().take(limit).map(|(n, _)| *n).collect();
    if keep.best_metric.is_some() {
        let scored = all.iter().filter_map(|(n, dir)| Some((*n, manifest_metric(dir)?)));
        let better = |a: f64, b: f64| match keep.best_mode {
            BestMode::Max => a > b,
            BestMode::Min => a < b,
        };
        let best = scored.fold(None, |best: Option<(usize, f64)>, (n, v)| match best {
            Some((_, b)) if !better(v, b) => best,
            _ => Some((n, v)),
        });
        kept.extend(best.map(|(n, _)| n));
    }
    let mut removed = Vec::new();
    for (n, dir) in all {
        if kept.contains(&n) {
            continue;
        }
        let parent = dir.parent().unwrap_or(run_dir);
        let doomed = parent.join(format!(".iter_{n}.removing-{}", std::process::id()));
        std::fs::rename(&dir, &doomed).map_err(|e| AlgorithmError::io("removing an old checkpoint", &dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| AlgorithmError::io("removing an old checkpoint", &doomed, e))?;
        tracing::info!(checkpoint = %dir.display(), "removed (checkpoint.save_total_limit = {limit})");
        removed.push(dir);
    }
    Ok(removed)
}

fn manifest_metric(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
    let manifest: Manifest = serde_json::from_str(&text).ok()?;
    manifest.metric.map(|(_, v)| v).filter(|v| v.is_finite())
}

fn hash_file(path: &Path) -> Result<FileEntry, PluginError> {
    let failed = |e| AlgorithmError::io("hashing", path, e);
    let mut file = std::fs::File::open(path).map_err(failed)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(failed)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileEntry { size, sha256: format!("{:x}", hasher.finalize()) })
}

/// Every regular file below `dir`, sorted.
fn files_below(dir: &Path) -> Result<Vec<PathBuf>, PluginError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| AlgorithmError::io("listing", &d, e))? {
            let path = entry.map_err(|e| AlgorithmError::io("listing", &d, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn relative(dir: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run directory with complete checkpoints `ns`, each with a manifest holding
    /// `metric(n)`.
    fn run_with(name: &str, ns: &[usize], metric: impl Fn(usize) -> Option<f64>) -> tempfile::TempDir {
        let run = tempfile::Builder::new().prefix(name).tempdir().unwrap();
        for &n in ns {
            let dir = run.path().join(format!("checkpoints/iter_{n}"));
            std::fs::create_dir_all(dir.join("policy")).unwrap();
            std::fs::write(dir.join("policy/model.safetensors"), vec![n as u8; 1000 + n]).unwrap();
            std::fs::write(dir.join(STATE), format!("{{\"iteration\": {n}}}")).unwrap();
            write_manifest(&dir, metric(n).map(|v| ("val/rewards".to_string(), v))).unwrap();
        }
        run
    }

    #[test]
    fn a_truncated_or_corrupted_newest_checkpoint_falls_back_to_the_previous_one() {
        let run = run_with("ckpt-fallback", &[1, 2, 3], |_| None);
        assert_eq!(latest_checkpoint(run.path()).unwrap().0, 3);
        let weights = run.path().join("checkpoints/iter_3/policy/model.safetensors");
        let bytes = std::fs::read(&weights).unwrap();
        std::fs::write(&weights, &bytes[..500]).unwrap();
        assert!(verify(weights.parent().unwrap().parent().unwrap()).unwrap_err().contains("truncated"));
        assert_eq!(latest_checkpoint(run.path()).unwrap().0, 2);
        let mut flipped = std::fs::read(run.path().join("checkpoints/iter_2/policy/model.safetensors")).unwrap();
        flipped[10] ^= 1;
        std::fs::write(run.path().join("checkpoints/iter_2/policy/model.safetensors"), flipped).unwrap();
        let (n, _) = latest_checkpoint(run.path()).unwrap();
        assert_eq!(n, 1, "both newer ones are damaged");
        std::fs::write(run.path().join("checkpoints/iter_1/trainer_state.json"), "{}").unwrap();
        let err = latest_checkpoint(run.path()).unwrap_err().to_string();
        assert!(err.contains("iter_3") && err.contains("no older checkpoint verifies (3 checked)"), "{err}");
    }

    #[test]
    fn an_unlisted_or_missing_file_fails_verification() {
        let run = run_with("ckpt-verify", &[1], |_| None);
        let dir = run.path().join("checkpoints/iter_1");
        assert!(verify(&dir).is_ok());
        std::fs::write(dir.join("stray.bin"), b"x").unwrap();
        assert_eq!(verify(&dir).unwrap_err(), "stray.bin is not in the manifest");
        std::fs::remove_file(dir.join("stray.bin")).unwrap();
        std::fs::remove_file(dir.join("policy/model.safetensors")).unwrap();
        assert!(verify(&dir).unwrap_err().starts_with("policy/model.safetensors: "));
    }

    #[test]
    fn prune_keeps_the_newest_k_and_the_best() {
        let rewards = [0.0, 0.1, 0.9, 0.3, 0.2, 0.4];
        let run = run_with("ckpt-prune", &[1, 2, 3, 4, 5], |n| Some(rewards[n]));
        let keep = CheckpointConfig {
            save_total_limit: Some(2),
            best_metric: Some("val/rewards".into()),
            best_mode: BestMode::Max,
        };
        let removed = prune(run.path(), &keep).unwrap();
        assert_eq!(removed.len(), 2);
        let left: Vec<usize> = complete_checkpoints(run.path()).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, vec![2, 4, 5], "the newest two and the best (iteration 2: 0.9)");
        let by_min = CheckpointConfig { best_mode: BestMode::Min, save_total_limit: Some(1), ..keep };
        prune(run.path(), &by_min).unwrap();
        let left: Vec<usize> = complete_checkpoints(run.path()).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, vec![4, 5], "the newest and the lowest reward left (iteration 4: 0.2)");
        assert!(prune(run.path(), &CheckpointConfig::default()).unwrap().is_empty(), "no limit: keep all");
        let hidden = std::fs::read_dir(run.path().join("checkpoints")).unwrap().count();
        assert_eq!(hidden, 2, "no leftovers of removed checkpoints");
    }
}
