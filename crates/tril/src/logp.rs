//! `tril logp`: reference log-probs of every response in a dataset, keyed by uid, for
//! `alg=offline_ips` (the seed's `run_logp.sh`, systems.md §2.4). The computation and the
//! cache format are [`tril_algorithms::offline::logp`]; this file is the command line around it.

use crate::commands::Failure;
use anyhow::anyhow;
use burn::tensor::backend::Backend;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tril_algorithms::offline::logp::{self, Column, Columns, LogpOptions, RowPolicy};
use tril_core::backend::{infer, Device, InferJob, Precision, Target};
use tril_models::tokenizer::TextTokenizer;

/// Arguments of `tril logp`.
#[derive(Debug, clap::Args)]
pub struct LogpArgs {
    /// The dataset (.parquet, .csv or .jsonl) with uid, prompt and response columns.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// The reference model: a GPT-2 family HF directory, a cached hub id, or
    /// builtin:tiny-gpt2 (initialized from --seed).
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// Tokenizer (default: the model's; builtin:numbers for builtin:tiny-gpt2).
    #[arg(long, value_name = "TOKENIZER")]
    pub tokenizer: Option<String>,
    /// Output cache (default: <data stem>.logp.safetensors beside the data).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Tokens per row at most (prompt + response + EOS); use the same value in training.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(2..))]
    pub max_length: u64,
    /// Column of the response.
    #[arg(long, default_value = "unprocessed_response", value_name = "COLUMN")]
    pub response_key: String,
    /// Column of the prompt (text or a JSON list of messages).
    #[arg(long, default_value = "prompt_pretokenized", value_name = "COLUMN")]
    pub prompt_key: String,
    /// Column of the unique row id.
    #[arg(long, default_value = "uid", value_name = "COLUMN")]
    pub uid_key: String,
    /// Seed of builtin:tiny-gpt2's initialisation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// A progress line every this many batches.
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// Where to compute (`cpu`, `ndarray`, `flex`, `cuda:N`, `wgpu`), as the config's `device`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// A row whose prompt leaves no room for a response in --max-length: `skip` it
    /// (counted and reported, left out of the cache) or `truncate-left` (cut the prompt's
    /// start). Use the same value as alg.args.overflow in training.
    #[arg(long, default_value = "skip", value_name = "RULE")]
    pub overflow: String,
    /// Stop at the first problem row (no room for a response, an empty prompt) instead of
    /// skipping it.
    #[arg(long)]
    pub strict: bool,
}

/// The log-prob cache computed on the backend the job's target names.
struct Compute<'a> {
    args: &'a LogpArgs,
    tok: &'a TextTokenizer,
    records: &'a [logp::Record],
    meta: BTreeMap<String, String>,
    rows: RowPolicy,
}

impl InferJob for Compute<'_> {
    type Output = Result<logp::LogpCache, Failure>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let max_length = args.max_length as usize;
        let (lm, _) = logp::load_lm::<B>(&args.model, self.tok.vocab_size(), args.seed, max_length, &device)
            .map_err(|e| Failure::Config(anyhow!(e)))?;
        let opts = LogpOptions {
            batch_size: args.batch_size as usize,
            max_length,
            log_every: args.log_every,
            rows: self.rows,
        };
        logp::compute_cache(&lm, self.tok, self.records, &opts, self.meta, &device)
            .map_err(|e| Failure::Runtime(anyhow!(e)))
    }
}

/// Runs `tril logp`.
pub fn run(args: &LogpArgs) -> Result<(), Failure> {
    let runtime = |e: tril_core::plugin::PluginError| Failure::Runtime(anyhow!(e));
    let columns = Columns {
        uid: Column::new(&args.uid_key, "--uid-key"),
        prompt: Column::new(&args.prompt_key, "--prompt-key"),
        response: Column::new(&args.response_key, "--response-key"),
        reward: None,
    };
    let overflow = args.overflow.parse().map_err(|e| Failure::Config(anyhow!("--overflow: {e}")))?;
    let rows = RowPolicy { overflow, strict: args.strict };
    let records = logp::read_records(&args.data, &columns).map_err(|e| Failure::Config(anyhow!(e)))?;
    let tokenizer = args.tokenizer.as_deref().unwrap_or(logp::default_tokenizer(&args.model));
    let tok = tril_algorithms::onpolicy::load_tokenizer(tokenizer).map_err(|e| Failure::Config(anyhow!(e)))?;
    let device: Device = args.device.parse().map_err(|e| Failure::Config(anyhow!("--device {}: {e}", args.device)))?;
    let target = Target::new(device, Precision::F32)?;
    let max_length = args.max_length as usize;
    let out = args.out.clone().unwrap_or_else(|| logp::default_cache_path(&args.data));
    tracing::info!(rows = records.len(), model = %args.model, out = %out.display(), "computing reference log-probs");
    let meta = BTreeMap::from([
        ("model".to_string(), args.model.clone()),
        ("tokenizer".to_string(), tokenizer.to_string()),
        ("seed".to_string(), args.seed.to_string()),
        ("max_length".to_string(), max_length.to_string()),
        ("data".to_string(), args.data.display().to_string()),
    ]);
    let cache = infer(target, Compute { args, tok: &tok, records: &records, meta, rows })??;
    cache.save(&out).map_err(runtime)?;
    tracing::info!(rows = cache.len(), out = %out.display(), "wrote the log-prob cache");
    Ok(())
}
