//! Generation throughput on random weights, on any backend this build carries.
//!
//! ```text
//! cargo run --release -p tril-models --example bench_generate -- [tiny|gpt2|gpt2-medium] [BATCH PROMPT NEW] [DEVICE]
//! cargo run --release -p tril-models --example bench_generate -- gpt2 32 64 128 cpu
//! ```
//! Defaults: `tiny 32 64 128 cpu`. DEVICE is a `device` value (`cpu`, `ndarray`, `flex`,
//! `cuda:0`, `wgpu`); the backends beyond ndarray need `tril-core`'s cargo feature of the
//! same name (`--features tril-core/cuda`).

use burn::tensor::backend::Backend;
use tril_core::backend::{infer, InferJob, Precision, Target};
use tril_models::bench::{bench_generate, BenchReport};
use tril_models::gpt2::Gpt2Config;

struct Bench {
    config: Gpt2Config,
    batch: usize,
    prompt: usize,
    new: usize,
}

impl InferJob for Bench {
    type Output = tril_models::Result<BenchReport>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        bench_generate::<B>(&self.config, self.batch, self.prompt, self.new, &device)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset = args.first().map_or("tiny", String::as_str);
    let num = |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (batch, prompt, new) = (num(1, 32), num(2, 64), num(3, 128));
    let device = args.get(4).map_or("cpu", String::as_str).parse()?;
    let config = match preset {
        "tiny" => Gpt2Config::tiny(),
        "gpt2" => Gpt2Config::gpt2(),
        "gpt2-medium" => Gpt2Config::gpt2_medium(),
        other => return Err(format!("unknown preset {other}: use tiny, gpt2 or gpt2-medium").into()),
    };
    let target = Target::new(device, Precision::F32)?;
    let report = infer(target, Bench { config, batch, prompt, new })??;
    println!("{preset} [{}]: {report}", device.resolved());
    Ok(())
}
