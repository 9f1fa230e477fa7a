//! # tril-algorithms
//!
//! Training algorithms, one file each, laid out by family, all registered with
//! [`tril_core::register!`] beside their code. Every loop is generic over
//! `B: AutodiffBackend`; `tril_core::backend::train` picks the backend from the config's
//! `device` and `precision` ([`trainer::run_on_target`]).
//!
//! What every loop shares (control flow is never shared, R2; these are the pieces):
//! - [`settings`]: the loop settings every algorithm reads from `alg.args`
//!   ([`settings::LoopSettings`]) and the run preamble (empty-split checks) they all use.
//! - [`trainer`]: the optimizer with TRIL's parameter groups ([`trainer::Optim`]), exact
//!   module/optimizer/RNG state for `--resume`, and [`trainer::Run`], a loop's body once the
//!   backend is known.
//! - [`guard`]: the check every loop runs before applying an update (non-finite loss
//!   terms, gradient norms, rewards and weights; divergence), from the root `guard:` section.
//! - [`checkpoint`]: checkpoint manifests (sha256 of every file, verified on `--resume`,
//!   falling back past a damaged one) and `checkpoint.save_total_limit`.
//! - [`evaluation`]: generation on the evaluation splits, metrics and prediction logs.
//! - [`over_optimization`]: proxy reward, gold reward and KL from the initial policy at
//!   every evaluation of the on-policy loops, and their plots.
//! - [`optimizers`] (`adam`, `adamw`) and [`schedulers`] (`linear`, `cosine`, `constant`).
//!
//! The families:
//! - [`onpolicy`]: the on-policy spine (actor-critic module, rollouts, checkpoint state) and
//!   everything on PPO's loop: [`onpolicy::ppo`] (args, plan, losses), [`onpolicy::ppo_run`]
//!   (the loop, with roll-in and a trained reward as strategies), the roll-in family
//!   ([`onpolicy::rollin`], [`onpolicy::ppo_pp`], [`onpolicy::aggrevated`],
//!   [`onpolicy::lols`], [`onpolicy::d2lols`]), [`onpolicy::gail`], the policies
//!   ([`onpolicy::policies`]) and the KL controllers ([`onpolicy::kl_controller`]).
//! - [`group`]: GRPO ([`group::grpo`]), GSPO ([`group::gspo`]), RLOO ([`group::rloo`]) and
//!   REINFORCE++ ([`group::reinforce_pp`]) on one group loop ([`group::group_run`]).
//! - [`offline`]: the offline loop and its algorithms: DPO ([`offline::dpo`],
//!   [`offline::dpo_run`]), KTO ([`offline::kto`], [`offline::kto_run`]), reward models
//!   ([`offline::reward_model`]), behaviour cloning ([`offline::bc`]), offline IPS
//!   ([`offline::offline_ips`]) and the reference log-prob cache ([`offline::logp`]).
//!
//! ```
//! use tril_algorithms::schedulers::Linear;
//! use tril_core::plugin::LrSchedule;
//! let linear = Linear { total_iters: 50 }; // TRIL's IMDB schedule
//! assert_eq!(linear.factor(25), 0.5);
//! ```
#![deny(missing_docs)]

pub use error::{AlgorithmError, Result};

pub mod best_of_n;
pub mod checkpoint;
pub mod error;
pub mod evaluation;
pub mod group;
pub mod guard;
pub mod lora;
pub mod offline;
pub mod onpolicy;
pub mod optimizers;
pub mod over_optimization;
pub mod schedulers;
pub mod settings;
#[cfg(test)]
mod test_util;
pub mod trainer;
mod validate;
