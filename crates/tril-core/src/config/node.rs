//! The config tree: YAML-like values that remember where each one came from.

use indexmap::IndexMap;
use std::fmt;
use std::path::PathBuf;

/// Where a config value came from. Every error about a value names this.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A YAML file, with the 1-based line of the value when the parser gave one.
    File {
        /// Path of the file as shown to the user (relative to the config dir when embedded).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// An override given on the command line (`a.b=v`).
    CommandLine(String),
    /// An environment override (`TRIL_A__B=v`), with the variable name.
    Environment(String),
    /// Produced by the composer itself (e.g. the selected task section).
    Composer,
    /// A tril root key the config files lack (TRIL's `cfgs/` have no `device`, ...),
    /// given tril's default.
    TrilDefault,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } if *line > 0 => write!(f, "{}:{}", path.display(), line),
            Origin::File { path, .. } => write!(f, "{}", path.display()),
            Origin::CommandLine(arg) => write!(f, "command line `{arg}`"),
            Origin::Environment(var) => write!(f, "environment variable {var}"),
            Origin::Composer => write!(f, "composer"),
            Origin::TrilDefault => write!(f, "tril default (not in the config files)"),
        }
    }
}

/// A config value with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it came from.
    pub origin: Origin,
}

/// A config value. Maps keep insertion order so printed configs read like the files.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (may hold `${...}` interpolations until resolved).
    Str(String),
    /// A sequence; lists replace each other on merge.
    Seq(Vec<Node>),
    /// A mapping; maps merge deeply.
    Map(IndexMap<String, Node>),
}

impl Value {
    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "map",
        }
    }
}

impl fmt::Display for Value {
    /// Scalars print as YAML would; collections print in flow style.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", format_float(*x)),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Seq(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{}", item.value)?;
                }
                write!(f, "]")
            }
            Value::Map(map) => {
                write!(f, "{{")?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{k}: {}", v.value)?;
                }
                write!(f, "}}")
            }
        }
    }
}

/// Formats a float so that it reads back as a float (`1.0`, `1e-05`, `.inf`).
pub fn format_float(x: f64) -> String {
    if x.is_nan() {
        ".nan".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        }
    } else if x != 0.0 && (x.abs() < 1e-4 || x.abs() >= 1e16) {
        format!("{x:e}")
    } else if x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

impl Node {
    /// A node with the given value and origin.
    pub fn new(value: Value, origin: Origin) -> Self {
        Node { value, origin }
    }

    /// An empty map.
    pub fn empty_map(origin: Origin) -> Self {
        Node::new(Value::Map(IndexMap::new()), origin)
    }

    /// The map inside this node, if it is one.
    pub fn as_map(&self) -> Option<&IndexMap<String, Node>> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The mutable map inside this node, if it is one.
    pub fn as_map_mut(&mut self) -> Option<&mut IndexMap<String, Node>> {
        match &mut self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The string inside this node, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The node at a dotted path (`a.b.0.c`; numbers index lists).
    pub fn get(&self, path: &str) -> Option<&Node> {
        let mut node = self;
        for part in split_path(path) {
            node = match &node.value {
                Value::Map(m) => m.get(part)?,
                Value::Seq(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The mutable node at a dotted path.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        let mut node = self;
        for part in split_path(path) {
            node = match &mut node.value {
                Value::Map(m) => m.get_mut(part)?,
                Value::Seq(items) => items.get_mut(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Removes and returns the node at a dotted path.
    pub fn remove(&mut self, path: &str) -> Option<Node> {
        let (parent, last) = match path.rsplit_once('.') {
            Some((parent, last)) => (self.get_mut(parent)?, last),
            None => (self, path),
        };
        match &mut parent.value {
            Value::Map(m) => m.shift_remove(last),
            Value::Seq(items) => {
                let ix = last.parse::<usize>().ok()?;
                (ix < items.len()).then(|| items.remove(ix))
            }
            _ => None,
        }
    }

    /// Sets the node at a dotted path. Missing intermediate maps are created when
    /// `create` is true; otherwise the parent must exist. Returns the failing prefix
    /// of the path on error.
    pub fn set(&mut self, path: &str, value: Node, create: bool) -> Result<(), String> {
        let parts: Vec<&str> = split_path(path).collect();
        let mut node = self;
        let mut walked = String::new();
        for (i, part) in parts.iter().enumerate() {
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(part);
            let last = i + 1 == parts.len();
            node = match &mut node.value {
                Value::Map(m) => {
                    if last {
                        m.insert(part.to_string(), value);
                        return Ok(());
                    }
                    if !m.contains_key(*part) {
                        if !create {
                            return Err(walked);
                        }
                        m.insert(part.to_string(), Node::empty_map(value.origin.clone()));
                    }
                    m.get_mut(*part).expect("inserted above")
                }
                Value::Seq(items) => {
                    let ix = part.parse::<usize>().map_err(|_| walked.clone())?;
                    let slot = items.get_mut(ix).ok_or_else(|| walked.clone())?;
                    if last {
                        *slot = value;
                        return Ok(());
                    }
                    slot
                }
                _ => return Err(walked),
            };
        }
        *node = value;
        Ok(())
    }

    /// Deep-merges `other` over `self`: maps merge key by key, anything else
    /// (lists included) is replaced by `other`'s value.
    pub fn merge(&mut self, other: Node) {
        match (&mut self.value, other.value) {
            (Value::Map(base), Value::Map(over)) => {
                for (k, v) in over {
                    match base.get_mut(&k) {
                        Some(existing) => existing.merge(v),
                        None => {
                            base.insert(k, v);
                        }
                    }
                }
            }
            (_, value) => {
                self.value = value;
                self.origin = other.origin;
            }
        }
    }

    /// Visits every leaf (scalar, empty map or empty list) with its dotted path.
    pub fn visit_leaves<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a Node)) {
        match &self.value {
            Value::Map(m) if !m.is_empty() => {
                for (k, v) in m {
                    v.visit_leaves(&join_path(prefix, k), f);
                }
            }
            Value::Seq(items) if !items.is_empty() => {
                for (i, v) in items.iter().enumerate() {
                    v.visit_leaves(&join_path(prefix, &i.to_string()), f);
                }
            }
            _ => f(prefix, self),
        }
    }
}

/// Splits a dotted path into its parts (an empty path has none).
pub fn split_path(path: &str) -> impl Iterator<Item = &str> {
    path.split('.').filter(|p| !p.is_empty())
}

/// Joins a prefix and a key into a dotted path.
pub fn join_path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else if key.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(v: Value) -> Node {
        Node::new(v, Origin::Composer)
    }

    fn map(entries: Vec<(&str, Node)>) -> Node {
        leaf(Value::Map(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    }

    #[test]
    fn merge_is_deep_for_maps_and_replaces_lists() {
        let mut base = map(vec![
            ("a", map(vec![("x", leaf(Value::Int(1))), ("y", leaf(Value::Int(2)))])),
            ("l", leaf(Value::Seq(vec![leaf(Value::Int(1)), leaf(Value::Int(2))]))),
        ]);
        let over =
            map(vec![("a", map(vec![("y", leaf(Value::Int(3)))])), ("l", leaf(Value::Seq(vec![leaf(Value::Int(9))])))]);
        base.merge(over);
        assert_eq!(base.get("a.x").unwrap().value, Value::Int(1));
        assert_eq!(base.get("a.y").unwrap().value, Value::Int(3));
        assert_eq!(base.get("l").unwrap().value, Value::Seq(vec![leaf(Value::Int(9))]));
    }

    #[test]
    fn set_get_remove_paths() {
        let mut root = map(vec![]);
        assert_eq!(root.set("a.b", leaf(Value::Int(1)), false), Err("a".to_string()));
        root.set("a.b", leaf(Value::Int(1)), true).unwrap();
        root.set("a.l", leaf(Value::Seq(vec![leaf(Value::Int(0))])), false).unwrap();
        root.set("a.l.0", leaf(Value::Int(5)), false).unwrap();
        assert_eq!(root.get("a.l.0").unwrap().value, Value::Int(5));
        assert!(root.remove("a.b").is_some());
        assert!(root.get("a.b").is_none());
        assert!(root.remove("a.b").is_none());
    }

    #[test]
    fn floats_print_as_floats() {
        assert_eq!(format_float(1.0), "1.0");
        assert_eq!(format_float(1e-5), "1e-5");
        assert_eq!(format_float(0.01), "0.01");
        assert_eq!(format_float(f64::INFINITY), ".inf");
    }
}
