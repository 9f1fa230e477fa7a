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
