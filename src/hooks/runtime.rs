//! Applies a `HookSpec` during one forward call: edits the activations it names, keeps copies of
//! the ones it captures. Edits are blended in with an exact select (`where_cond`), so positions
//! that are not selected keep their bits and patching a run with its own cache is an identity.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use candle_core::{Tensor, D};

use super::{HookPoint, HookSpec, Intervention, Positions};
use crate::batch::Batch;

pub struct HookRuntime<'a> {
    spec: &'a HookSpec,
    /// Per hook: (position mask [b, s] as u8, intervention), in the order given.
    edits: HashMap<HookPoint, Vec<(Tensor, &'a Intervention)>>,
    captured: BTreeMap<HookPoint, Tensor>,
}

impl<'a> HookRuntime<'a> {
    /// Resolves every edit's positions against the batch layout.
    pub fn new(spec: &'a HookSpec, batch: &Batch, device: &candle_core::Device) -> Result<Self> {
        let mut edits: HashMap<HookPoint, Vec<(Tensor, &Intervention)>> = HashMap::new();
        for e in &spec.edits {
            let mask = position_mask(&e.positions, batch)
                .with_context(|| format!("edit at {}", e.hook))?;
            let mask = Tensor::from_vec(mask, (batch.rows(), batch.seq_len), device)?;
            edits.entry(e.hook).or_default().push((mask, &e.op));
        }
        Ok(Self { spec, edits, captured: BTreeMap::new() })
    }

    /// Passes an activation through the hook point: edits, then captures.
    #[inline]
    pub fn apply(&mut self, point: HookPoint, x: Tensor) -> Result<Tensor> {
        let mut x = x;
        if let Some(edits) = self.edits.get(&point) {
            for (mask, op) in edits {
                x = apply_edit(&x, mask, op, point.position_axis())
                    .with_context(|| format!("applying an edit at {point}"))?;
            }
        }
        if self.spec.capture.contains(&point) {
            self.captured.insert(point, x.clone());
        }
        Ok(x)
    }

    pub fn into_captured(self) -> BTreeMap<HookPoint, Tensor> {
        self.captured
    }
}

/// A [rows * seq] mask with 1 at the selected columns.
fn position_mask(positions: &Positions, batch: &Batch) -> Result<Vec<u8>> {
    let s = batch.seq_len;
    let mut m = vec![0u8; batch.rows() * s];
    for (r, cols) in batch.columns(positions)?.into_iter().enumerate() {
        cols.into_iter().for_each(|c| m[r * s + c] = 1);
    }
    Ok(m)
}

fn apply_edit(x: &Tensor, mask: &Tensor, op: &Intervention, axis: usize) -> Result<Tensor> {
    let edited = match op {
        Intervention::Add { vector, scale } => {
            let v = (vector.to_dtype(x.dtype())? * *scale)?;
            x.broadcast_add(&v)?
        }
        Intervention::Replace(v) => {
            let v = v.to_dtype(x.dtype())?;
            if v.dims() == x.dims() {
                v
            } else {
                v.broadcast_as(x.shape())?.contiguous()?
            }
        }
        Intervention::Zero => x.zeros_like()?,
        Intervention::Scale(k) => (x * *k)?,
        Intervention::ProjectOut(d) => {
            let d = d.to_dtype(x.dtype())?;
            let norm = d.sqr()?.sum_all()?.sqrt()?;
            let unit = d.broadcast_div(&norm)?;
            let coef = x.broadcast_mul(&unit)?.sum_keepdim(D::Minus1)?;
            (x - coef.broadcast_mul(&unit)?)?
        }
    };
    // Shape the [b, s] mask so it broadcasts along the position axis.
    let (b, s) = mask.dims2()?;
    let mut shape = vec![1usize; x.rank()];
    shape[0] = b;
    shape[axis] = s;
    let m = mask.reshape(shape)?.broadcast_as(x.shape())?;
    Ok(m.where_cond(&edited, x)?)
}

