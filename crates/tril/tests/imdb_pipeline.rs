//! `examples/imdb-pipeline/run.sh --tiny`, end to end through the real binary: what the
//! tutorial (docs/tutorials/imdb-pipeline.md) claims at the tiny size. The language model
//! lowers its held-out NLL, the classifier beats chance on held-out reviews, and PPO raises
//! the classifier's probability of the target label on held-out prompts for both labels
//! (positive, and negative as the control), each stage reading the previous one's
//! `RUN/final`. Skips, saying so, where the shared IMDB CSV is absent.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `key` of the first and last line of a run's `val_split_metrics.jsonl`.
fn first_last(run: &Path, key: &str) -> (f64, f64) {
    let text = std::fs::read_to_string(run.join("val_split_metrics.jsonl")).unwrap();
    let values: Vec<f64> = text
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            line["metrics"][key].as_f64().unwrap_or_else(|| panic!("{}: no {key} in {l}", run.display()))
        })
        .collect();
    assert!(values.len() >= 2, "{}: {} evaluations of {key}", run.display(), values.len());
    (values[0], *values.last().unwrap())
}

/// The change of a per-sample val metric from a run's first evaluation to its last, paired
/// over the same prompts (`epoch_<n>_val_split_predictions.json`): the mean difference, its
/// standard error and the number of prompts.
fn paired_rise(run: &Path, key: &str) -> (f64, f64, usize) {
    let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(run)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let epoch = name.strip_prefix("epoch_")?.strip_suffix("_val_split_predictions.json")?.parse().ok()?;
            Some((epoch, e.path()))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{}: {} evaluations with predictions", run.display(), files.len());
    let read = |path: &Path| -> Vec<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let (first, last) = (read(&files[0].1), read(&files[files.len() - 1].1));
    assert_eq!(first.len(), last.len(), "{}: the evaluations saw different prompts", run.display());
    let diffs: Vec<f64> = first
        .iter()
        .zip(&last)
        .map(|(a, b)| {
            assert_eq!(a["prompt_text"], b["prompt_text"], "{}: prompts in another order", run.display());
            let value = |x: &serde_json::Value| x[key].as_f64().unwrap_or_else(|| panic!("no {key} in {x}"));
            value(b) - value(a)
        })
        .collect();
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt(), diffs.len())
}

#[test]
fn tiny_pipeline_learns_at_every_stage() {
    let data = repo().join("../shared/data/imdb_reviews_2499.csv");
    if !data.is_file() {
        eprintln!("skipped: {} is absent (the shared IMDB reviews)", data.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pipeline");
    let run = Command::new("bash")
        .arg(repo().join("examples/imdb-pipeline/run.sh"))
        .args(["--tiny", "--out", out.to_str().unwrap(), "--tril", env!("CARGO_BIN_EXE_tril")])
        // From another directory than the repository: the cfgs' data paths do not depend on it.
        .current_dir(tmp.path())
        .env_remove("TRIL_LOG")
        .output()
        .expect("run run.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "run.sh failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("== summary"), "{stdout}");

    // Each stage's stable link to its last checkpoint, read by the next stage.
    for model in ["1-lm/final/policy", "2-classifier/final/reward_model", "3-ppo-positive/final/policy"] {
        assert!(out.join(model).join("model.safetensors").is_file(), "{model}");
    }
    for stage in ["1-lm", "2-classifier", "3-ppo-positive", "3-ppo-negative"] {
        assert!(out.join(stage).join("plots/val_metrics.png").is_file(), "{stage}: no val plot");
    }

    let (first, last) = first_last(&out.join("1-lm"), "supervised/reference_nll");
    assert!(last < first - 1.0, "held-out NLL {first} -> {last}");

    // 250 held-out reviews: chance is 0.5 +- 0.032.
    let (_, accuracy) = first_last(&out.join("2-classifier"), "accuracy");
    assert!(accuracy > 0.6, "held-out accuracy {accuracy}");

    for label in ["positive", "negative"] {
        let run = out.join(format!("3-ppo-{label}"));
        let key = "semantic/learned_automodel_metric";
        let (first, last) = first_last(&run, key);
        // Well beyond the noise between evaluations: the rise over the same 225 val
        // prompts is more than twice its paired standard error (measured: z = 5.2 and 4.7).
        let (rise, se, n) = paired_rise(&run, key);
        eprintln!("3-ppo-{label}: val P({label}) {first:.4} -> {last:.4}, paired rise {rise:.4} +- {se:.4} over {n}");
        assert!((rise - (last - first)).abs() < 1e-6, "{label}: the per-prompt values do not average to the metric");
        assert!(
            rise > 2.0 * se,
            "{label}: val reward {first} -> {last}, a rise of {rise} +- {se} (paired, {n} prompts)"
        );
        let (_, kl) = first_last(&run, "over_optimization/kl");
        assert!(kl.is_finite() && kl < 20.0, "{label}: KL {kl} nats");
    }
}
