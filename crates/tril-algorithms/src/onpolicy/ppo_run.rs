//! PPO's training loop (`alg=ppo`), ordering the spine of [`crate::onpolicy`] and the
//! losses of [`crate::onpolicy::ppo`] as TRIL's `BaseOnPolicyAlgorithm.learn` + `PPO.train_step`.
//!
//! Per iteration: `generate_calls` rollouts of `batch_size_per_process` prompts ->
//! reward -> reference log-probs and values -> per-token rewards (terminal + KL penalty)
//! -> GAE -> `n_epochs` x minibatches (with gradient accumulation) of the clipped losses
//! -> global-norm clipping -> optimizer step -> KL controller -> logs; evaluation every
//! `eval_every`, checkpoints every `save_every` and at the end.
//!
//! # Deviations from TRIL
//! - Seeded: `alg.args.seed` seeds model initialisation, prompt shuffling and sampling.
//!
//! # Conventions (TRIL's by default; each a key)
//! - `alg.args.train_eos: false`: the EOS ending a generation is padding, not an action:
//!   it is masked out of the losses and the terminal reward lands on the last real token
//!   ([`action_mask`]). `true` trains and rewards the EOS.
//! - `alg.args.grad_clip: joint`: one global norm over the policy, the critic and a guide
//!   critic (TRIL's `clip_grad_norm_(agent.policy_params)`); `separate` clips each on its
//!   own, so an early large value loss cannot shrink the policy's step to almost nothing.
//! - `scaledklcontroller` is stepped with the number of sequences of the iteration (as
//!   Ziegler et al., TRL and OpenRLHF), not tokens.
//! - `target_kl`: checked on each micro-batch before its backward pass, as TRIL; the step
//!   that crosses `1.5 x target_kl` is not applied and the epochs stop.
//! - Runs on any backend (`device`, `precision`; generic over `B: AutodiffBackend`).
//!
//! # The algorithms built on this loop: two strategies
//! - [`RolloutStrategy`]: how trajectories are made. `Policy` (PPO, GAIL), or `Rollin`:
//!   PPO++, AggreVaTeD, LOLS and D2LOLS ([`crate::onpolicy::rollin`]) let a guide roll in or
//!   out each iteration, by their [`Schedule`], which also picks the tokens the policy and
//!   the critic learn from and which critic is used.
//! - [`TerminalReward`]: where the terminal reward comes from. `Task` (the task's
//!   `reward_fn`), or `Discriminator`: GAIL ([`crate::onpolicy::gail`]) trains one on each
//!   iteration's rollouts ([`RewardHook`]) and rewards with its probability of "expert".
//!
//! Whether the KL penalty is in the reward is each algorithm's flag, `alg.args.kl_in_reward`.
//! The loop's stages: [`Loop::collect_rollouts`] (plan, generate, terminal rewards,
//! advantages) and [`Loop::train_step`] (micro-batch terms, [`total_loss`], clipping, step).
//!
//! # Checkpoints and `--resume`
//! `checkpoints/iter_<n>/` (written to a temporary directory, then renamed) holds
//! `policy/` and `critic/` as HF model directories, `trainer/{model,optimizer}.bin` (the
//! exact Burn state, parameter ids included, that the optimizer's moments are keyed by)
//! and `trainer_state.json` (iteration, KL controller, RNG position, prompt-sampler
//! position). `tril run --resume RUN_DIR` continues after the newest complete checkpoint:
//! log lines written after it are dropped, and every later metric equals an uninterrupted
//! run's on the CPU backend (tested in `crates/tril/tests/ppo.rs`).

use crate::evaluation::Evaluation;
use crate::guard::{At, Guard, Verdict};
use crate::onpolicy::gail::{Discriminator, DiscriminatorPlan};
use crate::onpolicy::policies::{actor_critic_args, ActorCriticArgs};
use crate::onpolicy::ppo::{
    entropy_loss, policy_loss, target_loss, token_rewards, total_loss, value_loss, whiten_advantages, GradClip,
    KlLogprobs, PpoArgs, PpoPlan, PpoTerms,
};
use crate::onpolicy::rollin::{
    prefixes, rollin_lengths, rollin_mask, segment_masks, IterationPlan, Mode, Rollin, ValueFn,
};
use crate::onpolicy::{
    action_mask, build_models, generate_forced, generation_config, lm_logprobs, reference_targets, rollout_attention,
    run_tokenizers, warn_long_prompts, with_guide_critic, ActorCritic, Generated, OnPolicyState, PromptSampler,
};
use crate::over_optimization::EvalScoring;
use crate::settings::{check_splits, loop_settings, LoopSettings};
use crate::trainer::{run_on_target, section, Optim, Run};
use crate::AlgorithmError;
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType::F32;
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use tril_core::config::{Config, Section};
use tril_core::ops::{clip_grad_norm, explained_variance, gae, grad_norm};
use tril_core::ops::{host, scalar};
use tril_core::plugin::{
    Algorithm, BuildCtx, KlController, LrSchedule, Metric, OptimizerSpec, PluginError, PolicySpec, RewardFn, RunCtx,
    Sample, Split, Task, TextBatch,
};
use tril_core::progress;
use tril_core::registry;
use tril_core::run_dir::RunDir;
use tril_core::schema::{RootConfig, SamplingConfig, TokenizerConfig};
use tril_core::tracker::{Stats, Tracker};
use tril_models::causal_lm::CausalLm;
use tril_models::generate::GenerationOutput;
use tril_models::tokenizer::TextTokenizer;
type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Gives the terminal rewards instead of a task reward function (GAIL's discriminator,
/// configured in the root `reward_fn` that its alg section puts there). Should a loop have
/// both, the task's reward is computed too and logged as `rollout_buffer/task_rewards`.
pub trait RewardHook: Send {
    /// Trains on one iteration's rollouts and returns one terminal reward per trajectory
    /// plus statistics to log with the rollout metrics.
    fn rewards(
        &mut self,
        iteration: usize,
        rollouts: &Rollouts<'_>,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Vec<f32>, Stats), PluginError>;
    /// Writes its exact state (model, optimizer) under `dir`, a checkpoint being written.
    fn save(&self, dir: &std::path::Path) -> Result<(), PluginError>;
    /// Restores the state [`RewardHook::save`] wrote under `dir`.
    fn restore(&mut self, dir: &std::path::Path) -> Result<(), PluginError>;
}

/// One iteration's trajectories as text, for a [`RewardHook`].
#[derive(Debug, Clone, Copy)]
pub struct Rollouts<'a> {
    /// Prompts as the policy saw them (after truncation).
    pub prompts: &'a [String],
    /// The generated continuations.
    pub generations: &'a [String],
    /// The task's references of each prompt (the "expert" continuations).
    pub references: &'a [Vec<String>],
}

/// Everything PPO reads from the composed config, built and validated up front.
pub struct Ppo {
    id: &'static str,
    args: PpoArgs,
    settings: LoopSettings,
    task_id: String,
    plan: PpoPlan,
    kl_in_reward: bool,
    sampling: SamplingConfig,
    spec: PolicySpec,
    policy_args: ActorCriticArgs,
    tokenizer: TokenizerConfig,
    task: Box<dyn Task>,
    metrics: Vec<Box<dyn Metric>>,
    kl: Box<dyn KlController>,
    schedule: Box<dyn LrSchedule>,
    optimizer: OptimizerSpec,
    /// `alg.lora`: adapters on the policy (and a separate critic's trunk), see [`crate::lora`].
    lora: Option<tril_models::lora::LoraConfig>,
    rollouts: RolloutStrategy,
    /// Taken by the loop when the run starts.
    reward: Option<TerminalReward>,
    /// The root `gold_reward_fn`: scored on the eval generations only.
    gold: Option<Box<dyn RewardFn>>,
}

/// Where each trajectory's terminal reward comes from: a strategy of the on-policy loop.
pub enum TerminalReward {
    /// The task's reward function (PPO and the roll-in family).
    Task(Box<dyn RewardFn>),
    /// A discriminator trained every iteration on the rollouts (GAIL).
    Discriminator(Box<DiscriminatorPlan>),
}

/// How each iteration's trajectories are made: a strategy of the on-policy loop.
pub enum RolloutStrategy {
    /// The policy generates alone (PPO, GAIL).
    Policy,
    /// A guide rolls in or out as the schedule says (PPO++, AggreVaTeD, LOLS, D2LOLS).
    Rollin(Rollin),
}

/// [`TerminalReward`] once the backend is known.
enum RewardSource<B: AutodiffBackend> {
    Task(Box<dyn RewardFn>),
    Discriminator(Box<Discriminator<B>>),
}

impl Ppo {
    /// Builds the loop of algorithm `id` from the composed config, with `args` already read
    /// from `alg.args` (derived algorithms split their own keys off first) and the KL
    /// penalty in the reward unless `alg.args.kl_in_reward` (or `kl_in_reward_default`)
    /// says otherwise. The root `reward_fn` is built as the task's reward when
    /// `task_reward` (GAIL's is its discriminator, built by GAIL). Plain PPO refuses a
    /// `multi_actor_critic` policy; roll-in algorithms add theirs with [`Ppo::with_rollin`].
    pub fn from_config(
        config: &Config,
        id: &'static str,
        args: PpoArgs,
        kl_in_reward_default: bool,
        task_reward: bool,
    ) -> Result<Ppo, PluginError> {
        let root: RootConfig = config.extract("")?;
        let plan = args.plan(root.sampling.batch_size_per_process)?;
        if !root.alg.build_reward {
            let message = format!("{id} needs the task's reward function; set it to true");
            return Err(AlgorithmError::config("alg.build_reward", message).into());
        }
        let reward_section = config
            .optional_section("reward_fn")
            .ok_or_else(|| AlgorithmError::config("reward_fn", format!("{id} needs a reward function")))?;
        let tokenizer = root
            .alg
            .tokenizer
            .clone()
            .ok_or_else(|| AlgorithmError::config("alg.tokenizer", format!("{id} needs a tokenizer section")))?;
        let metrics = crate::trainer::eval_metrics(config)?;
        let schedule = crate::trainer::lr_schedule(config)?;
        let (policy_args, guide) = actor_critic_args(config, "alg.policy.args")?;
        let settings = loop_settings!(args);
        settings.check()?;
        let lora = crate::lora::lora_config(&root);
        Ok(Ppo {
            id,
            lora,
            plan,
            settings,
            task_id: root.task.id.clone(),
            kl_in_reward: args.kl_in_reward.unwrap_or(kl_in_reward_default),
            sampling: root.sampling,
            spec: *registry::build_policy(&section(config, "alg.policy")?, config)?,
            policy_args,
            tokenizer,
            task: registry::build_task(&section(config, "task")?, config)?,
            reward: match task_reward {
                true => Some(TerminalReward::Task(registry::build_reward_fn(&reward_section, config)?)),
                false => None,
            },
            gold: crate::over_optimization::gold_reward_fn(config)?,
            metrics,
            kl: registry::build_kl_controller(&section(config, "alg.kl_div")?, config)?,
            schedule,
            optimizer: *registry::build_optimizer(&section(config, "alg.optimizer")?, config)?,
            args,
            rollouts: match guide {
                Some(guide) => RolloutStrategy::Rollin(Rollin { guide, schedule: Box::new(NoRollin) }),
                None => RolloutStrategy::Policy,
            },
        })
    }

    /// Makes this a roll-in algorithm whose `alg.policy.args.alg_type` is `alg_type`;
    /// `schedule` builds, from the guide args, what picks each iteration's mode. Needs
    /// `alg.policy.id: multi_actor_critic`.
    pub fn with_rollin(
        mut self,
        alg_type: crate::onpolicy::policies::AlgType,
        schedule: impl FnOnce(
            &crate::onpolicy::policies::GuideArgs,
        ) -> Result<Box<dyn crate::onpolicy::rollin::Schedule>, PluginError>,
    ) -> Result<Ppo, PluginError> {
        let id = self.id;
        let RolloutStrategy::Rollin(rollin) = &mut self.rollouts else {
            let message =
                format!("{id} needs the `multi_actor_critic` policy (guide_model_name, beta, guide_gen_kwargs)");
            return Err(AlgorithmError::config("alg.policy.id", message).into());
        };
        if rollin.guide.alg_type != alg_type {
            let message =
                format!("`{}` does not match the algorithm {id} (expected `{alg_type}`)", rollin.guide.alg_type);
            return Err(AlgorithmError::config("alg.policy.args.alg_type", message).into());
        }
        rollin.schedule = schedule(&rollin.guide)?;
        Ok(self)
    }

    /// Makes a discriminator trained on the rollouts the terminal reward (GAIL).
    pub fn with_discriminator(mut self, discriminator: DiscriminatorPlan) -> Ppo {
        self.reward = Some(TerminalReward::Discriminator(Box::new(discriminator)));
        self
    }

    fn refuse_guide(self) -> Result<Ppo, PluginError> {
        if matches!(self.rollouts, RolloutStrategy::Rollin(_)) {
            let message = format!(
                "`multi_actor_critic` is read by the roll-in algorithms (ppo_pp, aggrevated, lols, d2lols); {} uses \
                 `actor_critic` or `actor_critic_shared`",
                self.id
            );
            return Err(AlgorithmError::config("alg.policy.id", message).into());
        }
        Ok(self)
    }
}

/// The placeholder schedule until [`Ppo::with_rollin`] sets one: plain PPO.
struct NoRollin;

impl crate::onpolicy::rollin::Schedule for NoRollin {
    fn plan(&mut self, _iteration: usize, _rng: &mut ChaCha8Rng) -> IterationPlan {
        IterationPlan::PLAIN
    }
}

fn build(_args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let args: PpoArgs = ctx.config.extract("alg.args")?;
    Ok(Box::new(Ppo::from_config(ctx.config, "ppo", args, true, true)?.refuse_guide()?))
}

tril_core::register!(algorithm,
    id: "ppo",
    doc: "PPO actor-critic with GAE, KL penalty in the reward and target regularization (TRIL's ppo).",
    config: PpoArgs,
    build: build);

/// One iteration's rollouts, on the training backend without autodiff: everything PPO's
/// update reads ([`minibatch_gradients`]). Rows are trajectories; `N = max_gen_len`.
#[derive(Debug, Clone)]
pub struct RolloutBuffer<B: AutodiffBackend> {
    /// `prompt + generation` ids, `[B, P + N]`.
    pub ids: Tensor<Inner<B>, 2, Int>,
    /// Their attention mask, `[B, P + N]`.
    pub mask: Tensor<Inner<B>, 2, Int>,
    /// The tokens the policy loss covers, `[B, N]`: the actions ([`action_mask`]: generated
    /// tokens, the stopping EOS only with `train_eos`) for PPO, a roll-in segment of them
    /// otherwise.
    pub update_mask: Tensor<Inner<B>, 2>,
    /// The tokens the value loss covers, `[B, N]`.
    pub value_mask: Tensor<Inner<B>, 2>,
    /// The critic that gave `values` and is trained.
    pub value_fn: ValueFn,
    /// The rollout policy's log-probs of the actions, `[B, N]`.
    pub logprobs: Tensor<Inner<B>, 2>,
    /// The critic's values `V(s_t)`, `[B, N]`.
    pub values: Tensor<Inner<B>, 2>,
    /// GAE advantages, `[B, N]`.
    pub advantages: Tensor<Inner<B>, 2>,
    /// Returns `A + V`, `[B, N]`.
    pub returns: Tensor<Inner<B>, 2>,
    /// `prompt + reference` ids for the target regularization, `[B, P + N]`.
    pub target_ids: Tensor<Inner<B>, 2, Int>,
    /// The reference tokens' mask, `[B, N]`.
    pub target_mask: Tensor<Inner<B>, 2>,
}

/// What the forward and backward passes of one minibatch give ([`minibatch_gradients`]).
pub enum Minibatch {
    /// The summed micro-batch gradients (each loss divided by `grad_accumulation`).
    Gradients {
        /// The gradients.
        grads: GradientsParams,
        /// Loss terms and policy statistics (`ppo/...`, one entry per micro-batch), which
        /// the guard checks for non-finite values.
        stats: Vec<(&'static str, f64)>,
        /// Value diagnostics logged as TRIL does (explained variances, pad percentage),
        /// never checked by the guard (an explained variance may be NaN).
        diagnostics: Vec<(&'static str, f64)>,
    },
    /// `approx_kl` of a micro-batch exceeded `1.5 x target_kl`: TRIL stops the epochs
    /// there, before that micro-batch's backward pass, and the step is not applied.
    EarlyStop {
        /// The micro-batch's `approx_kl`.
        approx_kl: f64,
    },
}

/// The losses and gradients of PPO's update on rows `rows` of `buf` (TRIL's `PPO.train_step`
/// body for one minibatch, with its micro-batches of `micro_batch` rows): per micro-batch
/// the clipped policy loss, the (clipped) value loss, the entropy and target terms and
/// their [`total_loss`], divided by `grad_accumulation` and backpropagated.
pub fn minibatch_gradients<B: AutodiffBackend>(
    model: &ActorCritic<B>,
    buf: &RolloutBuffer<B>,
    rows: &[usize],
    args: &PpoArgs,
    micro_batch: usize,
) -> Minibatch {
    let n = args.max_gen_len;
    let prompt_len = buf.ids.dims()[1] - n;
    let device = buf.ids.device();
    let mut accum = GradientsAccumulator::<ActorCritic<B>>::new();
    let mut values: Vec<(&'static str, f64)> = Vec::new();
    let mut diagnostics: Vec<(&'static str, f64)> = Vec::new();
    for micro in rows.chunks(micro_batch.max(1)) {
        let picked: Vec<i64> = micro.iter().map(|&i| i as i64).collect();
        let idx = Tensor::<Inner<B>, 1, Int>::from_data(TensorData::new(picked, [micro.len()]), &device);
        let pick = |x: &Tensor<Inner<B>, 2>| Tensor::<B, 2>::from_inner(x.clone().select(0, idx.clone()));
        let pick_int = |x: &Tensor<Inner<B>, 2, Int>| Tensor::<B, 2, Int>::from_inner(x.clone().select(0, idx.clone()));
        let masks = pick(&buf.update_mask); // [b, N]
        let (ids, attn) = (pick_int(&buf.ids), pick_int(&buf.mask)); // [b, P + N]
        let scored = model.score_with(ids, attn.clone(), n, buf.value_fn, args.ent_coef != 0.0);
        let (old_values, returns) = (pick(&buf.values), pick(&buf.returns));
        // TRIL's value diagnostics: over every entry of the micro-batch, padding included.
        let returns_host = f64s(&host(returns.clone().inner()));
        let explained_in = explained_variance(&f64s(&host(scored.values.clone().inner())), &returns_host);
        let explained_out = explained_variance(&f64s(&host(old_values.clone().inner())), &returns_host);
        let pad_percent = 100.0 * (1.0 - scalar(masks.clone().inner().mean()));
        let (pg, stats) =
            policy_loss(scored.logprobs, pick(&buf.logprobs), pick(&buf.advantages), masks.clone(), args.clip_range);
        let (vl, vclip) = value_loss(scored.values, old_values, returns, pick(&buf.value_mask), args.clip_range_vf);
        let ent = entropy_loss(scored.entropy, masks);
        let target = args.target_regularization.then(|| {
            let b = micro.len();
            let prompt_attn = attn.slice([0..b, 0..prompt_len]);
            let t_mask = pick(&buf.target_mask); // [b, N]
            let t_attn = Tensor::cat(vec![prompt_attn, t_mask.clone().int()], 1);
            let lp = lm_logprobs(&model.policy, pick_int(&buf.target_ids), t_attn, n);
            target_loss(lp, t_mask)
        });
        if let Some(tgt) = &target {
            values.push(("ppo/target_loss", scalar(tgt.clone())));
        }
        let terms = PpoTerms { policy: pg.clone(), value: vl.clone(), entropy: ent.clone(), target };
        let loss = total_loss(&terms, args);
        let approx_kl = scalar(stats.approx_kl.clone());
        // TRIL's early stop: checked on each micro-batch before its backward pass, so the
        // step that crossed the bound is not applied.
        if args.target_kl.is_some_and(|target| approx_kl > 1.5 * target) {
            return Minibatch::EarlyStop { approx_kl };
        }
        for (k, v) in [
            ("ppo/policy_gradient_loss", scalar(pg)),
            ("ppo/value_loss", scalar(vl)),
            ("ppo/entropy_loss", scalar(ent)),
            ("ppo/approx_kl", approx_kl),
            ("ppo/clip_fraction", scalar(stats.clip_fraction)),
            ("ppo/ratio", scalar(stats.ratio)),
            ("ppo/val_clip_fraction", scalar(vclip)),
            ("ppo/loss", scalar(loss.clone())),
        ] {
            values.push((k, v));
        }
        diagnostics.push(("ppo/explained_var_in_batch", explained_in));
        diagnostics.push(("ppo/explained_var_out_batch", explained_out));
        diagnostics.push(("ppo/pad_percent", pad_percent));
        let grads = (loss / args.grad_accumulation as f64).backward();
        accum.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    Minibatch::Gradients { grads: accum.grads(), stats: values, diagnostics }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Clips `grads` to `max_grad_norm` as `alg.args.grad_clip` says and returns them with the
/// norm before clipping (`ppo/grad_norm`: the joint norm, or the policy's with `separate`).
/// Either way the critics' own norms before clipping go onto `stats`
/// (`ppo/critic_grad_norm`, `ppo/guide_critic_grad_norm` when the guide critic is trained).
pub fn clip_gradients<B: AutodiffBackend>(
    model: &ActorCritic<B>,
    grads: GradientsParams,
    args: &PpoArgs,
    value_fn: ValueFn,
    stats: &mut Vec<(&'static str, f64)>,
) -> Result<(GradientsParams, f64), tril_core::CoreError> {
    let max = args.max_grad_norm;
    match args.grad_clip {
        // TRIL: `accelerator.clip_grad_norm_(agent.policy_params, max_grad_norm)`, where
        // `policy_params` is the actor's, the critic's and the guide critic's parameters.
        GradClip::Joint => {
            if let Some(critic) = &model.critic {
                stats.push(("ppo/critic_grad_norm", grad_norm(critic, &grads)));
            }
            if let (Some(guide_critic), ValueFn::Guide) = (&model.guide_critic, value_fn) {
                stats.push(("ppo/guide_critic_grad_norm", grad_norm(guide_critic, &grads)));
            }
            clip_grad_norm(model, grads, max)
        }
        GradClip::Separate => {
            let (mut grads, norm) = match &model.critic {
                Some(critic) => {
                    let (grads, norm) = clip_grad_norm(&model.policy, grads, max)?;
                    let (grads, critic_norm) = clip_grad_norm(critic, grads, max)?;
                    stats.push(("ppo/critic_grad_norm", critic_norm));
                    (grads, norm)
                }
                // A value head on the policy's trunk shares its gradient: one norm.
                None => clip_grad_norm(model, grads, max)?,
            };
            if let (Some(guide_critic), ValueFn::Guide) = (&model.guide_critic, value_fn) {
                let (clipped, guide_norm) = clip_grad_norm(guide_critic, grads, max)?;
                stats.push(("ppo/guide_critic_grad_norm", guide_norm));
                grads = clipped;
            }
            Ok((grads, norm))
        }
    }
}

/// One batch of trajectories, possibly mixed (see [`Loop::generate_batch`]).
struct Mixed<B: AutodiffBackend> {
    gen: Generated<Inner<B>>,
    /// The roll-in mask `M`, row-major `[B, N]`.
    rollin_mask: Vec<f32>,
    /// The roll-in lengths `k_i`.
    k: Vec<usize>,
}

/// A `[B, L]` token-id tensor on the training backend without autodiff.
type IntMatrix<B> = Tensor<Inner<B>, 2, Int>;

/// Stage 2's output: one iteration's trajectories, per generate call, with their texts.
struct Collected<B: AutodiffBackend> {
    /// `(ids, attention mask, prompt + reference ids)` of each call, `[b, P + N]` each.
    ids: Vec<[IntMatrix<B>; 3]>,
    /// `[actions, logprobs, ref_logprobs, values, target_mask, entropy, kl_logprobs]` of each
    /// call, `[b, N]` each; `kl_logprobs` is the policy side of the KL estimate
    /// ([`Loop::kl_logprobs`]).
    floats: Vec<[Tensor<Inner<B>, 2>; 7]>,
    sample_ids: Vec<String>,
    prompts: Vec<String>,
    generations: Vec<String>,
    references: Vec<Vec<String>>,
    /// The roll-in mask `M`, row-major `[B, N]`.
    rollin_mask: Vec<f32>,
    /// The roll-in lengths `k_i`.
    rollin_lengths: Vec<usize>,
}

impl<B: AutodiffBackend> Default for Collected<B> {
    fn default() -> Self {
        Collected {
            ids: Vec::new(),
            floats: Vec::new(),
            sample_ids: Vec::new(),
            prompts: Vec::new(),
            generations: Vec::new(),
            references: Vec::new(),
            rollin_mask: Vec::new(),
            rollin_lengths: Vec::new(),
        }
    }
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Per-trajectory sums of a `[B, N]` host matrix.
fn row_sums(values: &[f32], n: usize) -> Vec<f64> {
    values.chunks(n.max(1)).map(|r| r.iter().map(|&x| f64::from(x)).sum()).collect()
}

struct Loop<'a, B: AutodiffBackend> {
    ppo: &'a mut Ppo,
    model: ActorCritic<B>,
    reference: CausalLm<Inner<B>>,
    /// A guide of its own (`guide_model_name` differs from the policy's); else the reference guides.
    guide: Option<CausalLm<Inner<B>>>,
    gpt_config: tril_models::causal_lm::LmConfig,
    tokenizer: TextTokenizer,
    prompt_tok: TextTokenizer,
    optim: Optim<B, ActorCritic<B>>,
    rng: ChaCha8Rng,
    tracker: Tracker,
    train: Vec<Sample>,
    sampler: PromptSampler,
    device: B::Device,
    reward: RewardSource<B>,
    guard: Guard,
}

impl Algorithm for Ppo {
    fn run(self: Box<Self>, ctx: &RunCtx<'_>) -> Result<(), PluginError> {
        if self.reward.is_none() {
            let message = format!("{}: no reward: neither the task's reward_fn nor a learned one", self.id);
            return Err(AlgorithmError::config("reward_fn", message).into());
        }
        run_on_target(ctx, *self)
    }
}

impl Run for Ppo {
    fn run<B: AutodiffBackend>(mut self, ctx: &RunCtx<'_>, device: B::Device) -> Result<(), PluginError> {
        let this = &mut self;
        let (tokenizer, prompt_tok) =
            run_tokenizers(&this.tokenizer, &this.sampling, this.policy_args.prompt_truncation_side)?;
        let (mut model, reference, gpt_config) = build_models::<B>(
            &this.spec,
            "alg.policy.args.model_name",
            tokenizer.vocab_size(),
            this.args.seed,
            &device,
        )?;
        // alg.lora: adapters on the policy and the critic trunks; the reference is the frozen base.
        let lora = this.lora.as_ref();
        let reference = if lora.is_some() { model.policy.without_lora() } else { reference };
        model.policy = crate::lora::with_lora(model.policy, lora, &device)?;
        if let Some(c) = model.critic.as_mut() {
            c.transformer = crate::lora::with_lora(c.transformer.clone(), lora, &device)?;
        }
        let mut guide = None;
        if let RolloutStrategy::Rollin(rollin) = &this.rollouts {
            if rollin.guide.create_guide_critic {
                model = with_guide_critic(model, this.spec.mlp_head, &device);
            }
            if rollin.guide.guide_model_name != this.spec.model_name {
                guide = Some(load_guide(&rollin.guide.guide_model_name, &this.spec, tokenizer.vocab_size(), &device)?);
            }
        }
        let train = this.task.samples(Split::Train)?;
        let evals = this.args.eval_splits.iter().map(|&s| Ok((s, this.task.samples(s)?.len())));
        let evals = evals.collect::<Result<Vec<_>, PluginError>>()?;
        check_splits(&this.task_id, train.len(), evals)?;
        let side = this.policy_args.prompt_truncation_side;
        warn_long_prompts(&tokenizer, &train, this.sampling.max_prompt_len, side, "train")?;
        let guard = Guard::new(this.id, ctx.config, &ctx.run_dir)?;
        let mut state = Loop {
            sampler: PromptSampler::for_replica(train.len()),
            train,
            optim: Optim::for_module(&this.optimizer, &model),
            reward: match this.reward.take() {
                Some(TerminalReward::Task(reward)) => RewardSource::Task(reward),
                Some(TerminalReward::Discriminator(plan)) => {
                    RewardSource::Discriminator(Box::new(plan.build(&device)?.with_guard(guard.clone())))
                }
                None => return Err(AlgorithmError::config("reward_fn", "the run's reward was already used").into()),
            },
            rng: super::replica_rng(this.args.seed),
            tracker: Tracker::new(RunDir::open(&ctx.run_dir)?),
            guard,
            reference: reference.valid(),
            guide,
            model,
            gpt_config,
            tokenizer,
            prompt_tok,
            device,
            ppo: this,
        };
        let first = match &ctx.resume_from {
            Some(dir) => state.restore(dir)? + 1,
            None => 1,
        };
        state.learn(first)
    }
}

impl<B: AutodiffBackend> Loop<'_, B> {
    /// Restores the newest checkpoint of `run_dir`; returns its iteration.
    fn restore(&mut self, run_dir: &std::path::Path) -> Result<usize, PluginError> {
        let (state, model, optim, tracker) = OnPolicyState::restore(
            run_dir,
            self.ppo.id,
            self.train.len(),
            self.model.clone(),
            &self.ppo.optimizer,
            &self.device,
        )?;
        (self.model, self.optim, self.tracker) = (model, optim, tracker);
        if let RewardSource::Discriminator(hook) = &mut self.reward {
            // The checkpoint just restored (verified there; not hashed again).
            let dir = run_dir.join(format!("checkpoints/iter_{}", state.iteration));
            hook.restore(&dir.join("reward_hook"))?;
        }
        self.ppo.kl.load_state(&state.kl_state)?;
        (self.rng, self.sampler) = super::replica_draws(state.rng.restore(), state.sampler, self.train.len());
        self.guard.restore(state.guard_skipped);
        Ok(state.iteration)
    }

    fn learn(&mut self, first: usize) -> Result<(), PluginError> {
        let n_iters = self.ppo.args.n_iters;
        if first > n_iters {
            tracing::info!(n_iters, "the run already finished its {n_iters} iterations; nothing to resume");
            return Ok(());
        }
        if self.ppo.settings.eval_zero_shot && first == 1 {
            self.evaluate(0)?;
        }
        let started = Instant::now();
        let bar = progress::bar(n_iters as u64, self.ppo.id);
        bar.set_position(first as u64 - 1);
        let mut rewards: Vec<f64> = self.tracker.history("rollout_buffer/rewards").iter().map(|p| p.1).collect();
        for iteration in first..=n_iters {
            // `None`: a non-finite reward, skipped within guard.skip_nonfinite.
            let Some((buffer, rollout)) = self.collect_rollouts(iteration)? else {
                self.tracker.log_training(iteration, &self.guard.skipped_line())?;
                self.finish_iteration(iteration, n_iters, &bar)?;
                continue;
            };
            let reward = rollout["rollout_buffer/rewards"];
            rewards.push(reward);
            let kl = rollout["rollout_buffer/kl_div"];
            if self.guard.kl(At::iteration(iteration), "rollout_buffer/kl_div", kl)? == Verdict::Skip {
                self.tracker.log_rollout(iteration, &rollout)?;
                self.tracker.log_training(iteration, &self.guard.skipped_line())?;
                self.finish_iteration(iteration, n_iters, &bar)?;
                continue;
            }
            let mut train = self.train_step(iteration, &buffer)?;
            let elapsed = started.elapsed().as_secs_f64();
            let steps = iteration * self.ppo.args.trajectories_per_update * self.ppo.args.max_gen_len;
            let steps_here =
                (iteration + 1 - first) * self.ppo.args.trajectories_per_update * self.ppo.args.max_gen_len;
            train.insert("time/iterations".into(), iteration as f64);
            train.insert("time/total_timesteps".into(), steps as f64);
            train.insert("time/fps".into(), steps_here as f64 / elapsed.max(1e-9));
            self.tracker.log_rollout(iteration, &rollout)?;
            self.tracker.log_training(iteration, &train)?;
            tracing::info!(
                iteration,
                n_iters,
                reward = format!("{reward:.4}"),
                kl = format!("{:.4}", rollout["rollout_buffer/kl_div"]),
                loss = format!("{:.4}", train.get("ppo/loss").copied().unwrap_or(f64::NAN)),
                "{}",
                self.ppo.id
            );
            bar.set_message(format!("reward {reward:.3}"));
            self.finish_iteration(iteration, n_iters, &bar)?;
        }
        bar.finish_and_clear();
        let k = rewards.len().clamp(1, 3);
        tracing::info!(
            start_reward = format!("{:.4}", mean(&rewards[..k.min(rewards.len())])),
            end_reward = format!("{:.4}", mean(&rewards[rewards.len().saturating_sub(k)..])),
            "mean rollout reward, first vs last {k} iterations"
        );
        Ok(())
    }

    /// What ends every iteration, trained or skipped: evaluation and checkpoint when due,
    /// and on SIGINT/SIGTERM a checkpoint and the stop.
    fn finish_iteration(
        &mut self,
        iteration: usize,
        n_iters: usize,
        bar: &progress::ProgressBar,
    ) -> Result<(), PluginError> {
        if self.ppo.settings.evaluates_at(iteration, n_iters) {
            self.evaluate(iteration)?;
        }
        let stop = self.guard.stop_requested()? && iteration < n_iters;
        if self.ppo.settings.checkpoints_at(iteration, n_iters) || stop {
            self.checkpoint(iteration)?;
        }
        bar.inc(1);
        if stop {
            return Err(self.guard.interrupted(At::iteration(iteration)));
        }
        Ok(())
    }

    /// Generates one batch of trajectories as `plan` says: by the policy alone, or mixed
    /// with the guide (roll-in prefix of `k_i` tokens, then roll-out). Returns the
    /// trajectories and the roll-in mask `M` (`[B, N]`, all zeros for plain PPO).
    fn generate_batch(
        &mut self,
        policy: &CausalLm<Inner<B>>,
        samples: &[&Sample],
        plan: &IterationPlan,
    ) -> Result<Mixed<B>, PluginError> {
        let n = self.ppo.args.max_gen_len;
        let gen_cfg = generation_config(&self.ppo.policy_args.gen_kwargs);
        let (tok, rng, device) = (&self.prompt_tok, &mut self.rng, &self.device);
        let Some(mode) = plan.mode else {
            let gen = generate_forced(policy, tok, samples, &gen_cfg, None, n, rng, device)?;
            return Ok(Mixed { gen, rollin_mask: vec![0.0; samples.len() * n], k: vec![0; samples.len()] });
        };
        let RolloutStrategy::Rollin(rollin) = &self.ppo.rollouts else {
            unreachable!("a roll-in plan comes from a roll-in schedule")
        };
        let guide_cfg = generation_config(&rollin.guide.guide_gen_kwargs);
        let guide = self.guide.as_ref().unwrap_or(&self.reference);
        let ((first, first_cfg), (second, second_cfg)) = match mode {
            Mode::PpoPp => ((guide, &guide_cfg), (policy, &gen_cfg)),
            Mode::Aggrevate => ((policy, &gen_cfg), (guide, &guide_cfg)),
        };
        let rolled_in = generate_forced(first, tok, samples, first_cfg, None, n, rng, device)?;
        let k = rollin_lengths(&rolled_in.output.lengths(), plan.beta, rng);
        let forced = prefixes(&rolled_in.output, &k);
        let gen = generate_forced(second, tok, samples, second_cfg, Some(&forced), n, rng, device)?;
        Ok(Mixed { gen, rollin_mask: rollin_mask(&k, n), k })
    }

    /// One iteration's rollouts, in the stages of DESIGN.md's data flow: 1. the iteration's
    /// plan (roll-in mode), 2. generation with the policy's scores and the reference
    /// log-probs ([`Loop::generate_rollouts`]), 3. terminal rewards ([`Loop::terminal_rewards`]),
    /// 4. per-token rewards, GAE and the buffer ([`Loop::advantages`]).
    fn collect_rollouts(&mut self, iteration: usize) -> Result<Option<(RolloutBuffer<B>, Stats)>, PluginError> {
        let n = self.ppo.args.max_gen_len;
        let gen_cfg = generation_config(&self.ppo.policy_args.gen_kwargs);
        if gen_cfg.max_new_tokens != n {
            let message = format!("must equal alg.args.max_gen_len ({n}), found {}", gen_cfg.max_new_tokens);
            return Err(AlgorithmError::config("alg.policy.args.gen_kwargs.max_new_tokens", message).into());
        }
        // 1. the iteration's plan
        let plan = match &mut self.ppo.rollouts {
            RolloutStrategy::Rollin(rollin) => rollin.schedule.plan(iteration, &mut self.rng),
            RolloutStrategy::Policy => IterationPlan::PLAIN,
        };
        // 2. trajectories, scored by the policy, the critic and the reference
        let rollouts = self.generate_rollouts(&plan)?;
        // 3. one terminal reward per trajectory (none: a non-finite reward the guard skips)
        let Some((terminal, stats)) = self.terminal_rewards(iteration, &rollouts)? else { return Ok(None) };
        // 4. per-token rewards, advantages, returns
        self.advantages(rollouts, terminal, stats, &plan).map(Some)
    }

    /// Stage 2: `generate_calls` batches of trajectories (mixed with the guide as `plan`
    /// says), each scored by the policy (log-probs, entropy), the critic (values) and the
    /// reference (log-probs).
    fn generate_rollouts(&mut self, plan: &IterationPlan) -> Result<Collected<B>, PluginError> {
        let (bpp, n) = (self.ppo.sampling.batch_size_per_process, self.ppo.args.max_gen_len);
        let policy = self.model.valid();
        let mut out = Collected::default();
        let bar = progress::bar(self.ppo.plan.generate_calls as u64, "rollout");
        for _ in 0..self.ppo.plan.generate_calls {
            let idx = self.sampler.take(bpp, &mut self.rng);
            let owned: Vec<Sample> = idx.iter().map(|&i| self.train[i].clone()).collect();
            let samples: Vec<&Sample> = owned.iter().collect();
            let Mixed { gen, rollin_mask: m, k } = self.generate_batch(&policy.policy, &samples, plan)?;
            let (t_ids, t_mask) = reference_targets::<Inner<B>>(&self.tokenizer, &samples, n, &self.device)?;
            let p = gen.ids.dims()[1] - n;
            let b = gen.ids.dims()[0];
            let actions = action_mask(&gen.output, self.prompt_tok.eos_token_id(), self.ppo.args.train_eos);
            let actions = Tensor::from_data(TensorData::new(actions, [b, n]), (&self.device, F32)); // [b, N]
            let attention = rollout_attention(gen.mask, actions.clone(), self.ppo.args.train_eos); // [b, P + N]
            let scored = policy.score_with(gen.ids.clone(), attention.clone(), n, plan.value_fn, false);
            let ref_lp = lm_logprobs(&self.reference, gen.ids.clone(), attention.clone(), n);
            let kl_lp = self.kl_logprobs(&gen.output, scored.logprobs.clone(), plan);
            let prompt = gen.ids.clone().slice([0..b, 0..p]);
            out.ids.push([gen.ids, attention, Tensor::cat(vec![prompt, t_ids], 1)]);
            out.floats.push([actions, scored.logprobs, ref_lp, scored.values, t_mask, scored.entropy, kl_lp]);
            out.sample_ids.extend(samples.iter().map(|s| s.id.clone()));
            out.references.extend(samples.iter().map(|s| s.references.clone()));
            out.prompts.extend(gen.prompts);
            out.generations.extend(gen.texts);
            out.rollin_mask.extend(m);
            out.rollin_lengths.extend(k);
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// The policy log-probs `[b, N]` of the KL estimate (`alg.args.kl_logprobs`): `logprobs`
    /// (the unmodified policy's, from the scoring forward) shifted by `log q(a) - log pi(a)`,
    /// the sampling warp's effect that generation recorded, where the policy drew the token;
    /// exactly `logprobs` under pure sampling. Tokens another model drew (AggreVaTeD's guide
    /// continuations) keep `logprobs`.
    fn kl_logprobs(
        &self,
        output: &GenerationOutput,
        logprobs: Tensor<Inner<B>, 2>,
        plan: &IterationPlan,
    ) -> Tensor<Inner<B>, 2> {
        let policy_drew = !matches!(plan.mode, Some(Mode::Aggrevate));
        if self.ppo.args.kl_logprobs == KlLogprobs::Model || !policy_drew {
            return logprobs;
        }
        let warp: Vec<f32> = output.sampling_logprobs.iter().zip(&output.logprobs).map(|(q, p)| q - p).collect();
        let shape = [output.batch, output.max_new_tokens];
        logprobs + Tensor::from_data(TensorData::new(warp, shape), (&self.device, F32))
    }

    /// Stage 3: the terminal reward of every trajectory, from the run's [`RewardSource`]:
    /// the task's reward function, or the discriminator after its training step (GAIL).
    /// A non-finite reward stops the run, naming the sample, or (within
    /// `guard.skip_nonfinite`) skips the iteration: `None`.
    fn terminal_rewards(
        &mut self,
        iteration: usize,
        rollouts: &Collected<B>,
    ) -> Result<Option<(Vec<f32>, Stats)>, PluginError> {
        let (prompts, generations, references) = (&rollouts.prompts, &rollouts.generations, &rollouts.references);
        let (scores, stats): (Vec<f64>, Stats) = match &mut self.reward {
            RewardSource::Task(reward) => {
                let scores = reward.score(TextBatch { prompts, generations, references })?;
                let stats: Stats =
                    reward.diagnostics().into_iter().map(|(name, v)| (format!("rollout_buffer/{name}"), v)).collect();
                (scores, stats)
            }
            RewardSource::Discriminator(discriminator) => {
                let texts = Rollouts { prompts, generations, references };
                let (learned, stats) = discriminator.rewards(iteration, &texts, &mut self.rng)?;
                (learned.into_iter().map(f64::from).collect(), stats)
            }
        };
        if scores.len() != generations.len() {
            let message = format!("gave {} rewards for {} trajectories", scores.len(), generations.len());
            return Err(AlgorithmError::config("reward_fn", message).into());
        }
        if let Some(i) = scores.iter().position(|r| !r.is_finite()) {
            self.guard.reward(iteration, &rollouts.sample_ids[i], &generations[i], scores[i])?;
            return Ok(None);
        }
        Ok(Some((scores.iter().map(|&r| r as f32).collect(), stats)))
    }

    /// Stage 4: per-token rewards (terminal + KL penalty, when the algorithm keeps it in
    /// the reward), GAE advantages and returns, the update and value masks of the roll-in
    /// segments, the KL controller's step and the rollout statistics.
    fn advantages(
        &mut self,
        rollouts: Collected<B>,
        terminal: Vec<f32>,
        mut stats: Stats,
        plan: &IterationPlan,
    ) -> Result<(RolloutBuffer<B>, Stats), PluginError> {
        let n = self.ppo.args.max_gen_len;
        let parts = &rollouts.floats;
        let cat = |k: usize| Tensor::cat(parts.iter().map(|p| p[k].clone()).collect(), 0);
        let (gen_mask, logprobs, ref_lp, values, target_mask) = (cat(0), cat(1), cat(2), cat(3), cat(4));
        let entropy = host(cat(5)).iter().map(|&e| f64::from(e)).collect::<Vec<_>>();
        let kl_lp = cat(6);
        let t = terminal.len();
        let terminal = Tensor::<Inner<B>, 1>::from_data(TensorData::new(terminal, [t]), (&self.device, F32));
        let kl_coeff = self.ppo.kl.coeff();
        let (rewards, kl_rewards, total) =
            token_rewards(terminal, gen_mask.clone(), kl_lp.clone(), ref_lp.clone(), kl_coeff);
        let total = if self.ppo.kl_in_reward { total } else { rewards.clone() };
        let (advantages, returns) =
            gae(total.clone(), values.clone(), gen_mask.clone(), self.ppo.args.gamma, self.ppo.args.gae_lambda);
        let kl_div = (kl_lp - ref_lp) * gen_mask.clone();
        let gen_host = host(gen_mask.clone());
        let lengths = row_sums(&gen_host, n);
        let kl_sums = row_sums(&host(kl_div), n);
        let (update, value) = segment_masks(plan.mode, &gen_host, &rollouts.rollin_mask);
        let matrix = |v: Vec<f32>| Tensor::<Inner<B>, 2>::from_data(TensorData::new(v, [t, n]), (&self.device, F32));
        let update_mask = matrix(update.clone());
        let advantages = if self.ppo.args.whiten_advantages {
            whiten_advantages(advantages, update_mask.clone())
        } else {
            advantages
        };
        stats.insert("rollout_buffer/rewards".into(), mean(&row_sums(&host(rewards), n)));
        stats.insert("rollout_buffer/kl_rewards".into(), mean(&row_sums(&host(kl_rewards), n)));
        stats.insert("rollout_buffer/total_rewards".into(), mean(&row_sums(&host(total), n)));
        stats.insert("rollout_buffer/kl_div".into(), mean(&kl_sums));
        stats
            .insert("rollout_buffer/sqrt_kl".into(), mean(&kl_sums.iter().map(|k| k.abs().sqrt()).collect::<Vec<_>>()));
        stats.insert(
            "rollout_buffer/value".into(),
            mean(&host(values.clone()).iter().map(|&v| f64::from(v)).collect::<Vec<_>>()),
        );
        stats.insert("rollout_buffer/entropy".into(), mean(&entropy));
        stats.insert("rollout_buffer/episode_lengths".into(), mean(&lengths));
        stats.insert("rollout_buffer/kl_coef".into(), kl_coeff);
        if let Some(mode) = plan.mode {
            let k: Vec<f64> = rollouts.rollin_lengths.iter().map(|&k| k as f64).collect();
            stats.insert("rollout_buffer/rollin_lengths".into(), mean(&k));
            stats.insert("rollout_buffer/learner_tokens".into(), mean(&row_sums(&update, n)));
            stats.insert("rollout_buffer/beta".into(), plan.beta);
            stats.insert("rollout_buffer/mode_aggrevate".into(), f64::from(u8::from(mode == Mode::Aggrevate)));
        }
        // The number of sequences, as Ziegler et al. (`lm-human-preferences`), TRL's
        // `AdaptiveKLController.update(kl, batch_size)` and OpenRLHF: the controller's
        // horizon counts sequences, not tokens.
        // Data-parallel replicas step their controllers with the mean over all of them, so
        // the coefficient stays the same everywhere.
        let world = tril_core::parallel::world();
        self.ppo.kl.step(tril_core::parallel::all_mean(mean(&kl_sums))?, t * world);
        let ids = &rollouts.ids;
        let cat_int = |k: usize| Tensor::cat(ids.iter().map(|p| p[k].clone()).collect(), 0);
        let buffer = RolloutBuffer {
            ids: cat_int(0),
            mask: cat_int(1),
            target_ids: cat_int(2),
            update_mask,
            value_mask: matrix(value),
            value_fn: plan.value_fn,
            logprobs,
            values,
            advantages,
            returns,
            target_mask,
        };
        Ok((buffer, stats))
    }

    /// `n_epochs` passes of clipped PPO updates over the buffer.
    fn train_step(&mut self, iteration: usize, buf: &RolloutBuffer<B>) -> Result<Stats, PluginError> {
        let args = self.ppo.args.clone();
        let total = buf.ids.dims()[0];
        let lr = self.ppo.optimizer.lr * self.ppo.schedule.factor((iteration - 1) as u64);
        let mut acc: std::collections::BTreeMap<&'static str, Vec<f64>> = Default::default();
        let mut order: Vec<usize> = (0..total).collect();
        let bar = progress::bar((args.n_epochs * total.div_ceil(args.batch_size)) as u64, "update");
        let mut step = 0;
        'epochs: for _ in 0..args.n_epochs {
            order.shuffle(&mut self.rng);
            for minibatch in order.chunks(args.batch_size) {
                step += 1;
                let micro = self.ppo.plan.micro_batch;
                // This step's statistics, kept only if the guard lets its update through.
                let result = minibatch_gradients(&self.model, buf, minibatch, &args, micro);
                // Data-parallel replicas stop together when any of them crosses the bound.
                let crossed = matches!(result, Minibatch::EarlyStop { .. });
                let stop = if args.target_kl.is_some() { tril_core::parallel::any(crossed)? } else { crossed };
                let (grads, mut values, diagnostics) = match result {
                    Minibatch::Gradients { grads, stats, diagnostics } if !stop => (grads, stats, diagnostics),
                    Minibatch::Gradients { .. } => {
                        tracing::info!(
                            iteration,
                            step,
                            "early stop: approx_kl above 1.5 x target_kl on another replica"
                        );
                        break 'epochs;
                    }
                    Minibatch::EarlyStop { approx_kl } => {
                        tracing::info!(iteration, step, approx_kl, "early stop: approx_kl above 1.5 x target_kl");
                        break 'epochs;
                    }
                };
                let (grads, norm) = clip_gradients(&self.model, grads, &args, buf.value_fn, &mut values)?;
                values.push(("ppo/grad_norm", norm));
                if self.guard.step(At::update(iteration, step), &values)? == Verdict::Skip {
                    bar.inc(1);
                    continue;
                }
                for (k, v) in values.into_iter().chain(diagnostics) {
                    acc.entry(k).or_default().push(v);
                }
                self.model = self.optim.step(lr, self.model.clone(), grads);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        let mut out: Stats = acc.into_iter().map(|(k, v)| (k.to_string(), mean(&v))).collect();
        out.insert("ppo/lr".into(), lr);
        out.insert("ppo/clip_range".into(), args.clip_range);
        out.insert("ppo/clip_range_vf".into(), args.clip_range_vf.unwrap_or(f64::NAN));
        self.guard.record(&mut out);
        Ok(out)
    }

    /// Generates on each evaluation split and logs every metric and prediction.
    fn evaluate(&mut self, iteration: usize) -> Result<(), PluginError> {
        let policy = self.model.valid();
        let generation = generation_config(&self.ppo.sampling.eval_generation_kwargs);
        let headline = Evaluation {
            policy: &policy.policy,
            tokenizer: &self.tokenizer,
            n_positions: self.gpt_config.max_positions(),
            prompt_tokenizer: &self.prompt_tok,
            generation: &generation,
            task: &*self.ppo.task,
            metrics: &mut self.ppo.metrics,
            splits: &self.ppo.args.eval_splits,
            batch_size: self.ppo.args.eval_batch_size,
            seed: self.ppo.args.seed,
            device: &self.device,
        }
        .run_scored(
            iteration,
            &mut self.tracker,
            EvalScoring {
                proxy: match &mut self.reward {
                    RewardSource::Task(reward) => Some(reward.as_mut()),
                    RewardSource::Discriminator(_) => None,
                },
                gold: self.ppo.gold.as_mut().map(|g| g.as_mut() as &mut dyn RewardFn),
                reference: Some(&self.reference),
            },
        )?;
        let mut plotted = vec!["rollout_buffer/rewards".to_string(), "rollout_buffer/kl_div".to_string()];
        plotted.extend(headline);
        let keys: Vec<&str> = plotted.iter().map(String::as_str).collect();
        self.tracker.plot(&keys)?;
        crate::over_optimization::plot_run(&self.tracker, &self.ppo.args.eval_splits)
    }

    /// Writes `checkpoints/iter_<n>/` atomically: HF `policy/` and `critic/`, the exact
    /// `trainer/` state and `trainer_state.json` (see the module docs).
    fn checkpoint(&mut self, iteration: usize) -> Result<(), PluginError> {
        let model = self.model.valid();
        let (config, tokenizer) = (&self.gpt_config, &self.tokenizer);
        let state =
            OnPolicyState::new(self.ppo.id, iteration, &self.rng, &self.sampler).with_kl_state(self.ppo.kl.state());
        let hook = match &self.reward {
            RewardSource::Discriminator(d) => Some(d),
            RewardSource::Task(_) => None,
        };
        state.write_checkpoint(&self.tracker, &self.guard, &self.model, &self.optim, |tmp| {
            let (lora, base_name) = (self.ppo.lora.as_ref(), &self.ppo.spec.model_name);
            crate::lora::save_policy(&model.policy, config, lora, base_name, &tmp.join("policy"), tokenizer)?;
            // Critics are saved whole (adapters merged: no-ops without alg.lora).
            let critic = match (&model.critic, &model.shared_head) {
                (Some(c), _) => Some(tril_models::heads::ValueModel {
                    transformer: c.transformer.clone().merge_lora(),
                    v_head: c.v_head.clone(),
                }),
                (None, Some(h)) => Some(tril_models::heads::ValueModel {
                    transformer: model.policy.clone().merge_lora(),
                    v_head: h.clone(),
                }),
                (None, None) => None,
            };
            if let Some(c) = critic {
                tril_models::hf::save_value_model(&c, config, &tmp.join("critic"), None)?;
            }
            if let Some(c) = &model.guide_critic {
                tril_models::hf::save_value_model(c, config, &tmp.join("guide_critic"), None)?;
            }
            if let Some(hook) = hook {
                hook.save(&tmp.join("reward_hook"))?;
            }
            Ok(())
        })
    }
}

/// Loads a guide of its own (`guide_model_name` differs from the policy's): frozen, on the
/// policy's tokenizer, so its vocabulary and context must cover the policy's.
fn load_guide<B: burn::tensor::backend::Backend>(
    name: &str,
    spec: &PolicySpec,
    vocab_size: usize,
    device: &B::Device,
) -> Result<CausalLm<B>, PluginError> {
    const KEY: &str = "alg.policy.args.guide_model_name";
    let failed = |e: tril_models::ModelError| AlgorithmError::config(KEY, format!("`{name}`: {e}"));
    let dir = tril_models::resolve::resolve_model(name).map_err(failed)?;
    let loaded = tril_models::hf::load_lm::<B>(&dir, device).map_err(failed)?;
    let context = spec.max_prompt_len + spec.max_gen_len;
    if loaded.config.vocab_size() < vocab_size || loaded.config.max_positions() < context {
        let message = format!(
            "`{name}` has {} token embeddings and {} positions; the policy's tokenizer needs {vocab_size} and a \
             rollout {context}",
            loaded.config.vocab_size(),
            loaded.config.max_positions()
        );
        return Err(AlgorithmError::config(KEY, message).into());
    }
    Ok(loaded.model)
}
