//! The guard every training loop runs before it applies an update (root config `guard:`,
//! [`GuardConfig`]): no update is ever applied from a NaN/inf loss term, gradient norm or
//! reward, and no checkpoint of non-finite weights is ever written.
//!
//! Each optimizer step hands [`Guard::step`] its loss terms and gradient norm. When one
//! is not finite the step's update is dropped; the first `guard.skip_nonfinite` such steps
//! are skipped with a warning, the next one stops the run with an error naming the
//! algorithm, the iteration and step, the term and its value, and the last good
//! checkpoint. A non-finite reward ([`Guard::reward`]) skips the whole iteration's update
//! the same way. Divergence (a loss term above `guard.max_loss`, the KL above
//! `guard.max_kl`) always stops the run: skipping does not cure it.

use crate::AlgorithmError;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use std::fmt;
use std::path::{Path, PathBuf};
use tril_core::config::Config;
use tril_core::plugin::PluginError;
use tril_core::safety::{CheckpointConfig, GuardConfig};
use tril_core::tracker::Stats;

/// Where in a run a value was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// The iteration of an on-policy loop (`None` for loops that count optimizer steps).
    pub iteration: Option<usize>,
    /// The optimizer step: within the iteration (1-based) for on-policy loops, else the
    /// run's step.
    pub step: usize,
}

impl At {
    /// Step `step` of iteration `iteration` (on-policy loops).
    pub fn update(iteration: usize, step: usize) -> Self {
        At { iteration: Some(iteration), step }
    }

    /// Step `step` of a loop that counts optimizer steps (BC, DPO, ...).
    pub fn step(step: usize) -> Self {
        At { iteration: None, step }
    }

    /// A whole iteration (rewards, rollout KL).
    pub fn iteration(iteration: usize) -> Self {
        At { iteration: Some(iteration), step: 0 }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.iteration, self.step) {
            (Some(i), 0) => write!(f, "iteration {i}"),
            (Some(i), s) => write!(f, "iteration {i}, update step {s}"),
            (None, s) => write!(f, "step {s}"),
        }
    }
}

/// What a loop does with a checked step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Every value is finite: apply the update.
    Apply,
    /// A value was not finite and the skip budget allows it: drop the update.
    Skip,
}

/// The per-run guard (see the module docs).
#[derive(Debug, Clone)]
pub struct Guard {
    algorithm: String,
    config: GuardConfig,
    run_dir: PathBuf,
    skipped: usize,
    keep: CheckpointConfig,
}

impl Guard {
    /// The guard of `algorithm` from the config's `guard:` section, for a run writing to
    /// `run_dir` (where it looks for the last good checkpoint).
    pub fn new(algorithm: &str, config: &Config, run_dir: &Path) -> Result<Self, PluginError> {
        let keep = CheckpointConfig::of(config)?;
        Ok(Guard { keep, ..Guard::with(algorithm, GuardConfig::of(config)?, run_dir) })
    }

    /// The guard of an explicit [`GuardConfig`].
    pub fn with(algorithm: &str, config: GuardConfig, run_dir: &Path) -> Self {
        let keep = CheckpointConfig::default();
        Guard { algorithm: algorithm.to_string(), config, run_dir: run_dir.to_path_buf(), skipped: 0, keep }
    }

    /// Which checkpoints the run keeps (`checkpoint:`; the guard carries it to every
    /// checkpoint write).
    pub fn keep(&self) -> &CheckpointConfig {
        &self.keep
    }

    /// Bad steps skipped so far (kept in checkpoints, so a resumed run keeps its budget).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Continues a resumed run's count of skipped steps.
    pub fn restore(&mut self, skipped: usize) {
        self.skipped = skipped;
    }

    /// Adds `guard/skipped_steps` to a training line when the run allows skipping.
    pub fn record(&self, stats: &mut Stats) {
        if self.config.skip_nonfinite > 0 {
            stats.insert("guard/skipped_steps".into(), self.skipped as f64);
        }
    }

    /// The training line of a step or iteration whose update was skipped.
    pub fn skipped_line(&self) -> Stats {
        let mut stats = Stats::new();
        self.record(&mut stats);
        stats
    }

    /// Takes one bad step from the `guard.skip_nonfinite` budget, warning that `what`
    /// happened and the update is skipped; `false` when the budget is spent.
    fn try_skip(&mut self, what: std::fmt::Arguments<'_>) -> bool {
        if self.skipped >= self.config.skip_nonfinite {
            return false;
        }
        self.skipped += 1;
        let (n, budget) = (self.skipped, self.config.skip_nonfinite);
        tracing::warn!("{}: {what}; the update is skipped ({n} of guard.skip_nonfinite = {budget})", self.algorithm);
        true
    }

    /// Checks one optimizer step before its update: every value (loss terms, gradient
    /// norms, ...) must be finite, and every loss term (a name ending in `loss`) at most
    /// `guard.max_loss` in magnitude.
    pub fn step<K: AsRef<str>>(&mut self, at: At, values: &[(K, f64)]) -> Result<Verdict, PluginError> {
        if let Some((what, value)) = values.iter().find(|(_, v)| !v.is_finite()) {
            return self.bad(at, what.as_ref(), *value);
        }
        if let Some(bound) = self.config.max_loss {
            let diverged = values.iter().find(|(k, v)| k.as_ref().ends_with("loss") && v.abs() > bound);
            if let Some((what, value)) = diverged {
                return Err(self.diverged(at, what.as_ref(), *value, "max_loss", bound));
            }
        }
        Ok(Verdict::Apply)
    }

    /// Checks a KL from the reference: finite (else a bad step) and at most
    /// `guard.max_kl`.
    pub fn kl(&mut self, at: At, what: &str, value: f64) -> Result<Verdict, PluginError> {
        if !value.is_finite() {
            return self.bad(at, what, value);
        }
        match self.config.max_kl {
            Some(bound) if value > bound => Err(self.diverged(at, what, value, "max_kl", bound)),
            _ => Ok(Verdict::Apply),
        }
    }

    /// A non-finite reward of `sample` (which generated `generation`) in `iteration`: the
    /// iteration's update is skipped within the budget (`Ok`), else the run stops.
    pub fn reward(&mut self, iteration: usize, sample: &str, generation: &str, value: f64) -> Result<(), PluginError> {
        if self.try_skip(format_args!("iteration {iteration}: the reward of sample `{sample}` is {value}")) {
            return Ok(());
        }
        Err(AlgorithmError::NonFiniteReward {
            iteration,
            sample: sample.to_string(),
            generation: generation.to_string(),
            value,
            checkpoint: self.last_checkpoint(),
        }
        .into())
    }

    /// Refuses weights with a NaN/inf parameter before `checkpoints/iter_<n>` is written.
    pub fn weights<B: Backend, M: Module<B>>(&self, n: usize, module: &M) -> Result<(), PluginError> {
        match first_nonfinite_param(module) {
            None => Ok(()),
            Some(param) => Err(AlgorithmError::NonFiniteWeights {
                algorithm: self.algorithm.clone(),
                at: format!("checkpoints/iter_{n}"),
                param,
                checkpoint: self.last_checkpoint(),
            }
            .into()),
        }
    }

    fn bad(&mut self, at: At, what: &str, value: f64) -> Result<Verdict, PluginError> {
        if self.try_skip(format_args!("{at}: {what} is {value}")) {
            return Ok(Verdict::Skip);
        }
        Err(AlgorithmError::NonFinite {
            algorithm: self.algorithm.clone(),
            at: at.to_string(),
            what: what.to_string(),
            value,
            skipped: self.skipped,
            limit: self.config.skip_nonfinite,
            checkpoint: self.last_checkpoint(),
        }
        .into())
    }

    fn diverged(&self, at: At, what: &str, value: f64, key: &'static str, bound: f64) -> PluginError {
        AlgorithmError::Diverged {
            algorithm: self.algorithm.clone(),
            at: at.to_string(),
            what: what.to_string(),
            value,
            key,
            bound,
            checkpoint: self.last_checkpoint(),
        }
        .into()
    }

    /// Whether SIGINT/SIGTERM asked for a graceful stop ([`tril_core::interrupt`]): the
    /// loop then writes its checkpoint and returns [`Guard::interrupted`]. Data-parallel
    /// replicas agree on it ([`tril_core::parallel::any`]), so all stop at the same
    /// step; that exchange is the one way this fails.
    pub fn stop_requested(&self) -> Result<bool, tril_core::CoreError> {
        tril_core::parallel::any(tril_core::interrupt::requested().is_some())
    }

    /// The error that ends a run stopped by a signal after `at` (its checkpoint written).
    pub fn interrupted(&self, at: At) -> PluginError {
        let number = tril_core::interrupt::requested().unwrap_or(tril_core::interrupt::SIGINT);
        AlgorithmError::Interrupted {
            algorithm: self.algorithm.clone(),
            signal: tril_core::interrupt::name(number),
            number,
            at: at.to_string(),
            checkpoint: self.last_checkpoint(),
            run_dir: self.run_dir.display().to_string(),
        }
        .into()
    }

    /// "last good checkpoint: <dir>", that none was written yet, or why none verifies.
    pub fn last_checkpoint(&self) -> String {
        match crate::checkpoint::latest_checkpoint(&self.run_dir) {
            Ok((_, dir)) => format!("last good checkpoint: {}", dir.display()),
            Err(e) if matches!(e.downcast_ref(), Some(AlgorithmError::NoCheckpoint { .. })) => {
                "no checkpoint was written yet".to_string()
            }
            Err(e) => format!("no good checkpoint ({e})"),
        }
    }
}

/// The dotted path of the first parameter of `module` holding a NaN or an infinity.
pub fn first_nonfinite_param<B: Backend, M: Module<B>>(module: &M) -> Option<String> {
    let mut visitor = Finite { stack: Vec::new(), found: None };
    module.visit(&mut visitor);
    visitor.found
}

struct Finite {
    stack: Vec<String>,
    found: Option<String>,
}

impl<B: Backend> ModuleVisitor<B> for Finite {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.found.is_some() {
            return;
        }
        let finite = param.val().is_finite().all().into_scalar();
        if burn::tensor::ElementConversion::elem::<u8>(finite) == 0 {
            self.found = Some(self.stack.join("."));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use tril_core::backend::CpuBackend as Cpu;

    fn guard(skip: usize) -> Guard {
        let config = GuardConfig { skip_nonfinite: skip, max_loss: Some(100.0), max_kl: Some(5.0) };
        Guard::with("ppo", config, Path::new("/nonexistent-run"))
    }

    #[test]
    fn finite_steps_apply_and_a_bad_one_stops_naming_where_and_what() {
        let mut g = guard(0);
        assert_eq!(g.step(At::update(3, 1), &[("ppo/loss", 1.0), ("ppo/grad_norm", 2.0)]).unwrap(), Verdict::Apply);
        let err = g.step(At::update(3, 2), &[("ppo/loss", 1.0), ("ppo/value_loss", f64::NAN)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ppo: iteration 3, update step 2: ppo/value_loss is NaN; the update was not applied and the run \
             stops (0 bad steps skipped, guard.skip_nonfinite = 0); no checkpoint was written yet"
        );
    }

    #[test]
    fn the_skip_budget_skips_then_stops() {
        let mut g = guard(2);
        for _ in 0..2 {
            assert_eq!(g.step(At::step(7), &[("grad_norm", f64::INFINITY)]).unwrap(), Verdict::Skip);
        }
        assert_eq!(g.skipped(), 2);
        let err = g.step(At::step(9), &[("loss", f64::NAN)]).unwrap_err().to_string();
        assert!(err.starts_with("ppo: step 9: loss is NaN") && err.contains("2 bad steps skipped"), "{err}");
        let mut g = guard(1);
        assert!(g.reward(4, "s1", "a b", f64::NAN).is_ok());
        let err = g.reward(5, "s2", "c", f64::NEG_INFINITY).unwrap_err().to_string();
        assert!(err.starts_with("iteration 5: the reward of sample `s2` is -inf"), "{err}");
    }

    #[test]
    fn divergence_stops_whatever_the_budget() {
        let mut g = guard(5);
        let err = g.step(At::step(2), &[("loss", -250.0)]).unwrap_err().to_string();
        assert!(err.contains("loss = -250 exceeds guard.max_loss = 100"), "{err}");
        assert_eq!(g.step(At::step(2), &[("grad_norm", 250.0)]).unwrap(), Verdict::Apply, "not a loss term");
        let err = g.kl(At::iteration(6), "rollout_buffer/kl_div", 7.5).unwrap_err().to_string();
        assert!(err.starts_with("ppo: iteration 6: rollout_buffer/kl_div = 7.5 exceeds guard.max_kl = 5"), "{err}");
    }

    #[test]
    fn nonfinite_weights_are_found_by_path() {
        let device = Default::default();
        let layer: Linear<Cpu> = LinearConfig::new(2, 3).init(&device);
        assert_eq!(first_nonfinite_param(&layer), None);
        let bias = layer.bias.clone().unwrap().map(|b| b.div_scalar(0.0));
        let broken = Linear { bias: Some(bias), ..layer };
        assert_eq!(first_nonfinite_param(&broken).as_deref(), Some("bias"));
        let err = guard(0).weights(2, &broken).unwrap_err().to_string();
        assert!(err.starts_with("ppo: checkpoints/iter_2: parameter `bias` is not finite"), "{err}");
        assert!(err.ends_with("no checkpoint was written yet"), "{err}");
    }
}
