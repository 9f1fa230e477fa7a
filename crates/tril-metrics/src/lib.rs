//! # tril-metrics
//!
//! Evaluation metrics, registered with [`tril_core::register!`] and implementing
//! [`tril_core::plugin::Metric`]. Keys keep TRIL's `namespace/name` form.
//!
//! | id | keys |
//! |---|---|
//! | `diversity` | [`diversity`]: `diversity_metrics/{distinct,unique,vocab_size}-n`, `msttr-W`, lengths |
//! | `increasing_numbers` | [`reward_metrics`]: `synthetic/increasing_numbers` |
//! | `learned_reward` | [`reward_metrics`]: `semantic/learned_automodel_metric` |
//! | `causal_output_perplexity` | [`perplexity`]: `fluency_metrics/output_perplexity` |
//! | `causal_perplexity` | [`perplexity`]: `fluency_metrics/perplexity` (the policy on the references) |
//!
//! ```
//! let out = tril_metrics::diversity::diversity(&["a b a".to_string()], 100);
//! assert_eq!(out["diversity_metrics/vocab_size-1"].corpus, 2.0);
//! ```
#![deny(missing_docs)]

pub mod diversity;
pub mod perplexity;
pub mod reward_metrics;
