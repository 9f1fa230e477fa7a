//! Property tests ("fuzzing in the repo", issue 13): the YAML reader, the override parser,
//! interpolation and composition never panic, whatever the input; bad input is a
//! `CoreError` naming where it came from.
//!
//! Each property runs a bounded number of cases (7,000 in this file, about 11,000 with
//! those of tril-tasks and tril-models); set `PROPTEST_CASES` to run more (or fewer) of
//! every property.

use std::path::Path;

use proptest::prelude::*;
use tril_core::config::{compose, compose_file, parse_yaml, resolve, to_yaml, ComposeRequest, DirStore, Node, Value};
use tril_core::CoreError;

/// `n` cases, or `PROPTEST_CASES` when set; no regression files are written into the tree
/// (regressions found are kept as plain `#[test]`s instead).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

/// Text made of YAML's structural tokens, odd scalars, anchors, tabs and unicode, so that
/// most cases get past the first line (plain arbitrary strings rarely do).
fn yaml_soup() -> impl Strategy<Value = String> {
    const TOKENS: &[&str] = &[
        "a",
        "b",
        "key",
        "0",
        "-1",
        "1e5",
        ".5",
        "0x1F",
        "true",
        "~",
        "null",
        "???",
        ": ",
        ":",
        "- ",
        "-",
        "\n",
        "\n  ",
        "\n    ",
        "\t",
        " ",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "&x ",
        "*x",
        "&y ",
        "*y",
        "*z",
        "? ",
        "|",
        ">-",
        "'",
        "\"",
        "\\",
        "#",
        "!!str ",
        "!!int ",
        "!tag ",
        "%YAML 1.2\n",
        "---\n",
        "...\n",
        "é",
        "日本",
        "\u{301}",
        "\u{0}",
        "\u{85}",
        "\u{feff}",
        "\r\n",
        "${a}",
        "${",
        "}",
        "<<: *x",
        "a.b",
        "[1, [2, {c: 3}]]",
    ];
    prop::collection::vec(prop::sample::select(TOKENS), 0..48).prop_map(|t| t.concat())
}

/// A YAML value tree: maps with any keys, lists, and every scalar type (no NaN, which is
/// not equal to itself).
fn value_tree() -> impl Strategy<Value = Value> {
    let float = any::<f64>().prop_filter("NaN", |x| !x.is_nan());
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        float.prop_map(Value::Float),
        any::<String>().prop_map(Value::Str),
        "[ -~]{0,12}".prop_map(Value::Str),
        prop::sample::select(&["true", "null", "1.0", "-", "a: b", "#x", "${a.b}", " x ", "", "~", "0x10"][..])
            .prop_map(|s| Value::Str(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let node = inner.prop_map(|v| Node::new(v, tril_core::config::Origin::Composer));
        prop_oneof![
            prop::collection::vec(node.clone(), 0..5).prop_map(Value::Seq),
            prop::collection::vec((prop_oneof!["[a-z_]{1,6}", any::<String>()], node), 0..5)
                .prop_map(|kv| Value::Map(kv.into_iter().collect())),
        ]
    })
}

/// `a` and `b` hold the same values (origins aside).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Seq(x), Value::Seq(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(&p.value, &q.value)),
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k, p), (l, q))| k == l && same(&p.value, &q.value))
        }
        (Value::Float(x), Value::Float(y)) => x == y && x.is_sign_negative() == y.is_sign_negative(),
        _ => a == b,
    }
}

fn yaml_error_names_file(err: &CoreError) -> bool {
    matches!(err, CoreError::Yaml { .. }) && err.to_string().starts_with("fuzz.yaml:")
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn yaml_reader_takes_any_text(text in any::<String>()) {
        if let Err(err) = parse_yaml(&text, Path::new("fuzz.yaml")) {
            prop_assert!(yaml_error_names_file(&err), "{err}");
        }
    }

    #[test]
    fn yaml_reader_takes_yaml_like_text(text in yaml_soup()) {
        match parse_yaml(&text, Path::new("fuzz.yaml")) {
            // What was read writes back and reads again to the same values.
            Ok(node) => {
                let again = parse_yaml(&to_yaml(&node), Path::new("again.yaml"));
                prop_assert!(again.is_ok(), "{:?} -> {:?}", to_yaml(&node), again);
                let again = again.unwrap();
                prop_assert!(same(&node.value, &again.value), "{:?}: {:?} != {:?}", to_yaml(&node), node.value, again.value);
            }
            Err(err) => prop_assert!(yaml_error_names_file(&err), "{err}"),
        }
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    /// `to_yaml` (what runs write as `config.resolved.yaml`) reads back to the same tree.
    #[test]
    fn yaml_round_trips(value in value_tree()) {
        let node = Node::new(value, tril_core::config::Origin::Composer);
        let text = to_yaml(&node);
        let back = parse_yaml(&text, Path::new("rt.yaml"));
        prop_assert!(back.is_ok(), "{text:?}: {back:?}");
        let back = back.unwrap();
        prop_assert!(same(&node.value, &back.value), "{text:?}\n{:?}\n!=\n{:?}", node.value, back.value);
    }
}

/// Override arguments: keys with dots, brackets, quotes, `+`/`++`/`~` prefixes, empty parts.
fn override_arg() -> impl Strategy<Value = String> {
    let prefix = prop::sample::select(&["", "", "+", "++", "~", "~~", "=", " "][..]);
    let key = prop::collection::vec(
        prop::sample::select(&["a", "b", "c", "x", "0", "1", ".", "..", "[0]", "'q'", "\"", " ", "é", "${a}", ""][..]),
        0..5,
    )
    .prop_map(|p| p.concat());
    let value = prop_oneof![
        Just(String::new()),
        "[ -~]{0,10}",
        any::<String>(),
        prop::sample::select(&["1", "[1, 2]", "{k: v}", "null", "'x", "[", "a: b: c", "&a 1", "*a", "${b}"][..])
            .prop_map(str::to_string),
    ];
    let eq = prop::sample::select(&["=", "=", "==", ""][..]);
    (prefix, key, eq, value).prop_map(|(p, k, e, v)| format!("{p}{k}{e}{v}"))
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn overrides_never_panic(args in prop::collection::vec(override_arg(), 0..4)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.resolved.yaml");
        std::fs::write(&path, "a: 1\nb: {c: [1, 2], d: x}\nx: ${a}\n").unwrap();
        let req = ComposeRequest { args: args.clone(), env: Vec::new() };
        if let Err(err) = compose_file(&path, &req) {
            // An override error quotes the argument it is about.
            if let CoreError::Override { arg, .. } = &err {
                prop_assert!(args.contains(arg), "{err}");
            }
        }
    }

    /// A new key added with `+` is there after composition with the value given.
    #[test]
    fn added_keys_are_set(key in "[a-z]{1,4}(\\.[a-z]{1,4}){0,2}", v in any::<i64>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "zz_present: 1\n").unwrap();
        let req = ComposeRequest { args: vec![format!("+{key}={v}")], env: Vec::new() };
        let config = compose_file(&path, &req);
        prop_assert!(config.is_ok(), "{config:?}");
        prop_assert_eq!(config.unwrap().root().get(&key).map(|n| n.value.clone()), Some(Value::Int(v)));
    }
}

/// Strings full of interpolation syntax: references to the other keys (so cycles), missing
/// keys, `env:`, `now:`, escapes, nesting and unterminated braces.
fn interpolated_text() -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "x",
        " ",
        "${a}",
        "${b}",
        "${c}",
        "${d.e}",
        "${d}",
        "${l.0}",
        "${l.9}",
        "${missing}",
        "${a.b.c}",
        "${}",
        "${ }",
        "${.}",
        "${..}",
        "${env:TRIL_FUZZ_SET}",
        "${env:TRIL_FUZZ_UNSET}",
        "${env:TRIL_FUZZ_UNSET,7}",
        "${env:}",
        "${now:%Y}",
        "${now:%Q%}",
        "${now:}",
        "${foo:bar}",
        "\\${a}",
        "${",
        "}",
        "$",
        "{",
        "${${a}}",
        "${a}${b}",
        "é",
    ];
    prop::collection::vec(prop::sample::select(PIECES), 0..6).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(cases(1500))]

    #[test]
    fn interpolation_never_panics(
        a in interpolated_text(),
        b in interpolated_text(),
        c in interpolated_text(),
        e in interpolated_text(),
    ) {
        let text = format!(
            "a: {}\nb: {}\nc: {}\nd: {{e: {}, f: 1}}\nl: [{}, 2]\n",
            quoted(&a), quoted(&b), quoted(&c), quoted(&e), quoted(&a)
        );
        let root = parse_yaml(&text, Path::new("i.yaml")).unwrap();
        let env = |v: &str| (v == "TRIL_FUZZ_SET").then(|| "${a}".to_string());
        match resolve(&root, chrono::Local::now(), &env) {
            // Resolution keeps the shape of the tree.
            Ok(out) => prop_assert_eq!(
                out.as_map().map(|m| m.keys().cloned().collect::<Vec<_>>()),
                Some(vec!["a".to_string(), "b".into(), "c".into(), "d".into(), "l".into()])
            ),
            Err(err) => prop_assert!(matches!(err, CoreError::Interpolation { .. }), "{err}"),
        }
    }
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A config directory: `config.yaml` with a defaults list, task and alg files (with
/// `inherits`, sections, `reward_fn`) drawn from small pools of good and bad files.
fn config_dir() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    let config = prop::sample::select(
        &[
            "defaults:\n  task: ???\n  alg: ???\nx: 1\n",
            "defaults:\n  task: t1\n  alg: p\nx: ${task.id}\n",
            "defaults:\n  task: t1\n",
            "defaults: [task, alg]\n",
            "defaults:\n  task: 1\n",
            "- a\n- b\n",
            "7\n",
            "",
            "defaults:\n  task: t2\n  alg: q\nreward_fn: {id: r}\n",
            // Hydra's defaults lists (TRIL's cfgs/), good and bad
            "defaults:\n  - _self_\n  - task: ???\n  - alg: ???\n  - override hydra/job_logging: disabled\nhydra:\n  run:\n    dir: out/${x}\nx: 1\n",
            "defaults:\n  - task: t1\n  - alg: p\n  - _self_\nx: ${task.id}\n",
            "defaults:\n  - _self_\n  - _self_\n  - task: t1\n",
            "defaults:\n  - {task: t1, alg: p}\n  - [1]\n  - null\n",
            "defaults:\n  - optional task: nope\n  - alg@pkg: p\n",
            "defaults:\n  - override task: t2\n  - task: t1\n  - alg: q\n",
            "defaults:\n  - task: t1\n  - alg: p\nhydra: 3\n",
        ][..],
    );
    let task = prop::sample::select(
        &[
            "task:\n  id: toy\nn: 2\n",
            "task:\n  id: 3\n",
            "task: toy\n",
            "- 1\n",
            "n: ${missing}\ntask: {id: toy}\n",
            "",
            "task: {id: toy}\nreward_fn: [1]\n",
            "# @package _global_\ntask:\n  id: toy\n",
            "# @package _group_\nid: toy\n",
            "# @package a.b\nid: toy\n",
        ][..],
    );
    let alg = prop::sample::select(
        &[
            "alg_id: p\ntoy:\n  id: p\n  lr: 0.1\n  reward_fn: {id: a}\n",
            "inherits: q\n",
            "inherits: [p, q]\ntoy: {id: p}\n",
            "inherits: p\n",
            "inherits: 5\n",
            "toy: {id: other}\n",
            "toy: 1\n",
            "- toy\n",
            "alg_id: [x]\ntoy: {id: p}\n",
            "",
            "defaults: [q, _self_]\nalg_id: p\ntoy: {id: p}\n",
            "defaults:\n  - p\n",
            "defaults: [q]\ninherits: q\n",
            "# @package _global_\nalg: {toy: {id: p}}\n",
        ][..],
    );
    (config, task.clone(), task, alg.clone(), alg).prop_map(|(c, t1, t2, p, q)| {
        vec![("config.yaml", c), ("task/t1.yaml", t1), ("task/t2.yaml", t2), ("alg/p.yaml", p), ("alg/q.yaml", q)]
    })
}

proptest! {
    #![proptest_config(cases(500))]

    #[test]
    fn composition_never_panics(
        files in config_dir(),
        choices in prop::collection::vec(prop::sample::select(&["task=t1", "task=t2", "task=nope", "alg=p", "alg=q", "alg=", "task=../x"][..]), 0..3),
        args in prop::collection::vec(override_arg(), 0..3),
        env in prop::collection::vec(("TRIL_[A-Z_]{0,6}", "[ -~]{0,6}"), 0..2),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in &files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let args: Vec<String> = choices.iter().map(|s| s.to_string()).chain(args).collect();
        let req = ComposeRequest { args: args.clone(), env };
        if let Ok(config) = compose(&DirStore::new(dir.path()), &req) {
            // The last `group=option` on the command line is the option composed.
            for (group, option) in config.choices() {
                let chosen = args.iter().rev().find_map(|a| a.strip_prefix(&format!("{group}=")));
                if let Some(chosen) = chosen {
                    prop_assert_eq!(chosen.trim(), option.as_str());
                }
            }
        }
    }
}
