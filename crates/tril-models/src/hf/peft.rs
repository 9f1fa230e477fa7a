//! PEFT's LoRA adapter files in and out: `adapter_config.json` and
//! `adapter_model.safetensors`, as `PeftModel.save_pretrained` writes them and
//! `PeftModel.from_pretrained` reads them (checked against peft 0.21.2).
//!
//! Tensor names and layouts (both `Conv1D` GPT-2 and `Linear` GPT-NeoX; PEFT's adapters are
//! `nn.Linear` whatever the base layer, so the layouts are the same):
//!
//! ```text
//! PEFT                                                  shape      tril (Burn layout)
//! base_model.model.{module path}.lora_A.weight          [r, in]    lora.lora_a.weight [in, r]
//! base_model.model.{module path}.lora_B.weight          [out, r]   lora.lora_b.weight [r, out]
//! ```
//!
//! The module path is the HF path from the `*ForCausalLM` root
//! ([`crate::lora::LoraTargets::projections`]). `fan_in_fan_out` is written `true` for GPT-2
//! (its `Conv1D` weights are `[in, out]`), which is what PEFT's merge needs; it does not change
//! the adapter tensors. Reading refuses what tril does not implement (other `peft_type`s,
//! DoRA, `rank_pattern`/`alpha_pattern`, `modules_to_save`, regex `target_modules`) with an
//! error naming the key.

use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::Backend;
use serde_json::{json, Value};

use super::{read_json, write_json, write_safetensors, Checkpoint};
use crate::causal_lm::CausalLm;
use crate::error::{ModelError, Result};
use crate::lora::{add_lora, LoraConfig, LoraTargets};
use crate::tokenizer::TextTokenizer;

/// File name of PEFT's adapter config.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// File name of PEFT's adapter weights.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// What an `adapter_config.json` holds besides the [`LoraConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    /// `base_model_name_or_path`: the model the adapter was trained on.
    pub base_model_name_or_path: Option<String>,
    /// `fan_in_fan_out` (true for GPT-2's `Conv1D`).
    pub fan_in_fan_out: bool,
}

fn tensor_name(path: &str, which: &str) -> String {
    format!("base_model.model.{path}.{which}.weight")
}

/// The `adapter_config.json` PEFT writes for `config` on a model of `model_type`.
pub fn adapter_config_json(
    config: &LoraConfig,
    model_type: &str,
    fan_in_fan_out: bool,
    base_model_name: &str,
) -> Result<Value> {
    config.check()?;
    let mut targets = config.targets(model_type)?;
    targets.sort();
    Ok(json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": targets,
        "fan_in_fan_out": fan_in_fan_out,
        "bias": config.bias,
        "use_rslora": config.use_rslora,
        "init_lora_weights": config.init_lora_weights,
        "base_model_name_or_path": base_model_name,
        "inference_mode": true,
        "modules_to_save": null,
        "use_dora": false,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": null,
        "layers_pattern": null,
        "revision": null,
    }))
}

/// Writes `model`'s adapters in PEFT's layout into `dir` (created if needed):
/// `adapter_config.json` (from `config`) and `adapter_model.safetensors`.
/// `base_model_name` is written as `base_model_name_or_path`.
pub fn save_lora<B: Backend, M: LoraTargets<B>>(
    model: &M,
    config: &LoraConfig,
    dir: &Path,
    base_model_name: &str,
) -> Result<()> {
    let json = adapter_config_json(config, model.lora_model_type(), model.fan_in_fan_out(), base_model_name)?;
    let mut tensors = Vec::new();
    for (path, lin) in model.projections() {
        let Some(lora) = &lin.lora else { continue };
        for (which, w) in [("lora_A", &lora.lora_a.weight), ("lora_B", &lora.lora_b.weight)] {
            let data = w.val().transpose().into_data(); // Burn [in, out] -> torch [out, in]
            let shape = data.shape.to_vec();
            let values = data
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| ModelError::InvalidInput { what: tensor_name(&path, which), reason: format!("{e:?}") })?;
            tensors.push((tensor_name(&path, which), values, shape));
        }
    }
    if tensors.is_empty() {
        return Err(ModelError::InvalidInput { what: "save_lora".into(), reason: "the model has no adapter".into() });
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    write_json(&dir.join(ADAPTER_CONFIG_FILE), &json)?;
    write_safetensors(&dir.join(ADAPTER_WEIGHTS_FILE), tensors)
}

/// Reads `dir/adapter_config.json`; errors name the file and key.
pub fn read_adapter_config(dir: &Path) -> Result<(LoraConfig, AdapterInfo)> {
    let file = dir.join(ADAPTER_CONFIG_FILE);
    let json = read_json(&file)?;
    let invalid = |key: &str, value: &Value, reason: &str| ModelError::InvalidConfigValue {
        file: file.clone(),
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let get = |key: &str| json.get(key).unwrap_or(&Value::Null);
    let missing = |key: &str| ModelError::MissingConfigKey { file: file.clone(), key: key.to_string() };
    if get("peft_type").as_str() != Some("LORA") {
        return Err(invalid("peft_type", get("peft_type"), "only LORA adapters are supported"));
    }
    if !matches!(get("task_type"), Value::Null) && get("task_type").as_str() != Some("CAUSAL_LM") {
        return Err(invalid("task_type", get("task_type"), "expected CAUSAL_LM"));
    }
    // Features tril does not implement must be off.
    let off = |v: &Value| match v {
        Value::Null | Value::Bool(false) => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    for key in ["use_dora", "rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform", "lora_bias"] {
        if !off(get(key)) {
            return Err(invalid(key, get(key), "not supported by tril's LoRA"));
        }
    }
    let r = get("r").as_u64().ok_or_else(|| missing("r"))? as usize;
    let lora_alpha = get("lora_alpha").as_f64().ok_or_else(|| missing("lora_alpha"))?;
    let target_modules = match get("target_modules") {
        Value::Array(a) => Some(
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("target_modules", get("target_modules"), "expected a list of names"))?,
        ),
        Value::Null => None,
        v => return Err(invalid("target_modules", v, "only a list of module names is supported (not a regex)")),
    };
    let config = LoraConfig {
        r,
        lora_alpha,
        lora_dropout: get("lora_dropout").as_f64().unwrap_or(0.0),
        target_modules,
        bias: get("bias").as_str().unwrap_or("none").to_string(),
        use_rslora: get("use_rslora").as_bool().unwrap_or(false),
        init_lora_weights: get("init_lora_weights").as_bool().unwrap_or(true),
    };
    config.check().map_err(|e| ModelError::WithPath { path: file.clone(), source: Box::new(e) })?;
    let info = AdapterInfo {
        base_model_name_or_path: get("base_model_name_or_path").as_str().map(str::to_string),
        fan_in_fan_out: get("fan_in_fan_out").as_bool().unwrap_or(false),
    };
    Ok((config, info))
}

/// Loads the PEFT adapter in `dir` into `model`: freezes the model, adds adapters where
/// `target_modules` match ([`add_lora`]) and fills them from `adapter_model.safetensors`.
/// A missing tensor, a shape mismatch (naming the tensor) and an adapter tensor for a module
/// the model lacks are errors.
pub fn load_lora<B: Backend, M: LoraTargets<B>>(model: M, dir: &Path, device: &B::Device) -> Result<(M, LoraConfig)> {
    let (config, _) = read_adapter_config(dir)?;
    let mut model = add_lora(model, &config, device)?;
    let mut ckpt = Checkpoint::open(&dir.join(ADAPTER_WEIGHTS_FILE))?;
    for (path, lin) in model.projections_mut() {
        let Some(lora) = lin.lora.as_mut() else { continue };
        for (which, p) in [("lora_A", &mut lora.lora_a.weight), ("lora_B", &mut lora.lora_b.weight)] {
            let [i, o] = p.lazy_shape().dims::<2>();
            let t = ckpt.tensor::<B, 2>(&tensor_name(&path, which), [o, i], device)?.transpose();
            *p = Param::initialized(p.id, t.require_grad());
        }
    }
    let unused = ckpt.unused(|_| false);
    if let Some(first) = unused.first() {
        return Err(ModelError::InvalidInput {
            what: dir.join(ADAPTER_WEIGHTS_FILE).display().to_string(),
            reason: format!(
                "{} adapter tensors match no adapted module of this `{}` model (first: `{first}`)",
                unused.len(),
                model.lora_model_type()
            ),
        });
    }
    Ok((model, config))
}

/// Merges the PEFT adapter in `adapter_dir` into the HF model in `base_dir` and writes the
/// full model (with the base's `tokenizer.json` when it has one) to `out_dir`, as PEFT's
/// `merge_and_unload().save_pretrained(out_dir)` does.
pub fn merge_to_dir<B: Backend>(base_dir: &Path, adapter_dir: &Path, out_dir: &Path, device: &B::Device) -> Result<()> {
    let loaded = super::load_lm::<B>(base_dir, device)?;
    let (model, _) = load_lora::<B, CausalLm<B>>(loaded.model, adapter_dir, device)?;
    let merged = model.merge_lora();
    let tokenizer =
        if base_dir.join(super::TOKENIZER_FILE).is_file() { Some(TextTokenizer::from_dir(base_dir)?) } else { None };
    super::save_lm(&merged, &loaded.config, out_dir, tokenizer.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt2::Gpt2Config;
    use crate::lora::LoraConfig;
    use tril_core::backend::CpuBackend;

    #[test]
    fn save_then_load_round_trips() {
        let dev = Default::default();
        let model = CausalLm::from(Gpt2Config::tiny().init::<CpuBackend>(&dev));
        let cfg = LoraConfig { r: 3, lora_alpha: 6.0, init_lora_weights: false, ..Default::default() };
        let tuned = model.clone().add_lora(&cfg, &dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_lora(&tuned, &cfg, dir.path(), "gpt2").unwrap();
        let json = read_json(&dir.path().join(ADAPTER_CONFIG_FILE)).unwrap();
        assert_eq!(
            (json["fan_in_fan_out"].as_bool(), json["target_modules"][0].as_str()),
            (Some(true), Some("c_attn"))
        );
        let (back, read) = load_lora(model, dir.path(), &dev).unwrap();
        assert_eq!(read, LoraConfig { target_modules: Some(vec!["c_attn".into()]), ..cfg });
        for ((pa, a), (pb, b)) in tuned.projections().into_iter().zip(back.projections()) {
            assert_eq!(pa, pb);
            match (&a.lora, &b.lora) {
                (Some(a), Some(b)) => {
                    assert_eq!(a.lora_a.weight.val().into_data(), b.lora_a.weight.val().into_data());
                    assert_eq!(a.lora_b.weight.val().into_data(), b.lora_b.weight.val().into_data());
                }
                (None, None) => {}
                _ => panic!("{pa}: adapters differ"),
            }
        }
    }

    #[test]
    fn unsupported_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let write = |j: Value| write_json(&dir.path().join(ADAPTER_CONFIG_FILE), &j).unwrap();
        write(json!({"peft_type": "IA3", "r": 4}));
        assert!(read_adapter_config(dir.path()).unwrap_err().to_string().contains("`peft_type`"));
        write(json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": true}));
        assert!(read_adapter_config(dir.path()).unwrap_err().to_string().contains("`use_dora`"));
        write(json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ".*attn"}));
        assert!(read_adapter_config(dir.path()).unwrap_err().to_string().contains("`target_modules`"));
        write(json!({"peft_type": "LORA", "lora_alpha": 8}));
        assert!(read_adapter_config(dir.path()).unwrap_err().to_string().contains("`r`"));
        write(json!({"peft_type": "LORA", "r": 0, "lora_alpha": 8}));
        let err = read_adapter_config(dir.path()).unwrap_err().to_string();
        assert!(err.contains("adapter_config.json") && err.contains("`r` = 0"), "{err}");
    }
}
