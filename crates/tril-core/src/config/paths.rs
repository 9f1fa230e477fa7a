//! Relative paths written in config files, made independent of the working directory.
//!
//! A string value from a config directory's file that starts with `./` or `../` is a path
//! relative to the directory holding the config directory (for `cfgs/`, the project root;
//! for the `cfgs/` embedded in the binary, the source checkout it was built from). The
//! composer rewrites it to that absolute path (`..` folded away lexically), so
//! `tril run` reads the same file from any directory. Anything else is left as written:
//! `org/name` hub ids, `hub:` ids, `builtin:` names, and values given on the command line
//! or in the environment (relative to the working directory, as a shell user expects).
//!
//! ```
//! use std::path::Path;
//! use tril_core::config::anchored;
//! assert_eq!(anchored("../shared/data/x.csv", Path::new("/repo")), Some("/shared/data/x.csv".into()));
//! assert_eq!(anchored("./models/small", Path::new("/repo/examples")), Some("/repo/examples/models/small".into()));
//! assert_eq!(anchored("lvwerra/gpt2-imdb", Path::new("/repo")), None);
//! ```

use super::node::{Node, Origin, Value};
use std::path::{Component, Path, PathBuf};

/// `value` resolved against `base` when it is written as a relative path (`./...`,
/// `../...`); `None` for any other value.
pub fn anchored(value: &str, base: &Path) -> Option<String> {
    // `.` or `..` alone is not taken for a path: TRIL's cfgs use `.` as a token.
    if !(value.starts_with("./") || value.starts_with("../")) {
        return None;
    }
    Some(normalize(&base.join(value)).to_string_lossy().into_owned())
}

/// `path` with `.` dropped and each `..` folding the component before it (lexically: the
/// config's own spelling decides, not symlinks on disk).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Rewrites every `./`/`../` string of `node` that came from a config file to its path
/// under `base` ([`anchored`]); the value keeps its origin, so errors still name the file
/// and line it was written on.
pub fn anchor_file_paths(node: &mut Node, base: &Path) {
    match &mut node.value {
        Value::Str(s) if matches!(node.origin, Origin::File { .. }) => {
            if let Some(path) = anchored(s, base) {
                *s = path;
            }
        }
        Value::Seq(items) => items.iter_mut().for_each(|n| anchor_file_paths(n, base)),
        Value::Map(map) => map.values_mut().for_each(|n| anchor_file_paths(n, base)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;

    #[test]
    fn only_dotted_relative_strings_from_files_are_anchored() {
        let text =
            "a: ../data/x.csv\nb: ./m\nc: org/name\nd: [../y.jsonl, hub:imdb]\ne: outputs/run\nf: /abs/p\nh: .\n";
        let mut root = parse_yaml(text, Path::new("cfgs/task/t.yaml")).unwrap();
        root.set("g", Node::new(Value::Str("../cli.csv".into()), Origin::CommandLine("g=../cli.csv".into())), true)
            .unwrap();
        anchor_file_paths(&mut root, Path::new("/home/u/proj"));
        let s = |k: &str| root.get(k).unwrap().as_str().unwrap().to_string();
        assert_eq!(s("a"), "/home/u/data/x.csv");
        assert_eq!(s("b"), "/home/u/proj/m");
        assert_eq!(s("c"), "org/name");
        assert_eq!(s("d.0"), "/home/u/y.jsonl");
        assert_eq!(s("d.1"), "hub:imdb");
        assert_eq!(s("e"), "outputs/run");
        assert_eq!(s("f"), "/abs/p");
        assert_eq!(s("h"), ".", "a lone `.` is a token (TRIL's concept_end_token), not a path");
        assert_eq!(s("g"), "../cli.csv", "command-line values stay relative to the working directory");
        // The origin is kept for error messages.
        assert!(matches!(root.get("a").unwrap().origin, Origin::File { line: 1, .. }));
    }

    #[test]
    fn parent_steps_past_the_root_are_kept() {
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }
}
