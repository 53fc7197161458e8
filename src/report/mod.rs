//! Things a person looks at, all rendered here: self-contained HTML pages (`html`: escaping,
//! the shared stylesheet, `Page`, tables, figures, token strips), charts as SVG (`chart`) and
//! Markdown tables (`table`). Analyses compute their numbers elsewhere and hand them to these.

pub mod chart;
pub mod html;
pub mod plots;
pub mod table;
