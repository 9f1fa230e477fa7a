//! RLOO (`alg=rloo`) and REINFORCE++ (`alg=reinforce_pp`, both estimators) through the real
//! CLI on the embedded synthetic task (tiny GPT-2, CPU, seeded): logged keys, checkpoints,
//! exact `--resume`, config errors and the learning direction.

mod common;
use common::*;
use std::path::Path;

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Asserts that every key has one finite value per iteration in `file` of `dir`.
fn assert_finite(dir: &Path, file: &str, keys: &[&str], n: usize) {
    for key in keys {
        let values = jsonl(&dir.join(file), key);
        assert!(values.len() == n && values.iter().all(|v| v.is_finite()), "{file} {key}: {values:?}");
    }
}

/// Runs `task=synthetic alg=<alg>` for `n` iterations with `extra` overrides; returns the
/// run directory (kept alive by `tmp`).
fn run(tmp: &tempfile::TempDir, alg: &str, n: usize, extra: &[&str]) -> std::path::PathBuf {
    let (dir, arg) = run_dir(tmp, alg);
    let (iters, alg_arg) = (format!("alg.args.n_iters={n}"), format!("alg={alg}"));
    let evals = format!("alg.args.eval_every={n}");
    let mut args = vec!["task=synthetic", alg_arg.as_str(), &arg, &iters, &evals, "alg.args.eval_zero_shot=false"];
    args.extend_from_slice(extra);
    let (code, stderr) = tril(&args);
    assert_eq!(code, 0, "{stderr}");
    dir
}

/// Asserts that the mean rollout reward of the last three iterations is at least `by` above
/// that of the first three.
fn assert_learns(dir: &Path, by: f64) {
    let rewards = jsonl(&dir.join("rollout_info.jsonl"), "rollout/reward_mean");
    let (first, last) = (mean(&rewards[..3]), mean(&rewards[rewards.len() - 3..]));
    assert!(last - first >= by, "reward did not rise by {by}: {rewards:?}");
}

fn assert_checkpoint(dir: &Path, n: usize, alg: &str) {
    let at = dir.join(format!("checkpoints/iter_{n}"));
    assert!(at.join("policy/model.safetensors").is_file(), "no policy weights in {}", at.display());
    assert!(!at.join("critic").exists(), "{alg} has no critic");
    let state = std::fs::read_to_string(at.join("trainer_state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["algorithm"], alg, "{state}");
}

/// RLOO's synthetic run: the loop, loss, clip and rollout-KL keys are logged and finite,
/// the KL penalty moves the rewards once the policy leaves the reference, the last
/// iteration is checkpointed, and 20 seeded iterations raise the mean rollout reward by at
/// least 0.1 (measured with seed 0: 0.33 over the first three iterations -> 0.48 over the
/// last three; about 5 s).
#[test]
fn rloo_improves_the_synthetic_reward_and_logs_finite_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = run(&tmp, "rloo", 20, &[]);
    let training = ["rloo/loss", "rloo/grad_norm", "rloo/entropy", "rloo/lr"];
    let clips = ["rloo/clip_ratio", "rloo/clip_ratio_low", "rloo/clip_ratio_high"];
    assert_finite(&dir, "training_info.jsonl", &[&training[..], &clips].concat(), 20);
    let rollout =
        ["rollout/reward_mean", "rollout/kl", "rollout/penalized_reward_mean", "rollout/frac_reward_zero_std"];
    assert_finite(&dir, "rollout_info.jsonl", &rollout, 20);
    // The KL is in the reward (TRL's RLOO), not in the loss: no `rloo/kl`.
    assert!(jsonl(&dir.join("training_info.jsonl"), "rloo/kl").iter().all(|k| k.is_nan()));
    // The first generation is the reference itself; the KL's policy side is the min-length
    // sampler's (synthetic's `min_length: 4` takes EOS out of the first four draws), so it
    // starts at KL(q || ref) >= 0, small (-log(1 - p_eos) per masked step); the policy then
    // drifts, and beta 0.05 moves the penalized reward off the raw one.
    let kl = jsonl(&dir.join("rollout_info.jsonl"), "rollout/kl");
    assert!((0.0..0.5).contains(&kl[0]) && kl[1..].iter().any(|k| (k - kl[0]).abs() > 1e-4), "{kl:?}");
    // Two optimizer steps per generation: the second is off-policy and the sequence ratio clips.
    assert!(jsonl(&dir.join("training_info.jsonl"), "rloo/clip_ratio").iter().any(|&c| c > 0.0));
    assert_checkpoint(&dir, 20, "rloo");
    assert_learns(&dir, 0.1);
}

/// REINFORCE++ with OpenRLHF's defaults (one completion per prompt, so no group at all):
/// the token-level loss, clip and PPO-KL keys, the rollout KL, the checkpoint, and a rise
/// of the mean rollout reward by at least 0.1 in 20 iterations (seed 0: 0.29 -> 0.50).
#[test]
fn reinforce_pp_with_one_completion_per_prompt_improves_the_synthetic_reward() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = run(&tmp, "reinforce_pp", 20, &[]);
    let training = [
        "reinforce_pp/loss",
        "reinforce_pp/grad_norm",
        "reinforce_pp/entropy",
        "reinforce_pp/clip_ratio",
        "reinforce_pp/ppo_kl",
        "reinforce_pp/lr",
    ];
    assert_finite(&dir, "training_info.jsonl", &training, 20);
    assert_finite(&dir, "rollout_info.jsonl", &["rollout/reward_mean", "rollout/kl", "rollout/completion_length"], 20);
    // G = 1: groups of one carry no "zero std" statistic.
    assert!(jsonl(&dir.join("rollout_info.jsonl"), "rollout/frac_reward_zero_std").iter().all(|v| v.is_nan()));
    assert_checkpoint(&dir, 20, "reinforce_pp");
    assert_learns(&dir, 0.1);
}

/// REINFORCE++-baseline (group mean subtracted, gamma 1) with four completions per prompt:
/// finite keys, the checkpoint, and a rise by at least 0.1 in 20 iterations (seed 0: 0.28 -> 0.46).
#[test]
fn reinforce_pp_baseline_improves_the_synthetic_reward() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = ["alg.args.advantage_estimator=reinforce_baseline", "alg.args.num_generations=4"];
    let dir = run(&tmp, "reinforce_pp", 20, &extra);
    assert_finite(&dir, "training_info.jsonl", &["reinforce_pp/loss", "reinforce_pp/clip_ratio"], 20);
    let rollout = ["rollout/reward_mean", "rollout/kl", "rollout/frac_reward_zero_std"];
    assert_finite(&dir, "rollout_info.jsonl", &rollout, 20);
    let resolved = std::fs::read_to_string(dir.join("config.resolved.yaml")).unwrap();
    assert!(resolved.contains("advantage_estimator: reinforce_baseline"), "{resolved}");
    assert_checkpoint(&dir, 20, "reinforce_pp");
    assert_learns(&dir, 0.1);
}

/// RLOO killed after its iteration-2 checkpoint and resumed logs the same numbers and ends
/// with the same weights as an uninterrupted 6-iteration run (6 rollout, 6 training and 3
/// evaluation lines).
#[test]
fn killed_and_resumed_rloo_matches_an_uninterrupted_one() {
    let args = [
        "task=synthetic",
        "alg=rloo",
        "alg.args.n_iters=6",
        "alg.args.eval_every=2",
        "alg.args.eval_zero_shot=false",
        "alg.args.save_checkpoints=true",
        "alg.args.save_every=2",
    ];
    assert_kill_and_resume_matches(&args, 6, 6 + 6 + 3);
}

/// The same for REINFORCE++ (token-level advantages, G = 1).
#[test]
fn killed_and_resumed_reinforce_pp_matches_an_uninterrupted_one() {
    let args = [
        "task=synthetic",
        "alg=reinforce_pp",
        "alg.args.n_iters=6",
        "alg.args.eval_every=2",
        "alg.args.eval_zero_shot=false",
        "alg.args.save_checkpoints=true",
        "alg.args.save_every=2",
    ];
    assert_kill_and_resume_matches(&args, 6, 6 + 6 + 3);
}

#[test]
fn bad_rloo_and_reinforce_pp_configs_are_refused_naming_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, arg) = run_dir(&tmp, "bad");
    let cases: [(&[&str], &str); 5] = [
        (&["alg=rloo", "alg.args.num_generations=1"], "alg.args.num_generations: expected at least 2"),
        (
            &["alg=reinforce_pp", "alg.args.advantage_estimator=reinforce_baseline"],
            "alg.args.num_generations: expected at least 1 (2 with reinforce_baseline)",
        ),
        (&["alg=rloo", "alg.args.num_iterations=0"], "alg.args.num_iterations"),
        (&["alg=reinforce_pp", "alg.args.temperature=0"], "alg.args.temperature"),
        (
            &["alg=rloo", "alg.args.batch_size=6"],
            "alg.args.batch_size (6) x alg.args.steps_per_generation (2) = 12 completions per generation must be \
             divisible by alg.args.num_generations (8)",
        ),
    ];
    for (overrides, want) in cases {
        let mut args = vec!["task=synthetic", &arg];
        args.extend_from_slice(overrides);
        let (code, stderr) = tril(&args);
        assert_eq!(code, 2, "{overrides:?}: {stderr}");
        assert!(stderr.contains(want), "{overrides:?}: {stderr}");
    }
    let (code, stderr) = tril(&["task=synthetic", "alg=reinforce_pp", &arg, "+alg.args.beta=0.1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("alg.args.beta"), "{stderr}");
}

/// The KL penalty's policy side under a truncating sampler (`top_k: 3` on top of synthetic's
/// `min_length: 4`), for both objectives that fold a KL into the reward. At the first
/// iteration the policy is the reference: TRL's and OpenRLHF's estimate (`kl_logprobs:
/// model`, the plain softmax) is exactly 0, whereas tril's default (`sampled`, the log-prob
/// under the top-3 distribution each token was drawn from) is `KL(q || ref)` of that sampler,
/// well above 0: the quantity the penalty holds down, which the policy cannot lower by
/// moving mass outside the top 3. Without truncation the two modes log the same KL.
#[test]
fn rloo_and_reinforce_pp_kl_reads_the_sampling_distribution() {
    let first_kl = |alg: &str, mode: &str, top_k: &str| -> f64 {
        let tmp = tempfile::tempdir().unwrap();
        let mode = format!("alg.args.kl_logprobs={mode}");
        let top_k = format!("sampling.train_generation_kwargs.top_k={top_k}");
        let dir = run(&tmp, alg, 1, &[&mode, &top_k]);
        jsonl(&dir.join("rollout_info.jsonl"), "rollout/kl")[0]
    };
    for alg in ["rloo", "reinforce_pp"] {
        let (model, sampled) = (first_kl(alg, "model", "3"), first_kl(alg, "sampled", "3"));
        assert!(model.abs() < 1e-6, "{alg}: the plain-softmax KL of the reference against itself is {model}");
        assert!(sampled > 0.05, "{alg}: the top-3 sampler's KL from the reference is {sampled}");
        // No top-k: only min_length truncates, and each masked step adds -log(1 - p_eos) >= 0.
        let (model, sampled) = (first_kl(alg, "model", "0"), first_kl(alg, "sampled", "0"));
        assert!(model.abs() < 1e-6 && (0.0..0.5).contains(&sampled), "{alg}: {model} {sampled}");
    }
}
