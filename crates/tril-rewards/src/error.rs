//! The one error type of `tril-rewards`.

/// Errors while building or running a reward function.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// Loading or running a model failed.
    #[error("reward model: {0}")]
    Model(#[from] tril_models::ModelError),
    /// A config value is not usable.
    #[error("{key}: {message}")]
    Config {
        /// Dotted config key.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}
