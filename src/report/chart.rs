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
pub fn grouped_bars(path: &Path, title: &str, y_label: &str, categories: &[String], series: &[Series], size: (u32, u32)) -> Result<()> {
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
