//! Tensor constructors shared by the loss tests (compiled for tests only).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// The CPU backend the loss tests run on.
pub type Cpu = tril_core::backend::CpuBackend;

/// A `[n]` tensor on any backend from f64 values.
pub fn t1_on<B: Backend>(v: &[f64]) -> Tensor<B, 1> {
    let data: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(data, [v.len()]), &Default::default())
}

/// A `[rows, n / rows]` tensor on any backend from row-major f64 values.
pub fn t2_on<B: Backend>(v: &[f64], rows: usize) -> Tensor<B, 2> {
    let data: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(data, [rows, v.len() / rows]), &Default::default())
}

/// [`t1_on`] on [`Cpu`].
pub fn t1(v: &[f64]) -> Tensor<Cpu, 1> {
    t1_on(v)
}

/// [`t2_on`] on [`Cpu`].
pub fn t2(v: &[f64], rows: usize) -> Tensor<Cpu, 2> {
    t2_on(v, rows)
}
