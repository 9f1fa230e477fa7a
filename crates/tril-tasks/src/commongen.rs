//! `commongen`: TRIL's CommonGen task (`CommonGen.prepare`, reference/tril.md §4.2) on
//! gem/common_gen rows (`concepts` list, `target`, `references` list) read from JSONL or
//! Parquet files, one per HF split (`train`, `validation`, `test`), or from the hub
//! (`hub:allenai/common_gen` in each key reads that key's split; see [`crate::hub_data`]).
//!
//! Prompt, as TRIL: `prefix + concept_separator_token.join(concepts) + concept_end_token`
//! ("generate a sentence with: dog frisbee catch throw." with TRIL's config).
//! References: the row's `references`; if empty, `[target]`; if that is empty too,
//! `["empty reference"]` (TRIL's placeholder, so metrics do not break). Rows with the
//! same prompt are merged into one sample whose references are concatenated, in order
//! of first appearance; `meta["concepts"]` holds the concepts joined by single spaces.
//!
//! # Deviations from TRIL
//! - `concepts` and `references` may also be given as strings (space-separated concepts,
//!   one reference). In Parquet (and CSV) a list column reads as its JSON text, which is
//!   parsed back.
//! - Sample ids are `commongen_{split}_{group}` (TRIL: the first row's index).

use crate::error::TaskError;
use crate::tldr::data_file;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tril_core::config::Section;
use tril_core::config::{Checker, Ranges};
use tril_core::plugin::{BuildCtx, PluginError, Sample, Split, Task};

/// Config of the `commongen` task (`task.args`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommonGenConfig {
    /// Joins the concepts (TRIL: `' '`).
    pub concept_separator_token: String,
    /// Ends the prompt (TRIL's config: `'.'`).
    pub concept_end_token: String,
    /// Starts the prompt (TRIL's config: `"generate a sentence with: "`).
    pub prefix: String,
    /// JSONL/Parquet rows of the HF `train` split, or a hub id (`hub:allenai/common_gen`).
    pub train_file: Option<PathBuf>,
    /// Rows of the HF `validation` split, or a hub id.
    pub val_file: Option<PathBuf>,
    /// Rows of the HF `test` split, or a hub id.
    pub test_file: Option<PathBuf>,
}

impl Ranges for CommonGenConfig {
    /// No numeric key.
    fn check_ranges(&self, _: &Checker<'_>) -> tril_core::Result<()> {
        Ok(())
    }
}

impl Default for CommonGenConfig {
    fn default() -> Self {
        CommonGenConfig {
            concept_separator_token: " ".into(),
            concept_end_token: ".".into(),
            prefix: "generate a sentence with: ".into(),
            train_file: None,
            val_file: None,
            test_file: None,
        }
    }
}

/// The loaded CommonGen splits.
#[derive(Debug, Clone)]
pub struct CommonGen {
    splits: BTreeMap<Split, Vec<Sample>>,
}

/// A list of strings from a JSON array, or one string (split on whitespace if `split`).
fn strings(v: Option<&Value>, split: bool) -> Option<Vec<String>> {
    match v {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::String(s)) if split => Some(s.split_whitespace().map(str::to_string).collect()),
        Some(Value::String(s)) => Some(if s.is_empty() { vec![] } else { vec![s.clone()] }),
        Some(Value::Array(items)) => items.iter().map(|i| i.as_str().map(str::to_string)).collect(),
        Some(_) => None,
    }
}

/// A row (0-based line or data row) as a JSON object, or the JSON error of its line.
type Row = (usize, Result<Value, String>);

/// The rows of a JSONL file (non-empty lines), or of a Parquet/CSV file or `hub:` id, whose
/// list cells (JSON text) are parsed back; and the file read.
fn read_rows(path: &Path, split: Split) -> Result<(PathBuf, Vec<Row>), TaskError> {
    let jsonl = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"));
    if jsonl && !crate::hub_data::is_hub(path) {
        let text = std::fs::read_to_string(path).map_err(|source| TaskError::Io { path: path.into(), source })?;
        let rows = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (i, serde_json::from_str(l).map_err(|e| e.to_string())))
            .collect();
        return Ok((path.into(), rows));
    }
    let key = format!("task.args.{}_file", split.name());
    let table = crate::hub_data::read_table(&key, path, crate::tldr::hf_split(split))?;
    let rows = (0..table.len())
        .map(|i| {
            let object = table
                .columns()
                .iter()
                .filter_map(|c| {
                    let cell = table.value(i, c)?;
                    let parsed = cell.starts_with('[').then(|| serde_json::from_str::<Value>(cell).ok()).flatten();
                    Some((c.clone(), parsed.unwrap_or_else(|| Value::String(cell.to_string()))))
                })
                .collect();
            (i, Ok(Value::Object(object)))
        })
        .collect();
    Ok((table.path().to_path_buf(), rows))
}

/// Reads one split's rows and groups them by prompt.
pub fn read_split(path: &Path, split: Split, config: &CommonGenConfig) -> Result<Vec<Sample>, TaskError> {
    let (path, rows) = read_rows(path, split)?;
    let path = path.as_path();
    let mut samples: Vec<Sample> = Vec::new();
    let mut by_prompt: BTreeMap<String, usize> = BTreeMap::new();
    for (i, row) in rows {
        let row_error = |message: String| TaskError::Row { path: path.into(), row: i + 1, message };
        let row: Value = row.map_err(|e| row_error(format!("invalid JSON: {e}")))?;
        let concepts = strings(row.get("concepts"), true)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| row_error("`concepts` must be a non-empty list of strings".into()))?;
        let mut refs = strings(row.get("references"), false)
            .ok_or_else(|| row_error("`references` must be a list of strings".into()))?;
        if refs.is_empty() {
            refs = strings(row.get("target"), false).ok_or_else(|| row_error("`target` must be a string".into()))?;
        }
        if refs.is_empty() {
            refs = vec!["empty reference".into()];
        }
        let prompt =
            format!("{}{}{}", config.prefix, concepts.join(&config.concept_separator_token), config.concept_end_token);
        match by_prompt.get(&prompt) {
            Some(&k) => samples[k].references.extend(refs),
            None => {
                by_prompt.insert(prompt.clone(), samples.len());
                let meta = BTreeMap::from([("concepts".to_string(), concepts.join(" "))]);
                let id = format!("commongen_{}_{}", split.name(), samples.len());
                samples.push(Sample { id, prompt, references: refs, meta });
            }
        }
    }
    if samples.is_empty() {
        return Err(TaskError::EmptySplit {
            task: "commongen".into(),
            split: split.name().into(),
            detail: format!("{} has no rows", path.display()),
        });
    }
    Ok(samples)
}

impl CommonGen {
    /// Loads the three splits named in `config`.
    pub fn load(config: &CommonGenConfig) -> Result<Self, TaskError> {
        let mut splits = BTreeMap::new();
        for (split, key, file) in [
            (Split::Train, "train_file", &config.train_file),
            (Split::Val, "val_file", &config.val_file),
            (Split::Test, "test_file", &config.test_file),
        ] {
            let path = data_file("commongen", key, file)?;
            splits.insert(split, read_split(path, split, config)?);
        }
        Ok(CommonGen { splits })
    }
}

impl Task for CommonGen {
    fn samples(&self, split: Split) -> Result<Vec<Sample>, PluginError> {
        Ok(self.splits.get(&split).cloned().unwrap_or_default())
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Task>, PluginError> {
    Ok(Box::new(CommonGen::load(&section.extract()?)?))
}

tril_core::register!(task,
    id: "commongen",
    doc: "CommonGen (TRIL): prompt = prefix + concepts + end token, references merged per concept set.",
    config: CommonGenConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    fn config() -> CommonGenConfig {
        CommonGenConfig {
            train_file: Some(fixture("commongen_train.jsonl")),
            val_file: Some(fixture("commongen_validation.jsonl")),
            test_file: Some(fixture("commongen_test.jsonl")),
            ..Default::default()
        }
    }

    #[test]
    fn prompts_groups_and_reference_fallbacks() {
        let task = CommonGen::load(&config()).unwrap();
        let train = task.samples(Split::Train).unwrap();
        // Rows 0 and 1 share a concept set: one sample with both targets.
        assert_eq!(train.len(), 3);
        assert_eq!(train[0].prompt, "generate a sentence with: dog frisbee catch throw.");
        assert_eq!(
            train[0].references,
            ["A man throws a frisbee and his dog catches it.", "The dog catches the frisbee when the boy throws it."]
        );
        assert_eq!(train[0].meta["concepts"], "dog frisbee catch throw");
        // No references and an empty target: TRIL's placeholder.
        assert_eq!(train[2].references, ["empty reference"]);
        let val = task.samples(Split::Val).unwrap();
        assert_eq!(val[0].references.len(), 2);
        assert_eq!(task.samples(Split::Test).unwrap()[0].id, "commongen_test_0");
    }

    #[test]
    fn missing_or_bad_data_is_reported() {
        let err = CommonGen::load(&CommonGenConfig::default()).unwrap_err().to_string();
        assert!(err.contains("task.args.train_file"), "{err}");
        let missing = CommonGenConfig { test_file: Some("/nonexistent/test.jsonl".into()), ..config() };
        let err = CommonGen::load(&missing).unwrap_err().to_string();
        assert!(err.contains("task.args.test_file = /nonexistent/test.jsonl: no such file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"concepts\": [\"a\"], \"target\": \"x\"}\n{\"concepts\": 3}\n").unwrap();
        let err = read_split(&bad, Split::Train, &config()).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl: row 2: `concepts` must be"), "{err}");
    }
}
