//! KL-penalty coefficient controllers (TRIL's `KLRegistry`), configured by the flat
//! `alg.kl_div` section: `{kl_type, coeff, kl_lr, target_kl, horizon}`.
//!
//! | `kl_type` | type | update after an iteration with mean KL `kl` |
//! |---|---|---|
//! | `fixedklcontroller` | [`FixedKl`] | none (every shipped TRIL config) |
//! | `klcontroller` | [`ProportionalKl`] | `coeff *= 1 + 0.1 (kl - target) / target`, unclipped |
//! | `scaledklcontroller` | [`ScaledKl`] | Ziegler et al.'s clipped, horizon-scaled rule |
//!
//! The adaptive rule of [Ziegler et al. 2019](https://arxiv.org/abs/1909.08593), §2.2:
//!
//! ```tex
//! e_t = \operatorname{clip}\left(\frac{\mathrm{KL}(\pi_t, \rho) - \mathrm{KL}_{\text{target}}}
//!       {\mathrm{KL}_{\text{target}}}, -0.2, 0.2\right), \qquad
//! \beta_{t+1} = \beta_t \, (1 + K_\beta \, e_t)
//! ```
//!
//! The paper gives `K_β = 0.1`; its code (`lm-human-preferences`, `AdaptiveKLController`)
//! uses `K_β = n_steps / horizon` with `horizon = 10000`. `klcontroller` is TRIL's
//! reading of the paper's form without the clip; `scaledklcontroller` is the code's form.
//! TRIL's PID and ball controllers (`klpidcontroller`, `ballklcontroller`) are not ported.
//!
//! ```
//! use tril_algorithms::onpolicy::kl_controller::ProportionalKl;
//! use tril_core::plugin::KlController;
//! let mut kl = ProportionalKl::new(0.1, 0.1);
//! kl.step(0.2, 64); // 100% over target: +10%
//! assert!((kl.coeff() - 0.11).abs() < 1e-12);
//! ```

use crate::validate::{ensure, invalid};
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, KlController, PluginError};
use tril_core::CoreError;

/// `horizon` when the config leaves it out: Ziegler et al.'s `lm-human-preferences` value.
pub const DEFAULT_HORIZON: f64 = 10_000.0;

/// TRIL's `alg.kl_div` section (flat, with the id in `kl_type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlDivConfig {
    /// The controller id (`fixedklcontroller`, `klcontroller`, `scaledklcontroller`).
    pub kl_type: String,
    /// Initial KL-penalty coefficient β (TRIL's `kl_coeff`); must be finite and ≥ 0.
    pub coeff: f64,
    /// Learning rate of TRIL's PID controllers. Accepted for TRIL compatibility; no
    /// controller tril implements reads it (TRIL's `klcontroller` hard-codes 0.1 too).
    #[serde(default = "default_kl_lr")]
    pub kl_lr: f64,
    /// Target KL per trajectory; required by the adaptive controllers, ignored by the fixed one.
    #[serde(default)]
    pub target_kl: Option<f64>,
    /// Ziegler's horizon (`scaledklcontroller` only; default [`DEFAULT_HORIZON`]).
    #[serde(default)]
    pub horizon: Option<f64>,
}

impl Ranges for KlDivConfig {
    /// `coeff` >= 0; `kl_lr` >= 0; `target_kl` > 0, required by the adaptive controllers;
    /// `horizon` > 0, read by `scaledklcontroller` only.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        let section = c.section();
        ensure(self.coeff.is_finite() && self.coeff >= 0.0, section, "coeff", "expected a finite coefficient ≥ 0")?;
        c.non_negative("kl_lr", self.kl_lr)?;
        if let Some(horizon) = self.horizon {
            if self.kl_type != "scaledklcontroller" {
                return Err(invalid(section, "horizon", "only `scaledklcontroller` reads a horizon; remove it"));
            }
            ensure(horizon.is_finite() && horizon > 0.0, section, "horizon", "expected a finite horizon > 0")?;
        }
        if self.kl_type == "fixedklcontroller" {
            if let Some(t) = self.target_kl {
                c.positive("target_kl", t)?;
            }
            return Ok(());
        }
        target_kl(section, self).map(|_| ())
    }
}

fn default_kl_lr() -> f64 {
    0.1
}

/// TRIL's `klcontroller` step: `coeff · (1 + 0.1 · (kl − target) / target)`, no clipping.
pub fn proportional_update(coeff: f64, kl: f64, target: f64) -> f64 {
    coeff * (1.0 + 0.1 * (kl - target) / target)
}

/// Ziegler et al.'s step: `e = clip((kl − target)/target, −0.2, 0.2)`,
/// `coeff · (1 + e · n_steps / horizon)`.
pub fn ziegler_update(coeff: f64, kl: f64, target: f64, n_steps: usize, horizon: f64) -> f64 {
    let e = ((kl - target) / target).clamp(-0.2, 0.2);
    coeff * (1.0 + e * n_steps as f64 / horizon)
}

/// A coefficient that never changes (TRIL's `FixedKLController`).
#[derive(Debug, Clone, PartialEq)]
pub struct FixedKl {
    coeff: f64,
}

impl FixedKl {
    /// A controller holding `coeff`.
    pub fn new(coeff: f64) -> Self {
        FixedKl { coeff }
    }
}

/// TRIL's `KLController`: a proportional step towards `target_kl`, unclipped.
#[derive(Debug, Clone, PartialEq)]
pub struct ProportionalKl {
    coeff: f64,
    target_kl: f64,
}

impl ProportionalKl {
    /// A controller starting at `coeff`, steering the KL towards `target_kl` (> 0).
    pub fn new(coeff: f64, target_kl: f64) -> Self {
        ProportionalKl { coeff, target_kl }
    }
}

/// Ziegler et al.'s adaptive controller (TRIL's `ScaleKLController`).
///
/// # Deviations from TRIL
/// TRIL hard-codes `n_steps = 64` and `horizon = 100 · 7.5 = 750` (marked TODO), so its
/// step is `coeff · (1 + e · 64/750)`, and it does not clip `e`. tril clips `e` to
/// [−0.2, 0.2] as the paper does, reads `horizon` from `alg.kl_div.horizon` (default
/// 10000, as in `lm-human-preferences`) and takes `n_steps` from the caller: PPO's loop
/// passes the number of sequences of the iteration (`trajectories_per_update`), as
/// `lm-human-preferences`, TRL (`AdaptiveKLController.update(kl, batch_size)`) and
/// OpenRLHF do. A token count would adapt about `max_gen_len` times too fast.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaledKl {
    coeff: f64,
    target_kl: f64,
    horizon: f64,
}

impl ScaledKl {
    /// A controller starting at `coeff`, steering towards `target_kl` (> 0) over `horizon` (> 0) steps.
    pub fn new(coeff: f64, target_kl: f64, horizon: f64) -> Self {
        ScaledKl { coeff, target_kl, horizon }
    }
}

/// Restores a one-value state `[coeff]` into `coeff`.
fn load_coeff(coeff: &mut f64, state: &[f64]) -> Result<(), PluginError> {
    match state {
        [c] if c.is_finite() && *c >= 0.0 => {
            *coeff = *c;
            Ok(())
        }
        _ => Err(Box::new(CoreError::WithContext {
            context: "loading the KL controller state".into(),
            message: format!("expected one finite coefficient ≥ 0, found {state:?}"),
        })),
    }
}

/// A non-finite KL would poison the coefficient for the rest of the run: skip it.
fn usable(kl: f64) -> bool {
    if !kl.is_finite() {
        tracing::warn!(kl, "non-finite KL; the KL coefficient is left unchanged this iteration");
    }
    kl.is_finite()
}

macro_rules! coeff_state {
    () => {
        fn coeff(&self) -> f64 {
            self.coeff
        }

        fn state(&self) -> Vec<f64> {
            vec![self.coeff]
        }

        fn load_state(&mut self, state: &[f64]) -> Result<(), PluginError> {
            load_coeff(&mut self.coeff, state)
        }
    };
}

impl KlController for FixedKl {
    coeff_state!();

    fn step(&mut self, _kl: f64, _n_steps: usize) {}
}

impl KlController for ProportionalKl {
    coeff_state!();

    fn step(&mut self, kl: f64, _n_steps: usize) {
        if usable(kl) {
            self.coeff = proportional_update(self.coeff, kl, self.target_kl);
        }
    }
}

impl KlController for ScaledKl {
    coeff_state!();

    fn step(&mut self, kl: f64, n_steps: usize) {
        if usable(kl) {
            self.coeff = ziegler_update(self.coeff, kl, self.target_kl, n_steps, self.horizon);
        }
    }
}

/// Extracts the config and checks its ranges ([`Ranges`]).
fn extract(section: &Section<'_>) -> Result<KlDivConfig, CoreError> {
    section.extract_checked()
}

/// The target KL of an adaptive controller: present, finite and > 0.
fn target_kl(section: &Section<'_>, config: &KlDivConfig) -> Result<f64, CoreError> {
    match config.target_kl {
        Some(t) if t.is_finite() && t > 0.0 => Ok(t),
        Some(_) => Err(invalid(section, "target_kl", "expected a finite target KL > 0")),
        None => Err(invalid(
            section,
            "target_kl",
            format!("`{}` adapts the coefficient towards a target; set alg.kl_div.target_kl", config.kl_type),
        )),
    }
}

fn build_fixed(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn KlController>, PluginError> {
    Ok(Box::new(FixedKl::new(extract(section)?.coeff)))
}

tril_core::register!(kl_controller,
    id: "fixedklcontroller",
    doc: "Constant KL coefficient `coeff` (TRIL's FixedKLController).",
    config: KlDivConfig,
    build: build_fixed);

fn build_proportional(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn KlController>, PluginError> {
    let config = extract(section)?;
    Ok(Box::new(ProportionalKl::new(config.coeff, target_kl(section, &config)?)))
}

tril_core::register!(kl_controller,
    id: "klcontroller",
    doc: "coeff *= 1 + 0.1 (kl - target_kl) / target_kl, unclipped (TRIL's KLController).",
    config: KlDivConfig,
    build: build_proportional);

fn build_scaled(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn KlController>, PluginError> {
    let config = extract(section)?;
    let target = target_kl(section, &config)?;
    let horizon = config.horizon.unwrap_or(DEFAULT_HORIZON);
    ensure(horizon.is_finite() && horizon > 0.0, section, "horizon", "expected a finite horizon > 0")?;
    Ok(Box::new(ScaledKl::new(config.coeff, target, horizon)))
}

tril_core::register!(kl_controller,
    id: "scaledklcontroller",
    doc: "Ziegler et al. 2019 adaptive KL: clipped error, scaled by n_steps / horizon.",
    config: KlDivConfig,
    build: build_scaled);

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tril_core::config::{parse_yaml, Config};
    use tril_core::registry::{build_kl_controller, Kind};

    fn config(yaml: &str) -> Config {
        Config::new(parse_yaml(yaml, Path::new("alg/ppo.yaml")).unwrap(), vec![])
    }

    /// Builds `alg.kl_div` through the registry, as the trainer does.
    fn build(yaml: &str) -> Result<Box<dyn KlController>, PluginError> {
        let config = config(yaml);
        build_kl_controller(&config.section("alg.kl_div").unwrap(), &config)
    }

    fn assert_close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
    }

    #[test]
    fn fixed_never_moves() {
        let mut kl =
            build("alg:\n  kl_div:\n    kl_type: fixedklcontroller\n    coeff: 0.001\n    target_kl: 0.1\n").unwrap();
        for x in [0.0, 5.0, f64::NAN] {
            kl.step(x, 64);
        }
        assert_eq!(kl.coeff(), 0.001);
    }

    #[test]
    fn proportional_matches_hand_computed_steps() {
        let mut kl = build("alg:\n  kl_div:\n    kl_type: klcontroller\n    coeff: 0.1\n    target_kl: 0.1\n").unwrap();
        // (kl, coeff after): 0.1·1.1; ·(1 − 0.05); unchanged at target; e = 10 is not clipped: ·2.
        for (x, want) in [(0.2, 0.11), (0.05, 0.1045), (0.1, 0.1045), (1.1, 0.209)] {
            kl.step(x, 64);
            assert_close(kl.coeff(), want);
        }
    }

    #[test]
    fn scaled_matches_hand_computed_steps() {
        let mut kl =
            build("alg:\n  kl_div:\n    kl_type: scaledklcontroller\n    coeff: 0.1\n    target_kl: 0.1\n").unwrap();
        // e clipped to 0.2: ·(1 + 0.2·64/10000) = ·1.00128; e = −0.5 → −0.2: ·0.99872; e = 0.1: ·1.00064.
        for (x, want) in [(0.2, 0.100128), (0.05, 0.09999983616), (0.11, 0.1000638360551424)] {
            kl.step(x, 64);
            assert_close(kl.coeff(), want);
        }
    }

    #[test]
    fn scaled_reproduces_tril_constants_inside_the_clip() {
        let yaml =
            "alg:\n  kl_div:\n    kl_type: scaledklcontroller\n    coeff: 1.0\n    target_kl: 1.0\n    horizon: 750\n";
        let mut kl = build(yaml).unwrap();
        kl.step(1.1, 64); // TRIL: 1 · (1 + 0.1 · 64 / (100 · 7.5))
        assert_close(kl.coeff(), 1.0 + 0.1 * 64.0 / 750.0);
    }

    #[test]
    fn state_round_trips_the_coefficient() {
        let yaml = "alg:\n  kl_div:\n    kl_type: klcontroller\n    coeff: 0.1\n    target_kl: 0.1\n";
        let mut a = build(yaml).unwrap();
        a.step(0.3, 64);
        let mut b = build(yaml).unwrap();
        b.load_state(&a.state()).unwrap();
        assert_eq!(b.coeff(), a.coeff());
        a.step(0.02, 64);
        b.step(0.02, 64);
        assert_eq!(b.coeff(), a.coeff());
        assert!(b.load_state(&[]).is_err());
        assert!(b.load_state(&[f64::NAN]).is_err());
    }

    #[test]
    fn missing_target_kl_is_a_build_error() {
        for id in ["klcontroller", "scaledklcontroller"] {
            let err =
                build(&format!("alg:\n  kl_div:\n    kl_type: {id}\n    coeff: 0.1\n")).err().unwrap().to_string();
            assert!(err.contains("alg.kl_div.target_kl") && err.contains(id), "{err}");
        }
        let err =
            build("alg:\n  kl_div:\n    kl_type: klcontroller\n    coeff: 0.1\n    target_kl: 0\n").err().unwrap();
        assert!(err.to_string().contains("alg.kl_div.target_kl: expected a finite target KL > 0"), "{err}");
    }

    #[test]
    fn typos_fail_with_suggestions() {
        let err = build("alg:\n  kl_div:\n    kl_type: klcontroler\n    coeff: 0.1\n").err().unwrap().to_string();
        assert!(err.contains("alg.kl_div.kl_type") && err.contains("did you mean `klcontroller`"), "{err}");
        let err = build("alg:\n  kl_div:\n    kl_type: klcontroller\n    coef: 0.1\n").err().unwrap().to_string();
        assert!(err.contains("alg.kl_div.coef: unknown key; did you mean `coeff`?"), "{err}");
        assert!(err.contains("alg/ppo.yaml:4"), "{err}");
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let err = build("alg:\n  kl_div:\n    kl_type: fixedklcontroller\n    coeff: -1\n").err().unwrap().to_string();
        assert!(err.contains("alg.kl_div.coeff") && err.contains("alg/ppo.yaml:4"), "{err}");
        let yaml = "alg:\n  kl_div:\n    kl_type: klcontroller\n    coeff: 1\n    target_kl: 1\n    horizon: 5\n";
        let err = build(yaml).err().unwrap().to_string();
        assert!(err.contains("alg.kl_div.horizon: only `scaledklcontroller`"), "{err}");
    }

    #[test]
    fn defaults() {
        let config = config("alg:\n  kl_div:\n    kl_type: fixedklcontroller\n    coeff: 0.5\n");
        let parsed: KlDivConfig = config.extract("alg.kl_div").unwrap();
        assert_eq!((parsed.kl_lr, parsed.target_kl, parsed.horizon), (0.1, None, None));
    }

    #[test]
    fn ids_are_registered() {
        let ids: Vec<&str> = Kind::KlController.list().iter().map(|l| l.id).collect();
        for id in ["fixedklcontroller", "klcontroller", "scaledklcontroller"] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
    }
}
