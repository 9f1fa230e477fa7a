//! PPO actor-critic, as TRIL's `ppo` (reference/tril.md §3.1-3.2).
//!
//! This file holds the typed `alg.args` ([`PpoArgs`]) and the pure loss functions
//! ([`policy_loss`], [`value_loss`], [`entropy_loss`], [`target_loss`]). The rollout and
//! update loop that drives them lands with the PPO issue (it needs the Burn models).
//!
//! # Deviations from TRIL
//! None in the losses: each formula below is TRIL's, including `approx_kl` and `ratio`
//! averaged over all `B x T` entries (padded entries have `log r = 0`: they add 0 to the
//! KL sum and 1 to the ratio sum but count in both means) and `val_clip_fraction` as
//! `|V - V_old| > eps_v`. `tests/tril_ppo.rs` checks each against a PyTorch port of TRIL.

use crate::AlgorithmError;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges};
use tril_core::ops::{scalar, to_f32};

/// TRIL's `alg.args` for PPO and the algorithms that inherit it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoArgs {
    /// Seed of every RNG of the run (TRIL seeds only its roll-in RNGs with it).
    pub seed: u64,
    /// Extra logging (`value_delta`, `advantages`, `returns`) when > 0.
    #[serde(default)]
    pub verbose: u32,
    /// Iterations (rollout + update) to run.
    pub n_iters: usize,
    /// Global minibatch size of the update.
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step.
    pub grad_accumulation: usize,
    /// Trajectories collected per iteration.
    pub trajectories_per_update: usize,
    /// Passes over the rollout buffer per iteration.
    pub n_epochs: usize,
    /// Discount.
    pub gamma: f64,
    /// GAE lambda.
    pub gae_lambda: f64,
    /// Value-loss coefficient.
    pub vf_coef: f64,
    /// Target-regularization coefficient (NLL of the dataset reference).
    pub target_coef: f64,
    /// Whether the target regularization term is used.
    pub target_regularization: bool,
    /// Entropy-bonus coefficient.
    pub ent_coef: f64,
    /// Policy ratio clip range epsilon.
    pub clip_range: f64,
    /// Value clip range (null: no value clipping).
    pub clip_range_vf: Option<f64>,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Early stop of the epoch loop when `approx_kl > 1.5 * target_kl` (null: never).
    pub target_kl: Option<f64>,
    /// Evaluation batch size.
    pub eval_batch_size: usize,
    /// Evaluate every this many iterations.
    pub eval_every: usize,
    /// Checkpoint every this many iterations.
    pub save_every: usize,
    /// Evaluate before training.
    pub eval_zero_shot: bool,
    /// Write checkpoints.
    pub save_checkpoints: bool,
    /// Splits evaluated.
    pub eval_splits: Vec<tril_core::plugin::Split>,
    /// Prompt length (interpolated from `sampling.max_prompt_len`).
    pub max_prompt_len: usize,
    /// Generation length (interpolated from `sampling.max_gen_len`).
    pub max_gen_len: usize,
    /// Whether the per-token KL penalty is added to the reward (null: the algorithm's
    /// default: `true` for PPO and GAIL, `false` for the roll-in family, as TRIL does).
    #[serde(default)]
    pub kl_in_reward: Option<bool>,
    /// Whether the EOS ending a generation is a trained action that carries the terminal
    /// reward. `false` (default, TRIL): EOS is padding, the reward lands on the last real
    /// token ([`crate::onpolicy::action_mask`]). `true`: the policy also learns to stop.
    #[serde(default)]
    pub train_eos: bool,
    /// How `max_grad_norm` applies: `joint` (default, TRIL's `clip_grad_norm_` over
    /// `agent.policy_params`: one norm over the policy, the critic and a guide critic) or
    /// `separate` (each module clipped to `max_grad_norm` on its own, so a large early
    /// value loss cannot shrink the policy's step).
    #[serde(default)]
    pub grad_clip: GradClip,
    /// Which policy log-prob the KL penalty and the KL controller use ([`KlLogprobs`]):
    /// `sampled` (default) that of the distribution each token was drawn from, or `model`
    /// (TRIL) that of the unmodified policy.
    #[serde(default)]
    pub kl_logprobs: KlLogprobs,
    /// Whiten the advantages over the buffer's valid tokens before the update
    /// ([`whiten_advantages`]; TRL, OpenRLHF); `false` (default): as computed (TRIL).
    #[serde(default)]
    pub whiten_advantages: bool,
}

/// The policy log-prob in PPO's per-token KL estimate `log pi(a_t) - log pi_ref(a_t)`
/// (`alg.args.kl_logprobs`).
///
/// Rollouts are drawn from the sampling distribution `q` (min-length, temperature, top-k,
/// top-p applied to the policy's logits). `E_q[log q(a) - log pi_ref(a)] = KL(q || pi_ref) >= 0`,
/// whereas with the unmodified `pi`, `E_q[log pi(a) - log pi_ref(a)]` has no lower bound
/// under top-k: the policy lowers it (and so earns the penalty as a bonus) by moving mass
/// onto tokens outside the top k, which it never draws. On IMDB with a GPT-2 trained from
/// scratch this drove the estimate to -71 nats and the entropy from 7.2 to 10.3 nats
/// while the reward fell. With pure sampling (`top_k: 0`, `top_p: 1`, temperature 1, no
/// min-length) the two coincide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlLogprobs {
    /// `log q(a_t)`, recorded at generation (tril's default).
    #[default]
    Sampled,
    /// `log pi(a_t)` of the unmodified policy (TRIL, TRL).
    Model,
}

/// How PPO's gradient-norm clipping groups the parameters (`alg.args.grad_clip`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradClip {
    /// One global norm over every trained module (TRIL).
    #[default]
    Joint,
    /// The policy, the critic and the guide critic each clipped on their own.
    Separate,
}

impl Ranges for PpoArgs {
    /// Counts >= 1 (`trajectories_per_update` a multiple of `batch_size`), `gamma` and
    /// `gae_lambda` in [0, 1], coefficients >= 0, clip ranges and `target_kl` > 0 (or null),
    /// and the shared loop keys ([`crate::settings::LoopSettings::check_ranges`]).
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.at_least("n_iters", self.n_iters, 1)?;
        c.at_least("n_epochs", self.n_epochs, 1)?;
        crate::settings::loop_settings!(self).check_ranges(c)?;
        c.at_least("trajectories_per_update", self.trajectories_per_update, 1)?;
        let whole = self.trajectories_per_update.is_multiple_of(self.batch_size);
        let message = format!("expected a multiple of batch_size ({})", self.batch_size);
        c.satisfies(whole, "trajectories_per_update", self.trajectories_per_update, message)?;
        c.probability("gamma", self.gamma)?;
        c.probability("gae_lambda", self.gae_lambda)?;
        c.non_negative("vf_coef", self.vf_coef)?;
        c.non_negative("target_coef", self.target_coef)?;
        c.non_negative("ent_coef", self.ent_coef)?;
        c.positive("clip_range", self.clip_range)?;
        if let Some(clip) = self.clip_range_vf {
            c.positive("clip_range_vf", clip)?;
        }
        if let Some(target_kl) = self.target_kl {
            c.positive("target_kl", target_kl)?;
        }
        c.at_least("max_prompt_len", self.max_prompt_len, 1)?;
        c.at_least("max_gen_len", self.max_gen_len, 1)
    }
}

/// Derived per-iteration numbers (R11: computed, never written back into the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PpoPlan {
    /// `generate` calls per iteration (`trajectories_per_update / batch_size_per_process`).
    pub generate_calls: usize,
    /// Optimizer steps per epoch (`trajectories_per_update / batch_size`).
    pub minibatches: usize,
    /// Sequences per forward/backward (`batch_size / grad_accumulation`).
    pub micro_batch: usize,
    /// Optimizer steps per iteration (`minibatches * n_epochs`, before any KL early stop).
    pub optimizer_steps: usize,
    /// TRIL's `total_timesteps = trajectories_per_update * max_gen_len * n_iters`.
    pub total_timesteps: usize,
}

impl PpoArgs {
    /// Checks TRIL's divisibility rules (one process) and derives the [`PpoPlan`].
    /// Errors name the keys involved and their values.
    pub fn plan(&self, batch_size_per_process: usize) -> crate::Result<PpoPlan> {
        let positive = [
            ("alg.args.batch_size", self.batch_size),
            ("alg.args.grad_accumulation", self.grad_accumulation),
            ("alg.args.trajectories_per_update", self.trajectories_per_update),
            ("alg.args.n_epochs", self.n_epochs),
            ("sampling.batch_size_per_process", batch_size_per_process),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(AlgorithmError::invalid(key, "a count > 0", v));
            }
        }
        let divides = [
            (
                "alg.args.trajectories_per_update",
                self.trajectories_per_update,
                "sampling.batch_size_per_process",
                batch_size_per_process,
            ),
            ("alg.args.batch_size", self.batch_size, "alg.args.grad_accumulation", self.grad_accumulation),
            ("alg.args.trajectories_per_update", self.trajectories_per_update, "alg.args.batch_size", self.batch_size),
        ];
        for (key, value, divisor_key, divisor) in divides {
            if !value.is_multiple_of(divisor) {
                let (key, divisor_key) = (key.to_string(), divisor_key.to_string());
                return Err(AlgorithmError::Indivisible { key, value, divisor_key, divisor });
            }
        }
        let minibatches = self.trajectories_per_update / self.batch_size;
        Ok(PpoPlan {
            generate_calls: self.trajectories_per_update / batch_size_per_process,
            minibatches,
            micro_batch: self.batch_size / self.grad_accumulation,
            optimizer_steps: minibatches * self.n_epochs,
            total_timesteps: self.trajectories_per_update * self.max_gen_len * self.n_iters,
        })
    }
}

/// Advantages whitened over the valid entries of the whole buffer (`alg.args.whiten_advantages`;
/// TRL's `masked_whiten`, OpenRLHF's advantage normalization; TRIL does not):
///
/// ```tex
/// \hat A_t = (A_t - \mu) / \sqrt{\sigma^2 + 10^{-8}}, \qquad
/// \mu = \frac{\sum_t m_t A_t}{\sum_t m_t}, \quad
/// \sigma^2 = \frac{\sum_t m_t (A_t - \mu)^2}{\sum_t m_t - 1}
/// ```
/// (the unbiased variance, as TRL's `masked_var`). Masked entries stay 0. Rewards from a
/// bounded classifier (probabilities around 0.8, spread 0.1) otherwise give advantages two
/// orders of magnitude below a unit scale, so the policy step depends on the reward's scale.
///
/// # Shapes
/// `advantages`, `mask`: `[B, T]` -> `[B, T]`
pub fn whiten_advantages<B: Backend>(advantages: Tensor<B, 2>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
    let n = scalar(to_f32(mask.clone()).sum());
    if n < 2.0 {
        return advantages * mask;
    }
    let mean = scalar(to_f32(advantages.clone() * mask.clone()).sum()) / n;
    let centered = (advantages - mean) * mask.clone(); // [B, T]
    let var = scalar(to_f32(centered.clone()).powi_scalar(2).sum()) / (n - 1.0);
    centered / (var + 1e-8).sqrt()
}

/// Per-token rewards of a rollout (TRIL's `generate_batch`, `src/tril/algorithms/base_online.py`
/// lines 324-346 at b9a4de9): the terminal reward sits on the last real (unmasked) token and
/// every token pays the KL penalty
///
/// ```tex
/// r_t = R \,[t = L - 1] - \beta (\log\pi(a_t) - \log\pi_{ref}(a_t)), \qquad L = \textstyle\sum_t m_t
/// ```
/// Returns `(rewards, kl_rewards, total_rewards)`, all masked.
///
/// # Deviations from TRIL
/// - TRIL leaves the KL penalty on padded entries of `kl_rewards` / `total_rewards`; they
///   are masked later (GAE multiplies the rewards by the mask, the logged trajectory sums
///   stop at the sequence length), so masking here changes no advantage and no metric.
/// - A sequence with no real token gets no reward (TRIL writes it at position -1, the last
///   column, where GAE masks it away).
///
/// # Shapes
/// `terminal`: `[B]`, `masks`, `logprobs`, `ref_logprobs`: `[B, T]` -> three `[B, T]`
pub fn token_rewards<B: Backend>(
    terminal: Tensor<B, 1>,
    masks: Tensor<B, 2>,
    logprobs: Tensor<B, 2>,
    ref_logprobs: Tensor<B, 2>,
    kl_coeff: f64,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
    let terminal = to_f32(terminal);
    let masks = to_f32(masks);
    let logprobs = to_f32(logprobs);
    let ref_logprobs = to_f32(ref_logprobs);
    let [b, t] = masks.dims();
    let device = masks.device();
    let last = masks.clone().sum_dim(1) - 1.0; // [B, 1]
    let positions = Tensor::<B, 1, burn::tensor::Int>::arange(0..t as i64, &device)
        .float()
        .cast(burn::tensor::FloatDType::F32)
        .reshape([1, t]); // [1, T]
    let is_last = positions.repeat_dim(0, b).equal(last.repeat_dim(1, t)).float().cast(burn::tensor::FloatDType::F32); // [B, T]
    let rewards = is_last * terminal.reshape([b, 1]).repeat_dim(1, t); // [B, T]
    let kl_rewards = (logprobs - ref_logprobs) * masks * (-kl_coeff); // [B, T]
    let total = rewards.clone() + kl_rewards.clone();
    (rewards, kl_rewards, total)
}

/// Statistics of the clipped policy loss (detached scalars, read on the host for logging).
#[derive(Debug, Clone)]
pub struct PolicyStats<B: Backend> {
    /// `mean((r - 1) - log r)` over all entries (TRIL's `ppo/approx_kl`).
    pub approx_kl: Tensor<B, 1>,
    /// Fraction of masked entries with `|r - 1| > epsilon` (`ppo/clip_fraction`).
    pub clip_fraction: Tensor<B, 1>,
    /// Mean ratio over all entries (`ppo/ratio`).
    pub ratio: Tensor<B, 1>,
}

/// PPO's clipped surrogate (Schulman et al. 2017, eq. 7), masked as TRIL's `PPO.train_step`
/// (`src/tril/algorithms/ppo.py` lines 105-132 at b9a4de9):
///
/// ```tex
/// r_t = \exp((\log\pi_\theta - \log\pi_{old}) m_t), \qquad
/// L^{CLIP} = -\frac{\sum_t m_t \min(r_t A_t, \operatorname{clip}(r_t, 1-\epsilon, 1+\epsilon) A_t)}{\sum_t m_t}
/// ```
///
/// # Shapes
/// `new_logprobs`, `old_logprobs`, `advantages`, `masks`: `[B, T]` -> loss `[1]`
pub fn policy_loss<B: Backend>(
    new_logprobs: Tensor<B, 2>,
    old_logprobs: Tensor<B, 2>,
    advantages: Tensor<B, 2>,
    masks: Tensor<B, 2>,
    clip_range: f64,
) -> (Tensor<B, 1>, PolicyStats<B>) {
    let new_logprobs = to_f32(new_logprobs);
    let old_logprobs = to_f32(old_logprobs);
    let advantages = to_f32(advantages);
    let masks = to_f32(masks);
    let n = masks.clone().sum().clamp_min(1e-8); // [1]
    let log_ratio = (new_logprobs - old_logprobs) * masks.clone(); // [B, T]
    let ratio = log_ratio.clone().exp(); // [B, T]
    let pg_loss1 = ratio.clone() * advantages.clone(); // [B, T]
    let pg_loss2 = ratio.clone().clamp(1.0 - clip_range, 1.0 + clip_range) * advantages; // [B, T]
    let surrogate = pg_loss1.min_pair(pg_loss2); // [B, T]
    let loss = (surrogate * masks.clone()).sum().neg() / n.clone();

    let approx_kl = ((ratio.clone() - 1.0) - log_ratio).mean().detach();
    let clipped = (ratio.clone() - 1.0).abs().greater_elem(clip_range).float().cast(burn::tensor::FloatDType::F32); // [B, T]
    let clip_fraction = ((clipped * masks).sum() / n).detach();
    let stats = PolicyStats { approx_kl, clip_fraction, ratio: ratio.mean().detach() };
    (loss, stats)
}

/// The value loss with optional clipping around the rollout values (TRIL's
/// `PPO.train_step`, `src/tril/algorithms/ppo.py` lines 152-186 at b9a4de9):
///
/// ```tex
/// V^{clip}_t = V^{old}_t + \operatorname{clip}(V_t - V^{old}_t, -\epsilon_v, \epsilon_v), \qquad
/// L^V = \frac{1}{2} \frac{\sum_t m_t \max((V_t - R_t)^2, (V^{clip}_t - R_t)^2)}{\sum_t m_t}
/// ```
/// Returns the loss and TRIL's `val_clip_fraction`: the fraction of masked entries whose
/// value moved by more than the clip range, `sum_t m_t [|V_t - V^old_t| > eps_v] / sum_t m_t`
/// (0 without value clipping). That counts entries where the clip is *active*, whether or
/// not the clipped term is the larger one in the max.
///
/// # Shapes
/// `values`, `old_values`, `returns`, `value_masks`: `[B, T]` -> `[1]`, `[1]`
pub fn value_loss<B: Backend>(
    values: Tensor<B, 2>,
    old_values: Tensor<B, 2>,
    returns: Tensor<B, 2>,
    value_masks: Tensor<B, 2>,
    clip_range_vf: Option<f64>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let values = to_f32(values);
    let old_values = to_f32(old_values);
    let returns = to_f32(returns);
    let value_masks = to_f32(value_masks);
    let n = value_masks.clone().sum().clamp_min(1e-8); // [1]
    let vf_loss1 = (values.clone() - returns.clone()).powf_scalar(2.0); // [B, T]
    let Some(eps) = clip_range_vf else {
        let loss = (vf_loss1 * value_masks).sum() / n * 0.5;
        return (loss, Tensor::zeros([1], (&values.device(), burn::tensor::DType::F32)));
    };
    let val_delta = values - old_values.clone(); // [B, T]
    let v_clipped = old_values + val_delta.clone().clamp(-eps, eps); // [B, T]
    let vf_loss2 = (v_clipped - returns).powf_scalar(2.0); // [B, T]
    let moved = val_delta.detach().abs().greater_elem(eps).float().cast(burn::tensor::FloatDType::F32); // [B, T]
    let loss = (vf_loss1.max_pair(vf_loss2) * value_masks.clone()).sum() / n.clone() * 0.5;
    let clip_fraction = ((moved * value_masks).sum() / n).detach();
    (loss, clip_fraction)
}

/// The loss terms of one PPO micro-batch, each already reduced to `[1]`.
#[derive(Debug, Clone)]
pub struct PpoTerms<B: Backend> {
    /// The clipped surrogate policy loss ([`policy_loss`]).
    pub policy: Tensor<B, 1>,
    /// The (optionally clipped) value loss ([`value_loss`]).
    pub value: Tensor<B, 1>,
    /// The negative entropy ([`entropy_loss`]).
    pub entropy: Tensor<B, 1>,
    /// The target-regularization NLL ([`target_loss`]) when `target_regularization`.
    pub target: Option<Tensor<B, 1>>,
}

/// PPO's total objective, TRIL's `PPO.train_step` (`ppo.py` lines 196-201; Schulman et al.
/// 2017, eq. 9, with TRIL's target regularization term):
///
/// ```tex
/// L = L^{CLIP} + c_{vf} L^{VF} + c_{ent} L^{ent} + c_{tgt} L^{tgt}
/// ```
/// with `c_vf = vf_coef`, `c_ent = ent_coef` and `c_tgt = target_coef` (the last term only
/// with `target_regularization`).
///
/// # Shapes
/// every term `[1]` -> `[1]`
pub fn total_loss<B: Backend>(terms: &PpoTerms<B>, args: &PpoArgs) -> Tensor<B, 1> {
    let loss = terms.policy.clone() + terms.value.clone() * args.vf_coef + terms.entropy.clone() * args.ent_coef;
    match &terms.target {
        Some(target) => loss + target.clone() * args.target_coef,
        None => loss,
    }
}

/// Negative mean entropy over masked entries (`L_ent = -sum(H m) / sum(m)`; TRIL's
/// `ppo.py` line 140).
///
/// # Shapes
/// `entropy`, `masks`: `[B, T]` -> `[1]`
pub fn entropy_loss<B: Backend>(entropy: Tensor<B, 2>, masks: Tensor<B, 2>) -> Tensor<B, 1> {
    let entropy = to_f32(entropy);
    let masks = to_f32(masks);
    tril_core::ops::masked_mean(entropy, masks).neg()
}

/// Target regularization: the NLL of the dataset reference under the policy,
/// `L_tgt = -sum(log pi(y*) m) / sum(m)` (TRIL's "Forward KL Target Reference Loss",
/// `ppo.py` lines 80-103).
///
/// # Shapes
/// `target_logprobs`, `target_masks`: `[B, T]` -> `[1]`
pub fn target_loss<B: Backend>(target_logprobs: Tensor<B, 2>, target_masks: Tensor<B, 2>) -> Tensor<B, 1> {
    let target_logprobs = to_f32(target_logprobs);
    let target_masks = to_f32(target_masks);
    tril_core::ops::masked_mean(target_logprobs, target_masks).neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    use crate::test_util::{t2, Cpu};

    fn t(v: &[f64]) -> Tensor<Cpu, 2> {
        t2(v, 2)
    }

    fn s(x: Tensor<Cpu, 1>) -> f64 {
        x.into_scalar() as f64
    }

    #[test]
    fn whitened_advantages_have_zero_mean_and_unit_unbiased_variance_on_valid_tokens() {
        let adv = [0.3, -1.2, 4.0, 0.7, 0.0, 2.5, -0.4, 9.9];
        let mask = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0];
        let out = whiten_advantages(t2(&adv, 4), t2(&mask, 4)).into_data().into_vec::<f32>().unwrap();
        // A second implementation in f64: TRL's masked_whiten (unbiased masked variance).
        let valid: Vec<f64> = adv.iter().zip(&mask).filter(|(_, &m)| m > 0.0).map(|(&a, _)| a).collect();
        let n = valid.len() as f64;
        let mean = valid.iter().sum::<f64>() / n;
        let var = valid.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0);
        for ((&a, &m), &o) in adv.iter().zip(&mask).zip(&out) {
            let want = if m > 0.0 { (a - mean) / (var + 1e-8).sqrt() } else { 0.0 };
            assert!((o as f64 - want).abs() < 1e-5, "{o} vs {want}");
        }
        // Fewer than two valid tokens: masked, not divided by a zero variance.
        let one = whiten_advantages(t2(&[2.0, 3.0], 1), t2(&[1.0, 0.0], 1)).into_data().into_vec::<f32>().unwrap();
        assert_eq!(one, vec![2.0, 0.0]);
    }

    /// The same losses as naive loops over f64 (the independent implementation).
    fn naive_policy(new: &[f64], old: &[f64], adv: &[f64], m: &[f64], eps: f64) -> (f64, f64, f64) {
        let n: f64 = m.iter().sum();
        let (mut loss, mut kl, mut clip) = (0.0, 0.0, 0.0);
        for i in 0..new.len() {
            let lr = (new[i] - old[i]) * m[i];
            let r = lr.exp();
            loss += -(r * adv[i]).min(r.clamp(1.0 - eps, 1.0 + eps) * adv[i]) * m[i];
            kl += (r - 1.0) - lr;
            clip += if (r - 1.0).abs() > eps { m[i] } else { 0.0 };
        }
        (loss / n, kl / new.len() as f64, clip / n)
    }

    #[test]
    fn clipped_surrogate_matches_naive() {
        let new = [-1.0, -0.5, -2.0, -0.1, -3.0, -1.2];
        let old = [-1.1, -0.9, -1.0, -0.1, -2.0, -5.0];
        let adv = [1.0, -2.0, 0.5, 3.0, -1.0, 2.0];
        let m = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0];
        let (loss, stats) = policy_loss(t(&new), t(&old), t(&adv), t(&m), 0.2);
        let (l, kl, clip) = naive_policy(&new, &old, &adv, &m, 0.2);
        assert!((s(loss) - l).abs() < 1e-5, "{l}");
        assert!((s(stats.approx_kl) - kl).abs() < 1e-5);
        assert!((s(stats.clip_fraction) - clip).abs() < 1e-6);
    }

    #[test]
    fn value_loss_clipped_and_plain_match_naive() {
        let v: [f64; 4] = [1.0, 2.0, 0.0, -1.0];
        let old: [f64; 4] = [0.5, 2.5, 0.1, -3.0];
        let ret: [f64; 4] = [2.0, 1.0, 0.0, 0.0];
        let m = [1.0, 1.0, 1.0, 0.0];
        let eps = 0.2;
        let mut expected = 0.0;
        for i in 0..4 {
            let clipped = old[i] + (v[i] - old[i]).clamp(-eps, eps);
            expected += 0.5 * ((v[i] - ret[i]).powi(2)).max((clipped - ret[i]).powi(2)) * m[i];
        }
        let (loss, _) = value_loss(t(&v), t(&old), t(&ret), t(&m), Some(eps));
        assert!((s(loss) - expected / 3.0).abs() < 1e-5);
        let plain: f64 = (0..4).map(|i| 0.5 * (v[i] - ret[i]).powi(2) * m[i]).sum::<f64>() / 3.0;
        let (loss, frac) = value_loss(t(&v), t(&old), t(&ret), t(&m), None);
        assert!((s(loss) - plain).abs() < 1e-6 && s(frac) == 0.0);
        // TRIL's val_clip_fraction counts |V - V_old| > eps even where the clipped error is
        // the smaller one: V = 1, V_old = 0.5, R = 0 moves by 0.5 > 0.2 (clipped error 0.49 < 1).
        let (_, frac) = value_loss(t(&[1.0, 0.0]), t(&[0.5, 0.0]), t(&[0.0, 0.0]), t(&[1.0, 1.0]), Some(0.2));
        assert_eq!(s(frac), 0.5);
    }

    #[test]
    fn ratio_one_gives_minus_mean_advantage() {
        let lp = [-1.0, -2.0, -3.0, -4.0];
        let adv = [1.0, 2.0, 3.0, 4.0];
        let (loss, stats) = policy_loss(t(&lp), t(&lp), t(&adv), t(&[1.0; 4]), 0.2);
        assert!((s(loss) + 2.5).abs() < 1e-6);
        assert!(s(stats.approx_kl).abs() < 1e-7 && s(stats.clip_fraction) == 0.0);
    }

    const IMDB_ARGS: &str = "seed: 0\nverbose: 0\nn_iters: 50\nbatch_size: 28\ngrad_accumulation: 1\n\
        trajectories_per_update: 112\nn_epochs: 5\ngamma: 0.99\ngae_lambda: 0.95\nvf_coef: 0.5\n\
        target_coef: 0.1\ntarget_regularization: true\nent_coef: 0.0\nclip_range: 0.2\n\
        clip_range_vf: 0.2\nmax_grad_norm: 1.0\ntarget_kl: null\neval_batch_size: 100\n\
        eval_every: 10\nsave_every: 100\neval_zero_shot: true\nsave_checkpoints: false\n\
        eval_splits: [val]\nmax_prompt_len: 64\nmax_gen_len: 48\n";

    #[test]
    fn plan_follows_tril_divisibility() {
        let node = tril_core::config::parse_yaml(IMDB_ARGS, std::path::Path::new("alg/ppo.yaml")).unwrap();
        let mut args: PpoArgs = tril_core::config::Section::new("alg.args", &node).extract().unwrap();
        let plan = args.plan(112).unwrap();
        assert_eq!(
            plan,
            PpoPlan {
                generate_calls: 1,
                minibatches: 4,
                micro_batch: 28,
                optimizer_steps: 20,
                total_timesteps: 268_800
            }
        );
        args.batch_size = 30;
        assert!(args
            .plan(112)
            .unwrap_err()
            .to_string()
            .contains("alg.args.trajectories_per_update (112) must be divisible by alg.args.batch_size (30)"));
        args.batch_size = 28;
        assert!(args.plan(50).unwrap_err().to_string().contains("sampling.batch_size_per_process (50)"));
    }

    #[test]
    fn terminal_reward_on_last_real_token_plus_kl_penalty() {
        let masks = t(&[1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        let lp = t(&[-1.0, -1.0, -1.0, -1.0, -1.0, -1.0]);
        let lr = t(&[-1.5, -1.0, -0.5, -2.0, -1.0, -1.0]);
        let terminal: Tensor<Cpu, 1> = Tensor::from_data(TensorData::new(vec![2.0f32, 3.0], [2]), &Default::default());
        let (r, kl, total) = token_rewards(terminal, masks, lp, lr, 0.1);
        let v = |x: Tensor<Cpu, 2>| x.into_data().to_vec::<f32>().unwrap();
        assert_eq!(v(r), vec![0.0, 0.0, 2.0, 3.0, 0.0, 0.0]);
        let kl = v(kl);
        for (got, want) in kl.iter().zip([-0.05, 0.0, 0.05, -0.1, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-6, "{kl:?}");
        }
        assert!((v(total)[2] - 2.05).abs() < 1e-6);
    }

    #[test]
    fn args_parse_tril_imdb_section() {
        let node = tril_core::config::parse_yaml(IMDB_ARGS, std::path::Path::new("alg/ppo.yaml")).unwrap();
        let args: PpoArgs = tril_core::config::Section::new("alg.args", &node).extract().unwrap();
        assert_eq!(args.trajectories_per_update, 112);
        assert_eq!(args.clip_range_vf, Some(0.2));
        assert_eq!(args.target_kl, None);
    }
}
