//! What `knowlens reproduce` runs: a TOML file (or one of the two presets compiled in) naming the
//! models, the sample sizes and the SAE recipe. Unknown keys are errors, so a typo cannot silently
//! fall back to a default.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const QUICK: &str = include_str!("quick.toml");
pub const FULL: &str = include_str!("full.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub base: Base,
    pub saes: Saes,
    #[serde(default)]
    pub discover: Discover,
    pub chat: Chat,
    pub steer: Steer,
    #[serde(default)]
    pub uncertainty: Uncertainty,
    #[serde(default)]
    pub seed: u64,
}

/// The uncertainty latents (the paper's §6) on the base model. They need the model's own greedy
/// answers, which the estimate-mode labels of `[base]` do not hold: a greedy label set made
/// with `knowlens label --mode greedy` (the repository commits one for the default model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uncertainty {
    /// A greedy label set of the base model [default: data/labels/{base model}/greedy; the stage
    /// is left out, and its claim not testable, when that directory does not exist].
    #[serde(default)]
    pub labels: Option<String>,
    /// Wrong and correct questions per type in each of train and test.
    pub per_type: usize,
}

impl Default for Uncertainty {
    fn default() -> Self {
        Self { labels: None, per_type: 100 }
    }
}

impl Config {
    /// The greedy label set the uncertainty stage reads (see `Uncertainty::labels`).
    pub fn uncertainty_labels(&self) -> String {
        self.uncertainty.labels.clone().unwrap_or_else(|| format!("data/labels/{}/greedy", self.base.model))
    }
}

/// The base model: labels, SAEs, latent discovery, attention and patching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub model: String,
    pub label_mode: String,
    /// Entities per type (0: the whole dataset).
    pub per_type: usize,
    /// A different count for some types (type → entities; 0: the whole type). Cities matched on
    /// country need more cities than a type without matching to reach 30 known test entities.
    #[serde(default)]
    pub per_type_of: std::collections::BTreeMap<String, usize>,
    pub known_min: usize,
    /// Types the base labels hold (empty: every type of the dataset). A preset sized for half
    /// an hour leaves out types the model knows none of, which would only add unknown entities.
    #[serde(default)]
    pub types: Vec<String>,
    /// Types the base model's few-shot steering asks about (empty: all); types it knows nothing
    /// of have no known entities to steer and only cost time.
    #[serde(default)]
    pub steer_types: Vec<String>,
    /// Strengths of the base model's steering (multiples of the mean residual norm; empty: those
    /// of [steer]). A base model's few-shot format breaks at a push a chat model shrugs off.
    #[serde(default)]
    pub steer_coefs: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saes {
    /// Paper layers (resid_pre L = resid_post L-1); one SAE each.
    pub layers: Vec<usize>,
    pub arch: String,
    pub k: usize,
    pub width: usize,
    /// Activations stored per hook (the model runs once over them).
    pub tokens: usize,
    pub epochs: usize,
    /// Adam's learning rate (default: the trainer's).
    #[serde(default)]
    pub lr: Option<f64>,
    /// Activation rows per training step (default: the trainer's, 4,096).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Wider SAEs (the paper's width) at a few layers, trained from the same store.
    #[serde(default)]
    pub wide_layers: Vec<usize>,
    #[serde(default = "default_wide_width")]
    pub wide_width: usize,
    /// Active latents per token of the wide SAEs (default: `k`).
    #[serde(default)]
    pub wide_k: Option<usize>,
    /// Passes over the store for the wide SAEs (default: `epochs`).
    #[serde(default)]
    pub wide_epochs: Option<usize>,
    /// Learning rate of the wide SAEs (default: `lr`).
    #[serde(default)]
    pub wide_lr: Option<f64>,
    /// Held-out corpus tokens every SAE is evaluated on (0: no evaluation stage).
    #[serde(default)]
    pub eval_tokens: usize,
    /// Of those, the tokens the spliced passes (losses, KL) run on (0: all).
    #[serde(default)]
    pub eval_downstream_tokens: usize,
    /// Of those, the tokens that also run the zero and mean ablations (0: all).
    #[serde(default)]
    pub eval_ablation_tokens: usize,
}

fn default_wide_width() -> usize {
    16384
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discover {
    pub corpus_tokens: usize,
}

impl Default for Discover {
    fn default() -> Self {
        Self { corpus_tokens: 2000 }
    }
}

/// The chat model: its own labels (greedy chat answers) and probe directions, then steering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chat {
    pub model: String,
    pub per_type: usize,
    pub known_min: usize,
    /// Types the directions are fitted on and the steering asks about (empty: all). A small
    /// model may know one type only; a direction fitted across types then mostly separates that
    /// type from the others.
    #[serde(default)]
    pub types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steer {
    /// Known and unknown test entities per type (the verdicts).
    pub per_type: usize,
    /// Known and unknown validation entities per type (the strength is chosen on them)
    /// [default: per_type].
    #[serde(default)]
    pub select_per_type: Option<usize>,
    /// Strengths tried on validation.
    pub coefs: Vec<f64>,
    /// Gaussian control directions per test condition (the old key `random` means the same).
    #[serde(alias = "random")]
    pub gaussian: usize,
    /// Random SAE latents of the detector's frequency; where the detectors have no SAE (the
    /// chat model's probes) Gaussian directions take their places.
    #[serde(default)]
    pub random_latents: usize,
}

impl Config {
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let c: Config = toml::from_str(text).with_context(|| format!("{what}: not a reproduce config"))?;
        c.check().with_context(|| what.to_string())?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "quick" => Self::parse(QUICK, "the quick preset"),
            "full" => Self::parse(FULL, "the full preset"),
            other => bail!("unknown preset {other:?} (valid: quick, full)"),
        }
    }

    pub fn check(&self) -> Result<()> {
        if self.saes.layers.is_empty() {
            bail!("[saes] layers: at least one layer");
        }
        if self.saes.layers.contains(&0) {
            bail!("[saes] layers: layer 0 is the embedding (resid_pre 0 has no resid_post before it)");
        }
        if self.saes.tokens == 0 || self.saes.epochs == 0 || self.saes.width == 0 || self.saes.k == 0 {
            bail!("[saes] tokens, epochs, width and k must be at least 1");
        }
        if self.saes.wide_layers.contains(&0) {
            bail!("[saes] wide_layers: layer 0 is the embedding (resid_pre 0 has no resid_post before it)");
        }
        if self.saes.wide_width == 0 || self.saes.wide_epochs == Some(0) || self.saes.wide_k == Some(0) {
            bail!("[saes] wide_width, wide_k and wide_epochs must be at least 1");
        }
        for (key, lr) in [("lr", self.saes.lr), ("wide_lr", self.saes.wide_lr)] {
            if lr.is_some_and(|lr| !(lr.is_finite() && lr > 0.0)) {
                bail!("[saes] {key} must be a positive number");
            }
        }
        if self.saes.batch_size == Some(0) {
            bail!("[saes] batch_size must be at least 1");
        }
        if self.base.known_min == 0 || self.chat.known_min == 0 {
            bail!("known_min must be at least 1");
        }
        if self.steer.coefs.is_empty() || self.steer.coefs.iter().any(|c| !c.is_finite()) {
            bail!("[steer] coefs: at least one finite strength");
        }
        if self.base.steer_coefs.iter().any(|c| !c.is_finite()) {
            bail!("[base] steer_coefs: finite strengths only");
        }
        for t in &self.chat.types {
            t.parse::<crate::entities::questions::EntityType>().with_context(|| "[chat] types".to_string())?;
        }
        for t in &self.base.types {
            t.parse::<crate::entities::questions::EntityType>().with_context(|| "[base] types".to_string())?;
        }
        for t in self.base.per_type_of.keys() {
            t.parse::<crate::entities::questions::EntityType>().with_context(|| "[base] per_type_of".to_string())?;
        }
        for t in &self.base.steer_types {
            t.parse::<crate::entities::questions::EntityType>().with_context(|| "[base] steer_types".to_string())?;
        }
        if self.steer.per_type == 0 {
            bail!("[steer] per_type must be at least 1");
        }
        if self.uncertainty.per_type == 0 {
            bail!("[uncertainty] per_type must be at least 1");
        }
        Ok(())
    }
}
