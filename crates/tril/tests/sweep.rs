//! `tril sweep` through the real binary: a 2x2 grid of tiny DPO runs two at a time, a
//! failing sub-experiment recorded while the others finish, a re-run that skips the done
//! ones and retries the failed one, a root holding another sweep refused, and `--plan`.

mod common;
use std::path::{Path, PathBuf};
use tril_core::config::{parse_yaml, Value};

/// `tril --quiet sweep --config-dir <repo cfgs> ARGS...` in `cwd`: exit code, stdout, stderr.
fn sweep(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    common::tril_command("sweep", true, Some(cwd), args)
}

/// A DPO run of a few seconds: 32 pairs, one epoch of 4 steps, no evaluation.
const TINY: &[&str] = &[
    "task=synthetic_preference",
    "alg=dpo",
    "task.args.n_train=32",
    "task.args.n_val=8",
    "task.args.n_test=8",
    "alg.args.epochs=1",
    "alg.args.batch_size=8",
    "alg.args.grad_accumulation=1",
    "alg.args.eval_every=0",
    "alg.args.eval_zero_shot=false",
];

fn index(root: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(root.join("sweep.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn float_at(file: &Path, key: &str) -> f64 {
    let node = parse_yaml(&std::fs::read_to_string(file).unwrap(), file).unwrap();
    match node.get(key).map(|n| &n.value) {
        Some(Value::Float(x)) => *x,
        Some(Value::Int(i)) => *i as f64,
        other => panic!("{key} in {}: {other:?}", file.display()),
    }
}

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    TINY.iter().copied().chain(extra.iter().copied()).collect()
}

#[test]
fn sweep_runs_a_two_by_two_grid_two_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("grid");
    let root_arg = root.to_str().unwrap();
    let (code, stdout, stderr) = sweep(
        tmp.path(),
        &args(&["alg.optimizer.args.lr=1e-3,1e-4", "alg.args.beta=0.1,0.2", "--jobs", "2", "--root", root_arg]),
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("4 of 4 done"), "{stdout}");
    let index = index(&root);
    let runs = index["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    let expected = [(1e-3, 0.1), (1e-3, 0.2), (1e-4, 0.1), (1e-4, 0.2)];
    for (run, (lr, beta)) in runs.iter().zip(expected) {
        assert_eq!(run["status"], "done", "{run}");
        assert_eq!(run["exit_code"], 0);
        assert_eq!(run["attempts"], 1);
        assert_eq!(run["varying"][0][0], "alg.optimizer.args.lr");
        let dir = PathBuf::from(run["run_dir"].as_str().unwrap());
        assert!(dir.starts_with(&root), "{}", dir.display());
        let config = dir.join("config.resolved.yaml");
        assert!((float_at(&config, "alg.optimizer.args.lr") - lr).abs() < 1e-12);
        assert!((float_at(&config, "alg.args.beta") - beta).abs() < 1e-12);
        assert!(dir.join("training_info.jsonl").is_file() && dir.join("log.txt").is_file());
        assert!(root.join(format!("{}.log", run["name"].as_str().unwrap())).is_file());
    }
    assert_eq!(runs[0]["name"], "lr=1e-3_beta=0.1");
    // Two at a time: the second started before the first ended (RFC 3339 with ms, one zone).
    let time = |i: usize, key: &str| runs[i][key].as_str().unwrap().to_string();
    assert!(time(1, "started") < time(0, "ended"), "{runs:?}");
    // Nothing was written outside the root.
    let entries: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries, ["grid"]);
}

#[test]
fn sweep_records_a_failure_finishes_the_rest_and_retries_only_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("grid");
    let root_arg = root.to_str().unwrap();
    // `bogus` is no DPO loss: that child exits 2 (config error).
    let sweep_args = args(&["alg.args.loss_type=sigmoid,bogus,ipo", "--jobs", "2", "--root", root_arg]);
    let (code, stdout, stderr) = sweep(tmp.path(), &sweep_args);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("1 of 3 sub-experiments failed"), "{stderr}");
    let first = index(&root);
    let status: Vec<&str> = first["runs"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(status, ["done", "failed", "done"]);
    assert_eq!(first["runs"][1]["exit_code"], 2);
    let failed_log = root.join("loss_type=bogus.log");
    assert!(std::fs::read_to_string(&failed_log).unwrap().contains("bogus"));
    let done_config = root.join("loss_type=sigmoid/config.resolved.yaml");
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = (mtime(&done_config), mtime(&root.join("loss_type=ipo/training_info.jsonl")));

    let (code, stdout, stderr) = sweep(tmp.path(), &sweep_args);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("1 to run, 2 done already skipped"), "{stdout}");
    let second = index(&root);
    let attempts: Vec<u64> =
        second["runs"].as_array().unwrap().iter().map(|r| r["attempts"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [1, 2, 1]);
    assert_eq!(second["runs"][0]["started"], first["runs"][0]["started"]);
    let after = (mtime(&done_config), mtime(&root.join("loss_type=ipo/training_info.jsonl")));
    assert_eq!(before, after, "a done sub-run was run again");
    let log = std::fs::read_to_string(&failed_log).unwrap();
    assert!(log.contains("=== attempt 1") && log.contains("=== attempt 2"), "{log}");

    // Another grid in the same root is refused before anything runs.
    let other = args(&["alg.args.loss_type=sigmoid,ipo", "--root", root_arg]);
    let (code, _, stderr) = sweep(tmp.path(), &other);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("holds a different sweep"), "{stderr}");
    assert_eq!(index(&root)["runs"].as_array().unwrap().len(), 3);
}

#[test]
fn sweep_plan_prints_and_checks_the_grid_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("grid.yaml");
    std::fs::write(&file, "alg.args.beta: [0.1, 0.2]\n").unwrap();
    let root = tmp.path().join("never");
    let (code, stdout, stderr) = sweep(
        tmp.path(),
        &[
            "alg=dpo,kto",
            "task=synthetic_preference",
            "alg.optimizer.args.lr=5e-6,1e-5,1e-6",
            "--sweep-file",
            file.to_str().unwrap(),
            "--plan",
            "--root",
            root.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 13, "{stdout}");
    assert!(lines[0].contains("alg=dpo alg.optimizer.args.lr=5e-6 alg.args.beta=0.1"), "{stdout}");
    assert!(lines[11].trim_start().starts_with("11") && lines[11].contains("alg=kto"), "{stdout}");
    assert_eq!(lines[12], "12 sub-experiments (varying: alg, alg.optimizer.args.lr, alg.args.beta)");
    // Nothing written: the temp dir holds only the sweep file; no outputs/ either.
    let entries: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries, ["grid.yaml"]);

    // An invalid sub-experiment is named by its index; exit 2.
    let (code, stdout, stderr) = sweep(tmp.path(), &args(&["alg.args.loss_type=sigmoid,bogus", "--plan"]));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("sub-experiment 1 (loss_type=bogus)"), "{stderr}");
    assert!(stderr.contains("1 of 2 sub-experiments have an invalid config"), "{stderr}");

    // A sweep file entry that is not a list names the key and the file.
    std::fs::write(&file, "alg.args.beta: 0.1\n").unwrap();
    let (code, _, stderr) = sweep(tmp.path(), &["--sweep-file", file.to_str().unwrap(), "--plan"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("alg.args.beta") && stderr.contains("grid.yaml"), "{stderr}");
}

/// A sweep interrupted mid-way leaves sub-experiments `running`: the next run of the sweep
/// resumes one whose directory holds its config and a checkpoint (`tril run --resume`, the
/// directory kept) and starts one without a checkpoint afresh (its partial directory removed).
#[test]
fn sweep_resumes_interrupted_runs_or_restarts_partial_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("grid");
    let root_arg = root.to_str().unwrap();
    let sweep_args = args(&["alg.args.beta=0.1,0.2", "--root", root_arg]);
    let (code, stdout, stderr) = sweep(tmp.path(), &sweep_args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // As if the sweep had been killed while both ran: #1 before its first checkpoint.
    let mut json = index(&root);
    for run in json["runs"].as_array_mut().unwrap() {
        run["status"] = "running".into();
        run["exit_code"] = serde_json::Value::Null;
    }
    std::fs::write(root.join("sweep.json"), serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let partial = root.join("beta=0.2");
    std::fs::remove_dir_all(partial.join("checkpoints")).unwrap();
    std::fs::write(partial.join("stale.txt"), "left by the killed run").unwrap();
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let kept = mtime(&root.join("beta=0.1/config.resolved.yaml"));

    let (code, stdout, stderr) = sweep(tmp.path(), &sweep_args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let after = index(&root);
    for run in after["runs"].as_array().unwrap() {
        assert_eq!((run["status"].as_str(), run["attempts"].as_u64()), (Some("done"), Some(2)), "{run}");
    }
    let resumed = std::fs::read_to_string(root.join("beta=0.1.log")).unwrap();
    let attempt2 = resumed.split("=== attempt 2").nth(1).unwrap();
    assert!(attempt2.contains("run --resume") && attempt2.contains("beta=0.1"), "{resumed}");
    assert_eq!(mtime(&root.join("beta=0.1/config.resolved.yaml")), kept, "the resumed run was restarted");
    let restarted = std::fs::read_to_string(root.join("beta=0.2.log")).unwrap();
    assert!(!restarted.contains("--resume"), "{restarted}");
    assert!(!partial.join("stale.txt").exists(), "the partial directory was not removed");
    assert!(partial.join("checkpoints").is_dir() && partial.join("config.resolved.yaml").is_file());
}
