//! Llama family (SmolLM2, Llama 3): pre-norm blocks, SiLU gated MLP, no embedding scale, global
//! attention everywhere. llama.cpp's converter permutes q/k weights so GGUF files use interleaved
//! RoPE pairs; Hugging Face weights use rotate-half pairs. The forward pass is in `transformer.rs`.

use anyhow::Result;

use super::config::{llama3_scale, rope_inv_freq, Activation, Arch, LayerAttention, ModelConfig, RopeLayout};
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
    inv_freq: Vec<f32>,
    rope_layout: RopeLayout,
) -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        n_layers,
        d_model,
        n_heads,
        n_kv_heads,
        head_dim,
        d_ff,
        vocab_size,
        context_length,
        norm_eps,
        attn_scale: 1.0 / (head_dim as f64).sqrt(),
        embed_scale: None,
        attn_softcap: None,
        final_softcap: None,
        activation: Activation::Silu,
        rope_layout,
        qk_norm: false,
        post_norms: false,
        layers: (0..n_layers)
            .map(|_| LayerAttention { sliding_window: None, rope_inv_freq: inv_freq.clone() })
            .collect(),
    }
}

/// From GGUF. Llama 3's frequency scaling is stored as the `rope_freqs.weight` tensor, which the
/// loader applies afterwards (`divide_inv_freq`).
pub fn from_gguf(m: &GgufMeta) -> Result<ModelConfig> {
    let d_model = m.usize("embedding_length")?;
    let n_heads = m.usize("attention.head_count")?;
    let head_dim = m.opt_usize("attention.key_length")?.unwrap_or(d_model / n_heads);
    let rope_dim = m.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
    if rope_dim != head_dim {
        anyhow::bail!("{}: partial rotary embeddings ({rope_dim} of {head_dim}) are not supported", m.path.display());
    }
    Ok(build(
        m.usize("block_count")?,
        d_model,
        n_heads,
        m.opt_usize("attention.head_count_kv")?.unwrap_or(n_heads),
        head_dim,
        m.usize("feed_forward_length")?,
        m.vocab_size()?,
        m.usize("context_length")?,
        m.f64("attention.layer_norm_rms_epsilon")?,
        rope_inv_freq(head_dim, m.opt_f64("rope.freq_base")?.unwrap_or(10_000.0)),
        RopeLayout::Interleaved,
    ))
}

pub fn from_hf(c: &HfConfig) -> Result<ModelConfig> {
    let d_model = c.usize("hidden_size")?;
    let n_heads = c.usize("num_attention_heads")?;
    let head_dim = c.opt_usize("head_dim").unwrap_or(d_model / n_heads);
    let mut inv = rope_inv_freq(head_dim, c.opt_f64("rope_theta").unwrap_or(10_000.0));
    if let Some(rs) = c.opt("rope_scaling") {
        let get = |k: &str| rs.get(k).and_then(|v| v.as_f64());
        match rs.get("rope_type").or_else(|| rs.get("type")).and_then(|t| t.as_str()) {
            Some("llama3") => llama3_scale(
                &mut inv,
                get("factor").unwrap_or(8.0),
                get("low_freq_factor").unwrap_or(1.0),
                get("high_freq_factor").unwrap_or(4.0),
                get("original_max_position_embeddings").unwrap_or(8192.0),
            ),
            Some("linear") => {
                let f = get("factor").unwrap_or(1.0) as f32;
                inv.iter_mut().for_each(|x| *x /= f);
            }
            Some("default") | None => {}
            Some(other) => anyhow::bail!("{}: unsupported rope_scaling type '{other}'", c.path.display()),
        }
    }
    Ok(build(
        c.usize("num_hidden_layers")?,
        d_model,
        n_heads,
        c.opt_usize("num_key_value_heads").unwrap_or(n_heads),
        head_dim,
        c.usize("intermediate_size")?,
        c.usize("vocab_size")?,
        c.opt_usize("max_position_embeddings").unwrap_or(2048),
        c.opt_f64("rms_norm_eps").unwrap_or(1e-5),
        inv,
        RopeLayout::Halves,
    ))
}
