//! What a training run is: the architecture and its sparsity settings, the optimiser and its
//! schedule, initialisation. Serialisable, so a checkpoint can refuse to resume a different run.

use serde::{Deserialize, Serialize};

/// The SAE being trained and its sparsity mechanism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum ArchConfig {
    /// ReLU with an L1 penalty on the latents (weighted by decoder norms, which are 1 here),
    /// the coefficient ramped up linearly over `l1_warm_up_steps`.
    Standard { l1_coefficient: f32, l1_warm_up_steps: u64 },
    /// The k largest pre-activations of each row, then ReLU (Gao et al. 2024).
    TopK { k: usize },
    /// The k·n largest (ReLU'd) pre-activations of a batch of n rows; a running global threshold
    /// (exponential average of the smallest kept value, rate `threshold_lr`) becomes the
    /// JumpReLU threshold of the saved SAE.
    BatchTopK { k: usize, threshold_lr: f64 },
    /// JumpReLU with a trained threshold per latent: straight-through gradients with a
    /// rectangle kernel of width `bandwidth`, and an L0 penalty ("step" mode of SAELens).
    JumpRelu { l0_coefficient: f32, l0_warm_up_steps: u64, bandwidth: f32, init_threshold: f32 },
}

impl ArchConfig {
    pub fn name(&self) -> &'static str {
        match self {
            ArchConfig::Standard { .. } => "standard",
            ArchConfig::TopK { .. } => "topk",
            ArchConfig::BatchTopK { .. } => "batchtopk",
            ArchConfig::JumpRelu { .. } => "jumprelu",
        }
    }

    /// TopK and BatchTopK train dead latents with the AuxK loss.
    pub fn has_aux(&self) -> bool {
        matches!(self, ArchConfig::TopK { .. } | ArchConfig::BatchTopK { .. })
    }
}

/// How `b_dec` starts: at the geometric median (SAELens's default for standard SAEs) or the
/// mean of the first batch, or at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BDecInit {
    GeometricMedian,
    Mean,
    Zeros,
}

/// Whether the backward pass after the encoder uses the sparse kernels or dense matrix products.
/// `Auto` goes dense only when more than `DENSE_ABOVE` of the latents are active (a ReLU or
/// JumpReLU SAE early in training); TopK and BatchTopK are always sparse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backward {
    Auto,
    Sparse,
    Dense,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub d_in: usize,
    /// d_sae.
    pub width: usize,
    pub arch: ArchConfig,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Linear warm-up from lr/warmup_steps to lr.
    pub warmup_steps: u64,
    /// Linear decay to 0 over the last `decay_steps` steps.
    pub decay_steps: u64,
    pub total_steps: u64,
    /// AuxK coefficient (Gao et al.: 1/32) and k_aux (0: d_in / 2).
    pub aux_coefficient: f32,
    pub aux_k: usize,
    /// A latent that has not fired for this many tokens is dead (AuxK trains it; the progress
    /// bar reports the dead fraction).
    pub dead_tokens: u64,
    pub b_dec_init: BDecInit,
    /// Scale inputs so that their mean norm is sqrt(d_in) (SAELens "expected_average_only_in"),
    /// with the factor measured on the first batch and folded into the saved weights.
    pub normalize: bool,
    pub seed: u64,
    pub backward: Backward,
}

/// Above this fraction of active latents, `Backward::Auto` uses dense matrix products.
pub const DENSE_ABOVE: f64 = 0.03;

impl TrainConfig {
    /// SAELens-like defaults for a run of `total_steps`.
    pub fn new(d_in: usize, width: usize, arch: ArchConfig, total_steps: u64) -> Self {
        Self {
            d_in,
            width,
            arch,
            lr: 4e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 0,
            decay_steps: total_steps / 5,
            total_steps,
            aux_coefficient: 1.0 / 32.0,
            aux_k: 0,
            dead_tokens: 10_000_000,
            b_dec_init: BDecInit::GeometricMedian,
            normalize: true,
            seed: 0,
            backward: Backward::Auto,
        }
    }

    /// The learning rate of step `s` (0-based).
    pub fn lr_at(&self, s: u64) -> f32 {
        let mut f = 1.0f64;
        if self.warmup_steps > 0 && s < self.warmup_steps {
            f = f.min((s + 1) as f64 / self.warmup_steps as f64);
        }
        if self.decay_steps > 0 && s + self.decay_steps >= self.total_steps {
            f = f.min(self.total_steps.saturating_sub(s) as f64 / self.decay_steps as f64);
        }
        (self.lr as f64 * f) as f32
    }

    /// A sparsity coefficient ramped linearly over `warm` steps.
    pub fn ramp(coef: f32, warm: u64, s: u64) -> f32 {
        if warm == 0 || s >= warm {
            coef
        } else {
            (coef as f64 * (s + 1) as f64 / warm as f64) as f32
        }
    }

    pub fn k_aux(&self) -> usize {
        if self.aux_k > 0 {
            self.aux_k
        } else {
            (self.d_in / 2).max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_and_decays_linearly() {
        let mut c = TrainConfig::new(4, 8, ArchConfig::TopK { k: 2 }, 100);
        c.warmup_steps = 10;
        c.decay_steps = 20;
        assert!((c.lr_at(0) - 4e-5).abs() < 1e-9);
        assert_eq!(c.lr_at(50), 4e-4);
        assert!((c.lr_at(90) - 2e-4).abs() < 1e-9);
        assert!((c.lr_at(99) - 2e-5).abs() < 1e-9);
    }
}
