//! Metrics that report a rule reward's mean (and per-sample values) at evaluation.

use tril_core::config::Section;
use tril_core::plugin::{BuildCtx, Metric, MetricOutput, MetricValue, PluginError, RewardFn, TextBatch};
use tril_rewards::increasing_numbers::{IncreasingNumbers, IncreasingNumbersConfig};
use tril_rewards::learned_reward::{load_reward, LearnedRewardConfig};

/// A metric that scores each sample with a reward function and reports the mean.
pub struct RewardMetric {
    key: &'static str,
    reward: Box<dyn RewardFn>,
}

impl RewardMetric {
    /// Wraps `reward`, reporting under `key`.
    pub fn new(key: &'static str, reward: Box<dyn RewardFn>) -> Self {
        RewardMetric { key, reward }
    }
}

impl Metric for RewardMetric {
    fn compute(&mut self, batch: TextBatch<'_>) -> Result<MetricOutput, PluginError> {
        let scores = self.reward.score(batch)?;
        let corpus = if scores.is_empty() { 0.0 } else { scores.iter().sum::<f64>() / scores.len() as f64 };
        Ok(MetricOutput::from([(self.key.to_string(), MetricValue { per_sample: Some(scores), corpus })]))
    }
}

fn build_increasing(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Metric>, PluginError> {
    let config: IncreasingNumbersConfig = section.extract()?;
    Ok(Box::new(RewardMetric::new("synthetic/increasing_numbers", Box::new(IncreasingNumbers::new(config)))))
}

tril_core::register!(metric,
    id: "increasing_numbers",
    doc: "Mean `increasing_numbers` reward of the generations (key synthetic/increasing_numbers).",
    config: IncreasingNumbersConfig,
    build: build_increasing);

fn build_learned(section: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Metric>, PluginError> {
    let config: LearnedRewardConfig = section.extract()?;
    let reward = load_reward(config, section.key(), ctx.target()?)?;
    Ok(Box::new(RewardMetric::new("semantic/learned_automodel_metric", reward)))
}

tril_core::register!(metric,
    id: "learned_reward",
    doc: "Mean classifier probability of `label_ix` (key semantic/learned_automodel_metric, TRIL's).",
    config: LearnedRewardConfig,
    build: build_learned);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_mean_and_per_sample() {
        let reward = IncreasingNumbers::new(IncreasingNumbersConfig { min_tokens: 2 });
        let mut m = RewardMetric::new("synthetic/increasing_numbers", Box::new(reward));
        let (p, g, r) = (vec![String::new(); 2], vec!["1 2".to_string(), "x".to_string()], vec![vec![]; 2]);
        let out = m.compute(TextBatch { prompts: &p, generations: &g, references: &r }).unwrap();
        let v = &out["synthetic/increasing_numbers"];
        assert_eq!(v.per_sample, Some(vec![1.0, 0.0]));
        assert_eq!(v.corpus, 0.5);
    }
}
