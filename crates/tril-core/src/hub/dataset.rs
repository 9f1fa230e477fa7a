//! Dataset splits: which parquet files of a hub dataset make a split
//! ([`select_split_files`]), fetched by [`dataset_split_files`].

use super::{
    cached_snapshot, check_repo, offline_error, preview, repo_dir, safe_file, write_ref, Client, HubEnv, RepoKind,
    PARQUET_REVISION,
};
use crate::error::{CoreError, Result};
use std::path::{Path, PathBuf};

/// Which dataset, subset (config name) and split to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRequest {
    /// `name` or `org/name`.
    pub repo: String,
    /// A branch, tag or sha; `None`: `main`, then [`PARQUET_REVISION`].
    pub revision: Option<String>,
    /// The config name; `None`: the only one, or `default`.
    pub subset: Option<String>,
    /// The split (`train`, `validation`, `test`, ...).
    pub split: String,
}

impl DatasetRequest {
    fn target(&self) -> String {
        match &self.subset {
            Some(s) => format!("dataset {} (subset {s}, split {})", self.repo, self.split),
            None => format!("dataset {} (split {})", self.repo, self.split),
        }
    }
}

/// The local parquet files of one split of a hub dataset, downloading what is missing.
///
/// Revisions tried: the one asked for, else `main` and then [`PARQUET_REVISION`] (the hub's
/// automatic conversion, for datasets without parquet files of their own). Online, the
/// repo is listed each time (one request) and files already cached are reused; when the
/// hub cannot be reached, or with `HF_HUB_OFFLINE=1`, the cached snapshot of the revision
/// is used if it holds the split.
pub fn dataset_split_files(env: &HubEnv, req: &DatasetRequest) -> Result<Vec<PathBuf>> {
    check_repo(&req.repo)?;
    let cache = env.cache(&req.repo)?;
    let dir = repo_dir(cache, RepoKind::Dataset, &req.repo);
    let revisions: Vec<&str> = match &req.revision {
        Some(r) => vec![r.as_str()],
        None => vec!["main", PARQUET_REVISION],
    };
    let from_cache = || -> Result<Option<Vec<PathBuf>>> {
        for rev in &revisions {
            if let Some(snap) = cached_snapshot(&dir, rev) {
                let files = list_dir(&snap);
                if let Some(chosen) = select(&files, req)? {
                    return Ok(Some(chosen.iter().map(|f| snap.join(f)).collect()));
                }
            }
        }
        Ok(None)
    };
    if env.offline {
        return from_cache()?.ok_or_else(|| offline_error(&req.target(), revisions[0], cache));
    }
    let online = || -> Result<Vec<PathBuf>> {
        let client = Client::new(env)?;
        let mut seen = Vec::new();
        for rev in &revisions {
            let (sha, listing) = match client.repo_info(RepoKind::Dataset, &req.repo, rev) {
                Ok(info) => info,
                // No parquet conversion: report the files main has.
                Err(CoreError::HubNotFound { .. }) if *rev == PARQUET_REVISION => break,
                Err(e) => return Err(e),
            };
            let Some(chosen) = select(&listing, req)? else {
                seen.extend(listing.into_iter().filter(|f| f.ends_with(".parquet")).map(|f| format!("{rev}:{f}")));
                continue;
            };
            let paths = chosen
                .iter()
                .map(|f| client.fetch(RepoKind::Dataset, &req.repo, &sha, f, rev))
                .collect::<Result<Vec<_>>>()?;
            write_ref(&dir, rev, &sha)?;
            return Ok(paths);
        }
        Err(CoreError::Hub {
            target: req.target(),
            message: format!(
                "no parquet files for this split at revision {} (parquet files seen: {}); check `split`/`subset`, or download the data and pass a local file",
                revisions.join(" nor "),
                preview(&seen)
            ),
        })
    };
    match online() {
        Err(e @ CoreError::HubUnreachable { .. }) => match from_cache()? {
            Some(files) => {
                tracing::warn!("{e}; using the cached files of {}", req.target());
                Ok(files)
            }
            None => Err(e),
        },
        other => other,
    }
}

fn select(files: &[String], req: &DatasetRequest) -> Result<Option<Vec<String>>> {
    let chosen = select_split_files(files, req.subset.as_deref(), &req.split)
        .map_err(|message| CoreError::Hub { target: req.target(), message })?;
    Ok((!chosen.is_empty()).then_some(chosen))
}

/// The parquet files of `split` among a repo's `files`, sorted; empty when none match.
///
/// The rule: a file belongs to split `s` when its name starts with `s-` or `s.` (as
/// `data/train-00000-of-00001.parquet`) or one of its folders is named `s` (as the
/// parquet conversion's `default/train/0000.parquet`). Its subset (config) is its first
/// folder, except `data/` and top-level files, which are the `default` subset. Without a
/// `subset`, the split must live in a single subset (or in `default`, which then wins);
/// otherwise the error lists the subsets. `validation` also matches `valid`, `val`, `dev`.
pub fn select_split_files(files: &[String], subset: Option<&str>, split: &str) -> Result<Vec<String>, String> {
    let aliases: &[&str] = match split {
        "validation" | "valid" | "val" | "dev" => &["validation", "valid", "val", "dev"],
        _ => &[],
    };
    let candidates = std::iter::once(split).chain(aliases.iter().copied().filter(|a| *a != split));
    for s in candidates {
        let mut matched: Vec<(String, &String)> = files
            .iter()
            .filter(|f| f.ends_with(".parquet") && safe_file(f))
            .filter(|f| {
                let parts: Vec<&str> = f.split('/').collect();
                let (name, dirs) = parts.split_last().unwrap_or((&"", &[]));
                name.starts_with(&format!("{s}-")) || name.starts_with(&format!("{s}.")) || dirs.contains(&s)
            })
            .map(|f| (file_subset(f, s), f))
            .collect();
        if let Some(want) = subset {
            matched.retain(|(sub, _)| sub == want);
        } else {
            let mut subsets: Vec<&str> = matched.iter().map(|(sub, _)| sub.as_str()).collect();
            subsets.sort_unstable();
            subsets.dedup();
            if subsets.len() > 1 {
                if !subsets.contains(&"default") {
                    return Err(format!(
                        "split `{s}` exists in several subsets ({}); set the subset",
                        subsets.join(", ")
                    ));
                }
                matched.retain(|(sub, _)| sub == "default");
            }
        }
        let mut out: Vec<String> = matched.into_iter().map(|(_, f)| f.clone()).collect();
        out.sort();
        if !out.is_empty() {
            return Ok(out);
        }
    }
    Ok(Vec::new())
}

fn file_subset(file: &str, split: &str) -> String {
    match file.split_once('/') {
        Some((first, _)) if first != "data" && first != split => first.to_string(),
        _ => "default".into(),
    }
}

/// Every file under `dir`, as `/`-separated relative paths.
pub(super) fn list_dir(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if entry.path().is_dir() {
                stack.push((entry.path(), rel));
            } else if entry.path().is_file() {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_server::{HubServer, State};
    use super::*;
    use std::collections::BTreeMap;

    const SHA: &str = "1111111111111111111111111111111111111111";

    fn env(server: &HubServer, cache: &Path) -> HubEnv {
        HubEnv { hub_cache: Some(cache.into()), endpoint: server.url.clone(), ..HubEnv::default() }
    }

    #[test]
    fn split_files_follow_the_documented_rule() {
        let files = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let own = files(&[
            "README.md",
            "plain_text/train-00000-of-00001.parquet",
            "plain_text/test-00000-of-00001.parquet",
            "plain_text/unsupervised-00000-of-00001.parquet",
        ]);
        assert_eq!(select_split_files(&own, None, "train").unwrap(), ["plain_text/train-00000-of-00001.parquet"]);
        assert!(select_split_files(&own, Some("other"), "train").unwrap().is_empty());
        let converted =
            files(&["default/train/0000.parquet", "default/train/0001.parquet", "default/valid/0000.parquet"]);
        assert_eq!(select_split_files(&converted, None, "train").unwrap().len(), 2);
        assert_eq!(select_split_files(&converted, None, "validation").unwrap(), ["default/valid/0000.parquet"]);
        let two = files(&["a/train/0000.parquet", "b/train/0000.parquet"]);
        let err = select_split_files(&two, None, "train").unwrap_err();
        assert!(err.contains("a, b") && err.contains("subset"), "{err}");
        assert_eq!(select_split_files(&two, Some("b"), "train").unwrap(), ["b/train/0000.parquet"]);
        let data = files(&["data/train-0.parquet", "data/train_prefs-0.parquet", "../x/train-0.parquet"]);
        assert_eq!(select_split_files(&data, None, "train").unwrap(), ["data/train-0.parquet"]);
    }

    #[test]
    fn dataset_falls_back_to_the_parquet_conversion_and_then_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        let mut server = HubServer::start(State::default());
        let main = BTreeMap::from([("imdb.py".to_string(), b"script".to_vec())]);
        server.add("datasets", "imdb", "main", SHA, main);
        let conv = "2222222222222222222222222222222222222222";
        let parquet = BTreeMap::from([
            ("plain_text/train/0000.parquet".to_string(), b"PAR1 train".to_vec()),
            ("plain_text/test/0000.parquet".to_string(), b"PAR1 test".to_vec()),
        ]);
        server.add("datasets", "imdb", PARQUET_REVISION, conv, parquet);
        let req = DatasetRequest { repo: "imdb".into(), revision: None, subset: None, split: "test".into() };
        let e = env(&server, cache.path());
        let files = dataset_split_files(&e, &req).unwrap();
        let repo = cache.path().join("datasets--imdb");
        assert_eq!(files, [repo.join("snapshots").join(conv).join("plain_text/test/0000.parquet")]);
        assert_eq!(std::fs::read(&files[0]).unwrap(), b"PAR1 test");
        assert_eq!(std::fs::read_to_string(repo.join("refs/refs/convert/parquet")).unwrap(), conv);
        server.stop();
        assert_eq!(dataset_split_files(&e, &req).unwrap(), files, "unreachable: the cache serves");
        let offline = HubEnv { offline: true, ..e };
        assert_eq!(dataset_split_files(&offline, &req).unwrap(), files);
        let train = DatasetRequest { split: "train".into(), ..req };
        let err = dataset_split_files(&offline, &train).unwrap_err().to_string();
        assert!(err.contains("HF_HUB_OFFLINE") && err.contains("split train"), "{err}");
    }
}
