//! The paper's claims, each judged from the stages' outputs (read back from their JSON files, so
//! the verdicts can be recomputed from what is on disk), with the calibration `verdict` asks
//! for: what was chosen and on which split, the null rate, the positive control, broken
//! fractions and per-type figures.
//!
//! The steering stages compute their own claims (`causal::steer::claims`) and store them in
//! `steer.json`; detection, depth and attention are judged here from `discovery.json` and
//! `attention.json`, uncertainty (`uncertainty_claim`) and attribute extraction
//! (`extraction_claim`) beside it.

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::stats::calibrate::{null_rate, rank_p, NullRate};
use crate::verdict::{decide_with, Claim, PositiveControl, Selection, TypeFigure, Verdict, ALPHA};

/// An estimate [value, lo, hi] from `{"value", "lo", "hi"}`.
pub(super) fn est(v: &Value) -> Option<[f64; 3]> {
    Some([v.get("value")?.as_f64()?, v.get("lo")?.as_f64()?, v.get("hi")?.as_f64()?])
}

pub(super) fn fmt(e: [f64; 3]) -> String {
    format!("{:.3} [{:.3}, {:.3}]", e[0], e[1], e[2])
}

pub(super) fn read(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

const PAPER_KNOWN: &str = "a latent fires on entities the model knows and not on others, across types (Fig. 1)";
const PAPER_UNKNOWN: &str = "a latent fires on entities the model does not know, across types (Fig. 1)";
const PAPER_DEPTH: &str = "the most general latents sit at middle layers (Fig. 2)";

/// One type's AUROC as read back.
struct TypeRow {
    name: String,
    n_pos: usize,
    n_neg: usize,
    auroc: Option<[f64; 3]>,
    qualifies: bool,
    /// The matching attribute (a city's country) and how many of its values were compared.
    matched_on: Option<(String, usize)>,
}

/// A score's test as read back: stratified AUROC and per-type AUROCs (qualifying or not).
struct ScoreTest {
    stratified: Option<[f64; 3]>,
    types: Vec<TypeRow>,
}

fn score_test(v: &Value) -> ScoreTest {
    let types = v["per_type"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| TypeRow {
                    name: t["entity_type"].as_str().unwrap_or("?").to_string(),
                    n_pos: t["n_pos"].as_u64().unwrap_or(0) as usize,
                    n_neg: t["n_neg"].as_u64().unwrap_or(0) as usize,
                    auroc: est(&t["auroc"]),
                    qualifies: t["qualifies"].as_bool().unwrap_or(false),
                    matched_on: t["matched_on"]
                        .as_str()
                        .map(|m| (m.to_string(), t["strata"].as_u64().unwrap_or(0) as usize)),
                })
                .collect()
        })
        .unwrap_or_default();
    ScoreTest { stratified: est(&v["stratified"]), types }
}

impl ScoreTest {
    fn qualifying(&self) -> impl Iterator<Item = &TypeRow> {
        self.types.iter().filter(|t| t.qualifies)
    }

    /// The detection rule, without the random latents: the stratified interval above 0.5 and
    /// every qualifying type's interval above 0.5.
    fn separates(&self) -> bool {
        self.stratified.is_some_and(|s| s[1] > 0.5) && self.qualifying().all(|t| t.auroc.is_some_and(|a| a[1] > 0.5))
    }
}

/// The detection rule: `separates`, and a stratified AUROC ranked first enough among the
/// random latents' (rank p ≤ `ALPHA`).
fn detection_passes(t: &ScoreTest, randoms: &[f64]) -> (bool, f64) {
    let v = t.stratified.map_or(f64::NAN, |s| s[0]);
    let p = rank_p(v, randoms);
    (t.separates() && p <= ALPHA, p)
}

/// The known-latent and unknown-latent claims, and the depth claim, from `discovery.json`.
pub fn discovery_claims(path: &Path) -> Vec<Claim> {
    let Some(d) = read(path) else {
        return vec![Claim::not_testable(
            "latents",
            "SAE latents separate known from unknown entities (Fig. 1)",
            format!("{} is missing: the discovery stage did not run", path.display()),
        )];
    };
    let mut out = Vec::new();
    for (dir, id, paper) in [("known", "known-latent", PAPER_KNOWN), ("unknown", "unknown-latent", PAPER_UNKNOWN)] {
        let sel = d["selected"].as_array().and_then(|a| a.iter().find(|s| s["direction"] == dir));
        let Some(sel) = sel else {
            out.push(Claim::not_testable(
                id,
                paper,
                format!(
                    "no {dir} latent was selected (types scored: {}; excluded: {})",
                    d["types_scored"], d["excluded_types"]
                ),
            ));
            continue;
        };
        out.push(detection_claim(sel, id, paper));
    }
    out.push(depth_claim(&d));
    out
}

fn detection_claim(sel: &Value, id: &str, paper: &str) -> Claim {
    let test = score_test(&sel["test"]);
    let randoms: Vec<ScoreTest> =
        sel["random_tests"].as_array().map_or(Vec::new(), |a| a.iter().map(score_test).collect());
    let random_values: Vec<f64> = randoms.iter().map(|r| r.stratified.map_or(f64::NAN, |s| s[0])).collect();
    let (passed, p) = detection_passes(&test, &random_values);
    let null: NullRate = null_rate(randoms.len(), |i, others| {
        let o: Vec<f64> = others.iter().map(|&j| random_values[j]).collect();
        detection_passes(&randoms[i], &o).0
    });
    let probe = sel.get("probe_test").filter(|p| !p.is_null()).map(score_test);
    let positive = PositiveControl {
        what: "the validation-chosen probe on the residual stream".into(),
        passed: probe.as_ref().is_some_and(ScoreTest::separates),
        evidence: probe.as_ref().map_or("no probe was fitted".into(), |p| {
            format!("stratified test AUROC {}", p.stratified.map_or("–".into(), fmt))
        }),
    };
    let qualifying: Vec<String> = test.qualifying().map(|t| t.name.clone()).collect();
    let per_type: Vec<TypeFigure> = test
        .types
        .iter()
        .map(|t| {
            let rand_t: Vec<f64> = randoms
                .iter()
                .filter_map(|r| r.types.iter().find(|x| x.name == t.name).and_then(|x| x.auroc).map(|a| a[0]))
                .collect();
            TypeFigure {
                entity_type: t.name.clone(),
                n: t.n_pos + t.n_neg,
                figure: format!(
                    "AUROC {} ({} + {}{}); random latents max {}, rank p {:.3}",
                    t.auroc.map_or("–".into(), fmt),
                    t.n_pos,
                    t.n_neg,
                    t.matched_on.as_ref().map_or(String::new(), |(m, k)| format!(", within {m}: {k} values")),
                    rand_t.iter().copied().reduce(f64::max).map_or("–".into(), |m| format!("{m:.3}")),
                    t.auroc.map_or(1.0, |a| rank_p(a[0], &rand_t))
                ),
                pooled: t.qualifies,
            }
        })
        .collect();
    let candidates: Vec<String> = sel["candidates"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| {
                    format!(
                        "L{} latent {} (train rank {}): {}",
                        c["layer"],
                        c["latent"],
                        c["train_rank"],
                        c["validation"].as_f64().map_or("–".into(), |v| format!("{v:.3}"))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let selection = Selection {
        split: "validation".into(),
        rule: sel["rule"].as_str().unwrap_or("").to_string(),
        chosen: format!(
            "layer {} latent {} ({})",
            sel["layer"],
            sel["latent"],
            sel["detector"].as_str().unwrap_or("?")
        ),
        values: candidates,
    };
    let rmax = random_values.iter().copied().filter(|v| v.is_finite()).reduce(f64::max);
    let mut evidence = format!(
        "{}: stratified test AUROC {} over {} (types with ≥ {} known and unknown test entities); best of {} random latents of its frequency {}, rank p {:.3}",
        sel["detector"].as_str().unwrap_or("?"),
        test.stratified.map_or("–".into(), fmt),
        if qualifying.is_empty() { "no type".into() } else { qualifying.join(", ") },
        crate::discover::select::MIN_TYPE_TEST,
        randoms.len(),
        rmax.map_or("–".into(), |m| format!("{m:.3}")),
        p
    );
    let verdict = if qualifying.len() < 2 {
        evidence = format!(
            "only {} type{} with enough known and unknown test entities, so \"across types\" cannot be tested; {evidence}",
            qualifying.len(),
            if qualifying.len() == 1 { "" } else { "s" }
        );
        Verdict::NotTestable
    } else if randoms.len() < 19 {
        evidence = format!("{} random latents: a rank test needs 19; {evidence}", randoms.len());
        Verdict::NotTestable
    } else {
        decide_with(passed, Some(&positive), &[], &mut evidence)
    };
    Claim {
        id: id.into(),
        paper: paper.into(),
        verdict,
        figure: test.stratified.map(|s| format!("AUROC {}", fmt(s))),
        evidence,
        selection: Some(selection),
        null: Some(null),
        positive_control: Some(positive),
        broken: Vec::new(),
        per_type,
    }
}

/// Middle third of depth, and the best layer's interval above every outer layer's value.
fn depth_passes(values: &[(usize, [f64; 3])], n_layers: usize) -> bool {
    let middle = |l: usize| (1.0 / 3.0..=2.0 / 3.0).contains(&(l as f64 / n_layers as f64));
    let Some(best) = values.iter().max_by(|a, b| a.1[0].total_cmp(&b.1[0])) else { return false };
    let outer = values.iter().filter(|v| !middle(v.0)).map(|v| v.1[0]).fold(f64::NEG_INFINITY, f64::max);
    middle(best.0) && best.1[1] > outer
}

/// The depth claim: the layer whose known latent separates best within types (stratified test
/// AUROC) lies in the middle third, clearly (its interval above every outer layer's value). Its
/// null: the same rule with the layers' figures shuffled over the depths (every permutation).
fn depth_claim(d: &Value) -> Claim {
    let n_layers = d["model"]["n_layers"].as_u64().unwrap_or(0) as usize;
    let values: Vec<(usize, [f64; 3])> = d["layers"]
        .as_array()
        .map(|a| {
            a.iter().filter_map(|l| Some((l["layer"].as_u64()? as usize, est(&l["top_known_stratified"])?))).collect()
        })
        .unwrap_or_default();
    if values.len() < 3 || n_layers == 0 {
        return Claim::not_testable(
            "mid-depth",
            PAPER_DEPTH,
            format!("SAEs at {} layers with a within-type test AUROC; a depth curve needs at least 3", values.len()),
        );
    }
    let passed = depth_passes(&values, n_layers);
    let layers: Vec<usize> = values.iter().map(|v| v.0).collect();
    let figures: Vec<[f64; 3]> = values.iter().map(|v| v.1).collect();
    let perms = permutations(figures.len());
    let hits = perms
        .iter()
        .filter(|p| {
            let v: Vec<(usize, [f64; 3])> = layers.iter().zip(p.iter()).map(|(&l, &k)| (l, figures[k])).collect();
            depth_passes(&v, n_layers)
        })
        .count();
    let null = NullRate { draws: perms.len(), passed: hits, rate: hits as f64 / perms.len() as f64 };
    let per_layer = values.iter().map(|(l, e)| format!("L{l} {}", fmt(*e))).collect::<Vec<_>>().join(", ");
    let mut evidence =
        format!("stratified test AUROC of each layer's top known latent: {per_layer} (of {n_layers} layers)");
    let verdict = if null.rate > ALPHA {
        evidence = format!(
            "with {} layers the rule passes {:.0}% of the time when their figures are shuffled over depth, above {:.0}%; {evidence}",
            values.len(),
            100.0 * null.rate,
            100.0 * ALPHA
        );
        Verdict::NotTestable
    } else if passed {
        Verdict::Reproduced
    } else {
        Verdict::NotReproduced
    };
    Claim {
        id: "mid-depth".into(),
        paper: PAPER_DEPTH.into(),
        verdict,
        evidence,
        figure: None,
        selection: Some(Selection {
            split: "train".into(),
            rule: "each layer's known latent by the paper's MaxMin on train; judged by its within-type test AUROC"
                .into(),
            chosen: "every SAE layer".into(),
            values: Vec::new(),
        }),
        null: Some(null),
        positive_control: None,
        broken: Vec::new(),
        per_type: Vec::new(),
    }
}

/// Every permutation of 0..n (n ≤ 8 in practice: one SAE per sampled layer).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

/// The attention claims, from `attention.json`'s `verdicts` (`causal::head_test`).
pub fn attention_claims(path: &Path) -> Vec<Claim> {
    let paper_contrast = "downstream heads attend more to the last token of known entities (Fig. 4c)";
    let paper_down =
        "the unknown direction lowers that attention on known entities, random directions do not (Fig. 4e)";
    let paper_up = "the known direction raises it on unknown entities (Fig. 4d)";
    let Some(a) = read(path) else {
        return vec![Claim::not_testable(
            "attention",
            paper_contrast,
            format!("{} is missing: the attention stage did not run", path.display()),
        )];
    };
    let v = &a["verdicts"];
    if v.is_null() {
        let why = a["notes"]
            .as_array()
            .and_then(|n| n.iter().filter_map(|x| x.as_str()).find(|x| x.starts_with("no head test")));
        return vec![Claim::not_testable("attention", paper_contrast, why.unwrap_or("no head test in the output"))];
    }
    let (l, h) = (v["choice"]["layer"].as_u64().unwrap_or(0), v["choice"]["head"].as_u64().unwrap_or(0));
    let selection = Selection {
        split: "train and validation".into(),
        rule: v["choice"]["rule"].as_str().unwrap_or("").to_string(),
        chosen: format!("L{l}H{h}"),
        values: v["choice"]["candidates"]
            .as_array()
            .map(|c| {
                c.iter().map(|x| format!("L{}H{}: t {:.2}", x[0], x[1], x[2].as_f64().unwrap_or(f64::NAN))).collect()
            })
            .unwrap_or_default(),
    };
    let c = &v["contrast"];
    let strat = est(&c["stratified"]);
    let null: Option<NullRate> = serde_json::from_value(c["null"].clone()).ok();
    let per_type: Vec<TypeFigure> = c["per_type"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|x| TypeFigure {
                    entity_type: x["entity_type"].as_str().unwrap_or("?").into(),
                    n: (x["n_known"].as_u64().unwrap_or(0) + x["n_unknown"].as_u64().unwrap_or(0)) as usize,
                    figure: format!(
                        "known − unknown {} ({} + {})",
                        est(&x["diff"]).map_or("–".into(), fmt),
                        x["n_known"],
                        x["n_unknown"]
                    ),
                    pooled: x["pooled"].as_bool().unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    let contrast = match strat {
        None => Claim {
            per_type: per_type.clone(),
            selection: Some(selection.clone()),
            ..Claim::not_testable(
                "attention",
                paper_contrast,
                format!("no type has {} known and unknown test prompts", crate::causal::head_test::MIN_TYPE),
            )
        },
        Some(s) => {
            let calibrated = null.is_some_and(|n| n.rate <= ALPHA);
            let verdict = if !calibrated {
                Verdict::NotTestable
            } else if s[1] > 0.0 {
                Verdict::Reproduced
            } else {
                Verdict::NotReproduced
            };
            Claim {
                id: "attention".into(),
                paper: paper_contrast.into(),
                verdict,
                evidence: format!(
                    "{}L{l}H{h} (chosen on train and validation): known − unknown attention on test, within type, {}",
                    if calibrated { "" } else { "the permutation null passes above 5%; " },
                    fmt(s)
                ),
                figure: Some(format!("L{l}H{h} {:+.3}", s[0])),
                selection: Some(selection.clone()),
                null,
                positive_control: None,
                broken: Vec::new(),
                per_type,
            }
        }
    };
    out.push(contrast);
    for (prompts, id, paper) in [("known", "attention-down", paper_down), ("unknown", "attention-up", paper_up)] {
        let s = v["steering"].as_array().and_then(|a| a.iter().find(|s| s["prompts"] == prompts));
        let Some(s) = s else {
            let why = v["notes"]
                .as_array()
                .and_then(|n| n.first())
                .and_then(|x| x.as_str())
                .unwrap_or("no steering run on these prompts");
            out.push(Claim::not_testable(id, paper, why));
            continue;
        };
        out.push(attention_steer_claim(s, id, paper, &selection));
    }
    out
}

fn attention_steer_claim(s: &Value, id: &str, paper: &str, head: &Selection) -> Claim {
    let det = est(&s["detector"]);
    let controls: Vec<f64> =
        s["controls"].as_array().map_or(Vec::new(), |c| c.iter().filter_map(|x| x.as_f64()).collect());
    let lows: Vec<f64> =
        s["control_lo"].as_array().map_or(Vec::new(), |c| c.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect());
    let opposite = s["opposite"].as_f64();
    let (passed, p) = det.map_or((false, 1.0), |d| crate::verdict::direction_passes(d[0], d[1], &controls, opposite));
    let null = null_rate(controls.len(), |i, others| {
        let o: Vec<f64> = others.iter().map(|&j| controls[j]).collect();
        crate::verdict::direction_passes(controls[i], lows.get(i).copied().unwrap_or(f64::NAN), &o, opposite).0
    });
    let pos = est(&s["positive"]);
    let positive = PositiveControl {
        what: "a direct edit of the head's attention to the entity (key knockout)".into(),
        passed: pos.is_some_and(|e| crate::verdict::direction_passes(e[0], e[1], &controls, None).0),
        evidence: format!("signed change {}", pos.map_or("–".into(), fmt)),
    };
    let head_name = format!("L{}H{}", s["head"][0], s["head"][1]);
    let mut evidence = format!(
        "{} {} test prompts, {} ×{} mean norms (chosen on train and validation): signed change of {}'s attention {} vs {} Gaussian directions (mean {:+.4}, max {:+.4}), rank p {:.3}; opposite-class direction {}",
        s["n_prompts"],
        s["prompts"].as_str().unwrap_or("?"),
        s["direction"].as_str().unwrap_or("?"),
        s["coef"],
        head_name,
        det.map_or("–".into(), |d| format!("{:+.4} [{:+.4}, {:+.4}]", d[0], d[1], d[2])),
        controls.len(),
        controls.iter().sum::<f64>() / controls.len().max(1) as f64,
        controls.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        p,
        opposite.map_or("–".into(), |o| format!("{o:+.4}"))
    );
    let verdict = if crate::stats::calibrate::min_rank_p(controls.len()) > ALPHA {
        evidence = format!("{} control directions: a rank test needs 19; {evidence}", controls.len());
        Verdict::NotTestable
    } else {
        decide_with(passed, Some(&positive), &[], &mut evidence)
    };
    let coefs: Vec<String> = s["coef_choice"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|x| {
                    format!(
                        "×{}: detector {:+.4}, Gaussian {:+.4}",
                        x[0],
                        x[1].as_f64().unwrap_or(f64::NAN),
                        x[2].as_f64().unwrap_or(f64::NAN)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Claim {
        id: id.into(),
        paper: paper.into(),
        verdict,
        figure: det.map(|d| format!("{:+.4} attention", d[0])),
        evidence,
        selection: Some(Selection {
            split: "train and validation".into(),
            rule: format!(
                "the best selection head at or after the direction's layer (the contrast's is {}); the strength whose signed change most exceeds two Gaussian directions'",
                head.chosen
            ),
            chosen: format!("L{}H{} at ×{}", s["head"][0], s["head"][1], s["coef"]),
            values: coefs,
        }),
        null: Some(null),
        positive_control: Some(positive),
        broken: Vec::new(),
        per_type: Vec::new(),
    }
}

/// The claims a steering stage stored in its `steer.json`.
pub fn steering_claims(path: &Path, prefix: &str) -> Vec<Claim> {
    let missing = |why: String| {
        vec![Claim::not_testable(
            &format!("{prefix}steer"),
            "steering with the entity directions changes refusals (Fig. 3)",
            why,
        )]
    };
    let Some(s) = read(path) else {
        return missing(format!("{} is missing: the steering stage did not run", path.display()));
    };
    match serde_json::from_value::<Vec<Claim>>(s["claims"].clone()) {
        Ok(c) if !c.is_empty() => c,
        _ => missing(format!("{} holds no claims (written by an older knowlens?)", path.display())),
    }
}

/// Every claim, from the outputs under `out` (see `plan::Dirs`).
pub fn all(dirs: &super::plan::Dirs) -> Result<Vec<Claim>> {
    let mut v = discovery_claims(&dirs.discover_base.join("discovery.json"));
    v.push(super::uncertainty_claim::uncertainty_claim(&dirs.uncertainty.join("uncertainty.json")));
    v.extend(attention_claims(&dirs.attention.join("attention.json")));
    v.push(super::extraction_claim::extraction_claim(&dirs.patch.join("patching.json")));
    v.extend(steering_claims(&dirs.steer.join("steer.json"), ""));
    v.extend(steering_claims(&dirs.steer_base.join("steer.json"), "base-"));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_rule_is_calibrated_by_shuffling() {
        assert_eq!(permutations(4).len(), 24);
        // Five layers of 18, three of them in the middle third: shuffled, a clear winner lands
        // in the middle 60% of the time, so the claim must be not testable.
        let layers: Vec<Value> = [3, 6, 9, 12, 15]
            .iter()
            .map(|&l| {
                let (v, lo) = if l == 9 { (0.9, 0.85) } else { (0.6, 0.5) };
                serde_json::json!({"layer": l, "top_known_stratified": {"value": v, "lo": lo, "hi": 0.95}})
            })
            .collect();
        let v = serde_json::json!({"model": {"n_layers": 18}, "layers": layers});
        let c = depth_claim(&v);
        assert_eq!(c.verdict, Verdict::NotTestable, "{}", c.evidence);
        assert!(c.null.unwrap().rate > 0.5);
    }
}
