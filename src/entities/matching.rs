//! Answer matching as the paper's code does it (check_correctness_wikidata.py), with the fuzzy
//! score computed exactly as `thefuzz.fuzz.token_set_ratio` does: thefuzz's processing (drop the
//! characters U+0080–U+00FF, non-alphanumerics to spaces, lowercase, trim), then rapidfuzz's
//! token-set ratio (here on the `rapidfuzz` crate's Indel distance), rounded half-to-even to an
//! integer. tests/matching.rs checks it against thefuzz and rapidfuzz on a committed fixture.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::questions::AnswerKind;
use super::refusals::is_refusal;

/// What a completion is, as the paper labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Correct,
    Refusal,
    Error,
}

/// `correct` if it matches a gold value, else `refusal` if it refuses, else `error`.
pub fn judge(kind: AnswerKind, gold: &[String], completion: &str) -> Outcome {
    if is_correct(kind, gold, completion) {
        Outcome::Correct
    } else if is_refusal(completion) {
        Outcome::Refusal
    } else {
        Outcome::Error
    }
}

pub fn is_correct(kind: AnswerKind, gold: &[String], completion: &str) -> bool {
    match kind {
        AnswerKind::Name => gold.iter().any(|g| name_correct(g, completion)),
        AnswerKind::Genre => genre_correct(gold, completion),
        AnswerKind::Number { tol } => gold.iter().any(|g| number_match(completion, g, tol as f64, None)),
        AnswerKind::Relative { pct } => gold.iter().any(|g| number_match(completion, g, 0.0, Some(pct))),
    }
}

/// Extra spellings of a gold country name. The paper aliases only "united states of america"
/// and "people's republic of china"; our city table spells these "United States" and "China",
/// so the same aliases (and the United Kingdom's) hang off those spellings too.
pub fn aliases(gold_lower: &str) -> &'static [&'static str] {
    match gold_lower {
        "united states of america" | "united states" => &["united states", "us", "usa"],
        "people's republic of china" | "china" => &["china"],
        "united kingdom" => &["uk", "great britain", "britain", "england", "scotland", "wales"],
        _ => &[],
    }
}

/// The paper's own aliases only (for parity tests).
pub fn paper_aliases(gold_lower: &str) -> &'static [&'static str] {
    match gold_lower {
        "united states of america" => &["united states", "us", "usa"],
        "people's republic of china" => &["china"],
        _ => &[],
    }
}

/// `check_name_correctness` with our aliases.
pub fn name_correct(gold: &str, completion: &str) -> bool {
    name_correct_with(gold, completion, aliases)
}

/// `check_name_correctness`: lowercase the completion and turn `,` `.` `-` into spaces; the
/// gold value may hold several names separated by commas, plus aliases; correct if any of them
/// has a token-set ratio above 90.
pub fn name_correct_with(gold: &str, completion: &str, aliases: fn(&str) -> &'static [&'static str]) -> bool {
    let generation = completion.to_lowercase().replace([',', '.', '-'], " ");
    let gold = gold.to_lowercase();
    gold.split(',')
        .chain(aliases(&gold).iter().copied())
        .any(|name| !name.trim().is_empty() && thefuzz_token_set_ratio(name, &generation) > 90)
}

/// `string_match_in_list_genres`: a gold genre (lowercased, " film" removed) occurs in the
/// lowercased completion.
pub fn genre_correct(gold: &[String], completion: &str) -> bool {
    let generation = completion.to_lowercase();
    gold.iter().any(|g| {
        let g = g.to_lowercase().replace(" film", "");
        let g = g.trim();
        !g.is_empty() && generation.contains(g)
    })
}

/// `number_match`: some integer in the completion (thousands commas removed) is within `tol`
/// of the gold value, or within `pct` of it relatively.
pub fn number_match(completion: &str, gold: &str, tol: f64, pct: Option<f64>) -> bool {
    let Ok(gold) = gold.trim().parse::<f64>() else { return false };
    let text = completion.to_lowercase().replace(',', "");
    let hit = integers(&text).any(|n| match pct {
        Some(p) => (n - gold).abs() <= p * gold,
        None => (n - gold).abs() <= tol,
    });
    hit
}

/// Every maximal run of decimal digits, as a number: Python's `re.findall(r"\d+")`, whose `\d`
/// takes the decimal digits of every script (fullwidth, Arabic-Indic, Devanagari, ...).
fn integers(text: &str) -> impl Iterator<Item = f64> + '_ {
    // Digits are respelled in ASCII and parsed as f64, as Python's `int(float(n))` rounds them.
    let mut runs: Vec<String> = vec![String::new()];
    for c in text.chars() {
        match decimal_digit(c) {
            Some(d) => runs.last_mut().expect("non-empty").push(char::from_digit(d, 10).expect("digit")),
            None if !runs.last().expect("non-empty").is_empty() => runs.push(String::new()),
            None => {}
        }
    }
    runs.into_iter().filter(|r| !r.is_empty()).filter_map(|r| r.parse::<f64>().ok())
}

/// The value of a Unicode decimal digit (general category Nd) of the Basic Multilingual Plane.
/// Nd digits come in contiguous runs of ten; these are the runs' zeros.
fn decimal_digit(c: char) -> Option<u32> {
    const ZEROS: &[u32] = &[
        0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6, 0xE50, 0xED0,
        0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620,
        0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    ];
    let u = c as u32;
    ZEROS.iter().find(|&&z| u >= z && u < z + 10).map(|&z| u - z)
}

/// thefuzz's `full_process(s, force_ascii=True)`: drop U+0080..=U+00FF (thefuzz's "ascii only"
/// table covers just that range), then rapidfuzz's `default_process`: every non-alphanumeric
/// character becomes a space, lowercase, trim.
pub fn thefuzz_process(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|&c| !('\u{80}'..='\u{ff}').contains(&c))
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        // One character to one, as rapidfuzz does ("İ" → "i", not "i" + a combining dot).
        .map(|c| c.to_lowercase().next().unwrap_or(c))
        .collect();
    kept.trim().to_string()
}

/// `thefuzz.fuzz.token_set_ratio(a, b)` (defaults: full_process, force_ascii): an integer 0–100.
pub fn thefuzz_token_set_ratio(a: &str, b: &str) -> u32 {
    token_set_ratio(&thefuzz_process(a), &thefuzz_process(b)).round_ties_even() as u32
}

/// rapidfuzz's `fuzz.token_set_ratio` without processing: compares the sorted intersection and
/// differences of the two whitespace-token sets; 100 when one set contains the other.
pub fn token_set_ratio(a: &str, b: &str) -> f64 {
    let ta: BTreeSet<&str> = a.split_whitespace().collect();
    let tb: BTreeSet<&str> = b.split_whitespace().collect();
    if ta.is_empty() || tb.is_empty() {
        return 0.0;
    }
    let sect: Vec<&str> = ta.intersection(&tb).copied().collect();
    let ab: Vec<&str> = ta.difference(&tb).copied().collect();
    let ba: Vec<&str> = tb.difference(&ta).copied().collect();
    if !sect.is_empty() && (ab.is_empty() || ba.is_empty()) {
        return 100.0;
    }
    let ab_joined = ab.join(" ");
    let ba_joined = ba.join(" ");
    let ab_len = ab_joined.chars().count();
    let ba_len = ba_joined.chars().count();
    let sect_len = sect.join(" ").chars().count();
    let sep = usize::from(sect_len != 0);
    let sect_ab_len = sect_len + sep + ab_len;
    let sect_ba_len = sect_len + sep + ba_len;
    let norm = |dist: usize, lensum: usize| if lensum == 0 { 100.0 } else { 100.0 - 100.0 * dist as f64 / lensum as f64 };
    let dist = rapidfuzz::distance::indel::distance(ab_joined.chars(), ba_joined.chars());
    let result = norm(dist, sect_ab_len + sect_ba_len);
    if sect_len == 0 {
        return result;
    }
    let sect_ab = norm(sep + ab_len, sect_len + sect_ab_len);
    let sect_ba = norm(sep + ba_len, sect_len + sect_ba_len);
    result.max(sect_ab).max(sect_ba)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_examples() {
        assert!(name_correct("Francis Ford Coppola", " Francis Ford Coppola. He also"));
        assert!(name_correct("United States", " the USA"));
        assert!(!name_correct("Francis Ford Coppola", " Steven Spielberg"));
        assert!(number_match(" 1974, and", "1972", 2.0, None));
        assert!(!number_match(" 1975", "1972", 2.0, None));
        assert!(number_match(" 2,100,000 people", "2148000", 0.0, Some(0.1)));
        assert!(genre_correct(&["Crime".into()], " a crime film"));
    }

    #[test]
    fn token_set_ratio_edges() {
        assert_eq!(token_set_ratio("", "abc"), 0.0);
        assert_eq!(token_set_ratio("new york", "new york yankees"), 100.0);
        assert_eq!(thefuzz_token_set_ratio("Zürich", "zrich"), 100);
    }
}
