//! Composition of a config directory into one tree, with Hydra's semantics.
//!
//! Two forms of directory are read by one composer (see [`super::defaults`]): tril's own
//! `cfgs/` (a `defaults:` map, `inherits:` in alg files) and TRIL's `cfgs/` as they are
//! (Hydra defaults lists, `# @package _global_` headers, `hydra.run.dir`).
//!
//! Order, lowest precedence first:
//! 1. the entries of `config.yaml`'s defaults, in order: `_self_` (the file's own keys;
//!    tril's map form puts them first) and each group's file, placed at its package
//!    (`# @package _global_` or tril's non-`alg` groups: the root; else under the group,
//!    `alg/ppo.yaml` under `alg`), each over the files its own defaults list or
//!    `inherits:` names (maps deep-merge, lists replace);
//! 2. Hydra's `hydra` node is dropped; `hydra.run.dir` becomes `run_dir`;
//! 3. TRIL's `tril_run` selection: the `alg` tree's section for `task.id` becomes `alg`
//!    (its `id` must be the file's `alg_id`); a `reward_fn` (or `gold_reward_fn`) in it
//!    replaces the root one;
//! 4. tril's root keys the files lack (`run_dir`, `device`, `precision`, `guard`,
//!    `checkpoint`) get [`TRIL_ROOT_DEFAULTS`], with [`Origin::TrilDefault`]; the files'
//!    `./` and `../` paths are made absolute against the directory holding the config
//!    directory ([`super::paths`]);
//! 5. environment overrides `TRIL_A__B=v`;
//! 6. command-line overrides `a.b=v`, `+a.b=v` (new key), `~a.b` (delete), addressing the
//!    selected tree; TRIL's pre-selection spelling `alg.<task>.a=v` means `alg.a=v`;
//! 7. `${...}` interpolation against the root (see [`super::interpolate`]).

use super::defaults::{self, Choice, Entry};
use super::groups::Composer;
use super::node::{Node, Origin, Value};
use super::store::ConfigStore;
use super::typed::Config;
use super::yaml::parse_yaml;
use crate::error::{did_you_mean, CoreError, Result};
use chrono::Local;
use std::path::Path;

/// What to compose: command-line arguments and environment variables.
#[derive(Debug, Clone, Default)]
pub struct ComposeRequest {
    /// `group=option` choices and `[+]a.b=v` / `~a.b` overrides, in order.
    pub args: Vec<String>,
    /// Environment overrides as `(VARIABLE, value)`; only `TRIL_`-prefixed, non-reserved ones apply.
    pub env: Vec<(String, String)>,
}

/// Environment variables with the `TRIL_` prefix that are settings, not config overrides.
pub const RESERVED_ENV: &[&str] = &["TRIL_CONFIG_DIR", "TRIL_LOG", "TRIL_CACHE_DIR", "TRIL_PYTHON"];

/// One parsed command-line argument.
#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Choose { group: String, option: String },
    Set { key: String, value: String, add: bool },
    Delete { key: String },
}

fn parse_arg(arg: &str, groups: &[String]) -> Result<Arg> {
    let bad = |message: &str| CoreError::Override {
        arg: arg.to_string(),
        message: message.to_string(),
        origin: Origin::CommandLine(arg.to_string()),
    };
    if let Some(key) = arg.strip_prefix('~') {
        let key = key.split_once('=').map_or(key, |(k, _)| k);
        return if key.is_empty() { Err(bad("expected `~a.b`")) } else { Ok(Arg::Delete { key: key.into() }) };
    }
    let (add, body) = match arg.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, arg),
    };
    let (key, value) = body.split_once('=').ok_or_else(|| bad("expected `key=value`, `+key=value` or `~key`"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(bad("the key must be a dotted path like `alg.args.n_iters`"));
    }
    if !add && groups.iter().any(|g| g == key) {
        return Ok(Arg::Choose { group: key.into(), option: value.trim().into() });
    }
    Ok(Arg::Set { key: key.into(), value: value.into(), add })
}

/// A composed tree before `${...}` interpolation, with the group choices that made it
/// and the notes composition left (skipped Hydra runtime entries).
#[derive(Debug, Clone)]
pub struct Composed {
    /// The composed tree (selection, tril defaults and overrides applied; not interpolated).
    pub root: Node,
    /// The `group=option` choices, in defaults-list order.
    pub choices: Vec<(String, String)>,
    /// Things the user should know that are not errors (one line each).
    pub notes: Vec<String>,
}

impl Composed {
    /// Resolves every `${...}` against the root (step 7 of the module docs).
    pub fn resolve(self) -> Result<Config> {
        let env = |var: &str| std::env::var(var).ok();
        let resolved = super::interpolate::resolve(&self.root, Local::now(), &env)?;
        Ok(Config::new(resolved, self.choices).with_notes(self.notes))
    }

    /// The tree as it is, `${...}` left in place (what `tril config --unresolved` prints).
    pub fn unresolved(self) -> Config {
        Config::new(self.root, self.choices).with_notes(self.notes)
    }
}

/// Composes a config from a store and resolves it. See the module docs for the order.
pub fn compose(store: &dyn ConfigStore, req: &ComposeRequest) -> Result<Config> {
    compose_unresolved(store, req)?.resolve()
}

/// Composes a config from a store, without interpolation. See the module docs for the order.
pub fn compose_unresolved(store: &dyn ConfigStore, req: &ComposeRequest) -> Result<Composed> {
    let file = store.display("config.yaml");
    let text = store.read("config.yaml")?.ok_or_else(|| CoreError::WithContext {
        context: store.describe(),
        message: "no config.yaml found (is this a tril config directory?)".into(),
    })?;
    let mut own = parse_yaml(&text, &file)?;
    let defaults = defaults::take_primary(&mut own, &file)?;
    let groups: Vec<String> = defaults
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::Group { group, .. } => Some(group.clone()),
            _ => None,
        })
        .collect();
    let args = req.args.iter().map(|a| parse_arg(a, &groups)).collect::<Result<Vec<_>>>()?;
    let chosen = |group: &str, choice: &Choice| {
        let cli = args.iter().rev().find_map(|a| match a {
            Arg::Choose { group: g, option } if g == group => Some(Choice::Option(option.clone())),
            _ => None,
        });
        cli.unwrap_or_else(|| choice.clone())
    };
    // Every mandatory group is checked before any group file is read.
    for entry in &defaults.entries {
        if let Entry::Group { group, choice, .. } = entry {
            if chosen(group, choice) == Choice::Mandatory {
                return Err(CoreError::MissingGroup { group: group.clone(), known: store.options(group).join(", ") });
            }
        }
    }
    let mut composer = Composer::new(store, defaults.form);
    composer.note_ignored(&defaults, &file);
    let mut root = Node::empty_map(Origin::File { path: file.clone(), line: 0 });
    let mut own = Some(own);
    let mut selected = Vec::new();
    for entry in &defaults.entries {
        match entry {
            Entry::SelfKeys => root.merge(own.take().unwrap_or_else(|| Node::empty_map(Origin::Composer))),
            Entry::Group { group, choice, optional, .. } => {
                let Choice::Option(option) = chosen(group, choice) else { continue };
                if let Some(tree) = composer.load(group, &option, *optional)? {
                    root.merge(tree);
                    selected.push((group.clone(), option));
                }
            }
            Entry::Config { name, .. } => {
                if let Some(tree) = composer.load("", name, false)? {
                    root.merge(tree);
                }
            }
        }
    }
    if root.as_map().is_none() {
        return Err(CoreError::Structure {
            key: "<root>".into(),
            message: format!("the composed config must be a map, found a {}", root.value.type_name()),
            origin: root.origin.clone(),
        });
    }
    take_hydra(&mut root);
    if let Some((_, alg)) = selected.iter().find(|(g, _)| g == "alg") {
        select_alg(store, &mut root, alg)?;
    }
    fill_tril_defaults(&mut root)?;
    if let Some(base) = store.base_dir() {
        super::paths::anchor_file_paths(&mut root, &base);
    }
    apply_overrides(&mut root, &args, req)?;
    Ok(Composed { root, choices: selected, notes: composer.notes })
}

/// Environment, then command-line overrides (the `Choose` arguments were used already).
fn apply_overrides(root: &mut Node, args: &[Arg], req: &ComposeRequest) -> Result<()> {
    for (var, value) in &req.env {
        if let Some(key) = env_key(var) {
            let origin = Origin::Environment(var.clone());
            let key = override_key(root, &key);
            set_value(root, &key, value, false, &format!("{var}={value}"), origin)?;
        }
    }
    for (arg, raw) in args.iter().zip(&req.args) {
        let origin = Origin::CommandLine(raw.clone());
        match arg {
            Arg::Choose { .. } => {}
            Arg::Set { key, value, add } => set_value(root, &override_key(root, key), value, *add, raw, origin)?,
            Arg::Delete { key } => {
                let key = override_key(root, key);
                if root.remove(&key).is_none() {
                    return Err(CoreError::Override {
                        arg: raw.clone(),
                        message: format!("no key `{key}` to delete"),
                        origin,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The key an override addresses in the selected tree: TRIL's pre-selection spelling
/// `alg.<task id>.rest` (what Hydra's command line addresses) becomes `alg.rest` when the
/// selected `alg` has no key named like the task; Hydra's `hydra.run.dir` is `run_dir`.
fn override_key(root: &Node, key: &str) -> String {
    if key == "hydra.run.dir" {
        return "run_dir".into();
    }
    if let Some(task) = root.get("task.id").and_then(Node::as_str) {
        let section = format!("alg.{task}");
        let rest = key.strip_prefix(&section).filter(|r| r.is_empty() || r.starts_with('.'));
        if let Some(rest) = rest {
            if root.get(&section).is_none() {
                return format!("alg{rest}");
            }
        }
    }
    key.to_string()
}

/// Loads an already composed file (e.g. a run's `config.resolved.yaml`) and applies
/// environment and command-line overrides and interpolation to it.
pub fn compose_file(path: &Path, req: &ComposeRequest) -> Result<Config> {
    compose_file_unresolved(path, req)?.resolve()
}

/// [`compose_file`] without interpolation.
pub fn compose_file_unresolved(path: &Path, req: &ComposeRequest) -> Result<Composed> {
    let text = std::fs::read_to_string(path).map_err(|source| CoreError::Io { path: path.into(), source })?;
    let mut root = parse_yaml(&text, path)?;
    let args = req.args.iter().map(|a| parse_arg(a, &[])).collect::<Result<Vec<_>>>()?;
    apply_overrides(&mut root, &args, req)?;
    Ok(Composed { root, choices: Vec::new(), notes: Vec::new() })
}

/// `TRIL_ALG__ARGS__N_ITERS` -> `alg.args.n_iters`; `None` for other or reserved variables.
pub fn env_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix("TRIL_")?;
    if rest.is_empty() || RESERVED_ENV.contains(&var) {
        return None;
    }
    Some(rest.split("__").map(str::to_lowercase).collect::<Vec<_>>().join("."))
}

/// Hydra's compose removes the `hydra` node from the config; tril keeps one value of it:
/// `hydra.run.dir` becomes `run_dir` (unless the tree has a `run_dir` already).
fn take_hydra(root: &mut Node) {
    let Some(hydra) = root.remove("hydra") else { return };
    if let (Some(dir), None) = (hydra.get("run.dir"), root.get("run_dir")) {
        if let Some(map) = root.as_map_mut() {
            map.insert("run_dir".into(), dir.clone());
        }
    }
}

/// tril's root keys with their defaults, for config dirs that lack them (TRIL's `cfgs/`);
/// they match the `Default` of each typed config (tested below).
pub const TRIL_ROOT_DEFAULTS: &str = "\
run_dir: outputs/${experiment_name}/${now:%Y-%m-%d_%H-%M-%S}
device: cpu
precision: f32
guard:
  skip_nonfinite: 0
  max_loss: null
  max_kl: null
checkpoint:
  save_total_limit: null
  best_metric: null
  best_mode: max
";

/// Adds every key of [`TRIL_ROOT_DEFAULTS`] the tree lacks, with [`Origin::TrilDefault`]
/// (`run_dir` only when the tree has the `experiment_name` it interpolates).
fn fill_tril_defaults(root: &mut Node) -> Result<()> {
    let defaults = relabel(parse_yaml(TRIL_ROOT_DEFAULTS, Path::new("<tril defaults>"))?, &Origin::TrilDefault);
    let (Value::Map(mut defaults), Some(map)) = (defaults.value, root.as_map_mut()) else { return Ok(()) };
    if !map.contains_key("experiment_name") {
        // The default run_dir interpolates it; without it the typed check names the key.
        defaults.shift_remove("run_dir");
    }
    for (key, value) in defaults {
        map.entry(key).or_insert(value);
    }
    Ok(())
}

/// TRIL's `tril_run` selection (TRIL's `src/tril/__init__.py`): the composed `alg` tree's
/// section for `task.id` becomes `alg`, its `id` must be the file's `alg_id` (default:
/// the option name), and a `reward_fn` inside it replaces the root one (as does a
/// `gold_reward_fn`, tril's addition).
fn select_alg(store: &dyn ConfigStore, root: &mut Node, alg: &str) -> Result<()> {
    let file = format!("{}", store.display(&format!("alg/{alg}.yaml")).display());
    let mut tree = root.remove("alg").unwrap_or_else(|| Node::empty_map(Origin::Composer));
    let task_id = match root.get("task.id") {
        Some(Node { value: Value::Str(id), .. }) => id.clone(),
        Some(other) => {
            return Err(CoreError::Structure {
                key: "task.id".into(),
                message: format!("expected a task id string, found {}", other.value),
                origin: other.origin.clone(),
            })
        }
        None => {
            return Err(CoreError::MissingKey { key: "task.id".into(), origin: root.origin.clone() });
        }
    };
    let alg_id = match tree.remove("alg_id") {
        Some(Node { value: Value::Str(s), .. }) => s,
        _ => alg.to_string(),
    };
    let sections: Vec<String> = tree.as_map().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    let no_section =
        || CoreError::NoAlgSection { file: file.clone(), task: task_id.clone(), sections: sections.join(", ") };
    let mut section = tree.remove(&task_id).ok_or_else(no_section)?;
    match section.get("id") {
        Some(Node { value: Value::Str(id), .. }) if *id == alg_id => {}
        Some(other) => {
            return Err(CoreError::Structure {
                key: format!("{task_id}.id"),
                message: format!(
                    "{file} has no `{task_id}` section of its own: the inherited section has id {} but this file is `{alg_id}`; add a `{task_id}:` section with `id: {alg_id}` to {file}",
                    other.value
                ),
                origin: other.origin.clone(),
            })
        }
        None => return Err(CoreError::MissingKey { key: format!("{task_id}.id"), origin: section.origin.clone() }),
    }
    let map = root.as_map_mut().ok_or_else(|| CoreError::Structure {
        key: "alg".into(),
        message: "the root config must be a map".into(),
        origin: Origin::Composer,
    })?;
    // tril's addition: an alg section may also name the gold reward its setting evaluates with.
    for key in ["reward_fn", "gold_reward_fn"] {
        if let Some(reward) = section.remove(key) {
            map.insert(key.into(), reward);
        }
    }
    section.origin = Origin::Composer;
    map.insert("alg".into(), section);
    Ok(())
}

fn set_value(root: &mut Node, key: &str, raw_value: &str, add: bool, arg: &str, origin: Origin) -> Result<()> {
    let bad = |message: String| CoreError::Override { arg: arg.to_string(), message, origin: origin.clone() };
    let depth = key.split('.').count();
    if depth > super::yaml::MAX_DEPTH {
        return Err(bad(format!("the key has {depth} parts; at most {} are allowed", super::yaml::MAX_DEPTH)));
    }
    let parsed = if raw_value.trim().is_empty() {
        Node::new(Value::Null, origin.clone())
    } else {
        parse_yaml(raw_value, Path::new("<override>")).map_err(|e| bad(format!("value is not valid YAML: {e}")))?
    };
    let value = relabel(parsed, &origin);
    let exists = root.get(key).is_some();
    if add && exists {
        return Err(bad(format!("key `{key}` already exists; drop the `+` to override it")));
    }
    if !add && !exists {
        let parent = key.rsplit_once('.').map_or("", |(p, _)| p);
        let last = key.rsplit_once('.').map_or(key, |(_, l)| l);
        let siblings: Vec<String> =
            root.get(parent).and_then(Node::as_map).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        let hint = did_you_mean(last, siblings.iter().map(String::as_str));
        return Err(bad(format!("no key `{key}` in the composed config{hint} (use `+{key}=...` to add a new key)")));
    }
    root.set(key, value, add).map_err(|prefix| bad(format!("cannot set `{key}`: `{prefix}` is not a map or list")))
}

/// Gives a parsed override value (and its children) the override's origin.
fn relabel(mut node: Node, origin: &Origin) -> Node {
    node.origin = origin.clone();
    node.value = match node.value {
        Value::Map(m) => Value::Map(m.into_iter().map(|(k, v)| (k, relabel(v, origin))).collect()),
        Value::Seq(s) => Value::Seq(s.into_iter().map(|v| relabel(v, origin)).collect()),
        other => other,
    };
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn args_parse() {
        let groups = vec!["task".to_string(), "alg".to_string()];
        assert_eq!(
            parse_arg("task=imdb", &groups).unwrap(),
            Arg::Choose { group: "task".into(), option: "imdb".into() }
        );
        assert_eq!(parse_arg("+a.b=1", &groups).unwrap(), Arg::Set { key: "a.b".into(), value: "1".into(), add: true });
        assert_eq!(parse_arg("~a.b", &groups).unwrap(), Arg::Delete { key: "a.b".into() });
        assert!(parse_arg("a..b=1", &groups).is_err());
        assert!(parse_arg("novalue", &groups).is_err());
    }

    #[test]
    fn absurdly_deep_keys_are_errors() {
        let dir = std::env::temp_dir().join(format!("tril-deep-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        let key = vec!["k"; 100_000].join(".");
        let req = ComposeRequest { args: vec![format!("+{key}=1")], env: Vec::new() };
        let err = compose_file(&path, &req).unwrap_err().to_string();
        assert!(err.contains("the key has 100000 parts; at most 128 are allowed"), "{}", &err[err.len() - 80..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Config files in memory, for composition tests.
    struct MemStore(Vec<(&'static str, &'static str)>);

    impl ConfigStore for MemStore {
        fn read(&self, rel: &str) -> Result<Option<String>> {
            Ok(self.0.iter().find(|(p, _)| *p == rel).map(|(_, t)| t.to_string()))
        }
        fn options(&self, group: &str) -> Vec<String> {
            let prefix = format!("{group}/");
            self.0
                .iter()
                .filter_map(|(p, _)| p.strip_prefix(&prefix)?.strip_suffix(".yaml").map(String::from))
                .collect()
        }
        fn display(&self, rel: &str) -> PathBuf {
            PathBuf::from(rel)
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    const TASK: &str = "# @package _global_\ntask:\n  id: toy\nlevel: task\n";
    const PPO: &str = "alg_id: ppo\ntoy:\n  id: ppo\n  args: {a: 1, b: 2, l: [1, 2]}\n";

    fn compose_mem(files: Vec<(&'static str, &'static str)>, args: &[&str]) -> Result<Composed> {
        let req = ComposeRequest { args: args.iter().map(|a| a.to_string()).collect(), env: Vec::new() };
        compose_unresolved(&MemStore(files), &req)
    }

    fn get(c: &Composed, key: &str) -> Value {
        c.root.get(key).unwrap_or_else(|| panic!("no {key}")).value.clone()
    }

    #[test]
    fn self_first_is_below_the_groups_and_self_last_above() {
        let first = "defaults:\n  - _self_\n  - task: toy\n  - alg: ppo\nlevel: primary\n";
        let c = compose_mem(vec![("config.yaml", first), ("task/toy.yaml", TASK), ("alg/ppo.yaml", PPO)], &[]).unwrap();
        assert_eq!(get(&c, "level"), Value::Str("task".into()));
        let last = "defaults:\n  - task: toy\n  - alg: ppo\n  - _self_\nlevel: primary\n";
        let c = compose_mem(vec![("config.yaml", last), ("task/toy.yaml", TASK), ("alg/ppo.yaml", PPO)], &[]).unwrap();
        assert_eq!(get(&c, "level"), Value::Str("primary".into()));
        // No `_self_`: last, as Hydra 1.1+.
        let none = "defaults:\n  - task: toy\n  - alg: ppo\nlevel: primary\n";
        let c = compose_mem(vec![("config.yaml", none), ("task/toy.yaml", TASK), ("alg/ppo.yaml", PPO)], &[]).unwrap();
        assert_eq!(get(&c, "level"), Value::Str("primary".into()));
    }

    #[test]
    fn package_global_merges_at_the_root_and_others_under_their_group() {
        let config = "defaults:\n  - _self_\n  - task: toy\n  - extra: x\n  - alg: ppo\n";
        let files =
            vec![("config.yaml", config), ("task/toy.yaml", TASK), ("extra/x.yaml", "k: 1\n"), ("alg/ppo.yaml", PPO)];
        let c = compose_mem(files, &[]).unwrap();
        assert_eq!(get(&c, "task.id"), Value::Str("toy".into()), "# @package _global_: at the root");
        assert_eq!(get(&c, "extra.k"), Value::Int(1), "no header: under the group");
        assert!(c.root.get("k").is_none());
        assert_eq!(get(&c, "alg.args.a"), Value::Int(1), "alg/ppo.yaml under alg, then selected");
        assert_eq!(
            c.choices,
            vec![("task".into(), "toy".into()), ("extra".into(), "x".into()), ("alg".into(), "ppo".into())]
        );
    }

    #[test]
    fn group_defaults_inherit_dicts_merge_lists_replace() {
        let config = "defaults:\n  - _self_\n  - task: toy\n  - alg: ???\n";
        let child = "defaults:\n  - ppo\n  - _self_\nalg_id: child\ntoy:\n  id: child\n  args: {b: 3, l: [9]}\n";
        let early = "defaults:\n  - _self_\n  - ppo\nalg_id: early\ntoy:\n  id: early\n  args: {b: 3}\n";
        let files = vec![
            ("config.yaml", config),
            ("task/toy.yaml", TASK),
            ("alg/ppo.yaml", PPO),
            ("alg/child.yaml", child),
            ("alg/early.yaml", early),
        ];
        let c = compose_mem(files.clone(), &["alg=child"]).unwrap();
        assert_eq!(get(&c, "alg.id"), Value::Str("child".into()));
        assert_eq!(get(&c, "alg.args.a"), Value::Int(1));
        assert_eq!(get(&c, "alg.args.b"), Value::Int(3));
        assert!(matches!(get(&c, "alg.args.l"), Value::Seq(v) if v.len() == 1));
        // `_self_` first: ppo's file lands over early's (its `alg_id` too), so the
        // selection is ppo's section, as TRIL's `tril_run` would take it.
        let c = compose_mem(files, &["alg=early"]).unwrap();
        assert_eq!((get(&c, "alg.id"), get(&c, "alg.args.b")), (Value::Str("ppo".into()), Value::Int(2)));
    }

    #[test]
    fn hydra_runtime_entries_are_skipped_with_one_note_and_run_dir_comes_from_hydra() {
        let config = "defaults:\n  - _self_\n  - task: toy\n  - alg: ppo\n  - override hydra/hydra_logging: disabled\n  - override hydra/job_logging: disabled\nexperiment_name: e\nhydra:\n  run:\n    dir: out/${experiment_name}\n";
        let c =
            compose_mem(vec![("config.yaml", config), ("task/toy.yaml", TASK), ("alg/ppo.yaml", PPO)], &[]).unwrap();
        assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
        assert!(c.notes[0].contains("override hydra/hydra_logging: disabled, override hydra/job_logging: disabled"));
        assert!(c.root.get("hydra").is_none());
        assert_eq!(get(&c, "run_dir"), Value::Str("out/${experiment_name}".into()));
        assert_eq!(c.root.get("device").map(|n| &n.origin), Some(&Origin::TrilDefault));
        assert!(matches!(c.root.get("run_dir").map(|n| &n.origin), Some(Origin::File { .. })));
    }

    #[test]
    fn pre_selection_overrides_address_the_selected_section() {
        let config = "defaults:\n  - _self_\n  - task: toy\n  - alg: ppo\nexperiment_name: e\n";
        let files = vec![("config.yaml", config), ("task/toy.yaml", TASK), ("alg/ppo.yaml", PPO)];
        let c = compose_mem(files.clone(), &["alg.toy.args.a=5", "alg.args.b=6", "hydra.run.dir=x"]).unwrap();
        assert_eq!((get(&c, "alg.args.a"), get(&c, "alg.args.b")), (Value::Int(5), Value::Int(6)));
        assert_eq!(get(&c, "run_dir"), Value::Str("x".into()));
        let err = compose_mem(files, &["alg.toy.args.zz=5"]).unwrap_err().to_string();
        assert!(err.contains("no key `alg.args.zz`"), "{err}");
    }

    #[test]
    fn malformed_defaults_entries_name_entry_and_file() {
        let config = "defaults:\n  - _self_\n  - task: toy\n  - alg: bad\n";
        let bad = "defaults:\n  - ppo\n  - {a: 1, b: 2}\nalg_id: bad\n";
        let files =
            vec![("config.yaml", config), ("task/toy.yaml", TASK), ("alg/ppo.yaml", PPO), ("alg/bad.yaml", bad)];
        let err = compose_mem(files, &[]).unwrap_err().to_string();
        assert!(err.contains("defaults[1]") && err.contains("alg/bad.yaml") && err.contains("{a: 1, b: 2}"), "{err}");
        let config = "defaults:\n  - _self_\n  - 3\n";
        let err = compose_mem(vec![("config.yaml", config)], &[]).unwrap_err().to_string();
        assert!(err.contains("defaults[1]") && err.contains("config.yaml"), "{err}");
    }

    #[test]
    fn cycles_in_group_defaults_are_errors() {
        let config = "defaults:\n  - _self_\n  - task: toy\n  - alg: a\n";
        let files = vec![
            ("config.yaml", config),
            ("task/toy.yaml", TASK),
            ("alg/a.yaml", "defaults: [b, _self_]\nalg_id: a\n"),
            ("alg/b.yaml", "defaults: [a]\nalg_id: b\n"),
        ];
        let err = compose_mem(files, &[]).unwrap_err().to_string();
        assert!(err.contains("`defaults` cycle: a -> b -> a"), "{err}");
    }

    #[test]
    fn tril_root_defaults_are_the_typed_defaults() {
        let node = parse_yaml(TRIL_ROOT_DEFAULTS, Path::new("d.yaml")).unwrap();
        let config = Config::new(node, Vec::new());
        let guard: crate::safety::GuardConfig = config.extract("guard").unwrap();
        let checkpoint: crate::safety::CheckpointConfig = config.extract("checkpoint").unwrap();
        assert_eq!(guard, crate::safety::GuardConfig::default());
        assert_eq!(checkpoint, crate::safety::CheckpointConfig::default());
        let precision: crate::backend::Precision = config.extract("precision").unwrap();
        assert_eq!(precision, crate::backend::Precision::default());
    }

    #[test]
    fn env_keys() {
        assert_eq!(env_key("TRIL_ALG__ARGS__N_ITERS").as_deref(), Some("alg.args.n_iters"));
        assert_eq!(env_key("TRIL_CONFIG_DIR"), None);
        assert_eq!(env_key("HOME"), None);
    }
}
