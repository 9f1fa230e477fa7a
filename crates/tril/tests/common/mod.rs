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

/// `tril --quiet SUBCOMMAND [--config-dir <repo cfgs>] ARGS...` in `cwd` (the test's own
/// when `None`): exit code, stdout, stderr.
pub fn tril_command(subcommand: &str, config_dir: bool, cwd: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let cfgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tril"));
    command.args(["--quiet", subcommand]);
    if config_dir {
        command.args(["--config-dir", cfgs.to_str().unwrap()]);
    }
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let out = command.args(args).env_remove("TRIL_LOG").output().expect("run tril");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
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

/// `tril --quiet run --resume DIR` (the run's own resolved config, no config dir).
pub fn resume(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tril"))
        .args(["--quiet", "run", "--resume", dir.to_str().unwrap()])
        .env_remove("TRIL_LOG")
        .output()
        .expect("run tril");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The lines of a run's JSONL logs without the wall-clock keys (`time/*`); a log the
/// algorithm does not write (BC has no rollouts) reads as empty.
pub fn logs_without_time(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for file in ["rollout_info.jsonl", "training_info.jsonl", "val_split_metrics.jsonl"] {
        for line in std::fs::read_to_string(dir.join(file)).unwrap_or_default().lines() {
            let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
            v.retain(|k, _| !k.starts_with("time/"));
            out.push(format!("{file}: {}", serde_json::Value::Object(v)));
        }
    }
    out
}

/// Starts `tril --quiet run --config-dir <repo cfgs> ARGS... run_dir=DIR` in the
/// background, its stderr going to `stderr`.
pub fn spawn(args: &[&str], dir: &Path, stderr: std::process::Stdio) -> std::process::Child {
    let cfgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs");
    Command::new(env!("CARGO_BIN_EXE_tril"))
        .args(["--quiet", "run", "--config-dir", cfgs.to_str().unwrap()])
        .args(args)
        .arg(format!("run_dir={}", dir.display()))
        .env_remove("TRIL_LOG")
        .stderr(stderr)
        .spawn()
        .expect("run tril")
}

/// Starts `args` into `dir`, sends `signal` (`-TERM`, `-INT`) once its iteration-2
/// checkpoint exists, and returns the exit code and stderr.
pub fn stop_with(args: &[&str], dir: &Path, signal: &str) -> (i32, String) {
    let mut child = spawn(args, dir, std::process::Stdio::piped());
    let marker = dir.join("checkpoints/iter_2/manifest.json");
    let started = std::time::Instant::now();
    while !marker.is_file() {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!("the run ended before its iteration-2 checkpoint: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(started.elapsed().as_secs() < 300, "no iteration-2 checkpoint after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The shell's built-in `kill` (no procps needed).
    let status = Command::new("sh").args(["-c", &format!("kill {signal} {}", child.id())]).status().expect("sh");
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs `args` (which must checkpoint every 2 of `n_iters` iterations) to the end; runs it
/// again, SIGKILLs the process once its iteration-2 checkpoint exists and `--resume`s it.
/// Asserts that every logged number (wall-clock keys aside) and the final policy weights
/// are the uninterrupted run's, that there are `lines` log lines, and that resuming a
/// finished run does nothing.
pub fn assert_kill_and_resume_matches(args: &[&str], n_iters: usize, lines: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let (full, arg) = run_dir(&tmp, "full");
    let (code, stderr) = tril(&[args, &[arg.as_str()]].concat());
    assert_eq!(code, 0, "{stderr}");

    let (cut, _) = run_dir(&tmp, "cut");
    let mut child = spawn(args, &cut, std::process::Stdio::null());
    let marker = cut.join("checkpoints/iter_2/trainer_state.json");
    let started = std::time::Instant::now();
    while !marker.is_file() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its iteration-2 checkpoint");
        assert!(started.elapsed().as_secs() < 300, "no iteration-2 checkpoint after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let last = format!("checkpoints/iter_{n_iters}");
    assert!(!cut.join(&last).exists(), "the process finished before it was killed; the test needs slower iterations");

    let (code, stderr) = resume(&cut);
    assert_eq!(code, 0, "{stderr}");
    let log = std::fs::read_to_string(cut.join("log.txt")).unwrap();
    assert!(log.contains("resuming after the checkpoint of iteration"), "{log}");
    let expected = logs_without_time(&full);
    assert_eq!(logs_without_time(&cut), expected, "resumed logs differ from the uninterrupted run's");
    assert_eq!(expected.len(), lines);
    // The HF model, or PEFT's adapter under alg.lora.
    let weights = |dir: &Path| {
        let policy = dir.join(&last).join("policy");
        let file = ["model.safetensors", "adapter_model.safetensors"]
            .map(|f| policy.join(f))
            .into_iter()
            .find(|f| f.is_file());
        std::fs::read(file.unwrap_or_else(|| panic!("{}: no weights", policy.display()))).unwrap()
    };
    assert!(weights(&full) == weights(&cut), "final policy weights differ");

    let (code, stderr) = resume(&cut);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(logs_without_time(&cut), expected);
    let log = std::fs::read_to_string(cut.join("log.txt")).unwrap();
    assert!(log.contains("nothing to resume"), "{log}");
}

/// A tril-models test fixture directory (`gpt2`, `distilbert`, ...): tiny models made by
/// transformers.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tril-models/tests/fixtures").join(name)
}

/// The shared IMDB CSV (`shared/data` beside the checkout, or two levels up from a
/// worktree), or `None` after saying the test is skipped.
pub fn imdb_data() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let found = ["../shared/data", "../../shared/data"]
        .iter()
        .map(|d| repo.join(d).join("imdb_reviews_2499.csv"))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipped: shared/data/imdb_reviews_2499.csv not found (shared data absent)");
    }
    found
}

/// Overrides that shrink `task=imdb` to the shared CSV `data` and the tiny fixtures: the
/// GPT-2 as policy and tokenizer, the DistilBERT as reward; about 40 validation reviews,
/// prompts of 16 tokens, 8 generated tokens, 8 prompts per generation call.
pub fn imdb_tiny_args(data: &Path) -> Vec<String> {
    let (gpt2, distilbert) = (fixture("gpt2"), fixture("distilbert"));
    let mut args: Vec<String> = [
        "task=imdb",
        "task.args.text_column=review",
        "task.args.label_column=sentiment",
        "task.args.val_fraction=0.02",
        "sampling.batch_size_per_process=8",
        "sampling.max_prompt_len=16",
        "sampling.max_gen_len=8",
        "sampling.train_generation_kwargs.min_length=8",
        "sampling.train_generation_kwargs.max_new_tokens=8",
        "sampling.eval_generation_kwargs.min_length=8",
        "sampling.eval_generation_kwargs.max_new_tokens=8",
    ]
    .map(String::from)
    .to_vec();
    args.extend([
        format!("task.args.train_file={}", data.display()),
        format!("alg.policy.args.model_name={}", gpt2.display()),
        format!("alg.tokenizer.model_name={}", gpt2.display()),
        format!("reward_fn.args.model_name={}", distilbert.display()),
    ]);
    args
}
