//! The offline (supervised) loop that `dpo`, `kto` and `reward_model` share: fixed
//! examples instead of rollouts. Tokenization of `prompt + completion` with TRL's
//! truncation, right-padded batches, per-sequence completion log-probs, and [`train`]:
//! epochs of seeded shuffled batches, gradient accumulation over micro-batches,
//! global-norm clipping, the optimizer and learning-rate schedule from the registry,
//! logging into the run directory and a final HF-layout checkpoint written atomically.
//!
//! Each algorithm supplies an [`Objective`]: its encoded example type, the loss of a
//! micro-batch with its statistics, and how to save the model.
//!
//! # Run directory
//! | file | one line per | content |
//! |---|---|---|
//! | `training_info.jsonl` | optimizer step | `{"iteration": step, "loss": x, "learning_rate": x, "grad_norm": x, "epoch": x, <objective keys>}` |
//! | `{split}_split_metrics.jsonl` | evaluation | `{"epoch": step, "metrics": {<objective keys>: x}}` (TRIL's form; `epoch` holds the step) |
//! | `checkpoints/iter_<step>/<model>` | end of training | the model in HF layout with `tokenizer.json` |
//!
//! # Deviations from TRL
//! - Statistics are averaged over all examples of the logging interval (one optimizer
//!   step) and of the evaluation split, weighting each micro-batch by its size.
//! - The last batch of an epoch may be smaller (TRL's `dataloader_drop_last: false`).

pub mod bc;
pub mod dpo;
pub mod dpo_run;
pub mod kto;
pub mod kto_run;
pub mod logp;
pub mod offline_ips;
pub mod reward_model;

use crate::guard::{At, Guard, Verdict};
use crate::onpolicy::{build_models, load_tokenizer, OnPolicyState, PromptSampler};
use crate::settings::{check_splits, LoopSettings};
use crate::trainer::{section, Optim};
use crate::AlgorithmError;
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
pub use tril_core::ops::host;
use tril_core::ops::scalar;
use tril_core::ops::{clip_grad_norm, gather_logprobs};
use tril_core::plugin::{
    BuildCtx, CriticLayout, LrSchedule, ModelType, OptimizerSpec, PluginError, PolicySpec, RunCtx, Split, Task,
};
use tril_core::registry;
use tril_core::run_dir::RunDir;
use tril_core::schema::{RootConfig, TokenizerConfig};
use tril_core::tracker::{Stats, Tracker};
use tril_models::causal_lm::{CausalLm, LmConfig};
use tril_models::tokenizer::TextTokenizer;

use crate::offline::dpo::{sequence_logprobs, SequenceReduction};

/// What the offline loop reads from an algorithm's `alg.args`: the shared
/// [`LoopSettings`] and the number of passes.
#[derive(Debug, Clone)]
pub struct LoopArgs {
    /// The settings every loop shares.
    pub settings: LoopSettings,
    /// Passes over the training split.
    pub epochs: usize,
}

/// Checks the loop settings; errors name the `alg.args` key.
pub fn check_loop_args(a: &LoopArgs) -> Result<(), PluginError> {
    if a.epochs == 0 {
        return Err(AlgorithmError::invalid("alg.args.epochs", "at least 1", 0).into());
    }
    a.settings.check()
}

/// The [`LoopArgs`] of an algorithm's typed `alg.args` (`dpo`, `kto`, `reward_model`),
/// which declare the shared settings and `epochs` under the same names.
macro_rules! loop_args {
    ($a:expr) => {{
        let a = &$a;
        $crate::offline::LoopArgs { settings: $crate::settings::loop_settings!(a), epochs: a.epochs }
    }};
}
pub(crate) use loop_args;

/// Token budgets of `prompt + completion` (TRL's `max_length`, `max_prompt_length`).
#[derive(Debug, Clone, Copy)]
pub struct Lengths {
    /// Prompt + completion tokens kept.
    pub max_length: usize,
    /// Prompt tokens kept.
    pub max_prompt_length: usize,
}

/// A tokenized prompt and completion, already truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt ids.
    pub prompt: Vec<u32>,
    /// Completion ids (at least one).
    pub completion: Vec<u32>,
}

/// Tokenizes a prompt and a completion separately (as TRL) and truncates them: the prompt
/// keeps its last `max_prompt_length` tokens (TRL's `truncation_mode: keep_end`), then the
/// completion (with EOS appended when `append_eos`) keeps its first
/// `max_length - prompt` tokens. Errors name `what` when the completion has no token.
///
/// Conversational cells (JSON lists of `{role, content}` messages) are rendered first by the
/// tokenizer's chat template as TRL does (`tril_models::chat_template::render_cell_pair`);
/// anything else, JSON that is not a conversation included, is text and passes unchanged.
pub fn tokenize_pair(
    tok: &TextTokenizer,
    prompt: &str,
    completion: &str,
    lengths: Lengths,
    append_eos: bool,
    what: &str,
) -> Result<Tokens, PluginError> {
    let rendered = match is_conversation(prompt) || is_conversation(completion) {
        true => Some(tril_models::chat_template::render_cell_pair(tok.chat_template(), prompt, completion, what)?),
        false => None,
    };
    let (prompt, completion) = rendered.as_ref().map_or((prompt, completion), |(p, c)| (p.as_str(), c.as_str()));
    let mut p = tok.encode(prompt, false)?;
    if p.len() > lengths.max_prompt_length {
        p.drain(..p.len() - lengths.max_prompt_length);
    }
    let mut c = tok.encode(completion, false)?;
    if append_eos {
        let lacks = || AlgorithmError::Tokenizer { lacks: "no EOS token to end completions with".into() };
        c.push(tok.eos_token_id().ok_or_else(lacks)?);
    }
    c.truncate(lengths.max_length - p.len());
    if c.is_empty() {
        return Err(
            AlgorithmError::NoTokens { at: what.to_string(), what: format!("the completion `{completion}`") }.into()
        );
    }
    Ok(Tokens { prompt: p, completion: c })
}

/// Whether a cell is a conversation: a JSON list of `{role, content}` messages.
pub fn is_conversation(cell: &str) -> bool {
    matches!(tril_models::chat_template::parse_messages(cell), Ok(Some(_)))
}

/// The text of a prompt cell: a conversation rendered by the tokenizer's chat template (a
/// generation prompt after the last user turn, as TRL), anything else as is. `row` names
/// the row when the tokenizer has no template.
pub fn prompt_cell_text(tok: &TextTokenizer, cell: &str, row: &str) -> Result<String, PluginError> {
    match is_conversation(cell) {
        true => Ok(tril_models::chat_template::render_prompt_cell(tok.chat_template(), cell, row)?),
        false => Ok(cell.to_string()),
    }
}

/// A right-padded batch of `prompt + completion` rows.
#[derive(Debug, Clone)]
pub struct LmBatch<B: Backend> {
    /// Token ids, `[B, T]` (pad: `pad_id`).
    pub ids: Tensor<B, 2, Int>,
    /// Attention mask, `[B, T]`.
    pub mask: Tensor<B, 2, Int>,
    /// 1 where position `t + 1` is a completion token, `[B, T - 1]` (the logits at `t`
    /// predict it).
    pub target_mask: Tensor<B, 2>,
}

/// Builds an [`LmBatch`] (`T` = the longest row, at least 2).
pub fn lm_batch<B: Backend>(rows: &[&Tokens], pad_id: u32, device: &B::Device) -> LmBatch<B> {
    let t = rows.iter().map(|r| r.prompt.len() + r.completion.len()).max().unwrap_or(0).max(2);
    let b = rows.len();
    let mut ids = vec![i64::from(pad_id); b * t];
    let mut mask = vec![0i64; b * t];
    let mut target = vec![0f32; b * (t - 1)];
    for (i, r) in rows.iter().enumerate() {
        for (j, &id) in r.prompt.iter().chain(&r.completion).enumerate() {
            ids[i * t + j] = i64::from(id);
            mask[i * t + j] = 1;
        }
        // The first token of a row is predicted by nothing (an empty prompt).
        for j in r.prompt.len().max(1)..r.prompt.len() + r.completion.len() {
            target[i * (t - 1) + j - 1] = 1.0;
        }
    }
    LmBatch {
        ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
        mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
        target_mask: Tensor::from_data(TensorData::new(target, [b, t - 1]), (device, burn::tensor::DType::F32)),
    }
}

/// The log-prob of each row's completion under `lm`, reduced per sequence.
///
/// ```tex
/// \log\pi(y \mid x) = \sum_{t \in y} \log\pi(y_t \mid x, y_{<t}) \quad (\text{or its mean over } |y|)
/// ```
///
/// # Shapes
/// batch `[B, T]` -> `[B]`
pub fn completion_logprobs<B: Backend>(
    lm: &CausalLm<B>,
    batch: &LmBatch<B>,
    reduction: SequenceReduction,
) -> Tensor<B, 1> {
    let [b, t] = batch.ids.dims();
    let logits = lm.span_logits(batch.ids.clone(), Some(batch.mask.clone()), 0, t - 1); // [B, T-1, V]
    let targets = batch.ids.clone().slice([0..b, 1..t]); // [B, T-1]
    sequence_logprobs(gather_logprobs(logits, targets), batch.target_mask.clone(), reduction)
}

/// Completion log-probs of many rows under a frozen model, `chunk` rows per pass.
pub fn frozen_logprobs<B: Backend>(
    lm: &CausalLm<B>,
    rows: &[&Tokens],
    pad_id: u32,
    reduction: SequenceReduction,
    chunk: usize,
    device: &B::Device,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len());
    for part in rows.chunks(chunk.max(1)) {
        let batch = lm_batch::<B>(part, pad_id, device);
        out.extend(host(completion_logprobs(lm, &batch, reduction)));
    }
    out
}

/// A `[B]` f32 tensor from host values (loss-side, whatever the precision).
pub fn tensor1<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), (device, burn::tensor::DType::F32))
}

/// The pad id of batches: the tokenizer's pad token, else EOS, else 0 (masked anyway).
pub fn pad_id(tok: &TextTokenizer) -> u32 {
    tok.pad_token_id().or(tok.eos_token_id()).unwrap_or(0)
}

/// The GPT-2 LM `model_name` names (`builtin:tiny-gpt2` seeded by `seed`, a local HF
/// directory or a hub id in the HF cache) and its frozen reference: a copy of it, or
/// `ref_model_name` when given (Salamandra's `ref_model_path`).
#[allow(clippy::type_complexity)]
pub fn load_lm<B: AutodiffBackend>(
    model_name: &str,
    ref_model_name: Option<&str>,
    vocab_size: usize,
    seed: u64,
    lengths: Lengths,
    device: &B::Device,
) -> Result<(CausalLm<B>, CausalLm<B::InnerBackend>, LmConfig), PluginError> {
    let spec = PolicySpec {
        model_type: ModelType::Causal,
        model_name: model_name.to_string(),
        create_reference: true,
        critic: CriticLayout::SharedTrunk,
        mlp_head: false,
        max_prompt_len: lengths.max_prompt_length,
        max_gen_len: lengths.max_length - lengths.max_prompt_length,
    };
    let (model, reference, config) = build_models::<B>(&spec, "alg.args.model_name", vocab_size, seed, device)?;
    let reference = match ref_model_name {
        None => reference.valid(),
        Some(name) => {
            let dir = tril_models::resolve::model_dir(name, "alg.args.ref_model_name")?;
            let loaded = tril_models::hf::load_lm::<B::InnerBackend>(&dir, device)?;
            if loaded.config.vocab_size() != config.vocab_size() {
                let message = format!(
                    "{} has {} token embeddings, the policy {}",
                    dir.display(),
                    loaded.config.vocab_size(),
                    config.vocab_size()
                );
                return Err(AlgorithmError::config("alg.args.ref_model_name", message).into());
            }
            loaded.model
        }
    };
    Ok((model.policy, reference, config))
}

/// Sums and counts of statistics, so micro-batches and splits average correctly.
#[derive(Debug, Clone, Default)]
pub struct StatSums(BTreeMap<String, (f64, f64)>);

impl StatSums {
    /// Adds `sum` over `count` examples to `key`.
    pub fn add(&mut self, key: &str, sum: f64, count: f64) {
        let e = self.0.entry(key.to_string()).or_default();
        e.0 += sum;
        e.1 += count;
    }

    /// Adds another set of sums.
    pub fn merge(&mut self, other: &StatSums) {
        for (k, (s, c)) in &other.0 {
            self.add(k, *s, *c);
        }
    }

    /// The means (keys with no count are left out).
    pub fn means(&self) -> Stats {
        self.0.iter().filter(|(_, (_, c))| *c > 0.0).map(|(k, (s, c))| (k.clone(), s / c)).collect()
    }
}

/// What an offline algorithm supplies to [`train`].
pub trait Objective<B: AutodiffBackend> {
    /// The trained module.
    type Model: AutodiffModule<B> + Clone;
    /// One encoded training example.
    type Example;

    /// The loss of a micro-batch (mean over its examples) and its statistics as sums.
    fn loss(&self, model: &Self::Model, batch: &[&Self::Example]) -> Result<(Tensor<B, 1>, StatSums), PluginError>;

    /// Keys derived from the means (e.g. KTO's margins); none by default.
    fn derive(&self, stats: &mut Stats) {
        let _ = stats;
    }

    /// Writes the model in HF layout into `dir` (created by the caller's parent).
    fn save(&self, model: &Self::Model, dir: &Path) -> Result<(), PluginError>;

    /// The name of the model directory in a checkpoint (`policy`, `reward_model`).
    fn model_dir(&self) -> &'static str;

    /// The keys drawn in `plots/curves.png`.
    fn plotted(&self) -> Vec<&'static str>;
}

/// Means of the objective's statistics over `examples`, without updating the model.
pub fn evaluate<B: AutodiffBackend, O: Objective<B>>(
    objective: &O,
    model: &O::Model,
    examples: &[O::Example],
    batch_size: usize,
) -> Result<Stats, PluginError> {
    let mut sums = StatSums::default();
    let bar = tril_core::progress::bar(examples.len() as u64, "eval");
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&O::Example> = chunk.iter().collect();
        let (loss, stats) = objective.loss(model, &refs)?;
        sums.merge(&stats);
        sums.add("loss", scalar(loss) * chunk.len() as f64, chunk.len() as f64);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let mut means = sums.means();
    objective.derive(&mut means);
    Ok(means)
}

/// Everything [`train`] needs besides the objective.
pub struct TrainSetup<'a, B: AutodiffBackend, O: Objective<B>> {
    /// Loop settings.
    pub args: LoopArgs,
    /// The optimizer (its `lr` is the base learning rate).
    pub optimizer: OptimizerSpec,
    /// The schedule, stepped once per optimizer step.
    pub schedule: &'a dyn LrSchedule,
    /// Training examples.
    pub train: Vec<O::Example>,
    /// Evaluation examples per split.
    pub evals: Vec<(Split, Vec<O::Example>)>,
    /// The run's tracker.
    pub tracker: &'a mut Tracker,
    /// A label for log lines and checkpoints (`dpo`, `kto`, `reward_model`).
    pub name: &'static str,
    /// The task id, for errors.
    pub task: String,
    /// The run directory to continue (`--resume`), if any.
    pub resume_from: Option<std::path::PathBuf>,
    /// The device the model is on.
    pub device: B::Device,
    /// The run's non-finite and divergence guard.
    pub guard: Guard,
}

fn log_eval<B: AutodiffBackend, O: Objective<B>>(
    objective: &O,
    model: &O::Model,
    setup: &mut TrainSetup<'_, B, O>,
    step: usize,
) -> Result<(), PluginError> {
    for (split, examples) in &setup.evals {
        let stats = evaluate(objective, model, examples, setup.args.settings.eval_batch_size)?;
        setup.tracker.log_split_metrics(step, *split, &stats)?;
    }
    Ok(())
}

/// Trains `model` on `setup.train` for `epochs` (each a pass of one seeded shuffled order
/// in batches of `batch_size`, the last one smaller), evaluating and logging as it goes,
/// and writes `checkpoints/iter_<step>/` (`<model_dir>` in HF layout plus the exact trainer
/// state) every `save_every` steps when `save_checkpoints` and at the end. With
/// `resume_from` it continues exactly after that run's newest checkpoint. Returns the
/// trained model.
pub fn train<B: AutodiffBackend, O: Objective<B>>(
    objective: &O,
    mut model: O::Model,
    mut setup: TrainSetup<'_, B, O>,
) -> Result<O::Model, PluginError> {
    let (args, epochs) = (setup.args.settings.clone(), setup.args.epochs);
    let n = setup.train.len();
    check_splits(&setup.task, n, setup.evals.iter().map(|(s, e)| (*s, e.len())))?;
    let micro = args.batch_size / args.grad_accumulation;
    let steps_per_epoch = n.div_ceil(args.batch_size);
    let total = steps_per_epoch * epochs;
    let mut optim: Optim<B, O::Model> = Optim::for_module(&setup.optimizer, &model);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut sampler = PromptSampler::new(n);
    let mut first = 0;
    if let Some(dir) = setup.resume_from.clone() {
        let (state, restored, restored_optim, tracker) =
            OnPolicyState::restore(&dir, setup.name, n, model, &setup.optimizer, &setup.device)?;
        (model, optim, *setup.tracker) = (restored, restored_optim, tracker);
        (rng, sampler, first) = (state.rng.restore(), state.sampler, state.iteration);
        setup.guard.restore(state.guard_skipped);
        if first >= total {
            tracing::info!(total, "the run already finished its {total} steps; nothing to resume");
            return Ok(model);
        }
    }
    tracing::info!(examples = n, steps = total, epochs, "{} training", setup.name);
    if args.eval_zero_shot && first == 0 {
        log_eval(objective, &model, &mut setup, 0)?;
    }
    let started = Instant::now();
    let checkpoint = |model: &O::Model, optim: &Optim<B, O::Model>, state: OnPolicyState, setup: &TrainSetup<B, O>| {
        state.write_checkpoint(setup.tracker, &setup.guard, model, optim, |tmp| {
            objective.save(model, &tmp.join(objective.model_dir()))
        })
    };
    let name = setup.name;
    // Progress: a bar on a terminal, a throttled INFO line elsewhere; the per-step line is DEBUG.
    let bar = tril_core::progress::bar(total as u64, name);
    bar.set_position(first as u64);
    let state = |step: usize, rng: &ChaCha8Rng, sampler: &PromptSampler| OnPolicyState::new(name, step, rng, sampler);
    for step in first + 1..=total {
        let epoch = (step - 1) / steps_per_epoch;
        let batch = sampler.take(args.batch_size.min(sampler.remaining()), &mut rng);
        // Data-parallel: this replica's share of the (global) batch.
        let batch = batch[tril_core::parallel::shard_range(batch.len())].to_vec();
        let mut accum = GradientsAccumulator::<O::Model>::new();
        let mut sums = StatSums::default();
        for part in batch.chunks(micro) {
            let examples: Vec<&O::Example> = part.iter().map(|&i| &setup.train[i]).collect();
            let (loss, stats) = objective.loss(&model, &examples)?;
            let value = scalar(loss.clone());
            sums.merge(&stats);
            sums.add("loss", value * part.len() as f64, part.len() as f64);
            // Weighted so the accumulated gradient is that of the batch mean.
            let grads = (loss * (part.len() as f64 / batch.len() as f64)).backward();
            accum.accumulate(&model, GradientsParams::from_grads(grads, &model));
        }
        let (grads, norm) = clip_grad_norm(&model, accum.grads(), args.max_grad_norm)?;
        let lr = setup.optimizer.lr * setup.schedule.factor((step - 1) as u64);
        let mut stats = sums.means();
        stats.insert("grad_norm".into(), norm);
        let checked: Vec<(&str, f64)> = stats.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        if setup.guard.step(At::step(step), &checked)? == Verdict::Apply {
            model = optim.step(lr, model, grads);
            objective.derive(&mut stats);
        } else {
            stats = Stats::new();
        }
        setup.guard.record(&mut stats);
        stats.insert("learning_rate".into(), lr);
        stats.insert("epoch".into(), epoch as f64 + (step - epoch * steps_per_epoch) as f64 / steps_per_epoch as f64);
        let done_here = (step - first) as f64;
        stats.insert("time/steps_per_second".into(), done_here / started.elapsed().as_secs_f64().max(1e-9));
        setup.tracker.log_training(step, &stats)?;
        let loss = stats.get("loss").copied().unwrap_or(f64::NAN);
        tracing::debug!(step, total, loss = format!("{loss:.4}"), "{}", setup.name);
        bar.set_message(format!("loss {loss:.3}"));
        bar.inc(1);
        if args.evaluates_at(step, total) {
            log_eval(objective, &model, &mut setup, step)?;
        }
        if step == total {
            setup.tracker.plot(&objective.plotted())?;
        }
        let stop = setup.guard.stop_requested()? && step < total;
        if args.checkpoints_at(step, total) || stop {
            checkpoint(&model, &optim, state(step, &rng, &sampler), &setup)?;
        }
        if stop {
            return Err(setup.guard.interrupted(At::step(step)));
        }
    }
    bar.finish_and_clear();
    Ok(model)
}

/// What an offline algorithm reads besides its own args: the checked loop settings,
/// tokenizer, task, optimizer and schedule.
pub struct OfflineParts {
    /// The algorithm's id (`dpo`, `kto`, `reward_model`), for errors and log lines.
    pub alg: &'static str,
    /// The loop settings of `alg.args`, range-checked.
    pub loop_args: LoopArgs,
    /// `alg.tokenizer`.
    pub tokenizer: TokenizerConfig,
    /// The task.
    pub task: Box<dyn Task>,
    /// `task.id`, for error messages.
    pub task_id: String,
    /// `alg.optimizer`.
    pub optimizer: OptimizerSpec,
    /// `alg.scheduler` (constant when absent).
    pub schedule: Box<dyn LrSchedule>,
    /// `alg.lora` (DPO and KTO; [`crate::lora`]).
    pub lora: Option<tril_models::lora::LoraConfig>,
}

impl OfflineParts {
    /// Checks `loop_args` and builds the parts from the composed config; `alg` names the
    /// algorithm in errors.
    pub fn build(ctx: &BuildCtx<'_>, alg: &'static str, loop_args: LoopArgs) -> Result<Self, PluginError> {
        check_loop_args(&loop_args)?;
        let config = ctx.config;
        let root: RootConfig = config.extract("")?;
        let tokenizer = root
            .alg
            .tokenizer
            .clone()
            .ok_or_else(|| AlgorithmError::config("alg.tokenizer", format!("{alg} needs a tokenizer section")))?;
        let schedule = crate::trainer::lr_schedule(config)?;
        if !matches!(alg, "dpo" | "kto") {
            crate::lora::refuse_lora(&root, alg)?;
        }
        let lora = crate::lora::lora_config(&root);
        Ok(OfflineParts {
            alg,
            loop_args,
            tokenizer,
            task: registry::build_task(&section(config, "task")?, config)?,
            task_id: root.task.id,
            optimizer: *registry::build_optimizer(&section(config, "alg.optimizer")?, config)?,
            schedule,
            lora,
        })
    }

    /// The task's data of one split, with errors naming the task.
    pub fn data<T>(
        &self,
        split: Split,
        f: impl Fn(&dyn Task, Split) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        f(self.task.as_ref(), split)
            .map_err(|e| AlgorithmError::Task { task: self.task_id.clone(), split, message: e.to_string() }.into())
    }

    /// The tokenizer every offline run loads first.
    pub fn prepare(&self) -> Result<TextTokenizer, PluginError> {
        load_tokenizer(&self.tokenizer.model_name)
    }

    /// The training split and each evaluation split (`eval_splits`), encoded by `encode`.
    pub fn encode_splits<T>(
        &self,
        encode: impl Fn(Split) -> Result<Vec<T>, PluginError>,
    ) -> Result<Encoded<T>, PluginError> {
        let train = encode(Split::Train)?;
        let evals = self
            .loop_args
            .settings
            .eval_splits
            .iter()
            .map(|&s| Ok((s, encode(s)?)))
            .collect::<Result<Vec<_>, PluginError>>()?;
        Ok(Encoded { train, evals })
    }

    /// Runs [`train`] on the encoded data with these settings, logging into the run directory.
    pub fn fit<B: AutodiffBackend, O: Objective<B>>(
        &self,
        ctx: &RunCtx<'_>,
        objective: &O,
        model: O::Model,
        data: Encoded<O::Example>,
        device: &B::Device,
    ) -> Result<O::Model, PluginError> {
        let mut tracker = Tracker::new(RunDir::open(&ctx.run_dir)?);
        let setup = TrainSetup {
            args: self.loop_args.clone(),
            optimizer: self.optimizer.clone(),
            schedule: self.schedule.as_ref(),
            train: data.train,
            evals: data.evals,
            tracker: &mut tracker,
            name: self.alg,
            task: self.task_id.clone(),
            resume_from: ctx.resume_from.clone(),
            device: device.clone(),
            guard: Guard::new(self.alg, ctx.config, &ctx.run_dir)?,
        };
        train(objective, model, setup)
    }
}

/// The encoded examples of a run: the training split and each evaluation split.
pub struct Encoded<T> {
    /// Training examples.
    pub train: Vec<T>,
    /// Evaluation examples per split.
    pub evals: Vec<(Split, Vec<T>)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onpolicy::numbers_tokenizer;
    use crate::test_util::Cpu;

    #[test]
    fn truncation_keeps_the_prompt_end_and_the_completion_start() {
        let tok = numbers_tokenizer().unwrap();
        let lengths = Lengths { max_length: 5, max_prompt_length: 2 };
        let t = tokenize_pair(&tok, "1 2 3", "4 5 6 7", lengths, true, "row 1").unwrap();
        // ids are number + 1; the prompt keeps "2 3", the completion "4 5 6" (EOS cut).
        assert_eq!(t, Tokens { prompt: vec![3, 4], completion: vec![5, 6, 7] });
        let t = tokenize_pair(&tok, "1", "4", Lengths { max_length: 8, max_prompt_length: 2 }, true, "r").unwrap();
        assert_eq!(t.completion, vec![5, 0]);
        let err = tokenize_pair(&tok, "1", "", lengths, false, "data.jsonl:row 3").unwrap_err().to_string();
        assert!(err.contains("data.jsonl:row 3: the completion `` has no tokens"), "{err}");
    }

    /// Conversational cells render through the tokenizer's chat template before tokenizing
    /// (prompt: with the generation prompt; completion: the rest of the conversation's render);
    /// without a template they are an error naming the row; JSON that is no conversation is text.
    #[test]
    fn conversations_render_through_the_chat_template() {
        let dir = tempfile::tempdir().unwrap();
        numbers_tokenizer().unwrap().save(&dir.path().join("tokenizer.json")).unwrap();
        // A user turn starts with 9, an assistant turn (and the generation prompt) with 8.
        let template = "{% for m in messages %}{% if m.role == 'user' %}9 {% else %}8 {% endif %}{{ m.content }} \
                        {% endfor %}{% if add_generation_prompt %}8 {% endif %}";
        let config = serde_json::json!({ "chat_template": template, "eos_token": "0" });
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
        let tok = TextTokenizer::from_dir(dir.path()).unwrap();
        assert!(tok.chat_template().is_some());
        let lengths = Lengths { max_length: 32, max_prompt_length: 16 };
        let prompt = r#"[{"role": "user", "content": "1 2"}]"#;
        let chosen = r#"[{"role": "assistant", "content": "3 4"}]"#;
        let got = tokenize_pair(&tok, prompt, chosen, lengths, true, "row 5").unwrap();
        let want = tokenize_pair(&tok, "9 1 2 8", "3 4", lengths, true, "row 5").unwrap();
        assert_eq!(got, want);
        assert_eq!(prompt_cell_text(&tok, prompt, "row 5").unwrap(), "9 1 2 8 ");
        assert_eq!(prompt_cell_text(&tok, "[1, 2]", "row 5").unwrap(), "[1, 2]");
        let plain = numbers_tokenizer().unwrap();
        let err = tokenize_pair(&plain, prompt, chosen, lengths, true, "row 5").unwrap_err().to_string();
        assert!(err.contains("row 5") && err.contains("chat_template"), "{err}");
    }

    /// Completion log-probs equal a hand loop over the logits of each row.
    #[test]
    fn completion_logprobs_match_a_loop_over_logits() {
        let device = Default::default();
        let config = LmConfig::from(tril_models::gpt2::Gpt2Config::new(7, 16, 8, 1, 2));
        let lm = config.init::<Cpu>(&device);
        let rows =
            [Tokens { prompt: vec![1, 2], completion: vec![3, 4, 0] }, Tokens { prompt: vec![5], completion: vec![6] }];
        let refs: Vec<&Tokens> = rows.iter().collect();
        let batch = lm_batch::<Cpu>(&refs, 0, &device);
        assert_eq!(batch.ids.dims(), [2, 5]);
        let got = host(completion_logprobs(&lm, &batch, SequenceReduction::Sum));
        let mean = host(completion_logprobs(&lm, &batch, SequenceReduction::Mean));
        for (i, r) in rows.iter().enumerate() {
            let ids: Vec<u32> = r.prompt.iter().chain(&r.completion).copied().collect();
            let input = Tensor::<Cpu, 2, Int>::from_data(
                TensorData::new(ids.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(), [1, ids.len()]),
                &device,
            );
            let logits = lm.forward(input, None).logits.into_data().to_vec::<f32>().unwrap(); // [1, L, 7]
            let mut want = 0.0f64;
            for pos in r.prompt.len()..ids.len() {
                let row = &logits[(pos - 1) * 7..pos * 7];
                let lse = row.iter().map(|&x| f64::from(x).exp()).sum::<f64>().ln();
                want += f64::from(row[ids[pos] as usize]) - lse;
            }
            assert!((f64::from(got[i]) - want).abs() < 1e-4, "row {i}: {} vs {want}", got[i]);
            let n = r.completion.len() as f64;
            assert!((f64::from(mean[i]) - want / n).abs() < 1e-4, "row {i} mean");
        }
    }

    #[test]
    fn stat_sums_weight_by_count() {
        let mut a = StatSums::default();
        a.add("x", 3.0, 3.0);
        let mut b = StatSums::default();
        b.add("x", 0.0, 1.0);
        b.add("y", 1.0, 0.0);
        a.merge(&b);
        assert_eq!(a.means(), Stats::from([("x".to_string(), 0.75)]));
    }

    #[test]
    fn loop_args_are_checked() {
        let settings = LoopSettings {
            seed: 0,
            batch_size: 4,
            grad_accumulation: 2,
            max_grad_norm: 1.0,
            eval_every: 0,
            eval_batch_size: 8,
            eval_splits: vec![Split::Val],
            eval_zero_shot: true,
            save_checkpoints: true,
            save_every: 2,
        };
        let ok = LoopArgs { settings: settings.clone(), epochs: 1 };
        assert!(check_loop_args(&ok).is_ok());
        let err = check_loop_args(&LoopArgs { epochs: 0, ..ok.clone() }).unwrap_err().to_string();
        assert_eq!(err, "alg.args.epochs: expected at least 1, found 0");
        let bad = LoopArgs { settings: LoopSettings { batch_size: 3, ..settings }, ..ok };
        let err = check_loop_args(&bad).unwrap_err().to_string();
        assert_eq!(err, "alg.args.batch_size: expected a positive multiple of grad_accumulation, found 3");
    }
}
