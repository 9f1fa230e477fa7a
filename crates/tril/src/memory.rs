//! `tril memory`: the memory a DPO step or a PPO iteration needs (weights, gradients, AdamW
//! state, activations), for a model directory or the released sizes of every family, and the
//! largest model that fits a budget (`--table`, the README's table). The conventions are
//! `tril_models::memory`'s.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use tril_models::memory::{
    estimate, largest_fitting, Breakdown, Precision, Workload, CPU_24GIB, GPU_80GB, KNOWN_MODELS,
};

/// Which step to size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Alg {
    /// One DPO step (`--batch` pairs of `--seq` tokens).
    Dpo,
    /// One PPO iteration on TRIL's IMDB shapes (112 trajectories, prompt 64, 48 new tokens,
    /// minibatch 28).
    Ppo,
}

/// Arguments of `tril memory`.
#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// A model directory (HF layout; its `config.json` is read). Without it, every released
    /// size tril knows is listed.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// The step to size.
    #[arg(long, value_enum, default_value = "dpo")]
    pub alg: Alg,
    /// Float type: f32 or bf16.
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    pub precision: String,
    /// LoRA rank (PEFT's default target modules of the family); none: full fine-tuning.
    #[arg(long, value_name = "R")]
    pub lora_r: Option<usize>,
    /// DPO pairs per micro-batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// DPO tokens per sequence.
    #[arg(long, default_value_t = 512)]
    pub seq: usize,
    /// Print the README's table: per family, the largest released size whose DPO step and PPO
    /// iteration fit one 80 GB GPU and a 24 GiB machine, f32/bf16, with and without LoRA r=8.
    #[arg(long, conflicts_with = "model")]
    pub table: bool,
}

fn gib(bytes: f64) -> f64 {
    bytes / (1u64 << 30) as f64
}

fn row(name: &str, b: &Breakdown) -> String {
    format!(
        "{name:<20} {:>9.1} {:>9.1} {:>9.1} {:>11.1} {:>9.1}",
        gib(b.weights),
        gib(b.grads),
        gib(b.optimizer),
        gib(b.activations),
        gib(b.total())
    )
}

/// Runs `tril memory`.
pub fn run(args: &MemoryArgs) -> Result<()> {
    let precision = if args.precision == "bf16" { Precision::Bf16 } else { Precision::F32 };
    if args.batch == 0 || args.seq == 0 {
        bail!("--batch and --seq must be at least 1");
    }
    if args.lora_r == Some(0) {
        bail!("--lora-r must be at least 1");
    }
    let workload = match args.alg {
        Alg::Dpo => Workload::Dpo { batch: args.batch, seq: args.seq },
        Alg::Ppo => Workload::PPO_IMDB,
    };
    if args.table {
        return emit(&table());
    }
    let mut out = format!(
        "{:<20} {:>9} {:>9} {:>9} {:>11} {:>9}   (GiB; {:?}, {}, LoRA {})\n",
        "model",
        "weights",
        "grads",
        "adamw",
        "activations",
        "total",
        workload,
        precision.name(),
        args.lora_r.map_or("off".to_string(), |r| format!("r={r}"))
    );
    match &args.model {
        Some(dir) => {
            let config = tril_models::hf::read_lm_config(dir).with_context(|| format!("--model {}", dir.display()))?;
            let shape = config.shape();
            out += &row(&dir.display().to_string(), &estimate(&shape, workload, precision, args.lora_r));
            out.push('\n');
        }
        None => {
            for m in KNOWN_MODELS {
                out += &row(m.name, &estimate(m, workload, precision, args.lora_r));
                out.push('\n');
            }
        }
    }
    emit(&out)
}

/// Write to stdout; a closed pipe (`tril memory | head`) ends quietly.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The README's table (markdown).
pub fn table() -> String {
    let mut families: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.family).collect();
    families.dedup();
    let mut out = String::from(
        "| family | step | budget | f32 | bf16 | f32 + LoRA r=8 | bf16 + LoRA r=8 |\n|---|---|---|---|---|---|---|\n",
    );
    for family in families {
        let models: Vec<_> = KNOWN_MODELS.iter().filter(|m| m.family == family).collect();
        for (step, workload) in [("DPO", Workload::DPO), ("PPO", Workload::PPO_IMDB)] {
            for (budget_name, budget) in [("80 GB GPU", GPU_80GB), ("24 GiB CPU", CPU_24GIB)] {
                let cell = |precision, lora| {
                    largest_fitting(models.iter().copied(), workload, precision, lora, budget)
                        .map_or("none", |m| m.name)
                };
                out.push_str(&format!(
                    "| {family} | {step} | {budget_name} | {} | {} | {} | {} |\n",
                    cell(Precision::F32, None),
                    cell(Precision::Bf16, None),
                    cell(Precision::F32, Some(8)),
                    cell(Precision::Bf16, Some(8)),
                ));
            }
        }
    }
    out
}
