//! GPT-2 checkpoints in HF layout: `config.json` + `model.safetensors` (+ `tokenizer.json`).

use std::path::Path;

use burn::tensor::backend::Backend;
use serde_json::json;

use super::{read_json, Checkpoint, JsonConfig, LoadReport, Table, CONFIG_FILE};
use crate::error::{ModelError, Result};
use crate::gpt2::{Activation, Gpt2Config, Gpt2Model};
use crate::tokenizer::TextTokenizer;

/// A model loaded from a checkpoint, with its config and what the load did.
#[derive(Debug)]
pub struct Loaded<M, C> {
    /// The model.
    pub model: M,
    /// Its config.
    pub config: C,
    /// Tensors loaded and unused.
    pub report: LoadReport,
}

/// Parse an HF GPT-2 `config.json` (`file` is only used in error messages).
///
/// Required: `vocab_size`, `n_positions` (or `n_ctx`), `n_embd`, `n_layer`, `n_head`.
/// Optional: `n_inner`, `layer_norm_epsilon` (1e-5), `activation_function` (`gelu_new`),
/// `bos_token_id`, `eos_token_id`. Rejected: `tie_word_embeddings: false`,
/// `scale_attn_by_inverse_layer_idx: true`, `scale_attn_weights: false`, `model_type` other
/// than `gpt2`.
pub fn gpt2_config_from_json(json: &serde_json::Value, file: &Path) -> Result<Gpt2Config> {
    let c = JsonConfig { file, json };
    if let Some(t) = c.opt_str("model_type")? {
        if t != "gpt2" {
            return Err(c.invalid("model_type", &json["model_type"], "expected \"gpt2\""));
        }
    }
    for (key, supported) in
        [("tie_word_embeddings", true), ("scale_attn_by_inverse_layer_idx", false), ("scale_attn_weights", true)]
    {
        if c.opt_bool(key)?.is_some_and(|v| v != supported) {
            return Err(c.invalid(key, &json[key], &format!("only {supported} is supported")));
        }
    }
    let activation = match c.opt_str("activation_function")? {
        None => Activation::GeluNew,
        Some(name) => Activation::from_hf(name).ok_or_else(|| {
            c.invalid(
                "activation_function",
                &json["activation_function"],
                "supported: gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu",
            )
        })?,
    };
    let cfg = Gpt2Config::new(
        c.usize(&["vocab_size"])?,
        c.usize(&["n_positions", "n_ctx"])?,
        c.usize(&["n_embd"])?,
        c.usize(&["n_layer"])?,
        c.usize(&["n_head"])?,
    )
    .with_n_inner(c.opt_usize(&["n_inner"])?)
    .with_layer_norm_epsilon(c.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5))
    .with_activation(activation)
    .with_bos_token_id(c.opt_token_id("bos_token_id")?)
    .with_eos_token_id(c.opt_token_id("eos_token_id")?);
    if cfg.n_head == 0 || !cfg.n_embd.is_multiple_of(cfg.n_head) {
        return Err(c.invalid("n_head", &json["n_head"], &format!("must divide n_embd = {}", cfg.n_embd)));
    }
    Ok(cfg)
}

/// The parameters of the GPT-2 trunk `config` describes, counted in f64 (no overflow
/// whatever the sizes): wte, wpe, ln_f; per layer ln_1, c_attn, c_proj, ln_2, c_fc, c_proj
/// (weights and biases).
pub fn gpt2_param_count(config: &Gpt2Config) -> f64 {
    let [v, p, d, l] = [config.vocab_size, config.n_positions, config.n_embd, config.n_layer].map(|x| x as f64);
    let i = config.n_inner.map_or(4.0 * d, |i| i as f64);
    v * d + p * d + 2.0 * d + l * (4.0 * d * d + 2.0 * d * i + 9.0 * d + i)
}

/// [`Checkpoint::check_config_fits`] for the GPT-2 trunk `config` describes.
pub(crate) fn check_fits(ckpt: &Checkpoint, file: &Path, config: &Gpt2Config) -> Result<()> {
    let params = gpt2_param_count(config);
    ckpt.check_config_fits(file, ("n_layer", config.n_layer), ("n_embd", config.n_embd), params)
}

/// Read `dir/config.json` as a GPT-2 config.
pub fn read_gpt2_config(dir: &Path) -> Result<Gpt2Config> {
    let file = dir.join(CONFIG_FILE);
    gpt2_config_from_json(&read_json(&file)?, &file)
}

/// The `config.json` that transformers needs to rebuild this model as `GPT2LMHeadModel`.
pub fn gpt2_config_to_json(cfg: &Gpt2Config) -> serde_json::Value {
    json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": cfg.activation.hf_name(),
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_positions,
        "n_ctx": cfg.n_positions,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.n_inner,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "tie_word_embeddings": true,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "attn_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "resid_pdrop": 0.1,
        "initializer_range": 0.02,
        "use_cache": true,
        "torch_dtype": "float32",
    })
}

/// The GPT-2 rename table. `p` is the checkpoint prefix (`"transformer."` for
/// `GPT2LMHeadModel` / `GPT2ForSequenceClassification` files, `""` for bare `GPT2Model` files
/// such as the hub's `gpt2`).
///
/// ```text
/// HF name                                  tril parameter                 layout
/// {p}wte.weight                            wte.weight                     [V, D]
/// {p}wpe.weight                            wpe.weight                     [P, D]
/// {p}h.{i}.ln_1.{weight,bias}              h[i].ln_1.{gamma,beta}         [D]
/// {p}h.{i}.attn.c_attn.{weight,bias}       h[i].attn.c_attn               Conv1D [D, 3D] = Burn [in, out]
/// {p}h.{i}.attn.c_proj.{weight,bias}       h[i].attn.c_proj               Conv1D [D, D]
/// {p}h.{i}.ln_2.{weight,bias}              h[i].ln_2.{gamma,beta}         [D]
/// {p}h.{i}.mlp.c_fc.{weight,bias}          h[i].mlp.c_fc                  Conv1D [D, I]
/// {p}h.{i}.mlp.c_proj.{weight,bias}        h[i].mlp.c_proj                Conv1D [I, D]
/// {p}ln_f.{weight,bias}                    ln_f.{gamma,beta}              [D]
/// ignored: lm_head.weight (tied to wte), {p}h.{i}.attn.bias / .masked_bias (mask buffers)
/// ```
pub(crate) fn gpt2_table<'a, B: Backend>(m: &'a mut Gpt2Model<B>, p: &str) -> Table<'a, B> {
    let mut t = Table::new();
    t.embedding(&format!("{p}wte.weight"), &mut m.wte);
    t.embedding(&format!("{p}wpe.weight"), &mut m.wpe);
    for (i, b) in m.h.iter_mut().enumerate() {
        t.layer_norm(&format!("{p}h.{i}.ln_1"), &mut b.ln_1);
        t.conv1d(&format!("{p}h.{i}.attn.c_attn"), &mut b.attn.c_attn.base);
        t.conv1d(&format!("{p}h.{i}.attn.c_proj"), &mut b.attn.c_proj.base);
        t.layer_norm(&format!("{p}h.{i}.ln_2"), &mut b.ln_2);
        t.conv1d(&format!("{p}h.{i}.mlp.c_fc"), &mut b.mlp.c_fc.base);
        t.conv1d(&format!("{p}h.{i}.mlp.c_proj"), &mut b.mlp.c_proj.base);
    }
    t.layer_norm(&format!("{p}ln_f"), &mut m.ln_f);
    t
}

pub(crate) fn is_known_buffer(name: &str) -> bool {
    name == "lm_head.weight" || name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
}

/// The checkpoint prefix of the GPT-2 trunk (`"transformer."` or `""`).
pub(crate) fn trunk_prefix(ckpt: &Checkpoint) -> Result<&'static str> {
    if ckpt.contains("transformer.wte.weight") {
        Ok("transformer.")
    } else if ckpt.contains("wte.weight") {
        Ok("")
    } else {
        Err(ModelError::MissingTensor {
            name: "transformer.wte.weight".into(),
            location: ckpt.location().to_path_buf(),
        })
    }
}

pub(crate) fn finish(ckpt: &Checkpoint, loaded: usize) -> LoadReport {
    let unused = ckpt.unused(is_known_buffer);
    if !unused.is_empty() {
        tracing::warn!(location = %ckpt.location().display(), ?unused, "checkpoint tensors not used by the model");
    }
    LoadReport { loaded, unused }
}

/// Load a GPT-2 LM from an HF-layout directory (`config.json` + safetensors, single or sharded).
pub fn load_gpt2<B: Backend>(dir: &Path, device: &B::Device) -> Result<Loaded<Gpt2Model<B>, Gpt2Config>> {
    let config = read_gpt2_config(dir)?;
    let mut ckpt = Checkpoint::open(dir)?;
    check_fits(&ckpt, &dir.join(CONFIG_FILE), &config)?;
    let mut model = config.init::<B>(device);
    let p = trunk_prefix(&ckpt)?;
    let loaded = gpt2_table(&mut model, p).load(&mut ckpt, device)?;
    Ok(Loaded { model, config, report: finish(&ckpt, loaded) })
}

/// Save a GPT-2 LM in HF layout (`transformers.AutoModelForCausalLM.from_pretrained(dir)` loads
/// it): `config.json`, `model.safetensors` (`transformer.*` names, tied head omitted as
/// transformers does) and, if given, `tokenizer.json`.
pub fn save_gpt2<B: Backend>(
    model: &Gpt2Model<B>,
    config: &Gpt2Config,
    dir: &Path,
    tokenizer: Option<&TextTokenizer>,
) -> Result<()> {
    let mut m = model.clone();
    let tensors = gpt2_table(&mut m, "transformer.").export();
    super::write_model_dir(dir, gpt2_config_to_json(config), tensors, tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::{write_json, SAFETENSORS_FILE};
    use serde_json::json;

    /// Absurd sizes in config.json are errors naming the file and key before any model is
    /// built (an `n_layer` of 10^9 used to build 10^9 lazily initialised blocks).
    #[test]
    fn absurd_sizes_are_errors_before_allocating() {
        type Cpu = tril_core::backend::CpuBackend;
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture.join(SAFETENSORS_FILE), dir.path().join(SAFETENSORS_FILE)).unwrap();
        let config = read_json(&fixture.join(CONFIG_FILE)).unwrap();
        for (key, value, expected) in [
            ("n_layer", json!(1_000_000_000u64), "config key `n_layer` = 1000000000: more layers than the"),
            ("n_embd", json!(1u64 << 31), "config key `n_embd` = 2147483648: the sizes imply"),
            ("vocab_size", json!(4_000_000_000u64), "config key `n_embd` = 64: the sizes imply"),
            (
                "n_positions",
                json!(1_000_000_000_000u64),
                "`n_positions` = 1000000000000: expected a non-negative integer below 2^32",
            ),
            ("n_embd", json!(-64), "`n_embd` = -64: expected a non-negative integer"),
        ] {
            let mut c = config.clone();
            c[key] = value;
            if key == "n_embd" {
                c["n_head"] = json!(1);
            }
            write_json(&dir.path().join(CONFIG_FILE), &c).unwrap();
            let err = load_gpt2::<Cpu>(dir.path(), &Default::default()).unwrap_err().to_string();
            assert!(err.contains("config.json: ") && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn missing_config_key_is_named() {
        let j = json!({"vocab_size": 10, "n_positions": 8, "n_embd": 8, "n_head": 2});
        let err = gpt2_config_from_json(&j, Path::new("m/config.json")).unwrap_err().to_string();
        assert_eq!(err, "m/config.json: missing config key `n_layer`");
    }

    #[test]
    fn config_aliases_and_defaults() {
        let j = json!({"vocab_size": 10, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 1, "eos_token_id": [3, 4]});
        let c = gpt2_config_from_json(&j, Path::new("c.json")).unwrap();
        assert_eq!(
            (c.n_positions, c.eos_token_id, c.activation, c.layer_norm_epsilon),
            (8, Some(3), Activation::GeluNew, 1e-5)
        );
        let j = json!({"vocab_size": 10, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 1, "eos_token_id": 4294967301u64});
        let err = gpt2_config_from_json(&j, Path::new("c.json")).unwrap_err().to_string();
        assert!(err.contains("`eos_token_id` = 4294967301: expected a token id"), "{err}");
        let j = json!({"vocab_size": 10, "n_ctx": 8, "n_embd": 8, "n_head": 3, "n_layer": 1});
        assert!(gpt2_config_from_json(&j, Path::new("c.json")).unwrap_err().to_string().contains("must divide"));
        let j = json!({"vocab_size": 10, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 1, "activation_function": "swish"});
        let err = gpt2_config_from_json(&j, Path::new("c.json")).unwrap_err().to_string();
        assert!(err.contains("activation_function") && err.contains("swish"), "{err}");
    }

    #[test]
    fn config_json_round_trips() {
        let c = Gpt2Config::gpt2_medium();
        let back = gpt2_config_from_json(&gpt2_config_to_json(&c), Path::new("x")).unwrap();
        assert_eq!((back.n_embd, back.n_layer, back.n_head, back.eos_token_id), (1024, 24, 16, Some(50256)));
    }
}
