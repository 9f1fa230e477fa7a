//! Preference data for DPO-style and KTO training, from local CSV/JSONL/Parquet files, and
//! the tasks that serve it: `preference` ([`PreferenceTask`], paired) and
//! `unpaired_preference` ([`UnpairedTask`], KTO). Rows are split into train/val/test by a
//! seeded shuffle ([`split_indices`]; Salamandra's converter: 10% dev, seed 42).
//!
//! Two of TRL's dataset formats (`dataset_formats.md`), each "standard" (plain text) or
//! "conversational" (lists of `{"role", "content"}` messages):
//! - **paired preference** (DPO, IPO, ...): `prompt`, `chosen`, `rejected` columns, read by
//!   [`PreferenceConfig::load`] into [`PreferencePair`]s; conversational rows may also leave
//!   the prompt implicit (no `prompt` column: `chosen` and `rejected` are whole
//!   conversations, and the prompt is the run of leading messages they share, as TRL's
//!   `extract_prompt` finds it);
//! - **unpaired preference** (KTO): `prompt`, `completion`, `label` columns, read by
//!   [`UnpairedConfig::load`] into [`UnpairedExample`]s.
//!
//! A conversational cell is a JSON list of messages in a JSON lines or Parquet file (a CSV
//! cell is always text). It is kept as its canonical JSON text
//! ([`tril_models::chat_template::messages_to_json`]): the trainer renders it with the
//! policy tokenizer's chat template
//! ([`tril_models::chat_template::render_cell_pair`]). A row is conversational in every
//! column or text in every column; a mix, a JSON object, or a JSON list of anything but
//! messages is a problem row naming the file, row and column (skipped and reported, or an
//! error with `strict: true`).
//!
//! Several files are concatenated in the order listed (as FAI-RL's `data.datasets`); every
//! example remembers its dataset index and 1-based data row ([`SourceRow`]). A missing
//! column, an empty value, a bad label or a file without data rows is an error naming the
//! file (and the row, and the config key that names the column).
//!
//! Truncation to `max_length` / `max_prompt_length` happens at tokenization; here the two
//! are only checked.
//!
//! A `path` may also be a HF hub dataset id, `hub:org/name[@revision]` (see
//! [`crate::hub_data`]): `subset` (the config name) and `split` (default `train`), FAI-RL's
//! keys, pick the parquet files, which are downloaded into the HF cache, e.g.
//! `{path: "hub:trl-lib/ultrafeedback_binarized", split: train}`. With a local file,
//! setting `subset` or `split` is an error naming the key rather than being ignored.
//!
//! # Not supported yet
//! - The implicit-prompt format for unpaired (KTO) rows: TRL has none either.

use crate::error::TaskError;
use crate::table::Table;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tril_core::config::Section;
use tril_core::config::{Checker, Ranges};
use tril_core::plugin::{self as core, BuildCtx, PluginError, Sample, Split, Task};
use tril_models::chat_template::{messages_to_json, parse_messages, Message};

const TASK: &str = "preference";

fn default_prompt() -> String {
    "prompt".into()
}
fn default_chosen() -> String {
    "chosen".into()
}
fn default_rejected() -> String {
    "rejected".into()
}
fn default_completion() -> String {
    "completion".into()
}
fn default_label() -> String {
    "label".into()
}
fn default_max_length() -> usize {
    1024
}
fn default_max_prompt_length() -> usize {
    512
}
fn default_val_fraction() -> f64 {
    0.1
}
fn default_seed() -> u64 {
    42
}

/// One file of paired preferences (one entry of `task.args.datasets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceSource {
    /// A `.csv` (with a header row), `.jsonl` or `.parquet` file, or a hub dataset id
    /// (`hub:org/name[@revision]`).
    pub path: PathBuf,
    /// Column holding the prompt.
    #[serde(default = "default_prompt")]
    pub prompt_column: String,
    /// Column holding the preferred completion.
    #[serde(default = "default_chosen")]
    pub chosen_column: String,
    /// Column holding the dispreferred completion.
    #[serde(default = "default_rejected")]
    pub rejected_column: String,
    /// HF hub subset (config name) of a `hub:` path; an error with a local file.
    #[serde(default)]
    pub subset: Option<String>,
    /// HF hub split of a `hub:` path (default `train`); an error with a local file.
    #[serde(default)]
    pub split: Option<String>,
}

/// One file of unpaired, labelled completions (KTO; one entry of `task.args.datasets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnpairedSource {
    /// A `.csv` (with a header row), `.jsonl` or `.parquet` file, or a hub dataset id
    /// (`hub:org/name[@revision]`).
    pub path: PathBuf,
    /// Column holding the prompt.
    #[serde(default = "default_prompt")]
    pub prompt_column: String,
    /// Column holding the completion.
    #[serde(default = "default_completion")]
    pub completion_column: String,
    /// Column holding the label: `true`/`false`/`1`/`0` (case-insensitive), true = desirable.
    #[serde(default = "default_label")]
    pub label_column: String,
    /// HF hub subset (config name) of a `hub:` path; an error with a local file.
    #[serde(default)]
    pub subset: Option<String>,
    /// HF hub split of a `hub:` path (default `train`); an error with a local file.
    #[serde(default)]
    pub split: Option<String>,
}

/// Paired preference data (`task.args` of a DPO-style run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceConfig {
    /// Files read and concatenated in this order (at least one).
    pub datasets: Vec<PreferenceSource>,
    /// Prompt + completion tokens kept at tokenization (TRL: 1024; FAI-RL: 512).
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Prompt tokens kept at tokenization (TRL <= 0.2x: 512; FAI-RL: 256).
    #[serde(default = "default_max_prompt_length")]
    pub max_prompt_length: usize,
    /// Fraction of the rows held out as the `val` split (Salamandra's `--dev_split`: 0.1).
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Fraction of the rows held out as the `test` split (Salamandra's `--test_split`: 0.1).
    #[serde(default)]
    pub test_fraction: f64,
    /// Seed of the split (Salamandra's `--random_seed`: 42).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// A problem row (a JSON object or a list of non-messages, text beside a conversation, a
    /// bad label) is an error (else skipped, counted and reported).
    #[serde(default)]
    pub strict: bool,
}

impl Ranges for PreferenceConfig {
    /// `max_length` >= 1, `max_prompt_length` in 1..`max_length`, and `val_fraction`,
    /// `test_fraction` in [0, 1) leaving training rows.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        check_length_ranges(c, self.max_length, self.max_prompt_length)?;
        check_fractions(c, self.val_fraction, self.test_fraction)
    }
}

/// Unpaired preference data (`task.args` of a KTO run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnpairedConfig {
    /// Files read and concatenated in this order (at least one).
    pub datasets: Vec<UnpairedSource>,
    /// Prompt + completion tokens kept at tokenization (TRL's KTO: 1024).
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Prompt tokens kept at tokenization (TRL <= 0.2x: 512).
    #[serde(default = "default_max_prompt_length")]
    pub max_prompt_length: usize,
    /// Fraction of the rows held out as the `val` split (Salamandra's `--dev_split`: 0.1).
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Fraction of the rows held out as the `test` split (Salamandra's `--test_split`: 0.1).
    #[serde(default)]
    pub test_fraction: f64,
    /// Seed of the split (Salamandra's `--random_seed`: 42).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// A problem row (a JSON object or a list of non-messages, text beside a conversation, a
    /// bad label) is an error (else skipped, counted and reported).
    #[serde(default)]
    pub strict: bool,
}

impl Ranges for UnpairedConfig {
    /// `max_length` >= 1, `max_prompt_length` in 1..`max_length`, and `val_fraction`,
    /// `test_fraction` in [0, 1) leaving training rows.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        check_length_ranges(c, self.max_length, self.max_prompt_length)?;
        check_fractions(c, self.val_fraction, self.test_fraction)
    }
}

/// Where an example came from: the index into `datasets` and the 1-based data row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceRow {
    /// Index of the file in `task.args.datasets`.
    pub dataset: usize,
    /// 1-based data row of that file (the header excluded).
    pub row: usize,
}

/// A prompt with a preferred and a dispreferred completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferencePair {
    /// The prompt.
    pub prompt: String,
    /// The preferred completion.
    pub chosen: String,
    /// The dispreferred completion.
    pub rejected: String,
    /// Where it was read.
    pub source_row: SourceRow,
}

/// A prompt with one completion labelled desirable (`true`) or undesirable (`false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpairedExample {
    /// The prompt.
    pub prompt: String,
    /// The completion.
    pub completion: String,
    /// True when the completion is desirable.
    pub label: bool,
    /// Where it was read.
    pub source_row: SourceRow,
}

fn config_error(message: String) -> TaskError {
    TaskError::Config { task: TASK.into(), message }
}

/// Checks the shared settings: at least one dataset and sane token budgets.
fn check_lengths(n_datasets: usize, max_length: usize, max_prompt_length: usize) -> Result<(), TaskError> {
    if n_datasets == 0 {
        return Err(config_error("task.args.datasets is empty: list at least one CSV/JSONL file".into()));
    }
    if max_length == 0 {
        return Err(config_error("task.args.max_length must be > 0, found 0".into()));
    }
    if max_prompt_length == 0 || max_prompt_length >= max_length {
        return Err(config_error(format!(
            "task.args.max_prompt_length must be > 0 and < task.args.max_length ({max_length}), \
             found {max_prompt_length}"
        )));
    }
    Ok(())
}

/// Reads the file or `hub:` split (refusing hub-only keys with a local file), which must
/// have at least one data row.
fn read_source(ix: usize, path: &Path, subset: &Option<String>, split: &Option<String>) -> Result<Table, TaskError> {
    if !crate::hub_data::is_hub(path) {
        for (key, value) in [("subset", subset), ("split", split)] {
            if let Some(value) = value {
                return Err(config_error(format!(
                    "task.args.datasets[{ix}].{key} = `{value}` selects from a HF hub dataset; remove it to read \
                     the local file {}, or set path to a hub id (hub:org/name)",
                    path.display()
                )));
            }
        }
    }
    let key = format!("task.args.datasets[{ix}].path");
    let table = crate::hub_data::read_table_with(&key, path, "train", subset.as_deref(), split.as_deref())?;
    let path = table.path();
    if table.is_empty() {
        return Err(config_error(format!("{}: no data rows (task.args.datasets[{ix}].path)", path.display())));
    }
    Ok(table)
}

/// One cell of a row: plain text, or a conversation (a list of messages).
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(String),
    Conversation(Vec<Message>),
}

impl Cell {
    /// The text a sample keeps: the text itself, or the conversation's canonical JSON.
    fn into_text(self) -> String {
        match self {
            Cell::Text(text) => text,
            Cell::Conversation(messages) => messages_to_json(&messages),
        }
    }
}

/// Whether cells of `path` can hold conversations (JSON lines and Parquet; CSV is text).
fn structured(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    matches!(ext.as_str(), "jsonl" | "json" | "parquet" | "pq")
}

fn row_problem(path: &Path, row: usize, message: String) -> TaskError {
    TaskError::Row { path: path.to_path_buf(), row, message }
}

/// Reads one cell: a JSON list of messages in a JSON lines/Parquet file is a
/// conversation; a JSON object or a list of anything else is a problem naming the file,
/// row and column; everything else is text.
fn read_cell(path: &Path, row: usize, column: &str, value: String) -> Result<Cell, TaskError> {
    if !structured(path) {
        return Ok(Cell::Text(value));
    }
    match parse_messages(&value) {
        Ok(None) => Ok(Cell::Text(value)),
        Ok(Some(messages)) => Ok(Cell::Conversation(messages)),
        Err(e) => {
            let reason = match e {
                tril_models::ModelError::InvalidInput { reason, .. } => reason,
                other => other.to_string(),
            };
            let kind = if value.trim_start().starts_with('{') { "object" } else { "list" };
            Err(row_problem(
                path,
                row,
                format!("column `{column}` holds a JSON {kind}, expected text or a conversation: {reason}"),
            ))
        }
    }
}

/// The cells of one row, all text or all conversations, else a problem naming the columns.
fn same_kind(path: &Path, row: usize, cells: &[(&str, &Cell)]) -> Result<(), TaskError> {
    let conversational = |c: &Cell| matches!(c, Cell::Conversation(_));
    if let (Some(conv), Some(text)) =
        (cells.iter().find(|(_, c)| conversational(c)), cells.iter().find(|(_, c)| !conversational(c)))
    {
        return Err(row_problem(
            path,
            row,
            format!(
                "column `{}` is a list of messages but column `{}` is text: a row is conversational in every \
                 column or text in every column",
                conv.0, text.0
            ),
        ));
    }
    Ok(())
}

/// TRL's `extract_prompt`: the prompt is the leading messages `chosen` and `rejected`
/// share (all but the last when one conversation starts the other, as TRL's loop
/// leaves it), the completions are the rest. `None` when they share no leading message.
fn extract_prompt(chosen: &[Message], rejected: &[Message]) -> Option<(Vec<Message>, Vec<Message>, Vec<Message>)> {
    // Python compares messages as dicts: key order does not matter.
    let plain = |m: &Message| serde_json::from_str::<serde_json::Value>(&m.to_json().to_json_string()).ok();
    let n = chosen.len().min(rejected.len());
    let split = (0..n).find(|&i| plain(&chosen[i]) != plain(&rejected[i])).unwrap_or(n.saturating_sub(1));
    if split == 0 {
        return None;
    }
    Some((chosen[..split].to_vec(), chosen[split..].to_vec(), rejected[split..].to_vec()))
}

/// One paired row as (prompt, chosen, rejected) texts; `prompt` is `None` for the
/// implicit-prompt format (the file has no prompt column).
fn paired_row(
    path: &Path,
    row: usize,
    source: &PreferenceSource,
    prompt: Option<String>,
    chosen: String,
    rejected: String,
) -> Result<(String, String, String), TaskError> {
    let chosen = read_cell(path, row, &source.chosen_column, chosen)?;
    let rejected = read_cell(path, row, &source.rejected_column, rejected)?;
    let Some(prompt) = prompt else {
        let (Cell::Conversation(c), Cell::Conversation(r)) = (&chosen, &rejected) else {
            return Err(row_problem(
                path,
                row,
                format!(
                    "the file has no `{}` column, so the prompt is implicit, which needs `{}` and `{}` to be \
                     conversations (lists of messages) sharing their first turns",
                    source.prompt_column, source.chosen_column, source.rejected_column
                ),
            ));
        };
        let Some((p, c, r)) = extract_prompt(c, r) else {
            return Err(row_problem(
                path,
                row,
                format!(
                    "implicit prompt: `{}` and `{}` share no leading message, so there is no prompt",
                    source.chosen_column, source.rejected_column
                ),
            ));
        };
        return Ok((messages_to_json(&p), messages_to_json(&c), messages_to_json(&r)));
    };
    let prompt = read_cell(path, row, &source.prompt_column, prompt)?;
    same_kind(
        path,
        row,
        &[(&source.prompt_column, &prompt), (&source.chosen_column, &chosen), (&source.rejected_column, &rejected)],
    )?;
    Ok((prompt.into_text(), chosen.into_text(), rejected.into_text()))
}

/// The ranges of `max_length` and `max_prompt_length` (at least 1, below `max_length`).
fn check_length_ranges(c: &Checker<'_>, max_length: usize, max_prompt_length: usize) -> tril_core::Result<()> {
    c.at_least("max_length", max_length, 1)?;
    let ok = max_prompt_length >= 1 && max_prompt_length < max_length;
    let message = format!("expected at least 1 and less than max_length ({max_length})");
    c.satisfies(ok, "max_prompt_length", max_prompt_length, message)
}

/// The ranges of `task.args.val_fraction` and `test_fraction`: each in [0, 1), together
/// below 1 so that training rows remain.
pub(crate) fn check_fractions(c: &Checker<'_>, val_fraction: f64, test_fraction: f64) -> tril_core::Result<()> {
    c.in_range("val_fraction", val_fraction, 0.0..1.0)?;
    c.in_range("test_fraction", test_fraction, 0.0..1.0)?;
    let message = format!("expected val_fraction + test_fraction < 1 (val_fraction is {val_fraction})");
    c.satisfies(val_fraction + test_fraction < 1.0, "test_fraction", test_fraction, message)
}

/// Splits `n` rows into (train, val, test) index lists: a seeded shuffle, the first
/// `ceil(val_fraction n)` rows to `val`, the next `ceil(test_fraction n)` to `test`, the
/// rest to `train`; each list keeps the file order.
pub fn split_indices(n: usize, val_fraction: f64, test_fraction: f64, seed: u64) -> Result<[Vec<usize>; 3], TaskError> {
    for (key, f) in [("val_fraction", val_fraction), ("test_fraction", test_fraction)] {
        if !(0.0..1.0).contains(&f) {
            return Err(config_error(format!("task.args.{key} must be in [0, 1), found {f}")));
        }
    }
    let count = |f: f64| (f * n as f64).ceil() as usize;
    let (n_val, n_test) = (count(val_fraction), count(test_fraction));
    if n_val + n_test >= n {
        return Err(config_error(format!(
            "{n} rows leave no training rows after val_fraction {val_fraction} ({n_val} rows) and test_fraction \
             {test_fraction} ({n_test} rows)"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut val = order[..n_val].to_vec();
    let mut test = order[n_val..n_val + n_test].to_vec();
    let mut train = order[n_val + n_test..].to_vec();
    for v in [&mut train, &mut val, &mut test] {
        v.sort_unstable();
    }
    Ok([train, val, test])
}

fn split_slot(split: Split) -> usize {
    match split {
        Split::Train => 0,
        Split::Val => 1,
        Split::Test => 2,
    }
}

/// The rows of one split, or an error naming the task and split when it is empty.
fn pick<T: Clone>(task: &str, all: &[T], splits: &[Vec<usize>; 3], split: Split) -> Result<Vec<T>, PluginError> {
    let ix = &splits[split_slot(split)];
    if ix.is_empty() {
        return Err(TaskError::EmptySplit {
            task: task.into(),
            split: split.name().into(),
            detail: format!("set task.args.{}_fraction > 0 to hold rows out for it", split.name()),
        }
        .into());
    }
    Ok(ix.iter().map(|&i| all[i].clone()).collect())
}

fn row_id(datasets: &[PathBuf], source: SourceRow) -> String {
    format!("{}:row {}", datasets[source.dataset].display(), source.row)
}

/// The `preference` task: paired preferences read by [`PreferenceConfig::load`], split
/// by [`split_indices`].
#[derive(Debug, Clone)]
pub struct PreferenceTask {
    pairs: Vec<core::PreferencePair>,
    splits: [Vec<usize>; 3],
}

impl PreferenceTask {
    /// Reads the files and splits the rows.
    pub fn new(config: &PreferenceConfig) -> Result<Self, TaskError> {
        let paths: Vec<PathBuf> = config.datasets.iter().map(|d| d.path.clone()).collect();
        let pairs: Vec<core::PreferencePair> = config
            .load()?
            .into_iter()
            .map(|p| core::PreferencePair {
                id: row_id(&paths, p.source_row),
                prompt: p.prompt,
                chosen: p.chosen,
                rejected: p.rejected,
            })
            .collect();
        let splits = split_indices(pairs.len(), config.val_fraction, config.test_fraction, config.seed)?;
        Ok(PreferenceTask { pairs, splits })
    }
}

impl Task for PreferenceTask {
    fn samples(&self, split: Split) -> Result<Vec<Sample>, PluginError> {
        Ok(self.preference_pairs(split)?.into_iter().map(pair_sample).collect())
    }

    fn preference_pairs(&self, split: Split) -> Result<Vec<core::PreferencePair>, PluginError> {
        pick(TASK, &self.pairs, &self.splits, split)
    }
}

/// A pair as an on-policy sample: the prompt, with the chosen completion as reference.
pub fn pair_sample(p: core::PreferencePair) -> Sample {
    Sample { id: p.id, prompt: p.prompt, references: vec![p.chosen], meta: Default::default() }
}

/// The `unpaired_preference` task: KTO's labelled completions read by
/// [`UnpairedConfig::load`], split by [`split_indices`].
#[derive(Debug, Clone)]
pub struct UnpairedTask {
    examples: Vec<core::UnpairedCompletion>,
    splits: [Vec<usize>; 3],
}

impl UnpairedTask {
    /// Reads the files and splits the rows.
    pub fn new(config: &UnpairedConfig) -> Result<Self, TaskError> {
        let paths: Vec<PathBuf> = config.datasets.iter().map(|d| d.path.clone()).collect();
        let examples: Vec<core::UnpairedCompletion> = config
            .load()?
            .into_iter()
            .map(|e| core::UnpairedCompletion {
                id: row_id(&paths, e.source_row),
                prompt: e.prompt,
                completion: e.completion,
                desirable: e.label,
            })
            .collect();
        let splits = split_indices(examples.len(), config.val_fraction, config.test_fraction, config.seed)?;
        Ok(UnpairedTask { examples, splits })
    }
}

impl Task for UnpairedTask {
    fn samples(&self, split: Split) -> Result<Vec<Sample>, PluginError> {
        let examples = self.unpaired(split)?;
        Ok(examples
            .into_iter()
            .map(|e| Sample { id: e.id, prompt: e.prompt, references: vec![e.completion], meta: Default::default() })
            .collect())
    }

    fn unpaired(&self, split: Split) -> Result<Vec<core::UnpairedCompletion>, PluginError> {
        pick("unpaired_preference", &self.examples, &self.splits, split)
    }
}

fn build_paired(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Task>, PluginError> {
    Ok(Box::new(PreferenceTask::new(&section.extract::<PreferenceConfig>()?)?))
}

fn build_unpaired(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Task>, PluginError> {
    Ok(Box::new(UnpairedTask::new(&section.extract::<UnpairedConfig>()?)?))
}

tril_core::register!(task,
    id: "preference",
    doc: "Paired preferences (prompt, chosen, rejected) from local CSV/JSONL files, for dpo and reward_model.",
    config: PreferenceConfig,
    build: build_paired);

tril_core::register!(task,
    id: "unpaired_preference",
    doc: "Unpaired preferences (prompt, completion, label) from local CSV/JSONL files, for kto.",
    config: UnpairedConfig,
    build: build_unpaired);

/// `true`/`false`/`1`/`0`, case-insensitive and trimmed.
fn parse_label(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

impl PreferenceConfig {
    /// Checks the settings and reads every file, in order.
    pub fn load(&self) -> Result<Vec<PreferencePair>, TaskError> {
        check_lengths(self.datasets.len(), self.max_length, self.max_prompt_length)?;
        let mut pairs = Vec::new();
        for (ix, source) in self.datasets.iter().enumerate() {
            let table = read_source(ix, &source.path, &source.subset, &source.split)?;
            let key = |field: &str| format!("task.args.datasets[{ix}].{field}");
            // No prompt column in a JSON lines/Parquet file: TRL's implicit-prompt format.
            let implicit = structured(&source.path) && !table.has_column(&source.prompt_column);
            let prompts: Vec<Option<String>> = if implicit {
                vec![None; table.len()]
            } else {
                table.column(&source.prompt_column, &key("prompt_column"))?.into_iter().map(Some).collect()
            };
            let chosen = table.column(&source.chosen_column, &key("chosen_column"))?;
            let rejected = table.column(&source.rejected_column, &key("rejected_column"))?;
            let (total, mut problems) = (prompts.len(), crate::rows::RowProblems::new(self.strict));
            let rows = prompts.into_iter().zip(chosen).zip(rejected).enumerate();
            for (i, ((prompt, chosen), rejected)) in rows {
                let (prompt, chosen, rejected) = match paired_row(&source.path, i + 1, source, prompt, chosen, rejected)
                {
                    Ok(texts) => texts,
                    Err(problem) => {
                        problems.skip(problem)?;
                        continue;
                    }
                };
                pairs.push(PreferencePair {
                    prompt,
                    chosen,
                    rejected,
                    source_row: SourceRow { dataset: ix, row: i + 1 },
                });
            }
            problems.report("preference", total);
        }
        Ok(pairs)
    }
}

impl UnpairedConfig {
    /// Checks the settings and reads every file, in order; labels must be booleans.
    pub fn load(&self) -> Result<Vec<UnpairedExample>, TaskError> {
        check_lengths(self.datasets.len(), self.max_length, self.max_prompt_length)?;
        let mut examples = Vec::new();
        for (ix, source) in self.datasets.iter().enumerate() {
            let table = read_source(ix, &source.path, &source.subset, &source.split)?;
            let key = |field: &str| format!("task.args.datasets[{ix}].{field}");
            let prompts = table.column(&source.prompt_column, &key("prompt_column"))?;
            let completions = table.column(&source.completion_column, &key("completion_column"))?;
            let labels = table.column(&source.label_column, &key("label_column"))?;
            let (total, mut problems) = (prompts.len(), crate::rows::RowProblems::new(self.strict));
            for (i, ((prompt, completion), label)) in prompts.into_iter().zip(completions).zip(labels).enumerate() {
                let checked = parse_label(&label)
                    .ok_or_else(|| TaskError::Row {
                        path: source.path.clone(),
                        row: i + 1,
                        message: format!(
                            "column `{}`: `{label}` is not a boolean (true/false/1/0)",
                            source.label_column
                        ),
                    })
                    .and_then(|label| {
                        let prompt = read_cell(&source.path, i + 1, &source.prompt_column, prompt)?;
                        let completion = read_cell(&source.path, i + 1, &source.completion_column, completion)?;
                        let cells =
                            [(source.prompt_column.as_str(), &prompt), (&source.completion_column, &completion)];
                        same_kind(&source.path, i + 1, &cells)?;
                        Ok((label, prompt.into_text(), completion.into_text()))
                    });
                let (label, prompt, completion) = match checked {
                    Ok(row) => row,
                    Err(problem) => {
                        problems.skip(problem)?;
                        continue;
                    }
                };
                examples.push(UnpairedExample {
                    prompt,
                    completion,
                    label,
                    source_row: SourceRow { dataset: ix, row: i + 1 },
                });
            }
            problems.report("unpaired_preference", total);
        }
        Ok(examples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn source(path: PathBuf) -> PreferenceSource {
        serde_json::from_value(serde_json::json!({ "path": path })).unwrap()
    }

    fn pairs(datasets: Vec<PreferenceSource>) -> Result<Vec<PreferencePair>, TaskError> {
        PreferenceConfig {
            datasets,
            max_length: 64,
            max_prompt_length: 32,
            val_fraction: 0.1,
            test_fraction: 0.0,
            seed: 42,
            strict: true,
        }
        .load()
    }

    #[test]
    fn csv_and_jsonl_are_concatenated_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(dir.path(), "a.csv", "prompt,chosen,rejected\n\"Hi, you\",hello,go away\nQ,A,B\n");
        let jsonl = write(dir.path(), "b.jsonl", "{\"q\": \"2+2\", \"good\": \"4\", \"bad\": \"5\", \"id\": 7}\n");
        let mut b = source(jsonl);
        (b.prompt_column, b.chosen_column, b.rejected_column) = ("q".into(), "good".into(), "bad".into());
        let got = pairs(vec![source(csv), b]).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].prompt.as_str(), got[0].chosen.as_str(), got[0].rejected.as_str()),
            ("Hi, you", "hello", "go away")
        );
        assert_eq!(got[1].source_row, SourceRow { dataset: 0, row: 2 });
        assert_eq!((got[2].prompt.as_str(), got[2].source_row), ("2+2", SourceRow { dataset: 1, row: 1 }));
    }

    #[test]
    fn bad_files_are_reported_with_file_row_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = write(dir.path(), "m.csv", "prompt,chosen\nQ,A\n");
        let err = pairs(vec![source(missing)]).unwrap_err().to_string();
        assert!(
            err.contains("m.csv: no column `rejected`") && err.contains("task.args.datasets[0].rejected_column"),
            "{err}"
        );
        let hole = write(dir.path(), "h.jsonl", "{\"prompt\": \"Q\", \"chosen\": \"A\", \"rejected\": \"B\"}\n{\"prompt\": \"Q\", \"chosen\": \"\", \"rejected\": \"B\"}\n");
        let err = pairs(vec![source(hole)]).unwrap_err().to_string();
        assert!(err.contains("h.jsonl: row 2: column `chosen` is empty"), "{err}");
        for (name, text) in [("e.jsonl", ""), ("e.csv", ""), ("header.csv", "prompt,chosen,rejected\n")] {
            let err = pairs(vec![source(write(dir.path(), name, text))]).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("no data rows"), "{name}: {err}");
        }
        let err = pairs(vec![source(dir.path().join("absent.csv"))]).unwrap_err().to_string();
        assert!(err.contains("absent.csv"), "{err}");
    }

    #[test]
    fn hub_keys_and_bad_lengths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(dir.path(), "a.csv", "prompt,chosen,rejected\nQ,A,B\n");
        let mut s = source(csv.clone());
        s.split = Some("train".into());
        let err = pairs(vec![source(csv.clone()), s]).unwrap_err().to_string();
        assert!(err.contains("task.args.datasets[1].split = `train`") && err.contains("HF hub"), "{err}");
        let err = pairs(vec![]).unwrap_err().to_string();
        assert!(err.contains("task.args.datasets is empty"), "{err}");
        let config = PreferenceConfig {
            datasets: vec![source(csv)],
            max_length: 16,
            max_prompt_length: 16,
            val_fraction: 0.1,
            test_fraction: 0.0,
            seed: 42,
            strict: true,
        };
        assert!(config.load().unwrap_err().to_string().contains("task.args.max_prompt_length must be > 0 and <"));
        let err = serde_json::from_str::<PreferenceSource>("{\"path\": \"a.csv\", \"name\": \"x\"}").unwrap_err();
        assert!(err.to_string().contains("unknown field `name`"), "{err}");
    }

    #[test]
    fn unpaired_labels_accept_booleans_and_digits() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = write(
            dir.path(),
            "k.jsonl",
            "{\"prompt\": \"Q\", \"completion\": \"A\", \"label\": true}\n{\"prompt\": \"Q\", \"completion\": \"B\", \"label\": 0}\n",
        );
        let csv = write(dir.path(), "k.csv", "prompt,completion,label\nQ,C,False\nQ,D,1\n");
        let datasets = [jsonl, csv]
            .into_iter()
            .map(|path| serde_json::from_value(serde_json::json!({ "path": path })).unwrap())
            .collect();
        let config = UnpairedConfig {
            datasets,
            max_length: 64,
            max_prompt_length: 32,
            val_fraction: 0.1,
            test_fraction: 0.0,
            seed: 42,
            strict: true,
        };
        let labels: Vec<bool> = config.load().unwrap().iter().map(|e| e.label).collect();
        assert_eq!(labels, vec![true, false, false, true]);
    }

    #[test]
    fn unpaired_bad_label_names_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(dir.path(), "k.csv", "prompt,completion,label\nQ,C,1\nQ,D,yes\n");
        let datasets = vec![serde_json::from_value(serde_json::json!({ "path": csv })).unwrap()];
        let err = UnpairedConfig {
            datasets,
            max_length: 64,
            max_prompt_length: 32,
            val_fraction: 0.1,
            test_fraction: 0.0,
            seed: 42,
            strict: true,
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(err.contains("k.csv: row 2: column `label`: `yes` is not a boolean (true/false/1/0)"), "{err}");
        let datasets: Vec<UnpairedSource> = vec![serde_json::from_value(serde_json::json!({ "path": csv })).unwrap()];
        let lax: UnpairedConfig = serde_json::from_value(serde_json::json!({ "datasets": datasets })).unwrap();
        assert!(!lax.strict, "skipping is the default");
        let kept = lax.load().unwrap();
        assert_eq!((kept.len(), kept[0].completion.as_str()), (1, "C"), "the `yes` row is skipped");
    }

    const SKY: &str = r#"[{"role":"user","content":"What color is the sky?"}]"#;

    fn lax(datasets: Vec<PreferenceSource>) -> PreferenceConfig {
        PreferenceConfig {
            datasets,
            max_length: 64,
            max_prompt_length: 32,
            val_fraction: 0.1,
            test_fraction: 0.0,
            seed: 42,
            strict: false,
        }
    }

    #[test]
    fn conversational_rows_keep_canonical_json_and_render_with_a_template() {
        let dir = tempfile::tempdir().unwrap();
        let row = format!(
            "{{\"prompt\": {SKY}, \"chosen\": [{{\"role\": \"assistant\", \"content\": \"Blue.\"}}], \
             \"rejected\": [{{\"content\": \"Green.\", \"role\": \"assistant\"}}]}}\n"
        );
        let got = pairs(vec![source(write(dir.path(), "c.jsonl", &row))]).unwrap();
        assert_eq!(got[0].prompt, SKY);
        assert_eq!(got[0].chosen, r#"[{"role":"assistant","content":"Blue."}]"#);
        assert_eq!(got[0].rejected, r#"[{"role":"assistant","content":"Green."}]"#, "role first, canonical");
        let chatml =
            "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}\
                      {% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        let t = tril_models::chat_template::ChatTemplate::new(chatml, None, None).unwrap();
        let (p, c) =
            tril_models::chat_template::render_cell_pair(Some(&t), &got[0].prompt, &got[0].chosen, "r").unwrap();
        assert_eq!(p, "<|im_start|>user\nWhat color is the sky?<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(c, "Blue.<|im_end|>\n");
        // A CSV cell is text even when it reads as JSON.
        let csv =
            write(dir.path(), "c.csv", &format!("prompt,chosen,rejected\n\"{}\",A,B\n", SKY.replace('"', "\"\"")));
        assert_eq!(pairs(vec![source(csv)]).unwrap()[0].prompt, SKY);
    }

    #[test]
    fn implicit_prompt_is_the_shared_leading_turns() {
        let dir = tempfile::tempdir().unwrap();
        let conv = |answer: &str| {
            format!(
                r#"[{{"role":"system","content":"Be brief."}},{{"role":"user","content":"Sky?"}},{{"role":"assistant","content":"{answer}"}}]"#
            )
        };
        let lines = format!(
            "{{\"chosen\": {}, \"rejected\": {}}}\n{{\"chosen\": {}, \"rejected\": {}}}\n",
            conv("Blue."),
            conv("Green."),
            conv("Same."),
            conv("Same.")
        );
        let got = pairs(vec![source(write(dir.path(), "i.jsonl", &lines))]).unwrap();
        assert_eq!(got[0].prompt, r#"[{"role":"system","content":"Be brief."},{"role":"user","content":"Sky?"}]"#);
        assert_eq!(got[0].chosen, r#"[{"role":"assistant","content":"Blue."}]"#);
        assert_eq!(got[0].rejected, r#"[{"role":"assistant","content":"Green."}]"#);
        // Equal conversations: TRL's loop leaves the last message as the completion.
        assert_eq!(got[1].chosen, r#"[{"role":"assistant","content":"Same."}]"#);
        // No shared first turn, or text without a prompt column: problem rows.
        let other = r#"[{"role":"user","content":"Other?"},{"role":"assistant","content":"No."}]"#;
        let bad = format!(
            "{{\"chosen\": {}, \"rejected\": {other}}}\n{{\"chosen\": \"a\", \"rejected\": \"b\"}}\n",
            conv("x")
        );
        let path = write(dir.path(), "bad.jsonl", &bad);
        let err = pairs(vec![source(path.clone())]).unwrap_err().to_string();
        assert!(
            err.contains("bad.jsonl: row 1: implicit prompt: `chosen` and `rejected` share no leading message"),
            "{err}"
        );
        let mut config = lax(vec![source(path)]);
        assert!(config.load().unwrap().is_empty(), "both rows skipped");
        config.strict = true;
        config.datasets[0].path = write(dir.path(), "text.jsonl", "{\"chosen\": \"a\", \"rejected\": \"b\"}\n");
        let err = config.load().unwrap_err().to_string();
        assert!(err.contains("text.jsonl: row 1: the file has no `prompt` column, so the prompt is implicit"), "{err}");
        // A CSV file without the prompt column is still a missing column.
        let err = pairs(vec![source(write(dir.path(), "np.csv", "chosen,rejected\na,b\n"))]).unwrap_err().to_string();
        assert!(err.contains("no column `prompt`"), "{err}");
    }

    #[test]
    fn malformed_conversational_cells_are_problem_rows() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            format!("{{\"prompt\": {SKY}, \"chosen\": \"Blue.\", \"rejected\": \"Green.\"}}"),
            r#"{"prompt": {"role": "user", "content": "x"}, "chosen": "a", "rejected": "b"}"#.to_string(),
            r#"{"prompt": ["a", "b"], "chosen": "a", "rejected": "b"}"#.to_string(),
            r#"{"prompt": "fine", "chosen": "a", "rejected": "b"}"#.to_string(),
        ];
        let path = write(dir.path(), "m.jsonl", &(lines.join("\n") + "\n"));
        let kept = lax(vec![source(path.clone())]).load().unwrap();
        assert_eq!((kept.len(), kept[0].prompt.as_str(), kept[0].source_row.row), (1, "fine", 4));
        let err = pairs(vec![source(path)]).unwrap_err().to_string();
        assert!(
            err.contains("m.jsonl: row 1: column `prompt` is a list of messages but column `chosen` is text"),
            "{err}"
        );
        for (i, want) in [
            (1, "column `prompt` holds a JSON object, expected text or a conversation: a JSON object is not a conversation"),
            (2, "column `prompt` holds a JSON list, expected text or a conversation: message 0 is a string"),
        ] {
            let path = write(dir.path(), &format!("m{i}.jsonl"), &format!("{}\n", lines[i]));
            let err = pairs(vec![source(path)]).unwrap_err().to_string();
            assert!(err.contains(&format!("m{i}.jsonl: row 1: {want}")) && err.contains("(expected a list of messages"), "{err}");
        }
    }

    #[test]
    fn unpaired_conversational_rows() {
        let dir = tempfile::tempdir().unwrap();
        let done = r#"[{"role":"assistant","content":"Blue."}]"#;
        let text = format!(
            "{{\"prompt\": {SKY}, \"completion\": {done}, \"label\": true}}\n{{\"prompt\": {SKY}, \"completion\": \"Blue.\", \"label\": false}}\n"
        );
        let path = write(dir.path(), "k.jsonl", &text);
        let config = |strict| UnpairedConfig {
            datasets: vec![serde_json::from_value(serde_json::json!({ "path": path })).unwrap()],
            max_length: 64,
            max_prompt_length: 32,
            val_fraction: 0.1,
            test_fraction: 0.0,
            seed: 42,
            strict,
        };
        let kept = config(false).load().unwrap();
        assert_eq!((kept.len(), kept[0].prompt.as_str(), kept[0].completion.as_str()), (1, SKY, done));
        let err = config(true).load().unwrap_err().to_string();
        assert!(
            err.contains("k.jsonl: row 2: column `prompt` is a list of messages but column `completion` is text"),
            "{err}"
        );
    }
}
