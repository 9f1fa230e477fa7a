//! The crate's one error type, [`ModelError`].

use std::path::PathBuf;

/// Everything that can go wrong while resolving, loading, saving or running a model.
///
/// Variants carry the file, key or tensor they are about, so that the message alone says
/// what to fix. Errors from other crates are kept as `source`.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file (config.json, an index, a tokenizer) could not be parsed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A key of a model config is missing.
    #[error("{file}: missing config key `{key}`")]
    MissingConfigKey {
        /// The config file (or `<in memory>`).
        file: PathBuf,
        /// The missing key.
        key: String,
    },
    /// A key of a model or generation config has a value that is invalid or unsupported.
    #[error("{file}: config key `{key}` = {value}: {reason}")]
    InvalidConfigValue {
        /// The config file (or `<in memory>`).
        file: PathBuf,
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A safetensors file is malformed (truncated, bad header, ...).
    #[error("{file}: invalid safetensors file: {source}")]
    Safetensors {
        /// The file.
        file: PathBuf,
        /// The parse error.
        source: safetensors::SafeTensorError,
    },
    /// A directory has no safetensors checkpoint.
    #[error("{dir}: no model.safetensors or model.safetensors.index.json{hint}")]
    MissingCheckpoint {
        /// The directory searched.
        dir: PathBuf,
        /// Extra advice (e.g. only `pytorch_model.bin` was found).
        hint: String,
    },
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("missing tensor `{name}` in {location}")]
    MissingTensor {
        /// The checkpoint name of the tensor (HF naming).
        name: String,
        /// The checkpoint directory or file searched.
        location: PathBuf,
    },
    /// A tensor in the checkpoint has another shape than the config implies.
    #[error("tensor `{name}` in {location}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// The checkpoint name of the tensor.
        name: String,
        /// The checkpoint file.
        location: PathBuf,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape stored in the file.
        got: Vec<usize>,
    },
    /// A tensor is stored with a dtype this crate cannot read.
    #[error("tensor `{name}` in {location}: unsupported dtype {dtype} (supported: F32, F16, BF16, F64)")]
    UnsupportedDtype {
        /// The checkpoint name of the tensor.
        name: String,
        /// The checkpoint file.
        location: PathBuf,
        /// The stored dtype.
        dtype: String,
    },
    /// A sharded checkpoint index (`model.safetensors.index.json`) is malformed.
    #[error("{file}: invalid shard index: {reason}")]
    ShardIndex {
        /// The index file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizers library failed.
    #[error("tokenizer {context}: {source}")]
    Tokenizer {
        /// What was being done (a file, `encode`, `decode`, ...).
        context: String,
        /// The tokenizers error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The tokenizer produces ids that the model's embedding table does not have.
    #[error("tokenizer vocab size {tokenizer_vocab} exceeds model vocab_size {model_vocab} ({detail})")]
    VocabMismatch {
        /// Size of the tokenizer vocabulary, added tokens included.
        tokenizer_vocab: usize,
        /// `vocab_size` of the model config.
        model_vocab: usize,
        /// Which tokenizer and model were compared.
        detail: String,
    },
    /// A model id could not be resolved to a local directory.
    #[error("model `{id}` not found; looked in: {}{hint}", searched.join(", "))]
    ModelNotFound {
        /// The id (or path) asked for.
        id: String,
        /// Every place that was searched, in order.
        searched: Vec<String>,
        /// Extra advice (offline mode, how to download).
        hint: String,
    },
    /// Downloading a model from the hub failed (not found, no access, unreachable, bad checksum).
    #[error("model `{id}`: {source}")]
    Download {
        /// The id asked for.
        id: String,
        /// What the hub client said.
        #[source]
        source: tril_core::CoreError,
    },
    /// Inputs to a model or generation call are inconsistent (shapes, ids out of range, ...).
    #[error("invalid input: {what}: {reason}")]
    InvalidInput {
        /// The argument.
        what: String,
        /// The problem, with the dimensions involved.
        reason: String,
    },
    /// An error about the model or file a config key names, with that key.
    #[error("{key}: {source}")]
    WithKey {
        /// Dotted config key (`reward_fn.args.model_name`).
        key: String,
        /// The underlying error.
        source: Box<ModelError>,
    },
    /// An error with the path of the checkpoint or file it happened in.
    #[error("{path}: {source}")]
    WithPath {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: Box<ModelError>,
    },
    /// A chat template failed to compile or to render (a syntax error, an undefined
    /// method, or the template's own `raise_exception(msg)`).
    #[error("chat template {template}{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    ChatTemplate {
        /// The file the template came from (`tokenizer_config.json`, `chat_template.jinja`)
        /// or `<in memory>`.
        template: String,
        /// The template line minijinja points at, when it does.
        line: Option<usize>,
        /// minijinja's message, or `raise_exception: <the template's message>`.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    /// Wrap an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }

    /// Wrap a tokenizers error with what was being done.
    pub fn tokenizer(context: impl Into<String>, source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        ModelError::Tokenizer { context: context.into(), source }
    }

    /// An [`ModelError::InvalidInput`] error.
    pub fn input(what: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::InvalidInput { what: what.into(), reason: reason.into() }
    }

    /// Attach the config key that named the model or file to this error.
    pub fn with_key(self, key: impl Into<String>) -> Self {
        ModelError::WithKey { key: key.into(), source: Box::new(self) }
    }

    /// Attach a path to this error.
    pub fn with_path(self, path: impl Into<PathBuf>) -> Self {
        ModelError::WithPath { path: path.into(), source: Box::new(self) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_subject() {
        let e = ModelError::ShapeMismatch {
            name: "transformer.wte.weight".into(),
            location: "m/model.safetensors".into(),
            expected: vec![10, 4],
            got: vec![11, 4],
        };
        let msg = e.to_string();
        assert!(msg.contains("transformer.wte.weight") && msg.contains("[10, 4]") && msg.contains("[11, 4]"), "{msg}");
        let e =
            ModelError::ModelNotFound { id: "x/y".into(), searched: vec!["a".into(), "b".into()], hint: String::new() };
        assert_eq!(e.to_string(), "model `x/y` not found; looked in: a, b");
        let e =
            ModelError::ChatTemplate { template: "m/tokenizer_config.json".into(), line: Some(3), message: "x".into() };
        assert_eq!(e.to_string(), "chat template m/tokenizer_config.json (line 3): x");
    }
}
