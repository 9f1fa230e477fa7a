//! `tril best-of-n` through the real CLI on the embedded synthetic task (random-init tiny
//! GPT-2, CPU, seeded): the curve's invariants recomputed from its own samples, and the
//! config errors.

mod common;
use common::lines;
use std::path::PathBuf;
use std::process::Command;

/// `tril --quiet best-of-n --config-dir <repo cfgs> ARGS...`: exit code, stdout, stderr.
fn best_of_n(args: &[&str]) -> (i32, String, String) {
    common::tril_command("best-of-n", true, None, args)
}

/// The gold differs from the proxy: the same reward with a larger length floor.
const GOLD: &str = "gold_reward_fn={id: increasing_numbers, args: {min_tokens: 8}}";

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|x| x.as_f64().unwrap()).collect()
}

fn out_dir(tmp: &tempfile::TempDir, name: &str) -> (PathBuf, String) {
    let dir = tmp.path().join(name);
    let s = dir.to_str().unwrap().to_string();
    (dir, s)
}

/// N = 8 on 4 val prompts, proxy `increasing_numbers` (min_tokens 4), gold with min_tokens 8.
#[test]
fn curve_matches_its_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, out) = out_dir(&tmp, "bon");
    let args = ["task=synthetic", "alg=ppo", GOLD, "--n", "8", "--max-prompts", "4", "--seed", "1", "--out", &out];
    let (code, stdout, stderr) = best_of_n(&args);
    assert_eq!(code, 0, "{stderr}");

    // samples.jsonl: 4 prompts x 8 completions, scored by both rewards
    let samples = lines(&dir.join("samples.jsonl"));
    assert_eq!(samples.len(), 4);
    let (mut proxy, mut gold) = (Vec::new(), Vec::new());
    for s in &samples {
        assert_eq!(s["completions"].as_array().unwrap().len(), 8, "{s}");
        let (p, g) = (floats(&s["proxy"]), floats(&s["gold"]));
        assert_eq!((p.len(), g.len()), (8, 8));
        // a larger length floor never scores higher
        assert!(p.iter().zip(&g).all(|(p, g)| g <= p), "{s}");
        proxy.push(p);
        gold.push(g);
    }
    let all_proxy: Vec<f64> = proxy.iter().flatten().copied().collect();
    let distinct: std::collections::BTreeSet<u64> = all_proxy.iter().map(|x| x.to_bits()).collect();
    assert!(distinct.len() > 1, "a random policy's samples should not all score alike: {all_proxy:?}");

    // best_of_n.jsonl: one line per n
    let curve = lines(&dir.join("best_of_n.jsonl"));
    assert_eq!(curve.len(), 8);
    let proxy_mean: Vec<f64> = curve.iter().map(|l| l["proxy_mean"].as_f64().unwrap()).collect();
    for (i, l) in curve.iter().enumerate() {
        let n = i + 1;
        assert_eq!(l["n"].as_u64(), Some(n as u64));
        let kl = (n as f64).ln() - (n as f64 - 1.0) / n as f64;
        assert!((l["kl_bon"].as_f64().unwrap() - kl).abs() < 1e-12, "{l}");
        assert!(l["gold_mean"].as_f64().is_some() && l["gold_sem"].as_f64().is_some(), "{l}");
        assert!(l["proxy_sem"].as_f64().unwrap() >= 0.0, "{l}");
    }
    // the expected maximum of more draws is never smaller
    assert!(proxy_mean.windows(2).all(|w| w[1] >= w[0] - 1e-12), "{proxy_mean:?}");
    // n = 1 is the plain mean of every sample; n = N the mean over prompts of the proxy maximum
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    assert!((proxy_mean[0] - mean(&all_proxy)).abs() < 1e-12, "{} vs {}", proxy_mean[0], mean(&all_proxy));
    let all_gold: Vec<f64> = gold.iter().flatten().copied().collect();
    assert!((curve[0]["gold_mean"].as_f64().unwrap() - mean(&all_gold)).abs() < 1e-12);
    let best: Vec<f64> = proxy.iter().map(|p| p.iter().copied().fold(f64::NEG_INFINITY, f64::max)).collect();
    assert!((proxy_mean[7] - mean(&best)).abs() < 1e-12, "{} vs {}", proxy_mean[7], mean(&best));

    // the plot, the resolved config, the table (a header and one row per n)
    let png = std::fs::read(dir.join("plots/best_of_n.png")).unwrap();
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG"), "{} bytes", png.len());
    let resolved = std::fs::read_to_string(dir.join("config.resolved.yaml")).unwrap();
    assert!(resolved.contains("min_tokens: 8"), "the gold is in the resolved config");
    let table: Vec<&str> = stdout.lines().collect();
    assert_eq!(table.len(), 9, "{stdout}");
    assert!(table[0].contains("KL_bon") && table[0].contains("gold"), "{stdout}");
}

/// Without a gold reward only the proxy columns are written; a seed repeats the samples.
#[test]
fn proxy_only_and_seeded() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let (dir, out) = out_dir(&tmp, name);
        let args = ["--n", "4", "--max-prompts", "3", "--split", "test", "--seed", "5", "--out", &out];
        let (code, stdout, stderr) = best_of_n(&args);
        assert_eq!(code, 0, "{stderr}");
        assert!(!stdout.contains("gold"), "{stdout}");
        (lines(&dir.join("samples.jsonl")), lines(&dir.join("best_of_n.jsonl")))
    };
    let (samples, curve) = run("a");
    assert_eq!((samples.len(), curve.len()), (3, 4));
    assert!(curve.iter().all(|l| l.get("gold_mean").is_none() && l.get("gold_sem").is_none()), "{curve:?}");
    assert!(samples.iter().all(|s| s.get("gold").is_none()));
    let (again, _) = run("b");
    assert_eq!(samples, again, "the same seed gives the same completions and scores");
}

#[test]
fn config_errors_exit_2_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, out) = out_dir(&tmp, "never");
    let cases: [(&[&str], &str); 6] = [
        (&["--n", "0"], "--n"),
        (&["sampling.train_generation_kwargs.do_sample=false"], "alg.policy.args.gen_kwargs.do_sample"),
        (&["gold_reward_fn={id: no_such_reward}"], "gold_reward_fn.id"),
        (&["reward_fn.id=no_such_reward"], "reward_fn.id"),
        (&["reward_fn=null"], "reward_fn"),
        (&["task.args.n_test=0", "--split", "test"], "--split test"),
    ];
    for (args, key) in cases {
        let all = [args, &["--n", "2", "--max-prompts", "2", "--out", &out]].concat();
        // `--n 0` must win over the default `--n 2` appended after it
        let all = if args.contains(&"--n") { [args, &["--out", &out]].concat() } else { all };
        let (code, _, stderr) = best_of_n(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?}: expected `{key}` in: {stderr}");
    }
    assert!(!dir.exists(), "a config error writes nothing");
}

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
