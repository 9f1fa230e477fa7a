//! GAIL through the real CLI on the embedded synthetic task (tiny GPT-2 policy and
//! discriminator, CPU, seeded).

mod common;
use common::*;

/// Two iterations with a checkpoint after each: the run finishes, every loss is finite,
/// the discriminator's keys and the task's reward are logged, the rollout reward is the
/// discriminator's, the policy and the discriminator change between the checkpoints,
/// and the checkpoints hold the discriminator's state.
#[test]
fn gail_runs_logs_the_discriminator_and_checkpoints_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, arg) = run_dir(&tmp, "run");
    let (code, stderr) = tril(&[
        "task=synthetic",
        "alg=gail",
        &arg,
        "alg.args.n_iters=2",
        "alg.args.eval_every=2",
        "alg.args.save_every=1",
        "alg.args.discrim_batch_size=8",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let rollout = dir.join("rollout_info.jsonl");
    for key in [
        "discriminator/loss",
        "discriminator/accuracy",
        "discriminator/accuracy_after",
        "discriminator/expert_score",
        "discriminator/policy_score",
        "discriminator/grad_norm",
    ] {
        let values = jsonl(&rollout, key);
        assert_eq!(values.len(), 2, "{key}");
        assert!(values.iter().all(|v| v.is_finite()), "{key}: {values:?}");
    }
    // The section's reward_fn replaced the task's: no task reward is computed in training.
    assert!(lines(&rollout).iter().all(|l| l.get("rollout_buffer/task_rewards").is_none()));
    let scores = jsonl(&rollout, "discriminator/policy_score");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
    let rewards = jsonl(&rollout, "rollout_buffer/rewards");
    assert_eq!(rewards, scores, "the terminal reward is the discriminator's");
    let training = dir.join("training_info.jsonl");
    for key in ["ppo/loss", "ppo/policy_gradient_loss", "ppo/value_loss"] {
        let values = jsonl(&training, key);
        assert!(values.len() == 2 && values.iter().all(|v| v.is_finite()), "{key}: {values:?}");
    }
    assert!(jsonl(&training, "ppo/grad_norm").iter().all(|g| *g > 0.0));
    let read = |rel: &str| std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let policy = "policy/model.safetensors";
    let discriminator = "reward_hook/discriminator/model.safetensors";
    for file in [policy, discriminator, "reward_hook/model.bin", "reward_hook/optimizer.bin", "trainer_state.json"] {
        for n in [1, 2] {
            assert!(dir.join(format!("checkpoints/iter_{n}/{file}")).is_file(), "missing iter_{n}/{file}");
        }
    }
    for file in [policy, discriminator] {
        assert!(
            read(&format!("checkpoints/iter_1/{file}")) != read(&format!("checkpoints/iter_2/{file}")),
            "{file} did not change in iteration 2"
        );
    }
    for file in ["config.resolved.yaml", "log.txt", "val_split_metrics.jsonl", "epoch_2_val_split_predictions.json"] {
        assert!(dir.join(file).is_file(), "missing {file}");
    }
}

/// Kill after the iteration-2 checkpoint and `--resume`: the discriminator and its
/// optimizer come back exactly, so every logged number and the final weights equal an
/// uninterrupted run's.
#[test]
fn killed_and_resumed_gail_run_matches_an_uninterrupted_one() {
    let args = [
        "task=synthetic",
        "alg=gail",
        "alg.args.n_iters=8",
        "alg.args.eval_every=2",
        "alg.args.eval_zero_shot=false",
        "alg.args.save_checkpoints=true",
        "alg.args.save_every=2",
    ];
    assert_kill_and_resume_matches(&args, 8, 8 + 8 + 4);
}

/// Bad discriminator settings are refused before training, naming the key.
#[test]
fn bad_gail_configs_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, (over, want)) in [
        ("reward_fn.args.is_trainable=false", "reward_fn.args.is_trainable"),
        ("alg.args.discrim_epochs=0", "alg.args.discrim_epochs"),
        ("alg.args.discrim_batch_size=0", "alg.args.discrim_batch_size"),
        ("reward_fn.args.label_ix=2", "reward_fn.args.label_ix"),
        ("+alg.args.discrim_epoch=2", "discrim_epoch"),
        ("+reward_fn.args.lr=0.1", "reward_fn.args.lr"),
    ]
    .into_iter()
    .enumerate()
    {
        let (dir, arg) = run_dir(&tmp, &format!("bad{i}"));
        let (code, stderr) = tril(&["task=synthetic", "alg=gail", &arg, over]);
        assert_eq!(code, 2, "{over}: {stderr}");
        assert!(stderr.contains(want), "{over}: expected `{want}` in {stderr}");
        assert!(!dir.join("rollout_info.jsonl").exists(), "{over}: nothing was trained");
    }
}
