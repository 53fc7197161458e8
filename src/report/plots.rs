//! Two small hand-written SVG charts for the verdict figures, with their legends outside the
//! plotting area (so no legend covers data) and labelled axes:
//!
//! * `line_chart_svg`: an outcome against strength, one coloured line per series, with optional
//!   interval whiskers;
//! * `strip_chart_svg`: one row per group of directions, a dot per direction's effect and an
//!   interval where there is one, so a detector is seen ranked among its controls.
//!
//! An all-zero or empty chart says so in its title rather than drawing a blank frame.

use std::fmt::Write as _;

use super::html::escape;

/// Distinct, colour-blind-safe colours (Okabe–Ito), one per series.
pub const COLOURS: [&str; 8] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];

/// A point of a line: x, y and an optional interval on y.
pub type Point = (f64, f64, Option<(f64, f64)>);

pub struct Line {
    pub name: String,
    pub points: Vec<Point>,
}

const W: f64 = 720.0;
const H: f64 = 320.0;
const LEFT: f64 = 64.0;
const TOP: f64 = 34.0;
const PLOT_W: f64 = 440.0;
const PLOT_H: f64 = 230.0;

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let pad = ((hi - lo) * 0.08).max(1e-9);
    (lo - pad, hi + pad)
}

fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(mag * 10.0);
    let mut t = (lo / step).ceil() * step;
    let mut v = Vec::new();
    while t <= hi + 1e-12 {
        v.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    v
}

fn header(title: &str, all_zero: bool) -> String {
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="12" role="img"><rect width="{W}" height="{H}" fill="white"/>"#
    );
    let t = if all_zero { format!("{title} (every value is zero)") } else { title.to_string() };
    let _ = write!(
        s,
        r#"<text x="{}" y="20" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + PLOT_W / 2.0,
        escape(&t)
    );
    s
}

fn axes(s: &mut String, x_label: &str, y_label: &str) {
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#444"/><text x="{}" y="{}" text-anchor="middle" class="x-label">{}</text><text transform="translate(16,{}) rotate(-90)" text-anchor="middle" class="y-label">{}</text>"##,
        LEFT + PLOT_W / 2.0,
        TOP + PLOT_H + 38.0,
        escape(x_label),
        TOP + PLOT_H / 2.0,
        escape(y_label)
    );
}

fn legend(s: &mut String, names: &[(String, &str)]) {
    let x = LEFT + PLOT_W + 18.0;
    let _ = write!(s, r#"<g class="legend">"#);
    for (i, (name, colour)) in names.iter().enumerate() {
        let y = TOP + 8.0 + 18.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            y - 10.0,
            x + 18.0,
            y,
            escape(name)
        );
    }
    s.push_str("</g>");
}

/// Lines of y against x, intervals as whiskers; x ticks at the points' x values.
pub fn line_chart_svg(title: &str, x_label: &str, y_label: &str, lines: &[Line]) -> String {
    let ys = lines
        .iter()
        .flat_map(|l| l.points.iter().flat_map(|p| [Some(p.1), p.2.map(|i| i.0), p.2.map(|i| i.1)]))
        .flatten();
    let all_zero = lines.iter().all(|l| l.points.iter().all(|p| p.1 == 0.0));
    let (y0, y1) = range(ys);
    let mut xs: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let idx = |x: f64| xs.iter().position(|&v| v == x).unwrap_or(0) as f64;
    let px = |x: f64| LEFT + PLOT_W * (idx(x) + 0.5) / xs.len().max(1) as f64;
    let py = |y: f64| TOP + PLOT_H * (1.0 - (y - y0) / (y1 - y0));
    let mut s = header(title, all_zero);
    for t in ticks(y0, y1) {
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="{}"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            LEFT + PLOT_W,
            if t == 0.0 { "#888" } else { "#eee" },
            LEFT - 6.0,
            py(t) + 4.0,
            fmt_tick(t),
            y = py(t)
        );
    }
    for &x in &xs {
        let _ =
            write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, px(x), TOP + PLOT_H + 16.0, fmt_tick(x));
    }
    axes(&mut s, x_label, y_label);
    let mut names = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        names.push((l.name.clone(), c));
        let path: Vec<String> =
            l.points.iter().filter(|p| p.1.is_finite()).map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1))).collect();
        let _ = write!(s, r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#, path.join(" "));
        for p in l.points.iter().filter(|p| p.1.is_finite()) {
            let _ = write!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}"/>"#, px(p.0), py(p.1));
            if let Some((lo, hi)) = p.2 {
                let _ = write!(
                    s,
                    r#"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="{c}"/>"#,
                    py(lo),
                    py(hi),
                    x = px(p.0)
                );
            }
        }
    }
    legend(&mut s, &names);
    s.push_str("</svg>");
    s
}

/// A row of a strip chart: a group label, the points (one per direction) and, for a single
/// direction, its interval.
pub struct StripRow {
    pub label: String,
    pub points: Vec<f64>,
    pub interval: Option<(f64, f64)>,
}

/// Horizontal strips: x is the effect, one row per group, a zero line.
pub fn strip_chart_svg(title: &str, x_label: &str, rows: &[StripRow]) -> String {
    let xs = rows.iter().flat_map(|r| r.points.iter().copied().chain(r.interval.into_iter().flat_map(|(a, b)| [a, b])));
    let all_zero = rows.iter().all(|r| r.points.iter().all(|&p| p == 0.0));
    let (x0, x1) = range(xs);
    let px = |x: f64| LEFT + 90.0 + (PLOT_W - 90.0) * (x - x0) / (x1 - x0);
    let row_h = PLOT_H / rows.len().max(1) as f64;
    let py = |i: usize| TOP + row_h * (i as f64 + 0.5);
    let mut s = header(title, all_zero);
    for t in ticks(x0, x1) {
        let _ = write!(
            s,
            r##"<line x1="{x}" x2="{x}" y1="{TOP}" y2="{}" stroke="{}"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
            TOP + PLOT_H,
            if t == 0.0 { "#888" } else { "#eee" },
            TOP + PLOT_H + 16.0,
            fmt_tick(t),
            x = px(t)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#444"/><text x="{}" y="{}" text-anchor="middle" class="x-label">{}</text><text transform="translate(16,{}) rotate(-90)" text-anchor="middle" class="y-label">direction</text>"##,
        LEFT + PLOT_W / 2.0,
        TOP + PLOT_H + 38.0,
        escape(x_label),
        TOP + PLOT_H / 2.0
    );
    let mut names = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        names.push((r.label.clone(), c));
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT + 84.0,
            py(i) + 4.0,
            escape(&short(&r.label))
        );
        if let Some((lo, hi)) = r.interval {
            let _ = write!(
                s,
                r#"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{c}" stroke-width="2"/>"#,
                px(lo),
                px(hi),
                y = py(i)
            );
        }
        for (k, &p) in r.points.iter().enumerate().filter(|(_, p)| p.is_finite()) {
            // Spread many dots vertically inside the row so equal effects stay countable.
            let jitter = if r.points.len() > 1 { (k % 5) as f64 * 3.0 - 6.0 } else { 0.0 };
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}" fill-opacity="0.75"/>"#,
                px(p),
                py(i) + jitter
            );
        }
    }
    legend(&mut s, &names);
    s.push_str("</svg>");
    s
}

fn short(s: &str) -> String {
    if s.chars().count() > 13 {
        format!("{}…", s.chars().take(12).collect::<String>())
    } else {
        s.to_string()
    }
}

fn fmt_tick(t: f64) -> String {
    if t == t.round() {
        format!("{t:.0}")
    } else if (10.0 * t - (10.0 * t).round()).abs() < 1e-9 {
        format!("{t:.1}")
    } else {
        format!("{t:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_name_their_axes_and_say_when_all_zero() {
        let l = Line { name: "detector".into(), points: vec![(0.5, 0.0, None), (1.0, 0.0, Some((0.0, 0.0)))] };
        let svg = line_chart_svg("effect", "strength", "points", &[l]);
        assert!(svg.contains("every value is zero") && svg.contains("x-label") && svg.contains("legend"));
        let r = StripRow { label: "controls".into(), points: vec![1.0, -2.0], interval: None };
        let svg = strip_chart_svg("effects", "change", &[r]);
        assert!(svg.contains("<circle") && !svg.contains("every value is zero"));
    }
}
