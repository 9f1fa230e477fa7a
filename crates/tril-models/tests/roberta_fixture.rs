//! Bare encoders ([`load_encoder`]) equal HF transformers: the tiny RoBERTa fixture
//! (`make_roberta.py`, an `AutoModel` checkpoint without prefix) after all layers and after
//! the first layer only (bert_score's truncation), and the BERT / DistilBERT classifier
//! checkpoints (prefixes `bert.` / `distilbert.`) read as bare encoders.

mod common;

use common::*;
use tril_models::hf::encoder::load_encoder;
use tril_models::hf::load_encoder_classifier;
use tril_models::tokenizer::{PaddingSide, TextTokenizer, TokenizerOptions};

const TOL: f32 = 1e-4;

#[test]
fn roberta_hidden_states_equal_transformers() {
    let dev = Default::default();
    let tok = TextTokenizer::from_dir(&fixture("roberta"))
        .unwrap()
        .with_options(TokenizerOptions { padding_side: PaddingSide::Right, ..Default::default() });
    let mut exp = expected("roberta");
    let enc = tok.encode_batch(&CLS_TEXTS).unwrap();
    let (ids_exp, _) = exp.read_i64("input_ids").unwrap();
    let (mask_exp, _) = exp.read_i64("attention_mask").unwrap();
    assert_eq!(enc.ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), ids_exp, "ids");
    assert_eq!(enc.attention_mask.iter().map(|&x| x as i64).collect::<Vec<_>>(), mask_exp, "mask");
    let keep: Vec<bool> = mask_exp.iter().map(|&m| m == 1).collect();
    let (ids, mask) = enc.to_tensors::<B>(&dev);
    for (layers, key) in [(None, "last_hidden_state"), (Some(1), "hidden_1")] {
        let loaded = load_encoder::<B>(&fixture("roberta"), layers, &dev).unwrap();
        assert_eq!(loaded.config.position_offset, 2);
        assert_eq!(loaded.model.layers.len(), layers.unwrap_or(2));
        let got = values(loaded.model.forward(ids.clone(), Some(mask.clone()), None));
        let (want, _) = exp.read_f32(key).unwrap();
        let d = max_diff_where(&got, &want, loaded.config.hidden_size, &keep);
        eprintln!("roberta {key} max |diff| {d:.2e}");
        assert!(d <= TOL, "roberta {key} max |diff| {d}");
    }
    let err = load_encoder::<B>(&fixture("roberta"), Some(3), &dev).unwrap_err().to_string();
    assert!(err.contains("3 layers requested, the checkpoint has 2"), "{err}");
}

#[test]
fn classifier_checkpoints_load_as_bare_encoders() {
    let dev = Default::default();
    for name in ["bert", "distilbert"] {
        let cls = load_encoder_classifier::<B>(&fixture(name), &dev).unwrap();
        let bare = load_encoder::<B>(&fixture(name), None, &dev).unwrap();
        assert!(bare.report.unused.iter().any(|n| n == "classifier.weight"), "{:?}", bare.report.unused);
        let tok = TextTokenizer::from_dir(&fixture(name))
            .unwrap()
            .with_options(TokenizerOptions { padding_side: PaddingSide::Right, ..Default::default() });
        let (ids, mask) = tok.encode_batch(&CLS_TEXTS).unwrap().to_tensors::<B>(&dev);
        let a = values(cls.model.encode(ids.clone(), Some(mask.clone()), None));
        let b = values(bare.model.forward(ids, Some(mask), None));
        assert_eq!(a, b, "{name}");
    }
}
