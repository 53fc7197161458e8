//! The activations a forward pass captured, keyed by hook point.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Tensor;

use super::HookPoint;

#[derive(Debug, Clone, Default)]
pub struct ActivationCache {
    /// Padded activations, [b, s, ...] (patterns: [b, head, query, key]).
    pub tensors: BTreeMap<HookPoint, Tensor>,
    /// Left padding of each row, to strip it in `row`.
    pub pad: Vec<usize>,
}

impl ActivationCache {
    pub fn get(&self, hook: HookPoint) -> Result<&Tensor> {
        self.tensors
            .get(&hook)
            .with_context(|| format!("hook {hook} was not captured in this run"))
    }

    /// Row `r` without its padding: [s_r, ...] (patterns: [head, s_r, s_r]).
    pub fn row(&self, hook: HookPoint, r: usize) -> Result<Tensor> {
        let t = self.get(hook)?.get(r)?;
        let p = self.pad.get(r).copied().unwrap_or(0);
        let axis = hook.position_axis() - 1;
        let s = t.dim(axis)?;
        let mut t = t.narrow(axis, p, s - p)?;
        if let HookPoint::AttnPattern(_) = hook {
            t = t.narrow(2, p, s - p)?;
        }
        Ok(t)
    }

    /// Saves every captured tensor as safetensors, named by its TransformerLens hook name.
    pub fn save(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> =
            self.tensors.iter().map(|(h, t)| (h.to_string(), t.clone())).collect();
        candle_core::safetensors::save(&map, path)
            .with_context(|| format!("writing activation cache {}", path.display()))
    }
}
