//! Portable detectors: one JSON file holding, per detector, the hook it reads, the linear score
//! it computes there (an SAE latent's encoder row and bias, or a probe's weights), the threshold
//! chosen on the train split, the decoder row (for steering) and the input normalisation. No
//! SAE is needed to apply them, only the model, which is checked against the file.
//!
//! Score of a residual vector x: `Σ_i weights_i · (x_i − center_i) / scale_i + bias` (`center`
//! and `scale` empty: 0 and 1). For an SAE latent this is its pre-activation
//! `(x − b_dec·apply_b_dec_to_input) · W_enc[:, j] + b_enc[j]`; the latent's activation is
//! `relu(pre)·1[pre > activation_threshold]` for standard / JumpReLU SAEs (TopK activations
//! depend on the other latents and are not reproduced). A detector fires when score > threshold.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::activations::{self, Item};
use super::scores::Direction;
use crate::progress::Progress;
use crate::{HookPoint, Model};

pub const FORMAT: &str = "knowlens-detectors";
pub const VERSION: u32 = 1;

/// What a detector file was made for; checked before any detector runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    /// The model's name as given to `discover` (a preset name or a path's file name).
    pub name: String,
    pub arch: String,
    pub n_layers: usize,
    pub d_model: usize,
    pub vocab_size: usize,
}

impl ModelId {
    pub fn of(model: &Model, name: &str) -> Self {
        let cfg = model.cfg();
        Self {
            name: name.to_string(),
            arch: format!("{:?}", cfg.arch).to_lowercase(),
            n_layers: cfg.n_layers,
            d_model: cfg.d_model,
            vocab_size: cfg.vocab_size,
        }
    }

    /// The name a model gets when none is given: its file or directory name.
    pub fn default_name(model: &Model) -> String {
        model
            .source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| model.source.display().to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    SaeLatent,
    Probe,
    DiffOfMeans,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    pub name: String,
    pub kind: DetectorKind,
    /// The class a high score indicates.
    pub detects: Direction,
    /// The paper's layer: the residual stream entering block `layer`.
    pub layer: usize,
    /// The hook the score reads (TransformerLens name).
    pub hook: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sae: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sae_arch: Option<String>,
    /// For SAE latents of standard / JumpReLU SAEs: activation = relu(pre)·1[pre > this].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_threshold: Option<f32>,
    #[serde(default)]
    pub center: Vec<f32>,
    #[serde(default)]
    pub scale: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// Chosen on the train split (balanced accuracy).
    pub threshold: f32,
    /// The SAE decoder row (or the probe's raw-space direction), for steering.
    #[serde(default)]
    pub decoder: Vec<f32>,
    /// Held-out AUROC of this score on the test split when it was exported: [value, lo, hi].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_auroc: Option<[f64; 3]>,
}

impl Detector {
    pub fn score(&self, x: &[f32]) -> f64 {
        let mut s = self.bias as f64;
        for (i, (&v, &w)) in x.iter().zip(&self.weights).enumerate() {
            let c = self.center.get(i).copied().unwrap_or(0.0) as f64;
            let sc = self.scale.get(i).copied().unwrap_or(1.0) as f64;
            s += (v as f64 - c) / sc * w as f64;
        }
        s
    }

    fn check(&self, d: usize, n_layers: usize) -> Result<HookPoint> {
        let hook: HookPoint =
            self.hook.parse().map_err(|e| anyhow::anyhow!("detector {}: hook {:?}: {e}", self.name, self.hook))?;
        hook.check_layer(n_layers).with_context(|| format!("detector {}", self.name))?;
        for (what, v) in
            [("weights", &self.weights), ("center", &self.center), ("scale", &self.scale), ("decoder", &self.decoder)]
        {
            if !(v.is_empty() && what != "weights") && v.len() != d {
                bail!("detector {}: {what} has {} values, the model's d_model is {d}", self.name, v.len());
            }
        }
        if self.scale.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            bail!("detector {}: scale holds a zero or non-finite value", self.name);
        }
        Ok(hook)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorFile {
    pub format: String,
    pub version: u32,
    pub model: ModelId,
    /// The prompt the detectors were fitted on (`{type}`, `{name}`).
    pub template: String,
    pub detectors: Vec<Detector>,
    /// Per SAE-latent detector chosen for steering: random latents of its SAE with its firing
    /// frequency on the entity prompts (the paper's steering control).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<ControlLatents>,
    /// The detectors the verdicts use for each class, and why (chosen on validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<SelectedDetectors>,
}

/// Random latents standing in for detector `of`: same SAE, same firing frequency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlLatents {
    pub of: String,
    pub latents: Vec<usize>,
    /// Their decoder rows (raw residual space), one per latent.
    pub decoders: Vec<Vec<f32>>,
}

/// The detector of each class that the claims use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectedDetectors {
    pub known: String,
    pub unknown: String,
    pub rule: String,
}

impl DetectorFile {
    pub fn new(model: ModelId, template: &str, detectors: Vec<Detector>) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            model,
            template: template.into(),
            detectors,
            controls: Vec::new(),
            selected: None,
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsio::write_atomic(path, serde_json::to_string(self)?.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let f: Self =
            serde_json::from_str(&text).with_context(|| format!("{}: not a detector file", path.display()))?;
        if f.format != FORMAT || f.version != VERSION {
            bail!(
                "{}: format {:?} version {}, expected {FORMAT:?} version {VERSION}",
                path.display(),
                f.format,
                f.version
            );
        }
        if f.detectors.is_empty() {
            bail!("{}: holds no detector", path.display());
        }
        Ok(f)
    }

    /// Refuses a model other than the one the detectors were made for (name, architecture,
    /// depth, width or vocabulary), and detectors whose vectors do not have the model's width.
    pub fn check(&self, model: &Model, name: &str, any_name: bool) -> Result<Vec<HookPoint>> {
        let have = ModelId::of(model, name);
        let want = &self.model;
        if (have.arch.as_str(), have.n_layers, have.d_model, have.vocab_size)
            != (want.arch.as_str(), want.n_layers, want.d_model, want.vocab_size)
        {
            bail!(
                "detectors were made for {} ({}, {} layers, d_model {}, vocab {}), but the model is {} ({}, {} layers, d_model {}, vocab {})",
                want.name, want.arch, want.n_layers, want.d_model, want.vocab_size, have.name, have.arch, have.n_layers, have.d_model, have.vocab_size
            );
        }
        if !any_name && have.name != want.name {
            bail!(
                "detectors were made for model {:?}, not {:?} (same shape; pass --any-model to use them anyway)",
                want.name,
                have.name
            );
        }
        self.detectors.iter().map(|d| d.check(have.d_model, have.n_layers)).collect()
    }
}

/// One entity to score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntityRow {
    pub id: String,
    #[serde(rename = "type")]
    pub entity_type: String,
    pub name: String,
    /// "known" / "unknown" when the file carries labels (then AUROCs are reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

/// Reads a JSONL entity file (id, type, name, optional class); errors name file and line.
pub fn read_entities(path: &Path) -> Result<Vec<EntityRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: EntityRow = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an entity row (id, type, name)", path.display(), i + 1))?;
        if row.name.trim().is_empty() {
            bail!("{}:{}: empty name", path.display(), i + 1);
        }
        if let Some(c) = &row.class {
            if c != "known" && c != "unknown" {
                bail!("{}:{}: class {c:?} is neither \"known\" nor \"unknown\"", path.display(), i + 1);
            }
        }
        out.push(row);
    }
    if out.is_empty() {
        bail!("{}: no entity rows", path.display());
    }
    Ok(out)
}

/// The prompt of an entity: `template` with `{type}` and `{name}` filled in.
pub fn prompt(template: &str, entity_type: &str, name: &str) -> String {
    template.replace("{type}", entity_type).replace("{name}", name)
}

/// Every detector's score and decision for every entity: [entity][detector] (score, fires).
pub fn detect(
    model: &Model,
    file: &DetectorFile,
    hooks: &[HookPoint],
    rows: &[EntityRow],
    batch: usize,
    progress: &dyn Progress,
) -> Result<Vec<Vec<(f64, bool)>>> {
    let mut uniq: Vec<HookPoint> = hooks.to_vec();
    uniq.sort();
    uniq.dedup();
    let items: Vec<Item> = rows
        .iter()
        .map(|r| Item::Entity { prompt: prompt(&file.template, &r.entity_type, &r.name), name: r.name.clone() })
        .collect();
    let acts = activations::collect(model, "detect", &items, &uniq, batch, None, progress)?;
    let idx: Vec<usize> = hooks.iter().map(|h| acts.hook_index(*h)).collect::<Result<_>>()?;
    Ok((0..rows.len())
        .map(|r| {
            file.detectors
                .iter()
                .zip(&idx)
                .map(|(d, &h)| {
                    let s = d.score(acts.row(r, h));
                    (s, s > d.threshold as f64)
                })
                .collect()
        })
        .collect())
}
