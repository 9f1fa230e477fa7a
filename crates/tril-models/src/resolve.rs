//! Model resolution: a model id or path -> a local directory in HF layout.
//!
//! Order: (1) an existing directory; (2) the Hugging Face hub cache
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`), layout `models--{org}--{name}/refs/{revision}` holding a
//! commit sha and `snapshots/{sha}/...`; (3) downloading, which this build does not include:
//! the error then says where it looked and how to get the files (`HF_HUB_OFFLINE=1` only
//! changes the advice, since nothing here touches the network).

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// Where the hub cache is and whether the user asked for offline mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEnv {
    /// The hub cache directory (holding `models--*` folders).
    pub hub_cache: Option<PathBuf>,
    /// `HF_HUB_OFFLINE` is set to a true value.
    pub offline: bool,
}

impl HubEnv {
    /// Read `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, `HOME` and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let hub_cache = var("HF_HUB_CACHE")
            .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| var("XDG_CACHE_HOME").map(|x| x.join("huggingface/hub")))
            .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")));
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Self { hub_cache, offline }
    }
}

/// Resolve `id` (a directory, or a hub id `org/name` optionally followed by `@revision`)
/// with the environment's hub settings.
pub fn resolve_model(id: &str) -> Result<PathBuf> {
    resolve_model_with(id, &HubEnv::from_env())
}

/// The directory of a model named by config key `key` (a local HF-layout directory, or a hub
/// id in the HF cache, as [`resolve_model`]); an error names the key
/// ([`ModelError::WithKey`]).
pub fn model_dir(name: &str, key: &str) -> Result<PathBuf> {
    resolve_model(name).map_err(|e| e.with_key(key))
}

/// [`resolve_model`] with explicit hub settings.
pub fn resolve_model_with(id: &str, env: &HubEnv) -> Result<PathBuf> {
    let mut searched = Vec::new();
    let as_path = Path::new(id);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }
    searched.push(format!("directory {}", as_path.display()));
    let (repo, revision) = id.split_once('@').unwrap_or((id, "main"));
    if let Some(cache) = &env.hub_cache {
        let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
        if let Some(dir) = cached_snapshot(&repo_dir, revision) {
            return Ok(dir);
        }
        searched.push(format!("hub cache {} (revision {revision})", repo_dir.display()));
    } else {
        searched.push("hub cache (none: HF_HUB_CACHE, HF_HOME and HOME are unset)".to_string());
    }
    let hint = if env.offline {
        "; HF_HUB_OFFLINE is set, so no download is attempted".to_string()
    } else {
        format!("; downloading is not built into tril: fetch it with `huggingface-cli download {repo}` (fills the cache) or pass a local directory with config.json, model.safetensors and tokenizer.json")
    };
    Err(ModelError::ModelNotFound { id: id.to_string(), searched, hint })
}

/// The snapshot directory of `revision` (a branch/tag name under `refs/`, or a commit sha) in
/// a cached repo, if it exists.
pub fn cached_snapshot(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    let direct = snapshots.join(revision);
    if revision.len() == 40 && direct.is_dir() {
        return Some(direct);
    }
    let sha = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
    let dir = snapshots.join(sha.trim());
    dir.is_dir().then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_cache() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("models--lvwerra--gpt2-imdb");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots").join(sha)).unwrap();
        std::fs::write(repo.join("refs/main"), format!("{sha}\n")).unwrap();
        std::fs::write(repo.join("snapshots").join(sha).join("config.json"), "{}").unwrap();
        let snap = repo.join("snapshots").join(sha);
        (root, snap)
    }

    #[test]
    fn local_dir_then_cache() {
        let (root, snap) = fake_cache();
        let env = HubEnv { hub_cache: Some(root.path().to_path_buf()), offline: true };
        assert_eq!(resolve_model_with(snap.to_str().unwrap(), &env).unwrap(), snap);
        assert_eq!(resolve_model_with("lvwerra/gpt2-imdb", &env).unwrap(), snap);
        let by_sha = format!("lvwerra/gpt2-imdb@{}", snap.file_name().unwrap().to_str().unwrap());
        assert_eq!(resolve_model_with(&by_sha, &env).unwrap(), snap);
    }

    #[test]
    fn missing_model_says_where_it_looked() {
        let (root, _) = fake_cache();
        let env = HubEnv { hub_cache: Some(root.path().to_path_buf()), offline: true };
        let err = resolve_model_with("openai-community/gpt2", &env).unwrap_err().to_string();
        assert!(err.contains("models--openai-community--gpt2") && err.contains("HF_HUB_OFFLINE"), "{err}");
        let env = HubEnv { hub_cache: None, offline: false };
        let err = resolve_model_with("gpt2", &env).unwrap_err().to_string();
        assert!(err.contains("huggingface-cli download gpt2"), "{err}");
    }

    #[test]
    fn model_dir_error_names_the_key() {
        let (_root, snap) = fake_cache();
        assert_eq!(model_dir(snap.to_str().unwrap(), "k").unwrap(), snap);
        let missing = snap.join("no-such-model");
        let err = model_dir(missing.to_str().unwrap(), "eval_metrics.0.args.model_id").unwrap_err();
        assert!(matches!(&err, ModelError::WithKey { key, .. } if key == "eval_metrics.0.args.model_id"), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("eval_metrics.0.args.model_id: model `") && msg.contains("not found"), "{msg}");
    }
}
