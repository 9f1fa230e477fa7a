//! The roll-in family (`ppo_pp`, `aggrevated`, `lols`, `d2lols`) through the real CLI on
//! the embedded synthetic task (tiny GPT-2, CPU, seeded).

mod common;
use common::*;
use std::path::Path;

fn weights(dir: &Path, iteration: usize, model: &str) -> Vec<u8> {
    let file = dir.join(format!("checkpoints/iter_{iteration}/{model}/model.safetensors"));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Two iterations of each algorithm: finite losses, the policy's parameters change from
/// one checkpoint to the next, the run directory is complete, and each iteration's mode
/// is the one its schedule gives.
#[test]
fn each_rollin_algorithm_trains_and_fills_the_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // (alg, extra override, expected `mode_aggrevate` per iteration, has a guide critic)
    let cases: [(&str, &str, Option<[f64; 2]>, bool); 4] = [
        ("ppo_pp", "alg.args.n_epochs=2", Some([0.0, 0.0]), false),
        ("aggrevated", "alg.args.n_epochs=2", Some([1.0, 1.0]), false),
        ("lols", "alg.args.tau=0.5", None, true),
        ("d2lols", "alg.args.tau=1", Some([1.0, 0.0]), true),
    ];
    for (alg, extra, modes, guide_critic) in cases {
        let (dir, arg) = run_dir(&tmp, alg);
        let a = format!("alg={alg}");
        let (code, stderr) = tril(&[
            "task=synthetic",
            &a,
            &arg,
            extra,
            "alg.args.n_iters=2",
            "alg.args.eval_every=2",
            "alg.args.save_every=1",
            "alg.args.eval_zero_shot=false",
        ]);
        assert_eq!(code, 0, "{alg}: {stderr}");
        let rollouts = dir.join("rollout_info.jsonl");
        let mode = jsonl(&rollouts, "rollout_buffer/mode_aggrevate");
        if let Some(want) = modes {
            assert_eq!(mode, want, "{alg}");
        }
        assert!(jsonl(&rollouts, "rollout_buffer/rollin_lengths").iter().all(|k| k.is_finite() && *k >= 0.0));
        for key in ["ppo/loss", "ppo/policy_gradient_loss", "ppo/value_loss"] {
            let v = jsonl(&dir.join("training_info.jsonl"), key);
            assert!(v.len() == 2 && v.iter().all(|x| x.is_finite()), "{alg} {key}: {v:?}");
        }
        assert!(weights(&dir, 1, "policy") != weights(&dir, 2, "policy"), "{alg}: the policy did not change");
        let mut files = vec!["config.resolved.yaml", "log.txt", "val_split_metrics.jsonl", "plots/curves.png"];
        files.extend(["checkpoints/iter_2/critic/model.safetensors", "checkpoints/iter_2/trainer_state.json"]);
        if guide_critic {
            files.push("checkpoints/iter_2/guide_critic/model.safetensors");
        }
        for file in files {
            assert!(dir.join(file).is_file(), "{alg}: missing {file}");
        }
        let state = std::fs::read_to_string(dir.join("checkpoints/iter_2/trainer_state.json")).unwrap();
        assert!(state.contains(&format!("\"algorithm\": \"{alg}\"")), "{state}");
        if alg == "d2lols" {
            // Iteration 1 trains the guide critic (AggreVaTeD), iteration 2 the policy's critic (PPO++).
            let t = lines(&dir.join("training_info.jsonl"));
            assert!(t[0]["ppo/guide_critic_grad_norm"].as_f64().unwrap() > 0.0, "{}", t[0]);
            assert!(t[1].get("ppo/guide_critic_grad_norm").is_none(), "{}", t[1]);
            assert!(weights(&dir, 1, "guide_critic") == weights(&dir, 2, "guide_critic"));
        }
    }
}

/// The guide really generates (TRIL's guide generation samples the current policy): with
/// `beta = 0` AggreVaTeD's trajectories are the guide's alone, so a behaviour-cloned greedy
/// guide scores 1.0 on `increasing_numbers` while the untrained policy's own rollouts
/// score about 0.27 (measured: 0.277, 0.250).
#[test]
fn a_trained_guide_rolls_out_its_own_continuations() {
    let tmp = tempfile::tempdir().unwrap();
    let (bc, arg) = run_dir(&tmp, "bc");
    let (code, stderr) = tril(&["task=synthetic", "alg=bc", &arg, "alg.args.eval_zero_shot=false"]);
    assert_eq!(code, 0, "{stderr}");
    let guide = std::fs::read_dir(bc.join("checkpoints")).unwrap().next().unwrap().unwrap().path().join("policy");
    let common = ["task=synthetic", "alg.args.n_iters=1", "alg.args.eval_zero_shot=false"];
    let (plain, arg) = run_dir(&tmp, "ppo");
    let (code, stderr) = tril(&[&common[..], &["alg=ppo", &arg]].concat());
    assert_eq!(code, 0, "{stderr}");
    let (guided, arg) = run_dir(&tmp, "aggrevated");
    let g = format!("alg.policy.args.guide_model_name={}", guide.display());
    let (code, stderr) = tril(
        &[
            &common[..],
            &[
                "alg=aggrevated",
                &arg,
                &g,
                "alg.policy.args.beta=0.0",
                "alg.policy.args.guide_gen_kwargs.do_sample=false",
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{stderr}");
    let reward = |dir: &Path| jsonl(&dir.join("rollout_info.jsonl"), "rollout_buffer/rewards")[0];
    assert!(reward(&guided) > 0.95, "guided {}", reward(&guided));
    assert!(reward(&plain) < 0.6, "plain {}", reward(&plain));
    // With no roll-in prefix the policy generated nothing it could learn from.
    assert_eq!(jsonl(&guided.join("rollout_info.jsonl"), "rollout_buffer/learner_tokens"), vec![0.0]);
}

#[test]
fn killed_and_resumed_lols_matches_an_uninterrupted_one() {
    let args = [
        "task=synthetic",
        "alg=lols",
        "alg.args.tau=0.5",
        "alg.args.n_iters=6",
        "alg.args.eval_every=2",
        "alg.args.eval_zero_shot=false",
        "alg.args.save_every=2",
    ];
    assert_kill_and_resume_matches(&args, 6, 6 + 6 + 3);
}

#[test]
fn bad_rollin_configs_are_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, arg) = run_dir(&tmp, "bad");
    let cases: [(&[&str], &str); 7] = [
        (&["alg=ppo_pp", "alg.policy.id=actor_critic"], "alg.policy.args.alg_type: unknown key"),
        (&["alg=lols", "alg.policy.args.create_guide_critic=false"], "alg.policy.args.create_guide_critic"),
        (&["alg=ppo_pp", "alg.policy.args.alg_type=lols"], "alg.policy.args.alg_type: `lols` does not match"),
        (&["alg=aggrevated", "alg.policy.args.beta=1.5"], "alg.policy.args.beta"),
        (&["alg=lols", "alg.args.tau=2.0"], "alg.args.tau"),
        (&["alg=d2lols", "+alg.args.tauu=3"], "alg.args.tauu: unknown key"),
        (&["alg=ppo_pp", "alg.policy.args.guide_model_name=/nonexistent/guide"], "guide_model_name"),
    ];
    for (args, want) in cases {
        let (code, stderr) = tril(&[&["task=synthetic", &arg, "alg.args.n_iters=1"], args].concat());
        assert_ne!(code, 0, "{args:?} should fail");
        assert!(stderr.contains(want), "{args:?}: expected `{want}` in: {stderr}");
    }
    let (code, stderr) = tril(&["task=synthetic", "alg=ppo", &arg, "alg.policy.id=multi_actor_critic"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("alg.policy.args.guide_model_name") || stderr.contains("multi_actor_critic"), "{stderr}");
}

/// TRIL's IMDB x LOLS config, shrunk: the shared IMDB CSV, the tiny transformers-made GPT-2
/// as policy, guide (= the reference, the names match as in TRIL) and tokenizer, the tiny
/// DistilBERT as reward. Both modes run (tau 0.5 over 4 iterations: seeded, checked).
#[test]
fn imdb_lols_wiring_with_tiny_models() {
    let Some(data) = imdb_data() else { return };
    let (gpt2, distilbert) = (fixture("gpt2"), fixture("distilbert"));
    let tmp = tempfile::tempdir().unwrap();
    let (dir, arg) = run_dir(&tmp, "imdb");
    let mut owned = imdb_tiny_args(&data);
    owned.push(format!("alg.policy.args.guide_model_name={}", gpt2.display()));
    owned.push(format!(
        "eval_metrics=[{{id: learned_reward, args: {{model_name: {}, label_ix: 1}}}}]",
        distilbert.display()
    ));
    let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
    args.extend([
        "alg=lols",
        &arg,
        "alg.args.n_iters=4",
        "alg.args.tau=0.5",
        "alg.args.n_epochs=1",
        "alg.args.trajectories_per_update=8",
        "alg.args.batch_size=4",
        "alg.args.eval_zero_shot=false",
        "alg.policy.args.guide_gen_kwargs.min_length=8",
        "alg.policy.args.guide_gen_kwargs.max_new_tokens=8",
        "alg.args.eval_every=4",
    ]);
    let (code, stderr) = tril(&args);
    assert_eq!(code, 0, "{stderr}");
    let rollouts = dir.join("rollout_info.jsonl");
    let rewards = jsonl(&rollouts, "rollout_buffer/rewards");
    assert!(rewards.len() == 4 && rewards.iter().all(|r| (0.0..=1.0).contains(r)), "{rewards:?}");
    let modes = jsonl(&rollouts, "rollout_buffer/mode_aggrevate");
    assert!(modes.contains(&0.0) && modes.contains(&1.0), "both modes in 4 seeded iterations: {modes:?}");
    for file in ["checkpoints/iter_4/guide_critic/model.safetensors", "epoch_4_val_split_predictions.json"] {
        assert!(dir.join(file).is_file(), "missing {file}");
    }
}
