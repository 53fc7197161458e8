//! Entity datasets, the questions asked about them, answer matching, and known / unknown labels
//! from the model's own answers (the paper's section 2 and its code's `get_known_unknown_splits`).
//!
//! * `dataset`: JSONL entity tables (data/entities/), loaded with per-line error reports
//! * `questions`: the one table of attributes, prompts and answer kinds
//! * `matching`, `refusal_lists`: judging a completion as correct / refusal / error
//! * `label`: asking the questions (greedy, sampled, likelihood modes)
//! * `label_set`: a labeling run's outputs (or the committed data/labels/) read back as typed values
//! * `record_log`: the resumable record file (one JSONL line per finished question)
//! * `decide`: entity classes, splits and confound controls
//! * `config`: what a labeling run is (`RunConfig`) and where it writes
//! * `run`, `summary`: the labeling run and its report

pub mod chance;
pub mod config;
pub mod dataset;
pub mod decide;
pub mod label;
pub mod label_set;
pub mod matching;
pub mod questions;
pub mod record_log;
pub mod refusal_lists;
pub mod rule;
pub mod run;
pub mod summary;

pub use dataset::Entity;
pub use questions::EntityType;
