//! How much memory a training step needs: weights, gradients, optimizer state and the
//! activations kept for the backward pass, for a DPO step and a PPO iteration, in f32 or bf16,
//! with or without LoRA. `tril memory` prints these numbers; the README's table of the largest
//! model that fits a device comes from [`largest_fitting`].
//!
//! Conventions (stated so the numbers can be checked):
//! - Every tensor is held in the run's float type (`precision`: 4 bytes for f32, 2 for bf16),
//!   as tril's dispatch fixes one float type per backend; AdamW keeps two moments per trainable
//!   parameter in that type. Log-softmax over the vocabulary is computed in f32 (4 bytes).
//! - Activations of one block kept for backward, after Korthikanti et al. 2022 ("Reducing
//!   Activation Recomputation in Large Transformer Models", eq. 1, no recomputation):
//!   `s * b * d * (34 + 5 * h * s / d)` bytes at 2 bytes a value, scaled by `bytes / 2`;
//!   plus the LM head's logits, their log-softmax and its gradient at the scored positions:
//!   `3 * b * s * V * 4` bytes.
//! - DPO step (TRL): a micro-batch of `b` pairs is `2b` sequences of `s` tokens through the
//!   policy (training); the reference (frozen) adds its weights (none with LoRA: the frozen base
//!   is the reference) and a no-grad forward whose logits at the scored positions are kept
//!   (`2b * s * V * 4` bytes).
//! - PPO iteration (TRIL): policy, reference, and a separate critic with the policy's shape
//!   (TRIL's `LMCritic`); the policy and the critic train (with LoRA: their adapters only, and
//!   the reference is again the frozen base). Generation keeps a KV cache of
//!   `2 * L * H_kv * hd * (prompt + gen) * trajectories` values; the update trains on
//!   minibatches of `b` sequences of `prompt + gen` tokens.
//! - Not counted: the allocator's slack, the CUDA context (~0.5 GiB), the reward model and
//!   data. Treat a fit within 10% of the budget as a maybe.

/// The shape of a model, enough to size its training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelShape {
    /// Display name (e.g. `Llama-3.1-8B`).
    pub name: &'static str,
    /// HF `model_type`.
    pub family: &'static str,
    /// Parameters (the model card's count).
    pub params: f64,
    /// Width of the hidden state.
    pub d_model: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention; `n_head` without it).
    pub n_kv_head: usize,
    /// Vocabulary.
    pub vocab: usize,
}

impl ModelShape {
    /// Parameters of LoRA adapters of rank `r` on PEFT's default target modules of the family
    /// (gpt2 `c_attn`; gpt_neox `query_key_value`; llama/qwen2/mistral `q_proj`, `v_proj`).
    pub fn lora_params(&self, r: usize) -> f64 {
        let (d, l, r) = (self.d_model as f64, self.n_layer as f64, r as f64);
        let hd = d / self.n_head as f64;
        let kv = self.n_kv_head as f64 * hd;
        let per_layer = match self.family {
            "gpt2" | "gpt_neox" => r * (d + 3.0 * d),
            _ => r * (d + d) + r * (d + kv),
        };
        l * per_layer
    }
}

/// Float type of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 4 bytes a value.
    F32,
    /// 2 bytes a value.
    Bf16,
}

impl Precision {
    /// Bytes of one value.
    pub fn bytes(self) -> f64 {
        match self {
            Precision::F32 => 4.0,
            Precision::Bf16 => 2.0,
        }
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One DPO step on `batch` pairs of `seq` tokens each side.
    Dpo {
        /// Pairs in the micro-batch.
        batch: usize,
        /// Tokens of prompt + completion.
        seq: usize,
    },
    /// One PPO iteration.
    Ppo {
        /// Trajectories generated per iteration.
        trajectories: usize,
        /// Prompt tokens.
        prompt: usize,
        /// Generated tokens.
        gen: usize,
        /// Sequences per update minibatch.
        minibatch: usize,
    },
}

impl Workload {
    /// The DPO step the README sizes: one pair of 512 tokens per micro-batch (gradient
    /// accumulation reaches the effective batch).
    pub const DPO: Workload = Workload::Dpo { batch: 1, seq: 512 };
    /// TRIL's IMDB PPO iteration: 112 trajectories, prompt 64, 48 new tokens, minibatch 28.
    pub const PPO_IMDB: Workload = Workload::Ppo { trajectories: 112, prompt: 64, gen: 48, minibatch: 28 };
}

/// Bytes by kind.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Breakdown {
    /// Weights of every model held (policy, reference, critic).
    pub weights: f64,
    /// Gradients of the trainable parameters.
    pub grads: f64,
    /// AdamW's two moments.
    pub optimizer: f64,
    /// Activations kept for backward, logits, KV cache.
    pub activations: f64,
}

impl Breakdown {
    /// The sum.
    pub fn total(&self) -> f64 {
        self.weights + self.grads + self.optimizer + self.activations
    }
}

/// Activations of a training forward over `b` sequences of `s` tokens (see the module docs).
fn train_activations(m: &ModelShape, b: f64, s: f64, bytes: f64) -> f64 {
    let (d, h, l) = (m.d_model as f64, m.n_head as f64, m.n_layer as f64);
    let blocks = l * s * b * d * (34.0 + 5.0 * h * s / d) * bytes / 2.0;
    blocks + 3.0 * b * s * m.vocab as f64 * 4.0
}

/// Memory of one `workload` step of model `m` in `precision`, with LoRA of rank `lora_r`.
pub fn estimate(m: &ModelShape, workload: Workload, precision: Precision, lora_r: Option<usize>) -> Breakdown {
    let bytes = precision.bytes();
    let p = m.params;
    let trainable = lora_r.map_or(p, |r| m.lora_params(r));
    let adapters = lora_r.map_or(0.0, |r| m.lora_params(r));
    // Weights of the policy (+ adapters) and, without LoRA, of a separate reference.
    let policy_and_ref = match lora_r {
        Some(_) => p + adapters,
        None => 2.0 * p,
    };
    match workload {
        Workload::Dpo { batch, seq } => {
            let (b, s) = (2.0 * batch as f64, seq as f64);
            Breakdown {
                weights: policy_and_ref * bytes,
                grads: trainable * bytes,
                optimizer: 2.0 * trainable * bytes,
                activations: train_activations(m, b, s, bytes) + b * s * m.vocab as f64 * 4.0,
            }
        }
        Workload::Ppo { trajectories, prompt, gen, minibatch } => {
            let s = (prompt + gen) as f64;
            let hd = m.d_model as f64 / m.n_head as f64;
            let kv = 2.0 * m.n_layer as f64 * m.n_kv_head as f64 * hd * s * trajectories as f64 * bytes;
            // The critic: a full trunk (its LM head aside, counted anyway) that trains, or
            // with LoRA, the shared frozen base plus its own adapters.
            let (critic_weights, critic_trainable) = match lora_r {
                Some(_) => (adapters, adapters),
                None => (p, p),
            };
            let train = train_activations(m, minibatch as f64, s, bytes);
            Breakdown {
                weights: (policy_and_ref + critic_weights) * bytes,
                grads: (trainable + critic_trainable) * bytes,
                optimizer: 2.0 * (trainable + critic_trainable) * bytes,
                // Generation and the update do not overlap: the larger of the two is live.
                activations: kv.max(2.0 * train),
            }
        }
    }
}

/// Released sizes of the families tril loads (model cards' parameter counts and configs).
pub const KNOWN_MODELS: &[ModelShape] = &[
    shape("GPT-2", "gpt2", 124e6, 768, 12, 12, 12, 50257),
    shape("GPT-2 medium", "gpt2", 355e6, 1024, 24, 16, 16, 50257),
    shape("GPT-2 large", "gpt2", 774e6, 1280, 36, 20, 20, 50257),
    shape("GPT-2 XL", "gpt2", 1.558e9, 1600, 48, 25, 25, 50257),
    shape("Pythia-410m", "gpt_neox", 405e6, 1024, 24, 16, 16, 50304),
    shape("Pythia-1.4b", "gpt_neox", 1.415e9, 2048, 24, 16, 16, 50304),
    shape("Pythia-2.8b", "gpt_neox", 2.775e9, 2560, 32, 32, 32, 50304),
    shape("Pythia-6.9b", "gpt_neox", 6.857e9, 4096, 32, 32, 32, 50432),
    shape("Pythia-12b", "gpt_neox", 11.85e9, 5120, 36, 40, 40, 50688),
    shape("Llama-3.2-1B", "llama", 1.236e9, 2048, 16, 32, 8, 128256),
    shape("Llama-3.2-3B", "llama", 3.213e9, 3072, 28, 24, 8, 128256),
    shape("Llama-3.1-8B", "llama", 8.030e9, 4096, 32, 32, 8, 128256),
    shape("Llama-3.1-70B", "llama", 70.55e9, 8192, 80, 64, 8, 128256),
    shape("Salamandra-2B", "llama", 2.253e9, 2048, 24, 16, 16, 256000),
    shape("Salamandra-7B", "llama", 7.768e9, 4096, 32, 32, 8, 256000),
    shape("Qwen2.5-0.5B", "qwen2", 0.494e9, 896, 24, 14, 2, 151936),
    shape("Qwen2.5-1.5B", "qwen2", 1.544e9, 1536, 28, 12, 2, 151936),
    shape("Qwen2.5-3B", "qwen2", 3.086e9, 2048, 36, 16, 2, 151936),
    shape("Qwen2.5-7B", "qwen2", 7.616e9, 3584, 28, 28, 4, 152064),
    shape("Qwen2.5-14B", "qwen2", 14.77e9, 5120, 48, 40, 8, 152064),
    shape("Qwen2.5-32B", "qwen2", 32.76e9, 5120, 64, 40, 8, 152064),
    shape("Mistral-7B-v0.3", "mistral", 7.248e9, 4096, 32, 32, 8, 32768),
];

#[allow(clippy::too_many_arguments)]
const fn shape(
    name: &'static str,
    family: &'static str,
    params: f64,
    d_model: usize,
    n_layer: usize,
    n_head: usize,
    n_kv_head: usize,
    vocab: usize,
) -> ModelShape {
    ModelShape { name, family, params, d_model, n_layer, n_head, n_kv_head, vocab }
}

/// The largest of `models` (by parameters) whose `workload` fits in `budget` bytes.
pub fn largest_fitting<'a>(
    models: impl IntoIterator<Item = &'a ModelShape>,
    workload: Workload,
    precision: Precision,
    lora_r: Option<usize>,
    budget: f64,
) -> Option<&'a ModelShape> {
    models
        .into_iter()
        .filter(|m| estimate(m, workload, precision, lora_r).total() <= budget)
        .max_by(|a, b| a.params.total_cmp(&b.params))
}

/// 80 GB (an A100/H100 80GB: 80 * 10^9 bytes).
pub const GPU_80GB: f64 = 80e9;
/// 24 GiB (the CI machine).
pub const CPU_24GIB: f64 = 24.0 * (1u64 << 30) as f64;

#[cfg(test)]
mod tests {
    use super::*;

    /// The LoRA counts equal PEFT's `print_trainable_parameters` for the model cards
    /// (Llama-3.1-8B, r 8, q/v: 3,407,872; GPT-2, r 8, c_attn: 294,912).
    #[test]
    fn lora_counts_equal_peft() {
        let llama = KNOWN_MODELS.iter().find(|m| m.name == "Llama-3.1-8B").unwrap();
        assert_eq!(llama.lora_params(8), 3_407_872.0);
        assert_eq!(KNOWN_MODELS[0].lora_params(8), 294_912.0);
    }

    /// Full fine-tuning of an 8B model in f32 needs 16 bytes a parameter for weights, grads and
    /// moments plus the reference: more than 80 GB; with LoRA in bf16 it fits.
    #[test]
    fn budgets_order_as_expected() {
        let m = KNOWN_MODELS.iter().find(|m| m.name == "Llama-3.1-8B").unwrap();
        let full = estimate(m, Workload::DPO, Precision::F32, None);
        assert_eq!(full.weights, 2.0 * m.params * 4.0);
        assert_eq!(full.optimizer, 2.0 * m.params * 4.0);
        assert!(full.total() > GPU_80GB);
        let lora = estimate(m, Workload::DPO, Precision::Bf16, Some(8));
        assert!(lora.total() < GPU_80GB && lora.total() < full.total() / 4.0, "{lora:?}");
        let small = largest_fitting(KNOWN_MODELS, Workload::DPO, Precision::F32, None, CPU_24GIB).unwrap();
        let big = largest_fitting(KNOWN_MODELS, Workload::DPO, Precision::Bf16, Some(8), GPU_80GB).unwrap();
        assert!(small.params < big.params, "{} vs {}", small.name, big.name);
        let ppo = estimate(m, Workload::PPO_IMDB, Precision::Bf16, None);
        assert!(ppo.weights > full.weights / 2.0 * 1.4, "the critic adds a trunk: {ppo:?}");
    }
}
