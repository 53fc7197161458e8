//! Gemma 2 (the paper's model): alternating local (even layers) and global attention, soft-capped
//! attention scores and final logits, pre- and post-norms, GELU-tanh gated MLP, embeddings scaled
//! by sqrt(d_model), tied unembedding. The forward pass is in `transformer.rs`.

use anyhow::Result;

use super::config::{rope_inv_freq, Activation, Arch, Dims, LayerAttention, ModelConfig};
use super::meta::{GgufMeta, HfConfig};

/// What Gemma 2 adds to the common sizes.
struct Attention {
    query_pre_attn_scalar: f64,
    sliding_window: usize,
    is_local: Vec<bool>,
    rope_base: f64,
    attn_softcap: Option<f64>,
    final_softcap: Option<f64>,
}

fn build(d: Dims, a: Attention) -> ModelConfig {
    let layers = a
        .is_local
        .iter()
        .map(|&local| LayerAttention {
            sliding_window: local.then_some(a.sliding_window),
            rope_inv_freq: rope_inv_freq(d.head_dim, a.rope_base),
        })
        .collect();
    ModelConfig {
        attn_scale: 1.0 / a.query_pre_attn_scalar.sqrt(),
        embed_scale: Some((d.d_model as f64).sqrt()),
        attn_softcap: a.attn_softcap,
        final_softcap: a.final_softcap,
        activation: Activation::GeluTanh,
        post_norms: true,
        ..ModelConfig::base(Arch::Gemma2, &d, layers)
    }
}

pub fn from_gguf(m: &GgufMeta) -> Result<ModelConfig> {
    let d = m.dims()?;
    // llama.cpp: the 27B model (46 layers) scales by d_model / n_heads, the others by head_dim.
    let query_pre_attn_scalar = if d.n_layers == 46 { (d.d_model / d.n_heads) as f64 } else { d.head_dim as f64 };
    let attention = Attention {
        query_pre_attn_scalar,
        sliding_window: m.usize("attention.sliding_window")?,
        is_local: (0..d.n_layers).map(|l| l % 2 == 0).collect(),
        rope_base: m.opt_f64("rope.freq_base")?.unwrap_or(10_000.0),
        attn_softcap: m.opt_f64("attn_logit_softcapping")?,
        final_softcap: m.opt_f64("final_logit_softcapping")?,
    };
    Ok(build(d, attention))
}

pub fn from_hf(c: &HfConfig) -> Result<ModelConfig> {
    let d = c.dims(8192, 1e-6)?;
    let is_local = match c.layer_types(d.n_layers)? {
        Some(t) => t,
        None => (0..d.n_layers).map(|l| l % 2 == 0).collect(),
    };
    let attention = Attention {
        query_pre_attn_scalar: c.opt_f64("query_pre_attn_scalar").unwrap_or(d.head_dim as f64),
        sliding_window: c.opt_usize("sliding_window").unwrap_or(4096),
        is_local,
        rope_base: c.opt_f64("rope_theta").unwrap_or(10_000.0),
        attn_softcap: c.opt_f64("attn_logit_softcapping"),
        final_softcap: c.opt_f64("final_logit_softcapping"),
    };
    Ok(build(d, attention))
}
