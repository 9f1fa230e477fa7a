//! Generation throughput on random weights.
//!
//! ```text
//! cargo run --release -p tril-models --example bench_generate -- [tiny|gpt2|gpt2-medium] [BATCH PROMPT NEW]
//! cargo run --release -p tril-models --features flex --example bench_generate -- gpt2   # flex CPU backend
//! cargo run --release -p tril-models --features cuda --example bench_generate -- gpt2   # CUDA
//! ```
//! Defaults: `tiny 32 64 128`.

use tril_models::bench::bench_generate;
use tril_models::gpt2::Gpt2Config;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset = args.first().map_or("tiny", String::as_str);
    let num = |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (batch, prompt, new) = (num(1, 32), num(2, 64), num(3, 128));
    let config = match preset {
        "tiny" => Gpt2Config::tiny(),
        "gpt2" => Gpt2Config::gpt2(),
        "gpt2-medium" => Gpt2Config::gpt2_medium(),
        other => return Err(format!("unknown preset {other}: use tiny, gpt2 or gpt2-medium").into()),
    };
    #[cfg(feature = "cuda")]
    let backend = "cuda";
    #[cfg(all(feature = "flex", not(feature = "cuda")))]
    let backend = "flex";
    #[cfg(not(any(feature = "flex", feature = "cuda")))]
    let backend = "ndarray";
    #[cfg(feature = "cuda")]
    let report = bench_generate::<tril_models::CudaBackend>(&config, batch, prompt, new, &Default::default())?;
    #[cfg(all(feature = "flex", not(feature = "cuda")))]
    let report = bench_generate::<tril_models::FlexBackend>(&config, batch, prompt, new, &Default::default())?;
    #[cfg(not(any(feature = "flex", feature = "cuda")))]
    let report = bench_generate::<tril_models::CpuBackend>(&config, batch, prompt, new, &Default::default())?;
    println!("{preset} [{backend}]: {report}");
    Ok(())
}
