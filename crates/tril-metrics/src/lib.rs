//! # tril-metrics
//!
//! Evaluation metrics, registered with `tril_core::register!(metric, ...)` and
//! implementing [`tril_core::plugin::Metric`]. Implementations (`learned_reward`,
//! perplexities, rouge, bleu, meteor, cider, diversity) arrive with the issues that use them.
#![deny(missing_docs)]
