//! `increasing_numbers`: RL4LMs' synthetic reward for generating increasing numbers.
//!
//! ```tex
//! r(y) = \frac{\mathrm{run}(y)}{\max(|y|, m)}
//! ```
//! where `|y|` is the number of whitespace-separated tokens of the generation,
//! `run(y)` the length of the longest strictly increasing run of consecutive number
//! tokens (a non-number token breaks the run), and `m` = `min_tokens`, which keeps a
//! one-number generation from scoring 1.0. The reward lies in [0, 1].
//!
//! # Deviations from RL4LMs
//! RL4LMs counts the increasing *prefix* of the number tokens; tril counts the longest
//! run anywhere, so one early slip does not zero the whole sequence.

use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, PluginError, RewardFn, TextBatch};

/// Config of `increasing_numbers` (`reward_fn.args`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncreasingNumbersConfig {
    /// Denominator floor `m`: generations shorter than this are scored as if this long.
    pub min_tokens: usize,
}

impl Ranges for IncreasingNumbersConfig {
    /// `min_tokens` is any count (the denominator is at least 1).
    fn check_ranges(&self, _: &Checker<'_>) -> tril_core::Result<()> {
        Ok(())
    }
}

impl Default for IncreasingNumbersConfig {
    fn default() -> Self {
        IncreasingNumbersConfig { min_tokens: 4 }
    }
}

/// Longest strictly increasing run of consecutive number tokens.
pub fn longest_increasing_run(tokens: &[&str]) -> usize {
    let mut best = 0;
    let mut run = 0;
    let mut prev: Option<f64> = None;
    for token in tokens {
        match token.parse::<f64>().ok().filter(|x| x.is_finite()) {
            Some(x) => {
                run = match prev {
                    Some(p) if x > p => run + 1,
                    _ => 1,
                };
                prev = Some(x);
            }
            None => {
                run = 0;
                prev = None;
            }
        }
        best = best.max(run);
    }
    best
}

/// The reward of one generation.
pub fn increasing_numbers_reward(generation: &str, min_tokens: usize) -> f64 {
    let tokens: Vec<&str> = generation.split_whitespace().collect();
    let denom = tokens.len().max(min_tokens).max(1);
    longest_increasing_run(&tokens) as f64 / denom as f64
}

/// The `increasing_numbers` reward function.
#[derive(Debug, Clone)]
pub struct IncreasingNumbers {
    config: IncreasingNumbersConfig,
}

impl IncreasingNumbers {
    /// A reward from its config.
    pub fn new(config: IncreasingNumbersConfig) -> Self {
        IncreasingNumbers { config }
    }
}

impl RewardFn for IncreasingNumbers {
    fn score(&mut self, batch: TextBatch<'_>) -> Result<Vec<f64>, PluginError> {
        batch.len()?;
        Ok(batch.generations.iter().map(|g| increasing_numbers_reward(g, self.config.min_tokens)).collect())
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn RewardFn>, PluginError> {
    Ok(Box::new(IncreasingNumbers::new(section.extract()?)))
}

tril_core::register!(reward_fn,
    id: "increasing_numbers",
    doc: "Longest strictly increasing run of numbers / max(tokens, min_tokens) (RL4LMs synthetic task).",
    config: IncreasingNumbersConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_counted_like_a_naive_scan() {
        assert_eq!(longest_increasing_run(&["1", "2", "3"]), 3);
        assert_eq!(longest_increasing_run(&["3", "2", "5", "9", "x", "1"]), 3);
        assert_eq!(longest_increasing_run(&["1", "1", "1"]), 1);
        assert_eq!(longest_increasing_run(&["a", "b"]), 0);
        assert_eq!(longest_increasing_run(&[]), 0);
        assert_eq!(longest_increasing_run(&["1", "x", "2", "3"]), 2);
    }

    #[test]
    fn reward_values() {
        assert_eq!(increasing_numbers_reward("4 5 6 7", 4), 1.0);
        assert_eq!(increasing_numbers_reward("4", 4), 0.25);
        assert_eq!(increasing_numbers_reward("4 5 1 2 3 9 8 7", 4), 4.0 / 8.0);
        assert_eq!(increasing_numbers_reward("", 4), 0.0);
    }
}
