//! BERT and DistilBERT sequence classifiers equal HF transformers on the tiny fixtures,
//! including the WordPiece tokenizer with right padding.

mod common;

use common::*;
use tril_models::hf::{load_encoder_classifier, save_encoder_classifier};
use tril_models::tokenizer::{PaddingSide, TextTokenizer, TokenizerOptions};

const TOL: f32 = 1e-4;

fn check(name: &str) {
    let dev = Default::default();
    let loaded = load_encoder_classifier::<B>(&fixture(name), &dev).unwrap();
    assert!(loaded.report.unused.is_empty(), "{:?}", loaded.report.unused);
    assert_eq!(loaded.config.labels, vec!["NEGATIVE".to_string(), "POSITIVE".to_string()]);
    let mut exp = expected(name);

    let tok = TextTokenizer::from_dir(&fixture(name))
        .unwrap()
        .with_options(TokenizerOptions { padding_side: PaddingSide::Right, ..Default::default() });
    tok.check_vocab(loaded.config.vocab_size, name).unwrap();
    let enc = tok.encode_batch(&CLS_TEXTS).unwrap();
    let (ids_exp, _) = exp.read_i64("input_ids").unwrap();
    let (mask_exp, _) = exp.read_i64("attention_mask").unwrap();
    assert_eq!(enc.ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), ids_exp, "{name} ids");
    assert_eq!(enc.attention_mask.iter().map(|&x| x as i64).collect::<Vec<_>>(), mask_exp, "{name} mask");

    let (ids, mask) = enc.to_tensors::<B>(&dev);
    let (logits_exp, _) = exp.read_f32("logits").unwrap();
    let (probs_exp, _) = exp.read_f32("probs").unwrap();
    let logits = values(loaded.model.forward(ids.clone(), Some(mask.clone())));
    let probs = values(loaded.model.probs(ids.clone(), Some(mask.clone())));
    let d = logits.iter().zip(&logits_exp).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("{name} logits max |diff| {d:.2e}");
    assert!(d <= TOL, "{name} logits max |diff| {d}");
    let d = probs.iter().zip(&probs_exp).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("{name} probs max |diff| {d:.2e}");
    assert!(d <= TOL, "{name} probs max |diff| {d}");

    // Save and reload: same logits.
    let dir = tempfile::tempdir().unwrap();
    save_encoder_classifier(&loaded.model, &loaded.config, dir.path(), Some(&tok)).unwrap();
    let again = load_encoder_classifier::<B>(dir.path(), &dev).unwrap();
    let back = values(again.model.forward(ids, Some(mask)));
    assert_eq!(back, logits, "{name} after save/load");
}

#[test]
fn bert_classifier_equals_transformers() {
    check("bert");
}

#[test]
fn distilbert_classifier_equals_transformers() {
    check("distilbert");
}
