//! The uncertainty experiment's outputs: `uncertainty.json` (every number), `detectors.csv`
//! (one row per detector and test subset) and one self-contained HTML page (`report.html`:
//! the questions used, test AUROC per site as a chart, every detector's held-out metrics, the
//! random-latent baseline, and the test answers a top latent scores highest and lowest).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::{DetectorResult, Metrics, Uncertainty};
use crate::discover::report::{line_chart, Line};
use crate::fsio::write_atomic;
use crate::report::html::{Html, Page, Table};
use crate::stats::Estimate;

pub fn write(u: &Uncertainty, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join("uncertainty.json"), serde_json::to_string_pretty(u)?.as_bytes())?;
    write_atomic(&dir.join("detectors.csv"), detectors_csv(u).as_bytes())?;
    page(u)?.write(&dir.join("report.html"))
}

fn est(e: &Option<Estimate>) -> String {
    e.map(|e| format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi)).unwrap_or_default()
}

fn num(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_default()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn detectors_csv(u: &Uncertainty) -> String {
    let mut s = String::from(
        "detector,kind,layer,hook,latent,direction,rank,train_t,train_auroc,train_freq,corpus_freq,threshold,subset,n_wrong,n_correct,auroc,auroc_lo,auroc_hi,precision,recall,f1,f1_lo,f1_hi,accuracy\n",
    );
    let opt = |v: Option<String>| v.unwrap_or_default();
    for d in &u.detectors {
        let firing = d.at_firing.iter().map(|m| (m, format!("{} (fires)", m.subset)));
        for (m, subset) in d.evals.iter().map(|m| (m, m.subset.clone())).chain(firing) {
            let e = |x: &Option<Estimate>, f: fn(&Estimate) -> f64| x.as_ref().map(|e| format!("{:.6}", f(e)));
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{:.6},{},{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(&d.name),
                d.kind,
                opt(d.layer.map(|v| v.to_string())),
                opt(d.hook.clone()),
                opt(d.latent.map(|v| v.to_string())),
                opt(d.direction.map(|v| v.as_str().to_string())),
                opt(d.rank.map(|v| v.to_string())),
                opt(d.train_welch.map(|w| format!("{:.4}", w.t))),
                opt(d.train_auroc.map(|v| format!("{v:.6}"))),
                opt(d.train_freq.map(|v| format!("{v:.4}"))),
                opt(d.corpus_freq.map(|v| format!("{v:.4}"))),
                d.threshold,
                csv_field(&subset),
                m.n_wrong,
                m.n_correct,
                opt(e(&m.auroc, |e| e.value)),
                opt(e(&m.auroc, |e| e.lo)),
                opt(e(&m.auroc, |e| e.hi)),
                opt(m.precision.map(|v| format!("{v:.6}"))),
                opt(m.recall.map(|v| format!("{v:.6}"))),
                opt(e(&m.f1, |e| e.value)),
                opt(e(&m.f1, |e| e.lo)),
                opt(e(&m.f1, |e| e.hi)),
                opt(m.accuracy.map(|v| format!("{v:.6}"))),
            );
        }
    }
    s
}

fn metrics_row(d: &DetectorResult, m: &Metrics, label: &str) -> Vec<String> {
    vec![
        label.to_string(),
        m.subset.clone(),
        format!("{} / {}", m.n_wrong, m.n_correct),
        est(&m.auroc),
        num(m.precision),
        num(m.recall),
        est(&m.f1),
        num(m.accuracy),
        format!("{:.3}", d.threshold),
    ]
}

const METRIC_HEADER: [&str; 9] = [
    "detector",
    "subset",
    "wrong / correct",
    "AUROC [95% CI]",
    "precision",
    "recall",
    "F1 [95% CI]",
    "accuracy",
    "threshold",
];

fn page(u: &Uncertainty) -> Result<Page> {
    let o = &u.options;
    let meta = format!(
        "{} · labels {} ({}) · up to {} wrong and {} correct questions per type and split · top {} latents per direction · {} random latents · {} bootstrap resamples · seed {}",
        u.model,
        u.labels,
        u.label_mode.as_deref().unwrap_or("mode unknown"),
        o.per_type,
        o.per_type,
        o.top,
        o.n_random,
        o.reps,
        o.seed
    );
    let mut p = Page::new("Uncertainty directions: will the answer be wrong?").meta(Html::text(&meta));
    p = p.paragraph(
        "Site: the residual stream at the last prompt token (its next-token prediction starts the answer). \
         Layer L is blocks.{L-1}.hook_resid_post. Positive class: the greedy answer was judged wrong. \
         Latents and probes are chosen and fitted on train entities; every number here is on test entities \
         (no entity is in both). Latents of the \"correct\" direction score minus their activation.",
    );
    for n in &u.notes {
        p = p.paragraph(&format!("Note: {n}"));
    }

    p = p.heading("Questions used");
    let mut t = Table::new(&["split", "type", "wrong", "correct"]);
    for (split, by_type) in &u.used {
        for (ty, [w, c]) in by_type {
            t.text_row(&[split.clone(), ty.clone(), w.to_string(), c.to_string()]);
        }
    }
    p = p.table(t);
    let pc = &u.pool;
    p = p.paragraph(&format!(
        "Of {} records: {} not counting attributes (years, genres, populations), {} with no usable gold value (guessable or the entity's own words), {} without a greedy answer, {} of entities missing from the dataset, {} in a leak group split both ways.",
        pc.records, pc.not_counting, pc.unusable_gold, pc.no_greedy_answer, pc.entity_not_in_dataset, pc.split_conflict
    ));

    p = p.heading("Test AUROC per site");
    let line = |name: &str, get: &dyn Fn(&super::Site) -> Option<Estimate>, dashed: bool| Line {
        name: name.to_string(),
        points: u.sites.iter().filter_map(|s| get(s).map(|e| (s.layer as f64, e.value))).collect(),
        bars: u.sites.iter().filter_map(|s| get(s).map(|e| (s.layer as f64, e.lo, e.hi))).collect(),
        dashed,
    };
    let mut lines = vec![
        line("top latent (wrong)", &|s| s.top_wrong_latent, false),
        line("top latent (correct)", &|s| s.top_correct_latent, false),
        line("probe", &|s| s.probe, false),
        line("diff of means", &|s| s.diff_of_means, false),
    ];
    lines.push(Line {
        name: "random latents (mean)".into(),
        points: u.sites.iter().filter_map(|s| s.random_mean.map(|m| (s.layer as f64, m))).collect(),
        bars: Vec::new(),
        dashed: true,
    });
    lines.retain(|l| !l.points.is_empty());
    let svg = line_chart("Will the answer be wrong? Test AUROC per site", "AUROC", &lines, (0.2, 1.0), Some(0.5))?;
    p = p
        .figure(&svg, "95% bootstrap intervals; the latents are the rank-0 latent of each direction by train Welch t.");
    let mut t = Table::new(&[
        "layer",
        "hook",
        "SAE",
        "top latent (wrong)",
        "top latent (correct)",
        "random (mean)",
        "probe",
        "diff of means",
    ]);
    for s in &u.sites {
        t.text_row(&[
            s.layer.to_string(),
            s.hook.clone(),
            s.sae.clone().unwrap_or_default(),
            est(&s.top_wrong_latent),
            est(&s.top_correct_latent),
            num(s.random_mean),
            est(&s.probe),
            est(&s.diff_of_means),
        ]);
    }
    p = p.table(t);

    p = p.heading("Every detector on the test split");
    let mut t = Table::new(&METRIC_HEADER);
    for d in &u.detectors {
        if let Some(m) = d.evals.first() {
            t.text_row(&metrics_row(d, m, &d.name));
        }
        if let Some(m) = &d.at_firing {
            let mut r = metrics_row(
                d,
                m,
                &format!(
                    "{}, fires ⇒ {}",
                    d.name,
                    if d.direction == Some(super::Direction::Correct) { "correct" } else { "wrong" }
                ),
            );
            r[8] = "fires".into();
            t.text_row(&r);
        }
    }
    p = p.table(t);
    p = p.paragraph("Thresholds: chosen on train to maximise balanced accuracy (score > threshold ⇒ wrong); \"fires\" rows read an SAE latent as a switch. The constant classifier predicts every answer wrong.");

    p = p.heading("Subsets of the test split");
    let mut t = Table::new(&METRIC_HEADER);
    for d in u.detectors.iter().filter(|d| d.rank.is_none_or(|r| r == 0)) {
        for m in d.evals.iter().skip(1) {
            t.text_row(&metrics_row(d, m, &d.name));
        }
    }
    p = p.table(t);

    if !u.random_baselines.is_empty() {
        p = p.heading("Random latents of the same firing frequency");
        let mut t = Table::new(&[
            "site",
            "direction",
            "top latent",
            "its test AUROC",
            "random latents",
            "mean",
            "max",
            "≥ top",
        ]);
        for r in &u.random_baselines {
            t.text_row(&[
                format!("L{} {}", r.layer, r.hook),
                r.direction.as_str().to_string(),
                r.of_latent.to_string(),
                num(r.of_auroc),
                r.latents.len().to_string(),
                num(r.mean),
                num(r.max),
                r.at_least_top.to_string(),
            ]);
        }
        p = p.table(t);
    }

    p = p.heading("Test answers scored highest and lowest");
    for e in &u.examples {
        let mut t = Table::new(&["", "entity", "attribute", "answer", "judged", "score"]);
        for (which, rows) in [("highest", &e.highest), ("lowest", &e.lowest)] {
            for (name, attr, answer, wrong, s) in rows.iter() {
                t.text_row(&[
                    which.to_string(),
                    name.clone(),
                    attr.clone(),
                    answer.trim().to_string(),
                    if *wrong { "wrong" } else { "correct" }.to_string(),
                    format!("{s:.3}"),
                ]);
            }
        }
        p = p.paragraph(&e.detector).table(t);
    }
    Ok(p)
}
