//! Checkpoint save/load round trips (pure Rust, sharded, and through HF transformers) and
//! clear errors for bad checkpoints and mismatched tokenizers.

mod common;

use std::path::Path;
use std::process::Command;
use tril_models::lm::LanguageModel;

use common::*;
use serde_json::json;
use tril_models::hf::{load_gpt2, read_json, save_gpt2, write_json, write_safetensors, Checkpoint};
use tril_models::tokenizer::TextTokenizer;

/// Logits of the fixture batch, flat.
fn fixture_logits(model: &tril_models::gpt2::Gpt2Model<B>) -> Vec<f32> {
    let mut exp = expected("gpt2");
    values(
        model.forward(int_tensor::<2>(&mut exp, "input_ids"), Some(int_tensor::<2>(&mut exp, "attention_mask"))).logits,
    )
}

/// Every tensor of a checkpoint as (name, values, shape).
fn all_tensors(dir: &Path) -> Vec<(String, Vec<f32>, Vec<usize>)> {
    let mut ck = Checkpoint::open(dir).unwrap();
    let names: Vec<String> = ck.names().map(str::to_string).collect();
    names
        .into_iter()
        .map(|n| {
            let (v, s) = ck.read_f32(&n).unwrap();
            (n, v, s)
        })
        .collect()
}

fn copy_config(to: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let mut cfg = read_json(&fixture("gpt2").join("config.json")).unwrap();
    edit(cfg.as_object_mut().unwrap());
    write_json(&to.join("config.json"), &cfg).unwrap();
}

#[test]
fn save_then_load_gives_the_same_logits() {
    let dev = Default::default();
    let loaded = load_gpt2::<B>(&fixture("gpt2"), &dev).unwrap();
    let tok = TextTokenizer::from_dir(&fixture("gpt2")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_gpt2(&loaded.model, &loaded.config, dir.path(), Some(&tok)).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let again = load_gpt2::<B>(dir.path(), &dev).unwrap();
    assert_eq!(fixture_logits(&again.model), fixture_logits(&loaded.model));
    assert_eq!(
        TextTokenizer::from_dir(dir.path()).unwrap().encode("the movie", false).unwrap(),
        tok.encode("the movie", false).unwrap()
    );
}

#[test]
fn sharded_checkpoint_loads() {
    let dev = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let tensors = all_tensors(&fixture("gpt2"));
    let (a, b): (Vec<_>, Vec<_>) = tensors.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let mut map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", a), ("model-00002-of-00002.safetensors", b)] {
        let part: Vec<_> = part.into_iter().map(|(_, t)| t).collect();
        for (n, _, _) in &part {
            map.insert(n.clone(), json!(file));
        }
        write_safetensors(&dir.path().join(file), part).unwrap();
    }
    write_json(&dir.path().join("model.safetensors.index.json"), &json!({"metadata": {}, "weight_map": map})).unwrap();
    copy_config(dir.path(), |_| {});
    let sharded = load_gpt2::<B>(dir.path(), &dev).unwrap();
    let single = load_gpt2::<B>(&fixture("gpt2"), &dev).unwrap();
    assert_eq!(fixture_logits(&sharded.model), fixture_logits(&single.model));
}

/// `check_roundtrip.py` loads our saved directory with transformers and compares logits.
#[test]
fn transformers_loads_a_tril_checkpoint() {
    let python = std::env::var("TRIL_PYTHON").unwrap_or_else(|_| "/opt/pyref/bin/python".into());
    let has_transformers = Command::new(&python)
        .args(["-c", "import torch, transformers, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_transformers {
        eprintln!("skipped: python with transformers not found ({python}; set TRIL_PYTHON)");
        return;
    }
    let dev = Default::default();
    let loaded = load_gpt2::<B>(&fixture("gpt2"), &dev).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_gpt2(&loaded.model, &loaded.config, dir.path(), Some(&TextTokenizer::from_dir(&fixture("gpt2")).unwrap()))
        .unwrap();
    let mut exp = expected("gpt2");
    let mut out = Vec::new();
    for name in ["input_ids", "attention_mask", "position_ids"] {
        let (v, s) = exp.read_i64(name).unwrap();
        out.push((name.to_string(), v, s));
    }
    let logits = fixture_logits(&loaded.model);
    write_i64_and_f32(&dir.path().join("tril_expected.safetensors"), out, ("logits", logits, vec![4, 17, 384]));
    let script = fixture("check_roundtrip.py");
    let res = Command::new(&python).arg(&script).arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "{}\n{}\n{}", script.display(), stdout, String::from_utf8_lossy(&res.stderr));
    eprintln!("{stdout}");
}

fn write_i64_and_f32(path: &Path, ints: Vec<(String, Vec<i64>, Vec<usize>)>, floats: (&str, Vec<f32>, Vec<usize>)) {
    // Build the file with the safetensors crate directly (tril writes f32 only).
    use safetensors::tensor::{Dtype, TensorView};
    let bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = ints
        .into_iter()
        .map(|(n, v, s)| (n, Dtype::I64, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .chain(std::iter::once((
            floats.0.to_string(),
            Dtype::F32,
            floats.2,
            floats.1.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )))
        .collect();
    let views: Vec<(String, TensorView<'_>)> =
        bufs.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn missing_config_key_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path(), |c| {
        c.remove("n_layer");
    });
    let err = load_gpt2::<B>(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("missing config key `n_layer`"), "{err}");
}

#[test]
fn shape_mismatch_names_tensor_expected_and_got() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("gpt2/model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    copy_config(dir.path(), |c| {
        c.insert("vocab_size".into(), json!(400));
    });
    let err = load_gpt2::<B>(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("transformer.wte.weight") && err.contains("expected shape [400, 64], got [384, 64]"), "{err}");
}

#[test]
fn missing_tensor_is_named_and_unused_ones_reported() {
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path(), |_| {});
    let mut tensors = all_tensors(&fixture("gpt2"));
    tensors.push(("transformer.extra.weight".into(), vec![1.0], vec![1]));
    write_safetensors(&dir.path().join("model.safetensors"), tensors.clone()).unwrap();
    let report = load_gpt2::<B>(dir.path(), &Default::default()).unwrap().report;
    assert_eq!(report.unused, vec!["transformer.extra.weight".to_string()]);

    tensors.retain(|(n, _, _)| n != "transformer.ln_f.bias");
    write_safetensors(&dir.path().join("model.safetensors"), tensors).unwrap();
    let err = load_gpt2::<B>(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("missing tensor `transformer.ln_f.bias`"), "{err}");
}

#[test]
fn truncated_safetensors_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path(), |_| {});
    let bytes = std::fs::read(fixture("gpt2/model.safetensors")).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = load_gpt2::<B>(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains("invalid safetensors"), "{err}");
}

#[test]
fn missing_model_files_say_where() {
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path(), |_| {});
    let err = load_gpt2::<B>(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn tokenizer_model_vocab_mismatch_is_an_error() {
    let dev = Default::default();
    let model = load_gpt2::<B>(&fixture("gpt2"), &dev).unwrap();
    let gpt2 = TextTokenizer::gpt2().unwrap();
    let err = gpt2.check_vocab(model.model.vocab_size(), "gpt2 tokenizer vs fixture model").unwrap_err().to_string();
    assert!(err.contains("50257") && err.contains("384"), "{err}");
    TextTokenizer::from_dir(&fixture("gpt2")).unwrap().check_vocab(model.config.vocab_size, "fixture").unwrap();
}
