//! The two root sections every trainer reads to fail loudly rather than silently:
//! `guard:` (what a non-finite or diverging step does) and `checkpoint:` (which
//! checkpoints a run keeps). Both are the same for every algorithm, so they live at the
//! root of the config (`cfgs/config.yaml`), not in each `alg.args`:
//!
//! ```yaml
//! guard:
//!   skip_nonfinite: 0      # bad steps skipped (with a warning) before the run stops
//!   max_loss: null         # stop when |a loss term| exceeds this (divergence); null: off
//!   max_kl: null           # stop when the KL to the reference exceeds this; null: off
//! checkpoint:
//!   save_total_limit: null # keep the newest K checkpoints (plus the best); null: all
//!   best_metric: null      # e.g. val/rewards: also keep the best checkpoint by it
//!   best_mode: max         # max or min
//! ```

use crate::config::{Checker, Config, Ranges, Value};
use crate::error::CoreError;
use serde::{Deserialize, Serialize};

/// `guard:`: what every trainer does when a loss term, the gradient norm, a reward or
/// the KL is not a finite number, or diverges.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Optimizer steps (or iterations, for a bad reward) that may be skipped, each with a
    /// warning, before the run stops; 0: the first bad step stops the run. A skipped step
    /// applies no update.
    #[serde(default)]
    pub skip_nonfinite: usize,
    /// Divergence bound on the magnitude of every loss term (`null`: none). Crossing it
    /// stops the run (skipping does not cure divergence).
    #[serde(default)]
    pub max_loss: Option<f64>,
    /// Divergence bound on the KL from the reference policy each loop reports (PPO's
    /// rollout KL, GRPO's KL, offline IPS's KL estimate; `null`: none).
    #[serde(default)]
    pub max_kl: Option<f64>,
}

impl GuardConfig {
    /// The checked `guard` section of `config` (defaults when absent).
    pub fn of(config: &Config) -> Result<Self, CoreError> {
        typed_section(config, "guard")
    }
}

impl Ranges for GuardConfig {
    /// `max_loss`, `max_kl`: finite and > 0, or null.
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), CoreError> {
        for (key, bound) in [("max_loss", self.max_loss), ("max_kl", self.max_kl)] {
            if let Some(v) = bound {
                c.satisfies(v.is_finite() && v > 0.0, key, v, "expected a finite bound > 0, or null for none")?;
            }
        }
        Ok(())
    }
}

/// Whether a larger or a smaller value of `checkpoint.best_metric` is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BestMode {
    /// Larger is better (rewards, accuracies).
    #[default]
    Max,
    /// Smaller is better (losses, perplexities).
    Min,
}

/// `checkpoint:`: which of a run's checkpoints are kept.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Keep only the newest this many checkpoints (plus the best by `best_metric`);
    /// `null`: keep every checkpoint.
    #[serde(default)]
    pub save_total_limit: Option<usize>,
    /// A logged metric (`<split>/<name>` of the evaluation lines, e.g. `val/rewards`, or a
    /// training statistic such as `loss`) by which the best checkpoint is also kept.
    #[serde(default)]
    pub best_metric: Option<String>,
    /// Whether larger (`max`) or smaller (`min`) `best_metric` is better.
    #[serde(default)]
    pub best_mode: BestMode,
}

impl CheckpointConfig {
    /// The checked `checkpoint` section of `config` (defaults when absent).
    pub fn of(config: &Config) -> Result<Self, CoreError> {
        typed_section(config, "checkpoint")
    }
}

impl Ranges for CheckpointConfig {
    /// A limit keeps at least one checkpoint; a best metric has a name.
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), CoreError> {
        if let Some(limit) = self.save_total_limit {
            c.satisfies(limit >= 1, "save_total_limit", limit, "expected at least 1 checkpoint, or null for all")?;
        }
        if let Some(name) = &self.best_metric {
            c.satisfies(!name.is_empty(), "best_metric", "\"\"", "expected a logged metric name, or null")?;
        }
        Ok(())
    }
}

/// The section `key` of `config` as `T`, range-checked; `T::default()` when absent.
fn typed_section<T: serde::de::DeserializeOwned + Ranges + Default>(
    config: &Config,
    key: &str,
) -> Result<T, CoreError> {
    match config.optional_section(key) {
        Some(section) if section.node().value != Value::Null => section.extract_checked(),
        _ => Ok(T::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::parse_yaml;

    fn config(yaml: &str) -> Config {
        Config::new(parse_yaml(yaml, std::path::Path::new("config.yaml")).unwrap(), vec![])
    }

    #[test]
    fn absent_sections_guard_nothing_and_keep_everything() {
        let c = config("device: cpu\n");
        assert_eq!(GuardConfig::of(&c).unwrap(), GuardConfig::default());
        assert_eq!(CheckpointConfig::of(&c).unwrap(), CheckpointConfig::default());
        let c = config(
            "guard:\n  skip_nonfinite: 3\n  max_kl: 20.0\ncheckpoint:\n  save_total_limit: 2\n  best_mode: min\n",
        );
        let g = GuardConfig::of(&c).unwrap();
        assert_eq!((g.skip_nonfinite, g.max_loss, g.max_kl), (3, None, Some(20.0)));
        let k = CheckpointConfig::of(&c).unwrap();
        assert_eq!((k.save_total_limit, k.best_mode), (Some(2), BestMode::Min));
    }

    #[test]
    fn bad_values_name_their_key_value_and_line() {
        for (yaml, key, value) in [
            ("guard:\n  max_kl: -1.0\n", "guard.max_kl", "-1.0"),
            ("guard:\n  max_loss: .inf\n", "guard.max_loss", ".inf"),
            ("checkpoint:\n  save_total_limit: 0\n", "checkpoint.save_total_limit", "0"),
        ] {
            let c = config(yaml);
            let err = GuardConfig::of(&c).and_then(|_| CheckpointConfig::of(&c)).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{key}: expected ")), "{err}");
            assert!(err.contains(&format!("found {value}")) && err.contains("config.yaml:2"), "{err}");
        }
        let err = GuardConfig::of(&config("guard:\n  skip_nonfinite: -2\n")).unwrap_err().to_string();
        assert!(err.contains("guard.skip_nonfinite"), "{err}");
    }
}
