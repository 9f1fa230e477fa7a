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
//! | `rouge` | [`rouge`]: `lexical/rouge_{rouge1,rouge2,rougeL,rougeLsum}` |
//! | `bleu` | [`bleu`]: `lexical/bleu` |
//! | `meteor` | [`meteor`]: `lexical/meteor` |
//! | `cider` | [`cider`]: `lexical/cider` |
//! | `bert_score` | [`bert_score`]: `semantic/bert_score` (per-sample F1, mean); also a reward |
//!
//! The lexical metrics also back the lexical rewards (`meteor`, `rouge`, `bleu`,
//! `spider` without SPICE, `common_gen_concept_cover`), registered in
//! [`lexical_rewards`] because `tril-rewards` sits below this crate.
//!
//! Errors: [`MetricError`], the crate's one error type; plugin methods return it boxed.
//!
//! ```
//! let out = tril_metrics::diversity::diversity(&["a b a".to_string()], 100);
//! assert_eq!(out["diversity_metrics/vocab_size-1"].corpus, 2.0);
//! ```
#![deny(missing_docs)]

pub mod bert_score;
pub mod bleu;
pub mod cider;
pub mod diversity;
pub mod error;
pub mod lexical_rewards;
pub mod meteor;
pub mod nltk_tokenize;
pub mod perplexity;
pub mod porter;
pub mod reward_metrics;
pub mod rouge;

pub use error::{MetricError, Result};
