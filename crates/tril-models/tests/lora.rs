//! LoRA equals peft on the fixtures of `fixtures/lora/make_lora.py` (peft 0.21.2): for GPT-2
//! (Conv1D, `fan_in_fan_out`, r 4 on `c_attn` + `mlp.c_proj`), Pythia (Linear, rsLoRA, r 2
//! on `query_key_value` + `dense_4h_to_h`) and a GQA Llama with biases (r 4 on `q_proj`,
//! `v_proj`, `down_proj`), each with random B matrices:
//! - loading peft's adapter into tril gives peft's logits;
//! - merging gives peft's `merge_and_unload` logits, and a merged directory written by
//!   `merge_to_dir` loads back to the same logits;
//! - tril's saved adapter loads in peft and gives tril's logits (a python check, skipped with a
//!   message where python with peft is absent; `TRIL_PYTHON` picks the interpreter);
//! - only adapters get gradients (`add_lora` freezes the base).
//!
//! Tolerance: 1e-4 absolute on logits at real (mask 1) positions. Measured (CPU backend,
//! `--nocapture` prints them): peft's adapter in tril 3.0e-6 (gpt2) / 1.7e-6 (pythia); merged vs
//! `merge_and_unload` 3.2e-6 / 1.3e-6; peft on tril's adapter 5.2e-6 / 1.2e-6.
//!
//! The tests are generic over the family (`Family`); `merge_to_dir` goes through `hf::load_lm`
//! and is checked on GPT-2.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use common::{fixture, B};
use serde_json::Value;
use tril_core::backend::CpuAutodiff;
use tril_models::gpt2::Gpt2Model;
use tril_models::hf::gpt2::load_gpt2;
use tril_models::hf::llama::load_llama;
use tril_models::hf::neox::load_neox;
use tril_models::hf::peft::{load_lora, merge_to_dir, save_lora, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use tril_models::hf::Checkpoint;
use tril_models::llama::LlamaModel;
use tril_models::lm::{LanguageModel, LmInput};
use tril_models::lora::{add_lora, merge_lora, without_lora, LoraConfig, LoraTargets};
use tril_models::neox::NeoXModel;

const TOL: f32 = 1e-4;

fn expected(name: &str) -> Value {
    let path = fixture("lora").join(name).join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ints(exp: &Value, key: &str) -> Tensor<B, 2, Int> {
    let flat: Vec<i64> = exp[key].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    let shape: Vec<usize> =
        exp[format!("{key}_shape")].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    Tensor::from_data(TensorData::new(flat, [shape[0], shape[1]]), &Default::default())
}

fn floats(exp: &Value, key: &str) -> Vec<f32> {
    exp[key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// The forward of a model family (NeoX is not a `CausalLm` variant yet, so the tests are
/// generic over the family).
trait Family<Bk: Backend>: LoraTargets<Bk> + Clone {
    fn load(dir: &Path, device: &Bk::Device) -> Self;
    fn forward_with(&self, input: LmInput<Bk>) -> Tensor<Bk, 3>;
}

impl<Bk: Backend> Family<Bk> for Gpt2Model<Bk> {
    fn load(dir: &Path, device: &Bk::Device) -> Self {
        load_gpt2::<Bk>(dir, device).unwrap().model
    }
    fn forward_with(&self, input: LmInput<Bk>) -> Tensor<Bk, 3> {
        LanguageModel::forward_with(self, input, None).logits
    }
}

impl<Bk: Backend> Family<Bk> for LlamaModel<Bk> {
    fn load(dir: &Path, device: &Bk::Device) -> Self {
        load_llama::<Bk>(dir, device).unwrap().model
    }
    fn forward_with(&self, input: LmInput<Bk>) -> Tensor<Bk, 3> {
        LanguageModel::forward_with(self, input, None).logits
    }
}

impl<Bk: Backend> Family<Bk> for NeoXModel<Bk> {
    fn load(dir: &Path, device: &Bk::Device) -> Self {
        load_neox::<Bk>(dir, device).unwrap().model
    }
    fn forward_with(&self, input: LmInput<Bk>) -> Tensor<Bk, 3> {
        LanguageModel::forward_with(self, input, None).logits
    }
}

fn logits<Bk: Backend, M: Family<Bk>>(model: &M, exp: &Value) -> Vec<f32> {
    let dev = Default::default();
    let conv = |t: Tensor<B, 2, Int>| Tensor::<Bk, 2, Int>::from_data(t.into_data(), &dev);
    let input = LmInput::new(conv(ints(exp, "input_ids")))
        .with_mask(conv(ints(exp, "attention_mask")))
        .with_positions(conv(ints(exp, "position_ids")));
    model.forward_with(input).into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Max |a - b| over real positions (mask 1) of `[B, T, V]` logits.
fn diff(a: &[f32], b: &[f32], exp: &Value) -> f32 {
    assert_eq!(a.len(), b.len());
    let mask: Vec<i64> = exp["attention_mask"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    let v = a.len() / mask.len();
    let mut m = 0f32;
    for (i, &keep) in mask.iter().enumerate() {
        if keep == 1 {
            for j in i * v..(i + 1) * v {
                m = m.max((a[j] - b[j]).abs());
            }
        }
    }
    m
}

fn adapter_dir(name: &str) -> PathBuf {
    fixture("lora").join(name).join("adapter")
}

fn peft_logits_case<M: Family<B>>(name: &str, base_path: &str) {
    let dev = Default::default();
    let exp = expected(name);
    let model = M::load(&fixture(base_path), &dev);
    let d = diff(&logits(&model, &exp), &floats(&exp, "base_logits"), &exp);
    assert!(d < TOL, "{name}: base logits differ by {d}");
    let (tuned, config) = load_lora(model, &adapter_dir(name), &dev).unwrap();
    assert_eq!(config.r, if name == "pythia" { 2 } else { 4 });
    let d = diff(&logits(&tuned, &exp), &floats(&exp, "logits"), &exp);
    eprintln!("{name}: peft adapter in tril, max |diff| {d:.3e}");
    assert!(d < TOL, "{name}: adapted logits differ by {d}");
    let d = diff(&logits(&merge_lora(tuned.clone()), &exp), &floats(&exp, "merged_logits"), &exp);
    eprintln!("{name}: merged vs peft merge_and_unload, max |diff| {d:.3e}");
    assert!(d < TOL, "{name}: merged logits differ by {d}");
    let d = diff(&logits(&without_lora(&tuned), &exp), &floats(&exp, "base_logits"), &exp);
    assert!(d < TOL, "{name}: without_lora differs from the base by {d}");
}

#[test]
fn peft_adapters_give_peft_logits_and_merges() {
    peft_logits_case::<Gpt2Model<B>>("gpt2", "gpt2");
    peft_logits_case::<NeoXModel<B>>("pythia", "neox/pythia");
    peft_logits_case::<LlamaModel<B>>("llama", "llama/llama_gqa");
    // merge_to_dir (any family `hf::load_lm` knows) writes a full HF model with the merged weights.
    let (dev, exp) = (Default::default(), expected("gpt2"));
    let out = tempfile::tempdir().unwrap();
    merge_to_dir::<B>(&fixture("gpt2"), &adapter_dir("gpt2"), out.path(), &dev).unwrap();
    let merged = <Gpt2Model<B> as Family<B>>::load(out.path(), &dev);
    let d = diff(&logits(&merged, &exp), &floats(&exp, "merged_logits"), &exp);
    assert!(d < TOL, "merged directory logits differ by {d}");
    assert!(out.path().join("tokenizer.json").is_file());
}

#[test]
fn peft_loads_trils_adapter() {
    let python = std::env::var("TRIL_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_peft = Command::new(&python)
        .args(["-c", "import torch, transformers, peft"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_peft {
        eprintln!("skipped: python with torch + transformers + peft not found ({python}; set TRIL_PYTHON)");
        return;
    }
    trils_adapter_case::<Gpt2Model<B>>(&python, "gpt2", "gpt2", &["c_attn", "c_proj", "c_fc"]);
    let all = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"];
    trils_adapter_case::<NeoXModel<B>>(&python, "pythia", "neox/pythia", &all);
    let all = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    trils_adapter_case::<LlamaModel<B>>(&python, "llama", "llama/llama_gqa", &all);
}

/// A tril adapter of its own (random A and B on every projection the family has) loads in peft.
fn trils_adapter_case<M: Family<B>>(python: &str, name: &str, base_path: &str, targets: &[&str]) {
    let dev = Default::default();
    let exp = expected(name);
    let config = LoraConfig {
        r: 3,
        lora_alpha: 5.0,
        init_lora_weights: false,
        target_modules: Some(targets.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let tuned = add_lora(M::load(&fixture(base_path), &dev), &config, &dev).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_lora(&tuned, &config, out.path(), base_path).unwrap();
    assert!(out.path().join(ADAPTER_CONFIG_FILE).is_file() && out.path().join(ADAPTER_WEIGHTS_FILE).is_file());
    // tril's logits for the fixture's inputs, in the expected.json layout the check reads.
    let mut mine = exp.clone();
    mine["logits"] = Value::from(logits(&tuned, &exp));
    let expected_path = out.path().join("tril_expected.json");
    std::fs::write(&expected_path, mine.to_string()).unwrap();
    let script = fixture("lora").join("make_lora.py");
    let res = Command::new(python)
        .arg(&script)
        .arg("check")
        .arg(out.path())
        .arg(fixture(base_path))
        .arg(&expected_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "{name}: {stdout}\n{}", String::from_utf8_lossy(&res.stderr));
    eprintln!("{name}: {stdout}");
}

/// The PEFT tensor names and shapes tril writes are peft's own (the fixture's file).
fn names_case<M: Family<B>>(name: &str, base_path: &str) {
    let dev = Default::default();
    let (tuned, config) = load_lora(M::load(&fixture(base_path), &dev), &adapter_dir(name), &dev).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_lora(&tuned, &config, out.path(), base_path).unwrap();
    let ours = Checkpoint::open(&out.path().join(ADAPTER_WEIGHTS_FILE)).unwrap();
    let theirs = Checkpoint::open(&adapter_dir(name).join(ADAPTER_WEIGHTS_FILE)).unwrap();
    let names: Vec<&str> = ours.names().collect();
    assert_eq!(names, theirs.names().collect::<Vec<_>>(), "{name}");
    for n in names {
        assert_eq!(ours.shape(n), theirs.shape(n), "{name}: {n}");
    }
}

#[test]
fn saved_tensor_names_and_shapes_are_peft_s() {
    names_case::<Gpt2Model<B>>("gpt2", "gpt2");
    names_case::<NeoXModel<B>>("pythia", "neox/pythia");
    names_case::<LlamaModel<B>>("llama", "llama/llama_gqa");
}

/// Only adapters get gradients and move; every base parameter is bit-identical after two
/// AdamW steps with weight decay.
fn gradients_case<M: Family<CpuAutodiff> + AutodiffModule<CpuAutodiff>>(name: &str, base_path: &str) {
    let dev = Default::default();
    let exp = expected(name);
    let (tuned, _) = load_lora(M::load(&fixture(base_path), &dev), &adapter_dir(name), &dev).unwrap();
    let before = tuned.clone();
    let mut optim = AdamWConfig::new().with_weight_decay(0.1).init();
    let mut model = tuned;
    for _ in 0..2 {
        let ids = Tensor::<CpuAutodiff, 2, Int>::from_data(ints(&exp, "input_ids").into_data(), &dev);
        let loss = model.forward_with(LmInput::new(ids)).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let adapters = model.projections().iter().filter(|(_, l)| l.lora.is_some()).count();
        assert_eq!(grads.len(), 2 * adapters, "{name}: only the adapter matrices have gradients");
        model = optim.step(1e-2, model, grads);
    }
    let floats_of = |m: &M| {
        struct Collect(Vec<TensorData>);
        impl ModuleVisitor<CpuAutodiff> for Collect {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<CpuAutodiff, D>>) {
                self.0.push(p.val().into_data());
            }
        }
        let mut c = Collect(Vec::new());
        without_lora(m).visit(&mut c);
        c.0
    };
    assert!(floats_of(&before) == floats_of(&model), "{name}: a base parameter changed");
    let moved = |m: &M| {
        m.projections()
            .into_iter()
            .filter_map(|(_, l)| {
                l.lora.as_ref().map(|a| (a.lora_a.weight.val().into_data(), a.lora_b.weight.val().into_data()))
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (moved(&before), moved(&model));
    assert!(!a.is_empty() && a.iter().zip(&b).all(|(x, y)| x.0 != y.0 && x.1 != y.1), "{name}: every adapter moves");
}

#[test]
fn only_adapters_get_gradients() {
    gradients_case::<Gpt2Model<CpuAutodiff>>("gpt2", "gpt2");
    gradients_case::<NeoXModel<CpuAutodiff>>("pythia", "neox/pythia");
    gradients_case::<LlamaModel<CpuAutodiff>>("llama", "llama/llama_gqa");
}
