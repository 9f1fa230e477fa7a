//! GRPO: group relative policy optimization (Shao et al. 2024, DeepSeekMath,
//! <https://arxiv.org/abs/2402.03300>), with the loss aggregations of TRL's `GRPOTrainer`
//! (Dr. GRPO, <https://arxiv.org/abs/2503.20783>; DAPO, <https://arxiv.org/abs/2503.14476>).
//!
//! This file holds the typed `alg.args` ([`GrpoArgs`]), the pure functions
//! [`group_advantages`] and [`grpo_loss`], and the registration of the `grpo` algorithm;
//! its generate-score-update loop is [`crate::group::group_run`], shared with GSPO
//! ([`crate::group::gspo`]), which also reuses the advantages, the clipped surrogate and the
//! aggregations below, and with RLOO ([`crate::group::rloo`], which reuses the clipped
//! surrogate) and REINFORCE++ ([`crate::group::reinforce_pp`]). The loop's own metrics are
//! listed in [`crate::group::group_run`].
//!
//! # Logged metrics
//! | key | meaning |
//! |---|---|
//! | `losses/clip_ratio_low` | fraction of masked tokens with `r < 1 - eps` and `A < 0` (TRL `clip_ratio/low_mean`) |
//! | `losses/clip_ratio_high` | fraction with `r > 1 + eps_high` and `A > 0` (TRL `clip_ratio/high_mean`) |
//! | `losses/clip_ratio_region` | either of the two (TRL `clip_ratio/region_mean`) |
//! | `objective/kl` | masked mean of the k3 estimate of `KL(pi || ref)` (TRL `kl`); only with a reference |
//!
//! # Deviations from TRL
//! - The loss is not divided by the gradient-accumulation steps (TRL does so inside
//!   `_compute_loss` for `grpo`, `bnpo` and `dr_grpo`); that belongs to the update loop.
//! - No `delta` (two-sided clipping), entropy masking, off-policy masking, vLLM importance
//!   correction, or the `cispo`/`sapo`/`luspo`/`vespo` loss types.
//! - Rewards are not NaN-aware (TRL's `nanmean`/`nanstd` skip unscorable completions).

use crate::group::{check_settings, group_objective, GroupObjective};
use crate::validate::ensure;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::ops::to_f32;
use tril_core::ops::{kl_estimate, masked_mean, KlEstimator};
use tril_core::plugin::Split;
use tril_core::CoreError;

/// How per-token losses are aggregated into the scalar loss (TRL's `loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrpoLoss {
    /// Mean over tokens of each sequence, then mean over sequences (the GRPO paper, eq. 3;
    /// biased towards short correct and long wrong completions).
    Grpo,
    /// Token-level mean over the micro-batch: `sum(l m) / sum(m)`.
    Bnpo,
    /// `sum(l m) / (N * max_completion_length)`, a constant normalizer (Dr. GRPO).
    DrGrpo,
    /// `sum(l m) / num_items_in_batch`, the completion-token count of the whole accumulated
    /// batch (DAPO; TRL's default).
    Dapo,
}

/// How group-relative advantages are scaled (TRL's `scale_rewards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardScaling {
    /// Divide by the standard deviation of the group (the GRPO paper).
    Group,
    /// Divide by the standard deviation of the whole batch (the mean is still per group).
    Batch,
    /// No scaling: `A = r - mean_group(r)` (Dr. GRPO).
    None,
}

/// GRPO's `alg.args`; defaults are TRL v1.9's `GRPOConfig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoArgs {
    /// Completions sampled per prompt, `G` (TRL: 8; FAI-RL's GSPO recipe: 4 at init, 8 at HEAD).
    pub num_generations: usize,
    /// Lower clip range: the ratio is clipped below at `1 - epsilon` (TRL: 0.2).
    pub epsilon: f64,
    /// Upper clip range, `1 + epsilon_high` (DAPO's clip-higher, e.g. 0.28); null: `epsilon`.
    pub epsilon_high: Option<f64>,
    /// Coefficient of the k3 KL-to-reference term in the loss. TRL's default is 0.0 (no
    /// reference model is loaded); the GRPO paper used 0.04; FAI-RL's recipes set 0.0.
    pub beta: f64,
    /// Aggregation of the per-token losses (TRL's default: `dapo`).
    pub loss_type: GrpoLoss,
    /// Advantage scaling (TRL: `group`).
    pub scale_rewards: RewardScaling,
    /// Micro-batches of `batch_size` per generation batch (TRL's "steps"); null:
    /// `grad_accumulation`, i.e. one optimizer step per generation (TRL).
    pub steps_per_generation: Option<usize>,
    /// Updates per generation batch, the paper's mu (TRL: 1, i.e. exactly on-policy).
    pub num_iterations: usize,
    /// Sampling temperature; log-probs are recomputed at the same temperature (TRL: 1.0).
    pub temperature: f64,
    /// Maximum generated tokens; also the Dr. GRPO normalizer (TRL: 512).
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

impl Default for GrpoArgs {
    fn default() -> Self {
        GrpoArgs {
            num_generations: 8,
            epsilon: 0.2,
            epsilon_high: None,
            beta: 0.0,
            loss_type: GrpoLoss::Dapo,
            scale_rewards: RewardScaling::Group,
            steps_per_generation: None,
            num_iterations: 1,
            temperature: 1.0,
            max_completion_length: 512,
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

impl Ranges for GrpoArgs {
    /// The group settings' ranges ([`check_settings`]): `num_generations` >= 2 (the
    /// group-relative advantage needs two), `epsilon` in (0, 1), `epsilon_high` > 0, `beta`
    /// >= 0, `temperature` > 0, counts >= 1.
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), CoreError> {
        let (args, section) = (self, c.section());
        let high_ok = args.epsilon_high.is_none_or(|e| e.is_finite() && e > 0.0);
        let high = ensure(high_ok, section, "epsilon_high", "expected a finite clip range > 0");
        check_settings(section, &args.settings(), args.epsilon, high)
    }
}

impl GrpoArgs {
    /// Deserializes and range-checks `alg.args` ([`Ranges`]); errors name the key, value and file.
    pub fn extract(section: &Section<'_>) -> Result<Self, CoreError> {
        section.extract_checked()
    }

    /// The upper clip range (`epsilon_high`, or `epsilon` when unset).
    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }
}

/// Group-relative advantages (GRPO paper, section 4.1.2, outcome supervision), as TRL:
///
/// ```tex
/// \hat A_i = \frac{r_i - \operatorname{mean}(r_{g(i)})}{\operatorname{std}(r_{g(i)}) + 10^{-4}}
/// ```
///
/// Rows `[k G, (k + 1) G)` are the `G` completions of prompt `k`. The standard deviation
/// is unbiased (Bessel's correction, as `torch.std`), over the group for
/// [`RewardScaling::Group`] and over all rows for [`RewardScaling::Batch`]; with
/// [`RewardScaling::None`] nothing is divided. A constant group gets zero advantages
/// (`0 / (0 + 1e-4)`), never NaN; `G = 1` (or one row with `Batch`) uses `std = 0`, as TRL.
///
/// # Shapes
/// `rewards`: `[N]` with `N = P G` -> `[N]`
///
/// # Panics
/// When `group_size` is 0 or does not divide `N`.
pub fn group_advantages<B: Backend>(rewards: Tensor<B, 1>, group_size: usize, scaling: RewardScaling) -> Tensor<B, 1> {
    let rewards = to_f32(rewards);
    let [n] = rewards.dims();
    assert!(
        group_size > 0 && n.is_multiple_of(group_size),
        "group_advantages: {n} rewards are not whole groups of num_generations = {group_size}"
    );
    let prompts = n / group_size;
    let grouped = rewards.clone().reshape([prompts, group_size]); // [P, G]
    let mean_grouped = grouped.clone().mean_dim(1); // [P, 1]
    let advantages = (grouped.clone() - mean_grouped).reshape([n]); // [N]
    let std = match scaling {
        RewardScaling::None => return advantages,
        RewardScaling::Group if group_size > 1 => grouped.var(1).sqrt().repeat_dim(1, group_size).reshape([n]), // [N]
        RewardScaling::Batch if n > 1 => rewards.var(0).sqrt().expand([n]),                                     // [N]
        RewardScaling::Group | RewardScaling::Batch => {
            Tensor::zeros([n], (&advantages.device(), burn::tensor::DType::F32))
        }
    };
    advantages / (std + 1e-4)
}

/// Statistics of the clipped surrogate (detached scalars; see the metric table above).
#[derive(Debug, Clone)]
pub struct GrpoStats<B: Backend> {
    /// Fraction with `r < 1 - epsilon` and a negative advantage.
    pub clip_ratio_low: Tensor<B, 1>,
    /// Fraction with `r > 1 + epsilon_high` and a positive advantage.
    pub clip_ratio_high: Tensor<B, 1>,
    /// Fraction clipped on either side.
    pub clip_ratio_region: Tensor<B, 1>,
    /// Masked mean of the per-token k3 KL to the reference (`None` without a reference).
    pub kl_mean: Option<Tensor<B, 1>>,
}

/// The clipped surrogate `-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)` and its stats.
///
/// `coef` is the importance ratio per token (`[N, T]`) or per sequence (`[N, 1]`);
/// token-level stats are masked means, sequence-level ones plain means over rows (TRL's
/// `global_masked_mean`). Shared with GSPO.
///
/// # Shapes
/// `coef`: `[N, K]` (`K` = `T` or 1), `advantages`: `[N]`, `mask`: `[N, T]` -> `[N, K]`
pub(crate) fn clipped_surrogate<B: Backend>(
    coef: Tensor<B, 2>,
    advantages: Tensor<B, 1>,
    mask: Tensor<B, 2>,
    eps_low: f64,
    eps_high: f64,
) -> (Tensor<B, 2>, GrpoStats<B>) {
    let [n, k] = coef.dims();
    let adv = advantages.reshape([n, 1]); // [N, 1]
    let pg_loss1 = coef.clone() * adv.clone(); // [N, K]
    let pg_loss2 = coef.clone().clamp(1.0 - eps_low, 1.0 + eps_high) * adv.clone(); // [N, K]
    let per_token_loss = pg_loss1.min_pair(pg_loss2).neg(); // [N, K]

    let coef = coef.detach();
    let is_low = coef.clone().lower_elem(1.0 - eps_low).bool_and(adv.clone().lower_elem(0.0).expand([n, k])); // [N, K]
    let is_high = coef.greater_elem(1.0 + eps_high).bool_and(adv.greater_elem(0.0).expand([n, k])); // [N, K]
    let is_region = is_low.clone().bool_or(is_high.clone()); // [N, K]
    let mean = |x: Tensor<B, 2>| if k == 1 { x.mean() } else { masked_mean(x, mask.clone()) };
    let stats = GrpoStats {
        clip_ratio_low: mean(is_low.float().cast(burn::tensor::FloatDType::F32)),
        clip_ratio_high: mean(is_high.float().cast(burn::tensor::FloatDType::F32)),
        clip_ratio_region: mean(is_region.float().cast(burn::tensor::FloatDType::F32)),
        kl_mean: None,
    };
    (per_token_loss, stats)
}

/// Adds `beta * k3(pi, ref)` to the per-token loss (when a reference is given) and logs
/// the masked mean KL. Shared with GSPO.
///
/// # Panics
/// When `beta != 0` and no reference log-probs are given.
///
/// # Shapes
/// `per_token_loss`, `new_logprobs`, `ref_logprobs`, `mask`: `[N, T]` -> `[N, T]`
pub(crate) fn add_kl_penalty<B: Backend>(
    per_token_loss: Tensor<B, 2>,
    new_logprobs: Tensor<B, 2>,
    ref_logprobs: Option<Tensor<B, 2>>,
    mask: Tensor<B, 2>,
    beta: f64,
    stats: &mut GrpoStats<B>,
) -> Tensor<B, 2> {
    let Some(ref_logprobs) = ref_logprobs else {
        assert!(beta == 0.0, "beta = {beta} needs reference log-probs");
        return per_token_loss;
    };
    let per_token_kl = kl_estimate(new_logprobs, ref_logprobs, KlEstimator::K3); // [N, T]
    stats.kl_mean = Some(masked_mean(per_token_kl.clone().detach(), mask));
    if beta == 0.0 {
        per_token_loss
    } else {
        per_token_loss + per_token_kl * beta
    }
}

/// [`GrpoLoss::Grpo`]: `mean_i( sum_t l m / max(sum_t m, 1) )`.
///
/// # Shapes
/// `per_token_loss`, `mask`: `[N, T]` -> `[1]`
pub fn grpo_normalize<B: Backend>(per_token_loss: Tensor<B, 2>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
    let per_token_loss = to_f32(per_token_loss);
    let mask = to_f32(mask);
    let per_seq = (per_token_loss * mask.clone()).sum_dim(1) / mask.sum_dim(1).clamp_min(1.0); // [N, 1]
    per_seq.mean()
}

/// [`GrpoLoss::Bnpo`]: `sum(l m) / max(sum(m), 1)` over the micro-batch.
///
/// # Shapes
/// `per_token_loss`, `mask`: `[N, T]` -> `[1]`
pub fn bnpo_normalize<B: Backend>(per_token_loss: Tensor<B, 2>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
    let per_token_loss = to_f32(per_token_loss);
    let mask = to_f32(mask);
    (per_token_loss * mask.clone()).sum() / mask.sum().clamp_min(1.0)
}

/// [`GrpoLoss::DrGrpo`]: `sum(l m) / (N * max_completion_length)`.
///
/// # Shapes
/// `per_token_loss`, `mask`: `[N, T]` -> `[1]`
pub fn dr_grpo_normalize<B: Backend>(
    per_token_loss: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    max_completion_length: usize,
) -> Tensor<B, 1> {
    let per_token_loss = to_f32(per_token_loss);
    let mask = to_f32(mask);
    let [n, _] = mask.dims();
    (per_token_loss * mask).sum() / (n * max_completion_length) as f64
}

/// [`GrpoLoss::Dapo`]: `sum(l m) / max(num_items_in_batch, 1)`, where `num_items_in_batch`
/// counts the completion tokens of the whole accumulated batch (all micro-batches of one
/// optimizer step); `None` uses this micro-batch's own count (then it equals BNPO).
///
/// # Shapes
/// `per_token_loss`, `mask`: `[N, T]` -> `[1]`
pub fn dapo_normalize<B: Backend>(
    per_token_loss: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    num_items_in_batch: Option<f64>,
) -> Tensor<B, 1> {
    let per_token_loss = to_f32(per_token_loss);
    let mask = to_f32(mask);
    let Some(items) = num_items_in_batch else {
        return bnpo_normalize(per_token_loss, mask);
    };
    (per_token_loss * mask).sum() / items.max(1.0)
}

impl GrpoLoss {
    /// Aggregates per-token losses with this loss type's normalizer.
    ///
    /// # Shapes
    /// `per_token_loss`, `mask`: `[N, T]` -> `[1]`
    pub fn aggregate<B: Backend>(
        self,
        per_token_loss: Tensor<B, 2>,
        mask: Tensor<B, 2>,
        max_completion_length: usize,
        num_items_in_batch: Option<f64>,
    ) -> Tensor<B, 1> {
        match self {
            GrpoLoss::Grpo => grpo_normalize(per_token_loss, mask),
            GrpoLoss::Bnpo => bnpo_normalize(per_token_loss, mask),
            GrpoLoss::DrGrpo => dr_grpo_normalize(per_token_loss, mask, max_completion_length),
            GrpoLoss::Dapo => dapo_normalize(per_token_loss, mask, num_items_in_batch),
        }
    }
}

/// The GRPO objective with token-level ratios (GRPO paper, eq. 3, with the KL of eq. 4
/// estimated by k3; the aggregation is [`GrpoArgs::loss_type`]):
///
/// ```tex
/// r_{i,t} = \exp(\log\pi_\theta(o_{i,t}) - \log\pi_{old}(o_{i,t})), \qquad
/// \ell_{i,t} = -\min\big(r_{i,t}\hat A_i,\ \operatorname{clip}(r_{i,t}, 1-\epsilon, 1+\epsilon_{high})\hat A_i\big)
///   + \beta\,\big(e^{\log\pi_{ref} - \log\pi_\theta} - (\log\pi_{ref} - \log\pi_\theta) - 1\big)
/// ```
///
/// `num_items_in_batch` is only read by [`GrpoLoss::Dapo`] (see [`dapo_normalize`]).
///
/// # Shapes
/// `new_logprobs`, `old_logprobs`, `ref_logprobs`, `mask`: `[N, T]`; `advantages`: `[N]`
/// -> loss `[1]`
///
/// # Panics
/// When `args.beta != 0` and `ref_logprobs` is `None`.
///
/// # Deviations from the paper
/// - The aggregation follows TRL's `loss_type` (the paper's is [`GrpoLoss::Grpo`]).
/// - The upper clip range may differ from the lower one (DAPO's clip-higher).
pub fn grpo_loss<B: Backend>(
    new_logprobs: Tensor<B, 2>,
    old_logprobs: Tensor<B, 2>,
    ref_logprobs: Option<Tensor<B, 2>>,
    advantages: Tensor<B, 1>,
    mask: Tensor<B, 2>,
    args: &GrpoArgs,
    num_items_in_batch: Option<f64>,
) -> (Tensor<B, 1>, GrpoStats<B>) {
    let new_logprobs = to_f32(new_logprobs);
    let old_logprobs = to_f32(old_logprobs);
    let ref_logprobs = ref_logprobs.map(to_f32);
    let advantages = to_f32(advantages);
    let mask = to_f32(mask);
    let ratio = (new_logprobs.clone() - old_logprobs).exp(); // [N, T]
    let (per_token_loss, mut stats) =
        clipped_surrogate(ratio, advantages, mask.clone(), args.epsilon, args.epsilon_high()); // [N, T]
    let per_token_loss =
        add_kl_penalty(per_token_loss, new_logprobs, ref_logprobs, mask.clone(), args.beta, &mut stats);
    let loss = args.loss_type.aggregate(per_token_loss, mask, args.max_completion_length, num_items_in_batch);
    (loss, stats)
}

group_objective!(GrpoArgs, id: "grpo", loss: grpo_loss);

tril_core::register!(algorithm,
    id: "grpo",
    doc: "GRPO: G sampled completions per prompt, group-normalized advantages, token-level clipped ratio, optional k3 KL (TRL's GRPOTrainer).",
    config: GrpoArgs,
    build: crate::group::group_run::build::<GrpoArgs>);

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::{t1, t2, Cpu};

    fn s(x: Tensor<Cpu, 1>) -> f64 {
        x.into_scalar() as f64
    }

    fn v(x: Tensor<Cpu, 1>) -> Vec<f64> {
        x.into_data().to_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
    }

    /// Naive f64 advantages (the independent implementation).
    fn naive_advantages(r: &[f64], g: usize, scaling: RewardScaling) -> Vec<f64> {
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
        let std = |xs: &[f64]| {
            let m = mean(xs);
            (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() as f64 - 1.0)).sqrt()
        };
        let batch_std = std(r);
        let mut out = Vec::new();
        for group in r.chunks(g) {
            for &x in group {
                let a = x - mean(group);
                out.push(match scaling {
                    RewardScaling::Group => a / (std(group) + 1e-4),
                    RewardScaling::Batch => a / (batch_std + 1e-4),
                    RewardScaling::None => a,
                });
            }
        }
        out
    }

    #[test]
    fn advantages_match_naive_and_constant_groups_are_zero() {
        let r = [1.0, 0.0, 0.5, 0.25, 3.0, 3.0, 3.0, 3.0];
        for scaling in [RewardScaling::Group, RewardScaling::Batch, RewardScaling::None] {
            let got = v(group_advantages(t1(&r), 4, scaling));
            for (a, b) in got.iter().zip(naive_advantages(&r, 4, scaling)) {
                assert!((a - b).abs() < 1e-5, "{scaling:?}: {got:?}");
            }
            assert!(got[4..].iter().all(|&a| a == 0.0), "{scaling:?}: {got:?}");
        }
        let single = v(group_advantages(t1(&[2.0, 5.0]), 1, RewardScaling::Group));
        assert_eq!(single, vec![0.0, 0.0]);
    }

    #[test]
    #[should_panic(expected = "7 rewards are not whole groups of num_generations = 4")]
    fn advantages_reject_partial_groups() {
        group_advantages(t1(&[0.0; 7]), 4, RewardScaling::Group);
    }

    /// Per-token losses and all four aggregations as naive loops.
    fn naive_loss(lp: &[[f64; 3]; 2], old: &[[f64; 3]; 2], adv: &[f64; 2], m: &[[f64; 3]; 2], kind: GrpoLoss) -> f64 {
        let (eps, max_len, items) = (0.2, 4.0, 9.0);
        let mut seq_means = 0.0;
        let (mut total, mut count) = (0.0, 0.0);
        for i in 0..2 {
            let (mut row, mut row_n) = (0.0, 0.0);
            for t in 0..3 {
                let r = (lp[i][t] - old[i][t]).exp();
                let l = -(r * adv[i]).min(r.clamp(1.0 - eps, 1.0 + eps) * adv[i]);
                row += l * m[i][t];
                row_n += m[i][t];
            }
            seq_means += row / f64::max(row_n, 1.0) / 2.0;
            total += row;
            count += row_n;
        }
        match kind {
            GrpoLoss::Grpo => seq_means,
            GrpoLoss::Bnpo => total / count,
            GrpoLoss::DrGrpo => total / (2.0 * max_len),
            GrpoLoss::Dapo => total / items,
        }
    }

    #[test]
    fn every_aggregation_matches_naive() {
        let lp = [[-1.0, -0.4, -2.0], [-0.3, -1.5, -0.9]];
        let old = [[-1.3, -0.5, -1.0], [-0.1, -1.5, -3.0]];
        let m = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]];
        let adv = [0.7, -1.2];
        let flat = |x: &[[f64; 3]; 2]| t2(&x.concat(), 2);
        for kind in [GrpoLoss::Grpo, GrpoLoss::Bnpo, GrpoLoss::DrGrpo, GrpoLoss::Dapo] {
            let args = GrpoArgs { loss_type: kind, max_completion_length: 4, ..Default::default() };
            let (loss, _) = grpo_loss(flat(&lp), flat(&old), None, t1(&adv), flat(&m), &args, Some(9.0));
            let want = naive_loss(&lp, &old, &adv, &m, kind);
            assert!((s(loss) - want).abs() < 1e-6, "{kind:?}: {want}");
        }
    }

    #[test]
    fn ratio_one_gives_minus_mean_advantage() {
        let lp = t2(&[-1.0, -2.0, -3.0, -0.5, -0.5, -0.5, -2.0, -1.0, -4.0], 3);
        let ragged = t2(&[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0], 3);
        let adv = [1.5, -0.5, 2.0];
        // The default (DAPO) with equal lengths, and GRPO with ragged lengths: -mean(A).
        let (loss, stats) =
            grpo_loss(lp.clone(), lp.clone(), None, t1(&adv), lp.ones_like(), &GrpoArgs::default(), None);
        assert!((s(loss) + 1.0).abs() < 1e-6);
        assert!(s(stats.clip_ratio_region) == 0.0 && stats.kl_mean.is_none());
        let grpo = GrpoArgs { loss_type: GrpoLoss::Grpo, ..Default::default() };
        let (loss, _) = grpo_loss(lp.clone(), lp.clone(), None, t1(&adv), ragged.clone(), &grpo, None);
        assert!((s(loss) + 1.0).abs() < 1e-6);
        // DAPO with ragged lengths weighs each sequence by its token count: -(3*1.5 - 0.5 + 2*2) / 6.
        let (loss, _) = grpo_loss(lp.clone(), lp.clone(), None, t1(&adv), ragged, &GrpoArgs::default(), None);
        assert!((s(loss) + 8.0 / 6.0).abs() < 1e-6);
        // A reference equal to the policy adds zero KL.
        let kl = GrpoArgs { beta: 0.04, ..Default::default() };
        let (loss, stats) = grpo_loss(lp.clone(), lp.clone(), Some(lp.clone()), t1(&adv), lp.ones_like(), &kl, None);
        assert!((s(loss) + 1.0).abs() < 1e-6 && s(stats.kl_mean.unwrap()).abs() < 1e-7);
    }

    #[test]
    fn args_defaults_and_checks() {
        let node = tril_core::config::parse_yaml(
            "loss_type: dr_grpo\nscale_rewards: none\nepsilon_high: 0.28\n",
            std::path::Path::new("alg/grpo.yaml"),
        )
        .unwrap();
        let args = GrpoArgs::extract(&Section::new("alg.args", &node)).unwrap();
        assert_eq!(
            (args.loss_type, args.scale_rewards, args.num_generations),
            (GrpoLoss::DrGrpo, RewardScaling::None, 8)
        );
        assert_eq!((args.epsilon, args.epsilon_high(), args.beta), (0.2, 0.28, 0.0));
        let node =
            tril_core::config::parse_yaml("num_generations: 1\n", std::path::Path::new("alg/grpo.yaml")).unwrap();
        let err = GrpoArgs::extract(&Section::new("alg.args", &node)).unwrap_err().to_string();
        assert!(err.contains("alg.args.num_generations: expected at least 2"), "{err}");
        let node = tril_core::config::parse_yaml("loss_type: gspo\n", std::path::Path::new("alg/grpo.yaml")).unwrap();
        assert!(GrpoArgs::extract(&Section::new("alg.args", &node)).is_err());
    }
}
