//! Tokenization identical to llama.cpp on ≥ 200 varied strings per model (unicode, CJK, emoji,
//! code, whitespace runs, chat markup with and without special parsing), and chat templates
//! rendered as Python's jinja2 renders them. Fixtures: tools/make_tokenizer_cases.py.

mod common;

use common::*;
use knowlens::tokenizer::ChatMessage;
use knowlens::Precision;

/// llama.cpp retypes any token spelled `</s>` as a control token (an end-of-generation
/// heuristic added for another model family, see llama-vocab.cpp), although Gemma's file marks
/// it user-defined. knowlens follows the file, as transformers and SentencePiece do. This is the
/// one divergence allowed, and only where the text holds `</s>` and specials are not parsed.
fn known_llamacpp_override(preset: &str, text: &str, special: bool, got: &[u32], want: &[u32]) -> bool {
    const SLASH_S: u32 = 212;
    preset == "gemma-3-270m" && !special && text.contains("</s>") && got.contains(&SLASH_S) && !want.contains(&SLASH_S)
}

fn check_cases(preset: &str) {
    let Some(m) = real_or_skip(preset, Precision::Quantized) else { return };
    let text = std::fs::read_to_string(fixture(&format!("{preset}/tokenizer_cases.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 200, "{preset}: only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let add_bos = c["add_bos"].as_bool().unwrap();
        let special = c["parse_special"].as_bool().unwrap();
        let want: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let got = m.tokenizer.encode(text, add_bos, special).unwrap();
        if got != want && !known_llamacpp_override(preset, text, special, &got, &want) {
            failures.push(format!("{text:?} (bos {add_bos}, special {special}): got {got:?}, llama.cpp {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{preset}: {} of {} differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn gemma3_tokenizer_matches_llamacpp() {
    check_cases("gemma-3-270m");
}

#[test]
fn smollm2_tokenizer_matches_llamacpp() {
    check_cases("smollm2-135m-instruct");
}

#[test]
fn smollm2_chat_template_renders_like_jinja2() {
    let Some(m) = real_or_skip("smollm2-135m-instruct", Precision::Quantized) else { return };
    let text = std::fs::read_to_string(fixture("smollm2-135m-instruct/chat_cases.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let t = m.tokenizer.chat_template.as_ref().expect("SmolLM2 has a chat template");
    for c in v["cases"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = serde_json::from_value(c["messages"].clone()).unwrap();
        let agp = c["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(t.render(&messages, agp).unwrap(), c["rendered"].as_str().unwrap());
        let ids: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(m.tokenizer.encode_chat(&messages, agp).unwrap(), ids);
    }
}

#[test]
fn gemma3_decodes_what_it_encodes() {
    let Some(m) = real_or_skip("gemma-3-270m", Precision::Quantized) else { return };
    for s in ["Michael Jordan", "Hello  world\n\nfoo", "naïve café 東京 🙂", "<start_of_turn>user\nHi<end_of_turn>\n"]
    {
        let ids = m.tokenizer.encode(s, false, true).unwrap();
        assert_eq!(m.tokenizer.decode(&ids).unwrap(), s);
    }
}

#[test]
fn entity_positions_cover_exactly_the_entity_tokens() {
    let Some(m) = real_or_skip("gemma-3-270m", Precision::Quantized) else { return };
    let text = "The movie 'The Godfather' was directed by";
    // <bos> The ▁movie ▁' The ▁Godfather ' ▁was ▁directed ▁by
    assert_eq!(m.tokenizer.span_positions(text, "The Godfather", true, false).unwrap(), vec![4, 5]);
    assert_eq!(m.tokenizer.span_positions(text, "The Godfather", false, false).unwrap(), vec![3, 4]);
    // A needle that splits a token still selects that token.
    assert_eq!(m.tokenizer.span_positions(text, "Godf", true, false).unwrap(), vec![5]);
    let ids = m.tokenizer.encode(text, true, false).unwrap();
    assert_eq!(m.tokenizer.decode(&ids[4..6]).unwrap(), "The Godfather");
    assert!(m.tokenizer.span_positions(text, "Casablanca", true, false).is_err());
}
