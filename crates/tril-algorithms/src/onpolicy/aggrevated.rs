//! AggreVaTeD (`alg=aggrevated`; Sun et al. 2017, as TRIL's `aggrevated`,
//! reference/tril.md §3.5): the policy rolls in, the guide rolls out, and the critic
//! learns the guide's cost-to-go.
//!
//! Each trajectory: the policy generates (`gen_kwargs`); with probability `beta` its first
//! `k ~ U{1, ..., L-1}` tokens are kept and the guide continues from there
//! (`guide_gen_kwargs`), else the guide generates everything. The policy loss covers the
//! policy's prefix `M`; the value loss covers the guide's suffix `¬M`, so the critic
//! estimates what the guide earns from a state, and GAE turns that into advantages for the
//! policy's tokens:
//!
//! ```tex
//! L = -\frac{\sum M m \min(r A, \operatorname{clip}(r, 1 \pm \epsilon) A)}{\sum M m}
//!     + c_v \frac{1}{2} \frac{\sum (1 - M) m \max((V - R)^2, (V^{clip} - R)^2)}{\sum (1 - M) m}
//! ```
//! With `beta = 1` (TRIL's TL;DR) every trajectory whose policy roll-in has at least two
//! tokens gets a prefix.
//!
//! # Deviations from TRIL
//! See [`crate::onpolicy::rollin`]. As TRIL, the KL penalty is logged but not in the reward
//! (`alg.args.kl_in_reward: false` by default).

use crate::onpolicy::policies::AlgType;
use crate::onpolicy::ppo::PpoArgs;
use crate::onpolicy::ppo_pp::always;
use crate::onpolicy::ppo_run::Ppo;
use crate::onpolicy::rollin::Mode;
use tril_core::config::Section;
use tril_core::plugin::{Algorithm, BuildCtx, PluginError};

fn build(_args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let args: PpoArgs = ctx.config.extract("alg.args")?;
    let ppo = Ppo::from_config(ctx.config, "aggrevated", args, false, true)?;
    Ok(Box::new(ppo.with_rollin(AlgType::Aggrevate, |guide| always(Mode::Aggrevate, guide))?))
}

tril_core::register!(algorithm,
    id: "aggrevated",
    doc: "AggreVaTeD: the policy rolls in, the guide rolls out; the critic learns the guide's cost-to-go (TRIL's aggrevated).",
    config: PpoArgs,
    build: build);
