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
    /// A loss term or gradient norm that is not a finite number, beyond
    /// `guard.skip_nonfinite`: the step's update was not applied and the run stops.
    #[error(
        "{algorithm}: {at}: {what} is {value}; the update was not applied and the run stops ({skipped} bad steps \
         skipped, guard.skip_nonfinite = {limit}); {checkpoint}"
    )]
    NonFinite {
        /// The algorithm id.
        algorithm: String,
        /// Where (`iteration 3, update step 2`, `step 7`).
        at: String,
        /// The term (`ppo/value_loss`, `grad_norm`).
        what: String,
        /// The value.
        value: f64,
        /// Bad steps skipped before this one.
        skipped: usize,
        /// `guard.skip_nonfinite`.
        limit: usize,
        /// The last good checkpoint, or that none was written.
        checkpoint: String,
    },
    /// A loss term or KL beyond its `guard` bound: the run diverged and stops.
    #[error(
        "{algorithm}: {at}: {what} = {value} exceeds guard.{key} = {bound}: the run diverged and stops; {checkpoint}"
    )]
    Diverged {
        /// The algorithm id.
        algorithm: String,
        /// Where.
        at: String,
        /// The term.
        what: String,
        /// The value.
        value: f64,
        /// The `guard` key of the bound (`max_loss`, `max_kl`).
        key: &'static str,
        /// The bound.
        bound: f64,
        /// The last good checkpoint, or that none was written.
        checkpoint: String,
    },
    /// Weights holding a NaN/inf: no checkpoint of them is written.
    #[error(
        "{algorithm}: {at}: parameter `{param}` is not finite; no checkpoint of these weights is written; {checkpoint}"
    )]
    NonFiniteWeights {
        /// The algorithm id.
        algorithm: String,
        /// Where.
        at: String,
        /// The parameter's dotted path.
        param: String,
        /// The last good checkpoint, or that none was written.
        checkpoint: String,
    },
    /// A run stopped by SIGINT/SIGTERM after its checkpoint (`tril run` exits 128 + signal).
    #[error("{algorithm}: stopped by {signal} after {at}; {checkpoint}; continue with `tril run --resume {run_dir}`")]
    Interrupted {
        /// The algorithm id.
        algorithm: String,
        /// The signal's name.
        signal: String,
        /// The signal's number.
        number: i32,
        /// The last completed iteration or step.
        at: String,
        /// The checkpoint written.
        checkpoint: String,
        /// The run directory.
        run_dir: String,
    },
    /// A reward that is not a finite number, beyond `guard.skip_nonfinite`: the iteration
    /// stops before any update.
    #[error(
        "iteration {iteration}: the reward of sample `{sample}` is {value} (generation {generation:?}); stopping instead of training on it; {checkpoint}"
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
        /// The last good checkpoint, or that none was written.
        checkpoint: String,
    },
    /// Reading or writing a checkpoint or other run file.
    #[error("{path}: {message}")]
    File {
        /// The file or directory.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A count that must divide evenly by another (PPO's batch sizes).
    #[error("{key} ({value}) must be divisible by {divisor_key} ({divisor})")]
    Indivisible {
        /// The dotted key of the dividend (`alg.args.trajectories_per_update`).
        key: String,
        /// Its value.
        value: usize,
        /// The dotted key of the divisor (`alg.args.batch_size`).
        divisor_key: String,
        /// Its value.
        divisor: usize,
    },
    /// A count that must be a whole multiple of another (group algorithms' steps).
    #[error("{key} ({value}) must be a multiple of {of_key} ({of})")]
    NotMultiple {
        /// The dotted key of the multiple (`alg.args.steps_per_generation`).
        key: String,
        /// Its value.
        value: usize,
        /// The dotted key it must be a multiple of (`alg.args.grad_accumulation`).
        of_key: String,
        /// Its value.
        of: usize,
    },
    /// The completions of one generation of a group algorithm do not split into whole
    /// groups.
    #[error(
        "alg.args.batch_size ({batch_size}) x alg.args.steps_per_generation ({steps_per_generation}) = {} \
         completions per generation must be divisible by alg.args.num_generations ({num_generations})",
        batch_size * steps_per_generation
    )]
    GenerationBatch {
        /// `alg.args.batch_size`.
        batch_size: usize,
        /// `alg.args.steps_per_generation` (after its default).
        steps_per_generation: usize,
        /// `alg.args.num_generations`, the group size.
        num_generations: usize,
    },
    /// A policy model whose embedding table is smaller than the tokenizer's vocabulary.
    #[error("the policy `{model}` has {embeddings} token embeddings but the tokenizer has {tokens} tokens")]
    Vocabulary {
        /// The model name or directory.
        model: String,
        /// Rows of its token embedding.
        embeddings: usize,
        /// Tokens of the tokenizer.
        tokens: usize,
    },
    /// The tokenizer lacks a special token the algorithm needs.
    #[error("the tokenizer has {lacks}")]
    Tokenizer {
        /// What it lacks and what for (`no EOS token to end completions with`).
        lacks: String,
    },
    /// A text that tokenizes to nothing where at least one token is needed.
    #[error("{at}: {what} has no tokens")]
    NoTokens {
        /// Where: the example or sample id.
        at: String,
        /// Which text (`the text`, ``the completion `...` ``).
        what: String,
    },
    /// A task's data could not be read or used.
    #[error("task `{task}` ({} split): {message}", split.name())]
    Task {
        /// The task id.
        task: String,
        /// The split read.
        split: Split,
        /// What went wrong.
        message: String,
    },
    /// A row of a response dataset (`offline_ips`, `tril logp`) that cannot be used, or a
    /// dataset file with no usable row.
    #[error("{file}: {}{message}", row.map(|r| format!("row {r}: ")).unwrap_or_default())]
    Data {
        /// The dataset file.
        file: String,
        /// The 1-based data row, when one row is at fault.
        row: Option<usize>,
        /// What is wrong with it.
        message: String,
    },
    /// A record of a response dataset that cannot be tokenized as needed.
    #[error("row {row} (uid `{uid}`): {message}")]
    Record {
        /// The 1-based data row.
        row: usize,
        /// The row's uid.
        uid: String,
        /// What is wrong with it.
        message: String,
    },
    /// A uid added twice to a log-prob cache.
    #[error("uid `{uid}` appears twice; uids must be unique")]
    DuplicateUid {
        /// The repeated uid.
        uid: String,
    },
    /// A file that is not a log-prob cache `tril logp` wrote.
    #[error("{path}: not a tril log-prob cache: {message}")]
    Cache {
        /// The cache file.
        path: String,
        /// What does not match the format.
        message: String,
    },
    /// Cached log-probs that do not cover a row's response tokens.
    #[error(
        "uid `{uid}` (row {row}): the cache holds {cached} log-probs but the response has {tokens} tokens here \
         (was the cache computed with another tokenizer or max_length?)"
    )]
    CacheMismatch {
        /// The row's uid.
        uid: String,
        /// The 1-based data row.
        row: usize,
        /// Log-probs in the cache.
        cached: usize,
        /// Response tokens (EOS included) under this run's tokenizer and max_length.
        tokens: usize,
    },
    /// Rows without cached log-probs, refused unless `alg.args.allow_missing_logp`.
    #[error(
        "{missing} of {total} rows have no log-probs in {cache} (first: uid `{first}`); run `tril logp` on this \
         data or set alg.args.allow_missing_logp=true"
    )]
    MissingLogp {
        /// Rows without log-probs.
        missing: usize,
        /// Rows considered.
        total: usize,
        /// The cache file.
        cache: String,
        /// The first uid missing.
        first: String,
    },
    /// Tensor values that could not be read back from the device into a vector.
    #[error("reading {what} back from the device: {message}")]
    TensorData {
        /// The values (`response log-probs`).
        what: String,
        /// Burn's data error.
        message: String,
    },
    /// A training run that cannot go on: inputs inconsistent with each other or nothing
    /// left to train on.
    #[error("{algorithm}: {message}")]
    Training {
        /// The algorithm id.
        algorithm: String,
        /// What is wrong.
        message: String,
    },
    /// Reading, writing or creating a run file or directory failed.
    #[error("{action} {path}: {message}")]
    Io {
        /// What was being done (`writing optimizer state`, `creating`).
        action: String,
        /// The file or directory.
        path: String,
        /// The underlying error.
        message: String,
    },
    /// `--resume RUN_DIR` found no complete checkpoint to continue from.
    #[error(
        "--resume {run_dir}: {}",
        match io_error {
            Some(e) => format!("no checkpoints to resume from ({dir}: {e})"),
            None => format!("{dir} holds no complete checkpoint"),
        }
    )]
    NoCheckpoint {
        /// The run directory given to `--resume`.
        run_dir: String,
        /// Its `checkpoints/` directory.
        dir: String,
        /// Why `checkpoints/` could not be listed; `None` when it holds no complete one.
        io_error: Option<String>,
    },
    /// A checkpoint's trainer state that does not belong to this run.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The `trainer_state.json` file.
        path: String,
        /// What does not match (algorithm, iteration, number of train prompts).
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

    /// [`AlgorithmError::Io`]: `action` (`writing model state`) on `path` failed with `error`.
    pub fn io(action: impl Into<String>, path: &std::path::Path, error: impl ToString) -> Self {
        AlgorithmError::Io { action: action.into(), path: path.display().to_string(), message: error.to_string() }
    }

    /// [`AlgorithmError::Training`] of `algorithm`.
    pub fn training(algorithm: impl Into<String>, message: impl Into<String>) -> Self {
        AlgorithmError::Training { algorithm: algorithm.into(), message: message.into() }
    }
}

/// Result alias for tril-algorithms.
pub type Result<T, E = AlgorithmError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages read as the string errors they replace did (end-to-end tests grep them).
    #[test]
    fn messages_keep_their_wording() {
        let cases: Vec<(AlgorithmError, &str)> = vec![
            (
                AlgorithmError::Indivisible {
                    key: "alg.args.trajectories_per_update".into(),
                    value: 32,
                    divisor_key: "alg.args.batch_size".into(),
                    divisor: 5,
                },
                "alg.args.trajectories_per_update (32) must be divisible by alg.args.batch_size (5)",
            ),
            (
                AlgorithmError::NotMultiple {
                    key: "alg.args.steps_per_generation".into(),
                    value: 3,
                    of_key: "alg.args.grad_accumulation".into(),
                    of: 2,
                },
                "alg.args.steps_per_generation (3) must be a multiple of alg.args.grad_accumulation (2)",
            ),
            (
                AlgorithmError::GenerationBatch { batch_size: 6, steps_per_generation: 2, num_generations: 8 },
                "alg.args.batch_size (6) x alg.args.steps_per_generation (2) = 12 completions per generation must be \
                 divisible by alg.args.num_generations (8)",
            ),
            (
                AlgorithmError::Data {
                    file: "d.parquet".into(),
                    row: None,
                    message: "the file has no data rows".into(),
                },
                "d.parquet: the file has no data rows",
            ),
            (
                AlgorithmError::Data {
                    file: "dup.parquet".into(),
                    row: Some(4),
                    message: "uid `syn-1` repeats row 2 (column `uid`); uids must be unique".into(),
                },
                "dup.parquet: row 4: uid `syn-1` repeats row 2 (column `uid`); uids must be unique",
            ),
            (
                AlgorithmError::Record { row: 3, uid: "q-1".into(), message: "the prompt has no tokens".into() },
                "row 3 (uid `q-1`): the prompt has no tokens",
            ),
            (
                AlgorithmError::MissingLogp { missing: 1, total: 5, cache: "c.st".into(), first: "syn-4".into() },
                "1 of 5 rows have no log-probs in c.st (first: uid `syn-4`); run `tril logp` on this data or set \
                 alg.args.allow_missing_logp=true",
            ),
            (
                AlgorithmError::CacheMismatch { uid: "syn-2".into(), row: 3, cached: 4, tokens: 7 },
                "uid `syn-2` (row 3): the cache holds 4 log-probs but the response has 7 tokens here (was the cache \
                 computed with another tokenizer or max_length?)",
            ),
            (
                AlgorithmError::NonFiniteReward {
                    iteration: 1,
                    sample: "imdb_train_7".into(),
                    generation: "a b".into(),
                    value: f64::NAN,
                    checkpoint: "no checkpoint was written yet".into(),
                },
                "iteration 1: the reward of sample `imdb_train_7` is NaN (generation \"a b\"); stopping instead of \
                 training on it; no checkpoint was written yet",
            ),
            (
                AlgorithmError::NonFinite {
                    algorithm: "bc".into(),
                    at: "step 3".into(),
                    what: "loss".into(),
                    value: f64::NAN,
                    skipped: 1,
                    limit: 1,
                    checkpoint: "last good checkpoint: r/checkpoints/iter_2".into(),
                },
                "bc: step 3: loss is NaN; the update was not applied and the run stops (1 bad steps skipped, \
                 guard.skip_nonfinite = 1); last good checkpoint: r/checkpoints/iter_2",
            ),
            (
                AlgorithmError::NoCheckpoint { run_dir: "r".into(), dir: "r/checkpoints".into(), io_error: None },
                "--resume r: r/checkpoints holds no complete checkpoint",
            ),
            (
                AlgorithmError::NoCheckpoint {
                    run_dir: "r".into(),
                    dir: "r/checkpoints".into(),
                    io_error: Some("not found".into()),
                },
                "--resume r: no checkpoints to resume from (r/checkpoints: not found)",
            ),
            (
                AlgorithmError::io("writing model state", std::path::Path::new("t/model"), "disk full"),
                "writing model state t/model: disk full",
            ),
            (
                AlgorithmError::Task { task: "imdb".into(), split: Split::Val, message: "no rows".into() },
                "task `imdb` (val split): no rows",
            ),
            (
                AlgorithmError::NoTokens { at: "p-1".into(), what: "the completion ``".into() },
                "p-1: the completion `` has no tokens",
            ),
            (
                AlgorithmError::Tokenizer { lacks: "neither a pad nor an EOS token".into() },
                "the tokenizer has neither a pad nor an EOS token",
            ),
            (
                AlgorithmError::training("offline_ips", "no row left to train on"),
                "offline_ips: no row left to train on",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }
}
