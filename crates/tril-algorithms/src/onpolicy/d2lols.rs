//! D2LOLS (`alg=d2lols`, TRIL's `d2lols`, reference/tril.md §3.7): LOLS with a
//! deterministic switch. Iterations before `tau` are AggreVaTeD against the guide critic
//! (the policy imitates the guide's cost-to-go), later ones PPO++ with the policy's critic:
//!
//! ```tex
//! \text{mode}_n = \text{aggrevate if } n < \tau \text{ else ppo\_pp}, \qquad n = 0, 1, \dots
//! ```
//! (`n` counts completed iterations, as TRIL's; tril's logs number iterations from 1, so
//! the first PPO++ iteration is logged as iteration `tau + 1`). TRIL's `tau`: 20 of 50
//! iterations on IMDB, 100 of 500 on CommonGen, 200 of 1000 on TL;DR.
//!
//! # Deviations from TRIL
//! As LOLS (see [`crate::onpolicy::lols`]).

use crate::onpolicy::lols::{aggrevate_with_guide_critic, require_guide_critic};
use crate::onpolicy::policies::AlgType;
use crate::onpolicy::ppo::PpoArgs;
use crate::onpolicy::ppo_run::Ppo;
use crate::onpolicy::rollin::{IterationPlan, Mode, Schedule};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{Algorithm, BuildCtx, PluginError};

/// D2LOLS's key in `alg.args`, beside PPO's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct D2lolsArgs {
    /// Completed iterations before the switch to PPO++.
    pub tau: usize,
}

impl Ranges for D2lolsArgs {
    /// `tau` is any count of iterations (0: PPO++ from the first iteration).
    fn check_ranges(&self, _: &Checker<'_>) -> tril_core::Result<()> {
        Ok(())
    }
}

struct D2lols {
    tau: usize,
    ppo_pp: IterationPlan,
    aggrevate: IterationPlan,
}

impl Schedule for D2lols {
    fn plan(&mut self, iteration: usize, _rng: &mut ChaCha8Rng) -> IterationPlan {
        // `iteration` is 1-based: `iteration - 1` iterations are complete.
        if iteration > self.tau {
            self.ppo_pp
        } else {
            self.aggrevate
        }
    }
}

fn build(_args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let (args, d2): (PpoArgs, D2lolsArgs) = crate::trainer::extract_split(ctx.config, "alg.args", &["tau"])?;
    let ppo = Ppo::from_config(ctx.config, "d2lols", args, false, true)?;
    Ok(Box::new(ppo.with_rollin(AlgType::D2lols, |guide| {
        require_guide_critic("d2lols", guide)?;
        Ok(Box::new(D2lols {
            tau: d2.tau,
            ppo_pp: IterationPlan::with_policy_critic(Mode::PpoPp, &guide.beta),
            aggrevate: aggrevate_with_guide_critic(guide),
        }))
    })?))
}

tril_core::register!(algorithm,
    id: "d2lols",
    doc: "D2LOLS: AggreVaTeD against a guide critic for the first tau iterations, then PPO++ (TRIL's d2lols).",
    config: D2lolsArgs,
    check: |s| crate::trainer::split_section::<PpoArgs, D2lolsArgs>(s, &["tau"]).map(|_| ()),
    build: build);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onpolicy::policies::Beta;
    use crate::onpolicy::rollin::ValueFn;
    use rand::SeedableRng;

    #[test]
    fn switches_after_tau_completed_iterations() {
        let beta = Beta::Scalar(0.8);
        let aggrevate = IterationPlan { mode: Some(Mode::Aggrevate), beta: 0.8, value_fn: ValueFn::Guide };
        let mut d = D2lols { tau: 2, ppo_pp: IterationPlan::with_policy_critic(Mode::PpoPp, &beta), aggrevate };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let modes: Vec<Option<Mode>> = (1..=4).map(|i| d.plan(i, &mut rng).mode).collect();
        assert_eq!(modes, vec![Some(Mode::Aggrevate), Some(Mode::Aggrevate), Some(Mode::PpoPp), Some(Mode::PpoPp)]);
        assert_eq!(d.plan(1, &mut rng).value_fn, ValueFn::Guide);
        assert_eq!(d.plan(3, &mut rng).value_fn, ValueFn::Policy);
    }
}
