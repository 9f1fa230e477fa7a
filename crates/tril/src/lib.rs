//! # tril
//!
//! The `tril` binary and the facade that links every plugin crate. A user extends
//! tril with a crate of their own that registers plugins with
//! [`tril_core::register!`], and a three-line `main`:
//!
//! ```no_run
//! use std::process::ExitCode;
//! // use my_plugins as _;   // name your plugin crate so it is linked
//! fn main() -> ExitCode { tril::main() }
//! ```
//!
//! Plugin crates are named below with `use ... as _;`: a crate that the code never
//! names is not linked, and its `inventory` registrations would silently vanish.
#![deny(missing_docs)]

pub mod bench;
pub mod best_of_n;
pub mod cli;
pub mod commands;
pub mod gold_eval;
pub mod logp;
pub mod memory;
pub mod merge_lora;
pub mod store;
pub mod sweep;
pub mod wandb;

pub use tril_core;

use tril_algorithms as _;
use tril_metrics as _;
use tril_models as _;
use tril_rewards as _;
use tril_tasks as _;

use clap::Parser;
use std::process::ExitCode;

/// Runs the `tril` command line and returns its exit code (0 ok, 2 usage/config, 1 runtime).
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(cli.quiet, cli.verbose);
    let result = match &cli.command {
        cli::Command::Run { config, resume } => commands::run(config, resume.as_deref(), cli.quiet),
        cli::Command::Config { config, provenance, unresolved } => commands::config(config, *provenance, *unresolved),
        cli::Command::List { kind } => commands::list(kind.as_deref()),
        cli::Command::Logp(args) => logp::run(args),
        cli::Command::BestOfN(args) => best_of_n::run(args),
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::Memory(args) => memory::run(args).map_err(commands::Failure::Config),
        cli::Command::MergeLora(args) => merge_lora::run(args),
        cli::Command::GoldEval(args) => gold_eval::run(args),
        cli::Command::Sweep(args) => sweep::run(args, cli.quiet),
        cli::Command::WandbSync { run_dir } => wandb::sync(run_dir).map_err(commands::Failure::Runtime),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(commands::Failure::Config(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(commands::Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
        Err(commands::Failure::Interrupted(signal, e)) => {
            eprintln!("{e:#}");
            ExitCode::from(tril_core::interrupt::exit_code(signal))
        }
    }
}

/// Where `log.txt` goes once a run directory exists (until then, nowhere).
static LOG_FILE: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Starts copying every log line into `path` (a run's `log.txt`), appending.
pub fn set_log_file(path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    *LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    Ok(())
}

/// Stderr for log lines: clears the progress bars while a line is written.
struct BarSafeStderr;

impl std::io::Write for BarSafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        tril_core::progress::suspend(|| std::io::Write::write_all(&mut std::io::stderr(), buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A `MakeWriter` for the log file slot.
struct LogFile;

impl std::io::Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

fn init_logging(quiet: bool, verbose: u8) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter, Layer};
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = || EnvFilter::try_from_env("TRIL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let file_filter = EnvFilter::try_from_env("TRIL_LOG")
        .unwrap_or_else(|_| EnvFilter::new(if verbose > 0 { default } else { "info" }));
    tril_core::progress::set_quiet(quiet);
    // Data-parallel replicas other than rank 0 say only what goes wrong (warnings, errors):
    // their info lines would repeat rank 0's.
    let replica = || {
        tracing_subscriber::filter::filter_fn(|meta| {
            *meta.level() <= tracing::Level::WARN || tril_core::parallel::is_primary()
        })
    };
    let stderr =
        fmt::layer().with_writer(|| BarSafeStderr).with_target(false).with_filter(filter()).with_filter(replica());
    let file = fmt::layer()
        .with_writer(|| LogFile)
        .with_ansi(false)
        .with_target(false)
        .with_filter(file_filter)
        .with_filter(replica());
    let _ = tracing_subscriber::registry().with(stderr).with(file).try_init();
}
