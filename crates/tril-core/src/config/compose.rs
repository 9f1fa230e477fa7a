//! Composition of `cfgs/` into one tree, with Hydra's semantics.
//!
//! Order, lowest precedence first:
//! 1. `config.yaml` (its `defaults:` map names the groups; `???` marks a mandatory one);
//! 2. each non-`alg` group file (`logging/<x>.yaml`, `task/<x>.yaml`) merged at the root;
//! 3. the alg file (after its `inherits:` chain: maps deep-merge, lists replace), whose
//!    section for the composed `task.id` becomes `alg`; a `reward_fn` in that section
//!    replaces the root one;
//! 4. environment overrides `TRIL_A__B=v`;
//! 5. command-line overrides `a.b=v`, `+a.b=v` (new key), `~a.b` (delete);
//! 6. `${...}` interpolation against the root (see [`super::interpolate`]).

use super::node::{Node, Origin, Value};
use super::typed::Config;
use super::yaml::parse_yaml;
use crate::error::{did_you_mean, CoreError, Result};
use chrono::Local;
use std::path::{Path, PathBuf};

/// Where config files come from: a directory or a set embedded in the binary.
pub trait ConfigStore {
    /// The text of a file relative to the store root (`task/imdb.yaml`), if present.
    fn read(&self, rel: &str) -> Result<Option<String>>;
    /// The option names of a group (`task` -> `["imdb", "synthetic"]`), sorted.
    fn options(&self, group: &str) -> Vec<String>;
    /// How a file is named in messages.
    fn display(&self, rel: &str) -> PathBuf;
    /// How the store is named in messages.
    fn describe(&self) -> String;
}

/// A config directory on disk (`cfgs/`).
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store reading from `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirStore { root: root.into() }
    }
}

impl ConfigStore for DirStore {
    fn read(&self, rel: &str) -> Result<Option<String>> {
        let path = self.root.join(rel);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CoreError::Io { path, source }),
        }
    }

    fn options(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.root.join(group))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".yaml").map(str::to_string))
            .collect();
        out.sort();
        out
    }

    fn display(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

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

/// Composes a config from a store. See the module docs for the order.
pub fn compose(store: &dyn ConfigStore, req: &ComposeRequest) -> Result<Config> {
    let text = store.read("config.yaml")?.ok_or_else(|| CoreError::WithContext {
        context: store.describe(),
        message: "no config.yaml found (is this a tril config directory?)".into(),
    })?;
    let mut root = parse_yaml(&text, &store.display("config.yaml"))?;
    let defaults = take_defaults(&mut root, &store.display("config.yaml"))?;
    let groups: Vec<String> = defaults.iter().map(|(g, _)| g.clone()).collect();
    let args = req.args.iter().map(|a| parse_arg(a, &groups)).collect::<Result<Vec<_>>>()?;

    let mut choices = defaults;
    for arg in &args {
        if let Arg::Choose { group, option } = arg {
            if let Some(slot) = choices.iter_mut().find(|(g, _)| g == group) {
                slot.1 = Some(option.clone());
            }
        }
    }
    let mut selected = Vec::new();
    for (group, option) in &choices {
        let option = option
            .clone()
            .ok_or_else(|| CoreError::MissingGroup { group: group.clone(), known: store.options(group).join(", ") })?;
        selected.push((group.clone(), option));
    }
    for (group, option) in selected.iter().filter(|(g, _)| g != "alg") {
        let file = read_group_file(store, group, option)?;
        root.merge(file);
    }
    if let Some((_, alg)) = selected.iter().find(|(g, _)| g == "alg") {
        apply_alg(store, &mut root, alg)?;
    }
    for (var, value) in &req.env {
        if let Some(key) = env_key(var) {
            let origin = Origin::Environment(var.clone());
            set_value(&mut root, &key, value, false, &format!("{var}={value}"), origin)?;
        }
    }
    for (arg, raw) in args.iter().zip(&req.args) {
        let origin = Origin::CommandLine(raw.clone());
        match arg {
            Arg::Choose { .. } => {}
            Arg::Set { key, value, add } => set_value(&mut root, key, value, *add, raw, origin)?,
            Arg::Delete { key } => {
                if root.remove(key).is_none() {
                    return Err(CoreError::Override {
                        arg: raw.clone(),
                        message: format!("no key `{key}` to delete"),
                        origin,
                    });
                }
            }
        }
    }
    let env = |var: &str| std::env::var(var).ok();
    let resolved = super::interpolate::resolve(&root, Local::now(), &env)?;
    Ok(Config::new(resolved, selected))
}

/// Loads an already composed file (e.g. a run's `config.resolved.yaml`) and applies
/// environment and command-line overrides and interpolation to it.
pub fn compose_file(path: &Path, req: &ComposeRequest) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|source| CoreError::Io { path: path.into(), source })?;
    let mut root = parse_yaml(&text, path)?;
    for (var, value) in &req.env {
        if let Some(key) = env_key(var) {
            set_value(&mut root, &key, value, false, &format!("{var}={value}"), Origin::Environment(var.clone()))?;
        }
    }
    for raw in &req.args {
        let origin = Origin::CommandLine(raw.clone());
        match parse_arg(raw, &[])? {
            Arg::Set { key, value, add } => set_value(&mut root, &key, &value, add, raw, origin)?,
            Arg::Delete { key } => {
                root.remove(&key).ok_or_else(|| CoreError::Override {
                    arg: raw.clone(),
                    message: format!("no key `{key}` to delete"),
                    origin,
                })?;
            }
            Arg::Choose { .. } => unreachable!("no groups when reading a composed file"),
        }
    }
    let env = |var: &str| std::env::var(var).ok();
    let resolved = super::interpolate::resolve(&root, Local::now(), &env)?;
    Ok(Config::new(resolved, Vec::new()))
}

/// `TRIL_ALG__ARGS__N_ITERS` -> `alg.args.n_iters`; `None` for other or reserved variables.
pub fn env_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix("TRIL_")?;
    if rest.is_empty() || RESERVED_ENV.contains(&var) {
        return None;
    }
    Some(rest.split("__").map(str::to_lowercase).collect::<Vec<_>>().join("."))
}

fn take_defaults(root: &mut Node, file: &Path) -> Result<Vec<(String, Option<String>)>> {
    let Some(defaults) = root.remove("defaults") else {
        return Ok(Vec::new());
    };
    let Value::Map(map) = defaults.value else {
        return Err(CoreError::Structure {
            key: "defaults".into(),
            message: format!("expected a map of group: option, found a {}", defaults.value.type_name()),
            origin: defaults.origin,
        });
    };
    let mut out = Vec::new();
    for (group, option) in map {
        let choice = match &option.value {
            Value::Str(s) if s == "???" => None,
            Value::Str(s) => Some(s.clone()),
            other => {
                return Err(CoreError::Structure {
                    key: format!("defaults.{group}"),
                    message: format!("expected an option name or ???, found {other} in {}", file.display()),
                    origin: option.origin.clone(),
                })
            }
        };
        out.push((group, choice));
    }
    Ok(out)
}

fn read_group_file(store: &dyn ConfigStore, group: &str, option: &str) -> Result<Node> {
    let rel = format!("{group}/{option}.yaml");
    let text = store.read(&rel)?.ok_or_else(|| {
        let known = store.options(group);
        CoreError::UnknownOption {
            group: group.into(),
            option: option.into(),
            dir: store.describe(),
            suggestion: did_you_mean(option, known.iter().map(String::as_str)),
            known: known.join(", "),
        }
    })?;
    parse_yaml(&text, &store.display(&rel))
}

/// Loads an alg file with its `inherits:` chain merged underneath it.
fn load_alg_file(store: &dyn ConfigStore, name: &str, seen: &mut Vec<String>) -> Result<Node> {
    if seen.iter().any(|s| s == name) {
        seen.push(name.into());
        return Err(CoreError::WithContext {
            context: format!("alg/{name}.yaml"),
            message: format!("`inherits` cycle: {}", seen.join(" -> ")),
        });
    }
    seen.push(name.into());
    let mut file = read_group_file(store, "alg", name)?;
    let parents = match file.remove("inherits") {
        None => Vec::new(),
        Some(Node { value: Value::Str(s), .. }) => vec![s],
        Some(Node { value: Value::Seq(items), origin }) => items
            .into_iter()
            .map(|n| match n.value {
                Value::Str(s) => Ok(s),
                other => Err(CoreError::Structure {
                    key: "inherits".into(),
                    message: format!("expected alg file names, found {other}"),
                    origin: origin.clone(),
                }),
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(CoreError::Structure {
                key: "inherits".into(),
                message: format!("expected an alg file name or a list of them, found {}", other.value),
                origin: other.origin,
            })
        }
    };
    let mut merged = Node::empty_map(Origin::Composer);
    for parent in parents {
        merged.merge(load_alg_file(store, &parent, seen)?);
    }
    seen.pop();
    merged.merge(file);
    Ok(merged)
}

fn apply_alg(store: &dyn ConfigStore, root: &mut Node, alg: &str) -> Result<()> {
    let file = format!("{}", store.display(&format!("alg/{alg}.yaml")).display());
    let mut tree = load_alg_file(store, alg, &mut Vec::new())?;
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
    if let Some(reward) = section.remove("reward_fn") {
        root.set("reward_fn", reward, true).expect("root is a map");
    }
    section.origin = Origin::Composer;
    root.set("alg", section, true).map_err(|_| CoreError::Structure {
        key: "alg".into(),
        message: "the root config must be a map".into(),
        origin: root.origin.clone(),
    })
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

    #[test]
    fn env_keys() {
        assert_eq!(env_key("TRIL_ALG__ARGS__N_ITERS").as_deref(), Some("alg.args.n_iters"));
        assert_eq!(env_key("TRIL_CONFIG_DIR"), None);
        assert_eq!(env_key("HOME"), None);
    }
}
