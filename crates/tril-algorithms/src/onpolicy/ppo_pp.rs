//! PPO++ (`alg=ppo_pp`; Chang et al. 2023, "Learning to Generate Better Than Your LLM";
//! reference/tril.md §3.4): PPO whose trajectories start from the guide.
//!
//! Each trajectory: the guide generates a continuation (`guide_gen_kwargs`); with
//! probability `beta` its first `k ~ U{1, ..., L-1}` tokens are kept as a roll-in and the
//! policy continues from there (`gen_kwargs`), else the policy generates everything. The
//! reward is the task's on the whole mixed sequence; the policy loss and the value loss
//! cover only the tokens the policy generated (`¬M`, see [`crate::onpolicy::rollin`]):
//!
//! ```tex
//! L = -\frac{\sum_{i,t} (1 - M_{i,t}) m_{i,t} \min(r_{i,t} A_{i,t}, \operatorname{clip}(r_{i,t}, 1 \pm \epsilon) A_{i,t})}
//!           {\sum_{i,t} (1 - M_{i,t}) m_{i,t}} + c_v L^V_{\neg M} + c_{tgt} L_{tgt}
//! ```
//! The guide is the frozen reference when `guide_model_name == model_name` (every TRIL
//! config), else a frozen model of its own on the policy's tokenizer.
//!
//! # Deviations from TRIL
//! See [`crate::onpolicy::rollin`] (the guide really generates; one seeded stream). As TRIL, the
//! KL penalty is logged but not in the reward (`alg.args.kl_in_reward: false`, the
//! default here; set it to `true` to add it).

use crate::onpolicy::policies::AlgType;
use crate::onpolicy::policies::GuideArgs;
use crate::onpolicy::ppo::PpoArgs;
use crate::onpolicy::ppo_run::Ppo;
use crate::onpolicy::rollin::{IterationPlan, Mode, Schedule};
use rand_chacha::ChaCha8Rng;
use tril_core::config::Section;
use tril_core::plugin::{Algorithm, BuildCtx, PluginError};

/// Every iteration is a PPO++ iteration with the policy's critic.
struct Always(IterationPlan);

impl Schedule for Always {
    fn plan(&mut self, _iteration: usize, _rng: &mut ChaCha8Rng) -> IterationPlan {
        self.0
    }
}

/// The schedule of an algorithm that is always in `mode` with the policy's critic
/// (PPO++, AggreVaTeD).
pub(crate) fn always(mode: Mode, guide: &GuideArgs) -> Result<Box<dyn Schedule>, PluginError> {
    Ok(Box::new(Always(IterationPlan::with_policy_critic(mode, &guide.beta))))
}

fn build(_args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let args: PpoArgs = ctx.config.extract("alg.args")?;
    let ppo = Ppo::from_config(ctx.config, "ppo_pp", args, false, true)?;
    Ok(Box::new(ppo.with_rollin(AlgType::PpoPp, |guide| always(Mode::PpoPp, guide))?))
}

tril_core::register!(algorithm,
    id: "ppo_pp",
    doc: "PPO++: the guide rolls in a prefix, the policy rolls out and learns from its own tokens (TRIL's ppo_pp).",
    config: PpoArgs,
    build: build);
