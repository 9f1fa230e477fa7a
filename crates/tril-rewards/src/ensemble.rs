//! Reward-model ensemble objectives (Coste et al., "Reward Model Ensembles Help Mitigate
//! Overoptimization", ICLR 2024, <https://arxiv.org/abs/2310.02743>, section 3; the labels
//! (M), (WCO), (UWO) below are tril's, not the paper's equation numbers).
//!
//! K proxy reward models score the same N samples; `scores[k][i]` is member `k`'s score of
//! sample `i` (shape `[K, N]`). Each objective combines the K scores of one sample into one:
//!
//! ```tex
//! (M)   R_{\mathrm{mean}}(q,a) = \frac{1}{K}\sum_{k=1}^{K} R_k(q,a)
//! (WCO) R_{\mathrm{WCO}}(q,a)  = \min_{k} R_k(q,a)
//! (UWO) R_{\mathrm{UWO}}(q,a)  = \frac{1}{K}\sum_{k} R_k(q,a)
//!                                - \lambda \frac{1}{K}\sum_{k}\Big(R_k(q,a) - \frac{1}{K}\sum_{j} R_j(q,a)\Big)^2
//! ```
//!
//! # Variance convention
//! The UWO variance is the **population** variance over members (divide by K, ddof = 0,
//! numpy's default `np.var`, the 1/K in (UWO) above); with K = 1 it is 0. The authors'
//! released code (github.com/tlc4418/llm_optimization) is not consistent here: its
//! best-of-n path (`src/bon/ensemble_rm.py`) uses `np.var` (population), its PPO path
//! (`src/reward_modeling/scoring/ppo_reward_functions.py`) `torch.var(all_scores, dim=0)`,
//! which is the sample variance (divide by K - 1). To reproduce their PPO runs, use
//! `uwo_weight = lambda * K / (K - 1)` (0.125 for K = 5, lambda = 0.1). The paper's own
//! typeset formula was not checked when this was written.
//!
//! # Deviations from the paper
//! - None in the formulas; the spread statistic ([`EnsembleStats::spread`]) is tril's
//!   logging addition.
//!
//! Scores are f64; no input panics. Magnitudes near 1e154 make the squared deviations
//! overflow to infinity (no error is raised for that; scores are checked finite on entry).
//!
//! ```
//! use tril_rewards::ensemble::{combine, EnsembleConfig, EnsembleObjective};
//! let scores = vec![vec![1.0, 0.0], vec![3.0, 0.0]]; // [K=2, N=2]
//! let cfg = EnsembleConfig { objective: EnsembleObjective::Wco, uwo_weight: 0.1 };
//! let (combined, stats) = combine(&scores, &cfg).unwrap();
//! assert_eq!(combined, vec![1.0, 0.0]);
//! assert_eq!(stats.spread, 0.5); // std over members: 1.0 and 0.0, mean over samples
//! ```

use serde::{Deserialize, Serialize};

use crate::RewardError;

/// How K member scores of one sample become one reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsembleObjective {
    /// Mean over members, (M).
    #[default]
    Mean,
    /// Worst-case optimization: minimum over members, (WCO).
    Wco,
    /// Uncertainty-weighted optimization: mean minus `uwo_weight` times the population
    /// variance over members, (UWO).
    Uwo,
}

/// Config of the ensemble combination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnsembleConfig {
    /// Which objective combines the members' scores.
    pub objective: EnsembleObjective,
    /// lambda of UWO (UWO); finite and >= 0. The paper's setting is 0.1.
    pub uwo_weight: f64,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        EnsembleConfig { objective: EnsembleObjective::Mean, uwo_weight: 0.1 }
    }
}

impl EnsembleConfig {
    /// Checks `uwo_weight` is finite and >= 0 (checked for every objective, so a bad value
    /// fails before someone switches to `uwo`).
    pub fn validate(&self) -> Result<(), RewardError> {
        check_weight(self.uwo_weight)
    }
}

/// Statistics of one combination, for logging (`rollout_buffer/rm_spread`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnsembleStats {
    /// Population std over members per sample, averaged over samples (0 when N = 0).
    pub spread: f64,
}

/// Combines `scores` (`[K, N]`) by `cfg.objective` after checking `cfg` and the scores.
///
/// # Shapes
/// `scores`: `[K, N]`, K >= 1, every member of length N. Returns `[N]` and the stats.
pub fn combine(scores: &[Vec<f64>], cfg: &EnsembleConfig) -> Result<(Vec<f64>, EnsembleStats), RewardError> {
    cfg.validate()?;
    let combined = match cfg.objective {
        EnsembleObjective::Mean => mean(scores)?,
        EnsembleObjective::Wco => wco(scores)?,
        EnsembleObjective::Uwo => uwo(scores, cfg.uwo_weight)?,
    };
    let stats = EnsembleStats { spread: spread(scores)? };
    Ok((combined, stats))
}

/// Mean over members, (M). `scores`: `[K, N]` -> `[N]`.
pub fn mean(scores: &[Vec<f64>]) -> Result<Vec<f64>, RewardError> {
    let n = check_scores(scores)?;
    Ok((0..n).map(|i| member_mean(scores, i)).collect())
}

/// Worst case: minimum over members, (WCO). `scores`: `[K, N]` -> `[N]`.
pub fn wco(scores: &[Vec<f64>]) -> Result<Vec<f64>, RewardError> {
    let n = check_scores(scores)?;
    Ok((0..n).map(|i| scores.iter().map(|m| m[i]).fold(f64::INFINITY, f64::min)).collect())
}

/// Uncertainty-weighted: mean minus `uwo_weight` times the population variance over
/// members, (UWO). `scores`: `[K, N]` -> `[N]`.
pub fn uwo(scores: &[Vec<f64>], uwo_weight: f64) -> Result<Vec<f64>, RewardError> {
    check_weight(uwo_weight)?;
    let n = check_scores(scores)?;
    Ok((0..n).map(|i| member_mean(scores, i) - uwo_weight * member_var(scores, i)).collect())
}

/// Population variance over members per sample (divide by K). `[K, N]` -> `[N]`.
pub fn variance(scores: &[Vec<f64>]) -> Result<Vec<f64>, RewardError> {
    let n = check_scores(scores)?;
    Ok((0..n).map(|i| member_var(scores, i)).collect())
}

/// The spread to log: population std over members per sample, mean over samples
/// (`\frac{1}{N}\sum_i \sqrt{\mathrm{Var}_k R_k(q_i, a_i)}`); 0 when N = 0.
pub fn spread(scores: &[Vec<f64>]) -> Result<f64, RewardError> {
    let n = check_scores(scores)?;
    if n == 0 {
        return Ok(0.0);
    }
    let total: f64 = (0..n).map(|i| member_var(scores, i).sqrt()).sum();
    Ok(total / n as f64)
}

/// Mean of column `i` (two-pass helpers, as numpy; callers have checked the shape).
fn member_mean(scores: &[Vec<f64>], i: usize) -> f64 {
    scores.iter().map(|m| m[i]).sum::<f64>() / scores.len() as f64
}

/// Population variance of column `i`: mean first, then mean squared deviation.
fn member_var(scores: &[Vec<f64>], i: usize) -> f64 {
    let mu = member_mean(scores, i);
    scores.iter().map(|m| (m[i] - mu).powi(2)).sum::<f64>() / scores.len() as f64
}

fn check_weight(uwo_weight: f64) -> Result<(), RewardError> {
    if uwo_weight.is_finite() && uwo_weight >= 0.0 {
        Ok(())
    } else {
        Err(RewardError::Config {
            key: "uwo_weight".into(),
            message: format!("must be finite and >= 0, got {uwo_weight}"),
        })
    }
}

/// Checks K >= 1, equal lengths and finite scores; returns N.
fn check_scores(scores: &[Vec<f64>]) -> Result<usize, RewardError> {
    let Some(first) = scores.first() else {
        return Err(RewardError::Empty { what: "ensemble members (K)".into() });
    };
    let n = first.len();
    for (k, member) in scores.iter().enumerate() {
        if member.len() != n {
            return Err(RewardError::Shape {
                what: format!("ensemble scores member {k} (samples, as member 0)"),
                expected: n,
                got: member.len(),
            });
        }
        if let Some((i, &value)) = member.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(RewardError::NonFinite { what: format!("ensemble scores member {k}, sample {i}"), value });
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_lengths_name_the_member() {
        let err = mean(&[vec![1.0, 2.0], vec![1.0]]).unwrap_err();
        assert!(matches!(err, RewardError::Shape { expected: 2, got: 1, .. }), "{err}");
        assert!(err.to_string().contains("member 1"), "{err}");
    }

    #[test]
    fn nan_names_member_and_sample() {
        let err = wco(&[vec![1.0, 2.0], vec![1.0, f64::NAN]]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("member 1, sample 1"), "{msg}");
        assert!(matches!(err, RewardError::NonFinite { .. }));
        let err = spread(&[vec![f64::INFINITY]]).unwrap_err();
        assert!(err.to_string().contains("member 0, sample 0"), "{err}");
    }

    #[test]
    fn bad_weight_is_a_config_error() {
        for w in [-0.1, f64::NAN, f64::INFINITY] {
            let err = uwo(&[vec![1.0]], w).unwrap_err();
            assert!(matches!(&err, RewardError::Config { key, .. } if key == "uwo_weight"), "{err}");
            let cfg = EnsembleConfig { objective: EnsembleObjective::Mean, uwo_weight: w };
            assert!(combine(&[vec![1.0]], &cfg).is_err());
        }
    }

    #[test]
    fn no_members_is_an_error_and_no_samples_is_fine() {
        assert!(matches!(mean(&[]).unwrap_err(), RewardError::Empty { .. }));
        let (out, stats) = combine(&[vec![], vec![]], &EnsembleConfig::default()).unwrap();
        assert!(out.is_empty());
        assert_eq!(stats.spread, 0.0);
    }

    #[test]
    fn single_member_has_zero_variance() {
        let s = [vec![0.5, -2.0]];
        assert_eq!(uwo(&s, 3.0).unwrap(), vec![0.5, -2.0]);
        assert_eq!(wco(&s).unwrap(), vec![0.5, -2.0]);
    }

    #[test]
    fn uwo_uses_population_variance() {
        // np.var([1, 3]) = 1.0 (ddof=0); the sample variance would be 2.0
        let s = [vec![1.0], vec![3.0]];
        assert_eq!(variance(&s).unwrap(), vec![1.0]);
        assert_eq!(uwo(&s, 0.5).unwrap(), vec![1.5]);
    }

    #[test]
    fn config_serde_snake_case_and_defaults() {
        let cfg: EnsembleConfig = serde_json::from_str(r#"{"objective":"uwo"}"#).unwrap();
        assert_eq!(cfg, EnsembleConfig { objective: EnsembleObjective::Uwo, uwo_weight: 0.1 });
        let back: EnsembleConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        assert!(serde_json::from_str::<EnsembleConfig>(r#"{"objective":"WCO"}"#).is_err());
        assert!(serde_json::from_str::<EnsembleConfig>(r#"{"weight":1}"#).is_err());
    }
}
