//! Typed reads of the two kinds of model metadata: GGUF key/values and Hugging Face config.json.
//! Every miss names the file and the key.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::config::Dims;
use candle_core::quantized::gguf_file::{Content, Value};

pub struct GgufMeta<'a> {
    pub content: &'a Content,
    pub path: &'a Path,
    pub arch: String,
}

impl<'a> GgufMeta<'a> {
    pub fn new(content: &'a Content, path: &'a Path) -> Result<Self> {
        let arch = match content.metadata.get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            _ => bail!("{}: GGUF metadata has no 'general.architecture'", path.display()),
        };
        Ok(Self { content, path, arch })
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(&format!("{}.{key}", self.arch))
    }

    /// An integer under `<arch>.<key>`.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self
            .get(key)
            .with_context(|| format!("{}: GGUF metadata has no '{}.{key}'", self.path.display(), self.arch))?;
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            // Some converters write per-layer arrays (e.g. head_count_kv); all must agree.
            Value::Array(a) if !a.is_empty() => {
                let first = a[0].to_u32().ok();
                if a.iter().any(|x| x.to_u32().ok() != first) {
                    bail!("{}: per-layer values of '{}.{key}' differ; not supported", self.path.display(), self.arch);
                }
                first.unwrap_or(0) as u64
            }
            other => bail!("{}: '{}.{key}' is not an integer: {other:?}", self.path.display(), self.arch),
        };
        Ok(n as usize)
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        self.usize(key).map(Some)
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        Ok(match self.get(key) {
            None => None,
            Some(Value::F32(x)) => Some(*x as f64),
            Some(Value::F64(x)) => Some(*x),
            Some(other) => bail!("{}: '{}.{key}' is not a float: {other:?}", self.path.display(), self.arch),
        })
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?
            .with_context(|| format!("{}: GGUF metadata has no '{}.{key}'", self.path.display(), self.arch))
    }

    pub fn opt_str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The common sizes under `<arch>.*`.
    pub fn dims(&self) -> Result<Dims> {
        let d_model = self.usize("embedding_length")?;
        let n_heads = self.usize("attention.head_count")?;
        let tensors = self.content.tensor_infos.len();
        Dims {
            n_layers: self.usize("block_count")?,
            d_model,
            n_heads,
            n_kv_heads: self.opt_usize("attention.head_count_kv")?.unwrap_or(n_heads),
            head_dim: self.opt_usize("attention.key_length")?.unwrap_or(d_model / n_heads.max(1)),
            d_ff: self.usize("feed_forward_length")?,
            vocab_size: self.vocab_size()?,
            context_length: self.usize("context_length")?,
            norm_eps: self.f64("attention.layer_norm_rms_epsilon")?,
        }
        .checked(self.path, Some(tensors))
    }

    /// Vocabulary size: the tokenizer's token list, else the embedding's rows.
    pub fn vocab_size(&self) -> Result<usize> {
        if let Some(Value::Array(a)) = self.content.metadata.get("tokenizer.ggml.tokens") {
            return Ok(a.len());
        }
        let t = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .with_context(|| format!("{}: no tokenizer and no token_embd.weight", self.path.display()))?;
        match t.shape.dims() {
            [rows, ..] => Ok(*rows),
            [] => bail!("{}: token_embd.weight has no dimensions", self.path.display()),
        }
    }
}

pub struct HfConfig<'a> {
    pub json: &'a serde_json::Value,
    pub path: &'a Path,
}

impl<'a> HfConfig<'a> {
    pub fn opt(&self, key: &str) -> Option<&serde_json::Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    /// The common sizes; `default_context` and `default_eps` where config.json omits them.
    pub fn dims(&self, default_context: usize, default_eps: f64) -> Result<Dims> {
        let d_model = self.usize("hidden_size")?;
        let n_heads = self.usize("num_attention_heads")?;
        Dims {
            n_layers: self.usize("num_hidden_layers")?,
            d_model,
            n_heads,
            n_kv_heads: self.opt_usize("num_key_value_heads").unwrap_or(n_heads),
            head_dim: self.opt_usize("head_dim").unwrap_or(d_model / n_heads.max(1)),
            d_ff: self.usize("intermediate_size")?,
            vocab_size: self.usize("vocab_size")?,
            context_length: self.opt_usize("max_position_embeddings").unwrap_or(default_context),
            norm_eps: self.opt_f64("rms_norm_eps").unwrap_or(default_eps),
        }
        .checked(self.path, None)
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt(key)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .with_context(|| format!("{}: missing or non-integer '{key}'", self.path.display()))
    }

    pub fn opt_usize(&self, key: &str) -> Option<usize> {
        self.opt(key).and_then(|v| v.as_u64()).map(|v| v as usize)
    }

    pub fn opt_f64(&self, key: &str) -> Option<f64> {
        self.opt(key).and_then(|v| v.as_f64())
    }

    /// transformers ≥ 5 keeps RoPE settings per layer type in `rope_parameters`.
    pub fn rope_parameter(&self, layer_type: &str, key: &str) -> Option<f64> {
        self.opt("rope_parameters")?.get(layer_type)?.get(key)?.as_f64()
    }

    /// `layer_types` (["sliding_attention", "full_attention", ...]) when present.
    pub fn layer_types(&self, n_layers: usize) -> Result<Option<Vec<bool>>> {
        let Some(v) = self.opt("layer_types") else { return Ok(None) };
        let a = v.as_array().with_context(|| format!("{}: 'layer_types' is not a list", self.path.display()))?;
        if a.len() != n_layers {
            bail!("{}: 'layer_types' has {} entries for {n_layers} layers", self.path.display(), a.len());
        }
        a.iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                other => bail!("{}: unknown layer type {other:?}", self.path.display()),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}
