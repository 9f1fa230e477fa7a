//! The command line: `tril run`, `tril config`, `tril list`, `tril logp`, `tril best-of-n`,
//! `tril gold-eval`, ...

use clap::{Parser, Subcommand};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  tril run                                      the embedded default: task=synthetic alg=ppo, CPU, no downloads
  tril run task=imdb alg=ppo                    train PPO on IMDB
  tril run task=imdb alg=ppo alg.args.n_iters=7 sampling.max_gen_len=20
  tril run --resume outputs/tril_experiment/2026-11-23_10-00-00
  tril run --config outputs/x/2026-11-23_10-00-00/config.resolved.yaml
  tril config task=imdb alg=ppo                 print the resolved config
  tril config task=imdb alg=ppo --provenance    ...with the source of every value
  tril config task=imdb alg=ppo --unresolved    ...before ${...} interpolation
  tril config --config-dir TRIL/cfgs task=imdb alg=ppo   TRIL's cfgs/ (Hydra defaults lists) as they are
  tril list reward_fn                           registered reward functions
  tril list devices                             the backends this binary carries (device=...)
  tril run device=cuda precision=bf16           train on GPU 0 in bf16 (a --features cuda build)
  tril logp --data d.parquet --model gpt2       reference log-probs for alg=offline_ips
  tril gold-eval RUN_DIR --reward increasing_numbers   gold-score a finished run's eval generations
  tril best-of-n task=imdb alg=ppo --n 16       best-of-n curves: proxy reward_fn and gold_reward_fn
  tril sweep task=synthetic_preference alg=dpo,kto alg.optimizer.args.lr=1e-5,1e-6 --plan   a 2x2 grid (docs/sweeps.md)
  tril sweep alg.args.seed=0,1,2 --launcher slurm launcher.gres=gpu:1 --dry-run   sbatch scripts, one job each
  tril bench --size small --threads 2           tril vs PyTorch, side by side (needs python3 with torch)

Overrides:
  a.b=v      set an existing key (YAML-typed: 7, 1e-5, true, null, [a, b], {k: v})
  +a.b=v     add a new key
  ~a.b       delete a key
  task=X alg=Y logging=Z   choose config files (cfgs/<group>/<X>.yaml)
  alg.imdb.args.n_iters=5  TRIL's pre-selection spelling of alg.args.n_iters=5 (task imdb)
  TRIL_A__B=v in the environment sets a.b (below the command line in precedence)

Exit codes: 0 ok, 2 usage or config error, 1 failure while running.";

/// tril: reinforcement learning and preference fine-tuning of language models, on Burn.
#[derive(Debug, Parser)]
#[command(name = "tril", version, long_version = long_version(), about, after_help = EXAMPLES)]
pub struct Cli {
    /// No progress bars; warnings and errors only on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More log output (-v debug, -vv trace). TRIL_LOG=<filter> overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `tril --version`: the version and the backends this binary carries.
fn long_version() -> &'static str {
    let backends: Vec<String> = tril_core::backend::compiled_backends()
        .iter()
        .map(|(name, devices)| format!("{name} (device={devices})"))
        .collect();
    let text = format!(
        "{}\nbackends: {}; device=cpu selects {}",
        env!("CARGO_PKG_VERSION"),
        backends.join(", "),
        tril_core::backend::CPU_BACKEND
    );
    Box::leak(text.into_boxed_str())
}

/// Where the config comes from.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Config directory (default: TRIL_CONFIG_DIR, else ./cfgs, else the embedded cfgs/).
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// A composed config file to start from instead of composing (e.g. a run's config.resolved.yaml).
    #[arg(long, value_name = "FILE", conflicts_with = "config_dir")]
    pub config: Option<PathBuf>,
    /// `task=X alg=Y` and `[+|~]a.b[=v]` overrides.
    #[arg(value_name = "OVERRIDES")]
    pub overrides: Vec<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train: compose the config, build the algorithm, run it into a new run directory
    /// (no arguments: the embedded default `task=synthetic alg=ppo`).
    Run {
        /// Config source and overrides.
        #[command(flatten)]
        config: ConfigArgs,
        /// Continue the run in this directory from its last checkpoint.
        #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "config_dir"])]
        resume: Option<PathBuf>,
    },
    /// Print the resolved config as YAML (every `${...}` resolved) and check it.
    Config {
        /// Config source and overrides.
        #[command(flatten)]
        config: ConfigArgs,
        /// Print `key: value  # source` for every value instead of YAML.
        #[arg(long)]
        provenance: bool,
        /// Print the composed tree before `${...}` interpolation, unchecked (what Hydra's
        /// `OmegaConf.to_container(cfg, resolve=False)` shows).
        #[arg(long)]
        unresolved: bool,
    },
    /// List registered plugins (all kinds, or one: task, reward_fn, metric, algorithm,
    /// policy, kl_controller, optimizer, scheduler) and the compute devices (`devices`).
    List {
        /// The kind to list.
        kind: Option<String>,
    },
    /// Write the reference log-probs of every response in a dataset, keyed by uid, for
    /// alg=offline_ips (a .safetensors cache).
    Logp(crate::logp::LogpArgs),
    /// Sample N completions per prompt, score them with the proxy `reward_fn` and the
    /// `gold_reward_fn`, and write the best-of-n curve (unbiased estimator, n = 1..N, against
    /// KL_bon = ln n - (n-1)/n): best_of_n.jsonl, samples.jsonl, plots/ (`docs/best-of-n.md`).
    BestOfN(crate::best_of_n::BestOfNArgs),
    /// Time tril and PyTorch on the same work (random weights, no download) and print one
    /// table: row, tril seconds, PyTorch seconds, ratio (rows: forward, train, train_tiny,
    /// generate, ppo, dpo; `bench/README.md`).
    Bench(crate::bench::BenchArgs),
    /// The memory of a DPO step or PPO iteration (weights, gradients, AdamW, activations) for
    /// a model directory or every released size of the families tril loads; `--table`: the
    /// largest that fits 80 GB / 24 GiB.
    Memory(crate::memory::MemoryArgs),
    /// Merge a PEFT LoRA adapter into its base model and write the full HF model
    /// (`docs/lora.md`).
    MergeLora(crate::merge_lora::MergeLoraArgs),
    /// Score the eval generations of a run directory with a gold reward (not loaded during
    /// training) beside the proxy reward and KL the run recorded; writes gold_eval.jsonl and
    /// plots/gold_eval_<split>.png (`docs/ensembles.md`).
    GoldEval(crate::gold_eval::GoldEvalArgs),
    /// Run a grid of sub-experiments, one `tril run` each: `key=a,b,c` overrides and a
    /// `--sweep-file` of `key: [a, b]` are axes (cartesian product); `--plan` prints and
    /// checks the grid; a sweep root that holds the same sweep continues it (`docs/sweeps.md`).
    Sweep(crate::sweep::SweepArgs),
    /// Upload what a run directory spooled for Weights & Biases and W&B has not received
    /// (a `WANDB_MODE=offline` run, or one whose server was down); needs WANDB_API_KEY
    /// (`docs/wandb.md`).
    WandbSync {
        /// The run directory.
        #[arg(value_name = "RUN_DIR")]
        run_dir: PathBuf,
    },
}
