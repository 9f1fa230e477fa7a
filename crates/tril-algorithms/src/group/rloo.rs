//! RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, "Back to Basics:
//! Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs",
//! <https://arxiv.org/abs/2402.14740>), with the semantics of TRL 1.16's `RLOOTrainer`.
//!
//! This file holds the typed `alg.args` ([`RlooArgs`]) and the pure functions of one RLOO
//! step: the sequence-level KL penalty folded into the rewards ([`rloo_kl_rewards`]), the
//! leave-one-out advantages ([`rloo_advantages`]) and the sequence-level clipped loss
//! ([`rloo_loss`]), and the registration of the `rloo` algorithm: it runs the loop of
//! [`crate::group::group_run`] with these advantages (sequence-level, `[N, 1]`) and this loss.
//!
//! Pipeline, for `N = P k` completions (`k` per prompt, rows `[j k, (j + 1) k)` are prompt
//! `j`'s group):
//! 1. `r_i <- r_i - beta * sum_t (log pi_old - log pi_ref)(o_{i,t})` (k1, summed over the
//!    completion's tokens; [`rloo_kl_rewards`]);
//! 2. `A_i = r_i - (sum_{j in g(i)} r_j - r_i) / (k - 1)`, optionally normalized over the
//!    batch ([`rloo_advantages`]);
//! 3. the clipped surrogate on the sequence-level ratio, averaged over sequences ([`rloo_loss`]).
//!
//! # Logged metrics
//! | key | meaning |
//! |---|---|
//! | `rloo/clip_ratio_low` | fraction of sequences with `r < 1 - eps` and `A < 0` (TRL `clip_ratio/low_mean`) |
//! | `rloo/clip_ratio_high` | fraction with `r > 1 + eps_high` and `A > 0` (TRL `clip_ratio/high_mean`) |
//! | `rloo/clip_ratio` | either of the two (TRL `clip_ratio/region_mean`) |
//! | `rollout/kl` | mean over completions of `sum_t (log pi_old - log pi_ref)` (TRL `kl`); only with `beta > 0` |
//! | `rollout/penalized_reward_mean` | mean of the rewards after the KL penalty; only with `beta > 0` |
//!
//! The loop's own keys (`rloo/loss`, `rloo/entropy`, `rollout/reward_mean`, ...) are listed
//! in [`crate::group::group_run`].
//!
//! # Deviations from TRL
//! - Rewards are not NaN-aware (TRL excludes unscorable completions from the baseline).
//! - No reward clipping (`reward_clip_range`), no auxiliary router loss; the loss is not
//!   divided by the gradient-accumulation steps (the update loop's job).
//! - Shape mismatches are errors ([`AlgorithmError::Training`]), never panics.
//! - Iterations count generation batches (`n_iters`) and the learning rate steps once per
//!   iteration, as in the rest of the group loop ([`crate::group::group_run`]).

use crate::group::grpo::{clipped_surrogate, GrpoStats};
use crate::group::{
    check_loop, group_settings, required, sequence_advantages, Advantages, GroupObjective, GroupSettings, LossStats,
    RolloutBatch,
};
use crate::onpolicy::ppo::KlLogprobs;
use crate::{AlgorithmError, Result};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::ops::{scalar, to_f32};
use tril_core::plugin::Split;
use tril_core::CoreError;

/// RLOO's `alg.args`; defaults are TRL 1.16's `RLOOConfig` (the loop keys as in
/// [`crate::group::grpo::GrpoArgs`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RlooArgs {
    /// Completions sampled per prompt, `k` (TRL: 2; the leave-one-out baseline needs two).
    pub num_generations: usize,
    /// Coefficient of the sequence-level k1 KL penalty subtracted from the reward (TRL: 0.05).
    pub beta: f64,
    /// The policy log-prob of the KL penalty (PPO's key, [`KlLogprobs`]): `sampled` (tril's
    /// default) the log-prob under the distribution each token was drawn from when the
    /// generation settings truncate it (`top_k`, `top_p`, `min_length`), `model` the plain
    /// log-prob at `temperature` (TRL). The two agree without truncation.
    pub kl_logprobs: KlLogprobs,
    /// Lower clip range of the sequence ratio: clipped below at `1 - epsilon` (TRL: 0.2).
    pub epsilon: f64,
    /// Upper clip range, `1 + epsilon_high`; null: `epsilon` (TRL: null).
    pub epsilon_high: Option<f64>,
    /// Whiten the advantages over the whole batch, `(A - mean) / (std + 1e-4)` (TRL: false).
    pub normalize_advantages: bool,
    /// Micro-batches of `batch_size` per generation batch; null: `grad_accumulation`, i.e.
    /// one optimizer step per generation (TRL).
    pub steps_per_generation: Option<usize>,
    /// Updates per generation batch (TRL `num_iterations`: 1, exactly on-policy).
    pub num_iterations: usize,
    /// Sampling temperature; log-probs are recomputed at the same temperature (TRL: 1.0).
    pub temperature: f64,
    /// Maximum generated tokens (TRL: 256).
    pub max_completion_length: usize,
    /// Seed of every RNG of the run: model initialisation, prompt order and sampling.
    pub seed: u64,
    /// Iterations; each generates one batch and trains on it (TRL counts `max_steps`).
    pub n_iters: usize,
    /// Completions per forward/backward pass (TRL `per_device_train_batch_size`: 8).
    pub batch_size: usize,
    /// Micro-batches per optimizer step (TRL `gradient_accumulation_steps`: 1).
    pub grad_accumulation: usize,
    /// Global gradient-norm clip (TRL `max_grad_norm`: 1.0).
    pub max_grad_norm: f64,
    /// Prompts per evaluation `generate` call.
    pub eval_batch_size: usize,
    /// Evaluate every this many iterations (and after the last).
    pub eval_every: usize,
    /// Checkpoint every this many iterations when `save_checkpoints` (the last always is).
    pub save_every: usize,
    /// Evaluate before training.
    pub eval_zero_shot: bool,
    /// Write periodic checkpoints.
    pub save_checkpoints: bool,
    /// Splits evaluated.
    pub eval_splits: Vec<Split>,
}

impl Default for RlooArgs {
    fn default() -> Self {
        RlooArgs {
            num_generations: 2,
            beta: 0.05,
            kl_logprobs: KlLogprobs::Sampled,
            epsilon: 0.2,
            epsilon_high: None,
            normalize_advantages: false,
            steps_per_generation: None,
            num_iterations: 1,
            temperature: 1.0,
            max_completion_length: 256,
            seed: 0,
            n_iters: 100,
            batch_size: 8,
            grad_accumulation: 1,
            max_grad_norm: 1.0,
            eval_batch_size: 64,
            eval_every: 10,
            save_every: 100,
            eval_zero_shot: true,
            save_checkpoints: false,
            eval_splits: vec![Split::Val],
        }
    }
}

impl Ranges for RlooArgs {
    /// `num_generations` >= 2 (the leave-one-out baseline needs two), `beta` finite and >= 0,
    /// `epsilon` in (0, 1), `epsilon_high` > 0, then the loop keys ([`check_loop`]).
    fn check_ranges(&self, c: &Checker<'_>) -> std::result::Result<(), CoreError> {
        c.ensure(self.num_generations >= 2, "num_generations", "expected at least 2 completions per prompt")?;
        c.ensure(self.beta.is_finite() && self.beta >= 0.0, "beta", "expected a finite coefficient ≥ 0")?;
        c.ensure(self.epsilon > 0.0 && self.epsilon < 1.0, "epsilon", "expected a clip range in (0, 1)")?;
        let high_ok = self.epsilon_high.is_none_or(|e| e.is_finite() && e > 0.0);
        c.ensure(high_ok, "epsilon_high", "expected a finite clip range > 0")?;
        check_loop(c.section(), &self.settings())
    }
}

impl RlooArgs {
    /// Deserializes and range-checks `alg.args` ([`Ranges`]); errors name the key, value and file.
    pub fn extract(section: &Section<'_>) -> std::result::Result<Self, CoreError> {
        section.extract_checked()
    }

    /// The upper clip range (`epsilon_high`, or `epsilon` when unset).
    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }
}

/// A shape error of the pure functions.
pub(crate) fn shape_error(what: &str, message: String) -> AlgorithmError {
    AlgorithmError::Training { algorithm: what.to_string(), message }
}

/// Checks that every `[N, T]` input has the dims of the first and `N` rows.
pub(crate) fn check_2d(fn_name: &str, n: usize, inputs: &[(&str, [usize; 2])]) -> Result<()> {
    let Some(&(_, want)) = inputs.first() else { return Ok(()) };
    for (name, dims) in inputs {
        if *dims != want || dims[0] != n {
            return Err(shape_error(
                fn_name,
                format!("{name} has dims {dims:?}, expected [{n}, {}] (as {})", want[1], inputs[0].0),
            ));
        }
    }
    Ok(())
}

/// Sequence-level KL penalty folded into the rewards (TRL `RLOOTrainer`, the k1 estimate of
/// the RLOO paper, section 3):
///
/// ```tex
/// \tilde r_i = r_i - \beta \sum_t m_{i,t}\,\big(\log\pi_{old}(o_{i,t}) - \log\pi_{ref}(o_{i,t})\big)
/// ```
///
/// `beta = 0` returns the rewards unchanged (TRL loads no reference then).
///
/// # Shapes
/// `rewards`: `[N]`, `old_logprobs`, `ref_logprobs`, `mask`: `[N, T]` -> `[N]`
///
/// # Errors
/// When the dims disagree.
pub fn rloo_kl_rewards<B: Backend>(
    rewards: Tensor<B, 1>,
    old_logprobs: Tensor<B, 2>,
    ref_logprobs: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    beta: f64,
) -> Result<Tensor<B, 1>> {
    let [n] = rewards.dims();
    let dims = [("old_logprobs", old_logprobs.dims()), ("ref_logprobs", ref_logprobs.dims()), ("mask", mask.dims())];
    check_2d("rloo_kl_rewards", n, &dims)?;
    let rewards = to_f32(rewards);
    if beta == 0.0 {
        return Ok(rewards);
    }
    let per_token_kl = to_f32(old_logprobs) - to_f32(ref_logprobs); // [N, T]
    let kl = (per_token_kl * to_f32(mask)).sum_dim(1).reshape([n]); // [N]
    Ok(rewards - kl * beta)
}

/// Leave-one-out advantages (RLOO paper, eq. 7; TRL `RLOOTrainer`):
///
/// ```tex
/// \hat A_i = r_i - \frac{1}{k-1}\sum_{j \in g(i),\, j \ne i} r_j
///          = r_i - \frac{\sum_{j \in g(i)} r_j - r_i}{k-1}
/// ```
///
/// With `normalize`, `A <- (A - mean(A)) / (std(A) + 1e-4)` over all `N` rows (unbiased
/// std, as `torch.std`; 0 for one row). `k = 1` gives zero advantages (TRL's eval case).
/// Tied groups get zero advantages.
///
/// # Shapes
/// `rewards`: `[N]` with `N = P k` -> `[N]`
///
/// # Errors
/// When `k` is 0 or does not divide `N`.
pub fn rloo_advantages<B: Backend>(rewards: Tensor<B, 1>, k: usize, normalize: bool) -> Result<Tensor<B, 1>> {
    let rewards = to_f32(rewards);
    let [n] = rewards.dims();
    if k == 0 || !n.is_multiple_of(k) {
        return Err(shape_error("rloo_advantages", format!("{n} rewards are not whole groups of k = {k}")));
    }
    if k == 1 {
        return Ok(rewards.zeros_like());
    }
    let grouped = rewards.clone().reshape([n / k, k]); // [P, k]
    let grouped_sum = grouped.clone().sum_dim(1); // [P, 1]
    let baselines = (grouped_sum - grouped.clone()) / (k - 1) as f64; // [P, k]
    let advantages = (grouped - baselines).reshape([n]); // [N]
    if !normalize {
        return Ok(advantages);
    }
    let mean = advantages.clone().mean(); // [1]
    let std = if n > 1 { advantages.clone().var(0).sqrt() } else { mean.zeros_like() }; // [1]
    Ok((advantages - mean.expand([n])) / (std + 1e-4).expand([n]))
}

/// The RLOO loss of TRL's `RLOOTrainer`: the clipped surrogate on the sequence-level ratio,
/// averaged over sequences (the REINFORCE estimator of the RLOO paper, eq. 6, made
/// off-policy-safe by PPO's clip):
///
/// ```tex
/// \rho_i = \exp\Big(\sum_t m_{i,t}\big(\log\pi_\theta(o_{i,t}) - \log\pi_{old}(o_{i,t})\big)\Big), \qquad
/// L = \frac1N\sum_i -\min\big(\rho_i \hat A_i,\ \operatorname{clip}(\rho_i, 1-\epsilon, 1+\epsilon_{high})\hat A_i\big)
/// ```
///
/// With `new = old` (one on-policy step) the gradient is REINFORCE's `-A_i grad log pi(o_i)`.
/// The stats are plain means over sequences (TRL's `clip_ratio/*_mean`); `kl_mean` is `None`
/// (the KL is in the reward, [`rloo_kl_rewards`]).
///
/// # Shapes
/// `new_logprobs`, `old_logprobs`, `mask`: `[N, T]`; `advantages`: `[N]` -> loss `[1]`
///
/// # Errors
/// When the dims disagree.
///
/// # Deviations from the paper
/// - The paper's loss is the unclipped REINFORCE estimator; TRL (and this) clip the
///   sequence ratio, which changes nothing on-policy.
pub fn rloo_loss<B: Backend>(
    new_logprobs: Tensor<B, 2>,
    old_logprobs: Tensor<B, 2>,
    advantages: Tensor<B, 1>,
    mask: Tensor<B, 2>,
    args: &RlooArgs,
) -> Result<(Tensor<B, 1>, GrpoStats<B>)> {
    let [n] = advantages.dims();
    check_2d(
        "rloo_loss",
        n,
        &[("new_logprobs", new_logprobs.dims()), ("old_logprobs", old_logprobs.dims()), ("mask", mask.dims())],
    )?;
    let mask = to_f32(mask);
    let logps = (to_f32(new_logprobs) * mask.clone()).sum_dim(1); // [N, 1]
    let old_logps = (to_f32(old_logprobs) * mask.clone()).sum_dim(1); // [N, 1]
    let coef = (logps - old_logps).exp(); // [N, 1]
    let (per_sequence_loss, stats) =
        clipped_surrogate(coef, to_f32(advantages), mask, args.epsilon, args.epsilon_high()); // [N, 1]
    Ok((per_sequence_loss.mean(), stats))
}

impl GroupObjective for RlooArgs {
    const ID: &'static str = "rloo";

    fn extract(section: &Section<'_>) -> std::result::Result<Self, CoreError> {
        RlooArgs::extract(section)
    }

    /// The KL is folded into the reward from the generation-time log-probs, so those are
    /// computed even on-policy when `beta > 0`; the loss is a per-micro-batch mean.
    fn settings(&self) -> GroupSettings {
        group_settings!(
            self,
            kl_coef: self.beta,
            loss_per_step: false,
            generation_logprobs: self.beta > 0.0,
            kl_logprobs: self.kl_logprobs,
        )
    }

    /// [`rloo_kl_rewards`] (with `beta > 0`), then [`rloo_advantages`] over groups of
    /// `group_size`; sequence-level.
    ///
    /// # Shapes
    /// `rewards`: `[N]`; `kl_logprobs`, `ref_logprobs`, `mask`: `[N, T]` -> `[N, 1]`
    fn advantages<B: Backend>(&self, batch: RolloutBatch<B>) -> Result<Advantages<B>> {
        let [n] = batch.rewards.dims();
        let mut stats = Vec::new();
        let rewards = if self.beta > 0.0 {
            let old_logprobs = required("rloo", batch.kl_logprobs, "generation-time log-probs")?; // [N, T]
            let ref_logprobs = required("rloo", batch.ref_logprobs, "reference log-probs")?; // [N, T]
            let rewards = rloo_kl_rewards(
                batch.rewards,
                old_logprobs.clone(),
                ref_logprobs.clone(),
                batch.mask.clone(),
                self.beta,
            )?; // [N]
            let kl = ((to_f32(old_logprobs) - to_f32(ref_logprobs)) * to_f32(batch.mask)).sum_dim(1); // [N, 1]
            stats.push(("kl", scalar(kl.mean())));
            stats.push(("penalized_reward_mean", scalar(rewards.clone().mean())));
            rewards
        } else {
            batch.rewards
        };
        let advantages = rloo_advantages(rewards, batch.group_size, self.normalize_advantages)?; // [N]
        Ok(Advantages { advantages: advantages.reshape([n, 1]), stats })
    }

    /// [`rloo_loss`] on the micro-batch (`ref_logprobs` and `num_items_in_batch` unused: the
    /// KL is in the reward and the loss is a mean over sequences).
    fn loss<B: Backend>(
        &self,
        new_logprobs: Tensor<B, 2>,
        old_logprobs: Tensor<B, 2>,
        _ref_logprobs: Option<Tensor<B, 2>>,
        advantages: Tensor<B, 2>,
        mask: Tensor<B, 2>,
        _num_items_in_batch: Option<f64>,
    ) -> Result<(Tensor<B, 1>, LossStats<B>)> {
        let advantages = sequence_advantages("rloo", advantages, mask.dims())?; // [N]
        let (loss, stats) = rloo_loss(new_logprobs, old_logprobs, advantages, mask, self)?;
        Ok((loss, stats.into()))
    }
}

tril_core::register!(algorithm,
    id: "rloo",
    doc: "RLOO: k sampled completions per prompt, leave-one-out baseline, sequence KL in the reward, clipped sequence ratio (TRL's RLOOTrainer).",
    config: RlooArgs,
    build: crate::group::group_run::build::<RlooArgs>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{t1, t2, Cpu};

    fn v(x: Tensor<Cpu, 1>) -> Vec<f64> {
        x.into_data().to_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
    }

    /// Naive leave-one-out loops (the second implementation).
    #[test]
    fn advantages_match_naive_loops() {
        let r = [1.0, 0.0, 0.5, 0.25, 3.0, 3.0, 3.0, 3.0];
        let got = v(rloo_advantages(t1(&r), 4, false).unwrap());
        for (i, a) in got.iter().enumerate() {
            let g = &r[i / 4 * 4..i / 4 * 4 + 4];
            let others: f64 = g.iter().sum::<f64>() - r[i];
            assert!((a - (r[i] - others / 3.0)).abs() < 1e-6, "{got:?}");
        }
        assert!(got[4..].iter().all(|&a| a == 0.0));
        assert_eq!(v(rloo_advantages(t1(&[2.0, 5.0]), 1, true).unwrap()), vec![0.0, 0.0]);
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let err = rloo_advantages(t1(&[0.0; 7]), 4, false).unwrap_err().to_string();
        assert!(err.contains("7 rewards are not whole groups of k = 4"), "{err}");
        assert!(rloo_advantages(t1(&[0.0; 2]), 0, false).is_err());
        let err = rloo_kl_rewards(t1(&[0.0; 2]), t2(&[0.0; 6], 2), t2(&[0.0; 4], 2), t2(&[0.0; 6], 2), 0.1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ref_logprobs has dims [2, 2], expected [2, 3]"), "{err}");
        assert!(rloo_loss(t2(&[0.0; 6], 3), t2(&[0.0; 6], 3), t1(&[0.0; 2]), t2(&[0.0; 6], 3), &RlooArgs::default())
            .is_err());
    }

    const OLD: [f64; 12] = [-1.0, -0.5, -2.0, -0.3, -1.1, -0.7, -0.2, -0.9, -1.4, -2.2, -0.6, -0.1];
    const REF: [f64; 12] = [-1.2, -0.4, -2.5, -0.3, -1.0, -0.9, -0.6, -0.9, -1.0, -2.0, -0.8, -0.3];
    const MASK: [f64; 12] = [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
    const REWARDS: [f64; 4] = [1.0, 0.25, -0.5, 2.0];

    fn batch(old: Option<&[f64]>, reference: Option<&[f64]>) -> RolloutBatch<Cpu> {
        RolloutBatch {
            rewards: t1(&REWARDS),
            old_logprobs: old.map(|x| t2(x, 4)),
            kl_logprobs: old.map(|x| t2(x, 4)),
            ref_logprobs: reference.map(|x| t2(x, 4)),
            mask: t2(&MASK, 4),
            group_size: 2,
        }
    }

    /// The loop's advantages (the [`GroupObjective`] hook) equal the pure functions on a
    /// hand batch, sequence-level `[N, 1]`, and the logged KL is the mean summed k1.
    #[test]
    fn loop_advantages_equal_the_pure_functions() {
        for normalize in [false, true] {
            let args = RlooArgs { beta: 0.1, normalize_advantages: normalize, ..Default::default() };
            let got = args.advantages(batch(Some(&OLD), Some(&REF))).unwrap();
            assert_eq!(got.advantages.dims(), [4, 1]);
            let rewards = rloo_kl_rewards(t1(&REWARDS), t2(&OLD, 4), t2(&REF, 4), t2(&MASK, 4), 0.1).unwrap();
            let want = v(rloo_advantages(rewards, 2, normalize).unwrap());
            let got_v = v(got.advantages.reshape([4]));
            assert!(got_v.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6), "{got_v:?} vs {want:?}");
            // Summed masked k1 per row: 0.1, 0.1, 0.4, 0.2 -> mean 0.2.
            let stats: std::collections::BTreeMap<_, _> = got.stats.into_iter().collect();
            assert!((stats["kl"] - 0.2).abs() < 1e-6, "{stats:?}");
            assert!((stats["penalized_reward_mean"] - (0.6875 - 0.1 * 0.2)).abs() < 1e-6, "{stats:?}");
        }
        // beta 0: no log-probs needed, the raw rewards' leave-one-out advantages, no stats.
        let args = RlooArgs { beta: 0.0, ..Default::default() };
        let got = args.advantages(batch(None, None)).unwrap();
        assert_eq!(v(got.advantages.reshape([4])), vec![0.75, -0.75, -2.5, 2.5]);
        assert!(got.stats.is_empty());
        assert!(!args.settings().generation_logprobs && !args.settings().needs_reference());
        assert!(RlooArgs::default().settings().generation_logprobs && RlooArgs::default().settings().needs_reference());
    }

    #[test]
    fn loop_errors_instead_of_panicking() {
        let err = RlooArgs::default().advantages(batch(Some(&OLD), None)).unwrap_err().to_string();
        assert!(err.contains("reference log-probs"), "{err}");
        // Token-level advantages are not RLOO's.
        let err = RlooArgs::default()
            .loss(t2(&OLD, 4), t2(&OLD, 4), None, t2(&OLD, 4), t2(&MASK, 4), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected sequence-level [4, 1]"), "{err}");
        // On-policy the loss is -mean(A) (ratio 1, nothing clipped).
        let (loss, stats) = RlooArgs::default()
            .loss(t2(&OLD, 4), t2(&OLD, 4), None, t2(&[0.5, -1.0, 2.0, 0.5], 4), t2(&MASK, 4), None)
            .unwrap();
        assert!((loss.into_scalar() as f64 + 0.5).abs() < 1e-6);
        let names: Vec<_> = stats.values.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["clip_ratio", "clip_ratio_low", "clip_ratio_high"]);
        assert!(stats.kl.is_none());
    }

    #[test]
    fn args_defaults_and_checks() {
        let node =
            tril_core::config::parse_yaml("epsilon_high: 0.28\n", std::path::Path::new("alg/rloo.yaml")).unwrap();
        let args = RlooArgs::extract(&Section::new("alg.args", &node)).unwrap();
        assert_eq!((args.num_generations, args.beta, args.epsilon_high()), (2, 0.05, 0.28));
        let node =
            tril_core::config::parse_yaml("num_generations: 1\n", std::path::Path::new("alg/rloo.yaml")).unwrap();
        let err = RlooArgs::extract(&Section::new("alg.args", &node)).unwrap_err().to_string();
        assert!(err.contains("alg.args.num_generations"), "{err}");
        let node = tril_core::config::parse_yaml("kl_coef: 0.1\n", std::path::Path::new("alg/rloo.yaml")).unwrap();
        assert!(RlooArgs::extract(&Section::new("alg.args", &node)).is_err());
        let node = tril_core::config::parse_yaml("eval_every: 0\n", std::path::Path::new("alg/rloo.yaml")).unwrap();
        let err = RlooArgs::extract(&Section::new("alg.args", &node)).unwrap_err().to_string();
        assert!(err.contains("alg.args.eval_every"), "{err}");
    }
}
