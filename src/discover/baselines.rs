//! Baselines that a latent must beat to say more than "a direction exists" or "popular / long
//! names": per layer a difference-of-means direction and an L2 logistic probe on the raw
//! residual, a probe on popularity and name token count alone, and random latents of the same
//! firing frequency.

use anyhow::Result;
use serde::Serialize;

use crate::stats::{self, Estimate, LogisticProbe};

/// Scores of a linear detector fitted on the train rows, at one layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerBaseline {
    pub layer: usize,
    pub hook: String,
    /// Held-out (test) AUROC, known as positive.
    pub dom_test: Option<Estimate>,
    pub probe_test: Option<Estimate>,
    /// Validation AUROC (chooses the layer of the exported probe without looking at test).
    pub dom_validation: Option<f64>,
    pub probe_validation: Option<f64>,
    pub probe_train: Option<f64>,
}

/// A difference-of-means direction and where it is centred (the midpoint of the class means),
/// as a linear score `direction · (x − center)`.
#[derive(Debug, Clone)]
pub struct Dom {
    pub direction: Vec<f32>,
    pub center: Vec<f32>,
}

impl Dom {
    pub fn fit(x: &[f32], d: usize, y: &[bool]) -> Result<Self> {
        let direction = stats::diff_of_means(x, d, y)?;
        let (mut m1, mut m0) = (vec![0f64; d], vec![0f64; d]);
        let (mut n1, mut n0) = (0f64, 0f64);
        for (row, &label) in x.chunks(d).zip(y) {
            let (m, n) = if label { (&mut m1, &mut n1) } else { (&mut m0, &mut n0) };
            m.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
            *n += 1.0;
        }
        let center = m1.iter().zip(&m0).map(|(a, b)| (0.5 * (a / n1 + b / n0)) as f32).collect();
        Ok(Self { direction, center })
    }

    pub fn score(&self, row: &[f32]) -> f64 {
        row.iter().zip(&self.center).zip(&self.direction).map(|((&v, &c), &w)| (v as f64 - c as f64) * w as f64).sum()
    }
}

/// Splits scores of rows into (positives, negatives).
pub fn split_scores(scores: &[f64], y: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let mut p = Vec::new();
    let mut n = Vec::new();
    for (&s, &l) in scores.iter().zip(y) {
        if l {
            p.push(s);
        } else {
            n.push(s);
        }
    }
    (p, n)
}

/// Features of the popularity / name-length baseline for one entity: log10 popularity rank
/// (0 when unknown, with a flag), the name's token count, and one indicator per type index.
pub fn confound_features(rank: Option<u64>, name_tokens: usize, type_index: usize, n_types: usize) -> Vec<f32> {
    let mut f = vec![
        rank.map(|r| (r.max(1) as f32).log10()).unwrap_or(0.0),
        f32::from(rank.is_none() as u8),
        name_tokens as f32,
    ];
    f.extend((0..n_types).map(|t| f32::from((t == type_index) as u8)));
    f
}

/// Fits a probe, dropping constant columns (a standardised constant has no scale).
pub fn fit_probe(x: &[f32], d: usize, y: &[bool], l2: f64) -> Result<(LogisticProbe, Vec<usize>)> {
    let n = y.len();
    let keep: Vec<usize> = (0..d)
        .filter(|&j| {
            let first = x[j];
            (0..n).any(|r| x[r * d + j] != first)
        })
        .collect();
    let xs: Vec<f32> = (0..n).flat_map(|r| keep.iter().map(move |&j| x[r * d + j])).collect();
    let probe = LogisticProbe::fit(&xs, keep.len().max(1), y, l2)?;
    Ok((probe, keep))
}

/// The logit of a probe fitted by `fit_probe` on a full-width row.
pub fn probe_logit(probe: &LogisticProbe, keep: &[usize], row: &[f32]) -> f64 {
    let sel: Vec<f32> = keep.iter().map(|&j| row[j]).collect();
    probe.logit(&sel)
}

/// Indices of `n` latents whose firing frequency is closest to `target` on a log scale
/// (ties: lower index), never one of `exclude`, only latents that fire at all.
pub fn same_frequency_latents(freq: &[f32], target: f32, exclude: &[usize], n: usize) -> Vec<usize> {
    let lt = (target.max(1e-6)).ln();
    let mut c: Vec<(f32, usize)> = freq
        .iter()
        .enumerate()
        .filter(|(j, &f)| f > 0.0 && !exclude.contains(j))
        .map(|(j, &f)| ((f.ln() - lt).abs(), j))
        .collect();
    c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    c.into_iter().take(n).map(|x| x.1).collect()
}
