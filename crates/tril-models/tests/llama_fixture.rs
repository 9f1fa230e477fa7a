//! The Llama family (Llama, Qwen2, Mistral) equals HF transformers on the tiny fixtures made by
//! `fixtures/make_llama.py`: logits and hidden states of a left-padded batch, greedy generation
//! with a KV cache (and the cached logits equal a full forward), the sequence classifier, exact
//! save -> load round trips, transformers loading tril's saved directories, and load errors.
//!
//! Tolerance: 1e-4 absolute on logits and hidden states for every fixture, the bf16 one
//! included, because its reference runs in float32 on the bf16-rounded weights (what tril
//! computes after upcasting them on load).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Int, Tensor, TensorData};
use common::{greedy_decode, max_diff_where, values, Greedy, B};
use serde_json::{json, Value};
use tril_models::hf::llama::{llama_config_to_json, read_llama_config};
use tril_models::hf::{
    load_llama, load_llama_classifier, read_json, save_llama, save_llama_classifier, write_json, write_safetensors,
    Checkpoint,
};
use tril_models::lm::{LanguageModel, LmInput};

const TOL: f32 = 1e-4;
/// The causal LM fixtures.
const LMS: [&str; 4] = ["llama_gqa", "llama_tied", "qwen2", "mistral"];

fn dir(name: &str) -> PathBuf {
    common::fixture("llama").join(name)
}

fn expected(name: &str) -> Value {
    read_json(&dir(name).join("expected.json")).unwrap()
}

/// A nested JSON list of integers as a `[B, T]` Int tensor.
fn int2(v: &Value) -> Tensor<B, 2, Int> {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).unwrap();
    let shape = [rows.len(), rows[0].len()];
    Tensor::from_data(TensorData::new(rows.concat(), shape), &Default::default())
}

/// `{"shape", "data"}` as (flat values, shape).
fn floats(v: &Value) -> (Vec<f32>, Vec<usize>) {
    (serde_json::from_value(v["data"].clone()).unwrap(), serde_json::from_value(v["shape"].clone()).unwrap())
}

/// The left-padded batch of a fixture.
struct Batch {
    /// `[B, T]`.
    ids: Tensor<B, 2, Int>,
    /// `[B, T]`, 1 real, 0 pad.
    mask: Tensor<B, 2, Int>,
    /// HF `generate` positions, `[B, T]`.
    pos: Tensor<B, 2, Int>,
    /// Which of the `B * T` slots are real tokens.
    keep: Vec<bool>,
}

fn batch(exp: &Value) -> Batch {
    let mask: Vec<Vec<i64>> = serde_json::from_value(exp["attention_mask"].clone()).unwrap();
    Batch {
        ids: int2(&exp["input_ids"]),
        mask: int2(&exp["attention_mask"]),
        pos: int2(&exp["position_ids"]),
        keep: mask.concat().iter().map(|&m| m == 1).collect(),
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

#[test]
fn logits_and_hidden_states_equal_transformers() {
    let dev = Default::default();
    for name in LMS {
        let loaded = load_llama::<B>(&dir(name), &dev).unwrap();
        assert!(loaded.report.unused.is_empty(), "{name}: {:?}", loaded.report.unused);
        let exp = expected(name);
        // RoPE frequencies as transformers computes them in f32 (llama3 scaling in llama_gqa).
        let (want_freq, _) = floats(&exp["inv_freq"]);
        let freq = loaded.config.inv_freq();
        let rel = freq.iter().zip(&want_freq).map(|(a, b)| ((a - b) / b).abs()).fold(0f32, f32::max);
        assert!(freq.len() == want_freq.len() && rel <= 1e-6, "{name}: inv_freq {freq:?} vs {want_freq:?}");
        let Batch { ids, mask, pos, keep } = batch(&exp);
        let out =
            loaded.model.forward_with(LmInput::new(ids.clone()).with_mask(mask.clone()).with_hidden_states(), None);
        let (want, shape) = floats(&exp["logits"]);
        assert_eq!(out.logits.dims().to_vec(), shape, "{name}");
        let d = max_diff_where(&values(out.logits), &want, shape[2], &keep);
        eprintln!("{name}: logits max |diff| {d:.2e}");
        assert!(d <= TOL, "{name}: logits max |diff| {d}");
        let states = out.hidden_states.unwrap();
        let want_states = exp["hidden_states"].as_array().unwrap();
        assert_eq!(states.len(), want_states.len(), "{name}: number of hidden states");
        assert_eq!(states.len(), loaded.model.n_layer() + 1);
        for (i, (got, want)) in states.into_iter().zip(want_states).enumerate() {
            let (want, shape) = floats(want);
            let d = max_diff_where(&values(got), &want, shape[2], &keep);
            assert!(d <= TOL, "{name}: hidden_states[{i}] max |diff| {d}");
        }
        // Explicit HF positions give the same logits as positions derived from the mask.
        let again = loaded.model.forward_with(LmInput::new(ids).with_mask(mask).with_positions(pos), None);
        let d = max_diff_where(&values(again.logits), &want, shape[2], &keep);
        assert!(d <= TOL, "{name}: logits (explicit positions) max |diff| {d}");
    }
}

#[test]
fn greedy_generation_with_cache_equals_hf_generate() {
    let dev = Default::default();
    for name in LMS {
        let model = load_llama::<B>(&dir(name), &dev).unwrap().model;
        let exp = expected(name);
        let Batch { ids, mask, .. } = batch(&exp);
        let want: Vec<Vec<i64>> = serde_json::from_value(exp["greedy_tokens"].clone()).unwrap();
        let Greedy { cached: got, worst, .. } = greedy_decode(&model, ids, mask, want[0].len());
        eprintln!("{name}: cached vs full logits max |diff| {worst:.2e}");
        assert_eq!(got, want.concat(), "{name}: greedy tokens");
        // Same tolerance as against transformers: cached and full passes sum in another order.
        assert!(worst <= TOL, "{name}: cached vs full logits max |diff| {worst}");
    }
}

#[test]
fn mistral_window_is_shorter_than_the_batch_and_matters() {
    let dev = Default::default();
    let loaded = load_llama::<B>(&dir("mistral"), &dev).unwrap();
    let exp = expected("mistral");
    let Batch { ids, mask, keep, .. } = batch(&exp);
    let window = loaded.config.sliding_window.unwrap();
    assert!(window < ids.dims()[1], "window {window}");
    // Without the window the far positions change: the fixture tests the window, not only causality.
    let mut full = loaded.model.clone();
    full.model.layers.iter_mut().for_each(|l| l.sliding_window = None);
    let (want, shape) = floats(&exp["logits"]);
    let d = max_diff_where(&values(full.forward(ids, Some(mask)).logits), &want, shape[2], &keep);
    assert!(d > 1e-2, "without the window: max |diff| {d}");
    // Qwen2 windows only its second layer.
    let qwen = read_llama_config(&dir("qwen2")).unwrap();
    assert_eq!((qwen.layer_window(0), qwen.layer_window(1)), (None, Some(3)));
}

#[test]
fn sequence_classifier_equals_transformers() {
    let dev = Default::default();
    let loaded = load_llama_classifier::<B>(&dir("llama_cls"), &dev).unwrap();
    assert!(loaded.report.unused.is_empty(), "{:?}", loaded.report.unused);
    assert_eq!(loaded.model.pad_token_id, Some(0));
    let exp = expected("llama_cls");
    let Batch { ids, mask, .. } = batch(&exp);
    let (want, shape) = floats(&exp["score_logits"]);
    let got = loaded.model.forward(ids, Some(mask));
    assert_eq!(got.dims().to_vec(), shape);
    let d = max_abs_diff(&values(got), &want);
    eprintln!("llama_cls: score max |diff| {d:.2e}");
    assert!(d <= TOL, "score max |diff| {d}");
}

/// The same through what trainers call: `hf::load_lm` (a `CausalLm` chosen by `model_type`),
/// tril's `generate` (greedy, KV cache), the generic classifier and critic loaders, and a
/// save -> load round trip through `hf::save_lm`.
#[test]
fn generic_loaders_and_generate_equal_transformers() {
    use tril_models::generate::{generate, GenerationConfig, SpecialTokens};
    let dev = Default::default();
    for name in LMS {
        let loaded = tril_models::hf::load_lm::<B>(&dir(name), &dev).unwrap();
        let family = read_llama_config(&dir(name)).unwrap().family.model_type();
        assert_eq!(loaded.model.model_type(), family, "{name}");
        let exp = expected(name);
        let Batch { ids, mask, .. } = batch(&exp);
        let want: Vec<Vec<i64>> = serde_json::from_value(exp["greedy_tokens"].clone()).unwrap();
        let special = SpecialTokens { eos_token_id: None, pad_token_id: 0 };
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let cfg = GenerationConfig::greedy(want[0].len());
        let out = generate(&loaded.model, ids, mask, &cfg, special, &mut rng).unwrap();
        let got: Vec<Vec<i64>> = (0..out.batch).map(|i| out.row(i).iter().map(|&t| t as i64).collect()).collect();
        assert_eq!(got, want, "{name}: generate");
        let tmp = tempfile::tempdir().unwrap();
        tril_models::hf::save_lm(&loaded.model, &loaded.config, tmp.path(), None).unwrap();
        let again = tril_models::hf::load_lm::<B>(tmp.path(), &dev).unwrap();
        assert_eq!(again.config.model_type(), family, "{name}: model_type survives a save");
    }
    let clf = tril_models::hf::load_lm_classifier::<B>(&dir("llama_cls"), &dev).unwrap();
    assert!(clf.report.unused.is_empty(), "{:?}", clf.report.unused);
    let exp = expected("llama_cls");
    let Batch { ids, mask, .. } = batch(&exp);
    let (want, _) = floats(&exp["score_logits"]);
    let d = max_abs_diff(&values(clf.model.forward(ids.clone(), Some(mask))), &want);
    assert!(d <= TOL, "generic classifier: score max |diff| {d}");
    let critic = tril_models::hf::load_value_model::<B>(&dir("llama_gqa"), true, &dev).unwrap();
    assert_eq!(critic.model.forward(ids, None).dims()[0], want.len() / 3);
}

/// Every tensor of a checkpoint, sorted by name.
fn all_tensors(path: &Path) -> Vec<(String, Vec<f32>, Vec<usize>)> {
    let mut ck = Checkpoint::open(path).unwrap();
    let names: Vec<String> = ck.names().map(str::to_string).collect();
    names
        .into_iter()
        .map(|n| {
            let (v, s) = ck.read_f32(&n).unwrap();
            (n, v, s)
        })
        .collect()
}

/// Save every fixture with tril into `root/<name>`; returns (name, saved dir).
fn save_all(root: &Path) -> Vec<(&'static str, PathBuf)> {
    let dev = Default::default();
    let mut saved = Vec::new();
    for name in LMS {
        let loaded = load_llama::<B>(&dir(name), &dev).unwrap();
        let out = root.join(name);
        save_llama(&loaded.model, &loaded.config, &out, None).unwrap();
        saved.push((name, out));
    }
    let loaded = load_llama_classifier::<B>(&dir("llama_cls"), &dev).unwrap();
    let out = root.join("llama_cls");
    let labels = ["a", "b", "c"].map(String::from);
    save_llama_classifier(&loaded.model, &loaded.config, &labels, &out, None).unwrap();
    saved.push(("llama_cls", out));
    saved
}

#[test]
fn save_then_load_round_trips_every_tensor_exactly() {
    let root = tempfile::tempdir().unwrap();
    for (name, out) in save_all(root.path()) {
        // bf16 and sharded fixtures come back as one f32 file with the same values.
        assert!(out.join("model.safetensors").is_file(), "{name}");
        assert_eq!(all_tensors(&out), all_tensors(&dir(name)), "{name}: tensors differ after save");
        let a = read_llama_config(&dir(name)).unwrap();
        let b = read_llama_config(&out).unwrap();
        assert_eq!(llama_config_to_json(&a, "X"), llama_config_to_json(&b, "X"), "{name}: config");
    }
    // A tied model writes no lm_head; a reloaded model gives the same logits.
    assert!(!Checkpoint::open(&root.path().join("llama_tied")).unwrap().contains("lm_head.weight"));
    let dev = Default::default();
    let exp = expected("qwen2");
    let Batch { ids, mask, .. } = batch(&exp);
    let a = load_llama::<B>(&dir("qwen2"), &dev).unwrap().model.forward(ids.clone(), Some(mask.clone())).logits;
    let b = load_llama::<B>(&root.path().join("qwen2"), &dev).unwrap().model.forward(ids, Some(mask)).logits;
    assert!(max_abs_diff(&values(a), &values(b)) < 1e-6);
}

/// A Python with torch and transformers: `TRIL_PYTHON`, else `/opt/pyref/bin/python`, else `python3`.
fn python() -> Option<String> {
    let candidates = match std::env::var("TRIL_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["/opt/pyref/bin/python".to_string(), "python3".to_string()],
    };
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import torch, transformers, safetensors"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// `fixtures/llama/check_llama.py` loads every directory tril saved with transformers and
/// compares its logits with tril's (1e-4).
#[test]
fn transformers_loads_tril_checkpoints() {
    let Some(python) = python() else {
        eprintln!("skipped: no python with torch + transformers (tried TRIL_PYTHON, /opt/pyref/bin/python, python3)");
        return;
    };
    let dev = Default::default();
    let root = tempfile::tempdir().unwrap();
    for (name, out) in save_all(root.path()) {
        let exp = expected(name);
        let Batch { ids, mask, .. } = batch(&exp);
        let (kind, shape, logits) = if name == "llama_cls" {
            let logits = load_llama_classifier::<B>(&out, &dev).unwrap().model.forward(ids, Some(mask));
            ("classifier", logits.dims().to_vec(), values(logits))
        } else {
            let logits = load_llama::<B>(&out, &dev).unwrap().model.forward(ids, Some(mask)).logits;
            ("causal_lm", logits.dims().to_vec(), values(logits))
        };
        let tril = json!({
            "kind": kind,
            "input_ids": exp["input_ids"],
            "attention_mask": exp["attention_mask"],
            "position_ids": exp["position_ids"],
            "logits": {"shape": shape, "data": logits},
        });
        write_json(&out.join("tril_expected.json"), &tril).unwrap();
        let script = dir("check_llama.py");
        let res = Command::new(&python).arg(&script).arg(&out).output().unwrap();
        let stdout = String::from_utf8_lossy(&res.stdout);
        assert!(
            res.status.success(),
            "{name}: {}\n{stdout}\n{}",
            script.display(),
            String::from_utf8_lossy(&res.stderr)
        );
        eprintln!("{name}: {stdout}");
    }
}

fn copy_with_config(from: &str, to: &Path, edit: impl FnOnce(&mut Value)) {
    let mut cfg = read_json(&dir(from).join("config.json")).unwrap();
    edit(&mut cfg);
    write_json(&to.join("config.json"), &cfg).unwrap();
}

#[test]
fn bad_checkpoints_are_errors_naming_the_tensor_or_key() {
    let dev = Default::default();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path();
    let mut tensors = all_tensors(&dir("llama_gqa"));
    tensors.retain(|(n, _, _)| n != "model.layers.1.self_attn.k_proj.bias");
    write_safetensors(&path.join("model.safetensors"), tensors).unwrap();
    copy_with_config("llama_gqa", path, |_| {});
    let err = load_llama::<B>(path, &dev).unwrap_err().to_string();
    assert!(err.contains("missing tensor `model.layers.1.self_attn.k_proj.bias`"), "{err}");

    std::fs::copy(dir("llama_gqa/model.safetensors"), path.join("model.safetensors")).unwrap();
    copy_with_config("llama_gqa", path, |c| c["intermediate_size"] = json!(72));
    let err = load_llama::<B>(path, &dev).unwrap_err().to_string();
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight") && err.contains("expected shape [72, 32], got [64, 32]"),
        "{err}"
    );

    copy_with_config("llama_gqa", path, |c| c["tie_word_embeddings"] = json!(true));
    let tied = load_llama::<B>(path, &dev).unwrap();
    assert!(tied.report.unused.is_empty(), "a tied model ignores lm_head.weight: {:?}", tied.report.unused);
    let untied = load_llama::<B>(&dir("llama_gqa"), &dev).unwrap();
    let err = save_llama(&untied.model, &tied.config, &path.join("out"), None).unwrap_err().to_string();
    assert!(err.contains("tie_word_embeddings = true but the model has an lm_head"), "{err}");

    for (key, value, expected) in [
        ("num_hidden_layers", json!(1_000_000u64), "config key `num_hidden_layers` = 1000000: more layers than the"),
        ("intermediate_size", json!(1u64 << 31), "config key `hidden_size` = 32: the sizes imply"),
        ("hidden_act", json!("relu"), "config key `hidden_act` = \"relu\": only \"silu\" is supported"),
    ] {
        copy_with_config("llama_gqa", path, |c| c[key] = value);
        let err = load_llama::<B>(path, &dev).unwrap_err().to_string();
        assert!(err.contains("config.json: ") && err.contains(expected), "{err}");
    }
    copy_with_config("llama_gqa", path, |c| c["rope_parameters"]["rope_type"] = json!("yarn"));
    let err = load_llama::<B>(path, &dev).unwrap_err().to_string();
    assert!(err.contains("`rope_parameters.rope_type` = \"yarn\": supported RoPE types: default, llama3"), "{err}");
}
