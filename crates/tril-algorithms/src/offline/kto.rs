//! KTO: Kahneman-Tversky optimization (Ethayarajh et al. 2024,
//! <https://arxiv.org/abs/2402.01306>), preference tuning from *unpaired* examples, each
//! labelled desirable or undesirable (`tril_tasks::preference::UnpairedExample`).
//!
//! This file holds the typed `alg.args` ([`KtoArgs`]) and the pure functions
//! [`kto_kl_reference_point`] and [`kto_loss`], as TRL's `KTOTrainer` (`loss_type: kto`).
//! The registered training loop (`alg=kto`) is [`crate::offline::kto_run`].
//!
//! The reference point `z0` is estimated, as TRL, from *mismatched* pairs: the batch's
//! completions shifted by one against its prompts, scored by the policy and the reference;
//! it is detached and clamped at 0.
//!
//! # Logged metrics
//! | key | meaning |
//! |---|---|
//! | `kl` | the reference point `z0` of the batch |
//! | `rewards/chosen` | `chosen_sum / chosen_count`: mean `beta r` of desirable examples |
//! | `rewards/rejected` | `rejected_sum / rejected_count`: mean `beta r` of undesirable examples |
//! | `rewards/margins` | chosen minus rejected (when both are present) |
//!
//! # Deviations from TRL
//! - No `apo_zero_unpaired` loss type, and no check that the weights balance the label
//!   counts (TRL warns when `desirable_weight * n_D / (undesirable_weight * n_U)` is
//!   outside [1, 4/3]).

use crate::validate::ensure;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::ops::to_f32;
use tril_core::CoreError;

/// KTO's `alg.args` (defaults: TRL's `KTOConfig`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KtoArgs {
    /// Inverse temperature of the implicit reward `r = log pi - log pi_ref` (TRL: 0.1).
    pub beta: f64,
    /// Weight lambda_D of desirable examples (TRL: 1.0).
    pub desirable_weight: f64,
    /// Weight lambda_U of undesirable examples (TRL: 1.0).
    pub undesirable_weight: f64,
    /// The policy: `builtin:tiny-gpt2`, a local HF directory or a hub id in the HF cache
    /// (the learning rate is `alg.optimizer.args.lr`; TRL's KTO: 1e-6).
    pub model_name: String,
    /// The frozen reference; `null` = a copy of the initial policy.
    pub ref_model_name: Option<String>,
    /// Seeds model initialisation, shuffling and the mismatched KL pairs.
    pub seed: u64,
    /// Passes over the training examples (TRL: 3).
    pub epochs: usize,
    /// Examples per optimizer step (TRL: 8 x 1).
    pub batch_size: usize,
    /// Micro-batches per optimizer step; `z0` is estimated per micro-batch.
    pub grad_accumulation: usize,
    /// Global gradient-norm clip (TRL: 1.0).
    pub max_grad_norm: f64,
    /// Prompt + completion tokens kept (TRL: 1024).
    pub max_length: usize,
    /// Prompt tokens kept (TRL <= 0.2x: 512).
    pub max_prompt_length: usize,
    /// Evaluate every this many optimizer steps (0: at the start and end only).
    pub eval_every: usize,
    /// Examples per forward pass at evaluation (and per `z0` estimate there).
    pub eval_batch_size: usize,
    /// Splits evaluated.
    pub eval_splits: Vec<tril_core::plugin::Split>,
    /// Evaluate before training.
    pub eval_zero_shot: bool,
    /// Write a checkpoint (with the exact trainer state `--resume` reads) every
    /// `save_every` optimizer steps; the final one is always written.
    pub save_checkpoints: bool,
    /// Optimizer steps between checkpoints when `save_checkpoints` (TRL's `save_steps`).
    pub save_every: usize,
}

impl Default for KtoArgs {
    fn default() -> Self {
        KtoArgs {
            beta: 0.1,
            desirable_weight: 1.0,
            undesirable_weight: 1.0,
            model_name: "builtin:tiny-gpt2".into(),
            ref_model_name: None,
            seed: 0,
            epochs: 3,
            batch_size: 8,
            grad_accumulation: 1,
            max_grad_norm: 1.0,
            max_length: 1024,
            max_prompt_length: 512,
            eval_every: 0,
            eval_batch_size: 32,
            eval_splits: vec![tril_core::plugin::Split::Val],
            eval_zero_shot: true,
            save_checkpoints: false,
            save_every: 500,
        }
    }
}

impl KtoArgs {
    /// Deserializes and range-checks `alg.args` ([`Ranges`]); errors name the key, value and file.
    pub fn extract(section: &Section<'_>) -> Result<Self, CoreError> {
        section.extract_checked()
    }
}

impl Ranges for KtoArgs {
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), CoreError> {
        let (a, section) = (self, c.section());
        ensure(a.beta.is_finite() && a.beta > 0.0, section, "beta", "expected a finite beta > 0")?;
        let weight_ok = |w: f64| w.is_finite() && w > 0.0;
        ensure(weight_ok(a.desirable_weight), section, "desirable_weight", "expected a finite weight > 0")?;
        ensure(weight_ok(a.undesirable_weight), section, "undesirable_weight", "expected a finite weight > 0")?;
        ensure(a.max_length > 0, section, "max_length", "expected at least 1 token")?;
        let prompt_ok = a.max_prompt_length > 0 && a.max_prompt_length < a.max_length;
        ensure(prompt_ok, section, "max_prompt_length", "expected at least 1 token and fewer than max_length")?;
        c.at_least("epochs", a.epochs, 1)?;
        crate::settings::loop_settings!(a).check_ranges(c)?;
        Ok(())
    }
}

/// The reference point `z0`: the batch estimate of `KL(pi || pi_ref)` from mismatched
/// pairs, detached and clamped at 0 (TRL's `kl`).
///
/// ```tex
/// z_0 = \max\Big(0,\ \frac{1}{B}\sum_j \log\pi_\theta(y'_j \mid x_j) - \log\pi_{ref}(y'_j \mid x_j)\Big)
/// ```
///
/// # Shapes
/// `policy_kl_logps`, `ref_kl_logps`: `[B]` (summed sequence log-probs) -> `[1]`
pub fn kto_kl_reference_point<B: Backend>(policy_kl_logps: Tensor<B, 1>, ref_kl_logps: Tensor<B, 1>) -> Tensor<B, 1> {
    let policy_kl_logps = to_f32(policy_kl_logps);
    let ref_kl_logps = to_f32(ref_kl_logps);
    (policy_kl_logps - ref_kl_logps).mean().detach().clamp_min(0.0)
}

/// Detached statistics of one KTO batch (sums and counts, so micro-batches add up).
#[derive(Debug, Clone)]
pub struct KtoStats<B: Backend> {
    /// `beta (log pi(y|x) - log pi_ref(y|x))` per example.
    pub rewards: Tensor<B, 1>,
    /// Sum of the rewards of desirable examples.
    pub chosen_sum: Tensor<B, 1>,
    /// Sum of the rewards of undesirable examples.
    pub rejected_sum: Tensor<B, 1>,
    /// Number of desirable examples.
    pub chosen_count: Tensor<B, 1>,
    /// Number of undesirable examples.
    pub rejected_count: Tensor<B, 1>,
    /// The reference point used (`kl`).
    pub kl: Tensor<B, 1>,
}

/// The KTO loss (Ethayarajh et al. 2024, section 4), as TRL's `kto_loss`, averaged over
/// all examples of the batch:
///
/// ```tex
/// r = \log\frac{\pi_\theta(y \mid x)}{\pi_{ref}(y \mid x)}, \qquad
/// \mathcal{L} = \frac{1}{B}\sum_i \begin{cases}
///   \lambda_D \big(1 - \sigma(\beta (r_i - z_0))\big) & y_i \text{ desirable} \\
///   \lambda_U \big(1 - \sigma(\beta (z_0 - r_i))\big) & y_i \text{ undesirable}
/// \end{cases}
/// ```
///
/// `kl_ref_point` is `z0` from [`kto_kl_reference_point`] (detached; pass a zero tensor
/// to run without it).
///
/// # Shapes
/// `policy_logps`, `ref_logps`: `[B]` (summed sequence log-probs); `desirable`: `[B]`
/// (`true` = desirable); `kl_ref_point`: `[1]` -> loss `[1]`
///
/// # Deviations from the paper
/// None in value: the paper writes `lambda_y - v(x, y)` with `v = lambda_y sigma(.)`, which
/// is `lambda_y (1 - sigma(.))`; `z0` is the batch estimate from mismatched pairs.
pub fn kto_loss<B: Backend>(
    policy_logps: Tensor<B, 1>,
    ref_logps: Tensor<B, 1>,
    desirable: Tensor<B, 1, Bool>,
    kl_ref_point: Tensor<B, 1>,
    args: &KtoArgs,
) -> (Tensor<B, 1>, KtoStats<B>) {
    let policy_logps = to_f32(policy_logps);
    let ref_logps = to_f32(ref_logps);
    let kl_ref_point = to_f32(kl_ref_point);
    let [b] = policy_logps.dims();
    assert_eq!(ref_logps.dims(), [b], "kto_loss: policy_logps is [{b}] but ref_logps is {:?}", ref_logps.dims());
    assert_eq!(desirable.dims(), [b], "kto_loss: policy_logps is [{b}] but desirable is {:?}", desirable.dims());
    assert_eq!(kl_ref_point.dims(), [1], "kto_loss: kl_ref_point must be [1], got {:?}", kl_ref_point.dims());
    let z0 = kl_ref_point.detach(); // [1]
    let logratios = policy_logps - ref_logps; // [B]
    let chosen_losses = (sigmoid((logratios.clone() - z0.clone()) * args.beta).neg() + 1.0) * args.desirable_weight; // [B]
    let rejected_losses =
        (sigmoid((logratios.clone().neg() + z0.clone()) * args.beta).neg() + 1.0) * args.undesirable_weight; // [B]
    let losses = rejected_losses.mask_where(desirable.clone(), chosen_losses); // [B]

    let rewards = (logratios * args.beta).detach(); // [B]
    let is_chosen = desirable.float().cast(burn::tensor::FloatDType::F32); // [B]
    let is_rejected = is_chosen.clone().neg() + 1.0; // [B]
    let stats = KtoStats {
        chosen_sum: (rewards.clone() * is_chosen.clone()).sum(),
        rejected_sum: (rewards.clone() * is_rejected.clone()).sum(),
        chosen_count: is_chosen.sum(),
        rejected_count: is_rejected.sum(),
        rewards,
        kl: z0,
    };
    (losses.mean(), stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    use crate::test_util::{t1, Cpu};

    fn labels(v: &[bool]) -> Tensor<Cpu, 1, Bool> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    fn s(x: Tensor<Cpu, 1>) -> f64 {
        x.into_scalar() as f64
    }

    /// The KTO loss as a naive f64 loop (the independent implementation).
    fn naive(p: &[f64], r: &[f64], d: &[bool], z0: f64, a: &KtoArgs) -> f64 {
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let total: f64 = (0..p.len())
            .map(|i| {
                let lr = p[i] - r[i];
                if d[i] {
                    a.desirable_weight * (1.0 - sig(a.beta * (lr - z0)))
                } else {
                    a.undesirable_weight * (1.0 - sig(a.beta * (z0 - lr)))
                }
            })
            .sum();
        total / p.len() as f64
    }

    #[test]
    fn loss_and_stats_match_naive() {
        let p = [-10.0, -22.5, -5.0, -17.0, -30.0];
        let r = [-12.0, -20.0, -5.5, -15.0, -31.0];
        let d = [true, false, true, false, false];
        let kl_p = [-8.0, -9.0, -10.0];
        let kl_r = [-8.5, -10.0, -9.9];
        let z0 = s(kto_kl_reference_point(t1(&kl_p), t1(&kl_r)));
        assert!((z0 - 1.4 / 3.0).abs() < 1e-6);
        for args in [
            KtoArgs::default(),
            KtoArgs { beta: 0.5, desirable_weight: 1.33, undesirable_weight: 0.8, ..Default::default() },
        ] {
            let (loss, stats) = kto_loss(t1(&p), t1(&r), labels(&d), t1(&[z0]), &args);
            assert!((s(loss) - naive(&p, &r, &d, z0, &args)).abs() < 1e-6);
            let b = args.beta;
            assert!((s(stats.chosen_sum) - b * (2.0 + 0.5)).abs() < 1e-6);
            assert!((s(stats.rejected_sum) - b * (-2.5 - 2.0 + 1.0)).abs() < 1e-6);
            assert_eq!((s(stats.chosen_count), s(stats.rejected_count)), (2.0, 3.0));
        }
    }

    #[test]
    fn negative_kl_estimate_clamps_to_zero() {
        let z0 = kto_kl_reference_point(t1(&[-10.0, -10.0]), t1(&[-9.0, -8.0]));
        assert_eq!(s(z0), 0.0);
    }

    #[test]
    fn args_defaults_and_checks() {
        let parse = |yaml: &str| {
            let node = tril_core::config::parse_yaml(yaml, std::path::Path::new("alg/kto.yaml")).unwrap();
            KtoArgs::extract(&Section::new("alg.args", &node))
        };
        let a = parse("desirable_weight: 1.33\n").unwrap();
        assert_eq!((a.beta, a.desirable_weight, a.undesirable_weight), (0.1, 1.33, 1.0));
        let err = parse("undesirable_weight: 0\n").unwrap_err().to_string();
        assert!(err.contains("alg.args.undesirable_weight: expected a finite weight > 0"), "{err}");
    }
}
