//! knowlens: find, measure and steer the directions by which a language model knows whether it
//! knows something.
//!
//! * `model`: loading GGUF / Hugging Face checkpoints and the hooked forward pass
//! * `hooks`: TransformerLens-named hook points, captures and interventions
//! * `tokenizer`: tokenizers identical to the references, and chat templates
//! * `batch`: left-padded batches with per-row positions
//! * `fetch`: named models fetched into a cache outside the repository
//! * `corpus`: the text for training SAEs, fetched, cleaned, deduplicated and tokenized

pub mod batch;
pub mod corpus;
pub mod fetch;
pub mod hooks;
pub mod model;
pub mod tokenizer;

pub use batch::Batch;
pub use hooks::{ActivationCache, HookPoint, HookSpec, Intervention, LogitsAt, Positions};
pub use model::{Model, Precision};
