//! What each subcommand does. Errors are classified: config/usage problems exit 2,
//! failures while running exit 1.

use crate::cli::ConfigArgs;
use crate::store;
use anyhow::{anyhow, Context};
use std::io::Write;
use std::path::{Path, PathBuf};
use tril_core::config::{compose_file_unresolved, compose_unresolved, ComposeRequest, Composed, Config};
use tril_core::parallel::Replica;
use tril_core::plugin::RunCtx;
use tril_core::registry::{self, Kind};
use tril_core::schema::RootConfig;
use tril_core::CoreError;

/// A failed command: its class decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or config (exit 2).
    Config(anyhow::Error),
    /// Failure while running (exit 1).
    Runtime(anyhow::Error),
    /// A run stopped by a signal after its checkpoint (exit 128 + the signal).
    Interrupted(i32, anyhow::Error),
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Self {
        Failure::Config(e.into())
    }
}

type CmdResult = Result<(), Failure>;

/// What `tril run` runs when neither `task=` nor `alg=` is given: the synthetic task,
/// trained by PPO on the CPU.
pub const EMBEDDED_DEFAULT: &[&str] = &["task=synthetic", "alg=ppo"];

fn request(args: &ConfigArgs) -> ComposeRequest {
    let env = std::env::vars().filter(|(k, _)| k.starts_with("TRIL_")).collect();
    ComposeRequest { args: args.overrides.clone(), env }
}

/// Composes the config a command asked for, before interpolation; prints its notes
/// (e.g. skipped `override hydra/...` entries) to stderr.
fn load_composed(args: &ConfigArgs) -> Result<Composed, Failure> {
    let req = request(args);
    let composed = match &args.config {
        Some(file) => compose_file_unresolved(file, &req)?,
        None => compose_unresolved(store::select(args.config_dir.as_deref()).as_ref(), &req)?,
    };
    for note in &composed.notes {
        eprintln!("note: {note}");
    }
    Ok(composed)
}

/// Composes and resolves the config a command asked for.
pub fn load_config(args: &ConfigArgs) -> Result<Config, Failure> {
    Ok(load_composed(args)?.resolve()?)
}

/// Checks that every float is finite, then the typed root and every plugin section,
/// each with its value ranges. Unknown plugin ids are returned separately: `tril config`
/// reports them as warnings, `tril run` as errors.
pub(crate) fn check(config: &Config) -> Result<Vec<CoreError>, Failure> {
    registry::check_duplicates()?;
    refuse(config.non_finite())?;
    config.section("")?.extract_checked::<RootConfig>()?.target()?;
    let (unknown, errors): (Vec<_>, Vec<_>) =
        registry::check_config_sections(config).into_iter().partition(|e| matches!(e, CoreError::UnknownId { .. }));
    refuse(errors)?;
    Ok(unknown)
}

/// Fails with every error, one per line, unless there is none.
fn refuse(errors: Vec<CoreError>) -> Result<(), Failure> {
    if errors.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    Err(Failure::Config(anyhow!("invalid config:\n{}", all.join("\n"))))
}

/// `tril config`: the resolved and checked config, or with `unresolved` the composed
/// tree before interpolation (not checked: its `${...}` strings are not values yet).
pub fn config(args: &ConfigArgs, provenance: bool, unresolved: bool) -> CmdResult {
    let composed = load_composed(args)?;
    let config = if unresolved { composed.unresolved() } else { composed.resolve()? };
    let text = if provenance { config.provenance() } else { config.to_yaml() };
    let unknown = if unresolved { Vec::new() } else { check(&config)? };
    std::io::stdout().write_all(text.as_bytes()).map_err(|e| Failure::Runtime(e.into()))?;
    for e in unknown {
        eprintln!("warning: {e} (`tril run` will refuse this config)");
    }
    Ok(())
}

/// `tril list [kind]`.
pub fn list(kind: Option<&str>) -> CmdResult {
    registry::check_duplicates()?;
    if kind == Some("devices") {
        print!("{}", devices());
        return Ok(());
    }
    let kinds: Vec<Kind> = match kind {
        None => Kind::ALL.to_vec(),
        Some(name) => vec![Kind::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).chain(["devices"]).collect();
            Failure::Config(anyhow!(
                "unknown plugin kind `{name}`{}; kinds: {}",
                tril_core::error::did_you_mean(name, names.iter().copied()),
                names.join(", ")
            ))
        })?],
    };
    let mut out = String::new();
    for kind in kinds {
        let entries = kind.list();
        out.push_str(&format!("{}:\n", kind.name()));
        if entries.is_empty() {
            out.push_str("  (none registered)\n");
        }
        let width = entries.iter().map(|e| e.id.len()).max().unwrap_or(0);
        for e in entries {
            out.push_str(&format!("  {:width$}  {}  [{}]\n", e.id, e.doc, e.crate_name));
        }
    }
    if kind.is_none() {
        out.push_str(&devices());
    }
    print!("{out}");
    Ok(())
}

/// The `devices:` section of `tril list`: every backend, sorted, carried or not.
fn devices() -> String {
    use tril_core::backend::{compiled_backends, Device, CPU_BACKEND};
    let mut out = String::from("devices:\n");
    let carried = compiled_backends();
    for name in ["cpu", "cuda", "flex", "ndarray", "wgpu"] {
        let line = match carried.iter().find(|(n, _)| *n == name) {
            _ if name == "cpu" => format!("the faster CPU backend of this build: {CPU_BACKEND}"),
            Some((_, values)) => {
                let device: Device = name.parse().unwrap_or(Device::Cpu);
                let precisions: Vec<String> = device.precisions().iter().map(|p| p.to_string()).collect();
                format!("device={values}; precision={}", precisions.join("|"))
            }
            None => format!("not in this build (cargo build --release -p tril --features {name})"),
        };
        out.push_str(&format!("  {name:8} {line}\n"));
    }
    out
}

/// `tril run`.
pub fn run(args: &ConfigArgs, resume: Option<&Path>, quiet: bool) -> CmdResult {
    let defaulted;
    let chooses = |group: &str| args.overrides.iter().any(|o| o.starts_with(&format!("{group}=")));
    let args = if resume.is_none() && args.config.is_none() && !chooses("task") && !chooses("alg") {
        tracing::info!("no task= or alg= given: running the embedded default, task=synthetic alg=ppo");
        defaulted = ConfigArgs {
            config_dir: args.config_dir.clone(),
            config: None,
            overrides: EMBEDDED_DEFAULT.iter().map(|s| s.to_string()).chain(args.overrides.iter().cloned()).collect(),
        };
        &defaulted
    } else {
        args
    };
    let (config, run_dir) = match resume {
        Some(dir) => {
            let file = dir.join("config.resolved.yaml");
            let config = compose_file_unresolved(&file, &request(args))?.resolve()?;
            (config, dir.to_path_buf())
        }
        None => {
            let config = load_config(args)?;
            let dir: String = config.extract("run_dir")?;
            (config, PathBuf::from(dir))
        }
    };
    let mut unknown = check(&config)?;
    if !unknown.is_empty() {
        // The algorithm first: without it nothing else matters.
        unknown.sort_by_key(|e| !matches!(e, CoreError::UnknownId { kind: "algorithm", .. }));
        let all: Vec<String> = unknown.iter().map(|e| format!("  {e}")).collect();
        return Err(Failure::Config(anyhow!(
            "this build of tril cannot run this config (see `tril list`):\n{}",
            all.join("\n")
        )));
    }
    let root: RootConfig = config.extract("")?;
    let wandb = crate::wandb::Settings::from_env(&root, &config).map_err(Failure::Config)?;
    let section = config.section("alg")?;
    let algorithm = registry::build_algorithm(&section, &config).map_err(|e| Failure::Config(anyhow!(e)))?;
    if root.distributed.nodes > 1 {
        return Err(Failure::Config(anyhow!(
            "distributed.nodes: {} machines asked, but multi-machine data parallelism is not available in this build: \
             burn-collective 0.21.0's global all-reduce reuses its transfer ids across calls, so the second exchange \
             between machines hangs (tracel-ai/burn#4549, open); use devices=N on one machine",
            root.distributed.nodes
        )));
    }
    let replicas = Replica::plan(root.devices, &root.distributed, &|k| std::env::var(k).ok())
        .map_err(|e| Failure::Config(anyhow!(e)))?;
    // In a multi-machine run only node 0 writes the run directory (its rank 0 does).
    let writes = replicas.first().is_some_and(|r| r.node_rank == 0);
    let run = tril_core::run_dir::RunDir::open(&run_dir)
        .with_context(|| format!("creating run directory {}", run_dir.display()))
        .map_err(Failure::Runtime)?;
    // Held until the process ends: a second tril on this run directory stops here.
    let _lock = if writes { Some(run.lock().map_err(|e| Failure::Runtime(anyhow!(e)))?) } else { None };
    if resume.is_none() && writes {
        create_run_dir(&run_dir, &config).map_err(Failure::Runtime)?;
    }
    std::fs::create_dir_all(&run_dir).map_err(|e| Failure::Runtime(e.into()))?;
    if writes {
        crate::set_log_file(&run_dir.join("log.txt"))
            .map_err(|e| Failure::Runtime(anyhow!("opening {}: {e}", run_dir.join("log.txt").display())))?;
    }
    tracing::info!(run_dir = %run_dir.display(), "run directory");
    let wandb = wandb.and_then(|w| w.start(&config, &run_dir));
    let resume_from = resume.map(Path::to_path_buf);
    if let Err(e) = tril_core::interrupt::install() {
        tracing::warn!("SIGINT/SIGTERM will stop the run without a checkpoint: {e}");
    }
    let out = if replicas.len() == 1 && root.distributed.nodes == 1 {
        algorithm.run(&RunCtx { config: &config, run_dir, resume_from, quiet })
    } else {
        drop(algorithm);
        run_replicas(replicas, config.clone(), run_dir, resume_from, quiet)
    };
    if out.is_ok() && writes {
        link_final(run.path());
    }
    let result = out.map_err(|e| match tril_core::interrupt::requested() {
        Some(signal) => Failure::Interrupted(signal, anyhow!(e)),
        None => Failure::Runtime(anyhow!(e)),
    });
    if let Some(wandb) = wandb {
        wandb.finish(crate::wandb::exit_code(&result));
    }
    result
}

/// Points `RUN/final` at the newest complete checkpoint (`checkpoints/iter_N`, a relative
/// symlink replaced atomically): a stable name for the next stage's `model_name`
/// (`RUN/final/policy`, `RUN/final/reward_model`, ...). A run without checkpoints gets
/// none; a failure to link is a warning, never the run's failure.
fn link_final(run_dir: &Path) {
    let Some((n, _)) = tril_algorithms::checkpoint::complete_checkpoints(run_dir).ok().and_then(|c| c.last().cloned())
    else {
        return;
    };
    let target = PathBuf::from(format!("checkpoints/iter_{n}"));
    let (tmp, link) = (run_dir.join(".final.tmp"), run_dir.join("final"));
    let _ = std::fs::remove_file(&tmp);
    let made = std::os::unix::fs::symlink(&target, &tmp).and_then(|()| std::fs::rename(&tmp, &link));
    match made {
        Ok(()) => tracing::info!(final_dir = %link.display(), "final model: {}", target.display()),
        Err(e) => tracing::warn!("could not point {} at {}: {e}", link.display(), target.display()),
    }
}

/// A data-parallel `tril run`: the algorithm built and run once per replica of this
/// machine, each on its own thread ([`tril_core::parallel::launch`]); node 0 of a
/// multi-machine run first starts the orchestrator.
fn run_replicas(
    replicas: Vec<Replica>,
    config: Config,
    run_dir: PathBuf,
    resume_from: Option<PathBuf>,
    quiet: bool,
) -> Result<(), tril_core::plugin::PluginError> {
    let first = replicas.first().cloned().ok_or("no replica to run")?;
    if let (Some(net), 0) = (&first.network, first.node_rank) {
        tril_core::parallel::start_orchestrator(net.orchestrator_port)?;
    }
    tracing::info!(
        devices = first.devices,
        nodes = first.nodes,
        node_rank = first.node_rank,
        world = first.world(),
        "data-parallel run: {} replicas on this machine, {} in all",
        first.devices,
        first.world()
    );
    let body = std::sync::Arc::new(move |replica: &Replica| -> Result<(), tril_core::plugin::PluginError> {
        let section = config.section("alg")?;
        let algorithm = registry::build_algorithm(&section, &config)?;
        let ctx = RunCtx {
            config: &config,
            run_dir: run_dir.clone(),
            resume_from: resume_from.clone(),
            quiet: quiet || replica.rank() > 0,
        };
        algorithm.run(&ctx).map_err(|e| format!("replica {}: {e}", replica.rank()).into())
    });
    tril_core::parallel::launch(replicas, body, |message| message.into())
}

/// Creates the run directory and writes `config.resolved.yaml` atomically.
pub(crate) fn create_run_dir(dir: &Path, config: &Config) -> anyhow::Result<()> {
    if dir.join("config.resolved.yaml").exists() {
        anyhow::bail!("{} already holds a run; use --resume to continue it", dir.display());
    }
    let run =
        tril_core::run_dir::RunDir::open(dir).with_context(|| format!("creating run directory {}", dir.display()))?;
    run.write_atomic("config.resolved.yaml", config.to_yaml().as_bytes())?;
    Ok(())
}
