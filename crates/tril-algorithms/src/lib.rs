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
//! - [`ppo`]: PPO's typed arguments, plan and pure loss functions (the training loop
//!   lands with the PPO issue, so `ppo` is not registered as an algorithm yet).
//!
//! ```
//! use tril_algorithms::schedulers::Linear;
//! use tril_core::plugin::LrSchedule;
//! let linear = Linear { total_iters: 50 }; // TRIL's IMDB schedule
//! assert_eq!(linear.factor(25), 0.5);
//! ```
#![deny(missing_docs)]

pub mod kl_controller;
pub mod optimizers;
pub mod policies;
pub mod ppo;
pub mod schedulers;
mod validate;
