//! The one error type of `tril-tasks`.

use std::path::PathBuf;

/// Errors while loading or preparing task data.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A data file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file a data key names does not exist.
    #[error(
        "{key} = {}: no such file (a relative path in a config file's `./`/`../` form is relative to the \
         directory holding the config dir; otherwise, and on the command line, to the working directory {})",
        path.display(),
        cwd.display()
    )]
    MissingFile {
        /// The config key (`task.args.train_file`).
        key: String,
        /// The path as the config has it.
        path: PathBuf,
        /// The working directory relative paths were read from.
        cwd: PathBuf,
    },
    /// A file's format is not one tril reads.
    #[error("{path}: unsupported data file format (expected .csv, .jsonl, .json lines or .parquet)")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// A file is not valid in its format (e.g. a truncated parquet footer).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A row is malformed or misses a required column.
    #[error("{path}: row {row}: {message}")]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based data row (header excluded).
        row: usize,
        /// What is wrong.
        message: String,
    },
    /// A required column is absent from the file.
    #[error("{path}: no column `{column}` (columns: {columns}); set {key} to one of them")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The columns the file has.
        columns: String,
        /// The config key that names the column.
        key: String,
    },
    /// A split would be empty.
    #[error("task `{task}`: split `{split}` is empty ({detail})")]
    EmptySplit {
        /// Task id.
        task: String,
        /// Split name.
        split: String,
        /// Why.
        detail: String,
    },
    /// A `hub:` dataset id could not be parsed or its files not downloaded.
    #[error("{key} = {value}: {message}")]
    HubData {
        /// The data-file config key (`task.args.train_file`, `task.args.datasets[0].path`).
        key: String,
        /// The value as written.
        value: String,
        /// What is wrong (the hub client's error, naming the repo and file).
        message: String,
    },
    /// The task needs data it was not given.
    #[error("task `{task}`: {message}")]
    Config {
        /// Task id.
        task: String,
        /// What to do.
        message: String,
    },
}
