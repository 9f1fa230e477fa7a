//! `imdb`: TRIL's IMDB sentiment-continuation task (reference/tril.md §4.1).
//!
//! Splits, as TRIL: the train file is shuffled with `seed` and cut at `1 - val_fraction`
//! (20,000 / 5,000 of the 25,000 HF train reviews); the test file is shuffled with the
//! same seed and its first `n_test` (5,000) are kept; both labels are kept. The prompt is
//! the first half of the review's space-separated words (`int(len * 0.5)`).
//!
//! # Deviations from TRIL
//! - The reference is the **rest** of the review, not the whole review: TRIL's target
//!   regularization trains on `reference[:max_gen_len]`, which for the whole review is
//!   the prompt's own beginning. The full text stays in `meta["text"]`.
//! - Data come from CSV/JSONL/Parquet files (`train_file`, optional `test_file`), or from
//!   the hub: `train_file: hub:stanfordnlp/imdb` and `test_file: hub:stanfordnlp/imdb`
//!   read the `train` and `test` splits (downloaded into the HF cache, see
//!   [`crate::hub_data`]). With no `test_file`, the last `test_fraction` of the shuffled
//!   train file is the test split.
//! - The shuffle is a seeded ChaCha8 permutation, not numpy's, so the same seed selects
//!   different reviews than TRIL's.

use crate::error::TaskError;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tril_core::config::Section;
use tril_core::config::{Checker, Ranges};
use tril_core::plugin::{BuildCtx, PluginError, Sample, Split, Task};

/// Config of the `imdb` task (`task.args`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImdbConfig {
    /// Shuffle seed (TRIL: 42).
    pub seed: u64,
    /// CSV/JSONL/Parquet file of reviews, or a hub id (`hub:stanfordnlp/imdb`: its `train` split).
    pub train_file: Option<PathBuf>,
    /// File of test reviews, or a hub id (its `test` split); without it the test split is cut
    /// from `train_file`.
    pub test_file: Option<PathBuf>,
    /// Column holding the review text (HF: `text`; the shared Kaggle CSV: `review`).
    pub text_column: String,
    /// Column holding the label (`1`/`0` or `positive`/`negative`); kept in `meta["label"]`.
    pub label_column: Option<String>,
    /// Keep only `max_rows` reviews of `train_file` (after the shuffle), e.g. for a quick
    /// run; null: all.
    pub max_rows: Option<usize>,
    /// Fraction of the (non-test) train rows used for validation (TRIL: 0.2).
    pub val_fraction: f64,
    /// Test reviews kept (TRIL: 5,000).
    pub n_test: usize,
    /// Fraction of `train_file` cut off for testing when there is no `test_file`.
    pub test_fraction: f64,
    /// A row with a bad label is an error (else skipped, counted and reported).
    pub strict: bool,
}

impl Ranges for ImdbConfig {
    /// `val_fraction` and `test_fraction` in [0, 1) leaving training rows; `n_test` any count.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        if let Some(max_rows) = self.max_rows {
            c.at_least("max_rows", max_rows, 1)?;
        }
        crate::preference::check_fractions(c, self.val_fraction, self.test_fraction)
    }
}

impl Default for ImdbConfig {
    fn default() -> Self {
        ImdbConfig {
            seed: 42,
            train_file: None,
            test_file: None,
            text_column: "text".into(),
            label_column: Some("label".into()),
            max_rows: None,
            val_fraction: 0.2,
            n_test: 5000,
            test_fraction: 0.2,
            strict: false,
        }
    }
}

/// The loaded IMDB splits.
#[derive(Debug, Clone)]
pub struct Imdb {
    splits: BTreeMap<Split, Vec<Sample>>,
}

/// One review: text and optional label.
type Review = (String, Option<String>);

impl Imdb {
    /// Loads and splits the files named in `config`: `train_file` shuffled (and cut to
    /// `max_rows`), then test (`test_file`, else the last `test_fraction`) and val cut off.
    pub fn load(config: &ImdbConfig) -> Result<Self, TaskError> {
        let bad = |message: String| TaskError::Config { task: "imdb".into(), message };
        let Some(train_file) = &config.train_file else {
            return Err(bad("no data: set task.args.train_file to a CSV/JSONL of reviews (e.g. \
                 ../shared/data/imdb_reviews_2499.csv with task.args.text_column=review \
                 task.args.label_column=sentiment); or task.args.train_file=hub:stanfordnlp/imdb \
                 (with task.args.test_file=hub:stanfordnlp/imdb) to download it from the hub"
                .into()));
        };
        for (key, v) in [("val_fraction", config.val_fraction), ("test_fraction", config.test_fraction)] {
            if !(0.0..1.0).contains(&v) {
                return Err(bad(format!("task.args.{key} must be in [0, 1), found {v}")));
            }
        }
        let mut train = read_reviews(config, train_file, "train_file", "train")?;
        shuffle(&mut train, config.seed);
        if let Some(max_rows) = config.max_rows {
            train.truncate(max_rows);
        }
        let test = match &config.test_file {
            Some(file) => {
                let mut test = read_reviews(config, file, "test_file", "test")?;
                shuffle(&mut test, config.seed);
                test.truncate(config.n_test);
                test
            }
            None => {
                let n_test = ((train.len() as f64) * config.test_fraction) as usize;
                let mut test = train.split_off(train.len() - n_test.min(train.len()));
                test.truncate(config.n_test);
                test
            }
        };
        let cut = ((train.len() as f64) * (1.0 - config.val_fraction)) as usize;
        let val = train.split_off(cut);
        let mut splits = BTreeMap::new();
        for (split, rows) in [(Split::Train, train), (Split::Val, val), (Split::Test, test)] {
            if rows.is_empty() {
                return Err(TaskError::EmptySplit {
                    task: "imdb".into(),
                    split: split.name().into(),
                    detail: format!("{} has too few rows for the configured fractions", train_file.display()),
                });
            }
            splits.insert(split, rows.into_iter().enumerate().map(|(ix, r)| to_sample(split, ix, r)).collect());
        }
        Ok(Imdb { splits })
    }
}

fn read_reviews(config: &ImdbConfig, file: &std::path::Path, key: &str, split: &str) -> Result<Vec<Review>, TaskError> {
    let table = crate::hub_data::read_table(&format!("task.args.{key}"), file, split)?;
    let file = table.path().to_path_buf();
    let file = file.as_path();
    let texts = table.column(&config.text_column, "task.args.text_column")?;
    let labels = match &config.label_column {
        Some(col) => table.column(col, "task.args.label_column")?.into_iter().map(Some).collect(),
        None => vec![None; texts.len()],
    };
    let (total, mut problems) = (texts.len(), crate::rows::RowProblems::new(config.strict));
    let mut out = Vec::with_capacity(total);
    for (i, (text, label)) in texts.into_iter().zip(labels).enumerate() {
        let label = match label.map(|l| normalize_label(&l).ok_or(l)).transpose() {
            Ok(label) => label,
            Err(l) => {
                let message = format!("label `{l}` is not 0/1 or negative/positive");
                problems.skip(TaskError::Row { path: file.to_path_buf(), row: i + 1, message })?;
                continue;
            }
        };
        out.push((text, label));
    }
    problems.report("imdb", total);
    Ok(out)
}

fn normalize_label(label: &str) -> Option<String> {
    match label.trim().to_ascii_lowercase().as_str() {
        "1" | "pos" | "positive" => Some("1".into()),
        "0" | "neg" | "negative" => Some("0".into()),
        _ => None,
    }
}

fn shuffle(rows: &mut [Review], seed: u64) {
    rows.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
}

/// Prompt = first `int(n * 0.5)` space-separated words; reference = the rest.
pub fn split_review(text: &str) -> (String, String) {
    let words: Vec<&str> = text.split(' ').collect();
    let half = (words.len() as f64 * 0.5) as usize;
    (words[..half].join(" "), words[half..].join(" "))
}

fn to_sample(split: Split, ix: usize, (text, label): Review) -> Sample {
    let (prompt, rest) = split_review(&text);
    let mut meta = BTreeMap::new();
    if let Some(label) = label {
        meta.insert("label".to_string(), label);
    }
    meta.insert("text".to_string(), text);
    Sample { id: format!("imdb_{}_{ix}", split.name()), prompt, references: vec![rest], meta }
}

impl Task for Imdb {
    fn samples(&self, split: Split) -> Result<Vec<Sample>, PluginError> {
        Ok(self.splits.get(&split).cloned().unwrap_or_default())
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Task>, PluginError> {
    Ok(Box::new(Imdb::load(&section.extract()?)?))
}

tril_core::register!(task,
    id: "imdb",
    doc: "IMDB review continuation (TRIL): prompt = first half of the words, reference = the rest.",
    config: ImdbConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn prompt_is_first_half_of_words() {
        assert_eq!(split_review("a b c d e"), ("a b".into(), "c d e".into()));
        // Python: " ".join("a  b c".split(" ")[:2]) == "a "
        assert_eq!(split_review("a  b c"), ("a ".into(), "b c".into()));
    }

    fn shared_csv() -> Option<PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/imdb_reviews_2499.csv");
        if p.is_file() {
            Some(p)
        } else {
            eprintln!("skipped: {} not found (shared data absent)", p.display());
            None
        }
    }

    #[test]
    fn splits_the_shared_imdb_csv_deterministically() {
        let Some(file) = shared_csv() else { return };
        let config = ImdbConfig {
            train_file: Some(file),
            text_column: "review".into(),
            label_column: Some("sentiment".into()),
            ..Default::default()
        };
        let a = Imdb::load(&config).unwrap();
        let n = |s| a.samples(s).unwrap().len();
        // 2,499 rows: 499 test (20%), then 2,000 cut 80/20.
        assert_eq!((n(Split::Train), n(Split::Val), n(Split::Test)), (1600, 400, 499));
        let b = Imdb::load(&config).unwrap();
        assert_eq!(a.samples(Split::Val).unwrap(), b.samples(Split::Val).unwrap());
        let s = &a.samples(Split::Train).unwrap()[0];
        assert_eq!(format!("{} {}", s.prompt, s.references[0]), s.meta["text"]);
        assert!(s.meta["label"] == "0" || s.meta["label"] == "1");
    }

    #[test]
    fn bad_data_is_reported_with_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.csv");
        std::fs::write(&file, "text,label\ngreat film,1\nawful,maybe\n").unwrap();
        let strict = ImdbConfig { train_file: Some(file.clone()), strict: true, ..Default::default() };
        let err = Imdb::load(&strict).unwrap_err().to_string();
        assert!(err.contains("r.csv: row 2: label `maybe`"), "{err}");
        let config = ImdbConfig { train_file: Some(file.clone()), ..Default::default() };
        assert_eq!(
            read_reviews(&config, &file, "train_file", "train").unwrap().len(),
            1,
            "without strict the row is skipped"
        );
        std::fs::write(&file, "review,label\ngreat film,1\n").unwrap();
        let err = Imdb::load(&config).unwrap_err().to_string();
        assert!(err.contains("no column `text`") && err.contains("task.args.text_column"), "{err}");
        std::fs::write(&file, "text,label\ngreat film,1\n").unwrap();
        let err = Imdb::load(&config).unwrap_err().to_string();
        assert!(err.contains("split `train` is empty") || err.contains("split `test` is empty"), "{err}");
        let err = Imdb::load(&ImdbConfig::default()).unwrap_err().to_string();
        assert!(err.contains("set task.args.train_file"), "{err}");
    }
}
