//! Steering directions and how hard to push along them.
//!
//! A direction is a unit vector added to the residual stream entering block `layer`
//! (`blocks.{layer}.hook_resid_pre`, the paper's layer convention). Its strength is given in
//! units of the mean residual norm at that layer over the steered positions: the paper's
//! α = 15 / 20 multiply unnormalised Gemma 2 decoder rows and mean nothing on another model, while
//! "one mean norm" means the same push everywhere.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::batch::EntityBatch;
use crate::discover::detectors::{Detector, DetectorKind};
use crate::discover::scores::Direction;
use crate::hooks::{HookPoint, HookSpec, Intervention, Positions};
use crate::rng::{SplitMix64, TAG_DIRECTION};
use crate::Model;

/// Where a direction came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An SAE latent's decoder row, exported by `discover`.
    SaeLatent,
    /// A logistic probe's weights mapped back to the raw residual.
    Probe,
    /// The difference of the class means.
    DiffOfMeans,
    /// A seeded Gaussian direction (the baseline).
    Random,
}

#[derive(Debug, Clone, Serialize)]
pub struct SteeringDirection {
    pub name: String,
    pub source: Source,
    /// The class this direction points towards (None for random directions).
    pub detects: Option<Direction>,
    /// Steered at `blocks.{layer}.hook_resid_pre`.
    pub layer: usize,
    /// Unit norm.
    #[serde(skip)]
    pub unit: Vec<f32>,
}

fn normalised(v: &[f32], what: &str) -> Result<Vec<f32>> {
    let norm = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if !(norm > 0.0 && norm.is_finite()) {
        bail!("{what}: the direction has norm {norm}, it cannot steer");
    }
    Ok(v.iter().map(|&x| (x as f64 / norm) as f32).collect())
}

impl SteeringDirection {
    /// The direction pointing the other way, named "−{name}": a probe fitted for "known" gives
    /// "unknown" as its negation.
    pub fn negated(&self) -> Self {
        let mut n = self.clone();
        n.name = format!("−{}", self.name);
        n.unit.iter_mut().for_each(|x| *x = -*x);
        n.detects = self.detects.map(|c| match c {
            Direction::Known => Direction::Unknown,
            Direction::Unknown => Direction::Known,
        });
        n
    }

    /// The direction of an exported detector: its decoder row when it has one (SAE latents;
    /// probes and difference-of-means detectors store their raw-space direction there too),
    /// else its weights divided by the input scale (a linear score's gradient in raw space).
    pub fn from_detector(d: &Detector) -> Result<Self> {
        let raw: Vec<f32> = if !d.decoder.is_empty() {
            d.decoder.clone()
        } else {
            d.weights.iter().enumerate().map(|(i, &w)| w / d.scale.get(i).copied().unwrap_or(1.0)).collect()
        };
        let source = match d.kind {
            DetectorKind::SaeLatent => Source::SaeLatent,
            DetectorKind::Probe => Source::Probe,
            DetectorKind::DiffOfMeans => Source::DiffOfMeans,
        };
        Ok(Self {
            name: d.name.clone(),
            source,
            detects: Some(d.detects),
            layer: d.layer,
            unit: normalised(&raw, &format!("detector {}", d.name))?,
        })
    }

    /// A random SAE latent's decoder row as a direction (a control: it detects nothing).
    pub fn from_vector(name: &str, layer: usize, raw: &[f32]) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            source: Source::SaeLatent,
            detects: None,
            layer,
            unit: normalised(raw, name)?,
        })
    }

    /// Random direction `index` of a seed: isotropic Gaussian, normalised. The same (seed,
    /// layer, index) always gives the same direction.
    pub fn random(layer: usize, d_model: usize, seed: u64, index: u64) -> Result<Self> {
        let mut rng = SplitMix64::derive(seed ^ (layer as u64).wrapping_mul(0x9E37_79B9), TAG_DIRECTION, index);
        let v: Vec<f32> = (0..d_model).map(|_| rng.normal() as f32).collect();
        Ok(Self {
            name: format!("random-{index}@L{layer}"),
            source: Source::Random,
            detects: None,
            layer,
            unit: normalised(&v, "random direction")?,
        })
    }

    pub fn hook(&self) -> HookPoint {
        HookPoint::ResidPre(self.layer)
    }

    /// Adds `magnitude · unit` at the given positions.
    pub fn add(&self, spec: HookSpec, positions: Positions, magnitude: f64, device: &Device) -> Result<HookSpec> {
        let vector = Tensor::from_vec(self.unit.clone(), self.unit.len(), device)?;
        Ok(spec.edit(self.hook(), positions, Intervention::Add { vector, scale: magnitude }))
    }

    /// Cosine similarity with another direction (both unit).
    pub fn cosine(&self, other: &SteeringDirection) -> f64 {
        self.unit.iter().zip(&other.unit).map(|(&a, &b)| a as f64 * b as f64).sum()
    }
}

/// Mean L2 norm of the residual stream entering block `layer`, over the given positions of an
/// entity batch (e.g. `EntityBatch::last_to_end()`, the steered positions).
pub fn mean_resid_norm(model: &Model, batch: &EntityBatch, layer: usize, positions: &Positions) -> Result<f64> {
    let hook = HookPoint::ResidPre(layer);
    let out = model.run(&batch.batch, &HookSpec::new().capture([hook]))?;
    let cols = batch.batch.columns(positions)?;
    let t = out.cache.get(hook)?.to_dtype(DType::F32)?;
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (r, cs) in cols.iter().enumerate() {
        let row = t.get(r)?;
        for &c in cs {
            let v: Vec<f32> = row.get(c)?.to_vec1()?;
            sum += v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            n += 1;
        }
    }
    if n == 0 {
        bail!("mean residual norm at layer {layer}: no positions selected");
    }
    Ok(sum / n as f64)
}
