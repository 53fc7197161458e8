//! Llama family (SmolLM2, Llama 3): pre-norm blocks, SiLU gated MLP, no embedding scale, global
//! attention everywhere. llama.cpp's converter permutes q/k weights so GGUF files use interleaved
//! RoPE pairs; Hugging Face weights use rotate-half pairs. The forward pass is in `transformer.rs`.

use anyhow::Result;

use super::config::{llama3_scale, rope_inv_freq, Arch, Dims, LayerAttention, ModelConfig, RopeLayout};
use super::meta::{GgufMeta, HfConfig};

fn build(d: Dims, inv_freq: Vec<f32>, rope_layout: RopeLayout) -> ModelConfig {
    let layers =
        (0..d.n_layers).map(|_| LayerAttention { sliding_window: None, rope_inv_freq: inv_freq.clone() }).collect();
    ModelConfig { rope_layout, ..ModelConfig::base(Arch::Llama, &d, layers) }
}

/// From GGUF. Llama 3's frequency scaling is stored as the `rope_freqs.weight` tensor, which the
/// loader applies afterwards.
pub fn from_gguf(m: &GgufMeta) -> Result<ModelConfig> {
    let d = m.dims()?;
    let rope_dim = m.opt_usize("rope.dimension_count")?.unwrap_or(d.head_dim);
    if rope_dim != d.head_dim {
        anyhow::bail!(
            "{}: partial rotary embeddings ({rope_dim} of {}) are not supported",
            m.path.display(),
            d.head_dim
        );
    }
    let inv = rope_inv_freq(d.head_dim, m.opt_f64("rope.freq_base")?.unwrap_or(10_000.0));
    Ok(build(d, inv, RopeLayout::Interleaved))
}

pub fn from_hf(c: &HfConfig) -> Result<ModelConfig> {
    let d = c.dims(2048, 1e-5)?;
    let mut inv = rope_inv_freq(d.head_dim, c.opt_f64("rope_theta").unwrap_or(10_000.0));
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
    Ok(build(d, inv, RopeLayout::Halves))
}
