//! Heatmaps as inline SVG (per-head and per-position tables of the mechanism experiments).

use std::fmt::Write as _;

use super::html::escape;

/// A heatmap as an inline SVG: one cell per value (rows top to bottom, columns left to right),
/// a diverging scale centred on 0 (red positive, blue negative, symmetric in the largest |value|),
/// grey for missing (NaN) cells, a tooltip per cell, and the scale's ends written under it.
pub fn heatmap_svg(title: &str, rows: &[String], cols: &[String], values: &[Vec<f64>]) -> String {
    let (cw, ch) = (if cols.len() > 12 { 30.0 } else { 40.0 }, 16.0f64);
    let left = 10.0 + 7.0 * rows.iter().map(|r| r.chars().count()).max().unwrap_or(1) as f64;
    let top = 24.0 + 6.5 * cols.iter().map(|c| c.chars().count()).max().unwrap_or(1).min(24) as f64;
    let (w, h) = (left + cw * cols.len() as f64 + 10.0, top + ch * rows.len() as f64 + 30.0);
    let max = values.iter().flatten().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" \
         role=\"img\" font-size=\"11\"><text x=\"4\" y=\"14\" font-size=\"13\">{}</text>",
        escape(title)
    );
    for (j, c) in cols.iter().enumerate() {
        let x = left + cw * (j as f64 + 0.5);
        let _ = write!(
            s,
            "<text transform=\"translate({x:.1},{:.1}) rotate(-60)\">{}</text>",
            top - 4.0,
            escape(&c.chars().take(24).collect::<String>())
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + ch * i as f64;
        let (x, ty) = (left - 4.0, y + 12.0);
        let _ = write!(s, "<text x=\"{x:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{}</text>", escape(r));
        for (j, c) in cols.iter().enumerate() {
            let v = values.get(i).and_then(|row| row.get(j)).copied().unwrap_or(f64::NAN);
            let fill = if !v.is_finite() {
                "#e5e7eb".to_string()
            } else {
                let a = if max > 0.0 { (v.abs() / max).min(1.0) } else { 0.0 };
                let fade = (255.0 * (1.0 - a)).round() as u8;
                if v >= 0.0 {
                    format!("rgb(255,{fade},{fade})")
                } else {
                    format!("rgb({fade},{fade},255)")
                }
            };
            let tip = if v.is_finite() { format!("{v:+.4}") } else { "not measured".into() };
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{cw}\" height=\"{ch}\" fill=\"{fill}\" stroke=\"#fff\">\
                 <title>{}, {}: {}</title></rect>",
                left + cw * j as f64,
                escape(r),
                escape(c),
                tip
            );
        }
    }
    let _ = write!(
        s,
        "<text x=\"{left:.1}\" y=\"{:.1}\">scale: blue −{max:.3} · white 0 · red +{max:.3}</text></svg>",
        top + ch * rows.len() as f64 + 18.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_draws_every_cell_with_a_tooltip() {
        let svg = heatmap_svg("t <x>", &["L0".into(), "L1".into()], &["H0".into()], &[vec![0.5], vec![f64::NAN]]);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("L0, H0: +0.5000") && svg.contains("not measured") && svg.contains("t &lt;x&gt;"));
    }
}
