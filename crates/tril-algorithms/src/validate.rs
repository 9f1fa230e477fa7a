//! Range checks on typed configs, reported as [`tril_core::CoreError::InvalidValue`] so that
//! a bad value names its dotted key, the value as written and the file:line it came from.
//! The one implementation lives in [`tril_core::config`] ([`tril_core::config::Checker`]).

pub(crate) use tril_core::config::{ensure, invalid};
