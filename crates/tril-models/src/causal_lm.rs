//! One type for every causal LM family tril trains: [`CausalLm`] (a Burn module enum over the
//! architectures) and [`LmConfig`] (their configs). Trainers, rewards and metrics hold a
//! `CausalLm<B>` and call the methods below; none of them names an architecture. Loading and
//! saving dispatch on `config.json`'s `model_type` ([`crate::hf::causal`]).
//!
//! Every architecture offers the same forward semantics (see [`crate::lm`]): left padding with
//! positions from the mask (HF `generate`), an optional KV cache, logits for all positions, the
//! last one or a span, and the hidden states HF returns.

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::gpt2::{Gpt2Config, Gpt2Model};
use crate::llama::{LlamaConfig, LlamaModel};
use crate::lm::{KvCache, LanguageModel, LmHidden, LmInput, LmOutput};
use crate::neox::{NeoXConfig, NeoXModel};

/// A causal language model of any supported family.
#[derive(Module, Debug)]
pub enum CausalLm<B: Backend> {
    /// GPT-2 (HF `GPT2LMHeadModel`).
    Gpt2(Gpt2Model<B>),
    /// GPT-NeoX / Pythia (HF `GPTNeoXForCausalLM`).
    NeoX(NeoXModel<B>),
    /// Llama, Qwen2 and Mistral (HF `LlamaForCausalLM`, `Qwen2ForCausalLM`,
    /// `MistralForCausalLM`); Salamandra is a Llama.
    Llama(LlamaModel<B>),
}

/// Calls `$body` with `$m` bound to the architecture inside `$self` (every variant).
macro_rules! each_arch {
    ($self:expr, $m:ident => $body:expr) => {
        match $self {
            CausalLm::Gpt2($m) => $body,
            CausalLm::NeoX($m) => $body,
            CausalLm::Llama($m) => $body,
        }
    };
}

impl<B: Backend> From<Gpt2Model<B>> for CausalLm<B> {
    fn from(m: Gpt2Model<B>) -> Self {
        CausalLm::Gpt2(m)
    }
}

impl<B: Backend> From<LlamaModel<B>> for CausalLm<B> {
    fn from(m: LlamaModel<B>) -> Self {
        CausalLm::Llama(m)
    }
}

impl<B: Backend> From<NeoXModel<B>> for CausalLm<B> {
    fn from(m: NeoXModel<B>) -> Self {
        CausalLm::NeoX(m)
    }
}

impl<B: Backend> CausalLm<B> {
    /// Full forward with a padding mask: logits at every position.
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[B, T]` -> logits `[B, T, V]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Option<Tensor<B, 2, Int>>) -> LmOutput<B> {
        <Self as LanguageModel<B>>::forward(self, input_ids, attention_mask)
    }

    /// Forward with every option (cache, positions, hidden states, logits span).
    ///
    /// # Shapes
    /// See [`LmInput`] and [`LmOutput`].
    pub fn forward_with(&self, input: LmInput<B>, cache: Option<&mut KvCache<B>>) -> LmOutput<B> {
        <Self as LanguageModel<B>>::forward_with(self, input, cache)
    }

    /// LM logits of positions `start..start + len` only (contiguous).
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[B, T]` -> `[B, len, V]`
    pub fn span_logits(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        start: usize,
        len: usize,
    ) -> Tensor<B, 3> {
        <Self as LanguageModel<B>>::span_logits(self, input_ids, attention_mask, start, len)
    }

    /// The trunk without the LM head (what value and classification heads read).
    ///
    /// # Shapes
    /// See [`LmInput`] and [`LmHidden`].
    pub fn trunk(&self, input: LmInput<B>, cache: Option<&mut KvCache<B>>) -> LmHidden<B> {
        each_arch!(self, m => m.trunk(input, cache))
    }

    /// The LM head.
    ///
    /// # Shapes
    /// - hidden: `[B, T, D]` -> `[B, T, V]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        each_arch!(self, m => m.lm_logits(hidden))
    }

    /// Vocabulary size of the LM head.
    pub fn vocab_size(&self) -> usize {
        each_arch!(self, m => m.vocab_size())
    }

    /// Width of the hidden state.
    pub fn d_model(&self) -> usize {
        each_arch!(self, m => m.d_model())
    }

    /// Number of blocks (the length of a [`KvCache`]).
    pub fn n_layer(&self) -> usize {
        each_arch!(self, m => m.n_layer())
    }

    /// The longest sequence the model accepts (prompt + generation).
    pub fn max_positions(&self) -> usize {
        each_arch!(self, m => m.max_positions())
    }

    /// The learned embedding tables (tokens, and positions where the family has them), which
    /// a from-scratch run re-draws with HF's `N(0, initializer_range)`.
    pub fn embeddings_mut(&mut self) -> Vec<&mut Embedding<B>> {
        match self {
            CausalLm::Gpt2(m) => vec![&mut m.wte, &mut m.wpe],
            CausalLm::NeoX(m) => vec![&mut m.gpt_neox.embed_in],
            CausalLm::Llama(m) => vec![&mut m.model.embed_tokens],
        }
    }

    /// HF `model_type` of the architecture.
    pub fn model_type(&self) -> &'static str {
        match self {
            CausalLm::Gpt2(_) => "gpt2",
            CausalLm::NeoX(_) => "gpt_neox",
            CausalLm::Llama(m) => m.family.model_type(),
        }
    }
}

impl<B: Backend> LanguageModel<B> for CausalLm<B> {
    fn trunk(&self, input: LmInput<B>, cache: Option<&mut KvCache<B>>) -> LmHidden<B> {
        each_arch!(self, m => m.trunk(input, cache))
    }
    fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        each_arch!(self, m => m.lm_logits(hidden))
    }
    fn n_layer(&self) -> usize {
        CausalLm::n_layer(self)
    }
    fn vocab_size(&self) -> usize {
        CausalLm::vocab_size(self)
    }
    fn max_positions(&self) -> usize {
        CausalLm::max_positions(self)
    }
}

/// The config of a [`CausalLm`], one variant per family.
#[derive(Debug, Clone)]
pub enum LmConfig {
    /// GPT-2.
    Gpt2(Gpt2Config),
    /// GPT-NeoX / Pythia.
    NeoX(NeoXConfig),
    /// Llama, Qwen2, Mistral.
    Llama(LlamaConfig),
}

impl From<Gpt2Config> for LmConfig {
    fn from(c: Gpt2Config) -> Self {
        LmConfig::Gpt2(c)
    }
}

impl From<LlamaConfig> for LmConfig {
    fn from(c: LlamaConfig) -> Self {
        LmConfig::Llama(c)
    }
}

impl From<NeoXConfig> for LmConfig {
    fn from(c: NeoXConfig) -> Self {
        LmConfig::NeoX(c)
    }
}

impl LmConfig {
    /// A model with random weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> CausalLm<B> {
        match self {
            LmConfig::Gpt2(c) => CausalLm::Gpt2(c.init(device)),
            LmConfig::NeoX(c) => CausalLm::NeoX(c.init(device)),
            LmConfig::Llama(c) => CausalLm::Llama(c.init(device)),
        }
    }

    /// HF `model_type`.
    pub fn model_type(&self) -> &'static str {
        match self {
            LmConfig::Gpt2(_) => "gpt2",
            LmConfig::NeoX(_) => "gpt_neox",
            LmConfig::Llama(c) => c.family.model_type(),
        }
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            LmConfig::Gpt2(c) => c.vocab_size,
            LmConfig::NeoX(c) => c.vocab_size,
            LmConfig::Llama(c) => c.vocab_size,
        }
    }

    /// Width of the hidden state.
    pub fn d_model(&self) -> usize {
        match self {
            LmConfig::Gpt2(c) => c.n_embd,
            LmConfig::NeoX(c) => c.hidden_size,
            LmConfig::Llama(c) => c.hidden_size,
        }
    }

    /// Number of blocks.
    pub fn n_layer(&self) -> usize {
        match self {
            LmConfig::Gpt2(c) => c.n_layer,
            LmConfig::NeoX(c) => c.num_hidden_layers,
            LmConfig::Llama(c) => c.num_hidden_layers,
        }
    }

    /// The longest sequence the model accepts.
    pub fn max_positions(&self) -> usize {
        match self {
            LmConfig::Gpt2(c) => c.n_positions,
            LmConfig::NeoX(c) => c.max_position_embeddings,
            LmConfig::Llama(c) => c.max_position_embeddings,
        }
    }

    /// Token id of EOS from `config.json`, if any.
    pub fn eos_token_id(&self) -> Option<u32> {
        match self {
            LmConfig::Gpt2(c) => c.eos_token_id,
            LmConfig::NeoX(c) => c.eos_token_id,
            LmConfig::Llama(c) => c.eos_token_id,
        }
    }

    /// Token id of padding from `config.json`, if any.
    pub fn pad_token_id(&self) -> Option<u32> {
        match self {
            LmConfig::Gpt2(_) => None,
            LmConfig::NeoX(c) => c.pad_token_id,
            LmConfig::Llama(c) => c.pad_token_id,
        }
    }

    /// Parameters of the model (f64: no overflow whatever the sizes).
    pub fn param_count(&self) -> f64 {
        match self {
            LmConfig::Gpt2(c) => crate::hf::gpt2::gpt2_param_count(c),
            LmConfig::NeoX(c) => crate::hf::neox::neox_param_count(c),
            LmConfig::Llama(c) => crate::hf::llama::llama_param_count(c),
        }
    }

    /// The sizes [`crate::memory::estimate`] needs.
    pub fn shape(&self) -> crate::memory::ModelShape {
        let (n_head, n_kv_head) = match self {
            LmConfig::Gpt2(c) => (c.n_head, c.n_head),
            LmConfig::NeoX(c) => (c.num_attention_heads, c.num_attention_heads),
            LmConfig::Llama(c) => (c.num_attention_heads, c.kv_heads()),
        };
        crate::memory::ModelShape {
            name: self.model_type(),
            family: self.model_type(),
            params: self.param_count(),
            d_model: self.d_model(),
            n_layer: self.n_layer(),
            n_head,
            n_kv_head,
            vocab: self.vocab_size(),
        }
    }

    /// The `config.json` transformers rebuilds the model from.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            LmConfig::Gpt2(c) => crate::hf::gpt2::gpt2_config_to_json(c),
            LmConfig::NeoX(c) => crate::hf::neox::neox_config_to_json(c),
            LmConfig::Llama(c) => {
                crate::hf::llama::llama_config_to_json(c, &format!("{}ForCausalLM", c.family.class_prefix()))
            }
        }
    }
}

/// LoRA on any family: the projections of the architecture inside (one arm per family).
impl<B: Backend> crate::lora::LoraTargets<B> for CausalLm<B> {
    fn lora_model_type(&self) -> &'static str {
        each_arch!(self, m => m.lora_model_type())
    }
    fn fan_in_fan_out(&self) -> bool {
        each_arch!(self, m => m.fan_in_fan_out())
    }
    fn projections(&self) -> Vec<(String, &crate::lora::LoraLinear<B>)> {
        each_arch!(self, m => m.projections())
    }
    fn projections_mut(&mut self) -> Vec<(String, &mut crate::lora::LoraLinear<B>)> {
        each_arch!(self, m => m.projections_mut())
    }
}

impl<B: Backend> CausalLm<B> {
    /// Freezes every parameter and adds LoRA adapters ([`crate::lora::add_lora`]).
    pub fn add_lora(self, config: &crate::lora::LoraConfig, device: &B::Device) -> crate::Result<Self> {
        crate::lora::add_lora(self, config, device)
    }

    /// The model without adapters, sharing the base tensors ([`crate::lora::without_lora`]).
    pub fn without_lora(&self) -> Self {
        crate::lora::without_lora(self)
    }

    /// Adapters folded into the base weights ([`crate::lora::merge_lora`]).
    pub fn merge_lora(self) -> Self {
        crate::lora::merge_lora(self)
    }

    /// Whether any projection carries an adapter.
    pub fn has_lora(&self) -> bool {
        !crate::lora::adapted_modules(self).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use tril_core::backend::CpuBackend;

    #[test]
    fn enum_forward_equals_the_architecture() {
        let dev = Default::default();
        let gpt2 = Gpt2Config::tiny().init::<CpuBackend>(&dev);
        let ids = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [2, 3]), &dev);
        let mask = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(vec![0i64, 1, 1, 1, 1, 1], [2, 3]), &dev);
        // Parameters initialise lazily: use them once before cloning, so both hold the same values.
        let want = gpt2.forward(ids.clone(), Some(mask.clone())).logits.into_data();
        let lm = CausalLm::from(gpt2.clone());
        let got = lm.forward(ids.clone(), Some(mask.clone())).logits.into_data();
        assert_eq!(want, got);
        assert_eq!(lm.span_logits(ids, Some(mask), 1, 2).dims(), [2, 2, 512]);
        let cfg = LmConfig::from(Gpt2Config::tiny());
        assert_eq!((lm.vocab_size(), lm.d_model(), lm.n_layer()), (cfg.vocab_size(), cfg.d_model(), cfg.n_layer()));
        assert_eq!(lm.max_positions(), cfg.max_positions());
        assert_eq!(lm.model_type(), "gpt2");
    }
}
