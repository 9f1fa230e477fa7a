//! Model resolution: a model id or path -> a local directory in HF layout.
//!
//! Order: (1) an existing directory; (2) the Hugging Face hub cache
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`), layout `models--{org}--{name}/refs/{revision}` holding a
//! commit sha and `snapshots/{sha}/...`; (3) a download from the hub (`$HF_ENDPOINT`,
//! `$HF_TOKEN`) into that cache with [`tril_core::hub::download_model`]: `config.json`, the
//! safetensors weights and the tokenizer files, after which (2) finds it with no network.
//! `org/name@revision` pins a branch, tag or commit sha (default `main`). With
//! `HF_HUB_OFFLINE=1` step (3) is skipped and the error says where it looked. See
//! `docs/hub.md`.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
pub use tril_core::hub::{cached_snapshot, HubEnv};

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
        "; HF_HUB_OFFLINE is set, so no download is attempted (unset it, or fill the cache with `huggingface-cli download`)".to_string()
    } else if !tril_core::hub::is_repo_id(repo) {
        "; it is neither a directory nor a hub id (`org/name`, optionally `@revision`)".to_string()
    } else if env.hub_cache.is_none() {
        "; set HF_HUB_CACHE (or HF_HOME) to a directory to download into, or pass a local directory with config.json, model.safetensors and tokenizer.json".to_string()
    } else {
        return tril_core::hub::download_model(env, repo, revision)
            .map_err(|source| ModelError::Download { id: id.to_string(), source });
    };
    Err(ModelError::ModelNotFound { id: id.to_string(), searched, hint })
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
        let env = HubEnv { hub_cache: Some(root.path().to_path_buf()), offline: true, ..HubEnv::default() };
        assert_eq!(resolve_model_with(snap.to_str().unwrap(), &env).unwrap(), snap);
        assert_eq!(resolve_model_with("lvwerra/gpt2-imdb", &env).unwrap(), snap);
        let by_sha = format!("lvwerra/gpt2-imdb@{}", snap.file_name().unwrap().to_str().unwrap());
        assert_eq!(resolve_model_with(&by_sha, &env).unwrap(), snap);
    }

    #[test]
    fn missing_model_says_where_it_looked() {
        let (root, _) = fake_cache();
        let env = HubEnv { hub_cache: Some(root.path().to_path_buf()), offline: true, ..HubEnv::default() };
        let err = resolve_model_with("openai-community/gpt2", &env).unwrap_err().to_string();
        assert!(err.contains("models--openai-community--gpt2") && err.contains("HF_HUB_OFFLINE"), "{err}");
        let env = HubEnv { hub_cache: None, ..HubEnv::default() };
        let err = resolve_model_with("gpt2", &env).unwrap_err().to_string();
        assert!(err.contains("set HF_HUB_CACHE"), "{err}");
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
