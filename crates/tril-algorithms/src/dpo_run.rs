//! DPO's training loop (`alg=dpo`): the offline loop of [`crate::offline`] over the
//! paired preferences of the task (`preference`, `synthetic_preference`), with the losses
//! of [`crate::dpo`] (sigmoid/cDPO, IPO, hinge, robust) as TRL's `DPOTrainer`.
//!
//! Per optimizer step: `batch_size` pairs in `grad_accumulation` micro-batches; each
//! micro-batch runs the policy once over its chosen and rejected rows
//! (`prompt + completion + EOS`, truncated as TRL), reduces the completion log-probs per
//! sequence (summed; averaged for IPO) and takes [`crate::dpo::dpo_loss`] against the
//! reference's log-probs.
//!
//! # Logged keys (TRL's)
//! `loss`, `rewards/chosen`, `rewards/rejected`, `rewards/accuracies`, `rewards/margins`,
//! `logps/chosen`, `logps/rejected` (policy), `grad_norm`, `learning_rate`, `epoch`; the
//! same statistics over each evaluation split in `{split}_split_metrics.jsonl`.
//! Output: `checkpoints/iter_<steps>/policy`, an HF GPT-2 directory with its tokenizer.
//!
//! # Deviations from TRL
//! - The reference log-probs are computed once before training (TRL's
//!   `precompute_ref_log_probs: true`); the reference is frozen, so the values are the
//!   same, and the reference model is not held during training.
//! - `--resume` is not implemented; the checkpoint holds the policy in HF layout only.

use crate::dpo::{dpo_loss, DpoArgs};
use crate::offline::{
    check_loop_args, completion_logprobs, frozen_logprobs, host, lm_batch, load_lm, pad_id, tensor1, tokenize_pair,
    train, Lengths, LoopArgs, Objective, StatSums, Tokens, TrainSetup,
};
use crate::onpolicy::load_tokenizer;
use crate::trainer::{section, training_device, Ad, CpuDevice};
use burn::tensor::Tensor;
use std::path::Path;
use tril_core::config::Section;
use tril_core::plugin::{Algorithm, BuildCtx, LrSchedule, OptimizerSpec, PluginError, RunCtx, Split, Task};
use tril_core::registry;
use tril_core::run_dir::RunDir;
use tril_core::schema::{RootConfig, TokenizerConfig};
use tril_core::tracker::Tracker;
use tril_models::gpt2::{Gpt2Config, Gpt2Model};
use tril_models::tokenizer::TextTokenizer;

/// What an offline algorithm reads besides its args: tokenizer, task, optimizer, schedule.
pub struct OfflineParts {
    /// `alg.tokenizer`.
    pub tokenizer: TokenizerConfig,
    /// The task and its id.
    pub task: Box<dyn Task>,
    /// `task.id`, for error messages.
    pub task_id: String,
    /// `alg.optimizer`.
    pub optimizer: OptimizerSpec,
    /// `alg.scheduler` (constant when absent).
    pub schedule: Box<dyn LrSchedule>,
}

impl OfflineParts {
    /// Builds the parts from the composed config; `alg` names the algorithm in errors.
    pub fn build(ctx: &BuildCtx<'_>, alg: &str) -> Result<Self, PluginError> {
        let config = ctx.config;
        let root: RootConfig = config.extract("")?;
        let tokenizer = root.alg.tokenizer.clone().ok_or(format!("alg.tokenizer: {alg} needs a tokenizer section"))?;
        let schedule = match config.optional_section("alg.scheduler") {
            Some(s) => registry::build_scheduler(&s, config)?,
            None => Box::new(crate::schedulers::Constant) as Box<dyn LrSchedule>,
        };
        Ok(OfflineParts {
            tokenizer,
            task: registry::build_task(&section(config, "task")?, config)?,
            task_id: root.task.id,
            optimizer: *registry::build_optimizer(&section(config, "alg.optimizer")?, config)?,
            schedule,
        })
    }

    /// The task's data of one split, with errors naming the task.
    pub fn data<T>(
        &self,
        split: Split,
        f: impl Fn(&dyn Task, Split) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        f(self.task.as_ref(), split)
            .map_err(|e| format!("task `{}` ({} split): {e}", self.task_id, split.name()).into())
    }
}

/// The preparation every offline run shares: no resume, the device and the tokenizer.
pub fn prepare(ctx: &RunCtx<'_>, parts: &OfflineParts, alg: &str) -> Result<(CpuDevice, TextTokenizer), PluginError> {
    if ctx.resume_from.is_some() {
        return Err(format!("--resume is not implemented for {alg} yet").into());
    }
    let root: RootConfig = ctx.config.extract("")?;
    Ok((training_device(&root)?, load_tokenizer(&parts.tokenizer.model_name)?))
}

/// DPO, built and validated from the composed config.
pub struct Dpo {
    args: DpoArgs,
    parts: OfflineParts,
}

fn build(args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let args = DpoArgs::extract(args)?;
    check_loop_args(&loop_args(&args))?;
    Ok(Box::new(Dpo { parts: OfflineParts::build(ctx, "dpo")?, args }))
}

tril_core::register!(algorithm,
    id: "dpo",
    doc: "Direct preference optimization with sigmoid/cDPO, IPO, hinge and robust losses (TRL's DPOTrainer).",
    config: DpoArgs,
    build: build);

fn loop_args(a: &DpoArgs) -> LoopArgs {
    LoopArgs {
        seed: a.seed,
        epochs: a.epochs,
        batch_size: a.batch_size,
        grad_accumulation: a.grad_accumulation,
        max_grad_norm: a.max_grad_norm,
        eval_every: a.eval_every,
        eval_batch_size: a.eval_batch_size,
        eval_splits: a.eval_splits.clone(),
        eval_zero_shot: a.eval_zero_shot,
    }
}

/// A tokenized pair with its reference log-probs.
#[derive(Debug, Clone)]
pub struct EncodedPair {
    chosen: Tokens,
    rejected: Tokens,
    ref_chosen: f32,
    ref_rejected: f32,
}

struct DpoObjective {
    args: DpoArgs,
    pad: u32,
    device: CpuDevice,
    config: Gpt2Config,
    tokenizer: TextTokenizer,
}

impl Objective for DpoObjective {
    type Model = Gpt2Model<Ad>;
    type Example = EncodedPair;

    fn loss(&self, model: &Self::Model, batch: &[&EncodedPair]) -> Result<(Tensor<Ad, 1>, StatSums), PluginError> {
        let b = batch.len();
        let rows: Vec<&Tokens> = batch.iter().map(|p| &p.chosen).chain(batch.iter().map(|p| &p.rejected)).collect();
        let lm = lm_batch::<Ad>(&rows, self.pad, &self.device);
        let logps = completion_logprobs(model, &lm, self.args.loss_type.reduction()); // [2B]
        let (chosen, rejected) = (logps.clone().narrow(0, 0, b), logps.narrow(0, b, b)); // [B], [B]
        let ref_chosen = tensor1::<Ad>(batch.iter().map(|p| p.ref_chosen).collect(), &self.device);
        let ref_rejected = tensor1::<Ad>(batch.iter().map(|p| p.ref_rejected).collect(), &self.device);
        let (loss, stats) = dpo_loss(chosen.clone(), rejected.clone(), ref_chosen, ref_rejected, &self.args);
        let n = b as f64;
        let sum = |t: Tensor<Ad, 1>| host(t.detach()).iter().map(|&x| f64::from(x)).sum::<f64>();
        let mut sums = StatSums::default();
        sums.add("rewards/chosen", sum(stats.rewards_chosen), n);
        sums.add("rewards/rejected", sum(stats.rewards_rejected), n);
        sums.add("rewards/accuracies", sum(stats.reward_accuracy) * n, n);
        sums.add("rewards/margins", sum(stats.reward_margin) * n, n);
        sums.add("logps/chosen", sum(chosen), n);
        sums.add("logps/rejected", sum(rejected), n);
        Ok((loss, sums))
    }

    fn save(&self, model: &Self::Model, dir: &Path) -> Result<(), PluginError> {
        Ok(tril_models::hf::save_gpt2(model, &self.config, dir, Some(&self.tokenizer))?)
    }

    fn model_dir(&self) -> &'static str {
        "policy"
    }

    fn plotted(&self) -> Vec<&'static str> {
        vec!["loss", "rewards/accuracies", "rewards/margins", "rewards/chosen"]
    }
}

impl Algorithm for Dpo {
    fn run(self: Box<Self>, ctx: &RunCtx<'_>) -> Result<(), PluginError> {
        let Dpo { args, parts } = *self;
        let (device, tokenizer) = prepare(ctx, &parts, "dpo")?;
        let lengths = Lengths { max_length: args.max_length, max_prompt_length: args.max_prompt_length };
        let (policy, reference, config) = load_lm(
            &args.model_name,
            args.ref_model_name.as_deref(),
            tokenizer.vocab_size(),
            args.seed,
            lengths,
            &device,
        )?;
        let pad = pad_id(&tokenizer);
        let encode = |split: Split| -> Result<Vec<EncodedPair>, PluginError> {
            let pairs = parts.data(split, |t, s| t.preference_pairs(s))?;
            let mut out = Vec::with_capacity(pairs.len());
            for p in &pairs {
                out.push(EncodedPair {
                    chosen: tokenize_pair(&tokenizer, &p.prompt, &p.chosen, lengths, true, &p.id)?,
                    rejected: tokenize_pair(&tokenizer, &p.prompt, &p.rejected, lengths, true, &p.id)?,
                    ref_chosen: 0.0,
                    ref_rejected: 0.0,
                });
            }
            let reduction = args.loss_type.reduction();
            let chunk = args.eval_batch_size;
            let chosen = frozen_logprobs(
                &reference,
                &out.iter().map(|p| &p.chosen).collect::<Vec<_>>(),
                pad,
                reduction,
                chunk,
                &device,
            );
            let rejected = frozen_logprobs(
                &reference,
                &out.iter().map(|p| &p.rejected).collect::<Vec<_>>(),
                pad,
                reduction,
                chunk,
                &device,
            );
            for ((p, c), r) in out.iter_mut().zip(chosen).zip(rejected) {
                (p.ref_chosen, p.ref_rejected) = (c, r);
            }
            Ok(out)
        };
        let train_pairs = encode(Split::Train)?;
        let evals = args.eval_splits.iter().map(|&s| Ok((s, encode(s)?))).collect::<Result<Vec<_>, PluginError>>()?;
        let mut tracker = Tracker::new(RunDir::open(&ctx.run_dir)?);
        let objective = DpoObjective { pad, device, config, tokenizer, args: args.clone() };
        let setup = TrainSetup {
            args: loop_args(&args),
            optimizer: parts.optimizer.clone(),
            schedule: parts.schedule.as_ref(),
            train: train_pairs,
            evals,
            tracker: &mut tracker,
            name: "dpo",
        };
        train(&objective, policy, setup)?;
        Ok(())
    }
}
