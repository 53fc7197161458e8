//! Gemma 2 (the paper's model): alternating local (even layers) and global attention, soft-capped
//! attention scores and final logits, pre- and post-norms, GELU-tanh gated MLP, embeddings scaled
//! by sqrt(d_model), tied unembedding. The forward pass is in `transformer.rs`.

use anyhow::Result;

use super::config::{rope_inv_freq, Activation, Arch, LayerAttention, ModelConfig, RopeLayout};
use super::meta::{GgufMeta, HfConfig};

#[allow(clippy::too_many_arguments)]
fn build(
    n_layers: usize,
    d_model: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    d_ff: usize,
    vocab_size: usize,
    context_length: usize,
    norm_eps: f64,
    query_pre_attn_scalar: f64,
    sliding_window: usize,
    is_local: Vec<bool>,
    rope_base: f64,
    attn_softcap: Option<f64>,
    final_softcap: Option<f64>,
) -> ModelConfig {
    let layers = is_local
        .iter()
        .map(|&local| LayerAttention {
            sliding_window: local.then_some(sliding_window),
            rope_inv_freq: rope_inv_freq(head_dim, rope_base),
        })
        .collect();
    ModelConfig {
        arch: Arch::Gemma2,
        n_layers,
        d_model,
        n_heads,
        n_kv_heads,
        head_dim,
        d_ff,
        vocab_size,
        context_length,
        norm_eps,
        attn_scale: 1.0 / query_pre_attn_scalar.sqrt(),
        embed_scale: Some((d_model as f64).sqrt()),
        attn_softcap,
        final_softcap,
        activation: Activation::GeluTanh,
        rope_layout: RopeLayout::Halves,
        qk_norm: false,
        post_norms: true,
        layers,
    }
}

pub fn from_gguf(m: &GgufMeta) -> Result<ModelConfig> {
    let n_layers = m.usize("block_count")?;
    let d_model = m.usize("embedding_length")?;
    let n_heads = m.usize("attention.head_count")?;
    let head_dim = m.usize("attention.key_length")?;
    // llama.cpp: the 27B model (46 layers) scales by d_model / n_heads, the others by head_dim.
    let qpas = if n_layers == 46 { (d_model / n_heads) as f64 } else { head_dim as f64 };
    Ok(build(
        n_layers,
        d_model,
        n_heads,
        m.usize("attention.head_count_kv")?,
        head_dim,
        m.usize("feed_forward_length")?,
        m.vocab_size()?,
        m.usize("context_length")?,
        m.f64("attention.layer_norm_rms_epsilon")?,
        qpas,
        m.usize("attention.sliding_window")?,
        (0..n_layers).map(|l| l % 2 == 0).collect(),
        m.opt_f64("rope.freq_base")?.unwrap_or(10_000.0),
        m.opt_f64("attn_logit_softcapping")?,
        m.opt_f64("final_logit_softcapping")?,
    ))
}

pub fn from_hf(c: &HfConfig) -> Result<ModelConfig> {
    let n_layers = c.usize("num_hidden_layers")?;
    let d_model = c.usize("hidden_size")?;
    let n_heads = c.usize("num_attention_heads")?;
    let head_dim = c.opt_usize("head_dim").unwrap_or(d_model / n_heads);
    let is_local = match c.layer_types(n_layers)? {
        Some(t) => t,
        None => (0..n_layers).map(|l| l % 2 == 0).collect(),
    };
    Ok(build(
        n_layers,
        d_model,
        n_heads,
        c.usize("num_key_value_heads")?,
        head_dim,
        c.usize("intermediate_size")?,
        c.usize("vocab_size")?,
        c.opt_usize("max_position_embeddings").unwrap_or(8192),
        c.opt_f64("rms_norm_eps").unwrap_or(1e-6),
        c.opt_f64("query_pre_attn_scalar").unwrap_or(head_dim as f64),
        c.opt_usize("sliding_window").unwrap_or(4096),
        is_local,
        c.opt_f64("rope_theta").unwrap_or(10_000.0),
        c.opt_f64("attn_logit_softcapping"),
        c.opt_f64("final_logit_softcapping"),
    ))
}
