//! Reward-model ensembles through the real CLI: `alg=reward_model` with a seed list trains
//! one model per seed into `RUN/seed_<s>/` and leaves each at `RUN/reward_models/seed_<s>/`;
//! a PPO run then optimizes the `ensemble` reward of those members (UWO) and logs each
//! member's mean score and their spread.

mod common;
use common::*;
use std::path::Path;

/// Small reward-model runs: 1 epoch of 64 pairs in batches of 16 (4 steps), no evaluation.
const SMALL_RM: [&str; 6] = [
    "task=synthetic_preference",
    "alg=reward_model",
    "task.args.n_train=64",
    "alg.args.epochs=1",
    "alg.args.eval_zero_shot=false",
    "alg.args.eval_splits=[]",
];

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Seeds 1 and 2 give two different models, each with its own full sub-run; the seed-1
/// member equals a plain `seed=1` run byte for byte (the seed sets the head's initial
/// weights and the data order, and nothing else differs); `--resume` skips finished seeds
/// and finishes an interrupted one to the same weights; PPO on the UWO ensemble of the two
/// logs `rm_0`, `rm_1`, `rm_spread` and finite rewards.
#[test]
fn seed_list_trains_the_members_of_a_ppo_ensemble() {
    let tmp = tempfile::tempdir().unwrap();
    let (rm, arg) = run_dir(&tmp, "rm");
    let checkpoints = ["alg.args.save_checkpoints=true", "alg.args.save_every=2"];
    let args = [&SMALL_RM[..], &[arg.as_str(), "alg.args.seeds=[1, 2]"], &checkpoints[..]].concat();
    let (code, stderr) = tril(&args);
    assert_eq!(code, 0, "{stderr}");
    for s in [1, 2] {
        let model = rm.join(format!("reward_models/seed_{s}"));
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(model.join(file).is_file(), "missing reward_models/seed_{s}/{file}");
        }
        let sub = rm.join(format!("seed_{s}"));
        for file in ["config.resolved.yaml", "training_info.jsonl", "plots/curves.png"] {
            assert!(sub.join(file).is_file(), "missing seed_{s}/{file}");
        }
        assert_eq!(weights(&model), weights(&sub.join("checkpoints/iter_4/reward_model")));
        let resolved = std::fs::read_to_string(sub.join("config.resolved.yaml")).unwrap();
        assert!(resolved.contains(&format!("seed: {s}\n")) && resolved.contains("seeds: null"), "{resolved}");
        assert_eq!(lines(&sub.join("training_info.jsonl")).len(), 4);
    }
    assert_ne!(weights(&rm.join("reward_models/seed_1")), weights(&rm.join("reward_models/seed_2")));
    let log = std::fs::read_to_string(rm.join("log.txt")).unwrap();
    assert!(log.contains("reward model 1/2 (seed 1)") && log.contains("reward model 2/2 (seed 2)"), "{log}");

    // The same seed alone, as a plain run, gives the same weights.
    let (single, arg) = run_dir(&tmp, "single");
    let (code, stderr) = tril(&[&SMALL_RM[..], &[arg.as_str(), "alg.args.seed=1"]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(weights(&single.join("checkpoints/iter_4/reward_model")), weights(&rm.join("reward_models/seed_1")));

    // Resuming the finished run trains nothing again.
    let (code, stderr) = resume(&rm);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines(&rm.join("seed_1/training_info.jsonl")).len(), 4);
    let log = std::fs::read_to_string(rm.join("log.txt")).unwrap();
    assert!(log.contains("(seed 2): done before"), "{log}");

    // Seed 2 interrupted after its step-2 checkpoint: --resume continues it from there to
    // the same weights; interrupted before any checkpoint: --resume trains it again.
    let seed_2 = weights(&rm.join("reward_models/seed_2"));
    for removed in ["seed_2/checkpoints/iter_4", "seed_2/checkpoints"] {
        std::fs::remove_dir_all(rm.join("reward_models/seed_2")).unwrap();
        std::fs::remove_dir_all(rm.join(removed)).unwrap();
        let (code, stderr) = resume(&rm);
        assert_eq!(code, 0, "{removed}: {stderr}");
        assert_eq!(weights(&rm.join("reward_models/seed_2")), seed_2, "{removed}");
        assert_eq!(lines(&rm.join("seed_2/training_info.jsonl")).len(), 4, "{removed}");
    }
    let log = std::fs::read_to_string(rm.join("log.txt")).unwrap();
    assert!(log.contains("resuming after the checkpoint of iteration 2"), "{log}");
    assert!(log.contains("holds no checkpoint to resume from"), "{log}");

    // PPO against the UWO ensemble of the two members.
    let (ppo, arg) = run_dir(&tmp, "ppo");
    let members = rm.join("reward_models/seed_{seed}");
    let reward = format!(
        "reward_fn={{id: ensemble, args: {{model_name: '{}', seeds: [1, 2], objective: uwo}}}}",
        members.display()
    );
    let (code, stderr) = tril(&[
        "task=synthetic",
        "alg=ppo",
        &arg,
        &reward,
        "alg.args.n_iters=2",
        "alg.args.eval_zero_shot=false",
        "alg.args.eval_every=100",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let rollouts = lines(&ppo.join("rollout_info.jsonl"));
    assert_eq!(rollouts.len(), 2);
    for key in ["rewards", "rm_0", "rm_1", "rm_spread", "rm_combined"] {
        let key = format!("rollout_buffer/{key}");
        assert!(rollouts.iter().all(|l| l[&key].as_f64().is_some_and(f64::is_finite)), "{key}: {rollouts:?}");
    }
    assert!(rollouts.iter().all(|l| l["rollout_buffer/rm_spread"].as_f64().unwrap() > 0.0), "{rollouts:?}");
}

/// A member that does not exist fails the run before training, naming the key and path.
#[test]
fn missing_member_is_an_error_naming_the_seed_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, arg) = run_dir(&tmp, "ppo");
    let members = tmp.path().join("nowhere/seed_{seed}");
    let reward = format!("reward_fn={{id: ensemble, args: {{model_name: '{}', seeds: [4]}}}}", members.display());
    let (code, stderr) = tril(&["task=synthetic", "alg=ppo", &arg, &reward, "alg.args.n_iters=1"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("reward_fn.args.model_name (seed 4)") && stderr.contains("nowhere/seed_4"), "{stderr}");
}
