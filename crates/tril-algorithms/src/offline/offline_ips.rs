//! Offline IPS (`alg=offline_ips`): reward-weighted NLL on a fixed dataset of scored
//! responses, with per-token importance weights against reference log-probs, as the
//! code-RL offline IPS pipeline (systems.md §2.4) but with its observed bugs fixed.
//!
//! Data come from `alg.args` (not from the task): a `.parquet` (or `.csv`/`.jsonl`) file
//! with a uid, a prompt, a response and a reward column (names configurable, defaults are
//! the seed's `uid`, `prompt_pretokenized`, `unprocessed_response`, `normalized_reward`),
//! and the reference log-prob cache `tril logp` wrote for it ([`crate::offline::logp`]). With
//! `logp_cache: null` the cache is computed at start from the initial policy (the seed's
//! reference is the model being trained, so this is the same thing in one step).
//! `data: builtin:synthetic` makes a small numbers dataset for the embedded
//! `builtin:tiny-gpt2` (increasing runs score 1, random ones less), so `tril run
//! task=synthetic alg=offline_ips` needs no file.
//!
//! Per sample `i` with response tokens `t` (mask `m`, `n_i` tokens) and reward `r_i`:
//!
//! ```tex
//! \rho_{i,t} = \min\big(\mathrm{sg}[\exp(\log\pi_\theta(t) - \log\pi_{ref}(t))],\ \rho_{max}\big) \\
//! \mathcal{L}_i = \frac{r_i}{n_i} \sum_t -\log\pi_\theta(t)\,\rho_{i,t}
//!   + \beta\, w_i\, \frac{1}{n_i} \sum_t k(\log\pi_\theta(t), \log\pi_{ref}(t)),
//! \quad w_i = 1 \text{ if } r_i > 0 \text{ else } \delta \\
//! \mathcal{L} = \operatorname{mean}_i \mathcal{L}_i
//! ```
//!
//! with `rho_max = rho_clip` (1.2, "IPS clipping, ref: PPO"), `beta = kl_coef`,
//! `delta = kl_discount` and `k` the per-token KL estimator (below).
//!
//! The optimizer and learning-rate schedule are `alg.optimizer` / `alg.scheduler` (stepped
//! once per optimizer step; the seed uses AdamW at 1e-5, cosine with 3% warm-up, no weight
//! decay); `batch_size x grad_accumulation` rows make one step (seed: 1 x 16), and the
//! accumulated gradient is clipped to a global norm of `max_grad_norm`. Checkpoints,
//! `checkpoints/iter_<step>/{policy,trainer,trainer_state.json}`, are written atomically
//! every `save_every` steps with `save_checkpoints` and at the end.
//!
//! # Logged metrics (`training_info.jsonl`, means over the rows since the last line)
//! | key | meaning |
//! |---|---|
//! | `ips/loss` | `L_i` |
//! | `ips/nll` | mean `-log pi_theta` per response token |
//! | `ips/rho_mean` | mean clipped `rho` per token (1 at the first step when the cache is the initial model's) |
//! | `ips/kl` | mean per-token KL estimate (`kl_estimator`) |
//! | `ips/grad_norm`, `ips/lr`, `ips/epoch` | before clipping; the step's learning rate; the epoch |
//! | `stats/{pos,neg}_{loss,logp,rho,kl,reward}` | the same split on reward > 0 (the seed's W&B keys); `logp` = `-nll` |
//! | `stats/{pos,neg}_count` | rows of each side |
//! | `eval/nll`, `eval/pos_nll` | held-out mean NLL per token after each epoch (all rows; reward > 0) |
//!
//! # Deviations from the seed (each an [obs] bug or a gap of it)
//! - **The KL term is in the loss.** The seed adds it to `kl_penalty` after the returned
//!   loss is formed, so `--kl_weight` changes nothing. Its estimate `mean(ref) - mean(pol)`
//!   is the k1 estimator of KL(ref‖π) on the data (the reference's own samples); k1 per
//!   sample is unbounded below and its gradient is just more NLL, so tril's default is k3,
//!   `ρ - 1 - log ρ` with the unclipped `ρ` (non-negative, unbiased for the same KL).
//!   `kl_estimator: k1` gives the seed's form (in the loss). Logged as `ips/kl`.
//! - **The reward clip applies** (`reward_clip`, 1.5): the seed clips a column it no
//!   longer reads, so its clip has no effect.
//! - **No 1,000-sample cap** (a debugging leftover in the seed).
//! - **Responses are used verbatim.** The seed's `strip('python').strip('```')` removes
//!   those *characters* from both ends, not the fence.
//! - **A sample without a cached log-prob is an error** naming the uid and the count;
//!   `allow_missing_logp: true` skips them with one counted warning (the seed skips
//!   silently).
//! - Each epoch is reshuffled from `seed` (the seed repeats the data `numepoch` times and
//!   shuffles once); `eval_fraction` of the rows (seed: 1%) are held out and their NLL is
//!   logged after each epoch.
//! - No chat template (GPT-2 family): list prompts are joined with newlines
//!   ([`crate::offline::logp`]); the seed's Llama pad token and embedding resize do not apply.
//! - The last accumulation group of an epoch may be short; its gradient is the mean over
//!   the micro-batches it has.
//! - `--resume` continues exactly after the newest checkpoint (`save_checkpoints`,
//!   `save_every`; the final one is always written): model, optimizer, RNG and the
//!   position in the epoch's shuffled order are restored.

use crate::guard::{At, Guard, Verdict};
use crate::offline::logp::{self, Column, Columns, Encoded, LogpCache, LogpOptions, Record, RowPolicy};
use crate::onpolicy::{OnPolicyState, PromptSampler};
use crate::settings::check_splits;
use crate::trainer::{run_on_target, Optim, Run};
use crate::validate::ensure;
use crate::AlgorithmError;
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tril_core::config::{Checker, Ranges, Section};
use tril_core::ops::to_f32;
use tril_core::ops::{clip_grad_norm, kl_estimate, KlEstimator};
use tril_core::plugin::{Algorithm, BuildCtx, LrSchedule, OptimizerSpec, PluginError, RunCtx};
use tril_core::registry;
use tril_core::run_dir::RunDir;
use tril_core::tracker::{Stats, Tracker};
use tril_models::causal_lm::{CausalLm, LmConfig};
use tril_models::tokenizer::TextTokenizer;

/// Which rows train (`alg.args.data_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFilter {
    /// Every row (the seed's "RL training").
    None,
    /// Rows with reward > `posonly_threshold` (the seed's `posonly`, 0.75).
    Posonly,
}

/// `alg.args` of `offline_ips`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineIpsArgs {
    /// Training data: a `.parquet`/`.csv`/`.jsonl` file, or `builtin:synthetic`.
    pub data: String,
    /// The `tril logp` cache of `data`; null computes it from the initial policy.
    pub logp_cache: Option<String>,
    /// Skip (with a counted warning) rows the cache lacks instead of failing.
    pub allow_missing_logp: bool,
    /// A row whose prompt leaves no room for a response in `max_length`: `skip` (counted
    /// and reported) or `truncate-left` (the prompt's start is cut); as `tril logp --overflow`.
    pub overflow: logp::Overflow,
    /// Any problem row (no prompt token, no room with `skip`) is an error naming it,
    /// instead of skipped, counted and reported.
    pub strict: bool,
    /// Policy: `builtin:tiny-gpt2`, a GPT-2 family HF directory or a cached hub id.
    pub model: String,
    /// Tokenizer (default: the model's; `builtin:numbers` for `builtin:tiny-gpt2`).
    pub tokenizer: Option<String>,
    /// Column of the unique row id.
    pub uid_key: String,
    /// Column of the prompt (text or a JSON list of messages).
    pub prompt_key: String,
    /// Column of the response.
    pub response_key: String,
    /// Column of the reward.
    pub reward_key: String,
    /// `none` or `posonly`.
    pub data_filter: DataFilter,
    /// `posonly` keeps rows with reward strictly above this.
    pub posonly_threshold: f64,
    /// Rewards are clipped to `[-reward_clip, reward_clip]` (null: no clip).
    pub reward_clip: Option<f64>,
    /// KL coefficient `beta` (0 disables the term).
    pub kl_coef: f64,
    /// Factor on the KL term of samples with reward <= 0 (the seed's `kl_discount`).
    pub kl_discount: f64,
    /// Per-token KL estimator of KL(ref‖π) on the data: `k1` (the seed's) or `k3`.
    pub kl_estimator: KlEstimator,
    /// Upper clip of the importance weight `rho`.
    pub rho_clip: f64,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accumulation: usize,
    /// Tokens per row at most (prompt + response + EOS); must match the cache's.
    pub max_length: usize,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Fraction of rows held out for the per-epoch NLL (floor; 0 for none).
    pub eval_fraction: f64,
    /// A `training_info.jsonl` line every this many optimizer steps.
    pub log_every: usize,
    /// Reference-cache batch size when `logp_cache` is null.
    pub logp_batch_size: usize,
    /// Seeds model initialisation, the split and the shuffles.
    pub seed: u64,
    /// Write a checkpoint (with the exact trainer state `--resume` reads) every
    /// `save_every` optimizer steps; the final one is always written.
    pub save_checkpoints: bool,
    /// Steps between checkpoints (a multiple of `log_every`).
    pub save_every: usize,
}

impl Default for OfflineIpsArgs {
    fn default() -> Self {
        OfflineIpsArgs {
            data: String::new(),
            logp_cache: None,
            allow_missing_logp: false,
            overflow: logp::Overflow::Skip,
            strict: false,
            model: "builtin:tiny-gpt2".into(),
            tokenizer: None,
            uid_key: "uid".into(),
            prompt_key: "prompt_pretokenized".into(),
            response_key: "unprocessed_response".into(),
            reward_key: "normalized_reward".into(),
            data_filter: DataFilter::None,
            posonly_threshold: 0.75,
            reward_clip: Some(1.5),
            kl_coef: 0.5,
            kl_discount: 0.5,
            kl_estimator: KlEstimator::K3,
            rho_clip: 1.2,
            epochs: 3,
            batch_size: 1,
            grad_accumulation: 16,
            max_length: 2000,
            max_grad_norm: 1.0,
            eval_fraction: 0.01,
            log_every: 1,
            logp_batch_size: 4,
            seed: 42,
            save_checkpoints: false,
            save_every: 500,
        }
    }
}

impl Ranges for OfflineIpsArgs {
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), tril_core::CoreError> {
        let s = c.section();
        ensure(!self.data.trim().is_empty(), s, "data", "a data file (.parquet, .csv, .jsonl) or builtin:synthetic")?;
        ensure(self.posonly_threshold.is_finite(), s, "posonly_threshold", "a finite number")?;
        ensure(self.reward_clip.is_none_or(|c| c > 0.0), s, "reward_clip", "a number > 0, or null")?;
        ensure(self.kl_coef >= 0.0 && self.kl_coef.is_finite(), s, "kl_coef", "a finite number >= 0")?;
        ensure((0.0..=1.0).contains(&self.kl_discount), s, "kl_discount", "a number in [0, 1]")?;
        ensure(self.rho_clip > 0.0 && self.rho_clip.is_finite(), s, "rho_clip", "a finite number > 0")?;
        for (v, k) in [
            (self.epochs, "epochs"),
            (self.batch_size, "batch_size"),
            (self.grad_accumulation, "grad_accumulation"),
            (self.log_every, "log_every"),
            (self.logp_batch_size, "logp_batch_size"),
        ] {
            ensure(v >= 1, s, k, "an integer >= 1")?;
        }
        ensure(self.max_length >= 2, s, "max_length", "an integer >= 2 (a prompt and a response token)")?;
        ensure(self.max_grad_norm > 0.0, s, "max_grad_norm", "a number > 0")?;
        ensure((0.0..0.5).contains(&self.eval_fraction), s, "eval_fraction", "a fraction in [0, 0.5)")?;
        let save_ok =
            !self.save_checkpoints || (self.save_every >= 1 && self.save_every.is_multiple_of(self.log_every));
        ensure(save_ok, s, "save_every", "a multiple of log_every (logged statistics are not checkpointed)")?;
        Ok(())
    }
}

impl OfflineIpsArgs {
    fn validate(&self, s: &Section<'_>) -> Result<(), PluginError> {
        Ok(self.check_ranges(&Checker::new(s.clone()))?)
    }

    fn columns(&self) -> Columns {
        Columns {
            uid: Column::new(&self.uid_key, "alg.args.uid_key"),
            prompt: Column::new(&self.prompt_key, "alg.args.prompt_key"),
            response: Column::new(&self.response_key, "alg.args.response_key"),
            reward: Some(Column::new(&self.reward_key, "alg.args.reward_key")),
        }
    }
}

/// Hyperparameters of [`ips_loss`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IpsLossArgs {
    /// Upper clip of `rho`.
    pub rho_clip: f64,
    /// KL coefficient.
    pub kl_coef: f64,
    /// KL factor of non-positive samples.
    pub kl_discount: f64,
    /// Per-token KL estimator.
    pub kl_estimator: KlEstimator,
}

/// Per-sample statistics of [`ips_loss`], each `[B]`, detached.
#[derive(Debug, Clone)]
pub struct IpsStats<B: Backend> {
    /// `L_i`.
    pub loss: Tensor<B, 1>,
    /// Mean `-log pi_theta` over the response.
    pub nll: Tensor<B, 1>,
    /// Mean clipped `rho` over the response.
    pub rho: Tensor<B, 1>,
    /// Mean per-token KL estimate.
    pub kl: Tensor<B, 1>,
}

/// The offline IPS loss (module docs): reward-weighted, `rho`-weighted NLL plus the KL
/// term, averaged over the batch. Rows need at least one response token.
///
/// # Shapes
/// `logp`, `logp_ref`, `mask`: `[B, T]`; `rewards`: `[B]` -> (`[1]`, [`IpsStats`] of `[B]`)
pub fn ips_loss<B: Backend>(
    logp: Tensor<B, 2>,
    logp_ref: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    rewards: Tensor<B, 1>,
    args: &IpsLossArgs,
) -> (Tensor<B, 1>, IpsStats<B>) {
    let logp = to_f32(logp);
    let logp_ref = to_f32(logp_ref);
    let mask = to_f32(mask);
    let rewards = to_f32(rewards);
    let n = mask.clone().sum_dim(1).clamp_min(1.0).squeeze_dim::<1>(1); // [B]
    let row_mean = |x: Tensor<B, 2>| (x * mask.clone()).sum_dim(1).squeeze_dim::<1>(1) / n.clone(); // [B]
    let rho = (logp.clone() - logp_ref.clone()).detach().exp().clamp_max(args.rho_clip); // [B, T]
    let weighted_nll = row_mean(logp.clone().neg() * rho.clone()); // [B]
    let kl = row_mean(kl_estimate(logp_ref, logp.clone(), args.kl_estimator)); // [B]
    let positive = rewards.clone().greater_elem(0.0).float().cast(burn::tensor::FloatDType::F32); // [B]
    let w = positive.clone() + (positive.neg() + 1.0) * args.kl_discount; // [B]
    let per_sample = weighted_nll * rewards + kl.clone() * w * args.kl_coef; // [B]
    let stats = IpsStats {
        loss: per_sample.clone().detach(),
        nll: row_mean(logp.neg()).detach(),
        rho: row_mean(rho),
        kl: kl.detach(),
    };
    (per_sample.mean(), stats)
}

/// Everything `offline_ips` reads from the config, validated up front.
pub struct OfflineIps {
    args: OfflineIpsArgs,
    optimizer: OptimizerSpec,
    schedule: Box<dyn LrSchedule>,
}

fn build(section: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let config = ctx.config;
    let args: OfflineIpsArgs = section.extract()?;
    args.validate(section)?;
    crate::lora::refuse_lora(&config.extract("")?, "offline_ips")?;
    let optimizer = match config.optional_section("alg.optimizer") {
        Some(s) => *registry::build_optimizer(&s, config)?,
        None => {
            let message = "offline_ips needs an optimizer section (e.g. id: adamw)";
            return Err(AlgorithmError::config("alg.optimizer", message).into());
        }
    };
    let schedule = crate::trainer::lr_schedule(config)?;
    Ok(Box::new(OfflineIps { args, optimizer, schedule }))
}

tril_core::register!(algorithm,
    id: "offline_ips",
    doc: "Offline IPS: reward-weighted NLL with clipped per-token importance weights and a KL term, from parquet.",
    config: OfflineIpsArgs,
    build: build);

/// One training row: its tokens, cached reference log-probs and (clipped) reward.
struct Row {
    encoded: Encoded,
    logp_ref: Vec<f32>,
    reward: f64,
}

/// The `builtin:synthetic` dataset: numbers prompts; half the responses are increasing
/// runs (reward 1), half random (reward `2 f - 1` with `f` the fraction of increasing
/// steps).
pub fn synthetic_records(n: usize, seed: u64) -> Vec<Record> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let top = crate::onpolicy::NUMBERS;
    (0..n)
        .map(|i| {
            let prompt: Vec<String> = (0..3).map(|_| rng.random_range(0..top).to_string()).collect();
            let response: Vec<u32> = if i % 2 == 0 {
                let start = rng.random_range(0..top - 6);
                (start..start + 6).collect()
            } else {
                (0..6).map(|_| rng.random_range(0..top)).collect()
            };
            let ups = response.windows(2).filter(|w| w[1] > w[0]).count() as f64 / 5.0;
            let text: Vec<String> = response.iter().map(u32::to_string).collect();
            Record {
                uid: format!("syn-{i}"),
                row: i + 1,
                prompt: prompt.join(" "),
                response: text.join(" "),
                reward: Some(2.0 * ups - 1.0),
            }
        })
        .collect()
}

impl OfflineIps {
    fn records(&self) -> Result<Vec<Record>, PluginError> {
        if self.args.data == "builtin:synthetic" {
            return Ok(synthetic_records(96, self.args.seed));
        }
        if let Some(other) = self.args.data.strip_prefix("builtin:") {
            let message = format!("unknown built-in dataset `{other}` (known: synthetic)");
            return Err(AlgorithmError::config("alg.args.data", message).into());
        }
        logp::read_records(Path::new(&self.args.data), &self.args.columns())
    }

    /// Filters, tokenizes and pairs every row with its reference log-probs.
    fn rows<B: Backend>(
        &self,
        tok: &TextTokenizer,
        reference: &CausalLm<B>,
        device: &B::Device,
    ) -> Result<Vec<Row>, PluginError> {
        let a = &self.args;
        let all = self.records()?;
        let total = all.len();
        let kept: Vec<Record> = match a.data_filter {
            DataFilter::None => all,
            DataFilter::Posonly => all.into_iter().filter(|r| r.reward.unwrap_or(0.0) > a.posonly_threshold).collect(),
        };
        if kept.is_empty() {
            let message = format!(
                "posonly keeps no row of {} (no reward > {}; lower alg.args.posonly_threshold)",
                a.data, a.posonly_threshold
            );
            return Err(AlgorithmError::config("alg.args.data_filter", message).into());
        }
        tracing::info!(rows = total, kept = kept.len(), filter = ?a.data_filter, "offline_ips data");
        // Encoded once: rows that do not fit are reported here, and the cache (read or
        // computed) is looked up for the rest.
        let rules = RowPolicy { overflow: a.overflow, strict: a.strict };
        let (encoded, _) = logp::encode_all(tok, &kept, a.max_length, rules, &a.data)?;
        let cache = match &a.logp_cache {
            Some(path) => {
                let cache = LogpCache::load(Path::new(path))?;
                let (seed, max_length) = (a.seed.to_string(), a.max_length.to_string());
                let ours = [
                    ("model", a.model.as_str()),
                    ("seed", seed.as_str()),
                    ("max_length", max_length.as_str()),
                    ("overflow", a.overflow.name()),
                ];
                for (key, value) in ours {
                    // A seed only matters for built-in models, which it initialises.
                    let relevant = key != "seed" || a.model.starts_with("builtin:");
                    if let Some(theirs) = cache.meta.get(key).filter(|t| relevant && t.as_str() != value) {
                        tracing::warn!("{path}: the cache was computed with {key} {theirs}, this run uses {value}");
                    }
                }
                cache
            }
            None => {
                let opts =
                    LogpOptions { batch_size: a.logp_batch_size, max_length: a.max_length, log_every: 0, rows: rules };
                logp::cache_of_encoded(reference, tok, &kept, &encoded, &opts, BTreeMap::new(), device)?
            }
        };
        let (mut rows, mut missing) = (Vec::with_capacity(encoded.len()), Vec::new());
        for (i, encoded) in encoded {
            let record = &kept[i];
            let Some(values) = cache.get(&record.uid) else {
                missing.push(record.uid.clone());
                continue;
            };
            if values.len() != encoded.response_len() {
                return Err(AlgorithmError::CacheMismatch {
                    uid: record.uid.clone(),
                    row: record.row,
                    cached: values.len(),
                    tokens: encoded.response_len(),
                }
                .into());
            }
            let reward = record.reward.unwrap_or(0.0);
            let reward = a.reward_clip.map_or(reward, |c| reward.clamp(-c, c));
            rows.push(Row { logp_ref: values.to_vec(), encoded, reward });
        }
        if !missing.is_empty() {
            let cache_name = a.logp_cache.as_deref().unwrap_or("(computed)");
            let (n, total) = (missing.len(), missing.len() + rows.len());
            if !a.allow_missing_logp {
                let (cache, first) = (cache_name.to_string(), missing.swap_remove(0));
                return Err(AlgorithmError::MissingLogp { missing: n, total, cache, first }.into());
            }
            tracing::warn!(
                "{n} of {total} rows have no log-probs in {cache_name} (first: uid `{}`): skipping them \
                 (alg.args.allow_missing_logp)",
                missing[0]
            );
        }
        if rows.is_empty() {
            return Err(AlgorithmError::training("offline_ips", "no row left to train on").into());
        }
        Ok(rows)
    }
}

struct Loop<B: AutodiffBackend> {
    args: OfflineIpsArgs,
    loss_args: IpsLossArgs,
    model: CausalLm<B>,
    optim: Optim<B, CausalLm<B>>,
    optimizer: OptimizerSpec,
    rng: ChaCha8Rng,
    /// The shuffled order of the training rows and the position in it (a pass = an epoch).
    sampler: PromptSampler,
    schedule: Box<dyn LrSchedule>,
    base_lr: f64,
    tracker: Tracker,
    pad: u32,
    device: B::Device,
    guard: Guard,
}

impl Algorithm for OfflineIps {
    fn run(self: Box<Self>, ctx: &RunCtx<'_>) -> Result<(), PluginError> {
        run_on_target(ctx, *self)
    }
}

impl Run for OfflineIps {
    fn run<B: AutodiffBackend>(self, ctx: &RunCtx<'_>, device: B::Device) -> Result<(), PluginError> {
        let a = self.args.clone();
        let tok = crate::onpolicy::load_tokenizer(a.tokenizer.as_deref().unwrap_or(logp::default_tokenizer(&a.model)))?;
        let (model, gpt_config) = logp::load_lm::<B>(&a.model, tok.vocab_size(), a.seed, a.max_length, &device)?;
        let mut rows = self.rows(&tok, &model.valid(), &device)?;
        let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
        rows.shuffle(&mut rng);
        let n_eval = (rows.len() as f64 * a.eval_fraction).floor() as usize;
        let eval = rows.split_off(rows.len() - n_eval);
        check_splits(&a.data, rows.len(), [])?;
        if n_eval == 0 && a.eval_fraction > 0.0 {
            tracing::warn!(
                rows = rows.len(),
                eval_fraction = a.eval_fraction,
                "alg.args.eval_fraction holds out no row of this data; there is no held-out evaluation"
            );
        }
        let mut state = Loop {
            loss_args: IpsLossArgs {
                rho_clip: a.rho_clip,
                kl_coef: a.kl_coef,
                kl_discount: a.kl_discount,
                kl_estimator: a.kl_estimator,
            },
            optim: Optim::for_module(&self.optimizer, &model),
            optimizer: self.optimizer.clone(),
            sampler: PromptSampler::new(rows.len()),
            rng,
            base_lr: self.optimizer.lr,
            schedule: self.schedule,
            tracker: Tracker::new(RunDir::open(&ctx.run_dir)?),
            guard: Guard::new("offline_ips", ctx.config, &ctx.run_dir)?,
            pad: tok.pad_token_id().or(tok.eos_token_id()).unwrap_or(0),
            args: a,
            model,
            device,
        };
        let first = match &ctx.resume_from {
            Some(dir) => state.restore(dir)?,
            None => 0,
        };
        state.train(&rows, &eval, first, &gpt_config, &tok)
    }
}

/// The logged statistics of the steps since the last log line: means, and counts.
#[derive(Default)]
struct Sums {
    means: BTreeMap<String, (f64, f64)>,
    counts: BTreeMap<String, f64>,
}

impl Sums {
    fn add(&mut self, key: &str, value: f64) {
        let e = self.means.entry(key.to_string()).or_default();
        e.0 += value;
        e.1 += 1.0;
    }

    fn count(&mut self, key: &str) {
        *self.counts.entry(key.to_string()).or_default() += 1.0;
    }

    fn merge(&mut self, other: Sums) {
        for (k, (s, n)) in other.means {
            let e = self.means.entry(k).or_default();
            (e.0, e.1) = (e.0 + s, e.1 + n);
        }
        for (k, c) in other.counts {
            *self.counts.entry(k).or_default() += c;
        }
    }

    fn stats(&self) -> Stats {
        let means = self.means.iter().map(|(k, (s, n))| (k.clone(), s / n));
        means.chain(self.counts.iter().map(|(k, c)| (k.clone(), *c))).collect()
    }
}

fn host1<B: Backend>(t: Tensor<B, 1>) -> Vec<f64> {
    tril_core::ops::host(t).into_iter().map(f64::from).collect()
}

impl<B: AutodiffBackend> Loop<B> {
    /// Padded tensors of a micro-batch: ids/mask via [`logp::token_batch`], the reference
    /// log-probs laid out like [`logp::response_logprobs`], and the rewards.
    fn tensors(&self, rows: &[&Row]) -> (logp::TokenBatch<B>, Tensor<B, 2>, Tensor<B, 1>) {
        let encoded: Vec<&Encoded> = rows.iter().map(|r| &r.encoded).collect();
        let batch = logp::token_batch::<B>(&encoded, self.pad, &self.device);
        let width = batch.response_mask.dims()[1];
        let mut reference = vec![0f32; rows.len() * width];
        for (i, r) in rows.iter().enumerate() {
            let start = i * width + r.encoded.prompt_len - 1;
            reference[start..start + r.logp_ref.len()].copy_from_slice(&r.logp_ref);
        }
        let reference = Tensor::from_data(
            TensorData::new(reference, [rows.len(), width]),
            (&self.device, burn::tensor::DType::F32),
        );
        let rewards: Vec<f32> = rows.iter().map(|r| r.reward as f32).collect();
        let rewards =
            Tensor::from_data(TensorData::new(rewards, [rows.len()]), (&self.device, burn::tensor::DType::F32));
        (batch, reference, rewards)
    }

    /// Restores the newest checkpoint of `run_dir` (`--resume`); returns its step.
    fn restore(&mut self, run_dir: &std::path::Path) -> Result<usize, PluginError> {
        let (state, model, optim, tracker) = OnPolicyState::restore(
            run_dir,
            "offline_ips",
            self.sampler.len(),
            self.model.clone(),
            &self.optimizer,
            &self.device,
        )?;
        (self.model, self.optim, self.tracker) = (model, optim, tracker);
        (self.rng, self.sampler) = (state.rng.restore(), state.sampler);
        self.guard.restore(state.guard_skipped);
        Ok(state.iteration)
    }

    /// Optimizer steps `first + 1 ..= total`, each of `batch_size x grad_accumulation`
    /// rows of the sampler's shuffled order (a pass = an epoch, its last step smaller),
    /// the held-out NLL after each epoch, checkpoints as configured and at the end.
    fn train(
        &mut self,
        rows: &[Row],
        eval: &[Row],
        first: usize,
        config: &LmConfig,
        tok: &TextTokenizer,
    ) -> Result<(), PluginError> {
        let a = self.args.clone();
        let per_step = a.batch_size * a.grad_accumulation;
        let steps_per_epoch = rows.len().div_ceil(per_step);
        let total = steps_per_epoch * a.epochs;
        if first >= total {
            tracing::info!(total, "the run already finished its {total} steps; nothing to resume");
            return Ok(());
        }
        tracing::info!(train = rows.len(), eval = eval.len(), steps = total, "offline_ips");
        let mut sums = Sums::default();
        for step in first + 1..=total {
            let epoch = (step - 1) / steps_per_epoch + 1;
            let group = self.sampler.take(per_step.min(self.sampler.remaining()), &mut self.rng);
            // Data-parallel: this replica's share of the (global) step.
            let group = group[tril_core::parallel::shard_range(group.len())].to_vec();
            let lr = self.base_lr * self.schedule.factor((step - 1) as u64);
            let micro: Vec<&[usize]> = group.chunks(a.batch_size).collect();
            let mut accum = GradientsAccumulator::<CausalLm<B>>::new();
            // This step's statistics, kept only if the guard lets its update through.
            let mut step_sums = Sums::default();
            for idx in &micro {
                let picked: Vec<&Row> = idx.iter().map(|&i| &rows[i]).collect();
                let (batch, reference, rewards) = self.tensors(&picked);
                let logp = logp::response_logprobs(&self.model, &batch); // [b, L - 1]
                let (loss, stats) = ips_loss(logp, reference, batch.response_mask.clone(), rewards, &self.loss_args);
                self.record(&mut step_sums, &picked, &stats);
                let grads = (loss / micro.len() as f64).backward();
                accum.accumulate(&self.model, GradientsParams::from_grads(grads, &self.model));
            }
            let (grads, norm) = clip_grad_norm(&self.model, accum.grads(), a.max_grad_norm)?;
            step_sums.add("ips/grad_norm", norm);
            let step_stats = step_sums.stats();
            let checked: Vec<(&str, f64)> = step_stats.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let mut verdict = self.guard.step(At::step(step), &checked)?;
            if let (Verdict::Apply, Some(&kl)) = (verdict, step_stats.get("ips/kl")) {
                verdict = self.guard.kl(At::step(step), "ips/kl", kl)?;
            }
            if verdict == Verdict::Apply {
                self.model = self.optim.step(lr, self.model.clone(), grads);
                sums.merge(step_sums);
            }
            if step % a.log_every == 0 {
                let mut stats = std::mem::take(&mut sums).stats();
                stats.insert("ips/lr".into(), lr);
                stats.insert("ips/epoch".into(), epoch as f64);
                self.guard.record(&mut stats);
                tracing::info!(
                    step,
                    epoch,
                    loss = format!("{:.4}", stats.get("ips/loss").copied().unwrap_or(f64::NAN)),
                    rho = format!("{:.4}", stats.get("ips/rho_mean").copied().unwrap_or(f64::NAN)),
                    "offline_ips"
                );
                self.tracker.log_training(step, &stats)?;
            }
            if step % steps_per_epoch == 0 && !eval.is_empty() {
                let stats = self.evaluate(eval)?;
                tracing::info!(epoch, nll = format!("{:.4}", stats["eval/nll"]), "offline_ips eval");
                self.tracker.log_training(step, &stats)?;
            }
            // Logged sums are not checkpointed: stop where a log line was just written.
            let stop = self.guard.stop_requested()? && step < total && step % a.log_every == 0;
            if (a.save_checkpoints && step % a.save_every == 0 && step != total) || stop {
                self.checkpoint(step, config, tok)?;
            }
            if stop {
                return Err(self.guard.interrupted(At::step(step)));
            }
        }
        // The held-out NLL (`eval/*`, logged with the training lines) is plotted too.
        let keys = ["ips/loss", "ips/rho_mean", "ips/kl", "stats/pos_logp", "eval/nll", "eval/pos_nll"];
        self.tracker.plot(&keys)?;
        self.checkpoint(total, config, tok)
    }

    /// Adds one micro-batch's statistics: `ips/*` over all samples, `stats/{pos,neg}_*`
    /// split on reward > 0 (the seed's W&B keys).
    fn record(&self, sums: &mut Sums, rows: &[&Row], stats: &IpsStats<B>) {
        let (loss, nll, rho, kl) =
            (host1(stats.loss.clone()), host1(stats.nll.clone()), host1(stats.rho.clone()), host1(stats.kl.clone()));
        for (i, r) in rows.iter().enumerate() {
            sums.add("ips/loss", loss[i]);
            sums.add("ips/nll", nll[i]);
            sums.add("ips/rho_mean", rho[i]);
            sums.add("ips/kl", kl[i]);
            let side = if r.reward > 0.0 { "pos" } else { "neg" };
            for (k, v) in [("loss", loss[i]), ("logp", -nll[i]), ("rho", rho[i]), ("kl", kl[i]), ("reward", r.reward)] {
                sums.add(&format!("stats/{side}_{k}"), v);
            }
            sums.count(&format!("stats/{side}_count"));
        }
    }

    /// Mean per-token NLL of the held-out rows (all, and reward > 0).
    fn evaluate(&self, eval: &[Row]) -> Result<Stats, PluginError> {
        let model = self.model.valid();
        let (mut all, mut pos) = ((0.0, 0.0), (0.0, 0.0));
        for chunk in eval.chunks(self.args.batch_size.max(8)) {
            let encoded: Vec<&Encoded> = chunk.iter().map(|r| &r.encoded).collect();
            let batch = logp::token_batch::<B::InnerBackend>(&encoded, self.pad, &self.device);
            let lp = logp::response_logprobs(&model, &batch)
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap_or_default();
            for (r, values) in chunk.iter().zip(logp::response_values(&lp, &encoded)) {
                let nll: f64 = values.iter().map(|&v| -f64::from(v)).sum();
                all = (all.0 + nll, all.1 + values.len() as f64);
                if r.reward > 0.0 {
                    pos = (pos.0 + nll, pos.1 + values.len() as f64);
                }
            }
        }
        let mut out = Stats::new();
        out.insert("eval/nll".into(), all.0 / all.1.max(1.0));
        if pos.1 > 0.0 {
            out.insert("eval/pos_nll".into(), pos.0 / pos.1);
        }
        Ok(out)
    }

    /// Writes `checkpoints/iter_<step>/` atomically: `policy/` (HF layout) and the exact
    /// trainer state `--resume` reads.
    fn checkpoint(&self, step: usize, config: &LmConfig, tok: &TextTokenizer) -> Result<(), PluginError> {
        let model = self.model.valid();
        let state = OnPolicyState::new("offline_ips", step, &self.rng, &self.sampler);
        state.write_checkpoint(&self.tracker, &self.guard, &self.model, &self.optim, |tmp| {
            Ok(tril_models::hf::save_lm(&model, config, &tmp.join("policy"), Some(tok))?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{t1, t2};

    /// Two samples, hand computed (f64 below, f32 in the loss; tolerance 1e-5):
    /// sample 0 (r = 1): logp [-1, -2], ref [-1.5, -1.9], mask [1, 1]
    ///   rho = [min(e^0.5, 1.2), e^-0.1] = [1.2, 0.904837]
    ///   nll term = (1*1.2 + 2*0.904837)/2 * 1 = 1.504837
    ///   k3 with d = logp - ref = [0.5, -0.1]: e^d - 1 - d = [0.148721, 0.004837] -> mean 0.076779
    ///   L_0 = 1.504837 + 0.5 * 1 * 0.076779 = 1.543227
    /// sample 1 (r = -0.5): logp [-3, pad], ref [-2, pad], mask [1, 0]
    ///   rho = e^-1 = 0.367879; nll term = 3 * 0.367879 * -0.5 = -0.551819
    ///   k3 with d = -1: e^-1 - 1 + 1 = 0.367879; L_1 = -0.551819 + 0.5 * 0.5 * 0.367879 = -0.459849
    /// loss = (1.543227 - 0.459849) / 2 = 0.541689
    #[test]
    fn ips_loss_matches_hand_computation() {
        let logp = t2(&[-1.0, -2.0, -3.0, 0.0], 2);
        let reference = t2(&[-1.5, -1.9, -2.0, 0.0], 2);
        let mask = t2(&[1.0, 1.0, 1.0, 0.0], 2);
        let rewards = t1(&[1.0, -0.5]);
        let args = IpsLossArgs { rho_clip: 1.2, kl_coef: 0.5, kl_discount: 0.5, kl_estimator: KlEstimator::K3 };
        let (loss, stats) = ips_loss(logp.clone(), reference.clone(), mask.clone(), rewards.clone(), &args);
        let close = |a: f32, b: f64| assert!((f64::from(a) - b).abs() < 1e-5, "{a} vs {b}");
        close(loss.into_scalar(), 0.541689);
        let per: Vec<f32> = stats.loss.into_data().to_vec().unwrap();
        close(per[0], 1.543227);
        close(per[1], -0.459849);
        let rho: Vec<f32> = stats.rho.into_data().to_vec().unwrap();
        close(rho[0], (1.2 + 0.904837) / 2.0);
        close(rho[1], 0.367879);
        let nll: Vec<f32> = stats.nll.into_data().to_vec().unwrap();
        close(nll[0], 1.5);
        close(nll[1], 3.0);
        // k1 is the seed's estimate, mean(ref - logp): sample 0 (-0.5 + 0.1)/2 = -0.2.
        let k1 = IpsLossArgs { kl_estimator: KlEstimator::K1, kl_coef: 0.0, ..args };
        let (loss, stats) = ips_loss(logp, reference, mask, rewards, &k1);
        close(stats.kl.into_data().to_vec::<f32>().unwrap()[0], -0.2);
        close(loss.into_scalar(), (1.504837 - 0.551819) / 2.0);
    }

    /// The gradient flows through `logp` only: with `rho` detached, d L / d logp_t for a
    /// single token with kl_coef 0 is `-rho * r / n`.
    #[test]
    fn rho_is_detached_and_kl_reaches_the_gradient() {
        type A = tril_core::backend::CpuAutodiff;
        let device = Default::default();
        let logp = Tensor::<A, 2>::from_data(TensorData::new(vec![-1.0f32], [1, 1]), &device).require_grad();
        let reference = Tensor::<A, 2>::from_data(TensorData::new(vec![-1.1f32], [1, 1]), &device);
        let mask = Tensor::<A, 2>::from_data(TensorData::new(vec![1.0f32], [1, 1]), &device);
        let rewards = Tensor::<A, 1>::from_data(TensorData::new(vec![2.0f32], [1]), &device);
        for (kl_coef, want) in [(0.0, -(0.1f64.exp()) * 2.0), (1.0, -(0.1f64.exp()) * 2.0 + (0.1f64.exp() - 1.0))] {
            let args = IpsLossArgs { rho_clip: 10.0, kl_coef, kl_discount: 0.5, kl_estimator: KlEstimator::K3 };
            let (loss, _) = ips_loss(logp.clone(), reference.clone(), mask.clone(), rewards.clone(), &args);
            let grads = loss.backward();
            let g: f32 = logp.grad(&grads).unwrap().into_scalar();
            assert!((f64::from(g) - want).abs() < 1e-5, "kl_coef {kl_coef}: {g} vs {want}");
        }
    }

    #[test]
    fn synthetic_data_mixes_rewards() {
        let recs = synthetic_records(96, 42);
        let rewards: Vec<f64> = recs.iter().map(|r| r.reward.unwrap()).collect();
        assert!(rewards.iter().filter(|&&r| r == 1.0).count() >= 48);
        assert!(rewards.iter().any(|&r| r < 0.0), "{rewards:?}");
        assert_eq!(recs[0].uid, "syn-0");
    }
}
