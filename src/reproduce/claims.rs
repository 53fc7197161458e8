//! The paper's claims, each judged from the stages' outputs (read back from their JSON files, so
//! the verdicts can be recomputed from what is on disk): reproduced, not reproduced, or not
//! testable here, always with the numbers that decided it.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Reproduced,
    NotReproduced,
    NotTestable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::NotReproduced => "not reproduced",
            Verdict::NotTestable => "not testable here",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    pub id: String,
    pub paper: String,
    pub verdict: Verdict,
    pub evidence: String,
}

/// An estimate [value, lo, hi] from `{"value", "lo", "hi"}`.
fn est(v: &Value) -> Option<[f64; 3]> {
    Some([v.get("value")?.as_f64()?, v.get("lo")?.as_f64()?, v.get("hi")?.as_f64()?])
}

fn fmt(e: [f64; 3], pct: bool) -> String {
    if pct {
        format!("{:.0}% [{:.0}, {:.0}]", 100.0 * e[0], 100.0 * e[1], 100.0 * e[2])
    } else {
        format!("{:.3} [{:.3}, {:.3}]", e[0], e[1], e[2])
    }
}

fn read(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Fewer rows than this in a cell and a rate comparison is called not testable.
pub const MIN_N: u64 = 10;

/// Claims about latent discovery, from `discovery.json`.
pub fn discovery_claims(path: &Path) -> Vec<Claim> {
    let mut out = Vec::new();
    let Some(d) = read(path) else {
        out.push(Claim {
            id: "latents".into(),
            paper: "SAE latents separate known from unknown entities (Fig. 1)".into(),
            verdict: Verdict::NotTestable,
            evidence: format!("{} is missing: the discovery stage did not run", path.display()),
        });
        return out;
    };
    let evals = d["latent_evals"].as_array().cloned().unwrap_or_default();
    let randoms = d["random_baselines"].as_array().cloned().unwrap_or_default();
    for dir in ["known", "unknown"] {
        let top = evals.iter().find(|e| e["direction"] == dir && e["rank"] == 0);
        let pooled = top.and_then(|e| {
            e["evals"].as_array()?.iter().find(|x| x["entity_type"].is_null() && x["subset"] == "test").cloned()
        });
        let auroc = pooled.as_ref().and_then(|p| est(&p["auroc"]));
        let random_max = randoms
            .iter()
            .find(|r| r["direction"] == dir && Some(&r["of_latent"]) == top.map(|t| &t["latent"]))
            .and_then(|r| r["max"].as_f64());
        let scored: Vec<String> = d["types_scored"]
            .as_array()
            .map_or(Vec::new(), |t| t.iter().filter_map(|x| x.as_str().map(String::from)).collect());
        // Per scored type, the same latent's test AUROC: "across types" needs each of them.
        let per_type: Vec<(String, Option<[f64; 3]>)> = scored
            .iter()
            .map(|t| {
                let a = top.and_then(|e| {
                    e["evals"]
                        .as_array()?
                        .iter()
                        .find(|x| x["entity_type"] == t.as_str() && x["subset"] == "test")
                        .cloned()
                });
                (t.clone(), a.and_then(|a| est(&a["auroc"])))
            })
            .collect();
        let (verdict, evidence) = match (top, auroc) {
            (Some(t), Some(a)) => {
                let beats_random = random_max.is_none_or(|m| a[1] > m);
                let each_type = per_type.iter().all(|(_, e)| e.is_some_and(|e| e[1] > 0.5));
                let v = if scored.len() < 2 {
                    Verdict::NotTestable
                } else if a[1] > 0.5 && beats_random && each_type {
                    Verdict::Reproduced
                } else {
                    Verdict::NotReproduced
                };
                let types = per_type
                    .iter()
                    .map(|(t, e)| format!("{t} {}", e.map_or("–".into(), |e| fmt(e, false))))
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    v,
                    format!(
                        "top {dir} latent: layer {} latent {}, held-out AUROC {} pooled (n = {} + {}; per type: {types}); best of the random latents of the same frequency {}{}",
                        t["layer"],
                        t["latent"],
                        fmt(a, false),
                        pooled.as_ref().map_or(0, |p| p["n_pos"].as_u64().unwrap_or(0)),
                        pooled.as_ref().map_or(0, |p| p["n_neg"].as_u64().unwrap_or(0)),
                        random_max.map_or("–".into(), |m| format!("{m:.3}")),
                        if scored.len() < 2 {
                            "; only one type has enough known entities, so generality across types cannot be tested and the pooled AUROC also separates that type from the rest"
                        } else {
                            ""
                        }
                    ),
                )
            }
            _ => (
                Verdict::NotTestable,
                format!(
                    "no {dir} latent was ranked and tested (types scored: {}; excluded: {})",
                    d["types_scored"], d["excluded_types"]
                ),
            ),
        };
        out.push(Claim {
            id: if dir == "known" { "known-latent" } else { "unknown-latent" }.into(),
            paper: if dir == "known" {
                "a latent fires on entities the model knows and not on others, across types (Fig. 1)"
            } else {
                "a latent fires on entities the model does not know, across types (Fig. 1)"
            }
            .into(),
            verdict,
            evidence,
        });
    }
    let layers = d["layers"].as_array().cloned().unwrap_or_default();
    let scored: Vec<(u64, f64)> = layers
        .iter()
        .filter_map(|l| Some((l["layer"].as_u64()?, l["maxmin_known"].as_array()?.get(1)?.as_f64()?)))
        .collect();
    let n_layers = d["model"]["n_layers"].as_u64().unwrap_or(0);
    let claim = if scored.len() < 3 || n_layers == 0 {
        Claim {
            id: "mid-depth".into(),
            paper: "the most general latents sit at middle layers (Fig. 2)".into(),
            verdict: Verdict::NotTestable,
            evidence: format!("SAEs at {} layers; a depth curve needs at least 3", scored.len()),
        }
    } else {
        let best = scored.iter().max_by(|a, b| a.1.total_cmp(&b.1)).copied().unwrap_or_default();
        let rel = best.0 as f64 / n_layers as f64;
        Claim {
            id: "mid-depth".into(),
            paper: "the most general latents sit at middle layers (Fig. 2)".into(),
            verdict: if (1.0 / 3.0..=2.0 / 3.0).contains(&rel) { Verdict::Reproduced } else { Verdict::NotReproduced },
            evidence: format!(
                "highest known MaxMin {:.3} at layer {} of {n_layers} (depth {:.2}); per layer: {}",
                best.1,
                best.0,
                rel,
                scored.iter().map(|(l, s)| format!("L{l} {s:.3}")).collect::<Vec<_>>().join(", ")
            ),
        }
    };
    out.push(claim);
    out
}

/// The all-types refusal cell of the first condition matching `pick` for one class.
fn refusal_cell<'a>(s: &'a Value, known: bool, pick: &dyn Fn(&Value) -> bool) -> Option<(&'a Value, String)> {
    let conds = s["conditions"].as_array()?;
    let (ci, c) = conds.iter().enumerate().filter(|(_, c)| c["known"] == known && pick(&c["treatment"])).last()?;
    let cell = s["cells"].as_array()?.iter().find(|x| x["condition"] == ci && x["entity_type"].is_null())?;
    Some((cell, treatment_label(&c["treatment"])))
}

fn treatment_label(t: &Value) -> String {
    match t["kind"].as_str() {
        Some("direction") => format!("{} ×{}", t["direction"].as_str().unwrap_or("?"), t["coef"]),
        Some("random") => format!("random ×{}", t["coef"]),
        Some(k) => k.to_string(),
        None => "?".into(),
    }
}

fn rate(cell: &Value) -> Option<([f64; 3], u64)> {
    Some((est(&cell["refusal_rate"])?, cell["n"].as_u64()?))
}

/// Claims about steering, from `steer.json`.
pub fn steering_claims(path: &Path) -> Vec<Claim> {
    let Some(s) = read(path) else {
        return vec![Claim {
            id: "steer".into(),
            paper: "steering with the entity directions changes refusals (Fig. 3)".into(),
            verdict: Verdict::NotTestable,
            evidence: format!("{} is missing: the steering stage did not run", path.display()),
        }];
    };
    let mut coefs: Vec<f64> =
        s["options"]["coefs"].as_array().map_or(Vec::new(), |c| c.iter().filter_map(|x| x.as_f64()).collect());
    coefs.sort_by(f64::total_cmp);
    let max_coef = coefs.last().copied().unwrap_or(0.0);
    let original = |t: &Value| t["kind"] == "original";
    let mut out = Vec::new();
    for known in [true, false] {
        let (id, paper) = if known {
            (
                "refusal-up",
                "the unknown direction makes the chat model refuse questions about entities it knows (Fig. 3)",
            )
        } else {
            (
                "refusal-down",
                "the known direction makes it answer (hallucinate) about entities it does not know (Fig. 3)",
            )
        };
        let Some((o, n)) = refusal_cell(&s, known, &original).and_then(|(c, _)| rate(c)) else {
            out.push(Claim {
                id: id.into(),
                paper: paper.into(),
                verdict: Verdict::NotTestable,
                evidence: format!("no {} entities asked", if known { "known" } else { "unknown" }),
            });
            continue;
        };
        if n < MIN_N {
            out.push(Claim {
                id: id.into(),
                paper: paper.into(),
                verdict: Verdict::NotTestable,
                evidence: format!(
                    "{n} {} entities asked (at least {MIN_N} needed)",
                    if known { "known" } else { "unknown" }
                ),
            });
            continue;
        }
        // Each strength is a test: the direction must move refusals past both the original
        // model's and the random directions' intervals at the same strength. The verdict names
        // the first strength (weakest first) where it does, else the strongest one tried.
        let at = |kind: &'static str, coef: f64| move |t: &Value| t["kind"] == kind && t["coef"].as_f64() == Some(coef);
        let mut shown = None;
        let mut held = false;
        for &coef in &coefs {
            let d = refusal_cell(&s, known, &at("direction", coef));
            let r = refusal_cell(&s, known, &at("random", coef)).and_then(|(c, _)| rate(c));
            let (Some((dc, label)), Some((rv, _))) = (d, r) else { continue };
            let Some((dv, _)) = rate(dc) else { continue };
            let ok = if known { dv[1] > o[2] && dv[1] > rv[2] } else { dv[2] < o[1] && dv[2] < rv[1] };
            if ok || coef == max_coef {
                shown = Some((coef, label, dv, rv));
                held = ok;
                if ok {
                    break;
                }
            }
        }
        let Some((coef, label, dv, rv)) = shown else {
            out.push(Claim {
                id: id.into(),
                paper: paper.into(),
                verdict: Verdict::NotTestable,
                evidence: "no steered condition with a random baseline".into(),
            });
            continue;
        };
        let evidence = format!(
            "{} {} entities: original {}, {} {}, random ×{coef} {} ({} strength{} tried: {})",
            n,
            if known { "known" } else { "unknown" },
            fmt(o, true),
            label,
            fmt(dv, true),
            fmt(rv, true),
            coefs.len(),
            if coefs.len() == 1 { "" } else { "s" },
            coefs.iter().map(|c| format!("×{c}")).collect::<Vec<_>>().join(", ")
        );
        if !known && o[0] < 0.05 {
            // Nothing to lower: the model already answers (nearly) everything.
            return_floor(&mut out, id, paper, evidence);
            continue;
        }
        let verdict = if held { Verdict::Reproduced } else { Verdict::NotReproduced };
        out.push(Claim { id: id.into(), paper: paper.into(), verdict, evidence });
    }
    // Orthogonalization: refusal on unknown entities with the unknown direction removed.
    let o = refusal_cell(&s, false, &original).and_then(|(c, _)| rate(c));
    let orth = refusal_cell(&s, false, &|t: &Value| t["kind"] == "orthogonalized").and_then(|(c, _)| rate(c));
    let paper = "projecting the unknown direction out of the weights lowers refusals (Fig. 3)";
    out.push(match (o, orth) {
        (Some((o, n)), Some((x, _))) if n >= MIN_N && o[0] >= 0.05 => Claim {
            id: "orthogonalized".into(),
            paper: paper.into(),
            verdict: if x[2] < o[1] { Verdict::Reproduced } else { Verdict::NotReproduced },
            evidence: format!("{n} unknown entities: original {}, orthogonalized {}", fmt(o, true), fmt(x, true)),
        },
        (Some((o, n)), Some((x, _))) if n >= MIN_N => Claim {
            id: "orthogonalized".into(),
            paper: paper.into(),
            verdict: Verdict::NotTestable,
            evidence: format!(
                "the original model refuses {} of questions about unknown entities, too few to lower (orthogonalized {})",
                fmt(o, true),
                fmt(x, true)
            ),
        },
        _ => Claim { id: "orthogonalized".into(), paper: paper.into(), verdict: Verdict::NotTestable, evidence: "not measured".into() },
    });
    // "Are you sure you know": the logit difference moves against the entity's class.
    if let Some(cells) = s["yes_no"]["cells"].as_array() {
        for known in [true, false] {
            let get = |prefix: &str| {
                cells
                    .iter()
                    .find(|c| {
                        c["known"] == known
                            && c["entity_type"].is_null()
                            && c["condition"].as_str().is_some_and(|x| x.starts_with(prefix))
                    })
                    .and_then(|c| Some((est(&c["mean"])?, c["n"].as_u64()?)))
            };
            let (id, paper) = if known {
                (
                    "yes-no-down",
                    "the unknown direction pushes \"are you sure you know\" toward No for known entities (Fig. 5)",
                )
            } else {
                ("yes-no-up", "the known direction pushes it toward Yes for unknown entities (Fig. 5)")
            };
            out.push(match (get("original"), get("direction"), get("random")) {
                (Some((o, n)), Some((d, _)), Some((r, _))) if n >= MIN_N => {
                    let moved = if known { d[2] < o[1] && d[2] < r[1] } else { d[1] > o[2] && d[1] > r[2] };
                    Claim {
                        id: id.into(),
                        paper: paper.into(),
                        verdict: if moved { Verdict::Reproduced } else { Verdict::NotReproduced },
                        evidence: format!(
                            "logit(Yes) − logit(No), {n} entities: original {}, steered {}, random {}",
                            fmt(o, false),
                            fmt(d, false),
                            fmt(r, false)
                        ),
                    }
                }
                (o, _, _) => Claim {
                    id: id.into(),
                    paper: paper.into(),
                    verdict: Verdict::NotTestable,
                    evidence: format!("{} entities (at least {MIN_N} needed)", o.map_or(0, |x| x.1)),
                },
            });
        }
    }
    out
}

fn return_floor(out: &mut Vec<Claim>, id: &'static str, paper: &'static str, evidence: String) {
    out.push(Claim {
        id: id.into(),
        paper: paper.into(),
        verdict: Verdict::NotTestable,
        evidence: format!(
            "{evidence}; the original model refuses under 5% of these questions, so there is no refusal to lower"
        ),
    });
}

/// Claims about attention to the entity, from `attention.json`.
pub fn attention_claims(path: &Path) -> Vec<Claim> {
    let paper_contrast = "downstream heads attend more to the last token of known entities (Fig. 4c)";
    let Some(a) = read(path) else {
        return vec![Claim {
            id: "attention".into(),
            paper: paper_contrast.into(),
            verdict: Verdict::NotTestable,
            evidence: format!("{} is missing: the attention stage did not run", path.display()),
        }];
    };
    let mut out = Vec::new();
    let top = a["top_heads"].as_array().and_then(|t| t.first()).and_then(|h| {
        let h = h.as_array()?;
        Some((h.first()?.as_u64()?, h.get(1)?.as_u64()?))
    });
    let Some((l, h)) = top else {
        return vec![Claim {
            id: "attention".into(),
            paper: paper_contrast.into(),
            verdict: Verdict::NotTestable,
            evidence: "no head was ranked".into(),
        }];
    };
    let row = a["pooled"].as_array().and_then(|rows| rows.iter().find(|r| r["layer"] == l && r["head"] == h));
    out.push(match row.and_then(|r| Some((est(&r["known"])?, est(&r["unknown"])?, est(&r["diff"])?, r["n_known"].as_u64()?))) {
        Some((k, u, d, n)) if n >= MIN_N => Claim {
            id: "attention".into(),
            paper: paper_contrast.into(),
            verdict: if d[1] > 0.0 { Verdict::Reproduced } else { Verdict::NotReproduced },
            evidence: format!(
                "L{l}H{h}: known {} vs unknown {}, difference {} ({n} known prompts; the head ranked first of all heads by Welch t)",
                fmt(k, false),
                fmt(u, false),
                fmt(d, false)
            ),
        },
        _ => Claim { id: "attention".into(), paper: paper_contrast.into(), verdict: Verdict::NotTestable, evidence: format!("fewer than {MIN_N} known prompts") },
    });
    // Steering moves that head's attention the expected way, beyond random directions.
    for (prompts, id, paper) in [
        (
            "known",
            "attention-down",
            "the unknown direction lowers that attention on known entities, random directions do not (Fig. 4e)",
        ),
        ("unknown", "attention-up", "the known direction raises it on unknown entities (Fig. 4d)"),
    ] {
        let runs: Vec<&Value> =
            a["steering"].as_array().map_or(Vec::new(), |v| v.iter().filter(|s| s["prompts"] == prompts).collect());
        let found = runs.iter().find_map(|s| {
            let head = s["heads"].as_array()?.iter().find(|x| x["layer"] == l && x["head"] == h)?;
            Some((s, head))
        });
        out.push(match found {
            Some((s, head)) => {
                let delta = est(&head["delta"]);
                let p = head["p_bonferroni"].as_f64().unwrap_or(1.0);
                let right_way = delta.is_some_and(|d| if prompts == "known" { d[2] < 0.0 } else { d[1] > 0.0 });
                Claim {
                    id: id.into(),
                    paper: paper.into(),
                    verdict: if right_way && p < 0.05 { Verdict::Reproduced } else { Verdict::NotReproduced },
                    evidence: format!(
                        "L{l}H{h}, {} ×{} mean norms: Δ {} vs random {:+.3} ± {:.3} (Bonferroni p {:.2e}; the p-value treats prompts × random directions as independent, so it is optimistic)",
                        s["direction"].as_str().unwrap_or("?"),
                        s["coef"],
                        delta.map_or("–".into(), |d| fmt(d, false)),
                        head["random_mean"].as_f64().unwrap_or(f64::NAN),
                        head["random_sd"].as_f64().unwrap_or(f64::NAN),
                        p
                    ),
                }
            }
            None => Claim { id: id.into(), paper: paper.into(), verdict: Verdict::NotTestable, evidence: "no steering run on these prompts".into() },
        });
    }
    out
}

/// The steering claims of the base model's few-shot run (`steer-base`): the same tests, ids
/// prefixed "base-", and the paper's wording marked as measured on the base model.
pub fn base_steering_claims(path: &Path) -> Vec<Claim> {
    steering_claims(path)
        .into_iter()
        .map(|c| Claim {
            id: format!("base-{}", c.id),
            paper: format!("{} [base model, few-shot prompt with \"I don't know\" examples]", c.paper),
            ..c
        })
        .collect()
}

/// Every claim, from the outputs under `out` (see `plan::Dirs`).
pub fn all(discovery: &Path, attention: &Path, steer: &Path, steer_base: &Path) -> Result<Vec<Claim>> {
    let mut v = discovery_claims(discovery);
    v.extend(attention_claims(attention));
    v.extend(steering_claims(steer));
    v.extend(base_steering_claims(steer_base));
    Ok(v)
}
