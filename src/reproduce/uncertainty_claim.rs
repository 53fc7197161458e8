//! The paper's §6 claim, judged from `uncertainty.json`: an SAE latent at the last prompt
//! token tells, before the answer, that the model's answer will be wrong.
//!
//! Chosen on train, tested once on test: the "wrong" latent with the largest train Welch t over
//! every SAE site (each site's rank-0 latent is a candidate). It passes when its test AUROC's
//! interval lies above 0.5 and it ranks first enough (rank p ≤ `ALPHA`) among random latents of
//! its site and firing frequency. The null: each random latent in its place against the others.
//! The positive control: the logistic probe on the raw residual at the same site must predict
//! wrong answers on test (if no direction there can, no latent is expected to).

use std::path::Path;

use serde_json::Value;

use super::claims::{est, fmt, read};
use crate::stats::calibrate::{null_rate, rank_p};
use crate::verdict::{decide_with, Claim, PositiveControl, Selection, TypeFigure, ALPHA};

const ID: &str = "uncertainty-latent";
const PAPER: &str = "a latent at the last token fires before answers the model gets wrong (§6, Fig. 6)";
/// A rank test needs this many random latents to reach `ALPHA`.
const MIN_RANDOM: usize = 19;

/// The test-split AUROC of a detector (its `evals` row named `subset`).
fn auroc_of(d: &Value, subset: &str) -> Option<(usize, usize, [f64; 3])> {
    let e = d["evals"].as_array()?.iter().find(|e| e["subset"] == subset)?;
    Some((e["n_wrong"].as_u64()? as usize, e["n_correct"].as_u64()? as usize, est(&e["auroc"])?))
}

pub fn uncertainty_claim(path: &Path) -> Claim {
    let Some(u) = read(path) else {
        return Claim::not_testable(
            ID,
            PAPER,
            format!("{} is missing: the uncertainty stage did not run", path.display()),
        );
    };
    let detectors = u["detectors"].as_array().cloned().unwrap_or_default();
    let candidates: Vec<&Value> =
        detectors.iter().filter(|d| d["kind"] == "sae_latent" && d["direction"] == "wrong" && d["rank"] == 0).collect();
    let t = |d: &Value| d["train_welch"]["t"].as_f64().unwrap_or(f64::NEG_INFINITY);
    let Some(chosen) = candidates.iter().copied().max_by(|a, b| t(a).total_cmp(&t(b))) else {
        return Claim::not_testable(ID, PAPER, "no SAE latent was ranked (no SAE, or too few wrong answers on train)");
    };
    let name = chosen["name"].as_str().unwrap_or("?").to_string();
    let selection = Selection {
        split: "train".into(),
        rule: "each SAE site's latent with the largest Welch t (wrong minus correct answers, train questions, after the corpus-frequency filter); of those, the largest t".into(),
        chosen: name.clone(),
        values: candidates.iter().map(|d| format!("{}: t = {:.2}", d["name"].as_str().unwrap_or("?"), t(d))).collect(),
    };
    let Some((n_wrong, n_correct, a)) = auroc_of(chosen, "test") else {
        return Claim::not_testable(ID, PAPER, format!("{name} has no test AUROC (too few test questions)"));
    };
    let randoms: Vec<f64> = u["random_baselines"]
        .as_array()
        .and_then(|r| {
            r.iter().find(|b| {
                b["of_latent"] == chosen["latent"] && b["hook"] == chosen["hook"] && b["direction"] == "wrong"
            })
        })
        .and_then(|b| b["aurocs"].as_array())
        .map(|v| v.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let p = rank_p(a[0], &randoms);
    let passed = a[1] > 0.5 && p <= ALPHA;
    let null = null_rate(randoms.len(), |i, others| {
        let o: Vec<f64> = others.iter().map(|&j| randoms[j]).collect();
        randoms[i] > 0.5 && rank_p(randoms[i], &o) <= ALPHA
    });
    let probe = detectors.iter().find(|d| d["kind"] == "probe" && d["layer"] == chosen["layer"]);
    let probe_auroc = probe.and_then(|d| auroc_of(d, "test")).map(|x| x.2);
    let positive = PositiveControl {
        what: format!("a logistic probe on the residual stream at layer {}", chosen["layer"]),
        passed: probe_auroc.is_some_and(|a| a[1] > 0.5),
        evidence: probe_auroc.map_or("no probe at this site".into(), |a| format!("test AUROC {}", fmt(a))),
    };
    let name_only = detectors
        .iter()
        .find(|d| d["kind"] == "confound_probe")
        .and_then(|d| auroc_of(d, "test"))
        .map_or("–".into(), |x| fmt(x.2));
    let per_type: Vec<TypeFigure> = ["player", "movie", "city", "song"]
        .iter()
        .filter_map(|ty| {
            let (w, c, a) = auroc_of(chosen, &format!("test: {ty}"))?;
            Some(TypeFigure {
                entity_type: ty.to_string(),
                n: w + c,
                figure: format!("AUROC {} ({w} wrong + {c} correct)", fmt(a)),
                pooled: true,
            })
        })
        .collect();
    let mut evidence = format!(
        "{name}: test AUROC {} for \"the answer will be wrong\" ({n_wrong} wrong, {n_correct} correct test answers, classes balanced within each type); best of {} random latents of its frequency {}, rank p {p:.3}; the probe at its site {}; popularity + name length + attribute alone {name_only}",
        fmt(a),
        randoms.len(),
        randoms.iter().copied().reduce(f64::max).map_or("–".into(), |m| format!("{m:.3}")),
        positive.evidence,
    );
    let verdict = if randoms.len() < MIN_RANDOM {
        evidence = format!("{} random latents: a rank test needs {MIN_RANDOM}; {evidence}", randoms.len());
        crate::verdict::Verdict::NotTestable
    } else {
        decide_with(passed, Some(&positive), &[], &mut evidence)
    };
    Claim {
        id: ID.into(),
        paper: PAPER.into(),
        verdict,
        evidence,
        figure: Some(format!("AUROC {}", fmt(a))),
        selection: Some(selection),
        null: Some(null),
        positive_control: Some(positive),
        broken: Vec::new(),
        per_type,
    }
}
