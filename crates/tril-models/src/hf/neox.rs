//! GPT-NeoX / Pythia checkpoints in HF layout: `config.json` + `model.safetensors` (single or
//! sharded, F32/F16/BF16) (+ `tokenizer.json`), for `GPTNeoXForCausalLM` and
//! `GPTNeoXForSequenceClassification`.

use std::path::Path;

use burn::tensor::backend::Backend;
use serde_json::json;

use super::gpt2::Loaded;
use super::{read_json, Checkpoint, JsonConfig, LoadReport, Table, CONFIG_FILE};
use crate::error::{ModelError, Result};
use crate::gpt2::Activation;
use crate::heads::ScoreHeadConfig;
use crate::neox::{NeoXClassifier, NeoXConfig, NeoXModel, NeoXTrunk};
use crate::tokenizer::TextTokenizer;

/// Parse an HF GPT-NeoX `config.json` (`file` is only used in error messages).
///
/// Required: `vocab_size`, `hidden_size`, `num_hidden_layers`, `num_attention_heads`,
/// `intermediate_size`. Optional (HF defaults): `max_position_embeddings` (2048),
/// `layer_norm_eps` (1e-5), `use_parallel_residual` (true), `hidden_act` (`gelu`),
/// `tie_word_embeddings` (false), `attention_bias` (true), `bos_token_id`, `eos_token_id`,
/// `pad_token_id`. Rotary: `rope_parameters.{rope_theta, partial_rotary_factor}` (transformers
/// 5) or else the older `rope_theta` / `rotary_emb_base` (10000) and `rotary_pct` /
/// `partial_rotary_factor` (0.25). Rejected: `model_type` other than `gpt_neox`, any
/// `rope_scaling` but null, a `rope_parameters.rope_type` other than `default`.
pub fn neox_config_from_json(json: &serde_json::Value, file: &Path) -> Result<NeoXConfig> {
    let c = JsonConfig { file, json };
    if c.opt_str("model_type")?.is_some_and(|t| t != "gpt_neox") {
        return Err(c.invalid("model_type", &json["model_type"], "expected \"gpt_neox\""));
    }
    if json.get("rope_scaling").is_some_and(|v| !v.is_null()) {
        return Err(c.invalid("rope_scaling", &json["rope_scaling"], "RoPE scaling is not supported (only null)"));
    }
    let hidden_act = match c.opt_str("hidden_act")? {
        None => Activation::Gelu,
        Some(name) => Activation::from_hf(name).ok_or_else(|| {
            c.invalid(
                "hidden_act",
                &json["hidden_act"],
                "supported: gelu, gelu_new, gelu_fast, gelu_pytorch_tanh, relu",
            )
        })?,
    };
    let (theta, pct, pct_key) = rope(&c)?;
    let cfg = NeoXConfig::new(
        c.usize(&["vocab_size"])?,
        c.usize(&["hidden_size"])?,
        c.usize(&["num_hidden_layers"])?,
        c.usize(&["num_attention_heads"])?,
        c.usize(&["intermediate_size"])?,
    )
    .with_rotary_pct(pct)
    .with_rotary_emb_base(theta)
    .with_max_position_embeddings(c.opt_usize(&["max_position_embeddings"])?.unwrap_or(2048))
    .with_layer_norm_eps(c.opt_f64("layer_norm_eps")?.unwrap_or(1e-5))
    .with_use_parallel_residual(c.opt_bool("use_parallel_residual")?.unwrap_or(true))
    .with_hidden_act(hidden_act)
    .with_tie_word_embeddings(c.opt_bool("tie_word_embeddings")?.unwrap_or(false))
    .with_attention_bias(c.opt_bool("attention_bias")?.unwrap_or(true))
    .with_bos_token_id(c.opt_token_id("bos_token_id")?)
    .with_eos_token_id(c.opt_token_id("eos_token_id")?)
    .with_pad_token_id(c.opt_token_id("pad_token_id")?);
    // `validate` names tril's field; name the key the value was read from instead.
    cfg.validate(file).map_err(|e| match e {
        ModelError::InvalidConfigValue { file, key, value, reason } if key == "rotary_pct" => {
            ModelError::InvalidConfigValue { file, key: pct_key.to_string(), value, reason }
        }
        e => e,
    })?;
    Ok(cfg)
}

/// `(rope_theta, rotary_pct, key rotary_pct was read from)`, from `rope_parameters` when present
/// (what transformers 5 writes), else from the legacy top-level keys.
fn rope(c: &JsonConfig<'_>) -> Result<(f64, f64, &'static str)> {
    let legacy_theta = match c.opt_f64("rope_theta")? {
        Some(t) => Some(t),
        None => c.opt_f64("rotary_emb_base")?,
    };
    let (legacy_pct, legacy_key) = match c.opt_f64("rotary_pct")? {
        Some(p) => (Some(p), "rotary_pct"),
        None => (c.opt_f64("partial_rotary_factor")?, "partial_rotary_factor"),
    };
    let params = match c.json.get("rope_parameters") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) if v.is_object() => Some(v),
        Some(v) => return Err(c.invalid("rope_parameters", v, "expected an object")),
    };
    let Some(params) = params else {
        return Ok((legacy_theta.unwrap_or(10000.0), legacy_pct.unwrap_or(0.25), legacy_key));
    };
    let p = JsonConfig { file: c.file, json: params };
    let nested = |e: ModelError| match e {
        ModelError::InvalidConfigValue { file, key, value, reason } => {
            ModelError::InvalidConfigValue { file, key: format!("rope_parameters.{key}"), value, reason }
        }
        e => e,
    };
    let rope_type = match p.opt_str("rope_type").map_err(nested)? {
        Some(t) => Some(t),
        None => p.opt_str("type").map_err(nested)?,
    };
    if rope_type.is_some_and(|t| t != "default") {
        return Err(c.invalid("rope_parameters", params, "only rope_type \"default\" is supported (no RoPE scaling)"));
    }
    let theta = p.opt_f64("rope_theta").map_err(nested)?.or(legacy_theta).unwrap_or(10000.0);
    match p.opt_f64("partial_rotary_factor").map_err(nested)? {
        Some(pct) => Ok((theta, pct, "rope_parameters.partial_rotary_factor")),
        None => Ok((theta, legacy_pct.unwrap_or(0.25), legacy_key)),
    }
}

/// The parameters of the GPT-NeoX LM `config` describes, counted in f64 (no overflow whatever
/// the sizes): embed_in, embed_out (untied), final norm; per layer two norms, query_key_value,
/// dense (with biases when `attention_bias`), dense_h_to_4h, dense_4h_to_h.
pub fn neox_param_count(config: &NeoXConfig) -> f64 {
    let [v, d, l, i] =
        [config.vocab_size, config.hidden_size, config.num_hidden_layers, config.intermediate_size].map(|x| x as f64);
    let heads = if config.tie_word_embeddings { 1.0 } else { 2.0 };
    let attn_bias = if config.attention_bias { 4.0 * d } else { 0.0 };
    heads * v * d + 2.0 * d + l * (4.0 * d + 4.0 * d * d + attn_bias + 2.0 * d * i + i + d)
}

/// [`Checkpoint::check_config_fits`] for the model `config` describes.
pub(crate) fn check_fits(ckpt: &Checkpoint, file: &Path, config: &NeoXConfig) -> Result<()> {
    let params = neox_param_count(config);
    ckpt.check_config_fits(
        file,
        ("num_hidden_layers", config.num_hidden_layers),
        ("hidden_size", config.hidden_size),
        params,
    )
}

/// Read `dir/config.json` as a GPT-NeoX config.
pub fn read_neox_config(dir: &Path) -> Result<NeoXConfig> {
    let file = dir.join(CONFIG_FILE);
    neox_config_from_json(&read_json(&file)?, &file)
}

/// The `config.json` that transformers needs to rebuild this model as `GPTNeoXForCausalLM`:
/// rotary settings both as transformers 5 writes them (`rope_parameters`) and as the hub's
/// Pythia configs do (`rotary_pct`, `rotary_emb_base`, which transformers 4 reads).
pub fn neox_config_to_json(cfg: &NeoXConfig) -> serde_json::Value {
    json!({
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.hidden_act.hf_name(),
        "max_position_embeddings": cfg.max_position_embeddings,
        "layer_norm_eps": cfg.layer_norm_eps,
        "use_parallel_residual": cfg.use_parallel_residual,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": cfg.attention_bias,
        "rotary_pct": cfg.rotary_pct,
        "rotary_emb_base": cfg.rotary_emb_base,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": cfg.rotary_emb_base,
            "partial_rotary_factor": cfg.rotary_pct,
        },
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "attention_dropout": 0.0,
        "hidden_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": true,
        "dtype": "float32",
    })
}

/// The GPT-NeoX trunk rename table. `p` is the checkpoint prefix (`"gpt_neox."` for
/// `GPTNeoXForCausalLM` / `GPTNeoXForSequenceClassification` files, `""` for bare
/// `GPTNeoXModel` files). All projections are torch `nn.Linear` `[out, in]`, transposed.
///
/// ```text
/// HF name                                                tril parameter                           layout
/// {p}embed_in.weight                                     gpt_neox.embed_in.weight                 [V, D]
/// {p}layers.{i}.input_layernorm.{weight,bias}            layers[i].input_layernorm.{gamma,beta}   [D]
/// {p}layers.{i}.post_attention_layernorm.{weight,bias}   layers[i].post_attention_layernorm       [D]
/// {p}layers.{i}.attention.query_key_value.{weight,bias}  layers[i].attention.query_key_value      [3D, D] (rows [H, 3, hd])
/// {p}layers.{i}.attention.dense.{weight,bias}            layers[i].attention.dense                [D, D]
/// {p}layers.{i}.mlp.dense_h_to_4h.{weight,bias}          layers[i].mlp.dense_h_to_4h              [I, D]
/// {p}layers.{i}.mlp.dense_4h_to_h.{weight,bias}          layers[i].mlp.dense_4h_to_h              [D, I]
/// {p}final_layer_norm.{weight,bias}                      final_layer_norm.{gamma,beta}            [D]
/// embed_out.weight (transformers 5 in memory: lm_head)   embed_out (untied LMs only)              [V, D]
/// score.weight                                           score.score (classifiers only)           [labels, D]
/// ignored: {p}layers.{i}.attention.{bias, masked_bias, rotary_emb.inv_freq}, {p}rotary_emb.inv_freq
///          (buffers), embed_out.weight / lm_head.weight of tied LMs (a copy of embed_in)
/// ```
pub(crate) fn trunk_table<'a, B: Backend>(t: &mut Table<'a, B>, m: &'a mut NeoXTrunk<B>, p: &str) {
    t.embedding(&format!("{p}embed_in.weight"), &mut m.embed_in);
    for (i, l) in m.layers.iter_mut().enumerate() {
        t.layer_norm(&format!("{p}layers.{i}.input_layernorm"), &mut l.input_layernorm);
        t.layer_norm(&format!("{p}layers.{i}.post_attention_layernorm"), &mut l.post_attention_layernorm);
        t.linear(&format!("{p}layers.{i}.attention.query_key_value"), &mut l.attention.query_key_value.base);
        t.linear(&format!("{p}layers.{i}.attention.dense"), &mut l.attention.dense.base);
        t.linear(&format!("{p}layers.{i}.mlp.dense_h_to_4h"), &mut l.mlp.dense_h_to_4h.base);
        t.linear(&format!("{p}layers.{i}.mlp.dense_4h_to_h"), &mut l.mlp.dense_4h_to_h.base);
    }
    t.layer_norm(&format!("{p}final_layer_norm"), &mut m.final_layer_norm);
}

/// The LM rename table (trunk + `embed_out` when untied).
fn lm_table<'a, B: Backend>(m: &'a mut NeoXModel<B>, p: &str) -> Table<'a, B> {
    let mut t = Table::new();
    trunk_table(&mut t, &mut m.gpt_neox, p);
    if let Some(head) = m.embed_out.as_mut() {
        t.linear("embed_out", head);
    }
    t
}

/// Non-parameter buffers that HF GPT-NeoX checkpoints may hold.
pub(crate) fn is_buffer(name: &str) -> bool {
    name.ends_with(".attention.bias")
        || name.ends_with(".attention.masked_bias")
        || name.ends_with("rotary_emb.inv_freq")
}

/// The checkpoint prefix of the trunk (`"gpt_neox."` or `""`).
pub(crate) fn trunk_prefix(ckpt: &Checkpoint) -> Result<&'static str> {
    if ckpt.contains("gpt_neox.embed_in.weight") {
        Ok("gpt_neox.")
    } else if ckpt.contains("embed_in.weight") {
        Ok("")
    } else {
        Err(ModelError::MissingTensor {
            name: "gpt_neox.embed_in.weight".into(),
            location: ckpt.location().to_path_buf(),
        })
    }
}

pub(crate) fn finish(ckpt: &Checkpoint, loaded: usize, ignore: impl Fn(&str) -> bool) -> LoadReport {
    let unused = ckpt.unused(|n| is_buffer(n) || ignore(n));
    if !unused.is_empty() {
        tracing::warn!(location = %ckpt.location().display(), ?unused, "checkpoint tensors not used by the model");
    }
    LoadReport { loaded, unused }
}

/// Load a GPT-NeoX / Pythia LM from an HF-layout directory (`config.json` + safetensors, single
/// or sharded). The untied head is read from `embed_out.weight` (or `lm_head.weight`).
pub fn load_neox<B: Backend>(dir: &Path, device: &B::Device) -> Result<Loaded<NeoXModel<B>, NeoXConfig>> {
    let config = read_neox_config(dir)?;
    let mut ckpt = Checkpoint::open(dir)?;
    let file = dir.join(CONFIG_FILE);
    check_fits(&ckpt, &file, &config)?;
    if !config.tie_word_embeddings && !ckpt.contains("embed_out.weight") && ckpt.contains("lm_head.weight") {
        ckpt.rename(|n| (n == "lm_head.weight").then(|| "embed_out.weight".to_string()));
    }
    let mut model = config.init::<B>(device);
    let p = trunk_prefix(&ckpt)?;
    let loaded = lm_table(&mut model, p).load(&mut ckpt, device)?;
    let tied = config.tie_word_embeddings;
    let report = finish(&ckpt, loaded, |n| tied && (n == "embed_out.weight" || n == "lm_head.weight"));
    Ok(Loaded { model, config, report })
}

/// Load HF `GPTNeoXForSequenceClassification` (`num_labels` from `id2label` or `num_labels`).
pub fn load_neox_classifier<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<Loaded<NeoXClassifier<B>, NeoXConfig>> {
    let file = dir.join(CONFIG_FILE);
    let json = read_json(&file)?;
    let num_labels = super::encoder::num_labels(&json, &file)?;
    let config = neox_config_from_json(&json, &file)?;
    let mut ckpt = Checkpoint::open(dir)?;
    // The classifier has no LM head: count its parameters as a tied LM's (the score is tiny).
    check_fits(&ckpt, &file, &config.clone().with_tie_word_embeddings(true))?;
    let mut model = NeoXClassifier {
        gpt_neox: config.init_trunk(device),
        score: ScoreHeadConfig::new(config.hidden_size, num_labels).init(device),
    };
    let mut t = Table::new();
    trunk_table(&mut t, &mut model.gpt_neox, trunk_prefix(&ckpt)?);
    t.linear("score", &mut model.score.score);
    let loaded = t.load(&mut ckpt, device)?;
    Ok(Loaded { model, config, report: finish(&ckpt, loaded, |_| false) })
}

/// Save a GPT-NeoX LM in HF layout (`transformers.AutoModelForCausalLM.from_pretrained(dir)`
/// loads it): `config.json`, `model.safetensors` in f32 (`gpt_neox.*` and, untied,
/// `embed_out.weight`, as transformers writes them) and, if given, `tokenizer.json`.
pub fn save_neox<B: Backend>(
    model: &NeoXModel<B>,
    config: &NeoXConfig,
    dir: &Path,
    tokenizer: Option<&TextTokenizer>,
) -> Result<()> {
    if model.embed_out.is_some() == config.tie_word_embeddings {
        let reason = format!(
            "tie_word_embeddings = {} but the model has {} LM head",
            config.tie_word_embeddings,
            if model.embed_out.is_some() { "an untied" } else { "a tied" }
        );
        return Err(ModelError::input(dir.display().to_string(), reason));
    }
    let mut m = model.clone();
    super::write_model_dir(dir, neox_config_to_json(config), lm_table(&mut m, "gpt_neox.").export(), tokenizer)
}

/// Save a sequence classifier as HF `GPTNeoXForSequenceClassification` (what
/// [`load_neox_classifier`] and `transformers.AutoModelForSequenceClassification` load): the
/// trunk as `gpt_neox.*`, the bias-free head as `score.weight` `[labels, D]`, and a
/// `config.json` with `id2label`/`label2id` from `labels` (index = label) and `pad_token_id`
/// (the config's, else EOS: HF pools at the last id that is not the pad id).
pub fn save_neox_classifier<B: Backend>(
    model: &NeoXClassifier<B>,
    config: &NeoXConfig,
    labels: &[String],
    dir: &Path,
    tokenizer: Option<&TextTokenizer>,
) -> Result<()> {
    let n = model.num_labels();
    if labels.len() != n {
        return Err(ModelError::input(
            dir.display().to_string(),
            format!("{} label names for a classifier with {n} labels", labels.len()),
        ));
    }
    let mut m = model.clone();
    let mut t = Table::new();
    trunk_table(&mut t, &mut m.gpt_neox, "gpt_neox.");
    t.linear("score", &mut m.score.score);
    let mut json = neox_config_to_json(config);
    json["architectures"] = json!(["GPTNeoXForSequenceClassification"]);
    json["id2label"] = labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
    json["label2id"] = labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
    json["num_labels"] = json!(n);
    json["pad_token_id"] = json!(config.pad_token_id.or(config.eos_token_id));
    super::write_model_dir(dir, json, t.export(), tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::{write_json, SAFETENSORS_FILE};

    fn base() -> serde_json::Value {
        json!({"model_type": "gpt_neox", "vocab_size": 96, "hidden_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 2, "intermediate_size": 64})
    }

    fn err(j: &serde_json::Value) -> String {
        neox_config_from_json(j, Path::new("m/config.json")).unwrap_err().to_string()
    }

    /// `EleutherAI/pythia-70m`'s config.json as on the hub (legacy rotary keys).
    #[test]
    fn pythia_hub_config_parses() {
        let j = json!({
            "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0,
            "hidden_act": "gelu", "hidden_size": 512, "initializer_range": 0.02, "intermediate_size": 2048,
            "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "gpt_neox",
            "num_attention_heads": 8, "num_hidden_layers": 6, "rotary_emb_base": 10000, "rotary_pct": 0.25,
            "tie_word_embeddings": false, "torch_dtype": "float16", "transformers_version": "4.24.0",
            "use_cache": true, "use_parallel_residual": true, "vocab_size": 50304
        });
        let c = neox_config_from_json(&j, Path::new("c.json")).unwrap();
        let p = NeoXConfig::pythia_70m();
        assert_eq!(
            (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size),
            (p.vocab_size, p.hidden_size, p.num_hidden_layers, p.num_attention_heads, p.intermediate_size)
        );
        assert_eq!(
            (c.rotary_ndims(), c.rotary_emb_base, c.hidden_act, c.use_parallel_residual),
            (16, 10000.0, Activation::Gelu, true)
        );
        assert_eq!(
            (c.tie_word_embeddings, c.attention_bias, c.bos_token_id, c.eos_token_id),
            (false, true, Some(0), Some(0))
        );
        // The parameter counts of the Pythia model cards (70,426,624 for pythia-70m).
        assert_eq!(neox_param_count(&c), 70_426_624.0);
        assert_eq!(neox_param_count(&NeoXConfig::pythia_160m()), 162_322_944.0);
        assert_eq!(neox_param_count(&NeoXConfig::pythia_410m()), 405_334_016.0);
    }

    #[test]
    fn rope_keys_new_and_old() {
        let mut j = base();
        j["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 1.0});
        j["rotary_pct"] = json!(0.25); // transformers 5 reads rope_parameters first
        let c = neox_config_from_json(&j, Path::new("c.json")).unwrap();
        assert_eq!((c.rotary_emb_base, c.rotary_pct), (500.0, 1.0));
        let mut j = base();
        j["rope_theta"] = json!(1000);
        let c = neox_config_from_json(&j, Path::new("c.json")).unwrap();
        assert_eq!((c.rotary_emb_base, c.rotary_pct), (1000.0, 0.25));
        let back = neox_config_from_json(&neox_config_to_json(&c), Path::new("x")).unwrap();
        assert_eq!((back.rotary_emb_base, back.rotary_pct, back.hidden_size), (1000.0, 0.25, 32));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("model_type", json!("gpt2"), "`model_type` = \"gpt2\": expected \"gpt_neox\""),
            ("rope_scaling", json!({"type": "linear", "factor": 2.0}), "`rope_scaling` = {"),
            ("rope_parameters", json!({"rope_type": "yarn", "factor": 4.0}), "only rope_type \"default\""),
            ("rope_parameters", json!({"rope_theta": "x"}), "`rope_parameters.rope_theta` = \"x\": expected a number"),
            (
                "rope_parameters",
                json!({"partial_rotary_factor": 0.2}),
                "`rope_parameters.partial_rotary_factor` = 0.2: head_dim 16",
            ),
            ("rotary_pct", json!(2.0), "`rotary_pct` = 2: expected a fraction in [0, 1]"),
            ("rotary_emb_base", json!(-1.0), "`rotary_emb_base` = -1: expected a positive number"),
            ("hidden_act", json!("swish"), "`hidden_act` = \"swish\": supported: gelu"),
            ("num_attention_heads", json!(3), "`num_attention_heads` = 3: must divide hidden_size = 32"),
            ("hidden_size", json!(-32), "`hidden_size` = -32: expected a non-negative integer"),
            ("layer_norm_eps", json!(0.0), "`layer_norm_eps` = 0: expected a positive number"),
            ("use_parallel_residual", json!("yes"), "`use_parallel_residual` = \"yes\": expected true or false"),
            ("eos_token_id", json!(4294967301u64), "`eos_token_id` = 4294967301: expected a token id"),
            ("intermediate_size", json!(0), "`intermediate_size` = 0: must be positive"),
        ];
        for (key, value, expected) in cases {
            let mut j = base();
            j[key] = value;
            let e = err(&j);
            assert!(e.starts_with("m/config.json: ") && e.contains(expected), "{key}: {e}");
        }
        let mut j = base();
        j.as_object_mut().unwrap().remove("intermediate_size");
        assert_eq!(err(&j), "m/config.json: missing config key `intermediate_size`");
    }

    /// Absurd sizes in config.json are errors naming the file and key before any model is built.
    #[test]
    fn absurd_sizes_are_errors_before_allocating() {
        type Cpu = tril_core::backend::CpuBackend;
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/neox/pythia");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture.join(SAFETENSORS_FILE), dir.path().join(SAFETENSORS_FILE)).unwrap();
        let config = read_json(&fixture.join(CONFIG_FILE)).unwrap();
        for (key, value, expected) in [
            ("num_hidden_layers", json!(1_000_000_000u64), "`num_hidden_layers` = 1000000000: more layers than the"),
            ("hidden_size", json!(1u64 << 31), "`hidden_size` = 2147483648: the sizes imply"),
            ("intermediate_size", json!(4_000_000_000u64), "`hidden_size` = 32: the sizes imply"),
            ("vocab_size", json!(4_000_000_000u64), "`hidden_size` = 32: the sizes imply"),
        ] {
            let mut c = config.clone();
            c[key] = value;
            write_json(&dir.path().join(CONFIG_FILE), &c).unwrap();
            let err = load_neox::<Cpu>(dir.path(), &Default::default()).unwrap_err().to_string();
            assert!(err.contains("config.json: ") && err.contains(expected), "{err}");
        }
    }
}
