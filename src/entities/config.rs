//! What a labeling run is and where it writes: shared by `run` (which performs it) and
//! `summary` (which reports it), so neither depends on the other's internals.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::label::{LabelOptions, Mode};
use super::rule::{AttributeSet, Guessable};

/// How base-model templates are picked. Parsed from and displayed as `paper` / `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateChoice {
    /// The paper's question + answer prefix for every attribute.
    Paper,
    /// Per attribute, the template with the best greedy accuracy on a development sample.
    Auto,
}

crate::names::named_enum!(TemplateChoice, "template choice", Paper => "paper", Auto => "auto");

/// One labeling run. `RunConfig::new(out)` holds the defaults `knowlens label` uses; set fields
/// to change them, and `validate` (which `run::run` calls) rejects settings that cannot work.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Output directory; each mode writes into its own subdirectory (`mode_dir`).
    pub out: PathBuf,
    /// How questions are asked and judged (`LabelOptions::default()`).
    pub opts: LabelOptions,
    /// Attributes correct for an entity to be known (default 2, the paper's τ = 1).
    pub known_min: usize,
    /// Default `Auto`.
    pub templates: TemplateChoice,
    /// Most popular entities per type used to pick templates (default 48).
    pub dev_size: usize,
    /// Seed of the train / validation / test split and the controls (default 42, the paper's).
    pub split_seed: u64,
    /// Attributes asked; None: the mode's default (`default_attributes`).
    pub attributes: Option<AttributeSet>,
    /// Guessable gold values; None: computed from the entities labeled. Set it from the whole
    /// dataset when labeling a subset, so the subset is judged as the whole would be.
    pub guessable: Option<Guessable>,
}

impl RunConfig {
    pub const DEFAULT_KNOWN_MIN: usize = 2;
    pub const DEFAULT_DEV_SIZE: usize = 48;
    pub const DEFAULT_SPLIT_SEED: u64 = 42;

    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            opts: LabelOptions::default(),
            known_min: Self::DEFAULT_KNOWN_MIN,
            templates: TemplateChoice::Auto,
            dev_size: Self::DEFAULT_DEV_SIZE,
            split_seed: Self::DEFAULT_SPLIT_SEED,
            attributes: None,
            guessable: None,
        }
    }

    /// The attributes asked: `attributes`, or every attribute in the modes that generate (their
    /// answers give the chance rates) and the counting ones in `estimate` and `likelihood` mode.
    pub fn attribute_set(&self) -> AttributeSet {
        self.attributes.unwrap_or(match self.opts.mode {
            Mode::Greedy | Mode::Sampled => AttributeSet::All,
            Mode::Likelihood | Mode::Estimate => AttributeSet::Counting,
        })
    }

    /// Errors (naming the setting) for values that cannot produce labels.
    pub fn validate(&self) -> Result<()> {
        self.opts.validate()?;
        if self.known_min == 0 {
            bail!("known_min must be at least 1 (0 would call every entity known)");
        }
        if self.templates == TemplateChoice::Auto && self.dev_size == 0 && !self.opts.chat {
            bail!("dev_size must be at least 1 to choose templates automatically (or choose the paper's templates)");
        }
        Ok(())
    }
}

/// Directory of one mode's outputs.
pub fn mode_dir(out: &Path, mode: Mode) -> PathBuf {
    out.join(mode.as_str())
}
