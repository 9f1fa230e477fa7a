//! Hugging Face Hub datasets wherever a task takes a data file.
//!
//! A data-file key (`train_file`, `val_file`, `test_file`, `datasets[i].path`) takes either
//! a local file or a hub dataset id with the `hub:` prefix:
//!
//! ```text
//! hub:<name or org/name>[@<revision>][?subset=<config>&split=<split>]
//! ```
//!
//! The split defaults to the key's own (`train_file`: `train`, `val_file`: `validation`,
//! which also finds `valid`/`val`/`dev`, `test_file`: `test`; `datasets[i].path`: the
//! entry's `split`, else `train`), the subset to the entry's `subset`, else the dataset's
//! only (or `default`) config. The split's parquet files are downloaded into the HF cache
//! by [`tril_core::hub::dataset_split_files`] (which states the file rule) and read as one
//! table, shards concatenated in name order.
//!
//! ```
//! use tril_tasks::hub_data::HubData;
//! let spec = HubData::parse("hub:stanfordnlp/imdb@main?split=unsupervised").unwrap().unwrap();
//! assert_eq!((spec.repo.as_str(), spec.revision.as_deref()), ("stanfordnlp/imdb", Some("main")));
//! assert_eq!(spec.split.as_deref(), Some("unsupervised"));
//! assert!(HubData::parse("data/imdb.csv").is_none());
//! ```

use crate::error::TaskError;
use crate::table::Table;
use std::path::{Path, PathBuf};
use tril_core::hub::{DatasetRequest, HubEnv};

/// The prefix that marks a hub dataset id in a data-file key.
pub const PREFIX: &str = "hub:";

/// A parsed `hub:` data reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubData {
    /// `name` or `org/name`.
    pub repo: String,
    /// `@revision`, if given.
    pub revision: Option<String>,
    /// `subset=`, if given.
    pub subset: Option<String>,
    /// `split=`, if given.
    pub split: Option<String>,
}

impl HubData {
    /// `None` for a local path; else the parsed id, or what is wrong with it.
    pub fn parse(value: &str) -> Option<Result<HubData, String>> {
        let rest = value.strip_prefix(PREFIX)?;
        Some(Self::parse_rest(rest.trim()))
    }

    fn parse_rest(rest: &str) -> Result<HubData, String> {
        let (id, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (repo, revision) = match id.split_once('@') {
            Some((repo, rev)) if !rev.is_empty() => (repo, Some(rev.to_string())),
            Some(_) => return Err("empty revision after `@`".into()),
            None => (id, None),
        };
        if !tril_core::hub::is_repo_id(repo) {
            return Err(format!("`{repo}` is not a hub dataset id (`name` or `org/name`)"));
        }
        let mut spec = HubData { repo: repo.into(), revision, subset: None, split: None };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("subset", v)) if !v.is_empty() => spec.subset = Some(v.into()),
                Some(("split", v)) if !v.is_empty() => spec.split = Some(v.into()),
                _ => {
                    return Err(format!("unknown or empty query `{pair}` (expected subset=<config> or split=<split>)"))
                }
            }
        }
        Ok(spec)
    }
}

/// The files behind data key `key` (e.g. `task.args.train_file`): the path itself, or the
/// downloaded parquet files of a `hub:` id (split from the id, else `split`, else
/// `default_split`; subset from the id, else `subset`).
pub fn data_files(
    key: &str,
    path: &Path,
    default_split: &str,
    subset: Option<&str>,
    split: Option<&str>,
) -> Result<Vec<PathBuf>, TaskError> {
    let text = path.to_string_lossy();
    let Some(parsed) = HubData::parse(&text) else {
        if !path.exists() {
            let cwd = std::env::current_dir().unwrap_or_default();
            return Err(TaskError::MissingFile { key: key.into(), path: path.to_path_buf(), cwd });
        }
        return Ok(vec![path.to_path_buf()]);
    };
    let bad = |message: String| TaskError::HubData { key: key.into(), value: text.to_string(), message };
    let spec = parsed.map_err(bad)?;
    let request = DatasetRequest {
        repo: spec.repo,
        revision: spec.revision,
        subset: spec.subset.or(subset.map(str::to_string)),
        split: spec.split.or(split.map(str::to_string)).unwrap_or_else(|| default_split.to_string()),
    };
    tril_core::hub::dataset_split_files(&HubEnv::from_env(), &request).map_err(|e| TaskError::HubData {
        key: key.into(),
        value: text.to_string(),
        message: e.to_string(),
    })
}

/// True when `path` is a `hub:` id (not a local file).
pub fn is_hub(path: &Path) -> bool {
    path.to_string_lossy().starts_with(PREFIX)
}

/// Reads the table behind data key `key` ([`data_files`]), shards concatenated.
pub fn read_table(key: &str, path: &Path, default_split: &str) -> Result<Table, TaskError> {
    read_table_with(key, path, default_split, None, None)
}

/// [`read_table`] with the `subset` / `split` of a `datasets` entry.
pub fn read_table_with(
    key: &str,
    path: &Path,
    default_split: &str,
    subset: Option<&str>,
    split: Option<&str>,
) -> Result<Table, TaskError> {
    let files = data_files(key, path, default_split, subset, split)?;
    let tables = files.iter().map(|f| Table::read(f)).collect::<Result<Vec<_>, _>>()?;
    Ok(Table::concat(tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_ids_and_names_the_problem() {
        let spec = HubData::parse("hub:imdb").unwrap().unwrap();
        assert_eq!(spec, HubData { repo: "imdb".into(), revision: None, subset: None, split: None });
        let spec = HubData::parse("hub:allenai/common_gen@v1?subset=default&split=validation").unwrap().unwrap();
        assert_eq!(spec.subset.as_deref(), Some("default"));
        assert_eq!(spec.revision.as_deref(), Some("v1"));
        for (bad, want) in [
            ("hub:a/b/c", "not a hub dataset id"),
            ("hub:imdb@", "empty revision"),
            ("hub:imdb?spilt=train", "unknown or empty query `spilt=train`"),
        ] {
            let err = HubData::parse(bad).unwrap().unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
        let err = data_files("task.args.train_file", Path::new("hub:x/y/z"), "train", None, None).unwrap_err();
        assert!(err.to_string().starts_with("task.args.train_file = hub:x/y/z: "), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        std::fs::write(&file, "text\nx\n").unwrap();
        assert_eq!(data_files("k", &file, "train", None, None).unwrap(), [file]);
        let err = data_files("task.args.datasets[1].path", Path::new("nope/b.csv"), "train", None, None).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("task.args.datasets[1].path = nope/b.csv: no such file"), "{text}");
        assert!(text.contains("working directory"), "{text}");
    }
}
