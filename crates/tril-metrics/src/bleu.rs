//! `bleu`: corpus BLEU exactly as TRIL's `BLEUMetric` (reference/tril.md §2.4): HF's
//! `bleu` metric (`datasets.load_metric("bleu")`, the TensorFlow NMT `compute_bleu`) on
//! **whitespace-split** tokens (`str.split()`), max order 4, no smoothing.
//!
//! ```tex
//! p_n = \frac{\sum_s \sum_{g \in G_n(h_s)} \min(c_{h_s}(g), \max_k c_{r_{s,k}}(g))}{\sum_s \max(|h_s| - n + 1, 0)},\quad
//! \mathrm{BLEU} = \mathrm{BP} \cdot \exp\Big(\tfrac14 \sum_{n=1}^4 \log p_n\Big)
//! ```
//! (0 when any p_n is 0), `BP = 1` if `c > r` else `exp(1 - r/c)`, with `c` the total
//! hypothesis length and `r` the sum over samples of the **shortest** reference length
//! (NMT's choice; sacrebleu/NLTK use the closest). Key `lexical/bleu`; TRIL reports no
//! per-sample score, tril reports the sentence BLEU of each sample as well (which is
//! what TRIL's `bleu` reward computes per sample).
//!
//! # Deviation from TRIL
//! When the total hypothesis length is 0 (all generations empty) NMT's code divides by
//! zero and TRIL logs the string `"n/a"`; tril scores 0 (BLEU of an empty corpus).

use crate::error::MetricError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, Metric, MetricOutput, MetricValue, PluginError, TextBatch};

/// Config of `bleu` (TRIL passes none; HF's defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BleuConfig {
    /// Highest n-gram order (4).
    pub max_order: usize,
    /// Add-one smoothing of the precisions (false).
    pub smooth: bool,
}

impl Ranges for BleuConfig {
    /// `max_order` >= 1 (as [`Bleu::new`]).
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.at_least("max_order", self.max_order, 1)
    }
}

impl Default for BleuConfig {
    fn default() -> Self {
        BleuConfig { max_order: 4, smooth: false }
    }
}

fn ngram_counts(tokens: &[&str], max_order: usize) -> HashMap<Vec<String>, usize> {
    let mut counts = HashMap::new();
    for n in 1..=max_order {
        for g in tokens.windows(n) {
            *counts.entry(g.iter().map(|s| s.to_string()).collect()).or_insert(0) += 1;
        }
    }
    counts
}

/// Corpus BLEU of whitespace-tokenized `generations` against their `references`.
pub fn corpus_bleu(generations: &[String], references: &[Vec<String>], config: &BleuConfig) -> f64 {
    let n = config.max_order;
    let mut matches = vec![0usize; n];
    let mut possible = vec![0usize; n];
    let (mut ref_len, mut hyp_len) = (0usize, 0usize);
    for (g, refs) in generations.iter().zip(references) {
        let hyp: Vec<&str> = g.split_whitespace().collect();
        let refs: Vec<Vec<&str>> = refs.iter().map(|r| r.split_whitespace().collect()).collect();
        ref_len += refs.iter().map(Vec::len).min().unwrap_or(0);
        hyp_len += hyp.len();
        let mut merged: HashMap<Vec<String>, usize> = HashMap::new();
        for r in &refs {
            for (g, c) in ngram_counts(r, n) {
                let e = merged.entry(g).or_insert(0);
                *e = (*e).max(c);
            }
        }
        for (g, c) in ngram_counts(&hyp, n) {
            matches[g.len() - 1] += c.min(merged.get(&g).copied().unwrap_or(0));
        }
        for order in 1..=n {
            possible[order - 1] += (hyp.len() + 1).saturating_sub(order);
        }
    }
    let precisions: Vec<f64> = (0..n)
        .map(|i| {
            if config.smooth {
                (matches[i] as f64 + 1.0) / (possible[i] as f64 + 1.0)
            } else if possible[i] > 0 {
                matches[i] as f64 / possible[i] as f64
            } else {
                0.0
            }
        })
        .collect();
    let geo_mean = if n > 0 && precisions.iter().all(|&p| p > 0.0) {
        (precisions.iter().map(|p| p.ln() / n as f64).sum::<f64>()).exp()
    } else {
        0.0
    };
    if hyp_len == 0 {
        return 0.0;
    }
    let ratio = hyp_len as f64 / ref_len as f64;
    let bp = if ratio > 1.0 { 1.0 } else { (1.0 - 1.0 / ratio).exp() };
    geo_mean * bp
}

/// The `bleu` metric.
#[derive(Debug, Clone)]
pub struct Bleu {
    config: BleuConfig,
}

impl Bleu {
    /// Checks `config` (`max_order` >= 1); `key` names its config section in errors.
    pub fn new(config: BleuConfig, key: &str) -> Result<Self, MetricError> {
        if config.max_order == 0 {
            return Err(MetricError::invalid(
                format!("{key}.max_order"),
                config.max_order,
                "a BLEU max_order of at least 1",
            ));
        }
        Ok(Bleu { config })
    }
}

impl Metric for Bleu {
    fn compute(&mut self, batch: TextBatch<'_>) -> Result<MetricOutput, PluginError> {
        batch.len()?;
        let corpus = corpus_bleu(batch.generations, batch.references, &self.config);
        let per_sample = batch
            .generations
            .iter()
            .zip(batch.references)
            .map(|(g, r)| corpus_bleu(std::slice::from_ref(g), std::slice::from_ref(r), &self.config))
            .collect();
        Ok(MetricOutput::from([("lexical/bleu".to_string(), MetricValue { per_sample: Some(per_sample), corpus })]))
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Metric>, PluginError> {
    Ok(Box::new(Bleu::new(section.extract()?, section.key())?))
}

tril_core::register!(metric,
    id: "bleu",
    doc: "Corpus BLEU-4 on whitespace tokens (HF/NMT compute_bleu, shortest reference), key lexical/bleu.",
    config: BleuConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let c = BleuConfig::default();
        let g = vec!["a b c d".to_string()];
        // Identical: every precision 1, BP 1.
        assert_eq!(corpus_bleu(&g, &[vec!["a b c d".into()]], &c), 1.0);
        // Hypothesis "a b c d" vs "a b c d e f": precisions 1, c = 4 < r = 6: BP = e^(1 - 6/4).
        let s = corpus_bleu(&g, &[vec!["a b c d e f".into(), "a b c d e f g".into()]], &c);
        assert!((s - (-0.5f64).exp()).abs() < 1e-12);
        // No 4-gram match: 0.
        assert_eq!(corpus_bleu(&g, &[vec!["a b x d".into()]], &c), 0.0);
        assert_eq!(corpus_bleu(&[String::new()], &[vec!["a".into()]], &c), 0.0);
    }
}
