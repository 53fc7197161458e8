//! `discover`'s outputs: `discovery.json` (every number), CSV tables (`layers.csv`,
//! `ranked.csv`, `heldout.csv`, `random_latents.csv`), `detectors.json` and one self-contained
//! HTML page (`report.html`: the MaxMin curve per layer, the f_known / f_unknown scatter at the
//! best layer, latent and probe AUROC per layer with intervals, the top latents).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

use super::heldout::Eval;
use super::scores::Direction;
use super::Discovery;
use crate::fsio::write_atomic;
use crate::report::html::{Html, Page, Table};
use crate::stats::Estimate;

/// Writes every output into `dir` (created if needed); each file atomically.
pub fn write(d: &Discovery, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join("discovery.json"), serde_json::to_string_pretty(d)?.as_bytes())?;
    write_atomic(&dir.join("layers.csv"), layers_csv(d).as_bytes())?;
    write_atomic(&dir.join("ranked.csv"), ranked_csv(d).as_bytes())?;
    write_atomic(&dir.join("heldout.csv"), heldout_csv(d).as_bytes())?;
    write_atomic(&dir.join("random_latents.csv"), random_csv(d).as_bytes())?;
    if let Some(f) = &d.detectors {
        f.save(&dir.join("detectors.json"))?;
    }
    page(d)?.write(&dir.join("report.html"))
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_default()
}

fn est(e: &Option<Estimate>) -> [String; 3] {
    match e {
        Some(e) => [format!("{:.4}", e.value), format!("{:.4}", e.lo), format!("{:.4}", e.hi)],
        None => Default::default(),
    }
}

fn est_text(e: &Option<Estimate>) -> String {
    match e {
        Some(e) => format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi),
        None => "–".into(),
    }
}

fn layers_csv(d: &Discovery) -> String {
    let mut s = String::from(
        "layer,sae_hook,maxmin_known,maxmin_known_latent,maxmin_unknown,maxmin_unknown_latent,top_known_auroc,lo,hi,top_unknown_auroc,lo,hi,probe_auroc,lo,hi,dom_auroc,lo,hi,probe_validation,dom_validation\n",
    );
    for l in &d.layers {
        let mm = |x: Option<(usize, f32)>| x.map(|(j, v)| (format!("{v:.4}"), j.to_string())).unwrap_or_default();
        let (mk, mkj) = mm(l.maxmin_known);
        let (mu, muj) = mm(l.maxmin_unknown);
        let b = l.baseline.as_ref();
        let cells: Vec<String> = [l.layer.to_string(), l.sae_hook.clone().unwrap_or_default(), mk, mkj, mu, muj]
            .into_iter()
            .chain(est(&l.top_known_auroc))
            .chain(est(&l.top_unknown_auroc))
            .chain(est(&b.and_then(|b| b.probe_test)))
            .chain(est(&b.and_then(|b| b.dom_test)))
            .chain([opt(b.and_then(|b| b.probe_validation)), opt(b.and_then(|b| b.dom_validation))])
            .collect();
        let _ = writeln!(s, "{}", cells.join(","));
    }
    s
}

fn ranked_csv(d: &Discovery) -> String {
    let types: Vec<String> = d.types_scored.iter().map(|t| t.to_string()).collect();
    let mut s = format!("direction,rank,layer,latent,score_min,score_mean,corpus_freq,entity_freq,{}\n", {
        types
            .iter()
            .flat_map(|t| [format!("s_{t}"), format!("f_known_{t}"), format!("f_unknown_{t}")])
            .collect::<Vec<_>>()
            .join(",")
    });
    for r in d.ranked_known.iter().chain(&d.ranked_unknown) {
        let mut cells = vec![
            r.direction.as_str().to_string(),
            r.rank.to_string(),
            r.layer.to_string(),
            r.latent.to_string(),
            format!("{:.4}", r.score_min),
            format!("{:.4}", r.score_mean),
            r.corpus_freq.map(|f| format!("{f:.4}")).unwrap_or_default(),
            format!("{:.4}", r.entity_freq),
        ];
        for t in &d.types_scored {
            for m in [&r.s, &r.f_known, &r.f_unknown] {
                cells.push(m.get(t).map(|v| format!("{v:.4}")).unwrap_or_default());
            }
        }
        let _ = writeln!(s, "{}", cells.join(","));
    }
    s
}

fn eval_cells(e: &Eval) -> Vec<String> {
    let mut c = vec![
        format!("\"{}\"", e.subset),
        e.entity_type.map(|t| t.to_string()).unwrap_or_else(|| "all".into()),
        e.n_pos.to_string(),
        e.n_neg.to_string(),
    ];
    c.extend(est(&e.auroc));
    c.extend(est(&e.balanced_accuracy));
    c.push(opt(e.accuracy));
    c
}

fn heldout_csv(d: &Discovery) -> String {
    let mut s = String::from("detector,direction,rank,layer,latent,threshold,subset,type,n_pos,n_neg,auroc,lo,hi,balanced_accuracy,lo,hi,accuracy\n");
    for l in &d.latent_evals {
        for e in &l.evals {
            let head = [
                "sae_latent".to_string(),
                l.direction.as_str().into(),
                l.rank.to_string(),
                l.layer.to_string(),
                l.latent.to_string(),
                format!("{:.6}", l.threshold),
            ];
            let _ = writeln!(s, "{},{}", head.join(","), eval_cells(e).join(","));
        }
    }
    for (name, evals, layer) in
        [("probe", &d.probe_evals, d.probe_layer), ("popularity_and_name_length", &d.confound_baseline, None)]
    {
        for e in evals {
            let _ = writeln!(
                s,
                "{name},known,,{},,,{}",
                layer.map(|l| l.to_string()).unwrap_or_default(),
                eval_cells(e).join(",")
            );
        }
    }
    s
}

fn random_csv(d: &Discovery) -> String {
    let mut s = String::from("direction,layer,of_latent,of_auroc,random_latent,random_auroc\n");
    for r in &d.random_baselines {
        for (j, a) in r.latents.iter().zip(&r.aurocs) {
            let _ =
                writeln!(s, "{},{},{},{},{j},{}", r.direction.as_str(), r.layer, r.of_latent, opt(r.of_auroc), opt(*a));
        }
    }
    s
}

const COLORS: [RGBColor; 10] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A line series: name, points, optional (x, lo, hi) interval bars.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub bars: Vec<(f64, f64, f64)>,
    pub dashed: bool,
}

/// Lines over layers as an SVG string (plotters), with the legend to the right of the plotting
/// area (it covers no data) and, when `chance` is given, a dashed grey line at that value.
pub fn line_chart(
    title: &str,
    y_label: &str,
    lines: &[Line],
    y_range: (f64, f64),
    chance: Option<f64>,
) -> Result<String> {
    let mut svg = String::new();
    {
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing {title}: {e}");
        let whole = SVGBackend::with_string(&mut svg, (900, 380)).into_drawing_area();
        whole.fill(&WHITE).map_err(|e| err(&e))?;
        let (root, side) = whole.split_horizontally(700);
        let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
        let (x0, x1) = if x0.is_finite() { (x0 - 0.5, x1 + 0.5) } else { (0.0, 1.0) };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..x1, y_range.0..y_range.1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("layer (residual stream entering block L)")
            .y_desc(y_label)
            // Layers are whole numbers: a tick between two layers gets no label (rounded, it
            // would repeat its neighbour's).
            .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-6 { format!("{x:.0}") } else { String::new() })
            .draw()
            .map_err(|e| err(&e))?;
        let grey = RGBColor(120, 120, 120);
        if let Some(y) = chance {
            chart
                .draw_series(DashedLineSeries::new(vec![(x0, y), (x1, y)], 6, 4, grey.stroke_width(1)))
                .map_err(|e| err(&e))?;
        }
        let mut legend: Vec<(String, RGBColor, bool)> = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            let style = ShapeStyle { color: c.to_rgba(), filled: false, stroke_width: if l.dashed { 1 } else { 2 } };
            chart.draw_series(LineSeries::new(l.points.clone(), style)).map_err(|e| err(&e))?;
            chart.draw_series(l.points.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(|e| err(&e))?;
            chart
                .draw_series(l.bars.iter().map(|&(x, lo, hi)| ErrorBar::new_vertical(x, lo, (lo + hi) / 2.0, hi, c, 6)))
                .map_err(|e| err(&e))?;
            legend.push((l.name.clone(), c, l.dashed));
        }
        if let Some(y) = chance {
            legend.push((format!("chance ({y})"), grey, true));
        }
        // The legend, beside the chart.
        for (i, (name, c, dashed)) in legend.iter().enumerate() {
            let y = 50 + 20 * i as i32;
            let w = if *dashed { 1 } else { 2 };
            side.draw(&PathElement::new(vec![(4, y), (24, y)], c.stroke_width(w))).map_err(|e| err(&e))?;
            side.draw(&Text::new(name.clone(), (30, y - 6), ("sans-serif", 12))).map_err(|e| err(&e))?;
        }
        whole.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// f_known vs f_unknown (percent) per latent, top latents highlighted.
fn scatter_chart(d: &Discovery) -> Result<Option<String>> {
    let Some(s) = &d.scatter else { return Ok(None) };
    let mut svg = String::new();
    {
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing the scatter: {e}");
        let root = SVGBackend::with_string(&mut svg, (520, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("Latents at layer {} on the test split", s.layer), ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(-2f64..102f64, -2f64..102f64)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("% of known entities active")
            .y_desc("% of unknown entities active")
            .draw()
            .map_err(|e| err(&e))?;
        let pt = |j: usize| (s.f_known[j] as f64 * 100.0, s.f_unknown[j] as f64 * 100.0);
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(
                (0..s.f_known.len())
                    .filter(|&j| s.passes_filter[j] && s.f_known[j] + s.f_unknown[j] > 0.0)
                    .map(|j| Circle::new(pt(j), 2, grey.mix(0.5).filled())),
            )
            .map_err(|e| err(&e))?;
        for (set, c, name) in
            [(&s.top_known, COLORS[1], "top known (train)"), (&s.top_unknown, COLORS[0], "top unknown (train)")]
        {
            chart
                .draw_series(set.iter().map(|&j| Circle::new(pt(j), 5, c.filled())))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 6, y), 5, c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(Some(svg))
}

fn page(d: &Discovery) -> Result<Page> {
    let mut meta = format!(
        "model {} (d_model {}, {} layers) · labels {}{} · types scored: {}",
        d.model.name,
        d.model.d_model,
        d.model.n_layers,
        d.labels,
        d.label_mode.as_ref().map(|m| format!(" ({m})")).unwrap_or_default(),
        d.types_scored.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    );
    let _ = write!(
        meta,
        " · {} corpus tokens · {:.0} s",
        d.counts.corpus_tokens,
        d.seconds.get("total").copied().unwrap_or(0.0)
    );
    let mut p = Page::new("Entity-recognition latents").meta(Html::text(&meta)).contents();
    p = selected_section(p, d).notes(&d.notes);
    // Counts.
    let keys: Vec<String> = {
        let mut k: Vec<String> = d.counts.per_type.values().flat_map(|m| m.keys().cloned()).collect();
        k.sort();
        k.dedup();
        k
    };
    let mut header = vec!["type"];
    header.extend(keys.iter().map(|s| s.as_str()));
    let mut t = Table::new(&header).class("index");
    for (ty, m) in &d.counts.per_type {
        let mut cells = vec![ty.clone()];
        cells.extend(keys.iter().map(|k| m.get(k).map(|v| v.to_string()).unwrap_or_else(|| "0".into())));
        t.text_row(&cells);
    }
    p = p.heading("Entities").table(t);
    if !d.excluded_types.is_empty() {
        let mut t = Table::new(&["type", "known (train)", "unknown (train)", "why"]).class("index");
        for e in &d.excluded_types {
            t.text_row(&[e.entity_type.to_string(), e.n_known.to_string(), e.n_unknown.to_string(), e.reason.clone()]);
        }
        p = p.heading("Types left out of MaxMin").table(t);
    }

    // Fig. 2: MaxMin per layer.
    let sae_layers: Vec<_> = d.layers.iter().filter(|l| l.sae_hook.is_some()).collect();
    if !sae_layers.is_empty() {
        let mut lines = Vec::new();
        for dir in Direction::ALL {
            let pts = sae_layers
                .iter()
                .filter_map(|l| {
                    match dir {
                        Direction::Known => l.maxmin_known,
                        Direction::Unknown => l.maxmin_unknown,
                    }
                    .map(|(_, v)| (l.layer as f64, v as f64))
                })
                .collect();
            lines.push(Line { name: format!("MaxMin {}", dir.as_str()), points: pts, bars: Vec::new(), dashed: false });
        }
        // With one type scored, its best latent is the MaxMin latent: no second line.
        for t in d.types_scored.iter().filter(|_| d.types_scored.len() > 1) {
            for dir in Direction::ALL {
                let pts = sae_layers
                    .iter()
                    .filter_map(|l| {
                        match dir {
                            Direction::Known => l.best_known_per_type.get(t),
                            Direction::Unknown => l.best_unknown_per_type.get(t),
                        }
                        .map(|&v| (l.layer as f64, v as f64))
                    })
                    .collect();
                lines.push(Line {
                    name: format!("best {} {t}", dir.as_str()),
                    points: pts,
                    bars: Vec::new(),
                    dashed: true,
                });
            }
        }
        p = p.heading("Generality per layer (paper Fig. 2)").figure(
            &line_chart("Separation score per layer (train split)", "score", &lines, (-0.05, 1.0), None)?,
            "MaxMin: the best latent's minimum over types of f_class − f_other (latents active on ≥ 2% of corpus tokens left out); dashed: the best latent per type.",
        );
    }
    if let Some(svg) = scatter_chart(d)? {
        p = p
            .heading("Known vs unknown firing (paper Fig. 1)")
            .figure(&svg, "Each dot a latent at the best layer; test split; the train top-10 highlighted.");
    }
    // AUROC per layer.
    let mut lines = Vec::new();
    let auroc_line = |name: &str, get: &dyn Fn(&super::LayerSummary) -> Option<Estimate>, dashed: bool| {
        let es: Vec<(f64, Estimate)> = d.layers.iter().filter_map(|l| get(l).map(|e| (l.layer as f64, e))).collect();
        Line {
            name: name.into(),
            points: es.iter().map(|(x, e)| (*x, e.value)).collect(),
            bars: es.iter().map(|(x, e)| (*x, e.lo, e.hi)).collect(),
            dashed,
        }
    };
    lines.push(auroc_line("MaxMin known latent", &|l| l.top_known_auroc, false));
    lines.push(auroc_line("MaxMin unknown latent", &|l| l.top_unknown_auroc, false));
    lines.push(auroc_line("logistic probe", &|l| l.baseline.as_ref().and_then(|b| b.probe_test), true));
    lines.push(auroc_line("difference of means", &|l| l.baseline.as_ref().and_then(|b| b.dom_test), true));
    lines.retain(|l| !l.points.is_empty());
    if !lines.is_empty() {
        p = p.heading("Held-out AUROC per layer").figure(
            &line_chart("Test-split AUROC (95% bootstrap CI)", "AUROC", &lines, (0.0, 1.0), Some(0.5))?,
            "Latents: activation as the score, positives = the latent's class. Probe and difference of means: fitted on train at resid_pre(L), positives = known.",
        );
    }
    // Top latents.
    let mut t = Table::new(&[
        "direction",
        "rank",
        "layer",
        "latent",
        "MaxMin (train)",
        "corpus freq",
        "test AUROC",
        "bal. acc.",
        "matched AUROC",
        "vs fabricated",
    ])
    .class("index");
    for l in &d.latent_evals {
        let find = |s: &str| l.evals.iter().find(|e| e.subset == s && e.entity_type.is_none());
        let r = match l.direction {
            Direction::Known => d.ranked_known.get(l.rank),
            Direction::Unknown => d.ranked_unknown.get(l.rank),
        };
        t.text_row(&[
            l.direction.as_str().to_string(),
            l.rank.to_string(),
            l.layer.to_string(),
            l.latent.to_string(),
            r.map(|r| format!("{:.3}", r.score_min)).unwrap_or_default(),
            r.and_then(|r| r.corpus_freq).map(|f| format!("{:.4}", f)).unwrap_or_else(|| "–".into()),
            est_text(&find("test").and_then(|e| e.auroc)),
            est_text(&find("test").and_then(|e| e.balanced_accuracy)),
            est_text(&find("matched controls (test)").and_then(|e| e.auroc)),
            est_text(&find("known (test) vs fabricated names").and_then(|e| e.auroc)),
        ]);
    }
    p = p.heading("Top latents (held-out)").table(t);
    // Per-type and per-band results of the rank-0 latents, the probe and the confound baseline.
    let mut t = Table::new(&[
        "detector",
        "subset",
        "type",
        "n pos",
        "n neg",
        "AUROC [95% CI]",
        "balanced accuracy",
        "accuracy",
    ])
    .class("index");
    let mut add = |name: String, evals: &[Eval]| {
        for e in evals {
            t.text_row(&[
                name.clone(),
                e.subset.clone(),
                e.entity_type.map(|t| t.to_string()).unwrap_or_else(|| "all".into()),
                e.n_pos.to_string(),
                e.n_neg.to_string(),
                est_text(&e.auroc),
                est_text(&e.balanced_accuracy),
                e.accuracy.map(|a| format!("{a:.3}")).unwrap_or_else(|| "–".into()),
            ]);
        }
    };
    for l in d.latent_evals.iter().filter(|l| l.rank == 0) {
        add(format!("{} latent L{} #{}", l.direction.as_str(), l.layer, l.latent), &l.evals);
    }
    if let Some(l) = d.probe_layer {
        add(format!("probe L{l} (layer chosen on validation)"), &d.probe_evals);
    }
    add("popularity + name length".into(), &d.confound_baseline);
    p = p.heading("Held-out detail").table(t);
    let mut t = Table::new(&["direction", "layer", "latent", "its AUROC", "random latents", "mean AUROC", "max AUROC"])
        .class("index");
    for r in &d.random_baselines {
        t.text_row(&[
            r.direction.as_str().to_string(),
            r.layer.to_string(),
            r.of_latent.to_string(),
            opt(r.of_auroc),
            r.latents.len().to_string(),
            opt(r.mean),
            opt(r.max),
        ]);
    }
    p = p.heading("Random latents of the same firing frequency").table(t);
    // Each exported latent (the rank-0 ones at least): the entities that activate it most and
    // least, and its dashboard on corpus text where one was made.
    // In rank order: known 0, 1, 2, then unknown 0, 1, 2.
    let mut cards: Vec<&super::LatentEval> =
        d.latent_evals.iter().filter(|l| l.rank == 0 || l.dashboard.is_some()).collect();
    cards.sort_by_key(|l| (l.direction != Direction::Known, l.rank));
    for l in cards {
        let mut t =
            Table::new(&["most active (test)", "activation", "least active (test)", "activation"]).class("index");
        for (a, b) in l.top_entities.iter().zip(&l.bottom_entities) {
            t.text_row(&[a.1.clone(), format!("{:.3}", a.2), b.1.clone(), format!("{:.3}", b.2)]);
        }
        p = p
            .heading(&format!("{} latent L{} #{} (rank {}): entities", l.direction.as_str(), l.layer, l.latent, l.rank))
            .table(t);
        if let Some(dash) = &l.dashboard {
            p = p.section(
                "latent",
                &format!("dashboard-{}-{}", l.layer, l.latent),
                crate::sae::dashboard::latent_html(dash),
            );
        }
    }
    Ok(p.footer(Html::text("Scores on the train split only; AUROC and accuracy on the test split (thresholds chosen on train); every number in discovery.json and the CSV files.")))
}

/// The latents the detection claims rest on: chosen on validation among the train MaxMin top,
/// tested once on test within type, beside random latents of their frequency and the probe.
/// The page's result in one paragraph: each selected latent's pooled test AUROC against its
/// random latents, and whether "across types" can be judged at all.
fn result_sentence(d: &Discovery) -> String {
    let mut parts = Vec::new();
    for s in &d.selected {
        let best =
            s.random_tests.iter().filter_map(|r| r.stratified.map(|e| e.value)).fold(f64::NEG_INFINITY, f64::max);
        let types: Vec<String> = s.test.qualifying().map(|t| t.entity_type.to_string()).collect();
        parts.push(format!(
            "the {} latent L{} #{} scores {} on test entities ({}), against {} for the best of {} random latents of its frequency",
            s.direction.as_str(),
            s.layer,
            s.latent,
            est_text(&s.test.stratified),
            if types.is_empty() { "no type has enough test entities".into() } else { format!("within {}", types.join(", ")) },
            if best.is_finite() { format!("{best:.3}") } else { "–".into() },
            s.random_tests.len()
        ));
    }
    let n_types = d.selected.first().map_or(0, |s| s.test.qualifying().count());
    format!(
        "Result: {}. {}",
        parts.join("; "),
        if n_types >= 2 {
            format!("{n_types} types qualify, so the claim across types is judged (see the reproduce page).")
        } else {
            format!("{n_types} type qualifies, so a claim across types cannot be judged on these labels.")
        }
    )
}

fn selected_section(mut p: Page, d: &Discovery) -> Page {
    if d.selected.is_empty() {
        return p;
    }
    p = p.heading("The claims' latents: chosen on validation, tested once on test");
    p = p.paragraph(&result_sentence(d));
    p = p.paragraph(&format!(
        "Rule: {}. Test AUROC within each type (cities within one country); a type enters the pooled (stratified) \
         figure with at least {} known and {} unknown test entities. Random latents: same layer, same firing frequency \
         on train entities. Probe: the validation-chosen probe on the raw residual (the positive control). 0.5 is \
         chance. Columns: n = positives + negatives compared (for cities, those in countries with both classes); \
         pooled = whether the type enters the stratified figure; random latents (max) = the best of the random latents' \
         AUROCs on the same entities.",
        super::select::RULE,
        super::select::MIN_TYPE_TEST,
        super::select::MIN_TYPE_TEST
    ));
    let mut t = Table::new(&[
        "direction",
        "latent",
        "train rank",
        "type",
        "n (pos + neg)",
        "pooled",
        "test AUROC",
        "random latents (max)",
        "probe",
    ]);
    for s in &d.selected {
        let rows: Vec<&super::select::TypeAuroc> = s.test.per_type.iter().collect();
        let strat = |x: &super::select::ScoreTest| est_text(&x.stratified);
        let rmax = |f: &dyn Fn(&super::select::ScoreTest) -> Option<f64>| {
            s.random_tests.iter().filter_map(f).fold(f64::NEG_INFINITY, f64::max)
        };
        t.text_row(&[
            s.direction.as_str().to_string(),
            format!("L{} #{}", s.layer, s.latent),
            s.train_rank.to_string(),
            "stratified".into(),
            String::new(),
            String::new(),
            strat(&s.test),
            opt(Some(rmax(&|r| r.stratified.map(|e| e.value))).filter(|v| v.is_finite())),
            s.probe_test.as_ref().map_or("–".into(), strat),
        ]);
        for r in rows {
            let ty = r.entity_type;
            let rm = rmax(&|x| x.per_type.iter().find(|y| y.entity_type == ty).and_then(|y| y.auroc.map(|e| e.value)));
            let probe = s
                .probe_test
                .as_ref()
                .and_then(|p| p.per_type.iter().find(|y| y.entity_type == ty))
                .map_or("–".into(), |y| est_text(&y.auroc));
            t.text_row(&[
                String::new(),
                String::new(),
                String::new(),
                ty.to_string(),
                format!("{} + {}", r.n_pos, r.n_neg),
                if r.qualifies { "yes".into() } else { "no".into() },
                est_text(&r.auroc),
                opt(Some(rm).filter(|v| v.is_finite())),
                probe,
            ]);
        }
    }
    p.table(t.class("num"))
}
