//! The composed, resolved config and typed extraction from it (on Figment).
//!
//! Typed config structs are plain serde types with `deny_unknown_fields`, placed
//! beside the code that reads them. [`Section::extract`] deserializes one through
//! Figment and turns any failure into a [`CoreError`] naming the dotted key, the
//! offending value and the file:line (or command line / environment) it came from.

use super::node::{join_path, Node, Origin, Value};
use super::yaml::to_yaml;
use crate::error::{did_you_mean, CoreError, Result};
use figment::value::{Dict, Empty, Num, Tag, Value as FValue};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;

/// A fully composed and interpolated config tree, with the group choices that made it.
#[derive(Debug, Clone)]
pub struct Config {
    root: Node,
    choices: Vec<(String, String)>,
    notes: Vec<String>,
}

impl Config {
    /// Wraps a resolved tree.
    pub fn new(root: Node, choices: Vec<(String, String)>) -> Self {
        Config { root, choices, notes: Vec::new() }
    }

    /// The same config with notes from composition (see [`Config::notes`]).
    pub fn with_notes(self, notes: Vec<String>) -> Self {
        Config { notes, ..self }
    }

    /// Notes composition left for the user (e.g. skipped `override hydra/...` entries).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The root node.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The `group=option` choices (`task=imdb`, `alg=ppo`, ...), in config.yaml order.
    pub fn choices(&self) -> &[(String, String)] {
        &self.choices
    }

    /// The section at a dotted key (`""` is the root).
    pub fn section(&self, key: &str) -> Result<Section<'_>> {
        let node = self
            .root
            .get(key)
            .ok_or_else(|| CoreError::MissingKey { key: key.to_string(), origin: self.root.origin.clone() })?;
        Ok(Section::new(key, node))
    }

    /// The section at a key, or `None` when it is absent or null.
    pub fn optional_section(&self, key: &str) -> Option<Section<'_>> {
        self.root.get(key).filter(|n| n.value != Value::Null).map(|node| Section::new(key, node))
    }

    /// Deserializes the value at `key` into `T`.
    pub fn extract<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        self.section(key)?.extract()
    }

    /// The config as YAML (what `tril config` prints and runs save as `config.resolved.yaml`).
    pub fn to_yaml(&self) -> String {
        to_yaml(&self.root)
    }

    /// One line per leaf: `key: value  # origin`.
    pub fn provenance(&self) -> String {
        let mut lines = Vec::new();
        self.root.visit_leaves("", &mut |path, node| {
            lines.push(format!("{path}: {}  # {}", super::yaml::scalar(&node.value), node.origin));
        });
        lines.join("\n") + "\n"
    }
}

/// A subtree of the config with its dotted key, handed to plugin builders.
#[derive(Debug, Clone)]
pub struct Section<'a> {
    key: String,
    node: &'a Node,
    /// Where to point errors about a section that is absent (e.g. a missing `args:`).
    absent_origin: Option<Origin>,
}

impl<'a> Section<'a> {
    /// A section over any node, named by `key` in messages.
    pub fn new(key: impl Into<String>, node: &'a Node) -> Self {
        Section { key: key.into(), node, absent_origin: None }
    }

    /// A stand-in for an absent section: a null node whose errors point at `origin`.
    pub fn absent(key: impl Into<String>, origin: Origin) -> Self {
        static NULL: Node = Node { value: Value::Null, origin: Origin::Composer };
        Section { key: key.into(), node: &NULL, absent_origin: Some(origin) }
    }

    /// The same node named `key.suffix` in messages.
    pub fn with_suffix(self, suffix: &str) -> Self {
        Section { key: join_path(&self.key, suffix), ..self }
    }

    /// The dotted key of this section.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The node.
    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// Where this section came from (for an absent section, where its errors point).
    pub fn origin(&self) -> &Origin {
        self.absent_origin.as_ref().unwrap_or(&self.node.origin)
    }

    /// A string field of this section (e.g. `id`), with its origin.
    pub fn string(&self, field: &str) -> Result<(String, Origin)> {
        match self.node.get(field) {
            Some(Node { value: Value::Str(s), origin }) => Ok((s.clone(), origin.clone())),
            Some(other) => Err(CoreError::InvalidValue {
                key: join_path(&self.key, field),
                value: other.value.to_string(),
                message: "expected a string".into(),
                origin: other.origin.clone(),
            }),
            None => Err(CoreError::MissingKey { key: join_path(&self.key, field), origin: self.node.origin.clone() }),
        }
    }

    /// Deserializes this section into `T`; a missing or null section reads as an empty map
    /// so that all-default configs need no `args:`.
    pub fn extract<T: DeserializeOwned>(&self) -> Result<T> {
        let mut wrapper = Dict::new();
        let value = match &self.node.value {
            Value::Null => FValue::Dict(Tag::Default, Dict::new()),
            _ => to_figment(self.node),
        };
        wrapper.insert("v".to_string(), value);
        Figment::from(DictProvider(wrapper)).extract_inner::<T>("v").map_err(|e| self.map_error(e))
    }

    fn map_error(&self, err: figment::Error) -> CoreError {
        use figment::error::Kind;
        // `extract_inner("v")` appends `v` after the path inside the value.
        let mut rel: Vec<String> = err.path.iter().filter(|p| !p.is_empty()).cloned().collect();
        if rel.last().map(String::as_str) == Some("v") {
            rel.pop();
        }
        // Figment puts the unknown/missing field itself at the end of the path.
        if let Kind::UnknownField(field, _) | Kind::MissingField(std::borrow::Cow::Owned(field)) = &err.kind {
            if rel.last() == Some(field) {
                rel.pop();
            }
        }
        if let Kind::MissingField(std::borrow::Cow::Borrowed(field)) = &err.kind {
            if rel.last().map(String::as_str) == Some(*field) {
                rel.pop();
            }
        }
        let rel = rel.join(".");
        let key = join_path(&self.key, &rel);
        let node = self.node.get(&rel).unwrap_or(self.node);
        let value = || node.value.to_string();
        let origin = match (&node.value, &self.absent_origin) {
            (Value::Null, Some(origin)) => origin.clone(),
            _ => node.origin.clone(),
        };
        match err.kind {
            Kind::UnknownField(field, expected) => CoreError::UnknownKey {
                key: join_path(&key, &field),
                expected: expected.join(", "),
                suggestion: did_you_mean(&field, expected.iter().copied()),
                origin: node.get(&field).map_or(origin, |n| n.origin.clone()),
            },
            Kind::MissingField(field) => CoreError::MissingKey { key: join_path(&key, &field), origin },
            Kind::InvalidType(_, expected) => {
                CoreError::InvalidValue { key, value: value(), message: format!("expected {expected}"), origin }
            }
            Kind::InvalidValue(_, expected) => {
                CoreError::InvalidValue { key, value: value(), message: format!("expected {expected}"), origin }
            }
            Kind::UnknownVariant(variant, expected) => CoreError::InvalidValue {
                key,
                value: format!("{variant:?}"),
                message: format!(
                    "expected one of {}{}",
                    expected.join(", "),
                    did_you_mean(&variant, expected.iter().copied())
                ),
                origin,
            },
            other => CoreError::InvalidValue { key, value: value(), message: other.to_string(), origin },
        }
    }
}

struct DictProvider(Dict);

impl Provider for DictProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named("tril config")
    }

    fn data(&self) -> std::result::Result<figment::value::Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

fn to_figment(node: &Node) -> FValue {
    match &node.value {
        Value::Null => FValue::Empty(Tag::Default, Empty::None),
        Value::Bool(b) => FValue::Bool(Tag::Default, *b),
        Value::Int(i) => FValue::Num(Tag::Default, Num::I64(*i)),
        Value::Float(x) => FValue::Num(Tag::Default, Num::F64(*x)),
        Value::Str(s) => FValue::String(Tag::Default, s.clone()),
        Value::Seq(items) => FValue::Array(Tag::Default, items.iter().map(to_figment).collect()),
        Value::Map(m) => FValue::Dict(Tag::Default, m.iter().map(|(k, v)| (k.clone(), to_figment(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse_yaml;
    use serde::Deserialize;
    use std::path::Path;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Args {
        n_iters: u32,
        #[serde(default)]
        lr: f64,
        side: Option<Side>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Side {
        Left,
        Right,
    }

    fn config(text: &str) -> Config {
        Config::new(parse_yaml(text, Path::new("alg/ppo.yaml")).unwrap(), vec![])
    }

    #[test]
    fn extracts_typed_values() {
        let c = config("alg:\n  args:\n    n_iters: 7\n    lr: 1e-5\n    side: left\n");
        let args: Args = c.extract("alg.args").unwrap();
        assert_eq!(args.n_iters, 7);
        assert_eq!(args.lr, 1e-5);
        assert_eq!(args.side, Some(Side::Left));
    }

    #[test]
    fn unknown_key_names_key_suggestion_and_line() {
        let c = config("alg:\n  args:\n    n_iters: 7\n    n_iter: 3\n");
        let err = c.extract::<Args>("alg.args").unwrap_err().to_string();
        assert!(err.contains("alg.args.n_iter: unknown key; did you mean `n_iters`?"), "{err}");
        assert!(err.contains("alg/ppo.yaml:4"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_value_and_line() {
        let c = config("alg:\n  args:\n    n_iters: many\n");
        let err = c.extract::<Args>("alg.args").unwrap_err().to_string();
        assert!(err.contains("alg.args.n_iters"), "{err}");
        assert!(err.contains("\"many\""), "{err}");
        assert!(err.contains("alg/ppo.yaml:3"), "{err}");
    }

    #[test]
    fn bad_variant_and_missing_key() {
        let c = config("alg:\n  args:\n    n_iters: 1\n    side: lefft\n");
        let err = c.extract::<Args>("alg.args").unwrap_err().to_string();
        assert!(err.contains("alg.args.side") && err.contains("did you mean `left`"), "{err}");
        let c = config("alg:\n  args:\n    lr: 1.0\n");
        let err = c.extract::<Args>("alg.args").unwrap_err().to_string();
        assert!(err.contains("alg.args.n_iters: missing required key"), "{err}");
    }
}
