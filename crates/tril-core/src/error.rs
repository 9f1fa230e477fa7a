//! The one error type of `tril-core`.

use crate::config::Origin;
use std::path::PathBuf;

/// Everything that can go wrong in config composition, registries and run bookkeeping.
///
/// Config errors always carry the dotted key, the offending value (when there is
/// one) and where that value came from, so a message can be acted on directly.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A YAML file could not be parsed.
    #[error("{file}:{line}: malformed YAML: {message}")]
    Yaml {
        /// The file.
        file: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What the parser said.
        message: String,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A config group option (`task=X`, `alg=Y`, `logging=Z`) has no file.
    #[error("unknown {group} `{option}`: no file {group}/{option}.yaml in {dir}; known: {known}{suggestion}")]
    UnknownOption {
        /// The group (`task`, `alg`, `logging`).
        group: String,
        /// The option asked for.
        option: String,
        /// The config directory searched.
        dir: String,
        /// Comma-separated known options.
        known: String,
        /// `"; did you mean `x`?"` or empty.
        suggestion: String,
    },

    /// A mandatory group (`???` in config.yaml) was not chosen.
    #[error("choose a `{group}` on the command line, e.g. {group}=<OPTION> (known: {known})")]
    MissingGroup {
        /// The group.
        group: String,
        /// Comma-separated known options.
        known: String,
    },

    /// An alg file has no section for the chosen task.
    #[error("{file} has no section for task `{task}` (sections: {sections}); add a `{task}:` section to {file}")]
    NoAlgSection {
        /// The alg file.
        file: String,
        /// The task id.
        task: String,
        /// The sections it has.
        sections: String,
    },

    /// A structural problem in a config file (bad `inherits`, section id mismatch, ...).
    #[error("{key}: {message} ({origin})")]
    Structure {
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
        /// Where the value came from.
        origin: Origin,
    },

    /// A command-line or environment override could not be applied.
    #[error("override `{arg}` ({origin}): {message}")]
    Override {
        /// The override as written.
        arg: String,
        /// What is wrong.
        message: String,
        /// Command line or environment.
        origin: Origin,
    },

    /// An `${...}` interpolation could not be resolved.
    #[error("{key}: cannot resolve `{expr}`: {message} (chain: {chain}) ({origin})")]
    Interpolation {
        /// The key holding the interpolation.
        key: String,
        /// The interpolation expression.
        expr: String,
        /// What is wrong.
        message: String,
        /// The chain of keys followed, `a -> b -> a`.
        chain: String,
        /// Where the interpolating value came from.
        origin: Origin,
    },

    /// A config value does not fit its typed field.
    #[error("{key}: {message}, found {value} ({origin})")]
    InvalidValue {
        /// Dotted key.
        key: String,
        /// The offending value, as written.
        value: String,
        /// What was expected.
        message: String,
        /// Where the value came from.
        origin: Origin,
    },

    /// A run directory another process is writing.
    #[error(
        "{dir} is being written by another tril process (pid {holder}); wait for it to finish or choose another run_dir"
    )]
    Locked {
        /// The run directory.
        dir: std::path::PathBuf,
        /// The holder's pid, as written in the lock file.
        holder: String,
    },

    /// A key that no typed config knows (usually a typo).
    #[error("{key}: unknown key{suggestion}; expected one of: {expected} ({origin})")]
    UnknownKey {
        /// Dotted key.
        key: String,
        /// The keys that are allowed here.
        expected: String,
        /// `"; did you mean `x`?"` or empty.
        suggestion: String,
        /// Where the key came from.
        origin: Origin,
    },

    /// A required key is missing.
    #[error("{key}: missing required key (in {origin})")]
    MissingKey {
        /// Dotted key.
        key: String,
        /// Where the enclosing value came from.
        origin: Origin,
    },

    /// No plugin of this kind is registered under an id.
    #[error("{key}: unknown {kind} `{id}`{suggestion}; registered {kind} ids: {known} ({origin})")]
    UnknownId {
        /// Registry kind.
        kind: &'static str,
        /// The id asked for.
        id: String,
        /// Dotted key of the id in the config.
        key: String,
        /// Comma-separated registered ids.
        known: String,
        /// `"; did you mean `x`?"` or empty.
        suggestion: String,
        /// Where the id came from.
        origin: Origin,
    },

    /// Two plugins registered the same id.
    #[error("duplicate {kind} id `{id}` registered by crate `{first}` and by crate `{second}`")]
    DuplicateId {
        /// Registry kind.
        kind: &'static str,
        /// The id.
        id: &'static str,
        /// The first registering crate.
        first: &'static str,
        /// The second registering crate.
        second: &'static str,
    },

    /// A `device` / `precision` this build or this machine cannot do.
    #[error("{key}: {message}")]
    Backend {
        /// The root key (`device` or `precision`).
        key: String,
        /// What is wrong and what to do.
        message: String,
    },

    /// A hub repository or file does not exist (HTTP 404).
    #[error(
        "repository or file not found: {target} at revision {revision} (check the id; a private repo needs HF_TOKEN)"
    )]
    HubNotFound {
        /// `org/name` or `org/name/file`.
        target: String,
        /// The revision asked for.
        revision: String,
    },

    /// The hub refused access (HTTP 401/403): a private or gated repo, or a bad token.
    #[error("access denied (HTTP {status}) to {target} at revision {revision}: the repository is private or gated (or does not exist); set HF_TOKEN to a token with access")]
    HubUnauthorized {
        /// `org/name` or `org/name/file`.
        target: String,
        /// The revision asked for.
        revision: String,
        /// 401 or 403.
        status: u16,
    },

    /// The hub endpoint cannot be reached (network down, connection refused, DNS, TLS).
    #[error("cannot reach {endpoint}: {message}; use HF_HUB_OFFLINE=1 with a filled cache, or a local path")]
    HubUnreachable {
        /// `HF_ENDPOINT` (https://huggingface.co by default).
        endpoint: String,
        /// What failed.
        message: String,
    },

    /// Offline mode (`HF_HUB_OFFLINE=1`) and the files are not in the cache.
    #[error("{target} (revision {revision}) is not in the hub cache {cache} and HF_HUB_OFFLINE is set, so nothing is downloaded: unset HF_HUB_OFFLINE to download it, fill the cache (`huggingface-cli download`), or pass a local path")]
    HubOffline {
        /// `org/name` (with the split for a dataset).
        target: String,
        /// The revision asked for.
        revision: String,
        /// The cache directory searched.
        cache: String,
    },

    /// A downloaded file does not match its checksum (the partial download is removed).
    #[error("{target}: downloaded bytes do not match the hub's checksum (expected sha256 {expected}, got {got}); the partial file was removed, retry the download")]
    HubChecksum {
        /// `org/name/file`.
        target: String,
        /// The sha256 the hub announced (its ETag).
        expected: String,
        /// The sha256 of the bytes received.
        got: String,
    },

    /// Any other hub problem: an unexpected HTTP status, a malformed answer, no files to get.
    #[error("{target}: {message}")]
    Hub {
        /// `org/name` or `org/name/file`.
        target: String,
        /// What is wrong and what to do.
        message: String,
    },

    /// Any other error with context about where it happened.
    #[error("{context}: {message}")]
    WithContext {
        /// What was being done.
        context: String,
        /// What went wrong.
        message: String,
    },
}

/// Result alias for `tril-core`.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// `"; did you mean `x`?"` for the closest candidate, or an empty string.
pub fn did_you_mean<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(wanted, c), c))
        .filter(|(d, c)| *d <= 3.max(wanted.len() / 3) && *d < wanted.len().max(c.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}
