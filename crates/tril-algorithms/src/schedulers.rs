//! Learning-rate schedules (TRIL's `Agent.create_scheduler`), configured by
//! `alg.scheduler: {id, args}`. Each is a pure [`LrSchedule`]: the factor applied to
//! the base learning rate after `step` scheduler steps (TRIL steps once per iteration).
//!
//! | id | torch equivalent | factor after `t` steps |
//! |---|---|---|
//! | `linear` | `PolynomialLR(power=1, total_iters=T)` | `1 − min(t, T)/T` |
//! | `cosine` | `CosineAnnealingLR(T_max=T, eta_min=m·lr)` | `m + (1 − m)(1 + cos(π·min(t, T)/T))/2` |
//! | `constant` | `LambdaLR(lambda _: 1)` | `1` |
//!
//! Every schedule also takes `warmup_iters` (`w`, default 0). For `t < w` the factor is
//! `(t + 1)/(w + 1)`, and from `t = w` on it is the schedule's factor at `t − w`. This
//! equals torch's `SequentialLR([LinearLR(start_factor=1/(w+1), total_iters=w), S],
//! milestones=[w])`: the ramp starts above zero, reaches 1 at `t = w`, and the schedule
//! then runs its full length.
//!
//! ```
//! use tril_algorithms::schedulers::{Linear, Warmup};
//! use tril_core::plugin::LrSchedule;
//! let s = Warmup::new(1, Linear { total_iters: 4 });
//! let factors: Vec<f64> = (0..6).map(|t| s.factor(t)).collect();
//! assert_eq!(factors, [0.5, 1.0, 0.75, 0.5, 0.25, 0.0]);
//! ```

use crate::validate::ensure;
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, LrSchedule, PluginError};
use tril_core::CoreError;

/// Args of `linear` (`alg.scheduler.args`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearArgs {
    /// Scheduler steps over which the factor decays from 1 to 0 (> 0). Required:
    /// torch's default of 5 would silently stop training after five iterations.
    pub total_iters: u64,
    /// Linear warm-up steps before the decay starts.
    #[serde(default)]
    pub warmup_iters: u64,
}

impl Ranges for LinearArgs {
    /// `total_iters` >= 1; `warmup_iters` any count.
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), CoreError> {
        ensure(self.total_iters > 0, c.section(), "total_iters", "expected at least 1 step")
    }
}

/// Args of `cosine` (`alg.scheduler.args`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineArgs {
    /// Scheduler steps of the half cosine (> 0); torch's name `T_max` is accepted too.
    #[serde(alias = "T_max")]
    pub t_max: u64,
    /// Final factor, in [0, 1]: torch's `eta_min` divided by the base learning rate.
    #[serde(default)]
    pub eta_min_factor: f64,
    /// Linear warm-up steps before the cosine starts.
    #[serde(default)]
    pub warmup_iters: u64,
}

impl Ranges for CosineArgs {
    /// `t_max` >= 1, `eta_min_factor` in [0, 1]; `warmup_iters` any count.
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), CoreError> {
        cosine(c.section(), self).map(|_| ())
    }
}

/// Args of `constant` (`alg.scheduler.args`, which may be left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConstantArgs {
    /// Linear warm-up steps, after which the factor stays 1.
    pub warmup_iters: u64,
}

impl Ranges for ConstantArgs {
    /// `warmup_iters` is any count.
    fn check_ranges(&self, _: &Checker<'_>) -> Result<(), CoreError> {
        Ok(())
    }
}

/// Linear decay to 0 over `total_iters` steps, then 0 (torch `PolynomialLR`, power 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linear {
    /// Steps to reach 0 (> 0).
    pub total_iters: u64,
}

impl LrSchedule for Linear {
    fn factor(&self, step: u64) -> f64 {
        1.0 - step.min(self.total_iters) as f64 / self.total_iters as f64
    }
}

/// Half-cosine decay from 1 to `eta_min_factor` over `t_max` steps.
///
/// # Deviations from torch
/// torch's `CosineAnnealingLR` continues periodically past `T_max` (the rate climbs back
/// up to the base rate at `2·T_max`). tril holds the factor at `eta_min_factor` after
/// `t_max`, which is what a run longer than its schedule almost always intends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cosine {
    /// Steps of the half cosine (> 0).
    pub t_max: u64,
    /// Factor reached at `t_max`, in [0, 1].
    pub eta_min_factor: f64,
}

impl LrSchedule for Cosine {
    fn factor(&self, step: u64) -> f64 {
        let progress = step.min(self.t_max) as f64 / self.t_max as f64;
        let m = self.eta_min_factor;
        m + (1.0 - m) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
    }
}

/// A factor of 1 (torch `LambdaLR(lambda _: 1)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant;

impl LrSchedule for Constant {
    fn factor(&self, _step: u64) -> f64 {
        1.0
    }
}

/// `schedule` preceded by a linear ramp of `warmup_iters` steps (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmup<S> {
    /// Ramp steps (0 = no warm-up).
    pub warmup_iters: u64,
    /// The schedule that runs after the ramp.
    pub schedule: S,
}

impl<S> Warmup<S> {
    /// `schedule` after `warmup_iters` ramp steps.
    pub fn new(warmup_iters: u64, schedule: S) -> Self {
        Warmup { warmup_iters, schedule }
    }
}

impl<S: LrSchedule> LrSchedule for Warmup<S> {
    fn factor(&self, step: u64) -> f64 {
        match step.checked_sub(self.warmup_iters) {
            Some(after) => self.schedule.factor(after),
            None => (step + 1) as f64 / (self.warmup_iters + 1) as f64,
        }
    }
}

fn build_linear(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn LrSchedule>, PluginError> {
    let args: LinearArgs = section.extract()?;
    ensure(args.total_iters > 0, section, "total_iters", "expected at least 1 step")?;
    Ok(Box::new(Warmup::new(args.warmup_iters, Linear { total_iters: args.total_iters })))
}

tril_core::register!(scheduler,
    id: "linear",
    doc: "Linear decay to 0 over total_iters steps (torch PolynomialLR, power 1), optional warm-up.",
    config: LinearArgs,
    build: build_linear);

fn cosine(section: &Section<'_>, args: &CosineArgs) -> Result<Cosine, CoreError> {
    let field = if section.node().get("T_max").is_some() { "T_max" } else { "t_max" };
    ensure(args.t_max > 0, section, field, "expected at least 1 step")?;
    let m = args.eta_min_factor;
    ensure((0.0..=1.0).contains(&m), section, "eta_min_factor", "expected a factor in [0, 1]")?;
    Ok(Cosine { t_max: args.t_max, eta_min_factor: m })
}

fn build_cosine(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn LrSchedule>, PluginError> {
    let args: CosineArgs = section.extract()?;
    Ok(Box::new(Warmup::new(args.warmup_iters, cosine(section, &args)?)))
}

tril_core::register!(scheduler,
    id: "cosine",
    doc: "Half-cosine decay to eta_min_factor over t_max steps, then held (torch CosineAnnealingLR).",
    config: CosineArgs,
    build: build_cosine);

fn build_constant(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn LrSchedule>, PluginError> {
    let args: ConstantArgs = section.extract()?;
    Ok(Box::new(Warmup::new(args.warmup_iters, Constant)))
}

tril_core::register!(scheduler,
    id: "constant",
    doc: "Constant learning rate (TRIL's default), optional linear warm-up.",
    config: ConstantArgs,
    build: build_constant);

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tril_core::config::{parse_yaml, Config};
    use tril_core::registry::{build_scheduler, Kind};

    /// Builds `alg.scheduler` through the registry, as the trainer does.
    fn build(yaml: &str) -> Result<Box<dyn LrSchedule>, PluginError> {
        let config = Config::new(parse_yaml(yaml, Path::new("alg/ppo.yaml")).unwrap(), vec![]);
        build_scheduler(&config.section("alg.scheduler").unwrap(), &config)
    }

    fn factors(s: &dyn LrSchedule, steps: u64) -> Vec<f64> {
        (0..steps).map(|t| s.factor(t)).collect()
    }

    fn assert_all_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn linear_matches_torch_polynomial_lr() {
        // opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        // s = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=4, power=1.0)
        // out = []
        // for _ in range(6): out.append(opt.param_groups[0]["lr"]); opt.step(); s.step()
        // out == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
        let s = build("alg:\n  scheduler:\n    id: linear\n    args:\n      total_iters: 4\n").unwrap();
        assert_all_close(&factors(s.as_ref(), 6), &[1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);
    }

    #[test]
    fn cosine_matches_torch_and_clamps_at_t_max() {
        // s = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.1)  # lr = 1.0, loop as above
        // torch: [1.0, 0.8681980515, 0.55, 0.2318019485, 0.1, 0.2318019485]
        // (torch climbs again after T_max; tril holds 0.1)
        let s = build("alg:\n  scheduler:\n    id: cosine\n    args:\n      T_max: 4\n      eta_min_factor: 0.1\n")
            .unwrap();
        let want = [1.0, 0.8681980515339464, 0.55, 0.23180194846605365, 0.1, 0.1, 0.1];
        assert_all_close(&factors(s.as_ref(), 7), &want);
        let s = build("alg:\n  scheduler:\n    id: cosine\n    args:\n      t_max: 2\n").unwrap();
        assert_all_close(&factors(s.as_ref(), 4), &[1.0, 0.5, 0.0, 0.0]);
    }

    #[test]
    fn constant_needs_no_args() {
        for yaml in ["alg:\n  scheduler:\n    id: constant\n", "alg:\n  scheduler:\n    id: constant\n    args:\n"] {
            let s = build(yaml).unwrap();
            assert_all_close(&factors(s.as_ref(), 3), &[1.0, 1.0, 1.0]);
        }
    }

    #[test]
    fn warmup_ramps_then_runs_the_whole_schedule() {
        // torch: SequentialLR(opt, [LinearLR(opt, start_factor=1/3, total_iters=2),
        //                           PolynomialLR(opt, total_iters=2, power=1.0)], milestones=[2])
        // lrs: [1/3, 2/3, 1.0, 0.5, 0.0, 0.0]
        let s = build("alg:\n  scheduler:\n    id: linear\n    args:\n      total_iters: 2\n      warmup_iters: 2\n")
            .unwrap();
        assert_all_close(&factors(s.as_ref(), 6), &[1.0 / 3.0, 2.0 / 3.0, 1.0, 0.5, 0.0, 0.0]);
        let s = build("alg:\n  scheduler:\n    id: constant\n    args:\n      warmup_iters: 3\n").unwrap();
        assert_all_close(&factors(s.as_ref(), 5), &[0.25, 0.5, 0.75, 1.0, 1.0]);
        let s =
            build("alg:\n  scheduler:\n    id: cosine\n    args:\n      t_max: 2\n      warmup_iters: 1\n").unwrap();
        assert_all_close(&factors(s.as_ref(), 5), &[0.5, 1.0, 0.5, 0.0, 0.0]);
    }

    #[test]
    fn config_errors_name_key_and_line() {
        let err = build("alg:\n  scheduler:\n    id: linear\n    args:\n      total_iters: 0\n").err().unwrap();
        let err = err.to_string();
        assert!(err.contains("alg.scheduler.args.total_iters") && err.contains("alg/ppo.yaml:5"), "{err}");
        let err = build("alg:\n  scheduler:\n    id: linear\n").err().unwrap().to_string();
        assert!(err.contains("alg.scheduler.args.total_iters: missing required key"), "{err}");
        let err = build("alg:\n  scheduler:\n    id: cosine\n    args:\n      T_max: 0\n").err().unwrap().to_string();
        assert!(err.contains("alg.scheduler.args.T_max"), "{err}");
        let yaml = "alg:\n  scheduler:\n    id: cosine\n    args:\n      t_max: 3\n      eta_min_factor: 2\n";
        let err = build(yaml).err().unwrap().to_string();
        assert!(err.contains("alg.scheduler.args.eta_min_factor: expected a factor in [0, 1]"), "{err}");
        let err =
            build("alg:\n  scheduler:\n    id: constant\n    args:\n      warmup: 3\n").err().unwrap().to_string();
        assert!(err.contains("alg.scheduler.args.warmup: unknown key"), "{err}");
        let err = build("alg:\n  scheduler:\n    id: cosin\n").err().unwrap().to_string();
        assert!(err.contains("did you mean `cosine`"), "{err}");
    }

    #[test]
    fn ids_are_registered() {
        let ids: Vec<&str> = Kind::Scheduler.list().iter().map(|l| l.id).collect();
        for id in ["constant", "cosine", "linear"] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
    }
}
