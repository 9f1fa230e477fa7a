//! # tril-tasks
//!
//! Tasks: datasets of prompts and references, registered with
//! [`tril_core::register!`] and implementing [`tril_core::plugin::Task`].
//!
//! | id | what |
//! |---|---|
//! | `synthetic` | [`synthetic::Synthetic`]: counting prompts, the embedded default |
//! | `imdb` | [`imdb::Imdb`]: TRIL's IMDB continuation task from CSV/JSONL/Parquet or `hub:` |
//! | `tldr` | [`tldr::Tldr`]: TRIL's TL;DR summarization from CSV/JSONL/Parquet or `hub:` |
//! | `commongen` | [`commongen::CommonGen`]: TRIL's CommonGen from JSONL/Parquet or `hub:` |
//! | `preference` | [`preference::PreferenceTask`]: paired preferences from files or `hub:` (dpo, reward_model) |
//! | `unpaired_preference` | [`preference::UnpairedTask`]: labelled completions from files or `hub:` (kto) |
//! | `synthetic_preference` | [`synthetic_preference::SyntheticPreference`]: built-in counting pairs, no download |
//! | `text_classification` | [`text_classification::TextClassification`]: labelled texts (reward_model classifier) |
//!
//! Every data-file key also takes a Hugging Face Hub dataset id, `hub:org/name` (see
//! [`hub_data`]): the split's parquet files are downloaded into the HF cache.
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
pub mod hub_data;
pub mod imdb;
pub mod preference;
pub mod rows;
pub mod synthetic;
pub mod synthetic_preference;
pub mod table;
pub mod text_classification;
pub mod tldr;

pub use error::TaskError;
