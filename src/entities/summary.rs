//! The labeling summary (Markdown, JSON, SVG charts) and the comparison between modes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use super::config::{mode_dir, RunConfig};
use super::decide::{classify, Class, Controls, EntityLabel};
use super::label::{Mode, QuestionRecord};
use super::labels::read_entity_labels;
use super::matching::Outcome;
use super::questions::EntityType;
use crate::report::chart::{grouped_bars, Series};
use crate::report::table::{frac, markdown};

/// Outcome counts of greedy completions.
pub fn outcome_counts(records: &[&QuestionRecord]) -> [usize; 3] {
    let mut c = [0; 3];
    for r in records {
        if let Some(g) = &r.greedy {
            c[match g.outcome {
                Outcome::Correct => 0,
                Outcome::Refusal => 1,
                Outcome::Error => 2,
            }] += 1;
        }
    }
    c
}

fn class_counts(labels: &[&EntityLabel], known_min: usize) -> [usize; 3] {
    let mut c = [0; 3];
    for l in labels {
        c[match classify(l.n_correct, known_min) {
            Class::Known => 0,
            Class::Unknown => 1,
            Class::Dropped => 2,
        }] += 1;
    }
    c
}

pub fn write(dir: &Path, labels: &[EntityLabel], cfg: &RunConfig, controls: &Controls, seconds: f64, asked_now: usize) -> Result<()> {
    let mut md = format!(
        "# Labels: {} mode\n\nRule: known if ≥ {} attributes correct, unknown if none, dropped otherwise.{}\n\n",
        cfg.opts.mode.as_str(),
        cfg.known_min,
        match cfg.opts.mode {
            Mode::Sampled => format!(" An attribute is correct if ≥ {} of {} samples at T = 1 match.", cfg.opts.min_correct_samples, cfg.opts.samples),
            Mode::Greedy => " An attribute is correct if the greedy completion matches.".into(),
            Mode::Likelihood => " An attribute is correct if greedy decoding would produce a gold value (every token the argmax under teacher forcing).".into(),
        }
    );
    let mut rows = Vec::new();
    let mut class_series = vec![Vec::new(), Vec::new(), Vec::new()];
    let mut types_json = serde_json::Map::new();
    for t in EntityType::ALL {
        let of: Vec<&EntityLabel> = labels.iter().filter(|l| l.entity_type == t).collect();
        if of.is_empty() {
            continue;
        }
        let c = class_counts(&of, cfg.known_min);
        let c1 = class_counts(&of, 1);
        rows.push(vec![t.to_string(), of.len().to_string(), c[0].to_string(), c[1].to_string(), c[2].to_string(), c1[0].to_string()]);
        for k in 0..3 {
            class_series[k].push(c[k] as f64);
        }
        types_json.insert(t.to_string(), json!({"entities": of.len(), "known": c[0], "unknown": c[1], "dropped": c[2], "known_if_min_1": c1[0]}));
    }
    let all: Vec<&EntityLabel> = labels.iter().collect();
    let c = class_counts(&all, cfg.known_min);
    let c1 = class_counts(&all, 1);
    rows.push(vec!["**all**".into(), labels.len().to_string(), c[0].to_string(), c[1].to_string(), c[2].to_string(), c1[0].to_string()]);
    md += "## Classes per type\n\n";
    md += &markdown(&["type", "entities", "known", "unknown", "dropped", "known if ≥ 1 correct"], &rows);

    // Accuracy per attribute.
    let mut by_attr: BTreeMap<(EntityType, String), Vec<&QuestionRecord>> = BTreeMap::new();
    for l in labels {
        for r in &l.records {
            by_attr.entry((r.entity_type, r.attribute.clone())).or_default().push(r);
        }
    }
    let mut rows = Vec::new();
    let mut cats = Vec::new();
    let mut acc = Vec::new();
    let mut attrs_json = serde_json::Map::new();
    for ((t, a), recs) in &by_attr {
        let n = recs.len();
        let ok = recs.iter().filter(|r| r.correct).count();
        let [gc, gr, ge] = outcome_counts(recs);
        let template = recs.first().map(|r| r.template).unwrap_or(0);
        rows.push(vec![
            format!("{t}.{a}"),
            n.to_string(),
            frac(ok, n),
            if gc + gr + ge > 0 { format!("{gc} / {gr} / {ge}") } else { "–".into() },
            template.to_string(),
        ]);
        cats.push(format!("{t}.{a}"));
        acc.push(100.0 * ok as f64 / n.max(1) as f64);
        attrs_json.insert(format!("{t}.{a}"), json!({"asked": n, "correct": ok, "greedy_correct": gc, "greedy_refusal": gr, "greedy_error": ge, "template": template}));
    }
    md += "\n## Accuracy per attribute\n\n";
    md += &markdown(&["attribute", "asked", "correct (mode's rule)", "greedy correct / refusal / error", "template #"], &rows);
    md += &format!(
        "\n## Confound controls\n\nKnown and unknown matched on type and name token count: {} + {}. Fabricated names matched to them: {}.\n",
        controls.matched_known.len(),
        controls.matched_unknown.len(),
        controls.fabricated.len()
    );
    md += &format!("\nQuestions asked in this run: {asked_now}, in {seconds:.0} s.\n");
    md += "\nCharts: `accuracy.svg`, `classes.svg`. Per-entity labels with every completion: `labels.jsonl`; splits: `splits.json`; controls: `controls.json`.\n";
    std::fs::write(dir.join("summary.md"), &md).with_context(|| format!("writing {}", dir.join("summary.md").display()))?;
    let summary = json!({
        "mode": cfg.opts.mode.as_str(), "known_min": cfg.known_min, "types": types_json, "attributes": attrs_json,
        "all": {"entities": labels.len(), "known": c[0], "unknown": c[1], "dropped": c[2]},
        "matched_pairs": controls.matched_known.len(), "fabricated_matched": controls.fabricated.len(),
        "seconds_this_run": seconds, "questions_this_run": asked_now,
    });
    std::fs::write(dir.join("summary.json"), serde_json::to_vec_pretty(&summary)?)?;
    grouped_bars(
        &dir.join("accuracy.svg"),
        &format!("Attributes answered correctly ({} mode)", cfg.opts.mode.as_str()),
        "% correct",
        &cats,
        &[Series { name: "correct".into(), values: acc }],
        (900, 480),
    )?;
    let types: Vec<String> = EntityType::ALL.iter().filter(|t| labels.iter().any(|l| l.entity_type == **t)).map(|t| t.to_string()).collect();
    let [k, u, d]: [Vec<f64>; 3] = class_series.try_into().expect("three classes");
    grouped_bars(
        &dir.join("classes.svg"),
        "Entities per class",
        "entities",
        &types,
        &[Series { name: "known".into(), values: k }, Series { name: "unknown".into(), values: u }, Series { name: "dropped".into(), values: d }],
        (640, 420),
    )?;
    Ok(())
}

/// Where two or more modes have labeled entities in `out`, writes `comparison.md`: agreement on
/// each attribute's correctness and the confusion of entity classes, on the shared entities.
pub fn compare_modes(out: &Path) -> Result<()> {
    let modes: Vec<(Mode, Vec<EntityLabel>)> = [Mode::Greedy, Mode::Sampled, Mode::Likelihood]
        .into_iter()
        .filter_map(|m| {
            let p = mode_dir(out, m).join("labels.jsonl");
            p.exists().then(|| read_entity_labels(&p).map(|l| (m, l)))
        })
        .collect::<Result<_>>()?;
    if modes.len() < 2 {
        return Ok(());
    }
    let mut md = String::from("# Labeling modes compared\n\nOn the entities labeled by both modes of each pair.\n");
    for i in 0..modes.len() {
        for j in i + 1..modes.len() {
            let (ma, la) = &modes[i];
            let (mb, lb) = &modes[j];
            let b_by_id: HashMap<&str, &EntityLabel> = lb.iter().map(|l| (l.id.as_str(), l)).collect();
            let mut conf: BTreeMap<(Class, Class), usize> = BTreeMap::new();
            let (mut q_same, mut q_n, mut a_only, mut b_only) = (0, 0, 0, 0);
            for a in la {
                let Some(b) = b_by_id.get(a.id.as_str()) else { continue };
                *conf.entry((a.class, b.class)).or_default() += 1;
                for ra in &a.records {
                    if let Some(rb) = b.records.iter().find(|r| r.attribute == ra.attribute) {
                        q_n += 1;
                        if ra.correct == rb.correct {
                            q_same += 1;
                        } else if ra.correct {
                            a_only += 1;
                        } else {
                            b_only += 1;
                        }
                    }
                }
            }
            let (na, nb) = (ma.as_str(), mb.as_str());
            md += &format!(
                "\n## {na} vs {nb}\n\nAttributes judged the same: {}; correct only under {na}: {a_only}; only under {nb}: {b_only}.\n\n",
                frac(q_same, q_n)
            );
            let classes = [Class::Known, Class::Unknown, Class::Dropped];
            let rows: Vec<Vec<String>> = classes
                .iter()
                .map(|&ca| {
                    let mut r = vec![format!("{na}: {ca:?}").to_lowercase()];
                    r.extend(classes.iter().map(|&cb| conf.get(&(ca, cb)).copied().unwrap_or(0).to_string()));
                    r
                })
                .collect();
            let hk = format!("{nb}: known");
            let hu = format!("{nb}: unknown");
            let hd = format!("{nb}: dropped");
            md += &markdown(&["", &hk, &hu, &hd], &rows);
        }
    }
    std::fs::write(out.join("comparison.md"), md)?;
    Ok(())
}
