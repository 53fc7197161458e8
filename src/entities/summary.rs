//! The labeling summary (Markdown, JSON, SVG charts) and the comparison between modes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use super::chance::{self, ChanceRow};
use super::config::{mode_dir, RunConfig};
use super::decide::{classify, Class, Controls, EntityLabel, Splits};
use super::label::{Mode, QuestionRecord};
use super::label_set::read_entity_labels;
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
                Outcome::Error | Outcome::Echo | Outcome::Fragment => 2,
            }] += 1;
        }
    }
    c
}

/// Classes under `known_min` (entities dropped for a note stay dropped).
fn class_counts(labels: &[&EntityLabel], known_min: usize) -> [usize; 3] {
    let mut c = [0; 3];
    for l in labels {
        let class = if l.note.is_some() { Class::Dropped } else { classify(l.n_correct, known_min) };
        c[match class {
            Class::Known => 0,
            Class::Unknown => 1,
            Class::Dropped => 2,
        }] += 1;
    }
    c
}

#[allow(clippy::too_many_arguments)]
pub fn write(
    dir: &Path,
    labels: &[EntityLabel],
    cfg: &RunConfig,
    splits: &Splits,
    controls: &Controls,
    chance: &[ChanceRow],
    duplicates: usize,
    seconds: f64,
    asked_now: usize,
) -> Result<()> {
    let counting: Vec<String> =
        super::rule::COUNTING.iter().map(|(t, a)| format!("{t} {}", a.replace('_', " "))).collect();
    let mut md = format!(
        "# Labels: {} mode\n\nRule: known if ≥ {} counting attributes (names: {}) are reliably correct, unknown if none, dropped otherwise (and dropped when fewer than {} counting attributes have a usable gold value, or the name nearly duplicates a more popular one). Years, genres and populations never count. Answers that echo the entity's name or are fragments are wrong; guessable gold values (shared by ≥ 10% of the type) do not count.{} Attributes asked: {}.\n\n",
        cfg.opts.mode.as_str(),
        cfg.known_min,
        counting.join(", "),
        cfg.known_min,
        match cfg.opts.mode {
            Mode::Sampled => format!(" An attribute is reliably correct if ≥ {} of {} samples at T = 1 match.", cfg.opts.min_correct_samples, cfg.opts.samples),
            Mode::Greedy => " An attribute is correct if the greedy completion matches.".into(),
            Mode::Likelihood => " An attribute is correct if greedy decoding would produce a gold value (every token the argmax under teacher forcing).".into(),
            Mode::Estimate => format!(
                " An attribute is reliably correct if the estimated probability that one answer at T = 1 is judged correct (summed teacher-forced probability of the acceptable answers' surface forms) is ≥ {:.4}, where ≥ 3 of 10 samples is a coin flip.",
                cfg.opts.threshold
            ),
        },
        cfg.attribute_set()
    );
    let mut rows = Vec::new();
    let mut class_series = vec![Vec::new(), Vec::new(), Vec::new()];
    let mut types_json = serde_json::Map::new();
    let in_test = |t: EntityType, class: Class| {
        splits
            .test
            .get(&class)
            .map_or(0, |ids| ids.iter().filter(|id| labels.iter().any(|l| &l.id == *id && l.entity_type == t)).count())
    };
    let matched_test = |t: EntityType| {
        controls.by_split.get("test").map_or(0, |m| {
            m.known.iter().filter(|id| labels.iter().any(|l| &l.id == *id && l.entity_type == t)).count()
        })
    };
    for t in EntityType::ALL {
        let of: Vec<&EntityLabel> = labels.iter().filter(|l| l.entity_type == t).collect();
        if of.is_empty() {
            continue;
        }
        let c = class_counts(&of, cfg.known_min);
        let c1 = class_counts(&of, 1);
        let noted = of.iter().filter(|l| l.note.is_some()).count();
        let (kt, ut, mt) = (in_test(t, Class::Known), in_test(t, Class::Unknown), matched_test(t));
        rows.push(vec![
            t.to_string(),
            of.len().to_string(),
            c[0].to_string(),
            c[1].to_string(),
            format!("{} ({noted})", c[2]),
            kt.to_string(),
            ut.to_string(),
            mt.to_string(),
            c1[0].to_string(),
        ]);
        for k in 0..3 {
            class_series[k].push(c[k] as f64);
        }
        types_json.insert(
            t.to_string(),
            json!({"entities": of.len(), "known": c[0], "unknown": c[1], "dropped": c[2], "dropped_by_note": noted,
                   "known_test": kt, "unknown_test": ut, "matched_pairs_test": mt, "known_if_min_1": c1[0]}),
        );
    }
    let all: Vec<&EntityLabel> = labels.iter().collect();
    let c = class_counts(&all, cfg.known_min);
    let c1 = class_counts(&all, 1);
    let noted = labels.iter().filter(|l| l.note.is_some()).count();
    rows.push(vec![
        "**all**".into(),
        labels.len().to_string(),
        c[0].to_string(),
        c[1].to_string(),
        format!("{} ({noted})", c[2]),
        splits.test.get(&Class::Known).map_or(0, Vec::len).to_string(),
        splits.test.get(&Class::Unknown).map_or(0, Vec::len).to_string(),
        controls.by_split.get("test").map_or(0, |m| m.known.len()).to_string(),
        c1[0].to_string(),
    ]);
    md += "## Classes per type\n\n";
    md += &markdown(
        &[
            "type",
            "entities",
            "known",
            "unknown",
            "dropped (of which by note)",
            "known in test",
            "unknown in test",
            "matched pairs in test",
            "known if ≥ 1 correct",
        ],
        &rows,
    );
    md += &format!(
        "\nNear-duplicate names dropped: {duplicates}. Groups kept in one split (same name across types, one franchise): {}.\n",
        splits.groups.len()
    );

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
    md += &markdown(
        &["attribute", "asked", "correct (mode's rule)", "greedy correct / refusal / error", "template #"],
        &rows,
    );
    md += &format!(
        "\n## Confound controls\n\nKnown and unknown matched one to one within each split on type, name token count and popularity band (quintiles of rank): {} pairs ({}). Fabricated names, their own control set: {}.\n",
        controls.matched_known.len(),
        controls.by_split.iter().map(|(s, m)| format!("{s} {}", m.known.len())).collect::<Vec<_>>().join(", "),
        controls.fabricated.len()
    );
    if !chance.is_empty() {
        md += "\n";
        md += &chance::markdown_table(chance).replacen("# Chance", "## Chance", 1);
    }
    md += &format!("\nQuestions asked in this run: {asked_now}, in {seconds:.0} s.\n");
    md += "\nCharts: `accuracy.svg`, `classes.svg`. Per-entity labels with every completion: `labels.jsonl`; splits: `splits.json`; controls: `controls.json`.\n";
    std::fs::write(dir.join("summary.md"), &md)
        .with_context(|| format!("writing {}", dir.join("summary.md").display()))?;
    let summary = json!({
        "mode": cfg.opts.mode.as_str(), "known_min": cfg.known_min, "types": types_json, "attributes": attrs_json,
        "attribute_set": cfg.attribute_set().as_str(), "threshold": cfg.opts.threshold, "near_duplicates_dropped": duplicates,
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
    let types: Vec<String> =
        EntityType::ALL.iter().filter(|t| labels.iter().any(|l| l.entity_type == **t)).map(|t| t.to_string()).collect();
    let [k, u, d]: [Vec<f64>; 3] = class_series.try_into().expect("three classes");
    grouped_bars(
        &dir.join("classes.svg"),
        "Entities per class",
        "entities",
        &types,
        &[
            Series { name: "known".into(), values: k },
            Series { name: "unknown".into(), values: u },
            Series { name: "dropped".into(), values: d },
        ],
        (640, 420),
    )?;
    Ok(())
}

/// Where two or more modes have labeled entities in `out`, writes `comparison.md`: agreement on
/// each attribute's correctness and the confusion of entity classes, on the shared entities.
pub fn compare_modes(out: &Path) -> Result<()> {
    let modes: Vec<(Mode, Vec<EntityLabel>)> = Mode::ALL
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
            // Per attribute: [same, only a, only b, both correct].
            let mut per_attr: BTreeMap<String, [usize; 4]> = BTreeMap::new();
            for a in la {
                let Some(b) = b_by_id.get(a.id.as_str()) else { continue };
                *conf.entry((a.class, b.class)).or_default() += 1;
                for ra in &a.records {
                    if let Some(rb) = b.records.iter().find(|r| r.attribute == ra.attribute) {
                        q_n += 1;
                        let e = per_attr.entry(format!("{}.{}", a.entity_type, ra.attribute)).or_default();
                        if ra.correct == rb.correct {
                            q_same += 1;
                            e[0] += 1;
                            e[3] += usize::from(ra.correct);
                        } else if ra.correct {
                            a_only += 1;
                            e[1] += 1;
                        } else {
                            b_only += 1;
                            e[2] += 1;
                        }
                    }
                }
            }
            let (na, nb) = (ma.as_str(), mb.as_str());
            md += &format!(
                "\n## {na} vs {nb}\n\nAttributes judged the same: {}; correct only under {na}: {a_only}; only under {nb}: {b_only}.\n\n",
                frac(q_same, q_n)
            );
            let attr_rows: Vec<Vec<String>> = per_attr
                .iter()
                .map(|(k, e)| {
                    let n = e[0] + e[1] + e[2];
                    vec![k.clone(), n.to_string(), frac(e[0], n), e[3].to_string(), e[1].to_string(), e[2].to_string()]
                })
                .collect();
            let h1 = format!("correct only under {na}");
            let h2 = format!("correct only under {nb}");
            md += &markdown(
                &["attribute", "asked in both", "judged the same", "correct under both", &h1, &h2],
                &attr_rows,
            );
            md += "\n";
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
