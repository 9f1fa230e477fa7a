//! Composition semantics on small config directories made per test: precedence
//! (default < logging < task < alg section < environment < command line), `inherits`,
//! section selection, `reward_fn` replacement, overrides and their errors.

use std::path::Path;
use tril_core::config::{compose, ComposeRequest, Config, DirStore, Value};
use tril_core::CoreError;

/// Writes `files` (relative path, text) into a fresh temp dir.
fn cfgs(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

const CONFIG: &str = "defaults:\n  logging: default\n  task: ???\n  alg: ???\nlevel_a: default\nlevel_b: default\n";
const LOGGING: &str = "level_b: logging\nlog_to_wandb: false\n";
const TASK: &str = "task:\n  id: toy\nlevel_a: task\nreward_fn:\n  id: from_task\nsampling:\n  max_gen_len: 8\n";
const ALG: &str = "alg_id: ppo\ntoy:\n  id: ppo\n  args:\n    n_iters: 50\n    gen: ${sampling.max_gen_len}\n    label: n${sampling.max_gen_len}\n  reward_fn:\n    id: from_alg\n";

fn base() -> tempfile::TempDir {
    cfgs(&[("config.yaml", CONFIG), ("logging/default.yaml", LOGGING), ("task/toy.yaml", TASK), ("alg/ppo.yaml", ALG)])
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Config, CoreError> {
    let req = ComposeRequest {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    compose(&DirStore::new(dir), &req)
}

fn value(config: &Config, key: &str) -> Value {
    config.root().get(key).unwrap_or_else(|| panic!("no key {key}")).value.clone()
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

#[test]
fn precedence_default_logging_task_alg_env_cli() {
    let dir = base();
    let c = run(dir.path(), &["task=toy", "alg=ppo"], &[]).unwrap();
    assert_eq!(value(&c, "level_a"), s("task"), "task beats default");
    assert_eq!(value(&c, "level_b"), s("logging"), "logging beats default");
    assert_eq!(value(&c, "reward_fn.id"), s("from_alg"), "alg section's reward_fn replaces the task's");
    assert_eq!(value(&c, "alg.args.n_iters"), Value::Int(50));

    let env = [("TRIL_ALG__ARGS__N_ITERS", "3")];
    let c = run(dir.path(), &["task=toy", "alg=ppo"], &env).unwrap();
    assert_eq!(value(&c, "alg.args.n_iters"), Value::Int(3), "environment beats the alg file");

    let c = run(dir.path(), &["task=toy", "alg=ppo", "alg.args.n_iters=7"], &env).unwrap();
    assert_eq!(value(&c, "alg.args.n_iters"), Value::Int(7), "command line beats environment");
}

#[test]
fn sources_are_kept_per_value() {
    let dir = base();
    let env = [("TRIL_LEVEL_B", "env")];
    let c = run(dir.path(), &["task=toy", "alg=ppo", "level_a=cli"], &env).unwrap();
    let prov = c.provenance();
    assert!(prov.contains("level_a: cli  # command line `level_a=cli`"), "{prov}");
    assert!(prov.contains("level_b: env  # environment variable TRIL_LEVEL_B"), "{prov}");
    assert!(prov.contains("alg.args.n_iters: 50  # ") && prov.contains("alg/ppo.yaml:5"), "{prov}");
}

#[test]
fn interpolation_sees_overrides_everywhere() {
    let dir = base();
    let c = run(dir.path(), &["task=toy", "alg=ppo", "sampling.max_gen_len=20"], &[]).unwrap();
    assert_eq!(value(&c, "alg.args.gen"), Value::Int(20));
    assert_eq!(value(&c, "alg.args.label"), s("n20"));
}

#[test]
fn add_and_delete_keys() {
    let dir = base();
    let c = run(dir.path(), &["task=toy", "alg=ppo", "+alg.args.new_key=[1, 2]", "~level_b"], &[]).unwrap();
    assert!(matches!(value(&c, "alg.args.new_key"), Value::Seq(v) if v.len() == 2));
    assert!(c.root().get("level_b").is_none());

    let err = run(dir.path(), &["task=toy", "alg=ppo", "+level_a=x"], &[]).unwrap_err().to_string();
    assert!(err.contains("key `level_a` already exists"), "{err}");
    let err = run(dir.path(), &["task=toy", "alg=ppo", "~nope.x"], &[]).unwrap_err().to_string();
    assert!(err.contains("no key `nope.x` to delete") && err.contains("command line"), "{err}");
}

#[test]
fn unknown_key_on_command_line_suggests() {
    let dir = base();
    let err = run(dir.path(), &["task=toy", "alg=ppo", "alg.args.n_iter=7"], &[]).unwrap_err().to_string();
    assert!(err.contains("override `alg.args.n_iter=7` (command line"), "{err}");
    assert!(err.contains("no key `alg.args.n_iter` in the composed config; did you mean `n_iters`?"), "{err}");
    let err = run(dir.path(), &["task=toy", "alg=ppo"], &[("TRIL_ALG__ARGS__N_ITER", "7")]).unwrap_err().to_string();
    assert!(err.contains("environment variable TRIL_ALG__ARGS__N_ITER"), "{err}");
}

#[test]
fn unknown_options_and_missing_groups() {
    let dir = base();
    let err = run(dir.path(), &["task=tyo", "alg=ppo"], &[]).unwrap_err().to_string();
    assert!(err.contains("unknown task `tyo`") && err.contains("did you mean `toy`?"), "{err}");
    let err = run(dir.path(), &["task=toy", "alg=ppoo"], &[]).unwrap_err().to_string();
    assert!(err.contains("unknown alg `ppoo`") && err.contains("known: ppo"), "{err}");
    let err = run(dir.path(), &["task=toy"], &[]).unwrap_err().to_string();
    assert!(err.contains("choose a `alg` on the command line, e.g. alg=<OPTION> (known: ppo)"), "{err}");
}

#[test]
fn alg_file_without_section_for_task_is_named() {
    let dir = cfgs(&[
        ("config.yaml", CONFIG),
        ("logging/default.yaml", LOGGING),
        ("task/toy.yaml", TASK),
        ("alg/ppo.yaml", "alg_id: ppo\nimdb:\n  id: ppo\n"),
    ]);
    let err = run(dir.path(), &["task=toy", "alg=ppo"], &[]).unwrap_err().to_string();
    assert!(err.contains("alg/ppo.yaml has no section for task `toy` (sections: imdb)"), "{err}");
}

#[test]
fn inherits_merges_dicts_replaces_lists_and_checks_ids() {
    let dir = cfgs(&[
        ("config.yaml", CONFIG),
        ("logging/default.yaml", LOGGING),
        ("task/toy.yaml", TASK),
        ("alg/ppo.yaml", "alg_id: ppo\ntoy:\n  id: ppo\n  args: {a: 1, b: 2, l: [1, 2]}\nother:\n  id: ppo\n"),
        ("alg/child.yaml", "inherits: ppo\nalg_id: child\ntoy:\n  id: child\n  args: {b: 3, l: [9]}\n"),
        ("alg/orphan.yaml", "inherits: ppo\nalg_id: orphan\n"),
        ("alg/loop.yaml", "inherits: loop2\nalg_id: loop\n"),
        ("alg/loop2.yaml", "inherits: loop\nalg_id: loop2\n"),
    ]);
    let c = run(dir.path(), &["task=toy", "alg=child"], &[]).unwrap();
    assert_eq!(value(&c, "alg.id"), s("child"));
    assert_eq!(value(&c, "alg.args.a"), Value::Int(1));
    assert_eq!(value(&c, "alg.args.b"), Value::Int(3));
    assert!(matches!(value(&c, "alg.args.l"), Value::Seq(v) if v.len() == 1));

    let err = run(dir.path(), &["task=toy", "alg=orphan"], &[]).unwrap_err().to_string();
    assert!(err.contains("alg/orphan.yaml has no `toy` section of its own"), "{err}");
    let err = run(dir.path(), &["task=toy", "alg=loop"], &[]).unwrap_err().to_string();
    assert!(err.contains("`inherits` cycle: loop -> loop2 -> loop"), "{err}");
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let dir = cfgs(&[
        ("config.yaml", CONFIG),
        ("logging/default.yaml", LOGGING),
        ("task/toy.yaml", "task:\n  id: toy\nsampling: [1, 2\nx: 1\n"),
        ("alg/ppo.yaml", ALG),
    ]);
    let err = run(dir.path(), &["task=toy", "alg=ppo"], &[]).unwrap_err().to_string();
    assert!(err.contains("task/toy.yaml:") && err.contains("malformed YAML"), "{err}");
}

#[test]
fn interpolation_errors_name_key_chain_and_source() {
    let dir = base();
    let err = run(dir.path(), &["task=toy", "alg=ppo", "+alg.args.x=${nope.y}"], &[]).unwrap_err().to_string();
    assert!(err.contains("alg.args.x: cannot resolve `${nope.y}`: key `nope` not found"), "{err}");
    assert!(err.contains("command line `+alg.args.x=${nope.y}`"), "{err}");
    let args = ["task=toy", "alg=ppo", "+p=${q}", "+q=${p}"];
    let err = run(dir.path(), &args, &[]).unwrap_err().to_string();
    assert!(err.contains("interpolation cycle") && err.contains("p -> q -> p"), "{err}");
}
