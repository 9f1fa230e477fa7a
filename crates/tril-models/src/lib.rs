//! placeholder (crate doc written at the end)
#![deny(missing_docs)]

pub mod bert;
pub mod error;
pub mod generate;
pub mod gpt2;
pub mod gpt2_tokenizer;
pub mod heads;
pub mod hf;
pub mod sampling;
pub mod tokenizer;

pub use error::{ModelError, Result};

/// Default CPU backend (ndarray, f32).
pub type CpuBackend = burn::backend::NdArray<f32>;
/// [`CpuBackend`] with autodiff, for training on CPU.
pub type CpuAutodiff = burn::backend::Autodiff<CpuBackend>;
