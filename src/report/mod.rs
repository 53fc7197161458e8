//! Things a person looks at, all rendered here: self-contained HTML pages (`html`: escaping,
//! the shared stylesheet, `Page`, tables, figures, token strips), charts as SVG (`chart`,
//! `plots`, `heatmap`), Markdown tables (`table`) and CSV fields (`csv_field`). Analyses compute their numbers elsewhere and hand them to these.

pub mod chart;
pub mod heatmap;
pub mod html;
pub mod plots;
pub mod table;

/// A CSV field, quoted when it needs to be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
