//! Turning each source's raw files into clean paragraphs: whitespace, HTML entities and tags,
//! Brown POS tags, Gutenberg headers and footers, factbook JSON, and splitting into documents.
//! Wiki markup has its own module (`wiki`).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// A text file as UTF-8, or, if it is not valid UTF-8 (two of the Gutenberg books are
/// Latin-1), as Windows-1252.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => decode_cp1252(e.as_bytes()),
    })
}

/// Windows-1252: Latin-1 with printable characters at 0x80..0x9F (the five undefined bytes
/// map to U+FFFD).
pub fn decode_cp1252(bytes: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '€', '\u{fffd}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{fffd}', 'Ž', '\u{fffd}',
        '\u{fffd}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{fffd}', 'ž', 'Ÿ',
    ];
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9F => HIGH[(b - 0x80) as usize],
            _ => b as char,
        })
        .collect()
}

/// Collapses every whitespace run (newlines included) to one space, drops byte-order marks and
/// control characters, and trims.
pub fn normalize_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c == '\u{feff}' || (c.is_control() && !c.is_whitespace()) {
            continue;
        }
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

/// Paragraphs of plain text: blocks separated by blank lines. Lines within a block are joined
/// with spaces (prose wrapped at ~70 columns), except verse-like blocks (several lines, all short)
/// whose line breaks are kept.
pub fn paragraphs(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut flush = |block: &mut Vec<&str>| {
        let lines: Vec<String> = block.iter().map(|l| normalize_ws(l)).filter(|l| !l.is_empty()).collect();
        block.clear();
        if lines.is_empty() {
            return;
        }
        let verse = lines.len() >= 2 && lines.iter().all(|l| l.chars().count() <= 50);
        out.push(lines.join(if verse { "\n" } else { " " }));
    };
    for line in text.split('\n') {
        if line.trim().is_empty() {
            flush(&mut block);
        } else {
            block.push(line);
        }
    }
    flush(&mut block);
    out
}

/// Decodes HTML/XML character references: numeric (`&#233;`, `&#xE9;`) and the common named
/// ones (Latin-1 letters, dashes, quotes, `&nbsp;` as a space). Unknown names are left as written.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '#')).map(|j| j + 1);
        let decoded = match end {
            Some(j) if rest.as_bytes()[j] == b';' && j > 1 => entity(&rest[1..j]).map(|c| (c, j + 1)),
            _ => None,
        };
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
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

/// HTML 4 names of U+00A0..=U+00FF, in code-point order.
const LATIN1: [&str; 96] = [
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf", "laquo", "not", "shy",
    "reg", "macr", "deg", "plusmn", "sup2", "sup3", "acute", "micro", "para", "middot", "cedil", "sup1", "ordm",
    "raquo", "frac14", "frac12", "frac34", "iquest", "Agrave", "Aacute", "Acirc", "Atilde", "Auml", "Aring", "AElig",
    "Ccedil", "Egrave", "Eacute", "Ecirc", "Euml", "Igrave", "Iacute", "Icirc", "Iuml", "ETH", "Ntilde", "Ograve",
    "Oacute", "Ocirc", "Otilde", "Ouml", "times", "Oslash", "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute", "THORN",
    "szlig", "agrave", "aacute", "acirc", "atilde", "auml", "aring", "aelig", "ccedil", "egrave", "eacute", "ecirc",
    "euml", "igrave", "iacute", "icirc", "iuml", "eth", "ntilde", "ograve", "oacute", "ocirc", "otilde", "ouml",
    "divide", "oslash", "ugrave", "uacute", "ucirc", "uuml", "yacute", "thorn", "yuml",
];

const OTHER_ENTITIES: &[(&str, char)] = &[
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("ndash", '–'),
    ("mdash", '—'),
    ("minus", '−'),
    ("hellip", '…'),
    ("bull", '•'),
    ("lsquo", '‘'),
    ("rsquo", '’'),
    ("sbquo", '‚'),
    ("ldquo", '“'),
    ("rdquo", '”'),
    ("bdquo", '„'),
    ("prime", '′'),
    ("Prime", '″'),
    ("euro", '€'),
    ("trade", '™'),
    ("dagger", '†'),
    ("Dagger", '‡'),
    ("permil", '‰'),
    ("larr", '←'),
    ("rarr", '→'),
    ("OElig", 'Œ'),
    ("oelig", 'œ'),
    ("Scaron", 'Š'),
    ("scaron", 'š'),
    ("Yuml", 'Ÿ'),
    ("fnof", 'ƒ'),
    ("thinsp", ' '),
    ("ensp", ' '),
    ("emsp", ' '),
];

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code).map(|c| if c == '\u{a0}' { ' ' } else { c });
    }
    if name == "nbsp" {
        return Some(' ');
    }
    if let Some(i) = LATIN1.iter().position(|&n| n == name) {
        return char::from_u32(0xA0 + i as u32);
    }
    OTHER_ENTITIES.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
}

/// Removes HTML tags (`<em>`, `<br/>`, `</p>`), keeping their content; `<br>` and `<p>` become
/// paragraph breaks (blank lines).
pub fn strip_html_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let is_tag = after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '!');
        match (is_tag, after.find('>')) {
            (true, Some(j)) => {
                let name: String = after[..j]
                    .trim_start_matches('/')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
                    .to_ascii_lowercase();
                if matches!(name.as_str(), "br" | "p" | "div" | "li" | "tr") {
                    out.push_str("\n\n");
                }
                rest = &after[j + 1..];
            }
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One line of the Brown corpus (`The/at jury/nn said/vbd ./.`) as plain text: tags removed,
/// `` `` `` / `''` turned into `"`, and the tokenizer's spaces before punctuation undone.
pub fn strip_brown_tags(line: &str) -> String {
    let words: Vec<&str> = line
        .split_whitespace()
        .map(|tok| match tok.rfind('/') {
            Some(i) if i > 0 => &tok[..i],
            _ => tok,
        })
        .collect();
    detokenize(&words)
}

/// Joins Penn/Brown-style tokens into text.
fn detokenize(words: &[&str]) -> String {
    let mut out = String::new();
    let mut glue_next = false; // after an opening quote or bracket
    for &w in words {
        let (w, opening, closing) = match w {
            "``" => ("\"", true, false),
            "''" => ("\"", false, true),
            "(" | "[" => (w, true, false),
            _ => (w, false, w.starts_with(['.', ',', ';', ':', '?', '!', ')', ']', '\'']) && w != "'"),
        };
        if !out.is_empty() && !glue_next && !closing {
            out.push(' ');
        }
        out.push_str(w);
        glue_next = opening;
    }
    out
}

/// The body of a Project Gutenberg text: what lies between the `*** START OF ...` and
/// `*** END OF ...` markers (or before "End of [the] Project Gutenberg's ..."), without the
/// "Produced by ..." credit that opens many books. Texts without markers are returned whole.
pub fn gutenberg_body(text: &str) -> &str {
    let ends = [
        "*** END OF",
        "***END OF",
        "End of the Project Gutenberg",
        "End of Project Gutenberg",
        "END OF THE PROJECT GUTENBERG",
        "END OF THIS PROJECT GUTENBERG",
    ];
    let mut body = match find_marker(text, &ends) {
        Some(end) => &text[..end],
        None => text,
    };
    if let Some(start) = find_marker(body, &["*** START OF", "***START OF"]) {
        // Skip to the end of the marker: its closing `***` or the end of its line.
        let after = &body[start + 3..];
        let close = after.find("***").map(|j| j + 3);
        let eol = after.find('\n').map(|j| j + 1);
        let skip = match (close, eol) {
            (Some(c), Some(e)) => c.min(e),
            (Some(c), None) => c,
            (None, Some(e)) => e,
            (None, None) => after.len(),
        };
        body = &after[skip..];
    }
    let trimmed = body.trim_start();
    if trimmed.starts_with("Produced by") {
        // The credit runs to the first blank line (or, in single-line texts, a run of spaces).
        let end = trimmed.find("\n\n").or_else(|| trimmed.find("   ")).unwrap_or(trimmed.len());
        return &trimmed[end..];
    }
    body
}

fn find_marker(text: &str, markers: &[&str]) -> Option<usize> {
    markers.iter().filter_map(|m| text.find(m)).min()
}

/// Paragraphs of a text whose line breaks were flattened to spaces (one book per line, a blank
/// line became a run of two or more spaces).
pub fn flattened_paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b' ' && i + 1 < bytes.len() && bytes[i + 1] == b' ' {
            let p = normalize_ws(&text[start..i]);
            if !p.is_empty() {
                out.push(p);
            }
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            start = i;
        } else {
            i += 1;
        }
    }
    let p = normalize_ws(&text[start..]);
    if !p.is_empty() {
        out.push(p);
    }
    out
}

/// The prose of one CIA World Factbook country file: the background (`Introduction`) followed by
/// every field written in sentences (notes, etymologies, overviews), each as "Field: text". Short
/// or numeric fields (areas, rates, lists of figures) are left out. The first paragraph names the
/// country.
pub fn factbook_prose(json: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let name = json
        .pointer("/Government/Country name/conventional short form/text")
        .and_then(Value::as_str)
        .map(|s| normalize_ws(&decode_entities(&strip_html_tags(s))))
        .filter(|s| !s.is_empty() && s != "none");
    if let Some(n) = &name {
        out.push(n.clone());
    }
    let mut fields = Vec::new();
    collect_text_fields(json, &mut Vec::new(), &mut fields);
    // Keys come in name order (serde_json's map); the background goes first.
    fields.sort_by_key(|(path, _)| path.first().is_none_or(|p| p != "Introduction"));
    for (path, text) in fields {
        let is_background = path.first().is_some_and(|p| p == "Introduction");
        for para in paragraphs(&decode_entities(&strip_html_tags(&text))) {
            let para = para.replace('\n', " ");
            if !is_background && !is_prose(&para) {
                continue;
            }
            if is_background {
                out.push(para);
            } else {
                // "Capital etymology: the name ..." — the field path minus the section.
                let label: Vec<&str> =
                    path[1..].iter().map(String::as_str).filter(|k| *k != "text" && *k != "note").collect();
                let label = if label.is_empty() { path[0].clone() } else { label.join(" ") };
                let para = para.trim_start_matches("note:").trim().to_string();
                out.push(format!("{}: {para}", label.trim()));
            }
        }
    }
    out
}

fn collect_text_fields(v: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                path.push(k.trim().to_string());
                collect_text_fields(x, path, out);
                path.pop();
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_text_fields(x, path, out)),
        Value::String(s) if path.last().is_some_and(|k| k == "text" || k == "note") => {
            out.push((path.clone(), s.clone()))
        }
        _ => {}
    }
}

/// Sentences rather than figures: at least 12 words, few digits, and a full stop.
fn is_prose(s: &str) -> bool {
    let words = s.split_whitespace().count();
    let digits = s.chars().filter(|c| c.is_ascii_digit()).count();
    words >= 12 && digits * 10 < s.len() && s.contains('.')
}

/// Splits text at sentence ends (`.`, `!`, `?`, optionally followed by closing quotes or
/// brackets, then a space and a capital letter, digit or opening quote), but not after titles
/// and initials ("Mr.", "J.").
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut start = 0;
    let mut k = 0;
    while k < chars.len() {
        let (_, c) = chars[k];
        if matches!(c, '.' | '!' | '?') && !(c == '.' && is_abbreviation(&text[start..chars[k].0])) {
            let mut j = k + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | ']' | '”' | '’') {
                j += 1;
            }
            if j + 1 < chars.len() && chars[j].1 == ' ' {
                let next = chars[j + 1].1;
                if next.is_uppercase() || next.is_ascii_digit() || matches!(next, '"' | '“' | '\'' | '‘' | '(') {
                    let end = chars[j].0;
                    out.push(text[start..end].trim());
                    start = chars[j + 1].0;
                    k = j + 1;
                    continue;
                }
            }
        }
        k += 1;
    }
    let last = text[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Whether the word before a full stop is a title or an initial ("Mr.", "St.", "J. R. R.").
fn is_abbreviation(before: &str) -> bool {
    let word = before.rsplit(|c: char| c.is_whitespace() || c == '(' || c == '"').next().unwrap_or("");
    const ABBREVIATIONS: &[&str] = &[
        "Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "Mt", "Gen", "Col", "Rev", "Prof", "Capt", "Lt", "Sgt", "Gov",
        "Sen", "Rep", "Hon", "No", "vs", "etc", "e.g", "i.e", "U.S", "Ft", "Messrs",
    ];
    (word.chars().count() == 1 && word.chars().all(char::is_uppercase)) || ABBREVIATIONS.contains(&word)
}

/// Groups consecutive paragraphs into documents of at most `max_chars` characters (a paragraph
/// longer than that is cut at sentence ends; a sentence longer than that stays whole).
/// Paragraphs within a document are separated by a blank line.
pub fn group_documents(paragraphs: &[String], max_chars: usize) -> Vec<String> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let push_piece = |piece: &str, cur: &mut String, docs: &mut Vec<String>, sep: &str| {
        if !cur.is_empty() && cur.len() + sep.len() + piece.len() > max_chars {
            docs.push(std::mem::take(cur));
        }
        if !cur.is_empty() {
            cur.push_str(sep);
        }
        cur.push_str(piece);
    };
    for p in paragraphs {
        if p.len() <= max_chars {
            push_piece(p, &mut cur, &mut docs, "\n\n");
        } else {
            // The first sentence of a long paragraph opens a new paragraph in the document.
            for (k, s) in sentences(p).into_iter().enumerate() {
                push_piece(s, &mut cur, &mut docs, if k == 0 { "\n\n" } else { " " });
            }
        }
    }
    if !cur.is_empty() {
        docs.push(cur);
    }
    docs
}
