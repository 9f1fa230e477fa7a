//! End-to-end tests of the `tril` command line: composition goldens for every shipped
//! task x alg pair, precedence through the environment, errors and exit codes.
//! Regenerate goldens with `UPDATE_GOLDENS=1 cargo test -p tril --test cli`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cfgs() -> PathBuf {
    repo().join("cfgs")
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn tril_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tril"));
    cmd.current_dir(dir).args(args).env_remove("TRIL_CONFIG_DIR").env_remove("TRIL_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tril");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `tril <cmd> --config-dir cfgs <rest>` from the repository root.
fn tril(cmd: &str, rest: &[&str], env: &[(&str, &str)]) -> Out {
    let dir = cfgs();
    let mut args = vec![cmd, "--config-dir", dir.to_str().unwrap()];
    args.extend_from_slice(rest);
    tril_in(&repo(), &args, env)
}

fn options(group: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(cfgs().join(group))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".yaml").map(str::to_string))
        .collect();
    out.sort();
    out
}

#[test]
fn golden_resolved_config_for_every_task_alg_pair() {
    let bless = std::env::var_os("UPDATE_GOLDENS").is_some();
    let root = tril_core::config::anchored("../..", &cfgs()).unwrap();
    let mut checked = 0;
    for task in options("task") {
        for alg in options("alg") {
            let alg_text = std::fs::read_to_string(cfgs().join(format!("alg/{alg}.yaml"))).unwrap();
            let has_section = alg_text.lines().any(|l| l == format!("{task}:"));
            let (t, a) = (format!("task={task}"), format!("alg={alg}"));
            let out = tril("config", &[&t, &a, "run_dir=outputs/golden"], &[]);
            if !has_section {
                assert_eq!(out.code, 2, "{task} x {alg} should be refused: {}", out.stderr);
                // Either no section at all, or only one inherited from ppo.yaml (with ppo's id);
                // both name the alg file to edit.
                let own = format!("has no `{task}` section of its own");
                let missing = format!("has no section for task `{task}`");
                assert!(out.stderr.contains(&missing) || out.stderr.contains(&own), "{}", out.stderr);
                assert!(out.stderr.contains(&format!("alg/{alg}.yaml")), "{}", out.stderr);
                continue;
            }
            // Exit 0 means every section deserialized and every value is in its range and
            // finite; no warning (e.g. an unregistered id) either.
            assert_eq!(out.code, 0, "{task} x {alg}: {}", out.stderr);
            assert!(out.stderr.is_empty(), "{task} x {alg}: {}", out.stderr);
            assert!(!out.stdout.contains("${"), "unresolved interpolation in {task} x {alg}");
            let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{task}__{alg}.yaml"));
            // `../` paths of the cfgs are made absolute against the checkout's root (the
            // directory holding cfgs/); the goldens spell that root `<root>`.
            let stdout = if root.len() > 1 { out.stdout.replace(&root, "<root>") } else { out.stdout.clone() };
            if bless {
                std::fs::write(&golden, &stdout).unwrap();
            }
            let expected = std::fs::read_to_string(&golden)
                .unwrap_or_else(|_| panic!("missing golden {}; run with UPDATE_GOLDENS=1", golden.display()));
            assert_eq!(stdout, expected, "{task} x {alg} differs from {}", golden.display());
            checked += 1;
        }
    }
    assert!(checked >= 2, "expected goldens for imdb x ppo and synthetic x ppo");
}

#[test]
fn max_gen_len_override_reaches_every_interpolation() {
    let out = tril("config", &["task=imdb", "alg=ppo", "sampling.max_gen_len=20", "alg.args.n_iters=7"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let y = &out.stdout;
    assert!(y.contains("  max_gen_len: 20\n"), "sampling: {y}");
    assert!(y.contains("    max_gen_len: 20\n"), "alg.args: {y}");
    assert!(y.contains("      max_gen_len: 20\n"), "alg.policy.args: {y}");
    assert!(!y.contains("max_gen_len: 48"), "{y}");
    assert!(y.contains("    n_iters: 7\n"), "{y}");
}

#[test]
fn environment_sits_between_files_and_command_line() {
    let env = [("TRIL_ALG__ARGS__N_ITERS", "3")];
    let out = tril("config", &["task=imdb", "alg=ppo", "--provenance"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("alg.args.n_iters: 3  # environment variable TRIL_ALG__ARGS__N_ITERS"),
        "{}",
        out.stdout
    );
    let out = tril("config", &["task=imdb", "alg=ppo", "alg.args.n_iters=7", "--provenance"], &env);
    assert!(out.stdout.contains("alg.args.n_iters: 7  # command line `alg.args.n_iters=7`"), "{}", out.stdout);
}

#[test]
fn provenance_names_files_and_lines() {
    let out = tril("config", &["task=imdb", "alg=ppo", "--provenance"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("task.id: imdb  # ") && out.stdout.contains("task/imdb.yaml:4"), "{}", out.stdout);
    assert!(out.stdout.contains("alg.optimizer.args.lr: 1e-5  # "), "{}", out.stdout);
}

#[test]
fn wrong_type_names_key_value_and_source() {
    let out = tril("config", &["task=imdb", "alg=ppo", "sampling.max_gen_len=abc"], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("sampling.max_gen_len: expected"), "{}", out.stderr);
    assert!(out.stderr.contains("found \"abc\" (command line `sampling.max_gen_len=abc`)"), "{}", out.stderr);
}

#[test]
fn unknown_key_in_yaml_names_key_and_file_line() {
    let dir = tempfile::tempdir().unwrap();
    for group in ["", "task", "alg", "logging"] {
        std::fs::create_dir_all(dir.path().join(group)).unwrap();
    }
    for rel in ["config.yaml", "alg/ppo.yaml", "logging/default.yaml", "logging/wandb.yaml", "task/synthetic.yaml"] {
        std::fs::copy(cfgs().join(rel), dir.path().join(rel)).unwrap();
    }
    let imdb = std::fs::read_to_string(cfgs().join("task/imdb.yaml")).unwrap();
    std::fs::write(
        dir.path().join("task/imdb.yaml"),
        imdb.replace("  context_padding_side: right", "  context_paddin_side: right"),
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let out = tril_in(&repo(), &["config", "--config-dir", d, "task=imdb", "alg=ppo"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("sampling.context_paddin_side: unknown key; did you mean `context_padding_side`?"),
        "{}",
        out.stderr
    );
    let line = imdb.lines().position(|l| l.contains("context_padding_side")).unwrap() + 1;
    assert!(out.stderr.contains(&format!("task/imdb.yaml:{line})")), "{}", out.stderr);
}

#[test]
fn unknown_key_on_command_line_is_refused() {
    let out = tril("config", &["task=imdb", "alg=ppo", "sampling.max_gen_lenn=3"], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("did you mean `max_gen_len`?"), "{}", out.stderr);
    let out = tril("config", &["task=imdb", "alg=ppo", "+sampling.max_gen_lenn=3"], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("sampling.max_gen_lenn: unknown key; did you mean `max_gen_len`?"), "{}", out.stderr);
    assert!(out.stderr.contains("(command line `+sampling.max_gen_lenn=3`)"), "{}", out.stderr);
}

#[test]
fn unknown_task_and_alg_ids() {
    let out = tril("config", &["task=imbd", "alg=ppo"], &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unknown task `imbd`") && out.stderr.contains("did you mean `imdb`?"),
        "{}",
        out.stderr
    );
    let out = tril("config", &["task=imdb", "alg=ppx"], &[]);
    assert_eq!(out.code, 2);
    // The known list grows with every alg file; it names ppo and suggests it.
    let known = out.stderr.split("known: ").nth(1).unwrap_or("");
    assert!(
        out.stderr.contains("unknown alg `ppx`") && known.contains("ppo") && known.contains("did you mean `ppo`?"),
        "{}",
        out.stderr
    );
    let out = tril("config", &["task=imdb"], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("choose a `alg`"), "{}", out.stderr);
}

#[test]
fn run_refuses_an_unregistered_algorithm_without_creating_a_run_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let run_dir = format!("run_dir={}", out_dir.display());
    let out = tril("run", &["task=imdb", "alg=ppo", &run_dir, "alg.id=nosuchalg"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("alg.id: unknown algorithm `nosuchalg`"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!out_dir.exists());
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert_eq!(tril_in(&repo(), &["frobnicate"], &[]).code, 2);
    let help = tril_in(&repo(), &["--help"], &[]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("tril run task=imdb alg=ppo"), "{}", help.stdout);
    let out = tril_in(&repo(), &["list", "rewards"], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("did you mean `reward_fn`?"), "{}", out.stderr);
}

#[test]
fn list_is_sorted_and_names_every_kind() {
    let out = tril_in(&repo(), &["list"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let kinds = ["task", "reward_fn", "metric", "algorithm", "policy", "kl_controller", "optimizer", "scheduler"];
    for kind in kinds {
        assert!(out.stdout.contains(&format!("{kind}:\n")), "{kind} missing: {}", out.stdout);
    }
    let mut ids: Vec<Vec<String>> = Vec::new();
    for line in out.stdout.lines() {
        if !line.starts_with(' ') {
            ids.push(Vec::new());
        } else if !line.contains("(none registered)") {
            ids.last_mut().unwrap().push(line.split_whitespace().next().unwrap().to_string());
        }
    }
    for group in ids {
        let mut sorted = group.clone();
        sorted.sort();
        assert_eq!(group, sorted);
    }
}

#[test]
fn resolved_file_round_trips_and_embedded_cfgs_work_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let out = tril_in(dir.path(), &["config", "task=imdb", "alg=ppo", "run_dir=x"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let file = dir.path().join("resolved.yaml");
    std::fs::write(&file, &out.stdout).unwrap();
    let again = tril_in(dir.path(), &["config", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout, out.stdout);
    let prov = tril_in(dir.path(), &["config", "task=imdb", "alg=ppo", "--provenance"], &[]);
    assert!(prov.stdout.contains("<embedded>/cfgs/task/imdb.yaml:4"), "{}", prov.stdout);
}

/// `device` and `precision` are checked when the config is: a value no backend has, or a
/// precision the backend cannot do, exits 2 naming the key; `tril list devices` and
/// `tril --version` say which backends the binary carries.
#[test]
fn device_and_precision_are_config_errors_and_devices_are_listed() {
    let bad_device = tril("config", &["task=synthetic", "alg=ppo", "device=tpu"], &[]);
    assert_eq!(bad_device.code, 2, "{}", bad_device.stderr);
    assert!(
        bad_device.stderr.contains("device: `tpu`: expected one of cpu, ndarray, flex, cuda"),
        "{}",
        bad_device.stderr
    );
    let bad_precision = tril("config", &["task=synthetic", "alg=ppo", "device=ndarray", "precision=bf16"], &[]);
    assert_eq!(bad_precision.code, 2, "{}", bad_precision.stderr);
    assert!(
        bad_precision.stderr.contains("precision: `bf16` is not supported by device `ndarray`"),
        "{}",
        bad_precision.stderr
    );
    let unknown_precision = tril("config", &["task=synthetic", "alg=ppo", "precision=fp8"], &[]);
    assert_eq!(unknown_precision.code, 2, "{}", unknown_precision.stderr);
    assert!(unknown_precision.stderr.contains("precision"), "{}", unknown_precision.stderr);
    let ok = tril("config", &["task=synthetic", "alg=ppo", "device=ndarray"], &[]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("device: ndarray") && ok.stdout.contains("precision: f32"), "{}", ok.stdout);

    let list = tril_in(&repo(), &["list", "devices"], &[]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let names: Vec<&str> = list.stdout.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, ["cpu", "cuda", "flex", "ndarray", "wgpu"], "{}", list.stdout);
    assert!(list.stdout.contains("ndarray  device=ndarray; precision=f32"), "{}", list.stdout);
    let version = tril_in(&repo(), &["--version"], &[]);
    assert_eq!(version.code, 0, "{}", version.stderr);
    assert!(version.stdout.contains("backends: ndarray (device=ndarray)"), "{}", version.stdout);
}

/// Value ranges are checked at config time: an out-of-range or non-finite value exits 2
/// naming the key, the value as written and where it came from, and `tril run` refuses it
/// before creating the run directory (issue 13: `alg.args.ent_coef=.inf` trained on NaN).
#[test]
fn out_of_range_values_exit_2_naming_key_value_and_command_line() {
    for (arg, want) in [
        ("alg.args.gamma=2", "alg.args.gamma: expected a number in [0, 1], found 2"),
        ("alg.args.ent_coef=.inf", "alg.args.ent_coef: expected a finite number, found .inf"),
        ("alg.optimizer.args.lr=0", "alg.optimizer.args.lr: expected a finite learning rate > 0, found 0"),
        ("sampling.max_gen_len=0", "sampling.max_gen_len: expected at least 1, found 0"),
    ] {
        let out = tril("config", &["task=synthetic", "alg=ppo", arg], &[]);
        assert_eq!(out.code, 2, "{arg}: {}", out.stderr);
        assert!(out.stderr.contains(&format!("{want} (command line `{arg}`)")), "{arg}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{arg}: {}", out.stdout);
    }
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let rd = format!("run_dir={}", run_dir.display());
    let out = tril("run", &["task=synthetic", "alg=ppo", "alg.args.ent_coef=.inf", &rd], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("alg.args.ent_coef: expected a finite number, found .inf"), "{}", out.stderr);
    assert!(!run_dir.exists(), "a refused config must not create its run directory");
    // In range, if large: lr=1e4 is left to the runtime NaN guards.
    let out = tril("config", &["task=synthetic", "alg=ppo", "alg.optimizer.args.lr=1e4"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A bad value in a config file names the file and line.
#[test]
fn out_of_range_value_in_a_file_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for group in ["", "task", "alg", "logging"] {
        std::fs::create_dir_all(dir.path().join(group)).unwrap();
    }
    for rel in ["config.yaml", "logging/default.yaml", "logging/wandb.yaml"] {
        std::fs::copy(cfgs().join(rel), dir.path().join(rel)).unwrap();
    }
    let task = std::fs::read_to_string(cfgs().join("task/synthetic.yaml")).unwrap();
    assert!(task.contains("    n_train: 512\n"));
    std::fs::write(dir.path().join("task/synthetic.yaml"), task.replace("    n_train: 512\n", "    n_train: 0\n"))
        .unwrap();
    let ppo = std::fs::read_to_string(cfgs().join("alg/ppo.yaml")).unwrap();
    let line = ppo.lines().position(|l| l == "    gamma: 1.0").unwrap() + 1;
    std::fs::write(dir.path().join("alg/ppo.yaml"), ppo.replace("    gamma: 1.0\n", "    gamma: .nan\n")).unwrap();
    let d = dir.path().to_str().unwrap();
    let out = tril_in(&repo(), &["config", "--config-dir", d, "task=synthetic", "alg=ppo"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("alg.args.gamma: expected a finite number, found .nan ("), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("alg/ppo.yaml:{line})")), "{}", out.stderr);
    std::fs::write(dir.path().join("alg/ppo.yaml"), &ppo).unwrap();
    let out = tril_in(&repo(), &["config", "--config-dir", d, "task=synthetic", "alg=ppo"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("task.args.n_train: expected at least 1, found 0 ("), "{}", out.stderr);
    assert!(out.stderr.contains("task/synthetic.yaml:8)"), "{}", out.stderr);
}

/// `tril bench`: bad arguments exit 2 naming the flag; a row runs and its PyTorch side's
/// JSON lines (here from a stand-in interpreter) land in the table with the ratio.
#[test]
fn bench_runs_a_row_against_the_pytorch_side_and_refuses_bad_arguments() {
    let out = tril_in(&repo(), &["bench", "--rows", "forward,nope"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--rows: unknown row `nope`"), "{}", out.stderr);
    let out = tril_in(&repo(), &["bench", "--device", "ndarray", "--precision", "bf16"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("precision"), "{}", out.stderr);

    let tmp = tempfile::tempdir().unwrap();
    let python = tmp.path().join("fake-python");
    let line = r#"{"row": "train_tiny", "impl": "torch", "seconds": 0.5}"#;
    std::fs::write(&python, format!("#!/bin/sh\necho 'not json'\necho '{line}'\n")).unwrap();
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let json = tmp.path().join("bench.jsonl");
    let args = ["bench", "--rows", "train_tiny", "--repeats", "1", "--threads", "1", "--python"];
    let mut args: Vec<&str> = args.to_vec();
    args.extend([python.to_str().unwrap(), "--json", json.to_str().unwrap()]);
    let out = tril_in(&repo(), &args, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row = out.stdout.lines().find(|l| l.starts_with("train_tiny")).unwrap_or_else(|| panic!("{}", out.stdout));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "torch", "{row}");
    let tril_s: f64 = cells[2].parse().unwrap();
    assert!(tril_s > 0.0 && cells[3] == "0.500", "{row}");
    assert_eq!(cells[4], format!("{:.2}", tril_s / 0.5), "{row}");
    let lines = std::fs::read_to_string(&json).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    assert!(lines.contains(r#""impl":"tril""#) && lines.contains(r#""impl":"torch""#), "{lines}");
}

/// `tril memory`: a model directory's breakdown (the committed tiny GPT-2: weights of policy +
/// reference = 2 x 4 bytes x its parameters), the table, and bad arguments.
#[test]
fn memory_sizes_a_model_directory_and_prints_the_table() {
    let model = repo().join("crates/tril-models/tests/fixtures/gpt2");
    let out = tril_in(&repo(), &["memory", "--model", model.to_str().unwrap(), "--alg", "dpo"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row = out.stdout.lines().nth(1).unwrap_or_else(|| panic!("{}", out.stdout));
    let cells: Vec<f64> = row.split_whitespace().skip(1).map(|c| c.parse().unwrap()).collect();
    assert_eq!(cells.len(), 5, "{row}");
    assert!((cells.iter().take(4).sum::<f64>() - cells[4]).abs() < 0.2, "parts add up to the total: {row}");
    let out = tril_in(&repo(), &["memory", "--table"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for family in ["gpt2", "gpt_neox", "llama", "qwen2", "mistral"] {
        assert!(out.stdout.contains(&format!("| {family} | DPO | 80 GB GPU |")), "{family}: {}", out.stdout);
    }
    let out = tril_in(&repo(), &["memory", "--lora-r", "0"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = tril_in(&repo(), &["memory", "--model", "/nonexistent/model"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--model /nonexistent/model"), "{}", out.stderr);
}
