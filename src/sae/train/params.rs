//! The trained parameters, laid out for the training kernels: the encoder is kept transposed
//! (`w_enc_t` [d_sae, d_in], row j = latent j's encoder vector) so that both the encoder and the
//! decoder gradients of a latent are contiguous rows. `to_sae` turns them into a `Sae`.

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::config::{ArchConfig, BDecInit, TrainConfig};
use crate::hooks::HookPoint;
use crate::rng::{SplitMix64, TAG_INIT};
use crate::sae::{Architecture, Sae};

#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub d_in: usize,
    pub d_sae: usize,
    /// [d_sae, d_in]
    pub w_enc_t: Vec<f32>,
    /// [d_sae, d_in], unit rows.
    pub w_dec: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub b_dec: Vec<f32>,
    /// JumpReLU only: the threshold parameter t [d_sae]; the threshold is relu(t), as SAELens.
    pub threshold: Vec<f32>,
}

impl Params {
    /// Decoder rows in random directions with unit norm, the encoder its transpose (Gao et al.),
    /// zero biases.
    pub fn init(cfg: &TrainConfig) -> Self {
        let (d, m) = (cfg.d_in, cfg.width);
        let mut rng = SplitMix64::derive(cfg.seed, TAG_INIT, 0);
        let mut w_dec: Vec<f32> = (0..d * m).map(|_| rng.normal() as f32).collect();
        for row in w_dec.chunks_mut(d) {
            normalize(row);
        }
        let threshold = match cfg.arch {
            ArchConfig::JumpRelu { init_threshold, .. } => vec![init_threshold; m],
            _ => Vec::new(),
        };
        Self { d_in: d, d_sae: m, w_enc_t: w_dec.clone(), w_dec, b_enc: vec![0.0; m], b_dec: vec![0.0; d], threshold }
    }

    /// The SAE these parameters make, with the input scale folded in: trained on `scale · x`,
    /// it takes raw activations (W_enc·scale, W_dec/scale, b_dec/scale; latents unchanged).
    pub fn to_sae(&self, arch: &ArchConfig, topk_threshold: f64, scale: f32, hook: HookPoint) -> Result<Sae> {
        self.to_sae_scaled(arch, topk_threshold, &vec![scale; self.d_in], hook)
    }

    /// `to_sae` for inputs scaled per dimension (`x'_i = s_i x_i`): W_enc[i, ·]·s_i,
    /// W_dec[·, i]/s_i, b_dec_i/s_i, so that `(x − b_dec)·W_enc` and the reconstruction of raw
    /// activations equal the trained ones. A plain SAELens SAE: nothing new to load.
    pub fn to_sae_scaled(
        &self,
        arch: &ArchConfig,
        topk_threshold: f64,
        scales: &[f32],
        hook: HookPoint,
    ) -> Result<Sae> {
        let (d, m) = (self.d_in, self.d_sae);
        anyhow::ensure!(scales.len() == d, "{} input scales for {d} dimensions", scales.len());
        let mut w_enc = vec![0f32; d * m];
        for j in 0..m {
            for i in 0..d {
                w_enc[i * m + j] = self.w_enc_t[j * d + i] * scales[i];
            }
        }
        let inv: Vec<f32> = scales.iter().map(|s| 1.0 / s).collect();
        let w_dec: Vec<f32> = self.w_dec.chunks(d).flat_map(|row| row.iter().zip(&inv).map(|(v, s)| v * s)).collect();
        let b_dec: Vec<f32> = self.b_dec.iter().zip(&inv).map(|(v, s)| v * s).collect();
        let dev = Device::Cpu;
        let architecture = match arch {
            ArchConfig::Standard { .. } => Architecture::Standard,
            ArchConfig::TopK { k } => Architecture::TopK { k: *k, rescale_acts_by_decoder_norm: false },
            ArchConfig::BatchTopK { .. } => Architecture::batch_topk(topk_threshold as f32, m)?,
            ArchConfig::JumpRelu { .. } => {
                let th: Vec<f32> = self.threshold.iter().map(|t| t.max(0.0)).collect();
                Architecture::JumpRelu { threshold: Tensor::from_vec(th, m, &dev)? }
            }
        };
        Sae::new(
            Tensor::from_vec(w_enc, (d, m), &dev)?,
            Tensor::from_vec(w_dec, (m, d), &dev)?,
            Tensor::from_vec(self.b_enc.clone(), m, &dev)?,
            Tensor::from_vec(b_dec, d, &dev)?,
            architecture,
            true,
            hook,
        )
    }
}

/// Scales a row to unit norm (left alone if it is zero).
pub fn normalize(row: &mut [f32]) {
    let n = super::kernels::dot(row, row).sqrt();
    if n > 0.0 {
        let inv = 1.0 / n;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// The starting `b_dec` from the first batch `x` [n, d].
pub fn b_dec_start(x: &[f32], d: usize, how: BDecInit) -> Vec<f32> {
    match how {
        BDecInit::Zeros => vec![0.0; d],
        BDecInit::Mean => mean(x, d).into_iter().map(|v| v as f32).collect(),
        BDecInit::GeometricMedian => geometric_median(x, d, 100, 1e-5).into_iter().map(|v| v as f32).collect(),
    }
}

fn mean(x: &[f32], d: usize) -> Vec<f64> {
    let n = (x.len() / d).max(1);
    let mut s = vec![0f64; d];
    for row in x.chunks_exact(d) {
        s.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
    }
    s.iter_mut().for_each(|a| *a /= n as f64);
    s
}

/// Weiszfeld's iteration from the mean, in float64, until the point moves less than
/// `tol` × its norm.
pub fn geometric_median(x: &[f32], d: usize, max_iter: usize, tol: f64) -> Vec<f64> {
    let mut y = mean(x, d);
    for _ in 0..max_iter {
        let mut num = vec![0f64; d];
        let mut den = 0f64;
        for row in x.chunks_exact(d) {
            let dist = row.iter().zip(&y).map(|(&a, &b)| (a as f64 - b).powi(2)).sum::<f64>().sqrt().max(1e-12);
            let w = 1.0 / dist;
            num.iter_mut().zip(row).for_each(|(a, &b)| *a += w * b as f64);
            den += w;
        }
        let next: Vec<f64> = num.iter().map(|v| v / den).collect();
        let moved = next.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        let norm = next.iter().map(|a| a * a).sum::<f64>().sqrt();
        y = next;
        if moved <= tol * norm.max(1e-12) {
            break;
        }
    }
    y
}

/// Per dimension: 1 / the standard deviation of `x` [n, d] (1 for a constant dimension).
pub fn dim_scales(x: &[f32], d: usize) -> Vec<f32> {
    let m = mean(x, d);
    let n = (x.len() / d).max(1) as f64;
    let mut var = vec![0f64; d];
    for row in x.chunks_exact(d) {
        var.iter_mut().zip(row).zip(&m).for_each(|((v, &a), mu)| *v += (a as f64 - mu).powi(2));
    }
    var.iter()
        .map(|v| {
            let sd = (v / n).sqrt();
            if sd > 0.0 {
                (1.0 / sd) as f32
            } else {
                1.0
            }
        })
        .collect()
}

/// The factor that makes the mean row norm of `x` equal sqrt(d).
pub fn norm_scale(x: &[f32], d: usize) -> f32 {
    let n = (x.len() / d).max(1);
    let mean_norm =
        x.chunks_exact(d).map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()).sum::<f64>() / n as f64;
    if mean_norm > 0.0 {
        ((d as f64).sqrt() / mean_norm) as f32
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometric_median_resists_an_outlier() {
        let mut x = vec![0f32; 0];
        for i in 0..9 {
            x.extend([1.0 + 0.01 * i as f32, 2.0]);
        }
        x.extend([1000.0, -1000.0]);
        let gm = geometric_median(&x, 2, 200, 1e-9);
        assert!((gm[0] - 1.04).abs() < 0.05 && (gm[1] - 2.0).abs() < 0.05, "{gm:?}");
    }
}
