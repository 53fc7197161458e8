//! The attention claims (paper Fig. 4c–e) with their controls: the head is chosen on train and
//! validation entities, and every verdict is computed once on test entities.
//!
//! * **Contrast** (known entities draw more attention from the final token): the chosen head's
//!   known − unknown difference within each type with enough test entities, pooled over those
//!   types with weights n_k·n_u/(n_k+n_u), a bootstrap interval resampling within type and class;
//!   its null rate is how often the same rule passes with the class labels permuted within type.
//! * **Steering** (the unknown direction lowers that attention on known entities, the known one
//!   raises it on unknown ones): each direction's effect is the mean change of the head's
//!   attention over the test prompts, signed so the paper's expectation is positive; the
//!   detector is ranked among Gaussian directions of the same magnitude (the direction is the
//!   unit), and must beat the opposite class's direction. The strength is chosen on the
//!   selection entities. The positive control edits the head's attention directly (the entity's
//!   key knocked out, or every other key knocked out), through the same measurement.

use anyhow::{bail, Result};
use serde::Serialize;

use super::attention::{measure, measure_with, Directions, Expect, HeadGrid, MeasureOptions, Prompt};
use super::direction::SteeringDirection;
use crate::hooks::{HookPoint, HookSpec, Intervention, Positions};
use crate::progress::Progress;
use crate::rng::{SplitMix64, TAG_SHUFFLE};
use crate::stats::calibrate::{null_rate, NullRate};
use crate::stats::{bootstrap, mean, mean_var, quantile_sorted, Estimate};
use crate::Model;

/// A type enters the test with at least this many known and unknown test prompts.
pub const MIN_TYPE: usize = 10;
/// Label permutations behind the contrast's null rate.
pub const PERMUTATIONS: usize = 100;
/// Gaussian directions run beside the detector at each strength on the selection entities.
const SELECT_CONTROLS: usize = 2;

#[derive(Debug, Clone, Serialize)]
pub struct HeadChoice {
    pub layer: usize,
    pub head: usize,
    pub rule: String,
    pub n_known: usize,
    pub n_unknown: usize,
    /// The five best heads on the selection entities: (layer, head, stratified t).
    pub candidates: Vec<(usize, usize, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TypeDiff {
    pub entity_type: String,
    pub n_known: usize,
    pub n_unknown: usize,
    pub diff: Option<Estimate>,
    pub pooled: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContrastTest {
    pub per_type: Vec<TypeDiff>,
    pub stratified: Option<Estimate>,
    pub null: NullRate,
}

#[derive(Debug, Clone, Serialize)]
pub struct SteerTest {
    /// "known" or "unknown": the prompts steered.
    pub prompts: String,
    pub expect: Expect,
    /// The head measured: the best selection head at or after the direction's layer.
    pub head: (usize, usize),
    pub direction: String,
    pub layer: usize,
    pub coef: f64,
    pub magnitude: f64,
    /// Per strength on the selection entities: (coef, detector effect, Gaussian mean effect).
    pub coef_choice: Vec<[f64; 3]>,
    pub n_prompts: usize,
    /// Mean signed change of the head's attention (positive: as the paper expects).
    pub detector: Option<Estimate>,
    pub controls: Vec<f64>,
    /// Each control's interval's lower bound (for the null rate).
    pub control_lo: Vec<f64>,
    pub opposite: Option<f64>,
    /// The direct edit of the head's attention (the positive control).
    pub positive: Option<Estimate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeadVerdicts {
    pub choice: HeadChoice,
    pub contrast: ContrastTest,
    pub steering: Vec<SteerTest>,
    pub notes: Vec<String>,
}

/// Known and unknown values of one head per type: (type, known, unknown).
type Groups = Vec<(String, Vec<f64>, Vec<f64>)>;

/// Known and unknown values of one head, grouped by type.
fn by_type(items: &[&Prompt], grids: &[HeadGrid], l: usize, h: usize) -> Vec<(String, Vec<f64>, Vec<f64>)> {
    let mut types: Vec<String> = items.iter().map(|i| i.entity_type.to_string()).collect();
    types.sort();
    types.dedup();
    types
        .into_iter()
        .map(|t| {
            let pick = |known: bool| -> Vec<f64> {
                items
                    .iter()
                    .zip(grids)
                    .filter(|(i, _)| i.entity_type.to_string() == t && i.known == known)
                    .map(|(_, g)| g[l][h] as f64)
                    .collect()
            };
            let (k, u) = (pick(true), pick(false));
            (t, k, u)
        })
        .collect()
}

fn weight(nk: usize, nu: usize) -> f64 {
    (nk * nu) as f64 / (nk + nu).max(1) as f64
}

/// Stratified known − unknown difference and its t (types with at least `min` of each class).
fn stratified(groups: &[(String, Vec<f64>, Vec<f64>)], min: usize) -> Option<(f64, f64)> {
    let (mut num, mut den, mut se2) = (0.0, 0.0, 0.0);
    for (_, k, u) in groups.iter().filter(|(_, k, u)| k.len() >= min && u.len() >= min) {
        let w = weight(k.len(), u.len());
        num += w * (mean(k) - mean(u));
        den += w;
        se2 += w * w * (mean_var(k).1 / k.len() as f64 + mean_var(u).1 / u.len() as f64);
    }
    (den > 0.0).then(|| (num / den, (num / den) / (se2.sqrt() / den).max(1e-12)))
}

/// The stratified difference with a bootstrap interval (resampling within type and class).
fn stratified_ci(groups: &[(String, Vec<f64>, Vec<f64>)], min: usize, reps: usize, seed: u64) -> Option<Estimate> {
    let (value, _) = stratified(groups, min)?;
    let mut rng = SplitMix64::derive(seed, TAG_SHUFFLE, 77);
    let mut stats = Vec::with_capacity(reps);
    for _ in 0..reps {
        let g: Vec<(String, Vec<f64>, Vec<f64>)> = groups
            .iter()
            .map(|(t, k, u)| {
                let re = |v: &[f64], rng: &mut SplitMix64| -> Vec<f64> {
                    (0..v.len()).map(|_| v[rng.below(v.len().max(1) as u64) as usize]).collect()
                };
                (t.clone(), re(k, &mut rng), re(u, &mut rng))
            })
            .collect();
        if let Some((d, _)) = stratified(&g, min) {
            stats.push(d);
        }
    }
    stats.sort_by(f64::total_cmp);
    (!stats.is_empty()).then(|| Estimate {
        value,
        lo: quantile_sorted(&stats, 0.025),
        hi: quantile_sorted(&stats, 0.975),
    })
}

/// Chooses the head, tests the contrast and (with directions) the steering claims.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &Model,
    items: &[&Prompt],
    grids: &[HeadGrid],
    directions: Option<&Directions>,
    coefs: &[f64],
    n_gaussian: usize,
    mo: &MeasureOptions,
    reps: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<HeadVerdicts> {
    if items.len() != grids.len() {
        bail!("{} prompts but {} measurements", items.len(), grids.len());
    }
    let (nl, nh) = (model.cfg().n_layers, model.cfg().n_heads);
    let sel: Vec<usize> = (0..items.len()).filter(|&i| items[i].split != "test").collect();
    let test: Vec<usize> = (0..items.len()).filter(|&i| items[i].split == "test").collect();
    let sub = |idx: &[usize]| -> (Vec<&Prompt>, Vec<HeadGrid>) {
        (idx.iter().map(|&i| items[i]).collect(), idx.iter().map(|&i| grids[i].clone()).collect())
    };
    let (sel_items, sel_grids) = sub(&sel);
    let (test_items, test_grids) = sub(&test);
    let mut scored = Vec::new();
    for l in 0..nl {
        for h in 0..nh {
            if let Some((_, t)) = stratified(&by_type(&sel_items, &sel_grids, l, h), 2) {
                scored.push((l, h, t));
            }
        }
    }
    scored.sort_by(|a, b| b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    let Some(&(l, h, _)) = scored.first() else {
        bail!("no type has two known and two unknown entities outside the test split to choose a head on");
    };
    let choice = HeadChoice {
        layer: l,
        head: h,
        rule: "the head with the largest stratified Welch-type t of known − unknown attention on train and validation entities".into(),
        n_known: sel_items.iter().filter(|i| i.known).count(),
        n_unknown: sel_items.iter().filter(|i| !i.known).count(),
        candidates: scored.iter().take(5).copied().collect(),
    };

    // The contrast on test, and its null by within-type label permutation.
    let groups = by_type(&test_items, &test_grids, l, h);
    let per_type = groups
        .iter()
        .map(|(t, k, u)| TypeDiff {
            entity_type: t.clone(),
            n_known: k.len(),
            n_unknown: u.len(),
            diff: stratified_ci(&[(t.clone(), k.clone(), u.clone())], 1, reps, seed),
            pooled: k.len() >= MIN_TYPE && u.len() >= MIN_TYPE,
        })
        .collect();
    let strat = stratified_ci(&groups, MIN_TYPE, reps, seed);
    let mut rng = SplitMix64::derive(seed, TAG_SHUFFLE, 78);
    let perms: Vec<Groups> = (0..PERMUTATIONS)
        .map(|_| {
            groups
                .iter()
                .map(|(t, k, u)| {
                    let mut all: Vec<f64> = k.iter().chain(u).copied().collect();
                    crate::rng::shuffle(&mut all, &mut rng);
                    let (a, b) = all.split_at(k.len());
                    (t.clone(), a.to_vec(), b.to_vec())
                })
                .collect()
        })
        .collect();
    let null = null_rate(perms.len(), |i, _| stratified_ci(&perms[i], MIN_TYPE, 200, seed).is_some_and(|e| e.lo > 0.0));
    let contrast = ContrastTest { per_type, stratified: strat, null };

    let mut steering = Vec::new();
    let mut notes = Vec::new();
    if let Some(d) = directions {
        for (known, dir, own, expect) in
            [(true, &d.unknown, &d.known, Expect::Decrease), (false, &d.known, &d.unknown, Expect::Increase)]
        {
            // A direction can only move heads at or after its layer: the steering claim's head is
            // the best selection head there (the contrast's head when it qualifies).
            let Some(&(hl, hh, _)) = scored.iter().find(|x| x.0 >= dir.layer) else {
                notes.push(format!("{} is steered at layer {}, after every head", dir.name, dir.layer));
                continue;
            };
            let pick = |idx: &[usize]| -> Vec<&Prompt> {
                idx.iter().map(|&i| items[i]).filter(|i| i.known == known).collect()
            };
            let (sel_k, test_k) = (pick(&sel), pick(&test));
            if sel_k.is_empty() || test_k.is_empty() {
                continue;
            }
            steering.push(steer_test(
                model,
                &sel_k,
                &test_k,
                (hl, hh),
                dir,
                own,
                expect,
                coefs,
                n_gaussian,
                mo,
                reps,
                seed,
                progress,
            )?);
        }
    }
    Ok(HeadVerdicts { choice, contrast, steering, notes })
}

/// Norm of the residual entering `layer` at the entity's last token, averaged over `items`.
fn mean_norm(
    model: &Model,
    items: &[&Prompt],
    layer: usize,
    mo: &MeasureOptions,
    progress: &dyn Progress,
) -> Result<f64> {
    let o = MeasureOptions { norm_layers: vec![layer], value_weighted: false, ..mo.clone() };
    let m = measure(model, items, None, &o, progress)?;
    Ok(mean(m.resid_norms.get(&layer).map_or(&[][..], |v| v.as_slice())))
}

/// Per prompt, the head's attention change under `edit`, signed toward `expect`.
#[allow(clippy::too_many_arguments)]
fn signed_deltas(
    model: &Model,
    items: &[&Prompt],
    base: &[HeadGrid],
    (l, h): (usize, usize),
    edit: &super::attention::EditFn,
    expect: Expect,
    mo: &MeasureOptions,
    progress: &dyn Progress,
) -> Result<Vec<f64>> {
    let m = measure_with(model, items, edit, None, mo, progress)?;
    let sign = if expect == Expect::Increase { 1.0 } else { -1.0 };
    Ok(m.attention.iter().zip(base).map(|(a, b)| sign * (a[l][h] - b[l][h]) as f64).collect())
}

#[allow(clippy::too_many_arguments)]
fn steer_test(
    model: &Model,
    sel: &[&Prompt],
    test: &[&Prompt],
    head: (usize, usize),
    dir: &SteeringDirection,
    own: &SteeringDirection,
    expect: Expect,
    coefs: &[f64],
    n_gaussian: usize,
    mo: &MeasureOptions,
    reps: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<SteerTest> {
    let plain = MeasureOptions { value_weighted: false, norm_layers: Vec::new(), ..mo.clone() };
    let d_model = model.cfg().d_model;
    let norm = mean_norm(model, sel, dir.layer, mo, progress)?;
    let device = model.transformer.device().clone();
    let steer_edit = |d: SteeringDirection, magnitude: f64| {
        let device = device.clone();
        move |spec: HookSpec, eb: &crate::EntityBatch| -> Result<HookSpec> {
            d.add(spec, eb.last(), magnitude, &device)
        }
    };
    let gaussian = |i: u64| SteeringDirection::random(dir.layer, d_model, seed, i);
    // Strength, on the selection entities.
    let sel_base = measure(model, sel, None, &plain, progress)?.attention;
    let mut coef_choice = Vec::new();
    for &coef in coefs {
        let mag = coef * norm;
        let det =
            mean(&signed_deltas(model, sel, &sel_base, head, &steer_edit(dir.clone(), mag), expect, &plain, progress)?);
        let mut g = Vec::new();
        for i in 0..SELECT_CONTROLS as u64 {
            g.push(mean(&signed_deltas(
                model,
                sel,
                &sel_base,
                head,
                &steer_edit(gaussian(1000 + i)?, mag),
                expect,
                &plain,
                progress,
            )?));
        }
        coef_choice.push([coef, det, mean(&g)]);
    }
    let coef = coef_choice
        .iter()
        .fold(None::<&[f64; 3]>, |b, c| match b {
            Some(b) if b[1] - b[2] >= c[1] - c[2] => Some(b),
            _ => Some(c),
        })
        .map_or(coefs.first().copied().unwrap_or(0.0), |c| c[0]);
    let magnitude = coef * norm;
    // The test, once.
    let base = measure(model, test, None, &plain, progress)?.attention;
    let ci = |v: &[f64], s: u64| bootstrap(v, reps, s, mean);
    let det = signed_deltas(model, test, &base, head, &steer_edit(dir.clone(), magnitude), expect, &plain, progress)?;
    let (mut controls, mut control_lo) = (Vec::new(), Vec::new());
    for i in 0..n_gaussian as u64 {
        let v =
            signed_deltas(model, test, &base, head, &steer_edit(gaussian(i)?, magnitude), expect, &plain, progress)?;
        controls.push(mean(&v));
        control_lo.push(ci(&v, seed.wrapping_add(i)).map_or(f64::NAN, |e| e.lo));
    }
    let mut opp = own.clone();
    opp.layer = dir.layer;
    let opposite =
        mean(&signed_deltas(model, test, &base, head, &steer_edit(opp, magnitude), expect, &plain, progress)?);
    let (l, h) = head;
    let knock = move |spec: HookSpec, eb: &crate::EntityBatch| -> Result<HookSpec> {
        let keys: Vec<Vec<i64>> = eb
            .last_positions()
            .iter()
            .enumerate()
            .map(|(r, &p)| match expect {
                Expect::Decrease => vec![p],
                Expect::Increase => (0..eb.batch.len_of(r) as i64).filter(|&k| k != p).collect(),
            })
            .collect();
        Ok(spec.edit_head(
            HookPoint::AttnScores(l),
            h,
            Positions::Each(vec![-1]),
            Intervention::MaskKeys(Positions::Rows(keys)),
        ))
    };
    let positive = ci(&signed_deltas(model, test, &base, head, &knock, expect, &plain, progress)?, seed ^ 0xED17);
    Ok(SteerTest {
        prompts: if test.first().is_some_and(|i| i.known) { "known" } else { "unknown" }.into(),
        expect,
        head,
        direction: dir.name.clone(),
        layer: dir.layer,
        coef,
        magnitude,
        coef_choice,
        n_prompts: test.len(),
        detector: ci(&det, seed ^ 0xDE7),
        controls,
        control_lo,
        opposite: Some(opposite),
        positive,
    })
}
