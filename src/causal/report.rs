//! The steering experiment's outputs: `steer.json` (every number, and the claims computed from
//! them), `answers.jsonl` (every completion with its outcome), `outcomes.csv` (outcome counts
//! per condition and type) and one self-contained HTML page (`report.html`): the claims with
//! their calibration, per class the strength chosen on validation (outcome against strength,
//! detector and Gaussian directions) and the test effects of every direction as a strip, the
//! yes/no effects, and sample answers side by side.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::steer::claims::claims;
use super::steer::{Role, SteerOutput};
use crate::fsio::write_atomic;
use crate::report::html::{Html, Page, Table};
use crate::report::plots::{line_chart_svg, strip_chart_svg, Line, StripRow};
use crate::verdict::Claim;

fn cls(known: bool) -> &'static str {
    if known {
        "known"
    } else {
        "unknown"
    }
}

/// Writes every output into `dir` (created if needed), each file atomically; returns the claims.
pub fn write(s: &SteerOutput, model_name: &str, base: bool, dir: &Path) -> Result<Vec<Claim>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let claims = claims(s, base);
    let mut json = serde_json::to_value(s)?;
    json["model"] = model_name.into();
    json["claims"] = serde_json::to_value(&claims)?;
    write_atomic(&dir.join("steer.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    let mut answers = String::new();
    for a in &s.answers {
        let it = &s.items[a.item];
        let c = &s.conditions[a.condition];
        let row = serde_json::json!({
            "id": it.id, "type": it.entity_type, "name": it.name, "class": cls(it.known), "split": it.split.as_str(),
            "attribute": it.attribute, "question": it.question, "condition": c.label(), "role": c.role,
            "text": a.text, "outcome": a.outcome,
        });
        answers.push_str(&serde_json::to_string(&row)?);
        answers.push('\n');
    }
    write_atomic(&dir.join("answers.jsonl"), answers.as_bytes())?;
    let mut csv = String::from("class,split,role,condition,type,n,correct,wrong,refusal,broken\n");
    for t in &s.tallies {
        let c = &s.conditions[t.condition];
        let _ = writeln!(
            csv,
            "{},{},{:?},\"{}\",{},{},{},{},{},{}",
            cls(c.known),
            c.split.as_str(),
            c.role,
            c.label(),
            t.entity_type.as_deref().unwrap_or("all"),
            t.n,
            t.correct,
            t.wrong,
            t.refusal,
            t.broken
        );
    }
    write_atomic(&dir.join("outcomes.csv"), csv.as_bytes())?;
    let (page, figures) = page(s, &claims, model_name)?;
    page.write(&dir.join("report.html"))?;
    // The figures alone, for the reproduce page to show beside its claims.
    write_atomic(&dir.join("figures.html"), figures.as_bytes())?;
    Ok(claims)
}

/// The claims as a table: verdict, evidence, null rate, positive control, broken fractions.
pub fn claims_table(claims: &[Claim]) -> Table {
    let mut t = Table::new(&["claim", "verdict", "evidence", "chosen on", "null rate", "positive control", "broken"]);
    for c in claims {
        t.row(vec![
            Html::text(&c.id),
            Html::raw(format!("<span class=\"verdict {}\">{}</span>", verdict_class(c), c.verdict.as_str())),
            Html::text(&c.evidence),
            Html::text(&c.selection.as_ref().map_or("–".into(), |s| format!("{}: {}", s.split, s.chosen))),
            Html::text(&c.null.map_or("–".into(), |n| format!("{}/{} ({:.0}%)", n.passed, n.draws, 100.0 * n.rate))),
            Html::text(&c.positive_control.as_ref().map_or("–".into(), |p| {
                format!("{}: {} ({})", p.what, if p.passed { "passed" } else { "failed" }, p.evidence)
            })),
            Html::text(
                &c.broken
                    .iter()
                    .map(|b| format!("{} {:.0}%", b.condition, 100.0 * b.fraction))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ]);
    }
    t
}

pub fn verdict_class(c: &Claim) -> &'static str {
    match c.verdict {
        crate::verdict::Verdict::Reproduced => "ok",
        crate::verdict::Verdict::NotReproduced => "no",
        crate::verdict::Verdict::Inconclusive => "inconclusive",
        crate::verdict::Verdict::NotTestable => "na",
    }
}

fn page(s: &SteerOutput, claims: &[Claim], model_name: &str) -> Result<(Page, String)> {
    let mut figures = String::new();
    let norms: Vec<String> = s.mean_norms.iter().map(|(l, n)| format!("layer {l}: {n:.1}")).collect();
    let mut page = Page::new(&format!("Steering refusals: {model_name}")).meta(Html::text(&format!(
        "known direction {} (layer {}), unknown direction {} (layer {}), cosine {:.3}; refusal direction: {}; mean residual \
         norm at the steered positions {}; {} steered positions; refusal rule {}; greedy, {} tokens",
        s.known_direction.name,
        s.known_direction.layer,
        s.unknown_direction.name,
        s.unknown_direction.layer,
        s.cosine_known_unknown,
        s.refusal_direction_note,
        norms.join(", "),
        s.options.positions,
        s.options.rule,
        s.options.max_tokens
    )));
    page = page.paragraph(
        "Known entities are steered with the unknown direction (the paper: refusal rises); unknown entities with the \
         known direction (the paper: the model answers, i.e. hallucinates). The strength is chosen on validation \
         entities; the verdict is computed once, on test entities, with each direction as one unit: the detector's \
         effect is ranked among control directions (random SAE latents of its frequency where the detector file has \
         them, and Gaussian directions), every direction pushed at the same magnitude. Every completion is correct, \
         wrong, refusal or broken; a control more than 20% broken makes a claim inconclusive.",
    );
    page = page.heading("Claims").table(claims_table(claims));
    for known in [true, false] {
        page = page.heading(&format!("Questions about {} entities", cls(known)));
        if let Some(ch) = s.strengths.iter().find(|c| c.known == known).filter(|c| !c.candidates.is_empty()) {
            let metric = if known { "refusal rate" } else { "answer rate" };
            let lines = vec![
                Line {
                    name: "detector".into(),
                    points: ch.candidates.iter().map(|c| (c[0], 100.0 * c[1], None)).collect(),
                },
                Line {
                    name: "Gaussian (mean)".into(),
                    points: ch.candidates.iter().map(|c| (c[0], 100.0 * c[2], None)).collect(),
                },
                Line {
                    name: "detector broken".into(),
                    points: ch.candidates.iter().map(|c| (c[0], 100.0 * c[3], None)).collect(),
                },
                Line {
                    name: "Gaussian broken".into(),
                    points: ch.candidates.iter().map(|c| (c[0], 100.0 * c[4], None)).collect(),
                },
            ];
            let svg = line_chart_svg(
                &format!("Validation: change of {metric} vs strength"),
                "strength (× mean residual norm)",
                "points (% of questions)",
                &lines,
            );
            let caption = format!(
                "{} validation {} entities; chosen strength {}",
                ch.n_validation,
                cls(known),
                ch.coef.map_or("none".into(), |c| format!("×{c}"))
            );
            figures.push_str(crate::report::html::figure(&svg, &caption).as_str());
            page = page.figure(&svg, &caption);
        }
        page = page.table(outcome_table(s, known));
        if let Some(svg) = effect_strip(s, known) {
            let caption =
                "Test: each dot is one direction's effect (change from the original model on the same questions)";
            figures.push_str(crate::report::html::figure(&svg, caption).as_str());
            page = page.figure(&svg, caption);
        }
    }
    page = page.heading("Sample answers (test)");
    let mut table = Table::new(&["entity", "class", "question", "original", "detector", "a Gaussian control"]);
    for known in [true, false] {
        let test: Vec<usize> = (0..s.conditions.len())
            .filter(|&i| {
                s.conditions[i].known == known && s.conditions[i].split == crate::entities::label_set::Split::Test
            })
            .collect();
        let of = |role: Role| test.iter().copied().find(|&i| s.conditions[i].role == role);
        let (o, d, g) = (of(Role::Original), of(Role::Detector), of(Role::Gaussian));
        let items: Vec<usize> = s.answers.iter().filter(|a| Some(a.condition) == o).map(|a| a.item).take(8).collect();
        for i in items {
            let text = |c: Option<usize>| {
                c.and_then(|c| s.answers.iter().find(|a| a.item == i && a.condition == c))
                    .map(|a| format!("[{}] {}", a.outcome, a.text.trim()))
                    .unwrap_or_default()
            };
            let it = &s.items[i];
            table.text_row(&[it.name.clone(), cls(known).into(), it.question.clone(), text(o), text(d), text(g)]);
        }
    }
    Ok((page.table(table), figures))
}

/// Outcome rates of the test conditions of one class, controls summarised by kind.
fn outcome_table(s: &SteerOutput, known: bool) -> Table {
    let mut t = Table::new(&["condition", "n", "correct", "wrong", "refusal", "broken"]);
    let test: Vec<usize> = (0..s.conditions.len())
        .filter(|&i| s.conditions[i].known == known && s.conditions[i].split == crate::entities::label_set::Split::Test)
        .collect();
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for &ci in &test {
        let c = &s.conditions[ci];
        let label = match c.role {
            Role::RandomLatent => format!("random SAE latents ×{}", c.coef),
            Role::Gaussian => format!("Gaussian directions ×{}", c.coef),
            Role::OrthogonalizedControl => "orthogonalized, a control direction projected out".into(),
            _ => c.label(),
        };
        match groups.iter_mut().find(|g| g.0 == label) {
            Some(g) => g.1.push(ci),
            None => groups.push((label, vec![ci])),
        }
    }
    for (label, cs) in groups {
        let (mut n, mut k) = (0, [0usize; 4]);
        for ci in &cs {
            if let Some(x) = s.tallies.iter().find(|x| x.condition == *ci && x.entity_type.is_none()) {
                n += x.n;
                k[0] += x.correct;
                k[1] += x.wrong;
                k[2] += x.refusal;
                k[3] += x.broken;
            }
        }
        if n == 0 {
            // Measured on the yes/no question only (the unembedding's No − Yes direction).
            continue;
        }
        let pct = |v: usize| format!("{:.0}%", 100.0 * v as f64 / n as f64);
        let name = if cs.len() > 1 { format!("{label} ({} directions)", cs.len()) } else { label };
        t.text_row(&[name, n.to_string(), pct(k[0]), pct(k[1]), pct(k[2]), pct(k[3])]);
    }
    t.class("num")
}

/// The test effects of every direction of one class, grouped by role.
fn effect_strip(s: &SteerOutput, known: bool) -> Option<String> {
    let test: Vec<usize> = (0..s.conditions.len())
        .filter(|&i| s.conditions[i].known == known && s.conditions[i].split == crate::entities::label_set::Split::Test)
        .collect();
    let orig = test.iter().copied().find(|&i| s.conditions[i].role == Role::Original)?;
    let rate = |ci: usize| -> Option<f64> {
        let t = s.tallies.iter().find(|t| t.condition == ci && t.entity_type.is_none())?;
        let hit = if known { t.refusal } else { t.correct + t.wrong };
        Some(100.0 * t.rate(hit))
    };
    let base = rate(orig)?;
    let mut rows = Vec::new();
    for (role, label) in [
        (Role::Detector, "detector"),
        (Role::Opposite, "opposite class"),
        (Role::RefusalDirection, "refusal direction"),
        (Role::RandomLatent, "random SAE latents"),
        (Role::Gaussian, "Gaussian"),
    ] {
        let pts: Vec<f64> =
            test.iter().filter(|&&i| s.conditions[i].role == role).filter_map(|&i| rate(i).map(|r| r - base)).collect();
        if !pts.is_empty() {
            rows.push(StripRow { label: label.into(), points: pts, interval: None });
        }
    }
    let metric = if known { "refusal rate" } else { "answer rate" };
    Some(strip_chart_svg(
        &format!("Test: change of {metric}, {} entities", cls(known)),
        "points (% of questions)",
        &rows,
    ))
}
