//! The pieces the group algorithms (GRPO, [`crate::group::grpo`]; GSPO,
//! [`crate::group::gspo`]; RLOO, [`crate::group::rloo`]; REINFORCE++,
//! [`crate::group::reinforce_pp`]) share: the loop settings of `alg.args` ([`TrainArgs`]),
//! what the loop reads from an objective ([`GroupSettings`], [`GroupObjective`]: its
//! advantages from the iteration's [`RolloutBatch`] and its loss), the derived [`GroupPlan`]
//! with TRL's divisibility rules, and the pure helpers of a rollout (group row layout,
//! log-probs at a temperature). The loop itself is [`crate::group::group_run`].

pub mod group_run;
pub mod grpo;
pub mod gspo;
pub mod reinforce_pp;
pub mod rloo;

use crate::group::grpo::GrpoStats;
use crate::onpolicy::ppo::KlLogprobs;
use crate::validate::ensure;
use crate::AlgorithmError;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use tril_core::config::Section;
use tril_core::ops::{gather_logprobs, logprobs_and_entropy};
use tril_core::plugin::Split;
use tril_core::CoreError;
use tril_models::causal_lm::CausalLm;

/// The loop settings of `alg.args` (the same keys in [`crate::group::grpo::GrpoArgs`] and
/// [`crate::group::gspo::GspoArgs`]; see their field docs).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainArgs {
    /// Seed of every RNG of the run.
    pub seed: u64,
    /// Iterations (one generation batch each).
    pub n_iters: usize,
    /// Completions per forward/backward pass.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accumulation: usize,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Prompts per evaluation `generate` call.
    pub eval_batch_size: usize,
    /// Evaluate every this many iterations.
    pub eval_every: usize,
    /// Checkpoint every this many iterations.
    pub save_every: usize,
    /// Evaluate before training.
    pub eval_zero_shot: bool,
    /// Write periodic checkpoints.
    pub save_checkpoints: bool,
    /// Splits evaluated.
    pub eval_splits: Vec<Split>,
}

/// Range checks of the loop settings; errors name `alg.args.<key>`.
pub fn check_train(section: &Section<'_>, t: &TrainArgs) -> Result<(), CoreError> {
    ensure(t.n_iters >= 1, section, "n_iters", "expected at least 1 iteration")?;
    ensure(t.batch_size >= 1, section, "batch_size", "expected at least 1 completion")?;
    ensure(t.grad_accumulation >= 1, section, "grad_accumulation", "expected at least 1")?;
    ensure(t.max_grad_norm.is_finite() && t.max_grad_norm > 0.0, section, "max_grad_norm", "expected a norm > 0")?;
    ensure(t.eval_batch_size >= 1, section, "eval_batch_size", "expected at least 1")?;
    ensure(t.eval_every >= 1, section, "eval_every", "expected at least 1")?;
    ensure(t.save_every >= 1, section, "save_every", "expected at least 1")
}

/// Range checks of the loop keys every group objective shares: `steps_per_generation`,
/// `num_iterations`, `temperature`, `max_completion_length`, then [`check_train`]; errors
/// name `alg.args.<key>`.
pub fn check_loop(section: &Section<'_>, s: &GroupSettings) -> Result<(), CoreError> {
    ensure(s.steps_per_generation != Some(0), section, "steps_per_generation", "expected at least 1")?;
    ensure(s.num_iterations >= 1, section, "num_iterations", "expected at least 1")?;
    ensure(s.temperature > 0.0, section, "temperature", "expected a temperature > 0")?;
    ensure(s.max_completion_length > 0, section, "max_completion_length", "expected at least 1 token")?;
    check_train(section, &s.train)
}

/// Range checks of the settings GRPO and GSPO share, in the order their `extract`s
/// report them: `num_generations`, `epsilon`, then `epsilon_high` (whose type and check
/// differ per algorithm: the caller's `epsilon_high` result), then `beta` and the loop
/// keys ([`check_loop`]); errors name `alg.args.<key>`.
pub fn check_settings(
    section: &Section<'_>,
    s: &GroupSettings,
    epsilon: f64,
    epsilon_high: Result<(), CoreError>,
) -> Result<(), CoreError> {
    ensure(s.num_generations >= 2, section, "num_generations", "expected at least 2 completions per prompt")?;
    ensure(epsilon > 0.0 && epsilon < 1.0, section, "epsilon", "expected a clip range in (0, 1)")?;
    epsilon_high?;
    ensure(s.kl_coef.is_finite() && s.kl_coef >= 0.0, section, "beta", "expected a finite coefficient ≥ 0")?;
    check_loop(section, s)
}

/// The [`GroupSettings`] of a typed `alg.args` that declares the loop keys (`num_generations`,
/// `steps_per_generation`, `num_iterations`, `temperature`, `max_completion_length` and every
/// field of [`TrainArgs`]) under the same names, plus the objective's own three answers.
///
/// The fields stay declared in each args struct rather than in a `#[serde(flatten)]`ed
/// struct: with `deny_unknown_fields`, flattening loses the exact key names in errors.
/// This macro shares the plumbing instead.
macro_rules! group_settings {
    ($args:expr, kl_coef: $kl:expr, loss_per_step: $per_step:expr, generation_logprobs: $gen:expr $(,)?) => {
        $crate::group::group_settings!(
            $args,
            kl_coef: $kl,
            loss_per_step: $per_step,
            generation_logprobs: $gen,
            kl_logprobs: $crate::onpolicy::ppo::KlLogprobs::Model,
        )
    };
    ($args:expr, kl_coef: $kl:expr, loss_per_step: $per_step:expr, generation_logprobs: $gen:expr,
     kl_logprobs: $klp:expr $(,)?) => {
        $crate::group::GroupSettings {
            num_generations: $args.num_generations,
            steps_per_generation: $args.steps_per_generation,
            num_iterations: $args.num_iterations,
            temperature: $args.temperature,
            max_completion_length: $args.max_completion_length,
            kl_coef: $kl,
            loss_per_step: $per_step,
            generation_logprobs: $gen,
            kl_logprobs: $klp,
            train: $crate::group::TrainArgs {
                seed: $args.seed,
                n_iters: $args.n_iters,
                batch_size: $args.batch_size,
                grad_accumulation: $args.grad_accumulation,
                max_grad_norm: $args.max_grad_norm,
                eval_batch_size: $args.eval_batch_size,
                eval_every: $args.eval_every,
                save_every: $args.save_every,
                eval_zero_shot: $args.eval_zero_shot,
                save_checkpoints: $args.save_checkpoints,
                eval_splits: $args.eval_splits.clone(),
            },
        }
    };
}
pub(crate) use group_settings;

/// Implements [`GroupObjective`] for a GRPO-style `alg.args` (`GrpoArgs`, `GspoArgs`): the
/// loop keys ([`group_settings!`]) plus `beta`, `loss_type` and `scale_rewards`, an inherent
/// `extract`, GRPO's group-relative sequence advantages
/// ([`crate::group::grpo::group_advantages`]) and a loss `$loss(new, old, ref, advantages,
/// mask, &args, num_items_in_batch)` with advantages `[N]`.
macro_rules! group_objective {
    ($args:ty, id: $id:literal, loss: $loss:path) => {
        impl $crate::group::GroupObjective for $args {
            const ID: &'static str = $id;

            fn extract(section: &tril_core::config::Section<'_>) -> Result<Self, tril_core::CoreError> {
                <$args>::extract(section)
            }

            fn settings(&self) -> $crate::group::GroupSettings {
                $crate::group::group_settings!(
                    self,
                    kl_coef: self.beta,
                    loss_per_step: self.loss_type == $crate::group::grpo::GrpoLoss::Dapo,
                    generation_logprobs: false,
                )
            }

            fn advantages<B: burn::tensor::backend::Backend>(
                &self,
                batch: $crate::group::RolloutBatch<B>,
            ) -> $crate::Result<$crate::group::Advantages<B>> {
                let [n] = batch.rewards.dims();
                if batch.group_size == 0 || !n.is_multiple_of(batch.group_size) {
                    let message = format!("{n} rewards are not whole groups of num_generations = {}", batch.group_size);
                    return Err($crate::AlgorithmError::training($id, message));
                }
                let advantages =
                    $crate::group::grpo::group_advantages(batch.rewards, batch.group_size, self.scale_rewards); // [N]
                Ok($crate::group::Advantages { advantages: advantages.reshape([n, 1]), stats: Vec::new() })
            }

            fn loss<B: burn::tensor::backend::Backend>(
                &self,
                new_logprobs: burn::tensor::Tensor<B, 2>,
                old_logprobs: burn::tensor::Tensor<B, 2>,
                ref_logprobs: Option<burn::tensor::Tensor<B, 2>>,
                advantages: burn::tensor::Tensor<B, 2>,
                mask: burn::tensor::Tensor<B, 2>,
                num_items_in_batch: Option<f64>,
            ) -> $crate::Result<(burn::tensor::Tensor<B, 1>, $crate::group::LossStats<B>)> {
                let advantages = $crate::group::sequence_advantages($id, advantages, mask.dims())?; // [N]
                let (loss, stats) =
                    $loss(new_logprobs, old_logprobs, ref_logprobs, advantages, mask, self, num_items_in_batch);
                Ok((loss, stats.into()))
            }
        }
    };
}
pub(crate) use group_objective;

/// What the loop reads from an objective's args.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSettings {
    /// Completions per prompt, `G`.
    pub num_generations: usize,
    /// Micro-batches per generation batch (null: `grad_accumulation`).
    pub steps_per_generation: Option<usize>,
    /// Passes over each generation batch.
    pub num_iterations: usize,
    /// Sampling and log-prob temperature.
    pub temperature: f64,
    /// Generated tokens (must equal the generation settings' `max_new_tokens`).
    pub max_completion_length: usize,
    /// KL coefficient (`beta`, `kl_coef`): a reference model is built only when > 0.
    pub kl_coef: f64,
    /// Whether the loss is already normalized over the whole optimizer step (DAPO's
    /// `num_items_in_batch`), so that the loop does not divide it by `grad_accumulation`.
    pub loss_per_step: bool,
    /// Whether the advantages read the generation-time log-probs (a KL folded into the
    /// reward), so that they are computed even on-policy.
    pub generation_logprobs: bool,
    /// The policy side of a KL the advantages fold into the reward
    /// ([`RolloutBatch::kl_logprobs`]): RLOO's and REINFORCE++'s `alg.args.kl_logprobs`;
    /// `model` for the objectives without one.
    pub kl_logprobs: KlLogprobs,
    /// The loop settings.
    pub train: TrainArgs,
}

/// Derived per-iteration numbers (R11: computed, never written back into the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPlan {
    /// Micro-batches per generation batch.
    pub steps_per_generation: usize,
    /// Completions generated per iteration (`batch_size * steps_per_generation`).
    pub generation_batch: usize,
    /// Distinct prompts per iteration (`generation_batch / num_generations`).
    pub prompts: usize,
    /// Optimizer steps per iteration (`steps_per_generation / grad_accumulation * num_iterations`).
    pub optimizer_steps: usize,
}

impl GroupPlan {
    /// Whether the policy moves between generation and the last update, so that the
    /// ratio needs log-probs saved at generation time.
    pub fn off_policy(&self) -> bool {
        self.optimizer_steps > 1
    }
}

impl GroupSettings {
    /// Checks TRL's divisibility rules (one process) and derives the [`GroupPlan`].
    pub fn plan(&self) -> crate::Result<GroupPlan> {
        let t = &self.train;
        let spg = self.steps_per_generation.unwrap_or(t.grad_accumulation);
        if !spg.is_multiple_of(t.grad_accumulation) {
            return Err(AlgorithmError::NotMultiple {
                key: "alg.args.steps_per_generation".into(),
                value: spg,
                of_key: "alg.args.grad_accumulation".into(),
                of: t.grad_accumulation,
            });
        }
        let generation_batch = t.batch_size * spg;
        if !generation_batch.is_multiple_of(self.num_generations) {
            return Err(AlgorithmError::GenerationBatch {
                batch_size: t.batch_size,
                steps_per_generation: spg,
                num_generations: self.num_generations,
            });
        }
        Ok(GroupPlan {
            steps_per_generation: spg,
            generation_batch,
            prompts: generation_batch / self.num_generations,
            optimizer_steps: spg / t.grad_accumulation * self.num_iterations,
        })
    }

    /// Whether the loop builds a reference model (`kl_coef > 0`).
    pub fn needs_reference(&self) -> bool {
        self.kl_coef > 0.0
    }
}

/// One iteration's batch as the advantages see it (on the loop's inner backend).
#[derive(Debug, Clone)]
pub struct RolloutBatch<B: Backend> {
    /// The reward of every completion, `[N]`; rows `[k G, (k + 1) G)` are prompt `k`'s group.
    pub rewards: Tensor<B, 1>,
    /// Log-probs at generation time, `[N, T]`: present off-policy and when
    /// [`GroupSettings::generation_logprobs`].
    pub old_logprobs: Option<Tensor<B, 2>>,
    /// The policy side of a KL estimate folded into the reward, `[N, T]`, present with
    /// `old_logprobs`: those, or with [`GroupSettings::kl_logprobs`] `sampled` and a sampler
    /// that truncates (`top_k`, `top_p`, `min_length`), the log-prob of each token under the
    /// distribution it was drawn from, recorded at generation (see [`KlLogprobs`]: the
    /// model's own log-probs make the KL a bonus for spreading mass outside the top k).
    pub kl_logprobs: Option<Tensor<B, 2>>,
    /// Reference log-probs, `[N, T]`: present when `kl_coef > 0`.
    pub ref_logprobs: Option<Tensor<B, 2>>,
    /// Completion mask, `[N, T]`.
    pub mask: Tensor<B, 2>,
    /// Completions per prompt, `G`.
    pub group_size: usize,
}

/// What an objective computes from a [`RolloutBatch`].
#[derive(Debug, Clone)]
pub struct Advantages<B: Backend> {
    /// Sequence-level `[N, 1]` or token-level `[N, T]`; the loss receives the rows of its
    /// micro-batch in this shape.
    pub advantages: Tensor<B, 2>,
    /// Scalars logged as `rollout/<name>` (e.g. the KL folded into the reward).
    pub stats: Vec<(&'static str, f64)>,
}

/// The statistics of one micro-batch loss (detached scalars).
#[derive(Debug, Clone)]
pub struct LossStats<B: Backend> {
    /// Logged as `<id>/<name>`, in this order.
    pub values: Vec<(&'static str, Tensor<B, 1>)>,
    /// Mean KL to the reference inside the loss, logged as `<id>/kl` and checked by the
    /// guard's `max_kl`; `None` when the loss has no KL term.
    pub kl: Option<Tensor<B, 1>>,
}

impl<B: Backend> From<GrpoStats<B>> for LossStats<B> {
    fn from(stats: GrpoStats<B>) -> Self {
        LossStats {
            values: vec![
                ("clip_ratio", stats.clip_ratio_region),
                ("clip_ratio_low", stats.clip_ratio_low),
                ("clip_ratio_high", stats.clip_ratio_high),
            ],
            kl: stats.kl_mean,
        }
    }
}

/// A group objective: its typed `alg.args`, its advantages and its loss.
pub trait GroupObjective: Clone + Send + 'static {
    /// Registry id, and the namespace of its training metrics (`grpo/loss`).
    const ID: &'static str;

    /// Deserializes and range-checks `alg.args`.
    fn extract(section: &Section<'_>) -> Result<Self, CoreError>;

    /// What the loop reads.
    fn settings(&self) -> GroupSettings;

    /// The advantages of one iteration's whole batch (computed once, before the updates).
    ///
    /// # Shapes
    /// `rewards`: `[N]`; `old_logprobs`, `ref_logprobs`, `mask`: `[N, T]` -> `[N, 1]` or `[N, T]`
    ///
    /// # Errors
    /// When the dims disagree or an input the objective needs is missing.
    fn advantages<B: Backend>(&self, batch: RolloutBatch<B>) -> crate::Result<Advantages<B>>;

    /// The loss of one micro-batch and its stats.
    ///
    /// # Shapes
    /// `new_logprobs`, `old_logprobs`, `ref_logprobs`, `mask`: `[N, T]`; `advantages`: the rows
    /// of [`GroupObjective::advantages`], `[N, 1]` or `[N, T]` -> loss `[1]`
    ///
    /// # Errors
    /// When the dims disagree.
    fn loss<B: Backend>(
        &self,
        new_logprobs: Tensor<B, 2>,
        old_logprobs: Tensor<B, 2>,
        ref_logprobs: Option<Tensor<B, 2>>,
        advantages: Tensor<B, 2>,
        mask: Tensor<B, 2>,
        num_items_in_batch: Option<f64>,
    ) -> crate::Result<(Tensor<B, 1>, LossStats<B>)>;
}

/// Sequence-level advantages `[N, 1]` as the `[N]` the sequence losses take; an error
/// naming `id` unless they have one column and the mask's rows.
///
/// # Shapes
/// `advantages`: `[N, 1]`, `mask`: `[N, T]` -> `[N]`
pub fn sequence_advantages<B: Backend>(
    id: &str,
    advantages: Tensor<B, 2>,
    mask: [usize; 2],
) -> crate::Result<Tensor<B, 1>> {
    let [n, k] = advantages.dims();
    if k != 1 || n != mask[0] {
        let message = format!("advantages have dims [{n}, {k}], expected sequence-level [{}, 1]", mask[0]);
        return Err(AlgorithmError::training(id, message));
    }
    Ok(advantages.reshape([n]))
}

/// An input of [`RolloutBatch`] the objective `id` needs, or an error naming it.
pub(crate) fn required<T>(id: &str, value: Option<T>, what: &str) -> crate::Result<T> {
    value.ok_or_else(|| {
        AlgorithmError::training(id, format!("the advantages need {what}, which the loop did not compute"))
    })
}

/// Logits of the last `n` positions' predictions divided by `temperature`.
///
/// # Shapes
/// `ids`, `mask`: `[B, P + N]` -> `[B, N, V]`
fn completion_logits<B: Backend>(
    lm: &CausalLm<B>,
    ids: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Int>,
    n: usize,
    temperature: f64,
) -> Tensor<B, 3> {
    let len = ids.dims()[1];
    lm.span_logits(ids, Some(mask), len - n - 1, n) / temperature
}

/// Log-probs of the last `n` tokens of `ids` under `lm` with logits divided by
/// `temperature`.
///
/// # Shapes
/// `ids`, `mask`: `[B, P + N]` -> `[B, N]`
pub fn completion_logprobs<B: Backend>(
    lm: &CausalLm<B>,
    ids: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Int>,
    n: usize,
    temperature: f64,
) -> Tensor<B, 2> {
    let [b, len] = ids.dims();
    let logits = completion_logits(lm, ids.clone(), mask, n, temperature); // [B, N, V]
    gather_logprobs(logits, ids.slice([0..b, len - n..len]))
}

/// [`completion_logprobs`] and the policy's entropy at each of those positions (at the
/// same temperature; detached: it is logged, not trained), from one log-softmax.
///
/// # Shapes
/// `ids`, `mask`: `[B, P + N]` -> log-probs `[B, N]`, entropy `[B, N]`
pub fn completion_logprobs_and_entropy<B: Backend>(
    lm: &CausalLm<B>,
    ids: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Int>,
    n: usize,
    temperature: f64,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [b, len] = ids.dims();
    let logits = completion_logits(lm, ids.clone(), mask, n, temperature); // [B, N, V]
    logprobs_and_entropy(logits, ids.slice([0..b, len - n..len]), false)
}

/// Row indices of a generation batch: each of `prompts` repeated `g` times in a row, so
/// that rows `[k g, (k + 1) g)` are prompt `k`'s group.
pub fn repeat_groups(prompts: &[usize], g: usize) -> Vec<usize> {
    prompts.iter().flat_map(|&p| std::iter::repeat_n(p, g)).collect()
}

/// Mean and unbiased standard deviation (0 for fewer than two values).
pub(crate) fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n.max(1.0);
    let var = if xs.len() < 2 { 0.0 } else { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) };
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::grpo::GrpoArgs;
    use crate::test_util::Cpu;
    use burn::tensor::TensorData;
    use tril_models::gpt2::Gpt2Config;

    fn host(t: Tensor<Cpu, 2>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    fn settings(batch_size: usize, grad_accumulation: usize, spg: Option<usize>, g: usize) -> GroupSettings {
        let args = GrpoArgs {
            batch_size,
            grad_accumulation,
            steps_per_generation: spg,
            num_generations: g,
            ..Default::default()
        };
        args.settings()
    }

    #[test]
    fn plan_derives_the_generation_batch_and_steps() {
        // TRL's default: steps_per_generation = grad_accumulation, one on-policy step.
        let plan = settings(8, 4, None, 8).plan().unwrap();
        assert_eq!(plan, GroupPlan { steps_per_generation: 4, generation_batch: 32, prompts: 4, optimizer_steps: 1 });
        assert!(!plan.off_policy());
        // The GSPO paper's 4 minibatches per rollout batch, twice (num_iterations 2).
        let mut s = settings(28, 1, Some(4), 8);
        s.num_iterations = 2;
        let plan = s.plan().unwrap();
        assert_eq!((plan.generation_batch, plan.prompts, plan.optimizer_steps), (112, 14, 8));
        assert!(plan.off_policy());
    }

    #[test]
    fn plan_errors_name_the_keys() {
        let err = settings(6, 1, Some(2), 8).plan().unwrap_err().to_string();
        assert!(err.contains("alg.args.batch_size (6) x alg.args.steps_per_generation (2) = 12"), "{err}");
        assert!(err.contains("alg.args.num_generations (8)"), "{err}");
        let err = settings(8, 2, Some(3), 2).plan().unwrap_err().to_string();
        assert_eq!(err, "alg.args.steps_per_generation (3) must be a multiple of alg.args.grad_accumulation (2)");
    }

    #[test]
    fn loop_keys_are_range_checked() {
        let node = tril_core::config::parse_yaml("n_iters: 0\n", std::path::Path::new("alg/grpo.yaml")).unwrap();
        let err = GrpoArgs::extract(&Section::new("alg.args", &node)).unwrap_err().to_string();
        assert!(err.contains("alg.args.n_iters") && err.contains("at least 1"), "{err}");
        let node = tril_core::config::parse_yaml("max_grad_norm: -1\n", std::path::Path::new("alg/gspo.yaml")).unwrap();
        let err = crate::group::gspo::GspoArgs::extract(&Section::new("alg.args", &node)).unwrap_err().to_string();
        assert!(err.contains("alg.args.max_grad_norm"), "{err}");
    }

    /// GRPO through the hook: its advantages are `group_advantages` as a column `[N, 1]`, its
    /// loss through the trait is `grpo_loss` on the `[N]` column, and its settings keep DAPO's
    /// per-step normalization, no generation-time log-probs on-policy, a reference only with
    /// `beta > 0`.
    #[test]
    fn grpo_through_the_hook_is_unchanged() {
        use crate::group::grpo::{group_advantages, grpo_loss, GrpoLoss, RewardScaling};
        use crate::test_util::{t1, t2};
        let rewards = [1.0, 0.0, 0.5, 0.25, 3.0, 3.0, 2.0, 5.0];
        let mask = t2(&[1.0; 16], 8);
        for scaling in [RewardScaling::Group, RewardScaling::Batch, RewardScaling::None] {
            let args = GrpoArgs { num_generations: 4, scale_rewards: scaling, ..Default::default() };
            let batch = RolloutBatch {
                rewards: t1(&rewards),
                old_logprobs: None,
                kl_logprobs: None,
                ref_logprobs: None,
                mask: mask.clone(),
                group_size: 4,
            };
            let got = args.advantages(batch).unwrap();
            assert_eq!(got.advantages.dims(), [8, 1]);
            assert!(got.stats.is_empty());
            let want = group_advantages(t1(&rewards), 4, scaling);
            assert_eq!(host(got.advantages), want.into_data().to_vec::<f32>().unwrap());
        }
        let lp =
            t2(&[-1.0, -0.4, -0.3, -1.5, -0.2, -0.8, -2.0, -0.1, -0.5, -0.6, -0.7, -0.9, -1.1, -1.2, -0.3, -0.4], 8);
        let old = lp.clone() - 0.05;
        let adv = [0.5, -1.0, 2.0, 0.1, -0.3, 0.0, 1.0, -2.0];
        for loss_type in [GrpoLoss::Dapo, GrpoLoss::Grpo] {
            let args = GrpoArgs { loss_type, ..Default::default() };
            let (got, stats) = args.loss(lp.clone(), old.clone(), None, t2(&adv, 8), mask.clone(), Some(16.0)).unwrap();
            let (want, want_stats) =
                grpo_loss(lp.clone(), old.clone(), None, t1(&adv), mask.clone(), &args, Some(16.0));
            assert_eq!(got.into_scalar(), want.into_scalar());
            assert_eq!(stats.values[0].1.clone().into_scalar(), want_stats.clip_ratio_region.into_scalar());
            assert_eq!(args.settings().loss_per_step, loss_type == GrpoLoss::Dapo);
        }
        let s = GrpoArgs::default().settings();
        assert!(!s.generation_logprobs && !s.needs_reference());
        assert!(GrpoArgs { beta: 0.04, ..Default::default() }.settings().needs_reference());
        // Token-level advantages are refused (an error, not a panic).
        let err = GrpoArgs::default().loss(lp.clone(), old, None, lp, mask, None).unwrap_err().to_string();
        assert!(err.contains("expected sequence-level [8, 1]"), "{err}");
    }

    #[test]
    fn groups_are_consecutive_rows() {
        assert_eq!(repeat_groups(&[5, 2], 3), vec![5, 5, 5, 2, 2, 2]);
        let (m, s) = mean_std(&[1.0, 2.0, 4.0]);
        // mean 7/3; unbiased variance ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3.
        assert!((m - 7.0 / 3.0).abs() < 1e-12 && (s - (7.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[3.0]), (3.0, 0.0));
    }

    /// At temperature 1 the log-probs equal the PPO spine's `lm_logprobs` (a second
    /// implementation); at temperature 2 they match a host log-softmax of logits / 2.
    #[test]
    fn completion_logprobs_scale_logits_by_the_temperature() {
        let device = Default::default();
        let model = tril_models::causal_lm::CausalLm::from(Gpt2Config::new(7, 16, 8, 1, 2).init::<Cpu>(&device));
        let ids =
            Tensor::<Cpu, 2, Int>::from_data(TensorData::new(vec![0i64, 3, 4, 1, 2, 6, 5, 5, 6, 1], [2, 5]), &device);
        let mask =
            Tensor::<Cpu, 2, Int>::from_data(TensorData::new(vec![0i64, 1, 1, 1, 1, 1, 1, 1, 1, 0], [2, 5]), &device);
        let lp1 = completion_logprobs(&model, ids.clone(), mask.clone(), 3, 1.0);
        let want = crate::onpolicy::lm_logprobs(&model, ids.clone(), mask.clone(), 3);
        let (a, b) = (host(lp1), host(want));
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6), "{a:?} vs {b:?}");

        let lp2 = completion_logprobs(&model, ids.clone(), mask.clone(), 3, 2.0);
        let (lp2_fused, entropy) = completion_logprobs_and_entropy(&model, ids.clone(), mask.clone(), 3, 2.0);
        assert_eq!(host(lp2.clone()), host(lp2_fused));
        let raw = model.forward(ids.clone(), Some(mask)).logits; // [2, 5, 7]
        let raw: Vec<f32> = raw.into_data().to_vec().unwrap();
        let ids: Vec<i64> = ids.into_data().convert::<i64>().to_vec().unwrap();
        let got = host(lp2);
        for row in 0..2 {
            for (j, pos) in (1..4).enumerate() {
                // logits at pos predict the token at pos + 1.
                let z: Vec<f64> = (0..7).map(|v| f64::from(raw[(row * 5 + pos) * 7 + v]) / 2.0).collect();
                let lse = z.iter().map(|x| x.exp()).sum::<f64>().ln();
                let want = z[ids[row * 5 + pos + 1] as usize] - lse;
                assert!((f64::from(got[row * 3 + j]) - want).abs() < 1e-5, "row {row} pos {pos}");
            }
        }
        assert_eq!(entropy.dims(), [2, 3]);
        assert!(host(entropy).iter().all(|&h| h > 0.0 && f64::from(h) < 7f64.ln() + 1e-6));
    }
}
