//! # tril-tasks
//!
//! Tasks: datasets of prompts and references, registered with
//! `tril_core::register!(task, ...)` and implementing [`tril_core::plugin::Task`].
//! The task implementations (`synthetic`, `imdb`, `tldr`, `commongen`, preference data)
//! arrive with the issues that use them; this crate is linked by the `tril` binary so
//! that their registrations are collected.
#![deny(missing_docs)]
