//! # tril-tasks
//!
//! Tasks: datasets of prompts and references, registered with
//! [`tril_core::register!`] and implementing [`tril_core::plugin::Task`].
//!
//! | id | what |
//! |---|---|
//! | `synthetic` | [`synthetic::Synthetic`]: counting prompts, the embedded default |
//! | `imdb` | [`imdb::Imdb`]: TRIL's IMDB continuation task from local CSV/JSONL |
//! | `tldr` | [`tldr::Tldr`]: TRIL's TL;DR summarization from local CSV/JSONL |
//! | `commongen` | [`commongen::CommonGen`]: TRIL's CommonGen from local JSONL |
//! | `preference` | [`preference::PreferenceTask`]: paired preferences from local CSV/JSONL (dpo, reward_model) |
//! | `unpaired_preference` | [`preference::UnpairedTask`]: labelled completions from local CSV/JSONL (kto) |
//! | `synthetic_preference` | [`synthetic_preference::SyntheticPreference`]: built-in counting pairs, no download |
//! | `text_classification` | [`text_classification::TextClassification`]: labelled texts (reward_model classifier) |
//!
//! ```
//! use tril_core::plugin::{Split, Task};
//! use tril_tasks::synthetic::{Synthetic, SyntheticConfig};
//! let task = Synthetic::new(SyntheticConfig { n_val: 4, ..Default::default() }).unwrap();
//! assert_eq!(task.samples(Split::Val).unwrap().len(), 4);
//! ```
#![deny(missing_docs)]

pub mod commongen;
pub mod error;
pub mod imdb;
pub mod preference;
pub mod rows;
pub mod synthetic;
pub mod synthetic_preference;
pub mod table;
pub mod text_classification;
pub mod tldr;

pub use error::TaskError;
