//! Editing one SAE latent inside a forward pass: clamp latent j to a value, add to it or scale
//! it, and let the model see the edited reconstruction. With f = encode(x) and f' the edited
//! latents, the activation becomes `x + decode(f') − decode(f)`, i.e. for a clamp to v:
//! `x + (v − f_j(x)) · d_j`, where `d_j` is latent j's decoder direction (`W_dec[j]`, divided by
//! its norm for TopK SAEs that rescale by decoder norms). Everything the SAE does not capture
//! (its error term) stays in x, as with SAELens's `use_error_term`.

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::Sae;
use crate::hooks::{ActivationEdit, Intervention};

/// What to do to the latent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatentOp {
    /// Set f_j to this value (the paper's steering clamps a latent to a large value).
    Clamp(f64),
    /// f_j + value.
    Add(f64),
    /// f_j × factor (0 ablates the latent).
    Scale(f64),
}

/// An `ActivationEdit` that edits latent `latent` of `sae` (at the SAE's own hook).
pub struct LatentEdit {
    sae: Arc<Sae>,
    latent: usize,
    op: LatentOp,
    /// [1, d_in]: the change of the reconstruction per unit of f_j.
    direction: Tensor,
}

impl LatentEdit {
    pub fn new(sae: Arc<Sae>, latent: usize, op: LatentOp) -> Result<Self> {
        if latent >= sae.d_sae() {
            bail!("latent {latent} of SAE {}: it has {} latents", sae.source.display(), sae.d_sae());
        }
        let mut one_hot = vec![0f32; sae.d_sae()];
        one_hot[latent] = 1.0;
        let e = Tensor::from_vec(one_hot, (1, sae.d_sae()), sae.w_dec().device())?;
        let direction = (sae.decode(&e)? - sae.decode(&e.zeros_like()?)?)?;
        Ok(Self { sae, latent, op, direction })
    }

    /// As an intervention for `HookSpec::edit` at the SAE's hook.
    pub fn intervention(self) -> Intervention {
        Intervention::Custom(Arc::new(self))
    }

    /// Latent j's decoder direction, [d_in].
    pub fn direction(&self) -> Result<Tensor> {
        Ok(self.direction.squeeze(0)?)
    }
}

impl ActivationEdit for LatentEdit {
    fn edit(&self, x: &Tensor) -> Result<Tensor> {
        let d_in = self.sae.d_in();
        let dims = x.dims().to_vec();
        // hook_z SAEs read [.., head, d_head] flattened (SAELens reshape_activations = hook_z).
        let trailing = if dims.last() == Some(&d_in) { 1 } else { 2 };
        let width: usize = dims.iter().rev().take(trailing).product();
        if width != d_in || dims.len() < trailing + 1 {
            bail!("activation of shape {dims:?} does not end in the SAE's d_in {d_in}");
        }
        let rows = x.to_dtype(DType::F32)?.reshape(((), d_in))?;
        let f_j = self.sae.encode(&rows)?.narrow(1, self.latent, 1)?; // [rows, 1]
        let coef = match self.op {
            LatentOp::Clamp(v) => f_j.affine(-1.0, v)?,
            LatentOp::Add(v) => f_j.ones_like()?.affine(v, 0.0)?,
            LatentOp::Scale(k) => f_j.affine(k - 1.0, 0.0)?,
        };
        let edited = (rows + coef.broadcast_mul(&self.direction)?)?;
        Ok(edited.reshape(dims)?.to_dtype(x.dtype())?)
    }

    fn describe(&self) -> String {
        format!("latent {} of SAE {} ({:?})", self.latent, self.sae.source.display(), self.op)
    }
}

impl Sae {
    /// An intervention that edits one latent of this SAE: use it at `sae.hook()`.
    pub fn latent_intervention(self: &Arc<Self>, latent: usize, op: LatentOp) -> Result<Intervention> {
        Ok(LatentEdit::new(self.clone(), latent, op)?.intervention())
    }
}
