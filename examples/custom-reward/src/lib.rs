//! # custom-reward: how to extend tril from your own crate
//!
//! This crate registers one reward function, `length_penalty`, with
//! [`tril_core::register!`]. Its binary (`src/main.rs`) is tril itself with this crate
//! linked in, so `custom-reward list reward_fn` shows the new id and any config can use it:
//!
//! ```text
//! custom-reward run task=imdb alg=ppo reward_fn.id=length_penalty \
//!     '~reward_fn.args' '+reward_fn.args={target_words: 30}'
//! ```
#![deny(missing_docs)]

use serde::Deserialize;
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, PluginError, RewardFn, TextBatch};

/// Config of `length_penalty` (the `reward_fn.args` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthPenaltyConfig {
    /// The generation length (in whitespace-separated words) that scores 0.
    pub target_words: usize,
    /// Penalty per word of distance from the target.
    #[serde(default = "default_per_word")]
    pub per_word: f64,
}

/// The value ranges `tril config` checks (every registered config states its own).
impl Ranges for LengthPenaltyConfig {
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.non_negative("per_word", self.per_word)
    }
}

fn default_per_word() -> f64 {
    1.0
}

/// Reward = `-per_word * |words(generation) - target_words|`.
#[derive(Debug, Clone)]
pub struct LengthPenalty {
    config: LengthPenaltyConfig,
}

impl LengthPenalty {
    /// A reward from its config.
    pub fn new(config: LengthPenaltyConfig) -> Self {
        LengthPenalty { config }
    }
}

impl RewardFn for LengthPenalty {
    fn score(&mut self, batch: TextBatch<'_>) -> Result<Vec<f64>, PluginError> {
        batch.len()?;
        let target = self.config.target_words as f64;
        let score = |g: &String| -self.config.per_word * (g.split_whitespace().count() as f64 - target).abs();
        Ok(batch.generations.iter().map(score).collect())
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn RewardFn>, PluginError> {
    Ok(Box::new(LengthPenalty::new(section.extract()?)))
}

tril_core::register!(reward_fn,
    id: "length_penalty",
    doc: "Negative distance of the generation's word count from `target_words` (example plugin).",
    config: LengthPenaltyConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tril_core::config::{compose, ComposeRequest, DirStore};
    use tril_core::registry;

    #[test]
    fn scores_distance_from_target() {
        let mut reward = LengthPenalty::new(LengthPenaltyConfig { target_words: 3, per_word: 0.5 });
        let prompts = vec!["p".to_string(), "p".to_string()];
        let gens = vec!["one two three".to_string(), "one".to_string()];
        let refs = vec![vec![], vec![]];
        let batch = TextBatch { prompts: &prompts, generations: &gens, references: &refs };
        assert_eq!(reward.score(batch).unwrap(), vec![0.0, -1.0]);
    }

    #[test]
    fn builds_from_a_composed_config_through_the_registry() {
        let store = DirStore::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs"));
        let args = [
            "task=imdb",
            "alg=ppo",
            "reward_fn.id=length_penalty",
            "~reward_fn.args",
            "+reward_fn.args={target_words: 2}",
        ];
        let req = ComposeRequest { args: args.iter().map(|s| s.to_string()).collect(), env: vec![] };
        let config = compose(&store, &req).unwrap();
        let mut reward = registry::build_reward_fn(&config.section("reward_fn").unwrap(), &config).unwrap();
        let (p, g, r) = (vec!["x".to_string()], vec!["a b c d".to_string()], vec![vec![]]);
        let scores = reward.score(TextBatch { prompts: &p, generations: &g, references: &r }).unwrap();
        assert_eq!(scores, vec![-2.0]);
    }
}
