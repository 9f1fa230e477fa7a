//! Llama, Qwen2 and Mistral checkpoints in HF layout: `config.json` + safetensors (single or
//! sharded; F32, F16 or BF16) (+ `tokenizer.json`).

use std::path::Path;

use burn::nn::RmsNorm;
use burn::tensor::backend::Backend;
use serde_json::{json, Value};

use super::gpt2::Loaded;
use super::{read_json, Checkpoint, Entry, JsonConfig, LoadReport, Slot, Table, CONFIG_FILE};
use crate::error::{ModelError, Result};
use crate::llama::{Llama3RopeScaling, LlamaClassifier, LlamaConfig, LlamaFamily, LlamaModel, LlamaTrunk};
use crate::tokenizer::TextTokenizer;

/// Parse an HF `config.json` with `model_type` `llama`, `qwen2` or `mistral` (`file` is only
/// used in error messages).
///
/// Required: `model_type`, `vocab_size`, `hidden_size`, `intermediate_size`,
/// `num_hidden_layers`, `num_attention_heads`. Optional, with HF's defaults:
/// `num_key_value_heads` (heads; 8 for Mistral), `head_dim` (hidden / heads), `rms_norm_eps`
/// (1e-6), `rope_theta` (10000), `rope_parameters` (transformers 5) or `rope_scaling`
/// (transformers 4) of type `default` or `llama3`, `max_position_embeddings`,
/// `tie_word_embeddings` (false), `attention_bias` and `mlp_bias` (Llama), `sliding_window`
/// (Mistral: 4096 when absent; Qwen2: only with `use_sliding_window`, on layers from
/// `max_window_layers` (28) on), `bos_token_id`, `eos_token_id`, `pad_token_id`.
/// Rejected: `hidden_act` other than `silu`, other RoPE types, `partial_rotary_factor` != 1,
/// a Qwen2 `layer_types` that the window keys do not imply, and sizes
/// [`LlamaConfig::validate`] refuses.
pub fn llama_config_from_json(json: &Value, file: &Path) -> Result<LlamaConfig> {
    let c = JsonConfig { file, json };
    let model_type = c
        .opt_str("model_type")?
        .ok_or_else(|| ModelError::MissingConfigKey { file: file.to_path_buf(), key: "model_type".into() })?;
    let family = LlamaFamily::from_model_type(model_type)
        .ok_or_else(|| c.invalid("model_type", &json["model_type"], "expected \"llama\", \"qwen2\" or \"mistral\""))?;
    if let Some(act) = c.opt_str("hidden_act")? {
        if act != "silu" {
            return Err(c.invalid("hidden_act", &json["hidden_act"], "only \"silu\" is supported"));
        }
    }
    let heads = c.usize(&["num_attention_heads"])?;
    let kv_default = if family == LlamaFamily::Mistral { 8 } else { heads };
    let max_pos_default = match family {
        LlamaFamily::Llama => 2048,
        LlamaFamily::Qwen2 => 32768,
        LlamaFamily::Mistral => 131072,
    };
    let max_positions = c.opt_usize(&["max_position_embeddings"])?.unwrap_or(max_pos_default);
    let (rope_theta, rope_scaling) = rope_from_json(&c, max_positions)?;
    let llama = family == LlamaFamily::Llama;
    let (sliding_window, max_window_layers) = sliding_from_json(&c, family)?;
    let cfg = LlamaConfig::new(
        c.usize(&["vocab_size"])?,
        c.usize(&["hidden_size"])?,
        c.usize(&["intermediate_size"])?,
        c.usize(&["num_hidden_layers"])?,
        heads,
    )
    .with_family(family)
    .with_num_key_value_heads(Some(c.opt_usize(&["num_key_value_heads"])?.unwrap_or(kv_default)))
    .with_head_dim(c.opt_usize(&["head_dim"])?)
    .with_rms_norm_eps(c.opt_f64("rms_norm_eps")?.unwrap_or(1e-6))
    .with_rope_theta(rope_theta)
    .with_rope_scaling(rope_scaling)
    .with_max_position_embeddings(max_positions)
    .with_tie_word_embeddings(c.opt_bool("tie_word_embeddings")?.unwrap_or(false))
    .with_attention_bias(llama && c.opt_bool("attention_bias")?.unwrap_or(false))
    .with_mlp_bias(llama && c.opt_bool("mlp_bias")?.unwrap_or(false))
    .with_sliding_window(sliding_window)
    .with_max_window_layers(max_window_layers)
    .with_bos_token_id(c.opt_token_id("bos_token_id")?)
    .with_eos_token_id(c.opt_token_id("eos_token_id")?)
    .with_pad_token_id(c.opt_token_id("pad_token_id")?);
    cfg.validate(file)?;
    if let Some(types) = json.get("layer_types").filter(|_| family == LlamaFamily::Qwen2) {
        let implied: Vec<Value> = (0..cfg.num_hidden_layers)
            .map(|i| json!(if cfg.layer_window(i).is_some() { "sliding_attention" } else { "full_attention" }))
            .collect();
        if types != &Value::Array(implied.clone()) {
            let reason = format!("only the layer types that the window keys imply are supported: {}", json!(implied));
            return Err(c.invalid("layer_types", types, &reason));
        }
    }
    Ok(cfg)
}

/// RoPE base and scaling from `rope_parameters` (transformers 5, which also holds
/// `rope_theta`) or else `rope_scaling` (transformers 4, `rope_theta` at the top level).
fn rope_from_json(c: &JsonConfig<'_>, max_positions: usize) -> Result<(f64, Option<Llama3RopeScaling>)> {
    let top_theta = c.opt_f64("rope_theta")?;
    let found = ["rope_parameters", "rope_scaling"].into_iter().find_map(|k| match c.json.get(k) {
        None | Some(Value::Null) => None,
        Some(v) => Some((k, v)),
    });
    let Some((key, params)) = found else { return Ok((top_theta.unwrap_or(10000.0), None)) };
    let Some(map) = params.as_object() else { return Err(c.invalid(key, params, "expected an object")) };
    let sub = |name: &str| format!("{key}.{name}");
    if let Some((name, _)) = map.iter().find(|(_, v)| v.is_object()) {
        return Err(c.invalid(&sub(name), &map[name], "per-layer-type RoPE parameters are not supported"));
    }
    let inner = JsonConfig { file: c.file, json: params };
    let named = |e: ModelError| match e {
        ModelError::InvalidConfigValue { file, key, value, reason } => {
            ModelError::InvalidConfigValue { file, key: sub(&key), value, reason }
        }
        ModelError::MissingConfigKey { file, key } => ModelError::MissingConfigKey { file, key: sub(&key) },
        other => other,
    };
    let theta = inner.opt_f64("rope_theta").map_err(named)?.or(top_theta).unwrap_or(10000.0);
    let type_key = if map.contains_key("rope_type") { "rope_type" } else { "type" };
    let rope_type = inner.opt_str(type_key).map_err(named)?.unwrap_or("default");
    if let Some(f) = inner.opt_f64("partial_rotary_factor").map_err(named)? {
        if f != 1.0 {
            return Err(c.invalid(
                &sub("partial_rotary_factor"),
                &map["partial_rotary_factor"],
                "only 1.0 is supported",
            ));
        }
    }
    match rope_type {
        "default" => Ok((theta, None)),
        "llama3" => {
            let num = |name: &str| {
                inner
                    .opt_f64(name)
                    .map_err(named)?
                    .ok_or_else(|| ModelError::MissingConfigKey { file: c.file.to_path_buf(), key: sub(name) })
            };
            let original = match inner.opt_usize(&["original_max_position_embeddings"]).map_err(named)? {
                Some(n) => n,
                None => c.opt_usize(&["original_max_position_embeddings"])?.unwrap_or(max_positions),
            };
            let scaling = Llama3RopeScaling {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: original,
            };
            Ok((theta, Some(scaling)))
        }
        _ => Err(c.invalid(&sub(type_key), &map[type_key], "supported RoPE types: default, llama3")),
    }
}

/// `(sliding_window, max_window_layers)`: Mistral windows every layer (`sliding_window`,
/// 4096 when the key is absent, none when null); Qwen2 only with `use_sliding_window: true`,
/// from layer `max_window_layers` (28) on; Llama never.
fn sliding_from_json(c: &JsonConfig<'_>, family: LlamaFamily) -> Result<(Option<usize>, usize)> {
    let window = |default: Option<usize>| -> Result<Option<usize>> {
        match c.json.get("sliding_window") {
            None => Ok(default),
            Some(_) => c.opt_usize(&["sliding_window"]),
        }
    };
    match family {
        LlamaFamily::Llama => Ok((None, 0)),
        LlamaFamily::Mistral => Ok((window(Some(4096))?, 0)),
        LlamaFamily::Qwen2 if c.opt_bool("use_sliding_window")?.unwrap_or(false) => {
            Ok((window(Some(4096))?, c.opt_usize(&["max_window_layers"])?.unwrap_or(28)))
        }
        LlamaFamily::Qwen2 => Ok((None, c.opt_usize(&["max_window_layers"])?.unwrap_or(28))),
    }
}

/// The `config.json` transformers (4 and 5) needs to rebuild the model; `architecture` is the
/// HF class name. RoPE is written both ways: `rope_parameters` (transformers 5) and
/// `rope_theta` + `rope_scaling` (transformers 4).
pub fn llama_config_to_json(cfg: &LlamaConfig, architecture: &str) -> Value {
    let mut rope = json!({"rope_type": "default", "rope_theta": cfg.rope_theta});
    let scaling = cfg.rope_scaling.map(|s| {
        json!({
            "rope_type": "llama3",
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        })
    });
    if let Some(Value::Object(s)) = &scaling {
        rope.as_object_mut().into_iter().for_each(|r| r.extend(s.clone()));
    }
    let mut j = json!({
        "architectures": [architecture],
        "model_type": cfg.family.model_type(),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.kv_heads(),
        "head_dim": cfg.head_dim(),
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": scaling,
        "rope_parameters": rope,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "use_cache": true,
        "torch_dtype": "float32",
    });
    let extra = match cfg.family {
        LlamaFamily::Llama => json!({"attention_bias": cfg.attention_bias, "mlp_bias": cfg.mlp_bias}),
        LlamaFamily::Mistral => json!({"sliding_window": cfg.sliding_window}),
        LlamaFamily::Qwen2 => json!({
            "use_sliding_window": cfg.sliding_window.is_some(),
            "sliding_window": cfg.sliding_window,
            "max_window_layers": cfg.max_window_layers,
        }),
    };
    if let (Some(j), Value::Object(extra)) = (j.as_object_mut(), extra) {
        j.extend(extra);
    }
    j
}

/// Read `dir/config.json` as a Llama-family config.
pub fn read_llama_config(dir: &Path) -> Result<LlamaConfig> {
    let file = dir.join(CONFIG_FILE);
    llama_config_from_json(&read_json(&file)?, &file)
}

/// The parameters of the causal LM `config` describes, counted in f64 (no overflow whatever the
/// sizes): embeddings, the untied LM head, the final norm; per layer the q/k/v/o projections,
/// the three MLP projections (with the biases the family has) and two norms.
pub fn llama_param_count(config: &LlamaConfig) -> f64 {
    let f = |x: usize| x as f64;
    let (v, d, i, l) =
        (f(config.vocab_size), f(config.hidden_size), f(config.intermediate_size), f(config.num_hidden_layers));
    let (q, kv) = (f(config.num_attention_heads * config.head_dim()), f(config.kv_heads() * config.head_dim()));
    let b = |on: bool| if on { 1.0 } else { 0.0 };
    let attn = d * (q + 2.0 * kv) + q * d + b(config.qkv_bias()) * (q + 2.0 * kv) + b(config.o_bias()) * d;
    let mlp = 3.0 * d * i + b(config.mlp_has_bias()) * (2.0 * i + d);
    let head = if config.tie_word_embeddings { 0.0 } else { v * d };
    v * d + head + d + l * (attn + mlp + 2.0 * d)
}

/// [`Checkpoint::check_config_fits`] for the model `config` describes.
pub(crate) fn check_fits(ckpt: &Checkpoint, file: &Path, config: &LlamaConfig) -> Result<()> {
    let params = llama_param_count(config);
    ckpt.check_config_fits(
        file,
        ("num_hidden_layers", config.num_hidden_layers),
        ("hidden_size", config.hidden_size),
        params,
    )
}

fn rms_norm<'a, B: Backend>(t: &mut Table<'a, B>, name: String, norm: &'a mut RmsNorm<B>) {
    t.0.push(Entry { name, slot: Slot::Vector(&mut norm.gamma) });
}

/// The rename table of the trunk (checkpoint prefix `model.`); torch `nn.Linear` weights are
/// `[out, in]` and are transposed into Burn's `[in, out]`.
///
/// ```text
/// HF name                                             tril parameter                          layout
/// model.embed_tokens.weight                           model.embed_tokens.weight               [V, D]
/// model.layers.{i}.input_layernorm.weight             layers[i].input_layernorm.gamma         [D]
/// model.layers.{i}.self_attn.q_proj.{weight,bias}     layers[i].self_attn.q_proj              [H*hd, D] transposed
/// model.layers.{i}.self_attn.k_proj.{weight,bias}     layers[i].self_attn.k_proj              [Hkv*hd, D] transposed
/// model.layers.{i}.self_attn.v_proj.{weight,bias}     layers[i].self_attn.v_proj              [Hkv*hd, D] transposed
/// model.layers.{i}.self_attn.o_proj.{weight,bias}     layers[i].self_attn.o_proj              [D, H*hd] transposed
/// model.layers.{i}.post_attention_layernorm.weight    layers[i].post_attention_layernorm      [D]
/// model.layers.{i}.mlp.{gate,up}_proj.{weight,bias}   layers[i].mlp.{gate,up}_proj            [I, D] transposed
/// model.layers.{i}.mlp.down_proj.{weight,bias}        layers[i].mlp.down_proj                 [D, I] transposed
/// model.norm.weight                                   model.norm.gamma                        [D]
/// (biases only where the family has them: see LlamaConfig::qkv_bias / o_bias / mlp_has_bias)
/// ignored: lm_head.weight when tied, *.rotary_emb.inv_freq (buffers of old checkpoints)
/// ```
pub(crate) fn trunk_table<'a, B: Backend>(m: &'a mut LlamaTrunk<B>) -> Table<'a, B> {
    let mut t = Table::new();
    t.embedding("model.embed_tokens.weight", &mut m.embed_tokens);
    for (i, l) in m.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{i}");
        rms_norm(&mut t, format!("{p}.input_layernorm.weight"), &mut l.input_layernorm);
        t.linear(&format!("{p}.self_attn.q_proj"), &mut l.self_attn.q_proj.base);
        t.linear(&format!("{p}.self_attn.k_proj"), &mut l.self_attn.k_proj.base);
        t.linear(&format!("{p}.self_attn.v_proj"), &mut l.self_attn.v_proj.base);
        t.linear(&format!("{p}.self_attn.o_proj"), &mut l.self_attn.o_proj.base);
        rms_norm(&mut t, format!("{p}.post_attention_layernorm.weight"), &mut l.post_attention_layernorm);
        t.linear(&format!("{p}.mlp.gate_proj"), &mut l.mlp.gate_proj.base);
        t.linear(&format!("{p}.mlp.up_proj"), &mut l.mlp.up_proj.base);
        t.linear(&format!("{p}.mlp.down_proj"), &mut l.mlp.down_proj.base);
    }
    rms_norm(&mut t, "model.norm.weight".into(), &mut m.norm);
    t
}

/// The causal LM table: the trunk, plus `lm_head.weight` (`[V, D]`, transposed) when untied.
fn lm_table<'a, B: Backend>(m: &'a mut LlamaModel<B>) -> Table<'a, B> {
    let mut t = trunk_table(&mut m.model);
    if let Some(head) = m.lm_head.as_mut() {
        t.linear("lm_head", head);
    }
    t
}

pub(crate) fn finish(ckpt: &Checkpoint, loaded: usize) -> LoadReport {
    let unused = ckpt.unused(|n| n == "lm_head.weight" || n.ends_with("rotary_emb.inv_freq"));
    if !unused.is_empty() {
        tracing::warn!(location = %ckpt.location().display(), ?unused, "checkpoint tensors not used by the model");
    }
    LoadReport { loaded, unused }
}

/// Load a Llama / Qwen2 / Mistral causal LM from an HF-layout directory (`config.json` +
/// safetensors, single or sharded).
pub fn load_llama<B: Backend>(dir: &Path, device: &B::Device) -> Result<Loaded<LlamaModel<B>, LlamaConfig>> {
    let config = read_llama_config(dir)?;
    let mut ckpt = Checkpoint::open(dir)?;
    check_fits(&ckpt, &dir.join(CONFIG_FILE), &config)?;
    let mut model = config.init::<B>(device);
    let loaded = lm_table(&mut model).load(&mut ckpt, device)?;
    Ok(Loaded { model, config, report: finish(&ckpt, loaded) })
}

/// Load HF `LlamaForSequenceClassification` (or the Qwen2 / Mistral one): `num_labels` from
/// `id2label` or `num_labels`, pooling at the last token that is not `pad_token_id`.
pub fn load_llama_classifier<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<Loaded<LlamaClassifier<B>, LlamaConfig>> {
    let file = dir.join(CONFIG_FILE);
    let json = read_json(&file)?;
    let num_labels = super::encoder::num_labels(&json, &file)?;
    let config = llama_config_from_json(&json, &file)?;
    let mut ckpt = Checkpoint::open(dir)?;
    let trunk_only = config.clone().with_tie_word_embeddings(true); // no lm_head in a classifier
    check_fits(&ckpt, &file, &trunk_only)?;
    let mut model = config.init_classifier::<B>(num_labels, device);
    let mut t = trunk_table(&mut model.model);
    t.linear("score", &mut model.score.score);
    let loaded = t.load(&mut ckpt, device)?;
    Ok(Loaded { model, config, report: finish(&ckpt, loaded) })
}

/// Save a causal LM in HF layout (`transformers.AutoModelForCausalLM.from_pretrained(dir)`
/// loads it): `config.json`, `model.safetensors` in f32 (no `lm_head.weight` when tied, as
/// transformers writes it) and, if given, `tokenizer.json`. The model must match `config`'s
/// `tie_word_embeddings`.
pub fn save_llama<B: Backend>(
    model: &LlamaModel<B>,
    config: &LlamaConfig,
    dir: &Path,
    tokenizer: Option<&TextTokenizer>,
) -> Result<()> {
    if model.lm_head.is_none() != config.tie_word_embeddings {
        let reason = format!(
            "config says tie_word_embeddings = {} but the model {} an lm_head",
            config.tie_word_embeddings,
            if model.lm_head.is_some() { "has" } else { "has no" }
        );
        return Err(ModelError::input(dir.display().to_string(), reason));
    }
    let mut m = model.clone();
    let tensors = lm_table(&mut m).export();
    let arch = format!("{}ForCausalLM", config.family.class_prefix());
    super::write_model_dir(dir, llama_config_to_json(config, &arch), tensors, tokenizer)
}

/// Save a sequence classifier as HF `{Llama,Qwen2,Mistral}ForSequenceClassification` (what
/// [`load_llama_classifier`] and `transformers.AutoModelForSequenceClassification` load): the
/// trunk as `model.*`, the bias-free head as `score.weight` `[labels, D]`, `id2label` /
/// `label2id` from `labels` (index = label) and the classifier's `pad_token_id`.
pub fn save_llama_classifier<B: Backend>(
    model: &LlamaClassifier<B>,
    config: &LlamaConfig,
    labels: &[String],
    dir: &Path,
    tokenizer: Option<&TextTokenizer>,
) -> Result<()> {
    let n = model.score.score.weight.dims()[1];
    if labels.len() != n {
        return Err(ModelError::input(
            dir.display().to_string(),
            format!("{} label names for a classifier with {n} labels", labels.len()),
        ));
    }
    let mut m = model.clone();
    let mut t = trunk_table(&mut m.model);
    t.linear("score", &mut m.score.score);
    let mut json = llama_config_to_json(config, &format!("{}ForSequenceClassification", config.family.class_prefix()));
    json["id2label"] = labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
    json["label2id"] = labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
    json["num_labels"] = json!(n);
    json["pad_token_id"] = json!(model.pad_token_id);
    super::write_model_dir(dir, json, t.export(), tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({
            "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        })
    }

    fn err(edit: impl FnOnce(&mut Value)) -> String {
        let mut j = base();
        edit(&mut j);
        llama_config_from_json(&j, Path::new("m/config.json")).unwrap_err().to_string()
    }

    #[test]
    fn unsupported_rope_type_names_key_and_value() {
        let e = err(|j| j["rope_scaling"] = json!({"type": "yarn", "factor": 4.0}));
        assert!(e.contains("m/config.json: config key `rope_scaling.type` = \"yarn\"") && e.contains("llama3"), "{e}");
        let e = err(|j| j["rope_parameters"] = json!({"rope_type": "dynamic", "rope_theta": 1e4}));
        assert!(e.contains("`rope_parameters.rope_type` = \"dynamic\""), "{e}");
        let e = err(|j| j["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}));
        assert!(e.contains("missing config key `rope_scaling.high_freq_factor`"), "{e}");
    }

    #[test]
    fn hidden_act_must_be_silu() {
        let e = err(|j| j["hidden_act"] = json!("gelu"));
        assert!(e.contains("`hidden_act` = \"gelu\": only \"silu\" is supported"), "{e}");
        let e = err(|j| j["model_type"] = json!("gpt2"));
        assert!(e.contains("`model_type` = \"gpt2\""), "{e}");
    }

    #[test]
    fn absurd_sizes_are_errors() {
        let e = err(|j| j["num_key_value_heads"] = json!(3));
        assert!(e.contains("`num_key_value_heads` = 3: must divide num_attention_heads = 4"), "{e}");
        let e = err(|j| j["hidden_size"] = json!(1u64 << 40));
        assert!(e.contains("`hidden_size` = 1099511627776: expected a non-negative integer below 2^32"), "{e}");
        let e = err(|j| j["rms_norm_eps"] = json!(-1.0));
        assert!(e.contains("`rms_norm_eps` = -1"), "{e}");
        let e = err(|j| j["num_attention_heads"] = json!(0));
        assert!(e.contains("`num_attention_heads` = 0"), "{e}");
        let e = err(|j| {
            j["rope_scaling"] =
                json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0})
        });
        assert!(e.contains("`rope_scaling.high_freq_factor` = 1"), "{e}");
        let e = err(|j| j.as_object_mut().unwrap().remove("intermediate_size").map(|_| ()).unwrap_or(()));
        assert!(e.contains("missing config key `intermediate_size`"), "{e}");
    }

    #[test]
    fn families_defaults_and_round_trip() {
        let mut j = base();
        j["model_type"] = json!("mistral");
        let c = llama_config_from_json(&j, Path::new("c")).unwrap();
        assert_eq!((c.sliding_window, c.qkv_bias(), c.max_position_embeddings), (Some(4096), false, 131072));
        j["model_type"] = json!("qwen2");
        j["use_sliding_window"] = json!(true);
        j["sliding_window"] = json!(16);
        j["max_window_layers"] = json!(1);
        let c = llama_config_from_json(&j, Path::new("c")).unwrap();
        assert_eq!((c.layer_window(0), c.layer_window(1), c.qkv_bias(), c.o_bias()), (None, Some(16), true, false));
        j["layer_types"] = json!(["sliding_attention", "sliding_attention"]);
        let e = llama_config_from_json(&j, Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("`layer_types`"), "{e}");
        for cfg in [LlamaConfig::llama3_2_1b(), LlamaConfig::qwen2_5_0_5b(), c] {
            let back = llama_config_from_json(&llama_config_to_json(&cfg, "X"), Path::new("x")).unwrap();
            assert_eq!(llama_config_to_json(&back, "X"), llama_config_to_json(&cfg, "X"));
        }
        assert!((llama_param_count(&LlamaConfig::llama3_2_1b()) - 1.2358e9).abs() < 1e6);
        // transformers 4 layout: `rope_scaling` with `type`, `rope_theta` at the top level.
        let mut j = base();
        j["rope_theta"] = json!(500000.0);
        j["max_position_embeddings"] = json!(4096);
        j["rope_scaling"] = json!({"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0});
        let c = llama_config_from_json(&j, Path::new("c")).unwrap();
        let want = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 4096,
        };
        assert_eq!((c.rope_theta, c.rope_scaling), (500000.0, Some(want)));
    }
}
