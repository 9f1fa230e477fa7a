//! Causal LMs of any family in HF layout, dispatched on `config.json`'s `model_type`: the LM
//! ([`load_lm`], [`save_lm`]), a critic with a value head ([`load_value_model`],
//! [`save_value_model`]) and a sequence classifier ([`load_lm_classifier`],
//! [`save_lm_classifier`]). Trainers call these and never an architecture's own loader.
//!
//! | `model_type` | HF classes | trunk prefix in files |
//! |---|---|---|
//! | `gpt2` (or absent, for old GPT-2 files) | `GPT2LMHeadModel`, `GPT2ForSequenceClassification` | `transformer.` (or none) |
//! | `gpt_neox` (Pythia) | `GPTNeoXForCausalLM`, `GPTNeoXForSequenceClassification` | `gpt_neox.` (or none) |
//! | `llama` (Llama 2/3, Salamandra), `qwen2`, `mistral` | `{Llama,Qwen2,Mistral}ForCausalLM`, `...ForSequenceClassification` | `model.` |
//!
//! A critic or classifier reads the trunk only: an untied LM head in its checkpoint is skipped
//! on purpose (and its own head, unused, is never materialised).

use std::path::Path;

use burn::tensor::backend::Backend;
use serde_json::json;

use super::gpt2::{self as g, Loaded};
use super::llama as ll;
use super::neox as nx;
use super::{read_json, Checkpoint, JsonConfig, LoadReport, Table, CONFIG_FILE};
use crate::causal_lm::{CausalLm, LmConfig};
use crate::error::{ModelError, Result};
use crate::heads::{LmClassifier, ScoreHeadConfig, ValueHead, ValueHeadConfig, ValueModel};
use crate::tokenizer::TextTokenizer;

/// The `model_type`s tril loads as causal LMs.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["gpt2", "gpt_neox", "llama", "qwen2", "mistral"];

/// Parse a causal LM `config.json` of any supported family (`file` is only used in errors).
pub fn lm_config_from_json(json: &serde_json::Value, file: &Path) -> Result<LmConfig> {
    let c = JsonConfig { file, json };
    match c.opt_str("model_type")? {
        None | Some("gpt2") => Ok(LmConfig::Gpt2(g::gpt2_config_from_json(json, file)?)),
        Some("gpt_neox") => Ok(LmConfig::NeoX(nx::neox_config_from_json(json, file)?)),
        Some("llama" | "qwen2" | "mistral") => Ok(LmConfig::Llama(ll::llama_config_from_json(json, file)?)),
        Some(_) => Err(c.invalid(
            "model_type",
            &json["model_type"],
            &format!("tril does not know this architecture; supported: {}", SUPPORTED_MODEL_TYPES.join(", ")),
        )),
    }
}

/// Read `dir/config.json` as a causal LM config.
pub fn read_lm_config(dir: &Path) -> Result<LmConfig> {
    let file = dir.join(CONFIG_FILE);
    lm_config_from_json(&read_json(&file)?, &file)
}

/// Refuse a config whose trunk the checkpoint cannot hold, before allocating anything.
fn check_fits(ckpt: &Checkpoint, file: &Path, config: &LmConfig) -> Result<()> {
    match config {
        LmConfig::Gpt2(c) => g::check_fits(ckpt, file, c),
        LmConfig::NeoX(c) => nx::check_fits(ckpt, file, &c.clone().with_tie_word_embeddings(true)),
        LmConfig::Llama(c) => ll::check_fits(ckpt, file, &c.clone().with_tie_word_embeddings(true)),
    }
}

/// The rename table of a trunk read from `ckpt` (its prefix is detected), or written with the
/// family's standard prefix when `ckpt` is `None`.
fn trunk_table<'a, B: Backend>(m: &'a mut CausalLm<B>, ckpt: Option<&Checkpoint>) -> Result<Table<'a, B>> {
    match m {
        CausalLm::Gpt2(m) => {
            let prefix = match ckpt {
                Some(ckpt) => g::trunk_prefix(ckpt)?,
                None => "transformer.",
            };
            Ok(g::gpt2_table(m, prefix))
        }
        CausalLm::NeoX(m) => {
            let prefix = match ckpt {
                Some(ckpt) => nx::trunk_prefix(ckpt)?,
                None => "gpt_neox.",
            };
            let mut t = Table::new();
            nx::trunk_table(&mut t, &mut m.gpt_neox, prefix);
            Ok(t)
        }
        CausalLm::Llama(m) => Ok(ll::trunk_table(&mut m.model)),
    }
}

/// Tensors of a checkpoint the family does not load on purpose (buffers, tied heads).
fn finish(ckpt: &Checkpoint, config: &LmConfig, loaded: usize) -> LoadReport {
    match config {
        LmConfig::Gpt2(_) => g::finish(ckpt, loaded),
        LmConfig::NeoX(_) => nx::finish(ckpt, loaded, |n| n == "embed_out.weight" || n == "lm_head.weight"),
        LmConfig::Llama(_) => ll::finish(ckpt, loaded),
    }
}

/// A model saved with another family's config.
fn mismatch<B: Backend>(model: &CausalLm<B>, config: &LmConfig, dir: &Path) -> ModelError {
    ModelError::input(
        dir.display().to_string(),
        format!("a {} model cannot be saved with a {} config", model.model_type(), config.model_type()),
    )
}

/// Value-head rename table: `v_head.weight` (linear head) or `v_head.0.*` / `v_head.2.*` (the
/// MLP head as an `nn.Sequential(Linear, ReLU, Linear)`), torch `[out, in]` layout.
fn value_head_table<'a, B: Backend>(t: &mut Table<'a, B>, head: &'a mut ValueHead<B>) {
    match head.hidden.as_mut() {
        Some(hidden) => {
            t.linear("v_head.0", hidden);
            t.linear("v_head.2", &mut head.out);
        }
        None => t.linear("v_head", &mut head.out),
    }
}

/// Load a causal LM of any supported family from an HF-layout directory (`config.json` +
/// safetensors, single or sharded; f32, f16 or bf16 weights).
pub fn load_lm<B: Backend>(dir: &Path, device: &B::Device) -> Result<Loaded<CausalLm<B>, LmConfig>> {
    match read_lm_config(dir)? {
        LmConfig::Gpt2(_) => {
            let l = g::load_gpt2::<B>(dir, device)?;
            Ok(Loaded { model: l.model.into(), config: l.config.into(), report: l.report })
        }
        LmConfig::NeoX(_) => {
            let l = nx::load_neox::<B>(dir, device)?;
            Ok(Loaded { model: l.model.into(), config: l.config.into(), report: l.report })
        }
        LmConfig::Llama(_) => {
            let l = ll::load_llama::<B>(dir, device)?;
            Ok(Loaded { model: l.model.into(), config: l.config.into(), report: l.report })
        }
    }
}

/// Save a causal LM in HF layout (`config.json`, `model.safetensors` and, if given,
/// `tokenizer.json`); `transformers.AutoModelForCausalLM.from_pretrained(dir)` loads it.
pub fn save_lm<B: Backend>(
    model: &CausalLm<B>,
    config: &LmConfig,
    dir: &Path,
    tokenizer: Option<&TextTokenizer>,
) -> Result<()> {
    match (model, config) {
        (CausalLm::Gpt2(m), LmConfig::Gpt2(c)) => g::save_gpt2(m, c, dir, tokenizer),
        (CausalLm::NeoX(m), LmConfig::NeoX(c)) => nx::save_neox(m, c, dir, tokenizer),
        (CausalLm::Llama(m), LmConfig::Llama(c)) => ll::save_llama(m, c, dir, tokenizer),
        (m, c) => Err(mismatch(m, c, dir)),
    }
}

/// Load a critic: the trunk from `dir`, and the value head from it when the checkpoint has
/// `v_head.*` tensors (as [`save_value_model`] writes), else a fresh head (TRIL builds its
/// critic from the policy's LM checkpoint this way).
pub fn load_value_model<B: Backend>(
    dir: &Path,
    mlp_head: bool,
    device: &B::Device,
) -> Result<Loaded<ValueModel<B>, LmConfig>> {
    let config = read_lm_config(dir)?;
    let mut ckpt = Checkpoint::open(dir)?;
    check_fits(&ckpt, &dir.join(CONFIG_FILE), &config)?;
    let mut model = ValueModel {
        transformer: config.init(device),
        v_head: ValueHeadConfig::new(config.d_model()).with_mlp(mlp_head).init(device),
    };
    let has_head = ckpt.names().any(|n| n.starts_with("v_head."));
    let mut t = trunk_table(&mut model.transformer, Some(&ckpt))?;
    if has_head {
        value_head_table(&mut t, &mut model.v_head);
    }
    let loaded = t.load(&mut ckpt, device)?;
    let report = finish(&ckpt, &config, loaded);
    Ok(Loaded { model, config, report })
}

/// Save a critic: the trunk as [`save_lm`] does plus `v_head.*` tensors; the directory still
/// loads in transformers as a causal LM (the value head is reported as unexpected there).
pub fn save_value_model<B: Backend>(
    model: &ValueModel<B>,
    config: &LmConfig,
    dir: &Path,
    tokenizer: Option<&TextTokenizer>,
) -> Result<()> {
    if model.transformer.model_type() != config.model_type() {
        return Err(mismatch(&model.transformer, config, dir));
    }
    let mut m = model.clone();
    let mut t = trunk_table(&mut m.transformer, None)?;
    value_head_table(&mut t, &mut m.v_head);
    super::write_model_dir(dir, config.to_json(), t.export(), tokenizer)
}

/// Load HF `*ForSequenceClassification` (`num_labels` from `id2label` or `num_labels`).
pub fn load_lm_classifier<B: Backend>(dir: &Path, device: &B::Device) -> Result<Loaded<LmClassifier<B>, LmConfig>> {
    let file = dir.join(CONFIG_FILE);
    let json = read_json(&file)?;
    let num_labels = super::encoder::num_labels(&json, &file)?;
    let config = lm_config_from_json(&json, &file)?;
    let mut ckpt = Checkpoint::open(dir)?;
    check_fits(&ckpt, &file, &config)?;
    let mut model = LmClassifier {
        transformer: config.init(device),
        score: ScoreHeadConfig::new(config.d_model(), num_labels).init(device),
    };
    let mut t = trunk_table(&mut model.transformer, Some(&ckpt))?;
    t.linear("score", &mut model.score.score);
    let loaded = t.load(&mut ckpt, device)?;
    let report = finish(&ckpt, &config, loaded);
    Ok(Loaded { model, config, report })
}

/// Save a sequence classifier as HF `*ForSequenceClassification` (what [`load_lm_classifier`]
/// and `transformers.AutoModelForSequenceClassification` load): the trunk, the bias-free head
/// as `score.weight` `[labels, D]`, and a `config.json` with `id2label`/`label2id` from `labels`
/// (index = label) and `pad_token_id` = EOS, as causal LM classifiers are padded.
pub fn save_lm_classifier<B: Backend>(
    model: &LmClassifier<B>,
    config: &LmConfig,
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
    if model.transformer.model_type() != config.model_type() {
        return Err(mismatch(&model.transformer, config, dir));
    }
    let mut m = model.clone();
    let mut t = trunk_table(&mut m.transformer, None)?;
    t.linear("score", &mut m.score.score);
    let mut json = config.to_json();
    let class = match config {
        LmConfig::Gpt2(_) => "GPT2ForSequenceClassification",
        LmConfig::NeoX(_) => "GPTNeoXForSequenceClassification",
        LmConfig::Llama(c) => &format!("{}ForSequenceClassification", c.family.class_prefix()),
    };
    json["architectures"] = json!([class]);
    json["id2label"] = labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
    json["label2id"] = labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
    json["num_labels"] = json!(n);
    json["pad_token_id"] = json!(config.pad_token_id().or(config.eos_token_id()));
    super::write_model_dir(dir, json, t.export(), tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt2::Gpt2Config;

    #[test]
    fn classifier_round_trips_through_its_hf_directory() {
        use burn::tensor::{Int, Tensor, TensorData};
        type Cpu = tril_core::backend::CpuBackend;
        let device = Default::default();
        let config = LmConfig::from(Gpt2Config::new(11, 16, 8, 1, 2));
        let model =
            LmClassifier::<Cpu> { transformer: config.init(&device), score: ScoreHeadConfig::new(8, 3).init(&device) };
        let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(vec![1i64, 4, 7, 2, 9, 0], [2, 3]), &device);
        let mask = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(vec![1i64, 1, 1, 1, 1, 0], [2, 3]), &device);
        // The forward pass materialises the lazily initialised parameters before saving.
        let a = model.forward(ids.clone(), Some(mask.clone())).into_data().to_vec::<f32>().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let labels = ["a", "b", "c"].map(String::from);
        save_lm_classifier(&model, &config, &labels, dir.path(), None).unwrap();
        let loaded = load_lm_classifier::<Cpu>(dir.path(), &device).unwrap();
        assert!(loaded.report.unused.is_empty(), "{:?}", loaded.report.unused);
        let json = read_json(&dir.path().join(CONFIG_FILE)).unwrap();
        assert_eq!((json["id2label"]["2"].as_str(), json["label2id"]["b"].as_u64()), (Some("c"), Some(1)));
        assert_eq!(json["architectures"][0], "GPT2ForSequenceClassification");
        let b = loaded.model.forward(ids, Some(mask)).into_data().to_vec::<f32>().unwrap();
        // The weights round-trip exactly; the outputs may differ in the last bit because a
        // reloaded tensor can have another memory layout, which flex multiplies in another order.
        let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(max < 1e-6, "saved and reloaded classifiers disagree: {a:?} vs {b:?}");
        let err = save_lm_classifier(&model, &config, &labels[..2], dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("2 label names for a classifier with 3 labels"), "{err}");
    }

    #[test]
    fn unknown_model_type_lists_the_supported_ones() {
        let j = json!({"model_type": "bloom", "vocab_size": 10});
        let err = lm_config_from_json(&j, Path::new("m/config.json")).unwrap_err().to_string();
        assert!(err.contains("m/config.json") && err.contains("`model_type` = \"bloom\""), "{err}");
        assert!(err.contains("supported: gpt2"), "{err}");
    }
}
