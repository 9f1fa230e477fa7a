//! Weights & Biases logging (`logging=wandb`, `docs/wandb.md`).
//!
//! [`Settings::from_env`] reads the config's W&B keys and the `WANDB_*` environment at
//! start-up (the one place a missing `WANDB_API_KEY` is an error); [`Settings::start`]
//! installs a [`tril_core::tracker::MetricSink`] that appends every metric line the
//! trackers write to `RUN/wandb/spool.jsonl` (see [`spool`]) and wakes the uploader, a
//! thread of its own that owns all network I/O ([`Uploader`]). Training never waits for
//! W&B and never fails because of it: an unreachable or slow server costs one warning,
//! the spool is sent on the next successful contact, at the end within [`FINISH_WAIT`], or
//! later by `tril wandb-sync RUN` ([`sync`]).

pub mod api;
pub mod spool;

use anyhow::{anyhow, Context};
use api::{Api, Upserted};
use serde_json::{Map, Value};
use spool::{Batch, Record, RunInfo, State};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tril_core::config::Config;
use tril_core::schema::RootConfig;

/// How long the end of a run waits for the spool to be sent.
pub const FINISH_WAIT: Duration = Duration::from_secs(10);
/// Requests while the run goes on are at least this far apart (lines are batched).
const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between two attempts while the server fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where logging goes (`WANDB_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send as the run goes (the default).
    Online,
    /// Only write `RUN/wandb/`; `tril wandb-sync RUN` sends it.
    Offline,
}

/// The W&B settings of a run: config keys and environment, checked at start-up.
pub struct Settings {
    mode: Mode,
    base_url: String,
    key: Option<String>,
    timeout: Duration,
    project: String,
    entity: Option<String>,
    display_name: String,
    group: Option<String>,
    tags: Vec<String>,
    notes: Option<String>,
    log_model: bool,
}

/// An environment variable, `None` when unset or empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `WANDB_BASE_URL` and `WANDB_HTTP_TIMEOUT` (seconds, default 10), `WANDB_API_KEY`.
fn connection() -> anyhow::Result<(String, Option<String>, Duration)> {
    let base = env("WANDB_BASE_URL").unwrap_or_else(|| "https://api.wandb.ai".into());
    let timeout = match env("WANDB_HTTP_TIMEOUT") {
        None => 10.0,
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite() && *t > 0.0)
            .ok_or_else(|| anyhow!("WANDB_HTTP_TIMEOUT: expected a positive number of seconds, found `{v}`"))?,
    };
    Ok((base.trim_end_matches('/').to_string(), env("WANDB_API_KEY"), Duration::from_secs_f64(timeout.min(3600.0))))
}

impl Settings {
    /// The W&B settings of `root`, or `None` when it does not log to W&B
    /// (`log_to_wandb: false` or `WANDB_MODE=disabled`). Online without `WANDB_API_KEY`
    /// is an error naming it.
    pub fn from_env(root: &RootConfig, config: &Config) -> anyhow::Result<Option<Settings>> {
        if !root.log_to_wandb {
            return Ok(None);
        }
        let mode = match env("WANDB_MODE").as_deref().map(str::trim) {
            None | Some("online") | Some("run") => Mode::Online,
            Some("offline") | Some("dryrun") => Mode::Offline,
            Some("disabled") => {
                tracing::info!("WANDB_MODE=disabled: not logging to W&B");
                return Ok(None);
            }
            Some(other) => anyhow::bail!("WANDB_MODE: expected online, offline or disabled, found `{other}`"),
        };
        let (base_url, key, timeout) = connection()?;
        if mode == Mode::Online && key.is_none() {
            anyhow::bail!(
                "log_to_wandb: WANDB_API_KEY is not set; export it (https://wandb.ai/authorize), or set \
                 WANDB_MODE=offline to log into the run directory and upload later with `tril wandb-sync RUN`, \
                 or use logging=default"
            );
        }
        // (A key this short is no real key; matching it would refuse configs by chance.)
        if let Some(key) = key.as_ref().filter(|k| k.len() >= 8) {
            if config.to_yaml().contains(key.as_str()) {
                anyhow::bail!(
                    "the config holds the value of WANDB_API_KEY (through ${{env:...}}?); refusing to write it into \
                     the run directory and W&B"
                );
            }
        }
        Ok(Some(Settings {
            mode,
            base_url,
            key,
            timeout,
            project: env("WANDB_PROJECT").unwrap_or_else(|| root.project_name.clone()),
            entity: env("WANDB_ENTITY").or_else(|| root.entity_name.clone()),
            display_name: root.wandb_run_name.clone().unwrap_or_else(|| root.experiment_name.clone()),
            group: root.wandb_group.clone(),
            tags: root.wandb_tags.clone(),
            notes: root.wandb_notes.clone(),
            log_model: root.wandb_log_model,
        }))
    }

    /// Starts logging into `run_dir` (continuing its W&B run when `RUN/wandb/run.json`
    /// exists, as after `--resume`). Never fails the run: a problem is a warning and the
    /// run goes on without W&B.
    pub fn start(self, config: &Config, run_dir: &Path) -> Option<Wandb> {
        match self.try_start(config, run_dir) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("W&B logging is off for this run: {e:#}");
                None
            }
        }
    }

    fn try_start(self, config: &Config, run_dir: &Path) -> anyhow::Result<Wandb> {
        let dir = spool::dir(run_dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let info = match RunInfo::load(&dir) {
            Ok(info) => {
                tracing::info!(run_id = %info.run_id, "W&B: continuing the run of this run directory");
                info
            }
            Err(_) => {
                let info = RunInfo {
                    run_id: new_run_id(),
                    project: self.project.clone(),
                    entity: self.entity.clone(),
                    display_name: self.display_name.clone(),
                    group: self.group.clone(),
                    tags: self.tags.clone(),
                    notes: self.notes.clone(),
                    config: config.extract::<Value>("").unwrap_or_else(|_| Value::String(config.to_yaml())),
                    started_at: unix_now(),
                };
                info.save(&dir)?;
                info
            }
        };
        let path = dir.join("spool.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let thread = match (self.mode, self.key) {
            (Mode::Online, Some(key)) => {
                let api = Api::new(&self.base_url, key)?;
                let uploader = Uploader::new(api, run_dir.to_path_buf(), info, self.timeout)?;
                std::thread::Builder::new()
                    .name("wandb".into())
                    .spawn(move || uploader.run(rx, done_tx))
                    .context("starting the W&B thread")?;
                true
            }
            _ => false,
        };
        let sink = Arc::new(Spooler { file: Mutex::new(file), wake: tx, run_dir: run_dir.to_path_buf() });
        tril_core::tracker::set_sink(Some(sink.clone()));
        let _ = sink.wake.send(Msg::Wake);
        Ok(Wandb { sink, done: done_rx, online: thread, log_model: self.log_model, finished: false })
    }
}

/// A fresh run id: 8 characters of `[a-z0-9]`, as W&B's own.
fn new_run_id() -> String {
    use rand::{Rng, SeedableRng};
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        ^ ((std::process::id() as u64) << 32);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// What the training thread tells the uploader.
enum Msg {
    /// New records are in the spool.
    Wake,
    /// The run ended: send everything before `deadline`, then answer.
    Finish { deadline: Instant },
}

/// The metric sink: appends to the spool and wakes the uploader.
struct Spooler {
    file: Mutex<std::fs::File>,
    wake: Sender<Msg>,
    run_dir: PathBuf,
}

impl Spooler {
    fn append(&self, record: &Record) {
        let Ok(mut line) = serde_json::to_string(record) else { return };
        line.push('\n');
        let written = match self.file.lock() {
            Ok(mut f) => f.write_all(line.as_bytes()),
            Err(poisoned) => poisoned.into_inner().write_all(line.as_bytes()),
        };
        if let Err(e) = written {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!("W&B: cannot append to {}: {e}", spool::dir(&self.run_dir).join("spool.jsonl").display())
            });
        }
        let _ = self.wake.send(Msg::Wake);
    }
}

impl tril_core::tracker::MetricSink for Spooler {
    fn record(&self, file: &str, step: usize, values: &Map<String, Value>) {
        self.append(&Record::History { file: file.to_string(), step, time: unix_now(), values: values.clone() });
    }
}

/// The W&B logger of a running `tril run`; [`Wandb::finish`] ends it.
pub struct Wandb {
    sink: Arc<Spooler>,
    done: Receiver<anyhow::Result<()>>,
    online: bool,
    log_model: bool,
    finished: bool,
}

impl Wandb {
    /// Ends the W&B run with the process's exit code: spools the final model (when
    /// `wandb_log_model` and the run succeeded) and the end, then waits at most
    /// [`FINISH_WAIT`] for the uploader. Whatever is left stays in the spool for
    /// `tril wandb-sync`.
    pub fn finish(mut self, exitcode: i32) {
        self.finished = true;
        tril_core::tracker::set_sink(None);
        let run_dir = self.sink.run_dir.clone();
        if self.log_model && exitcode == 0 {
            match model_files(&run_dir) {
                Ok(paths) if !paths.is_empty() => self.sink.append(&Record::Files { paths }),
                Ok(_) => tracing::warn!("wandb_log_model: the last checkpoint holds no HF model directory"),
                Err(e) => tracing::warn!("wandb_log_model: {e:#}"),
            }
        }
        self.sink.append(&Record::Finish { exitcode });
        let sync = format!("tril wandb-sync {}", run_dir.display());
        if !self.online {
            tracing::info!("W&B offline: logged into {}; upload with `{sync}`", spool::dir(&run_dir).display());
            return;
        }
        let deadline = Instant::now() + FINISH_WAIT;
        let _ = self.sink.wake.send(Msg::Finish { deadline });
        match self.done.recv_timeout(FINISH_WAIT + Duration::from_secs(1)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("W&B: not everything was sent ({e:#}); the rest is in the spool: `{sync}`"),
            Err(_) => tracing::warn!(
                "W&B: not everything was sent within {} s; the rest is in the spool: `{sync}`",
                FINISH_WAIT.as_secs()
            ),
        }
    }
}

impl Drop for Wandb {
    fn drop(&mut self) {
        if !self.finished {
            tril_core::tracker::set_sink(None);
        }
    }
}

/// The files of the last checkpoint's HF model directories (those holding a
/// `config.json`), relative to the run directory.
fn model_files(run_dir: &Path) -> anyhow::Result<Vec<String>> {
    let (_, checkpoint) = tril_algorithms::checkpoint::latest_checkpoint(run_dir).map_err(|e| anyhow!("{e}"))?;
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&checkpoint)
        .with_context(|| format!("reading {}", checkpoint.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            if let Ok(rel) = file.strip_prefix(run_dir) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    Ok(out)
}

/// Sends the spool of one run directory; used by the logger's thread and by
/// `tril wandb-sync`.
pub struct Uploader {
    api: Api,
    run_dir: PathBuf,
    info: RunInfo,
    state: State,
    at: Option<Upserted>,
    timeout: Duration,
}

impl Uploader {
    /// An uploader for `run_dir`, continuing from its `state.json`.
    pub fn new(api: Api, run_dir: PathBuf, info: RunInfo, timeout: Duration) -> anyhow::Result<Uploader> {
        let state = State::load(&spool::dir(&run_dir))?;
        Ok(Uploader { api, run_dir, info, state, at: None, timeout })
    }

    /// The timeout of the next request: the HTTP timeout, cut to what is left before
    /// `deadline`.
    fn timeout(&self, deadline: Option<Instant>) -> anyhow::Result<Duration> {
        match deadline {
            None => Ok(self.timeout),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    anyhow::bail!("out of time");
                }
                Ok(self.timeout.min(left))
            }
        }
    }

    /// Sends what the spool holds (all of it when `all`; else whole steps only), one
    /// request at a time; `Ok(true)` when it reached the end of the run.
    pub fn push(&mut self, all: bool, deadline: Option<Instant>) -> anyhow::Result<bool> {
        let dir = spool::dir(&self.run_dir);
        if self.at.is_none() {
            let at = self.api.upsert_run(&self.info, self.timeout(deadline)?)?;
            tracing::info!(
                "W&B: logging to {}/{}/{}/runs/{}",
                self.api.base().replace("//api.", "//"),
                at.entity,
                at.project,
                self.info.run_id
            );
            self.at = Some(at);
        }
        let Some(at) = self.at.clone() else { return Ok(false) };
        let mut ended = false;
        loop {
            let records = spool::read_from(&dir, self.state.spool_offset)?;
            match Batch::next(&records, &self.state, self.info.started_at, all) {
                Batch::Empty => return Ok(ended),
                Batch::History { rows, end } => {
                    if !rows.is_empty() {
                        let mut summary = self.state.summary.clone();
                        for row in &rows {
                            summary.extend(row.iter().map(|(k, v)| (k.clone(), v.clone())));
                        }
                        let body = spool::history_body(self.state.history_rows, &rows, &summary);
                        self.api.file_stream(&at, &self.info.run_id, &body, self.timeout(deadline)?)?;
                        self.state.summary = summary;
                        self.state.history_rows += rows.len();
                        self.state.last_step = rows.last().and_then(|r| r["_step"].as_u64()).map(|s| s as usize);
                    }
                    self.state.spool_offset = end;
                }
                Batch::Files { paths, end } => {
                    let files: Vec<(String, PathBuf)> =
                        paths.iter().map(|p| (p.clone(), self.run_dir.join(p))).collect();
                    self.api.upload_run_files(&at, &self.info.run_id, &files, self.timeout(deadline)?)?;
                    let body = spool::uploaded_body(&paths);
                    self.api.file_stream(&at, &self.info.run_id, &body, self.timeout(deadline)?)?;
                    self.state.spool_offset = end;
                }
                Batch::Finish { exitcode, end } => {
                    let body = spool::finish_body(exitcode);
                    self.api.file_stream(&at, &self.info.run_id, &body, self.timeout(deadline)?)?;
                    self.state.spool_offset = end;
                    ended = true;
                }
            }
            self.state.save(&dir)?;
        }
    }

    /// The logger's thread: pushes whole steps at most every [`BATCH_INTERVAL`], backs
    /// off (up to [`MAX_BACKOFF`]) while the server fails, warning once per outage; at
    /// `Finish`, pushes everything before its deadline and answers on `done`.
    fn run(mut self, rx: Receiver<Msg>, done: Sender<anyhow::Result<()>>) {
        let mut next_try = Instant::now();
        let mut backoff = Duration::from_secs(1);
        let mut failing = false;
        loop {
            let msg = rx.recv_timeout(next_try.saturating_duration_since(Instant::now()).max(BATCH_INTERVAL));
            if let Ok(Msg::Finish { deadline }) = msg {
                let _ = done.send(self.finish(deadline, failing));
                return;
            }
            if matches!(msg, Err(RecvTimeoutError::Disconnected)) {
                return;
            }
            if Instant::now() < next_try {
                continue;
            }
            match self.push(false, None) {
                Ok(_) => {
                    if failing {
                        tracing::info!("W&B: {} answers again; the spooled metrics are sent", self.api.base());
                    }
                    failing = false;
                    backoff = Duration::from_secs(1);
                    next_try = Instant::now() + BATCH_INTERVAL;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            "W&B: cannot reach {}: {e:#}; metrics are kept in {} and sent when it answers \
                             (training goes on)",
                            self.api.base(),
                            spool::dir(&self.run_dir).join("spool.jsonl").display()
                        );
                    }
                    failing = true;
                    next_try = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Pushes everything before `deadline`, retrying every half second.
    fn finish(&mut self, deadline: Instant, mut failing: bool) -> anyhow::Result<()> {
        loop {
            match self.push(true, Some(deadline)) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    if !failing {
                        tracing::warn!("W&B: cannot reach {}: {e:#}", self.api.base());
                        failing = true;
                    }
                    if Instant::now() + Duration::from_millis(500) >= deadline {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
}

/// `tril wandb-sync RUN_DIR`: sends what a run spooled and W&B has not received
/// (an offline run, or one whose server was down), with `WANDB_API_KEY` and
/// `WANDB_BASE_URL` from the environment. Retries a few times, then fails.
pub fn sync(run_dir: &Path) -> anyhow::Result<()> {
    let dir = spool::dir(run_dir);
    let info = RunInfo::load(&dir).with_context(|| format!("{} holds no W&B run", run_dir.display()))?;
    let run = tril_core::run_dir::RunDir::open(run_dir)?;
    let _lock = run.lock()?;
    let (base, key, timeout) = connection()?;
    let key = key.ok_or_else(|| anyhow!("WANDB_API_KEY is not set; `tril wandb-sync` needs it to upload"))?;
    let mut uploader = Uploader::new(Api::new(&base, key)?, run_dir.to_path_buf(), info, timeout)?;
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=5 {
        match uploader.push(true, None) {
            Ok(_) => {
                let state = &uploader.state;
                eprintln!(
                    "W&B: {} history rows of run {} are on {}",
                    state.history_rows,
                    uploader.info.run_id,
                    uploader.api.base()
                );
                return Ok(());
            }
            Err(e) if attempt == 5 => return Err(e.context("W&B sync failed; run `tril wandb-sync` again later")),
            Err(e) => {
                tracing::warn!("W&B: attempt {attempt} of 5 failed: {e:#}; retrying in {} s", wait.as_secs());
                std::thread::sleep(wait);
                wait *= 2;
            }
        }
    }
    Ok(())
}

/// The exit code `tril run` will end with for `result`.
pub fn exit_code(result: &Result<(), crate::commands::Failure>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(crate::commands::Failure::Config(_)) => 2,
        Err(crate::commands::Failure::Runtime(_)) => 1,
        Err(crate::commands::Failure::Interrupted(signal, _)) => tril_core::interrupt::exit_code(*signal).into(),
    }
}
