//! Helpers the end-to-end tests share: run the real `tril` binary and read a run directory.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// `tril --quiet run --config-dir <repo cfgs> ARGS...`: the exit code and stderr.
pub fn tril(args: &[&str]) -> (i32, String) {
    let cfgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs");
    let out = Command::new(env!("CARGO_BIN_EXE_tril"))
        .args(["--quiet", "run", "--config-dir", cfgs.to_str().unwrap()])
        .args(args)
        .env_remove("TRIL_LOG")
        .output()
        .expect("run tril");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A run directory under `tmp` and the `run_dir=...` override naming it.
pub fn run_dir(tmp: &tempfile::TempDir, name: &str) -> (PathBuf, String) {
    let dir = tmp.path().join(name);
    let arg = format!("run_dir={}", dir.display());
    (dir, arg)
}

/// Every line of a JSONL file.
pub fn lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `key` of every line of a JSONL file (`NaN` where it is missing or null).
pub fn jsonl(path: &Path, key: &str) -> Vec<f64> {
    lines(path).iter().map(|l| l[key].as_f64().unwrap_or(f64::NAN)).collect()
}

/// `key` of every evaluation in `val_split_metrics.jsonl`, in order.
pub fn eval_series(dir: &Path, key: &str) -> Vec<f64> {
    lines(&dir.join("val_split_metrics.jsonl"))
        .iter()
        .map(|l| l["metrics"][key].as_f64().unwrap_or_else(|| panic!("{key} missing: {l}")))
        .collect()
}
