//! Optimizers (TRIL's `helpers.get_optimizer_cls`), configured by
//! `alg.optimizer: {id, args}` and built into an [`OptimizerSpec`] that an algorithm
//! turns into a Burn optimizer on its own backend.
//!
//! | id | torch | defaults (`lr`, `weight_decay`, `eps`, `betas`) |
//! |---|---|---|
//! | `adam` | `torch.optim.Adam` (L2 decay added to the gradient) | 1e-3, 0, 1e-8, (0.9, 0.999) |
//! | `adamw` | `torch.optim.AdamW` (decoupled decay) | 1e-3, 0.01, 1e-8, (0.9, 0.999) |
//!
//! TRIL's `adam8bit` / `adamw8bit` (bitsandbytes) are not ported.
//!
//! Parameters whose name contains one of [`NO_DECAY`] get no weight decay: TRIL's
//! list (`agent.py` `setup_optimizer`: `bias`, `LayerNorm.bias`, `LayerNorm.weight`, matched
//! against HF names) plus `beta`, the name Burn gives a layer norm's bias (saved as HF
//! `ln_1.bias`, which TRIL's `bias` matches). As in TRIL, GPT-2's layer-norm weights
//! (HF `ln_1.weight`, Burn `gamma`) are decayed: TRIL's `LayerNorm.weight` names BERT's.
//!
//! ```
//! use tril_algorithms::optimizers::AdamWArgs;
//! let args = AdamWArgs::default();
//! assert_eq!((args.lr, args.weight_decay, args.eps, args.betas), (1e-3, 0.01, 1e-8, (0.9, 0.999)));
//! ```

use crate::validate::ensure;
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, OptimizerKind, OptimizerSpec, PluginError};
use tril_core::CoreError;

/// Parameter-name substrings exempt from weight decay (see the module docs).
pub const NO_DECAY: [&str; 4] = ["bias", "LayerNorm.bias", "LayerNorm.weight", "beta"];

/// Args of `adam` (`alg.optimizer.args`); defaults are torch's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamArgs {
    /// Base learning rate (> 0).
    pub lr: f64,
    /// L2 penalty added to the gradient (≥ 0).
    pub weight_decay: f64,
    /// Denominator epsilon (> 0).
    pub eps: f64,
    /// First and second moment decay rates, each in [0, 1).
    pub betas: (f64, f64),
}

impl Default for AdamArgs {
    fn default() -> Self {
        AdamArgs { lr: 1e-3, weight_decay: 0.0, eps: 1e-8, betas: (0.9, 0.999) }
    }
}

/// Args of `adamw` (`alg.optimizer.args`); defaults are torch's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWArgs {
    /// Base learning rate (> 0).
    pub lr: f64,
    /// Decoupled weight decay (≥ 0).
    pub weight_decay: f64,
    /// Denominator epsilon (> 0).
    pub eps: f64,
    /// First and second moment decay rates, each in [0, 1).
    pub betas: (f64, f64),
}

impl Default for AdamWArgs {
    fn default() -> Self {
        AdamWArgs { lr: 1e-3, weight_decay: 0.01, eps: 1e-8, betas: (0.9, 0.999) }
    }
}

impl Ranges for AdamArgs {
    /// `lr` > 0, `weight_decay` >= 0, `eps` > 0, each of `betas` in [0, 1).
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), CoreError> {
        ranges(c, self.lr, self.weight_decay, self.eps, self.betas)
    }
}

impl Ranges for AdamWArgs {
    /// `lr` > 0, `weight_decay` >= 0, `eps` > 0, each of `betas` in [0, 1).
    fn check_ranges(&self, c: &Checker<'_>) -> Result<(), CoreError> {
        ranges(c, self.lr, self.weight_decay, self.eps, self.betas)
    }
}

/// The ranges both optimizers share; errors name `<section>.<field>`.
fn ranges(c: &Checker<'_>, lr: f64, weight_decay: f64, eps: f64, betas: (f64, f64)) -> Result<(), CoreError> {
    let section = c.section();
    ensure(lr.is_finite() && lr > 0.0, section, "lr", "expected a finite learning rate > 0")?;
    ensure(weight_decay.is_finite() && weight_decay >= 0.0, section, "weight_decay", "expected a finite value ≥ 0")?;
    ensure(eps.is_finite() && eps > 0.0, section, "eps", "expected a finite epsilon > 0")?;
    let beta_ok = |b: f64| (0.0..1.0).contains(&b);
    ensure(beta_ok(betas.0) && beta_ok(betas.1), section, "betas", "expected two decay rates, each in [0, 1)")
}

/// Checks the ranges and assembles the spec; errors name `<section>.<field>`.
fn spec(
    section: &Section<'_>,
    kind: OptimizerKind,
    lr: f64,
    weight_decay: f64,
    eps: f64,
    betas: (f64, f64),
) -> Result<OptimizerSpec, CoreError> {
    ranges(&Checker::new(section.clone()), lr, weight_decay, eps, betas)?;
    let no_decay = NO_DECAY.iter().map(|s| s.to_string()).collect();
    Ok(OptimizerSpec { kind, lr, betas, eps, weight_decay, no_decay })
}

fn build_adam(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<OptimizerSpec>, PluginError> {
    let a: AdamArgs = section.extract()?;
    Ok(Box::new(spec(section, OptimizerKind::Adam, a.lr, a.weight_decay, a.eps, a.betas)?))
}

tril_core::register!(optimizer,
    id: "adam",
    doc: "Adam with L2 weight decay (torch.optim.Adam); no decay on biases and norms.",
    config: AdamArgs,
    build: build_adam);

fn build_adamw(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<OptimizerSpec>, PluginError> {
    let a: AdamWArgs = section.extract()?;
    Ok(Box::new(spec(section, OptimizerKind::AdamW, a.lr, a.weight_decay, a.eps, a.betas)?))
}

tril_core::register!(optimizer,
    id: "adamw",
    doc: "AdamW, decoupled weight decay (torch.optim.AdamW); no decay on biases and norms.",
    config: AdamWArgs,
    build: build_adamw);

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tril_core::config::{parse_yaml, Config};
    use tril_core::registry::{build_optimizer, Kind};

    /// Builds `alg.optimizer` through the registry, as the trainer does.
    fn build(yaml: &str) -> Result<Box<OptimizerSpec>, PluginError> {
        let config = Config::new(parse_yaml(yaml, Path::new("alg/ppo.yaml")).unwrap(), vec![]);
        build_optimizer(&config.section("alg.optimizer").unwrap(), &config)
    }

    #[test]
    fn tril_imdb_adamw() {
        let yaml =
            "alg:\n  optimizer:\n    id: adamw\n    args:\n      lr: 1e-5\n      weight_decay: 1e-6\n      eps: 1e-5\n";
        let spec = build(yaml).unwrap();
        assert_eq!(spec.kind, OptimizerKind::AdamW);
        assert_eq!((spec.lr, spec.weight_decay, spec.eps, spec.betas), (1e-5, 1e-6, 1e-5, (0.9, 0.999)));
        assert!(spec.no_decay.iter().any(|s| s == "LayerNorm.weight"));
    }

    #[test]
    fn torch_defaults() {
        let adam = build("alg:\n  optimizer:\n    id: adam\n").unwrap();
        assert_eq!(adam.kind, OptimizerKind::Adam);
        assert_eq!((adam.lr, adam.weight_decay, adam.eps, adam.betas), (1e-3, 0.0, 1e-8, (0.9, 0.999)));
        let adamw = build("alg:\n  optimizer:\n    id: adamw\n    args:\n      betas: [0.9, 0.95]\n").unwrap();
        assert_eq!((adamw.weight_decay, adamw.betas), (0.01, (0.9, 0.95)));
    }

    #[test]
    fn no_decay_is_trils_list_on_burn_names() {
        let spec = build("alg:\n  optimizer:\n    id: adam\n").unwrap();
        let exempt = |name: &str| spec.no_decay.iter().any(|s| name.contains(s.as_str()));
        for name in ["h.0.attn.c_attn.bias", "ln_f.beta", "embeddings.LayerNorm.weight"] {
            assert!(exempt(name), "{name}");
        }
        // TRIL decays GPT-2's layer-norm weights (HF `ln_1.weight` matches none of its names).
        for name in ["h.0.attn.c_attn.weight", "wte.weight", "lm_head.weight", "h.3.ln_1.gamma"] {
            assert!(!exempt(name), "{name}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("lr: 0", "alg.optimizer.args.lr: expected a finite learning rate > 0, found 0"),
            ("eps: -1e-8", "alg.optimizer.args.eps"),
            ("weight_decay: -0.1", "alg.optimizer.args.weight_decay"),
            ("betas: [0.9, 1.0]", "alg.optimizer.args.betas: expected two decay rates"),
            ("lr: fast", "alg.optimizer.args.lr"),
            ("betas: [0.9]", "alg.optimizer.args.betas"),
            ("learning_rate: 1e-5", "alg.optimizer.args.learning_rate: unknown key"),
        ];
        for (arg, want) in cases {
            let err = build(&format!("alg:\n  optimizer:\n    id: adamw\n    args:\n      {arg}\n")).err().unwrap();
            let err = err.to_string();
            assert!(err.contains(want) && err.contains("alg/ppo.yaml:5"), "{arg}: {err}");
        }
    }

    #[test]
    fn ids_are_registered() {
        let ids: Vec<&str> = Kind::Optimizer.list().iter().map(|l| l.id).collect();
        for id in ["adam", "adamw"] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
    }
}
