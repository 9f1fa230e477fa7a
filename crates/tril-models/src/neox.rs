//! GPT-NeoX / Pythia causal language model (HF `GPTNeoXForCausalLM`) and its sequence classifier
//! (HF `GPTNeoXForSequenceClassification`), generic over the Burn backend.
//!
//! The module tree mirrors HF's names: [`NeoXModel`] is `gpt_neox` ([`NeoXTrunk`]: `embed_in`,
//! `layers[i].{input_layernorm, post_attention_layernorm, attention.{query_key_value, dense},
//! mlp.{dense_h_to_4h, dense_4h_to_h}}`, `final_layer_norm`) plus the untied LM head `embed_out`
//! (Pythia), or the transposed `embed_in` when `tie_word_embeddings` is set.
//!
//! What differs from GPT-2:
//! - The fused `query_key_value` output is viewed per head as `[H, 3, hd]` (q, k, v interleaved
//!   head by head), not `[3, H, hd]`.
//! - Rotary position embeddings on the first `rotary_ndims = hd * rotary_pct` dims of every query
//!   and key head (Pythia: a quarter), with HF's `rotate_half` convention (the rotated dims are
//!   split in two halves, not interleaved pairs); there is no position table.
//! - `use_parallel_residual` (Pythia): `x + attn(ln1(x)) + mlp(ln2(x))`; otherwise sequential,
//!   `h = x + attn(ln1(x)); h + mlp(ln2(h))`.
//!
//! Inputs, outputs, left padding and the KV cache are the shared ones of [`crate::lm`]: positions
//! come from the mask as HF `generate` derives them, and the rotary angles use those positions.
//! The methods are those of [`crate::gpt2::Gpt2Model`], with the same semantics. There is no
//! dropout (TRIL runs its models in `eval()` mode).

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{ModelError, Result};
pub use crate::gpt2::Activation;
use crate::heads::{ScoreHead, ScoreHeadConfig};
use crate::lm::{
    attend, attention_bias, linear3, position_ids_from_mask, KvCache, LanguageModel, LayerCache, LmHidden, LmInput,
};
use crate::lora::{LoraLinear, LoraTargets};

/// GPT-NeoX hyper-parameters (the fields of HF's `GPTNeoXConfig` that change the computation).
#[derive(Config, Debug)]
pub struct NeoXConfig {
    /// Vocabulary size (rows of `embed_in` and `embed_out`).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads; must divide `hidden_size`.
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Fraction of each head's dims that get rotary embeddings (HF `rotary_pct`, newer
    /// `rope_parameters.partial_rotary_factor`); `head_dim * rotary_pct` must be even.
    #[config(default = 0.25)]
    pub rotary_pct: f64,
    /// Rotary base (HF `rotary_emb_base`, newer `rope_theta`).
    #[config(default = 10000.0)]
    pub rotary_emb_base: f64,
    /// Context length the model was trained for (rotary embeddings have no table, so longer
    /// inputs run, as in HF).
    #[config(default = 2048)]
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Parallel attention and MLP (`x + attn(ln1(x)) + mlp(ln2(x))`, Pythia) or sequential.
    #[config(default = true)]
    pub use_parallel_residual: bool,
    /// MLP activation (HF `hidden_act`; Pythia uses the exact `gelu`).
    #[config(default = "Activation::Gelu")]
    pub hidden_act: Activation,
    /// LM head tied to `embed_in` (Pythia: false, with its own `embed_out`).
    #[config(default = false)]
    pub tie_word_embeddings: bool,
    /// Biases on `query_key_value` and `dense`.
    #[config(default = true)]
    pub attention_bias: bool,
    /// Beginning-of-sequence id (written back to `config.json`).
    #[config(default = "None")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id (written back to `config.json`).
    #[config(default = "None")]
    pub eos_token_id: Option<u32>,
    /// Padding id (written back to `config.json`; HF's classifier pools at the last other id).
    #[config(default = "None")]
    pub pad_token_id: Option<u32>,
}

impl NeoXConfig {
    /// A tiny Pythia-shaped model for tests: 2 layers, 4 heads of 16 (4 rotary dims), width 64,
    /// MLP 256, vocab 512, 256 positions.
    pub fn tiny() -> Self {
        Self::new(512, 64, 2, 4, 256).with_max_position_embeddings(256)
    }

    /// `EleutherAI/pythia-70m` (70 M parameters).
    pub fn pythia_70m() -> Self {
        Self::pythia(512, 6, 8)
    }

    /// `EleutherAI/pythia-160m` (162 M parameters).
    pub fn pythia_160m() -> Self {
        Self::pythia(768, 12, 12)
    }

    /// `EleutherAI/pythia-410m` (405 M parameters).
    pub fn pythia_410m() -> Self {
        Self::pythia(1024, 24, 16)
    }

    fn pythia(d: usize, layers: usize, heads: usize) -> Self {
        Self::new(50304, d, layers, heads, 4 * d).with_bos_token_id(Some(0)).with_eos_token_id(Some(0))
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Dims of each head that get rotary embeddings: `int(head_dim * rotary_pct)`, as HF.
    pub fn rotary_ndims(&self) -> usize {
        (self.head_dim() as f64 * self.rotary_pct) as usize
    }

    /// Checks the values that the model relies on; errors name the key (`file` is only used in
    /// error messages: the `config.json`, or `<in memory>`).
    pub fn validate(&self, file: &Path) -> Result<()> {
        let invalid = |key: &str, value: String, reason: String| ModelError::InvalidConfigValue {
            file: file.to_path_buf(),
            key: key.to_string(),
            value,
            reason,
        };
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
        ] {
            if v == 0 {
                return Err(invalid(key, v.to_string(), "must be positive".into()));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            let reason = format!("must divide hidden_size = {}", self.hidden_size);
            return Err(invalid("num_attention_heads", self.num_attention_heads.to_string(), reason));
        }
        if !(0.0..=1.0).contains(&self.rotary_pct) {
            return Err(invalid("rotary_pct", self.rotary_pct.to_string(), "expected a fraction in [0, 1]".into()));
        }
        if !self.rotary_ndims().is_multiple_of(2) {
            let reason = format!(
                "head_dim {} * rotary_pct gives {} rotary dims, which must be even",
                self.head_dim(),
                self.rotary_ndims()
            );
            return Err(invalid("rotary_pct", self.rotary_pct.to_string(), reason));
        }
        if !(self.rotary_emb_base.is_finite() && self.rotary_emb_base > 0.0) {
            let value = self.rotary_emb_base.to_string();
            return Err(invalid("rotary_emb_base", value, "expected a positive number".into()));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(invalid(
                "layer_norm_eps",
                self.layer_norm_eps.to_string(),
                "expected a positive number".into(),
            ));
        }
        Ok(())
    }

    /// The trunk with random weights (parameters are lazily initialised, so building a model
    /// only to load weights into it costs nothing).
    pub fn init_trunk<B: Backend>(&self, device: &B::Device) -> NeoXTrunk<B> {
        let (d, eps) = (self.hidden_size, self.layer_norm_eps);
        let layer = |_| NeoXLayer {
            input_layernorm: LayerNormConfig::new(d).with_epsilon(eps).init(device),
            post_attention_layernorm: LayerNormConfig::new(d).with_epsilon(eps).init(device),
            attention: NeoXAttention {
                query_key_value: LinearConfig::new(d, 3 * d).with_bias(self.attention_bias).init(device).into(),
                dense: LinearConfig::new(d, d).with_bias(self.attention_bias).init(device).into(),
                n_head: self.num_attention_heads,
            },
            mlp: NeoXMlp {
                dense_h_to_4h: LinearConfig::new(d, self.intermediate_size).init(device).into(),
                dense_4h_to_h: LinearConfig::new(self.intermediate_size, d).init(device).into(),
                activation: self.hidden_act,
            },
            use_parallel_residual: self.use_parallel_residual,
        };
        NeoXTrunk {
            embed_in: EmbeddingConfig::new(self.vocab_size, d).init(device),
            layers: (0..self.num_hidden_layers).map(layer).collect(),
            final_layer_norm: LayerNormConfig::new(d).with_epsilon(eps).init(device),
            rotary: Rotary { ndims: self.rotary_ndims(), base: self.rotary_emb_base },
            max_position_embeddings: self.max_position_embeddings,
        }
    }

    /// A randomly initialised LM (untied `embed_out` unless `tie_word_embeddings`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> NeoXModel<B> {
        let embed_out = (!self.tie_word_embeddings)
            .then(|| LinearConfig::new(self.hidden_size, self.vocab_size).with_bias(false).init(device));
        NeoXModel { gpt_neox: self.init_trunk(device), embed_out }
    }

    /// A randomly initialised sequence classifier with `num_labels` labels.
    pub fn init_classifier<B: Backend>(&self, num_labels: usize, device: &B::Device) -> NeoXClassifier<B> {
        NeoXClassifier {
            gpt_neox: self.init_trunk(device),
            score: ScoreHeadConfig::new(self.hidden_size, num_labels).init(device),
        }
    }
}

/// Rotary position embeddings on the first `ndims` dims of each head (HF
/// `GPTNeoXRotaryEmbedding` with `rope_type: default`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rotary {
    /// Rotated dims per head (even; 0 turns rotary off).
    pub ndims: usize,
    /// Base of the inverse frequencies.
    pub base: f64,
}

/// Cosines and sines of the rotary angles, `[B or 1, 1, T, ndims]` each.
pub type RotaryAngles<B> = (Tensor<B, 4>, Tensor<B, 4>);

impl Rotary {
    /// `cos` and `sin` of `position * inv_freq`, the frequencies repeated twice along the last
    /// dim (HF `cat((freqs, freqs))`), computed in f32 as HF does; `None` when `ndims == 0`.
    ///
    /// # Shapes
    /// - positions: `[B, T]` -> `[B, 1, T, ndims]` each
    pub fn angles<B: Backend>(&self, positions: Tensor<B, 2, Int>) -> Option<RotaryAngles<B>> {
        if self.ndims == 0 {
            return None;
        }
        let [b, t] = positions.dims();
        let half = self.ndims / 2;
        let base = self.base as f32;
        let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / base.powf((2 * i) as f32 / self.ndims as f32)).collect();
        let inv_freq = Tensor::<B, 3>::from_data(TensorData::new(inv_freq, [1, 1, half]), &positions.device());
        let freqs = positions.float().reshape([b, t, 1]) * inv_freq; // [B, T, half]
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([b, 1, t, self.ndims]); // [B, 1, T, r]
        Some((emb.clone().cos(), emb.sin()))
    }

    /// Rotate the first `ndims` dims of every head: `x * cos + rotate_half(x) * sin`, where
    /// `rotate_half([x1, x2]) = [-x2, x1]`; the other dims pass through.
    ///
    /// # Shapes
    /// - x: `[B, H, T, hd]`, cos and sin: `[B or 1, 1, T, ndims]` -> `[B, H, T, hd]`
    pub fn apply<B: Backend>(&self, x: Tensor<B, 4>, (cos, sin): &RotaryAngles<B>) -> Tensor<B, 4> {
        let hd = x.dims()[3];
        let (r, half) = (self.ndims, self.ndims / 2);
        let x_rot = x.clone().narrow(3, 0, r); // [B, H, T, r]
        let rotated = Tensor::cat(vec![x_rot.clone().narrow(3, half, half).neg(), x_rot.clone().narrow(3, 0, half)], 3);
        let embedded = x_rot * cos.clone() + rotated * sin.clone(); // [B, H, T, r]
        if r == hd {
            embedded
        } else {
            Tensor::cat(vec![embedded, x.narrow(3, r, hd - r)], 3)
        }
    }
}

/// Multi-head causal self-attention with rotary embeddings (HF `GPTNeoXAttention`).
#[derive(Module, Debug)]
pub struct NeoXAttention<B: Backend> {
    /// Fused projection `[D, 3D]` (Burn layout); output viewed as `[H, 3, hd]` per position.
    pub query_key_value: LoraLinear<B>,
    /// Output projection, `[D, D]`.
    pub dense: LoraLinear<B>,
    /// Number of heads.
    pub n_head: usize,
}

impl<B: Backend> NeoXAttention<B> {
    /// Attend over `x` (and the cached keys/values of earlier positions, which are updated).
    /// Keys are cached after rotation, as HF does.
    ///
    /// # Shapes
    /// - x: `[B, T, D]`
    /// - bias: `[B, 1, T, past + T]` additive, or `None`
    /// - rope: rotary angles `[B or 1, 1, T, r]` for the `T` new positions, or `None`
    /// - cache: `[B, H, past, hd]` keys and values, replaced by `[B, H, past + T, hd]`
    /// - output: `[B, T, D]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        bias: Option<Tensor<B, 4>>,
        rope: Option<(&Rotary, &RotaryAngles<B>)>,
        cache: Option<LayerCache<'_, B>>,
    ) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let hd = d / self.n_head;
        // [B, T, 3D] -> [B, T, H, 3hd] -> [B, H, T, 3hd]: q, k, v are thirds of each head's slice.
        let qkv = self.query_key_value.forward3(x).reshape([b, t, self.n_head, 3 * hd]).swap_dims(1, 2);
        let part = |i: usize| qkv.clone().narrow(3, i * hd, hd); // [B, H, T, hd]
        let (mut q, mut k, mut v) = (part(0), part(1), part(2));
        if let Some((rotary, angles)) = rope {
            q = rotary.apply(q, angles);
            k = rotary.apply(k, angles);
        }
        if let Some(c) = cache {
            (k, v) = c.append(k, v);
        }
        let out = attend(q, k, v, bias).swap_dims(1, 2).reshape([b, t, d]); // [B, T, D]
        self.dense.forward3(out)
    }
}

/// Position-wise MLP (HF `GPTNeoXMLP`).
#[derive(Module, Debug)]
pub struct NeoXMlp<B: Backend> {
    /// `[D, I]`.
    pub dense_h_to_4h: LoraLinear<B>,
    /// `[I, D]`.
    pub dense_4h_to_h: LoraLinear<B>,
    /// Activation between the two projections.
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> NeoXMlp<B> {
    /// # Shapes
    /// - x: `[B, T, D]` -> `[B, T, D]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.dense_4h_to_h.forward3(self.activation.apply(self.dense_h_to_4h.forward3(x)))
    }
}

/// One transformer layer (HF `GPTNeoXLayer`).
#[derive(Module, Debug)]
pub struct NeoXLayer<B: Backend> {
    /// LayerNorm before attention.
    pub input_layernorm: LayerNorm<B>,
    /// LayerNorm before the MLP.
    pub post_attention_layernorm: LayerNorm<B>,
    /// Self-attention.
    pub attention: NeoXAttention<B>,
    /// MLP.
    pub mlp: NeoXMlp<B>,
    /// Parallel (`x + attn(ln1(x)) + mlp(ln2(x))`) or sequential residual.
    #[module(skip)]
    pub use_parallel_residual: bool,
}

impl<B: Backend> NeoXLayer<B> {
    /// # Shapes
    /// - x: `[B, T, D]` -> `[B, T, D]`; bias, rope and cache as in [`NeoXAttention::forward`].
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        bias: Option<Tensor<B, 4>>,
        rope: Option<(&Rotary, &RotaryAngles<B>)>,
        cache: Option<LayerCache<'_, B>>,
    ) -> Tensor<B, 3> {
        let attn = self.attention.forward(self.input_layernorm.forward(x.clone()), bias, rope, cache);
        if self.use_parallel_residual {
            // HF sums mlp + attn + x in this order.
            self.mlp.forward(self.post_attention_layernorm.forward(x.clone())) + attn + x
        } else {
            let h = attn + x;
            self.mlp.forward(self.post_attention_layernorm.forward(h.clone())) + h
        }
    }
}

/// The GPT-NeoX trunk (HF `GPTNeoXModel`, the checkpoint's `gpt_neox.*`).
#[derive(Module, Debug)]
pub struct NeoXTrunk<B: Backend> {
    /// Token embeddings `[V, D]`.
    pub embed_in: Embedding<B>,
    /// Transformer layers.
    pub layers: Vec<NeoXLayer<B>>,
    /// Final LayerNorm.
    pub final_layer_norm: LayerNorm<B>,
    /// Rotary embeddings shared by all layers.
    #[module(skip)]
    pub rotary: Rotary,
    /// Context length the model was trained for.
    pub max_position_embeddings: usize,
}

impl<B: Backend> NeoXTrunk<B> {
    /// Run the layers (see [`NeoXModel::trunk`]).
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
        let angles = self.rotary.angles(positions); // [B, 1, T, r] each
        let rope = angles.as_ref().map(|a| (&self.rotary, a));
        let bias = attention_bias(input.attention_mask, t, past, &device);
        let mut x = self.embed_in.forward(input.input_ids); // [B, T, D]
        let mut states = input.output_hidden_states.then(Vec::new);
        let mut slots = cache.map(|c| c.layers_for(t).into_iter());
        for layer in &self.layers {
            if let Some(s) = states.as_mut() {
                s.push(x.clone());
            }
            let slot = slots.as_mut().and_then(|it| it.next());
            x = layer.forward(x, bias.clone(), rope, slot);
        }
        let x = self.final_layer_norm.forward(x);
        if let Some(s) = states.as_mut() {
            s.push(x.clone());
        }
        LmHidden { last_hidden_state: x, hidden_states: states }
    }

    /// Model width.
    pub fn d_model(&self) -> usize {
        self.embed_in.weight.lazy_shape().dims::<2>()[1]
    }
}

/// GPT-NeoX with its LM head (HF `GPTNeoXForCausalLM`).
#[derive(Module, Debug)]
pub struct NeoXModel<B: Backend> {
    /// The trunk.
    pub gpt_neox: NeoXTrunk<B>,
    /// Untied, bias-free LM head `[D, V]` (Burn layout); `None` when tied to `embed_in`.
    pub embed_out: Option<Linear<B>>,
}

impl<B: Backend> NeoXModel<B> {
    /// The trunk without the LM head (what a value model needs).
    ///
    /// # Shapes
    /// See [`LmInput`] and [`LmHidden`].
    pub fn trunk(&self, input: LmInput<B>, cache: Option<&mut KvCache<B>>) -> LmHidden<B> {
        self.gpt_neox.forward(input, cache)
    }

    /// The LM head: `hidden @ embed_out` (or `hidden @ embed_in^T` when tied).
    ///
    /// # Shapes
    /// - hidden: `[B, T, D]` -> `[B, T, V]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.embed_out {
            Some(head) => linear3(head, hidden),
            None => {
                let [b, t, d] = hidden.dims();
                let w = self.gpt_neox.embed_in.weight.val().transpose(); // [D, V]
                let logits = hidden.reshape([b * t, d]).matmul(w); // [B*T, V]
                let v = logits.dims()[1];
                logits.reshape([b, t, v])
            }
        }
    }

    /// Vocabulary size (rows of `embed_in`).
    pub fn vocab_size(&self) -> usize {
        self.gpt_neox.embed_in.weight.lazy_shape().dims::<2>()[0]
    }

    /// Model width.
    pub fn d_model(&self) -> usize {
        self.gpt_neox.d_model()
    }

    /// Number of layers.
    pub fn n_layer(&self) -> usize {
        self.gpt_neox.layers.len()
    }

    /// Context length the model was trained for (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.gpt_neox.max_position_embeddings
    }
}

/// Sequence classification read at the last real token (HF `GPTNeoXForSequenceClassification`).
#[derive(Module, Debug)]
pub struct NeoXClassifier<B: Backend> {
    /// The trunk.
    pub gpt_neox: NeoXTrunk<B>,
    /// Bias-free projection to the labels (`score`).
    pub score: ScoreHead<B>,
}

impl<B: Backend> NeoXClassifier<B> {
    /// Label logits at the last real token (the last position whose mask is 1; HF looks for the
    /// last id that is not `pad_token_id`, which is the same position when padding is exactly
    /// the masked positions). Positions come from the mask, as in [`NeoXModel::trunk`]; HF's
    /// classifier forward without `position_ids` counts left-padded rows from the first slot.
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[B, T]` -> logits `[B, num_labels]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Option<Tensor<B, 2, Int>>) -> Tensor<B, 2> {
        let mut input = LmInput::new(input_ids);
        input.attention_mask = attention_mask.clone();
        self.score.forward(self.gpt_neox.forward(input, None).last_hidden_state, attention_mask)
    }

    /// Number of labels.
    pub fn num_labels(&self) -> usize {
        self.score.score.weight.lazy_shape().dims::<2>()[1]
    }
}

impl<B: Backend> LanguageModel<B> for NeoXModel<B> {
    fn trunk(&self, input: LmInput<B>, cache: Option<&mut KvCache<B>>) -> LmHidden<B> {
        NeoXModel::trunk(self, input, cache)
    }
    fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        NeoXModel::lm_logits(self, hidden)
    }
    fn n_layer(&self) -> usize {
        NeoXModel::n_layer(self)
    }
    fn vocab_size(&self) -> usize {
        NeoXModel::vocab_size(self)
    }
    fn max_positions(&self) -> usize {
        NeoXModel::max_positions(self)
    }
}

impl<B: Backend> LoraTargets<B> for NeoXModel<B> {
    fn lora_model_type(&self) -> &'static str {
        "gpt_neox"
    }
    fn fan_in_fan_out(&self) -> bool {
        false // torch Linear
    }
    fn projections(&self) -> Vec<(String, &LoraLinear<B>)> {
        let mut out = Vec::with_capacity(4 * self.gpt_neox.layers.len());
        for (i, l) in self.gpt_neox.layers.iter().enumerate() {
            out.push((format!("gpt_neox.layers.{i}.attention.query_key_value"), &l.attention.query_key_value));
            out.push((format!("gpt_neox.layers.{i}.attention.dense"), &l.attention.dense));
            out.push((format!("gpt_neox.layers.{i}.mlp.dense_h_to_4h"), &l.mlp.dense_h_to_4h));
            out.push((format!("gpt_neox.layers.{i}.mlp.dense_4h_to_h"), &l.mlp.dense_4h_to_h));
        }
        out
    }
    fn projections_mut(&mut self) -> Vec<(String, &mut LoraLinear<B>)> {
        let mut out = Vec::with_capacity(4 * self.gpt_neox.layers.len());
        for (i, l) in self.gpt_neox.layers.iter_mut().enumerate() {
            out.push((format!("gpt_neox.layers.{i}.attention.query_key_value"), &mut l.attention.query_key_value));
            out.push((format!("gpt_neox.layers.{i}.attention.dense"), &mut l.attention.dense));
            out.push((format!("gpt_neox.layers.{i}.mlp.dense_h_to_4h"), &mut l.mlp.dense_h_to_4h));
            out.push((format!("gpt_neox.layers.{i}.mlp.dense_4h_to_h"), &mut l.mlp.dense_4h_to_h));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tril_core::backend::CpuBackend;

    type B = CpuBackend;

    fn int2(v: Vec<i64>, shape: [usize; 2]) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn max_diff(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// `rotate_half` on a single head against the formula written out by hand:
    /// ```python
    /// # transformers.models.gpt_neox.modeling_gpt_neox with hd = 6, rotary dims 4, position 3
    /// inv = 1 / 10000 ** (torch.arange(0, 4, 2).float() / 4); a = 3 * inv   # [3, 0.03]
    /// q' = [q0 c0 - q2 s0, q1 c1 - q3 s1, q2 c0 + q0 s0, q3 c1 + q1 s1, q4, q5]
    /// ```
    #[test]
    fn rotary_rotates_halves_of_the_first_dims() {
        let dev = Default::default();
        let rotary = Rotary { ndims: 4, base: 10000.0 };
        let q: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let x = Tensor::<B, 4>::from_data(TensorData::new(q.clone(), [1, 1, 1, 6]), &dev);
        let angles = rotary.angles(int2(vec![3], [1, 1])).unwrap();
        let got = rotary.apply(x, &angles).into_data().to_vec::<f32>().unwrap();
        let (a0, a1) = (3.0f32, 3.0f32 * 0.01);
        let want = [
            q[0] * a0.cos() - q[2] * a0.sin(),
            q[1] * a1.cos() - q[3] * a1.sin(),
            q[2] * a0.cos() + q[0] * a0.sin(),
            q[3] * a1.cos() + q[1] * a1.sin(),
            q[4],
            q[5],
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        assert!(Rotary { ndims: 0, base: 10000.0 }.angles(int2(vec![3], [1, 1])).is_none());
    }

    #[test]
    fn cache_matches_full_forward() {
        let dev = Default::default();
        for cfg in [NeoXConfig::tiny(), NeoXConfig::tiny().with_use_parallel_residual(false).with_rotary_pct(1.0)] {
            let model = cfg.init::<B>(&dev);
            let ids = int2(vec![5, 9, 3, 7, 1, 2, 4, 4, 8, 6, 0, 11], [2, 6]);
            let mask = int2(vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [2, 6]); // row 0 left-padded by 2
            let full = model.forward(ids.clone(), Some(mask.clone())).logits.narrow(1, 4, 2); // [2, 2, V]
            for capacity in [0, 8, 5] {
                let mut cache = KvCache::with_capacity(model.n_layer(), capacity);
                let mut step = |from: usize, len: usize| {
                    let input =
                        LmInput::new(ids.clone().narrow(1, from, len)).with_mask(mask.clone().narrow(1, 0, from + len));
                    model.forward_with(input, Some(&mut cache)).logits
                };
                step(0, 4);
                let a = step(4, 1);
                let b = step(5, 1);
                // 1e-4: the cached and the full pass multiply differently shaped matrices, which
                // the CPU backends sum in different orders (as in gpt2.rs).
                let d = max_diff(full.clone(), Tensor::cat(vec![a, b], 1));
                assert!(d < 1e-4, "capacity {capacity}: max |diff| {d}");
                assert_eq!(cache.len(), 6);
            }
        }
    }

    #[test]
    fn tied_head_is_the_embedding_and_methods_report_sizes() {
        let dev = Default::default();
        let model = NeoXConfig::tiny().with_tie_word_embeddings(true).init::<B>(&dev);
        assert!(model.embed_out.is_none());
        assert_eq!((model.vocab_size(), model.d_model(), model.n_layer(), model.max_positions()), (512, 64, 2, 256));
        let x = Tensor::<B, 3>::ones([1, 1, 64], &dev);
        let want = model.gpt_neox.embed_in.weight.val().sum_dim(1).reshape([1, 1, 512]);
        assert!(max_diff(model.lm_logits(x), want) < 1e-4);
        let out =
            model.forward_with(LmInput::new(int2(vec![1, 2, 3], [1, 3])).with_hidden_states().last_logits_only(), None);
        assert_eq!((out.logits.dims(), out.hidden_states.map(|h| h.len())), ([1, 1, 512], Some(3)));
        let span = model.span_logits(int2(vec![1, 2, 3], [1, 3]), None, 1, 2);
        let all = model.forward(int2(vec![1, 2, 3], [1, 3]), None).logits.narrow(1, 1, 2);
        assert!(max_diff(span, all) < 1e-5);
    }

    #[test]
    fn validate_names_the_key() {
        let file = Path::new("<in memory>");
        let bad = [
            (NeoXConfig::new(10, 30, 1, 4, 8), "num_attention_heads", "must divide hidden_size = 30"),
            (NeoXConfig::new(10, 24, 1, 4, 8).with_rotary_pct(0.5), "rotary_pct", "3 rotary dims, which must be even"),
            (NeoXConfig::new(10, 32, 1, 4, 8).with_rotary_pct(1.5), "rotary_pct", "fraction"),
            (NeoXConfig::new(10, 32, 1, 4, 8).with_rotary_emb_base(0.0), "rotary_emb_base", "positive"),
            (NeoXConfig::new(10, 32, 1, 4, 8).with_layer_norm_eps(f64::NAN), "layer_norm_eps", "positive"),
            (NeoXConfig::new(0, 32, 1, 4, 8), "vocab_size", "must be positive"),
        ];
        for (cfg, key, reason) in bad {
            let err = cfg.validate(file).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")) && err.contains(reason), "{err}");
        }
        for cfg in [NeoXConfig::tiny(), NeoXConfig::pythia_70m(), NeoXConfig::pythia_410m()] {
            cfg.validate(file).unwrap();
        }
        assert_eq!((NeoXConfig::pythia_160m().head_dim(), NeoXConfig::pythia_160m().rotary_ndims()), (64, 16));
    }
}
