//! Generation throughput benchmark (random weights, no download), for `tril bench generate`
//! and `examples/bench_generate.rs`.

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::causal_lm::CausalLm;
use crate::error::Result;
use crate::generate::{generate, GenerationConfig, SpecialTokens};
use crate::gpt2::Gpt2Config;
use crate::lm::LmInput;

/// Result of [`bench_generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Rows generated at once.
    pub batch: usize,
    /// Prompt length (no padding).
    pub prompt_len: usize,
    /// New tokens per row.
    pub new_tokens: usize,
    /// Model parameters.
    pub params: usize,
    /// Seconds of the timed generation (prefill + decode).
    pub seconds: f64,
    /// Seconds of one prefill forward over the prompts (measured separately).
    pub prefill_seconds: f64,
    /// Generated tokens per second: `batch * new_tokens / seconds`.
    pub tokens_per_second: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "generate: {:.1} M params, batch {}, prompt {}, {} new tokens: {:.2} s ({:.1} ms/step, prefill {:.1} ms) = {:.1} tokens/s",
            self.params as f64 / 1e6,
            self.batch,
            self.prompt_len,
            self.new_tokens,
            self.seconds,
            1e3 * self.seconds / self.new_tokens.max(1) as f64,
            1e3 * self.prefill_seconds,
            self.tokens_per_second
        )
    }
}

/// Time sampled generation (top-k 50, no EOS, KV cache) on a randomly initialised GPT-2.
///
/// A warm-up generation of 2 tokens runs first (weights are initialised lazily and backends
/// may compile kernels), then one prefill forward and one full generation are timed.
pub fn bench_generate<B: Backend>(
    config: &Gpt2Config,
    batch: usize,
    prompt_len: usize,
    new_tokens: usize,
    device: &B::Device,
) -> Result<BenchReport> {
    let model = CausalLm::from(config.init::<B>(device));
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let ids: Vec<i64> = (0..batch * prompt_len).map(|_| rng.random_range(0..config.vocab_size as i64)).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [batch, prompt_len]), device);
    let mask = Tensor::<B, 2, Int>::ones([batch, prompt_len], device);
    let special = SpecialTokens { eos_token_id: None, pad_token_id: 0 };
    let sample = |n| GenerationConfig { do_sample: true, top_k: 50, max_new_tokens: n, ..Default::default() };
    generate(&model, ids.clone(), mask.clone(), &sample(2), special, &mut rng)?;

    let start = Instant::now();
    let logits = model.forward_with(LmInput::new(ids.clone()).with_mask(mask.clone()).last_logits_only(), None).logits;
    let _ = logits.into_data();
    let prefill_seconds = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let out = generate(&model, ids, mask, &sample(new_tokens), special, &mut rng)?;
    let seconds = start.elapsed().as_secs_f64();
    let params = burn::module::Module::num_params(&model);
    Ok(BenchReport {
        batch,
        prompt_len,
        new_tokens,
        params,
        seconds,
        prefill_seconds,
        tokens_per_second: out.mask.len() as f64 / seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tril_core::backend::CpuBackend;

    #[test]
    fn tiny_bench_runs() {
        let cfg = Gpt2Config::new(64, 32, 16, 1, 2);
        let r = bench_generate::<CpuBackend>(&cfg, 2, 4, 3, &Default::default()).unwrap();
        assert!(r.tokens_per_second > 0.0 && r.to_string().contains("tokens/s"));
    }
}
