//! Gemma 3 (text): 5 local (sliding-window) layers to 1 global, RoPE base 10k on local layers and
//! 1M on global ones, q/k RMSNorm, pre- and post-norms around attention and MLP, GELU-tanh gated
//! MLP, embeddings scaled by sqrt(d_model), tied unembedding. The forward pass is in
//! `transformer.rs`; this file only reads the configuration.

use anyhow::Result;

use super::config::{rope_inv_freq, Activation, Arch, LayerAttention, ModelConfig, RopeLayout};
use super::meta::{GgufMeta, HfConfig};

/// Every sixth layer is global (llama.cpp: `set_swa_pattern(6)`; transformers: `layer_types`).
const SLIDING_PATTERN: usize = 6;
/// RoPE base of local layers; llama.cpp does not store it in GGUF.
const LOCAL_ROPE_BASE: f64 = 10_000.0;

struct Gemma3Params {
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
    global_base: f64,
    local_base: f64,
    /// Linear RoPE scaling of global layers (4B and larger).
    global_scale: f64,
}

fn build(p: Gemma3Params) -> ModelConfig {
    let layers = (0..p.n_layers)
        .map(|l| {
            if p.is_local[l] {
                LayerAttention {
                    sliding_window: Some(p.sliding_window),
                    rope_inv_freq: rope_inv_freq(p.head_dim, p.local_base),
                }
            } else {
                let inv = rope_inv_freq(p.head_dim, p.global_base);
                LayerAttention {
                    sliding_window: None,
                    rope_inv_freq: inv.iter().map(|f| f / p.global_scale as f32).collect(),
                }
            }
        })
        .collect();
    ModelConfig {
        arch: Arch::Gemma3,
        n_layers: p.n_layers,
        d_model: p.d_model,
        n_heads: p.n_heads,
        n_kv_heads: p.n_kv_heads,
        head_dim: p.head_dim,
        d_ff: p.d_ff,
        vocab_size: p.vocab_size,
        context_length: p.context_length,
        norm_eps: p.norm_eps,
        attn_scale: 1.0 / p.query_pre_attn_scalar.sqrt(),
        embed_scale: Some((p.d_model as f64).sqrt()),
        attn_softcap: None,
        final_softcap: None,
        activation: Activation::GeluTanh,
        rope_layout: RopeLayout::Halves,
        qk_norm: true,
        post_norms: true,
        layers,
    }
}

pub fn from_gguf(m: &GgufMeta) -> Result<ModelConfig> {
    let n_layers = m.usize("block_count")?;
    let d_model = m.usize("embedding_length")?;
    let n_heads = m.usize("attention.head_count")?;
    let head_dim = m.usize("attention.key_length")?;
    // llama.cpp: the 27B model (62 layers) scales by d_model / n_heads, the others by head_dim.
    let query_pre_attn_scalar = if n_layers == 62 { (d_model / n_heads) as f64 } else { head_dim as f64 };
    let global_scale = match m.opt_str("rope.scaling.type") {
        Some("linear") => m.opt_f64("rope.scaling.factor")?.unwrap_or(1.0),
        _ => 1.0,
    };
    Ok(build(Gemma3Params {
        n_layers,
        d_model,
        n_heads,
        n_kv_heads: m.usize("attention.head_count_kv")?,
        head_dim,
        d_ff: m.usize("feed_forward_length")?,
        vocab_size: m.vocab_size()?,
        context_length: m.usize("context_length")?,
        norm_eps: m.f64("attention.layer_norm_rms_epsilon")?,
        query_pre_attn_scalar,
        sliding_window: m.usize("attention.sliding_window")?,
        is_local: (0..n_layers).map(|l| (l + 1) % SLIDING_PATTERN != 0).collect(),
        global_base: m.f64("rope.freq_base")?,
        local_base: LOCAL_ROPE_BASE,
        global_scale,
    }))
}

pub fn from_hf(c: &HfConfig) -> Result<ModelConfig> {
    let n_layers = c.usize("num_hidden_layers")?;
    let d_model = c.usize("hidden_size")?;
    let n_heads = c.usize("num_attention_heads")?;
    let head_dim = c.opt_usize("head_dim").unwrap_or(d_model / n_heads);
    let pattern = c.opt_usize("sliding_window_pattern").unwrap_or(SLIDING_PATTERN);
    let is_local = match c.layer_types(n_layers)? {
        Some(t) => t,
        None => (0..n_layers).map(|l| (l + 1) % pattern != 0).collect(),
    };
    let global_scale = match c.opt("rope_scaling") {
        Some(rs) if rs.get("rope_type").and_then(|t| t.as_str()) == Some("linear") => {
            rs.get("factor").and_then(|f| f.as_f64()).unwrap_or(1.0)
        }
        _ => 1.0,
    };
    Ok(build(Gemma3Params {
        n_layers,
        d_model,
        n_heads,
        n_kv_heads: c.usize("num_key_value_heads")?,
        head_dim,
        d_ff: c.usize("intermediate_size")?,
        vocab_size: c.usize("vocab_size")?,
        context_length: c.opt_usize("max_position_embeddings").unwrap_or(32_768),
        norm_eps: c.opt_f64("rms_norm_eps").unwrap_or(1e-6),
        query_pre_attn_scalar: c.opt_f64("query_pre_attn_scalar").unwrap_or(head_dim as f64),
        sliding_window: c.opt_usize("sliding_window").unwrap_or(512),
        is_local,
        global_base: c
            .rope_parameter("full_attention", "rope_theta")
            .or_else(|| c.opt_f64("rope_theta"))
            .unwrap_or(1_000_000.0),
        local_base: c
            .rope_parameter("sliding_attention", "rope_theta")
            .or_else(|| c.opt_f64("rope_local_base_freq"))
            .unwrap_or(LOCAL_ROPE_BASE),
        global_scale,
    }))
}
