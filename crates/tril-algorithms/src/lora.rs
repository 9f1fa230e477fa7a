//! `alg.lora` in the trainers (TRIL's `lora: {peft_config: {r, lora_alpha, lora_dropout,
//! task_type, target_modules}}`, typed and range-checked by `tril_core::schema::LoraSection`).
//!
//! When it is set, DPO and KTO ([`crate::offline`]) and the PPO and GRPO families put
//! adapters on the policy ([`with_lora`]): every base parameter is frozen, so only the adapters
//! get gradients and optimizer state; the reference is the policy without its adapters
//! ([`tril_models::causal_lm::CausalLm::without_lora`], the same base tensors, no second
//! load), as TRL does with peft; checkpoints write the policy as a PEFT adapter
//! ([`save_policy`]: `adapter_config.json` + `adapter_model.safetensors` + `tokenizer.json`,
//! which `PeftModel.from_pretrained` and `tril merge-lora` read); the exact resume state
//! (`trainer/`) holds the adapters with the rest of the model. Other algorithms refuse the key
//! ([`refuse_lora`]).

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use tril_core::plugin::PluginError;
use tril_core::schema::RootConfig;
use tril_models::causal_lm::{CausalLm, LmConfig};
use tril_models::lora::LoraConfig;
use tril_models::tokenizer::TextTokenizer;

use crate::AlgorithmError;

/// The config key every LoRA error names.
pub const KEY: &str = "alg.lora.peft_config";

/// The model-side [`LoraConfig`] of `alg.lora`, if set.
pub fn lora_config(root: &RootConfig) -> Option<LoraConfig> {
    root.alg.lora.as_ref().map(|l| {
        let p = &l.peft_config;
        LoraConfig {
            r: p.r,
            lora_alpha: p.lora_alpha,
            lora_dropout: p.lora_dropout,
            target_modules: p.target_modules.clone(),
            bias: p.bias.clone(),
            use_rslora: p.use_rslora,
            init_lora_weights: p.init_lora_weights,
        }
    })
}

/// An error unless `alg.lora` is absent: for the algorithms that do not train adapters.
pub fn refuse_lora(root: &RootConfig, alg: &str) -> Result<(), PluginError> {
    match root.alg.lora {
        None => Ok(()),
        Some(_) => Err(AlgorithmError::config(
            "alg.lora",
            format!("{alg} does not train LoRA adapters (dpo, kto, ppo and grpo do); remove the key"),
        )
        .into()),
    }
}

/// `policy` with adapters (frozen base) when `lora` is set, else unchanged; errors name
/// [`KEY`].
pub fn with_lora<B: Backend>(
    policy: CausalLm<B>,
    lora: Option<&LoraConfig>,
    device: &B::Device,
) -> Result<CausalLm<B>, PluginError> {
    let Some(config) = lora else { return Ok(policy) };
    let policy = policy.add_lora(config, device).map_err(|e| AlgorithmError::config(KEY, e.to_string()))?;
    let trainable = tril_models::lora::lora_param_count(&policy);
    let adapted = tril_models::lora::adapted_modules(&policy).len();
    tracing::info!(trainable, adapted, r = config.r, "LoRA: only the adapters train");
    Ok(policy)
}

/// Writes the policy into `dir`: with `lora`, PEFT's adapter files (`base_model_name` as
/// `base_model_name_or_path`) and `tokenizer.json`; else the HF model ([`tril_models::hf::save_lm`]).
pub fn save_policy<B: Backend>(
    policy: &CausalLm<B>,
    config: &LmConfig,
    lora: Option<&LoraConfig>,
    base_model_name: &str,
    dir: &Path,
    tokenizer: &TextTokenizer,
) -> Result<(), PluginError> {
    match lora {
        None => Ok(tril_models::hf::save_lm(policy, config, dir, Some(tokenizer))?),
        Some(l) => {
            tril_models::hf::peft::save_lora(policy, l, dir, base_model_name)?;
            Ok(tokenizer.save(&dir.join(tril_models::hf::TOKENIZER_FILE))?)
        }
    }
}

/// The policy and reference of an offline run under `lora`: adapters on the policy and, unless
/// the reference is a model of its own (`ref_model_name`), the policy without its adapters as
/// the reference (the frozen base, no second copy). Unchanged without `lora`.
pub fn lora_policy_and_reference<B: AutodiffBackend>(
    policy: CausalLm<B>,
    reference: CausalLm<B::InnerBackend>,
    own_reference: bool,
    lora: Option<&LoraConfig>,
    device: &B::Device,
) -> Result<(CausalLm<B>, CausalLm<B::InnerBackend>), PluginError> {
    if lora.is_none() {
        return Ok((policy, reference));
    }
    let policy = with_lora(policy, lora, device)?;
    let reference = if own_reference { reference } else { policy.without_lora().valid() };
    Ok((policy, reference))
}
