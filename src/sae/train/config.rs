//! What a training run is: the architecture and its sparsity settings, the optimiser and its
//! schedule, initialisation. Serialisable, so a checkpoint can refuse to resume a different run.

use anyhow::{bail, Result};
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
    /// Active latents per token of TopK / BatchTopK when not given.
    pub const DEFAULT_K: usize = 32;
    pub const DEFAULT_L1_COEFFICIENT: f32 = 5.0;
    pub const DEFAULT_L0_COEFFICIENT: f32 = 1.0;
    pub const DEFAULT_JUMPRELU_BANDWIDTH: f32 = 0.05;
    pub const DEFAULT_JUMPRELU_INIT_THRESHOLD: f32 = 0.01;
    pub const DEFAULT_TOPK_THRESHOLD_LR: f64 = 0.01;

    /// Errors (naming the setting) for sparsity settings that cannot train an SAE of `width`.
    pub fn validate(&self, width: usize) -> Result<()> {
        let finite_non_negative = |name: &str, v: f64| -> Result<()> {
            if !v.is_finite() || v < 0.0 {
                bail!("{name} must be a finite non-negative number, got {v}");
            }
            Ok(())
        };
        match *self {
            ArchConfig::TopK { k } | ArchConfig::BatchTopK { k, .. } if k == 0 || k > width => {
                bail!("k must be between 1 and the width ({width}), got {k}")
            }
            ArchConfig::BatchTopK { threshold_lr, .. } if !(threshold_lr > 0.0 && threshold_lr <= 1.0) => {
                bail!("the BatchTopK threshold rate must be in (0, 1], got {threshold_lr}")
            }
            ArchConfig::Standard { l1_coefficient, .. } => {
                finite_non_negative("the L1 coefficient", l1_coefficient as f64)?
            }
            ArchConfig::JumpRelu { l0_coefficient, bandwidth, init_threshold, .. } => {
                finite_non_negative("the L0 coefficient", l0_coefficient as f64)?;
                finite_non_negative("the JumpReLU initial threshold", init_threshold as f64)?;
                if !(bandwidth.is_finite() && bandwidth > 0.0) {
                    bail!("the JumpReLU bandwidth must be positive, got {bandwidth}");
                }
            }
            _ => {}
        }
        Ok(())
    }

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
/// Parsed from and displayed as `geometric-median`, `mean`, `zeros` (its serde names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BDecInit {
    GeometricMedian,
    Mean,
    Zeros,
}

crate::names::named_enum!(BDecInit, "b_dec initialisation", GeometricMedian => "geometric-median", Mean => "mean", Zeros => "zeros");

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
    /// Scale each input dimension by 1 / its standard deviation on the first batch instead (so
    /// that a few dimensions with very large values, as in Gemma's residual stream, do not own
    /// the loss); the factors are folded into the saved weights, which take raw activations.
    #[serde(default)]
    pub per_dim_scale: bool,
    pub seed: u64,
    pub backward: Backward,
}

/// Above this fraction of active latents, `Backward::Auto` uses dense matrix products.
pub const DENSE_ABOVE: f64 = 0.03;

impl TrainConfig {
    /// Number of latents when not given.
    pub const DEFAULT_WIDTH: usize = 4096;
    pub const DEFAULT_LR: f32 = 4e-4;
    pub const DEFAULT_AUX_COEFFICIENT: f32 = 1.0 / 32.0;
    pub const DEFAULT_DEAD_TOKENS: u64 = 10_000_000;

    /// SAELens-like defaults for a run of `total_steps`: Adam with lr 4e-4, β = (0.9, 0.999),
    /// ε = 1e-8; no warm-up; linear decay over the last fifth of the run; AuxK coefficient 1/32
    /// with k_aux = d_in / 2; dead after 10M tokens without firing; b_dec at the geometric
    /// median; inputs normalised; seed 0; the backward pass chosen automatically.
    ///
    /// `d_in` may be 0 while unknown (a training run sets it per hook from the model).
    pub fn new(d_in: usize, width: usize, arch: ArchConfig, total_steps: u64) -> Self {
        Self {
            d_in,
            width,
            arch,
            lr: Self::DEFAULT_LR,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 0,
            decay_steps: total_steps / 5,
            total_steps,
            aux_coefficient: Self::DEFAULT_AUX_COEFFICIENT,
            aux_k: 0,
            dead_tokens: Self::DEFAULT_DEAD_TOKENS,
            b_dec_init: BDecInit::GeometricMedian,
            normalize: true,
            per_dim_scale: false,
            seed: 0,
            backward: Backward::Auto,
        }
    }

    /// Scales the settings whose right size depends on the run's length (what `knowlens sae
    /// train` does unless they are given): the dead-latent window becomes a tenth of the run's
    /// tokens (at least one batch, at most `DEFAULT_DEAD_TOKENS`), so AuxK starts working within
    /// the run, and the learning rate warms up over the first twentieth of the steps (at most
    /// 1,000).
    pub fn scale_to_run(&mut self, batch_size: usize) {
        let tokens = self.total_steps.saturating_mul(batch_size as u64);
        self.dead_tokens = (tokens / 10).max(batch_size as u64).clamp(1, Self::DEFAULT_DEAD_TOKENS);
        self.warmup_steps = (self.total_steps / 20).min(1000);
    }

    /// Errors (naming the setting) for zero, negative, non-finite or inconsistent values.
    /// `d_in` = 0 passes (not yet known); `Trainer::new` requires it.
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 {
            bail!("width must be at least 1");
        }
        if self.total_steps == 0 {
            bail!("a run needs at least one step (total_steps is 0)");
        }
        self.arch.validate(self.width)?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("the learning rate must be positive, got {}", self.lr);
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                bail!("{name} must be in [0, 1), got {b}");
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            bail!("eps must be positive, got {}", self.eps);
        }
        if self.warmup_steps > self.total_steps {
            bail!("warm-up steps ({}) exceed the run's steps ({})", self.warmup_steps, self.total_steps);
        }
        if self.decay_steps > self.total_steps {
            bail!("decay steps ({}) exceed the run's steps ({})", self.decay_steps, self.total_steps);
        }
        if !(self.aux_coefficient.is_finite() && self.aux_coefficient >= 0.0) {
            bail!("the AuxK coefficient must be a finite non-negative number, got {}", self.aux_coefficient);
        }
        if self.aux_k > self.width {
            bail!("k_aux ({}) exceeds the width ({})", self.aux_k, self.width);
        }
        if self.dead_tokens == 0 {
            bail!("dead_tokens must be at least 1");
        }
        Ok(())
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

    #[test]
    fn dead_window_and_warm_up_scale_with_the_run() {
        let mut c = TrainConfig::new(4, 8, ArchConfig::TopK { k: 2 }, 250);
        c.scale_to_run(4096);
        assert_eq!((c.dead_tokens, c.warmup_steps), (102_400, 12));
        let mut long = TrainConfig::new(4, 8, ArchConfig::TopK { k: 2 }, 1_000_000);
        long.scale_to_run(4096);
        assert_eq!((long.dead_tokens, long.warmup_steps), (TrainConfig::DEFAULT_DEAD_TOKENS, 1000));
        let mut short = TrainConfig::new(4, 8, ArchConfig::TopK { k: 2 }, 3);
        short.scale_to_run(64);
        assert_eq!((short.dead_tokens, short.warmup_steps), (64, 0));
        short.validate().unwrap();
    }

    #[test]
    fn validation_names_the_bad_setting() {
        let ok = TrainConfig::new(0, 8, ArchConfig::TopK { k: 2 }, 100);
        ok.validate().unwrap();
        let err = |c: TrainConfig| c.validate().unwrap_err().to_string();
        assert!(err(TrainConfig::new(4, 8, ArchConfig::TopK { k: 9 }, 100))
            .contains("k must be between 1 and the width (8)"));
        assert!(err(TrainConfig::new(4, 8, ArchConfig::TopK { k: 0 }, 100)).contains("k must be"));
        assert!(err(TrainConfig::new(4, 0, ArchConfig::TopK { k: 1 }, 100)).contains("width"));
        assert!(err(TrainConfig::new(4, 8, ArchConfig::TopK { k: 2 }, 0)).contains("at least one step"));
        assert!(err(TrainConfig { lr: -1.0, ..ok.clone() }).contains("learning rate"));
        assert!(err(TrainConfig { warmup_steps: 101, ..ok.clone() }).contains("warm-up"));
        assert!(err(TrainConfig { decay_steps: 101, ..ok.clone() }).contains("decay"));
        let jr =
            ArchConfig::JumpRelu { l0_coefficient: 1.0, l0_warm_up_steps: 0, bandwidth: 0.0, init_threshold: 0.01 };
        assert!(err(TrainConfig::new(4, 8, jr, 10)).contains("bandwidth"));
        let st = ArchConfig::Standard { l1_coefficient: f32::NAN, l1_warm_up_steps: 0 };
        assert!(err(TrainConfig::new(4, 8, st, 10)).contains("L1"));
    }

    #[test]
    fn b_dec_init_names_round_trip_and_match_serde() {
        for b in BDecInit::ALL {
            assert_eq!(b.to_string().parse::<BDecInit>().unwrap(), b);
            assert_eq!(serde_json::to_value(b).unwrap(), serde_json::Value::String(b.to_string()));
        }
        assert!("median".parse::<BDecInit>().unwrap_err().to_string().contains("geometric-median, mean, zeros"));
    }
}
