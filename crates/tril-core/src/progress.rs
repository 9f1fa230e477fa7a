//! Progress for long work (rollouts, updates, evaluation, downloads).
//!
//! On a terminal, bars are drawn on stderr with indicatif and an ETA; log lines printed
//! while bars are shown go through [`suspend`] so they do not tear the bars.
//!
//! When stderr is not a terminal (CI, pipes, log files, a Slurm job), a bar draws nothing
//! and logs INFO lines instead, `<label>: <done>/<total> (<elapsed> s, eta <eta> s)`, by one
//! rule ([`Throttle`]): **at most one line per [`LOG_INTERVAL`] (20 s), checked whenever the
//! bar moves, plus a last line at the finish when an earlier line was logged** (so work
//! shorter than 20 s logs nothing). `--quiet` silences both forms, and only the primary
//! data-parallel replica (rank 0) shows either.
//!
//! ```
//! use tril_core::progress;
//! let bar = progress::bar(3, "rollout");
//! for _ in 0..3 {
//!     bar.inc(1);
//! }
//! bar.finish_and_clear();
//! ```

use indicatif::{MultiProgress, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);

/// The least time between two progress log lines of one bar when stderr is not a terminal.
pub const LOG_INTERVAL: Duration = Duration::from_secs(20);

fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)))
}

/// Hides every bar and progress line from now on (`--quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// True when bars are drawn: stderr is a terminal, `--quiet` was not given and this is not
/// a secondary data-parallel replica (rank 0 draws the bars).
pub fn enabled() -> bool {
    !QUIET.load(Ordering::Relaxed) && std::io::stderr().is_terminal() && crate::parallel::is_primary()
}

/// True when bars log lines instead: stderr is not a terminal, `--quiet` was not given and
/// this is the primary data-parallel replica.
pub fn logs_lines() -> bool {
    !QUIET.load(Ordering::Relaxed) && !std::io::stderr().is_terminal() && crate::parallel::is_primary()
}

/// When a bar that is not drawn logs a line: at most once per `interval` since the start
/// or the last line, plus the finish when any line was logged before.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    interval: Duration,
    start: Instant,
    last: Instant,
    logged: bool,
}

impl Throttle {
    /// A throttle whose work starts at `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Throttle { interval, start: now, last: now, logged: false }
    }

    /// Whether the bar, having moved at `now`, logs a line (and if so, restarts the wait).
    pub fn step(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last) < self.interval {
            return false;
        }
        self.last = now;
        self.logged = true;
        true
    }

    /// Whether the finish at `now` logs a last line: only when a line was logged before.
    pub fn finish(&mut self, now: Instant) -> bool {
        self.last = now;
        std::mem::replace(&mut self.logged, false)
    }

    /// Time since the work started.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.start)
    }
}

/// `<label>: <done>/<total> (<elapsed> s, eta <eta> s)`, the form of a progress log line
/// (`total` 0 means unknown: no total, no ETA).
pub fn log_line(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if total == 0 {
        return format!("{label}: {done} ({secs:.0} s)");
    }
    let eta = if done == 0 { f64::NAN } else { secs * (total.saturating_sub(done)) as f64 / done as f64 };
    if eta.is_finite() {
        format!("{label}: {done}/{total} ({secs:.0} s, eta {eta:.0} s)")
    } else {
        format!("{label}: {done}/{total} ({secs:.0} s)")
    }
}

/// A progress bar: indicatif's on a terminal; when stderr is not a terminal, a hidden bar
/// that logs INFO lines by the [`Throttle`] rule. Every indicatif method is available
/// through `Deref`; `inc`, `set_position` and the `finish*` methods also log.
#[derive(Debug)]
pub struct ProgressBar {
    bar: indicatif::ProgressBar,
    label: String,
    log: Option<Mutex<Throttle>>,
}

impl std::ops::Deref for ProgressBar {
    type Target = indicatif::ProgressBar;

    fn deref(&self) -> &indicatif::ProgressBar {
        &self.bar
    }
}

impl ProgressBar {
    /// A bar that is neither drawn nor logged.
    pub fn hidden() -> Self {
        ProgressBar { bar: indicatif::ProgressBar::hidden(), label: String::new(), log: None }
    }

    /// A hidden bar logging lines labelled `label` when [`logs_lines`] (else silent).
    fn logging(len: Option<u64>, label: &str) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden());
        let log = logs_lines().then(|| Mutex::new(Throttle::new(LOG_INTERVAL, Instant::now())));
        ProgressBar { bar, label: label.to_string(), log }
    }

    /// Advances by `delta`.
    pub fn inc(&self, delta: u64) {
        self.bar.inc(delta);
        self.maybe_log(false);
    }

    /// Sets the position to `pos`.
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.maybe_log(false);
    }

    /// Finishes the bar and clears it from the terminal.
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
        self.maybe_log(true);
    }

    /// Finishes the bar, leaving it drawn.
    pub fn finish(&self) {
        self.bar.finish();
        self.maybe_log(true);
    }

    fn maybe_log(&self, finish: bool) {
        let Some(log) = &self.log else { return };
        let now = Instant::now();
        let (due, elapsed) = {
            let mut throttle = log.lock().unwrap_or_else(|e| e.into_inner());
            let due = if finish { throttle.finish(now) } else { throttle.step(now) };
            (due, throttle.elapsed(now))
        };
        if due {
            let mut line = log_line(&self.label, self.bar.position(), self.bar.length().unwrap_or(0), elapsed);
            let message = self.bar.message();
            if !message.is_empty() {
                line.push_str(&format!(" {message}"));
            }
            tracing::info!("{line}");
        }
    }
}

/// A bar of `len` steps labelled `label` (e.g. `ppo 3/50 rollout`), with elapsed time and
/// ETA; hidden when bars are off (logging lines instead when stderr is not a terminal).
pub fn bar(len: u64, label: &str) -> ProgressBar {
    if !enabled() {
        return ProgressBar::logging(Some(len), label);
    }
    let style = ProgressStyle::with_template("{prefix:>14} [{bar:30.cyan/blue}] {pos}/{len} {msg} ({elapsed} < {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = multi().add(indicatif::ProgressBar::new(len).with_style(style));
    bar.set_prefix(label.to_string());
    ProgressBar { bar, label: label.to_string(), log: None }
}

/// A byte-count bar for a download of `len` bytes (a spinner when the size is unknown),
/// labelled `label`, with throughput and ETA; hidden when bars are off (logging lines, in
/// bytes, instead when stderr is not a terminal).
pub fn bytes_bar(len: Option<u64>, label: &str) -> ProgressBar {
    if !enabled() {
        return ProgressBar::logging(len, label);
    }
    let template = match len {
        Some(_) => "{prefix} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
        None => "{prefix} {spinner} {bytes} {bytes_per_sec}",
    };
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ");
    let bar = multi()
        .add(len.map_or_else(indicatif::ProgressBar::new_spinner, indicatif::ProgressBar::new).with_style(style));
    bar.set_prefix(label.to_string());
    ProgressBar { bar, label: label.to_string(), log: None }
}

/// Runs `f` (which writes to stderr) with the bars cleared, then redraws them.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    if enabled() {
        multi().suspend(f)
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hides_bars_and_suspend_still_runs() {
        set_quiet(true);
        let b = bar(10, "update");
        assert!(b.is_hidden());
        assert!(b.log.is_none(), "--quiet logs no progress lines either");
        b.inc(3);
        assert_eq!(b.position(), 3, "a hidden bar still counts");
        b.finish_and_clear();
        assert_eq!(suspend(|| 7), 7);
    }

    #[test]
    fn throttle_logs_at_most_once_per_interval_plus_the_last() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = Throttle::new(s(20), t0);
        assert!(!t.step(t0 + s(1)));
        assert!(!t.step(t0 + s(19)));
        assert!(t.step(t0 + s(20)), "20 s after the start");
        assert!(!t.step(t0 + s(39)));
        assert!(t.step(t0 + s(45)));
        assert!(!t.step(t0 + s(50)));
        assert!(t.finish(t0 + s(51)), "the last line, since lines were logged");
        assert_eq!(t.elapsed(t0 + s(51)), s(51));

        let mut quick = Throttle::new(s(20), t0);
        assert!(!quick.step(t0 + s(5)));
        assert!(!quick.finish(t0 + s(6)), "work shorter than the interval logs nothing");
    }

    #[test]
    fn log_lines_name_the_work_and_count() {
        let s = Duration::from_secs;
        assert_eq!(log_line("eval val", 8, 32, s(20)), "eval val: 8/32 (20 s, eta 60 s)");
        assert_eq!(log_line("eval val", 32, 32, s(80)), "eval val: 32/32 (80 s, eta 0 s)");
        assert_eq!(log_line("update", 0, 4, s(21)), "update: 0/4 (21 s)");
        assert_eq!(log_line("model.safetensors", 1000, 0, s(30)), "model.safetensors: 1000 (30 s)");
    }
}
