//! The typed shape of the root config (what `cfgs/` composes into).
//!
//! Plugin sections (`task`, `reward_fn`, `eval_metrics`, `alg.*`) are checked here only
//! for their id; their `args` are validated by the registry entry that reads them.
//! Each struct states its value ranges ([`Ranges`]) right after its definition.

use crate::config::{Checker, Ranges};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// The root of a composed config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootConfig {
    /// Name of the experiment (first part of the run directory).
    pub experiment_name: String,
    /// The run directory, usually `outputs/${experiment_name}/${now:...}`.
    pub run_dir: String,
    /// Where to compute: `cpu`, `ndarray`, `flex`, `cuda[:N]`, `wgpu[:N]`, `vulkan[:N]`
    /// (parsed at config time; a backend this build lacks is refused naming its feature).
    pub device: crate::backend::Device,
    /// The float type of parameters and activations: `f32` (default), `bf16` or `f16`.
    #[serde(default)]
    pub precision: crate::backend::Precision,
    /// Data-parallel replicas on this machine (see [`crate::parallel`]): one thread per
    /// device (`cuda:i`, `cuda:i+1`, ... from `device`), gradients all-reduced each step.
    #[serde(default = "one")]
    pub devices: usize,
    /// Machines of a data-parallel run and how they meet (see [`crate::parallel`]).
    #[serde(default)]
    pub distributed: crate::parallel::DistributedConfig,
    /// What a non-finite or diverging step does (see [`crate::safety`]).
    #[serde(default)]
    pub guard: crate::safety::GuardConfig,
    /// Which checkpoints a run keeps (see [`crate::safety`]).
    #[serde(default)]
    pub checkpoint: crate::safety::CheckpointConfig,
    /// Whether to log to Weights & Biases (key from `WANDB_API_KEY`).
    pub log_to_wandb: bool,
    /// W&B entity.
    pub entity_name: Option<String>,
    /// W&B project.
    pub project_name: String,
    /// W&B run name (`null`: the experiment name).
    #[serde(default)]
    pub wandb_run_name: Option<String>,
    /// W&B run group (`null`: none).
    #[serde(default)]
    pub wandb_group: Option<String>,
    /// W&B run tags.
    #[serde(default)]
    pub wandb_tags: Vec<String>,
    /// W&B run notes (`null`: none).
    #[serde(default)]
    pub wandb_notes: Option<String>,
    /// Upload the final model (the last checkpoint's HF directories) to W&B at the end.
    #[serde(default)]
    pub wandb_log_model: bool,
    /// The task.
    pub task: Component,
    /// The reward function (absent for supervised tasks).
    pub reward_fn: Option<RewardFnSection>,
    /// A second reward that only evaluates (`null`: none): scored on the eval generations at
    /// every evaluation beside the training reward (the "gold" of reward over-optimization
    /// studies; `tril gold-eval` scores a finished run with it afterwards).
    #[serde(default)]
    pub gold_reward_fn: Option<Component>,
    /// Prompt/generation shapes and sampling settings.
    pub sampling: SamplingConfig,
    /// Metrics computed at each evaluation.
    #[serde(default)]
    pub eval_metrics: Vec<Component>,
    /// The algorithm section chosen for the task.
    pub alg: AlgConfig,
}

impl Ranges for RootConfig {
    /// The plugin sections are checked by their registry entries; here the `sampling`,
    /// `guard` and `checkpoint` blocks.
    fn check_ranges(&self, c: &Checker<'_>) -> crate::Result<()> {
        c.ensure(
            self.alg.optimizer_kwargs.is_none(),
            "alg.optimizer_kwargs",
            "TRIL's stale BC key is not read (TRIL's own agent reads alg.optimizer, so TRIL's bc does not run with it either); write its values as `optimizer: {id: adamw, args: {lr: ..., weight_decay: ..., eps: ...}}`",
        )?;
        c.ensure(self.devices >= 1, "devices", "expected at least 1 device")?;
        c.nested_ranges("distributed", &self.distributed)?;
        c.nested_ranges("alg.lora", &self.alg.lora)?;
        c.nested_ranges("sampling", &self.sampling)?;
        c.nested_ranges("guard", &self.guard)?;
        c.nested_ranges("checkpoint", &self.checkpoint)
    }
}

fn one() -> usize {
    1
}

impl RootConfig {
    /// The checked (device, precision) pair the run computes on.
    pub fn target(&self) -> crate::Result<crate::backend::Target> {
        crate::backend::Target::new(self.device, self.precision)
    }
}

/// A `{id, args}` section whose args a registry entry validates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Registry id.
    pub id: String,
    /// Arguments, validated by the entry.
    #[serde(default)]
    pub args: Option<IgnoredAny>,
}

/// The root `reward_fn`: a component, plus the optimizer of a trainable one (GAIL's
/// discriminator, whose section in `cfgs/alg/gail.yaml` replaces the task's reward).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardFnSection {
    /// Registry id.
    pub id: String,
    /// Arguments, validated by the entry.
    #[serde(default)]
    pub args: Option<IgnoredAny>,
    /// Optimizer of a trainable reward (read by the algorithm that trains it).
    #[serde(default)]
    pub optimizer: Option<Component>,
}

/// Which side padding or truncation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The start of the sequence.
    Left,
    /// The end of the sequence.
    Right,
}

/// TRIL's `sampling` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Generations per `generate` call on each process.
    pub batch_size_per_process: usize,
    /// Prompt length in tokens (prompts are padded/truncated to it).
    pub max_prompt_len: usize,
    /// Maximum generated tokens.
    pub max_gen_len: usize,
    /// Prompt padding side.
    pub prompt_padding_side: Side,
    /// Prompt truncation side.
    pub prompt_truncation_side: Side,
    /// Reference (context) padding side.
    pub context_padding_side: Side,
    /// Reference (context) truncation side.
    pub context_truncation_side: Side,
    /// Generation settings for rollouts.
    pub train_generation_kwargs: GenKwargs,
    /// Generation settings for evaluation.
    pub eval_generation_kwargs: GenKwargs,
}

impl Ranges for SamplingConfig {
    fn check_ranges(&self, c: &Checker<'_>) -> crate::Result<()> {
        c.at_least("batch_size_per_process", self.batch_size_per_process, 1)?;
        c.at_least("max_prompt_len", self.max_prompt_len, 1)?;
        c.at_least("max_gen_len", self.max_gen_len, 1)?;
        c.nested_ranges("train_generation_kwargs", &self.train_generation_kwargs)?;
        c.nested_ranges("eval_generation_kwargs", &self.eval_generation_kwargs)
    }
}

/// Generation settings, with the names TRIL passes to HF `generate`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GenKwargs {
    /// Sample (true) or greedy (false).
    #[serde(default)]
    pub do_sample: bool,
    /// Keep the k most likely tokens (0 = off).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass (1.0 = off).
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Softmax temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Minimum new tokens before EOS may be sampled (TRIL rewrites `min_length` this way).
    #[serde(default)]
    pub min_length: Option<usize>,
    /// Maximum new tokens.
    pub max_new_tokens: usize,
    /// Beam search width (HF beam search when > 1 with `do_sample: false`).
    #[serde(default)]
    pub num_beams: Option<usize>,
}

impl Ranges for GenKwargs {
    /// `top_k` is any count (0 = off); `top_p` in (0, 1]; `temperature` > 0; at least one
    /// new token and one beam. `min_length` may exceed `max_new_tokens` (EOS is then never sampled).
    fn check_ranges(&self, c: &Checker<'_>) -> crate::Result<()> {
        if let Some(top_p) = self.top_p {
            c.in_range("top_p", top_p, (std::ops::Bound::Excluded(0.0), std::ops::Bound::Included(1.0)))?;
        }
        if let Some(temperature) = self.temperature {
            c.positive("temperature", temperature)?;
        }
        c.at_least("max_new_tokens", self.max_new_tokens, 1)?;
        if let Some(num_beams) = self.num_beams {
            c.at_least("num_beams", num_beams, 1)?;
            let sampled_beams = num_beams > 1 && self.do_sample;
            c.ensure(
                !sampled_beams,
                "num_beams",
                "expected 1 with do_sample: true (beam sampling is not implemented)",
            )?;
        }
        Ok(())
    }
}

/// The algorithm section (`cfgs/alg/<alg>.yaml`, section for the task).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlgConfig {
    /// Algorithm registry id.
    pub id: String,
    /// Whether the task's reward function is built.
    #[serde(default)]
    pub build_reward: bool,
    /// Algorithm arguments, validated by the algorithm entry.
    #[serde(default)]
    pub args: Option<IgnoredAny>,
    /// KL controller (`kl_type` plus its fields).
    #[serde(default)]
    pub kl_div: Option<IgnoredAny>,
    /// Optimizer.
    #[serde(default)]
    pub optimizer: Option<Component>,
    /// Learning-rate scheduler.
    #[serde(default)]
    pub scheduler: Option<Component>,
    /// Tokenizer settings.
    #[serde(default)]
    pub tokenizer: Option<TokenizerConfig>,
    /// Policy layout.
    #[serde(default)]
    pub policy: Option<Component>,
    /// LoRA adapters on the policy (TRIL's `lora: {peft_config: {...}}`): DPO, KTO and the
    /// PPO/GRPO families train adapters only; other algorithms refuse it.
    #[serde(default)]
    pub lora: Option<LoraSection>,
    /// TRIL's `bc.yaml` spelling of the optimizer's arguments, a stale key: TRIL's
    /// agent builds its optimizer from `alg.optimizer`, so TRIL's BC does not run with it
    /// either. Accepted by the parser so that the error can say what to write instead
    /// (see [`RootConfig`]'s ranges): `optimizer: {id: adamw, args: {...}}`.
    #[serde(default)]
    pub optimizer_kwargs: Option<IgnoredAny>,
}

/// TRIL's `alg.lora` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// PEFT's `LoraConfig` arguments (TRIL builds `LoraConfig(**peft_config)`).
    pub peft_config: PeftLoraConfig,
}

impl Ranges for LoraSection {
    fn check_ranges(&self, c: &Checker<'_>) -> crate::Result<()> {
        c.nested_ranges("peft_config", &self.peft_config)
    }
}

/// PEFT's `LoraConfig` keys tril implements, with PEFT's defaults (the model-side twin is
/// `tril_models::lora::LoraConfig`, which the algorithms build from this).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeftLoraConfig {
    /// Rank (≥ 1).
    #[serde(default = "PeftLoraConfig::default_r")]
    pub r: usize,
    /// Scale numerator (> 0): updates are scaled by `lora_alpha / r`.
    #[serde(default = "PeftLoraConfig::default_alpha")]
    pub lora_alpha: f64,
    /// Dropout on the adapter input in training, in [0, 1).
    #[serde(default)]
    pub lora_dropout: f64,
    /// PEFT's task type: `CAUSAL_LM` (the only one tril's policies are).
    #[serde(default)]
    pub task_type: Option<String>,
    /// Module-name suffixes that get adapters; absent = PEFT's default of the architecture.
    #[serde(default)]
    pub target_modules: Option<Vec<String>>,
    /// Which biases train: `none` only.
    #[serde(default = "PeftLoraConfig::default_bias")]
    pub bias: String,
    /// rsLoRA scaling `lora_alpha / sqrt(r)`.
    #[serde(default)]
    pub use_rslora: bool,
    /// B = 0 at start (`true`, PEFT's default) or random.
    #[serde(default = "PeftLoraConfig::default_init")]
    pub init_lora_weights: bool,
}

impl PeftLoraConfig {
    fn default_r() -> usize {
        8
    }
    fn default_alpha() -> f64 {
        8.0
    }
    fn default_bias() -> String {
        "none".into()
    }
    fn default_init() -> bool {
        true
    }
}

impl Ranges for PeftLoraConfig {
    fn check_ranges(&self, c: &Checker<'_>) -> crate::Result<()> {
        c.at_least("r", self.r, 1)?;
        c.positive("lora_alpha", self.lora_alpha)?;
        c.in_range("lora_dropout", self.lora_dropout, 0.0..1.0)?;
        let task = self.task_type.as_deref().unwrap_or("CAUSAL_LM");
        c.satisfies(task == "CAUSAL_LM", "task_type", task, "expected CAUSAL_LM (tril's policies are causal LMs)")?;
        c.satisfies(
            self.bias == "none",
            "bias",
            &self.bias,
            "expected none (`all` and `lora_only` are not implemented)",
        )?;
        let empty = self.target_modules.as_ref().is_some_and(|t| t.is_empty() || t.iter().any(|m| m.is_empty()));
        c.ensure(!empty, "target_modules", "expected a non-empty list of module names")
    }
}

/// TRIL's `alg.tokenizer` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Hub id or local directory holding `tokenizer.json`, or a built-in name.
    pub model_name: String,
    /// Padding side.
    pub padding_side: Side,
    /// Truncation side.
    pub truncation_side: Side,
    /// Use the EOS token as the pad token.
    #[serde(default)]
    pub pad_token_as_eos_token: bool,
}
