//! # tril-core
//!
//! The parts of tril that every plugin shares and that know no plugin:
//!
//! - [`config`]: composition of `cfgs/` with Hydra's semantics ([`config::compose`]),
//!   interpolation, provenance of every value, and typed extraction
//!   ([`config::Section::extract`]) whose errors name the key, value and source, and the
//!   value ranges every typed config states ([`config::Ranges`], checked at config time).
//! - [`registry`]: one `inventory` registry per plugin kind, filled with
//!   [`register!`], with sorted listing, duplicate detection and "did you mean" lookups.
//! - [`plugin`]: the traits plugins implement ([`plugin::Task`], [`plugin::RewardFn`],
//!   [`plugin::Metric`], [`plugin::Algorithm`], [`plugin::KlController`],
//!   [`plugin::LrSchedule`]) and the specs they produce ([`plugin::OptimizerSpec`],
//!   [`plugin::PolicySpec`]).
//! - [`schema`]: the typed root config; [`safety`]: its `guard:` and `checkpoint:` sections.
//! - [`backend`]: the one dispatch point from `device`/`precision` to a concrete Burn
//!   backend ([`backend::train`], [`backend::infer`]); nothing else names a backend.
//! - [`hub`]: Hugging Face Hub downloads (models, dataset splits) into the shared HF cache
//!   ([`hub::download_model`], [`hub::dataset_split_files`]).
//! - [`interrupt`]: SIGINT/SIGTERM recorded for the loops to checkpoint and stop.
//! - [`progress`]: indicatif progress bars on a terminal, throttled INFO lines elsewhere,
//!   nothing with `--quiet`.
//! - [`tracker`]: the run's metric files and plots; [`summary`]: the one-line evaluation summary.
//! - [`error`]: [`CoreError`], the one error type of this crate.
//!
//! ```
//! use tril_core::config::{parse_yaml, Config};
//! use std::path::Path;
//!
//! #[derive(Debug, serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Args { #[allow(dead_code)] n_iters: u32 }
//!
//! let root = parse_yaml("alg:\n  args:\n    n_iter: 5\n", Path::new("alg/ppo.yaml")).unwrap();
//! let config = Config::new(root, vec![]);
//! let err = config.extract::<Args>("alg.args").unwrap_err().to_string();
//! assert!(err.starts_with("alg.args.n_iter: unknown key; did you mean `n_iters`?"));
//! assert!(err.contains("alg/ppo.yaml:3"));
//! ```
#![deny(missing_docs)]

pub mod backend;
pub mod config;
pub mod error;
pub mod hub;
pub mod interrupt;
pub mod ops;
pub mod parallel;
pub mod plot;
pub mod plugin;
pub mod progress;
pub mod registry;
pub mod run_dir;
pub mod safety;
pub mod schema;
pub mod summary;
pub mod tracker;

pub use error::{CoreError, Result};
#[doc(hidden)]
pub use inventory;
