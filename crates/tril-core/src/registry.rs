//! Plugin registries: one per kind, filled with `inventory` by [`crate::register!`].
//!
//! An entry is a plain struct: an id, a one-line doc, the registering crate, a
//! `check` that deserializes the entry's typed config and checks its value ranges (so
//! `tril config` validates every section without building anything) and a `build` that makes the value.
//! Listing is sorted; a duplicate id is a start-up error naming both crates; an
//! unknown id is an error listing the known ids and the closest one.

use crate::config::{Config, Section};
use crate::error::{did_you_mean, CoreError, Result};
use crate::plugin::{
    Algorithm, BuildCtx, KlController, LrSchedule, Metric, OptimizerSpec, PluginError, PolicySpec, RewardFn, Task,
};
use serde::de::DeserializeOwned;

/// A registry entry producing a `Box<P>`.
pub struct Entry<P: ?Sized + 'static> {
    /// The id used in configs (`learned_reward`, `fixedklcontroller`, ...).
    pub id: &'static str,
    /// One line for `tril list`.
    pub doc: &'static str,
    /// The crate that registered it (for duplicate errors).
    pub crate_name: &'static str,
    /// Validates the entry's config section (deserializes its typed config and checks its ranges).
    pub check: fn(&Section<'_>) -> Result<()>,
    /// Builds the value from its config section.
    pub build: fn(&Section<'_>, &BuildCtx<'_>) -> std::result::Result<Box<P>, PluginError>,
}

/// `check` for an entry whose typed config is `T`: deserializes the section and checks
/// the value ranges `T` states ([`crate::config::Ranges`]).
pub fn check_config<T: DeserializeOwned + crate::config::Ranges>(section: &Section<'_>) -> Result<()> {
    section.extract_checked::<T>().map(|_| ())
}

macro_rules! kinds {
    ($( $variant:ident, $name:literal, $product:ty, $entry:ident, $id_field:literal, $doc:literal; )*) => {
        $(
            #[doc = concat!("A `", $name, "` registry entry.")]
            pub type $entry = Entry<$product>;
            inventory::collect!($entry);
        )*

        /// The plugin kinds.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $( #[doc = $doc] $variant, )*
        }

        impl Kind {
            /// Every kind, in listing order.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            /// The config name of the kind (`reward_fn`, `kl_controller`, ...).
            pub fn name(self) -> &'static str {
                match self { $(Kind::$variant => $name,)* }
            }

            /// The field of a section that holds the id (`id`, or `kl_type` for KL controllers).
            pub fn id_field(self) -> &'static str {
                match self { $(Kind::$variant => $id_field,)* }
            }

            /// Parses a kind name.
            pub fn from_name(name: &str) -> Option<Kind> {
                match name { $($name => Some(Kind::$variant),)* _ => None }
            }

            /// `(id, doc, crate)` of every entry of this kind, sorted by id.
            pub fn list(self) -> Vec<Listing> {
                let mut out: Vec<Listing> = match self {
                    $(Kind::$variant => inventory::iter::<$entry>
                        .into_iter()
                        .map(|e| Listing { id: e.id, doc: e.doc, crate_name: e.crate_name })
                        .collect(),)*
                };
                out.sort_by(|a, b| a.id.cmp(b.id).then(a.crate_name.cmp(b.crate_name)));
                out
            }

            /// Runs the `check` of the entry named by the section's id field.
            pub fn check(self, section: &Section<'_>) -> Result<()> {
                match self {
                    $(Kind::$variant => {
                        let entry = lookup::<$product>(self, section, inventory::iter::<$entry>.into_iter())?;
                        (entry.check)(&args_of(self, section))
                    })*
                }
            }
        }
    };
}

kinds! {
    Task, "task", dyn Task, TaskEntry, "id", "Datasets of prompts and references.";
    RewardFn, "reward_fn", dyn RewardFn, RewardFnEntry, "id", "Reward functions scoring generations.";
    Metric, "metric", dyn Metric, MetricEntry, "id", "Evaluation metrics.";
    Algorithm, "algorithm", dyn Algorithm, AlgorithmEntry, "id", "Training algorithms.";
    Policy, "policy", PolicySpec, PolicyEntry, "id", "Policy layouts (actor, actor-critic, ...).";
    KlController, "kl_controller", dyn KlController, KlControllerEntry, "kl_type", "KL-penalty coefficient controllers.";
    Optimizer, "optimizer", OptimizerSpec, OptimizerEntry, "id", "Optimizers.";
    Scheduler, "scheduler", dyn LrSchedule, SchedulerEntry, "id", "Learning-rate schedules.";
}

/// One line of `tril list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The id.
    pub id: &'static str,
    /// The one-line doc.
    pub doc: &'static str,
    /// The registering crate.
    pub crate_name: &'static str,
}

/// The config handed to `check`/`build`: `args` for `{id, args}` sections, the whole
/// section for flat ones (KL controllers keep TRIL's `kl_type, coeff, ...` layout).
fn args_of<'a>(kind: Kind, section: &Section<'a>) -> Section<'a> {
    if kind.id_field() == "id" {
        match section.node().get("args") {
            Some(node) => Section::new(section.key(), node).with_suffix("args"),
            None => Section::absent(section.key(), section.node().origin.clone()).with_suffix("args"),
        }
    } else {
        section.clone()
    }
}

fn lookup<P: ?Sized + 'static>(
    kind: Kind,
    section: &Section<'_>,
    entries: impl Iterator<Item = &'static Entry<P>>,
) -> Result<&'static Entry<P>> {
    let (id, origin) = section.string(kind.id_field())?;
    let entries: Vec<&'static Entry<P>> = entries.collect();
    entries.iter().find(|e| e.id == id).copied().ok_or_else(|| {
        let mut known: Vec<&str> = entries.iter().map(|e| e.id).collect();
        known.sort();
        CoreError::UnknownId {
            kind: kind.name(),
            key: crate::config::join_path(section.key(), kind.id_field()),
            suggestion: did_you_mean(&id, known.iter().copied()),
            known: if known.is_empty() { "(none)".into() } else { known.join(", ") },
            id,
            origin,
        }
    })
}

macro_rules! builders {
    ($( $fn_name:ident, $variant:ident, $product:ty, $entry:ident; )*) => {
        $(
            #[doc = concat!("Builds the `", stringify!($variant), "` named by `section` (its id field picks the entry).")]
            pub fn $fn_name(section: &Section<'_>, config: &Config) -> std::result::Result<Box<$product>, PluginError> {
                let kind = Kind::$variant;
                let entry = lookup::<$product>(kind, section, inventory::iter::<$entry>.into_iter())?;
                let args = args_of(kind, section);
                (entry.check)(&args)?;
                (entry.build)(&args, &BuildCtx { config })
            }
        )*
    };
}

builders! {
    build_task, Task, dyn Task, TaskEntry;
    build_reward_fn, RewardFn, dyn RewardFn, RewardFnEntry;
    build_metric, Metric, dyn Metric, MetricEntry;
    build_algorithm, Algorithm, dyn Algorithm, AlgorithmEntry;
    build_policy, Policy, PolicySpec, PolicyEntry;
    build_kl_controller, KlController, dyn KlController, KlControllerEntry;
    build_optimizer, Optimizer, OptimizerSpec, OptimizerEntry;
    build_scheduler, Scheduler, dyn LrSchedule, SchedulerEntry;
}

/// Fails if two entries of one kind share an id, naming both crates. Call at start-up.
pub fn check_duplicates() -> Result<()> {
    for &kind in Kind::ALL {
        if let Some((a, b)) = first_duplicate(&kind.list()) {
            return Err(CoreError::DuplicateId {
                kind: kind.name(),
                id: a.id,
                first: a.crate_name,
                second: b.crate_name,
            });
        }
    }
    Ok(())
}

/// The first pair of listings (sorted by id) with the same id.
pub fn first_duplicate(sorted: &[Listing]) -> Option<(Listing, Listing)> {
    sorted.windows(2).find(|w| w[0].id == w[1].id).map(|w| (w[0].clone(), w[1].clone()))
}

/// Where each registry kind's sections live in a composed config.
pub fn sections(config: &Config) -> Vec<(Kind, String)> {
    let mut out = vec![(Kind::Task, "task".to_string())];
    let root = config.root();
    if root.get("reward_fn").is_some_and(|n| n.value != crate::config::Value::Null) {
        out.push((Kind::RewardFn, "reward_fn".into()));
        if root.get("reward_fn.optimizer").is_some_and(|n| n.value != crate::config::Value::Null) {
            out.push((Kind::Optimizer, "reward_fn.optimizer".into()));
        }
    }
    if root.get("gold_reward_fn").is_some_and(|n| n.value != crate::config::Value::Null) {
        out.push((Kind::RewardFn, "gold_reward_fn".into()));
    }
    if let Some(crate::config::Value::Seq(items)) = root.get("eval_metrics").map(|n| &n.value) {
        out.extend((0..items.len()).map(|i| (Kind::Metric, format!("eval_metrics.{i}"))));
    }
    out.push((Kind::Algorithm, "alg".into()));
    for (kind, key) in [
        (Kind::Policy, "alg.policy"),
        (Kind::KlController, "alg.kl_div"),
        (Kind::Optimizer, "alg.optimizer"),
        (Kind::Scheduler, "alg.scheduler"),
    ] {
        if root.get(key).is_some_and(|n| n.value != crate::config::Value::Null) {
            out.push((kind, key.into()));
        }
    }
    out
}

/// Checks every plugin section of a config against its registry entry: ids exist,
/// each typed config deserializes and its values are in range. Returns all problems, not
/// just the first. Non-finite floats are found for the whole config by
/// [`Config::non_finite`], which callers run first.
pub fn check_config_sections(config: &Config) -> Vec<CoreError> {
    let mut errors = Vec::new();
    for (kind, key) in sections(config) {
        let result = config.section(&key).and_then(|s| kind.check(&s));
        if let Err(e) = result {
            errors.push(e);
        }
    }
    errors
}

/// Registers a plugin beside its implementation.
///
/// ```ignore
/// tril_core::register!(reward_fn,
///     id: "length_penalty",
///     doc: "Negative distance of the generation length from a target length.",
///     config: LengthPenaltyConfig,
///     build: build_length_penalty);
/// ```
/// Kinds: `task`, `reward_fn`, `metric`, `algorithm`, `policy`, `kl_controller`,
/// `optimizer`, `scheduler`. `config` is the typed (serde, `deny_unknown_fields`)
/// config the builder reads from its section; `build` is
/// `fn(&Section, &BuildCtx) -> Result<Box<Product>, PluginError>`.
#[macro_export]
macro_rules! register {
    (task, $($rest:tt)*) => { $crate::__register!(TaskEntry, $($rest)*); };
    (reward_fn, $($rest:tt)*) => { $crate::__register!(RewardFnEntry, $($rest)*); };
    (metric, $($rest:tt)*) => { $crate::__register!(MetricEntry, $($rest)*); };
    (algorithm, $($rest:tt)*) => { $crate::__register!(AlgorithmEntry, $($rest)*); };
    (policy, $($rest:tt)*) => { $crate::__register!(PolicyEntry, $($rest)*); };
    (kl_controller, $($rest:tt)*) => { $crate::__register!(KlControllerEntry, $($rest)*); };
    (optimizer, $($rest:tt)*) => { $crate::__register!(OptimizerEntry, $($rest)*); };
    (scheduler, $($rest:tt)*) => { $crate::__register!(SchedulerEntry, $($rest)*); };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __register {
    ($entry:ident, id: $id:expr, doc: $doc:expr, config: $cfg:ty, build: $build:expr $(,)?) => {
        $crate::inventory::submit! {
            $crate::registry::$entry {
                id: $id,
                doc: $doc,
                crate_name: env!("CARGO_PKG_NAME"),
                check: $crate::registry::check_config::<$cfg>,
                build: $build,
            }
        }
    };
    ($entry:ident, id: $id:expr, doc: $doc:expr, config: $cfg:ty, check: $check:expr, build: $build:expr $(,)?) => {
        // A custom check still reads a config that states its ranges.
        const _: fn() = || {
            fn states_ranges<T: $crate::config::Ranges>() {}
            states_ranges::<$cfg>();
        };
        $crate::inventory::submit! {
            $crate::registry::$entry {
                id: $id,
                doc: $doc,
                crate_name: env!("CARGO_PKG_NAME"),
                check: $check,
                build: $build,
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_in_sorted_listings() {
        let l = |id, c| Listing { id, doc: "", crate_name: c };
        assert!(first_duplicate(&[l("a", "x"), l("b", "y")]).is_none());
        let (a, b) = first_duplicate(&[l("a", "x"), l("b", "one"), l("b", "two")]).unwrap();
        assert_eq!((a.crate_name, b.crate_name), ("one", "two"));
    }

    #[test]
    fn kinds_round_trip_names() {
        for &k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
    }
}
