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

pub mod cli;
pub mod commands;
pub mod store;

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
        cli::Command::Config { config, provenance } => commands::config(config, *provenance),
        cli::Command::List { kind } => commands::list(kind.as_deref()),
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
    }
}

fn init_logging(quiet: bool, verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("TRIL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
