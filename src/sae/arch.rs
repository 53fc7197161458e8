//! What an SAE does between its encoder matmul and its latents, following SAELens's inference
//! classes (`StandardSAE`, `JumpReLUSAE`, `TopKSAE`) term for term.
//!
//! BatchTopK has no variant: SAELens trains it with a batch-wide top-k but saves it as a JumpReLU
//! SAE whose threshold is the learned global threshold, so it loads (and saves) as `JumpRelu`.
//! `Architecture::batch_topk` builds that form.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

#[derive(Debug, Clone)]
pub enum Architecture {
    /// `f = relu(pre)`.
    Standard,
    /// `f = relu(pre) · 1[pre > θ]`, θ of shape [d_sae]. SAELens keeps the ReLU even where θ < 0,
    /// so this is not `pre · 1[pre > θ]` there.
    JumpRelu { threshold: Tensor },
    /// Keep the k largest pre-activations of each row, then ReLU. With
    /// `rescale_acts_by_decoder_norm`, pre-activations are multiplied by the decoder row norms
    /// before the selection and latents divided by them again in `decode`.
    TopK { k: usize, rescale_acts_by_decoder_norm: bool },
}

impl Architecture {
    /// A BatchTopK SAE with global threshold `threshold`, in the JumpReLU form SAELens saves it in.
    pub fn batch_topk(threshold: f32, d_sae: usize) -> Result<Self> {
        Ok(Architecture::JumpRelu { threshold: Tensor::full(threshold, d_sae, &Device::Cpu)? })
    }

    /// The SAELens `architecture` string.
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::Standard => "standard",
            Architecture::JumpRelu { .. } => "jumprelu",
            Architecture::TopK { .. } => "topk",
        }
    }

    /// Latents from pre-activations [n, d_sae]. `w_dec_norm` [d_sae] is needed only by a TopK
    /// SAE that rescales by decoder norms.
    pub(crate) fn activate(&self, pre: &Tensor, w_dec_norm: Option<&Tensor>) -> Result<Tensor> {
        Ok(match self {
            Architecture::Standard => pre.relu()?,
            Architecture::JumpRelu { threshold } => {
                let mask = pre.broadcast_gt(threshold)?.to_dtype(DType::F32)?;
                (pre.relu()? * mask)?
            }
            Architecture::TopK { k, rescale_acts_by_decoder_norm } => {
                let pre = match (rescale_acts_by_decoder_norm, w_dec_norm) {
                    (true, Some(n)) => pre.broadcast_mul(n)?,
                    (true, None) => bail!("a TopK SAE that rescales by decoder norm needs the norms"),
                    (false, _) => pre.clone(),
                };
                top_k_relu(&pre, *k)?
            }
        })
    }
}

/// Per row: the k largest entries pass through a ReLU, every other entry becomes 0 (SAELens's
/// `TopK`: `torch.topk` then `relu` then scatter). Rows are independent, so they run in parallel;
/// a partial selection finds the k-th largest without sorting the row.
fn top_k_relu(pre: &Tensor, k: usize) -> Result<Tensor> {
    let (n, d) = pre.dims2()?;
    let mut v = pre.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    if k < d {
        v.par_chunks_mut(d).for_each(|row| {
            let mut order: Vec<usize> = (0..d).collect();
            // Descending; total_cmp ranks NaN above every number, as torch.topk does.
            order.select_nth_unstable_by(k, |&a, &b| row[b].total_cmp(&row[a]));
            for &i in &order[k..] {
                row[i] = 0.0;
            }
        });
    }
    v.par_iter_mut().for_each(|x| *x = x.max(0.0));
    Ok(Tensor::from_vec(v, (n, d), pre.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_k_largest_then_relus() {
        let pre = Tensor::new(&[[3f32, -1.0, 5.0, 0.5, -4.0], [-3.0, -1.0, -2.0, -5.0, -0.5]], &Device::Cpu).unwrap();
        let f = top_k_relu(&pre, 2).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(f[0], vec![3.0, 0.0, 5.0, 0.0, 0.0]);
        // All negative: the top 2 are kept, then zeroed by the ReLU.
        assert_eq!(f[1], vec![0.0; 5]);
        let all = top_k_relu(&pre, 9).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(all[0], vec![3.0, 0.0, 5.0, 0.5, 0.0]);
        assert_eq!(top_k_relu(&pre, 0).unwrap().to_vec2::<f32>().unwrap()[0], vec![0.0; 5]);
    }

    #[test]
    fn jumprelu_keeps_the_relu_below_a_negative_threshold() {
        let pre = Tensor::new(&[[-0.5f32, 0.2, 0.7]], &Device::Cpu).unwrap();
        let th = Tensor::new(&[-1f32, 0.5, 0.5], &Device::Cpu).unwrap();
        let f = Architecture::JumpRelu { threshold: th }.activate(&pre, None).unwrap();
        assert_eq!(f.to_vec2::<f32>().unwrap()[0], vec![0.0, 0.0, 0.7]);
    }
}
