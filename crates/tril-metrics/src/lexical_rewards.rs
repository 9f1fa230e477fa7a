//! TRIL's lexical reward functions (`rewards/automated_rewards.py`, reference/tril.md
//! §2.3), built on this crate's metrics. They live here, not in `tril-rewards`, because
//! `tril-metrics` depends on `tril-rewards` (metrics wrap learned rewards) and the
//! rewards need the metrics; the registry does not care which crate registers an id.
//!
//! | id | reward of sample s |
//! |---|---|
//! | `meteor` | METEOR of the generation against its references ([`crate::meteor`]) |
//! | `rouge` | `lexical/{rouge_type}` F of the sample alone ([`crate::rouge`]) |
//! | `bleu` | sentence BLEU of the sample alone ([`crate::bleu`]) |
//! | `spider` | `cider_coeff * CIDEr-D(s)`, idf over the batch ([`crate::cider`]); SPICE is not available |
//! | `common_gen_concept_cover` | fraction of the prompt's Porter-stemmed concepts present in the generation |
//!
//! # Deviations from TRIL
//! - `spider` requires `spice_coeff: 0`: SPICE runs a Java jar with Stanford CoreNLP
//!   models, which tril does not ship; a nonzero coefficient is refused at build time
//!   naming the key. TRIL's CommonGen config uses 1.0/1.0; tril's uses 0.0/1.0.
//! - `bleu` of an empty generation is 0 (TRIL's metric returns the string "n/a", which
//!   then fails to become a tensor).
//! - `rouge_combined` is not registered: TRIL's computes the whole batch's corpus score
//!   once per sample, so every sample gets the same value (§2.3 [obs]).

use crate::bleu::{corpus_bleu, BleuConfig};
use crate::cider::{cider_d, CiderConfig};
use crate::error::MetricError;
use crate::meteor::{meteor, MeteorConfig};
use crate::porter::stem;
use crate::rouge::{rouge_scores, RougeConfig, ROUGE_TYPES};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, PluginError, RewardFn, TextBatch};

/// `meteor` reward: per-sample METEOR.
pub struct MeteorReward(MeteorConfig);

impl RewardFn for MeteorReward {
    fn score(&mut self, batch: TextBatch<'_>) -> Result<Vec<f64>, PluginError> {
        batch.len()?;
        Ok(batch.generations.iter().zip(batch.references).map(|(g, r)| meteor(g, r, &self.0)).collect())
    }
}

fn build_meteor(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn RewardFn>, PluginError> {
    let config: MeteorConfig = section.extract()?;
    config.check(section.key())?;
    Ok(Box::new(MeteorReward(config)))
}

tril_core::register!(reward_fn,
    id: "meteor",
    doc: "Per-sample METEOR against the references (exact + stem matches; TRIL's `meteor` reward).",
    config: MeteorConfig,
    build: build_meteor);

/// Config of the `rouge` reward.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RougeRewardConfig {
    /// Which F: `rouge_rouge1`, `rouge_rouge2`, `rouge_rougeL` or `rouge_rougeLsum` (TRIL's key names).
    pub rouge_type: String,
    /// Score against the first reference only (TRIL: true).
    pub use_single_ref: bool,
}

impl Ranges for RougeRewardConfig {
    /// No numeric key.
    fn check_ranges(&self, _: &Checker<'_>) -> tril_core::Result<()> {
        Ok(())
    }
}

impl Default for RougeRewardConfig {
    fn default() -> Self {
        RougeRewardConfig { rouge_type: "rouge_rouge1".into(), use_single_ref: true }
    }
}

/// `rouge` reward: one ROUGE F per sample.
pub struct RougeReward {
    index: usize,
    config: RougeConfig,
}

impl RougeReward {
    /// Checks the ROUGE type; `key` names the config section in errors (`reward_fn.args`).
    pub fn new(config: RougeRewardConfig, key: &str) -> Result<Self, MetricError> {
        let index = ROUGE_TYPES.iter().position(|t| format!("rouge_{t}") == config.rouge_type).ok_or_else(|| {
            MetricError::invalid(
                format!("{key}.rouge_type"),
                format!("`{}`", config.rouge_type),
                "one of rouge_rouge1, rouge_rouge2, rouge_rougeL, rouge_rougeLsum",
            )
        })?;
        Ok(RougeReward { index, config: RougeConfig { use_single_ref: config.use_single_ref, use_stemmer: true } })
    }
}

impl RewardFn for RougeReward {
    fn score(&mut self, batch: TextBatch<'_>) -> Result<Vec<f64>, PluginError> {
        batch.len()?;
        let scores = rouge_scores(batch.generations, batch.references, &self.config);
        Ok(scores.into_iter().nth(self.index).unwrap_or_default())
    }
}

fn build_rouge(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn RewardFn>, PluginError> {
    Ok(Box::new(RougeReward::new(section.extract()?, section.key())?))
}

tril_core::register!(reward_fn,
    id: "rouge",
    doc: "Per-sample ROUGE F of type `rouge_type` (rouge_score with stemming; TRIL's `rouge` reward).",
    config: RougeRewardConfig,
    build: build_rouge);

/// `bleu` reward: sentence BLEU per sample.
pub struct BleuReward(BleuConfig);

impl RewardFn for BleuReward {
    fn score(&mut self, batch: TextBatch<'_>) -> Result<Vec<f64>, PluginError> {
        batch.len()?;
        Ok(batch
            .generations
            .iter()
            .zip(batch.references)
            .map(|(g, r)| corpus_bleu(std::slice::from_ref(g), std::slice::from_ref(r), &self.0))
            .collect())
    }
}

fn build_bleu(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn RewardFn>, PluginError> {
    let config: BleuConfig = section.extract()?;
    crate::bleu::Bleu::new(config.clone(), section.key())?;
    Ok(Box::new(BleuReward(config)))
}

tril_core::register!(reward_fn,
    id: "bleu",
    doc: "Per-sample BLEU-4 on whitespace tokens (TRIL's `bleu` reward).",
    config: BleuConfig,
    build: build_bleu);

/// Config of `spider`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpiderConfig {
    /// Weight of SPICE; must be 0 (SPICE is not implemented).
    pub spice_coeff: f64,
    /// Weight of CIDEr-D.
    pub cider_coeff: f64,
    /// TRIL's unused shaping function name; accepted and ignored when null.
    #[serde(default)]
    pub shaping_fn: Option<String>,
}

impl Ranges for SpiderConfig {
    /// `spice_coeff` must be 0 (SPICE is not implemented); `cider_coeff` any finite weight.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        let message = "expected 0 (SPICE needs Java and Stanford CoreNLP and is not implemented in tril; with \
                       spice_coeff: 0 the reward is cider_coeff * CIDEr-D)";
        c.satisfies(self.spice_coeff == 0.0, "spice_coeff", self.spice_coeff, message)?;
        c.finite("cider_coeff", self.cider_coeff)
    }
}

/// `spider` reward without SPICE: `cider_coeff * CIDEr-D`, idf over the scored batch.
pub struct Spider {
    cider_coeff: f64,
    cider: CiderConfig,
}

impl Spider {
    /// Refuses a nonzero `spice_coeff` and a set `shaping_fn`; `key` names the config
    /// section in errors (`reward_fn.args`).
    pub fn new(config: SpiderConfig, key: &str) -> Result<Self, MetricError> {
        if config.spice_coeff != 0.0 {
            return Err(MetricError::invalid(
                format!("{key}.spice_coeff"),
                config.spice_coeff,
                "0 (SPICE needs Java and Stanford CoreNLP and is not implemented in tril; with \
                 spice_coeff: 0 the reward is cider_coeff * CIDEr-D)",
            ));
        }
        if !config.cider_coeff.is_finite() {
            return Err(MetricError::invalid(format!("{key}.cider_coeff"), config.cider_coeff, "a finite number"));
        }
        if let Some(f) = config.shaping_fn {
            return Err(MetricError::invalid(
                format!("{key}.shaping_fn"),
                format!("`{f}`"),
                "null (TRIL never uses it)",
            ));
        }
        Ok(Spider { cider_coeff: config.cider_coeff, cider: CiderConfig::default() })
    }
}

impl RewardFn for Spider {
    fn score(&mut self, batch: TextBatch<'_>) -> Result<Vec<f64>, PluginError> {
        batch.len()?;
        let s = cider_d(batch.generations, batch.references, &self.cider)?;
        Ok(s.into_iter().map(|x| self.cider_coeff * x).collect())
    }
}

fn build_spider(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn RewardFn>, PluginError> {
    Ok(Box::new(Spider::new(section.extract()?, section.key())?))
}

tril_core::register!(reward_fn,
    id: "spider",
    doc: "cider_coeff * CIDEr-D per sample, idf over the batch (TRIL's `spider` without SPICE: spice_coeff must be 0).",
    config: SpiderConfig,
    build: build_spider);

/// Config of `common_gen_concept_cover`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConceptCoverConfig {
    /// The prompt prefix before the concepts (TRIL hard-codes CommonGen's).
    pub prefix: String,
}

impl Ranges for ConceptCoverConfig {
    /// No numeric key.
    fn check_ranges(&self, _: &Checker<'_>) -> tril_core::Result<()> {
        Ok(())
    }
}

impl Default for ConceptCoverConfig {
    fn default() -> Self {
        ConceptCoverConfig { prefix: "generate a sentence with: ".into() }
    }
}

/// Fraction of the prompt's stemmed concepts that the generation contains (TRIL's
/// `CommonGenConceptCoverFunction`: concepts = text after `prefix` up to the first `.`,
/// lowercased, split on single spaces, Porter-stemmed; same for the generation).
pub fn concept_cover(prompt: &str, generation: &str, prefix: &str) -> Option<f64> {
    let (_, rest) = prompt.split_once(prefix)?;
    let concepts = rest.split('.').next().unwrap_or("").to_lowercase();
    let input: HashSet<String> = concepts.split(' ').map(stem).collect();
    let generated: HashSet<String> = generation.to_lowercase().split(' ').map(stem).collect();
    Some(input.intersection(&generated).count() as f64 / input.len() as f64)
}

/// `common_gen_concept_cover` reward.
pub struct ConceptCover {
    config: ConceptCoverConfig,
    key: String,
}

impl ConceptCover {
    /// The reward with `config`; `key` names its config section in errors (`reward_fn.args`).
    pub fn new(config: ConceptCoverConfig, key: &str) -> Self {
        ConceptCover { config, key: key.to_string() }
    }
}

impl RewardFn for ConceptCover {
    fn score(&mut self, batch: TextBatch<'_>) -> Result<Vec<f64>, PluginError> {
        batch.len()?;
        batch
            .prompts
            .iter()
            .zip(batch.generations)
            .enumerate()
            .map(|(i, (p, g))| {
                concept_cover(p, g, &self.config.prefix).ok_or_else(|| {
                    MetricError::Input {
                        what: "common_gen_concept_cover".into(),
                        message: format!("prompt {i} does not contain {}.prefix `{}`", self.key, self.config.prefix),
                    }
                    .into()
                })
            })
            .collect()
    }
}

fn build_cover(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn RewardFn>, PluginError> {
    Ok(Box::new(ConceptCover::new(section.extract()?, section.key())))
}

tril_core::register!(reward_fn,
    id: "common_gen_concept_cover",
    doc: "Fraction of the CommonGen prompt's Porter-stemmed concepts found in the generation (TRIL's).",
    config: ConceptCoverConfig,
    build: build_cover);

#[cfg(test)]
mod tests {
    use super::*;

    fn batch<'a>(p: &'a [String], g: &'a [String], r: &'a [Vec<String>]) -> TextBatch<'a> {
        TextBatch { prompts: p, generations: g, references: r }
    }

    #[test]
    fn concept_cover_counts_stemmed_concepts() {
        let p = "generate a sentence with: dog run field.";
        assert_eq!(concept_cover(p, "The dogs are running", "generate a sentence with: "), Some(2.0 / 3.0));
        assert_eq!(concept_cover("no prefix", "x", "generate a sentence with: "), None);
        let mut r = ConceptCover::new(ConceptCoverConfig::default(), "reward_fn.args");
        let (ps, gs, rs) = (vec!["bad".to_string()], vec!["x".to_string()], vec![vec!["y".to_string()]]);
        assert!(r.score(batch(&ps, &gs, &rs)).unwrap_err().to_string().contains("prefix"));
    }

    #[test]
    fn rewards_agree_with_their_metrics() {
        let p = vec![String::new(); 2];
        let g = vec!["a cat sat on the mat".to_string(), "dogs run".to_string()];
        let r = vec![vec!["the cat sat on the mat".to_string()], vec!["a dog runs fast".to_string()]];
        let rouge_config = |t: &str| RougeRewardConfig { rouge_type: t.into(), use_single_ref: true };
        let rouge =
            RougeReward::new(rouge_config("rouge_rougeL"), "reward_fn.args").unwrap().score(batch(&p, &g, &r)).unwrap();
        let m = rouge_scores(&g, &r, &RougeConfig::default());
        assert_eq!(rouge, m[2]);
        let err = RougeReward::new(rouge_config("rougeL"), "reward_fn.args").err().unwrap().to_string();
        assert!(err.contains("reward_fn.args.rouge_type") && err.contains("`rougeL`"), "{err}");
        let spider =
            Spider::new(SpiderConfig { spice_coeff: 0.0, cider_coeff: 2.0, shaping_fn: None }, "reward_fn.args")
                .unwrap()
                .score(batch(&p, &g, &r))
                .unwrap();
        let cider = cider_d(&g, &r, &CiderConfig::default()).unwrap();
        assert_eq!(spider, vec![2.0 * cider[0], 2.0 * cider[1]]);
        let bad = SpiderConfig { spice_coeff: 1.0, cider_coeff: 1.0, shaping_fn: None };
        let err = Spider::new(bad, "reward_fn.args").err().unwrap().to_string();
        assert!(err.contains("reward_fn.args.spice_coeff") && err.contains("found 1"), "{err}");
        let m = MeteorReward(MeteorConfig::default()).score(batch(&p, &g, &r)).unwrap();
        assert_eq!(m[0], meteor(&g[0], &r[0], &MeteorConfig::default()));
    }
}
