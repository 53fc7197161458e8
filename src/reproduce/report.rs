//! The one page `knowlens reproduce` ends with: every claim of the paper with its verdict and
//! numbers, the figures that apply, each stage's wall time, and links to the stages' own reports.

use std::path::Path;

use anyhow::Result;

use super::claims::Claim;
use super::plan::{Dirs, Stage, StageRecord};
use crate::report::html::{Html, Page, Table};

pub fn write(out: &Path, dirs: &Dirs, stages: &[Stage], claims: &[Claim], title: &str) -> Result<()> {
    let mut page = Page::new(title).meta(Html::text(&format!(
        "{} stages; verdicts recomputed from the stages' JSON outputs (claims.json)",
        stages.len()
    )));
    page = page.heading("The paper's claims on these models");
    let mut t = Table::new(&["claim (paper)", "verdict", "evidence"]);
    for c in claims {
        t.row(vec![
            Html::text(&c.paper),
            Html::wrap(
                "span",
                &format!("verdict {}", c.verdict.as_str().replace(' ', "-")),
                Html::text(c.verdict.as_str()),
            ),
            Html::text(&c.evidence),
        ]);
    }
    page = page.table(t);
    for (dir, model) in [(&dirs.steer, "chat model"), (&dirs.steer_base, "base model, few-shot prompt")] {
        for (file, what) in [
            ("refusals-known.svg", "questions about known entities (steered with the unknown direction)"),
            ("refusals-unknown.svg", "questions about unknown entities (steered with the known direction)"),
        ] {
            if let Ok(svg) = std::fs::read_to_string(dir.join(file)) {
                page = page.figure(&svg, &format!("Refusal rate, {what}; {model}"));
            }
        }
    }
    page = page.heading("Stages");
    let mut t = Table::new(&["stage", "what", "wall time", "report"]);
    let link = |dir: &Path| -> Html {
        let rel = dir.join("report.html");
        if rel.is_file() {
            let href = rel.strip_prefix(out).unwrap_or(&rel).display().to_string();
            Html::raw(format!(
                "<a href=\"{}\">{}</a>",
                crate::report::html::escape(&href),
                crate::report::html::escape(&href)
            ))
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
