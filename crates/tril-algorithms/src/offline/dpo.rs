//! DPO: direct preference optimization (Rafailov et al. 2023,
//! <https://arxiv.org/abs/2305.18290>) and three of TRL's `loss_type` variants: cDPO label
//! smoothing, IPO, hinge (SLiC) and robust DPO.
//!
//! This file holds the typed `alg.args` ([`DpoArgs`]) and the pure functions
//! [`sequence_logprobs`] and [`dpo_loss`]. The registered training loop (`alg=dpo`) is
//! [`crate::offline::dpo_run`].
//!
//! # Logged metrics (TRL's keys)
//! | key | meaning |
//! |---|---|
//! | `rewards/chosen` | mean of `beta (log pi(y_w) - log pi_ref(y_w))` |
//! | `rewards/rejected` | mean of `beta (log pi(y_l) - log pi_ref(y_l))` |
//! | `rewards/accuracies` | fraction of pairs whose chosen reward is strictly larger |
//! | `rewards/margins` | mean of chosen minus rejected reward |

use crate::validate::ensure;
use burn::tensor::activation::{log_sigmoid, relu};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::ops::to_f32;
use tril_core::CoreError;

/// The DPO loss variant (TRL's `loss_type`, one value; TRL also accepts a weighted list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpoLoss {
    /// `-log sigmoid(beta h)`, with cDPO label smoothing when `label_smoothing > 0`.
    Sigmoid,
    /// IPO (Azar et al. 2023, <https://arxiv.org/abs/2310.12036>, eq. 17): `(h - 1/(2 beta))^2`
    /// on per-token *averaged* log-probs.
    Ipo,
    /// SLiC's hinge (Zhao et al. 2023, <https://arxiv.org/abs/2305.10425>): `relu(1 - beta h)`.
    Hinge,
    /// Robust DPO (Chowdhury et al. 2024, <https://arxiv.org/abs/2403.00409>): unbiased
    /// under preference labels flipped with probability `label_smoothing`.
    Robust,
}

/// How per-token log-probs become one log-prob per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceReduction {
    /// `sum_t m_t log pi(y_t)`: the sequence log-likelihood (DPO, cDPO, hinge, robust, KTO).
    Sum,
    /// The sum divided by the number of real tokens (at least 1): TRL's IPO.
    Mean,
}

impl DpoLoss {
    /// The reduction TRL applies before this loss: [`SequenceReduction::Mean`] for IPO (to
    /// policy *and* reference log-probs), [`SequenceReduction::Sum`] otherwise.
    pub fn reduction(self) -> SequenceReduction {
        match self {
            DpoLoss::Ipo => SequenceReduction::Mean,
            DpoLoss::Sigmoid | DpoLoss::Hinge | DpoLoss::Robust => SequenceReduction::Sum,
        }
    }
}

/// DPO's `alg.args`. Loss defaults are TRL's `DPOConfig`; the training fields carry the
/// values of TRL, Salamandra's usage example and FAI-RL's recipes in their docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoArgs {
    /// Inverse temperature of the implicit reward (IPO: the regularizer tau). TRL: 0.1;
    /// Salamandra's usage example sets 0.2; FAI-RL leaves TRL's 0.1 (not configurable).
    pub beta: f64,
    /// The loss variant.
    pub loss_type: DpoLoss,
    /// Label-flip probability eps in [0, 0.5): cDPO smoothing for `sigmoid`, the noise rate
    /// for `robust` (the paper suggests 0.1); ignored by `ipo` and `hinge`.
    pub label_smoothing: f64,
    /// Ignore the reference in the loss (`h = log-ratio of the policy alone`); rewards are
    /// still reported against the given reference log-probs, as TRL.
    pub reference_free: bool,
    /// The policy: `builtin:tiny-gpt2`, a local HF directory or a hub id in the HF cache.
    /// (The learning rate is `alg.optimizer.args.lr`: TRL 1e-6; Salamandra 5e-6; FAI-RL
    /// 1e-5 full, 1e-4 LoRA.)
    pub model_name: String,
    /// The frozen reference; `null` = a copy of the initial policy (Salamandra's
    /// `ref_model_path` default; FAI-RL loads the same model explicitly).
    pub ref_model_name: Option<String>,
    /// Seeds model initialisation and shuffling.
    pub seed: u64,
    /// Global gradient-norm clip (TRL: 1.0; FAI-RL's DeepSpeed: 1.0).
    pub max_grad_norm: f64,
    /// Evaluate every this many optimizer steps (0: at the start and end only).
    pub eval_every: usize,
    /// Pairs per forward pass at evaluation.
    pub eval_batch_size: usize,
    /// Splits evaluated (TRL's `eval_dataset`).
    pub eval_splits: Vec<tril_core::plugin::Split>,
    /// Evaluate before training.
    pub eval_zero_shot: bool,
    /// Write a checkpoint (with the exact trainer state `--resume` reads) every
    /// `save_every` optimizer steps; the final one is always written.
    pub save_checkpoints: bool,
    /// Optimizer steps between checkpoints when `save_checkpoints` (TRL's `save_steps`).
    pub save_every: usize,
    /// Passes over the preference data (`num_train_epochs`; Salamandra: 2; FAI-RL: 1).
    pub epochs: usize,
    /// Pairs per optimizer step on this process (`per_device_train_batch_size` x
    /// `gradient_accumulation_steps`; TRL: 8 x 1; Salamandra: 2 x 8; FAI-RL: 1 x 16).
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step (`gradient_accumulation_steps`).
    pub grad_accumulation: usize,
    /// Prompt + completion tokens kept (TRL: 1024; Salamandra: 8192; FAI-RL: 2048).
    pub max_length: usize,
    /// Prompt tokens kept (TRL <= 0.2x: 512; Salamandra: 128; FAI-RL: 1024).
    pub max_prompt_length: usize,
}

impl Default for DpoArgs {
    fn default() -> Self {
        DpoArgs {
            beta: 0.1,
            loss_type: DpoLoss::Sigmoid,
            label_smoothing: 0.0,
            reference_free: false,
            model_name: "builtin:tiny-gpt2".into(),
            ref_model_name: None,
            seed: 0,
            max_grad_norm: 1.0,
            eval_every: 0,
            eval_batch_size: 32,
            eval_splits: vec![tril_core::plugin::Split::Val],
            eval_zero_shot: true,
            save_checkpoints: false,
            save_every: 500,
            epochs: 3,
            batch_size: 8,
            grad_accumulation: 1,
            max_length: 1024,
            max_prompt_length: 512,
        }
    }
}

impl DpoArgs {
    /// Deserializes and range-checks `alg.args` ([`Ranges`]); errors name the key, value and file.
    pub fn extract(section: &Section<'_>) -> Result<Self, CoreError> {
        section.extract_checked()
    }
}

impl Ranges for DpoArgs {
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), CoreError> {
        let (a, section) = (self, c.section());
        ensure(a.beta.is_finite() && a.beta > 0.0, section, "beta", "expected a finite beta > 0")?;
        let eps_ok = (0.0..0.5).contains(&a.label_smoothing);
        ensure(eps_ok, section, "label_smoothing", "expected a label-flip probability in [0, 0.5)")?;
        let norm_ok = a.max_grad_norm.is_finite() && a.max_grad_norm > 0.0;
        ensure(norm_ok, section, "max_grad_norm", "expected a finite norm > 0")?;
        ensure(a.eval_batch_size > 0, section, "eval_batch_size", "expected at least 1")?;
        ensure(a.epochs > 0, section, "epochs", "expected at least 1")?;
        ensure(a.grad_accumulation > 0, section, "grad_accumulation", "expected at least 1")?;
        let divisible = a.batch_size > 0 && a.batch_size.is_multiple_of(a.grad_accumulation);
        ensure(divisible, section, "batch_size", "expected a positive multiple of grad_accumulation")?;
        ensure(a.max_length > 0, section, "max_length", "expected at least 1 token")?;
        let prompt_ok = a.max_prompt_length > 0 && a.max_prompt_length < a.max_length;
        ensure(prompt_ok, section, "max_prompt_length", "expected at least 1 token and fewer than max_length")?;
        crate::settings::loop_settings!(a).check_ranges(c)?;
        Ok(())
    }
}

/// One log-prob per sequence from per-token log-probs of the completion tokens.
///
/// ```tex
/// \text{Sum: } \sum_t m_t \ell_t, \qquad \text{Mean: } \frac{\sum_t m_t \ell_t}{\max(\sum_t m_t, 1)}
/// ```
///
/// # Shapes
/// `token_logprobs`, `mask`: `[B, T]` -> `[B]`
pub fn sequence_logprobs<B: Backend>(
    token_logprobs: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    reduction: SequenceReduction,
) -> Tensor<B, 1> {
    let token_logprobs = to_f32(token_logprobs);
    let mask = to_f32(mask);
    let [b, _] = mask.dims();
    let sum = (token_logprobs * mask.clone()).sum_dim(1); // [B, 1]
    match reduction {
        SequenceReduction::Sum => sum.reshape([b]),
        SequenceReduction::Mean => (sum / mask.sum_dim(1).clamp_min(1.0)).reshape([b]),
    }
}

/// Detached reward statistics of one batch of pairs.
#[derive(Debug, Clone)]
pub struct DpoStats<B: Backend> {
    /// `beta (log pi(y_w) - log pi_ref(y_w))` per pair.
    pub rewards_chosen: Tensor<B, 1>,
    /// `beta (log pi(y_l) - log pi_ref(y_l))` per pair.
    pub rewards_rejected: Tensor<B, 1>,
    /// Fraction of pairs with `rewards_chosen > rewards_rejected`.
    pub reward_accuracy: Tensor<B, 1>,
    /// Mean of `rewards_chosen - rewards_rejected`.
    pub reward_margin: Tensor<B, 1>,
}

/// cDPO (Mitchell 2023, "A note on DPO with noisy preferences"); eps = 0 is the DPO loss.
///
/// ```tex
/// \ell = -(1-\epsilon)\log\sigma(\beta h) - \epsilon \log\sigma(-\beta h)
/// ```
pub fn sigmoid_loss<B: Backend>(h: Tensor<B, 1>, beta: f64, label_smoothing: f64) -> Tensor<B, 1> {
    let h = to_f32(h);
    let z = h * beta; // [B]
    log_sigmoid(z.clone()) * (label_smoothing - 1.0) - log_sigmoid(z.neg()) * label_smoothing
}

/// Robust DPO (Chowdhury et al. 2024), as TRL:
///
/// ```tex
/// \ell = \frac{-(1-\epsilon)\log\sigma(\beta h) + \epsilon \log\sigma(-\beta h)}{1 - 2\epsilon}
/// ```
pub fn robust_loss<B: Backend>(h: Tensor<B, 1>, beta: f64, label_smoothing: f64) -> Tensor<B, 1> {
    let h = to_f32(h);
    let z = h * beta; // [B]
    (log_sigmoid(z.clone()) * (label_smoothing - 1.0) + log_sigmoid(z.neg()) * label_smoothing)
        / (1.0 - 2.0 * label_smoothing)
}

/// IPO (Azar et al. 2023, eq. 17): `(h - 1/(2 beta))^2`, `h` from averaged log-probs.
pub fn ipo_loss<B: Backend>(h: Tensor<B, 1>, beta: f64) -> Tensor<B, 1> {
    let h = to_f32(h);
    (h - 1.0 / (2.0 * beta)).powf_scalar(2.0)
}

/// SLiC hinge: `relu(1 - beta h)`.
pub fn hinge_loss<B: Backend>(h: Tensor<B, 1>, beta: f64) -> Tensor<B, 1> {
    let h = to_f32(h);
    relu((h * beta).neg() + 1.0)
}

/// The DPO loss (Rafailov et al. 2023, eq. 7) and its variants, over one log-prob per
/// sequence ([`sequence_logprobs`] with [`DpoLoss::reduction`]):
///
/// ```tex
/// h = \big(\log\pi_\theta(y_w) - \log\pi_\theta(y_l)\big) - \big(\log\pi_{ref}(y_w) - \log\pi_{ref}(y_l)\big), \qquad
/// \mathcal{L}_{DPO} = -\mathbb{E}\,\log\sigma(\beta h)
/// ```
///
/// Returns the mean over pairs of [`sigmoid_loss`], [`ipo_loss`], [`hinge_loss`] or
/// [`robust_loss`]; `reference_free` drops the reference term of `h`.
///
/// # Shapes
/// `policy_chosen`, `policy_rejected`, `ref_chosen`, `ref_rejected`: `[B]` -> loss `[1]`
///
/// Checked against trl 1.16.0's own `DPOTrainer._compute_loss` (`tests/trl_losses.rs`).
///
/// # Deviations from the paper and from TRL 1.16
/// - `label_smoothing` (cDPO) on the sigmoid loss is TRL <= 0.2x's; TRL v1.9 and 1.16
///   dropped it from `sigmoid` and keep it for `robust` (and `exo_pair`/`aot`) only. With
///   the default 0 they agree.
/// - `reference_free` is TRL <= 0.2x's; TRL 1.16's `DPOConfig` no longer has it.
///
/// `lengths` (chosen, rejected completion lengths, `[B]` each) is given when the log-probs
/// are length-averaged (IPO, [`SequenceReduction::Mean`]): the loss sees the averages, and
/// the rewards in [`DpoStats`] are reported on the summed log-ratios (average x length), as
/// TRL 1.16 does. Without it the rewards use the log-probs as given.
pub fn dpo_loss<B: Backend>(
    policy_chosen: Tensor<B, 1>,
    policy_rejected: Tensor<B, 1>,
    ref_chosen: Tensor<B, 1>,
    ref_rejected: Tensor<B, 1>,
    lengths: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    args: &DpoArgs,
) -> (Tensor<B, 1>, DpoStats<B>) {
    let policy_chosen = to_f32(policy_chosen);
    let policy_rejected = to_f32(policy_rejected);
    let ref_chosen = to_f32(ref_chosen);
    let ref_rejected = to_f32(ref_rejected);
    let [b] = policy_chosen.dims();
    for (name, x) in
        [("policy_rejected", &policy_rejected), ("ref_chosen", &ref_chosen), ("ref_rejected", &ref_rejected)]
    {
        assert_eq!(x.dims(), [b], "dpo_loss: policy_chosen is [{b}] but {name} is {:?}", x.dims());
    }
    let pi_logratios = policy_chosen.clone() - policy_rejected.clone(); // [B]
    let h = if args.reference_free {
        pi_logratios
    } else {
        pi_logratios - (ref_chosen.clone() - ref_rejected.clone()) // [B]
    };
    let (beta, eps) = (args.beta, args.label_smoothing);
    let losses = match args.loss_type {
        DpoLoss::Sigmoid => sigmoid_loss(h, beta, eps),
        DpoLoss::Ipo => ipo_loss(h, beta),
        DpoLoss::Hinge => hinge_loss(h, beta),
        DpoLoss::Robust => robust_loss(h, beta, eps),
    }; // [B]

    let mut rewards_chosen = ((policy_chosen - ref_chosen) * beta).detach(); // [B]
    let mut rewards_rejected = ((policy_rejected - ref_rejected) * beta).detach(); // [B]
    if let Some((chosen_len, rejected_len)) = lengths {
        rewards_chosen = rewards_chosen * to_f32(chosen_len); // [B]
        rewards_rejected = rewards_rejected * to_f32(rejected_len); // [B]
    }
    let margins = rewards_chosen.clone() - rewards_rejected.clone(); // [B]
    let stats = DpoStats {
        reward_accuracy: margins.clone().greater_elem(0.0).float().cast(burn::tensor::FloatDType::F32).mean(),
        reward_margin: margins.mean(),
        rewards_chosen,
        rewards_rejected,
    };
    (losses.mean(), stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    use crate::test_util::{t1, Cpu};

    fn s(x: Tensor<Cpu, 1>) -> f64 {
        x.into_scalar() as f64
    }

    fn log_sigmoid(x: f64) -> f64 {
        -(1.0 + (-x).exp()).ln()
    }

    /// Each variant as a naive f64 loop (the independent implementation).
    fn naive(pc: &[f64], pr: &[f64], rc: &[f64], rr: &[f64], args: &DpoArgs) -> f64 {
        let (beta, eps) = (args.beta, args.label_smoothing);
        let mut total = 0.0;
        for i in 0..pc.len() {
            let ref_term = if args.reference_free { 0.0 } else { rc[i] - rr[i] };
            let h = (pc[i] - pr[i]) - ref_term;
            total += match args.loss_type {
                DpoLoss::Sigmoid => -(1.0 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h),
                DpoLoss::Robust => {
                    (-(1.0 - eps) * log_sigmoid(beta * h) + eps * log_sigmoid(-beta * h)) / (1.0 - 2.0 * eps)
                }
                DpoLoss::Ipo => (h - 1.0 / (2.0 * beta)).powi(2),
                DpoLoss::Hinge => (1.0 - beta * h).max(0.0),
            };
        }
        total / pc.len() as f64
    }

    const PC: [f64; 4] = [-12.5, -3.0, -40.25, -7.0];
    const PR: [f64; 4] = [-14.0, -2.5, -38.0, -9.5];
    const RC: [f64; 4] = [-13.0, -3.5, -39.0, -7.25];
    const RR: [f64; 4] = [-13.5, -2.0, -39.5, -9.0];

    #[test]
    fn every_variant_matches_naive() {
        for loss_type in [DpoLoss::Sigmoid, DpoLoss::Ipo, DpoLoss::Hinge, DpoLoss::Robust] {
            for (beta, eps, reference_free) in [(0.1, 0.0, false), (0.5, 0.2, false), (2.0, 0.1, true)] {
                let args = DpoArgs { loss_type, beta, label_smoothing: eps, reference_free, ..Default::default() };
                let (loss, _) = dpo_loss(t1(&PC), t1(&PR), t1(&RC), t1(&RR), None, &args);
                let want = naive(&PC, &PR, &RC, &RR, &args);
                assert!((s(loss) - want).abs() < 1e-6, "{loss_type:?} beta={beta} eps={eps}: {want}");
            }
        }
    }

    #[test]
    fn reward_accuracy_and_margin() {
        let args = DpoArgs { beta: 0.5, ..Default::default() };
        let (_, stats) = dpo_loss(t1(&PC), t1(&PR), t1(&RC), t1(&RR), None, &args);
        // chosen: 0.5 * (0.5, 0.5, -1.25, 0.25); rejected: 0.5 * (-0.5, -0.5, 1.5, -0.5)
        let chosen = stats.rewards_chosen.into_data().to_vec::<f32>().unwrap();
        assert_eq!(chosen, vec![0.25, 0.25, -0.625, 0.125]);
        assert!((s(stats.reward_accuracy) - 0.75).abs() < 1e-7);
        let margin = (0.5 + 0.5 - 1.375 + 0.375) / 4.0;
        assert!((s(stats.reward_margin) - margin).abs() < 1e-6);
    }

    #[test]
    fn sequence_logprobs_sum_and_mean() {
        let lp = Tensor::<Cpu, 2>::from_data(
            TensorData::new(vec![-1.0f32, -2.0, -3.0, -4.0, -5.0, -6.0], [2, 3]),
            &Default::default(),
        );
        let m = Tensor::<Cpu, 2>::from_data(
            TensorData::new(vec![1.0f32, 1.0, 0.0, 0.0, 0.0, 0.0], [2, 3]),
            &Default::default(),
        );
        let sum = sequence_logprobs(lp.clone(), m.clone(), DpoLoss::Sigmoid.reduction());
        assert_eq!(sum.into_data().to_vec::<f32>().unwrap(), vec![-3.0, 0.0]);
        let mean = sequence_logprobs(lp, m, DpoLoss::Ipo.reduction());
        assert_eq!(mean.into_data().to_vec::<f32>().unwrap(), vec![-1.5, 0.0]);
    }

    #[test]
    fn args_parse_and_reject_bad_values() {
        let parse = |yaml: &str| {
            let node = tril_core::config::parse_yaml(yaml, std::path::Path::new("alg/dpo.yaml")).unwrap();
            DpoArgs::extract(&Section::new("alg.args", &node))
        };
        let args = parse("beta: 0.2\nloss_type: robust\nlabel_smoothing: 0.1\n").unwrap();
        assert_eq!((args.beta, args.loss_type, args.max_length), (0.2, DpoLoss::Robust, 1024));
        let err = parse("label_smoothing: 0.5\n").unwrap_err().to_string();
        assert!(
            err.contains("alg.args.label_smoothing: expected a label-flip probability in [0, 0.5), found 0.5"),
            "{err}"
        );
        let err = parse("max_length: 128\nmax_prompt_length: 128\n").unwrap_err().to_string();
        assert!(err.contains("alg.args.max_prompt_length"), "{err}");
        assert!(parse("loss_type: \"sppo_hard\"\n").is_err());
        assert!(parse("betta: 0.1\n").unwrap_err().to_string().contains("unknown key"));
    }
}
