//! The training loop GRPO (`alg=grpo`, [`crate::group::grpo`]), GSPO (`alg=gspo`,
//! [`crate::group::gspo`]), RLOO (`alg=rloo`, [`crate::group::rloo`]) and REINFORCE++
//! (`alg=reinforce_pp`, [`crate::group::reinforce_pp`]) share, as TRL's `GRPOTrainer` orders
//! it (reference/systems.md §3.1, FAI-RL §2.5); they differ only in the [`GroupObjective`]
//! they plug in: its advantages (from the iteration's rewards, generation-time and reference
//! log-probs and completion mask; sequence-level `[N, 1]` or token-level `[N, T]`) and its loss.
//!
//! Per iteration:
//! 1. sample `P` prompts and repeat each `G = num_generations` times (rows `[kG, (k+1)G)`
//!    are prompt `k`'s group), generate with the run's seeded sampler at `temperature`;
//! 2. score every completion with the task's reward function (a non-finite reward stops
//!    the run, naming the iteration and the sample);
//! 3. old log-probs (when a generation batch feeds more than one optimizer step, or the
//!    objective's advantages read them, [`crate::group::GroupSettings::generation_logprobs`];
//!    otherwise the loss uses the detached current log-probs, as TRL) and reference
//!    log-probs (only with a KL coefficient > 0, from a frozen copy of the initial policy);
//! 4. the objective's advantages over the whole batch ([`GroupObjective::advantages`]:
//!    GRPO's group-relative ones, RLOO's leave-one-out ones after the KL penalty,
//!    REINFORCE++'s whitened token returns);
//! 5. `num_iterations` shuffled passes of `steps_per_generation` micro-batches of
//!    `batch_size` completions, `grad_accumulation` of them per optimizer step, then
//!    global-norm clipping, the optimizer step and the scheduler;
//! 6. logs, evaluation every `eval_every`, checkpoints.
//!
//! Checkpoints (`checkpoints/iter_<n>/`, written atomically) hold the HF `policy/`, the
//! exact `trainer/` state and `trainer_state.json` (RNG and prompt-sampler position), so
//! `tril run --resume RUN_DIR` continues bit for bit (tested by killing a run).
//!
//! # Logged metrics
//! | key | meaning |
//! |---|---|
//! | `rollout/reward_mean`, `rollout/reward_std` | mean and (unbiased) std of the iteration's rewards (TRL `reward`, `reward_std`) |
//! | `rollout/completion_length` | mean generated tokens (TRL `completions/mean_length`) |
//! | `rollout/frac_reward_zero_std` | fraction of groups whose rewards are all equal, so without signal (TRL's key); only with `G >= 2` |
//! | `rollout/<name>` | the objective's advantage statistics (RLOO, REINFORCE++: `rollout/kl`, see their files) |
//! | `<id>/loss` | the loss of one optimizer step (what is differentiated), mean over steps |
//! | `<id>/clip_ratio`, `<id>/clip_ratio_low`, `<id>/clip_ratio_high` | clipped fractions (TRL `clip_ratio/region_mean`, `low_mean`, `high_mean`; REINFORCE++ logs `clip_ratio` and `ppo_kl`) |
//! | `<id>/kl` | mean k3 estimate of `KL(pi || ref)` per token (TRL `kl`); GRPO/GSPO with `beta > 0` |
//! | `<id>/entropy` | mean per-token policy entropy at `temperature` (TRL `entropy`) |
//! | `<id>/grad_norm`, `<id>/lr` | gradient norm before clipping; learning rate |
//! | `time/iterations`, `time/completions_per_second` | progress |
//!
//! `<id>` is `grpo`, `gspo`, `rloo` or `reinforce_pp`.
//!
//! # Deviations from TRL
//! - Iterations count generation batches (`n_iters`), as TRIL's PPO; TRL counts optimizer
//!   steps (`max_steps`). `steps_per_generation` must be a multiple of `grad_accumulation`.
//! - The learning-rate schedule steps once per iteration (TRIL's; TRL: per optimizer step).
//! - Sampling applies the generation settings' `top_k`/`top_p`/`min_length`; the loss's
//!   log-probs are the plain softmax at `temperature` (as TRL). A KL folded into the reward
//!   (RLOO, REINFORCE++) uses, with `kl_logprobs: sampled` (the default), the log-prob under
//!   the truncated distribution each token was drawn from, so the policy cannot lower the
//!   penalty by moving mass outside the top k ([`crate::onpolicy::ppo::KlLogprobs`]).
//! - The policy section's critic layout is ignored: no critic is built.
//! - Rewards are not NaN-aware: a non-finite reward stops the run.

use crate::evaluation::Evaluation;
use crate::group::{
    completion_logprobs, completion_logprobs_and_entropy, mean_std, repeat_groups, GroupObjective, GroupPlan,
    GroupSettings, RolloutBatch,
};
use crate::guard::{At, Guard, Verdict};
use crate::onpolicy::policies::ActorCriticArgs;
use crate::onpolicy::ppo::KlLogprobs;
use crate::onpolicy::{build_models, generate_for, generation_config, run_tokenizers, OnPolicyState, PromptSampler};
use crate::over_optimization::EvalScoring;
use crate::settings::{check_splits, loop_settings};
use crate::trainer::{run_on_target, section, Optim, Run};
use crate::AlgorithmError;
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Instant;
use tril_core::config::Section;
use tril_core::ops::{clip_grad_norm, masked_mean};
use tril_core::ops::{host, scalar};
use tril_core::plugin::{
    Algorithm, BuildCtx, CriticLayout, LrSchedule, Metric, OptimizerSpec, PluginError, PolicySpec, RewardFn, RunCtx,
    Sample, Split, Task, TextBatch,
};
use tril_core::registry;
use tril_core::run_dir::RunDir;
use tril_core::schema::{RootConfig, SamplingConfig, TokenizerConfig};
use tril_core::tracker::{Stats, Tracker};
use tril_models::causal_lm::{CausalLm, LmConfig};
use tril_models::generate::GenerationConfig;
use tril_models::tokenizer::TextTokenizer;
type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Everything a group algorithm reads from the composed config, built and validated up front.
pub struct GroupAlgorithm<O: GroupObjective> {
    objective: O,
    settings: GroupSettings,
    plan: GroupPlan,
    sampling: SamplingConfig,
    spec: PolicySpec,
    policy_args: ActorCriticArgs,
    tokenizer: TokenizerConfig,
    generation: GenerationConfig,
    task: Box<dyn Task>,
    reward: Box<dyn RewardFn>,
    /// The root `gold_reward_fn`: scored on the eval generations only.
    gold: Option<Box<dyn RewardFn>>,
    metrics: Vec<Box<dyn Metric>>,
    schedule: Box<dyn LrSchedule>,
    optimizer: OptimizerSpec,
    task_id: String,
    /// `alg.lora`: adapters on the policy, see [`crate::lora`].
    lora: Option<tril_models::lora::LoraConfig>,
}

/// The registry builder of every group algorithm (`args` is `alg.args`).
pub fn build<O: GroupObjective>(args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let config = ctx.config;
    let id = O::ID;
    let root: RootConfig = config.extract("")?;
    let objective = O::extract(args)?;
    let settings = objective.settings();
    let plan = settings.plan()?;
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
    let policy_args: ActorCriticArgs = config.extract("alg.policy.args")?;
    let mut generation = generation_config(&policy_args.gen_kwargs);
    if generation.max_new_tokens != settings.max_completion_length {
        let message = format!(
            "must equal alg.args.max_completion_length ({}), found {}",
            settings.max_completion_length, generation.max_new_tokens
        );
        return Err(AlgorithmError::config("alg.policy.args.gen_kwargs.max_new_tokens", message).into());
    }
    if !generation.do_sample {
        let message = format!(
            "{id} needs sampling (greedy decoding gives a group identical completions and zero advantages); set it \
             to true"
        );
        return Err(AlgorithmError::config("alg.policy.args.gen_kwargs.do_sample", message).into());
    }
    if let Some(t) = policy_args.gen_kwargs.temperature.filter(|&t| t != settings.temperature) {
        let message = format!(
            "{t} differs from alg.args.temperature ({}); {id} samples and scores at alg.args.temperature, so leave \
             the former unset or equal",
            settings.temperature
        );
        return Err(AlgorithmError::config("alg.policy.args.gen_kwargs.temperature", message).into());
    }
    generation.temperature = settings.temperature;
    let metrics = crate::trainer::eval_metrics(config)?;
    let schedule = crate::trainer::lr_schedule(config)?;
    let lora = crate::lora::lora_config(&root);
    Ok(Box::new(GroupAlgorithm {
        objective,
        settings,
        plan,
        sampling: root.sampling,
        spec: *registry::build_policy(&section(config, "alg.policy")?, config)?,
        policy_args,
        tokenizer,
        generation,
        task: registry::build_task(&section(config, "task")?, config)?,
        reward: registry::build_reward_fn(&reward_section, config)?,
        gold: crate::over_optimization::gold_reward_fn(config)?,
        metrics,
        schedule,
        optimizer: *registry::build_optimizer(&section(config, "alg.optimizer")?, config)?,
        task_id: root.task.id.clone(),
        lora,
    }))
}

/// One iteration's completions and what the update needs of them, on the CPU backend.
struct Buffer<B: AutodiffBackend> {
    /// `prompt + completion` ids and attention mask, `[N, P + T]`.
    ids: Tensor<Inner<B>, 2, Int>,
    mask: Tensor<Inner<B>, 2, Int>,
    /// Completion mask, `[N, T]`.
    gen_mask: Tensor<Inner<B>, 2>,
    /// The objective's advantages, `[N, 1]` or `[N, T]`.
    advantages: Tensor<Inner<B>, 2>,
    /// Log-probs at generation time, `[N, T]` (off-policy, or when the advantages read them).
    old_logprobs: Option<Tensor<Inner<B>, 2>>,
    /// Reference log-probs, `[N, T]` (only with a KL coefficient > 0).
    ref_logprobs: Option<Tensor<Inner<B>, 2>>,
}

struct Loop<'a, B: AutodiffBackend, O: GroupObjective> {
    alg: &'a mut GroupAlgorithm<O>,
    policy: CausalLm<B>,
    reference: Option<CausalLm<Inner<B>>>,
    gpt_config: LmConfig,
    tokenizer: TextTokenizer,
    prompt_tok: TextTokenizer,
    optim: Optim<B, CausalLm<B>>,
    rng: ChaCha8Rng,
    tracker: Tracker,
    train: Vec<Sample>,
    sampler: PromptSampler,
    device: B::Device,
    guard: Guard,
}

impl<O: GroupObjective> Algorithm for GroupAlgorithm<O> {
    fn run(self: Box<Self>, ctx: &RunCtx<'_>) -> Result<(), PluginError> {
        run_on_target(ctx, *self)
    }
}

impl<O: GroupObjective> Run for GroupAlgorithm<O> {
    fn run<B: AutodiffBackend>(mut self, ctx: &RunCtx<'_>, device: B::Device) -> Result<(), PluginError> {
        let this = &mut self;
        let (tokenizer, prompt_tok) =
            run_tokenizers(&this.tokenizer, &this.sampling, this.policy_args.prompt_truncation_side)?;
        // No critic: the shared-trunk layout only adds a value head, dropped here.
        let spec = PolicySpec { critic: CriticLayout::SharedTrunk, ..this.spec.clone() };
        let (mut model, reference, gpt_config) = build_models::<B>(
            &spec,
            "alg.policy.args.model_name",
            tokenizer.vocab_size(),
            this.settings.train.seed,
            &device,
        )?;
        // alg.lora: adapters on the policy; the reference is the frozen base.
        let reference = if this.lora.is_some() { model.policy.without_lora() } else { reference };
        model.policy = crate::lora::with_lora(model.policy, this.lora.as_ref(), &device)?;
        let train = this.task.samples(Split::Train)?;
        let evals = this.settings.train.eval_splits.iter().map(|&s| Ok((s, this.task.samples(s)?.len())));
        let evals = evals.collect::<Result<Vec<_>, PluginError>>()?;
        check_splits(&this.task_id, train.len(), evals)?;
        let mut state = Loop {
            sampler: PromptSampler::for_replica(train.len()),
            train,
            optim: Optim::for_module(&this.optimizer, &model.policy),
            rng: crate::onpolicy::replica_rng(this.settings.train.seed),
            tracker: Tracker::new(RunDir::open(&ctx.run_dir)?),
            guard: Guard::new(O::ID, ctx.config, &ctx.run_dir)?,
            reference: this.settings.needs_reference().then(|| reference.valid()),
            policy: model.policy,
            gpt_config,
            tokenizer,
            prompt_tok,
            device,
            alg: this,
        };
        let first = match &ctx.resume_from {
            Some(dir) => state.restore(dir)? + 1,
            None => 1,
        };
        state.learn(first)
    }
}

impl<B: AutodiffBackend, O: GroupObjective> Loop<'_, B, O> {
    /// Restores the newest checkpoint of `run_dir` (policy, optimizer, RNG, prompt
    /// sampler); returns its iteration.
    fn restore(&mut self, run_dir: &std::path::Path) -> Result<usize, PluginError> {
        let (state, policy, optim, tracker) = OnPolicyState::restore(
            run_dir,
            O::ID,
            self.train.len(),
            self.policy.clone(),
            &self.alg.optimizer,
            &self.device,
        )?;
        (self.policy, self.optim, self.tracker) = (policy, optim, tracker);
        (self.rng, self.sampler) = crate::onpolicy::replica_draws(state.rng.restore(), state.sampler, self.train.len());
        self.guard.restore(state.guard_skipped);
        Ok(state.iteration)
    }

    fn learn(&mut self, first: usize) -> Result<(), PluginError> {
        let t = self.alg.settings.train.clone();
        let id = O::ID;
        if first > t.n_iters {
            tracing::info!(
                n_iters = t.n_iters,
                "the run already finished its {} iterations; nothing to resume",
                t.n_iters
            );
            return Ok(());
        }
        if t.eval_zero_shot && first == 1 {
            self.evaluate(0)?;
        }
        let started = Instant::now();
        let mut rewards: Vec<f64> = self.tracker.history("rollout/reward_mean").iter().map(|p| p.1).collect();
        for iteration in first..=t.n_iters {
            let settings = loop_settings!(t);
            // `None`: a non-finite reward, skipped within guard.skip_nonfinite.
            let Some((buffer, mut rollout)) = self.collect(iteration)? else {
                self.tracker.log_training(iteration, &self.guard.skipped_line())?;
                self.finish_iteration(&settings, iteration)?;
                continue;
            };
            let reward = rollout["rollout/reward_mean"];
            rewards.push(reward);
            let mut train = self.train_step(iteration, &buffer)?;
            let completions = iteration * self.alg.plan.generation_batch;
            train.insert("time/iterations".into(), iteration as f64);
            let here = (iteration + 1 - first) * self.alg.plan.generation_batch;
            train.insert("time/completions_per_second".into(), here as f64 / started.elapsed().as_secs_f64());
            rollout.insert("time/total_completions".into(), completions as f64);
            self.tracker.log_rollout(iteration, &rollout)?;
            self.tracker.log_training(iteration, &train)?;
            tracing::info!(
                iteration,
                n_iters = t.n_iters,
                reward = format!("{reward:.4}"),
                loss = format!("{:.4}", train.get(&format!("{id}/loss")).copied().unwrap_or(f64::NAN)),
                "{id}"
            );
            self.finish_iteration(&settings, iteration)?;
        }
        let k = rewards.len().clamp(1, 3);
        tracing::info!(
            start_reward = format!("{:.4}", mean_std(&rewards[..k.min(rewards.len())]).0),
            end_reward = format!("{:.4}", mean_std(&rewards[rewards.len().saturating_sub(k)..]).0),
            "mean rollout reward, first vs last {k} iterations"
        );
        Ok(())
    }

    /// What ends every iteration, trained or skipped: evaluation and checkpoint when due,
    /// and on SIGINT/SIGTERM a checkpoint and the stop.
    fn finish_iteration(
        &mut self,
        settings: &crate::settings::LoopSettings,
        iteration: usize,
    ) -> Result<(), PluginError> {
        let n_iters = self.alg.settings.train.n_iters;
        if settings.evaluates_at(iteration, n_iters) {
            self.evaluate(iteration)?;
        }
        let stop = self.guard.stop_requested()? && iteration < n_iters;
        if settings.checkpoints_at(iteration, n_iters) || stop {
            self.checkpoint(iteration)?;
        }
        if stop {
            return Err(self.guard.interrupted(At::iteration(iteration)));
        }
        Ok(())
    }

    /// Steps 1-4: generates `G` completions of each sampled prompt, scores them and computes
    /// old and reference log-probs and the objective's advantages.
    fn collect(&mut self, iteration: usize) -> Result<Option<(Buffer<B>, Stats)>, PluginError> {
        let (g, n, temp) =
            (self.alg.settings.num_generations, self.alg.settings.max_completion_length, self.alg.settings.temperature);
        let policy = self.policy.valid();
        // 1. prompts, each repeated G times, generated in chunks of batch_size_per_process
        let prompts = self.sampler.take(self.alg.plan.prompts, &mut self.rng);
        let rows = repeat_groups(&prompts, g);
        let (mut ids_parts, mut mask_parts, mut gen_mask_parts) = (Vec::new(), Vec::new(), Vec::new());
        let (mut old_parts, mut ref_parts, mut scores) = (Vec::new(), Vec::new(), Vec::new());
        let mut kl_parts = Vec::new();
        // The KL's policy side from the generation's own log-probs only where the sampler
        // truncates the distribution; at a plain temperature they equal the recomputed ones.
        let gen_cfg = &self.alg.generation;
        let truncates = gen_cfg.top_k > 0 || gen_cfg.top_p < 1.0 || gen_cfg.min_length > 0;
        let sampled_kl = self.alg.settings.kl_logprobs == KlLogprobs::Sampled && truncates;
        let mut diagnostics: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for chunk in rows.chunks(self.alg.sampling.batch_size_per_process.max(1)) {
            let samples: Vec<&Sample> = chunk.iter().map(|&i| &self.train[i]).collect();
            let gen =
                generate_for(&policy, &self.prompt_tok, &samples, &self.alg.generation, &mut self.rng, &self.device)?;
            // 2. rewards
            let refs: Vec<Vec<String>> = samples.iter().map(|s| s.references.clone()).collect();
            let batch = TextBatch { prompts: &gen.prompts, generations: &gen.texts, references: &refs };
            let chunk_scores = self.alg.reward.score(batch)?;
            if let Some(i) = chunk_scores.iter().position(|r| !r.is_finite()) {
                self.guard.reward(iteration, &samples[i].id, &gen.texts[i], chunk_scores[i])?;
                return Ok(None);
            }
            // The reward's own statistics (an ensemble's members), weighted by chunk size.
            for (name, value) in self.alg.reward.diagnostics() {
                let entry = diagnostics.entry(name).or_insert((0.0, 0.0));
                *entry = (entry.0 + value * chunk_scores.len() as f64, entry.1 + chunk_scores.len() as f64);
            }
            scores.extend(chunk_scores);
            // 3. old and reference log-probs
            if self.alg.plan.off_policy() || self.alg.settings.generation_logprobs {
                let old = completion_logprobs(&policy, gen.ids.clone(), gen.mask.clone(), n, temp); // [b, T]
                kl_parts.push(if sampled_kl {
                    let shape = [gen.output.batch, gen.output.max_new_tokens];
                    let data = TensorData::new(gen.output.sampling_logprobs.clone(), shape);
                    Tensor::from_data(data, (&self.device, burn::tensor::DType::F32))
                // [b, T]
                } else {
                    old.clone()
                });
                old_parts.push(old);
            }
            if let Some(reference) = &self.reference {
                ref_parts.push(completion_logprobs(reference, gen.ids.clone(), gen.mask.clone(), n, temp));
            }
            ids_parts.push(gen.ids);
            mask_parts.push(gen.mask);
            gen_mask_parts.push(gen.gen_mask);
        }
        // 4. the objective's advantages over the whole batch
        let total = scores.len();
        let rewards = Tensor::<Inner<B>, 1>::from_data(
            TensorData::new(scores.iter().map(|&r| r as f32).collect::<Vec<_>>(), [total]),
            (&self.device, burn::tensor::DType::F32),
        ); // [N]
        let cat_f = |xs: Vec<Tensor<Inner<B>, 2>>| (!xs.is_empty()).then(|| Tensor::cat(xs, 0));
        let gen_mask = Tensor::cat(gen_mask_parts, 0); // [N, T]
        let (old_logprobs, ref_logprobs) = (cat_f(old_parts), cat_f(ref_parts)); // [N, T] each
        let batch = RolloutBatch {
            rewards,
            old_logprobs: old_logprobs.clone(),
            kl_logprobs: cat_f(kl_parts), // [N, T]
            ref_logprobs: ref_logprobs.clone(),
            mask: gen_mask.clone(),
            group_size: g,
        };
        let advantages = self.alg.objective.advantages(batch)?; // [N, 1] or [N, T]
        let lengths: Vec<f64> =
            host(gen_mask.clone()).chunks(n).map(|r| r.iter().map(|&x| f64::from(x)).sum()).collect();
        let zero_std = scores.chunks(g).filter(|grp| grp.iter().all(|&r| r == grp[0])).count();
        let (reward_mean, reward_std) = mean_std(&scores);
        let mut stats = Stats::new();
        for (name, (sum, count)) in diagnostics {
            stats.insert(format!("rollout/{name}"), sum / count.max(1.0));
        }
        stats.insert("rollout/reward_mean".into(), reward_mean);
        stats.insert("rollout/reward_std".into(), reward_std);
        stats.insert("rollout/completion_length".into(), mean_std(&lengths).0);
        if g >= 2 {
            stats.insert("rollout/frac_reward_zero_std".into(), zero_std as f64 / (total / g) as f64);
        }
        for (name, value) in advantages.stats {
            stats.insert(format!("rollout/{name}"), value);
        }
        let buffer = Buffer {
            ids: Tensor::cat(ids_parts, 0),
            mask: Tensor::cat(mask_parts, 0),
            gen_mask,
            advantages: advantages.advantages,
            old_logprobs,
            ref_logprobs,
        };
        Ok(Some((buffer, stats)))
    }

    /// Step 5: `num_iterations` shuffled passes of micro-batches, one optimizer step per
    /// `grad_accumulation` of them.
    fn train_step(&mut self, iteration: usize, buf: &Buffer<B>) -> Result<Stats, PluginError> {
        let settings = self.alg.settings.clone();
        let (t, id) = (&settings.train, O::ID);
        let n = settings.max_completion_length;
        let lr = self.alg.optimizer.lr * self.alg.schedule.factor((iteration - 1) as u64);
        let step_rows = t.batch_size * t.grad_accumulation;
        // DAPO normalizes by the whole step's token count; the others are per micro-batch means.
        let accumulation_divisor = if settings.loss_per_step { 1.0 } else { t.grad_accumulation as f64 };
        let gen_mask_host = host(buf.gen_mask.clone());
        let mut acc: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut order: Vec<usize> = (0..buf.ids.dims()[0]).collect();
        let mut step_no = 0;
        for _ in 0..settings.num_iterations {
            order.shuffle(&mut self.rng);
            for step in order.chunks(step_rows) {
                step_no += 1;
                // This step's statistics, kept only if the guard lets its update through.
                let mut values: Vec<(String, f64)> = Vec::new();
                let mut kls = Vec::new();
                let items: f64 = step
                    .iter()
                    .map(|&i| gen_mask_host[i * n..(i + 1) * n].iter().map(|&m| f64::from(m)).sum::<f64>())
                    .sum();
                let mut accum = GradientsAccumulator::<CausalLm<B>>::new();
                let mut step_loss = 0.0;
                for micro in step.chunks(t.batch_size) {
                    let rows: Vec<i64> = micro.iter().map(|&i| i as i64).collect();
                    let idx = Tensor::<Inner<B>, 1, Int>::from_data(TensorData::new(rows, [micro.len()]), &self.device);
                    let pick = |x: &Tensor<Inner<B>, 2>| Tensor::<B, 2>::from_inner(x.clone().select(0, idx.clone()));
                    let pick_int = |x: &Tensor<Inner<B>, 2, Int>| {
                        Tensor::<B, 2, Int>::from_inner(x.clone().select(0, idx.clone()))
                    };
                    let mask = pick(&buf.gen_mask); // [b, T]
                    let advantages = pick(&buf.advantages); // [b, 1] or [b, T]
                    let (new_logprobs, entropy) = completion_logprobs_and_entropy(
                        &self.policy,
                        pick_int(&buf.ids),
                        pick_int(&buf.mask),
                        n,
                        settings.temperature,
                    );
                    let old_logprobs = buf.old_logprobs.as_ref().map_or_else(|| new_logprobs.clone().detach(), &pick);
                    let ref_logprobs = buf.ref_logprobs.as_ref().map(&pick);
                    let (loss, stats) = self.alg.objective.loss(
                        new_logprobs,
                        old_logprobs,
                        ref_logprobs,
                        advantages,
                        mask.clone(),
                        Some(items),
                    )?;
                    let entropy = masked_mean(entropy, mask);
                    let mut record = |k: &str, v: f64| values.push((format!("{id}/{k}"), v));
                    record("entropy", scalar(entropy));
                    for (name, value) in stats.values {
                        record(name, scalar(value));
                    }
                    if let Some(kl) = stats.kl {
                        let kl = scalar(kl);
                        kls.push(kl);
                        record("kl", kl);
                    }
                    let loss = loss / accumulation_divisor;
                    step_loss += scalar(loss.clone());
                    let grads = loss.backward();
                    accum.accumulate(&self.policy, GradientsParams::from_grads(grads, &self.policy));
                }
                let (grads, norm) = clip_grad_norm(&self.policy, accum.grads(), t.max_grad_norm)?;
                values.push((format!("{id}/loss"), step_loss));
                values.push((format!("{id}/grad_norm"), norm));
                let at = At::update(iteration, step_no);
                let mut verdict = self.guard.step(at, &values)?;
                if verdict == Verdict::Apply && !kls.is_empty() {
                    verdict = self.guard.kl(at, &format!("{id}/kl"), mean_std(&kls).0)?;
                }
                if verdict == Verdict::Skip {
                    continue;
                }
                for (k, v) in values {
                    acc.entry(k).or_default().push(v);
                }
                self.policy = self.optim.step(lr, self.policy.clone(), grads);
            }
        }
        let mut out: Stats = acc.into_iter().map(|(k, v)| (k, mean_std(&v).0)).collect();
        out.insert(format!("{id}/lr"), lr);
        self.guard.record(&mut out);
        Ok(out)
    }

    /// Step 6: evaluation on the configured splits, then the plots.
    fn evaluate(&mut self, iteration: usize) -> Result<(), PluginError> {
        let policy = self.policy.valid();
        let generation = generation_config(&self.alg.sampling.eval_generation_kwargs);
        let t = &self.alg.settings.train;
        let headline = Evaluation {
            policy: &policy,
            tokenizer: &self.tokenizer,
            n_positions: self.gpt_config.max_positions(),
            prompt_tokenizer: &self.prompt_tok,
            generation: &generation,
            task: &*self.alg.task,
            metrics: &mut self.alg.metrics,
            splits: &t.eval_splits,
            batch_size: t.eval_batch_size,
            seed: t.seed,
            device: &self.device,
        }
        .run_scored(
            iteration,
            &mut self.tracker,
            EvalScoring {
                proxy: Some(self.alg.reward.as_mut()),
                gold: self.alg.gold.as_mut().map(|g| g.as_mut() as &mut dyn RewardFn),
                reference: self.reference.as_ref(),
            },
        )?;
        // Keys a run does not log (no KL term, or a KL in the reward) are not plotted.
        let mut plotted = vec!["rollout/reward_mean".to_string(), format!("{}/kl", O::ID), "rollout/kl".to_string()];
        plotted.extend(headline);
        let keys: Vec<&str> = plotted.iter().map(String::as_str).collect();
        self.tracker.plot(&keys)?;
        crate::over_optimization::plot_run(&self.tracker, &t.eval_splits)
    }

    /// Writes `checkpoints/iter_<n>/` atomically: the HF `policy/`, the exact `trainer/`
    /// state and `trainer_state.json` (what `--resume` continues from).
    fn checkpoint(&mut self, iteration: usize) -> Result<(), PluginError> {
        let policy = self.policy.valid();
        let (config, tokenizer) = (&self.gpt_config, &self.tokenizer);
        let state = OnPolicyState::new(O::ID, iteration, &self.rng, &self.sampler);
        state.write_checkpoint(&self.tracker, &self.guard, &self.policy, &self.optim, |tmp| {
            let (lora, base_name) = (self.alg.lora.as_ref(), &self.alg.spec.model_name);
            crate::lora::save_policy(&policy, config, lora, base_name, &tmp.join("policy"), tokenizer)
        })
    }
}
