//! Gemma 3 (text): 5 local (sliding-window) layers to 1 global, RoPE base 10k on local layers and
//! 1M on global ones, q/k RMSNorm, pre- and post-norms around attention and MLP, GELU-tanh gated
//! MLP, embeddings scaled by sqrt(d_model), tied unembedding. The forward pass is in
//! `transformer.rs`; this file only reads the configuration.

use anyhow::Result;

use super::config::{rope_inv_freq, Activation, Arch, Dims, LayerAttention, ModelConfig};
use super::meta::{GgufMeta, HfConfig};

/// Every sixth layer is global (llama.cpp: `set_swa_pattern(6)`; transformers: `layer_types`).
const SLIDING_PATTERN: usize = 6;
/// RoPE base of local layers; llama.cpp does not store it in GGUF.
const LOCAL_ROPE_BASE: f64 = 10_000.0;

/// What Gemma 3 adds to the common sizes.
struct Attention {
    query_pre_attn_scalar: f64,
    sliding_window: usize,
    is_local: Vec<bool>,
    global_base: f64,
    local_base: f64,
    /// Linear RoPE scaling of global layers (4B and larger).
    global_scale: f64,
}

fn build(d: Dims, a: Attention) -> ModelConfig {
    let layers = a
        .is_local
        .iter()
        .map(|&local| {
            if local {
                LayerAttention {
                    sliding_window: Some(a.sliding_window),
                    rope_inv_freq: rope_inv_freq(d.head_dim, a.local_base),
                }
            } else {
                let inv = rope_inv_freq(d.head_dim, a.global_base);
                LayerAttention {
                    sliding_window: None,
                    rope_inv_freq: inv.iter().map(|f| f / a.global_scale as f32).collect(),
                }
            }
        })
        .collect();
    ModelConfig {
        attn_scale: 1.0 / a.query_pre_attn_scalar.sqrt(),
        embed_scale: Some((d.d_model as f64).sqrt()),
        activation: Activation::GeluTanh,
        qk_norm: true,
        post_norms: true,
        ..ModelConfig::base(Arch::Gemma3, &d, layers)
    }
}

pub fn from_gguf(m: &GgufMeta) -> Result<ModelConfig> {
    let d = m.dims()?;
    // llama.cpp: the 27B model (62 layers) scales by d_model / n_heads, the others by head_dim.
    let query_pre_attn_scalar = if d.n_layers == 62 { (d.d_model / d.n_heads) as f64 } else { d.head_dim as f64 };
    let global_scale = match m.opt_str("rope.scaling.type") {
        Some("linear") => m.opt_f64("rope.scaling.factor")?.unwrap_or(1.0),
        _ => 1.0,
    };
    let attention = Attention {
        query_pre_attn_scalar,
        sliding_window: m.usize("attention.sliding_window")?,
        is_local: (0..d.n_layers).map(|l| (l + 1) % SLIDING_PATTERN != 0).collect(),
        global_base: m.f64("rope.freq_base")?,
        local_base: LOCAL_ROPE_BASE,
        global_scale,
    };
    Ok(build(d, attention))
}

pub fn from_hf(c: &HfConfig) -> Result<ModelConfig> {
    let d = c.dims(32_768, 1e-6)?;
    let pattern = c.opt_usize("sliding_window_pattern").unwrap_or(SLIDING_PATTERN);
    let is_local = match c.layer_types(d.n_layers)? {
        Some(t) => t,
        None => (0..d.n_layers).map(|l| (l + 1) % pattern != 0).collect(),
    };
    let global_scale = match c.opt("rope_scaling") {
        Some(rs) if rs.get("rope_type").and_then(|t| t.as_str()) == Some("linear") => {
            rs.get("factor").and_then(|f| f.as_f64()).unwrap_or(1.0)
        }
        _ => 1.0,
    };
    let attention = Attention {
        query_pre_attn_scalar: c.opt_f64("query_pre_attn_scalar").unwrap_or(d.head_dim as f64),
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
    };
    Ok(build(d, attention))
}
