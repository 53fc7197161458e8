//! The shape and conventions of a decoder-only transformer, independent of the file it came from.
//! Each architecture file (`gemma3.rs`, `gemma2.rs`, `llama.rs`) fills one of these from GGUF
//! metadata or a Hugging Face `config.json`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Arch {
    Gemma3,
    Gemma2,
    Llama,
}

impl Arch {
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Gemma3 => "gemma3",
            Arch::Gemma2 => "gemma2",
            Arch::Llama => "llama",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Activation {
    /// GELU, tanh approximation (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
    /// SiLU (Llama).
    Silu,
}

/// How rotary embeddings pair dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RopeLayout {
    /// Pairs (i, i + d/2): Hugging Face's `rotate_half`, and llama.cpp's NEOX mode (Gemma).
    Halves,
    /// Pairs (2i, 2i + 1): llama.cpp's normal mode; its converter permutes Llama's q/k weights
    /// so that this layout reproduces Hugging Face's results.
    Interleaved,
}

/// Per-layer attention settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerAttention {
    /// Keys further back than this many positions are masked (local layers); `None` is global.
    pub sliding_window: Option<usize>,
    /// RoPE inverse frequencies for this layer (base, scaling and per-dimension factors applied).
    pub rope_inv_freq: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub norm_eps: f64,
    /// Multiplier of q·k (1/sqrt(query_pre_attn_scalar) for Gemma, 1/sqrt(head_dim) otherwise).
    pub attn_scale: f64,
    /// Embeddings are multiplied by this (sqrt(d_model) for Gemma).
    pub embed_scale: Option<f64>,
    /// Gemma 2: attention scores become `c * tanh(s / c)`.
    pub attn_softcap: Option<f64>,
    /// Gemma 2: logits become `c * tanh(l / c)`.
    pub final_softcap: Option<f64>,
    pub activation: Activation,
    pub rope_layout: RopeLayout,
    /// Gemma 3 normalises q and k per head before RoPE.
    pub qk_norm: bool,
    /// Gemma 2/3 normalise the attention and MLP outputs before adding them to the residual.
    pub post_norms: bool,
    pub layers: Vec<LayerAttention>,
}

/// The sizes every architecture has, read the same way from GGUF metadata or config.json.
#[derive(Debug, Clone)]
pub struct Dims {
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub norm_eps: f64,
}

/// Bounds on what a model file may claim, far beyond any released model (Llama 3 405B: 126
/// layers, width 16,384, 128 heads of 128, MLP 53,248; Gemma 3: vocabulary 262,144), checked
/// before anything is sized by them: per-layer tables are built before the weights are read.
const MAX_LAYERS: usize = 1 << 12;
const MAX_WIDTH: usize = 1 << 20;
const MAX_HEADS: usize = 1 << 12;
const MAX_HEAD_DIM: usize = 1 << 14;

impl Dims {
    /// Refuses sizes outside the bounds above, or more layers than the file has tensors
    /// (`tensors`, when known: every layer has several); `origin` names the file.
    pub fn checked(self, origin: &std::path::Path, tensors: Option<usize>) -> anyhow::Result<Self> {
        let max_layers = tensors.map_or(MAX_LAYERS, |t| t.min(MAX_LAYERS));
        for (field, v, max) in [
            ("block count (n_layers)", self.n_layers, max_layers),
            ("embedding length (d_model)", self.d_model, MAX_WIDTH),
            ("feed-forward length (d_ff)", self.d_ff, MAX_WIDTH),
            ("vocabulary size", self.vocab_size, MAX_WIDTH * 16),
            ("head count", self.n_heads, MAX_HEADS),
            ("key-value head count", self.n_kv_heads, MAX_HEADS),
            ("head dimension", self.head_dim, MAX_HEAD_DIM),
        ] {
            if v == 0 || v > max {
                anyhow::bail!("{}: {field} is {v}, outside 1..={max}", origin.display());
            }
        }
        if self.context_length == 0 {
            anyhow::bail!("{}: the context length is 0", origin.display());
        }
        Ok(self)
    }
}

impl ModelConfig {
    /// A plain pre-norm decoder (Llama's conventions); architectures override what differs.
    pub fn base(arch: Arch, d: &Dims, layers: Vec<LayerAttention>) -> Self {
        ModelConfig {
            arch,
            n_layers: d.n_layers,
            d_model: d.d_model,
            n_heads: d.n_heads,
            n_kv_heads: d.n_kv_heads,
            head_dim: d.head_dim,
            d_ff: d.d_ff,
            vocab_size: d.vocab_size,
            context_length: d.context_length,
            norm_eps: d.norm_eps,
            attn_scale: 1.0 / (d.head_dim as f64).sqrt(),
            embed_scale: None,
            attn_softcap: None,
            final_softcap: None,
            activation: Activation::Silu,
            rope_layout: RopeLayout::Halves,
            qk_norm: false,
            post_norms: false,
            layers,
        }
    }
}

/// RoPE inverse frequencies `1 / base^(2i/d)`, computed in f32 as Hugging Face does.
pub fn rope_inv_freq(head_dim: usize, base: f64) -> Vec<f32> {
    (0..head_dim / 2).map(|i| 1.0f32 / (base as f32).powf((2 * i) as f32 / head_dim as f32)).collect()
}

/// Llama 3's frequency-dependent RoPE scaling (`rope_type: llama3`).
pub fn llama3_scale(
    inv_freq: &mut [f32],
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_context: f64,
) {
    let low_wavelen = original_context / low_freq_factor;
    let high_wavelen = original_context / high_freq_factor;
    for f in inv_freq.iter_mut() {
        let freq = *f as f64;
        let wavelen = 2.0 * std::f64::consts::PI / freq;
        let scaled = if wavelen < high_wavelen {
            freq
        } else if wavelen > low_wavelen {
            freq / factor
        } else {
            let smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
            (1.0 - smooth) * freq / factor + smooth * freq
        };
        *f = scaled as f32;
    }
}

impl ModelConfig {
    /// Errors, saying which rule fails, for dimensions the forward pass cannot run with.
    pub fn validate(&self) -> anyhow::Result<()> {
        let problem = if self.n_layers == 0 || self.d_model == 0 || self.vocab_size == 0 {
            format!("{} layers, width {}, vocabulary {}", self.n_layers, self.d_model, self.vocab_size)
        } else if self.n_heads == 0 || self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            format!("head count {} is not a multiple of the key-value head count {}", self.n_heads, self.n_kv_heads)
        } else if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            format!("head dimension {} is not a positive even number (RoPE rotates pairs)", self.head_dim)
        } else if self.layers.len() != self.n_layers {
            format!("{} layer descriptions for {} layers", self.layers.len(), self.n_layers)
        } else {
            return Ok(());
        };
        anyhow::bail!("inconsistent model dimensions: {problem}")
    }

    /// The width of one token's activation at `hook`, as an SAE reads it: `d_model` for the
    /// residual stream and the block outputs, `n_heads · head_dim` for `attn.hook_z` (flattened
    /// over heads, as SAELens's `reshape_activations = hook_z` does). Errors for a block the
    /// model does not have and for `attn.hook_pattern`, which has no per-token width.
    pub fn hook_width(&self, hook: crate::hooks::HookPoint) -> anyhow::Result<usize> {
        use crate::hooks::HookPoint;
        hook.check_layer(self.n_layers)?;
        Ok(match hook {
            HookPoint::AttnScores(_) | HookPoint::AttnPattern(_) => {
                anyhow::bail!("hook {hook} holds attention maps [head, query, key], which have no per-token width")
            }
            HookPoint::AttnZ(_) => self.n_heads * self.head_dim,
            HookPoint::Embed
            | HookPoint::ResidPre(_)
            | HookPoint::AttnOut(_)
            | HookPoint::ResidMid(_)
            | HookPoint::MlpOut(_)
            | HookPoint::ResidPost(_)
            | HookPoint::LnFinal => self.d_model,
        })
    }
}
