//! # tril-rewards
//!
//! Reward functions, registered with [`tril_core::register!`] and implementing
//! [`tril_core::plugin::RewardFn`] (text in, one scalar per sequence out).
//!
//! | id | what |
//! |---|---|
//! | `increasing_numbers` | [`increasing_numbers::IncreasingNumbers`], the synthetic task's rule reward |
//! | `learned_reward` | [`learned_reward::LearnedReward`], a classifier's label probability (TRIL's IMDB reward) |
//!
//! ```
//! use tril_rewards::increasing_numbers::increasing_numbers_reward;
//! assert_eq!(increasing_numbers_reward("3 4 5 6", 4), 1.0);
//! ```
#![deny(missing_docs)]

pub mod classifier;
pub mod error;
pub mod increasing_numbers;
pub mod learned_reward;

pub use error::RewardError;
