//! The geometry experiment's outputs: `geometry.json` (every number), `cosines.csv` (one row
//! per layer), `shifts.csv` (one row per steering condition and read layer) and one HTML page
//! (the cosine per layer against the null bands, the refusal direction's quality, the
//! projection shifts).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

use super::geometry::{GeometryResult, LayerGeometry, ShiftCell};
use crate::fsio::write_atomic;
use crate::report::html::{Page, Table};
use crate::stats::Estimate;

fn est(e: &Option<Estimate>, digits: usize) -> String {
    e.as_ref().map(|e| format!("{:.*} [{:.*}, {:.*}]", digits, e.value, digits, e.lo, digits, e.hi)).unwrap_or_default()
}

fn num(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.4}"))
}

/// The read layer shown in the page's table: the last block's input (the deepest the refusal
/// direction is read at), unless `read_layer` is given.
pub fn shown_read_layer(g: &GeometryResult, read_layer: Option<usize>) -> Option<usize> {
    read_layer.or_else(|| g.shifts.iter().map(|s| s.read_layer).max())
}

pub fn write(g: &GeometryResult, model_name: &str, read_layer: Option<usize>, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut json = serde_json::to_value(g)?;
    json["model"] = model_name.into();
    write_atomic(&dir.join("geometry.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;

    let mut csv = String::from(
        "layer,refusal_norm,heldout_auroc,auroc_lo,auroc_hi,heldout_auroc_within,heldout_gap,stability,\
         cos_dom_entity,cos_dom_last,cos_probe_entity,null_iso_mean_abs,null_iso_p95_abs,null_perm_mean_abs,null_perm_p95_abs,null_perm_last_p95_abs,detectors\n",
    );
    for l in &g.layers {
        let a = l.heldout_auroc.as_ref();
        let dets: Vec<String> = l.detectors.iter().map(|(n, c)| format!("{n}={c:.4}")).collect();
        let _ = writeln!(
            csv,
            "{},{:.3},{},{},{},{},{:.4},{:.4},{:.4},{:.4},{},{:.4},{:.4},{:.4},{:.4},{:.4},{}",
            l.layer,
            l.refusal_norm,
            num(a.map(|e| e.value)),
            num(a.map(|e| e.lo)),
            num(a.map(|e| e.hi)),
            num(l.heldout_auroc_within),
            l.heldout_gap,
            l.stability,
            l.cos_dom_entity,
            l.cos_dom_last,
            num(l.cos_probe_entity),
            l.null_isotropic.mean_abs,
            l.null_isotropic.p95_abs,
            l.null_permutation.mean_abs,
            l.null_permutation.p95_abs,
            l.null_permutation_last.p95_abs,
            dets.join(";")
        );
    }
    write_atomic(&dir.join("cosines.csv"), csv.as_bytes())?;

    let mut csv = String::from(
        "items,direction,steer_layer,coef,magnitude,read_layer,n,shift,lo,hi,random_shift,random_lo,random_hi,\
         welch_t,welch_p,z_vs_random,gap_fraction,cos_with_refusal\n",
    );
    for s in &g.shifts {
        let (e, r) = (s.shift.as_ref(), s.random_shift.as_ref());
        let _ = writeln!(
            csv,
            "{},\"{}\",{},{},{:.3},{},{},{},{},{},{},{},{},{},{},{},{:.4},{:.4}",
            if s.known { "known" } else { "unknown" },
            s.direction,
            s.steer_layer,
            s.coef,
            s.magnitude,
            s.read_layer,
            s.n,
            num(e.map(|e| e.value)),
            num(e.map(|e| e.lo)),
            num(e.map(|e| e.hi)),
            num(r.map(|e| e.value)),
            num(r.map(|e| e.lo)),
            num(r.map(|e| e.hi)),
            num(s.welch.map(|w| w.t)),
            s.welch.map_or(String::new(), |w| format!("{:.3e}", w.p)),
            num(s.z_vs_random),
            s.gap_fraction,
            s.cos_with_refusal
        );
    }
    write_atomic(&dir.join("shifts.csv"), csv.as_bytes())?;
    page(g, model_name, read_layer)?.write(&dir.join("report.html"))
}

fn page(g: &GeometryResult, model_name: &str, read_layer: Option<usize>) -> Result<Page> {
    let used: Vec<String> = g
        .refusal
        .strata
        .iter()
        .filter(|s| s.used)
        .map(|s| {
            format!(
                "{} (train {} refused / {} answered, held out {} / {})",
                s.name, s.train_refused, s.train_answered, s.heldout_refused, s.heldout_answered
            )
        })
        .collect();
    let mut page = Page::new(&format!("Detection vs refusal geometry: {model_name}")).meta(
        crate::report::html::Html::text(&format!(
            "{} questions with stored greedy chat answers, {} refused (rule {}); refusal direction fitted within the \
             templates {}; detection directions from {} known and {} unknown training questions; steering at the \
             entity's last token to the end of the prompt",
            g.refusal.questions,
            g.refusal.refused,
            g.refusal_rule,
            used.join(", "),
            g.detection_train.0,
            g.detection_train.1
        )),
    );
    page = page.paragraph(
        "Refusal direction: mean residual stream (entering block L, last prompt token) of refused minus answered \
         questions, within each question template, on the train split. Detection directions: known − unknown \
         difference of means (at the entity's last token and at the last prompt token) and a logistic probe (entity's \
         last token), on the training questions; the unknown directions are these reversed, so their cosines are the \
         negatives. Null bands: 95th percentile of |cosine| with random isotropic directions and with differences \
         of means under shuffled known / unknown labels.",
    );
    let svg = cosine_chart(g)?;
    page = page.figure(
        &svg,
        "Cosine of the refusal direction with the unknown directions (= −known) per layer. Shaded: 95th percentile \
         of |cos| under shuffled known / unknown labels (at the entity's last token, at the last prompt token) and \
         with random directions; dashed: the 0.12–0.20 reported for Gemma 2",
    );

    page = page.heading("Per layer");
    let mut t = Table::new(&[
        "layer",
        "held-out AUROC (refused vs answered)",
        "within templates",
        "stability (cos train/held-out)",
        "cos known DoM @entity",
        "cos known DoM @last",
        "cos known probe @entity",
        "null: random 95%",
        "null: shuffled 95% @entity",
        "null: shuffled 95% @last",
        "detector file",
    ]);
    for l in &g.layers {
        let dets: Vec<String> = l.detectors.iter().map(|(n, c)| format!("{n}: {c:+.3}")).collect();
        t.text_row(&[
            l.layer.to_string(),
            est(&l.heldout_auroc, 3),
            num(l.heldout_auroc_within),
            format!("{:.3}", l.stability),
            format!("{:+.3}", l.cos_dom_entity),
            format!("{:+.3}", l.cos_dom_last),
            l.cos_probe_entity.map_or(String::new(), |c| format!("{c:+.3}")),
            format!("{:.3}", l.null_isotropic.p95_abs),
            format!("{:.3}", l.null_permutation.p95_abs),
            format!("{:.3}", l.null_permutation_last.p95_abs),
            dets.join(", "),
        ]);
    }
    page = page.table(t);

    let norms: Vec<String> = g.mean_norms.iter().map(|(l, n)| format!("layer {l}: {n:.1}")).collect();
    page = page.heading("Does steering along the detection direction move the refusal projection?");
    page = page.paragraph(&format!(
        "Known-entity questions ({}) steered with the unknown direction {} and unknown-entity questions ({}) with the \
         known direction {} (layer {}), at multiples of the mean residual norm at the steered positions ({}); the \
         change of the projection onto the refusal direction (refused − answered, unit) at the last prompt token. \
         Positive = towards refusal. Baseline: {} random directions of the same layer and strength, question i pushed \
         along random direction i mod n. Intervals: bootstrap 95% over questions; Welch: the direction's per-question shifts vs all random \
         per-question shifts; z: against the spread of the random directions' mean shifts; gap: the held-out \
         refused − answered difference at the read layer. Every read layer is in shifts.csv.",
        g.steered_items.0,
        g.unknown_direction.name,
        g.steered_items.1,
        g.known_direction.name,
        g.known_direction.layer,
        norms.join(", "),
        g.options.n_random
    ));
    let shown = shown_read_layer(g, read_layer);
    let mut t = Table::new(&[
        "questions",
        "direction",
        "× mean norm",
        "read layer",
        "shift",
        "random shift",
        "Welch t (p)",
        "z vs random",
        "shift / gap",
        "cos(dir, refusal)",
    ]);
    let rows: Vec<&ShiftCell> =
        g.shifts.iter().filter(|s| Some(s.read_layer) == shown || s.read_layer == s.steer_layer).collect();
    for s in rows {
        t.text_row(&[
            if s.known { "known" } else { "unknown" }.to_string(),
            s.direction.clone(),
            format!("{}", s.coef),
            s.read_layer.to_string(),
            est(&s.shift, 2),
            est(&s.random_shift, 2),
            s.welch.map_or(String::new(), |w| format!("{:+.2} ({:.2e})", w.t, w.p)),
            s.z_vs_random.map_or(String::new(), |z| format!("{z:+.2}")),
            format!("{:+.3}", s.gap_fraction),
            format!("{:+.3}", s.cos_with_refusal),
        ]);
    }
    page = page.table(t);
    page = page.heading("Refusals per question template");
    let mut t =
        Table::new(&["template", "train refused", "train answered", "held-out refused", "held-out answered", "used"]);
    for s in &g.refusal.strata {
        t.text_row(&[
            s.name.clone(),
            s.train_refused.to_string(),
            s.train_answered.to_string(),
            s.heldout_refused.to_string(),
            s.heldout_answered.to_string(),
            if s.used { "yes" } else { "no" }.to_string(),
        ]);
    }
    Ok(page.table(t))
}

/// Lines of cos(refusal, unknown direction) per layer over shaded null bands.
fn cosine_chart(g: &GeometryResult) -> Result<String> {
    let mut svg = String::new();
    {
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing the cosine chart: {e}");
        let root = SVGBackend::with_string(&mut svg, (820, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let series = |f: &dyn Fn(&LayerGeometry) -> Option<f64>| -> Vec<(f64, f64)> {
            g.layers.iter().filter_map(|l| f(l).map(|v| (l.layer as f64, v))).collect()
        };
        type Pick = fn(&LayerGeometry) -> Option<f64>;
        let lines: [(&str, Pick, RGBColor); 3] = [
            ("DoM unknown−known @ entity", |l| Some(-l.cos_dom_entity), RGBColor(31, 119, 180)),
            ("DoM unknown−known @ last token", |l| Some(-l.cos_dom_last), RGBColor(214, 39, 40)),
            ("probe (unknown) @ entity", |l| l.cos_probe_entity.map(|c| -c), RGBColor(44, 160, 44)),
        ];
        type Band = fn(&LayerGeometry) -> f64;
        let bands: [(&str, Band, RGBColor); 3] = [
            ("null: shuffled labels @ last token", |l| l.null_permutation_last.p95_abs, RGBColor(214, 39, 40)),
            ("null: shuffled labels @ entity", |l| l.null_permutation.p95_abs, RGBColor(31, 119, 180)),
            ("null: random directions", |l| l.null_isotropic.p95_abs, RGBColor(90, 90, 90)),
        ];
        let top = g
            .layers
            .iter()
            .flat_map(|l| {
                [
                    l.cos_dom_entity.abs(),
                    l.cos_dom_last.abs(),
                    l.null_permutation_last.p95_abs,
                    l.null_permutation.p95_abs,
                ]
            })
            .fold(0.25f64, f64::max)
            + 0.05;
        let (x0, x1) = (
            g.layers.first().map_or(0.0, |l| l.layer as f64) - 0.5,
            g.layers.last().map_or(1.0, |l| l.layer as f64) + 0.5,
        );
        let mut chart = ChartBuilder::on(&root)
            .caption("Refusal direction vs unknown-entity directions", ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..x1, -top..top)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("layer (residual stream entering block L)")
            .y_desc("cosine")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(|e| err(&e))?;
        for (name, f, c) in bands {
            let mut poly: Vec<(f64, f64)> = g.layers.iter().map(|l| (l.layer as f64, f(l))).collect();
            poly.extend(g.layers.iter().rev().map(|l| (l.layer as f64, -f(l))));
            chart
                .draw_series(std::iter::once(Polygon::new(poly, c.mix(0.12).filled())))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], c.mix(0.25).filled()));
        }
        for v in [0.12, 0.20] {
            let style = ShapeStyle { color: RGBColor(255, 127, 14).to_rgba(), filled: false, stroke_width: 1 };
            let s =
                chart.draw_series(DashedLineSeries::new(vec![(x0, v), (x1, v)], 6, 4, style)).map_err(|e| err(&e))?;
            if v == 0.12 {
                s.label("Gemma 2 report: 0.12–0.20")
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RGBColor(255, 127, 14)));
            }
        }
        for (name, f, c) in lines {
            let pts = series(&f);
            chart
                .draw_series(LineSeries::new(
                    pts.clone(),
                    ShapeStyle { color: c.to_rgba(), filled: false, stroke_width: 2 },
                ))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
