//! Self-contained HTML pages: one file with inline CSS and inline SVG, no scripts, nothing
//! fetched. Every report page (SAE latent dashboards; later latent discovery, causal
//! experiments, `reproduce`) is built with `Page`, so they share one stylesheet and one
//! escaping rule.
//!
//! Text is escaped where it enters: `Page::heading`, `Page::paragraph`, table cells given as
//! text, captions and token strings are all escaped here. Markup built elsewhere enters only as
//! `Html`, which this module's builders produce (or `Html::raw` for literal markup the caller
//! writes itself, with any text inside escaped by `escape`).
//!
//! ```
//! use knowlens::report::html::{Html, Page, Table};
//! let mut t = Table::new(&["entity", "known"]);
//! t.text_row(&["Paris", "yes"]);
//! let page = Page::new("Labels <v1>")
//!     .paragraph("Known entities & unknown ones.")
//!     .table(t)
//!     .figure("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"></svg>", "A figure")
//!     .render();
//! assert!(page.contains("<title>Labels &lt;v1&gt;</title>") && page.contains("<td>Paris</td>"));
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A token's text with whitespace made visible (newline ↵, carriage return ⏎, tab →) and
/// invisible characters spelled out (`⟨U+200C⟩`), escaped.
pub fn token_text(s: &str) -> String {
    let mut visible = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => visible.push('↵'),
            '\r' => visible.push('⏎'),
            '\t' => visible.push('→'),
            c if c.is_control()
                || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}') =>
            {
                let _ = write!(visible, "⟨U+{:04X}⟩", c as u32);
            }
            c => visible.push(c),
        }
    }
    escape(&visible)
}

/// Markup that is safe to insert as is (see the module comment).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Html(String);

impl Html {
    /// Literal markup written by the caller; any text inside must already be escaped.
    pub fn raw(markup: impl Into<String>) -> Self {
        Html(markup.into())
    }

    /// Text, escaped.
    pub fn text(s: &str) -> Self {
        Html(escape(s))
    }

    /// A token's text, escaped with whitespace made visible (`token_text`), in a monospace span
    /// with `tooltip` on hover.
    pub fn token(s: &str, tooltip: &str) -> Self {
        Html(format!("<span class=\"tok\" title=\"{}\">{}</span>", escape(tooltip), token_text(s)))
    }

    /// Appends more markup.
    pub fn push(&mut self, more: Html) -> &mut Self {
        self.0.push_str(&more.0);
        self
    }

    /// `<tag class="class">inner</tag>` (no class attribute when `class` is empty).
    pub fn wrap(tag: &str, class: &str, inner: Html) -> Self {
        if class.is_empty() {
            Html(format!("<{tag}>{}</{tag}>", inner.0))
        } else {
            Html(format!("<{tag} class=\"{}\">{}</{tag}>", escape(class), inner.0))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<Html> for String {
    fn from(h: Html) -> String {
        h.0
    }
}

/// An HTML table: a header row and rows of cells. Cells are `Html`; `text_row` escapes.
#[derive(Debug, Clone, Default)]
pub struct Table {
    class: String,
    header: Vec<String>,
    rows: Vec<Vec<Html>>,
}

impl Table {
    /// A table with these column headings (escaped); no heading row when empty.
    pub fn new(header: &[&str]) -> Self {
        Table { class: String::new(), header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// CSS classes of the table: `index` right-aligns the columns between the first and the
    /// last (an item, its numbers, a description); `signed pos` / `signed neg` are compact
    /// token tables whose last column (the value) is green / red (see `CSS`).
    pub fn class(mut self, class: &str) -> Self {
        self.class = class.to_string();
        self
    }

    pub fn row(&mut self, cells: Vec<Html>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// A row of plain-text cells (escaped).
    pub fn text_row<S: AsRef<str>>(&mut self, cells: &[S]) -> &mut Self {
        self.rows.push(cells.iter().map(|c| Html::text(c.as_ref())).collect());
        self
    }

    pub fn to_html(&self) -> Html {
        let mut h = if self.class.is_empty() {
            "<table>".to_string()
        } else {
            format!("<table class=\"{}\">", escape(&self.class))
        };
        if !self.header.is_empty() {
            h.push_str("<tr>");
            for c in &self.header {
                let _ = write!(h, "<th>{}</th>", escape(c));
            }
            h.push_str("</tr>\n");
        }
        for r in &self.rows {
            h.push_str("<tr>");
            for c in r {
                let _ = write!(h, "<td>{}</td>", c.0);
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
        Html(h)
    }
}

/// An inline SVG with a caption (escaped) below it.
pub fn figure(svg: &str, caption: &str) -> Html {
    if caption.is_empty() {
        return Html(format!("<figure>{svg}</figure>"));
    }
    Html(format!("<figure>{svg}<figcaption>{}</figcaption></figure>", escape(caption)))
}

/// One token of a highlight strip.
#[derive(Debug, Clone)]
pub struct StripToken<'a> {
    pub text: &'a str,
    /// Background strength in [0, 1] (clamped): e.g. activation / the latent's maximum.
    pub weight: f32,
    /// Outlined (the token the strip is about).
    pub peak: bool,
    /// Shown on hover (escaped).
    pub tooltip: String,
}

/// Tokens in a row, each with a background proportional to its weight, the peak outlined and a
/// tooltip; whitespace and invisible characters made visible (`token_text`).
pub fn token_strip<'a>(tokens: impl IntoIterator<Item = StripToken<'a>>) -> Html {
    let mut h = String::from("<span class=\"ctx\">");
    for t in tokens {
        let alpha = t.weight.clamp(0.0, 1.0) * 0.85;
        let class = if t.peak { "t peak" } else { "t" };
        let style =
            if alpha > 0.0 { format!(" style=\"background:rgba(var(--act),{alpha:.3})\"") } else { String::new() };
        let _ =
            write!(h, "<span class=\"{class}\"{style} title=\"{}\">{}</span>", escape(&t.tooltip), token_text(t.text));
    }
    h.push_str("</span>");
    Html(h)
}

/// The shared stylesheet of every page.
pub const CSS: &str = r#"
:root { --ink:#1d2330; --muted:#6b7280; --line:#e5e7eb; --card:#fff; --bg:#f6f7f9; --pos:#1f7a4d; --neg:#b3261e; --act:255,122,0; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
header { padding:20px 28px 12px; background:#fff; border-bottom:1px solid var(--line); }
h1 { font-size:20px; margin:0 0 6px; }
.meta { color:var(--muted); font-size:13px; }
.meta code { color:var(--ink); }
main { padding:16px 28px 40px; max-width:1400px; }
main > table { border-collapse:collapse; background:#fff; border:1px solid var(--line); border-radius:8px; margin-bottom:20px; font-size:13px; }
main > table th, main > table td { padding:4px 12px; border-bottom:1px solid var(--line); text-align:left; }
table.index th, table.index td { text-align:right; }
table.num th, table.num td { text-align:right; }
table.num th:first-child, table.num td:first-child { text-align:left; }
.verdict { padding:1px 8px; border-radius:10px; font-weight:600; white-space:nowrap; }
.verdict.ok { background:#dcf5e6; color:#1f7a4d; }
.verdict.no { background:#fde2e0; color:#b3261e; }
.verdict.inconclusive { background:#fff1c2; color:#8a5a00; }
.verdict.na { background:#eceef1; color:#4b5563; }
table.index th:first-child, table.index td:first-child, table.index td:last-child { text-align:left; }
table a { color:#2456c7; text-decoration:none; }
main > section { background:var(--card); border:1px solid var(--line); border-radius:10px; margin:0 0 22px; padding:16px 20px; }
main > section h2 { margin:0 0 4px; font-size:17px; }
main > h2 { font-size:17px; margin:18px 0 8px; }
nav.toc { font-size:13px; margin:0 0 12px; }
nav.toc ol { margin:4px 0 0; padding-left:22px; columns:2; }
.stats { color:var(--muted); font-size:13px; margin-bottom:12px; }
.stats b { color:var(--ink); font-weight:600; }
.grid { display:grid; grid-template-columns: 380px 1fr; gap:22px; }
@media (max-width: 900px) { .grid { grid-template-columns: 1fr; } }
.pair { display:grid; grid-template-columns:1fr 1fr; gap:10px; }
h3 { font-size:12px; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); margin:12px 0 6px; }
figure { margin:0 0 12px; }
figcaption { color:var(--muted); font-size:12px; }
table.signed { border-collapse:collapse; width:100%; font-size:12.5px; }
table.signed td { padding:1px 4px; }
table.signed td:last-child { text-align:right; font-variant-numeric:tabular-nums; width:56px; }
.tok { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; white-space:pre; border-radius:3px; padding:0 3px; }
.pos .tok { background:rgba(31,122,77,.12); } .pos td:last-child { color:var(--pos); }
.neg .tok { background:rgba(179,38,30,.10); } .neg td:last-child { color:var(--neg); }
.ex { display:flex; gap:10px; align-items:baseline; padding:5px 0; border-bottom:1px dashed var(--line); }
.ex .val { min-width:64px; text-align:right; font-variant-numeric:tabular-nums; color:var(--muted); font-size:12px; }
.ctx { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:12.5px; white-space:pre-wrap; word-break:break-word; }
.t { border-radius:2px; padding:1px 0; }
.t.peak { outline:1.5px solid rgba(var(--act),1); }
.none { color:var(--muted); font-style:italic; }
svg text { font:10px system-ui,sans-serif; fill:#6b7280; }
footer { color:var(--muted); font-size:12px; padding:0 28px 28px; }
"#;

/// A page under construction: a header (title and an optional line of details), a body of
/// blocks in order, an optional footer. Builder methods take and return the page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    title: String,
    meta: Html,
    body: Html,
    footer: Html,
    /// Section headings so far (each `<h2>` gets the id `s{index}`).
    sections: Vec<String>,
    /// Whether the page opens with a table of contents of its sections.
    contents: bool,
}

impl Page {
    /// A page whose `<title>` and `<h1>` are `title` (escaped).
    pub fn new(title: &str) -> Self {
        Page { title: title.to_string(), ..Default::default() }
    }

    /// The line of details under the title (sources, sizes, settings).
    pub fn meta(mut self, line: Html) -> Self {
        self.meta = line;
        self
    }

    /// A section heading (escaped), with an id the table of contents links to.
    pub fn heading(mut self, text: &str) -> Self {
        let _ = writeln!(self.body.0, "<h2 id=\"s{}\">{}</h2>", self.sections.len(), escape(text));
        self.sections.push(text.to_string());
        self
    }

    /// Opens the page with a table of contents: one link per section heading.
    pub fn contents(mut self) -> Self {
        self.contents = true;
        self
    }

    /// A paragraph of text (escaped).
    pub fn paragraph(mut self, text: &str) -> Self {
        let _ = writeln!(self.body.0, "<p>{}</p>", escape(text));
        self
    }

    pub fn table(mut self, table: Table) -> Self {
        self.body.push(table.to_html());
        self
    }

    /// An inline SVG (e.g. from `report::chart`) with a caption.
    pub fn figure(mut self, svg: &str, caption: &str) -> Self {
        self.body.push(figure(svg, caption));
        self.body.0.push('\n');
        self
    }

    /// A card: `<section class="class" id="id">` holding `inner` (`id` left out when empty).
    pub fn section(mut self, class: &str, id: &str, inner: Html) -> Self {
        let id = if id.is_empty() { String::new() } else { format!(" id=\"{}\"", escape(id)) };
        let _ = writeln!(self.body.0, "<section class=\"{}\"{id}>{}</section>", escape(class), inner.0);
        self
    }

    /// Any other block built with this module.
    pub fn html(mut self, block: Html) -> Self {
        self.body.push(block);
        self
    }

    /// A "Notes" section, one paragraph a note (nothing when there are none).
    pub fn notes(mut self, notes: &[String]) -> Self {
        if !notes.is_empty() {
            self = self.heading("Notes");
            for n in notes {
                self = self.paragraph(n);
            }
        }
        self
    }

    /// The footer naming the command and its wall time per phase ("knowlens patch; wall time:
    /// pairing 11.8 s, ...").
    pub fn timing_footer(self, command: &str, seconds: &std::collections::BTreeMap<String, f64>) -> Self {
        let secs: Vec<String> = seconds.iter().map(|(k, v)| format!("{k} {v:.1} s")).collect();
        self.footer(Html::text(&format!("knowlens {command}; wall time: {}", secs.join(", "))))
    }

    /// The footer line (e.g. how to read the page).
    pub fn footer(mut self, line: Html) -> Self {
        self.footer = line;
        self
    }

    /// The whole page.
    pub fn render(&self) -> String {
        let title = escape(&self.title);
        let mut h = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>{CSS}</style></head><body>\n<header><h1>{title}</h1>"
        );
        if !self.meta.0.is_empty() {
            let _ = write!(h, "<div class=\"meta\">{}</div>", self.meta.0);
        }
        h.push_str("</header>\n<main>\n");
        if self.contents && !self.sections.is_empty() {
            h.push_str("<nav class=\"toc\"><b>Contents</b><ol>");
            for (i, s) in self.sections.iter().enumerate() {
                let _ = write!(h, "<li><a href=\"#s{i}\">{}</a></li>", escape(s));
            }
            h.push_str("</ol></nav>\n");
        }
        let _ = write!(h, "{}</main>", self.body.0);
        if !self.footer.0.is_empty() {
            let _ = write!(h, "<footer>{}</footer>", self.footer.0);
        }
        h.push_str("</body></html>\n");
        h
    }

    /// Writes the page to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::fsio::write_atomic(path, self.render().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere_it_enters() {
        let evil = "<script>alert('x')</script> & \"q\"";
        assert_eq!(escape(evil), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;");
        let mut t = Table::new(&[evil]);
        t.text_row(&[evil]);
        let page = Page::new(evil)
            .meta(Html::text(evil))
            .heading(evil)
            .paragraph(evil)
            .table(t)
            .figure("<svg></svg>", evil)
            .footer(Html::text(evil))
            .render();
        assert!(!page.contains("<script"), "{page}");
        assert_eq!(page.matches("&lt;script&gt;").count(), 9, "title, h1, meta, h2, p, th, td, caption, footer");
        assert_eq!(token_text("a\"b\n\t\r\u{200C}<"), "a&quot;b↵→⏎⟨U+200C⟩&lt;");
    }

    #[test]
    fn a_table_has_its_header_rows_and_class() {
        let mut t = Table::new(&["token", "value"]).class("signed pos");
        t.row(vec![Html::token(" the", "id 5"), Html::raw("+1.250")]);
        t.text_row(&["a<b", "2"]);
        let h = t.to_html().into_string();
        assert_eq!(
            h,
            "<table class=\"signed pos\"><tr><th>token</th><th>value</th></tr>\n\
             <tr><td><span class=\"tok\" title=\"id 5\"> the</span></td><td>+1.250</td></tr>\n\
             <tr><td>a&lt;b</td><td>2</td></tr>\n</table>\n"
        );
        assert!(!Table::new(&[]).to_html().as_str().contains("<th>"), "no header row without headings");
    }

    #[test]
    fn a_figure_holds_the_svg_and_the_page_is_self_contained() {
        let svg =
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"4\" height=\"4\"><rect width=\"4\" height=\"4\"/></svg>";
        let page = Page::new("p").figure(svg, "Counts per bin").section("card", "c-1", Html::text("x")).render();
        assert!(page.contains(&format!("<figure>{svg}<figcaption>Counts per bin</figcaption></figure>")));
        assert!(page.contains("<section class=\"card\" id=\"c-1\">x</section>"));
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</body></html>\n"));
        assert!(!page.contains("<script") && !page.replace("http://www.w3.org/2000/svg", "").contains("http"));
        let dir = std::env::temp_dir().join(format!("knowlens-html-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Page::new("p").write(&dir.join("p.html")).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("p.html")).unwrap(), Page::new("p").render());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_strips_shade_by_weight_and_outline_the_peak() {
        let h = token_strip([
            StripToken { text: "<bos>", weight: 0.0, peak: false, tooltip: "id 2".into() },
            StripToken { text: "x\n", weight: 2.0, peak: true, tooltip: "\"x\"".into() },
        ])
        .into_string();
        assert_eq!(
            h,
            "<span class=\"ctx\"><span class=\"t\" title=\"id 2\">&lt;bos&gt;</span>\
             <span class=\"t peak\" style=\"background:rgba(var(--act),0.850)\" title=\"&quot;x&quot;\">x↵</span></span>"
        );
    }
}
