//! Markdown tables.

/// A Markdown table from a header and rows (cells are written as given).
pub fn markdown(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s =
        format!("| {} |\n|{}|\n", header.join(" | "), header.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    s
}

/// `k/n (p%)`.
pub fn frac(k: usize, n: usize) -> String {
    if n == 0 {
        return format!("{k}/0");
    }
    format!("{k}/{n} ({:.1}%)", 100.0 * k as f64 / n as f64)
}
