//! `${...}` interpolation, resolved last, against the root of the composed tree.
//!
//! Forms: `${a.b.c}` (a key of the root; a whole-string interpolation keeps the
//! target's type, so `${sampling.train_generation_kwargs}` copies a map),
//! `${env:VAR}` / `${env:VAR,default}` and `${now:%Y-%m-%d_%H-%M-%S}`.
//! `\${` writes a literal `${`. Missing keys and cycles are errors naming the chain.

use super::node::{split_path, Node, Value};
use crate::error::CoreError;
use chrono::{DateTime, Local};
use std::collections::HashMap;

/// Resolves every interpolation in `root`. `now` is fixed once so all `${now:...}` agree;
/// `env` looks up environment variables (injected for tests).
pub fn resolve(root: &Node, now: DateTime<Local>, env: &dyn Fn(&str) -> Option<String>) -> Result<Node, CoreError> {
    let mut ctx = Ctx { root, now, env, memo: HashMap::new(), stack: Vec::new(), copied: 0 };
    ctx.resolve_node(root, "")
}

/// Most values and string bytes interpolations may copy in all (`b: [${a}, ${a}]`,
/// `c: [${b}, ${b}]`, ... doubles at each key): more is an error, not a memory blow-up.
const MAX_COPIED: usize = 4 << 20;

/// Longest chain of keys an interpolation may follow (`a: ${b}`, `b: ${c}`, ...): deeper
/// chains are errors, not stack overflows.
const MAX_DEPTH: usize = 64;

struct Ctx<'a> {
    root: &'a Node,
    now: DateTime<Local>,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Resolved targets and their size (values plus string bytes).
    memo: HashMap<String, (Node, usize)>,
    stack: Vec<String>,
    /// Size of everything copied so far, against [`MAX_COPIED`].
    copied: usize,
}

enum Piece<'s> {
    Text(String),
    Expr(&'s str),
}

/// Splits a string into literal text and `${...}` expressions.
fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest[..pos].ends_with('\\') {
            text.push_str(&rest[..pos - 1]);
            text.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        text.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after.find('}').ok_or_else(|| "unterminated `${`".to_string())?;
        let expr = &after[..end];
        if expr.contains("${") {
            return Err("nested interpolations are not supported".into());
        }
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        out.push(Piece::Expr(expr.trim()));
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// Values plus string bytes of a tree.
fn size(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        Value::Map(map) => 1 + map.iter().map(|(k, v)| k.len() + size(v)).sum::<usize>(),
        Value::Str(s) => 1 + s.len(),
        _ => 1,
    }
}

fn has_interpolation(s: &str) -> bool {
    s.contains("${")
}

impl Ctx<'_> {
    fn resolve_node(&mut self, node: &Node, path: &str) -> Result<Node, CoreError> {
        let value = match &node.value {
            Value::Map(m) => {
                let mut out = indexmap::IndexMap::new();
                for (k, v) in m {
                    out.insert(k.clone(), self.resolve_node(v, &super::node::join_path(path, k))?);
                }
                Value::Map(out)
            }
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    out.push(self.resolve_node(v, &super::node::join_path(path, &i.to_string()))?);
                }
                Value::Seq(out)
            }
            Value::Str(s) if has_interpolation(s) || s.contains("\\${") => return self.resolve_string(node, s, path),
            other => other.clone(),
        };
        Ok(Node::new(value, node.origin.clone()))
    }

    fn error(&self, node: &Node, path: &str, expr: &str, message: String) -> CoreError {
        let mut chain = self.stack.clone();
        if chain.last().map(String::as_str) != Some(path) {
            chain.push(path.to_string());
        }
        CoreError::Interpolation {
            key: path.to_string(),
            expr: format!("${{{expr}}}"),
            message,
            chain: chain.join(" -> "),
            origin: node.origin.clone(),
        }
    }

    fn resolve_string(&mut self, node: &Node, s: &str, path: &str) -> Result<Node, CoreError> {
        let parts = pieces(s).map_err(|m| self.error(node, path, s, m))?;
        if let [Piece::Expr(expr)] = parts.as_slice() {
            let value = self.eval(node, path, expr)?;
            return Ok(Node::new(value.value, node.origin.clone()));
        }
        let mut out = String::new();
        for part in parts {
            match part {
                Piece::Text(t) => out.push_str(&t),
                Piece::Expr(expr) => {
                    let value = self.eval(node, path, expr)?;
                    match value.value {
                        Value::Str(s) => out.push_str(&s),
                        Value::Map(_) | Value::Seq(_) => {
                            let msg = format!("a {} cannot be embedded in a string", value.value.type_name());
                            return Err(self.error(node, path, expr, msg));
                        }
                        scalar => out.push_str(&super::yaml::scalar(&scalar)),
                    }
                }
            }
        }
        Ok(Node::new(Value::Str(out), node.origin.clone()))
    }

    fn eval(&mut self, node: &Node, path: &str, expr: &str) -> Result<Node, CoreError> {
        if let Some(spec) = expr.strip_prefix("env:") {
            let (var, default) = match spec.split_once(',') {
                Some((v, d)) => (v.trim(), Some(d.trim())),
                None => (spec.trim(), None),
            };
            return match ((self.env)(var), default) {
                (Some(v), _) => Ok(Node::new(super::yaml::plain_scalar(&v), node.origin.clone())),
                (None, Some(d)) => Ok(Node::new(super::yaml::plain_scalar(d), node.origin.clone())),
                (None, None) => Err(self.error(node, path, expr, format!("environment variable {var} is not set"))),
            };
        }
        if let Some(fmt) = expr.strip_prefix("now:") {
            use std::fmt::Write;
            let mut s = String::new();
            if write!(s, "{}", self.now.format(fmt)).is_err() {
                return Err(self.error(node, path, expr, format!("invalid time format `{fmt}`")));
            }
            return Ok(Node::new(Value::Str(s), node.origin.clone()));
        }
        if expr.is_empty() || expr.contains(':') {
            return Err(self.error(node, path, expr, "expected a key path, `env:VAR` or `now:FORMAT`".into()));
        }
        let pushed = self.stack.last().map(String::as_str) != Some(path);
        if pushed {
            self.stack.push(path.to_string());
        }
        let result = self.lookup(node, expr);
        if pushed {
            self.stack.pop();
        }
        result
    }

    /// An error when resolving `key` (on the way to `target`) would loop back into a key
    /// being resolved, or when the chain of keys is deeper than [`MAX_DEPTH`].
    fn check_cycle(&self, from: &Node, target: &str, key: &str) -> Result<(), CoreError> {
        let message = if self.stack.iter().any(|k| k == key) {
            "interpolation cycle".to_string()
        } else if self.stack.len() >= MAX_DEPTH {
            format!("interpolation chain deeper than {MAX_DEPTH} keys")
        } else {
            return Ok(());
        };
        let mut chain = self.stack.clone();
        chain.push(key.to_string());
        Err(CoreError::Interpolation {
            key: self.stack.first().cloned().unwrap_or_default(),
            expr: format!("${{{target}}}"),
            message,
            chain: chain.join(" -> "),
            origin: from.origin.clone(),
        })
    }

    /// Finds and resolves the node at `target`, following interpolations met on the way.
    fn lookup(&mut self, from: &Node, target: &str) -> Result<Node, CoreError> {
        if let Some((done, size)) = self.memo.get(target) {
            let (done, size) = (done.clone(), *size);
            self.copy(from, target, size)?;
            return Ok(done);
        }
        self.check_cycle(from, target, target)?;
        let mut current = self.root.clone();
        let mut walked = String::new();
        for part in split_path(target) {
            walked = super::node::join_path(&walked, part);
            let child = match &current.value {
                Value::Map(m) => m.get(part).cloned(),
                Value::Seq(items) => part.parse::<usize>().ok().and_then(|i| items.get(i).cloned()),
                _ => None,
            };
            let Some(child) = child else {
                let key = self.stack.last().cloned().unwrap_or_default();
                return Err(self.error(from, &key, target, format!("key `{walked}` not found")));
            };
            current = match &child.value {
                Value::Str(s) if has_interpolation(s) && walked != target => {
                    // `a: ${a.b}` passes through `a` itself on the way to `a.b`.
                    self.check_cycle(from, target, &walked)?;
                    self.stack.push(walked.clone());
                    let resolved = self.resolve_node(&child, &walked);
                    self.stack.pop();
                    resolved?
                }
                _ => child,
            };
        }
        self.stack.push(target.to_string());
        let resolved = self.resolve_node(&current, target);
        self.stack.pop();
        let resolved = resolved?;
        let size = size(&resolved);
        self.copy(from, target, size)?;
        self.memo.insert(target.to_string(), (resolved.clone(), size));
        Ok(resolved)
    }

    /// Counts a copy of `size` against [`MAX_COPIED`].
    fn copy(&mut self, from: &Node, target: &str, size: usize) -> Result<(), CoreError> {
        self.copied = self.copied.saturating_add(size);
        if self.copied <= MAX_COPIED {
            return Ok(());
        }
        let key = self.stack.first().cloned().unwrap_or_default();
        let message = format!("interpolations copy more than {MAX_COPIED} values and string bytes");
        Err(self.error(from, &key, target, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse_yaml;
    use std::path::Path;

    fn run(text: &str) -> Result<Node, CoreError> {
        let root = parse_yaml(text, Path::new("t.yaml")).unwrap();
        let env = |v: &str| (v == "HOME_X").then(|| "/home/x".to_string());
        resolve(&root, Local::now(), &env)
    }

    #[test]
    fn whole_string_keeps_type_and_maps_copy() {
        let out = run("s: {n: 3, kw: {k: 1}}\na: ${s.n}\nb: ${s.kw}\nc: x${s.n}y\n").unwrap();
        assert_eq!(out.get("a").unwrap().value, Value::Int(3));
        assert_eq!(out.get("b.k").unwrap().value, Value::Int(1));
        assert_eq!(out.get("c").unwrap().value, Value::Str("x3y".into()));
    }

    #[test]
    fn chains_through_interpolated_maps() {
        let out = run("s: {kw: {k: 1}}\np: {g: '${s.kw}'}\nq: ${p.g.k}\n").unwrap();
        assert_eq!(out.get("q").unwrap().value, Value::Int(1));
    }

    #[test]
    fn env_now_and_escape() {
        let out = run("a: ${env:HOME_X}\nb: ${env:NOPE,7}\nc: '${now:%Y}'\nd: 'lit \\${x}'\n").unwrap();
        assert_eq!(out.get("a").unwrap().value, Value::Str("/home/x".into()));
        assert_eq!(out.get("b").unwrap().value, Value::Int(7));
        assert!(matches!(&out.get("c").unwrap().value, Value::Str(s) if s.len() == 4));
        assert_eq!(out.get("d").unwrap().value, Value::Str("lit ${x}".into()));
        let err = run("a: ${env:NOPE}\n").unwrap_err().to_string();
        assert!(err.contains("NOPE is not set") && err.contains("t.yaml:1"), "{err}");
    }

    #[test]
    fn missing_key_names_chain_and_source() {
        let err = run("a: 1\nb: ${c.d}\n").unwrap_err().to_string();
        assert!(err.contains("b: cannot resolve `${c.d}`"), "{err}");
        assert!(err.contains("key `c` not found"), "{err}");
        assert!(err.contains("t.yaml:2"), "{err}");
    }

    /// Found by tests/fuzz.rs: `a: ${a.b}` looped through `a` until the stack overflowed.
    #[test]
    fn cycle_through_a_prefix_is_an_error() {
        let err = run("a: ${a.b.c}\n").unwrap_err().to_string();
        assert!(err.contains("interpolation cycle") && err.contains("a -> a"), "{err}");
        let err = run("l: ['${l.0.x}']\n").unwrap_err().to_string();
        assert!(err.contains("interpolation cycle"), "{err}");
    }

    #[test]
    fn deep_chains_are_errors_not_stack_overflows() {
        let text: String = (0..5000).map(|i| format!("k{i}: ${{k{}}}\n", i + 1)).collect::<String>() + "k5000: 1\n";
        let err = run(&text).unwrap_err().to_string();
        assert!(err.contains("interpolation chain deeper than 64 keys"), "{err}");
        let text: String = (0..40).map(|i| format!("k{i}: ${{k{}}}\n", i + 1)).collect::<String>() + "k40: 1\n";
        assert_eq!(run(&text).unwrap().get("k0").unwrap().value, Value::Int(1));
    }

    #[test]
    fn copies_of_copies_are_bounded() {
        let mut text = String::from("s0: xxxxxxxxxxxxxxxx\n");
        for i in 1..40 {
            text += &format!("s{i}: ${{s{}}}${{s{}}}\n", i - 1, i - 1);
        }
        let err = run(&text).unwrap_err().to_string();
        assert!(err.contains("interpolations copy more than 4194304 values and string bytes"), "{err}");
        let mut text = String::from("l0: [1, 2]\n");
        for i in 1..40 {
            text += &format!("l{i}: ['${{l{}}}', '${{l{}}}']\n", i - 1, i - 1);
        }
        assert!(run(&text).unwrap_err().to_string().contains("interpolations copy more than"));
    }

    #[test]
    fn cycles_are_errors_naming_the_chain() {
        let err = run("a: ${b}\nb: ${c}\nc: ${a}\n").unwrap_err().to_string();
        assert!(err.contains("interpolation cycle"), "{err}");
        assert!(err.contains("a -> b -> c -> a"), "{err}");
    }
}
