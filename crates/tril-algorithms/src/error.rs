//! [`AlgorithmError`], the one error type of tril-algorithms.
//!
//! Plugin entry points return `tril_core::plugin::PluginError` (a boxed error), so `?` on an
//! [`AlgorithmError`] works everywhere; messages name the config key, the file or the
//! step, what was expected and what was found.

use tril_core::plugin::Split;

/// Everything a training loop can refuse or fail on.
#[derive(Debug, thiserror::Error)]
pub enum AlgorithmError {
    /// A config value out of its range.
    #[error("{key}: expected {expected}, found {found}")]
    Invalid {
        /// The dotted config key (`alg.args.batch_size`).
        key: String,
        /// What a valid value is.
        expected: String,
        /// The value given.
        found: String,
    },
    /// A config section or combination the algorithm cannot run.
    #[error("{key}: {message}")]
    Config {
        /// The dotted config key.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A split the run needs holds no example.
    #[error(
        "task `{task}`: the {} split is empty{}",
        split.name(),
        if *evaluated { ", but alg.args.eval_splits evaluates on it" } else { "" }
    )]
    EmptySplit {
        /// The task id.
        task: String,
        /// The empty split.
        split: Split,
        /// Whether it is an evaluated split (else the train split).
        evaluated: bool,
    },
    /// A loss, reward or gradient that is not a finite number: training stops instead of
    /// training on it.
    #[error("{algorithm}: step {step}: {what} is {value}; stopping")]
    NonFinite {
        /// The algorithm id.
        algorithm: String,
        /// The step or iteration.
        step: usize,
        /// What was not finite (`the loss`, `the reward of sample x`).
        what: String,
        /// The value.
        value: f64,
    },
    /// A reward that is not a finite number: the iteration stops before any update.
    #[error(
        "iteration {iteration}: the reward of sample `{sample}` is {value} (generation {generation:?}); stopping instead of training on it"
    )]
    NonFiniteReward {
        /// The iteration.
        iteration: usize,
        /// The sample's id.
        sample: String,
        /// The generation that was scored.
        generation: String,
        /// The reward.
        value: f64,
    },
    /// Reading or writing a checkpoint or other run file.
    #[error("{path}: {message}")]
    File {
        /// The file or directory.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A model could not be built, loaded or saved.
    #[error(transparent)]
    Model(#[from] tril_models::ModelError),
    /// A config error from tril-core.
    #[error(transparent)]
    Core(#[from] tril_core::CoreError),
}

impl AlgorithmError {
    /// [`AlgorithmError::Invalid`] from displayable parts.
    pub fn invalid(key: impl Into<String>, expected: impl Into<String>, found: impl ToString) -> Self {
        AlgorithmError::Invalid { key: key.into(), expected: expected.into(), found: found.to_string() }
    }

    /// [`AlgorithmError::Config`] from displayable parts.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        AlgorithmError::Config { key: key.into(), message: message.into() }
    }

    /// [`AlgorithmError::File`] for `path`.
    pub fn file(path: &std::path::Path, message: impl ToString) -> Self {
        AlgorithmError::File { path: path.display().to_string(), message: message.to_string() }
    }
}

/// Result alias for tril-algorithms.
pub type Result<T, E = AlgorithmError> = std::result::Result<T, E>;
