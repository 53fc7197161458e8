//! The activations a forward pass captured, keyed by hook point.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Tensor;

use super::HookPoint;
use crate::batch::{Layout, Positions};

#[derive(Debug, Clone, Default)]
pub struct ActivationCache {
    /// Padded activations, [b, s, ...] (scores and patterns: [b, head, query, key]).
    pub tensors: BTreeMap<HookPoint, Tensor>,
    /// Where each row's tokens sit in the padded tensors.
    pub layout: Layout,
}

impl ActivationCache {
    pub fn get(&self, hook: HookPoint) -> Result<&Tensor> {
        self.tensors.get(&hook).with_context(|| format!("hook {hook} was not captured in this run"))
    }

    /// Left padding of each row.
    pub fn pad(&self) -> &[usize] {
        &self.layout.pad
    }

    /// Row `r` without its padding: [s_r, ...] (scores and patterns: [head, s_r, s_r]).
    pub fn row(&self, hook: HookPoint, r: usize) -> Result<Tensor> {
        let t = self.get(hook)?.get(r)?;
        let p = self.layout.pad.get(r).copied().unwrap_or(0);
        let axis = hook.position_axis() - 1;
        let s = t.dim(axis)?;
        let mut t = t.narrow(axis, p, s - p)?;
        if hook.is_attention_map() {
            t = t.narrow(2, p, s - p)?;
        }
        Ok(t)
    }

    /// The activation at chosen positions of each row (counted within the row's own tokens),
    /// the same number k per row: [b, k, ...] (scores and patterns: [b, head, k, key], k
    /// queries). E.g. `cache.gather(HookPoint::ResidPre(6), &entities.last())` is [b, 1, d].
    pub fn gather(&self, hook: HookPoint, positions: &Positions) -> Result<Tensor> {
        let t = self.get(hook)?;
        let cols = self.layout.columns(positions).with_context(|| format!("gathering {hook}"))?;
        let k = cols.first().map(|c| c.len()).unwrap_or(0);
        if let Some(r) = cols.iter().position(|c| c.len() != k) {
            anyhow::bail!("gathering {hook}: row {r} selects {} positions, row 0 selects {k}", cols[r].len());
        }
        let axis = hook.position_axis() - 1;
        let rows = cols
            .iter()
            .enumerate()
            .map(|(r, c)| {
                let idx = Tensor::from_vec(c.iter().map(|&x| x as u32).collect::<Vec<_>>(), k, t.device())?;
                Ok(t.get(r)?.index_select(&idx, axis)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }

    /// Saves every captured tensor as safetensors, named by its TransformerLens hook name.
    pub fn save(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> = self.tensors.iter().map(|(h, t)| (h.to_string(), t.clone())).collect();
        candle_core::safetensors::save(&map, path)
            .with_context(|| format!("writing activation cache {}", path.display()))
    }
}
