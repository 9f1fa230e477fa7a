//! The traits every plugin kind implements, and the values they exchange.
//!
//! Everything here is backend-free: an algorithm owns its Burn backend and models;
//! tasks, rewards and metrics exchange text and numbers; KL controllers and
//! schedulers are plain numeric state machines.

use crate::config::Config;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The error a plugin returns: any error type of its own crate.
pub type PluginError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a builder may read while turning its config into a value.
#[derive(Debug, Clone, Copy)]
pub struct BuildCtx<'a> {
    /// The whole resolved config (for values a plugin shares with others, e.g. `sampling`).
    pub config: &'a Config,
}

impl BuildCtx<'_> {
    /// The root `device` and `precision` (defaults `cpu`, `f32` when a partial config lacks
    /// them), checked: where a model-backed plugin computes (through
    /// [`crate::backend::infer`]).
    pub fn target(&self) -> Result<crate::backend::Target, crate::CoreError> {
        target_of(self.config)
    }
}

/// The checked `device` / `precision` of a config (defaults `cpu`, `f32` when absent).
pub fn target_of(config: &Config) -> Result<crate::backend::Target, crate::CoreError> {
    let device = match config.optional_section("device") {
        Some(s) => s.extract()?,
        None => crate::backend::Device::Cpu,
    };
    let precision = match config.optional_section("precision") {
        Some(s) => s.extract()?,
        None => crate::backend::Precision::F32,
    };
    crate::backend::Target::new(device, precision)
}

/// A dataset split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training prompts.
    Train,
    /// Validation.
    Val,
    /// Test.
    Test,
}

impl Split {
    /// Every split, in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The lowercase name (`train`, `val`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;

    /// `train`, `val` or `test` (a command line's `--split`).
    fn from_str(text: &str) -> Result<Split, String> {
        Split::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| format!("expected train, val or test, found `{text}`"))
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One example of a task: a prompt and its reference continuations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Stable id (e.g. `imdb_train_17`).
    pub id: String,
    /// The prompt (TRIL's `prompt_or_input_text`).
    pub prompt: String,
    /// Reference continuations; at least one.
    pub references: Vec<String>,
    /// Free-form metadata carried to rewards and metrics.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// A prompt with a preferred and a dispreferred completion (TRL's paired preference
/// format), the data of `dpo` and of pairwise `reward_model` training.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencePair {
    /// Stable id naming where the pair came from (e.g. `data/p.jsonl:row 17`).
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// The preferred completion.
    pub chosen: String,
    /// The dispreferred completion.
    pub rejected: String,
}

/// A prompt with one completion labelled desirable or not (TRL's unpaired preference
/// format), the data of `kto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpairedCompletion {
    /// Stable id naming where the example came from.
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// The completion.
    pub completion: String,
    /// True when the completion is desirable.
    pub desirable: bool,
}

/// A text with a class label (sequence-classifier training, e.g. IMDB sentiment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelledText {
    /// Stable id naming where the example came from.
    pub id: String,
    /// The text the classifier reads.
    pub text: String,
    /// The class index, `< label_names().len()`.
    pub label: usize,
}

/// A task: the samples of each split. Offline tasks (preference data, labelled text)
/// override the data methods they provide; the defaults refuse with an error saying what
/// the task lacks, which an algorithm reports with the task's id.
pub trait Task: Send {
    /// The samples of `split`, in a deterministic order.
    fn samples(&self, split: Split) -> Result<Vec<Sample>, PluginError>;

    /// Paired preferences of `split`, in a deterministic order.
    fn preference_pairs(&self, split: Split) -> Result<Vec<PreferencePair>, PluginError> {
        let _ = split;
        Err("the task has no preference pairs (prompt, chosen, rejected); use a preference task such as \
             `preference` or `synthetic_preference`"
            .into())
    }

    /// Unpaired, labelled completions of `split` (KTO), in a deterministic order.
    fn unpaired(&self, split: Split) -> Result<Vec<UnpairedCompletion>, PluginError> {
        let _ = split;
        Err("the task has no unpaired preference data (prompt, completion, label); use a task such as \
             `unpaired_preference` or `synthetic_preference`"
            .into())
    }

    /// Labelled texts of `split` (classifier training), in a deterministic order.
    fn labelled_texts(&self, split: Split) -> Result<Vec<LabelledText>, PluginError> {
        let _ = split;
        Err("the task has no labelled texts (text, label); use a task such as `text_classification` or \
             `synthetic_preference`"
            .into())
    }

    /// The class names of [`Task::labelled_texts`], index = label.
    fn label_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The text a reward or metric scores, one entry per sample.
#[derive(Debug, Clone, Copy)]
pub struct TextBatch<'a> {
    /// Prompts.
    pub prompts: &'a [String],
    /// Generated continuations.
    pub generations: &'a [String],
    /// Reference continuations of each sample.
    pub references: &'a [Vec<String>],
}

impl TextBatch<'_> {
    /// Number of samples; checks that all columns agree.
    pub fn len(&self) -> Result<usize, PluginError> {
        let n = self.prompts.len();
        if self.generations.len() != n || self.references.len() != n {
            return Err(format!(
                "batch columns disagree: {} prompts, {} generations, {} reference lists",
                n,
                self.generations.len(),
                self.references.len()
            )
            .into());
        }
        Ok(n)
    }

    /// True when the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }
}

/// A reward function: one scalar per generated sequence (TRIL's `compute_reward`).
pub trait RewardFn: Send {
    /// Scores each (prompt, generation, references) triple.
    fn score(&mut self, batch: TextBatch<'_>) -> Result<Vec<f64>, PluginError>;

    /// Statistics of the last [`RewardFn::score`] call worth logging beside the reward, as
    /// `(name, value)` without a namespace (an ensemble's per-member means `rm_0`, `rm_1`,
    /// ... and their `rm_spread`); the loops log them as `rollout_buffer/<name>`. Default: none.
    fn diagnostics(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// One metric value: per-sample scores (when meaningful) and the corpus score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    /// Per-sample scores, aligned with the batch.
    pub per_sample: Option<Vec<f64>>,
    /// The corpus-level score.
    pub corpus: f64,
}

/// Metric results keyed `namespace/name` (TRIL's keys, e.g. `lexical/rouge_rouge1`).
pub type MetricOutput = BTreeMap<String, MetricValue>;

/// An evaluation metric over generated text.
pub trait Metric: Send {
    /// Computes the metric over a whole split's generations.
    fn compute(&mut self, batch: TextBatch<'_>) -> Result<MetricOutput, PluginError>;

    /// Computes the metric with the policy under training at hand (TRIL hands its model
    /// to every metric). Metrics that score text with the policy (`causal_perplexity`)
    /// override this; the others ignore the policy.
    fn compute_with_policy(
        &mut self,
        batch: TextBatch<'_>,
        policy: &dyn PolicyLm,
    ) -> Result<MetricOutput, PluginError> {
        let _ = policy;
        self.compute(batch)
    }
}

/// The policy under training as a metric sees it: a causal LM over token ids, without
/// its backend.
pub trait PolicyLm {
    /// Token ids of `text` under the policy's tokenizer (no special tokens added).
    fn encode(&self, text: &str) -> Result<Vec<u32>, PluginError>;
    /// `log p(ids[t] | ids[..t])` for `t = 1..ids.len()` (so `ids.len() - 1` values).
    fn token_logprobs(&self, ids: &[u32]) -> Result<Vec<f64>, PluginError>;
    /// The longest sequence the model takes (GPT-2's `n_positions`).
    fn context_len(&self) -> usize;
}

/// Where and how a run executes, handed to an algorithm.
#[derive(Debug, Clone)]
pub struct RunCtx<'a> {
    /// The resolved config.
    pub config: &'a Config,
    /// The run directory (already created, `config.resolved.yaml` written).
    pub run_dir: PathBuf,
    /// A run directory to resume from, if `--resume` was given.
    pub resume_from: Option<PathBuf>,
    /// No progress bars.
    pub quiet: bool,
}

/// A training algorithm: owns its models and loop, reads its typed config.
pub trait Algorithm {
    /// Runs training to the end (or to an error), writing into `ctx.run_dir`.
    fn run(self: Box<Self>, ctx: &RunCtx<'_>) -> Result<(), PluginError>;
}

/// A KL-penalty coefficient controller (TRIL's `KLRegistry`).
pub trait KlController: Send {
    /// The current coefficient.
    fn coeff(&self) -> f64;
    /// Updates the coefficient from the mean per-trajectory KL of one iteration over
    /// `n_steps` sequences (the iteration's trajectory count, not its tokens).
    fn step(&mut self, kl: f64, n_steps: usize);
    /// The state to checkpoint (the coefficient and anything else it keeps).
    fn state(&self) -> Vec<f64>;
    /// Restores a checkpointed state.
    fn load_state(&mut self, state: &[f64]) -> Result<(), PluginError>;
}

/// A learning-rate schedule: the factor applied to the base learning rate after `step`
/// scheduler steps (TRIL steps the scheduler once per iteration). Pure, so resuming
/// needs only the step count.
pub trait LrSchedule: Send + Sync + std::fmt::Debug {
    /// Multiplier of the base learning rate after `step` steps.
    fn factor(&self, step: u64) -> f64;
}

/// The optimizer families tril implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with L2 weight decay added to the gradient (torch `Adam`).
    Adam,
    /// Adam with decoupled weight decay (torch `AdamW`).
    AdamW,
}

/// A fully specified optimizer: what an algorithm needs to build one on its backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerSpec {
    /// The family.
    pub kind: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// First and second moment decay rates.
    pub betas: (f64, f64),
    /// Denominator epsilon.
    pub eps: f64,
    /// Weight decay (decoupled for AdamW).
    pub weight_decay: f64,
    /// Parameter-name substrings that get no weight decay (TRIL: biases and LayerNorm).
    pub no_decay: Vec<String>,
}

/// What kind of language model a policy wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// Decoder-only (GPT-2 family).
    Causal,
    /// Encoder-decoder (T5 family).
    Seq2seq,
}

/// How the value function shares parameters with the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriticLayout {
    /// A separate full copy of the model with a value head (TRIL's `actor_critic`).
    Separate,
    /// One trunk with an LM head and a value head.
    SharedTrunk,
}

/// A fully specified policy: which models to load and how they are wired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySpec {
    /// Model type.
    pub model_type: ModelType,
    /// Hub id or local directory of the policy weights (or a built-in preset).
    pub model_name: String,
    /// Whether a frozen reference copy is kept for the KL penalty.
    pub create_reference: bool,
    /// Critic layout.
    pub critic: CriticLayout,
    /// An MLP value head instead of a single linear layer.
    pub mlp_head: bool,
    /// Maximum prompt length in tokens.
    pub max_prompt_len: usize,
    /// Maximum generated tokens.
    pub max_gen_len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    struct PromptsOnly;

    impl Task for PromptsOnly {
        fn samples(&self, _split: Split) -> Result<Vec<Sample>, PluginError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn offline_data_defaults_refuse_with_what_is_missing() {
        let err = PromptsOnly.preference_pairs(Split::Train).unwrap_err().to_string();
        assert!(err.contains("has no preference pairs") && err.contains("`synthetic_preference`"), "{err}");
        assert!(PromptsOnly.unpaired(Split::Val).unwrap_err().to_string().contains("no unpaired preference data"));
        assert!(PromptsOnly.labelled_texts(Split::Test).unwrap_err().to_string().contains("no labelled texts"));
        assert!(PromptsOnly.label_names().is_empty());
    }
}
