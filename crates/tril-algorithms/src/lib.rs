//! # tril-algorithms
//!
//! Training algorithms, one file each, and the small numeric plugins they share,
//! all registered with [`tril_core::register!`] beside their code:
//!
//! - [`kl_controller`]: KL-penalty coefficient controllers (`fixedklcontroller`,
//!   `klcontroller`, `scaledklcontroller`) implementing [`tril_core::plugin::KlController`].
//! - [`schedulers`]: learning-rate schedules (`linear`, `cosine`, `constant`, each with
//!   optional warm-up) implementing [`tril_core::plugin::LrSchedule`].
//! - [`optimizers`]: `adam` and `adamw`, built into a [`tril_core::plugin::OptimizerSpec`].
//! - [`policies`]: `actor_critic` and `actor_critic_shared`, built into a
//!   [`tril_core::plugin::PolicySpec`].
//! - [`onpolicy`]: the on-policy spine (actor-critic module, rollouts, evaluation helpers).
//! - [`ppo`]: PPO's typed arguments, plan and pure loss functions; [`ppo_run`]: the
//!   registered `ppo` algorithm (its training loop).
//! - [`logp`]: per-token response log-probs and the uid-keyed reference cache that
//!   `tril logp` writes; [`offline_ips`]: the registered `offline_ips` algorithm
//!   (reward-weighted NLL with clipped per-token importance weights, from parquet).
//! - [`trainer`]: what every loop shares (backend, optimizer, exact module/optimizer/RNG
//!   state for `--resume`).
//! - [`offline`]: the offline loop `dpo`, `kto` and `reward_model` share (tokenization with
//!   truncation, padded batches, completion log-probs, epochs of accumulated, clipped steps).
//! - [`dpo`]: DPO's typed arguments and pure losses (sigmoid/cDPO, IPO, hinge, robust),
//!   plus per-sequence log-probs; [`dpo_run`]: the registered `dpo` algorithm.
//! - [`kto`]: KTO's typed arguments, KL reference point and pure loss; [`kto_run`]: the
//!   registered `kto` algorithm.
//! - [`reward_model`]: the registered `reward_model` algorithm (Bradley-Terry or
//!   classification) and its pure losses; its output loads in `learned_reward`.
//! - [`grpo`]: GRPO's typed arguments, group-relative advantages and the clipped loss
//!   with its four aggregations (`grpo`, `bnpo`, `dr_grpo`, `dapo`); the registered `grpo`.
//! - [`gspo`]: GSPO's sequence-level (and GSPO-token) clipped loss on GRPO's pieces; the
//!   registered `gspo`.
//! - [`group`]: what `grpo` and `gspo` share besides the loop: loop settings, the
//!   objective trait, the derived plan and pure rollout helpers.
//! - [`group_run`]: the training loop `grpo` and `gspo` share (generate G completions per
//!   prompt, score, group advantages, clipped updates), parameterised by the loss.
//! - [`bc`]: behaviour cloning / SFT (`bc`): token-level NLL of the task's references
//!   given the prompt, evaluated with the task's metrics; writes an HF policy directory.
//! - [`evaluation`]: generation on the evaluation splits, metrics and prediction logs.
//! - [`rollin`]: roll-in / roll-out (mixing probability, prefix lengths, forced prefixes,
//!   per-segment masks) shared by [`ppo_pp`] (PPO++), [`aggrevated`] (AggreVaTeD),
//!   [`lols`] (LOLS) and [`d2lols`] (D2LOLS), all on PPO's loop.
//! - [`gail`]: GAIL on PPO's loop: a GPT-2 discriminator trained each iteration on the
//!   policy's vs the task's reference texts gives the terminal reward.
//!
//! ```
//! use tril_algorithms::schedulers::Linear;
//! use tril_core::plugin::LrSchedule;
//! let linear = Linear { total_iters: 50 }; // TRIL's IMDB schedule
//! assert_eq!(linear.factor(25), 0.5);
//! ```
#![deny(missing_docs)]

pub mod aggrevated;
pub mod bc;
pub mod d2lols;
pub mod dpo;
pub mod dpo_run;
pub mod evaluation;
pub mod gail;
pub mod group;
pub mod group_run;
pub mod grpo;
pub mod gspo;
pub mod kl_controller;
pub mod kto;
pub mod kto_run;
pub mod logp;
pub mod lols;
pub mod offline;
pub mod offline_ips;
pub mod onpolicy;
pub mod optimizers;
pub mod policies;
pub mod ppo;
pub mod ppo_pp;
pub mod ppo_run;
pub mod reward_model;
pub mod rollin;
pub mod schedulers;
#[cfg(test)]
mod test_util;
pub mod trainer;
mod validate;
