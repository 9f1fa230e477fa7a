//! Where config files come from: [`ConfigStore`] and the on-disk [`DirStore`].

use crate::error::{CoreError, Result};
use std::path::{Path, PathBuf};

/// Where config files come from: a directory or a set embedded in the binary.
pub trait ConfigStore {
    /// The text of a file relative to the store root (`task/imdb.yaml`), if present.
    fn read(&self, rel: &str) -> Result<Option<String>>;
    /// The option names of a group (`task` -> `["imdb", "synthetic"]`), sorted.
    fn options(&self, group: &str) -> Vec<String>;
    /// How a file is named in messages.
    fn display(&self, rel: &str) -> PathBuf;
    /// How the store is named in messages.
    fn describe(&self) -> String;
    /// The directory that `./` and `../` paths in the store's files are relative to (the
    /// one holding the config directory, [`super::paths`]); `None`: left as written.
    fn base_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// A config directory on disk (`cfgs/`).
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store reading from `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirStore { root: root.into() }
    }
}

impl ConfigStore for DirStore {
    fn read(&self, rel: &str) -> Result<Option<String>> {
        let path = self.root.join(rel);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CoreError::Io { path, source }),
        }
    }

    fn options(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.root.join(group))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".yaml").map(str::to_string))
            .collect();
        out.sort();
        out
    }

    fn display(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    /// The directory holding the config directory (`cfgs/`'s parent: the project root).
    fn base_dir(&self) -> Option<PathBuf> {
        let root = super::paths::normalize(&std::path::absolute(&self.root).ok()?);
        root.parent().map(Path::to_path_buf)
    }
}
