//! GPT-2 equals HF transformers on the tiny fixture (made by `fixtures/make_fixtures.py`):
//! logits and hidden states of a left-padded batch, greedy generation, KV cache vs no cache,
//! and the GPT2ForSequenceClassification head.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tril_models::generate::{generate, GenerationConfig, SpecialTokens};
use tril_models::gpt2::Gpt2Input;
use tril_models::heads::{LmClassifier, ScoreHeadConfig};
use tril_models::hf::load_gpt2;
use tril_models::lm::LanguageModel;
use tril_models::tokenizer::{TextTokenizer, TokenizerOptions};

const TOL: f32 = 1e-4;

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_dir(&fixture("gpt2"))
        .unwrap()
        .with_options(TokenizerOptions { pad_token_as_eos_token: true, ..Default::default() })
}

#[test]
fn left_padded_logits_equal_transformers() {
    let dev = Default::default();
    let loaded = load_gpt2::<B>(&fixture("gpt2"), &dev).unwrap();
    assert_eq!(loaded.report.loaded, 28);
    assert!(loaded.report.unused.is_empty(), "{:?}", loaded.report.unused);
    let mut exp = expected("gpt2");

    // Our tokenizer gives the same left-padded batch as HF's.
    let enc = tokenizer().encode_batch(&PROMPTS).unwrap();
    let (ids_exp, shape) = exp.read_i64("input_ids").unwrap();
    let (mask_exp, _) = exp.read_i64("attention_mask").unwrap();
    assert_eq!((enc.batch, enc.seq_len), (shape[0], shape[1]));
    assert_eq!(enc.ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), ids_exp);
    assert_eq!(enc.attention_mask.iter().map(|&x| x as i64).collect::<Vec<_>>(), mask_exp);

    let (ids, mask) = enc.to_tensors::<B>(&dev);
    let keep: Vec<bool> = mask_exp.iter().map(|&m| m == 1).collect();
    let out = loaded.model.forward_with(Gpt2Input::new(ids.clone()).with_mask(mask.clone()).with_hidden_states(), None);
    let (logits_exp, lshape) = exp.read_f32("logits").unwrap();
    assert_eq!(out.logits.dims().to_vec(), lshape);
    let d = max_diff_where(&values(out.logits), &logits_exp, lshape[2], &keep);
    eprintln!("logits max |diff| {d:.2e}");
    assert!(d <= TOL, "logits max |diff| {d}");
    let (hidden_exp, hshape) = exp.read_f32("last_hidden_state").unwrap();
    let d = max_diff_where(&values(out.last_hidden_state), &hidden_exp, hshape[2], &keep);
    eprintln!("hidden max |diff| {d:.2e}");
    assert!(d <= TOL, "hidden max |diff| {d}");
    assert_eq!(out.hidden_states.unwrap().len(), 3);

    // Explicit HF position ids give the same result as positions derived from the mask.
    let pos = int_tensor::<2>(&mut exp, "position_ids");
    let out2 = loaded.model.forward_with(Gpt2Input::new(ids).with_mask(mask).with_positions(pos), None);
    let d = max_diff_where(&values(out2.logits), &logits_exp, lshape[2], &keep);
    eprintln!("logits (explicit positions) max |diff| {d:.2e}");
    assert!(d <= TOL, "logits (explicit positions) max |diff| {d}");
}

#[test]
fn greedy_generation_equals_hf_generate() {
    let dev = Default::default();
    let model = load_gpt2::<B>(&fixture("gpt2"), &dev).unwrap().model;
    let mut exp = expected("gpt2");
    let ids = int_tensor::<2>(&mut exp, "input_ids");
    let mask = int_tensor::<2>(&mut exp, "attention_mask");
    let eot = tokenizer().eos_token_id().unwrap();
    let rng = &mut ChaCha8Rng::seed_from_u64(0);

    let out = generate(
        &model,
        ids.clone(),
        mask.clone(),
        &GenerationConfig::greedy(20),
        SpecialTokens { eos_token_id: Some(eot), pad_token_id: eot },
        rng,
    )
    .unwrap();
    let (want, _) = exp.read_i64("greedy_tokens").unwrap();
    assert_eq!(out.tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(), want);

    // With an EOS that row 0 emits at step 5: that row stops and is padded, as in HF.
    let (eos_pad, _) = exp.read_i64("greedy_eos_ids").unwrap();
    let special = SpecialTokens { eos_token_id: Some(eos_pad[0] as u32), pad_token_id: eos_pad[1] as u32 };
    let out = generate(&model, ids, mask, &GenerationConfig::greedy(20), special, rng).unwrap();
    let (want, _) = exp.read_i64("greedy_eos_tokens").unwrap();
    assert_eq!(out.tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(), want);
    assert_eq!(out.lengths()[0], 6);
    assert_eq!(&out.mask[..20], &[[1u32; 6].as_slice(), [0u32; 14].as_slice()].concat());
}

#[test]
fn kv_cache_generation_equals_full_recompute() {
    let dev = Default::default();
    let model = load_gpt2::<B>(&fixture("gpt2"), &dev).unwrap().model;
    let mut exp = expected("gpt2");
    let ids = int_tensor::<2>(&mut exp, "input_ids");
    let mask = int_tensor::<2>(&mut exp, "attention_mask");
    let special = SpecialTokens { eos_token_id: Some(7), pad_token_id: 0 };
    for base in [
        GenerationConfig::greedy(12),
        GenerationConfig {
            do_sample: true,
            top_k: 20,
            top_p: 0.9,
            temperature: 1.3,
            min_length: 3,
            max_new_tokens: 12,
            ..Default::default()
        },
    ] {
        let cached =
            generate(&model, ids.clone(), mask.clone(), &base, special, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
        let full_cfg = GenerationConfig { use_cache: false, ..base };
        let full =
            generate(&model, ids.clone(), mask.clone(), &full_cfg, special, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
        assert_eq!(cached.tokens, full.tokens);
        assert_eq!(cached.mask, full.mask);
        let d = cached.logprobs.iter().zip(&full.logprobs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("logprob max |diff| {d:.2e}");
        assert!(d <= TOL, "logprob max |diff| {d}");
    }
}

#[test]
fn logprobs_equal_a_teacher_forced_forward() {
    let dev = Default::default();
    let model = load_gpt2::<B>(&fixture("gpt2"), &dev).unwrap().model;
    let mut exp = expected("gpt2");
    let ids = int_tensor::<2>(&mut exp, "input_ids");
    let mask = int_tensor::<2>(&mut exp, "attention_mask");
    let cfg = GenerationConfig { do_sample: true, top_k: 0, max_new_tokens: 6, ..Default::default() };
    let out = generate(
        &model,
        ids.clone(),
        mask.clone(),
        &cfg,
        SpecialTokens { eos_token_id: None, pad_token_id: 0 },
        &mut ChaCha8Rng::seed_from_u64(1),
    )
    .unwrap();
    let (gen, _, _) = out.to_tensors::<B>(&dev);
    let [b, p] = ids.dims();
    let full = Tensor::cat(vec![ids, gen.clone()], 1);
    let full_mask = Tensor::cat(vec![mask, Tensor::ones([b, 6], &dev)], 1);
    let logits = model.forward(full, Some(full_mask)).logits.narrow(1, p - 1, 6); // [B, 6, V]
    let lp = burn::tensor::activation::log_softmax(logits, 2).gather(2, gen.reshape([b, 6, 1])).reshape([b, 6]);
    let d = values(lp).iter().zip(&out.logprobs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("logprob max |diff| {d:.2e}");
    assert!(d <= TOL, "logprob max |diff| {d}");
}

#[test]
fn sequence_classifier_equals_transformers() {
    let dev = Default::default();
    let loaded = load_gpt2::<B>(&fixture("gpt2"), &dev).unwrap();
    let mut exp = expected("gpt2");
    let (w, wshape) = exp.read_f32("score_weight").unwrap(); // torch [labels, d]
    let mut score = ScoreHeadConfig::new(wshape[1], wshape[0]).init::<B>(&dev);
    let w = Tensor::<B, 2>::from_data(TensorData::new(w, [wshape[0], wshape[1]]), &dev).transpose();
    score.score.weight = burn::module::Param::from_tensor(w);
    let clf = LmClassifier { transformer: loaded.model.into(), score };
    let logits = clf.forward(int_tensor::<2>(&mut exp, "input_ids"), Some(int_tensor::<2>(&mut exp, "attention_mask")));
    let (want, _) = exp.read_f32("score_logits").unwrap();
    let got = values(logits);
    let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("score max |diff| {d:.2e}");
    assert!(d <= TOL, "score max |diff| {d}");
}
