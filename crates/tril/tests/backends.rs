//! One tiny seeded PPO iteration, GRPO iteration, DPO run and BC run (synthetic tasks,
//! `builtin:tiny-gpt2`) through the real CLI on every backend this binary carries:
//! `device=ndarray` is the reference; `flex` (default feature) and `wgpu` (feature `wgpu`,
//! with a usable Vulkan device, e.g. Mesa's lavapipe) must log the same numbers.
//!
//! Every backend starts from the same weights (fresh parameters are drawn on the host,
//! `tril_algorithms::onpolicy::build_models`) and samples with the same host RNG, so the
//! runs generate the same tokens and differ only by float rounding: the order of summation
//! in matmuls and reductions differs between backends. Every logged number (wall-clock
//! keys `time/*` aside) must agree within `|a - b| <= ATOL + RTOL * max(|a|, |b|)` with
//! `RTOL = 1e-4`, `ATOL = 1e-6`. Measured (debug build, lavapipe 22.3 / LLVM 15 for wgpu):
//! losses agree within 6e-7 relative on both; the largest relative difference of any key
//! is 4.7e-6 for flex (DPO's `rewards/chosen`, a difference of log-probs) and 8.2e-6 for
//! wgpu (PPO's `approx_kl`; GRPO's `kl` 6.2e-6), so RTOL leaves a margin of 12. The
//! absolute term covers values that are zero up to rounding: DPO's implicit rewards on its
//! first step, where the policy still equals the reference (ndarray logs 0.0, flex -6e-8);
//! `rewards/accuracies` on such a step counts the signs of that noise (0.0 vs 0.125) and is
//! not compared. Counts, lengths and text metrics (rewards of sampled text, diversity)
//! depend only on the sampled tokens and agree exactly; a token flipped by rounding would
//! show as a difference far above the tolerance, so it is not hidden.
//!
//! The wgpu case skips with a message when the binary lacks the `wgpu` feature or no
//! Vulkan adapter answers; with `REQUIRE_WGPU=1` in the environment (CI) a skip is a
//! failure (not a `TRIL_*` name: tril reads those as config overrides). Cost on 2 cores:
//! 3 s without wgpu; 27 s with it (each wgpu run about 10 s, mostly starting lavapipe and
//! compiling its kernels).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-6;

/// The backends of `tril --version` (`backends: ndarray (device=ndarray), flex (...)`).
fn carried() -> &'static str {
    static OUT: OnceLock<String> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_tril")).arg("--version").output().expect("run tril --version");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find(|l| l.starts_with("backends:")).unwrap_or_else(|| panic!("no backends line: {text}")).into()
    })
}

fn carries(backend: &str) -> bool {
    carried().contains(&format!(" {backend} ("))
}

/// `tril --quiet run --config-dir <repo cfgs> ARGS... device=DEVICE run_dir=DIR`: exit
/// code and stderr. `XDG_RUNTIME_DIR` points at `dir`'s parent when unset (the Vulkan
/// loader warns without one).
fn run_on(device: &str, args: &[&str], dir: &Path) -> (i32, String) {
    let cfgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tril"));
    cmd.args(["--quiet", "run", "--config-dir", cfgs.to_str().unwrap()])
        .args(args)
        .arg(format!("device={device}"))
        .arg(format!("run_dir={}", dir.display()))
        .env_remove("TRIL_LOG");
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        cmd.env("XDG_RUNTIME_DIR", dir.parent().unwrap());
    }
    let started = std::time::Instant::now();
    let out = cmd.output().expect("run tril");
    eprintln!("{device}: {:.2} s", started.elapsed().as_secs_f64());
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every logged number of a run directory, keyed `file:line:key` (`time/*` left out;
/// `val_split_metrics.jsonl`'s `metrics` flattened). A log the algorithm does not write
/// reads as empty.
fn logged(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for file in ["rollout_info.jsonl", "training_info.jsonl", "val_split_metrics.jsonl"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
            let mut flat: Vec<(String, serde_json::Value)> = Vec::new();
            for (k, value) in v {
                match value {
                    serde_json::Value::Object(inner) => {
                        flat.extend(inner.into_iter().map(|(k2, v2)| (format!("{k}/{k2}"), v2)))
                    }
                    other => flat.push((k, other)),
                }
            }
            out.extend(
                flat.into_iter().filter(|(k, _)| !k.starts_with("time/")).map(|(k, v)| (format!("{file}:{i}:{k}"), v)),
            );
        }
    }
    out
}

/// DPO's `rewards/accuracies` on a line whose implicit rewards are zero up to rounding
/// (the first step: policy = reference) counts the signs of rounding noise.
fn rounding_noise_count(key: &str, lines: &[(String, serde_json::Value)]) -> bool {
    let Some(prefix) = key.strip_suffix("rewards/accuracies") else { return false };
    ["rewards/chosen", "rewards/rejected"].iter().all(|k| {
        let full = format!("{prefix}{k}");
        lines.iter().any(|(key, v)| *key == full && v.as_f64().is_some_and(|x| x.abs() <= ATOL))
    })
}

/// Asserts that `other`'s logs equal `reference`'s within the tolerance; returns the
/// largest relative difference (over values above `ATOL`) and its key.
fn assert_agree(reference: &Path, other: &Path, label: &str) -> (f64, String) {
    let (a, b) = (logged(reference), logged(other));
    let keys = |l: &[(String, serde_json::Value)]| l.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b), "{label}: the runs logged different keys");
    assert!(!a.is_empty(), "{label}: nothing logged in {}", reference.display());
    let mut worst = (0.0, String::new());
    let mut bad = Vec::new();
    for ((key, x), (_, y)) in a.iter().zip(&b) {
        match (x.as_f64(), y.as_f64()) {
            (Some(_), Some(_)) if rounding_noise_count(key, &a) && rounding_noise_count(key, &b) => {}
            (Some(x), Some(y)) => {
                let scale = x.abs().max(y.abs());
                let diff = (x - y).abs();
                if scale > ATOL && diff / scale > worst.0 {
                    worst = (diff / scale, key.clone());
                }
                if diff > ATOL + RTOL * scale {
                    bad.push(format!("{key}: {x} vs {y}"));
                }
            }
            _ => {
                if x != y {
                    bad.push(format!("{key}: {x} vs {y}"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{label}: beyond |a-b| <= {ATOL} + {RTOL}*max(|a|,|b|):\n{}", bad.join("\n"));
    worst
}

/// Why the wgpu case cannot run in this build, if it cannot: the binary lacks the feature.
fn wgpu_missing() -> Option<String> {
    (!carries("wgpu")).then(|| format!("this tril was built without the `wgpu` feature ({})", carried()))
}

/// What a `device=wgpu` run prints when no Vulkan driver or adapter answers (CubeCL's
/// panic on the first use of the device).
fn no_adapter(stderr: &str) -> bool {
    stderr.contains("No possible adapter available")
}

/// Prints why the wgpu case is skipped, or fails under `REQUIRE_WGPU=1` (CI).
fn skip_wgpu(name: &str, why: &str) {
    if std::env::var("REQUIRE_WGPU").as_deref() == Ok("1") {
        panic!("REQUIRE_WGPU=1, but {name} cannot run on wgpu: {why}");
    }
    eprintln!("skipped {name} on wgpu: {why}");
}

/// Runs `args` on ndarray, flex and (when usable) wgpu and checks the logs agree.
fn agree_across_backends(name: &str, args: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |device: &str| -> PathBuf { tmp.path().join(format!("{name}_{device}")) };
    let (code, stderr) = run_on("ndarray", args, &dir("ndarray"));
    assert_eq!(code, 0, "{name} on ndarray:\n{stderr}");
    let mut compared = 0;
    for device in ["flex", "wgpu"] {
        if device == "flex" && !carries("flex") {
            eprintln!("skipped {name} on flex: this tril was built without the `flex` feature");
            continue;
        }
        if device == "wgpu" {
            if let Some(why) = wgpu_missing() {
                skip_wgpu(name, &why);
                continue;
            }
        }
        let (code, stderr) = run_on(device, args, &dir(device));
        if device == "wgpu" && code != 0 && no_adapter(&stderr) {
            let line = stderr.lines().find(|l| no_adapter(l)).unwrap_or_default();
            skip_wgpu(name, &format!("no usable Vulkan adapter (Mesa's lavapipe is one): {line}"));
            continue;
        }
        assert_eq!(code, 0, "{name} on {device}:\n{stderr}");
        let (worst, key) = assert_agree(&dir("ndarray"), &dir(device), &format!("{name}: ndarray vs {device}"));
        eprintln!("{name}: ndarray vs {device}: largest relative difference {worst:.1e} ({key})");
        compared += 1;
    }
    if compared == 0 {
        eprintln!("{name}: only ndarray ran; nothing to compare");
    }
}

/// GRPO and PPO: one iteration on 8 validation prompts, evaluated once at the end.
const SMALL_EVAL: [&str; 3] = ["alg.args.eval_zero_shot=false", "alg.args.save_checkpoints=false", "task.args.n_val=8"];

/// PPO: one iteration of 16 rollouts, one epoch of 2 minibatches.
#[test]
fn ppo_iteration_agrees_across_backends() {
    let args = [
        &["task=synthetic", "alg=ppo", "alg.args.n_iters=1", "sampling.batch_size_per_process=16"][..],
        &["alg.args.trajectories_per_update=16", "alg.args.batch_size=8", "alg.args.n_epochs=1"],
        &SMALL_EVAL,
    ]
    .concat();
    agree_across_backends("ppo", &args);
}

/// GRPO: one iteration (4 prompts x 8 completions, two optimizer steps, KL to the reference).
#[test]
fn grpo_iteration_agrees_across_backends() {
    let args = [&["task=synthetic", "alg=grpo", "alg.args.n_iters=1"][..], &SMALL_EVAL].concat();
    agree_across_backends("grpo", &args);
}

/// DPO: 2 steps of 16 pairs (2 micro-batches each), evaluated on 16 pairs at the end.
#[test]
fn dpo_steps_agree_across_backends() {
    let args = [
        "task=synthetic_preference",
        "alg=dpo",
        "alg.args.epochs=1",
        "task.args.n_train=32",
        "task.args.n_val=16",
        "alg.args.eval_zero_shot=false",
    ];
    agree_across_backends("dpo", &args);
}

/// BC: 2 steps of 32 references (2 micro-batches each).
#[test]
fn bc_steps_agree_across_backends() {
    let args = [
        "task=synthetic",
        "alg=bc",
        "alg.args.n_epochs=1",
        "task.args.n_train=64",
        "task.args.n_val=8",
        "alg.args.eval_zero_shot=false",
    ];
    agree_across_backends("bc", &args);
}

/// `device=cuda` on a binary without the `cuda` feature is a usage error (exit 2) that
/// names the feature to build with.
#[test]
fn cuda_without_its_feature_names_the_feature() {
    if carries("cuda") {
        eprintln!("skipped: this tril carries cuda ({})", carried());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (code, stderr) = run_on("cuda", &["task=synthetic", "alg=ppo"], &tmp.path().join("cuda"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--features cuda"), "{stderr}");
    assert!(!tmp.path().join("cuda").exists(), "refused before the run directory is made");
}
