//! Sparse autoencoders: loading them from the formats they are published in, encoding model
//! activations into latents exactly as SAELens does, and saving them for SAELens.
//!
//! * `autoencoder`: the `Sae` value, `encode` / `decode`, width checks against a model
//! * `arch`: the activation functions (ReLU, JumpReLU, TopK)
//! * `load`: `Sae::load`, which tells the formats apart
//! * `saelens`: SAELens directories (v6 and pre-6.0 configs), reading and writing
//! * `gemma_scope`: Gemma Scope `params.npz` and Gemma Scope 2 folders, hooks from paths
//! * `npy`: the NumPy `.npz` / `.npy` reader (stored and deflated archives)
//! * `eval`: SAELens's evaluation metrics (L0, explained variance, CE loss recovered, ...)
//! * `dashboard`: per-latent HTML dashboards (top contexts, density, logit effects)
//! * `steer`: editing one latent (clamp, add, scale) inside a forward pass or a generation
//! * `tensors`: named-tensor checks shared by the loaders (missing, mis-shaped, dtype)
//! * `train`: training SAEs (activation store, TopK / BatchTopK / JumpReLU / ReLU trainers, resume)

mod arch;
mod autoencoder;
pub mod dashboard;
pub mod eval;
mod gemma_scope;
mod load;
mod npy;
mod saelens;
pub mod steer;
mod tensors;
pub mod train;

pub use arch::Architecture;
pub use autoencoder::{Sae, SaeFormat};
pub use dashboard::{DashboardConfig, Dashboards, LatentSelection};
pub use eval::{EvalConfig, SaeEval};
pub use gemma_scope::{hook_from_gemma_scope_2, hook_from_path};
pub use steer::{LatentEdit, LatentOp};
