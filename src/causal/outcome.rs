//! What a steered completion is: a correct answer, a wrong one, a refusal, or broken output.
//!
//! A steering verdict that only counts refusals cannot tell "the model declines" from "the
//! model's output fell apart": a push that wrecks the residual stream gives 0% refusals and 0%
//! correct answers at once, and a control that does so proves nothing. So every completion is
//! classified, and broken is decided first, from the text alone:
//!
//! * **empty**: no letter at all (whitespace, punctuation, digits only);
//! * **garbled**: the Unicode replacement character (a token cut mid-character), or under half of
//!   the non-space characters are letters;
//! * **repetition**: the same word three times in a row, the same line (or the same opening word
//!   of a line) three times, or (from twelve words on) under 40% distinct words; a looping model is
//!   not answering;
//! * **format**: a list (two or more lines opening with `a.`, `b)`, `1.`, `-`, `*`) or a lone
//!   question (one sentence ending in `?`): the model asks or offers choices instead of answering.
//!
//! A completion that is not broken is a refusal (`causal::refusal`), else correct or wrong by the
//! answer matcher. Checked against hand-labelled completions of both experiment models
//! (`tests/fixtures/outcomes/hand_labelled.jsonl`).

use serde::{Deserialize, Serialize};

use super::refusal::{is_refusal, RefusalRule};
use crate::entities::matching::{judge_answer, Outcome as Judged};
use crate::entities::questions::AnswerKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Correct,
    Wrong,
    Refusal,
    Broken,
}

crate::names::named_enum!(Outcome, "outcome", Correct => "correct", Wrong => "wrong", Refusal => "refusal", Broken => "broken");

impl Outcome {
    /// An answer of the asked kind (right or wrong): what the "hallucinate" claims count.
    pub fn answered(self) -> bool {
        matches!(self, Outcome::Correct | Outcome::Wrong)
    }
}

/// Why a completion is broken, or None when it is a readable answer or refusal.
pub fn broken_reason(text: &str) -> Option<&'static str> {
    let t = text.trim();
    if !t.chars().any(char::is_alphabetic) {
        return Some("empty");
    }
    if t.contains('\u{FFFD}') {
        return Some("garbled");
    }
    let visible: Vec<char> = t.chars().filter(|c| !c.is_whitespace()).collect();
    let letters = visible.iter().filter(|c| c.is_alphabetic()).count();
    if (letters as f64) < 0.5 * visible.len() as f64 {
        return Some("garbled");
    }
    let words: Vec<String> = t
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    if words.windows(3).any(|w| w[0] == w[1] && w[1] == w[2]) {
        return Some("repetition");
    }
    let lines: Vec<&str> = t.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    for (i, l) in lines.iter().enumerate() {
        if lines[i..].iter().filter(|x| *x == l).count() >= 3 {
            return Some("repetition");
        }
    }
    // Three or more lines opening with the same word ("ICKY", "ICKY_MEXICUM", "ICKY_M…").
    let first_words: Vec<String> = lines
        .iter()
        .filter_map(|l| l.split(|c: char| !c.is_alphanumeric()).find(|w| !w.is_empty()))
        .map(|w| w.to_lowercase())
        .collect();
    if first_words.iter().any(|w| first_words.iter().filter(|x| *x == w).count() >= 3) {
        return Some("repetition");
    }
    let option_lines = lines
        .iter()
        .filter(|l| {
            let mut c = l.chars();
            let (a, b) = (c.next(), c.next());
            matches!((a, b), (Some(a), Some('.' | ')')) if a.is_ascii_alphanumeric())
                || matches!(a, Some('-' | '*' | '•'))
        })
        .count();
    if option_lines >= 2 {
        return Some("format");
    }
    if t.ends_with('?') && !t[..t.len() - 1].contains(['.', '?', '!']) {
        return Some("format");
    }
    if words.len() >= 12 {
        let mut distinct = words.clone();
        distinct.sort();
        distinct.dedup();
        if (distinct.len() as f64) < 0.4 * words.len() as f64 {
            return Some("repetition");
        }
    }
    None
}

/// Classifies one completion of a question about `entity_name` whose answers are `gold`.
pub fn classify(text: &str, kind: AnswerKind, gold: &[String], entity_name: &str, rule: RefusalRule) -> Outcome {
    if broken_reason(text).is_some() {
        return Outcome::Broken;
    }
    if is_refusal(text, rule) {
        return Outcome::Refusal;
    }
    if judge_answer(kind, gold, text, entity_name) == Judged::Correct {
        Outcome::Correct
    } else {
        Outcome::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_forms() {
        assert_eq!(broken_reason("  \n "), Some("empty"));
        assert_eq!(broken_reason("12, 34."), Some("empty"));
        assert_eq!(broken_reason(" ະມອນວວວ\u{FFFD}"), Some("garbled"));
        assert_eq!(broken_reason("fantasy fantasy fantasy fa"), Some("repetition"));
        assert_eq!(broken_reason("FMI\n\nFMI\n\nFMI\n"), Some("repetition"));
        assert_eq!(broken_reason("Paris is in France."), None);
        assert_eq!(broken_reason("I don't know."), None);
    }
}
