//! Training sparse autoencoders on a model's activations, on the CPU, with hand-written
//! gradients that exploit sparsity.
//!
//! * `source`: `TokenSource`, where token sequences come from (in memory, text files)
//! * `store`: the activation store (several hooks from one forward pass, seeded shuffle buffer)
//!   and `BatchSource`, what the training loop reads batches from
//! * `disk`: the activation store on disk (`disk::cache` writes float16 shards once;
//!   `DiskBatches` reads them, memory-mapped, for any number of epochs)
//! * `config`: architectures (TopK, BatchTopK, JumpReLU, ReLU + L1) and optimiser settings
//! * `params`: parameter layout and initialisation, conversion to a `Sae`
//! * `select`: which latents are active (TopK, BatchTopK, thresholds) as sparse rows
//! * `kernels`: dot / axpy with a fixed summation order, dense matmul via `gemm`
//! * `adam`: Adam, applied row by row
//! * `trainer`: one SAE's step: forward, sparse backward and update
//! * `checkpoint`: atomic checkpoints for bit-exact resume
//! * `run`: the training loop (store → trainers, progress bar, JSONL log, checkpoints, saving)
//!
//! Seeded streams (initial weights, buffer shuffles) come from `crate::rng`.

pub mod adam;
pub mod checkpoint;
pub mod config;
pub mod disk;
pub mod kernels;
pub mod params;
pub mod run;
pub mod select;
pub mod source;
pub mod store;
pub mod trainer;

pub use config::{ArchConfig, BDecInit, Backward, TrainConfig};
pub use disk::{DiskBatches, DiskStore, StoreDtype};
pub use params::Params;
pub use run::{train, train_on, RunOptions, RunSummary};
pub use source::{text_file_source, TokenSource, VecSource};
pub use store::{ActivationStore, BatchSource, StoreConfig, StoreState};
pub use trainer::{Grads, Scratch, StepStats, Trainer};
