//! Builds a `tokenizers::Tokenizer` from the vocabulary stored in GGUF metadata, so that ids
//! match llama.cpp token for token.
//!
//! * `tokenizer.ggml.model = "llama"` (Gemma's SentencePiece vocabulary): a BPE whose merges follow
//!   vocabulary order, as transformers' GGUF converter builds it. The scores are merge ranks, not
//!   Unigram costs: a Unigram over them splits common words into their cheapest pieces.
//!   Spaces become `▁` with no prefix space, unknown characters fall back to `<0xXX>` bytes,
//!   user-defined tokens (`\n`, runs of spaces, HTML tags) are matched on the raw text first.
//! * `tokenizer.ggml.model = "gpt2"` (SmolLM2, Llama 3): byte-level BPE from the stored merges,
//!   with the pre-tokenizer regex that llama.cpp picks from `tokenizer.ggml.pre`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// llama.cpp token types.
const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// What the GGUF says about special tokens.
pub struct GgufVocabInfo {
    pub tokenizer: Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

fn strings(content: &Content, key: &str, path: &Path) -> Result<Vec<String>> {
    match content.metadata.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => bail!("{}: '{key}' holds a non-string {other:?}", path.display()),
            })
            .collect(),
        Some(_) => bail!("{}: '{key}' is not an array of strings", path.display()),
        None => bail!("{}: GGUF metadata has no '{key}'", path.display()),
    }
}

fn token_types(content: &Content, n: usize) -> Vec<i32> {
    match content.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) if a.len() == n => a.iter().map(|v| v.to_i32().unwrap_or(TYPE_NORMAL)).collect(),
        _ => vec![TYPE_NORMAL; n],
    }
}

fn opt_u32(content: &Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(|v| v.to_u32().ok())
}

fn opt_bool(content: &Content, key: &str) -> Option<bool> {
    content.metadata.get(key).and_then(|v| v.to_bool().ok())
}

pub fn from_gguf(content: &Content, path: &Path) -> Result<GgufVocabInfo> {
    let model = match content.metadata.get("tokenizer.ggml.model") {
        Some(Value::String(s)) => s.clone(),
        _ => bail!("{}: GGUF metadata has no tokenizer ('tokenizer.ggml.model')", path.display()),
    };
    let tokens = strings(content, "tokenizer.ggml.tokens", path)?;
    let types = token_types(content, tokens.len());
    let bos = opt_u32(content, "tokenizer.ggml.bos_token_id");
    let (mut tokenizer, default_add_bos) = match model.as_str() {
        "llama" => (sentencepiece_bpe(&tokens, &types, path)?, true),
        "gpt2" => {
            let merges = strings(content, "tokenizer.ggml.merges", path)?;
            let pre = match content.metadata.get("tokenizer.ggml.pre") {
                Some(Value::String(s)) => s.clone(),
                _ => "default".to_string(),
            };
            (byte_level_bpe(&tokens, &merges, &pre, path)?, false)
        }
        other => bail!("{}: unsupported tokenizer model '{other}' (supported: llama, gpt2)", path.display()),
    };
    add_special_tokens(&mut tokenizer, &tokens, &types);
    let add_bos = opt_bool(content, "tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos);
    if let Some(b) = bos {
        let bos_str = tokens.get(b as usize).with_context(|| format!("{}: bos id {b} out of range", path.display()))?;
        let template =
            bos_template(bos_str, b).with_context(|| format!("{}: bos token {bos_str:?}", path.display()))?;
        tokenizer.with_post_processor(Some(template));
    }
    let chat_template = match content.metadata.get("tokenizer.chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(GgufVocabInfo {
        tokenizer,
        bos,
        eos: opt_u32(content, "tokenizer.ggml.eos_token_id"),
        pad: opt_u32(content, "tokenizer.ggml.padding_token_id"),
        add_bos,
        chat_template,
    })
}

/// `<bos> $A`: applied when the caller asks for special tokens (i.e. for BOS).
fn bos_template(bos: &str, id: u32) -> Result<TemplateProcessing> {
    TemplateProcessing::builder()
        .try_single(format!("{bos} $A"))
        .map_err(|e| anyhow::anyhow!("bos template: {e}"))?
        .special_tokens(vec![(bos.to_string(), id)])
        .build()
        .context("bos template")
}

/// Control and unknown tokens are special (parsed from text only on request); user-defined
/// tokens are always matched on the raw text, before normalisation, as llama.cpp does.
fn add_special_tokens(tok: &mut Tokenizer, tokens: &[String], types: &[i32]) {
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (t, &ty) in tokens.iter().zip(types) {
        if t.is_empty() {
            continue;
        }
        match ty {
            TYPE_CONTROL | TYPE_UNKNOWN => special.push(AddedToken::from(t.clone(), true).normalized(false)),
            TYPE_USER_DEFINED => user.push(AddedToken::from(t.clone(), false).normalized(false)),
            _ => {}
        }
    }
    tok.add_special_tokens(&special);
    tok.add_tokens(&user);
}

fn sentencepiece_bpe(tokens: &[String], types: &[i32], path: &Path) -> Result<Tokenizer> {
    let vocab: ahash::AHashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    // Every split of every normal token whose halves are both tokens is a merge, ranked by the
    // merged token's position in the vocabulary.
    let mut ranked: Vec<(u32, u32, u32)> = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        if types[id] != TYPE_NORMAL {
            continue;
        }
        for (cut, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(cut);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                ranked.push((id as u32, li, ri));
            }
        }
    }
    ranked.sort_unstable();
    let merges: Vec<(String, String)> =
        ranked.into_iter().map(|(_, l, r)| (tokens[l as usize].clone(), tokens[r as usize].clone())).collect();
    let unk = tokens.iter().position(|t| t == "<unk>").map(|_| "<unk>".to_string());
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).fuse_unk(true).byte_fallback(true);
    if let Some(u) = unk {
        builder = builder.unk_token(u);
    }
    let bpe = builder.build().map_err(|e| anyhow::anyhow!("{}: building the BPE: {e}", path.display()))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_normalizer(Some(Replace::new(" ", "▁").map_err(|e| anyhow::anyhow!("{e}"))?));
    tok.with_decoder(Some(DecoderSequence::new(vec![
        Replace::new("▁", " ").map_err(|e| anyhow::anyhow!("{e}"))?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ])));
    Ok(tok)
}

/// llama.cpp's pre-tokenizer regexes, by `tokenizer.ggml.pre`.
fn byte_level_bpe(tokens: &[String], merges: &[String], pre: &str, path: &Path) -> Result<Tokenizer> {
    let vocab: ahash::AHashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .with_context(|| format!("{}: malformed merge '{m}'", path.display()))
        })
        .collect::<Result<_>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| anyhow::anyhow!("{}: building the BPE: {e}", path.display()))?;
    let mut tok = Tokenizer::new(bpe);
    let byte_level = |use_regex| tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, use_regex);
    let pre_tok = match pre {
        "default" | "gpt2" | "gpt-2" => PreSequence::new(vec![byte_level(true).into()]),
        "smollm" | "starcoder" | "refact" => PreSequence::new(vec![Digits::new(true).into(), byte_level(true).into()]),
        "llama-bpe" | "llama3" => {
            let re = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
            let split = Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            PreSequence::new(vec![split.into(), byte_level(false).into()])
        }
        other => bail!(
            "{}: unsupported pre-tokenizer '{other}' (supported: default, gpt2, smollm, llama-bpe)",
            path.display()
        ),
    };
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(ByteLevel::default()));
    Ok(tok)
}
