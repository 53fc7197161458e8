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
//!                                                                       blocks.l.attn.hook_attn_scores
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
use candle_core::{Device, Tensor, D};

use super::activation::gelu_tanh_mul;
use super::config::{Activation, ModelConfig, RopeLayout};
use super::weights::{Embedding, Linear, Precision, WeightSource};
use crate::batch::{Batch, Layout};
use crate::hooks::{ActivationCache, HookPoint, HookRuntime, HookSpec, LogitsAt};

#[derive(Clone)]
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

#[derive(Clone)]
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

#[derive(Clone)]
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

    /// Number of rows held.
    pub fn rows(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map(|(k, _)| k.dim(0).unwrap_or(0)).unwrap_or(0)
    }

    /// Appends the rows of `other` after this cache's rows. The shorter of the two is
    /// left-padded with zero keys and values, which the caller marks invalid in its key masks
    /// (`pad_self`, `pad_other` are how many columns each side got).
    pub fn append_rows(&mut self, other: KvCache) -> Result<(usize, usize)> {
        if self.is_empty() || self.rows() == 0 {
            let pad = 0;
            *self = other;
            return Ok((pad, pad));
        }
        let (t_self, t_other) = (self.len(), other.len());
        let (pad_self, pad_other) = (t_other.saturating_sub(t_self), t_self.saturating_sub(t_other));
        let left_pad = |t: &Tensor, n: usize| -> Result<Tensor> {
            if n == 0 {
                return Ok(t.clone());
            }
            let (b, h, _, d) = t.dims4()?;
            let z = Tensor::zeros((b, h, n, d), t.dtype(), t.device())?;
            Ok(Tensor::cat(&[&z, t], 2)?)
        };
        if other.layers.len() != self.layers.len() {
            bail!("appending a KV cache of {} layers to one of {}", other.layers.len(), self.layers.len());
        }
        for (mine, theirs) in self.layers.iter_mut().zip(other.layers) {
            match (mine.as_mut(), theirs) {
                (Some((k, v)), Some((k2, v2))) => {
                    *k = Tensor::cat(&[&left_pad(k, pad_self)?, &left_pad(&k2, pad_other)?], 0)?;
                    *v = Tensor::cat(&[&left_pad(v, pad_self)?, &left_pad(&v2, pad_other)?], 0)?;
                }
                (None, None) => {}
                _ => bail!("appending a KV cache that covers other layers"),
            }
        }
        Ok((pad_self, pad_other))
    }

    /// Drops the first `n` positions of every row (columns that are padding in every row).
    pub fn trim_front(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let len = self.len();
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.narrow(2, n, len - n)?.contiguous()?;
            *v = v.narrow(2, n, len - n)?.contiguous()?;
        }
        Ok(())
    }

    /// Keeps only the given batch rows (in that order; a row may repeat): generation drops
    /// finished rows so the remaining ones decode faster, and copies a prompt's row once per
    /// sample.
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

/// The tokens of one forward call: a whole left-padded batch, or the next chunk after a KV
/// cache (one token per row when decoding).
#[derive(Debug, Clone)]
pub struct ForwardInput {
    /// [b, t] token ids.
    ids: Vec<Vec<u32>>,
    /// RoPE positions of the chunk's tokens, b × t.
    positions: Vec<Vec<u32>>,
    /// For each row, whether each key (cached ones first, then the chunk's) is a real token.
    key_valid: Vec<Vec<bool>>,
    /// Where the chunk's tokens sit (what hook positions are counted against).
    layout: Layout,
}

impl ForwardInput {
    /// A whole batch, from its first token (no KV cache, or an empty one).
    pub fn batch(batch: &Batch) -> Self {
        Self {
            ids: batch.ids.clone(),
            positions: batch.position_ids(),
            key_valid: batch.key_valid(),
            layout: batch.layout(),
        }
    }

    /// Tokens that continue rows whose earlier keys are in a KV cache: `ids[r]` at RoPE
    /// positions `positions[r]`; `key_valid[r]` covers the cached keys and then these tokens.
    /// Hook positions count within the chunk.
    pub fn continuation(ids: Vec<Vec<u32>>, positions: Vec<Vec<u32>>, key_valid: Vec<Vec<bool>>) -> Result<Self> {
        let b = ids.len();
        let t = ids.first().map(|r| r.len()).unwrap_or(0);
        if b == 0 || t == 0 {
            bail!("a forward call needs at least one row and one token");
        }
        if ids.iter().any(|r| r.len() != t) || positions.len() != b || positions.iter().any(|p| p.len() != t) {
            bail!("every row of a continuation needs the same number of tokens and positions");
        }
        if key_valid.len() != b {
            bail!("key masks for {} rows, but {b} rows", key_valid.len());
        }
        Ok(Self { ids, positions, key_valid, layout: Layout::unpadded(b, t) })
    }

    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// Tokens per row in this call.
    pub fn len(&self) -> usize {
        self.layout.seq_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one forward call returns.
#[derive(Debug)]
pub struct ForwardOutput {
    /// [b, vocab] for `LogitsAt::Last`, [b, s, vocab] for `LogitsAt::All`, [b, k, vocab] for `At`.
    pub logits: Option<Tensor>,
    /// One token per row for `LogitsAt::GreedyLast`.
    pub greedy: Option<Vec<u32>>,
    pub cache: ActivationCache,
}

impl Transformer {
    pub fn load(cfg: ModelConfig, w: &mut WeightSource, precision: Precision) -> Result<Self> {
        cfg.validate().map_err(|e| anyhow::anyhow!("{}: {e}", w.origin()))?;
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
                if on {
                    Ok(Some(RmsNorm::load(w, &n(s), dim, eps)?))
                } else {
                    Ok(None)
                }
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

    /// The one forward entry: runs `input` (after the keys in `kv`, if given, and appending its
    /// own keys there), applying the spec's edits and captures, and computing logits where the
    /// spec asks. Without logits the pass stops after the deepest hook used. `Model::run`,
    /// generation and scoring all come through here.
    pub fn forward(&self, input: &ForwardInput, spec: &HookSpec, kv: Option<&mut KvCache>) -> Result<ForwardOutput> {
        let cfg = &self.cfg;
        spec.check(cfg.n_layers, cfg.n_heads)?;
        let past = kv.as_ref().map(|c| c.len()).unwrap_or(0);
        let total = past + input.len();
        if let Some((r, k)) = input.key_valid.iter().enumerate().find(|(_, k)| k.len() != total) {
            bail!(
                "key mask of row {r} has {} entries, expected {total} ({past} cached + {} new)",
                k.len(),
                input.len()
            );
        }
        if kv.as_ref().is_some_and(|c| !c.is_empty() && c.rows() != input.rows()) {
            bail!(
                "the KV cache holds {} rows but the input has {}",
                kv.as_ref().map(|c| c.rows()).unwrap_or(0),
                input.rows()
            );
        }
        let keys = Layout::of_keys(&input.key_valid);
        let mut hooks = HookRuntime::new(spec, &input.layout, &keys, &self.device)?;
        let n_blocks = if kv.is_some() { cfg.n_layers } else { spec.blocks_needed(cfg.n_layers) };
        let x = self.blocks_forward(input, n_blocks, kv, &mut hooks)?;
        let mut greedy = None;
        let logits = if spec.needs_final_norm() {
            let y = hooks.apply(HookPoint::LnFinal, self.output_norm.forward(&x)?)?;
            match &spec.logits {
                LogitsAt::None => None,
                LogitsAt::GreedyLast => {
                    greedy = Some(self.greedy_next(&y.narrow(1, input.len() - 1, 1)?.squeeze(1)?)?);
                    None
                }
                LogitsAt::Last => Some(self.unembed(&y.narrow(1, input.len() - 1, 1)?.squeeze(1)?)?),
                LogitsAt::All => Some(self.unembed(&y)?),
                LogitsAt::At(positions) => {
                    let cols = input.layout.columns(positions).context("logits positions")?;
                    let k = cols[0].len();
                    if cols.iter().any(|c| c.len() != k) {
                        bail!("logits positions must select the same number of tokens in every row");
                    }
                    let rows = cols
                        .iter()
                        .enumerate()
                        .map(|(r, c)| {
                            let idx =
                                Tensor::from_vec(c.iter().map(|&x| x as u32).collect::<Vec<_>>(), k, &self.device)?;
                            Ok(y.get(r)?.index_select(&idx, 0)?)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Some(self.unembed(&Tensor::stack(&rows, 0)?)?)
                }
            }
        } else {
            None
        };
        Ok(ForwardOutput {
            logits,
            greedy,
            cache: ActivationCache { tensors: hooks.into_captured(), layout: input.layout.clone() },
        })
    }

    /// Runs the embedding and the first `n_blocks` blocks on a chunk, applying hooks.
    /// Returns the residual stream after the last block run, [b, t, d].
    fn blocks_forward(
        &self,
        input: &ForwardInput,
        n_blocks: usize,
        mut kv: Option<&mut KvCache>,
        hooks: &mut HookRuntime,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t) = (input.rows(), input.len());
        let past = kv.as_ref().map(|c| c.len()).unwrap_or(0);
        if let Some(c) = kv.as_mut() {
            c.layers.resize(cfg.n_layers, None);
        }
        let flat: Vec<u32> = input.ids.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (b, t), &self.device)?;
        let mut x = self.embed.forward(&ids)?;
        if let Some(s) = cfg.embed_scale {
            x = (x * s)?;
        }
        x = hooks.apply(HookPoint::Embed, x)?;

        let masks = MaskSet::new(cfg, input, past, &self.device)?;
        // RoPE tables per distinct frequency set (Gemma 3 has two: local and global layers).
        let mut rope: Vec<(&[f32], (Tensor, Tensor))> = Vec::new();
        for layer in cfg.layers.iter().take(n_blocks) {
            if !rope.iter().any(|(f, _)| *f == layer.rope_inv_freq.as_slice()) {
                let tables = rope_tables(&layer.rope_inv_freq, &input.positions, &self.device)?;
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
            let (_, (cos, sin)) =
                rope.iter().find(|(f, _)| *f == freqs).expect("tables were built for every layer run");
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
            let mut scores = (qg.matmul(&k.t()?)? * cfg.attn_scale)?.reshape((b, cfg.n_heads, t, total))?;
            if let Some(c) = cfg.attn_softcap {
                scores = ((scores / c)?.tanh()? * c)?;
            }
            let scores = hooks.apply(HookPoint::AttnScores(l), scores.broadcast_add(masks.for_layer(l))?)?;
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

    /// Logits for normalised hidden states [..., d] → [..., vocab].
    pub fn unembed(&self, y: &Tensor) -> Result<Tensor> {
        let mut logits = self.unembed.forward(y)?;
        if let Some(c) = self.cfg.final_softcap {
            logits = ((logits / c)?.tanh()? * c)?;
        }
        Ok(logits)
    }

    /// The tied unembedding's float32 table [vocab, d] (W_Uᵀ), if the model has one.
    pub fn unembedding_table(&self) -> Option<&Tensor> {
        self.unembed.rows_f32()
    }

    /// How the packed unembedding kernel holds the table ("int8" or "f32") once it has run.
    pub fn unembedding_form(&self) -> Option<&'static str> {
        self.unembed.packed_form()
    }

    /// The index of the largest logit for each row of `y` ([b, d], after the final norm): the
    /// token greedy decoding picks. Decoding's few rows take the packed unembedding kernel
    /// (`unembed.rs`), whose logits of a row do not depend on the batch it came in.
    pub fn greedy_next(&self, y: &Tensor) -> Result<Vec<u32>> {
        // A final softcap is monotonic but can round distinct logits to one value; the full
        // logits then decide, as sampling and scoring see them.
        if self.cfg.final_softcap.is_none() {
            if let Some(picks) = self.unembed.rows_argmax(y)? {
                return Ok(picks);
            }
        }
        Ok(self.unembed(y)?.argmax(D::Minus1)?.to_vec1::<u32>()?)
    }

    /// Removes `direction` [d_model] from every matrix that writes to the residual stream: the
    /// token embeddings, each block's attention output (W_O) and MLP output (W_down). The
    /// unembedding is left as it is (a tied one keeps the original table). Float32 weights only.
    /// With `NormAware` (or without post-norms) the residual stream then has no component along
    /// the direction at any layer, up to float rounding.
    pub fn orthogonalize(&mut self, direction: &Tensor, how: Orthogonalization) -> Result<()> {
        let d = direction.to_dtype(candle_core::DType::F32)?.flatten_all()?;
        if d.dim(0)? != self.cfg.d_model {
            bail!("the direction has {} entries but the model's d_model is {}", d.dim(0)?, self.cfg.d_model);
        }
        let embed = self.embed.without_direction(&d)?;
        let mut blocks_out = Vec::with_capacity(self.blocks.len());
        for blk in &self.blocks {
            let along = |post: &Option<RmsNorm>| -> Result<Tensor> {
                Ok(match (how, post) {
                    (Orthogonalization::NormAware, Some(n)) => (&d * &n.weight)?,
                    _ => d.clone(),
                })
            };
            let o = blk.o.without_output_direction(&along(&blk.post_attention_norm)?)?;
            let down = blk.down.without_output_direction(&along(&blk.post_ffw_norm)?)?;
            blocks_out.push((o, down));
        }
        // Nothing is changed until every matrix could be computed.
        self.embed = embed;
        for (blk, (o, down)) in self.blocks.iter_mut().zip(blocks_out) {
            blk.o = o;
            blk.down = down;
        }
        Ok(())
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

/// How `Transformer::orthogonalize` treats the norms that Gemma applies to each block's output
/// before it is added to the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orthogonalization {
    /// Remove the direction d from the output of W_O and W_down (and from the embeddings), as
    /// Arditi et al. do. Exact for architectures without post-norms (Llama); under Gemma's
    /// post-norms the normalised output keeps a component along d.
    Plain,
    /// Where a post-norm with weight g follows, remove g ⊙ d instead: the norm's output
    /// `o / rms(o) ⊙ g` then has `⟨o ⊙ g, d⟩ / rms = ⟨o, g ⊙ d⟩ / rms = 0`, so every write to the
    /// residual stream is orthogonal to d in every architecture.
    NormAware,
}

/// Additive attention masks (0 or -inf), [b, 1, t, T], one per distinct sliding window.
struct MaskSet {
    global: Tensor,
    local: Option<(usize, Tensor)>,
    windows: Vec<Option<usize>>,
}

impl MaskSet {
    fn new(cfg: &ModelConfig, input: &ForwardInput, past: usize, device: &Device) -> Result<Self> {
        let windows: Vec<Option<usize>> = cfg.layers.iter().map(|l| l.sliding_window).collect();
        let mut local_w = None;
        for w in windows.iter().flatten() {
            match local_w {
                None => local_w = Some(*w),
                Some(x) if x != *w => bail!("layers with different sliding windows ({x}, {w}) are not supported"),
                _ => {}
            }
        }
        let global = build_mask(input, past, None, device)?;
        let local = match local_w {
            Some(w) => Some((w, build_mask(input, past, Some(w), device)?)),
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
fn build_mask(input: &ForwardInput, past: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let (b, t) = (input.rows(), input.len());
    let total = past + t;
    let mut m = vec![0f32; b * t * total];
    for (r, valid) in input.key_valid.iter().enumerate() {
        if valid.len() != total {
            bail!("key mask of row {r} has {} entries, expected {total}", valid.len());
        }
        for i in 0..t {
            let qi = past + i;
            for j in 0..total {
                let visible = j == qi || (j < qi && valid[j] && window.is_none_or(|w| qi - j < w));
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
