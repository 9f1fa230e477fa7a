//! YAML in and out of the config tree, keeping the line of every value.
//!
//! Parsing uses `yaml-rust2`'s event parser so each scalar, list and map keeps
//! the line it was written on. Plain scalars are typed with the YAML 1.2 core
//! schema plus the spellings Hydra/PyYAML users write (`True`, `1e-5`, `.01`).

use super::node::{format_float, Node, Origin, Value};
use crate::error::CoreError;
use indexmap::IndexMap;
use std::path::Path;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting of lists and maps a config may have (`[[[...]]]`); deeper input is an
/// error, not a stack overflow in the code that walks the tree.
pub(crate) const MAX_DEPTH: usize = 128;

/// Most values a document may expand to through aliases (`*a`), against "billion laughs"
/// documents whose aliases of aliases would fill the memory.
const MAX_VALUES: usize = 1_000_000;

/// Parses one YAML document into a [`Node`]; an empty document is an empty map.
pub fn parse_yaml(text: &str, file: &Path) -> Result<Node, CoreError> {
    let mut builder = Builder { file, stack: Vec::new(), anchors: Vec::new(), root: None, error: None, values: 0 };
    let mut parser = Parser::new_from_str(text);
    // Events one by one rather than `Parser::load`, which recurses once per nesting level.
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| CoreError::Yaml {
            file: file.to_path_buf(),
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
        let done = matches!(ev, Event::DocumentEnd | Event::StreamEnd);
        let opens = matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..));
        builder.on_event(ev, mark);
        if opens && builder.stack.len() > MAX_DEPTH {
            builder.fail(mark.line(), format!("lists and maps nested deeper than {MAX_DEPTH} levels"));
        }
        if done || builder.error.is_some() {
            break;
        }
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or_else(|| Node::empty_map(origin(file, 0))))
}

/// Number of values in a tree (the node itself and everything under it).
fn count_values(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count_values).sum::<usize>(),
        Value::Map(map) => 1 + map.values().map(count_values).sum::<usize>(),
        _ => 1,
    }
}

fn origin(file: &Path, line: usize) -> Origin {
    Origin::File { path: file.to_path_buf(), line }
}

enum Frame {
    Seq(Node, Vec<Node>, usize),
    Map(Node, IndexMap<String, Node>, Option<String>, usize),
}

struct Builder<'a> {
    file: &'a Path,
    stack: Vec<Frame>,
    anchors: Vec<(usize, Node, usize)>,
    root: Option<Node>,
    error: Option<CoreError>,
    /// Values built so far, aliases counted with everything they copy.
    values: usize,
}

impl Builder<'_> {
    fn fail(&mut self, line: usize, message: String) {
        if self.error.is_none() {
            self.error = Some(CoreError::Yaml { file: self.file.to_path_buf(), line, message });
        }
    }

    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.push((anchor, node.clone(), count_values(&node)));
        }
        let line = match &node.origin {
            Origin::File { line, .. } => *line,
            _ => 0,
        };
        let problem = match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                None
            }
            Some(Frame::Seq(_, items, _)) => {
                items.push(node);
                None
            }
            Some(Frame::Map(_, map, key, _)) => match key.take() {
                None => match node.value {
                    Value::Str(s) => {
                        *key = Some(s);
                        None
                    }
                    Value::Int(i) => {
                        *key = Some(i.to_string());
                        None
                    }
                    Value::Bool(b) => {
                        *key = Some(b.to_string());
                        None
                    }
                    other => Some(format!("map keys must be scalars, found a {}", other.type_name())),
                },
                Some(k) => {
                    let dup = map.contains_key(&k).then(|| format!("duplicate key `{k}`"));
                    map.insert(k, node);
                    dup
                }
            },
        };
        if let Some(message) = problem {
            self.fail(line, message);
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        self.values += 1;
        let here = origin(self.file, line);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let value = if style == TScalarStyle::Plain { plain_scalar(&text) } else { Value::Str(text) };
                self.push_value(Node::new(value, here), anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(Node::new(Value::Null, here), Vec::new(), anchor))
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(Node::new(Value::Null, here), IndexMap::new(), None, anchor))
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(mut node, items, anchor)) = self.stack.pop() {
                    node.value = Value::Seq(items);
                    self.push_value(node, anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(mut node, map, _, anchor)) = self.stack.pop() {
                    node.value = Value::Map(map);
                    self.push_value(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.iter().rev().find(|(a, _, _)| *a == id) {
                Some((_, node, n)) => {
                    self.values = self.values.saturating_add(*n);
                    if self.values > MAX_VALUES {
                        return self.fail(line, format!("aliases expand to more than {MAX_VALUES} values"));
                    }
                    let node = node.clone();
                    self.push_value(node, 0)
                }
                None => self.fail(line, format!("unknown alias #{id}")),
            },
            _ => {}
        }
    }
}

/// Types a plain (unquoted) scalar.
pub fn plain_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = text.trim_start_matches(['+', '-']);
    let starts_numeric = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if starts_numeric && !digits.contains('_') {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
        if let Some(hex) = digits.strip_prefix("0x") {
            if let Ok(i) = i64::from_str_radix(hex, 16) {
                return Value::Int(if text.starts_with('-') { -i } else { i });
            }
        }
        if digits.chars().any(|c| c.is_ascii_digit()) {
            if let Ok(x) = text.parse::<f64>() {
                return Value::Float(x);
            }
        }
    }
    Value::Str(text.to_string())
}

/// Renders a node as block-style YAML that [`parse_yaml`] reads back to the same values.
pub fn to_yaml(node: &Node) -> String {
    let mut out = String::new();
    match &node.value {
        Value::Map(m) if !m.is_empty() => write_map(m, 0, &mut out),
        Value::Seq(s) if !s.is_empty() => write_seq(s, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn write_map(map: &IndexMap<String, Node>, indent: usize, out: &mut String) {
    for (k, v) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key(k));
        out.push(':');
        write_child(&v.value, indent, out);
    }
}

fn write_seq(items: &[Node], indent: usize, out: &mut String) {
    for v in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match &v.value {
            // `- k: v` with the map's other keys aligned under the first.
            Value::Map(m) if !m.is_empty() => {
                let mut first = String::new();
                write_map(m, indent + 2, &mut first);
                out.push(' ');
                out.push_str(&first[indent + 2..]);
            }
            other => write_child(other, indent, out),
        }
    }
}

fn write_child(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Map(m) if !m.is_empty() => {
            out.push('\n');
            write_map(m, indent + 2, out);
        }
        Value::Seq(s) if !s.is_empty() => {
            out.push('\n');
            write_seq(s, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn key(k: &str) -> String {
    if matches!(plain_scalar(k), Value::Str(_)) && is_plain_safe(k) {
        k.to_string()
    } else {
        quote(k)
    }
}

/// A scalar (or empty collection) in flow form.
pub fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(x) => format_float(*x),
        Value::Str(s) => {
            if matches!(plain_scalar(s), Value::Str(_)) && is_plain_safe(s) {
                s.clone()
            } else {
                quote(s)
            }
        }
        Value::Seq(_) => "[]".into(),
        Value::Map(_) => "{}".into(),
    }
}

fn is_plain_safe(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_whitespace() || "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !s.starts_with("...")
        && !s.ends_with(char::is_whitespace)
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains(['\n', '\t', '\r'])
        && !s.ends_with(':')
}

/// `s` as a double-quoted YAML string (quotes, backslashes and control characters escaped).
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_typed_like_hydra() {
        assert_eq!(plain_scalar("True"), Value::Bool(true));
        assert_eq!(plain_scalar("1e-5"), Value::Float(1e-5));
        assert_eq!(plain_scalar(".01"), Value::Float(0.01));
        assert_eq!(plain_scalar("42"), Value::Int(42));
        assert_eq!(plain_scalar("-3"), Value::Int(-3));
        assert_eq!(plain_scalar("null"), Value::Null);
        assert_eq!(plain_scalar("gpt2"), Value::Str("gpt2".into()));
        assert_eq!(plain_scalar("1.2.3"), Value::Str("1.2.3".into()));
        assert_eq!(plain_scalar("e5"), Value::Str("e5".into()));
    }

    #[test]
    fn lines_are_kept() {
        let node = parse_yaml("a:\n  b: 1\n  c: [x, 'y']\n", Path::new("f.yaml")).unwrap();
        assert_eq!(node.get("a.b").unwrap().origin, origin(Path::new("f.yaml"), 2));
        assert_eq!(node.get("a.c.1").unwrap().value, Value::Str("y".into()));
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let err = parse_yaml("a: 1\nb: [1, 2\nc: 3\n", Path::new("bad.yaml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bad.yaml:"), "{msg}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse_yaml("a: 1\na: 2\n", Path::new("dup.yaml")).unwrap_err();
        assert!(err.to_string().contains("duplicate key `a`"), "{err}");
        assert!(err.to_string().contains("dup.yaml:2"), "{err}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for text in ["[".repeat(100_000), "{a: ".repeat(100_000), "- ".repeat(100_000)] {
            let err = parse_yaml(&text, Path::new("deep.yaml")).unwrap_err().to_string();
            assert!(err.starts_with("deep.yaml:"), "{err}");
        }
    }

    #[test]
    fn aliases_of_aliases_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text += &format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n");
        }
        let err = parse_yaml(&text, Path::new("laughs.yaml")).unwrap_err().to_string();
        assert!(err.contains("aliases expand to more than 1000000 values"), "{err}");
        let node = parse_yaml("a: &x {k: [1, 2]}\nb: *x\n", Path::new("ok.yaml")).unwrap();
        assert_eq!(node.get("b.k.1").unwrap().value, Value::Int(2));
    }

    /// Found by tests/fuzz.rs: `... [a` was written plain and read back as a document end.
    #[test]
    fn document_markers_are_quoted() {
        let node = parse_yaml("\n  ...\n[a", Path::new("f.yaml")).unwrap();
        assert_eq!(node.value, Value::Str("... [a".into()));
        let again = parse_yaml(&to_yaml(&node), Path::new("g.yaml")).unwrap();
        assert_eq!(again.value, node.value);
    }

    #[test]
    fn emit_round_trips() {
        let text =
            "a:\n  b: 1\n  c:\n  - x\n  - \"1.0\"\n  - 1.0\n  d: {}\n  e: \"has: colon\"\n  f: null\n  g: 1e-5\n";
        let node = parse_yaml(text, Path::new("f.yaml")).unwrap();
        let again = parse_yaml(&to_yaml(&node), Path::new("g.yaml")).unwrap();
        let mut a = Vec::new();
        node.visit_leaves("", &mut |p, n| a.push((p.to_string(), n.value.clone())));
        let mut b = Vec::new();
        again.visit_leaves("", &mut |p, n| b.push((p.to_string(), n.value.clone())));
        assert_eq!(a, b);
    }
}
