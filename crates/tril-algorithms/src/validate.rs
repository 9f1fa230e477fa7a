//! Range checks on typed configs, reported as [`CoreError::InvalidValue`] so that a
//! bad value names its dotted key, the value as written and the file:line it came from.

use tril_core::config::{join_path, Section, Value};
use tril_core::CoreError;

/// An error about `section.field`: `message` says what was expected.
///
/// When the field is absent, the value reads `null` and the origin is the section's.
pub(crate) fn invalid(section: &Section<'_>, field: &str, message: impl Into<String>) -> CoreError {
    let node = section.node();
    let (value, origin) = match node.get(field) {
        Some(n) => (n.value.to_string(), n.origin.clone()),
        None => (Value::Null.to_string(), node.origin.clone()),
    };
    CoreError::InvalidValue { key: join_path(section.key(), field), value, message: message.into(), origin }
}

/// Fails unless `ok`, with [`invalid`]'s error.
pub(crate) fn ensure(ok: bool, section: &Section<'_>, field: &str, message: &str) -> Result<(), CoreError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(section, field, message))
    }
}
