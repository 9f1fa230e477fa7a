//! GPT-2 causal language model (HF `GPT2LMHeadModel`), generic over the Burn backend.
//!
//! The module tree mirrors HF's names (`wte`, `wpe`, `h[i].{ln_1, attn.c_attn, attn.c_proj, ln_2,
//! mlp.c_fc, mlp.c_proj}`, `ln_f`); HF's `Conv1D` weights are `[in, out]`, which is Burn's
//! [`burn::nn::Linear`] layout, so they load untransposed. The LM head is tied to `wte`.
//!
//! Left padding: positions count from the first real token (`cumsum(mask) - 1`, pad slots get 1),
//! exactly as HF `generate` derives `position_ids` from the attention mask, and padded keys get
//! an additive `-1e9` bias. There is no dropout (TRIL runs its models in `eval()` mode).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{activation, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::lm::{attend, LanguageModel, LmHidden, LmInput, LmOutput};
pub use crate::lm::{
    attention_bias, linear3, position_ids_from_mask, KvCache, LayerCache, LayerKv, LogitsSpan, MASK_BIAS,
};
use crate::lora::{LoraLinear, LoraTargets};

/// Inputs of [`Gpt2Model::forward_with`] (the shared [`LmInput`]).
pub type Gpt2Input<B> = LmInput<B>;
/// Outputs of the GPT-2 trunk (the shared [`LmHidden`]).
pub type Gpt2Hidden<B> = LmHidden<B>;
/// Outputs of [`Gpt2Model::forward_with`] (the shared [`LmOutput`]).
pub type Gpt2Output<B> = LmOutput<B>;

/// Activation of the GPT-2 MLP (HF `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation (GPT-2's own).
    GeluNew,
    /// `gelu`: the exact erf GELU.
    Gelu,
    /// `relu`.
    Relu,
}

impl Activation {
    /// Parse an HF activation name (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`, `gelu`, `relu`).
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluNew),
            "gelu" => Some(Activation::Gelu),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }

    /// The HF name written to `config.json`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::GeluNew => "gelu_new",
            Activation::Gelu => "gelu",
            Activation::Relu => "relu",
        }
    }

    /// Apply the activation.
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::GeluNew => activation::gelu_approximate(x),
            Activation::Gelu => activation::gelu(x),
            Activation::Relu => activation::relu(x),
        }
    }
}

/// GPT-2 hyper-parameters (the fields of HF's `GPT2Config` that change the computation).
#[derive(Config, Debug)]
pub struct Gpt2Config {
    /// Vocabulary size (rows of `wte`).
    pub vocab_size: usize,
    /// Maximum sequence length (rows of `wpe`).
    pub n_positions: usize,
    /// Model width.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Number of attention heads; must divide `n_embd`.
    pub n_head: usize,
    /// MLP width; `None` means `4 * n_embd`.
    #[config(default = "None")]
    pub n_inner: Option<usize>,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_epsilon: f64,
    /// MLP activation.
    #[config(default = "Activation::GeluNew")]
    pub activation: Activation,
    /// Beginning-of-sequence id (written back to `config.json`).
    #[config(default = "None")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id (written back to `config.json`).
    #[config(default = "None")]
    pub eos_token_id: Option<u32>,
}

impl Gpt2Config {
    /// A tiny model for tests and CPU benchmarks: 2 layers, 4 heads, width 64, vocab 512, 256 positions.
    pub fn tiny() -> Self {
        Self::new(512, 256, 64, 2, 4)
    }

    /// `gpt2` (124 M parameters).
    pub fn gpt2() -> Self {
        Self::new(50257, 1024, 768, 12, 12).with_bos_token_id(Some(50256)).with_eos_token_id(Some(50256))
    }

    /// `gpt2-medium` (355 M parameters).
    pub fn gpt2_medium() -> Self {
        Self::new(50257, 1024, 1024, 24, 16).with_bos_token_id(Some(50256)).with_eos_token_id(Some(50256))
    }

    /// `gpt2-large` (774 M parameters).
    pub fn gpt2_large() -> Self {
        Self::new(50257, 1024, 1280, 36, 20).with_bos_token_id(Some(50256)).with_eos_token_id(Some(50256))
    }

    /// MLP width (`n_inner` or `4 * n_embd`).
    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Build a randomly initialised model (parameters are lazily initialised, so building a
    /// model only to load weights into it costs nothing).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Gpt2Model<B> {
        let d = self.n_embd;
        let block = |_| Gpt2Block {
            ln_1: LayerNormConfig::new(d).with_epsilon(self.layer_norm_epsilon).init(device),
            attn: Gpt2Attention {
                c_attn: LinearConfig::new(d, 3 * d).init(device).into(),
                c_proj: LinearConfig::new(d, d).init(device).into(),
                n_head: self.n_head,
            },
            ln_2: LayerNormConfig::new(d).with_epsilon(self.layer_norm_epsilon).init(device),
            mlp: Gpt2Mlp {
                c_fc: LinearConfig::new(d, self.inner_dim()).init(device).into(),
                c_proj: LinearConfig::new(self.inner_dim(), d).init(device).into(),
                activation: self.activation,
            },
        };
        Gpt2Model {
            wte: EmbeddingConfig::new(self.vocab_size, d).init(device),
            wpe: EmbeddingConfig::new(self.n_positions, d).init(device),
            h: (0..self.n_layer).map(block).collect(),
            ln_f: LayerNormConfig::new(d).with_epsilon(self.layer_norm_epsilon).init(device),
            n_positions: self.n_positions,
        }
    }
}

/// Multi-head causal self-attention (HF `GPT2Attention`).
#[derive(Module, Debug)]
pub struct Gpt2Attention<B: Backend> {
    /// Fused query/key/value projection, `[d, 3d]`.
    pub c_attn: LoraLinear<B>,
    /// Output projection, `[d, d]`.
    pub c_proj: LoraLinear<B>,
    /// Number of heads.
    pub n_head: usize,
}

impl<B: Backend> Gpt2Attention<B> {
    /// Attend over `x` (and the cached keys/values of earlier positions, which are updated).
    ///
    /// # Shapes
    /// - x: `[B, T, D]`
    /// - bias: `[B, 1, T, past + T]` additive (0 or [`MASK_BIAS`]), or `None`
    /// - cache: `[B, H, past, D/H]` keys and values, replaced by `[B, H, past + T, D/H]`
    /// - output: `[B, T, D]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        bias: Option<Tensor<B, 4>>,
        cache: Option<LayerCache<'_, B>>,
    ) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let hd = d / self.n_head;
        let qkv = self.c_attn.forward3(x); // [B, T, 3D]
        let heads = |i: usize| qkv.clone().narrow(2, i * d, d).reshape([b, t, self.n_head, hd]).swap_dims(1, 2);
        let (q, mut k, mut v) = (heads(0), heads(1), heads(2)); // [B, H, T, hd]
        if let Some(c) = cache {
            (k, v) = c.append(k, v);
        }
        let out = attend(q, k, v, bias).swap_dims(1, 2).reshape([b, t, d]); // [B, T, D]
        self.c_proj.forward3(out)
    }
}

/// Position-wise MLP (HF `GPT2MLP`).
#[derive(Module, Debug)]
pub struct Gpt2Mlp<B: Backend> {
    /// `[d, inner]`.
    pub c_fc: LoraLinear<B>,
    /// `[inner, d]`.
    pub c_proj: LoraLinear<B>,
    /// Activation between the two projections.
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> Gpt2Mlp<B> {
    /// # Shapes
    /// - x: `[B, T, D]` -> `[B, T, D]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.c_proj.forward3(self.activation.apply(self.c_fc.forward3(x)))
    }
}

/// One pre-LayerNorm transformer block (HF `GPT2Block`).
#[derive(Module, Debug)]
pub struct Gpt2Block<B: Backend> {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm<B>,
    /// Self-attention.
    pub attn: Gpt2Attention<B>,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// MLP.
    pub mlp: Gpt2Mlp<B>,
}

impl<B: Backend> Gpt2Block<B> {
    /// # Shapes
    /// - x: `[B, T, D]` -> `[B, T, D]`; bias and cache as in [`Gpt2Attention::forward`].
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        bias: Option<Tensor<B, 4>>,
        cache: Option<LayerCache<'_, B>>,
    ) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), bias, cache);
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}

/// GPT-2 with a tied LM head (HF `GPT2LMHeadModel`).
#[derive(Module, Debug)]
pub struct Gpt2Model<B: Backend> {
    /// Token embeddings `[V, D]`, also the (transposed) LM head.
    pub wte: Embedding<B>,
    /// Position embeddings `[n_positions, D]`.
    pub wpe: Embedding<B>,
    /// Transformer blocks.
    pub h: Vec<Gpt2Block<B>>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm<B>,
    /// Maximum sequence length.
    pub n_positions: usize,
}

impl<B: Backend> Gpt2Model<B> {
    /// The trunk without the LM head (what a value model needs).
    ///
    /// # Shapes
    /// See [`Gpt2Input`] and [`Gpt2Hidden`].
    pub fn trunk(&self, input: Gpt2Input<B>, cache: Option<&mut KvCache<B>>) -> Gpt2Hidden<B> {
        let device = input.input_ids.device();
        let [b, t] = input.input_ids.dims();
        let past = cache.as_ref().map_or(0, |c| c.len());
        let positions = match (input.position_ids, &input.attention_mask) {
            (Some(p), _) => p,
            (None, Some(mask)) => position_ids_from_mask(mask.clone()).narrow(1, past, t),
            (None, None) => {
                Tensor::<B, 1, Int>::arange(past as i64..(past + t) as i64, &device).reshape([1, t]).repeat_dim(0, b)
            }
        };
        let bias = attention_bias(input.attention_mask, t, past, &device);
        let mut x = self.wte.forward(input.input_ids) + self.wpe.forward(positions); // [B, T, D]
        let mut states = input.output_hidden_states.then(Vec::new);
        let mut slots = cache.map(|c| c.layers_for(t).into_iter());
        for block in &self.h {
            if let Some(s) = states.as_mut() {
                s.push(x.clone());
            }
            let slot = slots.as_mut().and_then(|it| it.next());
            x = block.forward(x, bias.clone(), slot);
        }
        let x = self.ln_f.forward(x);
        if let Some(s) = states.as_mut() {
            s.push(x.clone());
        }
        Gpt2Hidden { last_hidden_state: x, hidden_states: states }
    }

    /// The tied LM head: `hidden @ wte^T`.
    ///
    /// # Shapes
    /// - hidden: `[B, T, D]` -> `[B, T, V]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = hidden.dims();
        let logits = hidden.reshape([b * t, d]).matmul(self.wte.weight.val().transpose()); // [B*T, V]
        let v = logits.dims()[1];
        logits.reshape([b, t, v])
    }

    /// Vocabulary size (rows of `wte`).
    pub fn vocab_size(&self) -> usize {
        self.wte.weight.lazy_shape().dims::<2>()[0]
    }

    /// Model width.
    pub fn d_model(&self) -> usize {
        self.wte.weight.lazy_shape().dims::<2>()[1]
    }

    /// Number of blocks.
    pub fn n_layer(&self) -> usize {
        self.h.len()
    }
}

impl<B: Backend> LanguageModel<B> for Gpt2Model<B> {
    fn trunk(&self, input: LmInput<B>, cache: Option<&mut KvCache<B>>) -> LmHidden<B> {
        Gpt2Model::trunk(self, input, cache)
    }
    fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        Gpt2Model::lm_logits(self, hidden)
    }
    fn n_layer(&self) -> usize {
        Gpt2Model::n_layer(self)
    }
    fn vocab_size(&self) -> usize {
        Gpt2Model::vocab_size(self)
    }
    fn max_positions(&self) -> usize {
        self.n_positions
    }
}

impl<B: Backend> LoraTargets<B> for Gpt2Model<B> {
    fn lora_model_type(&self) -> &'static str {
        "gpt2"
    }
    fn fan_in_fan_out(&self) -> bool {
        true // HF Conv1D
    }
    fn projections(&self) -> Vec<(String, &LoraLinear<B>)> {
        let mut out = Vec::with_capacity(4 * self.h.len());
        for (i, b) in self.h.iter().enumerate() {
            out.push((format!("transformer.h.{i}.attn.c_attn"), &b.attn.c_attn));
            out.push((format!("transformer.h.{i}.attn.c_proj"), &b.attn.c_proj));
            out.push((format!("transformer.h.{i}.mlp.c_fc"), &b.mlp.c_fc));
            out.push((format!("transformer.h.{i}.mlp.c_proj"), &b.mlp.c_proj));
        }
        out
    }
    fn projections_mut(&mut self) -> Vec<(String, &mut LoraLinear<B>)> {
        let mut out = Vec::with_capacity(4 * self.h.len());
        for (i, b) in self.h.iter_mut().enumerate() {
            out.push((format!("transformer.h.{i}.attn.c_attn"), &mut b.attn.c_attn));
            out.push((format!("transformer.h.{i}.attn.c_proj"), &mut b.attn.c_proj));
            out.push((format!("transformer.h.{i}.mlp.c_fc"), &mut b.mlp.c_fc));
            out.push((format!("transformer.h.{i}.mlp.c_proj"), &mut b.mlp.c_proj));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use tril_core::backend::CpuBackend;

    #[test]
    fn positions_follow_left_padding() {
        let dev = Default::default();
        let mask =
            Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(vec![0i64, 0, 1, 1, 1, 1, 1, 1], [2, 4]), &dev);
        let pos = position_ids_from_mask(mask).into_data().convert::<i64>().to_vec::<i64>().unwrap();
        assert_eq!(pos, vec![1, 1, 0, 1, 0, 1, 2, 3]);
    }

    #[test]
    fn bias_masks_pad_and_future() {
        let dev = Default::default();
        let mask = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(vec![0i64, 1, 1], [1, 3]), &dev);
        let bias = attention_bias(Some(mask), 3, 0, &dev).unwrap();
        assert_eq!(bias.dims(), [1, 1, 3, 3]);
        let v = bias.into_data().to_vec::<f32>().unwrap();
        let m = MASK_BIAS;
        assert_eq!(v, vec![m, m, m, m, 0.0, m, m, 0.0, 0.0]);
    }

    #[test]
    fn cache_matches_full_forward() {
        let dev = Default::default();
        let model = Gpt2Config::tiny().init::<CpuBackend>(&dev);
        let ids = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(vec![5i64, 9, 3, 7, 1, 2], [1, 6]), &dev);
        let full = model.forward(ids.clone(), None).logits.narrow(1, 5, 1);
        let mut cache = KvCache::new(model.n_layer());
        model.forward_with(Gpt2Input::new(ids.clone().narrow(1, 0, 4)), Some(&mut cache));
        model.forward_with(Gpt2Input::new(ids.clone().narrow(1, 4, 1)), Some(&mut cache));
        let step = model.forward_with(Gpt2Input::new(ids.clone().narrow(1, 5, 1)), Some(&mut cache)).logits;
        assert_eq!(cache.len(), 6);
        let diff = (full.clone() - step).abs().max().into_scalar();
        // 1e-4: the cached and the full pass multiply differently shaped matrices, which the
        // CPU backends sum in different orders (measured 1.1e-5 on flex, 0 on ndarray).
        assert!(diff < 1e-4, "max |diff| {diff}");
        // Selecting rows of the cache equals running the selected rows.
        let batch = Tensor::cat(vec![ids.clone(), ids.clone().flip([1])], 0); // [2, 6]
        let mut cache = KvCache::with_capacity(model.n_layer(), 8);
        model.forward_with(Gpt2Input::new(batch.clone().narrow(1, 0, 5)), Some(&mut cache));
        cache.select_rows(Tensor::from_data(TensorData::new(vec![1i64, 0, 1], [3]), &dev));
        let last =
            Tensor::cat(vec![batch.clone().narrow(0, 1, 1), batch.clone().narrow(0, 0, 1), batch.narrow(0, 1, 1)], 0);
        let step = model.forward_with(Gpt2Input::new(last.clone().narrow(1, 5, 1)), Some(&mut cache)).logits;
        let full3 = model.forward(last, None).logits.narrow(1, 5, 1); // [3, 1, V]
        let diff = (full3 - step).abs().max().into_scalar();
        assert!(diff < 1e-4, "select_rows: max |diff| {diff}"); // same tolerance and reason as above
                                                                // Preallocated (with room, and too small so that it falls back to concatenation).
        for cap in [8, 5] {
            let mut cache = KvCache::with_capacity(model.n_layer(), cap);
            model.forward_with(Gpt2Input::new(ids.clone().narrow(1, 0, 4)), Some(&mut cache));
            model.forward_with(Gpt2Input::new(ids.clone().narrow(1, 4, 1)), Some(&mut cache));
            let step = model.forward_with(Gpt2Input::new(ids.clone().narrow(1, 5, 1)), Some(&mut cache)).logits;
            let diff = (full.clone() - step).abs().max().into_scalar();
            assert!(diff < 1e-4, "capacity {cap}: max |diff| {diff}"); // as above
        }
    }
}
