//! PPO's training loop (`alg=ppo`), ordering the spine of [`crate::onpolicy`] and the
//! losses of [`crate::ppo`] as TRIL's `BaseOnPolicyAlgorithm.learn` + `PPO.train_step`.
//!
//! Per iteration: `generate_calls` rollouts of `batch_size_per_process` prompts ->
//! reward -> reference log-probs and values -> per-token rewards (terminal + KL penalty)
//! -> GAE -> `n_epochs` x minibatches (with gradient accumulation) of the clipped losses
//! -> global-norm clipping -> optimizer step -> KL controller -> logs; evaluation every
//! `eval_every`, checkpoints every `save_every` and at the end.
//!
//! # Deviations from TRIL
//! - Seeded: `alg.args.seed` seeds model initialisation, prompt shuffling and sampling.
//! - With a separate critic, the policy's and the critic's gradients are clipped to
//!   `max_grad_norm` each (TRIL clips them together, so an early large value loss
//!   shrinks the policy's step to almost nothing).
//! - Runs on the CPU backend; `device: cuda:N` needs the CUDA build (GPU issue).
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
use crate::onpolicy::{
    build_models, generate_for, generation_config, lm_logprobs, load_tokenizer, prompt_tokenizer, reference_targets,
    warn_long_prompts, ActorCritic, OnPolicyState, PromptSampler,
};
use crate::policies::ActorCriticArgs;
use crate::ppo::{entropy_loss, policy_loss, target_loss, token_rewards, value_loss, PpoArgs, PpoPlan};
use crate::trainer::{section, training_device, Ad, Optim, RngState};
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use tril_core::config::Section;
use tril_core::ops::{clip_grad_norm, gae};
use tril_core::plugin::{
    Algorithm, BuildCtx, KlController, LrSchedule, Metric, OptimizerSpec, PluginError, PolicySpec, RewardFn, RunCtx,
    Sample, Split, Task, TextBatch,
};
use tril_core::progress;
use tril_core::registry;
use tril_core::run_dir::RunDir;
use tril_core::schema::{RootConfig, SamplingConfig, TokenizerConfig};
use tril_core::tracker::{Stats, Tracker};
use tril_models::gpt2::Gpt2Model;
use tril_models::tokenizer::TextTokenizer;
use tril_models::CpuBackend;

type Model = ActorCritic<Ad>;

/// Everything PPO reads from the composed config, built and validated up front.
pub struct Ppo {
    args: PpoArgs,
    plan: PpoPlan,
    sampling: SamplingConfig,
    spec: PolicySpec,
    policy_args: ActorCriticArgs,
    tokenizer: TokenizerConfig,
    task: Box<dyn Task>,
    reward: Box<dyn RewardFn>,
    metrics: Vec<Box<dyn Metric>>,
    kl: Box<dyn KlController>,
    schedule: Box<dyn LrSchedule>,
    optimizer: OptimizerSpec,
}

fn build(_args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let config = ctx.config;
    let root: RootConfig = config.extract("")?;
    let args: PpoArgs = config.extract("alg.args")?;
    let plan = args.plan(root.sampling.batch_size_per_process)?;
    if !root.alg.build_reward {
        return Err("alg.build_reward: PPO needs the task's reward function; set it to true".into());
    }
    let reward_section = config.optional_section("reward_fn").ok_or("reward_fn: PPO needs a reward function")?;
    let tokenizer = root.alg.tokenizer.clone().ok_or("alg.tokenizer: PPO needs a tokenizer section")?;
    let metrics = (0..root.eval_metrics.len())
        .map(|i| registry::build_metric(&section(config, &format!("eval_metrics.{i}"))?, config))
        .collect::<Result<Vec<_>, _>>()?;
    let schedule = match config.optional_section("alg.scheduler") {
        Some(s) => registry::build_scheduler(&s, config)?,
        None => Box::new(crate::schedulers::Constant) as Box<dyn LrSchedule>,
    };
    Ok(Box::new(Ppo {
        plan,
        sampling: root.sampling,
        spec: *registry::build_policy(&section(config, "alg.policy")?, config)?,
        policy_args: config.extract("alg.policy.args")?,
        tokenizer,
        task: registry::build_task(&section(config, "task")?, config)?,
        reward: registry::build_reward_fn(&reward_section, config)?,
        metrics,
        kl: registry::build_kl_controller(&section(config, "alg.kl_div")?, config)?,
        schedule,
        optimizer: *registry::build_optimizer(&section(config, "alg.optimizer")?, config)?,
        args,
    }))
}

tril_core::register!(algorithm,
    id: "ppo",
    doc: "PPO actor-critic with GAE, KL penalty in the reward and target regularization (TRIL's ppo).",
    config: PpoArgs,
    build: build);

/// One iteration's rollouts, on the CPU backend without autodiff.
struct Buffer {
    ids: Tensor<CpuBackend, 2, Int>,
    mask: Tensor<CpuBackend, 2, Int>,
    gen_mask: Tensor<CpuBackend, 2>,
    logprobs: Tensor<CpuBackend, 2>,
    values: Tensor<CpuBackend, 2>,
    advantages: Tensor<CpuBackend, 2>,
    returns: Tensor<CpuBackend, 2>,
    target_ids: Tensor<CpuBackend, 2, Int>,
    target_mask: Tensor<CpuBackend, 2>,
}

fn host(t: Tensor<CpuBackend, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default()
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

struct Loop<'a> {
    ppo: &'a mut Ppo,
    model: Model,
    reference: Gpt2Model<CpuBackend>,
    gpt_config: tril_models::gpt2::Gpt2Config,
    tokenizer: TextTokenizer,
    prompt_tok: TextTokenizer,
    optim: Optim<Model>,
    rng: ChaCha8Rng,
    tracker: Tracker,
    train: Vec<Sample>,
    sampler: PromptSampler,
    device: crate::trainer::CpuDevice,
}

impl Algorithm for Ppo {
    fn run(mut self: Box<Self>, ctx: &RunCtx<'_>) -> Result<(), PluginError> {
        let root: RootConfig = ctx.config.extract("")?;
        let device = training_device(&root)?;
        let tokenizer = load_tokenizer(&self.tokenizer.model_name)?;
        let s = &self.sampling;
        let prompt_tok = prompt_tokenizer(
            &tokenizer,
            s.prompt_padding_side,
            self.policy_args.prompt_truncation_side,
            s.max_prompt_len,
            self.tokenizer.pad_token_as_eos_token,
        );
        let (model, reference, gpt_config) =
            build_models::<Ad>(&self.spec, tokenizer.vocab_size(), self.args.seed, &device)?;
        let train = self.task.samples(Split::Train)?;
        if train.is_empty() {
            return Err("task: the train split is empty".into());
        }
        for split in &self.args.eval_splits {
            if self.task.samples(*split)?.is_empty() {
                return Err(format!(
                    "task: the {} split is empty, but alg.args.eval_splits evaluates on it",
                    split.name()
                )
                .into());
            }
        }
        let side = self.policy_args.prompt_truncation_side;
        warn_long_prompts(&tokenizer, &train, self.sampling.max_prompt_len, side, "train")?;
        let mut state = Loop {
            sampler: PromptSampler::new(train.len()),
            train,
            optim: Optim::for_module(&self.optimizer, &model),
            rng: ChaCha8Rng::seed_from_u64(self.args.seed),
            tracker: Tracker::new(RunDir::open(&ctx.run_dir)?),
            reference: reference.valid(),
            model,
            gpt_config,
            tokenizer,
            prompt_tok,
            device,
            ppo: &mut self,
        };
        let first = match &ctx.resume_from {
            Some(dir) => state.restore(dir)? + 1,
            None => 1,
        };
        state.learn(first)
    }
}

impl Loop<'_> {
    /// Restores the newest checkpoint of `run_dir`; returns its iteration.
    fn restore(&mut self, run_dir: &std::path::Path) -> Result<usize, PluginError> {
        let (state, model, optim, tracker) = OnPolicyState::restore(
            run_dir,
            "ppo",
            self.train.len(),
            self.model.clone(),
            &self.ppo.optimizer,
            &self.device,
        )?;
        (self.model, self.optim, self.tracker) = (model, optim, tracker);
        self.ppo.kl.load_state(&state.kl_state)?;
        self.rng = state.rng.restore();
        self.sampler = state.sampler;
        Ok(state.iteration)
    }

    fn learn(&mut self, first: usize) -> Result<(), PluginError> {
        let n_iters = self.ppo.args.n_iters;
        if first > n_iters {
            tracing::info!(n_iters, "the run already finished its {n_iters} iterations; nothing to resume");
            return Ok(());
        }
        if self.ppo.args.eval_zero_shot && first == 1 {
            self.evaluate(0)?;
        }
        let started = Instant::now();
        let bar = progress::bar(n_iters as u64, "ppo");
        bar.set_position(first as u64 - 1);
        let mut rewards: Vec<f64> = self.tracker.history("rollout_buffer/rewards").iter().map(|p| p.1).collect();
        for iteration in first..=n_iters {
            let (buffer, rollout) = self.collect_rollouts(iteration)?;
            let reward = rollout["rollout_buffer/rewards"];
            rewards.push(reward);
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
                "ppo"
            );
            bar.set_message(format!("reward {reward:.3}"));
            if iteration % self.ppo.args.eval_every.max(1) == 0 || iteration == n_iters {
                self.evaluate(iteration)?;
            }
            let save = self.ppo.args.save_checkpoints && iteration % self.ppo.args.save_every.max(1) == 0;
            if save || iteration == n_iters {
                self.checkpoint(iteration)?;
            }
            bar.inc(1);
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

    /// Generates, scores and computes advantages for one iteration's trajectories.
    fn collect_rollouts(&mut self, iteration: usize) -> Result<(Buffer, Stats), PluginError> {
        let (bpp, n) = (self.ppo.sampling.batch_size_per_process, self.ppo.args.max_gen_len);
        let gen_cfg = generation_config(&self.ppo.policy_args.gen_kwargs);
        if gen_cfg.max_new_tokens != n {
            return Err(format!(
                "alg.policy.args.gen_kwargs.max_new_tokens ({}) must equal alg.args.max_gen_len ({n})",
                gen_cfg.max_new_tokens
            )
            .into());
        }
        let policy = self.model.valid();
        let mut parts: Vec<[Tensor<CpuBackend, 2>; 6]> = Vec::new();
        let mut ids_parts = Vec::new();
        let mut terminal = Vec::new();
        let bar = progress::bar(self.ppo.plan.generate_calls as u64, "rollout");
        for _ in 0..self.ppo.plan.generate_calls {
            let idx = self.sampler.take(bpp, &mut self.rng);
            let samples: Vec<&Sample> = idx.iter().map(|&i| &self.train[i]).collect();
            let gen = generate_for(&policy.policy, &self.prompt_tok, &samples, &gen_cfg, &mut self.rng, &self.device)?;
            let refs: Vec<Vec<String>> = samples.iter().map(|s| s.references.clone()).collect();
            let batch = TextBatch { prompts: &gen.prompts, generations: &gen.texts, references: &refs };
            let scores = self.ppo.reward.score(batch)?;
            if let Some(i) = scores.iter().position(|r| !r.is_finite()) {
                return Err(format!(
                    "iteration {iteration}: the reward of sample `{}` is {} (generation {:?}); stopping instead of training on it",
                    samples[i].id, scores[i], gen.texts[i]
                )
                .into());
            }
            terminal.extend(scores.iter().map(|&r| r as f32));
            let scored = policy.score(gen.ids.clone(), gen.mask.clone(), n);
            let ref_lp = lm_logprobs(&self.reference, gen.ids.clone(), gen.mask.clone(), n);
            let (t_ids, t_mask) = reference_targets::<CpuBackend>(&self.tokenizer, &samples, n, &self.device)?;
            let p = gen.ids.dims()[1] - n;
            let prompt = gen.ids.clone().slice([0..samples.len(), 0..p]);
            ids_parts.push((gen.ids, gen.mask, Tensor::cat(vec![prompt, t_ids], 1)));
            parts.push([gen.gen_mask, scored.logprobs, ref_lp, scored.values, t_mask, scored.entropy]);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let cat = |k: usize| Tensor::cat(parts.iter().map(|p| p[k].clone()).collect(), 0);
        let (gen_mask, logprobs, ref_lp, values, target_mask) = (cat(0), cat(1), cat(2), cat(3), cat(4));
        let entropy = host(cat(5)).iter().map(|&e| f64::from(e)).collect::<Vec<_>>();
        let t = terminal.len();
        let terminal = Tensor::<CpuBackend, 1>::from_data(TensorData::new(terminal, [t]), &self.device);
        let kl_coeff = self.ppo.kl.coeff();
        let (rewards, kl_rewards, total) =
            token_rewards(terminal, gen_mask.clone(), logprobs.clone(), ref_lp.clone(), kl_coeff);
        let (advantages, returns) =
            gae(total.clone(), values.clone(), gen_mask.clone(), self.ppo.args.gamma, self.ppo.args.gae_lambda);
        let kl_div = (logprobs.clone() - ref_lp) * gen_mask.clone();
        let lengths = row_sums(&host(gen_mask.clone()), n);
        let kl_sums = row_sums(&host(kl_div), n);
        let mut stats = Stats::new();
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
        self.ppo.kl.step(mean(&kl_sums), t * n);
        let cat_int = |k: usize| {
            Tensor::cat(ids_parts.iter().map(|p| [p.0.clone(), p.1.clone(), p.2.clone()][k].clone()).collect(), 0)
        };
        let buffer = Buffer {
            ids: cat_int(0),
            mask: cat_int(1),
            target_ids: cat_int(2),
            gen_mask,
            logprobs,
            values,
            advantages,
            returns,
            target_mask,
        };
        Ok((buffer, stats))
    }

    /// `n_epochs` passes of clipped PPO updates over the buffer.
    fn train_step(&mut self, iteration: usize, buf: &Buffer) -> Result<Stats, PluginError> {
        let args = self.ppo.args.clone();
        let n = args.max_gen_len;
        let total = buf.ids.dims()[0];
        let prompt_len = buf.ids.dims()[1] - n;
        let lr = self.ppo.optimizer.lr * self.ppo.schedule.factor((iteration - 1) as u64);
        let mut acc: std::collections::BTreeMap<&'static str, Vec<f64>> = Default::default();
        let mut order: Vec<usize> = (0..total).collect();
        let bar = progress::bar((args.n_epochs * total.div_ceil(args.batch_size)) as u64, "update");
        'epochs: for _ in 0..args.n_epochs {
            order.shuffle(&mut self.rng);
            for minibatch in order.chunks(args.batch_size) {
                let mut accum = GradientsAccumulator::<Model>::new();
                let mut approx_kl = 0.0;
                for micro in minibatch.chunks(self.ppo.plan.micro_batch) {
                    let rows: Vec<i64> = micro.iter().map(|&i| i as i64).collect();
                    let idx =
                        Tensor::<CpuBackend, 1, Int>::from_data(TensorData::new(rows, [micro.len()]), &self.device);
                    let pick =
                        |x: &Tensor<CpuBackend, 2>| Tensor::<Ad, 2>::from_inner(x.clone().select(0, idx.clone()));
                    let pick_int = |x: &Tensor<CpuBackend, 2, Int>| {
                        Tensor::<Ad, 2, Int>::from_inner(x.clone().select(0, idx.clone()))
                    };
                    let masks = pick(&buf.gen_mask); // [b, N]
                    let (ids, attn) = (pick_int(&buf.ids), pick_int(&buf.mask)); // [b, P + N]
                    let scored = self.model.score(ids, attn.clone(), n);
                    let (pg, stats) = policy_loss(
                        scored.logprobs,
                        pick(&buf.logprobs),
                        pick(&buf.advantages),
                        masks.clone(),
                        args.clip_range,
                    );
                    let (vl, vclip) = value_loss(
                        scored.values,
                        pick(&buf.values),
                        pick(&buf.returns),
                        masks.clone(),
                        args.clip_range_vf,
                    );
                    let ent = entropy_loss(scored.entropy, masks);
                    let mut loss = pg.clone() + vl.clone() * args.vf_coef + ent.clone() * args.ent_coef;
                    if args.target_regularization {
                        let b = micro.len();
                        let prompt_attn = attn.slice([0..b, 0..prompt_len]);
                        let t_mask = pick(&buf.target_mask); // [b, N]
                        let t_attn = Tensor::cat(vec![prompt_attn, t_mask.clone().int()], 1);
                        let lp = lm_logprobs(&self.model.policy, pick_int(&buf.target_ids), t_attn, n);
                        let tgt = target_loss(lp, t_mask);
                        acc.entry("ppo/target_loss").or_default().push(scalar(tgt.clone()));
                        loss = loss + tgt * args.target_coef;
                    }
                    approx_kl = scalar(stats.approx_kl.clone());
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
                        acc.entry(k).or_default().push(v);
                    }
                    let grads = (loss / args.grad_accumulation as f64).backward();
                    accum.accumulate(&self.model, GradientsParams::from_grads(grads, &self.model));
                }
                // The policy and a separate critic are clipped each on its own: a large value
                // loss early on would otherwise scale the policy's gradient to nothing.
                let (grads, norm) = match &self.model.critic {
                    Some(critic) => {
                        let (grads, norm) = clip_grad_norm(&self.model.policy, accum.grads(), args.max_grad_norm);
                        let (grads, critic_norm) = clip_grad_norm(critic, grads, args.max_grad_norm);
                        acc.entry("ppo/critic_grad_norm").or_default().push(critic_norm);
                        (grads, norm)
                    }
                    None => clip_grad_norm(&self.model, accum.grads(), args.max_grad_norm),
                };
                acc.entry("ppo/grad_norm").or_default().push(norm);
                self.model = self.optim.step(lr, self.model.clone(), grads);
                bar.inc(1);
                if args.target_kl.is_some_and(|target| approx_kl > 1.5 * target) {
                    tracing::info!(iteration, approx_kl, "early stop: approx_kl above 1.5 x target_kl");
                    break 'epochs;
                }
            }
        }
        bar.finish_and_clear();
        let mut out: Stats = acc.into_iter().map(|(k, v)| (k.to_string(), mean(&v))).collect();
        let old = host(buf.values.clone());
        let ret = host(buf.returns.clone());
        let m = host(buf.gen_mask.clone());
        let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        out.insert(
            "ppo/explained_var_out_batch".into(),
            tril_core::ops::explained_variance(&f(&old), &f(&ret), &f(&m)),
        );
        out.insert("ppo/pad_percent".into(), 1.0 - mean(&f(&m)));
        out.insert("ppo/lr".into(), lr);
        out.insert("ppo/clip_range".into(), args.clip_range);
        out.insert("ppo/clip_range_vf".into(), args.clip_range_vf.unwrap_or(f64::NAN));
        Ok(out)
    }

    /// Generates on each evaluation split and logs every metric and prediction.
    fn evaluate(&mut self, iteration: usize) -> Result<(), PluginError> {
        let policy = self.model.valid();
        let generation = generation_config(&self.ppo.sampling.eval_generation_kwargs);
        let headline = Evaluation {
            policy: &policy.policy,
            tokenizer: &self.tokenizer,
            n_positions: self.gpt_config.n_positions,
            prompt_tokenizer: &self.prompt_tok,
            generation: &generation,
            task: &*self.ppo.task,
            metrics: &mut self.ppo.metrics,
            splits: &self.ppo.args.eval_splits,
            batch_size: self.ppo.args.eval_batch_size,
            seed: self.ppo.args.seed,
            device: &self.device,
        }
        .run(iteration, &mut self.tracker)?;
        let mut plotted = vec!["rollout_buffer/rewards".to_string(), "rollout_buffer/kl_div".to_string()];
        plotted.extend(headline);
        let keys: Vec<&str> = plotted.iter().map(String::as_str).collect();
        Ok(self.tracker.plot(&keys)?)
    }

    /// Writes `checkpoints/iter_<n>/` atomically: HF `policy/` and `critic/`, the exact
    /// `trainer/` state and `trainer_state.json` (see the module docs).
    fn checkpoint(&mut self, iteration: usize) -> Result<(), PluginError> {
        let model = self.model.valid();
        let (config, tokenizer) = (&self.gpt_config, &self.tokenizer);
        let state = OnPolicyState {
            algorithm: "ppo".into(),
            iteration,
            kl_state: self.ppo.kl.state(),
            rng: RngState::of(&self.rng),
            sampler: self.sampler.clone(),
        };
        state.write_checkpoint(self.tracker.run_dir(), &self.model, &self.optim, |tmp| {
            tril_models::hf::save_gpt2(&model.policy, config, &tmp.join("policy"), Some(tokenizer))?;
            let critic = match (&model.critic, &model.shared_head) {
                (Some(c), _) => Some(c.clone()),
                (None, Some(h)) => {
                    Some(tril_models::heads::Gpt2ValueModel { transformer: model.policy.clone(), v_head: h.clone() })
                }
                (None, None) => None,
            };
            if let Some(c) = critic {
                tril_models::hf::gpt2::save_gpt2_value_model(&c, config, &tmp.join("critic"), None)?;
            }
            Ok(())
        })
    }
}

fn scalar(t: Tensor<Ad, 1>) -> f64 {
    f64::from(t.into_scalar())
}
