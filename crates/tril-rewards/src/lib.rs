//! # tril-rewards
//!
//! Reward functions, registered with [`tril_core::register!`] and implementing
//! [`tril_core::plugin::RewardFn`] (text in, one scalar per sequence out).
//!
//! | id | what |
//! |---|---|
//! | `increasing_numbers` | [`increasing_numbers::IncreasingNumbers`], the synthetic task's rule reward |
//! | `learned_reward` | [`learned_reward::LearnedReward`], a classifier's label probability (TRIL's IMDB reward) |
//! | `ensemble` | [`ensemble_reward::EnsembleReward`], K reward models' raw rewards (or label probabilities) combined by `mean`, `wco` or `uwo` (Coste et al. 2024) |
//!
//! Pure building blocks (no plugin, no Burn):
//! - [`ensemble`]: combining K reward models' scores per sample by
//!   [`ensemble::EnsembleObjective`] `mean`, `wco` or `uwo` (Coste et al. 2024), and their spread.
//! - [`best_of_n`]: the unbiased best-of-n estimator of expected proxy and gold score for
//!   n = 1..=N, and `KL_bon(n)`.
//!
//! ```
//! use tril_rewards::increasing_numbers::increasing_numbers_reward;
//! assert_eq!(increasing_numbers_reward("3 4 5 6", 4), 1.0);
//! ```
#![deny(missing_docs)]

pub mod best_of_n;
pub mod classifier;
pub mod ensemble;
pub mod ensemble_reward;
pub mod error;
pub mod increasing_numbers;
pub mod learned_reward;

pub use error::RewardError;
