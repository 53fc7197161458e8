//! Held-out evaluation of one-number detectors (a latent's activation, a probe's logit): AUROC
//! with stratified bootstrap 95% intervals, and accuracy at a threshold chosen on the train split
//! (balanced accuracy with a bootstrap interval, plain accuracy as a value).

use serde::Serialize;

use crate::entities::questions::EntityType;
use crate::stats::{self, Estimate};

/// The threshold that maximises balanced accuracy on `pos` / `neg` (score > threshold means
/// positive): a midpoint between adjacent distinct scores, or below all of them.
pub fn train_threshold(pos: &[f64], neg: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = pos.iter().map(|&s| (s, true)).chain(neg.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (np, nn) = (pos.len().max(1) as f64, neg.len().max(1) as f64);
    // Threshold below everything: every row positive.
    let first = all.first().map(|x| x.0).unwrap_or(0.0);
    let mut best = (0.5, first - 1.0);
    let (mut neg_below, mut pos_below) = (0usize, 0usize);
    let mut i = 0;
    while i < all.len() {
        let v = all[i].0;
        while i < all.len() && all[i].0 == v {
            if all[i].1 {
                pos_below += 1;
            } else {
                neg_below += 1;
            }
            i += 1;
        }
        let t = if i < all.len() { (v + all[i].0) / 2.0 } else { v };
        let bal = 0.5 * ((pos.len() - pos_below) as f64 / np + neg_below as f64 / nn);
        if bal > best.0 {
            best = (bal, t);
        }
    }
    best.1
}

/// One detector on one subset of held-out rows.
#[derive(Debug, Clone, Serialize)]
pub struct Eval {
    pub subset: String,
    /// None: all types pooled.
    pub entity_type: Option<EntityType>,
    pub n_pos: usize,
    pub n_neg: usize,
    pub auroc: Option<Estimate>,
    pub balanced_accuracy: Option<Estimate>,
    pub accuracy: Option<f64>,
}

/// AUROC (positives should score higher) and accuracy at `threshold`, with `reps` bootstrap
/// resamples seeded by `seed`.
pub fn evaluate(
    subset: &str,
    entity_type: Option<EntityType>,
    pos: &[f64],
    neg: &[f64],
    threshold: f64,
    reps: usize,
    seed: u64,
) -> Eval {
    let auroc = stats::auroc_ci(pos, neg, reps, seed);
    let rows: Vec<(bool, bool)> =
        pos.iter().map(|&s| (true, s > threshold)).chain(neg.iter().map(|&s| (false, s > threshold))).collect();
    let balanced_accuracy =
        if pos.is_empty() || neg.is_empty() { None } else { stats::bootstrap(&rows, reps, seed, balanced_accuracy) };
    let accuracy = if rows.is_empty() {
        None
    } else {
        Some(rows.iter().filter(|(y, p)| y == p).count() as f64 / rows.len() as f64)
    };
    Eval {
        subset: subset.to_string(),
        entity_type,
        n_pos: pos.len(),
        n_neg: neg.len(),
        auroc,
        balanced_accuracy,
        accuracy,
    }
}

/// Mean of the true-positive and true-negative rates (NaN when a resample lacks a class).
pub fn balanced_accuracy(rows: &[(bool, bool)]) -> f64 {
    let (mut tp, mut p, mut tn, mut n) = (0usize, 0usize, 0usize, 0usize);
    for &(y, pred) in rows {
        if y {
            p += 1;
            tp += usize::from(pred);
        } else {
            n += 1;
            tn += usize::from(!pred);
        }
    }
    if p == 0 || n == 0 {
        return f64::NAN;
    }
    0.5 * (tp as f64 / p as f64 + tn as f64 / n as f64)
}
