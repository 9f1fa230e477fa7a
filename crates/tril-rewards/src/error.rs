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
    /// An input of a pure score computation has the wrong length.
    #[error("{what}: expected length {expected}, got {got}")]
    Shape {
        /// Which input, e.g. `ensemble scores member 2`.
        what: String,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// An input of a pure score computation is empty where at least one entry is needed.
    #[error("{what}: empty, need at least one entry")]
    Empty {
        /// Which input, e.g. `ensemble members (K)`.
        what: String,
    },
    /// A classifier's label count does not give a scalar reward.
    #[error(
        "{dir}: a scalar reward needs a 1-label (TRL's num_labels=1, r = l_0) or 2-label (r = l_1 - l_0) \
         classifier, this one has {labels} labels (use a label probability instead)"
    )]
    Labels {
        /// The model directory.
        dir: std::path::PathBuf,
        /// Its number of labels.
        labels: usize,
    },
    /// An error while handling the value of a config key (e.g. loading the model that
    /// `reward_fn.args.model_names[1]` names).
    #[error("{key}: {source}")]
    WithKey {
        /// Dotted config key, with the value when it helps.
        key: String,
        /// What went wrong.
        source: Box<RewardError>,
    },
    /// A score is NaN or infinite.
    #[error("{what}: non-finite score {value}")]
    NonFinite {
        /// Where, e.g. `ensemble scores member 1, sample 3`.
        what: String,
        /// The offending value.
        value: f64,
    },
}
