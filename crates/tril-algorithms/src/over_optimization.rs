//! Reward over-optimization bookkeeping (Gao et al. 2023, "Scaling Laws for Reward Model
//! Overoptimization"; Coste et al. 2024, "Reward Model Ensembles Help Mitigate
//! Overoptimization"): at every evaluation of an on-policy loop, the eval generations are
//! scored by
//! - the **proxy**: the reward the policy is trained against (the root `reward_fn`),
//! - the **gold**: an evaluation-only reward (the root `gold_reward_fn`, optional; `tril
//!   gold-eval` scores a finished run with it afterwards instead),
//!
//! and the **KL from the initial policy** of each generation is estimated from the same
//! tokens:
//!
//! ```tex
//! \widehat{\mathrm{KL}}(y \mid x) = \sum_{t} \big(\log\pi_\theta(y_t \mid x, y_{<t}) - \log\pi_{\mathrm{init}}(y_t \mid x, y_{<t})\big)
//! ```
//!
//! averaged over the split's samples (an unbiased estimate of `KL(pi_theta || pi_init)` when
//! the eval generation samples; with greedy eval settings it is the log-ratio at the greedy
//! completions). Proxy above gold while the KL grows is the over-optimization signature.
//!
//! Keys (per split, in `{split}_split_metrics.jsonl` and the predictions):
//! [`PROXY`], [`GOLD`], [`KL`]. `plots/over_optimization.png` draws proxy and gold versus KL
//! and versus iteration.

use crate::AlgorithmError;
use burn::tensor::backend::Backend;
use std::path::Path;
use tril_core::config::Config;
use tril_core::plot::{plot_panels, Panel, Series};
use tril_core::plugin::{PluginError, RewardFn, Split};
use tril_core::registry;
use tril_core::tracker::Tracker;
use tril_models::causal_lm::CausalLm;

/// Mean proxy (training) reward of the eval generations.
pub const PROXY: &str = "over_optimization/proxy_reward";
/// Mean gold reward of the eval generations.
pub const GOLD: &str = "over_optimization/gold_reward";
/// Mean summed log-ratio to the initial policy of the eval generations.
pub const KL: &str = "over_optimization/kl";

/// What an evaluation scores beyond the metrics (all optional).
pub struct EvalScoring<'a, B: Backend> {
    /// The training reward.
    pub proxy: Option<&'a mut dyn RewardFn>,
    /// The evaluation-only gold reward.
    pub gold: Option<&'a mut dyn RewardFn>,
    /// The initial policy (the frozen reference) for the KL.
    pub reference: Option<&'a CausalLm<B>>,
}

impl<B: Backend> EvalScoring<'_, B> {
    /// Scores nothing.
    pub fn none() -> Self {
        EvalScoring { proxy: None, gold: None, reference: None }
    }
}

/// Builds the root `gold_reward_fn` when the config sets one.
pub fn gold_reward_fn(config: &Config) -> Result<Option<Box<dyn RewardFn>>, PluginError> {
    match config.optional_section("gold_reward_fn") {
        Some(section) if section.node().value != tril_core::config::Value::Null => {
            Ok(Some(registry::build_reward_fn(&section, config)?))
        }
        _ => Ok(None),
    }
}

/// One evaluation of one split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The iteration (0: before training).
    pub iteration: f64,
    /// Mean KL from the initial policy, when measured.
    pub kl: Option<f64>,
    /// Mean proxy reward, when measured.
    pub proxy: Option<f64>,
    /// Mean gold reward, when measured.
    pub gold: Option<f64>,
}

/// The points of `split` a tracker holds, in iteration order.
pub fn points_from_tracker(tracker: &Tracker, split: Split) -> Vec<Point> {
    let key = |k: &str| format!("{}/{k}", split.name());
    let find = |k: &str, it: f64| tracker.history(&key(k)).iter().rev().find(|p| p.0 == it).map(|p| p.1);
    let mut iterations: Vec<f64> =
        [PROXY, GOLD, KL].iter().flat_map(|k| tracker.history(&key(k)).iter().map(|p| p.0)).collect();
    iterations.sort_by(f64::total_cmp);
    iterations.dedup();
    iterations
        .into_iter()
        .map(|it| Point { iteration: it, kl: find(KL, it), proxy: find(PROXY, it), gold: find(GOLD, it) })
        .collect()
}

/// Draws proxy and gold reward versus KL and versus iteration into `path` (a PNG, written
/// atomically); nothing when no point has a reward.
pub fn plot(path: &Path, title: &str, points: &[Point]) -> Result<(), PluginError> {
    let series = |label: &str, x: &dyn Fn(&Point) -> Option<f64>, y: &dyn Fn(&Point) -> Option<f64>| Series {
        label: label.to_string(),
        points: points.iter().filter_map(|p| Some((x(p)?, y(p)?))).collect(),
    };
    let by = |x: &dyn Fn(&Point) -> Option<f64>| -> Vec<Series> {
        [series("proxy", x, &|p| p.proxy), series("gold", x, &|p| p.gold)]
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    let mut panels = Vec::new();
    let vs_kl = by(&|p| p.kl);
    if !vs_kl.is_empty() {
        panels.push(Panel {
            title: format!("{title}: reward vs KL from the initial policy"),
            x_label: "KL (nats)".into(),
            series: vs_kl,
        });
    }
    let vs_step = by(&|p| Some(p.iteration));
    if vs_step.is_empty() {
        return Ok(());
    }
    panels.push(Panel { title: format!("{title}: reward vs iteration"), x_label: "iteration".into(), series: vs_step });
    let kl = series("KL", &|p| Some(p.iteration), &|p| p.kl);
    if !kl.points.is_empty() {
        panels.push(Panel {
            title: format!("{title}: KL from the initial policy"),
            x_label: "iteration".into(),
            series: vec![kl],
        });
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| AlgorithmError::io("creating", dir, e))?;
    }
    Ok(plot_panels(path, &panels)?)
}

/// Redraws `plots/over_optimization.png` of a run from its tracker (the first split with
/// points).
pub fn plot_run(tracker: &Tracker, splits: &[Split]) -> Result<(), PluginError> {
    let Some((split, points)) =
        splits.iter().map(|&s| (s, points_from_tracker(tracker, s))).find(|(_, p)| !p.is_empty())
    else {
        return Ok(());
    };
    plot(&tracker.run_dir().join("plots/over_optimization.png"), split.name(), &points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plots/o.png");
        let points: Vec<Point> = (0..4)
            .map(|i| Point {
                iteration: i as f64,
                kl: Some(i as f64 * 0.5),
                proxy: Some(i as f64),
                gold: (i % 2 == 0).then_some(1.0 - i as f64 * 0.1),
            })
            .collect();
        plot(&path, "val", &points).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
        let empty = dir.path().join("plots/none.png");
        plot(&empty, "val", &[Point { iteration: 1.0, kl: Some(0.1), proxy: None, gold: None }]).unwrap();
        assert!(!empty.exists(), "no reward, no plot");
    }
}
