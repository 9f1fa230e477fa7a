//! `meteor`: METEOR as NLTK's `meteor_score`, which HF's `meteor` metric (TRIL's
//! `MeteorMetric`, reference/tril.md §2.4) calls on `word_tokenize`d text.
//!
//! Per sample, against one reference (lowercased tokens):
//! ```tex
//! P = m / |h|,\quad R = m / |r|,\quad F = \frac{P R}{\alpha P + (1-\alpha) R},\quad
//! \mathrm{pen} = \gamma (c / m)^\beta,\quad \mathrm{METEOR} = (1 - \mathrm{pen}) F
//! ```
//! with `m` aligned unigrams (exact matches first, then Porter-stem matches, each stage
//! pairing hypothesis words from the last to the first with the last free reference
//! occurrence), `c` the number of chunks (runs contiguous in both), alpha 0.9, beta 3,
//! gamma 0.5. Several references: the maximum. Corpus score (`lexical/meteor`): the mean
//! over samples; TRIL reports no per-sample score, tril reports both.
//!
//! # Deviations from NLTK / TRIL
//! - **No WordNet synonym stage.** NLTK's third stage matches WordNet synonyms; WordNet is
//!   NLTK data that cannot be downloaded in this environment (and is not shipped with
//!   tril). tril matches exact words and Porter stems only, so a synonym pair (`car` /
//!   `automobile`) counts as unmatched here and the score is lower than or equal to
//!   NLTK's. On the parity fixture this is exactly NLTK run with an empty WordNet (checked
//!   to 1e-12); the divergence from NLTK with WordNet could not be measured here.
//! - Sentences are not split with Punkt before tokenizing (see [`crate::nltk_tokenize`]).

use crate::error::MetricError;
use crate::nltk_tokenize::word_tokenize;
use crate::porter::stem;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, Metric, MetricOutput, MetricValue, PluginError, TextBatch};

/// Config of `meteor` (TRIL passes none; these are NLTK's defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeteorConfig {
    /// Weight of precision against recall in the harmonic mean (0.9).
    pub alpha: f64,
    /// Exponent of the fragmentation penalty (3).
    pub beta: f64,
    /// Maximum fragmentation penalty (0.5).
    pub gamma: f64,
}

impl Ranges for MeteorConfig {
    /// `alpha` and `gamma` in [0, 1], `beta` >= 0 (as [`MeteorConfig::check`]).
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.probability("alpha", self.alpha)?;
        c.non_negative("beta", self.beta)?;
        c.probability("gamma", self.gamma)
    }
}

impl Default for MeteorConfig {
    fn default() -> Self {
        MeteorConfig { alpha: 0.9, beta: 3.0, gamma: 0.5 }
    }
}

impl MeteorConfig {
    /// Checks alpha and gamma in [0, 1], beta >= 0; `key` names the config section in errors.
    pub fn check(&self, key: &str) -> Result<(), MetricError> {
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(MetricError::invalid(format!("{key}.alpha"), self.alpha, "a METEOR alpha in [0, 1]"));
        }
        if self.beta.is_nan() || self.beta < 0.0 {
            return Err(MetricError::invalid(format!("{key}.beta"), self.beta, "a METEOR beta >= 0"));
        }
        if !(0.0..=1.0).contains(&self.gamma) {
            return Err(MetricError::invalid(format!("{key}.gamma"), self.gamma, "a METEOR gamma in [0, 1]"));
        }
        Ok(())
    }
}

/// NLTK's `_match_enums`: pairs each hypothesis word (last to first) with the last
/// unmatched reference word equal to it. Returns matches and the unmatched rest.
fn match_enums(hyp: Vec<(usize, String)>, refs: Vec<(usize, String)>) -> MatchResult {
    let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, (_, w)) in refs.iter().enumerate() {
        positions.entry(w.as_str()).or_default().push(j);
    }
    let mut matches = Vec::new();
    let mut hyp_used = vec![false; hyp.len()];
    let mut ref_used = vec![false; refs.len()];
    for i in (0..hyp.len()).rev() {
        if let Some(j) = positions.get_mut(hyp[i].1.as_str()).and_then(Vec::pop) {
            hyp_used[i] = true;
            ref_used[j] = true;
            matches.push((hyp[i].0, refs[j].0));
        }
    }
    let keep = |v: Vec<(usize, String)>, used: &[bool]| -> Vec<(usize, String)> {
        v.into_iter().zip(used).filter(|(_, &u)| !u).map(|(p, _)| p).collect()
    };
    let hyp_rest = keep(hyp, &hyp_used);
    let ref_rest = keep(refs, &ref_used);
    (matches, hyp_rest, ref_rest)
}

type MatchResult = (Vec<(usize, usize)>, Vec<(usize, String)>, Vec<(usize, String)>);

/// Number of chunks of an alignment sorted by hypothesis position (NLTK's `_count_chunks`).
fn count_chunks(matches: &[(usize, usize)]) -> usize {
    1 + matches.windows(2).filter(|w| !(w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1)).count()
}

/// METEOR of tokenized `hypothesis` against one tokenized `reference`.
pub fn single_meteor(reference: &[String], hypothesis: &[String], config: &MeteorConfig) -> f64 {
    let enumerate = |t: &[String]| -> Vec<(usize, String)> { t.iter().map(|w| w.to_lowercase()).enumerate().collect() };
    let (hyp, refs) = (enumerate(hypothesis), enumerate(reference));
    let (hyp_len, ref_len) = (hyp.len(), refs.len());
    let (mut matches, hyp, refs) = match_enums(hyp, refs);
    let stemmed =
        |v: Vec<(usize, String)>| -> Vec<(usize, String)> { v.into_iter().map(|(i, w)| (i, stem(&w))).collect() };
    let (stem_matches, _, _) = match_enums(stemmed(hyp), stemmed(refs));
    matches.extend(stem_matches);
    matches.sort_by_key(|m| m.0);
    let m = matches.len() as f64;
    if m == 0.0 || hyp_len == 0 || ref_len == 0 {
        return 0.0;
    }
    let precision = m / hyp_len as f64;
    let recall = m / ref_len as f64;
    let fmean = precision * recall / (config.alpha * precision + (1.0 - config.alpha) * recall);
    let frag = count_chunks(&matches) as f64 / m;
    (1.0 - config.gamma * frag.powf(config.beta)) * fmean
}

/// METEOR of a generation against its references (the maximum over references).
pub fn meteor(generation: &str, references: &[String], config: &MeteorConfig) -> f64 {
    let hyp = word_tokenize(generation);
    references.iter().map(|r| single_meteor(&word_tokenize(r), &hyp, config)).fold(0.0, f64::max)
}

/// Per-sample METEOR and their mean.
pub fn meteor_scores(generations: &[String], references: &[Vec<String>], config: &MeteorConfig) -> (Vec<f64>, f64) {
    let scores: Vec<f64> = generations.iter().zip(references).map(|(g, r)| meteor(g, r, config)).collect();
    let mean = if scores.is_empty() { 0.0 } else { scores.iter().sum::<f64>() / scores.len() as f64 };
    (scores, mean)
}

/// The `meteor` metric.
#[derive(Debug, Clone)]
pub struct Meteor {
    config: MeteorConfig,
}

impl Meteor {
    /// Checks `config`; `key` names its config section in errors.
    pub fn new(config: MeteorConfig, key: &str) -> Result<Self, MetricError> {
        config.check(key)?;
        Ok(Meteor { config })
    }
}

impl Metric for Meteor {
    fn compute(&mut self, batch: TextBatch<'_>) -> Result<MetricOutput, PluginError> {
        batch.len()?;
        let (per_sample, corpus) = meteor_scores(batch.generations, batch.references, &self.config);
        Ok(MetricOutput::from([("lexical/meteor".to_string(), MetricValue { per_sample: Some(per_sample), corpus })]))
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Metric>, PluginError> {
    Ok(Box::new(Meteor::new(section.extract()?, section.key())?))
}

tril_core::register!(metric,
    id: "meteor",
    doc: "METEOR (NLTK's, exact + Porter-stem matches, no WordNet synonyms), key lexical/meteor.",
    config: MeteorConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn hand_computed() {
        let c = MeteorConfig::default();
        // Identical 4-word strings: P = R = 1, one chunk of 4: (1 - 0.5 * (1/4)^3) * 1.
        let s = single_meteor(&toks("the cat sat down"), &toks("the cat sat down"), &c);
        assert!((s - (1.0 - 0.5 / 64.0)).abs() < 1e-12);
        // "cats sit" vs "the cat sat": `cats`~`cat` by stem; `sit`/`sat` unmatched.
        // m = 1, P = 1/2, R = 1/3, F = (1/6) / (0.45 + 0.1/3), one chunk: pen = 0.5.
        let s = single_meteor(&toks("the cat sat"), &toks("cats sit"), &c);
        let f = (1.0 / 6.0) / (0.9 * 0.5 + 0.1 / 3.0);
        assert!((s - 0.5 * f).abs() < 1e-12, "{s}");
        assert_eq!(single_meteor(&toks("a"), &[], &c), 0.0);
    }

    #[test]
    fn multi_reference_takes_the_max() {
        let c = MeteorConfig::default();
        let refs = vec!["a dog runs".to_string(), "the cat sat down".to_string()];
        let best = meteor("the cat sat down", &refs[1..], &c);
        assert_eq!(meteor("the cat sat down", &refs, &c), best);
    }

    /// A bad config value is refused with its full key, the value and the accepted range.
    #[test]
    fn bad_config_names_its_key() {
        let c = MeteorConfig::default();
        let err = Meteor::new(MeteorConfig { alpha: 2.0, ..c.clone() }, "eval_metrics.3.args").unwrap_err();
        assert!(matches!(&err, MetricError::InvalidValue { key, .. } if key == "eval_metrics.3.args.alpha"), "{err:?}");
        assert_eq!(err.to_string(), "eval_metrics.3.args.alpha: expected a METEOR alpha in [0, 1], found 2");
        let err = MeteorConfig { gamma: -1.0, ..c }.check("reward_fn.args").unwrap_err().to_string();
        assert!(err.starts_with("reward_fn.args.gamma:") && err.contains("found -1"), "{err}");
    }
}
