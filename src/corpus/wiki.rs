//! Wikipedia: pages out of a MediaWiki XML export, and wiki markup to plain paragraphs.
//!
//! Not a MediaWiki renderer: templates are dropped except a few that carry running text
//! (`{{convert|10|km}}`, `{{lang|fr|texte}}`, `{{nowrap|...}}`), and tables, references,
//! files, categories and the trailing "References / External links" sections go.

use super::clean::{decode_entities, normalize_ws, strip_html_tags};

/// A page of the main namespace (redirects left out): title and raw markup.
pub struct WikiPage {
    pub title: String,
    pub markup: String,
}

/// The article pages of a MediaWiki XML export (namespace 0, not redirects), in file order.
pub fn wiki_pages(xml: &str) -> Vec<WikiPage> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<page>") {
        let after = &rest[start..];
        let Some(end) = after.find("</page>") else { break };
        let page = &after[..end];
        rest = &after[end + "</page>".len()..];
        let ns = between(page, "<ns>", "</ns>").unwrap_or("0").trim();
        if ns != "0" || page.contains("<redirect") {
            continue;
        }
        let title = between(page, "<title>", "</title>").map(xml_unescape).unwrap_or_default();
        let markup = page
            .find("<text")
            .map(|i| &page[i..])
            .and_then(|t| {
                let open_end = t.find('>')?;
                if t[..open_end].ends_with('/') {
                    return Some(String::new());
                }
                let body = &t[open_end + 1..];
                Some(xml_unescape(&body[..body.find("</text>").unwrap_or(body.len())]))
            })
            .unwrap_or_default();
        out.push(WikiPage { title, markup });
    }
    out
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let i = s.find(open)? + open.len();
    let j = s[i..].find(close)? + i;
    Some(&s[i..j])
}

/// The five XML escapes plus numeric references (the export's only escapes).
pub fn xml_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    // `&amp;` last, so `&amp;lt;` (markup that literally says `&lt;`) stays `&lt;`.
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let table = [("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&apos;", "'"), ("&amp;", "&")];
        match table.iter().find(|(e, _)| rest.starts_with(e)) {
            Some((e, r)) => {
                out.push_str(r);
                rest = &rest[e.len()..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Sections from which on an article is lists of sources and links, not prose.
const END_SECTIONS: &[&str] = &[
    "references",
    "external links",
    "see also",
    "notes",
    "further reading",
    "bibliography",
    "sources",
    "citations",
    "footnotes",
    "notes and references",
    "references and notes",
    "works cited",
];

/// Wiki markup to plain-text paragraphs (one per source line; headings become their own short
/// paragraphs; list items lose their bullets).
pub fn clean_wiki_markup(markup: &str) -> Vec<String> {
    let s = remove_delimited(markup, "<!--", "-->");
    let s = cut_end_sections(&s);
    let s = remove_refs(&s);
    let s = strip_templates(&s);
    let s = remove_nested(&s, "{|", "|}");
    let s = replace_links(&s);
    let s = replace_external_links(&s);
    let s = s.replace("'''", "").replace("''", "");
    let s = decode_entities(&strip_html_tags(&s));
    let mut out = Vec::new();
    for line in s.lines() {
        let line = line.trim();
        if line.starts_with('|') || line.starts_with('!') || line.starts_with("{|") {
            continue; // table remnants
        }
        let line = if line.starts_with('=') && line.ends_with('=') {
            line.trim_matches('=')
        } else {
            line.trim_start_matches(['*', '#', ':', ';'])
        };
        let mut text = normalize_ws(line);
        for magic in ["__TOC__", "__NOTOC__", "__FORCETOC__", "__NOEDITSECTION__"] {
            text = text.replace(magic, "");
        }
        let text = normalize_ws(&text);
        if text.chars().any(char::is_alphabetic) {
            out.push(text);
        }
    }
    out
}

/// Everything from the first `== References ==`-like heading on goes.
fn cut_end_sections(s: &str) -> String {
    let mut offset = 0;
    for line in s.split_inclusive('\n') {
        let t = line.trim();
        if t.len() > 2 && t.starts_with("==") && t.ends_with("==") {
            let title = t.trim_matches('=').trim().to_lowercase();
            if END_SECTIONS.contains(&title.as_str()) {
                return s[..offset].to_string();
            }
        }
        offset += line.len();
    }
    s.to_string()
}

/// Removes `open ... close` spans (not nested); an unclosed span runs to the end.
fn remove_delimited(s: &str, open: &str, close: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(open) {
        out.push_str(&rest[..i]);
        let after = &rest[i + open.len()..];
        rest = match after.find(close) {
            Some(j) => &after[j + close.len()..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Removes `<ref .../>` and `<ref ...>...</ref>`, and the contents of tags that hold no prose
/// (`<math>`, `<gallery>`, `<timeline>`, ...).
fn remove_refs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let dropped = ["ref", "math", "gallery", "timeline", "imagemap", "score", "syntaxhighlight", "source", "chem"];
    loop {
        let found = rest.char_indices().filter(|&(_, c)| c == '<').find_map(|(i, _)| {
            let after = &rest.as_bytes()[i + 1..];
            let name = dropped.iter().find(|n| {
                after.len() > n.len()
                    && after[..n.len()].eq_ignore_ascii_case(n.as_bytes())
                    && (after[n.len()] == b'>' || after[n.len()] == b'/' || after[n.len()].is_ascii_whitespace())
            })?;
            Some((i, *name))
        });
        let Some((i, name)) = found else { break };
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(gt) = after.find('>') else {
            rest = "";
            break;
        };
        if after[..gt].ends_with('/') {
            rest = &after[gt + 1..];
            continue;
        }
        let body = &after[gt + 1..];
        let close = format!("</{name}");
        rest = match find_ignore_case(body, &close) {
            Some(j) => {
                let tail = &body[j..];
                &tail[tail.find('>').map_or(tail.len(), |k| k + 1)..]
            }
            None => "",
        };
    }
    out.push_str(rest);
    out
}

fn find_ignore_case(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    (0..h.len().saturating_sub(n.len() - 1)).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Finds the `close` matching an `open` at the start of `s`, counting nesting; returns the byte
/// index just past it.
fn matching_end(s: &str, open: &str, close: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(open) {
            depth += 1;
            i += open.len();
        } else if s[i..].starts_with(close) {
            depth -= 1;
            i += close.len();
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += s[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    None
}

/// Removes nested `open ... close` spans (tables `{| |}`); an unclosed one runs to the end.
fn remove_nested(s: &str, open: &str, close: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(open) {
        out.push_str(&rest[..i]);
        rest = match matching_end(&rest[i..], open, close) {
            Some(j) => &rest[i + j..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Replaces every `{{...}}` (nested) by its rendering: the running text of a few templates,
/// nothing for the rest.
fn strip_templates(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        match matching_end(&rest[i..], "{{", "}}") {
            Some(j) => {
                let inner = strip_templates(&rest[i + 2..i + j - 2]);
                out.push_str(&render_template(&inner));
                rest = &rest[i + j..];
            }
            None => {
                // Unclosed: drop the braces, keep the text.
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn render_template(inner: &str) -> String {
    let parts = split_top_level(inner);
    let name = parts.first().map(|n| n.trim().to_lowercase().replace('_', " ")).unwrap_or_default();
    let positional: Vec<&str> = parts[1..]
        .iter()
        .map(|p| p.trim())
        .filter(|p| match p.find('=') {
            Some(k) => p[..k].contains(['[', '{']) || k > 30,
            None => true,
        })
        .collect();
    let first = || positional.first().copied().unwrap_or("").to_string();
    let last = || positional.last().copied().unwrap_or("").to_string();
    match name.as_str() {
        "convert" | "cvt" => {
            let range = ["-", "–", "to", "and", "or", "by", "x", "×", "to(-)"];
            match positional.as_slice() {
                [a, r, b, u, ..] if range.contains(r) => format!("{a} {r} {b} {u}"),
                [a, u, ..] => format!("{a} {u}"),
                [a] => a.to_string(),
                [] => String::new(),
            }
        }
        "lang" | "transl" | "sic" => last(),
        "nowrap" | "nobr" | "small" | "smaller" | "big" | "nihongo" | "flag" | "flagcountry" | "flagu" | "ill"
        | "not a typo" | "as written" | "abbr" | "em" | "strong" | "lang-en" | "vr" => first(),
        "sortname" => positional.iter().take(2).copied().collect::<Vec<_>>().join(" "),
        n if n.starts_with("lang-") => first(),
        _ => String::new(),
    }
}

/// Splits template content at `|` outside `[[...]]` links.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start, mut i) = (0usize, 0, 0);
    let b = s.as_bytes();
    while i < b.len() {
        if b[i..].starts_with(b"[[") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"]]") {
            depth = depth.saturating_sub(1);
            i += 2;
        } else {
            if b[i] == b'|' && depth == 0 {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            i += 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `[[target|label]]` → label, `[[target]]` → target; files, images, categories and
/// interlanguage links go entirely.
fn replace_links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("[[") {
        out.push_str(&rest[..i]);
        let Some(j) = matching_end(&rest[i..], "[[", "]]") else {
            rest = &rest[i + 2..];
            continue;
        };
        let inner = &rest[i + 2..i + j - 2];
        rest = &rest[i + j..];
        let parts = split_top_level(inner);
        let target = parts[0].trim();
        let ns = target.split_once(':').map(|(n, _)| n.trim().to_lowercase());
        // Files and categories go; so do interlanguage links ([[de:Foo]], no label). Other
        // prefixed links ([[wikt:anarchism|anarchism]]) are running text.
        let hidden = ns.as_deref().is_some_and(|n| {
            matches!(n, "file" | "image" | "category" | "media")
                || (parts.len() == 1 && n.len() <= 3 && n.chars().all(|c| c.is_ascii_lowercase()) && !n.is_empty())
        });
        if hidden && !target.starts_with(':') {
            continue;
        }
        let text = if parts.len() > 1 { parts[parts.len() - 1] } else { target.trim_start_matches(':') };
        let text = if parts.len() > 1 && text.trim().is_empty() {
            // Pipe trick: [[Paris, Texas|]] → Paris
            target.split([',', '(']).next().unwrap_or(target).trim()
        } else {
            text
        };
        out.push_str(&replace_links(text));
    }
    out.push_str(rest);
    out
}

/// `[http://example.org label]` → label, `[http://example.org]` → nothing.
fn replace_external_links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let is_url = ["http://", "https://", "ftp://", "//"].iter().any(|p| after.starts_with(p));
        match (is_url, after.find(']')) {
            (true, Some(j)) => {
                if let Some((_, label)) = after[..j].split_once(' ') {
                    out.push_str(label.trim());
                }
                rest = &after[j + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
