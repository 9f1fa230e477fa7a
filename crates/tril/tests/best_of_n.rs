/// A PPO run's checkpoint as `--policy`, composed from the run's own `config.resolved.yaml`
/// (`--config`): the override is recorded in the output's resolved config.
#[test]
fn policy_from_a_ppo_checkpoint_and_its_resolved_config() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, arg) = common::run_dir(&tmp, "ppo");
    let (code, stderr) =
        common::tril(&["task=synthetic", "alg=ppo", &arg, "alg.args.n_iters=1", "alg.args.save_every=1"]);
    assert_eq!(code, 0, "{stderr}");
    let policy = run.join("checkpoints/iter_1/policy");
    assert!(policy.join("model.safetensors").is_file());
    let (dir, out) = out_dir(&tmp, "bon");
    let output = Command::new(env!("CARGO_BIN_EXE_tril"))
        .args(["--quiet", "best-of-n", "--config"])
        .arg(run.join("config.resolved.yaml"))
        .arg("--policy")
        .arg(&policy)
        .args(["--n", "3", "--max-prompts", "2", "--out", &out])
        .env_remove("TRIL_LOG")
        .output()
        .expect("run tril");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(lines(&dir.join("best_of_n.jsonl")).len(), 3);
    let resolved = std::fs::read_to_string(dir.join("config.resolved.yaml")).unwrap();
    assert!(resolved.contains(&format!("model_name: {}", policy.display())), "{resolved}");
}
