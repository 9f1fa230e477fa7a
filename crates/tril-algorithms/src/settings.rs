//! The loop settings every algorithm reads from `alg.args`, and the run preamble every
//! loop runs before its first step.
//!
//! Each algorithm's typed args keep these keys as their own fields (so `deny_unknown_fields`
//! and per-field docs stay with the algorithm; serde cannot flatten under
//! `deny_unknown_fields`); [`loop_settings!`] copies them into one [`LoopSettings`], whose
//! [`LoopSettings::check_ranges`] (at config time, from each args struct's
//! [`tril_core::config::Ranges`]), [`LoopSettings::check`], [`LoopSettings::evaluates_at`]
//! and [`LoopSettings::checkpoints_at`] are then the same for every loop.
//!
//! | key | meaning |
//! |---|---|
//! | `seed` | seeds model initialisation, shuffling and sampling |
//! | `batch_size` | examples (trajectories, pairs, rows) per optimizer step |
//! | `grad_accumulation` | micro-batches per optimizer step (`batch_size` is a multiple) |
//! | `max_grad_norm` | global gradient-norm clip (`torch.nn.utils.clip_grad_norm_`) |
//! | `eval_every` | evaluate every this many steps/iterations; 0: only at the end |
//! | `eval_batch_size` | examples per forward pass at evaluation |
//! | `eval_splits` | the splits evaluated (each must hold examples) |
//! | `eval_zero_shot` | also evaluate before the first step |
//! | `save_checkpoints` | write a checkpoint every `save_every` steps (the last is always written) |
//! | `save_every` | steps between checkpoints |

use tril_core::config::Checker;
use tril_core::plugin::{PluginError, Split};

/// The settings every training loop shares (see the module docs for each key).
#[derive(Debug, Clone, PartialEq)]
pub struct LoopSettings {
    /// Seeds model initialisation, shuffling and sampling.
    pub seed: u64,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accumulation: usize,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Examples per forward pass at evaluation.
    pub eval_batch_size: usize,
    /// The evaluated splits.
    pub eval_splits: Vec<Split>,
    /// Evaluate before the first step.
    pub eval_zero_shot: bool,
    /// Write checkpoints every `save_every` steps.
    pub save_checkpoints: bool,
    /// Steps between checkpoints.
    pub save_every: usize,
}

/// The [`LoopSettings`] of an algorithm's typed `alg.args`, which declare the same ten
/// fields under the same names: a macro rather than a trait so that each args struct
/// keeps its own field docs and exact serde keys.
macro_rules! loop_settings {
    ($a:expr) => {{
        let a = &$a;
        $crate::settings::LoopSettings {
            seed: a.seed,
            batch_size: a.batch_size,
            grad_accumulation: a.grad_accumulation,
            max_grad_norm: a.max_grad_norm,
            eval_every: a.eval_every,
            eval_batch_size: a.eval_batch_size,
            eval_splits: a.eval_splits.clone(),
            eval_zero_shot: a.eval_zero_shot,
            save_checkpoints: a.save_checkpoints,
            save_every: a.save_every,
        }
    }};
}
pub(crate) use loop_settings;

impl LoopSettings {
    /// Range checks; each error names its `alg.args` key, what was expected and the value.
    pub fn check(&self) -> Result<(), PluginError> {
        let fail = |key: &str, expected: &str, found: String| -> Result<(), PluginError> {
            Err(crate::AlgorithmError::invalid(format!("alg.args.{key}"), expected, found).into())
        };
        if self.grad_accumulation == 0 {
            return fail("grad_accumulation", "at least 1", "0".into());
        }
        if self.batch_size == 0 || !self.batch_size.is_multiple_of(self.grad_accumulation) {
            return fail("batch_size", "a positive multiple of grad_accumulation", self.batch_size.to_string());
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            return fail("max_grad_norm", "a finite norm > 0", self.max_grad_norm.to_string());
        }
        if self.eval_batch_size == 0 {
            return fail("eval_batch_size", "at least 1", "0".into());
        }
        if self.save_checkpoints && self.save_every == 0 {
            return fail("save_every", "at least 1 step", "0".into());
        }
        Ok(())
    }

    /// The config-time ranges of these keys, checked against the `alg.args` section `c`
    /// is bound to (so errors carry the value as written and its file:line): at least one
    /// micro-batch, `batch_size` a positive multiple of `grad_accumulation`, a finite
    /// `max_grad_norm > 0`, `eval_batch_size >= 1` and, when checkpointing,
    /// `save_every >= 1`. `eval_every` is any count (0: only at the end).
    pub fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.at_least("grad_accumulation", self.grad_accumulation, 1)?;
        c.at_least("batch_size", self.batch_size, 1)?;
        let divisible = self.batch_size.is_multiple_of(self.grad_accumulation);
        let message = format!("expected a multiple of grad_accumulation ({})", self.grad_accumulation);
        c.satisfies(divisible, "batch_size", self.batch_size, message)?;
        c.positive("max_grad_norm", self.max_grad_norm)?;
        c.at_least("eval_batch_size", self.eval_batch_size, 1)?;
        if self.save_checkpoints {
            c.at_least("save_every", self.save_every, 1)?;
        }
        Ok(())
    }

    /// Whether the loop evaluates after `step` (1-based) of `total`: every `eval_every`
    /// steps and always after the last one.
    pub fn evaluates_at(&self, step: usize, total: usize) -> bool {
        step == total || (self.eval_every > 0 && step.is_multiple_of(self.eval_every))
    }

    /// Whether the loop writes a checkpoint after `step` (1-based) of `total`: every
    /// `save_every` steps when `save_checkpoints`, and always after the last one.
    pub fn checkpoints_at(&self, step: usize, total: usize) -> bool {
        step == total || (self.save_checkpoints && self.save_every > 0 && step.is_multiple_of(self.save_every))
    }
}

/// The run preamble every loop calls before training: the train split must hold examples,
/// and so must every evaluated split. `task` names the task in the errors; `evals` gives
/// each evaluated split with its number of examples.
pub fn check_splits(
    task: &str,
    train: usize,
    evals: impl IntoIterator<Item = (Split, usize)>,
) -> Result<(), PluginError> {
    if train == 0 {
        return Err(crate::AlgorithmError::EmptySplit {
            task: task.to_string(),
            split: Split::Train,
            evaluated: false,
        }
        .into());
    }
    for (split, n) in evals {
        if n == 0 {
            return Err(crate::AlgorithmError::EmptySplit { task: task.to_string(), split, evaluated: true }.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LoopSettings {
        LoopSettings {
            seed: 0,
            batch_size: 8,
            grad_accumulation: 2,
            max_grad_norm: 1.0,
            eval_every: 4,
            eval_batch_size: 8,
            eval_splits: vec![Split::Val],
            eval_zero_shot: true,
            save_checkpoints: true,
            save_every: 3,
        }
    }

    #[test]
    fn checks_name_the_key_and_the_value() {
        assert!(settings().check().is_ok());
        for (bad, key, found) in [
            (LoopSettings { grad_accumulation: 0, ..settings() }, "grad_accumulation", "0"),
            (LoopSettings { batch_size: 7, ..settings() }, "batch_size", "7"),
            (LoopSettings { max_grad_norm: f64::NAN, ..settings() }, "max_grad_norm", "NaN"),
            (LoopSettings { eval_batch_size: 0, ..settings() }, "eval_batch_size", "0"),
            (LoopSettings { save_every: 0, ..settings() }, "save_every", "0"),
        ] {
            let err = bad.check().unwrap_err().to_string();
            assert!(err.starts_with(&format!("alg.args.{key}: expected ")), "{err}");
            assert!(err.ends_with(&format!("found {found}")), "{err}");
        }
    }

    #[test]
    fn evaluation_and_checkpoint_schedules() {
        let s = settings();
        let evals: Vec<usize> = (1..=10).filter(|&i| s.evaluates_at(i, 10)).collect();
        assert_eq!(evals, vec![4, 8, 10]);
        let saves: Vec<usize> = (1..=10).filter(|&i| s.checkpoints_at(i, 10)).collect();
        assert_eq!(saves, vec![3, 6, 9, 10]);
        let only_end = LoopSettings { eval_every: 0, save_checkpoints: false, ..s };
        assert_eq!((1..=5).filter(|&i| only_end.evaluates_at(i, 5)).collect::<Vec<_>>(), vec![5]);
        assert_eq!((1..=5).filter(|&i| only_end.checkpoints_at(i, 5)).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn empty_splits_are_refused_by_name() {
        assert!(check_splits("synthetic", 3, [(Split::Val, 2)]).is_ok());
        let err = check_splits("synthetic", 0, []).unwrap_err().to_string();
        assert_eq!(err, "task `synthetic`: the train split is empty");
        let err = check_splits("imdb", 3, [(Split::Val, 1), (Split::Test, 0)]).unwrap_err().to_string();
        assert_eq!(err, "task `imdb`: the test split is empty, but alg.args.eval_splits evaluates on it");
    }
}
