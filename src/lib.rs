//! knowlens: find, measure and steer the directions by which a language model knows whether it
//! knows something.
//!
//! * `model`: loading GGUF / Hugging Face checkpoints and the hooked forward pass
//! * `hooks`: TransformerLens-named hook points, captures and interventions
//! * `tokenizer`: tokenizers identical to the references, and chat templates
//! * `batch`: left-padded batches with per-row positions
//! * `fetch`: named models fetched into a cache outside the repository
//! * `gguf`: GGUF headers read defensively (model loader and tokenizer)
//! * `fsio`: atomic file writes (temporary file, sync, rename)
//! * `entities`: entity datasets, questions, answer matching and known / unknown labels
//! * `progress`: progress events from long runs (drawn by the CLI, silent elsewhere)
//! * `report`: charts and tables
//! * `rng`: seeded randomness fixed by its definition (SplitMix64), shared by corpus order and SAE training
//! * `stats`: AUROC with bootstrap intervals, Wilson intervals, Welch's t, probes
//! * `sae`: sparse autoencoders (Gemma Scope, Gemma Scope 2, SAELens) and their latents
//! * `discover`: the latent-discovery experiment (separation scores, held-out tests, baselines, detectors)
//! * `causal`: the causal experiments (steering, refusals, attention to the entity, patching)
//! * `verdict`: a claim's calibrated verdict (selection, null rate, positive control, broken outputs)
//! * `reproduce`: the whole paper as one resumable pipeline, with a verdict per claim
//! * `corpus`: the text for training SAEs, fetched, cleaned, deduplicated and tokenized

pub mod batch;
pub mod causal;
pub mod corpus;
pub mod discover;
pub mod entities;
pub mod fetch;
pub mod fsio;
pub mod gguf;
pub mod hooks;
pub mod model;
mod names;
pub mod progress;
pub mod report;
pub mod reproduce;
pub mod rng;
pub mod sae;
pub mod stats;
pub mod tokenizer;
pub mod verdict;

pub use batch::{Batch, EntityBatch, Layout};
pub use hooks::{ActivationCache, ActivationEdit, HookPoint, HookSpec, Intervention, LogitsAt, Positions};
pub use model::{ForwardInput, ForwardOutput, Model, Precision};
pub use sae::Sae;
