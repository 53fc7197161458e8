//! Things a person looks at: charts (SVG) and tables (Markdown). The HTML report of later
//! analyses builds on these.

pub mod chart;
pub mod table;
