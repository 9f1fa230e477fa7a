//! `tril merge-lora`: fold a PEFT LoRA adapter (as tril's `alg.lora` checkpoints and peft's
//! `save_pretrained` write it) into its base model and write the full HF model, as PEFT's
//! `merge_and_unload().save_pretrained(out)` does ([`tril_models::hf::peft::merge_to_dir`]).

use crate::commands::Failure;
use anyhow::anyhow;
use std::path::PathBuf;
use tril_core::backend::CpuBackend;
use tril_models::hf::peft::read_adapter_config;

/// Arguments of `tril merge-lora`.
#[derive(Debug, clap::Args)]
pub struct MergeLoraArgs {
    /// The adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
    #[arg(value_name = "ADAPTER_DIR")]
    pub adapter: PathBuf,
    /// The base model: an HF directory or a cached hub id (default: the adapter's
    /// `base_model_name_or_path`).
    #[arg(long, value_name = "BASE")]
    pub base: Option<String>,
    /// Where to write the merged model.
    #[arg(long, value_name = "OUT_DIR")]
    pub out: PathBuf,
}

/// Runs `tril merge-lora` on the CPU.
pub fn run(args: &MergeLoraArgs) -> Result<(), Failure> {
    let (_, info) = read_adapter_config(&args.adapter).map_err(|e| Failure::Config(e.into()))?;
    let base = match (&args.base, &info.base_model_name_or_path) {
        (Some(b), _) | (None, Some(b)) => b.clone(),
        (None, None) => {
            return Err(Failure::Config(anyhow!("the adapter names no base_model_name_or_path: pass --base")))
        }
    };
    let base_dir = tril_models::resolve::resolve_model(&base).map_err(|e| Failure::Config(e.into()))?;
    tril_models::hf::peft::merge_to_dir::<CpuBackend>(&base_dir, &args.adapter, &args.out, &Default::default())
        .map_err(|e| Failure::Runtime(e.into()))?;
    tracing::info!(out = %args.out.display(), "merged {} into {}", args.adapter.display(), base_dir.display());
    Ok(())
}
