//! `tldr`: TRIL's TL;DR summarization task (`TLDR.prepare`, reference/tril.md §4.3) on
//! CarperAI/openai_summarize_tldr rows (`prompt`, `label`) read from local files.
//!
//! Prompt, as TRIL: the text before the first `"TL;DR:"`, tokenized with `tokenizer_id`
//! (no special tokens) and cut on the right to `max_prompt_length - 5` tokens, decoded,
//! stripped, `"\nTL;DR:"` appended, re-tokenized and cut to `max_prompt_length`, decoded
//! and stripped again. Reference: `[label]`, also in `meta["reference"]`. Sizes, as
//! TRIL's `n_samples`: val keeps the first 100 rows, test the first 500, train all.
//!
//! # Deviations from TRIL
//! - Data come from CSV/JSONL/Parquet files (`train_file`, `val_file`, `test_file`, one per
//!   HF split `train`/`valid`/`test`), or a hub id in each key
//!   (`hub:CarperAI/openai_summarize_tldr`: the key's split, `val_file` finding `valid`;
//!   see [`crate::hub_data`]).
//! - Sample ids are `tldr_{split}_{row}` (TRIL: the row index).

use crate::error::TaskError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tril_core::config::Section;
use tril_core::config::{Checker, Ranges};
use tril_core::plugin::{BuildCtx, PluginError, Sample, Split, Task};
use tril_models::tokenizer::TextTokenizer;

/// Config of the `tldr` task (`task.args`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TldrConfig {
    /// Tokenizer that measures the prompt: `gpt2` (TRIL's; built in), a local directory
    /// with `tokenizer.json`, or a hub id in the HF cache.
    pub tokenizer_id: String,
    /// Prompt length in tokens, `"\nTL;DR:"` included (TRIL: 500).
    pub max_prompt_length: usize,
    /// Rows of the HF `train` split (CSV or JSONL with `prompt` and `label`).
    pub train_file: Option<PathBuf>,
    /// Rows of the HF `valid` split.
    pub val_file: Option<PathBuf>,
    /// Rows of the HF `test` split.
    pub test_file: Option<PathBuf>,
    /// Column of the post (TRIL: `prompt`).
    pub prompt_column: String,
    /// Column of the human summary (TRIL: `label`).
    pub label_column: String,
    /// Validation rows kept (TRIL: 100).
    pub n_val: usize,
    /// Test rows kept (TRIL: 500).
    pub n_test: usize,
}

impl Ranges for TldrConfig {
    /// `max_prompt_length` > 5 (the `"\nTL;DR:"` suffix takes 5 tokens); `n_val`, `n_test` any count.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.at_least("max_prompt_length", self.max_prompt_length, 6)
    }
}

impl Default for TldrConfig {
    fn default() -> Self {
        TldrConfig {
            tokenizer_id: "gpt2".into(),
            max_prompt_length: 500,
            train_file: None,
            val_file: None,
            test_file: None,
            prompt_column: "prompt".into(),
            label_column: "label".into(),
            n_val: 100,
            n_test: 500,
        }
    }
}

/// The loaded TL;DR splits.
#[derive(Debug, Clone)]
pub struct Tldr {
    splits: BTreeMap<Split, Vec<Sample>>,
}

/// A data file named by `task.args.{key}`: set and present (or a `hub:` id), or an error
/// naming both.
pub(crate) fn data_file<'a>(task: &str, key: &str, file: &'a Option<PathBuf>) -> Result<&'a Path, TaskError> {
    let config = |message: String| TaskError::Config { task: task.into(), message };
    match file {
        None => Err(config(format!(
            "no data for task.args.{key}: set it to a local CSV/JSONL/Parquet file or a hub dataset id (hub:org/name)"
        ))),
        Some(p) if !p.is_file() && !crate::hub_data::is_hub(p) => {
            Err(config(format!("task.args.{key} = {}: no such file", p.display())))
        }
        Some(p) => Ok(p),
    }
}

/// The HF split name a data key of `split` defaults to (`validation` also finds `valid`).
pub(crate) fn hf_split(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Val => "validation",
        Split::Test => "test",
    }
}

/// TRIL's two-pass prompt truncation.
pub fn tldr_prompt(tok: &TextTokenizer, post: &str, max_len: usize) -> Result<String, PluginError> {
    let head = post.split("TL;DR:").next().unwrap_or("");
    let cut = |text: &str, n: usize| -> Result<String, PluginError> {
        let ids = tok.encode(text, false)?;
        let ids = &ids[..ids.len().min(n)];
        Ok(tok.decode_batch(&[ids], true)?.remove(0))
    };
    let first = cut(head, max_len.saturating_sub(5))?;
    let with_tag = format!("{}\nTL;DR:", first.trim());
    Ok(cut(&with_tag, max_len)?.trim().to_string())
}

impl Tldr {
    /// Loads the three splits named in `config`.
    pub fn load(config: &TldrConfig) -> Result<Self, PluginError> {
        if config.max_prompt_length <= 5 {
            return Err(TaskError::Config {
                task: "tldr".into(),
                message: format!("task.args.max_prompt_length must exceed 5, found {}", config.max_prompt_length),
            }
            .into());
        }
        let files = [
            (Split::Train, "train_file", &config.train_file, usize::MAX),
            (Split::Val, "val_file", &config.val_file, config.n_val),
            (Split::Test, "test_file", &config.test_file, config.n_test),
        ];
        let paths: Vec<&Path> =
            files.iter().map(|(_, key, file, _)| data_file("tldr", key, file)).collect::<Result<_, _>>()?;
        let tok = if config.tokenizer_id == "gpt2" {
            TextTokenizer::gpt2()?
        } else {
            TextTokenizer::from_dir(
                &tril_models::resolve::resolve_model(&config.tokenizer_id)
                    .map_err(|e| format!("task.args.tokenizer_id: {e}"))?,
            )?
        };
        let mut splits = BTreeMap::new();
        for ((split, key, _, keep), path) in files.iter().zip(paths) {
            let table = crate::hub_data::read_table(&format!("task.args.{key}"), path, hf_split(*split))?;
            let path = table.path();
            let posts = table.column(&config.prompt_column, "task.args.prompt_column")?;
            let labels = table.column(&config.label_column, "task.args.label_column")?;
            let mut samples = Vec::new();
            for (ix, (post, label)) in posts.into_iter().zip(labels).take(*keep).enumerate() {
                let prompt = tldr_prompt(&tok, &post, config.max_prompt_length)?;
                let meta = BTreeMap::from([("reference".to_string(), label.clone())]);
                samples.push(Sample {
                    id: format!("tldr_{}_{ix}", split.name()),
                    prompt,
                    references: vec![label],
                    meta,
                });
            }
            if samples.is_empty() {
                return Err(TaskError::EmptySplit {
                    task: "tldr".into(),
                    split: split.name().into(),
                    detail: format!("{} has no rows", path.display()),
                }
                .into());
            }
            splits.insert(*split, samples);
        }
        Ok(Tldr { splits })
    }
}

impl Task for Tldr {
    fn samples(&self, split: Split) -> Result<Vec<Sample>, PluginError> {
        Ok(self.splits.get(&split).cloned().unwrap_or_default())
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Task>, PluginError> {
    Ok(Box::new(Tldr::load(&section.extract()?)?))
}

tril_core::register!(task,
    id: "tldr",
    doc: "Reddit TL;DR summarization (TRIL): post truncated to max_prompt_length tokens + \"\\nTL;DR:\", reference = human summary.",
    config: TldrConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    fn config() -> TldrConfig {
        TldrConfig {
            train_file: Some(fixture("tldr_train.jsonl")),
            val_file: Some(fixture("tldr_valid.jsonl")),
            test_file: Some(fixture("tldr_test.jsonl")),
            ..Default::default()
        }
    }

    #[test]
    fn prompts_end_with_the_tag_and_respect_the_length() {
        let task = Tldr::load(&TldrConfig { n_val: 1, ..config() }).unwrap();
        let train = task.samples(Split::Train).unwrap();
        assert_eq!(train.len(), 3);
        let s = &train[0];
        assert!(s.prompt.starts_with("SUBREDDIT: r/relationships"), "{}", s.prompt);
        // The dataset's own "TL;DR:" tail is replaced by exactly one tag.
        assert!(s.prompt.ends_with("\nTL;DR:") && s.prompt.matches("TL;DR:").count() == 1, "{}", s.prompt);
        assert_eq!(s.references, vec![s.meta["reference"].clone()]);
        assert_eq!(task.samples(Split::Val).unwrap().len(), 1);
        assert_eq!(task.samples(Split::Test).unwrap()[0].id, "tldr_test_0");

        // A short budget: the post is cut to 20 - 5 tokens, then the tag is appended.
        let tok = TextTokenizer::gpt2().unwrap();
        let long = "word ".repeat(100);
        let p = tldr_prompt(&tok, &long, 20).unwrap();
        assert_eq!(p, format!("{}\nTL;DR:", "word ".repeat(15).trim()));
        assert!(tok.encode(&p, false).unwrap().len() <= 20);
    }

    #[test]
    fn missing_data_names_the_key_and_path() {
        let err = Tldr::load(&TldrConfig::default()).unwrap_err().to_string();
        assert!(err.contains("task.args.train_file"), "{err}");
        let missing = TldrConfig { val_file: Some("/nonexistent/valid.jsonl".into()), ..config() };
        let err = Tldr::load(&missing).unwrap_err().to_string();
        assert!(err.contains("task.args.val_file = /nonexistent/valid.jsonl: no such file"), "{err}");
        let bad = TldrConfig { label_column: "summary".into(), ..config() };
        let err = Tldr::load(&bad).unwrap_err().to_string();
        assert!(err.contains("task.args.label_column"), "{err}");
    }
}
