//! `text_classification`: labelled texts from CSV/JSONL/Parquet files or `hub:` datasets, for training a
//! sequence classifier with `reward_model` (`alg.args.objective: classification`) that the
//! `learned_reward` reward and metric then load; e.g. IMDB sentiment from the shared
//! Kaggle CSV (`review`, `sentiment` in {negative, positive}), giving label 1 = positive
//! as `lvwerra/distilbert-imdb`.
//!
//! Files are concatenated in order and split as the `preference` task's
//! ([`crate::preference::split_indices`]). A label is one of `labels` (case-insensitive)
//! or its index; anything else is an error naming the file, row and column.

use crate::error::TaskError;
use crate::preference::split_indices;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tril_core::config::Section;
use tril_core::config::{Checker, Ranges};
use tril_core::plugin::{BuildCtx, LabelledText, PluginError, Sample, Split, Task};

const TASK: &str = "text_classification";

fn default_text() -> String {
    "text".into()
}
fn default_label() -> String {
    "label".into()
}
fn default_val_fraction() -> f64 {
    0.1
}
fn default_seed() -> u64 {
    42
}

/// One file of labelled texts (one entry of `task.args.datasets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSource {
    /// A `.csv` (with a header row), `.jsonl` or `.parquet` file, or a hub dataset id
    /// (`hub:org/name[@revision][?subset=..&split=..]`, default split `train`).
    pub path: PathBuf,
    /// Column holding the text.
    #[serde(default = "default_text")]
    pub text_column: String,
    /// Column holding the label (a name from `labels`, or its index).
    #[serde(default = "default_label")]
    pub label_column: String,
}

/// Config of the `text_classification` task (`task.args`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextClassificationConfig {
    /// Files read and concatenated in this order (at least one).
    pub datasets: Vec<TextSource>,
    /// Class names; label `i` is `labels[i]` (at least two).
    pub labels: Vec<String>,
    /// Keep only the first `max_rows` rows (after concatenation), e.g. for a quick run.
    #[serde(default)]
    pub max_rows: Option<usize>,
    /// Fraction of rows held out as `val`.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Fraction of rows held out as `test`.
    #[serde(default)]
    pub test_fraction: f64,
    /// Seed of the split.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// A row with a bad label is an error (else skipped, counted and reported).
    #[serde(default)]
    pub strict: bool,
}

impl Ranges for TextClassificationConfig {
    /// `max_rows` >= 1 when set; `val_fraction` and `test_fraction` in [0, 1) leaving training rows.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        if let Some(max_rows) = self.max_rows {
            c.at_least("max_rows", max_rows, 1)?;
        }
        crate::preference::check_fractions(c, self.val_fraction, self.test_fraction)
    }
}

/// The task: every labelled row, and its split.
#[derive(Debug, Clone)]
pub struct TextClassification {
    texts: Vec<LabelledText>,
    labels: Vec<String>,
    splits: [Vec<usize>; 3],
}

fn config_error(message: String) -> TaskError {
    TaskError::Config { task: TASK.into(), message }
}

impl TextClassification {
    /// Reads, labels and splits every file.
    pub fn new(config: &TextClassificationConfig) -> Result<Self, TaskError> {
        if config.datasets.is_empty() {
            return Err(config_error("task.args.datasets is empty: list at least one CSV/JSONL file".into()));
        }
        if config.labels.len() < 2 {
            return Err(config_error(format!(
                "task.args.labels must name at least two classes, found {:?}",
                config.labels
            )));
        }
        let mut texts = Vec::new();
        for (ix, source) in config.datasets.iter().enumerate() {
            let key = format!("task.args.datasets[{ix}].path");
            let table = crate::hub_data::read_table(&key, &source.path, "train")?;
            if table.is_empty() {
                return Err(config_error(format!(
                    "{}: no data rows (task.args.datasets[{ix}].path)",
                    source.path.display()
                )));
            }
            let key = |field: &str| format!("task.args.datasets[{ix}].{field}");
            let text = table.column(&source.text_column, &key("text_column"))?;
            let label = table.column(&source.label_column, &key("label_column"))?;
            let (total, mut problems) = (text.len(), crate::rows::RowProblems::new(config.strict));
            for (i, (text, label)) in text.into_iter().zip(label).enumerate() {
                let value = label.trim();
                let by_name = config.labels.iter().position(|l| l.eq_ignore_ascii_case(value));
                let by_index = value.parse::<usize>().ok().filter(|&k| k < config.labels.len());
                let Some(label) = by_name.or(by_index) else {
                    let message = format!(
                        "column `{}`: `{value}` is not one of task.args.labels {:?} nor an index below {}",
                        source.label_column,
                        config.labels,
                        config.labels.len()
                    );
                    problems.skip(TaskError::Row { path: source.path.clone(), row: i + 1, message })?;
                    continue;
                };
                texts.push(LabelledText { id: format!("{}:row {}", source.path.display(), i + 1), text, label });
            }
            problems.report(TASK, total);
        }
        if let Some(max) = config.max_rows {
            texts.truncate(max);
        }
        let splits = split_indices(texts.len(), config.val_fraction, config.test_fraction, config.seed)?;
        Ok(TextClassification { texts, labels: config.labels.clone(), splits })
    }
}

impl Task for TextClassification {
    /// Each text as a prompt whose reference is its label name.
    fn samples(&self, split: Split) -> Result<Vec<Sample>, PluginError> {
        Ok(self
            .labelled_texts(split)?
            .into_iter()
            .map(|t| Sample {
                id: t.id,
                prompt: t.text,
                references: vec![self.labels[t.label].clone()],
                meta: Default::default(),
            })
            .collect())
    }

    fn labelled_texts(&self, split: Split) -> Result<Vec<LabelledText>, PluginError> {
        let ix = &self.splits[match split {
            Split::Train => 0,
            Split::Val => 1,
            Split::Test => 2,
        }];
        if ix.is_empty() {
            return Err(TaskError::EmptySplit {
                task: TASK.into(),
                split: split.name().into(),
                detail: format!("set task.args.{}_fraction > 0 to hold rows out for it", split.name()),
            }
            .into());
        }
        Ok(ix.iter().map(|&i| self.texts[i].clone()).collect())
    }

    fn label_names(&self) -> Vec<String> {
        self.labels.clone()
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Task>, PluginError> {
    Ok(Box::new(TextClassification::new(&section.extract()?)?))
}

tril_core::register!(task,
    id: "text_classification",
    doc: "Labelled texts (text, label) from local CSV/JSONL files, for reward_model's classifier training.",
    config: TextClassificationConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: PathBuf) -> TextClassificationConfig {
        serde_json::from_value(serde_json::json!({
            "datasets": [{"path": path, "text_column": "review", "label_column": "sentiment"}],
            "labels": ["negative", "positive"],
            "val_fraction": 0.25,
        }))
        .unwrap()
    }

    #[test]
    fn labels_by_name_or_index_and_split() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "review,sentiment\ngreat,positive\nawful,Negative\nok,1\nmeh,0\n").unwrap();
        let task = TextClassification::new(&config(p)).unwrap();
        let (train, val) = (task.labelled_texts(Split::Train).unwrap(), task.labelled_texts(Split::Val).unwrap());
        assert_eq!((train.len(), val.len()), (3, 1));
        let mut all: Vec<(String, usize)> = train.into_iter().chain(val).map(|t| (t.text, t.label)).collect();
        all.sort();
        let want = [("awful", 0), ("great", 1), ("meh", 0), ("ok", 1)].map(|(t, l)| (t.to_string(), l));
        assert_eq!(all, want);
        let err = task.labelled_texts(Split::Test).unwrap_err().to_string();
        assert!(err.contains("split `test` is empty"), "{err}");
    }

    #[test]
    fn a_bad_label_is_skipped_or_with_strict_names_file_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "review,sentiment\ngreat,positive\nawful,mixed\nok,0\nfine,1\nbad,0\n").unwrap();
        let task = TextClassification::new(&config(p.clone())).unwrap();
        assert_eq!(task.texts.len(), 4, "the `mixed` row is skipped");
        assert!(task.texts.iter().all(|t| t.text != "awful"));
        let strict = TextClassificationConfig { strict: true, ..config(p) };
        let err = TextClassification::new(&strict).unwrap_err().to_string();
        assert!(err.contains("r.csv: row 2: column `sentiment`: `mixed` is not one of task.args.labels"), "{err}");
    }
}
