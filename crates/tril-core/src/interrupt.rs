//! Graceful stops on SIGINT and SIGTERM (Ctrl-C; SLURM's preemption, `kill`).
//!
//! [`install`] starts a thread that waits for either signal. The first one is recorded
//! ([`requested`]) and announced on stderr; every training loop checks it after each
//! iteration (on-policy loops) or optimizer step (offline loops), writes a checkpoint
//! and stops with an error saying so, and `tril run` exits with 128 + the signal number
//! (130 for SIGINT, 143 for SIGTERM). `tril run --resume RUN_DIR` then continues exactly
//! as if the run had not been stopped. A second SIGINT aborts at once (exit 130) without
//! a checkpoint.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received (0: none).
static REQUESTED: AtomicI32 = AtomicI32::new(0);

/// SIGINT's number.
pub const SIGINT: i32 = signal_hook::consts::SIGINT;
/// SIGTERM's number.
pub const SIGTERM: i32 = signal_hook::consts::SIGTERM;

/// Starts listening for SIGINT and SIGTERM (once per process; later calls do nothing).
pub fn install() -> std::io::Result<()> {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("tril-signals".into()).spawn(move || {
        for signal in signals.forever() {
            if REQUESTED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                eprintln!(
                    "\n{}: finishing the current step, then writing a checkpoint and stopping \
                     (resume with `tril run --resume RUN_DIR`; Ctrl-C again aborts at once)",
                    name(signal)
                );
            } else if signal == SIGINT {
                eprintln!("\nSIGINT again: aborting without a checkpoint");
                std::process::exit(128 + SIGINT);
            }
        }
    })?;
    let _ = INSTALLED.set(());
    Ok(())
}

/// The signal a graceful stop was asked with, if any.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `SIGINT`, `SIGTERM` or `signal N`.
pub fn name(signal: i32) -> String {
    match signal {
        SIGINT => "SIGINT".into(),
        SIGTERM => "SIGTERM".into(),
        s => format!("signal {s}"),
    }
}

/// The exit code of a run stopped by `signal`: 128 + its number.
pub fn exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_follow_the_shell_convention() {
        assert_eq!((exit_code(SIGINT), exit_code(SIGTERM)), (130, 143));
        assert_eq!((name(SIGINT).as_str(), name(SIGTERM).as_str()), ("SIGINT", "SIGTERM"));
    }
}
