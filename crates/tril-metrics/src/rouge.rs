//! `rouge`: ROUGE-1/2/L/Lsum F-measures as Google's `rouge_score` computes them, which
//! HF's `rouge` metric (TRIL's `RougeMetric`, reference/tril.md §2.4) wraps with
//! `use_stemmer=True`.
//!
//! Tokenization (`rouge_score.tokenize`): lowercase, every run of characters outside
//! `[a-z0-9]` becomes a separator, and tokens longer than 3 characters are Porter-stemmed
//! (NLTK's stemmer, [`crate::porter`]). Per pair:
//! ```tex
//! \text{ROUGE-N}: P = \frac{|g_n(h) \cap g_n(r)|}{|g_n(h)|},\ R = \frac{|g_n(h) \cap g_n(r)|}{|g_n(r)|},\quad
//! \text{ROUGE-L}: P = \frac{\mathrm{LCS}}{|h|},\ R = \frac{\mathrm{LCS}}{|r|},\quad F = \frac{2PR}{P+R}
//! ```
//! (clipped n-gram counts). ROUGE-Lsum is the summary-level union LCS over sentences
//! split at `"\n"` (without newlines it equals ROUGE-L). With several references
//! (`use_single_ref: false`) each type takes the reference with the highest F
//! (`score_multi`); with `use_single_ref: true` (TRIL's default) only the first.
//!
//! Keys: `lexical/rouge_{rouge1,rouge2,rougeL,rougeLsum}`, per-sample F and the corpus
//! score = the mean F.
//!
//! # Deviation from TRIL
//! HF's metric aggregates with `rouge_score`'s `BootstrapAggregator` and TRIL reports
//! `mid.fmeasure`: the median of 1,000 unseeded bootstrap resamples of the mean, a
//! random estimate of the mean F. tril reports the mean itself (deterministic; the
//! bootstrap median differs from it by sampling noise only).

use crate::porter::stem;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, Metric, MetricOutput, MetricValue, PluginError, TextBatch};

/// The four ROUGE types TRIL reports, in its order.
pub const ROUGE_TYPES: [&str; 4] = ["rouge1", "rouge2", "rougeL", "rougeLsum"];

/// Config of `rouge` (`eval_metrics[i].args`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RougeConfig {
    /// Score against the first reference only (TRIL's default, true).
    pub use_single_ref: bool,
    /// Porter-stem tokens longer than 3 characters (TRIL always passes true).
    pub use_stemmer: bool,
}

impl Ranges for RougeConfig {
    /// No numeric key.
    fn check_ranges(&self, _: &Checker<'_>) -> tril_core::Result<()> {
        Ok(())
    }
}

impl Default for RougeConfig {
    fn default() -> Self {
        RougeConfig { use_single_ref: true, use_stemmer: true }
    }
}

/// Precision, recall and F-measure.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Score {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// Harmonic mean (0 when both are 0).
    pub fmeasure: f64,
}

impl Score {
    fn new(precision: f64, recall: f64) -> Self {
        let fmeasure = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        Score { precision, recall, fmeasure }
    }
}

/// `rouge_score`'s tokenizer.
pub fn tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(|t| if use_stemmer && t.len() > 3 { stem(t) } else { t.to_string() })
        // the stem of an [a-z0-9] token stays in [a-z0-9]; the filter mirrors rouge_score's
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        .collect()
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for g in tokens.windows(n) {
            *counts.entry(g).or_insert(0) += 1;
        }
    }
    counts
}

/// ROUGE-N of `prediction` tokens against `target` tokens.
pub fn rouge_n(target: &[String], prediction: &[String], n: usize) -> Score {
    let (t, p) = (ngrams(target, n), ngrams(prediction, n));
    let overlap: usize = t.iter().map(|(g, &c)| c.min(p.get(g).copied().unwrap_or(0))).sum();
    let (nt, np) = (t.values().sum::<usize>(), p.values().sum::<usize>());
    Score::new(overlap as f64 / np.max(1) as f64, overlap as f64 / nt.max(1) as f64)
}

fn lcs_table(a: &[String], b: &[String]) -> Vec<Vec<usize>> {
    let mut t = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            t[i][j] = if a[i - 1] == b[j - 1] { t[i - 1][j - 1] + 1 } else { t[i - 1][j].max(t[i][j - 1]) };
        }
    }
    t
}

/// ROUGE-L (sentence-level LCS).
pub fn rouge_l(target: &[String], prediction: &[String]) -> Score {
    if target.is_empty() || prediction.is_empty() {
        return Score::default();
    }
    let lcs = lcs_table(target, prediction)[target.len()][prediction.len()] as f64;
    Score::new(lcs / prediction.len() as f64, lcs / target.len() as f64)
}

/// Indices into `r` of one LCS with `c` (`rouge_score`'s `_backtrack_norec`).
fn lcs_indices(r: &[String], c: &[String]) -> Vec<usize> {
    let t = lcs_table(r, c);
    let (mut i, mut j) = (r.len(), c.len());
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        if r[i - 1] == c[j - 1] {
            out.push(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i][j - 1] > t[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    out.reverse();
    out
}

/// ROUGE-Lsum: summary-level union LCS, without double counting (ROUGE 1.5.5).
pub fn rouge_lsum(target_sents: &[Vec<String>], pred_sents: &[Vec<String>]) -> Score {
    let m: usize = target_sents.iter().map(Vec::len).sum();
    let n: usize = pred_sents.iter().map(Vec::len).sum();
    if target_sents.is_empty() || pred_sents.is_empty() || m == 0 || n == 0 {
        return Score::default();
    }
    let mut count_r: HashMap<&str, usize> = HashMap::new();
    let mut count_c: HashMap<&str, usize> = HashMap::new();
    for t in target_sents.iter().flatten() {
        *count_r.entry(t).or_default() += 1;
    }
    for t in pred_sents.iter().flatten() {
        *count_c.entry(t).or_default() += 1;
    }
    let mut hits = 0usize;
    for r in target_sents {
        let mut union: Vec<usize> = pred_sents.iter().flat_map(|c| lcs_indices(r, c)).collect();
        union.sort_unstable();
        union.dedup();
        for i in union {
            let tok = r[i].as_str();
            let (cc, cr) = (count_c.get(tok).copied().unwrap_or(0), count_r.get(tok).copied().unwrap_or(0));
            if cc > 0 && cr > 0 {
                hits += 1;
                count_c.insert(tok, cc - 1);
                count_r.insert(tok, cr - 1);
            }
        }
    }
    Score::new(hits as f64 / n as f64, hits as f64 / m as f64)
}

/// All four ROUGE types of one (target, prediction) pair, in [`ROUGE_TYPES`] order.
pub fn score(target: &str, prediction: &str, use_stemmer: bool) -> [Score; 4] {
    let (t, p) = (tokenize(target, use_stemmer), tokenize(prediction, use_stemmer));
    let sents = |s: &str| -> Vec<Vec<String>> {
        s.split('\n').filter(|x| !x.is_empty()).map(|x| tokenize(x, use_stemmer)).collect()
    };
    [rouge_n(&t, &p, 1), rouge_n(&t, &p, 2), rouge_l(&t, &p), rouge_lsum(&sents(target), &sents(prediction))]
}

/// Several references: per type, the score of the reference with the highest F (first on ties).
pub fn score_multi(targets: &[String], prediction: &str, use_stemmer: bool) -> [Score; 4] {
    let all: Vec<[Score; 4]> = targets.iter().map(|t| score(t, prediction, use_stemmer)).collect();
    std::array::from_fn(|k| {
        let mut best: Option<Score> = None;
        for s in &all {
            if best.is_none_or(|b| s[k].fmeasure > b.fmeasure) {
                best = Some(s[k]);
            }
        }
        best.unwrap_or_default()
    })
}

/// Per-sample F of each type (rows in [`ROUGE_TYPES`] order).
pub fn rouge_scores(generations: &[String], references: &[Vec<String>], config: &RougeConfig) -> [Vec<f64>; 4] {
    let mut out: [Vec<f64>; 4] = Default::default();
    for (g, refs) in generations.iter().zip(references) {
        let s = if config.use_single_ref {
            refs.first().map(|r| score(r, g, config.use_stemmer)).unwrap_or_default()
        } else {
            score_multi(refs, g, config.use_stemmer)
        };
        for k in 0..4 {
            out[k].push(s[k].fmeasure);
        }
    }
    out
}

/// The `rouge` metric.
#[derive(Debug, Clone)]
pub struct Rouge {
    config: RougeConfig,
}

impl Rouge {
    /// A metric with `config`.
    pub fn new(config: RougeConfig) -> Self {
        Rouge { config }
    }
}

impl Metric for Rouge {
    fn compute(&mut self, batch: TextBatch<'_>) -> Result<MetricOutput, PluginError> {
        batch.len()?;
        let scores = rouge_scores(batch.generations, batch.references, &self.config);
        Ok(ROUGE_TYPES
            .iter()
            .zip(scores)
            .map(|(name, s)| {
                let corpus = if s.is_empty() { 0.0 } else { s.iter().sum::<f64>() / s.len() as f64 };
                (format!("lexical/rouge_{name}"), MetricValue { per_sample: Some(s), corpus })
            })
            .collect())
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Metric>, PluginError> {
    Ok(Box::new(Rouge::new(section.extract()?)))
}

tril_core::register!(metric,
    id: "rouge",
    doc: "ROUGE-1/2/L/Lsum F (rouge_score, Porter stemmer), keys lexical/rouge_rouge1 ... _rougeLsum.",
    config: RougeConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn hand_computed() {
        // "the cat sat" vs "the cat was here": unigram overlap 2, P 2/3, R 2/4.
        let s = rouge_n(&toks("the cat was here"), &toks("the cat sat"), 1);
        assert!((s.fmeasure - 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5)).abs() < 1e-12);
        // bigrams: (the cat) shared; P 1/2, R 1/3.
        assert!((rouge_n(&toks("the cat was here"), &toks("the cat sat"), 2).fmeasure - 0.4).abs() < 1e-12);
        // LCS of "a b c d" and "a c b d" is 3.
        assert!((rouge_l(&toks("a b c d"), &toks("a c b d")).fmeasure - 0.75).abs() < 1e-12);
        assert_eq!(tokenize("The Cats, running!", true), ["the", "cat", "run"]);
        assert_eq!(score("", "x", true)[0].fmeasure, 0.0);
    }

    #[test]
    fn lsum_equals_l_on_one_line_and_multi_takes_best() {
        let s = score("a b c d", "a c b d", false);
        assert_eq!(s[2], s[3]);
        let refs = vec!["x y".to_string(), "a b c d".to_string()];
        assert_eq!(score_multi(&refs, "a c b d", false)[2], s[2]);
    }
}
