//! Running a sweep: `--plan` checks every sub-experiment's config; otherwise each runs as
//! a `tril run` child process into `<root>/<name>`, its output in `<root>/<name>.log`,
//! the state of all of them in `<root>/sweep.json` (written atomically after each change).
//! A root that holds the same sweep continues it: `done` ones are skipped, others resume
//! from their checkpoint or start afresh.

use super::{build_grid, expand, flow_str, parse_overrides, read_sweep_file, SubExperiment, SweepArgs};
use crate::cli::ConfigArgs;
use crate::commands::{self, Failure};
use anyhow::anyhow;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use tril_core::run_dir::RunDir;

/// Where a sub-experiment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not started yet.
    Pending,
    /// Started (a sweep that was interrupted leaves it so).
    Running,
    /// Exited 0.
    Done,
    /// Exited otherwise (or could not start).
    Failed,
    /// Submitted to Slurm (`--launcher slurm`); the job writes its own state.
    Submitted,
}

/// One sub-experiment in `sweep.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the grid, from 0.
    pub index: usize,
    /// The sub-run directory's name.
    pub name: String,
    /// The sub-run directory.
    pub run_dir: PathBuf,
    /// The overrides of its `tril run` (without `run_dir=`).
    pub overrides: Vec<String>,
    /// `[key, value]` of every axis with more than one value.
    pub varying: Vec<(String, String)>,
    /// Where it stands.
    pub status: Status,
    /// The exit code of its last attempt (null: none, or killed by a signal).
    pub exit_code: Option<i32>,
    /// Why it could not be started, if it could not.
    pub error: Option<String>,
    /// How many times it was started.
    pub attempts: u32,
    /// Start of the last attempt (local time, RFC 3339 with milliseconds).
    pub started: Option<String>,
    /// End of the last attempt.
    pub ended: Option<String>,
    /// Wall-clock seconds of the last attempt.
    pub seconds: Option<f64>,
    /// The Slurm job id of its training job (`--launcher slurm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job_id: Option<String>,
    /// The Slurm job id of its evaluation job (`launcher.eval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_eval_job_id: Option<String>,
}

/// `sweep.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepIndex {
    /// The format's version.
    pub version: u32,
    /// `--config-dir`, if given.
    pub config_dir: Option<PathBuf>,
    /// Every sub-experiment, in grid order.
    pub runs: Vec<Entry>,
}

type CmdResult = Result<(), Failure>;

/// `println!` that does not panic when stdout is gone (`tril sweep --plan | head`): the
/// plan and the summary are for reading, `sweep.json` is the record.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn config_error(e: anyhow::Error) -> Failure {
    Failure::Config(e)
}

fn message(f: Failure) -> anyhow::Error {
    match f {
        Failure::Config(e) | Failure::Runtime(e) | Failure::Interrupted(_, e) => e,
    }
}

fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// `tril sweep`.
pub fn run(args: &SweepArgs, quiet: bool) -> CmdResult {
    let (overrides, launcher) = super::slurm::split_launcher_overrides(&args.overrides);
    let slurm = match args.launcher {
        super::Launcher::Slurm => Some(super::slurm_config(args, &launcher).map_err(config_error)?),
        super::Launcher::Local => {
            if let Some((key, _)) = launcher.first() {
                return Err(config_error(anyhow!("launcher.{key}: launcher overrides need --launcher slurm")));
            }
            if args.dry_run {
                return Err(config_error(anyhow!("--dry-run needs --launcher slurm (use --plan)")));
            }
            None
        }
    };
    let cli = parse_overrides(&overrides).map_err(config_error)?;
    let file_axes = match &args.sweep_file {
        Some(path) => read_sweep_file(path).map_err(config_error)?,
        None => Vec::new(),
    };
    let subs = expand(&build_grid(cli, file_axes).map_err(config_error)?);
    if args.plan {
        return plan(&subs, args);
    }
    if let Some(config) = slurm {
        return execute_slurm(&subs, args, &config);
    }
    execute(&subs, args, quiet)
}

fn config_args(args: &SweepArgs, sub: &SubExperiment) -> ConfigArgs {
    ConfigArgs { config_dir: args.config_dir.clone(), config: None, overrides: sub.overrides.clone() }
}

/// Composes and checks one sub-experiment's config as `tril run` would.
fn check_one(args: &SweepArgs, sub: &SubExperiment) -> CmdResult {
    let config = commands::load_config(&config_args(args, sub))?;
    let unknown = commands::check(&config)?;
    if let Some(e) = unknown.first() {
        return Err(Failure::Config(anyhow!("{e} (see `tril list`)")));
    }
    Ok(())
}

fn varying_text(sub: &SubExperiment) -> String {
    sub.varying.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// `--plan`: one line per sub-experiment, the count, every config checked.
fn plan(subs: &[SubExperiment], args: &SweepArgs) -> CmdResult {
    let width = subs.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut invalid = Vec::new();
    for sub in subs {
        out!("{:>4}  {:width$}  {}", sub.index, sub.name, varying_text(sub));
        if let Err(f) = check_one(args, sub) {
            eprintln!("error: sub-experiment {} ({}): {:#}", sub.index, sub.name, message(f));
            invalid.push(sub.index.to_string());
        }
    }
    let keys: Vec<&str> = subs.first().map(|s| s.varying.iter().map(|(k, _)| k.as_str()).collect()).unwrap_or_default();
    let varying = if keys.is_empty() { "nothing".to_string() } else { keys.join(", ") };
    out!("{} sub-experiments (varying: {varying})", subs.len());
    if invalid.is_empty() {
        return Ok(());
    }
    Err(Failure::Config(anyhow!(
        "{} of {} sub-experiments have an invalid config (index {})",
        invalid.len(),
        subs.len(),
        invalid.join(", ")
    )))
}

/// `outputs/sweeps/<experiment_name>/<timestamp>`, the name from the first
/// sub-experiment's config (`sweep` if it does not compose).
fn default_root(subs: &[SubExperiment], args: &SweepArgs) -> PathBuf {
    let name = subs
        .first()
        .and_then(|sub| commands::load_config(&config_args(args, sub)).ok())
        .and_then(|config| config.extract::<String>("experiment_name").ok())
        .map(|name| super::sanitize(&name).trim_start_matches('.').to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sweep".into());
    let stamp = chrono::Local::now().format("%Y-%m-%d_%H-%M-%S").to_string();
    PathBuf::from("outputs/sweeps").join(name).join(stamp)
}

impl Entry {
    /// A sub-experiment not run yet.
    pub(super) fn pending(
        index: usize,
        name: String,
        run_dir: PathBuf,
        overrides: Vec<String>,
        varying: Vec<(String, String)>,
    ) -> Entry {
        Entry {
            index,
            name,
            run_dir,
            overrides,
            varying,
            status: Status::Pending,
            exit_code: None,
            error: None,
            attempts: 0,
            started: None,
            ended: None,
            seconds: None,
            slurm_job_id: None,
            slurm_eval_job_id: None,
        }
    }
}

/// The index a root holds (refused if it is another sweep's), or a fresh one.
pub(super) fn open_index(root: &Path, subs: &[SubExperiment], args: &SweepArgs) -> Result<SweepIndex, Failure> {
    let file = root.join("sweep.json");
    let fresh = || SweepIndex {
        version: 1,
        config_dir: args.config_dir.clone(),
        runs: subs
            .iter()
            .map(|sub| {
                Entry::pending(
                    sub.index,
                    sub.name.clone(),
                    root.join(&sub.name),
                    sub.overrides.clone(),
                    sub.varying.clone(),
                )
            })
            .collect(),
    };
    if !file.exists() {
        let used = std::fs::read_dir(root).map(|mut d| d.next().is_some()).unwrap_or(false);
        if used {
            return Err(Failure::Config(anyhow!(
                "--root {}: the directory holds files but no sweep.json; choose a new or empty directory",
                root.display()
            )));
        }
        return Ok(fresh());
    }
    let text =
        std::fs::read_to_string(&file).map_err(|e| Failure::Runtime(anyhow!("reading {}: {e}", file.display())))?;
    let old: SweepIndex = serde_json::from_str(&text)
        .map_err(|e| Failure::Config(anyhow!("{}: not a tril sweep index: {e}", file.display())))?;
    let same = old.runs.len() == subs.len()
        && old.runs.iter().zip(subs).all(|(e, s)| e.name == s.name && e.overrides == s.overrides)
        && old.config_dir == args.config_dir;
    if !same {
        return Err(Failure::Config(anyhow!(
            "--root {} holds a different sweep ({} sub-experiments, see its sweep.json) than this one ({}); \
             choose another --root",
            root.display(),
            old.runs.len(),
            subs.len()
        )));
    }
    Ok(old)
}

/// Whether a run directory can be resumed: its resolved config and a finished checkpoint.
fn resumable(dir: &Path) -> bool {
    let checkpoint = std::fs::read_dir(dir.join("checkpoints"))
        .map(|d| d.flatten().any(|e| e.path().join("trainer_state.json").is_file()))
        .unwrap_or(false);
    dir.join("config.resolved.yaml").is_file() && checkpoint
}

/// The shared state of a running sweep.
struct State {
    index: Mutex<SweepIndex>,
    root: RunDir,
    next: AtomicUsize,
    queue: Vec<usize>,
    started: AtomicUsize,
    problems: Mutex<Vec<String>>,
    quiet: bool,
}

impl State {
    /// Changes one entry and rewrites `sweep.json`.
    fn update(&self, i: usize, change: impl FnOnce(&mut Entry)) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut index.runs[i]);
        self.save(&index);
    }

    /// Writes `sweep.json` atomically.
    fn save(&self, index: &SweepIndex) {
        let written = serde_json::to_vec_pretty(index)
            .map_err(|e| e.to_string())
            .and_then(|json| self.root.write_atomic("sweep.json", &json).map_err(|e| e.to_string()));
        if let Err(e) = written {
            self.problem(format!("writing {}: {e}", self.root.join("sweep.json").display()));
        }
    }

    fn problem(&self, text: String) {
        eprintln!("error: {text}");
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    }

    fn say(&self, text: String) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    fn entry(&self, i: usize) -> Entry {
        self.index.lock().unwrap_or_else(|e| e.into_inner()).runs[i].clone()
    }
}

fn execute(subs: &[SubExperiment], args: &SweepArgs, quiet: bool) -> CmdResult {
    let root = args.root.clone().unwrap_or_else(|| default_root(subs, args));
    let index = open_index(&root, subs, args)?;
    let dir = RunDir::open(&root).map_err(|e| Failure::Runtime(anyhow!(e)))?;
    // Held until the sweep ends: a second sweep on this root stops here.
    let _lock = dir.lock().map_err(|e| Failure::Runtime(anyhow!(e)))?;
    let queue: Vec<usize> = index.runs.iter().filter(|e| e.status != Status::Done).map(|e| e.index).collect();
    let skipped = index.runs.len() - queue.len();
    out!(
        "sweep: {} sub-experiments into {} ({} to run, {skipped} done already skipped, {} at once)",
        index.runs.len(),
        root.display(),
        queue.len(),
        args.jobs
    );
    let state = State {
        index: Mutex::new(index),
        root: dir,
        next: AtomicUsize::new(0),
        queue,
        started: AtomicUsize::new(0),
        problems: Mutex::new(Vec::new()),
        quiet,
    };
    state.save(&state.index.lock().unwrap_or_else(|e| e.into_inner()));
    let exe = std::env::current_exe().map_err(|e| Failure::Runtime(anyhow!("finding the tril binary: {e}")))?;
    let workers = (args.jobs as usize).min(state.queue.len()).max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(&i) = state.queue.get(state.next.fetch_add(1, Ordering::SeqCst)) {
                    run_one(&state, i, &exe, args);
                }
            });
        }
    });
    let index = state.index.into_inner().unwrap_or_else(|e| e.into_inner());
    print_summary(&index);
    let failed: Vec<&Entry> = index.runs.iter().filter(|e| e.status != Status::Done).collect();
    let problems = state.problems.into_inner().unwrap_or_else(|e| e.into_inner());
    if failed.is_empty() && problems.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = failed.iter().map(|e| format!("{} ({}.log)", e.index, e.name)).collect();
    Err(Failure::Runtime(anyhow!(
        "{} of {} sub-experiments failed: {}{}; the same command with --root {} retries them",
        failed.len(),
        index.runs.len(),
        names.join(", "),
        if problems.is_empty() { String::new() } else { format!("; and {}", problems.join("; ")) },
        root.display()
    )))
}

/// Runs sub-experiment `i` to its end and records it.
fn run_one(state: &State, i: usize, exe: &Path, args: &SweepArgs) {
    let entry = state.entry(i);
    let resume = resumable(&entry.run_dir);
    let mut argv: Vec<String> = vec!["--quiet".into(), "run".into()];
    if resume {
        argv.extend(["--resume".into(), entry.run_dir.display().to_string()]);
    } else {
        if let Some(dir) = &args.config_dir {
            argv.extend(["--config-dir".into(), dir.display().to_string()]);
        }
        argv.extend(entry.overrides.iter().cloned());
        argv.push(format!("run_dir={}", flow_str(&entry.run_dir.display().to_string())));
    }
    let started = Instant::now();
    state.update(i, |e| {
        e.status = Status::Running;
        e.attempts += 1;
        e.started = Some(now());
        e.ended = None;
        e.exit_code = None;
        e.error = None;
        e.seconds = None;
    });
    let n = state.started.fetch_add(1, Ordering::SeqCst) + 1;
    let how = if resume { "resuming" } else { "starting" };
    state.say(format!("[{n}/{}] {how} #{i} {}: {}", state.queue.len(), entry.name, entry.overrides.join(" ")));
    let outcome = spawn(state, &entry, exe, &argv, resume);
    let seconds = started.elapsed().as_secs_f64();
    state.update(i, |e| {
        e.ended = Some(now());
        e.seconds = Some((seconds * 10.0).round() / 10.0);
        match &outcome {
            Ok(code) => {
                e.status = if *code == Some(0) { Status::Done } else { Status::Failed };
                e.exit_code = *code;
            }
            Err(message) => {
                e.status = Status::Failed;
                e.error = Some(message.clone());
            }
        }
    });
    let log = log_path(state, &entry);
    let result = match &outcome {
        Ok(Some(0)) => "done".to_string(),
        Ok(Some(code)) => format!("FAILED (exit {code}; {})", log.display()),
        Ok(None) => format!("FAILED (killed by a signal; {})", log.display()),
        Err(message) => format!("FAILED ({message})"),
    };
    state.say(format!("{result}: #{i} {} in {seconds:.1} s", entry.name));
}

fn log_path(state: &State, entry: &Entry) -> PathBuf {
    state.root.join(format!("{}.log", entry.name))
}

/// Starts the child (afresh: after removing a partial directory) with its output appended
/// to `<root>/<name>.log`, and waits: its exit code, `None` when a signal ended it.
fn spawn(state: &State, entry: &Entry, exe: &Path, argv: &[String], resume: bool) -> Result<Option<i32>, String> {
    use std::io::Write;
    if !resume && entry.run_dir.exists() {
        std::fs::remove_dir_all(&entry.run_dir)
            .map_err(|e| format!("removing the partial run {}: {e}", entry.run_dir.display()))?;
    }
    let path = log_path(state, entry);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let header = format!("=== attempt {} at {}: tril {}\n", entry.attempts + 1, now(), argv.join(" "));
    log.write_all(header.as_bytes()).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let err = log.try_clone().map_err(|e| format!("opening {}: {e}", path.display()))?;
    let status = Command::new(exe)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .status()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    Ok(status.code())
}

/// The table at the end: index, status, exit code, seconds, name.
fn print_summary(index: &SweepIndex) {
    out!("{:>4}  {:7}  {:>4}  {:>8}  name", "#", "status", "exit", "seconds");
    for e in &index.runs {
        let status = match e.status {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Submitted => "submitted",
        };
        let code = e.exit_code.map_or("-".to_string(), |c| c.to_string());
        let seconds = e.seconds.map_or("-".to_string(), |s| format!("{s:.1}"));
        out!("{:>4}  {status:7}  {code:>4}  {seconds:>8}  {}", e.index, e.name);
    }
    let done = index.runs.iter().filter(|e| e.status == Status::Done).count();
    out!("{done} of {} done", index.runs.len());
}

/// `--launcher slurm`: writes every not-done sub-experiment's sbatch scripts under
/// `<root>/slurm_scripts` and submits them (`--dry-run`: prints the commands instead).
fn execute_slurm(subs: &[SubExperiment], args: &SweepArgs, config: &super::slurm::SlurmConfig) -> CmdResult {
    use super::slurm;
    let runtime = |e: anyhow::Error| Failure::Runtime(e);
    let root = args.root.clone().unwrap_or_else(|| default_root(subs, args));
    std::fs::create_dir_all(&root).map_err(|e| Failure::Runtime(anyhow!("creating {}: {e}", root.display())))?;
    let root = std::path::absolute(&root).map_err(|e| Failure::Runtime(anyhow!("{}: {e}", root.display())))?;
    let config_dir = match &args.config_dir {
        Some(dir) => Some(std::path::absolute(dir).map_err(|e| Failure::Config(anyhow!("{}: {e}", dir.display())))?),
        None => None,
    };
    let mut index = open_index(&root, subs, args)?;
    for entry in &mut index.runs {
        entry.run_dir = root.join(&entry.name);
        slurm::refresh(entry, &root);
    }
    let exe = std::env::current_exe().map_err(|e| Failure::Runtime(anyhow!("finding the tril binary: {e}")))?;
    let queued: Vec<usize> = index.runs.iter().filter(|e| slurm::still_queued(config, e)).map(|e| e.index).collect();
    let pending: Vec<Entry> =
        index.runs.iter().filter(|e| e.status != Status::Done && !queued.contains(&e.index)).cloned().collect();
    // Every script is built (and every value checked) before anything is written.
    let scripts = slurm::build_scripts(config, &root, &exe, config_dir.as_deref(), &pending).map_err(config_error)?;
    let dir = RunDir::open(&root).map_err(|e| Failure::Runtime(anyhow!(e)))?;
    let _lock = dir.lock().map_err(|e| Failure::Runtime(anyhow!(e)))?;
    for sub in ["slurm_scripts", "slurm_logs"] {
        std::fs::create_dir_all(root.join(sub))
            .map_err(|e| Failure::Runtime(anyhow!("creating {}: {e}", root.join(sub).display())))?;
    }
    for s in &scripts {
        slurm::write_script(&s.train.0, &s.train.1).map_err(runtime)?;
        if let Some((path, text)) = &s.eval {
            slurm::write_script(path, text).map_err(runtime)?;
        }
    }
    out!(
        "sweep: {} sub-experiments into {} ({} to submit to Slurm, {} done already skipped, {} still queued \
         skipped{})",
        index.runs.len(),
        root.display(),
        scripts.len(),
        index.runs.len() - scripts.len() - queued.len(),
        queued.len(),
        if args.dry_run { "; dry run: nothing submitted" } else { "" }
    );
    let save = |index: &SweepIndex| -> CmdResult {
        let json = serde_json::to_vec_pretty(index).map_err(|e| Failure::Runtime(anyhow!(e)))?;
        dir.write_atomic("sweep.json", &json)
            .map_err(|e| Failure::Runtime(anyhow!("writing {}: {e}", root.join("sweep.json").display())))
    };
    save(&index)?;
    let sbatch = config.sbatch_command();
    for s in &scripts {
        if args.dry_run {
            out!("{sbatch} --parsable {}", s.train.0.display());
            if let Some((path, _)) = &s.eval {
                out!("{sbatch} --parsable --dependency=afterok:<job id of the line above> {}", path.display());
            }
            continue;
        }
        let id = slurm::submit(config, &s.train.0, None).map_err(runtime)?;
        let entry = &mut index.runs[s.index];
        entry.slurm_job_id = Some(id.clone());
        entry.slurm_eval_job_id = None;
        entry.status = Status::Submitted;
        entry.attempts += 1;
        entry.started = Some(now());
        save(&index)?;
        let mut line = format!("submitted #{} {}: job {id}", s.index, index.runs[s.index].name);
        if let Some((path, _)) = &s.eval {
            let eval_id = slurm::submit(config, path, Some(&id)).map_err(runtime)?;
            line.push_str(&format!(", eval job {eval_id} after it"));
            index.runs[s.index].slurm_eval_job_id = Some(eval_id);
            save(&index)?;
        }
        out!("{line}");
    }
    Ok(())
}
