//! LOLS (`alg=lols`; Chang et al. 2015, "Learning to Search Better than Your Teacher", as
//! TRIL's `lols`, reference/tril.md §3.6): each iteration is PPO++ with probability `tau`,
//! else AggreVaTeD trained against a separate guide critic.
//!
//! ```tex
//! \text{mode}_n = \begin{cases} \text{ppo\_pp (policy critic, } \beta_{ppo\_pp}) & u_n < \tau \\
//!                               \text{aggrevate (guide critic, } \beta_{aggrevate}) & \text{otherwise} \end{cases}
//! \qquad u_n \sim \mathcal{U}[0, 1)
//! ```
//! Needs `alg.policy.args.create_guide_critic: true`; `beta` may be one number or
//! `{aggrevate: .., ppo_pp: ..}`.
//!
//! # Deviations from TRIL
//! The AggreVaTeD iterations use AggreVaTeD's masks (policy on its prefix, the guide
//! critic on the guide's suffix); TRIL's method resolution gives them PPO++'s instead
//! (see [`crate::onpolicy::rollin`]). The mode draw comes from the run's seeded stream.

use crate::onpolicy::policies::AlgType;
use crate::onpolicy::policies::GuideArgs;
use crate::onpolicy::ppo::PpoArgs;
use crate::onpolicy::ppo_run::Ppo;
use crate::onpolicy::rollin::{IterationPlan, Mode, Schedule, ValueFn};
use crate::AlgorithmError;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{Algorithm, BuildCtx, PluginError};

/// LOLS's key in `alg.args`, beside PPO's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LolsArgs {
    /// Probability of a PPO++ iteration (TRIL: 0.8).
    pub tau: f64,
}

impl Ranges for LolsArgs {
    /// `tau` is a probability, in [0, 1].
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.probability("tau", self.tau)
    }
}

/// The plan of an AggreVaTeD iteration trained against the guide critic.
pub(crate) fn aggrevate_with_guide_critic(guide: &GuideArgs) -> IterationPlan {
    IterationPlan { mode: Some(Mode::Aggrevate), beta: guide.beta.for_mode(Mode::Aggrevate), value_fn: ValueFn::Guide }
}

/// Refuses a mixed algorithm without its guide critic.
pub(crate) fn require_guide_critic(id: &str, guide: &GuideArgs) -> Result<(), PluginError> {
    if guide.create_guide_critic {
        Ok(())
    } else {
        let message = format!("{id} trains a guide critic in its AggreVaTeD iterations; set it to true");
        Err(AlgorithmError::config("alg.policy.args.create_guide_critic", message).into())
    }
}

struct Lols {
    tau: f64,
    ppo_pp: IterationPlan,
    aggrevate: IterationPlan,
}

impl Schedule for Lols {
    fn plan(&mut self, _iteration: usize, rng: &mut ChaCha8Rng) -> IterationPlan {
        if rng.random_bool(self.tau) {
            self.ppo_pp
        } else {
            self.aggrevate
        }
    }
}

fn build(_args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let (args, lols): (PpoArgs, LolsArgs) = crate::trainer::extract_split(ctx.config, "alg.args", &["tau"])?;
    if !(0.0..=1.0).contains(&lols.tau) {
        let message = format!("{} is not a probability in [0, 1]", lols.tau);
        return Err(AlgorithmError::config("alg.args.tau", message).into());
    }
    let ppo = Ppo::from_config(ctx.config, "lols", args, false, true)?;
    Ok(Box::new(ppo.with_rollin(AlgType::Lols, |guide| {
        require_guide_critic("lols", guide)?;
        Ok(Box::new(Lols {
            tau: lols.tau,
            ppo_pp: IterationPlan::with_policy_critic(Mode::PpoPp, &guide.beta),
            aggrevate: aggrevate_with_guide_critic(guide),
        }))
    })?))
}

tril_core::register!(algorithm,
    id: "lols",
    doc: "LOLS: PPO++ with probability tau, else AggreVaTeD against a guide critic (TRIL's lols).",
    config: LolsArgs,
    check: |s| crate::trainer::split_section::<PpoArgs, LolsArgs>(s, &["tau"]).map(|_| ()),
    build: build);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onpolicy::policies::Beta;
    use rand::SeedableRng;

    #[test]
    fn mode_frequency_follows_tau() {
        let beta = Beta::PerMode { aggrevate: 0.5, ppo_pp: 0.9 };
        let guide = GuideArgs {
            guide_model_name: "g".into(),
            alg_type: crate::onpolicy::policies::AlgType::Lols,
            beta,
            guide_gen_kwargs: serde_json::from_str(r#"{"max_new_tokens": 4}"#).unwrap(),
            create_guide_critic: true,
        };
        let mut lols = Lols {
            tau: 0.8,
            ppo_pp: IterationPlan::with_policy_critic(Mode::PpoPp, &beta),
            aggrevate: aggrevate_with_guide_critic(&guide),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let plans: Vec<IterationPlan> = (1..=5000).map(|i| lols.plan(i, &mut rng)).collect();
        let ppo_pp = plans.iter().filter(|p| p.mode == Some(Mode::PpoPp)).count() as f64 / 5000.0;
        assert!((ppo_pp - 0.8).abs() < 0.02, "{ppo_pp}");
        for p in &plans {
            match p.mode {
                Some(Mode::PpoPp) => assert_eq!((p.beta, p.value_fn), (0.9, ValueFn::Policy)),
                _ => assert_eq!((p.beta, p.value_fn), (0.5, ValueFn::Guide)),
            }
        }
        assert!(require_guide_critic("lols", &GuideArgs { create_guide_critic: false, ..guide })
            .unwrap_err()
            .to_string()
            .contains("create_guide_critic"));
    }
}
