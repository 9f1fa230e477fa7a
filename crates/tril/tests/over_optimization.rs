//! Reward over-optimization through the real CLI: proxy, gold and KL at every evaluation,
//! `tril gold-eval` on a finished run directory, and the synthetic setting of
//! `cfgs/alg/ppo_ensemble.yaml` (proxies trained on 32 preference pairs, gold = the task's
//! exact reward) where the proxy ends above the gold.

mod common;
use common::*;
use std::path::Path;

/// `tril --quiet gold-eval ARGS...`: the exit code and stderr.
fn gold_eval(args: &[&str]) -> (i32, String) {
    let (code, _, stderr) = tril_command("gold-eval", false, None, args);
    (code, stderr)
}

fn png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 1000 && bytes.starts_with(b"\x89PNG"), "{} is not a plot", path.display());
}

/// A PPO run without a gold reward records proxy and KL at each evaluation; `gold-eval`
/// afterwards scores its predictions. With the gold equal to the run's own reward
/// (`increasing_numbers`, min_tokens 4) the gold recomputed from the predictions equals
/// the proxy recorded during training, evaluation by evaluation (1e-12).
#[test]
fn gold_eval_scores_a_finished_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, arg) = run_dir(&tmp, "ppo");
    let (code, stderr) = tril(&["task=synthetic", "alg=ppo", &arg, "alg.args.n_iters=2", "alg.args.eval_every=1"]);
    assert_eq!(code, 0, "{stderr}");
    let kl = eval_series(&dir, "over_optimization/kl");
    let proxy = eval_series(&dir, "over_optimization/proxy_reward");
    assert_eq!(kl.len(), 3, "evaluations at 0, 1, 2");
    assert_eq!(kl[0], 0.0, "the initial policy is the reference");
    assert!(kl[1..].iter().all(|k| k.is_finite() && *k != 0.0), "{kl:?}");
    // The proxy at evaluation is the task's reward, logged as its metric too.
    assert_eq!(proxy, eval_series(&dir, "synthetic/increasing_numbers"));
    png(&dir.join("plots/over_optimization.png"));

    let d = dir.to_str().unwrap();
    let (code, stderr) = gold_eval(&[d]);
    assert_eq!(code, 2, "no gold reward in the run's config: {stderr}");
    assert!(stderr.contains("gold_reward_fn") && stderr.contains("--reward"), "{stderr}");
    let (code, stderr) = gold_eval(&[d, "--reward", "nope"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("gold_reward_fn.id") && stderr.contains("increasing_numbers"), "{stderr}");

    let (code, stderr) = gold_eval(&[d, "--reward", "increasing_numbers", "gold_reward_fn.args.min_tokens=4"]);
    assert_eq!(code, 0, "{stderr}");
    let rows = lines(&dir.join("gold_eval.jsonl"));
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["iteration"], i);
        assert_eq!(row["split"], "val");
        assert_eq!(row["samples"], 64);
        let gold = row["gold_reward"].as_f64().unwrap();
        assert!((gold - proxy[i]).abs() < 1e-12, "evaluation {i}: gold {gold} vs proxy {}", proxy[i]);
        assert!((row["proxy_reward"].as_f64().unwrap() - proxy[i]).abs() < 1e-12);
        assert!((row["kl"].as_f64().unwrap() - kl[i]).abs() < 1e-9);
    }
    assert_eq!(lines(&dir.join("gold_eval_samples.jsonl")).len(), 3 * 64);
    png(&dir.join("plots/gold_eval_val.png"));

    // A stricter gold (min_tokens 16: a 4-token generation scores at most 4/16) never
    // scores above the proxy, and a rerun rewrites the files instead of appending.
    let (code, stderr) = gold_eval(&[d, "--reward", "increasing_numbers", "gold_reward_fn.args.min_tokens=16"]);
    assert_eq!(code, 0, "{stderr}");
    let rows = lines(&dir.join("gold_eval.jsonl"));
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().zip(&proxy).all(|(r, p)| r["gold_reward"].as_f64().unwrap() <= p + 1e-12), "{rows:?}");

    let (code, stderr) = gold_eval(&[tmp.path().join("nothing").to_str().unwrap(), "--reward", "increasing_numbers"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("holds no tril run"), "{stderr}");
}

/// The synthetic over-optimization setting: three proxies trained on 32 pairs each (seeds
/// 1-3), PPO on their mean, the gold being the exact task reward. After 10 iterations the
/// policy scores far higher on the proxies than on the gold, and the gap has grown since
/// the start (measured: proxy 0.69 -> 0.98, gold 0.12 -> 0.06 with one such proxy).
#[test]
fn synthetic_proxy_ends_above_gold() {
    let tmp = tempfile::tempdir().unwrap();
    let (rm_dir, rm_arg) = run_dir(&tmp, "rm");
    let (code, stderr) = tril(&[
        "task=synthetic_preference",
        "alg=reward_model",
        &rm_arg,
        "alg.args.seeds=[1,2,3]",
        "task.args.n_train=32",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (dir, arg) = run_dir(&tmp, "ppo");
    let members = format!("reward_fn.args.model_name={}/reward_models/seed_{{seed}}", rm_dir.display());
    let (code, stderr) = tril(&[
        "task=synthetic",
        "alg=ppo_ensemble",
        &arg,
        &members,
        "alg.args.n_iters=10",
        "alg.args.eval_every=5",
        "alg.args.save_checkpoints=false",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let proxy = eval_series(&dir, "over_optimization/proxy_reward");
    let gold = eval_series(&dir, "over_optimization/gold_reward");
    let kl = eval_series(&dir, "over_optimization/kl");
    assert_eq!(proxy.len(), 3, "evaluations at 0, 5, 10");
    let gap = |i: usize| proxy[i] - gold[i];
    assert!(gap(2) > 0.2 && gap(2) > gap(0), "proxy {proxy:?}, gold {gold:?}");
    assert!(kl[2] > 0.0, "{kl:?}");
    let rollout = dir.join("rollout_info.jsonl");
    for key in ["rollout_buffer/rm_0", "rollout_buffer/rm_1", "rollout_buffer/rm_2", "rollout_buffer/rm_spread"] {
        let values = jsonl(&rollout, key);
        assert!(values.len() == 10 && values.iter().all(|v| v.is_finite()), "{key}: {values:?}");
    }
    png(&dir.join("plots/over_optimization.png"));
}
