//! The steering experiments' outputs: `steer.json` (every number), `answers.jsonl` (every
//! completion with its verdicts), `refusals.csv`, `yesno.csv` and one self-contained HTML page
//! (`report.html`: the refusal-rate table and chart per type with 95% intervals, the yes/no
//! logit differences, and sample answers side by side).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::steer::{SteerResult, Treatment};
use super::yesno::YesNoResult;
use crate::fsio::write_atomic;
use crate::report::chart::{grouped_bars, Series};
use crate::report::html::{Html, Page, Table};
use crate::stats::Estimate;

fn pct(e: &Option<Estimate>) -> String {
    e.as_ref()
        .map(|e| format!("{:.0}% [{:.0}, {:.0}]", 100.0 * e.value, 100.0 * e.lo, 100.0 * e.hi))
        .unwrap_or_default()
}

fn cls(known: bool) -> &'static str {
    if known {
        "known"
    } else {
        "unknown"
    }
}

/// Writes every output into `dir` (created if needed), each file atomically.
pub fn write(s: &SteerResult, yn: Option<&YesNoResult>, model_name: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut json = serde_json::to_value(s)?;
    if let Some(y) = yn {
        json["yes_no"] = serde_json::to_value(y)?;
    }
    json["model"] = model_name.into();
    write_atomic(&dir.join("steer.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    let mut answers = String::new();
    for a in &s.answers {
        let it = &s.items[a.item];
        let c = &s.conditions[a.condition];
        let row = serde_json::json!({
            "id": it.id, "type": it.entity_type, "name": it.name, "class": cls(it.known),
            "attribute": it.attribute, "question": it.question, "condition": c.treatment.label(),
            "text": a.text, "refusal": a.refusal, "correct": a.correct,
        });
        answers.push_str(&serde_json::to_string(&row)?);
        answers.push('\n');
    }
    write_atomic(&dir.join("answers.jsonl"), answers.as_bytes())?;
    let mut csv = String::from("class,condition,type,n,refusals,refusal_rate,lo,hi,correct,correct_rate\n");
    for c in &s.cells {
        let cond = &s.conditions[c.condition];
        let r = c.refusal_rate.as_ref();
        let _ = writeln!(
            csv,
            "{},\"{}\",{},{},{},{:.4},{:.4},{:.4},{},{:.4}",
            cls(cond.known),
            cond.treatment.label(),
            c.entity_type.as_deref().unwrap_or("all"),
            c.n,
            c.refusals,
            r.map_or(f64::NAN, |e| e.value),
            r.map_or(f64::NAN, |e| e.lo),
            r.map_or(f64::NAN, |e| e.hi),
            c.correct,
            c.correct_rate.as_ref().map_or(f64::NAN, |e| e.value)
        );
    }
    write_atomic(&dir.join("refusals.csv"), csv.as_bytes())?;
    if let Some(y) = yn {
        let mut csv = String::from("class,condition,type,n,mean,lo,hi\n");
        for c in &y.cells {
            let m = c.mean.as_ref();
            let _ = writeln!(
                csv,
                "{},\"{}\",{},{},{:.4},{:.4},{:.4}",
                cls(c.known),
                c.condition,
                c.entity_type.as_deref().unwrap_or("all"),
                c.n,
                m.map_or(f64::NAN, |e| e.value),
                m.map_or(f64::NAN, |e| e.lo),
                m.map_or(f64::NAN, |e| e.hi)
            );
        }
        write_atomic(&dir.join("yesno.csv"), csv.as_bytes())?;
    }
    page(s, yn, model_name, dir)?.write(&dir.join("report.html"))
}

fn types_of(s: &SteerResult) -> Vec<String> {
    let mut t: Vec<String> = s.items.iter().map(|i| i.entity_type.to_string()).collect();
    t.sort();
    t.dedup();
    t
}

fn page(s: &SteerResult, yn: Option<&YesNoResult>, model_name: &str, dir: &Path) -> Result<Page> {
    let types = types_of(s);
    let norms: Vec<String> = s.mean_norms.iter().map(|(l, n)| format!("layer {l}: {n:.1}")).collect();
    let mut page = Page::new(&format!("Steering refusals: {model_name}")).meta(Html::text(&format!(
        "known direction {} (layer {}), unknown direction {} (layer {}), cosine {:.3}; mean residual norm at the \
         steered positions {}; {} steered positions; refusal rule {}; greedy, {} tokens",
        s.known_direction.name,
        s.known_direction.layer,
        s.unknown_direction.name,
        s.unknown_direction.layer,
        s.cosine_known_unknown,
        norms.join(", "),
        s.options.positions,
        s.options.rule,
        s.options.max_tokens
    )));
    page = page.paragraph(
        "Known entities are steered with the unknown direction (the paper: refusal rises); unknown entities with \
         the known direction (the paper: refusal falls and the model hallucinates). Strengths are multiples of \
         the mean residual norm at the steered layer. Random: directions of the same layer and strength, one \
         of n per question. Intervals: Wilson 95%.",
    );
    for known in [true, false] {
        page = page.heading(&format!("Questions about {} entities", cls(known)));
        let mut header = vec!["condition".to_string()];
        header.extend(types.iter().cloned());
        header.push("all types".into());
        header.push("correct (all types)".into());
        let hdr: Vec<&str> = header.iter().map(|s| s.as_str()).collect();
        let mut table = Table::new(&hdr);
        let mut series = Vec::new();
        for (ci, c) in s.conditions.iter().enumerate().filter(|(_, c)| c.known == known) {
            let mut row = vec![c.treatment.label()];
            let mut values = Vec::new();
            for t in types.iter().map(Some).chain([None]) {
                let cell = s.cells.iter().find(|x| x.condition == ci && x.entity_type.as_ref() == t);
                row.push(cell.map(|x| format!("{} (n={})", pct(&x.refusal_rate), x.n)).unwrap_or_default());
                values.push(cell.and_then(|x| x.refusal_rate.as_ref()).map_or(0.0, |e| 100.0 * e.value));
            }
            let all = s.cells.iter().find(|x| x.condition == ci && x.entity_type.is_none());
            row.push(all.map(|x| pct(&x.correct_rate)).unwrap_or_default());
            table.text_row(&row);
            series.push(Series { name: c.treatment.label(), values });
        }
        page = page.table(table);
        let mut cats = types.clone();
        cats.push("all".into());
        let svg_path = dir.join(format!("refusals-{}.svg", cls(known)));
        grouped_bars(
            &svg_path,
            &format!("Refusal rate, {} entities", cls(known)),
            "% refused",
            &cats,
            &series,
            (900, 420),
        )?;
        let svg = std::fs::read_to_string(&svg_path).with_context(|| format!("reading {}", svg_path.display()))?;
        page = page.figure(&svg, &format!("Refusal rate per condition, questions about {} entities", cls(known)));
    }
    if let Some(y) = yn {
        page = page.heading("\"Are you sure you know …?\": logit(Yes) − logit(No)");
        page = page.paragraph(&format!(
            "{:?}, assistant turn pre-filled with \"Answer:\"; steered at the entity's last token with the opposite \
             class's direction at ×{} mean norms (known {:.1}, unknown {:.1} in residual units); mean with bootstrap 95% intervals.",
            y.question, y.coef, y.magnitude_known, y.magnitude_unknown
        ));
        let mut header = vec!["entities".to_string(), "condition".to_string()];
        header.extend(types.iter().cloned());
        header.push("all types".into());
        let hdr: Vec<&str> = header.iter().map(|s| s.as_str()).collect();
        let mut table = Table::new(&hdr);
        let mut conds: Vec<&str> = y.cells.iter().map(|c| c.condition.as_str()).collect();
        conds.dedup();
        for known in [true, false] {
            for cond in &conds {
                let mut row = vec![cls(known).to_string(), cond.to_string()];
                for t in types.iter().map(Some).chain([None]) {
                    let c = y
                        .cells
                        .iter()
                        .find(|c| c.known == known && c.condition == *cond && c.entity_type.as_ref() == t);
                    row.push(
                        c.and_then(|c| c.mean.as_ref())
                            .map(|e| format!("{:+.2} [{:+.2}, {:+.2}]", e.value, e.lo, e.hi))
                            .unwrap_or_default(),
                    );
                }
                table.text_row(&row);
            }
        }
        page = page.table(table);
    }
    page = page.heading("Sample answers");
    let mut table = Table::new(&["entity", "class", "question", "original", "steered (strongest)"]);
    for known in [true, false] {
        let orig = s.conditions.iter().position(|c| c.known == known && matches!(c.treatment, Treatment::Original));
        let steered = s
            .conditions
            .iter()
            .enumerate()
            .filter(|(_, c)| c.known == known && matches!(c.treatment, Treatment::Direction { .. }))
            .max_by(|a, b| coef_of(&a.1.treatment).total_cmp(&coef_of(&b.1.treatment)))
            .map(|(i, _)| i);
        for (i, it) in s.items.iter().enumerate().filter(|(_, it)| it.known == known).take(8) {
            let text = |c: Option<usize>| {
                c.and_then(|c| s.answers.iter().find(|a| a.item == i && a.condition == c))
                    .map(|a| format!("{}{}", if a.refusal { "[refusal] " } else { "" }, a.text.trim()))
                    .unwrap_or_default()
            };
            table.text_row(&[it.name.clone(), cls(known).into(), it.question.clone(), text(orig), text(steered)]);
        }
    }
    Ok(page.table(table))
}

fn coef_of(t: &Treatment) -> f64 {
    match t {
        Treatment::Direction { coef, .. } | Treatment::Random { coef, .. } => *coef,
        _ => 0.0,
    }
}
