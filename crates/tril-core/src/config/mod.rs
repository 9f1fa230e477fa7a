//! Config composition (Hydra semantics on Figment machinery) and typed extraction.
//!
//! [`compose`] turns `cfgs/` plus `task=... alg=... a.b=v` arguments into a resolved
//! [`Config`]; [`Section::extract`] reads typed structs out of it with errors that name
//! the key, the value and its source, and [`Section::extract_checked`] also checks the
//! value [`Ranges`] each typed config states. A config directory is either tril's own
//! `cfgs/` or TRIL's `cfgs/` as they are (Hydra defaults lists); see [`defaults`].

mod compose;
pub mod defaults;
mod groups;
mod interpolate;
mod node;
mod paths;
mod ranges;
mod store;
mod typed;
mod yaml;

pub use compose::{
    compose, compose_file, compose_file_unresolved, compose_unresolved, env_key, ComposeRequest, Composed,
    RESERVED_ENV, TRIL_ROOT_DEFAULTS,
};
pub use interpolate::resolve;
pub use node::{format_float, join_path, split_path, Node, Origin, Value};
pub use paths::{anchor_file_paths, anchored};
pub use ranges::{ensure, invalid, non_finite, Checker, Ranges};
pub use store::{ConfigStore, DirStore};
pub use typed::{Config, Section};
pub use yaml::{parse_yaml, plain_scalar, quote as quote_yaml, to_yaml};
