//! The steering experiment's claims, computed from its output: refusal up (known entities,
//! unknown direction), refusal down (unknown entities, known direction: the model answers), the
//! orthogonalized model, and the two yes/no claims.
//!
//! Every direction claim is decided the same way, with the direction as the unit:
//! * the effect of a direction is the change of the class's per-question metric from the
//!   original model, on the same test questions (refusals for known entities; answers of the
//!   asked kind, right or wrong, for unknown ones; the yes/no logit difference toward the
//!   expected side for the yes/no claims);
//! * it passes when its effect ranks first enough among the control directions' effects (rank
//!   p ≤ `ALPHA`), its paired interval over questions excludes zero, and it beats the opposite
//!   class's direction (the effect is about the class, not about pushing hard);
//! * the null rate is the same rule applied to each control in turn against the others;
//! * the positive control is the model's refusal direction under the same rule.

use super::{metric, Condition, Role, SteerOutput};
use crate::stats::calibrate::{min_rank_p, null_rate, paired_mean_diff, rank_p};
use crate::stats::{mean, Estimate};
use crate::verdict::{decide, direction_passes, Broken, Claim, PositiveControl, Selection, TypeFigure, ALPHA};

/// Fewer test questions than this in a class and its claims are not testable.
pub const MIN_N: usize = 10;
/// The orthogonalization claim needs the original model to refuse at least this share of the
/// unknown test questions: below it there is nothing to lower (and its null is not run).
pub const MIN_REFUSAL_TO_LOWER: f64 = 0.05;

const PAPER_UP: &str = "the unknown direction makes the chat model refuse questions about entities it knows (Fig. 3)";
const PAPER_DOWN: &str = "the known direction makes it answer (hallucinate) about entities it does not know (Fig. 3)";
const PAPER_ORTH: &str = "projecting the unknown direction out of the weights lowers refusals (Fig. 3)";
const PAPER_YN_DOWN: &str =
    "the unknown direction pushes \"are you sure you know\" toward No for known entities (Fig. 5)";
const PAPER_YN_UP: &str = "the known direction pushes it toward Yes for unknown entities (Fig. 5)";

/// Per condition of one class's test split: the per-question values, aligned on `items`.
struct Series {
    items: Vec<usize>,
    /// (condition index, values) for every condition of the class on test.
    values: Vec<(usize, Vec<f64>)>,
}

impl Series {
    fn of(&self, ci: usize) -> Option<&[f64]> {
        self.values.iter().find(|(c, _)| *c == ci).map(|(_, v)| v.as_slice())
    }
}

fn test_conditions(out: &SteerOutput, known: bool) -> Vec<usize> {
    (0..out.conditions.len())
        .filter(|&i| {
            out.conditions[i].known == known && out.conditions[i].split == crate::entities::label_set::Split::Test
        })
        .collect()
}

fn find(out: &SteerOutput, conds: &[usize], role: Role) -> Option<usize> {
    conds.iter().copied().find(|&i| out.conditions[i].role == role)
}

/// The refusal / answer metric of every test question of a class, per condition.
fn generation_series(out: &SteerOutput, known: bool) -> Series {
    let conds = test_conditions(out, known);
    let mut items: Vec<usize> =
        out.answers.iter().filter(|a| conds.first() == Some(&a.condition)).map(|a| a.item).collect();
    items.sort_unstable();
    let values = conds
        .iter()
        .map(|&ci| {
            let v = items
                .iter()
                .map(|&i| {
                    out.answers
                        .iter()
                        .find(|a| a.condition == ci && a.item == i)
                        .map_or(f64::NAN, |a| metric(known, a.outcome))
                })
                .collect();
            (ci, v)
        })
        .collect();
    Series { items, values }
}

/// The yes/no logit difference per question, signed so that the expected move is positive
/// (toward No for known entities, toward Yes for unknown ones); the original model's values in
/// the original condition's slot.
fn yes_no_series(out: &SteerOutput, known: bool) -> Option<Series> {
    let yn = out.yes_no.as_ref()?;
    let conds = test_conditions(out, known);
    let orig = find(out, &conds, Role::Original)?;
    let mut items: Vec<usize> = yn.original.iter().map(|(i, _)| *i).filter(|&i| out.items[i].known == known).collect();
    items.sort_unstable();
    let sign = if known { -1.0 } else { 1.0 };
    let mut values = vec![(orig, items.iter().map(|&i| sign * yn.original_of(i).unwrap_or(f64::NAN)).collect())];
    for &ci in &conds {
        if let Some(s) = yn.series(ci) {
            let v = items
                .iter()
                .map(|&i| s.items.iter().position(|&x| x == i).map_or(f64::NAN, |k| sign * s.values[k]))
                .collect();
            values.push((ci, v));
        }
    }
    Some(Series { items, values })
}

/// A direction's effect: its paired difference from the original model.
struct Effect {
    value: f64,
    ci: Option<Estimate>,
}

fn effect(s: &Series, ci: usize, orig: usize, seed: u64) -> Option<Effect> {
    let (a, o) = (s.of(ci)?, s.of(orig)?);
    Some(Effect { value: mean(a) - mean(o), ci: paired_mean_diff(a, o, 1000, seed) })
}

fn fmt_effect(e: &Effect, pct: bool) -> String {
    let k = if pct { 100.0 } else { 1.0 };
    let d = if pct { 0 } else { 3 };
    match &e.ci {
        Some(c) => format!("{:+.d$} [{:+.d$}, {:+.d$}]", k * e.value, k * c.lo, k * c.hi),
        None => format!("{:+.d$}", k * e.value),
    }
}

/// The shared rule of a direction claim, on one class's series.
struct Judged {
    passed: bool,
    p: f64,
    detector: Effect,
    controls: Vec<f64>,
    opposite: Option<f64>,
    null: crate::stats::calibrate::NullRate,
    positive: PositiveControl,
}

fn judge(out: &SteerOutput, s: &Series, known: bool, yes_no: bool) -> Option<Judged> {
    let pct = !yes_no;
    let conds = test_conditions(out, known);
    let orig = find(out, &conds, Role::Original)?;
    let det = find(out, &conds, Role::Detector)?;
    let seed = out.options.seed;
    let detector = effect(s, det, orig, seed)?;
    let control_ids: Vec<usize> = conds.iter().copied().filter(|&i| out.conditions[i].role.is_control()).collect();
    let control_effects: Vec<Effect> = control_ids.iter().filter_map(|&c| effect(s, c, orig, seed)).collect();
    let controls: Vec<f64> = control_effects.iter().map(|e| e.value).collect();
    let opposite = find(out, &conds, Role::Opposite).and_then(|c| effect(s, c, orig, seed)).map(|e| e.value);
    let rule = |e: &Effect, others: &[f64]| -> (bool, f64) {
        direction_passes(e.value, e.ci.map_or(f64::NAN, |c| c.lo), others, opposite)
    };
    let (passed, p) = rule(&detector, &controls);
    let null = null_rate(control_effects.len(), |i, others| {
        let o: Vec<f64> = others.iter().map(|&j| controls[j]).collect();
        rule(&control_effects[i], &o).0
    });
    let (pos_role, pos_what) = if yes_no {
        (Role::LogitDirection, "the unembedding's No − Yes direction")
    } else {
        (Role::RefusalDirection, "the model's refusal direction")
    };
    let positive = match find(out, &conds, pos_role).and_then(|c| effect(s, c, orig, seed)) {
        Some(e) => {
            let (ok, p) = rule(&e, &controls);
            PositiveControl {
                what: format!("{pos_what} ({})", if known { "+" } else { "−" }),
                passed: ok,
                evidence: format!("effect {} , rank p {:.3} among {} controls", fmt_effect(&e, pct), p, controls.len()),
            }
        }
        None => PositiveControl {
            what: pos_what.into(),
            passed: false,
            evidence: if yes_no {
                "not built: the model keeps no float32 unembedding table".into()
            } else {
                format!("not built: {}", out.refusal_direction_note)
            },
        },
    };
    Some(Judged { passed, p, detector, controls, opposite, null, positive })
}

fn broken_of(out: &SteerOutput, conds: &[usize], pick: impl Fn(&Condition) -> bool, label: &str) -> Option<Broken> {
    let (mut n, mut b) = (0, 0);
    for &ci in conds.iter().filter(|&&ci| pick(&out.conditions[ci])) {
        if let Some(t) = out.tallies.iter().find(|t| t.condition == ci && t.entity_type.is_none()) {
            n += t.n;
            b += t.broken;
        }
    }
    (n > 0).then(|| Broken { condition: label.into(), n, fraction: b as f64 / n as f64 })
}

fn selection_of(out: &SteerOutput, known: bool) -> Option<Selection> {
    let s = out.strengths.iter().find(|s| s.known == known)?;
    Some(Selection {
        split: "validation".into(),
        rule: s.rule.clone(),
        chosen: s.coef.map_or("none (no validation entities)".into(), |c| format!("×{c} mean norms")),
        values: s
            .candidates
            .iter()
            .map(|c| {
                format!(
                    "×{}: detector {:+.0} pts, Gaussian {:+.0} pts, broken {:.0}% / {:.0}%",
                    c[0],
                    100.0 * c[1],
                    100.0 * c[2],
                    100.0 * c[3],
                    100.0 * c[4]
                )
            })
            .collect(),
    })
}

/// Per type: the detector's effect beside the controls' mean and its rank p within the type.
fn per_type(out: &SteerOutput, s: &Series, known: bool, pct: bool) -> Vec<TypeFigure> {
    let conds = test_conditions(out, known);
    let (Some(orig), Some(det)) = (find(out, &conds, Role::Original), find(out, &conds, Role::Detector)) else {
        return Vec::new();
    };
    let mut types: Vec<String> = s.items.iter().map(|&i| out.items[i].entity_type.to_string()).collect();
    types.sort();
    types.dedup();
    types
        .iter()
        .filter_map(|t| {
            let keep: Vec<usize> =
                (0..s.items.len()).filter(|&k| out.items[s.items[k]].entity_type.to_string() == *t).collect();
            let sub = Series {
                items: keep.iter().map(|&k| s.items[k]).collect(),
                values: s.values.iter().map(|(c, v)| (*c, keep.iter().map(|&k| v[k]).collect())).collect(),
            };
            let d = effect(&sub, det, orig, out.options.seed)?;
            let controls: Vec<f64> = conds
                .iter()
                .filter(|&&c| out.conditions[c].role.is_control())
                .filter_map(|&c| effect(&sub, c, orig, out.options.seed).map(|e| e.value))
                .collect();
            Some(TypeFigure {
                entity_type: t.clone(),
                n: keep.len(),
                figure: format!(
                    "detector {}, controls mean {:+.2}, rank p {:.3}",
                    fmt_effect(&d, pct),
                    if pct { 100.0 } else { 1.0 } * mean(&controls),
                    rank_p(d.value, &controls)
                ),
                pooled: true,
            })
        })
        .collect()
}

fn direction_claim(out: &SteerOutput, known: bool, yes_no: bool, id: &str, paper: &str) -> Claim {
    let s = if yes_no { yes_no_series(out, known) } else { Some(generation_series(out, known)) };
    let Some(s) = s.filter(|s| !s.items.is_empty()) else {
        return Claim::not_testable(
            id,
            paper,
            "no test questions of this class were asked (or no strength was chosen)",
        );
    };
    let n = s.items.len();
    let what = if known { "known" } else { "unknown" };
    if n < MIN_N {
        return Claim::not_testable(id, paper, format!("{n} {what} test entities (at least {MIN_N} needed)"));
    }
    let conds = test_conditions(out, known);
    let n_controls = conds.iter().filter(|&&c| out.conditions[c].role.is_control()).count();
    if min_rank_p(n_controls) > ALPHA {
        return Claim::not_testable(
            id,
            paper,
            format!("{n_controls} control directions: a rank test needs at least 19 to reach p ≤ {ALPHA}"),
        );
    }
    let orig = find(out, &conds, Role::Original).and_then(|o| s.of(o)).map(mean).unwrap_or(f64::NAN);
    if !yes_no && orig >= 0.95 {
        let why = if known {
            format!("the original model already refuses {:.0}% of these questions: nothing to raise", 100.0 * orig)
        } else {
            format!("the original model already answers {:.0}% of these questions: nothing to raise", 100.0 * orig)
        };
        return Claim::not_testable(id, paper, why);
    }
    let Some(j) = judge(out, &s, known, yes_no) else {
        return Claim::not_testable(id, paper, "the test conditions are incomplete");
    };
    let mut broken = Vec::new();
    if !yes_no {
        for (pick, label) in [(Role::RandomLatent, "random SAE latent"), (Role::Gaussian, "Gaussian")] {
            broken.extend(broken_of(out, &conds, |c| c.role == pick, label));
        }
    }
    let controls_broken = broken.clone();
    for (pick, label) in [(Role::Original, "original"), (Role::Detector, "detector"), (Role::Opposite, "opposite")] {
        if !yes_no {
            broken.extend(broken_of(out, &conds, |c| c.role == pick, label));
        }
    }
    let (verdict, why) = decide(j.passed, Some(&j.positive), &controls_broken);
    let pct = !yes_no;
    let unit = if yes_no {
        "logit(Yes) − logit(No), signed toward the expected answer".to_string()
    } else if known {
        "refusal rate (points)".to_string()
    } else {
        "rate of answers of the asked kind, right or wrong (points)".to_string()
    };
    let det_name = find(out, &conds, Role::Detector).map_or("?".into(), |c| out.conditions[c].label());
    let k = if pct { 100.0 } else { 1.0 };
    let ctl_max = j.controls.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut evidence = format!(
        "{n} {what} test entities, {unit}: original {}; {det_name} changes it by {} vs {} control directions (mean {:+.2}, max {:+.2}), rank p {:.3}; opposite-class direction {}",
        if pct { format!("{:.0}%", orig * 100.0) } else { format!("{orig:.3}") },
        fmt_effect(&j.detector, pct),
        j.controls.len(),
        k * mean(&j.controls),
        k * ctl_max,
        j.p,
        j.opposite.map_or("–".into(), |o| format!("{:+.2}", k * o))
    );
    if !why.is_empty() {
        evidence = format!("{why}; {evidence}");
    }
    Claim {
        id: id.into(),
        paper: paper.into(),
        verdict,
        figure: Some(format!("{} {}", fmt_effect(&j.detector, pct), if pct { "points" } else { "logits" })),
        evidence,
        selection: selection_of(out, known),
        null: Some(j.null),
        positive_control: Some(j.positive),
        broken,
        per_type: per_type(out, &s, known, pct),
    }
}

/// Projecting the unknown direction out of the weights, judged like a steering direction with
/// the direction as the unit: the change of the refusal rate on unknown test entities (signed so
/// that lowering is positive) ranked among the same change with each control direction projected
/// out instead (the null), with the refusal direction projected out as the positive control.
fn orthogonalized_claim(out: &SteerOutput) -> Claim {
    let id = "orthogonalized";
    let conds = test_conditions(out, false);
    let (Some(orig), Some(orth)) = (find(out, &conds, Role::Original), find(out, &conds, Role::Orthogonalized)) else {
        return Claim::not_testable(id, PAPER_ORTH, "not measured (the stage ran without --orthogonalize)");
    };
    let mut items: Vec<usize> = out.answers.iter().filter(|a| a.condition == orig).map(|a| a.item).collect();
    items.sort_unstable();
    // 1 where the model did NOT refuse: a lower refusal rate is a positive effect.
    let not_refused = |ci: usize| -> Vec<f64> {
        items
            .iter()
            .map(|&i| {
                out.answers
                    .iter()
                    .find(|a| a.condition == ci && a.item == i)
                    .map_or(f64::NAN, |a| (a.outcome != crate::causal::outcome::Outcome::Refusal) as u8 as f64)
            })
            .collect()
    };
    let o = not_refused(orig);
    if o.len() < MIN_N {
        return Claim::not_testable(
            id,
            PAPER_ORTH,
            format!("{} unknown test entities (at least {MIN_N} needed)", o.len()),
        );
    }
    let rate = 1.0 - mean(&o);
    let seed = out.options.seed;
    let change = |ci: usize| -> (f64, Option<Estimate>) {
        let x = not_refused(ci);
        (mean(&x) - mean(&o), paired_mean_diff(&x, &o, 1000, seed))
    };
    let controls_ci: Vec<usize> =
        conds.iter().copied().filter(|&c| out.conditions[c].role == Role::OrthogonalizedControl).collect();
    let controls: Vec<(f64, Option<Estimate>)> = controls_ci.iter().map(|&c| change(c)).collect();
    let control_values: Vec<f64> = controls.iter().map(|c| c.0).collect();
    let mut broken: Vec<Broken> =
        broken_of(out, &conds, |c| c.role == Role::OrthogonalizedControl, "orthogonalized controls")
            .into_iter()
            .collect();
    let controls_broken = broken.clone();
    broken.extend(broken_of(out, &conds, |c| c.role == Role::Orthogonalized, "orthogonalized"));
    if rate < MIN_REFUSAL_TO_LOWER {
        return Claim {
            broken,
            ..Claim::not_testable(
                id,
                PAPER_ORTH,
                format!(
                    "the original model refuses {:.0}% of questions about unknown test entities, too few to lower",
                    100.0 * rate
                ),
            )
        };
    }
    if min_rank_p(controls.len()) > ALPHA {
        return Claim {
            broken,
            ..Claim::not_testable(
                id,
                PAPER_ORTH,
                format!("{} control directions projected out: a rank test needs at least 19 (rerun the stage with --orthogonalize and enough controls)", controls.len()),
            )
        };
    }
    let passes = |e: &(f64, Option<Estimate>), others: &[f64]| -> (bool, f64) {
        direction_passes(e.0, e.1.map_or(f64::NAN, |c| c.lo), others, None)
    };
    let det = change(orth);
    let (passed, p) = passes(&det, &control_values);
    let null = null_rate(controls.len(), |i, others| {
        let o: Vec<f64> = others.iter().map(|&j| control_values[j]).collect();
        passes(&controls[i], &o).0
    });
    let refusal = find(out, &conds, Role::OrthogonalizedRefusal).map(change);
    let positive = PositiveControl {
        what: "the model's refusal direction projected out of the weights".into(),
        passed: refusal.as_ref().is_some_and(|r| passes(r, &control_values).0),
        evidence: refusal
            .as_ref()
            .map_or("no refusal direction (the model refused or answered everything on validation)".into(), |r| {
                format!("refusals change by {}, rank p {:.3}", fmt_points(r), passes(r, &control_values).1)
            }),
    };
    let (verdict, why) = decide(passed, Some(&positive), &controls_broken);
    let evidence = format!(
        "{}{} unknown test entities: refusals {:.0}% originally; projecting {} out changes them by {} points (paired bootstrap) vs {} control directions projected out (mean {:+.0}, best {:+.0}), rank p {p:.3}; positive control: {}",
        if why.is_empty() { String::new() } else { format!("{why}; ") },
        o.len(),
        100.0 * rate,
        out.conditions[orth].name,
        fmt_points(&det),
        controls.len(),
        -100.0 * mean(&control_values),
        -100.0 * control_values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        positive.evidence
    );
    Claim {
        id: id.into(),
        paper: PAPER_ORTH.into(),
        verdict,
        figure: Some(format!("{} points", fmt_points(&det))),
        evidence,
        selection: None,
        null: Some(null),
        positive_control: Some(positive),
        broken,
        per_type: Vec::new(),
    }
}

/// A change of the non-refusal rate as a change of refusals, in points with its interval.
fn fmt_points(e: &(f64, Option<Estimate>)) -> String {
    match e.1 {
        Some(c) => format!("{:+.0} [{:+.0}, {:+.0}]", -100.0 * e.0, -100.0 * c.hi, -100.0 * c.lo),
        None => format!("{:+.0}", -100.0 * e.0),
    }
}

/// Every claim of a steering run. `base`: the run put its questions to a base model through the
/// few-shot preamble, and the ids get the "base-" prefix.
pub fn claims(out: &SteerOutput, base: bool) -> Vec<Claim> {
    let mut v = vec![
        direction_claim(out, true, false, "refusal-up", PAPER_UP),
        direction_claim(out, false, false, "refusal-down", PAPER_DOWN),
        orthogonalized_claim(out),
    ];
    if out.yes_no.is_some() {
        v.push(direction_claim(out, true, true, "yes-no-down", PAPER_YN_DOWN));
        v.push(direction_claim(out, false, true, "yes-no-up", PAPER_YN_UP));
    }
    if base {
        for c in &mut v {
            c.id = format!("base-{}", c.id);
            c.paper = format!("{} [base model, few-shot prompt with \"I don't know\" examples]", c.paper);
        }
    }
    v
}
