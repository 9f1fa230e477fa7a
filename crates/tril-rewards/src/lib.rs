//! # tril-rewards
//!
//! Reward functions, registered with `tril_core::register!(reward_fn, ...)` and
//! implementing [`tril_core::plugin::RewardFn`]. Implementations (`learned_reward`,
//! rule-based rewards, ensembles, metric rewards) arrive with the issues that use them.
#![deny(missing_docs)]
