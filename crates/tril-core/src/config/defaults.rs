//! The two readers of a config file's defaults: tril's form and Hydra's defaults list.
//!
//! Both produce the same [`Defaults`], an ordered list of [`Entry`]s the composer walks:
//!
//! - **tril's form.** `config.yaml` has a `defaults:` *map* `group: option` (`???`: chosen
//!   on the command line); the file's own keys sit below every group (as `_self_` first).
//!   A group file may say `inherits: ppo` (or a list): those files of its group first,
//!   then the file itself.
//! - **Hydra's form** (TRIL's `cfgs/` as they are). `defaults:` is a *list*: `_self_`
//!   (where the file's own keys go: first, below the groups, or last, above them;
//!   absent: last, as Hydra 1.1+), `group: option`, `group: ???`, `group: null`
//!   (disabled), `optional group: option`, `override group: option` (changes an earlier
//!   entry's choice), and a bare `name` (the config `name` of the same group:
//!   `defaults: [ppo, _self_]` in `alg/gail.yaml` reads `alg/ppo.yaml` under it).
//!   `override hydra/...` and `hydra/...` entries configure Hydra's own runtime, which
//!   tril does not have: they are skipped with one note.
//!
//! The form is told by the type of `defaults:` (map: tril's; list: Hydra's).

use super::node::{Node, Origin, Value};
use crate::error::{CoreError, Result};
use std::path::Path;

/// Which of the two forms a directory's `config.yaml` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// tril's own: a `defaults:` map, `inherits:` in group files.
    Tril,
    /// Hydra's: a `defaults:` list with `_self_`.
    Hydra,
}

/// What a group entry chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `???`: must be chosen on the command line.
    Mandatory,
    /// `null`: the group is left out.
    Disabled,
    /// A config name of the group.
    Option(String),
}

/// One entry of a defaults list, in composition order.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// `_self_`: the file's own keys.
    SelfKeys,
    /// `group: option`: one config of a group (`optional`: a missing file is skipped).
    Group {
        /// The group path (`task`, `alg`, `db/mysql`).
        group: String,
        /// What it chooses.
        choice: Choice,
        /// `optional group: option`.
        optional: bool,
        /// Where the entry was written.
        origin: Origin,
    },
    /// A bare `name`: the config `<group of this file>/name.yaml` (`inherits: name`).
    Config {
        /// The config's name.
        name: String,
        /// Where the entry was written.
        origin: Origin,
    },
}

/// The defaults of one file, read by either reader.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The form they were written in.
    pub form: Form,
    /// The entries in composition order (`_self_` included exactly once).
    pub entries: Vec<Entry>,
    /// The key they were read from (`defaults` or `inherits`), for messages.
    pub key: &'static str,
    /// Hydra runtime entries (`override hydra/job_logging: disabled`) that were skipped.
    pub ignored: Vec<String>,
}

/// Takes the defaults out of a primary config (`config.yaml`). No `defaults:` at all
/// reads as tril's form with no groups.
pub fn take_primary(root: &mut Node, file: &Path) -> Result<Defaults> {
    let Some(defaults) = root.remove("defaults") else {
        return Ok(Defaults { form: Form::Tril, entries: vec![Entry::SelfKeys], key: "defaults", ignored: Vec::new() });
    };
    match defaults.value {
        Value::Map(map) => read_map(map, file),
        Value::Seq(items) => read_list(items, "", file),
        other => Err(CoreError::Structure {
            key: "defaults".into(),
            message: format!(
                "expected a map of group: option (tril's form) or a Hydra defaults list, found a {} in {}",
                other.type_name(),
                file.display()
            ),
            origin: defaults.origin,
        }),
    }
}

/// Takes the defaults out of a group file (`alg/gail.yaml` in `group` `alg`): a Hydra
/// `defaults:` list or tril's `inherits:`; neither means just the file itself.
pub fn take_group(node: &mut Node, group: &str, file: &Path) -> Result<Defaults> {
    let defaults = node.remove("defaults");
    let inherits = node.remove("inherits");
    match (defaults, inherits) {
        (None, None) => {
            Ok(Defaults { form: Form::Tril, entries: vec![Entry::SelfKeys], key: "inherits", ignored: Vec::new() })
        }
        (Some(d), Some(_)) => Err(CoreError::Structure {
            key: "inherits".into(),
            message: format!("{} has both `defaults:` and `inherits:`; keep one", file.display()),
            origin: d.origin,
        }),
        (Some(Node { value: Value::Seq(items), .. }), None) => read_list(items, group, file),
        (Some(other), None) => Err(CoreError::Structure {
            key: "defaults".into(),
            message: format!("expected a defaults list in {}, found a {}", file.display(), other.value.type_name()),
            origin: other.origin,
        }),
        (None, Some(inherits)) => read_inherits(inherits, file),
    }
}

/// tril's `defaults:` map: the file's own keys first, then each group in order.
fn read_map(map: indexmap::IndexMap<String, Node>, file: &Path) -> Result<Defaults> {
    let mut entries = vec![Entry::SelfKeys];
    for (group, option) in map {
        let choice = match &option.value {
            Value::Str(s) if s == "???" => Choice::Mandatory,
            Value::Str(s) => Choice::Option(s.clone()),
            other => {
                return Err(CoreError::Structure {
                    key: format!("defaults.{group}"),
                    message: format!("expected an option name or ???, found {other} in {}", file.display()),
                    origin: option.origin.clone(),
                })
            }
        };
        entries.push(Entry::Group { group, choice, optional: false, origin: option.origin });
    }
    Ok(Defaults { form: Form::Tril, entries, key: "defaults", ignored: Vec::new() })
}

/// tril's `inherits: name` or `inherits: [a, b]`: those configs, then the file itself.
fn read_inherits(inherits: Node, file: &Path) -> Result<Defaults> {
    let bad = |found: &Value, origin: &Origin| CoreError::Structure {
        key: "inherits".into(),
        message: format!(
            "expected a file name of the same group or a list of them, found {found} in {}",
            file.display()
        ),
        origin: origin.clone(),
    };
    let items = match inherits.value {
        Value::Str(_) => vec![inherits],
        Value::Seq(items) => items,
        other => return Err(bad(&other, &inherits.origin)),
    };
    let mut entries = Vec::new();
    for item in items {
        match item.value {
            Value::Str(name) => entries.push(Entry::Config { name, origin: item.origin }),
            other => return Err(bad(&other, &item.origin)),
        }
    }
    entries.push(Entry::SelfKeys);
    Ok(Defaults { form: Form::Tril, entries, key: "inherits", ignored: Vec::new() })
}

/// Hydra's defaults list of a file in `group` (`""` for the primary config).
fn read_list(items: Vec<Node>, group: &str, file: &Path) -> Result<Defaults> {
    let mut out = Defaults { form: Form::Hydra, entries: Vec::new(), key: "defaults", ignored: Vec::new() };
    for (i, item) in items.into_iter().enumerate() {
        let malformed = |what: &str, found: &Value| {
            CoreError::Structure {
            key: format!("defaults[{i}]"),
            message: format!(
                "{what}: found `{found}` in {}; expected `_self_`, `name`, `group: option`, `group: ???`, `group: null`, `optional group: option` or `override group: option`",
                file.display()
            ),
            origin: item.origin.clone(),
        }
        };
        match &item.value {
            Value::Str(s) if s == "_self_" => {
                if out.entries.contains(&Entry::SelfKeys) {
                    return Err(malformed("`_self_` appears twice", &item.value));
                }
                out.entries.push(Entry::SelfKeys);
            }
            Value::Str(name) if is_name(name) => {
                out.entries.push(Entry::Config { name: name.clone(), origin: item.origin.clone() })
            }
            Value::Map(map) if map.len() == 1 => {
                let Some((key, option)) = map.iter().next() else { continue };
                let words: Vec<&str> = key.split_whitespace().collect();
                let (keyword, name) = match words.as_slice() {
                    [name] => ("", *name),
                    [kw @ ("override" | "optional"), name] => (*kw, *name),
                    _ => return Err(malformed("unknown keyword", &item.value)),
                };
                if name == "hydra" || name.starts_with("hydra/") {
                    out.ignored.push(format!("{key}: {}", super::yaml::scalar(&option.value)));
                    continue;
                }
                if name.contains('@') || !is_name(name.trim_start_matches('/')) {
                    return Err(malformed("packages (`group@pkg`) and odd group names are not supported", &item.value));
                }
                let choice = match &option.value {
                    Value::Str(s) if s == "???" => Choice::Mandatory,
                    Value::Str(s) => Choice::Option(s.clone()),
                    Value::Null => Choice::Disabled,
                    _ => return Err(malformed("expected one option name, ??? or null", &item.value)),
                };
                let path = match name.strip_prefix('/') {
                    Some(abs) => abs.to_string(),
                    None if group.is_empty() => name.to_string(),
                    None => format!("{group}/{name}"),
                };
                if keyword == "override" {
                    let earlier = out.entries.iter_mut().find_map(|e| match e {
                        Entry::Group { group: g, choice: c, .. } if *g == path => Some(c),
                        _ => None,
                    });
                    match earlier {
                        Some(c) => *c = choice,
                        None => {
                            return Err(malformed(
                                &format!("`override` of `{path}`, which no earlier entry names"),
                                &item.value,
                            ))
                        }
                    }
                    continue;
                }
                let origin = item.origin.clone();
                out.entries.push(Entry::Group { group: path, choice, optional: keyword == "optional", origin });
            }
            other => return Err(malformed("malformed entry", other)),
        }
    }
    if !out.entries.contains(&Entry::SelfKeys) {
        // Hydra 1.1+: a defaults list without `_self_` composes the file's keys last.
        out.entries.push(Entry::SelfKeys);
    }
    Ok(out)
}

/// A config or group name: letters, digits, `_`, `-`, `.` and `/`.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || "_-./".contains(c))
}

/// The `# @package <pkg>` header of a config file (in its leading comment lines), if any.
pub fn package_header(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let comment = line.strip_prefix('#')?;
        if let Some(pkg) = comment.trim().strip_prefix("@package") {
            return Some(pkg.trim().to_string());
        }
    }
    None
}

/// Where a group file's keys go in the tree (`""`: the root). A `# @package` header wins
/// (`_global_`: the root; `_group_`: the group); else Hydra puts a file under its group
/// (`alg/ppo.yaml` under `alg`) and tril's form merges every group but `alg` at the root.
pub fn package(form: Form, group: &str, header: Option<&str>) -> String {
    let as_group = group.replace('/', ".");
    match header {
        Some("_global_") => String::new(),
        Some("_group_") => as_group,
        Some(pkg) if !pkg.is_empty() => pkg
            .split('.')
            .filter(|p| *p != "_global_")
            .map(|p| if p == "_group_" { &as_group } else { p })
            .collect::<Vec<_>>()
            .join("."),
        _ => match form {
            Form::Hydra => as_group,
            Form::Tril if group == "alg" => as_group,
            Form::Tril => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse_yaml;

    fn primary(text: &str) -> Result<Defaults> {
        let mut node = parse_yaml(text, Path::new("config.yaml")).unwrap();
        take_primary(&mut node, Path::new("config.yaml"))
    }

    #[test]
    fn headers_and_packages() {
        assert_eq!(package_header("# @package _global_\n\na: 1\n").as_deref(), Some("_global_"));
        assert_eq!(package_header("# hello\n# @package foo.bar\na: 1\n").as_deref(), Some("foo.bar"));
        assert_eq!(package_header("a: 1\n# @package _global_\n"), None);
        assert_eq!(package(Form::Hydra, "alg", None), "alg");
        assert_eq!(package(Form::Hydra, "task", Some("_global_")), "");
        assert_eq!(package(Form::Tril, "task", None), "");
        assert_eq!(package(Form::Tril, "alg", None), "alg");
        assert_eq!(package(Form::Hydra, "db/mysql", Some("_group_")), "db.mysql");
    }

    #[test]
    fn self_defaults_to_last_and_overrides_change_choices() {
        let d = primary("defaults:\n  - task: ???\n  - alg: ppo\n  - override alg: bc\n").unwrap();
        assert_eq!(d.form, Form::Hydra);
        assert_eq!(d.entries.last(), Some(&Entry::SelfKeys));
        assert!(matches!(&d.entries[1], Entry::Group { choice: Choice::Option(o), .. } if o == "bc"));
        let d = primary("defaults:\n  task: x\n").unwrap();
        assert_eq!((d.form, d.entries.first()), (Form::Tril, Some(&Entry::SelfKeys)));
    }

    #[test]
    fn malformed_entries_name_entry_and_file() {
        for text in ["defaults:\n  - [a]\n", "defaults:\n  - {a: x, b: y}\n", "defaults:\n  - task: [a, b]\n"] {
            let err = primary(text).unwrap_err().to_string();
            assert!(err.contains("defaults[0]") && err.contains("config.yaml"), "{err}");
        }
        let err = primary("defaults:\n  - _self_\n  - x: y\n  - override nope: z\n").unwrap_err().to_string();
        assert!(err.contains("defaults[2]") && err.contains("which no earlier entry names"), "{err}");
        let err = primary("defaults: 3\n").unwrap_err().to_string();
        assert!(err.contains("Hydra defaults list"), "{err}");
    }
}
