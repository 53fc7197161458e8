//! The latent a detection claim rests on: the paper's rule (MaxMin on train after the
//! corpus-frequency filter), confirmed on validation, then tested once on test,
//! within each entity type, against random latents of its firing frequency and with the
//! validation-chosen probe as the positive control.
//!
//! Why within type: when the known class is mostly one type (cities) and the unknown class
//! mostly others, a pooled AUROC measures "is it a city". Here a type enters the pooled figure
//! only with at least `MIN_TYPE_TEST` known and unknown test entities, and the pooled figure is
//! the stratified AUROC (pairs compared only within a type).

use serde::Serialize;

use super::scores::Direction;
use super::{Row, RowClass};
use crate::entities::questions::EntityType;
use crate::stats::calibrate::{stratified_auroc, stratified_auroc_ci};
use crate::stats::Estimate;

/// A type enters the pooled test only with this many known and unknown test entities.
pub const MIN_TYPE_TEST: usize = 30;
/// A type enters the validation choice only with this many known and unknown validation entities.
pub const MIN_TYPE_VALIDATION: usize = 5;

#[derive(Debug, Clone, Serialize)]
pub struct TypeAuroc {
    pub entity_type: EntityType,
    pub n_pos: usize,
    pub n_neg: usize,
    pub auroc: Option<Estimate>,
    /// Enough entities of both classes to enter the pooled figure.
    pub qualifies: bool,
}

/// A score's test: AUROC per type and stratified over the qualifying types.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreTest {
    pub stratified: Option<Estimate>,
    pub per_type: Vec<TypeAuroc>,
}

impl ScoreTest {
    pub fn qualifying(&self) -> impl Iterator<Item = &TypeAuroc> {
        self.per_type.iter().filter(|t| t.qualifies)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub layer: usize,
    pub latent: usize,
    pub train_rank: usize,
    /// Stratified AUROC on the validation split (types with at least `MIN_TYPE_VALIDATION`).
    pub validation: Option<f64>,
}

/// One direction's selected latent and its tests.
#[derive(Debug, Clone, Serialize)]
pub struct Selected {
    pub direction: Direction,
    pub layer: usize,
    pub latent: usize,
    pub train_rank: usize,
    /// The exported detector's name.
    pub detector: String,
    pub rule: String,
    pub candidates: Vec<Candidate>,
    pub test: ScoreTest,
    /// Random latents of the selected latent's layer with its firing frequency on train entities.
    pub random_latents: Vec<usize>,
    pub random_tests: Vec<ScoreTest>,
    /// The positive control: the validation-chosen probe, read in the direction's sense.
    pub probe_test: Option<ScoreTest>,
}

/// (positive, negative) scores of a subset's rows of one type, for a score of `dir`.
fn pos_neg(rows: &[Row], subset: &[usize], t: EntityType, dir: Direction, scores: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (mut k, mut u) = (Vec::new(), Vec::new());
    for &i in subset.iter().filter(|&&i| rows[i].entity_type == t) {
        match rows[i].class {
            RowClass::Known => k.push(scores[i]),
            RowClass::Unknown => u.push(scores[i]),
            RowClass::Fabricated => {}
        }
    }
    match dir {
        Direction::Known => (k, u),
        Direction::Unknown => (u, k),
    }
}

/// Stratified AUROC on `subset` over the types with at least `min_n` of each class.
pub fn stratified_on(rows: &[Row], subset: &[usize], dir: Direction, scores: &[f64], min_n: usize) -> Option<f64> {
    let strata: Vec<(Vec<f64>, Vec<f64>)> = EntityType::ALL
        .iter()
        .map(|&t| pos_neg(rows, subset, t, dir, scores))
        .filter(|(p, n)| p.len() >= min_n && n.len() >= min_n)
        .collect();
    stratified_auroc(&strata)
}

/// The test of one score: per type with intervals, and stratified over qualifying types.
pub fn score_test(rows: &[Row], test: &[usize], dir: Direction, scores: &[f64], reps: usize, seed: u64) -> ScoreTest {
    let mut per_type = Vec::new();
    let mut strata = Vec::new();
    for t in EntityType::ALL {
        let (p, n) = pos_neg(rows, test, t, dir, scores);
        if p.is_empty() && n.is_empty() {
            continue;
        }
        let qualifies = p.len() >= MIN_TYPE_TEST && n.len() >= MIN_TYPE_TEST;
        per_type.push(TypeAuroc {
            entity_type: t,
            n_pos: p.len(),
            n_neg: n.len(),
            auroc: crate::stats::auroc_ci(&p, &n, reps, seed),
            qualifies,
        });
        if qualifies {
            strata.push((p, n));
        }
    }
    ScoreTest { stratified: stratified_auroc_ci(&strata, reps, seed), per_type }
}

/// The paper's rule, confirmed: candidates in train MaxMin order, the first whose validation
/// AUROC is above chance in the claimed direction (the train top when none is, or when the
/// validation split cannot rank them). Taking the validation maximum instead was tried: with
/// nine known validation cities it picked train rank 7 at 0.87 on validation, 0.70 on test, the
/// winner's curse of a small split.
pub fn choose(candidates: &[Candidate]) -> Option<&Candidate> {
    let mut by_rank: Vec<&Candidate> = candidates.iter().collect();
    by_rank.sort_by_key(|c| c.train_rank);
    by_rank.iter().copied().find(|c| c.validation.is_some_and(|v| v > 0.5)).or(by_rank.first().copied())
}

pub const RULE: &str = "the paper's MaxMin on the train split after the corpus-frequency filter ranks the candidates; the first whose stratified validation AUROC is above 0.5 is chosen";
