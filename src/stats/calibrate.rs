//! Statistics where the unit of inference is the direction, not the prompt.
//!
//! A steering claim says "this direction does X, random directions do not". Its evidence is one
//! effect per direction (each measured over the same prompts): the detector's, and those of N
//! control directions. Treating prompts × control directions as independent samples makes any
//! small shift look significant (p = 1e-51 from 10 directions); the honest test ranks the
//! detector's effect among the controls' effects, so with N controls no p-value can fall below
//! 1/(N + 1), and 19 controls are needed before p ≤ 0.05 is possible at all.
//!
//! The same test calibrates itself: putting each control in the detector's place, against the
//! other controls, gives the rate at which the verdict says "reproduced" when nothing is there
//! (the null rate), which for a rank test at level α is at most α by construction, and which the
//! claims report so a reader can check it.

use serde::{Deserialize, Serialize};

use super::{auroc, quantile_sorted, Estimate};
use crate::rng::SplitMix64;

const TAG_STRATIFIED: u64 = 0x57A7;

/// One-sided rank p-value of `effect` among `controls` (larger is more extreme):
/// (1 + #{c ≥ effect}) / (N + 1). Ties count against the effect. NaN controls are skipped.
pub fn rank_p(effect: f64, controls: &[f64]) -> f64 {
    let valid: Vec<f64> = controls.iter().copied().filter(|c| c.is_finite()).collect();
    let at_least = valid.iter().filter(|&&c| c >= effect).count();
    (1 + at_least) as f64 / (valid.len() + 1) as f64
}

/// The smallest p-value a rank test against `n` controls can give.
pub fn min_rank_p(n: usize) -> f64 {
    1.0 / (n + 1) as f64
}

/// How often a verdict rule passes when a control direction stands in for the detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NullRate {
    /// Control directions tried in the detector's place.
    pub draws: usize,
    /// Of those, how many the rule called reproduced.
    pub passed: usize,
    pub rate: f64,
}

/// Each control in turn is the candidate, the remaining controls its controls; `passes(i,
/// others)` applies the claim's whole rule to control `i`.
pub fn null_rate(n: usize, passes: impl Fn(usize, &[usize]) -> bool) -> NullRate {
    let mut passed = 0;
    for i in 0..n {
        let others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
        if passes(i, &others) {
            passed += 1;
        }
    }
    NullRate { draws: n, passed, rate: if n == 0 { f64::NAN } else { passed as f64 / n as f64 } }
}

/// AUROC pooled across strata without letting the strata separate each other: the fraction of
/// (positive, negative) pairs *within the same stratum* that the score orders correctly (ties
/// half). A type with many positives and few negatives cannot lift it, unlike an AUROC over all
/// rows pooled, where "is it a city" alone can score 0.875.
pub fn stratified_auroc(strata: &[(Vec<f64>, Vec<f64>)]) -> Option<f64> {
    let mut num = 0.0;
    let mut pairs = 0.0;
    for (pos, neg) in strata {
        if pos.is_empty() || neg.is_empty() {
            continue;
        }
        let w = (pos.len() * neg.len()) as f64;
        num += auroc(pos, neg)? * w;
        pairs += w;
    }
    (pairs > 0.0).then(|| num / pairs)
}

/// `stratified_auroc` with a percentile bootstrap interval, entities resampled within each
/// stratum and class.
pub fn stratified_auroc_ci(strata: &[(Vec<f64>, Vec<f64>)], reps: usize, seed: u64) -> Option<Estimate> {
    let value = stratified_auroc(strata)?;
    let mut rng = SplitMix64::derive(seed, TAG_STRATIFIED, 0);
    let resample = |v: &[f64], rng: &mut SplitMix64| -> Vec<f64> {
        (0..v.len()).map(|_| v[rng.below(v.len() as u64) as usize]).collect()
    };
    let mut stats = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s: Vec<(Vec<f64>, Vec<f64>)> =
            strata.iter().map(|(p, n)| (resample(p, &mut rng), resample(n, &mut rng))).collect();
        if let Some(a) = stratified_auroc(&s) {
            stats.push(a);
        }
    }
    stats.sort_by(f64::total_cmp);
    if stats.is_empty() {
        return None;
    }
    Some(Estimate { value, lo: quantile_sorted(&stats, 0.025), hi: quantile_sorted(&stats, 0.975) })
}

/// Mean of per-prompt differences `a[i] − b[i]` with a percentile bootstrap interval over
/// prompts (paired: both conditions saw the same prompts).
pub fn paired_mean_diff(a: &[f64], b: &[f64], reps: usize, seed: u64) -> Option<Estimate> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    super::bootstrap(&d, reps, seed, |s| s.iter().sum::<f64>() / s.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_p_counts_ties_against_the_effect() {
        assert_eq!(rank_p(5.0, &[1.0, 2.0, 3.0]), 0.25);
        assert_eq!(rank_p(2.0, &[1.0, 2.0, 3.0]), 0.75);
        assert_eq!(rank_p(0.0, &[]), 1.0);
        assert!((min_rank_p(19) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn null_rate_of_a_rank_test_is_at_most_alpha() {
        let effects: Vec<f64> = (0..20).map(|i| (i as f64 * 0.37).sin()).collect();
        let nr = null_rate(20, |i, others| {
            let o: Vec<f64> = others.iter().map(|&j| effects[j]).collect();
            rank_p(effects[i], &o) <= 0.05
        });
        assert_eq!(nr.draws, 20);
        assert!(nr.rate <= 0.05, "{nr:?}");
    }

    #[test]
    fn stratified_auroc_ignores_between_strata_separation() {
        // Within each stratum the score is useless; pooled it would separate the strata.
        let strata = vec![(vec![10.0, 11.0], vec![10.0, 11.0]), (vec![0.0, 1.0], vec![0.0, 1.0])];
        assert!((stratified_auroc(&strata).unwrap() - 0.5).abs() < 1e-12);
        let pooled = auroc(&[10.0, 11.0, 10.0, 11.0, 0.0], &[0.0, 1.0, 1.0]).unwrap();
        assert!(pooled > 0.7);
        let e = stratified_auroc_ci(&strata, 200, 1).unwrap();
        assert!(e.lo <= 0.5 && e.hi >= 0.5);
    }
}
