//! The one error type of `tril-metrics`, [`MetricError`].
//!
//! The plugin traits return `PluginError` (a boxed error), so `?` turns a [`MetricError`]
//! into one; the message alone names the config key, the value and what was expected.

use std::path::PathBuf;

/// Errors while building or running a metric or a lexical reward.
#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    /// A config value is out of range or unsupported.
    #[error("{key}: expected {expected}, found {value}")]
    InvalidValue {
        /// Dotted config key (`eval_metrics.0.args.stride`).
        key: String,
        /// The value as written.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// A config section cannot be used as written (a key required with another, an option
    /// tril does not implement); the message says what to change.
    #[error("{key}: {message}")]
    Config {
        /// Dotted config key.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A scoring model named in the config is neither a local directory nor in the HF cache.
    #[error("{key}: {what} model `{id}` ({detail}) is not available locally: {source}. {hint}")]
    ModelUnavailable {
        /// Dotted config key naming the model (directly or through a language).
        key: String,
        /// Which model (`BERTScore`).
        what: &'static str,
        /// The model id asked for.
        id: String,
        /// How the model is used (`layer 17`).
        detail: String,
        /// How to get the model or what to set instead.
        hint: String,
        /// Where resolution looked.
        source: tril_models::ModelError,
    },
    /// A sample has no reference, and the metric needs one.
    #[error("{metric}: sample {sample} has no reference")]
    MissingReference {
        /// The metric (`cider`, `bert_score`).
        metric: &'static str,
        /// Index of the sample in the batch.
        sample: usize,
    },
    /// The candidate and reference columns of a batch disagree in length.
    #[error("{metric}: {candidates} candidates, {references} reference lists")]
    BatchMismatch {
        /// The metric.
        metric: &'static str,
        /// Number of candidates (generations).
        candidates: usize,
        /// Number of reference lists.
        references: usize,
    },
    /// An input to a metric or reward is not usable.
    #[error("{what}: {message}")]
    Input {
        /// The metric or reward and the input (`common_gen_concept_cover`).
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// Loading or running a model failed.
    #[error(transparent)]
    Model(#[from] tril_models::ModelError),
    /// Reading the config or choosing the backend failed.
    #[error(transparent)]
    Core(#[from] tril_core::CoreError),
    /// Loading the model a config key names failed.
    #[error("{key}: loading {}: {source}", path.display())]
    Loading {
        /// Dotted config key of the section that names the model.
        key: String,
        /// The model directory.
        path: PathBuf,
        /// The underlying error.
        source: Box<MetricError>,
    },
    /// An error with what was being done.
    #[error("{context}: {source}")]
    WithContext {
        /// What was being done, naming the config key or file.
        context: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result alias for this crate.
pub type Result<T, E = MetricError> = std::result::Result<T, E>;

impl MetricError {
    /// A [`MetricError::InvalidValue`] for `key`, found `value`, accepting `expected`.
    pub fn invalid(key: impl Into<String>, value: impl ToString, expected: impl Into<String>) -> Self {
        MetricError::InvalidValue { key: key.into(), value: value.to_string(), expected: expected.into() }
    }

    /// A [`MetricError::Config`] error for `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        MetricError::Config { key: key.into(), message: message.into() }
    }

    /// Wraps `source` with what was being done.
    pub fn context(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        MetricError::WithContext { context: context.into(), source: source.into() }
    }

    /// Wraps this error with the config key and the model directory it happened at.
    pub fn loading(self, key: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        MetricError::Loading { key: key.into(), path: path.into(), source: Box::new(self) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_value_names_key_value_and_expectation() {
        let e = MetricError::invalid("eval_metrics.0.args.stride", 0, "at least 1 token");
        assert_eq!(e.to_string(), "eval_metrics.0.args.stride: expected at least 1 token, found 0");
        let boxed: tril_core::plugin::PluginError = e.into();
        assert!(boxed.to_string().starts_with("eval_metrics.0.args.stride:"));
    }
}
