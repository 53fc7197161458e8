//! The forward pass of every supported architecture (Gemma 3, Gemma 2, Llama), with every hook
//! point in one place. The architectures differ only in flags of `ModelConfig`:
//!
//! ```text
//! x = embed(ids) [* sqrt(d) for Gemma]                                  hook_embed
//! for each block l:
//!     x                                                                 blocks.l.hook_resid_pre
//!     h = attn_norm(x)
//!     q, k, v = h Wq, h Wk, h Wv;  [Gemma 3: q, k = q_norm(q), k_norm(k)];  RoPE(q, k)
//!     s = q k^T * scale  [Gemma 2: c * tanh(s / c)];  causal + padding [+ sliding-window] mask
//!     p = softmax(s)                                                    blocks.l.attn.hook_pattern
//!     z = p v                                                           blocks.l.attn.hook_z
//!     a = z Wo  [Gemma: post_attention_norm(a)]                         blocks.l.hook_attn_out
//!     x = x + a                                                         blocks.l.hook_resid_mid
//!     m = down(act(gate(n)) * up(n)), n = ffn_norm(x)  [Gemma: post_ffw_norm(m)]
//!                                                                       blocks.l.hook_mlp_out
//!     x = x + m                                                         blocks.l.hook_resid_post
//! y = output_norm(x)                                                    ln_final.hook_normalized
//! logits = y W_U  [Gemma 2: c * tanh(logits / c)]   (only at the positions asked for)
//! ```

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use super::activation::gelu_tanh_mul;
use super::config::{Activation, ModelConfig, RopeLayout};
use super::weights::{Embedding, Linear, Precision, WeightSource};
use crate::hooks::{HookPoint, HookRuntime};

pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(w: &mut WeightSource, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: w.f32(name, &[dim])?, eps: eps as f32 })
    }

    /// Normalises the last axis: `x / sqrt(mean(x²) + eps) * w` (w already holds Gemma's +1).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)?)
    }
}

pub struct Block {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    post_attention_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffw_norm: Option<RmsNorm>,
}

pub struct Transformer {
    pub cfg: ModelConfig,
    embed: Embedding,
    blocks: Vec<Block>,
    output_norm: RmsNorm,
    unembed: Linear,
    device: Device,
}

/// Keys and values of earlier positions, per layer, for incremental decoding.
#[derive(Default, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Number of positions held.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map(|(k, _)| k.dim(2).unwrap_or(0)).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the given batch rows (in that order): generation drops finished rows so the
    /// remaining ones decode faster.
    pub fn retain_rows(&mut self, rows: &[u32]) -> Result<()> {
        let Some(first) = self.layers.iter().flatten().next() else { return Ok(()) };
        let idx = Tensor::from_slice(rows, rows.len(), first.0.device())?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        Ok(())
    }
}

/// One call of the blocks on a chunk of tokens.
pub struct Chunk<'a> {
    /// [b, t] token ids.
    pub ids: &'a Tensor,
    /// RoPE positions of the chunk's tokens, b × t.
    pub positions: &'a [Vec<u32>],
    /// For each row, whether each key (cached ones first, then the chunk's) is a real token.
    pub key_valid: &'a [Vec<bool>],
}

impl Transformer {
    pub fn load(cfg: ModelConfig, w: &mut WeightSource, precision: Precision) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.d_model;
        let (hd, nh, nkv, ff) = (cfg.head_dim, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff);
        let eps = cfg.norm_eps;
        let embed = w.embedding("token_embd.weight", cfg.vocab_size, d, precision)?;
        let unembed = if w.has("output.weight") {
            w.linear("output.weight", cfg.vocab_size, d, precision)?
        } else {
            embed.as_linear()?
        };
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let opt_norm = |w: &mut WeightSource, s: &str, dim: usize, on: bool| -> Result<Option<RmsNorm>> {
                if on { Ok(Some(RmsNorm::load(w, &n(s), dim, eps)?)) } else { Ok(None) }
            };
            blocks.push(Block {
                attn_norm: RmsNorm::load(w, &n("attn_norm"), d, eps)?,
                q: w.linear(&n("attn_q"), nh * hd, d, precision)?,
                k: w.linear(&n("attn_k"), nkv * hd, d, precision)?,
                v: w.linear(&n("attn_v"), nkv * hd, d, precision)?,
                o: w.linear(&n("attn_output"), d, nh * hd, precision)?,
                q_norm: opt_norm(w, "attn_q_norm", hd, cfg.qk_norm)?,
                k_norm: opt_norm(w, "attn_k_norm", hd, cfg.qk_norm)?,
                post_attention_norm: opt_norm(w, "post_attention_norm", d, cfg.post_norms)?,
                ffn_norm: RmsNorm::load(w, &n("ffn_norm"), d, eps)?,
                gate: w.linear(&n("ffn_gate"), ff, d, precision)?,
                up: w.linear(&n("ffn_up"), ff, d, precision)?,
                down: w.linear(&n("ffn_down"), d, ff, precision)?,
                post_ffw_norm: opt_norm(w, "post_ffw_norm", d, cfg.post_norms)?,
            });
        }
        let output_norm = RmsNorm::load(w, "output_norm.weight", d, eps)?;
        Ok(Self { cfg, embed, blocks, output_norm, unembed, device: Device::Cpu })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the embedding and the first `n_blocks` blocks on a chunk, applying hooks.
    /// Returns the residual stream after the last block run, [b, t, d].
    pub fn blocks_forward(
        &self,
        chunk: &Chunk,
        n_blocks: usize,
        mut kv: Option<&mut KvCache>,
        hooks: &mut HookRuntime,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t) = chunk.ids.dims2()?;
        let past = kv.as_ref().map(|c| c.len()).unwrap_or(0);
        if let Some(c) = kv.as_mut() {
            c.layers.resize(cfg.n_layers, None);
        }
        let mut x = self.embed.forward(chunk.ids)?;
        if let Some(s) = cfg.embed_scale {
            x = (x * s)?;
        }
        x = hooks.apply(HookPoint::Embed, x)?;

        let masks = MaskSet::new(cfg, chunk, past, &self.device)?;
        // RoPE tables per distinct frequency set (Gemma 3 has two: local and global layers).
        let mut rope: Vec<(&[f32], (Tensor, Tensor))> = Vec::new();
        for layer in cfg.layers.iter().take(n_blocks) {
            if !rope.iter().any(|(f, _)| *f == layer.rope_inv_freq.as_slice()) {
                let tables = rope_tables(&layer.rope_inv_freq, chunk.positions, &self.device)?;
                rope.push((layer.rope_inv_freq.as_slice(), tables));
            }
        }
        for (l, blk) in self.blocks.iter().enumerate().take(n_blocks) {
            let resid_pre = hooks.apply(HookPoint::ResidPre(l), x)?;

            // Attention.
            let h = blk.attn_norm.forward(&resid_pre)?;
            let q = blk.q.forward(&h)?.reshape((b, t, cfg.n_heads, cfg.head_dim))?;
            let k = blk.k.forward(&h)?.reshape((b, t, cfg.n_kv_heads, cfg.head_dim))?;
            let v = blk.v.forward(&h)?.reshape((b, t, cfg.n_kv_heads, cfg.head_dim))?;
            let (q, k) = match (&blk.q_norm, &blk.k_norm) {
                (Some(qn), Some(kn)) => (qn.forward(&q)?, kn.forward(&k)?),
                _ => (q, k),
            };
            let freqs = cfg.layers[l].rope_inv_freq.as_slice();
            let (_, (cos, sin)) = rope.iter().find(|(f, _)| *f == freqs).expect("tables were built for every layer run");
            let q = apply_rope(&q.transpose(1, 2)?.contiguous()?, cos, sin, cfg.rope_layout)?;
            let k = apply_rope(&k.transpose(1, 2)?.contiguous()?, cos, sin, cfg.rope_layout)?;
            let v = v.transpose(1, 2)?.contiguous()?;
            let (k, v) = match kv.as_mut() {
                Some(c) => {
                    let (k, v) = match &c.layers[l] {
                        Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                        None => (k, v),
                    };
                    c.layers[l] = Some((k.clone(), v.clone()));
                    (k, v)
                }
                None => (k, v),
            };
            // [b, kv_heads, t*rep, hd] x [b, kv_heads, hd, T]: grouped-query attention without
            // copying keys once per query head.
            let total = k.dim(2)?;
            let rep = cfg.n_heads / cfg.n_kv_heads;
            let qg = q.reshape((b, cfg.n_kv_heads, rep * t, cfg.head_dim))?;
            let mut scores = (qg.matmul(&k.t()?)? * cfg.attn_scale)?
                .reshape((b, cfg.n_heads, t, total))?;
            if let Some(c) = cfg.attn_softcap {
                scores = ((scores / c)?.tanh()? * c)?;
            }
            let scores = scores.broadcast_add(masks.for_layer(l))?;
            let pattern = candle_nn::ops::softmax_last_dim(&scores)?;
            let pattern = hooks.apply(HookPoint::AttnPattern(l), pattern)?;
            let z = pattern
                .reshape((b, cfg.n_kv_heads, rep * t, total))?
                .matmul(&v)?
                .reshape((b, cfg.n_heads, t, cfg.head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let z = hooks.apply(HookPoint::AttnZ(l), z)?;
            let mut attn_out = blk.o.forward(&z.reshape((b, t, cfg.n_heads * cfg.head_dim))?)?;
            if let Some(n) = &blk.post_attention_norm {
                attn_out = n.forward(&attn_out)?;
            }
            let attn_out = hooks.apply(HookPoint::AttnOut(l), attn_out)?;
            let resid_mid = hooks.apply(HookPoint::ResidMid(l), (resid_pre + attn_out)?)?;

            // MLP.
            let n = blk.ffn_norm.forward(&resid_mid)?;
            let (gate, up) = (blk.gate.forward(&n)?, blk.up.forward(&n)?);
            let hidden = match cfg.activation {
                Activation::GeluTanh => gelu_tanh_mul(&gate, &up)?,
                Activation::Silu => (candle_nn::ops::silu(&gate)? * up)?,
            };
            let mut mlp_out = blk.down.forward(&hidden)?;
            if let Some(n) = &blk.post_ffw_norm {
                mlp_out = n.forward(&mlp_out)?;
            }
            let mlp_out = hooks.apply(HookPoint::MlpOut(l), mlp_out)?;
            x = hooks.apply(HookPoint::ResidPost(l), (resid_mid + mlp_out)?)?;
        }
        if n_blocks < cfg.n_layers {
            // Stopped early: the next block's input is still a hook point.
            x = hooks.apply(HookPoint::ResidPre(n_blocks), x)?;
        }
        Ok(x)
    }

    /// `ln_final.hook_normalized`: the final norm, [b, t, d].
    pub fn final_norm(&self, x: &Tensor, hooks: &mut HookRuntime) -> Result<Tensor> {
        hooks.apply(HookPoint::LnFinal, self.output_norm.forward(x)?)
    }

    /// Logits for normalised hidden states [..., d] → [..., vocab].
    pub fn unembed(&self, y: &Tensor) -> Result<Tensor> {
        let mut logits = self.unembed.forward(y)?;
        if let Some(c) = self.cfg.final_softcap {
            logits = ((logits / c)?.tanh()? * c)?;
        }
        Ok(logits)
    }

    /// `y W_Uᵀ` without Gemma 2's final softcap: the linear map from the final norm's output to
    /// logits, for reading directions through the unembedding (`W_dec[j] · W_U`).
    pub fn unembed_linear(&self, y: &Tensor) -> Result<Tensor> {
        self.unembed.forward(y)
    }

    /// The final RMSNorm's weight [d] (Gemma's `1 + w` already applied): what TransformerLens's
    /// `fold_ln` multiplies into `W_U`.
    pub fn final_norm_weight(&self) -> &Tensor {
        &self.output_norm.weight
    }
}

/// Additive attention masks (0 or -inf), [b, 1, t, T], one per distinct sliding window.
struct MaskSet {
    global: Tensor,
    local: Option<(usize, Tensor)>,
    windows: Vec<Option<usize>>,
}

impl MaskSet {
    fn new(cfg: &ModelConfig, chunk: &Chunk, past: usize, device: &Device) -> Result<Self> {
        let windows: Vec<Option<usize>> = cfg.layers.iter().map(|l| l.sliding_window).collect();
        let mut local_w = None;
        for w in windows.iter().flatten() {
            match local_w {
                None => local_w = Some(*w),
                Some(x) if x != *w => bail!("layers with different sliding windows ({x}, {w}) are not supported"),
                _ => {}
            }
        }
        let global = build_mask(chunk, past, None, device)?;
        let local = match local_w {
            Some(w) => Some((w, build_mask(chunk, past, Some(w), device)?)),
            None => None,
        };
        Ok(Self { global, local, windows })
    }

    fn for_layer(&self, l: usize) -> &Tensor {
        match (self.windows[l], &self.local) {
            (Some(_), Some((_, m))) => m,
            _ => &self.global,
        }
    }
}

/// Query i (absolute index past + i) may see key j if j ≤ past + i, key j is a real token, and
/// (local layers) past + i - j < window. Each query always sees itself, so padding rows never
/// produce an all-masked softmax.
fn build_mask(chunk: &Chunk, past: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let b = chunk.key_valid.len();
    let t = chunk.positions.first().map(|p| p.len()).unwrap_or(0);
    let total = past + t;
    let mut m = vec![0f32; b * t * total];
    for (r, valid) in chunk.key_valid.iter().enumerate() {
        if valid.len() != total {
            bail!("key mask of row {r} has {} entries, expected {total}", valid.len());
        }
        for i in 0..t {
            let qi = past + i;
            for j in 0..total {
                let visible = j == qi
                    || (j < qi && valid[j] && window.is_none_or(|w| qi - j < w));
                if !visible {
                    m[(r * t + i) * total + j] = f32::NEG_INFINITY;
                }
            }
        }
    }
    Ok(Tensor::from_vec(m, (b, 1, t, total), device)?)
}

/// cos and sin of `position * inv_freq`, [b, t, head_dim / 2], computed in f32 like Hugging Face.
fn rope_tables(inv_freq: &[f32], positions: &[Vec<u32>], device: &Device) -> Result<(Tensor, Tensor)> {
    let b = positions.len();
    let t = positions.first().map(|p| p.len()).unwrap_or(0);
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(b * t * half);
    let mut sin = Vec::with_capacity(b * t * half);
    for row in positions {
        for &p in row {
            for &f in inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    Ok((Tensor::from_vec(cos, (b, t, half), device)?, Tensor::from_vec(sin, (b, t, half), device)?))
}

/// `x`: [b, heads, t, head_dim], contiguous.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, layout: RopeLayout) -> Result<Tensor> {
    match layout {
        RopeLayout::Halves => candle_nn::rotary_emb::rope(x, cos, sin),
        RopeLayout::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin),
    }
    .context("rotary embedding")
}

