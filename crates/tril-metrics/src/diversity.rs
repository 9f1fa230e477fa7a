//! `diversity`: n-gram diversity of the generated text (TRIL's `diversity`, which wraps
//! gem-metrics' `NGramStats` and `MSTTR`).
//!
//! Keys (`diversity_metrics/` namespace), over the whole split's generations tokenized
//! by lowercased whitespace splitting:
//! - `distinct-n` = distinct n-grams / all n-grams (n = 1, 2, 3);
//! - `unique-n` = n-grams that occur exactly once (n = 1, 2, 3);
//! - `vocab_size-n` = distinct n-grams;
//! - `msttr-W` = mean type/token ratio over consecutive windows of `window_size` tokens
//!   (the token stream of all generations; a trailing partial window is dropped);
//! - `mean_pred_length`, `std_pred_length` (population std) in tokens.
//!
//! # Deviations from gem-metrics
//! gem-metrics tokenizes with NLTK's word tokenizer; tril splits on whitespace, so
//! punctuation stays attached to words.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, Metric, MetricOutput, MetricValue, PluginError, TextBatch};

/// Config of `diversity` (`eval_metrics[i].args`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiversityConfig {
    /// Window of the mean segmental type/token ratio (TRIL: 100).
    pub window_size: usize,
}

impl Ranges for DiversityConfig {
    /// `window_size` >= 1 token.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.at_least("window_size", self.window_size, 1)
    }
}

impl Default for DiversityConfig {
    fn default() -> Self {
        DiversityConfig { window_size: 100 }
    }
}

/// N-gram counts of a token corpus.
fn ngram_counts<'a>(docs: &[Vec<&'a str>], n: usize) -> HashMap<Vec<&'a str>, usize> {
    let mut counts = HashMap::new();
    for doc in docs {
        for gram in doc.windows(n) {
            *counts.entry(gram.to_vec()).or_insert(0) += 1;
        }
    }
    counts
}

/// Mean type/token ratio over full windows of `window` tokens; `None` if there is none.
pub fn msttr(tokens: &[&str], window: usize) -> Option<f64> {
    let ratios: Vec<f64> = tokens
        .chunks_exact(window.max(1))
        .map(|w| w.iter().collect::<std::collections::HashSet<_>>().len() as f64 / w.len() as f64)
        .collect();
    (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64)
}

/// All diversity statistics of a set of generations.
pub fn diversity(generations: &[String], window_size: usize) -> MetricOutput {
    let lowered: Vec<String> = generations.iter().map(|g| g.to_lowercase()).collect();
    let docs: Vec<Vec<&str>> = lowered.iter().map(|g| g.split_whitespace().collect()).collect();
    let mut out = MetricOutput::new();
    let mut put = |key: String, value: f64| {
        out.insert(format!("diversity_metrics/{key}"), MetricValue { per_sample: None, corpus: value });
    };
    for n in 1..=3 {
        let counts = ngram_counts(&docs, n);
        let total: usize = counts.values().sum();
        let distinct = counts.len();
        put(format!("distinct-{n}"), if total == 0 { 0.0 } else { distinct as f64 / total as f64 });
        put(format!("unique-{n}"), counts.values().filter(|&&c| c == 1).count() as f64);
        put(format!("vocab_size-{n}"), distinct as f64);
    }
    let stream: Vec<&str> = docs.iter().flatten().copied().collect();
    if let Some(m) = msttr(&stream, window_size) {
        put(format!("msttr-{window_size}"), m);
    }
    let lengths: Vec<f64> = docs.iter().map(|d| d.len() as f64).collect();
    let n = lengths.len().max(1) as f64;
    let mean = lengths.iter().sum::<f64>() / n;
    let var = lengths.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n;
    put("mean_pred_length".into(), mean);
    put("std_pred_length".into(), var.sqrt());
    out
}

/// The `diversity` metric.
#[derive(Debug, Clone)]
pub struct Diversity {
    config: DiversityConfig,
}

impl Metric for Diversity {
    fn compute(&mut self, batch: TextBatch<'_>) -> Result<MetricOutput, PluginError> {
        batch.len()?;
        Ok(diversity(batch.generations, self.config.window_size))
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Metric>, PluginError> {
    Ok(Box::new(Diversity { config: section.extract()? }))
}

tril_core::register!(metric,
    id: "diversity",
    doc: "Distinct/unique n-grams, vocabulary size, MSTTR and output length of generations.",
    config: DiversityConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry check of the `metric` section of `yaml` (what `tril config` runs).
    fn range_error(yaml: &str, key: &str) -> String {
        let root = tril_core::config::parse_yaml(yaml, std::path::Path::new("task/imdb.yaml")).unwrap();
        let config = tril_core::config::Config::new(root, vec![]);
        tril_core::registry::Kind::Metric.check(&config.section(key).unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn ranges_are_checked_at_config_time() {
        let cases = [
            ("diversity", "window_size: 0", "window_size: expected at least 1, found 0"),
            ("meteor", "alpha: 1.5", "alpha: expected a number in [0, 1], found 1.5"),
            ("cider", "sigma: 0", "sigma: expected a finite number > 0, found 0"),
            ("bleu", "max_order: 0", "max_order: expected at least 1, found 0"),
            ("causal_perplexity", "stride: 0", "stride: expected at least 1, found 0"),
            ("bert_score", "batch_size: 0", "batch_size: expected at least 1, found 0"),
        ];
        for (id, arg, want) in cases {
            let yaml = format!("eval_metrics:\n  - id: {id}\n    args:\n      {arg}\n");
            let err = range_error(&yaml, "eval_metrics.0");
            assert_eq!(err, format!("eval_metrics.0.args.{want} (task/imdb.yaml:4)"));
        }
    }

    fn get(out: &MetricOutput, key: &str) -> f64 {
        out[&format!("diversity_metrics/{key}")].corpus
    }

    #[test]
    fn counts_match_a_hand_count() {
        // tokens: [a b a] [b c]; unigrams a:2 b:2 c:1; bigrams (a b) (b a) (b c)
        let out = diversity(&["A b a".to_string(), "b c".to_string()], 2);
        assert_eq!(get(&out, "distinct-1"), 3.0 / 5.0);
        assert_eq!(get(&out, "unique-1"), 1.0);
        assert_eq!(get(&out, "vocab_size-2"), 3.0);
        assert_eq!(get(&out, "distinct-2"), 1.0);
        assert_eq!(get(&out, "distinct-3"), 1.0);
        // stream a b a b c -> windows [a b] [a b]: ttr 1, 1
        assert_eq!(get(&out, "msttr-2"), 1.0);
        assert_eq!(get(&out, "mean_pred_length"), 2.5);
        assert_eq!(get(&out, "std_pred_length"), 0.5);
    }

    #[test]
    fn msttr_drops_partial_windows() {
        assert_eq!(msttr(&["a", "a", "b", "c", "d"], 2), Some((0.5 + 1.0) / 2.0));
        assert_eq!(msttr(&["a"], 2), None);
    }

    #[test]
    fn empty_generations_do_not_divide_by_zero() {
        let out = diversity(&[String::new()], 100);
        assert_eq!(get(&out, "distinct-1"), 0.0);
        assert_eq!(get(&out, "mean_pred_length"), 0.0);
    }
}
