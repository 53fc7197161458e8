//! The paper's attribute-extraction evidence (§5, Fig. 4a–b, 13), judged from
//! `patching.json`: the attribute is read from the entity by a few attention heads at the last
//! position, so patching one head's output there from a known-entity prompt into an
//! unknown-entity prompt brings back much of the known answer.
//!
//! Chosen without the test pairs, tested once on them: pairs whose clean (known) entity is a
//! test entity are the test pairs; the others choose the head (largest mean recovery). The head
//! passes when its test recovery's interval lies above zero and it ranks first enough among every
//! other head's test recovery (rank p ≤ `ALPHA`; the heads are the control directions). The null:
//! each head in the chosen head's place, against the others. The positive control: patching the
//! whole residual stream at the last position of the last layer must bring the clean answer back
//! (recovery within [0.9, 1.1]); if it does not, the metric is broken for these pairs.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::claims::{fmt, read};
use crate::stats::calibrate::{null_rate, rank_p};
use crate::stats::{bootstrap, mean};
use crate::verdict::{decide_with, Claim, PositiveControl, Selection, TypeFigure, ALPHA};

const ID: &str = "attribute-extraction";
const PAPER: &str = "attention heads at the last position carry the attribute from the entity (§5, Fig. 4a–b, 13)";
/// Fewer test pairs than this cannot give an interval worth a verdict.
const MIN_TEST_PAIRS: usize = 8;

/// One patched pair: its type, whether its clean entity is a test entity, recovery per head
/// ([layer][head]) and the last position's residual recovery per layer.
struct PairRow {
    entity_type: String,
    test: bool,
    heads: Vec<Vec<f64>>,
    last_resid: Vec<f64>,
    entity_last_resid: Vec<f64>,
}

fn rows(p: &Value) -> Vec<PairRow> {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    // Positions are the pair's own ([layer][position] over its prompt): the last one is the
    // last position, `pair.entity[1]` the entity's last token.
    let column = |r: &Value, at: &dyn Fn(usize) -> Option<usize>| -> Vec<f64> {
        r["resid"].as_array().map_or(Vec::new(), |layers| {
            layers
                .iter()
                .map(|l| {
                    let row = l.as_array().map(Vec::as_slice).unwrap_or_default();
                    at(row.len()).and_then(|i| row.get(i)).map_or(f64::NAN, num)
                })
                .collect()
        })
    };
    p["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let entity_last = r["pair"]["entity"][1].as_u64().map(|e| e as usize);
                    PairRow {
                        entity_type: r["pair"]["type"].as_str().unwrap_or("?").to_string(),
                        test: r["pair"]["clean"]["split"] == "test",
                        heads: r["heads"]
                            .as_array()
                            .map(|l| {
                                l.iter()
                                    .map(|h| h.as_array().map_or(Vec::new(), |h| h.iter().map(num).collect()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        last_resid: column(r, &|n| n.checked_sub(1)),
                        entity_last_resid: column(r, &|_| entity_last),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Mean recovery of head (l, h) over `pairs`, NaN pairs skipped.
fn head_values(pairs: &[&PairRow], l: usize, h: usize) -> Vec<f64> {
    pairs.iter().filter_map(|r| r.heads.get(l)?.get(h).copied()).filter(|v| v.is_finite()).collect()
}

pub fn extraction_claim(path: &Path) -> Claim {
    let Some(p) = read(path) else {
        return Claim::not_testable(
            ID,
            PAPER,
            format!("{} is missing: the patching stage did not run", path.display()),
        );
    };
    let all = rows(&p);
    let (test, select): (Vec<&PairRow>, Vec<&PairRow>) = all.iter().partition(|r| r.test);
    let (n_layers, n_heads) =
        (all.first().map_or(0, |r| r.heads.len()), all.first().and_then(|r| r.heads.first()).map_or(0, Vec::len));
    if test.len() < MIN_TEST_PAIRS || select.is_empty() || n_layers * n_heads < 20 {
        return Claim::not_testable(
            ID,
            PAPER,
            format!(
                "{} test pairs and {} selection pairs ({n_layers} layers × {n_heads} heads): needs {MIN_TEST_PAIRS} test pairs, some selection pairs and 20 heads",
                test.len(),
                select.len()
            ),
        );
    }
    let heads: Vec<(usize, usize)> = (0..n_layers).flat_map(|l| (0..n_heads).map(move |h| (l, h))).collect();
    let select_mean: Vec<f64> = heads.iter().map(|&(l, h)| mean(&head_values(&select, l, h))).collect();
    let test_mean: Vec<f64> = heads.iter().map(|&(l, h)| mean(&head_values(&test, l, h))).collect();
    let chosen = (0..heads.len())
        .filter(|&i| select_mean[i].is_finite())
        .max_by(|&a, &b| select_mean[a].total_cmp(&select_mean[b]));
    let Some(c) = chosen else {
        return Claim::not_testable(ID, PAPER, "no head has a finite recovery on the selection pairs");
    };
    let (cl, ch) = heads[c];
    let seed = 0;
    let Some(effect) = bootstrap(&head_values(&test, cl, ch), 1000, seed, mean) else {
        return Claim::not_testable(ID, PAPER, format!("L{cl}H{ch} has no finite recovery on the test pairs"));
    };
    let others: Vec<f64> = (0..heads.len()).filter(|&i| i != c).map(|i| test_mean[i]).collect();
    let p_rank = rank_p(effect.value, &others);
    let passed = effect.lo > 0.0 && p_rank <= ALPHA;
    let lo_of = |i: usize| {
        let (l, h) = heads[i];
        bootstrap(&head_values(&test, l, h), 1000, seed, mean).map_or(f64::NAN, |e| e.lo)
    };
    // The null: every other head in the chosen one's place, against the rest.
    let rest: Vec<usize> = (0..heads.len()).filter(|&i| i != c).collect();
    let null = null_rate(rest.len(), |i, o| {
        let o: Vec<f64> = o.iter().map(|&j| test_mean[rest[j]]).collect();
        rank_p(test_mean[rest[i]], &o) <= ALPHA && lo_of(rest[i]) > 0.0
    });
    let final_layer: Vec<f64> =
        test.iter().filter_map(|r| r.last_resid.last().copied()).filter(|v| v.is_finite()).collect();
    let full = bootstrap(&final_layer, 1000, seed, mean);
    let positive = PositiveControl {
        what: "patching the whole residual stream at the last position of the last layer".into(),
        passed: full.is_some_and(|f| (0.9..=1.1).contains(&f.value)),
        evidence: full.map_or("no value".into(), |f| format!("recovery {}", fmt([f.value, f.lo, f.hi]))),
    };
    // Where the answer moves: the first layer at which patching the last position recovers more
    // than patching the entity's last token (over every pair).
    let moves = (0..n_layers).find(|&l| {
        let at = |f: fn(&PairRow) -> &Vec<f64>| {
            mean(&all.iter().filter_map(|r| f(r).get(l).copied()).filter(|v| v.is_finite()).collect::<Vec<_>>())
        };
        at(|r| &r.last_resid) > at(|r| &r.entity_last_resid)
    });
    let mut order: Vec<usize> = (0..heads.len()).filter(|&i| select_mean[i].is_finite()).collect();
    order.sort_by(|&a, &b| select_mean[b].total_cmp(&select_mean[a]));
    let selection = Selection {
        split: "pairs whose known entity is a train or validation entity".into(),
        rule: "the head whose output at the last position, patched from the known prompt, recovers the most of the known answer on average".into(),
        chosen: format!("L{cl}H{ch}"),
        values: order.iter().take(5).map(|&i| format!("L{}H{}: {:.3}", heads[i].0, heads[i].1, select_mean[i])).collect(),
    };
    let mut by_type: BTreeMap<&str, Vec<&PairRow>> = BTreeMap::new();
    for r in &test {
        by_type.entry(r.entity_type.as_str()).or_default().push(r);
    }
    let per_type: Vec<TypeFigure> = by_type
        .iter()
        .map(|(t, rs)| {
            let v = head_values(rs, cl, ch);
            TypeFigure {
                entity_type: t.to_string(),
                n: rs.len(),
                figure: bootstrap(&v, 1000, seed, mean)
                    .map_or("–".into(), |e| format!("recovery {}", fmt([e.value, e.lo, e.hi]))),
                pooled: true,
            }
        })
        .collect();
    let mut evidence = format!(
        "{} test pairs: patching L{cl}H{ch}'s output at the last position recovers {} of the known answer; the best other head {}, rank p {p_rank:.3} among {} heads; {}",
        test.len(),
        fmt([effect.value, effect.lo, effect.hi]),
        others.iter().copied().filter(|v| v.is_finite()).reduce(f64::max).map_or("–".into(), |m| format!("{m:.3}")),
        heads.len(),
        moves.map_or("the last position never recovers more than the entity's last token".into(), |l| format!(
            "the answer moves from the entity's last token to the last position at layer {l}"
        ))
    );
    let verdict = decide_with(passed, Some(&positive), &[], &mut evidence);
    Claim {
        id: ID.into(),
        paper: PAPER.into(),
        verdict,
        evidence,
        figure: Some(format!("L{cl}H{ch} recovers {}", fmt([effect.value, effect.lo, effect.hi]))),
        selection: Some(selection),
        null: Some(null),
        positive_control: Some(positive),
        broken: Vec::new(),
        per_type,
    }
}
