//! REINFORCE++ (Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning Large
//! Language Models", <https://arxiv.org/abs/2501.03262>), with the semantics of OpenRLHF
//! 0.11's experience maker (`advantage.estimator: reinforce` / `reinforce_baseline`) and
//! `PolicyLoss`.
//!
//! This file holds the typed `alg.args` ([`ReinforcePpArgs`]), the pure functions of one
//! REINFORCE++ step and the registration of the `reinforce_pp` algorithm: it runs the loop of
//! [`crate::group::group_run`] with the token-level advantages of steps 1-5, whitened over
//! all valid tokens of the iteration's whole batch, and the loss of step 6.
//!
//! Pipeline, for `N` completions of at most `T` tokens:
//! 1. per-token KL of the rollout policy to the reference, OpenRLHF's `compute_approx_kl`
//!    ([`approx_kl`], k1/k2/k3);
//! 2. (`reinforce_baseline` only) `r_i <- r_i - mean_{g(i)} r` over the prompt's group;
//! 3. per-token rewards: `r_i` at the last valid token, `-kl_coef * kl` at every token
//!    ([`token_rewards`], OpenRLHF's `compute_reward`);
//! 4. returns `G_t = sum_{s >= t} gamma^{s-t} r_s` ([`cumulative_returns`]);
//! 5. global batch whitening over all valid tokens ([`whiten_advantages`]);
//! 6. PPO-clip loss, token mean over the batch ([`reinforce_pp_loss`]).
//!
//! # Logged metrics
//! | key | meaning |
//! |---|---|
//! | `reinforce_pp/clip_ratio` | masked fraction of tokens where the clipped term is the smaller (OpenRLHF `ppo_clip_ratio`) |
//! | `reinforce_pp/ppo_kl` | masked mean of `log pi_old - log pi_theta` (OpenRLHF `ppo_kl`) |
//! | `rollout/kl` | masked mean of the per-token [`approx_kl`] of the rollout policy to the reference (OpenRLHF `kl`); only with `kl_coef > 0` |
//!
//! The loop's own keys (`reinforce_pp/loss`, `reinforce_pp/entropy`, `rollout/reward_mean`,
//! ...) are listed in [`crate::group::group_run`].
//!
//! # Deviations from OpenRLHF
//! - No dual clip, GSPO ratio, vLLM importance-sampling correction, length penalties or
//!   reward clipping; no adaptive KL controller (`kl_coef` is fixed).
//! - With no valid token in the batch the whitening divides by 1 instead of 0 (OpenRLHF: NaN).
//! - OpenRLHF resets `gamma` to 1 with a warning for `reinforce_baseline`; here that
//!   combination is a config error ([`Ranges`]), and the functions use `gamma = 1` for it.
//! - Shape mismatches are errors ([`AlgorithmError::Training`]), never panics.
//! - The loop is TRL-shaped ([`crate::group::group_run`]): `batch_size` x
//!   `steps_per_generation` completions per iteration (OpenRLHF: `rollout_batch_size` x
//!   `n_samples_per_prompt`), one optimizer step per `grad_accumulation` micro-batches,
//!   `num_iterations` passes (OpenRLHF `max_epochs`); the learning rate steps once per iteration.
//!
//! [`AlgorithmError::Training`]: crate::AlgorithmError::Training

use crate::group::rloo::{check_2d, shape_error};
use crate::group::{check_loop, group_settings, required, Advantages, GroupObjective, GroupSettings};
use crate::group::{LossStats, RolloutBatch};
use crate::onpolicy::ppo::KlLogprobs;
use crate::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::ops::{masked_mean, scalar, to_f32, KlEstimator};
use tril_core::plugin::Split;
use tril_core::CoreError;

/// Which REINFORCE++ advantage estimator (OpenRLHF's `advantage.estimator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageEstimator {
    /// REINFORCE++: raw rewards, discounted returns, global whitening.
    Reinforce,
    /// REINFORCE++-baseline: the group mean reward is subtracted first (`gamma` is 1).
    ReinforceBaseline,
}

/// REINFORCE++'s `alg.args`; defaults are OpenRLHF 0.11's CLI defaults (the loop keys as in
/// [`crate::group::grpo::GrpoArgs`], with OpenRLHF's values where it has one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReinforcePpArgs {
    /// Advantage estimator (OpenRLHF: `gae`; here `reinforce`, the REINFORCE++ paper's).
    pub advantage_estimator: AdvantageEstimator,
    /// Completions per prompt (OpenRLHF `n_samples_per_prompt`: 1; `reinforce_baseline` needs 2).
    pub num_generations: usize,
    /// Coefficient of the per-token KL reward penalty (OpenRLHF `kl.init_coef`: 0.01).
    pub kl_coef: f64,
    /// KL estimator of the penalty (OpenRLHF `kl.estimator`: k1).
    pub kl_estimator: KlEstimator,
    /// The policy log-prob of the KL penalty (PPO's key, [`KlLogprobs`]): `sampled` (tril's
    /// default) the log-prob under the distribution each token was drawn from when the
    /// generation settings truncate it (`top_k`, `top_p`, `min_length`), `model` the plain
    /// log-prob at `temperature` (OpenRLHF). The two agree without truncation.
    pub kl_logprobs: KlLogprobs,
    /// Discount of the returns (OpenRLHF `advantage.gamma`: 1).
    pub gamma: f64,
    /// Lower clip range of the token ratio (OpenRLHF `actor.eps_clip`: 0.2).
    pub eps_clip: f64,
    /// Upper clip range; null: `eps_clip` (OpenRLHF `actor.eps_clip_low_high`).
    pub eps_clip_high: Option<f64>,
    /// Divide the advantages by their batch std (OpenRLHF: `not advantage.no_std_norm`, true).
    pub std_norm: bool,
    /// Micro-batches of `batch_size` per generation batch; null: `grad_accumulation`, one
    /// optimizer step per generation (OpenRLHF: `rollout_batch_size * n_samples_per_prompt /
    /// micro_train_batch_size`, several optimizer steps per rollout).
    pub steps_per_generation: Option<usize>,
    /// Passes over each generation batch (OpenRLHF `max_epochs`: 1).
    pub num_iterations: usize,
    /// Sampling temperature; log-probs are recomputed at the same temperature (OpenRLHF: 1.0).
    pub temperature: f64,
    /// Maximum generated tokens (OpenRLHF `generate_max_len`: 1024).
    pub max_completion_length: usize,
    /// Seed of every RNG of the run: model initialisation, prompt order and sampling.
    pub seed: u64,
    /// Iterations; each generates one batch and trains on it (OpenRLHF counts episodes).
    pub n_iters: usize,
    /// Completions per forward/backward pass (OpenRLHF `micro_train_batch_size`: 8).
    pub batch_size: usize,
    /// Micro-batches per optimizer step (OpenRLHF `train_batch_size / micro_train_batch_size`:
    /// 128 / 8 = 16).
    pub grad_accumulation: usize,
    /// Global gradient-norm clip (OpenRLHF `max_norm`: 1.0).
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

impl Default for ReinforcePpArgs {
    fn default() -> Self {
        ReinforcePpArgs {
            advantage_estimator: AdvantageEstimator::Reinforce,
            num_generations: 1,
            kl_coef: 0.01,
            kl_estimator: KlEstimator::K1,
            kl_logprobs: KlLogprobs::Sampled,
            gamma: 1.0,
            eps_clip: 0.2,
            eps_clip_high: None,
            std_norm: true,
            steps_per_generation: None,
            num_iterations: 1,
            temperature: 1.0,
            max_completion_length: 1024,
            seed: 0,
            n_iters: 100,
            batch_size: 8,
            grad_accumulation: 16,
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

impl Ranges for ReinforcePpArgs {
    /// `num_generations` >= 1 (>= 2 with a baseline), `kl_coef` finite >= 0, `gamma` in
    /// (0, 1] (1 with a baseline), `eps_clip` in (0, 1), `eps_clip_high` > 0, then the loop
    /// keys ([`check_loop`]).
    fn check_ranges(&self, c: &Checker<'_>) -> std::result::Result<(), CoreError> {
        let baseline = self.advantage_estimator == AdvantageEstimator::ReinforceBaseline;
        let min_g = if baseline { 2 } else { 1 };
        c.ensure(self.num_generations >= min_g, "num_generations", "expected at least 1 (2 with reinforce_baseline)")?;
        c.ensure(self.kl_coef.is_finite() && self.kl_coef >= 0.0, "kl_coef", "expected a finite coefficient ≥ 0")?;
        c.ensure(self.gamma > 0.0 && self.gamma <= 1.0, "gamma", "expected a discount in (0, 1]")?;
        c.ensure(!baseline || self.gamma == 1.0, "gamma", "expected 1 with reinforce_baseline (as OpenRLHF)")?;
        c.ensure(self.eps_clip > 0.0 && self.eps_clip < 1.0, "eps_clip", "expected a clip range in (0, 1)")?;
        let high_ok = self.eps_clip_high.is_none_or(|e| e.is_finite() && e > 0.0);
        c.ensure(high_ok, "eps_clip_high", "expected a finite clip range > 0")?;
        check_loop(c.section(), &self.settings())
    }
}

impl ReinforcePpArgs {
    /// Deserializes and range-checks `alg.args` ([`Ranges`]); errors name the key, value and file.
    pub fn extract(section: &Section<'_>) -> std::result::Result<Self, CoreError> {
        section.extract_checked()
    }

    /// The upper clip range (`eps_clip_high`, or `eps_clip` when unset).
    pub fn eps_clip_high(&self) -> f64 {
        self.eps_clip_high.unwrap_or(self.eps_clip)
    }
}

/// Per-token KL estimate of OpenRLHF's `compute_approx_kl` (Schulman's k1/k2/k3), with its
/// clamps: the log-ratio is clamped below at -10 for k3, every value into `[-10, 10]`.
///
/// ```tex
/// \delta = \log\pi - \log\pi_{ref}, \quad k_1 = \delta, \quad k_2 = \tfrac12\delta^2, \quad
/// k_3 = e^{-\delta} - 1 + \delta
/// ```
///
/// # Shapes
/// `logprobs`, `ref_logprobs`: `[N, T]` -> `[N, T]`
///
/// # Errors
/// When the dims disagree.
pub fn approx_kl<B: Backend>(
    logprobs: Tensor<B, 2>,
    ref_logprobs: Tensor<B, 2>,
    estimator: KlEstimator,
) -> Result<Tensor<B, 2>> {
    let [n, _] = logprobs.dims();
    check_2d("approx_kl", n, &[("logprobs", logprobs.dims()), ("ref_logprobs", ref_logprobs.dims())])?;
    let log_ratio = to_f32(logprobs) - to_f32(ref_logprobs); // [N, T]
    let value = match estimator {
        KlEstimator::K1 => log_ratio,
        KlEstimator::K2 => log_ratio.powi_scalar(2) / 2.0,
        KlEstimator::K3 => {
            let lr = log_ratio.clamp_min(-10.0); // [N, T]
            lr.clone().neg().exp() - 1.0 + lr
        }
    };
    Ok(value.clamp(-10.0, 10.0))
}

/// Per-token rewards of REINFORCE++ (paper, eq. 3; OpenRLHF `compute_reward`): the sequence
/// reward at the last valid token and the KL penalty at every token, masked:
///
/// ```tex
/// r_{i,t} = \big(\mathbb 1[t = \mathrm{last}_i]\, r_i - \beta\, \mathrm{kl}_{i,t}\big)\, m_{i,t}
/// ```
///
/// A negative `kl_coef` counts as 0 (OpenRLHF). A row without a valid token gets zeros.
///
/// # Shapes
/// `rewards`: `[N]`, `kl`, `mask`: `[N, T]` -> `[N, T]`
///
/// # Errors
/// When the dims disagree.
pub fn token_rewards<B: Backend>(
    rewards: Tensor<B, 1>,
    kl: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    kl_coef: f64,
) -> Result<Tensor<B, 2>> {
    let [n] = rewards.dims();
    check_2d("token_rewards", n, &[("kl", kl.dims()), ("mask", mask.dims())])?;
    let [_, t] = mask.dims();
    let device = mask.device();
    let mask = to_f32(mask);
    let positions = Tensor::<B, 1, Int>::arange(1..t as i64 + 1, &device).float().reshape([1, t]).expand([n, t]); // [N, T]
    let valid = mask.clone().greater_elem(0.5).float(); // [N, T]
    let last = (valid * positions.clone()).max_dim(1); // [N, 1], 1-based, 0 when none
    let is_last = positions.equal(last.expand([n, t])).float(); // [N, T]
    let last_reward = is_last * to_f32(rewards).reshape([n, 1]); // [N, T]
    let kl_reward = to_f32(kl) * -kl_coef.max(0.0); // [N, T]
    Ok((last_reward + kl_reward) * mask)
}

/// Discounted returns (REINFORCE++ paper, eq. 4; OpenRLHF `get_cumulative_returns`), as one
/// matmul with the discount matrix `D[s, t] = gamma^{s - t}` for `s >= t`:
///
/// ```tex
/// G_{i,t} = \sum_{s \ge t} \gamma^{s-t}\, m_{i,s}\, r_{i,s}
/// ```
///
/// # Shapes
/// `rewards`, `mask`: `[N, T]` -> `[N, T]`
///
/// # Errors
/// When the dims disagree.
pub fn cumulative_returns<B: Backend>(rewards: Tensor<B, 2>, mask: Tensor<B, 2>, gamma: f64) -> Result<Tensor<B, 2>> {
    let [n, t] = rewards.dims();
    check_2d("cumulative_returns", n, &[("rewards", rewards.dims()), ("mask", mask.dims())])?;
    let mut discount = vec![0f32; t * t];
    for s in 0..t {
        for u in 0..=s {
            discount[s * t + u] = gamma.powi((s - u) as i32) as f32;
        }
    }
    let discount = Tensor::<B, 2>::from_data(TensorData::new(discount, [t, t]), &rewards.device()); // [T, T]
    Ok((to_f32(rewards) * to_f32(mask)).matmul(discount))
}

/// Global batch normalization of the advantages (REINFORCE++ paper, eq. 5; OpenRLHF's
/// whitening over all experiences), over the valid tokens of the whole batch:
///
/// ```tex
/// \mu = \frac{\sum m A}{\sum m}, \quad \sigma^2 = \frac{\sum m (A - \mu)^2}{\sum m}, \quad
/// A \leftarrow (A - \mu)\, \max(\sigma^2, 10^{-8})^{-1/2}
/// ```
///
/// Without `std_norm` only the mean is subtracted. Padded positions are shifted and scaled
/// too (they are masked out of the loss).
///
/// # Shapes
/// `advantages`, `mask`: `[N, T]` -> `[N, T]`
///
/// # Errors
/// When the dims disagree.
pub fn whiten_advantages<B: Backend>(
    advantages: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    std_norm: bool,
) -> Result<Tensor<B, 2>> {
    let [n, t] = advantages.dims();
    check_2d("whiten_advantages", n, &[("advantages", advantages.dims()), ("mask", mask.dims())])?;
    let (advantages, mask) = (to_f32(advantages), to_f32(mask));
    let count = mask.clone().sum().clamp_min(1.0); // [1]
    let mean = ((advantages.clone() * mask.clone()).sum() / count.clone()).reshape([1, 1]).expand([n, t]); // [N, T]
    let centered = advantages - mean; // [N, T]
    if !std_norm {
        return Ok(centered);
    }
    let var = (centered.clone().powi_scalar(2) * mask).sum() / count; // [1]
    let rstd = var.clamp_min(1e-8).sqrt().recip().reshape([1, 1]).expand([n, t]); // [N, T]
    Ok(centered * rstd)
}

/// Steps 1-5: REINFORCE++ advantages from sequence rewards and rollout log-probs.
/// `ref_logprobs: None` means no reference (OpenRLHF's zero KL).
///
/// # Shapes
/// `rewards`: `[N]` with `N = P k`; `old_logprobs`, `ref_logprobs`, `mask`: `[N, T]` -> `[N, T]`
///
/// # Errors
/// When the dims disagree, or the baseline's groups of `num_generations` do not divide `N`.
pub fn reinforce_pp_advantages<B: Backend>(
    rewards: Tensor<B, 1>,
    old_logprobs: Tensor<B, 2>,
    ref_logprobs: Option<Tensor<B, 2>>,
    mask: Tensor<B, 2>,
    args: &ReinforcePpArgs,
) -> Result<Tensor<B, 2>> {
    let [n] = rewards.dims();
    check_2d("reinforce_pp_advantages", n, &[("old_logprobs", old_logprobs.dims()), ("mask", mask.dims())])?;
    // 1. per-token KL
    let kl = match ref_logprobs {
        Some(ref_logprobs) => approx_kl(old_logprobs, ref_logprobs, args.kl_estimator)?,
        None => to_f32(old_logprobs).zeros_like(),
    }; // [N, T]
       // 2. baseline
    let (rewards, gamma) = match args.advantage_estimator {
        AdvantageEstimator::Reinforce => (to_f32(rewards), args.gamma),
        AdvantageEstimator::ReinforceBaseline => {
            let k = args.num_generations;
            if k == 0 || !n.is_multiple_of(k) {
                return Err(shape_error(
                    "reinforce_pp_advantages",
                    format!("{n} rewards are not whole groups of k = {k}"),
                ));
            }
            let grouped = to_f32(rewards).reshape([n / k, k]); // [P, k]
            ((grouped.clone() - grouped.mean_dim(1)).reshape([n]), 1.0)
        }
    };
    // 3. per-token rewards, 4. returns, 5. whitening
    let per_token = token_rewards(rewards, kl, mask.clone(), args.kl_coef)?; // [N, T]
    let returns = cumulative_returns(per_token, mask.clone(), gamma)?; // [N, T]
    whiten_advantages(returns, mask, args.std_norm)
}

/// Statistics of [`reinforce_pp_loss`] (detached scalars; see the metric table above).
#[derive(Debug, Clone)]
pub struct ReinforcePpStats<B: Backend> {
    /// Masked fraction of tokens where the clipped term is smaller (`losses/clipfrac`).
    pub clip_ratio: Tensor<B, 1>,
    /// Masked mean of `log pi_old - log pi_theta` (`losses/approx_kl`).
    pub ppo_kl: Tensor<B, 1>,
}

/// REINFORCE++'s PPO-clip loss (paper, eq. 6; OpenRLHF `PolicyLoss` with `token-mean`):
///
/// ```tex
/// \rho_{i,t} = \exp\big(\operatorname{clip}(\log\pi_\theta - \log\pi_{old}, -20, 20)\big), \qquad
/// L = \frac{\sum_{i,t} m_{i,t}\, \big(-\min(\rho A, \operatorname{clip}(\rho, 1-\epsilon, 1+\epsilon_{high}) A)\big)_{i,t}}{\sum_{i,t} m_{i,t}}
/// ```
///
/// # Shapes
/// `new_logprobs`, `old_logprobs`, `advantages`, `mask`: `[N, T]` -> loss `[1]`
///
/// # Errors
/// When the dims disagree.
pub fn reinforce_pp_loss<B: Backend>(
    new_logprobs: Tensor<B, 2>,
    old_logprobs: Tensor<B, 2>,
    advantages: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    args: &ReinforcePpArgs,
) -> Result<(Tensor<B, 1>, ReinforcePpStats<B>)> {
    let [n, _] = new_logprobs.dims();
    let dims = [
        ("new_logprobs", new_logprobs.dims()),
        ("old_logprobs", old_logprobs.dims()),
        ("advantages", advantages.dims()),
        ("mask", mask.dims()),
    ];
    check_2d("reinforce_pp_loss", n, &dims)?;
    let (advantages, mask) = (to_f32(advantages), to_f32(mask));
    let log_ratio = to_f32(new_logprobs) - to_f32(old_logprobs); // [N, T]
    let ratio = log_ratio.clone().clamp(-20.0, 20.0).exp(); // [N, T]
    let pg_loss1 = ratio.clone() * advantages.clone(); // [N, T]
    let pg_loss2 = ratio.clamp(1.0 - args.eps_clip, 1.0 + args.eps_clip_high()) * advantages; // [N, T]
    let clipped = pg_loss2.clone().detach().lower(pg_loss1.clone().detach()).float(); // [N, T]
    let per_token_loss = pg_loss1.min_pair(pg_loss2).neg(); // [N, T]
    let loss = masked_mean(per_token_loss, mask.clone());
    let stats = ReinforcePpStats {
        clip_ratio: masked_mean(clipped, mask.clone()),
        ppo_kl: masked_mean(log_ratio.detach().neg(), mask),
    };
    Ok((loss, stats))
}

impl GroupObjective for ReinforcePpArgs {
    const ID: &'static str = "reinforce_pp";

    fn extract(section: &Section<'_>) -> std::result::Result<Self, CoreError> {
        ReinforcePpArgs::extract(section)
    }

    /// The KL is a per-token reward from the generation-time log-probs, so those are computed
    /// even on-policy when `kl_coef > 0`; the loss is a per-micro-batch token mean.
    fn settings(&self) -> GroupSettings {
        group_settings!(
            self,
            kl_coef: self.kl_coef,
            loss_per_step: false,
            generation_logprobs: self.kl_coef > 0.0,
            kl_logprobs: self.kl_logprobs,
        )
    }

    /// [`reinforce_pp_advantages`] over the iteration's whole batch (the whitening sees every
    /// valid token of it); token-level. Without a KL term the generation-time log-probs are
    /// not read (zeros stand in for them).
    ///
    /// # Shapes
    /// `rewards`: `[N]`; `old_logprobs`, `ref_logprobs`, `mask`: `[N, T]` -> `[N, T]`
    fn advantages<B: Backend>(&self, batch: RolloutBatch<B>) -> Result<Advantages<B>> {
        let mask = to_f32(batch.mask); // [N, T]
        let mut stats = Vec::new();
        let (old_logprobs, ref_logprobs) = if self.kl_coef > 0.0 {
            let old_logprobs = required("reinforce_pp", batch.kl_logprobs, "generation-time log-probs")?; // [N, T]
            let ref_logprobs = required("reinforce_pp", batch.ref_logprobs, "reference log-probs")?; // [N, T]
            let kl = approx_kl(old_logprobs.clone(), ref_logprobs.clone(), self.kl_estimator)?; // [N, T]
            stats.push(("kl", scalar(masked_mean(kl, mask.clone()))));
            (old_logprobs, Some(ref_logprobs))
        } else {
            (mask.zeros_like(), None)
        };
        let advantages = reinforce_pp_advantages(batch.rewards, old_logprobs, ref_logprobs, mask.clone(), self)?; // [N, T]
        Ok(Advantages { advantages, stats })
    }

    /// [`reinforce_pp_loss`] on the micro-batch (`ref_logprobs` and `num_items_in_batch`
    /// unused: the KL is in the reward and the loss is a token mean).
    fn loss<B: Backend>(
        &self,
        new_logprobs: Tensor<B, 2>,
        old_logprobs: Tensor<B, 2>,
        _ref_logprobs: Option<Tensor<B, 2>>,
        advantages: Tensor<B, 2>,
        mask: Tensor<B, 2>,
        _num_items_in_batch: Option<f64>,
    ) -> Result<(Tensor<B, 1>, LossStats<B>)> {
        let (loss, stats) = reinforce_pp_loss(new_logprobs, old_logprobs, advantages, mask, self)?;
        Ok((loss, LossStats { values: vec![("clip_ratio", stats.clip_ratio), ("ppo_kl", stats.ppo_kl)], kl: None }))
    }
}

tril_core::register!(algorithm,
    id: "reinforce_pp",
    doc: "REINFORCE++: per-token KL reward, discounted returns, global batch-whitened advantages, token-level clipped ratio (OpenRLHF's REINFORCE++ / REINFORCE++-baseline).",
    config: ReinforcePpArgs,
    build: crate::group::group_run::build::<ReinforcePpArgs>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{t1, t2, Cpu};

    fn v(x: Tensor<Cpu, 2>) -> Vec<f64> {
        x.into_data().to_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
    }

    /// The matmul returns against the reverse loop (R21).
    #[test]
    fn returns_match_the_reverse_loop() {
        let r = [0.5, -1.0, 2.0, 0.25, 1.0, 0.0, -0.5, 3.0];
        let m = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
        let got = v(cumulative_returns(t2(&r, 2), t2(&m, 2), 0.9).unwrap());
        for row in 0..2 {
            let mut acc = 0.0;
            for t in (0..4).rev() {
                acc = r[row * 4 + t] * m[row * 4 + t] + 0.9 * acc;
                assert!((got[row * 4 + t] - acc).abs() < 1e-6, "{got:?}");
            }
        }
    }

    #[test]
    fn reward_lands_on_the_last_valid_token() {
        let m = [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        let got = v(token_rewards(t1(&[2.0, -1.0, 5.0]), t2(&[0.0; 9], 3), t2(&m, 3), 0.1).unwrap());
        assert_eq!(got, vec![0.0, 2.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let a = ReinforcePpArgs {
            advantage_estimator: AdvantageEstimator::ReinforceBaseline,
            num_generations: 4,
            ..Default::default()
        };
        let err = reinforce_pp_advantages(t1(&[0.0; 6]), t2(&[0.0; 12], 6), None, t2(&[0.0; 12], 6), &a).unwrap_err();
        assert!(err.to_string().contains("6 rewards are not whole groups of k = 4"), "{err}");
        assert!(approx_kl(t2(&[0.0; 6], 2), t2(&[0.0; 6], 3), KlEstimator::K3).is_err());
        let d = ReinforcePpArgs::default();
        assert!(reinforce_pp_loss(t2(&[0.0; 6], 2), t2(&[0.0; 6], 2), t2(&[0.0; 4], 2), t2(&[0.0; 6], 2), &d).is_err());
    }

    const OLD: [f64; 12] = [-1.0, -0.5, -2.0, -0.3, -1.1, -0.7, -0.2, -0.9, -1.4, -2.2, -0.6, -0.1];
    const REF: [f64; 12] = [-1.2, -0.4, -2.5, -0.3, -1.0, -0.9, -0.6, -0.9, -1.0, -2.0, -0.8, -0.3];
    const MASK: [f64; 12] = [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
    const REWARDS: [f64; 4] = [1.0, 0.25, -0.5, 2.0];

    fn batch(old: Option<&[f64]>, reference: Option<&[f64]>, group_size: usize) -> RolloutBatch<Cpu> {
        RolloutBatch {
            rewards: t1(&REWARDS),
            old_logprobs: old.map(|x| t2(x, 4)),
            kl_logprobs: old.map(|x| t2(x, 4)),
            ref_logprobs: reference.map(|x| t2(x, 4)),
            mask: t2(&MASK, 4),
            group_size,
        }
    }

    /// The loop's advantages (the [`GroupObjective`] hook) equal the pure pipeline on a
    /// hand batch for both estimators: token-level `[N, T]`, whitened over every valid token
    /// of the whole batch (masked mean 0, masked variance 1).
    #[test]
    fn loop_advantages_equal_the_pure_functions() {
        let baseline = ReinforcePpArgs {
            advantage_estimator: AdvantageEstimator::ReinforceBaseline,
            num_generations: 2,
            kl_coef: 0.1,
            ..Default::default()
        };
        let plain = ReinforcePpArgs { kl_coef: 0.1, gamma: 0.9, ..Default::default() };
        for (args, g) in [(plain, 1), (baseline, 2)] {
            let got = args.advantages(batch(Some(&OLD), Some(&REF), g)).unwrap();
            assert_eq!(got.advantages.dims(), [4, 3]);
            let kl = approx_kl(t2(&OLD, 4), t2(&REF, 4), args.kl_estimator).unwrap();
            let mut rewards = REWARDS.to_vec();
            if g == 2 {
                for pair in rewards.chunks_mut(2) {
                    let m = (pair[0] + pair[1]) / 2.0;
                    pair.iter_mut().for_each(|r| *r -= m);
                }
            }
            let per_token = token_rewards(t1(&rewards), kl, t2(&MASK, 4), 0.1).unwrap();
            let gamma = if g == 2 { 1.0 } else { 0.9 };
            let returns = cumulative_returns(per_token, t2(&MASK, 4), gamma).unwrap();
            let want = v(whiten_advantages(returns, t2(&MASK, 4), true).unwrap());
            let got_v = v(got.advantages);
            assert!(got_v.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5), "{got_v:?} vs {want:?}");
            let valid: Vec<f64> = got_v.iter().zip(MASK).filter(|(_, m)| *m > 0.0).map(|(a, _)| *a).collect();
            let mean = valid.iter().sum::<f64>() / valid.len() as f64;
            let var = valid.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / valid.len() as f64;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "{mean} {var}");
            // Masked mean of the k1 log-ratio over the 9 valid tokens: 0.8 / 9.
            let (name, kl) = got.stats[0];
            assert!(name == "kl" && (kl - 0.8 / 9.0).abs() < 1e-6, "{:?}", got.stats);
        }
        // kl_coef 0: neither generation-time nor reference log-probs are needed.
        let args = ReinforcePpArgs { kl_coef: 0.0, ..Default::default() };
        assert!(!args.settings().generation_logprobs && !args.settings().needs_reference());
        let got = args.advantages(batch(None, None, 1)).unwrap();
        let want = reinforce_pp_advantages(t1(&REWARDS), t2(&[0.0; 12], 4), None, t2(&MASK, 4), &args).unwrap();
        assert_eq!(v(got.advantages), v(want));
        assert!(got.stats.is_empty());
    }

    #[test]
    fn loop_errors_instead_of_panicking() {
        let err = ReinforcePpArgs::default().advantages(batch(None, Some(&REF), 1)).unwrap_err().to_string();
        assert!(err.contains("generation-time log-probs"), "{err}");
        // Sequence-level advantages are not REINFORCE++'s.
        let d = ReinforcePpArgs::default();
        assert!(d.loss(t2(&OLD, 4), t2(&OLD, 4), None, t2(&REWARDS, 4), t2(&MASK, 4), None).is_err());
        let (_, stats) = d.loss(t2(&OLD, 4), t2(&OLD, 4), None, t2(&OLD, 4), t2(&MASK, 4), None).unwrap();
        let names: Vec<_> = stats.values.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["clip_ratio", "ppo_kl"]);
    }

    #[test]
    fn args_defaults_and_checks() {
        let node = tril_core::config::parse_yaml("kl_estimator: k3\n", std::path::Path::new("alg/r.yaml")).unwrap();
        let args = ReinforcePpArgs::extract(&Section::new("alg.args", &node)).unwrap();
        assert_eq!((args.kl_estimator, args.gamma, args.eps_clip_high()), (KlEstimator::K3, 1.0, 0.2));
        let node = tril_core::config::parse_yaml(
            "advantage_estimator: reinforce_baseline\nnum_generations: 4\ngamma: 0.9\n",
            std::path::Path::new("alg/r.yaml"),
        )
        .unwrap();
        let err = ReinforcePpArgs::extract(&Section::new("alg.args", &node)).unwrap_err().to_string();
        assert!(err.contains("alg.args.gamma"), "{err}");
        let node = tril_core::config::parse_yaml("grad_accumulation: 0\n", std::path::Path::new("alg/r.yaml")).unwrap();
        let err = ReinforcePpArgs::extract(&Section::new("alg.args", &node)).unwrap_err().to_string();
        assert!(err.contains("alg.args.grad_accumulation"), "{err}");
        // G = 1 is REINFORCE++'s default.
        let node = tril_core::config::parse_yaml("num_generations: 1\n", std::path::Path::new("alg/r.yaml")).unwrap();
        assert_eq!(ReinforcePpArgs::extract(&Section::new("alg.args", &node)).unwrap().num_generations, 1);
    }
}
