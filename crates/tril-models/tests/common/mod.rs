//! Helpers shared by the integration tests: fixture paths and tensor comparison.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Int, Tensor, TensorData};
use tril_core::backend::CpuBackend;
use tril_models::hf::Checkpoint;

pub type B = CpuBackend;

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The expected outputs of a fixture model.
pub fn expected(name: &str) -> Checkpoint {
    Checkpoint::open(&fixture(name).join("expected.safetensors")).unwrap()
}

/// An i64 tensor of the expected file as a Burn Int tensor.
pub fn int_tensor<const D: usize>(ck: &mut Checkpoint, name: &str) -> Tensor<B, D, Int> {
    let (v, shape) = ck.read_i64(name).unwrap();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// The prompts of `make_fixtures.py` (`PROMPTS`).
pub const PROMPTS: [&str; 4] =
    ["the movie was", "I loved every minute of it! The actors", "boring", "What a waste of time; the plot"];
/// The classifier texts of `make_fixtures.py` (`CLS_TEXTS`).
pub const CLS_TEXTS: [&str; 3] =
    ["the movie was great", "this film is terrible, boring and far too long", "what a waste"];

/// Max |a - b| over the rows/positions where `keep` is true; `a` and `b` are flat row-major with
/// `inner` values per position.
pub fn max_diff_where(a: &[f32], b: &[f32], inner: usize, keep: &[bool]) -> f32 {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.len(), keep.len() * inner);
    let mut m = 0f32;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if keep[i / inner] {
            m = m.max((x - y).abs());
        }
    }
    m
}

/// Flat f32 values of a tensor.
pub fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// What [`greedy_decode`] saw.
pub struct Greedy {
    /// Tokens chosen from the KV-cached logits, `[B, steps]` row-major.
    pub cached: Vec<i64>,
    /// Tokens a full forward over the same sequence picks at each step, `[B, steps]` row-major.
    pub full: Vec<i64>,
    /// Largest |cached - full| over the last-position logits of every step.
    pub worst: f32,
}

/// Greedy decoding as HF `generate` does it (no EOS; the mask grows by one real token a step)
/// with a KV cache, and at every step a full forward over the sequence so far to compare with.
pub fn greedy_decode<M: tril_models::lm::LanguageModel<B>>(
    model: &M,
    ids: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Int>,
    steps: usize,
) -> Greedy {
    use tril_models::lm::{KvCache, LmInput};
    let [b, _] = ids.dims();
    let dev = ids.device();
    let mut cache = KvCache::new(model.n_layer());
    let (mut seq, mut seq_mask, mut next) = (ids.clone(), mask, ids);
    let (mut cached, mut full) = (vec![Vec::new(); b], vec![Vec::new(); b]);
    let mut worst = 0f32;
    for _ in 0..steps {
        let input = LmInput::new(next).with_mask(seq_mask.clone()).last_logits_only();
        let logits = model.forward_with(input, Some(&mut cache)).logits; // [B, 1, V]
        let t = seq.dims()[1];
        let whole = model.forward(seq.clone(), Some(seq_mask.clone())).logits.narrow(1, t - 1, 1); // [B, 1, V]
        let a = values(logits.clone());
        let c = values(whole.clone());
        worst = a.iter().zip(&c).fold(worst, |m, (x, y)| m.max((x - y).abs()));
        let tok = logits.argmax(2).reshape([b, 1]); // [B, 1]
        let rows = |t: Tensor<B, 2, Int>| t.into_data().convert::<i64>().into_vec::<i64>().unwrap();
        for (row, (x, y)) in rows(tok.clone()).into_iter().zip(rows(whole.argmax(2).reshape([b, 1]))).enumerate() {
            cached[row].push(x);
            full[row].push(y);
        }
        seq = Tensor::cat(vec![seq, tok.clone()], 1);
        seq_mask = Tensor::cat(vec![seq_mask, Tensor::ones([b, 1], &dev)], 1);
        next = tok;
    }
    assert_eq!(cache.len(), seq.dims()[1] - 1, "the cache holds every position but the last token");
    Greedy { cached: cached.concat(), full: full.concat(), worst }
}
