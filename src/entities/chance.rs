//! Chance rates: how often an answer that ignores the entity would be judged correct.
//!
//! Per attribute, from the greedy answers of a run (judged by `matching::judge_answer` against the
//! usable gold values, as the labels are):
//! * `model`: the share of the model's own answers judged correct;
//! * `shuffled`: the model's answers moved to other entities of the type (seeded random
//!   permutations, `SHUFFLES` of them, averaged): what its answer distribution alone scores;
//! * `constant`: the best single answer given to every entity, over the candidates: the model's
//!   most frequent answers and the most frequent gold values (`CANDIDATES` of each).
//!
//! An attribute "beats chance" when its model rate is at least `FACTOR` times both chance rates and
//! `MARGIN` points above them; the column is reported, not used: name attributes count toward
//! "known" and years, genres and populations never do (`rule`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::dataset::Entity;
use super::decide::EntityLabel;
use super::matching::{judge_answer, thefuzz_process, Outcome};
use super::questions::{self, EntityType};
use super::rule::{self, Guessable};
use crate::report::table::markdown;
use crate::rng::{shuffle, SplitMix64};

pub const SHUFFLES: usize = 10;
pub const CANDIDATES: usize = 25;
/// Percentage points by which the model must beat both chance rates ...
pub const MARGIN: f64 = 1.0;
/// ... and the factor.
pub const FACTOR: f64 = 2.0;
const TAG_CHANCE: u64 = 0x63_68_61_6e;

/// The chance rates of one attribute (percentages).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChanceRow {
    pub attribute: String,
    pub counts: bool,
    pub answers: usize,
    pub model: f64,
    pub shuffled: f64,
    pub constant: f64,
    pub best_constant: String,
    /// model ≥ FACTOR × max(shuffled, constant) and ≥ max + MARGIN.
    pub beats_chance: bool,
}

/// Chance rates of every attribute with greedy answers in `labels`; empty when there are none.
pub fn chance_rates(entities: &[Entity], labels: &[EntityLabel], guessable: &Guessable, seed: u64) -> Vec<ChanceRow> {
    let by_id: HashMap<&str, &Entity> = entities.iter().map(|e| (e.id.as_str(), e)).collect();
    // (type, attribute) → (entity, answer)
    let mut rows: BTreeMap<(EntityType, String), Vec<(&Entity, String)>> = BTreeMap::new();
    for l in labels {
        let Some(e) = by_id.get(l.id.as_str()) else { continue };
        for r in &l.records {
            if let Some(g) = &r.greedy {
                rows.entry((l.entity_type, r.attribute.clone())).or_default().push((e, g.text.clone()));
            }
        }
    }
    let mut out = Vec::new();
    for ((t, attr), items) in rows {
        let Some(spec) = questions::attribute(t, &attr) else { continue };
        let golds: Vec<Vec<String>> = items.iter().map(|(e, _)| rule::usable_gold(e, spec, guessable)).collect();
        let n = items.len();
        let ok = |answer: &str, j: usize, name: &str| {
            !golds[j].is_empty() && judge_answer(spec.kind, &golds[j], answer, name) == Outcome::Correct
        };
        let model = (0..n).filter(|&i| ok(&items[i].1, i, &items[i].0.name)).count();
        let mut shuffled = 0usize;
        for s in 0..SHUFFLES {
            let mut perm: Vec<usize> = (0..n).collect();
            shuffle(
                &mut perm,
                &mut SplitMix64::derive(seed, TAG_CHANCE, ((t as u64) << 40) ^ ((attr.len() as u64) << 32) ^ s as u64),
            );
            // Entity j is judged on the answer given to entity perm[j], with j's own name.
            shuffled += (0..n).filter(|&j| ok(&items[perm[j]].1, j, &items[j].0.name)).count();
        }
        let mut freq: HashMap<String, (usize, String)> = HashMap::new();
        for (_, a) in &items {
            let k = thefuzz_process(a);
            if !k.is_empty() {
                let e = freq.entry(k).or_insert((0, a.clone()));
                e.0 += 1;
            }
        }
        let mut cands: Vec<(usize, String)> = freq.into_values().collect();
        cands.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut candidates: Vec<String> = cands.into_iter().take(CANDIDATES).map(|(_, a)| a).collect();
        let mut gold_freq: HashMap<String, usize> = HashMap::new();
        for g in golds.iter().flatten() {
            *gold_freq.entry(g.clone()).or_default() += 1;
        }
        let mut gf: Vec<(usize, String)> = gold_freq.into_iter().map(|(g, k)| (k, g)).collect();
        gf.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        candidates.extend(gf.into_iter().take(CANDIDATES).map(|(_, g)| format!(" {g}")));
        let (mut best, mut best_answer) = (0usize, String::new());
        for c in &candidates {
            // The constant answer is judged with each entity's own name: it must not echo it.
            let k = (0..n).filter(|&j| ok(c, j, &items[j].0.name)).count();
            if k > best || (k == best && best_answer.is_empty()) {
                best = k;
                best_answer = c.trim().to_string();
            }
        }
        let pct = |k: f64| (1000.0 * k / n.max(1) as f64).round() / 10.0;
        let (m, sh, co) = (pct(model as f64), pct(shuffled as f64 / SHUFFLES as f64), pct(best as f64));
        out.push(ChanceRow {
            attribute: format!("{t}.{attr}"),
            counts: rule::counts(t, &attr),
            answers: n,
            model: m,
            shuffled: sh,
            constant: co,
            best_constant: best_answer,
            beats_chance: m >= FACTOR * sh.max(co) && m >= sh.max(co) + MARGIN,
        });
    }
    out
}

/// Writes `chance.json` and `chance.md` into a mode directory.
pub fn write(dir: &Path, rows: &[ChanceRow]) -> Result<()> {
    crate::fsio::write_atomic(&dir.join("chance.json"), &serde_json::to_vec_pretty(rows)?)?;
    crate::fsio::write_atomic(&dir.join("chance.md"), markdown_table(rows).as_bytes())?;
    Ok(())
}

/// The chance-rate table in Markdown.
pub fn markdown_table(rows: &[ChanceRow]) -> String {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.attribute.clone(),
                if r.counts { "yes".into() } else { "never".into() },
                r.answers.to_string(),
                format!("{:.1}", r.model),
                format!("{:.1}", r.shuffled),
                format!("{:.1} ({:?})", r.constant, r.best_constant),
                if r.beats_chance { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    format!(
        "# Chance rates (greedy answers, % judged correct)\n\nShuffled: the model's answers moved across entities of the type ({SHUFFLES} seeded permutations); constant: the best single answer for every entity. \"Beats chance\": model ≥ {FACTOR} × both and ≥ both + {MARGIN} point. Judged as the labels are: echoes and fragments are wrong, guessable gold values and values made of the entity's own words are left out of counting attributes.\n\n{}",
        markdown(&["attribute", "counts toward known", "answers", "model", "shuffled", "constant (answer)", "beats chance"], &table)
    )
}
