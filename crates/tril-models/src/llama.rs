//! The Llama family of causal language models — HF `LlamaForCausalLM`, `Qwen2ForCausalLM` and
//! `MistralForCausalLM` — and their `*ForSequenceClassification` heads, generic over the Burn
//! backend.
//!
//! One architecture covers the three: pre-RMSNorm blocks, rotary position embeddings (HF's
//! `rotate_half` convention, optional `llama3` frequency scaling), grouped-query attention
//! ([`attend`] repeats the key/value heads) and a SwiGLU MLP. They differ only in which linears
//! carry a bias and in Mistral's / Qwen2's sliding window, which [`LlamaConfig`] records
//! ([`LlamaFamily`], `attention_bias`, `mlp_bias`, `sliding_window`, `max_window_layers`).
//!
//! The module tree mirrors HF's names: [`LlamaModel`] is `LlamaForCausalLM` with `model`
//! ([`LlamaTrunk`]: `embed_tokens`, `layers[i].{input_layernorm, self_attn.{q,k,v,o}_proj,
//! post_attention_layernorm, mlp.{gate,up,down}_proj}`, `norm`) and `lm_head` (`None` when tied
//! to `embed_tokens`). Its methods are those of [`crate::gpt2::Gpt2Model`], with the same
//! semantics: positions from the attention mask as HF `generate` derives them (left padding),
//! RoPE applied at those positions, padded keys and future keys masked, the shared [`KvCache`].
//! There is no dropout (TRIL runs its models in eval mode).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};

use crate::lora::{LoraLinear, LoraTargets};
use burn::tensor::backend::Backend;
use burn::tensor::{activation, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::heads::{ScoreHead, ScoreHeadConfig};
use crate::lm::{
    attend, attention_bias, linear3, position_ids_from_mask, KvCache, LayerCache, LmHidden, LmInput, MASK_BIAS,
};

/// Which HF architecture a [`LlamaConfig`] describes (HF `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LlamaFamily {
    /// `llama`: q/k/v/o biases iff `attention_bias`, MLP biases iff `mlp_bias`.
    Llama,
    /// `qwen2`: q/k/v always have biases, o_proj and the MLP never; optional sliding window
    /// on the layers from `max_window_layers` on.
    Qwen2,
    /// `mistral`: no biases; a sliding window on every layer when `sliding_window` is set.
    Mistral,
}

impl LlamaFamily {
    /// Parse an HF `model_type`.
    pub fn from_model_type(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(LlamaFamily::Llama),
            "qwen2" => Some(LlamaFamily::Qwen2),
            "mistral" => Some(LlamaFamily::Mistral),
            _ => None,
        }
    }

    /// The HF `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            LlamaFamily::Llama => "llama",
            LlamaFamily::Qwen2 => "qwen2",
            LlamaFamily::Mistral => "mistral",
        }
    }

    /// The HF class name prefix (`Llama`, `Qwen2`, `Mistral`).
    pub fn class_prefix(self) -> &'static str {
        match self {
            LlamaFamily::Llama => "Llama",
            LlamaFamily::Qwen2 => "Qwen2",
            LlamaFamily::Mistral => "Mistral",
        }
    }
}

/// `rope_type: "llama3"` frequency scaling (Llama 3.1+), as HF `_compute_llama3_parameters`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    /// Divisor of the low frequencies (`8` for Llama 3.1).
    pub factor: f64,
    /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are divided by `factor`.
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// Context length of pre-training (`8192` for Llama 3.1).
    pub original_max_position_embeddings: usize,
}

/// Hyper-parameters of a Llama-family model (the fields of HF's `LlamaConfig`, `Qwen2Config`
/// and `MistralConfig` that change the computation).
#[derive(Config, Debug)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Which architecture (biases, sliding window, names written to `config.json`).
    #[config(default = "LlamaFamily::Llama")]
    pub family: LlamaFamily,
    /// Number of key/value heads (grouped-query attention); `None` means `num_attention_heads`.
    #[config(default = "None")]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; `None` means `hidden_size / num_attention_heads`.
    #[config(default = "None")]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[config(default = 1e-6)]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// `llama3` RoPE scaling, or `None` for plain RoPE.
    #[config(default = "None")]
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Longest sequence the model was trained for (RoPE itself has no table to overflow).
    #[config(default = 2048)]
    pub max_position_embeddings: usize,
    /// Whether the LM head is `embed_tokens` (no `lm_head` tensor).
    #[config(default = false)]
    pub tie_word_embeddings: bool,
    /// Llama only: biases on q/k/v/o projections.
    #[config(default = false)]
    pub attention_bias: bool,
    /// Llama only: biases on the MLP projections.
    #[config(default = false)]
    pub mlp_bias: bool,
    /// Keys `sliding_window` or more positions back are masked on the sliding layers.
    #[config(default = "None")]
    pub sliding_window: Option<usize>,
    /// With a sliding window: layers `0..max_window_layers` attend to everything (Qwen2; 0 for Mistral).
    #[config(default = 0)]
    pub max_window_layers: usize,
    /// Beginning-of-sequence id (written back to `config.json`).
    #[config(default = "None")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id (written back to `config.json`).
    #[config(default = "None")]
    pub eos_token_id: Option<u32>,
    /// Padding id (sequence classifiers pool at the last token that is not this).
    #[config(default = "None")]
    pub pad_token_id: Option<u32>,
}

impl LlamaConfig {
    /// A tiny Llama for tests and CPU benchmarks: 2 layers, 4 query / 2 key-value heads, width 64,
    /// MLP 128, vocab 512, 256 positions.
    pub fn tiny() -> Self {
        Self::new(512, 64, 128, 2, 4).with_num_key_value_heads(Some(2)).with_max_position_embeddings(256)
    }

    /// `meta-llama/Llama-3.2-1B` (1.24 B parameters, tied head, `llama3` RoPE scaling).
    pub fn llama3_2_1b() -> Self {
        let scaling = Llama3RopeScaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        Self::new(128256, 2048, 8192, 16, 32)
            .with_num_key_value_heads(Some(8))
            .with_head_dim(Some(64))
            .with_rms_norm_eps(1e-5)
            .with_rope_theta(500000.0)
            .with_rope_scaling(Some(scaling))
            .with_max_position_embeddings(131072)
            .with_tie_word_embeddings(true)
            .with_bos_token_id(Some(128000))
            .with_eos_token_id(Some(128001))
    }

    /// `Qwen/Qwen2.5-0.5B` (494 M parameters, tied head, q/k/v biases).
    pub fn qwen2_5_0_5b() -> Self {
        Self::new(151936, 896, 4864, 24, 14)
            .with_family(LlamaFamily::Qwen2)
            .with_num_key_value_heads(Some(2))
            .with_rope_theta(1000000.0)
            .with_max_position_embeddings(32768)
            .with_tie_word_embeddings(true)
            .with_bos_token_id(Some(151643))
            .with_eos_token_id(Some(151643))
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Number of key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Whether q/k/v projections have biases.
    pub fn qkv_bias(&self) -> bool {
        match self.family {
            LlamaFamily::Llama => self.attention_bias,
            LlamaFamily::Qwen2 => true,
            LlamaFamily::Mistral => false,
        }
    }

    /// Whether `o_proj` has a bias.
    pub fn o_bias(&self) -> bool {
        self.family == LlamaFamily::Llama && self.attention_bias
    }

    /// Whether the MLP projections have biases.
    pub fn mlp_has_bias(&self) -> bool {
        self.family == LlamaFamily::Llama && self.mlp_bias
    }

    /// The sliding window of layer `i`, if it has one.
    pub fn layer_window(&self, i: usize) -> Option<usize> {
        self.sliding_window.filter(|_| i >= self.max_window_layers)
    }

    /// Check the values `init` and the forward pass rely on; errors name the key, the value and
    /// `file` (the config they came from, or `<in memory>`).
    pub fn validate(&self, file: &std::path::Path) -> Result<()> {
        let bad = |key: &str, value: String, reason: &str| ModelError::InvalidConfigValue {
            file: file.to_path_buf(),
            key: key.to_string(),
            value,
            reason: reason.to_string(),
        };
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
        ] {
            if v == 0 {
                return Err(bad(key, v.to_string(), "must be positive"));
            }
        }
        let (h, kv, hd) = (self.num_attention_heads, self.kv_heads(), self.head_dim());
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(h) {
            return Err(bad(
                "num_attention_heads",
                h.to_string(),
                &format!("must divide hidden_size = {}", self.hidden_size),
            ));
        }
        if hd == 0 || !hd.is_multiple_of(2) {
            return Err(bad("head_dim", hd.to_string(), "must be positive and even (RoPE rotates pairs)"));
        }
        if kv == 0 || !h.is_multiple_of(kv) {
            return Err(bad("num_key_value_heads", kv.to_string(), &format!("must divide num_attention_heads = {h}")));
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.rms_norm_eps) {
            return Err(bad("rms_norm_eps", self.rms_norm_eps.to_string(), "must be a positive number"));
        }
        if !positive(self.rope_theta) {
            return Err(bad("rope_theta", self.rope_theta.to_string(), "must be a positive number"));
        }
        if let Some(s) = &self.rope_scaling {
            for (key, v) in [("factor", s.factor), ("low_freq_factor", s.low_freq_factor)] {
                if !positive(v) {
                    return Err(bad(&format!("rope_scaling.{key}"), v.to_string(), "must be a positive number"));
                }
            }
            if !(s.high_freq_factor.is_finite() && s.high_freq_factor > s.low_freq_factor) {
                let reason = format!("must be above low_freq_factor = {}", s.low_freq_factor);
                return Err(bad("rope_scaling.high_freq_factor", s.high_freq_factor.to_string(), &reason));
            }
            if s.original_max_position_embeddings == 0 {
                return Err(bad("rope_scaling.original_max_position_embeddings", "0".into(), "must be positive"));
            }
        }
        if self.sliding_window == Some(0) {
            return Err(bad("sliding_window", "0".into(), "must be positive (or null for no window)"));
        }
        Ok(())
    }

    /// RoPE inverse frequencies, `[head_dim / 2]`, computed in f32 in the order of HF's
    /// `_compute_default_rope_parameters` / `_compute_llama3_parameters` so that they match
    /// transformers' float32 values.
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim();
        let base = self.rope_theta as f32;
        let inv: Vec<f32> = (0..dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / dim as f32)).collect();
        let Some(s) = &self.rope_scaling else { return inv };
        let old = s.original_max_position_embeddings as f32;
        let factor = s.factor as f32;
        let low_wavelen = (s.original_max_position_embeddings as f64 / s.low_freq_factor) as f32;
        let high_wavelen = (s.original_max_position_embeddings as f64 / s.high_freq_factor) as f32;
        let (low, span) = (s.low_freq_factor as f32, (s.high_freq_factor - s.low_freq_factor) as f32);
        inv.into_iter()
            .map(|f| {
                let wavelen = (2.0 * std::f64::consts::PI) as f32 / f;
                let scaled = if wavelen > low_wavelen { f / factor } else { f };
                if wavelen < high_wavelen || wavelen > low_wavelen {
                    return scaled;
                }
                let smooth = (old / wavelen - low) / span;
                (1.0 - smooth) * scaled / factor + smooth * scaled
            })
            .collect()
    }

    /// Build the trunk (HF `LlamaModel`) with random weights (lazily initialised, so building a
    /// model only to load weights into it costs nothing). Call [`LlamaConfig::validate`] on a
    /// hand-made config first: Burn panics on a non-positive `rms_norm_eps`.
    pub fn init_trunk<B: Backend>(&self, device: &B::Device) -> LlamaTrunk<B> {
        let (d, hd, h, kv, i) =
            (self.hidden_size, self.head_dim(), self.num_attention_heads, self.kv_heads(), self.intermediate_size);
        let norm = || RmsNormConfig::new(d).with_epsilon(self.rms_norm_eps).init(device);
        let lin =
            |i: usize, o: usize, bias: bool| LoraLinear::from(LinearConfig::new(i, o).with_bias(bias).init(device));
        let layer = |l: usize| LlamaDecoderLayer {
            input_layernorm: norm(),
            self_attn: LlamaAttention {
                q_proj: lin(d, h * hd, self.qkv_bias()),
                k_proj: lin(d, kv * hd, self.qkv_bias()),
                v_proj: lin(d, kv * hd, self.qkv_bias()),
                o_proj: lin(h * hd, d, self.o_bias()),
                n_head: h,
                n_kv_head: kv,
                head_dim: hd,
            },
            post_attention_layernorm: norm(),
            mlp: LlamaMlp {
                gate_proj: lin(d, i, self.mlp_has_bias()),
                up_proj: lin(d, i, self.mlp_has_bias()),
                down_proj: lin(i, d, self.mlp_has_bias()),
            },
            sliding_window: self.layer_window(l),
        };
        LlamaTrunk {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, d).init(device),
            layers: (0..self.num_hidden_layers).map(layer).collect(),
            norm: norm(),
            inv_freq: self.inv_freq(),
            max_position_embeddings: self.max_position_embeddings,
        }
    }

    /// Build a randomly initialised causal LM (see [`LlamaConfig::init_trunk`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> LlamaModel<B> {
        let lm_head = (!self.tie_word_embeddings)
            .then(|| LinearConfig::new(self.hidden_size, self.vocab_size).with_bias(false).init(device));
        LlamaModel { model: self.init_trunk(device), lm_head, family: self.family }
    }

    /// Build a randomly initialised sequence classifier with `num_labels` labels.
    pub fn init_classifier<B: Backend>(&self, num_labels: usize, device: &B::Device) -> LlamaClassifier<B> {
        LlamaClassifier {
            model: self.init_trunk(device),
            score: ScoreHeadConfig::new(self.hidden_size, num_labels).init(device),
            pad_token_id: self.pad_token_id,
        }
    }
}

/// Rotate `x` by the position angles (HF `apply_rotary_pos_emb` with `rotate_half`:
/// `x * cos + cat(-x2, x1) * sin`, where `x1`, `x2` are the two halves of the head).
///
/// # Shapes
/// - x: `[B, H, T, hd]`; cos, sin: `[B, 1, T, hd]` -> `[B, H, T, hd]`
pub fn apply_rope<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
    let half = x.dims()[3] / 2;
    let rotated = Tensor::cat(vec![x.clone().narrow(3, half, half).neg(), x.clone().narrow(3, 0, half)], 3);
    x * cos + rotated * sin
}

/// Cosines and sines of the RoPE angles `position * inv_freq` (HF `LlamaRotaryEmbedding`).
///
/// # Shapes
/// - positions: `[B, T]`, inv_freq: `[hd / 2]` -> (cos, sin), `[B, 1, T, hd]` each
pub fn rope_angles<B: Backend>(positions: Tensor<B, 2, Int>, inv_freq: &[f32]) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [b, t] = positions.dims();
    let half = inv_freq.len();
    let device = positions.device();
    let inv = Tensor::<B, 1>::from_data(TensorData::new(inv_freq.to_vec(), [half]), &device).reshape([1, 1, half]);
    let freqs = positions.float().reshape([b, t, 1]) * inv; // [B, T, hd/2]
    let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([b, 1, t, 2 * half]); // [B, 1, T, hd]
    (emb.clone().cos(), emb.sin())
}

/// Add the sliding-window mask to an attention bias: the query at absolute index `q` (cached
/// positions count) does not see keys `k` with `q - k >= window` (transformers'
/// `sliding_window_overlay`: `kv_idx > q_idx - sliding_window` is kept). Indices are slots of
/// the padded sequence, as in transformers, not real-token positions.
///
/// # Shapes
/// - bias: `[B or 1, 1, T, past + T]` or `None` -> the same (or `[1, 1, T, past + T]`);
///   unchanged when no key is that far back
pub fn sliding_window_bias<B: Backend>(
    bias: Option<Tensor<B, 4>>,
    q_len: usize,
    past: usize,
    window: usize,
    device: &B::Device,
) -> Option<Tensor<B, 4>> {
    let k_len = past + q_len;
    if k_len <= window {
        return bias;
    }
    let q = Tensor::<B, 1, Int>::arange(past as i64..k_len as i64, device).reshape([q_len, 1]).repeat_dim(1, k_len);
    let k = Tensor::<B, 1, Int>::arange(0..k_len as i64, device).reshape([1, k_len]).repeat_dim(0, q_len);
    let far = (q - k).greater_equal_elem(window as i64); // [T, Tk]
    let window_bias =
        Tensor::<B, 2>::zeros([q_len, k_len], device).mask_fill(far, MASK_BIAS).reshape([1, 1, q_len, k_len]);
    Some(match bias {
        Some(b) => b + window_bias,
        None => window_bias,
    })
}

/// Grouped-query self-attention with RoPE (HF `LlamaAttention` / `Qwen2Attention` / `MistralAttention`).
#[derive(Module, Debug)]
pub struct LlamaAttention<B: Backend> {
    /// Query projection, `[D, H * hd]`.
    pub q_proj: LoraLinear<B>,
    /// Key projection, `[D, H_kv * hd]`.
    pub k_proj: LoraLinear<B>,
    /// Value projection, `[D, H_kv * hd]`.
    pub v_proj: LoraLinear<B>,
    /// Output projection, `[H * hd, D]`.
    pub o_proj: LoraLinear<B>,
    /// Number of query heads.
    pub n_head: usize,
    /// Number of key/value heads.
    pub n_kv_head: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl<B: Backend> LlamaAttention<B> {
    /// Attend over `x` (and the cached, already rotated keys/values of earlier positions).
    ///
    /// # Shapes
    /// - x: `[B, T, D]`; cos, sin: `[B, 1, T, hd]`
    /// - bias: `[B or 1, 1, T, past + T]` additive, or `None`
    /// - cache: `[B, H_kv, past, hd]` keys and values, replaced by `[B, H_kv, past + T, hd]`
    /// - output: `[B, T, D]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: (Tensor<B, 4>, Tensor<B, 4>),
        bias: Option<Tensor<B, 4>>,
        cache: Option<LayerCache<'_, B>>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let hd = self.head_dim;
        let heads = |l: &LoraLinear<B>, n: usize| l.forward3(x.clone()).reshape([b, t, n, hd]).swap_dims(1, 2);
        let (cos, sin) = rope;
        let q = apply_rope(heads(&self.q_proj, self.n_head), cos.clone(), sin.clone()); // [B, H, T, hd]
        let mut k = apply_rope(heads(&self.k_proj, self.n_kv_head), cos, sin); // [B, H_kv, T, hd]
        let mut v = heads(&self.v_proj, self.n_kv_head); // [B, H_kv, T, hd]
        if let Some(c) = cache {
            (k, v) = c.append(k, v);
        }
        let out = attend(q, k, v, bias).swap_dims(1, 2).reshape([b, t, self.n_head * hd]); // [B, T, H * hd]
        self.o_proj.forward3(out)
    }
}

/// SwiGLU MLP (HF `LlamaMLP`): `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp<B: Backend> {
    /// `[D, I]`.
    pub gate_proj: LoraLinear<B>,
    /// `[D, I]`.
    pub up_proj: LoraLinear<B>,
    /// `[I, D]`.
    pub down_proj: LoraLinear<B>,
}

impl<B: Backend> LlamaMlp<B> {
    /// # Shapes
    /// - x: `[B, T, D]` -> `[B, T, D]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = activation::silu(self.gate_proj.forward3(x.clone())); // [B, T, I]
        self.down_proj.forward3(gate * self.up_proj.forward3(x))
    }
}

/// One pre-RMSNorm decoder layer (HF `LlamaDecoderLayer`).
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer<B: Backend> {
    /// RMSNorm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Self-attention.
    pub self_attn: LlamaAttention<B>,
    /// RMSNorm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// MLP.
    pub mlp: LlamaMlp<B>,
    /// Sliding window of this layer (`None`: full causal attention).
    #[module(skip)]
    pub sliding_window: Option<usize>,
}

impl<B: Backend> LlamaDecoderLayer<B> {
    /// # Shapes
    /// - x: `[B, T, D]` -> `[B, T, D]`; rope, bias and cache as in [`LlamaAttention::forward`].
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: (Tensor<B, 4>, Tensor<B, 4>),
        bias: Option<Tensor<B, 4>>,
        cache: Option<LayerCache<'_, B>>,
    ) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), rope, bias, cache);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// The trunk without an LM head (HF `LlamaModel`, the `model.` prefix of checkpoints).
#[derive(Module, Debug)]
pub struct LlamaTrunk<B: Backend> {
    /// Token embeddings `[V, D]`.
    pub embed_tokens: Embedding<B>,
    /// Decoder layers.
    pub layers: Vec<LlamaDecoderLayer<B>>,
    /// Final RMSNorm.
    pub norm: RmsNorm<B>,
    /// RoPE inverse frequencies, `[hd / 2]` ([`LlamaConfig::inv_freq`]).
    #[module(skip)]
    pub inv_freq: Vec<f32>,
    /// Longest sequence the model was trained for.
    pub max_position_embeddings: usize,
}

impl<B: Backend> LlamaTrunk<B> {
    /// Hidden states of a forward pass (see [`LlamaModel::trunk`]).
    ///
    /// # Shapes
    /// See [`LmInput`] and [`LmHidden`].
    pub fn forward(&self, input: LmInput<B>, cache: Option<&mut KvCache<B>>) -> LmHidden<B> {
        let device = input.input_ids.device();
        let [b, t] = input.input_ids.dims();
        let past = cache.as_ref().map_or(0, |c| c.len());
        let positions = match (input.position_ids, &input.attention_mask) {
            (Some(p), _) => p,
            (None, Some(mask)) => position_ids_from_mask(mask.clone()).narrow(1, past, t),
            (None, None) => {
                Tensor::<B, 1, Int>::arange(past as i64..(past + t) as i64, &device).reshape([1, t]).repeat_dim(0, b)
            }
        }; // [B, T]
        let rope = rope_angles(positions, &self.inv_freq); // [B, 1, T, hd] each
        let bias = attention_bias(input.attention_mask, t, past, &device); // [B or 1, 1, T, past + T]
        let mut windowed: Option<(usize, Option<Tensor<B, 4>>)> = None; // (window, its bias), built once
        let mut x = self.embed_tokens.forward(input.input_ids); // [B, T, D]
        let mut states = input.output_hidden_states.then(Vec::new);
        let mut slots = cache.map(|c| c.layers_for(t).into_iter());
        for layer in &self.layers {
            if let Some(s) = states.as_mut() {
                s.push(x.clone());
            }
            let slot = slots.as_mut().and_then(|it| it.next());
            let layer_bias = match layer.sliding_window {
                None => bias.clone(),
                Some(w) => match &windowed {
                    Some((cached, b)) if *cached == w => b.clone(),
                    _ => {
                        let b = sliding_window_bias(bias.clone(), t, past, w, &device);
                        windowed = Some((w, b.clone()));
                        b
                    }
                },
            };
            x = layer.forward(x, rope.clone(), layer_bias, slot);
        }
        let x = self.norm.forward(x);
        if let Some(s) = states.as_mut() {
            s.push(x.clone());
        }
        LmHidden { last_hidden_state: x, hidden_states: states }
    }
}

/// A Llama-family causal LM (HF `LlamaForCausalLM`, `Qwen2ForCausalLM`, `MistralForCausalLM`).
#[derive(Module, Debug)]
pub struct LlamaModel<B: Backend> {
    /// The trunk.
    pub model: LlamaTrunk<B>,
    /// LM head `[D, V]` (bias-free); `None` when tied to `model.embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    /// Which HF architecture (saved as `model_type`).
    #[module(skip)]
    pub family: LlamaFamily,
}

impl<B: Backend> LlamaModel<B> {
    /// The trunk without the LM head (what a value model needs). `hidden_states` are HF's: the
    /// embeddings, each layer's output, and the last entry after the final norm.
    ///
    /// # Shapes
    /// See [`LmInput`] and [`LmHidden`].
    pub fn trunk(&self, input: LmInput<B>, cache: Option<&mut KvCache<B>>) -> LmHidden<B> {
        self.model.forward(input, cache)
    }

    /// The LM head: `lm_head(hidden)`, or `hidden @ embed_tokens^T` when tied.
    ///
    /// # Shapes
    /// - hidden: `[B, T, D]` -> `[B, T, V]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        if let Some(head) = &self.lm_head {
            return linear3(head, hidden);
        }
        let [b, t, d] = hidden.dims();
        let logits = hidden.reshape([b * t, d]).matmul(self.model.embed_tokens.weight.val().transpose()); // [B*T, V]
        let v = logits.dims()[1];
        logits.reshape([b, t, v])
    }

    /// Vocabulary size (rows of `embed_tokens`).
    pub fn vocab_size(&self) -> usize {
        self.model.embed_tokens.weight.lazy_shape().dims::<2>()[0]
    }

    /// Model width.
    pub fn d_model(&self) -> usize {
        self.model.embed_tokens.weight.lazy_shape().dims::<2>()[1]
    }

    /// Number of decoder layers.
    pub fn n_layer(&self) -> usize {
        self.model.layers.len()
    }

    /// Longest sequence the model was trained for (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.model.max_position_embeddings
    }
}

/// A Llama-family sequence classifier (HF `LlamaForSequenceClassification` and the Qwen2 /
/// Mistral ones): the trunk and a bias-free `score` linear read at the last non-pad token.
#[derive(Module, Debug)]
pub struct LlamaClassifier<B: Backend> {
    /// The trunk.
    pub model: LlamaTrunk<B>,
    /// The classification head, `[D, num_labels]`.
    pub score: ScoreHead<B>,
    /// HF pools at the rightmost token that is not `pad_token_id`; without one, at the last
    /// real token of the attention mask (HF would refuse batches larger than one).
    #[module(skip)]
    pub pad_token_id: Option<u32>,
}

impl<B: Backend> LlamaClassifier<B> {
    /// Label logits at the last non-pad token.
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[B, T]` -> logits `[B, num_labels]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Option<Tensor<B, 2, Int>>) -> Tensor<B, 2> {
        let pool = match self.pad_token_id {
            Some(pad) => Some(input_ids.clone().not_equal_elem(pad as i64).int()), // [B, T]
            None => attention_mask.clone(),
        };
        let mut input = LmInput::new(input_ids);
        input.attention_mask = attention_mask;
        self.score.forward(self.model.forward(input, None).last_hidden_state, pool)
    }
}

impl<B: Backend> crate::lm::LanguageModel<B> for LlamaModel<B> {
    fn trunk(&self, input: LmInput<B>, cache: Option<&mut KvCache<B>>) -> LmHidden<B> {
        LlamaModel::trunk(self, input, cache)
    }
    fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        LlamaModel::lm_logits(self, hidden)
    }
    fn n_layer(&self) -> usize {
        LlamaModel::n_layer(self)
    }
    fn vocab_size(&self) -> usize {
        LlamaModel::vocab_size(self)
    }
    fn max_positions(&self) -> usize {
        LlamaModel::max_positions(self)
    }
}

impl<B: Backend> LoraTargets<B> for LlamaModel<B> {
    fn lora_model_type(&self) -> &'static str {
        self.family.model_type()
    }
    fn fan_in_fan_out(&self) -> bool {
        false // torch Linear
    }
    fn projections(&self) -> Vec<(String, &LoraLinear<B>)> {
        let mut out = Vec::with_capacity(7 * self.model.layers.len());
        for (i, l) in self.model.layers.iter().enumerate() {
            let (a, m) = (&l.self_attn, &l.mlp);
            let p = |name: &str| format!("model.layers.{i}.{name}");
            out.push((p("self_attn.q_proj"), &a.q_proj));
            out.push((p("self_attn.k_proj"), &a.k_proj));
            out.push((p("self_attn.v_proj"), &a.v_proj));
            out.push((p("self_attn.o_proj"), &a.o_proj));
            out.push((p("mlp.gate_proj"), &m.gate_proj));
            out.push((p("mlp.up_proj"), &m.up_proj));
            out.push((p("mlp.down_proj"), &m.down_proj));
        }
        out
    }
    fn projections_mut(&mut self) -> Vec<(String, &mut LoraLinear<B>)> {
        let mut out = Vec::with_capacity(7 * self.model.layers.len());
        for (i, l) in self.model.layers.iter_mut().enumerate() {
            let (a, m) = (&mut l.self_attn, &mut l.mlp);
            let p = |name: &str| format!("model.layers.{i}.{name}");
            out.push((p("self_attn.q_proj"), &mut a.q_proj));
            out.push((p("self_attn.k_proj"), &mut a.k_proj));
            out.push((p("self_attn.v_proj"), &mut a.v_proj));
            out.push((p("self_attn.o_proj"), &mut a.o_proj));
            out.push((p("mlp.gate_proj"), &mut m.gate_proj));
            out.push((p("mlp.up_proj"), &mut m.up_proj));
            out.push((p("mlp.down_proj"), &mut m.down_proj));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::LanguageModel;
    use tril_core::backend::CpuBackend;

    type B = CpuBackend;

    fn ids(v: Vec<i64>, shape: [usize; 2]) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn max_diff(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn sliding_window_masks_far_keys() {
        let dev = Default::default();
        let bias = sliding_window_bias::<B>(None, 2, 3, 3, &dev).unwrap(); // queries at 3, 4; keys 0..5
        let v = bias.into_data().to_vec::<f32>().unwrap();
        let m = MASK_BIAS;
        assert_eq!(v, vec![m, 0.0, 0.0, 0.0, 0.0, m, m, 0.0, 0.0, 0.0]);
        assert!(sliding_window_bias::<B>(None, 3, 0, 3, &dev).is_none());
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let plain = LlamaConfig::new(8, 32, 8, 1, 2); // head_dim 16: wavelengths 6.3 .. 2.0e4
        let scaling = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        };
        let scaled = LlamaConfig::new(8, 32, 8, 1, 2).with_rope_scaling(Some(scaling));
        let (p, s) = (plain.inv_freq(), scaled.inv_freq());
        assert_eq!(p.len(), 8);
        assert_eq!(s[0], p[0]); // wavelength 6.3 < 64 / 4
        assert_eq!(s[7], p[7] / 8.0); // wavelength 2.0e4 > 64
        assert!(s[2] < p[2] && s[2] > p[2] / 8.0, "{} {}", s[2], p[2]); // 62.8: smoothed
    }

    /// Cached decoding equals a full forward, for full attention, GQA and a sliding window
    /// shorter than the sequence (Mistral), with left padding.
    #[test]
    fn cache_matches_full_forward() {
        let dev = Default::default();
        for cfg in [
            LlamaConfig::tiny(),
            LlamaConfig::tiny().with_family(LlamaFamily::Mistral).with_sliding_window(Some(3)),
            LlamaConfig::tiny().with_family(LlamaFamily::Qwen2).with_sliding_window(Some(2)).with_max_window_layers(1),
        ] {
            let model = cfg.init::<B>(&dev);
            let seq = ids(vec![0, 5, 9, 3, 7, 1, 2, 8, 4, 6, 11, 12, 13, 14], [2, 7]);
            let mask = ids(vec![0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [2, 7]);
            let full = model.forward(seq.clone(), Some(mask.clone())).logits; // [2, 7, V]
            let mut cache = KvCache::new(model.n_layer());
            let prefill = LmInput::new(seq.clone().narrow(1, 0, 4)).with_mask(mask.clone().narrow(1, 0, 4));
            let first = model.forward_with(prefill, Some(&mut cache)).logits;
            let d = max_diff(full.clone().narrow(1, 1, 3), first.narrow(1, 1, 3));
            // 1e-4: cached and full passes multiply differently shaped matrices (see gpt2.rs).
            assert!(d < 1e-4, "{:?} prefill: max |diff| {d}", cfg.family);
            for step in 4..7 {
                let input = LmInput::new(seq.clone().narrow(1, step, 1)).with_mask(mask.clone().narrow(1, 0, step + 1));
                let logits = model.forward_with(input, Some(&mut cache)).logits;
                let d = max_diff(full.clone().narrow(1, step, 1), logits);
                assert!(d < 1e-4, "{:?} step {step}: max |diff| {d}", cfg.family);
            }
            assert_eq!(cache.len(), 7);
        }
    }

    #[test]
    fn sliding_window_changes_far_positions_only() {
        let dev = Default::default();
        let full = LlamaConfig::tiny().init::<B>(&dev);
        let seq = ids(vec![3, 1, 4, 1, 5, 9, 2], [1, 7]);
        let a = full.forward(seq.clone(), None).logits; // materialises the lazy parameters before the clone
        let mut windowed = full.clone();
        for l in &mut windowed.model.layers {
            l.sliding_window = Some(3);
        }
        let b = windowed.forward(seq, None).logits;
        assert!(max_diff(a.clone().narrow(1, 0, 3), b.clone().narrow(1, 0, 3)) < 1e-6);
        assert!(max_diff(a.narrow(1, 3, 4), b.narrow(1, 3, 4)) > 1e-3);
    }

    #[test]
    fn classifier_pools_at_the_last_non_pad_token() {
        let dev = Default::default();
        let mut clf = LlamaConfig::tiny().with_pad_token_id(Some(0)).init_classifier::<B>(3, &dev);
        let seq = ids(vec![0, 0, 5, 9, 3, 7, 1, 2], [2, 4]);
        let mask = ids(vec![0, 0, 1, 1, 1, 1, 1, 1], [2, 4]);
        let by_pad = clf.forward(seq.clone(), Some(mask.clone())); // [2, 3]
        clf.pad_token_id = None;
        let by_mask = clf.forward(seq.clone(), Some(mask.clone()));
        assert_eq!(by_pad.dims(), [2, 3]);
        assert!((by_pad.clone() - by_mask).abs().max().into_scalar() < 1e-6);
        let hidden = clf.model.forward(LmInput::new(seq).with_mask(mask), None).last_hidden_state; // [2, 4, D]
        let last = clf.score.score.forward(hidden.narrow(1, 3, 1).reshape([2, 64])); // left padding: last slot
        assert!((by_pad - last).abs().max().into_scalar() < 1e-6);
    }

    #[test]
    fn validate_names_the_key() {
        let path = std::path::Path::new("<in memory>");
        let check = |c: LlamaConfig, key: &str| {
            let err = c.validate(path).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");
        };
        check(LlamaConfig::new(8, 30, 8, 1, 4), "num_attention_heads");
        check(LlamaConfig::new(8, 32, 8, 1, 4).with_num_key_value_heads(Some(3)), "num_key_value_heads");
        check(LlamaConfig::new(8, 32, 8, 1, 4).with_head_dim(Some(7)), "head_dim");
        check(LlamaConfig::new(8, 32, 8, 1, 4).with_rms_norm_eps(0.0), "rms_norm_eps");
        check(LlamaConfig::new(8, 32, 8, 1, 4).with_sliding_window(Some(0)), "sliding_window");
        LlamaConfig::tiny().validate(path).unwrap();
        LlamaConfig::llama3_2_1b().validate(path).unwrap();
    }
}
