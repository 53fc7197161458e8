//! Applies a `HookSpec` during one forward call: edits the activations it names, keeps copies of
//! the ones it captures. Edits are blended in with an exact select (`where_cond`), so positions
//! that are not selected keep their bits and patching a run with its own cache is an identity.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};

use super::{HookPoint, HookSpec, Intervention};
use crate::batch::Layout;

/// One edit, resolved against the chunk being run.
struct Resolved<'a> {
    /// [b, s] u8: 1 at the selected query positions.
    positions: Tensor,
    head: Option<usize>,
    /// For `MaskKeys`: [b, total keys] u8, 1 at the keys to knock out.
    keys: Option<Tensor>,
    op: &'a Intervention,
}

pub(crate) struct HookRuntime<'a> {
    spec: &'a HookSpec,
    edits: HashMap<HookPoint, Vec<Resolved<'a>>>,
    captured: BTreeMap<HookPoint, Tensor>,
}

impl<'a> HookRuntime<'a> {
    /// Resolves every edit's positions against the layout of the chunk's queries and of the
    /// attention keys (the same as the queries, unless a KV cache holds earlier positions).
    pub(crate) fn new(spec: &'a HookSpec, queries: &Layout, keys: &Layout, device: &Device) -> Result<Self> {
        let mut edits: HashMap<HookPoint, Vec<Resolved>> = HashMap::new();
        for e in &spec.edits {
            let ctx = || format!("edit at {}", e.hook);
            let mask = queries.mask(&e.positions).with_context(ctx)?;
            let positions = Tensor::from_vec(mask, (queries.rows(), queries.seq_len), device)?;
            let keys = match &e.op {
                Intervention::MaskKeys(k) => {
                    let m = keys.mask(k).with_context(|| format!("knocked-out keys at {}", e.hook))?;
                    Some(Tensor::from_vec(m, (keys.rows(), keys.seq_len), device)?)
                }
                _ => None,
            };
            edits.entry(e.hook).or_default().push(Resolved { positions, head: e.head, keys, op: &e.op });
        }
        Ok(Self { spec, edits, captured: BTreeMap::new() })
    }

    /// Passes an activation through the hook point: edits, then captures.
    #[inline]
    pub(crate) fn apply(&mut self, point: HookPoint, x: Tensor) -> Result<Tensor> {
        let mut x = x;
        if let Some(edits) = self.edits.get(&point) {
            for e in edits {
                x = apply_edit(&x, e, point).with_context(|| format!("applying an edit at {point}"))?;
            }
        }
        if self.spec.capture.contains(&point) {
            self.captured.insert(point, x.clone());
        }
        Ok(x)
    }

    pub(crate) fn into_captured(self) -> BTreeMap<HookPoint, Tensor> {
        self.captured
    }
}

fn apply_edit(x: &Tensor, e: &Resolved, point: HookPoint) -> Result<Tensor> {
    let edited = match e.op {
        Intervention::Add { vector, scale } => {
            let v = (vector.to_dtype(x.dtype())? * *scale)?;
            x.broadcast_add(&v)?
        }
        Intervention::Replace(v) => {
            let v = v.to_dtype(x.dtype())?;
            if v.dims() == x.dims() {
                v
            } else if v.rank() == x.rank() {
                bail!(
                    "the replacement has shape {:?} but the activation has {:?}: patching from another \
                     run needs the same batch size and padded token length",
                    v.dims(),
                    x.dims()
                );
            } else {
                v.broadcast_as(x.shape())
                    .with_context(|| format!("a replacement of shape {:?} does not fit {:?}", v.dims(), x.dims()))?
                    .contiguous()?
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
        Intervention::MaskKeys(_) => {
            // [b, total] → [b, 1, 1, total]: the knocked-out keys of each row.
            let keys = e.keys.as_ref().context("knockout keys were not resolved")?;
            let (b, total) = keys.dims2()?;
            if x.dim(3)? != total {
                bail!("knockout: {total} keys resolved but the scores have {}", x.dim(3)?);
            }
            let k = keys.reshape((b, 1, 1, total))?.broadcast_as(x.shape())?;
            let neg_inf = Tensor::full(f32::NEG_INFINITY, x.shape(), x.device())?.to_dtype(x.dtype())?;
            k.where_cond(&neg_inf, x)?
        }
        Intervention::Custom(edit) => {
            let y = edit.edit(x).with_context(|| edit.describe())?;
            if y.dims() != x.dims() {
                bail!("{} returned shape {:?} for an activation of shape {:?}", edit.describe(), y.dims(), x.dims());
            }
            y
        }
    };
    let mask = select_mask(&e.positions, e.head, x, point)?;
    Ok(mask.where_cond(&edited, x)?)
}

/// The [b, s] position mask shaped to broadcast over `x` along the hook's position axis, and
/// restricted to one head when asked.
fn select_mask(positions: &Tensor, head: Option<usize>, x: &Tensor, point: HookPoint) -> Result<Tensor> {
    let (b, s) = positions.dims2()?;
    let mut shape = vec![1usize; x.rank()];
    shape[0] = b;
    shape[point.position_axis()] = s;
    let mut m = positions.reshape(shape)?;
    if let Some(h) = head {
        let axis = point.head_axis().context("this hook has no head axis")?;
        let n = x.dim(axis)?;
        let mut one_hot = vec![0u8; n];
        *one_hot.get_mut(h).with_context(|| format!("head {h} of {n}"))? = 1;
        let mut hshape = vec![1usize; x.rank()];
        hshape[axis] = n;
        let hm = Tensor::from_vec(one_hot, hshape, x.device())?;
        // u8 product of 0/1 masks: selected position and selected head.
        m = m.to_dtype(DType::U8)?.broadcast_mul(&hm)?;
    }
    Ok(m.broadcast_as(x.shape())?.contiguous()?)
}
