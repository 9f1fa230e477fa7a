//! Beam search equals HF transformers on the tiny GPT-2 fixture: `fixtures/make_beam.py` runs
//! `model.generate(num_beams=k, do_sample=False, min_new_tokens=m, max_new_tokens=20)` (HF
//! defaults otherwise: length_penalty 1.0, early_stopping False, one returned sequence) on 4
//! left-padded prompts for k in {3, 5} and m in {0, 5}, with an EOS the beams emit; tril must
//! give the same tokens with and without the KV cache, and its log-probs must sum to HF's
//! `sequences_scores` (sum of log-probs / length).

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use tril_models::beam::beam_search;
use tril_models::generate::{generate, generate_with_prefix, GenerationConfig, SpecialTokens};
use tril_models::hf::load_gpt2;

#[derive(Deserialize)]
struct Fixture {
    input_ids: Vec<Vec<i64>>,
    attention_mask: Vec<Vec<i64>>,
    eos_token_id: u32,
    pad_token_id: u32,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    num_beams: usize,
    min_new_tokens: usize,
    max_new_tokens: usize,
    tokens: Vec<Vec<u32>>,
    sequences_scores: Vec<f32>,
}

fn fixture_data() -> Fixture {
    let text = std::fs::read_to_string(fixture("gpt2").join("beam.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tensor(rows: &[Vec<i64>]) -> Tensor<B, 2, Int> {
    let shape = [rows.len(), rows[0].len()];
    Tensor::from_data(TensorData::new(rows.concat(), shape), &Default::default())
}

#[test]
fn beam_search_equals_hf_generate() {
    let model = load_gpt2::<B>(&fixture("gpt2"), &Default::default()).unwrap().model;
    let fx = fixture_data();
    let (ids, mask) = (tensor(&fx.input_ids), tensor(&fx.attention_mask));
    let special = SpecialTokens { eos_token_id: Some(fx.eos_token_id), pad_token_id: fx.pad_token_id };
    let mut stopped = 0;
    for case in &fx.cases {
        let cfg = GenerationConfig {
            num_beams: case.num_beams,
            min_length: case.min_new_tokens,
            max_new_tokens: case.max_new_tokens,
            ..Default::default()
        };
        let what = format!("num_beams {} min_new_tokens {}", case.num_beams, case.min_new_tokens);
        let rng = &mut ChaCha8Rng::seed_from_u64(0);
        let out = generate(&model, ids.clone(), mask.clone(), &cfg, special, rng).unwrap();
        let full_cfg = GenerationConfig { use_cache: false, ..cfg.clone() };
        let full = generate(&model, ids.clone(), mask.clone(), &full_cfg, special, rng).unwrap();
        assert_eq!(out.tokens, full.tokens, "{what}: cache vs recompute");
        for (r, want) in case.tokens.iter().enumerate() {
            assert_eq!(out.row(r), want.as_slice(), "{what}: row {r}");
            let len = want.iter().position(|&t| t == fx.eos_token_id).map_or(want.len(), |i| i + 1);
            stopped += usize::from(len < case.max_new_tokens);
            let mask_row = &out.mask[r * case.max_new_tokens..(r + 1) * case.max_new_tokens];
            assert!(mask_row.iter().enumerate().all(|(j, &m)| m == u32::from(j < len)), "{what}: mask row {r}");
            let lps = &out.logprobs[r * case.max_new_tokens..][..len];
            let score = lps.iter().sum::<f32>() / len as f32;
            let d = (score - case.sequences_scores[r]).abs();
            assert!(d < 1e-4, "{what}: row {r} score {score} vs HF {}", case.sequences_scores[r]);
            assert!(lps.iter().all(|l| l.is_finite() && *l <= 0.0));
        }
    }
    assert!(stopped > 0, "the fixture's EOS should stop some rows early");
}

#[test]
fn one_beam_equals_greedy() {
    let model = load_gpt2::<B>(&fixture("gpt2"), &Default::default()).unwrap().model;
    let fx = fixture_data();
    let (ids, mask) = (tensor(&fx.input_ids), tensor(&fx.attention_mask));
    let special = SpecialTokens { eos_token_id: Some(fx.eos_token_id), pad_token_id: fx.pad_token_id };
    for min_length in [0, 5] {
        let cfg = GenerationConfig { min_length, ..GenerationConfig::greedy(20) };
        let greedy =
            generate(&model, ids.clone(), mask.clone(), &cfg, special, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        let beam = beam_search(&model, ids.clone(), mask.clone(), &cfg, special).unwrap();
        assert_eq!(beam.tokens, greedy.tokens, "min_length {min_length}");
        assert_eq!(beam.mask, greedy.mask);
        let d = beam.logprobs.iter().zip(&greedy.logprobs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d < 1e-5, "logprob max |diff| {d}");
    }
}

#[test]
fn bad_beam_configs_are_refused() {
    let model = load_gpt2::<B>(&fixture("gpt2"), &Default::default()).unwrap().model;
    let fx = fixture_data();
    let (ids, mask) = (tensor(&fx.input_ids), tensor(&fx.attention_mask));
    let special = SpecialTokens { eos_token_id: Some(fx.eos_token_id), pad_token_id: fx.pad_token_id };
    let rng = &mut ChaCha8Rng::seed_from_u64(0);
    let sampled = GenerationConfig { num_beams: 3, do_sample: true, ..Default::default() };
    let err = generate(&model, ids.clone(), mask.clone(), &sampled, special, rng).unwrap_err().to_string();
    assert!(err.contains("num_beams") && err.contains("do_sample"), "{err}");
    let zero = GenerationConfig { num_beams: 0, ..Default::default() };
    let err = generate(&model, ids.clone(), mask.clone(), &zero, special, rng).unwrap_err().to_string();
    assert!(err.contains("num_beams"), "{err}");
    let beams = GenerationConfig { num_beams: 3, ..GenerationConfig::greedy(4) };
    let forced = vec![vec![1u32]; fx.input_ids.len()];
    let err = generate_with_prefix(&model, ids.clone(), mask.clone(), &beams, special, Some(&forced), rng)
        .unwrap_err()
        .to_string();
    assert!(err.contains("forced") && err.contains("num_beams"), "{err}");
    let long = GenerationConfig { num_beams: 3, ..GenerationConfig::greedy(500) };
    let err = generate(&model, ids, mask, &long, special, rng).unwrap_err().to_string();
    assert!(err.contains("n_positions"), "{err}");
}
