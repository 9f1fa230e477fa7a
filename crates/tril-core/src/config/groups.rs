//! Loading one group file (`alg/gail.yaml`) with the files its own defaults name, placed
//! at its package. Used by [`super::compose`] for both forms of config directory.

use super::defaults::{self, Choice, Defaults, Entry, Form};
use super::node::{Node, Origin, Value};
use super::store::ConfigStore;
use super::yaml::parse_yaml;
use crate::error::{did_you_mean, CoreError, Result};
use std::path::Path;

/// Reads group files with their own defaults, in one form, and collects notes.
pub(crate) struct Composer<'a> {
    store: &'a dyn ConfigStore,
    form: Form,
    /// Notes for the user (skipped Hydra runtime entries).
    pub(crate) notes: Vec<String>,
    /// The files being loaded (`alg/gail`, `alg/ppo`), against cycles.
    seen: Vec<(String, String)>,
}

impl<'a> Composer<'a> {
    /// A composer reading `store` in `form`.
    pub(crate) fn new(store: &'a dyn ConfigStore, form: Form) -> Self {
        Composer { store, form, notes: Vec::new(), seen: Vec::new() }
    }

    /// One note for the Hydra runtime entries a defaults list named.
    pub(crate) fn note_ignored(&mut self, defaults: &Defaults, file: &Path) {
        if !defaults.ignored.is_empty() {
            self.notes.push(format!(
                "{}: ignoring Hydra runtime entries of the defaults list ({}): tril has no Hydra runtime (its logging is tril's own)",
                file.display(),
                defaults.ignored.join(", ")
            ));
        }
    }

    /// The tree of `group/option.yaml` placed at its package, over the configs its own
    /// defaults list (or `inherits:`) names. `None` when an `optional` file is absent.
    pub(crate) fn load(&mut self, group: &str, option: &str, optional: bool) -> Result<Option<Node>> {
        let rel = if group.is_empty() { format!("{option}.yaml") } else { format!("{group}/{option}.yaml") };
        let text = match self.store.read(&rel)? {
            Some(text) => text,
            None if optional => return Ok(None),
            None => {
                let known = self.store.options(group);
                return Err(CoreError::UnknownOption {
                    group: group.into(),
                    option: option.into(),
                    dir: self.store.describe(),
                    suggestion: did_you_mean(option, known.iter().map(String::as_str)),
                    known: known.join(", "),
                });
            }
        };
        let file = self.store.display(&rel);
        let mut own = parse_yaml(&text, &file)?;
        let defaults = defaults::take_group(&mut own, group, &file)?;
        let here = (group.to_string(), option.to_string());
        if self.seen.contains(&here) {
            let mut names: Vec<String> = self.seen.iter().map(|(_, o)| o.clone()).collect();
            names.push(option.into());
            return Err(CoreError::WithContext {
                context: file.display().to_string(),
                message: format!("`{}` cycle: {}", defaults.key, names.join(" -> ")),
            });
        }
        self.note_ignored(&defaults, &file);
        let package = defaults::package(self.form, group, defaults::package_header(&text).as_deref());
        self.seen.push(here);
        let mut merged = Node::empty_map(Origin::Composer);
        let mut own = Some(own);
        let result = (|| {
            for entry in &defaults.entries {
                let tree = match entry {
                    Entry::SelfKeys => own.take().map(|n| at_package(&package, n)),
                    Entry::Config { name, .. } => self.load(group, name, false)?,
                    Entry::Group { group: g, choice: Choice::Option(o), optional, .. } => self.load(g, o, *optional)?,
                    Entry::Group { choice: Choice::Disabled, .. } => None,
                    Entry::Group { group: g, choice: Choice::Mandatory, .. } => {
                        return Err(CoreError::MissingGroup {
                            group: g.clone(),
                            known: self.store.options(g).join(", "),
                        })
                    }
                };
                if let Some(tree) = tree {
                    merged.merge(tree);
                }
            }
            Ok(())
        })();
        self.seen.pop();
        result.map(|()| Some(merged))
    }
}

/// Nests a file's tree under its package (`alg` -> `{alg: tree}`; `""`: the root).
fn at_package(package: &str, tree: Node) -> Node {
    let mut node = tree;
    for part in package.rsplit('.').filter(|p| !p.is_empty()) {
        let origin = node.origin.clone();
        node = Node::new(Value::Map([(part.to_string(), node)].into_iter().collect()), origin);
    }
    node
}
