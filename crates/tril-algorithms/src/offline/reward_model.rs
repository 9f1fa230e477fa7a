//! Reward-model training (`alg=reward_model`): a GPT-2 sequence classifier
//! (`LmClassifier`, HF `GPT2ForSequenceClassification`) trained by the offline loop of
//! [`crate::offline`], with one of two objectives (`alg.args.objective`):
//!
//! - `pairwise` (TRL's `RewardTrainer`, Open-Assistant's RM): the Bradley-Terry loss on
//!   the task's preference pairs ([`bradley_terry_loss`]); the reward of a text is
//!   `r = l_1 - l_0`, the difference of the head's two logits ([`pairwise_rewards`]).
//! - `classification`: cross-entropy on the task's labelled texts ([`classification_loss`]),
//!   e.g. IMDB sentiment from `text_classification`.
//!
//! Either way the output, `checkpoints/iter_<steps>/reward_model`, is an HF
//! `GPT2ForSequenceClassification` directory with `tokenizer.json` that the `learned_reward`
//! reward and metric load: for a pairwise model, `label_ix: 1` (`preferred`) gives
//! `softmax(l)_1 = sigmoid(r)`, the Bradley-Terry probability that the text beats a text of
//! reward 0.
//!
//! Texts are scored as `learned_reward` scores them: no EOS is appended, the classifier
//! reads the last real token; pairs are `prompt + completion` tokens truncated as TRL
//! (prompt end kept, then the completion's start), labelled texts keep their last
//! `max_length` tokens (`learned_reward` truncates from the left).
//!
//! # Several seeds: an ensemble's members
//! With `alg.args.seeds: [s1, s2, ...]` (null: the single `seed`) the command trains one
//! model per seed, one after another, in the same process. Each seed sets both what `seed`
//! sets: the fresh parameters (the head, and the whole trunk of `builtin:tiny-gpt2`) and
//! the shuffling of the training data. Seed `s` runs in its own sub-run directory
//! `RUN/seed_<s>/` with the full layout (its `config.resolved.yaml`, with `seed: s`,
//! `seeds: null` and `run_dir: RUN/seed_<s>`, reruns that seed alone with `tril run --from`;
//! `training_info.jsonl`, the split metrics, `plots/`, `checkpoints/`; the log lines all go to
//! `RUN/log.txt`). When a seed finishes, its last checkpoint's `reward_model` is copied to
//! `RUN/reward_models/seed_<s>/` (a temp directory renamed into place), the stable path an
//! ensemble names as `model_name: RUN/reward_models/seed_{seed}` with the same `seeds`.
//!
//! `--resume RUN` skips every seed whose `reward_models/seed_<s>` exists, continues an
//! interrupted seed exactly from its newest checkpoint in `seed_<s>/checkpoints/` (write
//! them with `save_checkpoints: true`), and trains a seed that left no checkpoint again from
//! the start (its partial sub-run directory is removed first).
//!
//! # Logged keys
//! `loss`, `accuracy` (TRL's `compute_accuracy`: chosen scored strictly above rejected,
//! or the arg-max label is right), and for `pairwise` `rewards/chosen`, `rewards/rejected`,
//! `rewards/margins`.
//!
//! # Deviations from TRL
//! - Two logits with `r = l_1 - l_0` instead of TRL's one (`num_labels=1`): the same
//!   model class (a one-logit head `w` is `w_1 - w_0`), chosen so that `learned_reward`'s
//!   softmax gives a meaningful probability.
//! - No `center_rewards_coefficient` and no margin column.
//! - GPT-2 trunks only (`builtin:tiny-gpt2`, or a GPT-2 directory whose LM weights start
//!   the trunk; the head starts fresh). BERT-family reward models are not trained yet.

use crate::offline::{
    host, lm_batch, load_lm, loop_args, pad_id, tokenize_pair, Lengths, Objective, OfflineParts, StatSums, Tokens,
};
use crate::trainer::{run_on_target, Run};
use crate::validate::ensure;
use crate::AlgorithmError;
use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tril_core::config::{Checker, Config, Node, Origin, Ranges, Section, Value};
use tril_core::ops::to_f32;
use tril_core::plugin::{Algorithm, BuildCtx, PluginError, RunCtx, Split};
use tril_core::run_dir::RunDir;
use tril_core::CoreError;
use tril_models::causal_lm::LmConfig;
use tril_models::heads::{LmClassifier, ScoreHeadConfig};
use tril_models::tokenizer::TextTokenizer;

/// What the reward model learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardObjective {
    /// Bradley-Terry on preference pairs.
    Pairwise,
    /// Cross-entropy on labelled texts.
    Classification,
}

/// `alg.args` of `reward_model` (defaults: TRL's `RewardConfig`; the learning rate is
/// `alg.optimizer.args.lr`, Open-Assistant's `rm-pythia-44m`: 1e-5).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardModelArgs {
    /// `pairwise` or `classification`.
    pub objective: RewardObjective,
    /// The trunk: `builtin:tiny-gpt2`, or a GPT-2 directory / hub id in the HF cache.
    pub model_name: String,
    /// Seeds the head and trunk initialisation and shuffling.
    pub seed: u64,
    /// One model per seed, trained one after another into `RUN/seed_<s>/` and copied to
    /// `RUN/reward_models/seed_<s>/` (null: `seed` alone, a plain run).
    pub seeds: Option<Vec<u64>>,
    /// Passes over the training data (TRL: 1; Open-Assistant's 44M RM: 5).
    pub epochs: usize,
    /// Pairs (or texts) per optimizer step.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accumulation: usize,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Tokens kept per scored text (TRL: 1024; Open-Assistant's RM: 520).
    pub max_length: usize,
    /// Prompt tokens kept of a pair's prompt.
    pub max_prompt_length: usize,
    /// Evaluate every this many optimizer steps (0: at the start and end only).
    pub eval_every: usize,
    /// Examples per forward pass at evaluation.
    pub eval_batch_size: usize,
    /// Splits evaluated (the held-out accuracy).
    pub eval_splits: Vec<Split>,
    /// Evaluate before training.
    pub eval_zero_shot: bool,
    /// Write a checkpoint (with the exact trainer state `--resume` reads) every
    /// `save_every` optimizer steps; the final one is always written.
    pub save_checkpoints: bool,
    /// Optimizer steps between checkpoints when `save_checkpoints` (TRL's `save_steps`).
    pub save_every: usize,
}

impl Default for RewardModelArgs {
    fn default() -> Self {
        RewardModelArgs {
            objective: RewardObjective::Pairwise,
            model_name: "builtin:tiny-gpt2".into(),
            seed: 0,
            seeds: None,
            epochs: 1,
            batch_size: 8,
            grad_accumulation: 1,
            max_grad_norm: 1.0,
            max_length: 1024,
            max_prompt_length: 512,
            eval_every: 0,
            eval_batch_size: 32,
            eval_splits: vec![Split::Val],
            eval_zero_shot: true,
            save_checkpoints: false,
            save_every: 500,
        }
    }
}

impl RewardModelArgs {
    /// Deserializes and range-checks `alg.args` ([`Ranges`]); errors name the key, value and file.
    pub fn extract(section: &Section<'_>) -> Result<Self, CoreError> {
        section.extract_checked()
    }
}

impl Ranges for RewardModelArgs {
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), CoreError> {
        let (a, section) = (self, c.section());
        ensure(a.max_length > 0, section, "max_length", "expected at least 1 token")?;
        let prompt_ok = a.max_prompt_length > 0 && a.max_prompt_length < a.max_length;
        ensure(prompt_ok, section, "max_prompt_length", "expected at least 1 token and fewer than max_length")?;
        c.at_least("epochs", a.epochs, 1)?;
        if let Some(seeds) = &a.seeds {
            ensure(!seeds.is_empty(), section, "seeds", "expected at least one seed, or null for `seed` alone")?;
            if let Some(s) = seeds.iter().enumerate().find_map(|(i, s)| seeds[..i].contains(s).then_some(s)) {
                return Err(c.invalid("seeds", format!("seed {s} appears twice; each seed names one model")));
            }
            if let Some(s) = seeds.iter().find(|&&s| i64::try_from(s).is_err()) {
                return Err(c.invalid("seeds", format!("seed {s} is above {}", i64::MAX)));
            }
        }
        crate::settings::loop_settings!(a).check_ranges(c)?;
        Ok(())
    }
}

/// The scalar reward of each text: the difference of a two-logit head.
///
/// ```tex
/// r = l_1 - l_0
/// ```
///
/// # Shapes
/// `logits`: `[B, 2]` -> `[B]`
pub fn pairwise_rewards<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let logits = to_f32(logits);
    let [b, _] = logits.dims();
    (logits.clone().slice([0..b, 1..2]) - logits.slice([0..b, 0..1])).reshape([b])
}

/// The Bradley-Terry loss of a reward model (Ouyang et al. 2022, eq. 1; TRL's
/// `RewardTrainer`) and its accuracy:
///
/// ```tex
/// \mathcal{L} = -\frac{1}{B}\sum_i \log\sigma(r_i^{w} - r_i^{l}), \qquad
/// \text{acc} = \frac{1}{B}\sum_i [r_i^{w} > r_i^{l}]
/// ```
///
/// # Shapes
/// `chosen`, `rejected`: `[B]` -> loss `[1]`, accuracy `[1]`
pub fn bradley_terry_loss<B: Backend>(chosen: Tensor<B, 1>, rejected: Tensor<B, 1>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let chosen = to_f32(chosen);
    let rejected = to_f32(rejected);
    let diff = chosen - rejected; // [B]
    let accuracy = diff.clone().detach().greater_elem(0.0).float().cast(burn::tensor::FloatDType::F32).mean();
    (log_sigmoid(diff).neg().mean(), accuracy)
}

/// Cross-entropy of a classifier and its accuracy:
///
/// ```tex
/// \mathcal{L} = -\frac{1}{B}\sum_i \log\operatorname{softmax}(l_i)_{y_i}, \qquad
/// \text{acc} = \frac{1}{B}\sum_i [\arg\max_k l_{ik} = y_i]
/// ```
///
/// # Shapes
/// `logits`: `[B, K]`, `labels`: `[B]` -> loss `[1]`, accuracy `[1]`
pub fn classification_loss<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let logits = to_f32(logits);
    let [b, _] = logits.dims();
    let labels = labels.reshape([b, 1]); // [B, 1]
    let picked = log_softmax(logits.clone(), 1).gather(1, labels.clone()); // [B, 1]
    let accuracy = logits.detach().argmax(1).equal(labels).float().cast(burn::tensor::FloatDType::F32).mean();
    (picked.neg().mean(), accuracy)
}

/// `reward_model`, built and validated from the composed config.
pub struct RewardModel {
    args: RewardModelArgs,
    parts: OfflineParts,
}

fn build(args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let args = RewardModelArgs::extract(args)?;
    Ok(Box::new(RewardModel { parts: OfflineParts::build(ctx, "reward_model", loop_args!(args))?, args }))
}

tril_core::register!(algorithm,
    id: "reward_model",
    doc: "Train a GPT-2 sequence classifier: Bradley-Terry on preference pairs, or cross-entropy on labelled text; loads in learned_reward.",
    config: RewardModelArgs,
    build: build);

/// One scored text and, for `classification`, its label.
#[derive(Debug, Clone)]
pub struct Scored {
    tokens: Tokens,
    label: usize,
}

/// A training example: a pair of texts, or one labelled text.
#[derive(Debug, Clone)]
pub enum RmExample {
    /// Chosen and rejected texts.
    Pair(Scored, Scored),
    /// A labelled text.
    Text(Scored),
}

struct RmObjective<B: AutodiffBackend> {
    objective: RewardObjective,
    labels: Vec<String>,
    pad: u32,
    device: B::Device,
    config: LmConfig,
    tokenizer: TextTokenizer,
}

impl<B: AutodiffBackend> RmObjective<B> {
    fn logits(&self, model: &LmClassifier<B>, rows: &[&Tokens]) -> Tensor<B, 2> {
        let batch = lm_batch::<B>(rows, self.pad, &self.device);
        model.forward(batch.ids, Some(batch.mask)) // [N, labels]
    }
}

impl<B: AutodiffBackend> Objective<B> for RmObjective<B> {
    type Model = LmClassifier<B>;
    type Example = RmExample;

    fn loss(&self, model: &Self::Model, batch: &[&RmExample]) -> Result<(Tensor<B, 1>, StatSums), PluginError> {
        let b = batch.len();
        let n = b as f64;
        let mut sums = StatSums::default();
        let expected = |what: &str| AlgorithmError::training("reward_model", format!("expected {what}"));
        match self.objective {
            RewardObjective::Pairwise => {
                let mut rows = Vec::with_capacity(2 * b);
                for pass in 0..2 {
                    for e in batch {
                        let RmExample::Pair(c, r) = e else { return Err(expected("pairs").into()) };
                        rows.push(if pass == 0 { &c.tokens } else { &r.tokens });
                    }
                }
                let rewards = pairwise_rewards(self.logits(model, &rows)); // [2B]
                let (chosen, rejected) = (rewards.clone().narrow(0, 0, b), rewards.narrow(0, b, b));
                let sum = |t: Tensor<B, 1>| host(t.detach()).iter().map(|&x| f64::from(x)).sum::<f64>();
                let (c_sum, r_sum) = (sum(chosen.clone()), sum(rejected.clone()));
                let (loss, accuracy) = bradley_terry_loss(chosen, rejected);
                sums.add("accuracy", f64::from(host(accuracy)[0]) * n, n);
                sums.add("rewards/chosen", c_sum, n);
                sums.add("rewards/rejected", r_sum, n);
                sums.add("rewards/margins", c_sum - r_sum, n);
                Ok((loss, sums))
            }
            RewardObjective::Classification => {
                let mut rows = Vec::with_capacity(b);
                let mut labels = Vec::with_capacity(b);
                for e in batch {
                    let RmExample::Text(t) = e else { return Err(expected("labelled texts").into()) };
                    rows.push(&t.tokens);
                    labels.push(t.label as i64);
                }
                let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [b]), &self.device);
                let (loss, accuracy) = classification_loss(self.logits(model, &rows), labels);
                sums.add("accuracy", f64::from(host(accuracy)[0]) * n, n);
                Ok((loss, sums))
            }
        }
    }

    fn save(&self, model: &Self::Model, dir: &Path) -> Result<(), PluginError> {
        Ok(tril_models::hf::save_lm_classifier(model, &self.config, &self.labels, dir, Some(&self.tokenizer))?)
    }

    fn model_dir(&self) -> &'static str {
        "reward_model"
    }

    fn plotted(&self) -> Vec<&'static str> {
        vec!["loss", "accuracy", "rewards/margins"]
    }
}

impl Algorithm for RewardModel {
    fn run(self: Box<Self>, ctx: &RunCtx<'_>) -> Result<(), PluginError> {
        run_on_target(ctx, *self)
    }
}

impl Run for RewardModel {
    fn run<B: AutodiffBackend>(self, ctx: &RunCtx<'_>, device: B::Device) -> Result<(), PluginError> {
        let RewardModel { args, mut parts } = self;
        match args.seeds.clone() {
            None => train_one::<B>(&args, &parts, ctx, &device),
            Some(seeds) => train_seeds::<B>(&args, &mut parts, &seeds, ctx, &device),
        }
    }
}

/// The sub-run directory of seed `s` in a seed-list run.
pub fn seed_run_dir(run_dir: &Path, seed: u64) -> PathBuf {
    run_dir.join(format!("seed_{seed}"))
}

/// Where a seed-list run leaves the final model of seed `s`.
pub fn seed_model_dir(run_dir: &Path, seed: u64) -> PathBuf {
    run_dir.join("reward_models").join(format!("seed_{seed}"))
}

/// The config of seed `seed`'s sub-run: `config` with `alg.args.seed: seed`,
/// `alg.args.seeds: null` and `run_dir: sub` (so `tril run --from` reruns that seed alone).
pub fn seed_config(config: &Config, seed: u64, sub: &Path) -> Result<Config, PluginError> {
    let mut root = config.root().clone();
    let value =
        i64::try_from(seed).map_err(|_| AlgorithmError::invalid("alg.args.seeds", "a seed <= i64::MAX", seed))?;
    let set = |root: &mut Node, key: &str, value: Value| {
        root.set(key, Node::new(value, Origin::Composer), true)
            .map_err(|at| AlgorithmError::config(key, format!("cannot set it for seed {seed}'s sub-run (at `{at}`)")))
    };
    set(&mut root, "alg.args.seed", Value::Int(value))?;
    set(&mut root, "alg.args.seeds", Value::Null)?;
    set(&mut root, "run_dir", Value::Str(sub.display().to_string()))?;
    Ok(Config::new(root, config.choices().to_vec()))
}

/// Trains one model per seed of `seeds` (module docs, "Several seeds"), each in
/// `RUN/seed_<s>/`, copying each final model to `RUN/reward_models/seed_<s>/`.
fn train_seeds<B: AutodiffBackend>(
    args: &RewardModelArgs,
    parts: &mut OfflineParts,
    seeds: &[u64],
    ctx: &RunCtx<'_>,
    device: &B::Device,
) -> Result<(), PluginError> {
    let k = seeds.len();
    for (i, &seed) in seeds.iter().enumerate() {
        let (sub, out) = (seed_run_dir(&ctx.run_dir, seed), seed_model_dir(&ctx.run_dir, seed));
        if out.join("config.json").is_file() {
            tracing::info!(seed, "reward model {}/{k} (seed {seed}): done before, {} exists", i + 1, out.display());
            continue;
        }
        let has_checkpoint = crate::checkpoint::complete_checkpoints(&sub).is_ok_and(|c| !c.is_empty());
        let resume = ctx.resume_from.is_some() && has_checkpoint;
        if !resume && sub.exists() {
            tracing::warn!(seed, "{} holds no checkpoint to resume from: training seed {seed} again", sub.display());
            std::fs::remove_dir_all(&sub).map_err(|e| AlgorithmError::io("removing", &sub, e))?;
        }
        tracing::info!(seed, "reward model {}/{k} (seed {seed}) in {}", i + 1, sub.display());
        let config = seed_config(ctx.config, seed, &sub)?;
        if !resume {
            RunDir::open(&sub)?.write_atomic("config.resolved.yaml", config.to_yaml().as_bytes())?;
        }
        let seed_ctx = RunCtx {
            config: &config,
            run_dir: sub.clone(),
            resume_from: resume.then(|| sub.clone()),
            quiet: ctx.quiet,
        };
        // The seed sets the fresh parameters (train_one's `load_lm`) and the data order
        // (the offline loop's shuffling reads `parts.loop_args`).
        let seed_args = RewardModelArgs { seed, seeds: None, ..args.clone() };
        parts.loop_args = loop_args!(seed_args);
        train_one::<B>(&seed_args, parts, &seed_ctx, device)?;
        let (_, last) = crate::checkpoint::latest_checkpoint(&sub)?;
        let rel = out.strip_prefix(&ctx.run_dir).unwrap_or(&out).to_path_buf();
        RunDir::open(&ctx.run_dir)?.write_dir_atomic(&rel, |tmp| copy_dir(&last.join("reward_model"), tmp))?;
        tracing::info!(seed, "reward model {}/{k} (seed {seed}) written to {}", i + 1, out.display());
    }
    Ok(())
}

/// Copies the files of `from` (recursively) into the existing directory `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<(), PluginError> {
    let entries = std::fs::read_dir(from).map_err(|e| AlgorithmError::io("reading", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| AlgorithmError::io("reading", from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|e| AlgorithmError::io("creating", &dst, e))?;
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| AlgorithmError::io("copying", &src, e))?;
        }
    }
    Ok(())
}

/// Trains one reward model with `args.seed` (the offline loop reads its shuffling seed from
/// `parts.loop_args`, which the caller keeps equal to it) into `ctx.run_dir`.
fn train_one<B: AutodiffBackend>(
    args: &RewardModelArgs,
    parts: &OfflineParts,
    ctx: &RunCtx<'_>,
    device: &B::Device,
) -> Result<(), PluginError> {
    let tokenizer = parts.prepare()?;
    let lengths = Lengths { max_length: args.max_length, max_prompt_length: args.max_prompt_length };
    let (trunk, _, config) = load_lm::<B>(&args.model_name, None, tokenizer.vocab_size(), args.seed, lengths, device)?;
    let labels = match args.objective {
        RewardObjective::Pairwise => vec!["dispreferred".to_string(), "preferred".to_string()],
        RewardObjective::Classification => {
            let names = parts.task.label_names();
            if names.len() < 2 {
                let message = format!(
                    "task `{}` names no classes; alg.args.objective=classification needs a task with labelled \
                     texts such as `text_classification`",
                    parts.task_id
                );
                return Err(AlgorithmError::config("alg.args.objective", message).into());
            }
            names
        }
    };
    let model = LmClassifier {
        transformer: trunk,
        score: crate::onpolicy::fresh_score_head(&ScoreHeadConfig::new(config.d_model(), labels.len()), device),
    };
    let encode = |split: Split| -> Result<Vec<RmExample>, PluginError> {
        match args.objective {
            RewardObjective::Pairwise => {
                let pairs = parts.data(split, |t, s| t.preference_pairs(s))?;
                pairs
                    .iter()
                    .map(|p| {
                        let text = |c: &str| -> Result<Scored, PluginError> {
                            let tokens = tokenize_pair(&tokenizer, &p.prompt, c, lengths, false, &p.id)?;
                            Ok(Scored { tokens, label: 0 })
                        };
                        Ok(RmExample::Pair(text(&p.chosen)?, text(&p.rejected)?))
                    })
                    .collect()
            }
            RewardObjective::Classification => {
                let texts = parts.data(split, |t, s| t.labelled_texts(s))?;
                texts
                    .iter()
                    .map(|t| {
                        let mut ids = tokenizer.encode(&t.text, false)?;
                        if ids.is_empty() {
                            let (at, what) = (t.id.clone(), "the text".to_string());
                            return Err(AlgorithmError::NoTokens { at, what }.into());
                        }
                        ids.drain(..ids.len().saturating_sub(args.max_length));
                        Ok(RmExample::Text(Scored {
                            tokens: Tokens { prompt: vec![], completion: ids },
                            label: t.label,
                        }))
                    })
                    .collect()
            }
        }
    };
    let data = parts.encode_splits(encode)?;
    let objective = RmObjective {
        objective: args.objective,
        labels,
        pad: pad_id(&tokenizer),
        device: device.clone(),
        config,
        tokenizer,
    };
    parts.fit(ctx, &objective, model, data, device)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{t1, t2, Cpu};

    fn v(t: Tensor<Cpu, 1>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// Hand-computed: diffs (1, -2, 0.5): -mean(log sigma(d)) with
    /// log sigma(1) = -0.3132617, log sigma(-2) = -2.1269280, log sigma(0.5) = -0.4740770.
    #[test]
    fn bradley_terry_matches_hand_values() {
        let (loss, acc) = bradley_terry_loss(t1(&[1.0, -1.0, 2.0]), t1(&[0.0, 1.0, 1.5]));
        let want = (0.3132617 + 2.1269280 + 0.4740770) / 3.0;
        assert!((f64::from(v(loss)[0]) - want).abs() < 1e-6, "{:?}", want);
        assert!((v(acc)[0] - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(v(pairwise_rewards(t2(&[0.5, 2.0, 1.0, -1.0], 2))), vec![1.5, -2.0]);
    }

    /// Hand-computed: logits (2, 0) label 0 -> log(1 + e^-2) = 0.1269280;
    /// logits (0, 0, 0) is another shape, so a second two-class row: (1, 3) label 0 ->
    /// log(1 + e^2) = 2.1269280 (and a miss for the accuracy).
    #[test]
    fn cross_entropy_matches_hand_values() {
        let labels = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(vec![0i64, 0], [2]), &Default::default());
        let (loss, acc) = classification_loss(t2(&[2.0, 0.0, 1.0, 3.0], 2), labels);
        assert!((f64::from(v(loss)[0]) - (0.1269280 + 2.1269280) / 2.0).abs() < 1e-6);
        assert_eq!(v(acc), vec![0.5]);
    }

    #[test]
    fn args_reject_bad_lengths_and_unknown_keys() {
        let parse = |yaml: &str| {
            let node = tril_core::config::parse_yaml(yaml, std::path::Path::new("alg/reward_model.yaml")).unwrap();
            RewardModelArgs::extract(&Section::new("alg.args", &node))
        };
        assert_eq!(parse("objective: classification\n").unwrap().objective, RewardObjective::Classification);
        let err = parse("max_length: 8\nmax_prompt_length: 8\n").unwrap_err().to_string();
        assert!(err.contains("alg.args.max_prompt_length"), "{err}");
        assert!(parse("objectiv: pairwise\n").unwrap_err().to_string().contains("unknown key"));
        assert_eq!(parse("seeds: [3, 1]\n").unwrap().seeds, Some(vec![3, 1]));
        assert_eq!(parse("seeds: null\n").unwrap().seeds, None);
        let err = parse("seeds: []\n").unwrap_err().to_string();
        assert!(err.contains("alg.args.seeds") && err.contains("at least one seed"), "{err}");
        let err = parse("seeds: [1, 2, 1]\n").unwrap_err().to_string();
        assert!(err.contains("alg.args.seeds") && err.contains("seed 1 appears twice"), "{err}");
    }

    /// A seed's sub-run config is the run's with `seed`, `seeds: null` and its own `run_dir`,
    /// and reads back as a plain single-seed run of that seed.
    #[test]
    fn seed_config_makes_a_plain_run_of_one_seed() {
        let yaml = "run_dir: runs/rm\nalg:\n  id: reward_model\n  args:\n    seed: 0\n    seeds: [4, 9]\n";
        let root = tril_core::config::parse_yaml(yaml, std::path::Path::new("alg/reward_model.yaml")).unwrap();
        let config = Config::new(root, vec![]);
        let sub = seed_run_dir(Path::new("runs/rm"), 9);
        assert_eq!(sub, Path::new("runs/rm/seed_9"));
        assert_eq!(seed_model_dir(Path::new("runs/rm"), 9), Path::new("runs/rm/reward_models/seed_9"));
        let seeded = seed_config(&config, 9, &sub).unwrap();
        let args = RewardModelArgs::extract(&seeded.section("alg.args").unwrap()).unwrap();
        assert_eq!((args.seed, args.seeds.as_deref()), (9, None));
        assert_eq!(seeded.extract::<String>("run_dir").unwrap(), "runs/rm/seed_9");
        let looped = loop_args!(args);
        assert_eq!(looped.settings.seed, 9, "the data order follows the seed too");
    }
}
