//! GSPO: group sequence policy optimization (Zheng et al. 2025,
//! <https://arxiv.org/abs/2507.18071>), GRPO with a length-normalized *sequence-level*
//! importance ratio, as TRL's `GRPOTrainer(importance_sampling_level="sequence")` and
//! FAI-RL's GSPO recipe; plus GSPO-token (TRL `experimental/gspo_token`).
//!
//! This file holds the typed `alg.args` ([`GspoArgs`]) and the pure [`gspo_loss`]. The
//! advantages are GRPO's ([`crate::group::grpo::group_advantages`]), the clipped surrogate, KL
//! term and loss aggregations are shared with [`crate::group::grpo`], and the stats are
//! [`GrpoStats`] (same metric keys). The `gspo` algorithm registered here runs the loop
//! of [`crate::group::group_run`] with this loss.
//!
//! GSPO only differs from GRPO once training is off-policy (`steps_per_generation`
//! larger than the gradient-accumulation steps, or `num_iterations > 1`); on-policy the
//! ratio is 1 either way.

use crate::group::grpo::{add_kl_penalty, clipped_surrogate, GrpoLoss, GrpoStats, RewardScaling};
use crate::group::{check_settings, group_objective, GroupObjective};
use crate::validate::ensure;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::ops::to_f32;
use tril_core::plugin::Split;
use tril_core::CoreError;

/// Where the importance ratio lives and how its gradient flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GspoLevel {
    /// GSPO: one ratio `s_i` per sequence, clipped per sequence.
    Sequence,
    /// GSPO-token: `s_{i,t} = sg[s_i] pi(y_t) / sg[pi(y_t)]`, the same value as `s_i` with a
    /// per-token gradient path (it equals GSPO when the advantage is the same on every
    /// token of a sequence, the paper's eqs. 11 and 18; kept for token-level advantages).
    /// TRL had it as `trl/experimental/gspo_token` (v1.9); trl 1.16 no longer does.
    Token,
}

/// GSPO's `alg.args`; defaults follow the paper's setting as TRL's `paper_index.md`
/// gives it (and FAI-RL's recipe): eps 3e-4 / 4e-4, beta 0, `loss_type: grpo`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GspoArgs {
    /// Completions sampled per prompt, `G` (TRL: 8; FAI-RL init `group_size: 4`, which it
    /// never passed to TRL, and HEAD `num_generations: 8`).
    pub num_generations: usize,
    /// Lower clip range of the sequence ratio (paper section 5.1: 3e-4).
    pub epsilon: f64,
    /// Upper clip range of the sequence ratio (paper section 5.1: 4e-4).
    pub epsilon_high: f64,
    /// Coefficient of the per-token k3 KL to the reference (the paper: 0).
    pub beta: f64,
    /// Aggregation (`grpo` = the paper's per-sequence mean; TRL's GRPO default is `dapo`).
    pub loss_type: GrpoLoss,
    /// Advantage scaling (as GRPO: `group`).
    pub scale_rewards: RewardScaling,
    /// GSPO (`sequence`) or GSPO-token (`token`).
    pub level: GspoLevel,
    /// Micro-batches of `batch_size` per generation batch (the paper: 4 mini-batches per
    /// rollout batch; null: `grad_accumulation`, one optimizer step, as TRL).
    pub steps_per_generation: Option<usize>,
    /// Updates per generation batch (TRL: 1).
    pub num_iterations: usize,
    /// Sampling temperature (TRL: 1.0).
    pub temperature: f64,
    /// Maximum generated tokens, also the Dr. GRPO normalizer (TRL: 512; FAI-RL:
    /// `max_length - max_prompt_length` = 256).
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

impl Default for GspoArgs {
    fn default() -> Self {
        GspoArgs {
            num_generations: 8,
            epsilon: 3e-4,
            epsilon_high: 4e-4,
            beta: 0.0,
            loss_type: GrpoLoss::Grpo,
            scale_rewards: RewardScaling::Group,
            level: GspoLevel::Sequence,
            steps_per_generation: Some(4),
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

impl Ranges for GspoArgs {
    /// The group settings' ranges ([`check_settings`]): `num_generations` >= 2 (the
    /// group-relative advantage needs two), `epsilon` in (0, 1), `epsilon_high` > 0, `beta`
    /// >= 0, `temperature` > 0, counts >= 1.
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), CoreError> {
        let (args, section) = (self, c.section());
        let high_ok = args.epsilon_high.is_finite() && args.epsilon_high > 0.0;
        let high = ensure(high_ok, section, "epsilon_high", "expected > 0");
        check_settings(section, &args.settings(), args.epsilon, high)
    }
}

impl GspoArgs {
    /// Deserializes and range-checks `alg.args` ([`Ranges`]); errors name the key, value and file.
    pub fn extract(section: &Section<'_>) -> Result<Self, CoreError> {
        section.extract_checked()
    }
}

/// Length-normalized sequence log-ratio `log s_i = (1/|y_i|) sum_t m_t (log pi - log pi_old)`
/// (an empty sequence counts as length 1, as TRL).
///
/// # Shapes
/// `new_logprobs`, `old_logprobs`, `mask`: `[N, T]` -> `[N, 1]`
pub fn sequence_log_ratio<B: Backend>(
    new_logprobs: Tensor<B, 2>,
    old_logprobs: Tensor<B, 2>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let new_logprobs = to_f32(new_logprobs);
    let old_logprobs = to_f32(old_logprobs);
    let mask = to_f32(mask);
    ((new_logprobs - old_logprobs) * mask.clone()).sum_dim(1) / mask.sum_dim(1).clamp_min(1.0)
}

/// The GSPO objective (paper section 4.1), with GRPO's optional k3 KL per token:
///
/// ```tex
/// s_i = \Big(\frac{\pi_\theta(y_i \mid x)}{\pi_{old}(y_i \mid x)}\Big)^{1/|y_i|}
///     = \exp\Big(\frac{1}{|y_i|}\sum_t \log\frac{\pi_\theta(y_{i,t})}{\pi_{old}(y_{i,t})}\Big), \qquad
/// J = \frac{1}{G}\sum_i \min\big(s_i \hat A_i,\ \operatorname{clip}(s_i, 1-\epsilon, 1+\epsilon_{high})\hat A_i\big)
/// ```
///
/// The loss is `-J` aggregated by [`GspoArgs::loss_type`] (`grpo` gives the paper's
/// `1/G sum_i`, since the per-token loss is constant within a sequence); with
/// [`GspoLevel::Token`] the ratio is `sg[s_i] exp(log pi - sg[log pi])`, equal in value.
/// Clip statistics are per sequence for [`GspoLevel::Sequence`] and per masked token for
/// [`GspoLevel::Token`] (TRL's). `num_items_in_batch` is only read by `dapo`.
///
/// # Shapes
/// `new_logprobs`, `old_logprobs`, `ref_logprobs`, `mask`: `[N, T]`; `advantages`: `[N]`
/// -> loss `[1]`
///
/// # Panics
/// When `args.beta != 0` and `ref_logprobs` is `None`.
///
/// # Deviations from the paper
/// - Optional KL term (`beta`, 0 by default as in the paper) and TRL's aggregations.
pub fn gspo_loss<B: Backend>(
    new_logprobs: Tensor<B, 2>,
    old_logprobs: Tensor<B, 2>,
    ref_logprobs: Option<Tensor<B, 2>>,
    advantages: Tensor<B, 1>,
    mask: Tensor<B, 2>,
    args: &GspoArgs,
    num_items_in_batch: Option<f64>,
) -> (Tensor<B, 1>, GrpoStats<B>) {
    let new_logprobs = to_f32(new_logprobs);
    let old_logprobs = to_f32(old_logprobs);
    let ref_logprobs = ref_logprobs.map(to_f32);
    let advantages = to_f32(advantages);
    let mask = to_f32(mask);
    let [n, t] = mask.dims();
    let log_s = sequence_log_ratio(new_logprobs.clone(), old_logprobs, mask.clone()); // [N, 1]
    let (per_token_loss, mut stats) = match args.level {
        GspoLevel::Sequence => {
            let (per_seq_loss, stats) =
                clipped_surrogate(log_s.exp(), advantages, mask.clone(), args.epsilon, args.epsilon_high); // [N, 1]
            (per_seq_loss.expand([n, t]), stats) // [N, T]
        }
        GspoLevel::Token => {
            let log_w = new_logprobs.clone() - new_logprobs.clone().detach() + log_s.detach(); // [N, T]
            clipped_surrogate(log_w.exp(), advantages, mask.clone(), args.epsilon, args.epsilon_high)
            // [N, T]
        }
    };
    let per_token_loss =
        add_kl_penalty(per_token_loss, new_logprobs, ref_logprobs, mask.clone(), args.beta, &mut stats);
    let loss = args.loss_type.aggregate(per_token_loss, mask, args.max_completion_length, num_items_in_batch);
    (loss, stats)
}

group_objective!(GspoArgs, id: "gspo", loss: gspo_loss);

tril_core::register!(algorithm,
    id: "gspo",
    doc: "GSPO: GRPO with a length-normalized sequence-level importance ratio (TRL importance_sampling_level=sequence, FAI-RL's gspo).",
    config: GspoArgs,
    build: crate::group::group_run::build::<GspoArgs>);

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::{t1_on as t1, t2_on as t2, Cpu};

    const NEW: [f64; 6] = [-1.0, -0.5, -2.0, -0.3, -1.1, -0.7];
    const OLD: [f64; 6] = [-1.0004, -0.5002, -9.0, -0.3, -1.1001, -0.6981];
    const MASK: [f64; 6] = [1.0, 1.0, 0.0, 1.0, 1.0, 1.0];
    const ADV: [f64; 2] = [1.0, -2.0];

    /// The paper's objective as a naive loop: `-(1/G) sum_i min(s_i A_i, clip(s_i) A_i)`.
    fn naive(eps_low: f64, eps_high: f64) -> f64 {
        let mut total = 0.0;
        for (i, adv) in ADV.iter().enumerate() {
            let row = i * 3..i * 3 + 3;
            let len: f64 = MASK[row.clone()].iter().sum();
            let log_s: f64 = row.map(|j| (NEW[j] - OLD[j]) * MASK[j]).sum::<f64>() / len;
            let s = log_s.exp();
            total += -(s * adv).min(s.clamp(1.0 - eps_low, 1.0 + eps_high) * adv) / 2.0;
        }
        total
    }

    #[test]
    fn sequence_and_token_levels_match_the_paper() {
        for level in [GspoLevel::Sequence, GspoLevel::Token] {
            for (lo, hi) in [(3e-4, 4e-4), (0.2, 0.2)] {
                let args = GspoArgs { level, epsilon: lo, epsilon_high: hi, ..Default::default() };
                let (loss, stats) =
                    gspo_loss::<Cpu>(t2(&NEW, 2), t2(&OLD, 2), None, t1(&ADV), t2(&MASK, 2), &args, None);
                let (got, want) = (loss.into_scalar() as f64, naive(lo, hi));
                assert!((got - want).abs() < 1e-6, "{level:?} {lo}: {got} vs {want}");
                // log s = (3e-4, -6e-4): with (3e-4, 4e-4) row 1 (A < 0) is clipped low, row 0 is not.
                let low = stats.clip_ratio_low.into_scalar() as f64;
                let want_low = match (lo == 3e-4, level) {
                    (false, _) => 0.0,
                    (true, GspoLevel::Sequence) => 0.5, // 1 of 2 sequences
                    (true, GspoLevel::Token) => 0.6,    // 3 of 5 masked tokens
                };
                assert!((low - want_low).abs() < 1e-6 && stats.kl_mean.is_none(), "{level:?} {lo}: {low}");
            }
        }
    }

    #[test]
    fn token_level_has_the_sequence_level_gradient_for_equal_token_advantages() {
        type Ad = tril_core::backend::CpuAutodiff;
        let grad = |level| {
            let new = t2::<Ad>(&NEW, 2).require_grad();
            let args = GspoArgs { level, epsilon: 0.2, epsilon_high: 0.2, ..Default::default() };
            let (loss, _) = gspo_loss(new.clone(), t2(&OLD, 2), None, t1(&ADV), t2(&MASK, 2), &args, None);
            let grads = loss.backward();
            new.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap()
        };
        let (seq, tok) = (grad(GspoLevel::Sequence), grad(GspoLevel::Token));
        for (a, b) in seq.iter().zip(&tok) {
            assert!((a - b).abs() < 1e-6, "{seq:?} vs {tok:?}");
        }
        assert_eq!(seq[2], 0.0); // a masked token gets no gradient
    }

    #[test]
    fn paper_defaults_parse() {
        let node = tril_core::config::parse_yaml("level: token\n", std::path::Path::new("alg/gspo.yaml")).unwrap();
        let args = GspoArgs::extract(&Section::new("alg.args", &node)).unwrap();
        assert_eq!((args.epsilon, args.epsilon_high, args.beta), (3e-4, 4e-4, 0.0));
        assert_eq!(
            (args.level, args.loss_type, args.steps_per_generation),
            (GspoLevel::Token, GrpoLoss::Grpo, Some(4))
        );
    }
}
