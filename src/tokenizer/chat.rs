//! Chat templates: the Jinja template stored in the model file, rendered by minijinja with the
//! Python string methods that Hugging Face templates use.
//!
//! A template comes from the model file, so it is hostile input like the rest of it: rendering
//! runs on a fuel budget (a template that loops, or recurses, stops with an error) and its
//! output is capped, so a bad template can neither hang the process nor fill its memory by
//! writing.

use anyhow::{bail, Context, Result};
use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user".into(), content: content.into() }
    }
}

#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    pub bos_token: String,
    pub eos_token: String,
    /// Where the template came from (`model.gguf: tokenizer.chat_template`), for errors.
    pub origin: String,
}

/// Template instructions one rendering may execute. The chat templates of Gemma, Llama and
/// SmolLM2 use a few hundred per message; this leaves room for thousands of messages.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// Bytes a rendering may write: a fixed allowance for the markup plus a multiple of the
/// messages' own text (templates write each message once, twice at most).
const OUTPUT_BASE: usize = 1 << 20;
const OUTPUT_PER_MESSAGE_BYTE: usize = 8;

/// An `io::Write` into a byte buffer that refuses to grow beyond `limit` bytes.
struct CappedOutput {
    out: Vec<u8>,
    limit: usize,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(format!("the output would exceed {} bytes", self.limit)));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn raise_exception(msg: String) -> std::result::Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// Refuses a template that multiplies (`*`, `**`) anything but a string literal by a small integer
/// literal (indentation, `'  ' * 2`). minijinja repeats a list (`['x'] * n`) lazily with no bound
/// on `n`, and printing, joining or concatenating the result walks it inside one instruction, which
/// the fuel budget cannot stop; its compiler also folds constant expressions, so a template made
/// only of literals can hang (or overflow) while it is being compiled. Fuzzing found both. No chat
/// template of the model families we know multiplies anything else. Checked on the tokens, before
/// compiling.
fn refuse_repetition(source: &str, origin: &str) -> Result<()> {
    use minijinja::machinery::{tokenize, Token, WhitespaceConfig};
    let mut tokens = Vec::new();
    for t in tokenize(source, false, Default::default(), WhitespaceConfig::default()) {
        match t {
            Ok((token, span)) => tokens.push((token, span.start_line)),
            // Not a template: compiling it reports where.
            Err(_) => return Ok(()),
        }
    }
    for (i, (token, line)) in tokens.iter().enumerate() {
        if !matches!(token, Token::Mul | Token::Pow) {
            continue;
        }
        let string_before = i > 0 && matches!(tokens[i - 1].0, Token::Str(_) | Token::String(_));
        let small_int_after = matches!(tokens.get(i + 1), Some((Token::Int(n), _)) if *n <= 1024);
        let nothing_chained = !matches!(tokens.get(i + 2), Some((Token::Mul | Token::Pow, _)));
        if !(matches!(token, Token::Mul) && string_before && small_int_after && nothing_chained) {
            bail!(
                "{origin}: the template multiplies (`*` or `**`, line {line}); refused: only a string literal \
                 times a small integer literal is allowed, because a repeated list has no size limit in the \
                 template engine"
            );
        }
    }
    Ok(())
}

impl ChatTemplate {
    pub fn new(source: String, bos_token: String, eos_token: String) -> Self {
        Self { source, bos_token, eos_token, origin: "the model's chat template".into() }
    }

    /// Names the file and field the template was read from in every error.
    pub fn with_origin(mut self, origin: String) -> Self {
        self.origin = origin;
        self
    }

    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        let origin = &self.origin;
        refuse_repetition(&self.source, origin)?;
        env.add_template("chat", &self.source).with_context(|| format!("{origin}: the template does not parse"))?;
        env.set_fuel(Some(TEMPLATE_FUEL));
        let tmpl = env.get_template("chat")?;
        let text: usize = messages.iter().map(|m| m.role.len() + m.content.len()).sum();
        let limit = OUTPUT_BASE.saturating_add(text.saturating_mul(OUTPUT_PER_MESSAGE_BYTE));
        let mut out = CappedOutput { out: Vec::new(), limit };
        let rendered = tmpl.render_captured_to(
            context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            },
            &mut out,
        );
        match rendered {
            Ok(_) => String::from_utf8(out.out).with_context(|| format!("{origin}: the template wrote invalid UTF-8")),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                bail!("{origin}: the template did not finish within {TEMPLATE_FUEL} steps (does it loop?); refused")
            }
            Err(e) if e.kind() == ErrorKind::WriteFailure => {
                bail!("{origin}: the template writes more than {limit} bytes for these messages; refused")
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("{origin}: rendering the template"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_with_python_methods() {
        let src = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'].strip() }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let t = ChatTemplate::new(src.into(), "".into(), "<|im_end|>".into());
        let out = t.render(&[ChatMessage::user(" Hi ")], true).unwrap();
        assert_eq!(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}".into(), "".into(), "".into());
        let err = format!("{:#}", t.render(&[], false).unwrap_err());
        assert!(err.contains("no system role"), "{err}");
    }
}
