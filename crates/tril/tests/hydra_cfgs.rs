//! TRIL's `cfgs/` as they are (Hydra defaults lists): `tril config` against what Hydra's
//! compose API plus TRIL's `tril_run` selection give, for every task x alg pair.
//!
//! The fixture `tests/fixtures/tril_cfgs/cfgs/` is TRIL's directory byte for byte (see
//! its NOTICE.md); `goldens.json` beside it is written by `compose_goldens.py` (hydra-core
//! 1.3); these tests read only the committed JSON, no Python. The keys tril adds at the
//! root when the files lack them ([`TRIL_ADDED`]) are left out of the comparison.

use serde_json::{Map, Value as Json};
use std::path::{Path, PathBuf};
use std::process::Command;
use tril_core::config::{parse_yaml, Node, Value};

/// Root keys tril adds with its defaults (`run_dir` from `hydra.run.dir`), documented in
/// docs/configs.md; every other key must equal Hydra's.
const TRIL_ADDED: &[&str] = &["device", "precision", "guard", "checkpoint", "run_dir"];

/// Pairs Hydra composes but tril refuses at its typed check, each with the key the
/// error must name (docs/configs.md, "TRIL's cfgs/ as they are").
fn refused(task: &str, alg: &str) -> Option<&'static str> {
    match (task, alg) {
        // TRIL's stale BC key: TRIL's own agent reads alg.optimizer (fails at run time there).
        (_, "bc") => Some("alg.optimizer_kwargs"),
        // The spider reward's SPICE half needs Java/CoreNLP, which tril does not have.
        ("commongen", _) => Some("reward_fn.args.spice_coeff"),
        _ => None,
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tril_cfgs")
}

/// `tril config --config-dir <fixture> ARGS...`: exit code, stdout, stderr.
fn config(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tril"))
        .args(["config", "--config-dir"])
        .arg(fixture().join("cfgs"))
        .args(args)
        .env_remove("TRIL_LOG")
        .env_remove("TRIL_CONFIG_DIR")
        .output()
        .expect("run tril");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// A config tree as JSON, the way `OmegaConf.to_container` writes it.
fn json(node: &Node) -> Json {
    match &node.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(x) => Json::from(*x),
        Value::Str(s) => Json::String(s.clone()),
        Value::Seq(items) => Json::Array(items.iter().map(json).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), json(v))).collect()),
    }
}

/// The printed YAML as JSON, without [`TRIL_ADDED`]; also the printed `run_dir`.
fn printed(stdout: &str) -> (Map<String, Json>, Option<Json>) {
    let node = parse_yaml(stdout, Path::new("<stdout>")).expect("tril config prints YAML");
    let Json::Object(mut map) = json(&node) else { panic!("not a map: {stdout}") };
    let run_dir = map.get("run_dir").cloned();
    map.retain(|k, _| !TRIL_ADDED.contains(&k.as_str()));
    (map, run_dir)
}

fn goldens() -> Map<String, Json> {
    let text = std::fs::read_to_string(fixture().join("goldens.json")).expect("goldens.json");
    let Json::Object(mut all) = serde_json::from_str(&text).expect("goldens.json is JSON") else { panic!() };
    let Some(Json::Object(pairs)) = all.remove("pairs") else { panic!("goldens.json has no pairs") };
    pairs
}

/// The first differing path between two JSON values, for a readable failure.
fn first_difference(a: &Json, b: &Json, path: &str) -> Option<String> {
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let here = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_difference(u, v, &here) {
                            return Some(d);
                        }
                    }
                    (u, v) => return Some(format!("{here}: tril {u:?}, hydra {v:?}")),
                }
            }
            None
        }
        (Json::Array(x), Json::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (u, v))| first_difference(u, v, &format!("{path}.{i}")))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: tril {a}, hydra {b}")),
    }
}

fn assert_same(tril: &Map<String, Json>, golden: &Json, what: &str) {
    let tril = Json::Object(tril.clone());
    if let Some(diff) = first_difference(&tril, golden, "") {
        panic!("{what}: tril differs from Hydra at {diff}");
    }
}

#[test]
fn every_task_alg_pair_composes_as_hydra_and_tril_run() {
    let pairs = goldens();
    assert_eq!(pairs.len(), 28, "4 tasks x 7 algs");
    for (name, golden) in &pairs {
        let (task, alg) = name.split_once("__").expect("task__alg");
        let (t, a) = (format!("task={task}"), format!("alg={alg}"));
        let error = golden["error"].as_object();
        let kind = error.and_then(|e| e["kind"].as_str());

        // 1. Before interpolation: `tril config --unresolved` against to_container(resolve=False).
        let (code, stdout, stderr) = config(&["--unresolved", &t, &a]);
        if kind == Some("no_section") {
            assert_eq!(code, 2, "{name}: expected no section\n{stderr}");
            assert!(
                stderr.contains("has no section for task") || stderr.contains("section of its own"),
                "{name}: {stderr}"
            );
            continue;
        }
        assert_eq!(code, 0, "{name} --unresolved:\n{stderr}");
        let (tree, run_dir) = printed(&stdout);
        assert_same(&tree, &golden["unresolved"], &format!("{name} --unresolved"));
        assert_eq!(run_dir.as_ref(), Some(&golden["run_dir"]), "{name}: run_dir is hydra.run.dir");

        // 2. Resolved: `tril config` against to_container(resolve=True) (run_dir, the only
        // `${now:...}` key, is among TRIL_ADDED).
        let (code, stdout, stderr) = config(&[&t, &a]);
        if kind == Some("interpolation") {
            let key = error.and_then(|e| e["key"].as_str()).expect("golden names the key");
            assert_eq!(code, 2, "{name}: expected an interpolation error\n{stdout}");
            assert!(stderr.contains(&format!("{key}: cannot resolve")), "{name}: expected `{key}` named\n{stderr}");
            continue;
        }
        if let Some(key) = refused(task, alg) {
            assert_eq!(code, 2, "{name}: tril refuses this pair at its typed check\n{stdout}");
            assert!(stderr.contains(key), "{name}: expected `{key}` named\n{stderr}");
            continue;
        }
        assert_eq!(code, 0, "{name}:\n{stderr}");
        let (tree, _) = printed(&stdout);
        assert_same(&tree, &golden["resolved"], name);
    }
}

#[test]
fn tril_defaults_say_where_they_come_from() {
    let (code, stdout, stderr) = config(&["--provenance", "task=imdb", "alg=ppo"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("device: cpu  # tril default (not in the config files)"), "{stdout}");
    assert!(stdout.contains("guard.skip_nonfinite: 0  # tril default"), "{stdout}");
    assert!(stdout.contains("cfgs/config.yaml:13"), "run_dir comes from hydra.run.dir:\n{stdout}");
    let notes: Vec<&str> = stderr.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(notes.len(), 1, "one note for the override hydra/... entries: {stderr}");
    assert!(notes[0].contains("override hydra/hydra_logging: disabled"), "{stderr}");
}

#[test]
fn overrides_take_tril_and_tril_run_spellings() {
    for key in ["alg.args.n_iters", "alg.imdb.args.n_iters"] {
        let (code, stdout, stderr) = config(&["task=imdb", "alg=ppo", &format!("{key}=5"), "device=cpu"]);
        assert_eq!(code, 0, "{key}: {stderr}");
        let node = parse_yaml(&stdout, Path::new("<stdout>")).unwrap();
        assert_eq!(node.get("alg.args.n_iters").map(|n| &n.value), Some(&Value::Int(5)), "{key}");
    }
    let (code, stdout, stderr) = config(&["task=imdb", "alg=ppo", "hydra.run.dir=/tmp/x"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("run_dir: /tmp/x"), "{stdout}");
    let (code, _, stderr) = config(&["task=imdb"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("choose a `alg`") && stderr.contains("ppo_pp"), "{stderr}");
}

#[test]
fn refused_pairs_compose_once_the_named_key_is_changed() {
    // commongen: only SPICE stands in the way (the `spice` metric is then a warning).
    let (code, _, stderr) = config(&["task=commongen", "alg=ppo", "reward_fn.args.spice_coeff=0"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("unknown metric `spice`"), "{stderr}");
    // bc: past alg.optimizer_kwargs, tril's bc names TRIL's args it does not read.
    let (code, _, stderr) = config(&["task=imdb", "alg=bc", "~alg.optimizer_kwargs"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("alg.args.batch_size_per_process: unknown key"), "{stderr}");
}
