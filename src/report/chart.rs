//! Grouped bar charts as SVG (plotters' SVG backend: no fonts or system libraries needed).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One named series of values, one per category.
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws grouped vertical bars: one group per category, one bar per series, with a legend.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[Series],
    size: (u32, u32),
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let y_max = series.iter().flat_map(|s| s.values.iter().copied()).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let n_cat = categories.len().max(1);
    let n_ser = series.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..n_cat as f64, 0f64..y_max)
        .map_err(|e| err(&e))?;
    let cats = categories.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_label)
        .x_labels(n_cat * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            // Label each group once, at its centre.
            if (x - (i as f64 + 0.5)).abs() < 1e-6 {
                cats.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_label_style(("sans-serif", 11).into_font().transform(FontTransform::Rotate90))
        .draw()
        .map_err(|e| err(&e))?;
    let width = 0.8 / n_ser as f64;
    for (si, s) in series.iter().enumerate() {
        let color = PALETTE[si % PALETTE.len()];
        chart
            .draw_series(s.values.iter().enumerate().map(|(ci, &v)| {
                let x0 = ci as f64 + 0.1 + si as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.95, v)], color.filled())
            }))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A histogram as an inline SVG string: one bar per bin of `counts` (equal bins from 0 to
/// `max`), heights log10(count + 1) with grid lines at powers of ten, `x_label` under the axis,
/// `title` above, and a tooltip per bar ("lo – hi: count `unit`"). Hand-written rather than
/// drawn with plotters: plotters' SVG backend cannot attach the per-bar `<title>` tooltips.
pub fn log_histogram_svg(counts: &[u64], max: f64, x_label: &str, title: &str, unit: &str) -> String {
    use std::fmt::Write as _;
    let esc = super::html::escape;
    let (w, ht) = (370.0f64, 150.0f64);
    let (left, right, top, bottom) = (34.0, 8.0, 16.0, 22.0);
    let (pw, ph) = (w - left - right, ht - top - bottom);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" role=\"img\">");
    let max_count = counts.iter().copied().max().unwrap_or(0);
    if max_count == 0 {
        let _ = write!(s, "<text x=\"{}\" y=\"{}\">no {}</text></svg>", left, top + ph / 2.0, esc(unit));
        return s;
    }
    let top_log = ((max_count + 1) as f64).log10().ceil().max(1.0);
    let y = |c: f64| top + ph - ph * (c + 1.0).log10() / top_log;
    // Grid lines at powers of ten.
    for e in 0..=(top_log as u32) {
        let yy = top + ph - ph * e as f64 / top_log;
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eef0f3\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + pw,
            left - 4.0,
            yy + 3.0,
            if e == 0 { "0".to_string() } else { format!("1e{e}") }
        );
    }
    let n = counts.len() as f64;
    let bw = pw / n;
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let x = left + i as f64 * bw;
        let y0 = y(c as f64);
        let lo = max * i as f64 / n;
        let hi = max * (i + 1) as f64 / n;
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"rgb(255,122,0)\" fill-opacity=\"{:.2}\"><title>{lo:.3} – {hi:.3}: {c} {}</title></rect>",
            (bw - 1.0).max(0.5),
            top + ph - y0,
            0.35 + 0.65 * (i as f64 + 1.0) / n,
            esc(unit)
        );
    }
    let (right_x, axis_y, label_y, mid_x) = (left + pw, top + ph, ht - 6.0, left + pw / 2.0);
    let _ = write!(
        s,
        "<line x1=\"{left}\" x2=\"{right_x}\" y1=\"{axis_y:.1}\" y2=\"{axis_y:.1}\" stroke=\"#9ca3af\"/>\
         <text x=\"{left}\" y=\"{label_y:.1}\">0</text>\
         <text x=\"{right_x}\" y=\"{label_y:.1}\" text-anchor=\"end\">{max:.3}</text>\
         <text x=\"{mid_x:.1}\" y=\"{label_y:.1}\" text-anchor=\"middle\">{}</text>\
         <text x=\"{left}\" y=\"10\">{}</text></svg>",
        esc(x_label),
        esc(title)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_histogram_draws_one_bar_per_non_empty_bin_with_a_tooltip() {
        let svg = log_histogram_svg(&[3, 0, 120], 1.5, "activation", "tokens <log>", "tokens");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("<title>1.000 – 1.500: 120 tokens</title>"), "{svg}");
        assert!(svg.contains(">1e3</text>") && !svg.contains(">1e4</text>"), "grid up to 10^⌈log10(121)⌉");
        assert!(svg.contains("tokens &lt;log&gt;"), "text escaped");
        assert!(log_histogram_svg(&[0, 0], 0.0, "x", "t", "tokens").contains("no tokens"));
    }
}
