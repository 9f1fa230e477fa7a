//! Progress bars for long work (rollouts, updates, evaluation), drawn on stderr with
//! indicatif and an ETA. They are hidden when stderr is not a terminal (CI, pipes, log
//! files) or when the user asked for `--quiet`; log lines printed while bars are shown
//! go through [`suspend`] so they do not tear the bars.
//!
//! ```
//! use tril_core::progress;
//! let bar = progress::bar(3, "rollout");
//! for _ in 0..3 {
//!     bar.inc(1);
//! }
//! bar.finish_and_clear();
//! ```

pub use indicatif::ProgressBar;
use indicatif::{MultiProgress, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static QUIET: AtomicBool = AtomicBool::new(false);

fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)))
}

/// Hides every bar from now on (`--quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// True when bars are drawn: stderr is a terminal, `--quiet` was not given and this is not
/// a secondary data-parallel replica (rank 0 draws the bars).
pub fn enabled() -> bool {
    !QUIET.load(Ordering::Relaxed) && std::io::stderr().is_terminal() && crate::parallel::is_primary()
}

/// A bar of `len` steps labelled `label` (e.g. `ppo 3/50 rollout`), with elapsed time and
/// ETA; hidden when bars are off.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    if !enabled() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{prefix:>14} [{bar:30.cyan/blue}] {pos}/{len} {msg} ({elapsed} < {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = multi().add(ProgressBar::new(len).with_style(style));
    bar.set_prefix(label.to_string());
    bar
}

/// A byte-count bar for a download of `len` bytes (a spinner when the size is unknown),
/// labelled `label`, with throughput and ETA; hidden when bars are off.
pub fn bytes_bar(len: Option<u64>, label: &str) -> ProgressBar {
    if !enabled() {
        return ProgressBar::hidden();
    }
    let template = match len {
        Some(_) => "{prefix} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
        None => "{prefix} {spinner} {bytes} {bytes_per_sec}",
    };
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ");
    let bar = multi().add(len.map_or_else(ProgressBar::new_spinner, ProgressBar::new).with_style(style));
    bar.set_prefix(label.to_string());
    bar
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
        b.inc(3);
        assert_eq!(b.position(), 3, "a hidden bar still counts");
        assert_eq!(suspend(|| 7), 7);
    }
}
