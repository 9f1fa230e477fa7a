//! Which config directory a command reads: `--config-dir`, `TRIL_CONFIG_DIR`,
//! `./cfgs`, or the copy of `cfgs/` embedded in the binary.

use include_dir::{include_dir, Dir};
use std::path::{Path, PathBuf};
use tril_core::config::{ConfigStore, DirStore};

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../cfgs");

/// The `cfgs/` tree compiled into the binary, so `tril run` works from any directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddedStore;

impl ConfigStore for EmbeddedStore {
    fn read(&self, rel: &str) -> tril_core::Result<Option<String>> {
        Ok(EMBEDDED.get_file(rel).and_then(|f| f.contents_utf8()).map(str::to_string))
    }

    fn options(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = EMBEDDED
            .get_dir(group)
            .map(|d| {
                d.files()
                    .filter_map(|f| f.path().file_name()?.to_str()?.strip_suffix(".yaml").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    fn display(&self, rel: &str) -> PathBuf {
        Path::new("<embedded>/cfgs").join(rel)
    }

    fn describe(&self) -> String {
        "the cfgs/ embedded in this binary".into()
    }

    /// The source checkout the binary was built from: `../shared/data/...` in the shipped
    /// cfgs then names the same file from any working directory.
    fn base_dir(&self) -> Option<PathBuf> {
        tril_core::config::anchored("../..", Path::new(env!("CARGO_MANIFEST_DIR"))).map(PathBuf::from)
    }
}

/// Picks the config store: an explicit directory, `TRIL_CONFIG_DIR`, `./cfgs`, else embedded.
pub fn select(explicit: Option<&Path>) -> Box<dyn ConfigStore> {
    if let Some(dir) = explicit {
        return Box::new(DirStore::new(dir));
    }
    if let Some(dir) = std::env::var_os("TRIL_CONFIG_DIR") {
        return Box::new(DirStore::new(PathBuf::from(dir)));
    }
    if Path::new("cfgs/config.yaml").is_file() {
        return Box::new(DirStore::new("cfgs"));
    }
    Box::new(EmbeddedStore)
}
