//! BERT / RoBERTa / DistilBERT encoders in HF layout: sequence classifiers
//! ([`load_encoder_classifier`], [`save_encoder_classifier`]) and bare encoders
//! ([`load_encoder`], from any of `AutoModel` / `*Model` / `*ForMaskedLM` /
//! `*ForSequenceClassification` checkpoints).

use std::path::Path;

use burn::tensor::backend::Backend;
use serde_json::json;

use super::gpt2::Loaded;
use super::{
    read_json, write_json, write_safetensors, Checkpoint, JsonConfig, LoadReport, Table, CONFIG_FILE, SAFETENSORS_FILE,
    TOKENIZER_FILE,
};
use crate::bert::{Encoder, EncoderClassifier, EncoderConfig, EncoderEmbeddings, EncoderKind, EncoderLayer};
use crate::error::{ModelError, Result};
use crate::gpt2::Activation;
use crate::tokenizer::TextTokenizer;

/// Number of labels: `len(id2label)`, else `num_labels`, else 2 (HF's default).
pub fn num_labels(json: &serde_json::Value, file: &Path) -> Result<usize> {
    if let Some(map) = json.get("id2label").and_then(|m| m.as_object()) {
        return Ok(map.len());
    }
    Ok(JsonConfig { file, json }.opt_usize(&["num_labels"])?.unwrap_or(2))
}

fn labels(json: &serde_json::Value) -> Vec<String> {
    let Some(map) = json.get("id2label").and_then(|m| m.as_object()) else { return Vec::new() };
    let mut pairs: Vec<(usize, String)> =
        map.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str().unwrap_or_default().to_string()))).collect();
    pairs.sort();
    pairs.into_iter().map(|(_, v)| v).collect()
}

/// Parse a BERT (`model_type: bert`), RoBERTa (`roberta`) or DistilBERT (`distilbert`)
/// `config.json`. RoBERTa's positions start at `pad_token_id + 1` (HF default pad 1).
pub fn encoder_config_from_json(json: &serde_json::Value, file: &Path) -> Result<EncoderConfig> {
    let c = JsonConfig { file, json };
    let kind = match c.opt_str("model_type")? {
        Some("bert") => EncoderKind::Bert,
        Some("distilbert") => EncoderKind::DistilBert,
        Some("roberta") => EncoderKind::Roberta,
        Some(_) => {
            return Err(c.invalid(
                "model_type",
                &json["model_type"],
                "expected \"bert\", \"roberta\" or \"distilbert\"",
            ))
        }
        None => return Err(ModelError::MissingConfigKey { file: file.to_path_buf(), key: "model_type".into() }),
    };
    let act_key = if kind == EncoderKind::DistilBert { "activation" } else { "hidden_act" };
    let activation = match c.opt_str(act_key)? {
        None => Activation::Gelu,
        Some(name) => Activation::from_hf(name)
            .ok_or_else(|| c.invalid(act_key, &json[act_key], "supported: gelu, gelu_new, relu"))?,
    };
    let cfg = match kind {
        EncoderKind::Bert | EncoderKind::Roberta => EncoderConfig::new(
            kind,
            c.usize(&["vocab_size"])?,
            c.usize(&["hidden_size"])?,
            c.usize(&["num_hidden_layers"])?,
            c.usize(&["num_attention_heads"])?,
            c.usize(&["intermediate_size"])?,
            c.usize(&["max_position_embeddings"])?,
            num_labels(json, file)?,
        )
        .with_type_vocab_size(c.opt_usize(&["type_vocab_size"])?.unwrap_or(2))
        .with_layer_norm_eps(c.opt_f64("layer_norm_eps")?.unwrap_or(1e-12))
        .with_position_offset(match kind {
            EncoderKind::Roberta => c.opt_usize(&["pad_token_id"])?.unwrap_or(1) + 1,
            _ => 0,
        }),
        EncoderKind::DistilBert => {
            if c.opt_bool("sinusoidal_pos_embds")? == Some(true) {
                return Err(c.invalid(
                    "sinusoidal_pos_embds",
                    &json["sinusoidal_pos_embds"],
                    "only learned position embeddings are supported",
                ));
            }
            EncoderConfig::new(
                kind,
                c.usize(&["vocab_size"])?,
                c.usize(&["dim"])?,
                c.usize(&["n_layers"])?,
                c.usize(&["n_heads"])?,
                c.usize(&["hidden_dim"])?,
                c.usize(&["max_position_embeddings"])?,
                num_labels(json, file)?,
            )
            .with_type_vocab_size(0)
        }
    };
    if cfg.num_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_heads) {
        return Err(ModelError::InvalidConfigValue {
            file: file.to_path_buf(),
            key: "num_heads".into(),
            value: cfg.num_heads.to_string(),
            reason: format!("must divide the width {}", cfg.hidden_size),
        });
    }
    Ok(cfg.with_activation(activation).with_labels(labels(json)))
}

/// The rename table of the encoders (all weights are torch `nn.Linear`, stored `[out, in]`).
/// `{p}` is the checkpoint's prefix: `bert.`, `roberta.`, `distilbert.` or none (`AutoModel`).
///
/// ```text
/// BERT / RoBERTa                                     DistilBERT                                     tril
/// {p}embeddings.word_embeddings.weight               {p}embeddings.word_embeddings.weight           embeddings.word
/// {p}embeddings.position_embeddings.weight           {p}embeddings.position_embeddings.weight       embeddings.position
/// {p}embeddings.token_type_embeddings.weight         -                                              embeddings.token_type
/// {p}embeddings.LayerNorm                            {p}embeddings.LayerNorm                        embeddings.layer_norm
/// {p}encoder.layer.{i}.attention.self.query          {p}transformer.layer.{i}.attention.q_lin       layers[i].query
/// {p}encoder.layer.{i}.attention.self.key            ...attention.k_lin                             layers[i].key
/// {p}encoder.layer.{i}.attention.self.value          ...attention.v_lin                             layers[i].value
/// {p}encoder.layer.{i}.attention.output.dense        ...attention.out_lin                           layers[i].attn_out
/// {p}encoder.layer.{i}.attention.output.LayerNorm    ...sa_layer_norm                               layers[i].attn_norm
/// {p}encoder.layer.{i}.intermediate.dense            ...ffn.lin1                                    layers[i].ffn_in
/// {p}encoder.layer.{i}.output.dense                  ...ffn.lin2                                    layers[i].ffn_out
/// {p}encoder.layer.{i}.output.LayerNorm              ...output_layer_norm                           layers[i].ffn_norm
/// classifier only:
/// bert.pooler.dense | roberta: classifier.dense      pre_classifier                                 pooler
/// classifier        | roberta: classifier.out_proj   classifier                                     classifier
/// legacy names: `*.LayerNorm.gamma` / `.beta` are read as `.weight` / `.bias`
/// ignored: *.embeddings.position_ids (buffer)
/// ```
fn trunk_table<'a, B: Backend>(
    t: &mut Table<'a, B>,
    e: &'a mut EncoderEmbeddings<B>,
    layers: &'a mut [EncoderLayer<B>],
    kind: EncoderKind,
    p: &str,
) {
    t.embedding(&format!("{p}embeddings.word_embeddings.weight"), &mut e.word);
    t.embedding(&format!("{p}embeddings.position_embeddings.weight"), &mut e.position);
    if let Some(tt) = e.token_type.as_mut() {
        t.embedding(&format!("{p}embeddings.token_type_embeddings.weight"), tt);
    }
    t.layer_norm(&format!("{p}embeddings.LayerNorm"), &mut e.layer_norm);
    let distil = kind == EncoderKind::DistilBert;
    let names: [&str; 8] = if distil {
        [
            "attention.q_lin",
            "attention.k_lin",
            "attention.v_lin",
            "attention.out_lin",
            "sa_layer_norm",
            "ffn.lin1",
            "ffn.lin2",
            "output_layer_norm",
        ]
    } else {
        [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ]
    };
    for (i, l) in layers.iter_mut().enumerate() {
        let p = if distil { format!("{p}transformer.layer.{i}") } else { format!("{p}encoder.layer.{i}") };
        t.linear(&format!("{p}.{}", names[0]), &mut l.query);
        t.linear(&format!("{p}.{}", names[1]), &mut l.key);
        t.linear(&format!("{p}.{}", names[2]), &mut l.value);
        t.linear(&format!("{p}.{}", names[3]), &mut l.attn_out);
        t.layer_norm(&format!("{p}.{}", names[4]), &mut l.attn_norm);
        t.linear(&format!("{p}.{}", names[5]), &mut l.ffn_in);
        t.linear(&format!("{p}.{}", names[6]), &mut l.ffn_out);
        t.layer_norm(&format!("{p}.{}", names[7]), &mut l.ffn_norm);
    }
}

/// The `*ForSequenceClassification` prefix of each family.
fn classifier_prefix(kind: EncoderKind) -> &'static str {
    match kind {
        EncoderKind::Bert => "bert.",
        EncoderKind::Roberta => "roberta.",
        EncoderKind::DistilBert => "distilbert.",
    }
}

/// The classifier's table: trunk (see [`trunk_table`]) plus head.
fn encoder_table<'a, B: Backend>(m: &'a mut EncoderClassifier<B>) -> Table<'a, B> {
    let mut t = Table::new();
    let kind = m.kind;
    trunk_table(&mut t, &mut m.embeddings, &mut m.layers, kind, classifier_prefix(kind));
    let (pooler, classifier) = match kind {
        EncoderKind::Bert => ("bert.pooler.dense", "classifier"),
        EncoderKind::Roberta => ("classifier.dense", "classifier.out_proj"),
        EncoderKind::DistilBert => ("pre_classifier", "classifier"),
    };
    t.linear(pooler, &mut m.pooler);
    t.linear(classifier, &mut m.classifier);
    t
}

fn rename_legacy_layer_norm(ckpt: &mut Checkpoint) {
    ckpt.rename(|n| {
        n.strip_suffix("LayerNorm.gamma")
            .map(|p| format!("{p}LayerNorm.weight"))
            .or_else(|| n.strip_suffix("LayerNorm.beta").map(|p| format!("{p}LayerNorm.bias")))
    });
}

/// The prefix of the encoder tensors in `ckpt`: the one whose
/// `{prefix}embeddings.word_embeddings.weight` exists among `bert.`, `roberta.`,
/// `distilbert.` and none.
pub fn detect_prefix(ckpt: &Checkpoint) -> Option<&'static str> {
    ["bert.", "roberta.", "distilbert.", ""]
        .into_iter()
        .find(|p| ckpt.contains(&format!("{p}embeddings.word_embeddings.weight")))
}

/// [`Checkpoint::check_config_fits`] for the encoder trunk `config` describes.
fn check_fits(ckpt: &Checkpoint, file: &Path, config: &EncoderConfig) -> Result<()> {
    let [v, p, t, d, f, l] = [
        config.vocab_size,
        config.max_position_embeddings,
        config.type_vocab_size,
        config.hidden_size,
        config.intermediate_size,
        config.num_layers,
    ]
    .map(|x| x as f64);
    // Embeddings and their LayerNorm; per layer query, key, value, output, two LayerNorms
    // and the feed-forward pair (weights and biases).
    let params = (v + p + t + 2.0) * d + l * (4.0 * d * d + 9.0 * d + 2.0 * d * f + f);
    let (layers, width) = match config.kind {
        EncoderKind::DistilBert => ("n_layers", "dim"),
        _ => ("num_hidden_layers", "hidden_size"),
    };
    ckpt.check_config_fits(file, (layers, config.num_layers), (width, config.hidden_size), params)
}

/// Load a bare encoder from an HF-layout directory holding any of the `AutoModel`
/// (`BertModel`, `RobertaModel`, `DistilBertModel`), `*ForMaskedLM` or
/// `*ForSequenceClassification` layouts: the tensor prefix is detected ([`detect_prefix`]),
/// and pooler, heads and the layers past `num_layers` are left unused (listed in the report).
/// `num_layers: Some(n)` keeps the first `n` layers, as bert_score does; more layers than the
/// checkpoint holds is an error. The returned config's `num_layers` is the number kept.
pub fn load_encoder<B: Backend>(
    dir: &Path,
    num_layers: Option<usize>,
    device: &B::Device,
) -> Result<Loaded<Encoder<B>, EncoderConfig>> {
    let file = dir.join(CONFIG_FILE);
    let mut config = encoder_config_from_json(&read_json(&file)?, &file)?;
    if let Some(n) = num_layers {
        if n > config.num_layers {
            return Err(ModelError::InvalidConfigValue {
                file,
                key: "num_hidden_layers".into(),
                value: config.num_layers.to_string(),
                reason: format!("{n} layers requested, the checkpoint has {}", config.num_layers),
            });
        }
        config.num_layers = n;
    }
    let mut ckpt = Checkpoint::open(dir)?;
    rename_legacy_layer_norm(&mut ckpt);
    let prefix = detect_prefix(&ckpt).ok_or_else(|| ModelError::MissingTensor {
        name: "{bert.,roberta.,distilbert.,}embeddings.word_embeddings.weight".into(),
        location: ckpt.location().to_path_buf(),
    })?;
    check_fits(&ckpt, &file, &config)?;
    let mut model = config.init_encoder::<B>(device);
    let mut t = Table::new();
    trunk_table(&mut t, &mut model.embeddings, &mut model.layers, config.kind, prefix);
    let loaded = t.load(&mut ckpt, device)?;
    let unused = ckpt.unused(|n| n.ends_with("embeddings.position_ids"));
    tracing::debug!(location = %dir.display(), ?unused, "checkpoint tensors not used by the bare encoder");
    Ok(Loaded { model, config, report: LoadReport { loaded, unused } })
}

/// Load a BERT, RoBERTa or DistilBERT sequence classifier from an HF-layout directory.
pub fn load_encoder_classifier<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<Loaded<EncoderClassifier<B>, EncoderConfig>> {
    let file = dir.join(CONFIG_FILE);
    let config = encoder_config_from_json(&read_json(&file)?, &file)?;
    let mut ckpt = Checkpoint::open(dir)?;
    rename_legacy_layer_norm(&mut ckpt);
    check_fits(&ckpt, &file, &config)?;
    let mut model = config.init::<B>(device);
    let loaded = encoder_table(&mut model).load(&mut ckpt, device)?;
    let unused = ckpt.unused(|n| n.ends_with("embeddings.position_ids"));
    if !unused.is_empty() {
        tracing::warn!(location = %dir.display(), ?unused, "checkpoint tensors not used by the model");
    }
    Ok(Loaded { model, config, report: LoadReport { loaded, unused } })
}

/// `config.json` for an encoder classifier.
pub fn encoder_config_to_json(c: &EncoderConfig) -> serde_json::Value {
    let id2label: serde_json::Map<String, serde_json::Value> = (0..c.num_labels)
        .map(|i| (i.to_string(), json!(c.labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}")))))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = id2label
        .iter()
        .map(|(k, v)| (v.as_str().unwrap_or_default().to_string(), json!(k.parse::<usize>().unwrap_or(0))))
        .collect();
    match c.kind {
        EncoderKind::Bert | EncoderKind::Roberta => json!({
            "architectures": [if c.kind == EncoderKind::Bert { "BertForSequenceClassification" }
                              else { "RobertaForSequenceClassification" }],
            "model_type": if c.kind == EncoderKind::Bert { "bert" } else { "roberta" },
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_layers,
            "num_attention_heads": c.num_heads, "intermediate_size": c.intermediate_size,
            "max_position_embeddings": c.max_position_embeddings, "type_vocab_size": c.type_vocab_size,
            "layer_norm_eps": c.layer_norm_eps, "hidden_act": c.activation.hf_name(),
            "id2label": id2label, "label2id": label2id,
            "pad_token_id": c.position_offset.saturating_sub(1),
        }),
        EncoderKind::DistilBert => json!({
            "architectures": ["DistilBertForSequenceClassification"], "model_type": "distilbert",
            "vocab_size": c.vocab_size, "dim": c.hidden_size, "n_layers": c.num_layers, "n_heads": c.num_heads,
            "hidden_dim": c.intermediate_size, "max_position_embeddings": c.max_position_embeddings,
            "activation": c.activation.hf_name(), "sinusoidal_pos_embds": false,
            "id2label": id2label, "label2id": label2id, "pad_token_id": 0,
        }),
    }
}

/// Save an encoder classifier in HF layout (`config.json`, `model.safetensors`, optional
/// `tokenizer.json`). DistilBERT checkpoints hold LayerNorm eps 1e-12 implicitly, as HF's do.
pub fn save_encoder_classifier<B: Backend>(
    model: &EncoderClassifier<B>,
    config: &EncoderConfig,
    dir: &Path,
    tokenizer: Option<&TextTokenizer>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut m = model.clone();
    write_json(&dir.join(CONFIG_FILE), &encoder_config_to_json(config))?;
    write_safetensors(&dir.join(SAFETENSORS_FILE), encoder_table(&mut m).export())?;
    if let Some(tok) = tokenizer {
        tok.save(&dir.join(TOKENIZER_FILE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Absurd sizes in config.json are errors naming the file and key before any model is
    /// built, for classifiers and bare encoders alike.
    #[test]
    fn absurd_sizes_are_errors_before_allocating() {
        type Cpu = tril_core::backend::CpuBackend;
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture.join(SAFETENSORS_FILE), dir.path().join(SAFETENSORS_FILE)).unwrap();
        let config = read_json(&fixture.join(CONFIG_FILE)).unwrap();
        for (key, value, expected) in [
            ("num_hidden_layers", json!(1_000_000_000u64), "`num_hidden_layers` = 1000000000: more layers than"),
            ("intermediate_size", json!(4_000_000_000u64), "`hidden_size` = 32: the sizes imply"),
            ("pad_token_id", json!(u64::MAX), "`pad_token_id` = 18446744073709551615: expected a non-negative"),
        ] {
            let mut c = config.clone();
            c[key] = value;
            if key == "pad_token_id" {
                c["model_type"] = json!("roberta");
            }
            write_json(&dir.path().join(CONFIG_FILE), &c).unwrap();
            let dev = Default::default();
            let err = load_encoder_classifier::<Cpu>(dir.path(), &dev).unwrap_err().to_string();
            assert!(err.contains("config.json: ") && err.contains(expected), "{err}");
            let err = load_encoder::<Cpu>(dir.path(), None, &dev).unwrap_err().to_string();
            assert!(err.contains("config.json: ") && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn distilbert_config_keys() {
        let j = json!({"model_type": "distilbert", "vocab_size": 30, "dim": 8, "n_layers": 1, "n_heads": 2,
                       "hidden_dim": 16, "max_position_embeddings": 12, "id2label": {"1": "POS", "0": "NEG"}});
        let c = encoder_config_from_json(&j, Path::new("c.json")).unwrap();
        assert_eq!(
            (c.hidden_size, c.num_labels, c.labels.clone(), c.type_vocab_size),
            (8, 2, vec!["NEG".to_string(), "POS".to_string()], 0)
        );
        let back = encoder_config_from_json(&encoder_config_to_json(&c), Path::new("c.json")).unwrap();
        assert_eq!((back.intermediate_size, back.labels), (16, c.labels));
        let mut j = j;
        j.as_object_mut().unwrap().remove("dim");
        assert_eq!(
            encoder_config_from_json(&j, Path::new("c.json")).unwrap_err().to_string(),
            "c.json: missing config key `dim`"
        );
    }
}
