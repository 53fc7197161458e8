//! Text ↔ token ids, identical to the reference tokenizer (llama.cpp for GGUF files, the
//! model's own tokenizer.json for Hugging Face directories), plus chat templates.

mod chat;
mod gguf;

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Content;

pub use chat::{ChatMessage, ChatTemplate};

#[derive(Clone)]
pub struct Tokenizer {
    /// Control tokens in the text are tokenized as ordinary text.
    plain: tokenizers::Tokenizer,
    /// Control tokens in the text (`<start_of_turn>`) become their ids.
    special: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Used for left padding; never attended to.
    pub pad: u32,
    /// Whether prompts start with BOS by default (the model file says).
    pub add_bos: bool,
    pub chat_template: Option<ChatTemplate>,
}

impl Tokenizer {
    fn assemble(
        tok: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Option<u32>,
        pad: Option<u32>,
        add_bos: bool,
        template: Option<(String, String)>,
    ) -> Result<Self> {
        let mut plain = tok.clone();
        plain.set_encode_special_tokens(true);
        let mut special = tok;
        special.set_encode_special_tokens(false);
        let token = |id: Option<u32>| id.and_then(|i| special.id_to_token(i)).unwrap_or_default();
        let chat_template =
            template.map(|(t, origin)| ChatTemplate::new(t, token(bos), token(eos)).with_origin(origin));
        Ok(Self { plain, special, bos, eos, pad: pad.or(eos).unwrap_or(0), add_bos, chat_template })
    }

    pub fn from_gguf(content: &Content, path: &Path) -> Result<Self> {
        let v = gguf::from_gguf(content, path)?;
        let template = v.chat_template.map(|t| (t, format!("{}: tokenizer.chat_template", path.display())));
        Self::assemble(v.tokenizer, v.bos, v.eos, v.pad, v.add_bos, template)
    }

    /// The tokenizer of a model (GGUF file or Hugging Face directory) without its weights: for a
    /// GGUF file only the header is read.
    pub fn from_model_path(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Self::from_hf_dir(path);
        }
        let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let mut reader = std::io::BufReader::new(file);
        let content = crate::gguf::read_gguf_header(&mut reader, path)?;
        Self::from_gguf(&content, path)
    }

    /// From a Hugging Face model directory: `tokenizer.json`, with special ids and the chat
    /// template from `tokenizer_config.json` / `config.json` where present.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let file = dir.join("tokenizer.json");
        let tok = std::fs::read(&file).with_context(|| format!("{}: cannot read tokenizer", file.display()))?;
        let read_json = |name: &str| -> Result<Option<Vec<u8>>> {
            let p = dir.join(name);
            if !p.exists() {
                return Ok(None);
            }
            Ok(Some(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?))
        };
        let tcfg = read_json("tokenizer_config.json")?;
        let cfg = read_json("config.json")?;
        Self::from_hf_bytes(dir, &tok, tcfg.as_deref(), cfg.as_deref())
    }

    /// `from_hf_dir` over the files' bytes: `tokenizer.json`, and `tokenizer_config.json` and
    /// `config.json` where present. Errors name the files as they would be in `dir`.
    pub fn from_hf_bytes(
        dir: &Path,
        tokenizer_json: &[u8],
        tokenizer_config: Option<&[u8]>,
        config: Option<&[u8]>,
    ) -> Result<Self> {
        let file = dir.join("tokenizer.json");
        // The tokenizers crate panics on some malformed files (an `expect` in its decoder
        // deserializer): caught here and reported as the error it is.
        let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(tokenizer_json));
        let tok = match parsed {
            Ok(Ok(tok)) => tok,
            Ok(Err(e)) => bail!("{}: cannot read tokenizer: {e}", file.display()),
            Err(_) => {
                bail!("{}: cannot read tokenizer: the tokenizers library failed on a malformed entry", file.display())
            }
        };
        let parse = |name: &str, bytes: Option<&[u8]>| -> Result<serde_json::Value> {
            match bytes {
                None => Ok(serde_json::Value::Null),
                Some(b) => {
                    serde_json::from_slice(b).with_context(|| format!("{}: invalid JSON", dir.join(name).display()))
                }
            }
        };
        let tcfg = parse("tokenizer_config.json", tokenizer_config)?;
        let cfg = parse("config.json", config)?;
        let id_of = |key: &str| -> Option<u32> {
            let by_name = tcfg.get(key).and_then(|v| v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str())));
            by_name
                .and_then(|s| tok.token_to_id(s))
                .or_else(|| cfg.get(format!("{key}_id")).and_then(|v| v.as_u64()).map(|v| v as u32))
        };
        let (bos, eos, pad) = (id_of("bos_token"), id_of("eos_token"), id_of("pad_token"));
        // With tokenizer.json the post-processor decides about BOS; add_bos only records intent.
        let add_bos = tcfg.get("add_bos_token").and_then(|v| v.as_bool()).unwrap_or(bos.is_some());
        let origin = format!("{}: chat_template", dir.join("tokenizer_config.json").display());
        let template = tcfg.get("chat_template").and_then(|v| v.as_str()).map(|t| (t.to_string(), origin));
        Self::assemble(tok, bos, eos, pad, add_bos, template)
    }

    /// Token ids of `text`. `add_bos` prepends BOS if the model uses one (as llama.cpp's
    /// `add_special`: SmolLM2's file says it does not); `parse_special` turns control-token text
    /// such as `<start_of_turn>` into its id instead of spelling it out.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        Ok(self.encoding(text, add_bos, parse_special)?.get_ids().to_vec())
    }

    /// The full encoding (ids, offsets, special mask) under `encode`'s rules.
    fn encoding(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<tokenizers::Encoding> {
        let tok = if parse_special { &self.special } else { &self.plain };
        tok.encode(text, add_bos && self.add_bos && self.bos.is_some())
            .map_err(|e| anyhow::anyhow!("tokenizing {text:?}: {e}"))
    }

    /// Token positions (in the ids `encode` returns) whose text overlaps the first occurrence of
    /// `needle` in `text`: e.g. the tokens of the entity name in a prompt, whose last one is where
    /// the paper reads and steers. Errors if `needle` is not in `text`.
    pub fn span_positions(&self, text: &str, needle: &str, add_bos: bool, parse_special: bool) -> Result<Vec<i64>> {
        let start = text.find(needle).with_context(|| format!("{needle:?} does not occur in {text:?}"))?;
        let end = start + needle.len();
        let enc = self.encoding(text, add_bos, parse_special)?;
        let positions: Vec<i64> = enc
            .get_offsets()
            .iter()
            .zip(enc.get_special_tokens_mask())
            .enumerate()
            .filter(|(_, (&(a, b), &special))| special == 0 && a < end && b > start)
            .map(|(i, _)| i as i64)
            .collect();
        if positions.is_empty() {
            bail!("no token of {text:?} covers {needle:?}");
        }
        Ok(positions)
    }

    /// `encode` with BOS where the model uses one.
    pub fn encode_prompt(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        self.encode(text, true, parse_special)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.special.decode(ids, false).map_err(|e| anyhow::anyhow!("decoding {ids:?}: {e}"))
    }

    /// The vocabulary string of one id (with `▁` / `Ġ` as stored).
    pub fn token(&self, id: u32) -> String {
        self.special.id_to_token(id).unwrap_or_else(|| format!("<id {id}>"))
    }

    pub fn vocab_size(&self) -> usize {
        self.special.get_vocab_size(true)
    }

    /// Renders a conversation with the model's chat template and tokenizes it (control tokens
    /// parsed; BOS added only if the template did not write it).
    pub fn encode_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let Some(t) = &self.chat_template else {
            bail!("this model has no chat template (a base model?): use a plain prompt");
        };
        let text = t.render(messages, add_generation_prompt)?;
        let starts_with_bos = !t.bos_token.is_empty() && text.starts_with(&t.bos_token);
        self.encode(&text, !starts_with_bos, true)
    }
}
