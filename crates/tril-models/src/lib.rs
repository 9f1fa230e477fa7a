//! tril-models: the language models of tril on Burn 0.21 — GPT-2, GPT-NeoX (Pythia), Llama,
//! Qwen2 and Mistral causal LMs and BERT/DistilBERT/RoBERTa encoders with Hugging Face weights
//! in and out, tokenizers with chat templates, and KV-cache generation equal to transformers.
//!
//! Key types, by module:
//! - [`causal_lm`]: [`causal_lm::CausalLm`], the module enum over the causal LM families that
//!   every trainer holds, and [`causal_lm::LmConfig`]; [`hf::load_lm`] / [`hf::save_lm`] pick
//!   the family from `config.json`'s `model_type` ([`hf::causal`]).
//! - [`lm`]: what every family shares: [`lm::LmInput`], [`lm::LmOutput`], [`lm::KvCache`],
//!   attention bias and positions for left padding, grouped-query [`lm::attend`], and the
//!   [`lm::LanguageModel`] trait generation takes.
//! - [`llama`]: Llama / Qwen2 / Mistral ([`llama::LlamaConfig`], [`llama::LlamaModel`]);
//!   [`neox`]: GPT-NeoX / Pythia ([`neox::NeoXConfig`], [`neox::NeoXModel`]).
//! - [`chat_template`]: HF chat templates rendered with minijinja, and TRL's rendering of
//!   conversational prompt/completion rows.
//! - [`memory`]: the memory of a DPO step or PPO iteration (`tril memory`).
//! - [`gpt2`]: [`gpt2::Gpt2Config`] (from HF `config.json`, presets `tiny`, `gpt2`,
//!   `gpt2_medium`, `gpt2_large`), [`gpt2::Gpt2Model`] (HF `GPT2LMHeadModel`, tied head; forward
//!   with attention mask, left-padding-aware positions, optional hidden states and KV cache
//!   [`gpt2::KvCache`]), [`gpt2::Gpt2Output`].
//! - [`heads`]: [`heads::ValueHead`] (TRIL `mlp_head` off/on), [`heads::ValueModel`]
//!   (separate critic), [`heads::LmWithValueHead`] (shared trunk), [`heads::LmClassifier`]
//!   (HF `*ForSequenceClassification`), each on any [`causal_lm::CausalLm`].
//! - [`bert`]: [`bert::EncoderClassifier`] for BERT, DistilBERT and RoBERTa
//!   (`*ForSequenceClassification`), with [`bert::EncoderKind`]; logits and label probabilities;
//!   [`bert::Encoder`], the bare encoder whose hidden states BERTScore reads
//!   (`hf::encoder::load_encoder` loads it from any of the HF layouts).
//! - [`hf`]: [`hf::load_lm`], [`hf::save_lm`], [`hf::load_gpt2`], [`hf::save_gpt2`], [`hf::load_lm_classifier`],
//!   [`hf::load_value_model`], [`hf::load_encoder_classifier`],
//!   [`hf::save_encoder_classifier`]; [`hf::Checkpoint`] reads `model.safetensors` or a sharded
//!   `model.safetensors.index.json`. One rename table per architecture; missing tensors and
//!   shape mismatches are errors naming the tensor, unused tensors are reported.
//! - [`lora`]: [`lora::LoraConfig`] (PEFT's keys), [`lora::LoraLinear`] (every projection of
//!   GPT-2 and GPT-NeoX), [`lora::add_lora`] / [`lora::without_lora`] / [`lora::merge_lora`] on
//!   any family ([`lora::LoraTargets`]); [`hf::peft`] reads and writes PEFT's adapter files.
//! - [`resolve`]: [`resolve::resolve_model`] maps a model id to a local directory (a directory,
//!   else the HF hub cache; downloading is not built in); [`resolve::model_dir`] does the same
//!   for a model named by a config key, and its error names the key.
//! - [`tokenizer`]: [`tokenizer::TextTokenizer`] (`tokenizer.json`; [`tokenizer::PaddingSide`],
//!   [`tokenizer::TruncationSide`], `max_length`, `pad_token_as_eos_token`; batch encode to flat
//!   ids + mask, batch decode with `skip_special_tokens`); [`gpt2_tokenizer::gpt2_tokenizer`]
//!   builds the exact GPT-2 tokenizer offline from tiktoken-rs's embedded r50k_base ranks.
//! - [`generate`]: [`generate::GenerationConfig`] (TRIL's `gen_kwargs` names),
//!   [`generate::generate`] (batched, left-padded, KV cache, greedy / temperature / top-k /
//!   top-p, `min_length` new tokens, per-row EOS, seeded), [`generate::GenerationOutput`].
//! - [`beam`]: [`beam::beam_search`], HF beam search (`num_beams > 1`, `do_sample: false`),
//!   with a KV cache reordered per beam; [`generate::generate`] calls it.
//! - [`bench`](mod@bench): [`bench::bench_generate`], tokens/s on random weights.
//! - [`error`]: [`ModelError`], the crate's one error type.
//!
//! Backends: every model is generic over `B: Backend`; the one place that names a concrete
//! backend is `tril_core::backend` (the doctest below uses its `CpuBackend` alias). No model has dropout (TRIL runs its models in eval mode).
//!
//! ```
//! use rand::SeedableRng;
//! use tril_models::generate::{generate, GenerationConfig, SpecialTokens};
//! use tril_models::gpt2::Gpt2Config;
//! use tril_models::tokenizer::{TextTokenizer, TokenizerOptions};
//! use tril_core::backend::CpuBackend;
//!
//! # fn main() -> tril_models::Result<()> {
//! let device = Default::default();
//! let tokenizer = TextTokenizer::gpt2()?.with_options(TokenizerOptions { pad_token_as_eos_token: true, ..Default::default() });
//! let model = Gpt2Config::new(50257, 64, 32, 1, 2).init::<CpuBackend>(&device); // random weights
//! let batch = tokenizer.encode_batch(&["Hello world", "A longer prompt, padded on the left"])?;
//! let (ids, mask) = batch.to_tensors::<CpuBackend>(&device);
//! let eos = tokenizer.eos_token_id().unwrap();
//! let special = SpecialTokens { eos_token_id: Some(eos), pad_token_id: eos };
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let cfg = GenerationConfig { do_sample: true, top_k: 50, max_new_tokens: 4, ..Default::default() };
//! let out = generate(&model, ids, mask, &cfg, special, &mut rng)?;
//! assert_eq!((out.batch, out.max_new_tokens), (2, 4));
//! let texts = tokenizer.decode_batch(&[out.row(0), out.row(1)], true)?;
//! assert_eq!(texts.len(), 2);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod beam;
pub mod bench;
pub mod bert;
pub mod causal_lm;
pub mod chat_template;
pub mod error;
pub mod generate;
pub mod gpt2;
pub mod gpt2_tokenizer;
pub mod heads;
pub mod hf;
pub mod llama;
pub mod lm;
pub mod lora;
pub mod memory;
pub mod neox;
pub mod resolve;
pub mod sampling;
pub mod tokenizer;

pub use error::{ModelError, Result};
