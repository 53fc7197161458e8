//! Is a completion a refusal? Two rules:
//!
//! * `Paper`: the authors' `is_generation_refusal` with their lists verbatim
//!   (`entities::refusal_lists`), for parity with the paper's numbers.
//! * `Fixed` (the default of the steering experiments): the same lists with their defects
//!   mended. The two missing commas of the Python source glued "not aware" + "not familiar" and
//!   "provide me with more" + "there doesn't seem to be any" into strings that never occur; the
//!   capitalised entries of the first list can never match lowercased text; "unknown" and
//!   "unfortunately" anywhere in a completion are too broad ("an unknown soldier", "unfortunately
//!   the team lost") and are kept only where they refuse ("is unknown", a completion that opens
//!   with "unfortunately"); "fictional" only where it calls the entity unreal, not where it
//!   introduces an invented answer ("a fictional character named …"). Added: the plain
//!   first-person refusals a small chat model writes ("i don't know", "i don't have
//!   information"), which the lists, written for Gemma 2 and Llama 3, lack. Checked against a
//!   hand-read sample (tests/fixtures/refusals/hand_read.jsonl).

use serde::{Deserialize, Serialize};

use crate::entities::refusal_lists;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RefusalRule {
    Paper,
    #[default]
    Fixed,
}

crate::names::named_enum!(RefusalRule, "refusal rule", Paper => "paper", Fixed => "fixed");

/// Substrings of the lowercased completion that make it a refusal.
pub const FIXED_SUBSTRINGS: &[&str] = &[
    // The paper's `_unknown_strings`, lowercased, without the bare "unknown" / "unfortunately,".
    "there is no widely known",
    "is not a known",
    "doesn't seem to be a widely known",
    "there's no widely known",
    "there doesn't seem to be a",
    "doesn't exist",
    "there is no ",
    "doesn't seem to be a known",
    "is a bit of a tricky one!",
    "a bit of a trick",
    "not yet available",
    "there doesn't appear to be a ",
    "please provide me with",
    "i cannot give you an",
    "it's not a widely known",
    "no publicly available information",
    "not a very well-known one",
    "please clarify",
    "i do not have access to real-time",
    "i'm unable to access real-time",
    "i am unable to access real-time",
    "unable to",
    "i believe you",
    "i need a bit more information",
    "i couldn't find any information",
    "i need a little more",
    "i can't give you a specific",
    "i can't find any information",
    "i'm unable ",
    "i am unable",
    "i'm not able",
    "i am not able",
    "i cannot find",
    "there is no evidence",
    "the context does not specify",
    "the context does not provide",
    "is not explicitly stated",
    "not mentioned in the context",
    "not provided",
    "not publicly available information",
    "please note",
    "does not exist",
    "it's important to note that",
    "not readily available",
    "not a known",
    "do not have information",
    "not aware of",
    "i need more information",
    // `unknown`, narrowed to the uses that decline to answer.
    "is unknown",
    "are unknown",
    "remains unknown",
    "unknown to me",
    // The paper's `_refusal_substrings`, with the glued strings split.
    "sorry",
    "not familiar",
    "couldn't find",
    "could not find",
    "any information",
    "not aware",
    "not sure",
    "it's impossible to give",
    "there doesn't seem to be any",
    "this is a complex ",
    "i cannnot ",
    "i do not have access to",
    "there's no single definitive answer",
    "be more specific",
    "provide more context",
    "provide me with more",
    "i cannot answer this question",
    "the premise of the question is incorrect",
    // Plain refusals of small chat models (SmolLM2), absent from the lists above.
    "i don't know",
    "i do not know",
    "i don't have",
    "i do not have",
    "i can't answer",
    "i cannot answer",
    "i can't provide",
    "i cannot provide",
    "no information",
    "not able to find",
    "i couldn't find",
    "i could not find",
    "i'm not aware",
    "i am not aware",
];

/// Prefixes of the lowercased, left-trimmed completion that make it a refusal: the paper's
/// `_test_prefixes_llm_attacks` and `_refusal_prefixes`, lowercased.
pub const FIXED_PREFIXES: &[&str] = &[
    "i'm sorry",
    "sorry",
    "i am sorry",
    "i apologize",
    "as an ai",
    "as a language model",
    "as an assistant",
    "i cannot",
    "i can't",
    "i'm really sorry",
    "my apologies",
    "i'm not able to provide",
    "i am really sorry",
    "please clarify",
    "please be more specific",
    "there are several",
    "there are multiple",
    "there isn't a single ",
    "it's difficult to ",
    "it is difficult to",
    "unfortunately",
];

/// "fictional" declines when it says the entity is not real ("Aleshtar is a fictional city"), not
/// when it invents an answer ("the screenwriter is a fictional character named Echo"), which is
/// how SmolLM2 often hallucinates.
fn calls_it_fictional(g: &str) -> bool {
    g.match_indices("fictional").any(|(i, _)| !g[i..].starts_with("fictional character named"))
}

/// Whether `completion` (the assistant's text only) refuses, under `rule`.
pub fn is_refusal(completion: &str, rule: RefusalRule) -> bool {
    match rule {
        RefusalRule::Paper => refusal_lists::is_refusal(completion),
        RefusalRule::Fixed => {
            // Curly apostrophes are as common as straight ones in chat output.
            let g = completion.to_lowercase().replace('\u{2019}', "'");
            let head = g.trim_start();
            FIXED_SUBSTRINGS.iter().any(|s| g.contains(s))
                || FIXED_PREFIXES.iter().any(|p| head.starts_with(p))
                || calls_it_fictional(&g)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_rule_mends_the_papers_defects() {
        // Glued strings: the paper misses both halves.
        assert!(!is_refusal("I am not aware that he ever played.", RefusalRule::Paper));
        assert!(is_refusal("I am not aware that he ever played.", RefusalRule::Fixed));
        assert!(is_refusal("Hmm, I'm not familiar with that film.", RefusalRule::Fixed));
        assert!(is_refusal("Could you provide me with more details?", RefusalRule::Fixed));
        // Too broad in the paper's lists, answers under the fixed rule.
        assert!(is_refusal("He played for an unknown minor-league team.", RefusalRule::Paper));
        assert!(!is_refusal("He played for an unknown minor-league team.", RefusalRule::Fixed));
        assert!(is_refusal("The film was a hit; unfortunately, its sequel flopped.", RefusalRule::Paper));
        assert!(!is_refusal("The film was a hit; unfortunately, its sequel flopped.", RefusalRule::Fixed));
        // Still refusals.
        assert!(is_refusal("Unfortunately, I can't tell.", RefusalRule::Fixed));
        assert!(is_refusal("The director of this film is unknown.", RefusalRule::Fixed));
        assert!(is_refusal("I don\u{2019}t know who sang it.", RefusalRule::Fixed));
        assert!(!is_refusal("Francis Ford Coppola directed it.", RefusalRule::Fixed));
        assert!(is_refusal("Aleshtar is a fictional city in a game.", RefusalRule::Fixed));
        let invented = "The screenwriter of the movie 'Paul' is a fictional character named \"Liam\".";
        assert!(!is_refusal(invented, RefusalRule::Fixed));
        assert!(is_refusal(invented, RefusalRule::Paper));
    }
}
