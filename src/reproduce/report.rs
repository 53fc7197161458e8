//! The one page `knowlens reproduce` ends with. It opens with what it is (the paper, the models
//! and their files, the SAEs, the date and commit), the tally of verdicts and three headline
//! numbers; then the claims with styled verdicts; then each claim's calibration (what was chosen
//! on which split, the null rate, the positive control, broken outputs, per-type figures); the
//! stages' wall times and links to their own reports.

use std::path::Path;

use anyhow::Result;

use super::plan::{Dirs, Stage, StageRecord};
use crate::causal::report::verdict_class;
use crate::report::html::{escape, Html, Page, Table};
use crate::verdict::{Claim, Verdict};

/// What the page says about the run before any number.
pub struct RunInfo {
    pub title: String,
    /// (role, name, file, sha256) of each model.
    pub models: Vec<(String, String, String, String)>,
    pub saes: String,
    pub date: String,
    pub commit: String,
}

pub fn write(out: &Path, dirs: &Dirs, stages: &[Stage], claims: &[Claim], info: &RunInfo) -> Result<()> {
    let models = info
        .models
        .iter()
        .map(|(role, name, file, sha)| format!("{role}: {name} ({file}, sha256 {})", &sha[..sha.len().min(16)]))
        .collect::<Vec<_>>()
        .join("; ");
    let mut page = Page::new(&info.title).meta(Html::text(&format!(
        "Ferrando et al., \"Do I Know This Entity? Knowledge Awareness and Hallucinations in Language Models\" (ICLR 2025). \
         {models}. SAEs: {}. {} · knowlens {} · verdicts recomputed from the stages' JSON outputs (claims.json)",
        info.saes, info.date, info.commit
    )))
    .contents();
    let count = |v: Verdict| claims.iter().filter(|c| c.verdict == v).count();
    let tally = format!(
        "{} claims: <span class=\"verdict ok\">{} reproduced</span> <span class=\"verdict no\">{} not reproduced</span> \
         <span class=\"verdict inconclusive\">{} inconclusive</span> <span class=\"verdict na\">{} not testable here</span>",
        claims.len(),
        count(Verdict::Reproduced),
        count(Verdict::NotReproduced),
        count(Verdict::Inconclusive),
        count(Verdict::NotTestable)
    );
    page = page.html(Html::raw(format!("<p class=\"stats\">{tally}</p>")));
    let headline: Vec<String> = ["known-latent", "base-refusal-up", "attention"]
        .iter()
        .filter_map(|id| claims.iter().find(|c| c.id == *id))
        .map(|c| {
            format!("<b>{}</b>: {} ({})", escape(&c.id), escape(c.figure.as_deref().unwrap_or("–")), c.verdict.as_str())
        })
        .collect();
    if !headline.is_empty() {
        page = page.html(Html::raw(format!("<p class=\"stats\">Headline numbers: {}</p>", headline.join(" · "))));
    }
    page = page.heading("The paper's claims on these models");
    let mut t = Table::new(&["claim", "paper", "verdict", "figure", "evidence"]);
    for c in claims {
        t.row(vec![
            Html::text(&c.id),
            Html::text(&c.paper),
            Html::raw(format!("<span class=\"verdict {}\">{}</span>", verdict_class(c), c.verdict.as_str())),
            Html::text(c.figure.as_deref().unwrap_or("–")),
            Html::text(&c.evidence),
        ]);
    }
    page = page.table(t);
    page = page.heading("Calibration: selection, null rate, positive control");
    page = page.paragraph(
        "Null rate: how often the claim's own rule says \"reproduced\" with a random direction (or shuffled labels or \
         depths) in the detector's place; a calibrated rule stays at or below 5%. Positive control: a direction known \
         to have the effect, under the same rule; when it fails the claim is not testable with this setup. Broken: the \
         share of completions that are not an answer of the asked kind (a control above 20% makes a claim inconclusive).",
    );
    let mut t = Table::new(&["claim", "chosen on", "rule", "null rate", "positive control", "broken"]);
    for c in claims {
        t.row(vec![
            Html::text(&c.id),
            Html::text(&c.selection.as_ref().map_or("–".into(), |s| format!("{}: {}", s.split, s.chosen))),
            Html::text(&c.selection.as_ref().map_or("–".into(), |s| s.rule.clone())),
            Html::text(&c.null.map_or("–".into(), |n| format!("{}/{} = {:.0}%", n.passed, n.draws, 100.0 * n.rate))),
            Html::text(&c.positive_control.as_ref().map_or("–".into(), |p| {
                format!("{}: {} — {}", p.what, if p.passed { "passed" } else { "failed" }, p.evidence)
            })),
            Html::text(
                &c.broken
                    .iter()
                    .map(|b| format!("{} {:.0}% of {}", b.condition, 100.0 * b.fraction, b.n))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ]);
    }
    page = page.table(t);
    let typed: Vec<&Claim> = claims.iter().filter(|c| !c.per_type.is_empty()).collect();
    if !typed.is_empty() {
        page = page.heading("Per entity type");
        let mut t = Table::new(&["claim", "type", "n", "in the pooled figure", "figure"]);
        for c in typed {
            for f in &c.per_type {
                t.text_row(&[
                    c.id.clone(),
                    f.entity_type.clone(),
                    f.n.to_string(),
                    if f.pooled { "yes".into() } else { "no (too few)".into() },
                    f.figure.clone(),
                ]);
            }
        }
        page = page.table(t);
    }
    for (dir, model) in [(&dirs.steer_base, "base model, few-shot prompt"), (&dirs.steer, "chat model")] {
        if let Ok(text) = std::fs::read_to_string(dir.join("figures.html")) {
            page = page.heading(&format!("Steering, {model}")).html(Html::raw(text));
        }
    }
    page = page.heading("Stages");
    let mut t = Table::new(&["stage", "what", "wall time", "report"]);
    let link = |dir: &Path| -> Html {
        let rel = dir.join("report.html");
        if rel.is_file() {
            let href = rel.strip_prefix(out).unwrap_or(&rel).display().to_string();
            Html::raw(format!("<a href=\"{}\">{}</a>", escape(&href), escape(&href)))
        } else {
            Html::text("")
        }
    };
    for s in stages {
        let rec = StageRecord::read(out, s.name);
        let dir = match s.name {
            "discover-base" => Some(&dirs.discover_base),
            "discover-chat" => Some(&dirs.discover_chat),
            "steer" => Some(&dirs.steer),
            "steer-base" => Some(&dirs.steer_base),
            "attention" => Some(&dirs.attention),
            "patch" => Some(&dirs.patch),
            "uncertainty" => Some(&dirs.uncertainty),
            "label-base" => Some(&dirs.labels_base),
            "label-chat" => Some(&dirs.labels_chat),
            _ => None,
        };
        t.row(vec![
            Html::text(s.name),
            Html::text(s.about),
            Html::text(&rec.map_or("not finished".into(), |r| format!("{:.0} s", r.seconds))),
            dir.map_or(Html::text(""), |d| link(d)),
        ]);
    }
    page = page.table(t);
    crate::fsio::write_atomic(&out.join("claims.json"), serde_json::to_string_pretty(claims)?.as_bytes())?;
    page.write(&out.join("report.html"))
}
