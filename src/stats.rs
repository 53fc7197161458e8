//! The statistics the experiments report, in one place: AUROC with stratified bootstrap
//! intervals, Wilson intervals for rates, Welch's t-test, difference-of-means directions and an
//! L2-regularised logistic probe. Everything seeded draws from `crate::rng`, so an interval is
//! the same on every machine. Checked against scipy and scikit-learn
//! (`tools/make_stats_cases.py` → `tests/fixtures/stats/cases.json`).

use anyhow::{bail, Result};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::rng::SplitMix64;

pub mod calibrate;

/// A point estimate with a 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Area under the ROC curve of scores that should be higher for `pos` than for `neg`: the
/// probability that a random positive outscores a random negative, ties counting one half
/// (the Mann–Whitney U statistic over n_pos · n_neg). `None` when a class is empty.
pub fn auroc(pos: &[f64], neg: &[f64]) -> Option<f64> {
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    // Rank all scores (average ranks for ties); U = R_pos − n_pos (n_pos + 1) / 2.
    let mut all: Vec<(f64, bool)> = pos.iter().map(|&s| (s, true)).chain(neg.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += all[i..=j].iter().filter(|x| x.1).count() as f64 * avg_rank;
        i = j + 1;
    }
    let (np, nn) = (pos.len() as f64, neg.len() as f64);
    Some((rank_sum_pos - np * (np + 1.0) / 2.0) / (np * nn))
}

/// AUROC with a 95% percentile interval from `reps` stratified bootstrap resamples (positives
/// and negatives resampled separately, so every resample has both classes).
pub fn auroc_ci(pos: &[f64], neg: &[f64], reps: usize, seed: u64) -> Option<Estimate> {
    let value = auroc(pos, neg)?;
    let mut rng = SplitMix64::derive(seed, TAG_BOOTSTRAP, 0);
    let mut stats = Vec::with_capacity(reps);
    let (mut p, mut n) = (vec![0.0; pos.len()], vec![0.0; neg.len()]);
    for _ in 0..reps {
        p.iter_mut().for_each(|x| *x = pos[rng.below(pos.len() as u64) as usize]);
        n.iter_mut().for_each(|x| *x = neg[rng.below(neg.len() as u64) as usize]);
        stats.push(auroc(&p, &n).expect("both classes are non-empty"));
    }
    let (lo, hi) = percentile_interval(&mut stats);
    Some(Estimate { value, lo, hi })
}

/// The mean with a 95% percentile bootstrap interval.
pub fn mean_ci(v: &[f64], reps: usize, seed: u64) -> Estimate {
    bootstrap(v, reps, seed, |x| x.iter().sum::<f64>() / x.len() as f64).unwrap_or(Estimate {
        value: f64::NAN,
        lo: f64::NAN,
        hi: f64::NAN,
    })
}

/// Any statistic of a sample with a 95% percentile bootstrap interval.
pub fn bootstrap<T: Copy>(items: &[T], reps: usize, seed: u64, stat: impl Fn(&[T]) -> f64) -> Option<Estimate> {
    if items.is_empty() {
        return None;
    }
    let value = stat(items);
    let mut rng = SplitMix64::derive(seed, TAG_BOOTSTRAP, 1);
    let mut buf = items.to_vec();
    let mut stats: Vec<f64> = (0..reps)
        .map(|_| {
            buf.iter_mut().for_each(|x| *x = items[rng.below(items.len() as u64) as usize]);
            stat(&buf)
        })
        .collect();
    let (lo, hi) = percentile_interval(&mut stats);
    Some(Estimate { value, lo, hi })
}

const TAG_BOOTSTRAP: u64 = 0xB007;

/// 2.5th and 97.5th percentiles (linear interpolation between order statistics, numpy's
/// default), NaNs dropped.
fn percentile_interval(v: &mut Vec<f64>) -> (f64, f64) {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    (quantile_sorted(v, 0.025), quantile_sorted(v, 0.975))
}

/// The q-quantile of sorted values, interpolating linearly (numpy's `linear` method).
pub fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let h = (v.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// A rate k / n with its 95% Wilson score interval (well-behaved at 0 and n, unlike the normal
/// approximation). `None` for n = 0.
pub fn wilson(k: usize, n: usize) -> Option<Estimate> {
    if n == 0 || k > n {
        return None;
    }
    let z = 1.959_963_984_540_054;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    Some(Estimate { value: p, lo: (centre - half).max(0.0), hi: (centre + half).min(1.0) })
}

/// Welch's two-sample t-test (unequal variances).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Welch {
    /// mean(a) − mean(b)
    pub diff: f64,
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

pub fn welch(a: &[f64], b: &[f64]) -> Result<Welch> {
    if a.len() < 2 || b.len() < 2 {
        bail!("Welch's t-test needs at least 2 values per group (got {} and {})", a.len(), b.len());
    }
    let (ma, va) = mean_var(a);
    let (mb, vb) = mean_var(b);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (sa, sb) = (va / na, vb / nb);
    let se2 = sa + sb;
    let diff = ma - mb;
    if se2 == 0.0 {
        // Both groups constant: no evidence either way unless the means differ.
        let p = if diff == 0.0 { 1.0 } else { 0.0 };
        return Ok(Welch {
            diff,
            t: if diff == 0.0 { 0.0 } else { diff.signum() * f64::INFINITY },
            df: na + nb - 2.0,
            p,
        });
    }
    let t = diff / se2.sqrt();
    let df = se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df).map_err(|e| anyhow::anyhow!("Student t with df {df}: {e}"))?;
    let p = 2.0 * dist.cdf(-t.abs());
    Ok(Welch { diff, t, df, p })
}

/// Arithmetic mean; 0 for an empty slice.
pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// Mean and unbiased variance (n − 1).
pub fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = if x.len() > 1 { x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, v)
}

/// mean(rows of class 1) − mean(rows of class 0), over rows of width `d` stored back to back.
pub fn diff_of_means(x: &[f32], d: usize, y: &[bool]) -> Result<Vec<f32>> {
    check_rows(x, d, y)?;
    let (mut m1, mut m0) = (vec![0f64; d], vec![0f64; d]);
    let (mut n1, mut n0) = (0usize, 0usize);
    for (row, &label) in x.chunks(d).zip(y) {
        let (m, n) = if label { (&mut m1, &mut n1) } else { (&mut m0, &mut n0) };
        m.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
        *n += 1;
    }
    if n1 == 0 || n0 == 0 {
        bail!("a difference of means needs both classes ({n1} positive, {n0} negative rows)");
    }
    Ok(m1.iter().zip(&m0).map(|(a, b)| (a / n1 as f64 - b / n0 as f64) as f32).collect())
}

fn check_rows(x: &[f32], d: usize, y: &[bool]) -> Result<()> {
    if d == 0 || x.len() != d * y.len() {
        bail!("{} values for {} rows of width {d}", x.len(), y.len());
    }
    Ok(())
}

/// An L2-regularised logistic regression on standardised features: p(y = 1 | x) =
/// σ(w · (x − μ) / σ + b). Fitted by Newton's method (IRLS) on the mean log-loss plus
/// `l2 / 2 · ‖w‖²` (scikit-learn's `LogisticRegression(C = 1 / (l2 · n))` up to its
/// convention of summing rather than averaging the loss).
#[derive(Debug, Clone, Serialize)]
pub struct LogisticProbe {
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
    pub l2: f64,
}

impl LogisticProbe {
    pub fn fit(x: &[f32], d: usize, y: &[bool], l2: f64) -> Result<Self> {
        check_rows(x, d, y)?;
        let n = y.len();
        if !y.iter().any(|&v| v) || y.iter().all(|&v| v) {
            bail!("a probe needs both classes among its {n} rows");
        }
        if l2 <= 0.0 || !l2.is_finite() {
            bail!("the L2 penalty must be positive, got {l2}");
        }
        // Standardise: the penalty then treats every dimension alike (Gemma's residual stream
        // has a few dimensions a hundred times larger than the rest).
        let mut mean = vec![0f64; d];
        for row in x.chunks(d) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64 / n as f64);
        }
        let mut var = vec![0f64; d];
        for row in x.chunks(d) {
            var.iter_mut().zip(row).zip(&mean).for_each(|((s, &v), m)| *s += (v as f64 - m).powi(2) / n as f64);
        }
        let scale: Vec<f64> = var.iter().map(|v| if *v > 0.0 { v.sqrt() } else { 1.0 }).collect();
        let z: Vec<f64> = x
            .chunks(d)
            .flat_map(|row| {
                row.iter().zip(&mean).zip(&scale).map(|((&v, m), s)| (v as f64 - m) / s).collect::<Vec<_>>()
            })
            .collect();
        let t: Vec<f64> = y.iter().map(|&v| if v { 1.0 } else { 0.0 }).collect();
        // Parameters θ = (w, b); Newton steps on the regularised mean log-loss (b unpenalised).
        let p = d + 1;
        let mut theta = vec![0f64; p];
        for _ in 0..50 {
            let mut grad = vec![0f64; p];
            let mut hess = vec![0f64; p * p];
            for (row, &ti) in z.chunks(d).zip(&t) {
                let s = sigmoid(row.iter().zip(&theta).map(|(a, b)| a * b).sum::<f64>() + theta[d]);
                let (g, h) = ((s - ti) / n as f64, s * (1.0 - s) / n as f64);
                for i in 0..p {
                    let xi = if i < d { row[i] } else { 1.0 };
                    grad[i] += g * xi;
                    if h > 0.0 {
                        for j in 0..=i {
                            let xj = if j < d { row[j] } else { 1.0 };
                            hess[i * p + j] += h * xi * xj;
                        }
                    }
                }
            }
            for i in 0..d {
                grad[i] += l2 * theta[i];
                hess[i * p + i] += l2;
            }
            hess[d * p + d] += 1e-12; // the bias is unpenalised; keep the system definite
            for i in 0..p {
                for j in 0..i {
                    hess[j * p + i] = hess[i * p + j];
                }
            }
            let step = cholesky_solve(&hess, &grad, p)?;
            let size = step.iter().map(|s| s.abs()).fold(0.0, f64::max);
            theta.iter_mut().zip(&step).for_each(|(a, s)| *a -= s);
            if size < 1e-10 {
                break;
            }
        }
        Ok(Self {
            mean: mean.iter().map(|&v| v as f32).collect(),
            scale: scale.iter().map(|&v| v as f32).collect(),
            weights: theta[..d].iter().map(|&v| v as f32).collect(),
            bias: theta[d] as f32,
            l2,
        })
    }

    /// The logit w · (x − μ) / σ + b of one row.
    pub fn logit(&self, row: &[f32]) -> f64 {
        row.iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((&v, &m), &s), &w)| (v as f64 - m as f64) / s as f64 * w as f64)
            .sum::<f64>()
            + self.bias as f64
    }

    /// The probe as a direction in the raw space (w / σ), e.g. for steering or cosines.
    pub fn raw_direction(&self) -> Vec<f32> {
        self.weights.iter().zip(&self.scale).map(|(w, s)| w / s).collect()
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Solves A s = g for a symmetric positive definite A (p × p, row-major).
fn cholesky_solve(a: &[f64], g: &[f64], p: usize) -> Result<Vec<f64>> {
    let mut l = vec![0f64; p * p];
    for i in 0..p {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i * p + k] * l[j * p + k]).sum();
            if i == j {
                let v = a[i * p + i] - sum;
                if v <= 0.0 || !v.is_finite() {
                    bail!("the probe's Newton system is not positive definite (pivot {i}: {v})");
                }
                l[i * p + i] = v.sqrt();
            } else {
                l[i * p + j] = (a[i * p + j] - sum) / l[j * p + j];
            }
        }
    }
    let mut y = vec![0f64; p];
    for i in 0..p {
        y[i] = (g[i] - (0..i).map(|k| l[i * p + k] * y[k]).sum::<f64>()) / l[i * p + i];
    }
    let mut s = vec![0f64; p];
    for i in (0..p).rev() {
        s[i] = (y[i] - (i + 1..p).map(|k| l[k * p + i] * s[k]).sum::<f64>()) / l[i * p + i];
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_counts_ties_as_half() {
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0]), Some(1.0));
        assert_eq!(auroc(&[1.0], &[1.0]), Some(0.5));
        assert_eq!(auroc(&[2.0, 1.0], &[1.0, 3.0]), Some((1.0 + 0.5) / 4.0));
        assert_eq!(auroc(&[], &[1.0]), None);
    }

    #[test]
    fn wilson_is_bounded_and_contains_the_rate() {
        let e = wilson(0, 20).unwrap();
        assert_eq!((e.value, e.lo), (0.0, 0.0));
        assert!(e.hi > 0.1 && e.hi < 0.2, "{e:?}");
        let e = wilson(7, 10).unwrap();
        assert!(e.lo < 0.7 && e.hi > 0.7 && e.hi < 1.0);
        assert!(wilson(1, 0).is_none());
    }

    #[test]
    fn bootstrap_intervals_are_seeded_and_cover_the_value() {
        let pos: Vec<f64> = (0..40).map(|i| i as f64 * 0.1 + 1.0).collect();
        let neg: Vec<f64> = (0..40).map(|i| i as f64 * 0.1).collect();
        let a = auroc_ci(&pos, &neg, 500, 3).unwrap();
        assert_eq!(a, auroc_ci(&pos, &neg, 500, 3).unwrap());
        assert!(a.lo <= a.value && a.value <= a.hi && a.hi <= 1.0, "{a:?}");
    }

    #[test]
    fn probes_separate_separable_data_and_refuse_one_class() {
        // Class is the sign of the first coordinate; the second is noise.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..60 {
            let a = (i as f32 - 29.5) / 10.0;
            x.extend([a, ((i * 7919) % 13) as f32]);
            y.push(a > 0.0);
        }
        let p = LogisticProbe::fit(&x, 2, &y, 0.1).unwrap();
        let scores: Vec<f64> = x.chunks(2).map(|r| p.logit(r)).collect();
        let (pos, neg): (Vec<_>, Vec<_>) = scores.iter().zip(&y).partition(|(_, &l)| l);
        let auc = auroc(&pos.iter().map(|p| *p.0).collect::<Vec<_>>(), &neg.iter().map(|p| *p.0).collect::<Vec<_>>());
        assert_eq!(auc, Some(1.0));
        assert!(p.weights[0].abs() > 5.0 * p.weights[1].abs(), "{:?}", p.weights);
        assert!(LogisticProbe::fit(&x, 2, &[true; 60], 0.1).is_err());
        assert!(LogisticProbe::fit(&x, 3, &y, 0.1).is_err());
    }
}
