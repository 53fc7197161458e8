//! Latent separation scores (paper §3, `get_features` / `get_general_latents`): per layer, latent
//! and entity type, the fraction of known and of unknown entities on which the latent is active
//! (> 1e-6), their differences, and the generality score MaxMin (the minimum over types), ranked
//! over all layers jointly after dropping latents that fire on ≥ 2% of random corpus tokens.
//! Computed from the rows the caller passes: in `discover`, the train split only.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::entities::questions::EntityType;

/// The paper's threshold for "active".
pub const ACTIVE_EPS: f32 = 1e-6;

/// Which class a latent is meant to detect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Known,
    Unknown,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Known, Direction::Unknown];
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Known => "known",
            Direction::Unknown => "unknown",
        }
    }
}

/// The train rows of one entity type, by class (indices into the caller's row order).
#[derive(Debug, Clone)]
pub struct Group {
    pub entity_type: EntityType,
    pub known: Vec<usize>,
    pub unknown: Vec<usize>,
}

/// A type left out of MaxMin, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ExcludedType {
    pub entity_type: EntityType,
    pub n_known: usize,
    pub n_unknown: usize,
    pub reason: String,
}

/// Splits groups into those with at least `min_per_class` known and unknown rows and the others.
pub fn eligible(groups: Vec<Group>, min_per_class: usize) -> (Vec<Group>, Vec<ExcludedType>) {
    let mut keep = Vec::new();
    let mut out = Vec::new();
    for g in groups {
        if g.known.len() >= min_per_class && g.unknown.len() >= min_per_class {
            keep.push(g);
        } else {
            out.push(ExcludedType {
                entity_type: g.entity_type,
                n_known: g.known.len(),
                n_unknown: g.unknown.len(),
                reason: format!("fewer than {min_per_class} known or unknown train entities"),
            });
        }
    }
    (keep, out)
}

/// Fraction of `rows` of the latent matrix `f` ([n, d_sae] back to back) on which each latent
/// is active.
pub fn active_fraction(f: &[f32], d_sae: usize, rows: &[usize]) -> Vec<f32> {
    let mut count = vec![0u32; d_sae];
    for &r in rows {
        for (c, &v) in count.iter_mut().zip(&f[r * d_sae..(r + 1) * d_sae]) {
            *c += u32::from(v > ACTIVE_EPS);
        }
    }
    let n = rows.len().max(1) as f32;
    count.into_iter().map(|c| c as f32 / n).collect()
}

/// One type's frequencies at one layer.
#[derive(Debug, Clone, Serialize)]
pub struct TypeFreq {
    pub entity_type: EntityType,
    pub n_known: usize,
    pub n_unknown: usize,
    pub f_known: Vec<f32>,
    pub f_unknown: Vec<f32>,
}

impl TypeFreq {
    pub fn s(&self, dir: Direction, j: usize) -> f32 {
        match dir {
            Direction::Known => self.f_known[j] - self.f_unknown[j],
            Direction::Unknown => self.f_unknown[j] - self.f_known[j],
        }
    }
}

/// Every latent's frequencies at one layer ("layer" in the paper's convention: the residual
/// stream entering block `layer`).
#[derive(Debug, Clone, Serialize)]
pub struct LayerScores {
    pub layer: usize,
    pub hook: String,
    pub d_sae: usize,
    pub types: Vec<TypeFreq>,
    /// Fraction of random corpus tokens on which each latent is active (empty: no corpus).
    pub corpus_freq: Vec<f32>,
    /// Fraction of all train entities (both classes, all types) on which each latent is active.
    pub entity_freq: Vec<f32>,
}

impl LayerScores {
    pub fn new(layer: usize, hook: String, f: &[f32], d_sae: usize, groups: &[Group], corpus_freq: Vec<f32>) -> Self {
        let types = groups
            .iter()
            .map(|g| TypeFreq {
                entity_type: g.entity_type,
                n_known: g.known.len(),
                n_unknown: g.unknown.len(),
                f_known: active_fraction(f, d_sae, &g.known),
                f_unknown: active_fraction(f, d_sae, &g.unknown),
            })
            .collect();
        let all: Vec<usize> = groups.iter().flat_map(|g| g.known.iter().chain(&g.unknown).copied()).collect();
        let entity_freq = active_fraction(f, d_sae, &all);
        Self { layer, hook, d_sae, types, corpus_freq, entity_freq }
    }

    /// min over types of s (the generality score); −inf without types.
    pub fn score_min(&self, dir: Direction, j: usize) -> f32 {
        self.types.iter().map(|t| t.s(dir, j)).fold(f32::INFINITY, f32::min)
    }

    pub fn score_mean(&self, dir: Direction, j: usize) -> f32 {
        self.types.iter().map(|t| t.s(dir, j)).sum::<f32>() / self.types.len().max(1) as f32
    }

    /// Whether latent j passes the corpus filter (fires on fewer than `max_freq` of corpus tokens).
    pub fn passes(&self, j: usize, max_freq: f32) -> bool {
        self.corpus_freq.get(j).is_none_or(|&f| f < max_freq)
    }

    /// max over latents passing the filter of the generality score: the layer's MaxMin.
    pub fn maxmin(&self, dir: Direction, max_freq: f32) -> Option<(usize, f32)> {
        (0..self.d_sae)
            .filter(|&j| self.passes(j, max_freq))
            .map(|j| (j, self.score_min(dir, j)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    }

    /// Per type, the best s of any latent passing the filter.
    pub fn best_per_type(&self, dir: Direction, max_freq: f32) -> BTreeMap<EntityType, f32> {
        self.types
            .iter()
            .map(|t| {
                let best = (0..self.d_sae)
                    .filter(|&j| self.passes(j, max_freq))
                    .map(|j| t.s(dir, j))
                    .fold(f32::NEG_INFINITY, f32::max);
                (t.entity_type, best)
            })
            .collect()
    }
}

/// A latent in the joint ranking.
#[derive(Debug, Clone, Serialize)]
pub struct Ranked {
    pub direction: Direction,
    pub rank: usize,
    pub layer: usize,
    pub hook: String,
    pub latent: usize,
    pub score_min: f32,
    pub score_mean: f32,
    /// Per type: s, f_known, f_unknown (train).
    pub s: BTreeMap<EntityType, f32>,
    pub f_known: BTreeMap<EntityType, f32>,
    pub f_unknown: BTreeMap<EntityType, f32>,
    pub corpus_freq: Option<f32>,
    pub entity_freq: f32,
}

/// The `top` latents by generality score over all layers jointly (ties: lower layer, then
/// lower index), latents firing on ≥ `max_freq` of corpus tokens left out.
pub fn rank(layers: &[LayerScores], dir: Direction, max_freq: f32, top: usize) -> Vec<Ranked> {
    let mut all: Vec<(f32, usize, usize)> = Vec::new();
    for (li, l) in layers.iter().enumerate() {
        for j in 0..l.d_sae {
            if l.passes(j, max_freq) {
                all.push((l.score_min(dir, j), li, j));
            }
        }
    }
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(layers[a.1].layer.cmp(&layers[b.1].layer)).then(a.2.cmp(&b.2)));
    all.into_iter()
        .take(top)
        .enumerate()
        .map(|(rank, (score_min, li, j))| {
            let l = &layers[li];
            Ranked {
                direction: dir,
                rank,
                layer: l.layer,
                hook: l.hook.clone(),
                latent: j,
                score_min,
                score_mean: l.score_mean(dir, j),
                s: l.types.iter().map(|t| (t.entity_type, t.s(dir, j))).collect(),
                f_known: l.types.iter().map(|t| (t.entity_type, t.f_known[j])).collect(),
                f_unknown: l.types.iter().map(|t| (t.entity_type, t.f_unknown[j])).collect(),
                corpus_freq: l.corpus_freq.get(j).copied(),
                entity_freq: l.entity_freq[j],
            }
        })
        .collect()
}
