//! How good an SAE is on held-out text, with SAELens's definitions (`sae_lens/evals.py`):
//! sparsity, reconstruction, latent usage, and what splicing the reconstruction into the forward
//! pass does to the model's next-token loss.
//!
//! # Which tokens count
//!
//! * **Reconstruction and sparsity metrics** (L0, L1, MSE, explained variance, cosine, norms,
//!   latent frequencies) use every token except padding and the special tokens BOS and EOS
//!   (by id), as SAELens's `multiple_evals` does with `ignore_tokens = {pad, eos, bos}`. BOS is
//!   excluded because its residual stream is an outlier (an attention sink with a huge norm) that
//!   SAEs are not trained to reconstruct.
//! * **The spliced runs** replace the hook's activation by the SAE's reconstruction (or by zeros,
//!   for the ablation baseline) at those same tokens and leave the excluded ones untouched.
//!   SAELens does the same for the SAE run but zero-ablates BOS too; here both edits leave BOS
//!   alone, so that a zero SAE gives exactly the ablation's loss and the score compares like
//!   with like. (SAELens's CE-recovered is therefore a little more generous than this one.)
//! * **CE loss** is the next-token cross-entropy at every counted token that has a next token
//!   (all but each row's last), i.e. predictions made *at* BOS are dropped, as SAELens's mask
//!   drops them. At those positions all three runs are identical, so dropping them changes the
//!   absolute losses slightly but neither the CE-recovered nor the KL score.
//! * **KL divergence** `KL(p_clean ‖ p_edited)` is averaged over every counted token, the last
//!   included (SAELens's mask for KL keeps the last position).
//!
//! # Definitions (n counted tokens, x the hook activation, x̂ = decode(encode(x)), f the latents)
//!
//! * `l0` = mean #(f > 0); `l1` = mean Σ f.
//! * `mse` = Σ‖x − x̂‖² / (n · d_in), the mean over elements (torch's `mse_loss`). SAELens's
//!   `mse` divides each token's squared error by the batch's token count instead, so its values
//!   are not comparable.
//! * `explained_variance` = 1 − E‖x − x̂‖² / Var_total(x), with
//!   Var_total(x) = E‖x − E x‖² = Σ_d Var(x_d), over all counted tokens; `fvu` = 1 − that.
//!   (The SAELens code this follows subtracts `(E‖x‖²/d)²` rather than `‖E x‖²` in the
//!   denominator; this uses the textbook total variance its formula names.)
//! * `cossim` = mean cos(x, x̂) (0 where either vector is zero); `l2_ratio` = mean ‖x̂‖/‖x‖
//!   (‖x‖ < 1e-4 is replaced by 1, as SAELens does); `relative_reconstruction_bias` =
//!   E‖x̂‖² / E⟨x, x̂⟩ (Rajamanoharan et al. 2024, eq. 10).
//! * a latent is **dead** if it never fired on the counted tokens and **dense** if it fired on
//!   more than `dense_threshold` of them (default 10%).
//! * `ce_loss_recovered` = (CE_zero − CE_sae) / (CE_zero − CE_clean); `delta_lm_loss` =
//!   CE_sae − CE_clean; `kl_div_score` = (KL_zero − KL_sae) / KL_zero. Undefined ratios
//!   (a zero denominator) are `None`.
//!
//! # Cost and memory
//!
//! Sequences run `batch_size` at a time: one clean pass that captures the hook and the final
//! norm's output, then one pass with the reconstruction and one with the ablation spliced in.
//! Logits are never held for a whole batch: the unembedding runs on `logit_rows` positions at a
//! time (3 × logit_rows × vocab floats, ~200 MB for the default 64 rows of Gemma's 262k
//! vocabulary), and only per-token losses are kept. The unembedding dominates the cost: three
//! [rows × d] · [d × vocab] products per token, against one for the model's own forward pass.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Sae;
use crate::batch::{Batch, Positions};
use crate::corpus::sequences::{short_text_sequence, text_sequences};
use crate::hooks::{HookPoint, HookSpec, Intervention};
use crate::model::Model;

/// The default fraction of tokens above which a latent counts as dense.
pub const DEFAULT_DENSE_THRESHOLD: f64 = 0.1;

#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Positions per unembedding chunk (bounds the logits held at once).
    pub logit_rows: usize,
    /// A latent firing on more than this fraction of the counted tokens is dense.
    pub dense_threshold: f64,
    /// Run the spliced forward passes (CE loss and KL metrics). Without them the evaluation
    /// needs one pass that stops at the SAE's hook.
    pub downstream: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { batch_size: 8, logit_rows: 64, dense_threshold: DEFAULT_DENSE_THRESHOLD, downstream: true }
    }
}

/// What splicing the SAE into the forward pass does to the model's predictions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Downstream {
    /// Mean next-token cross-entropy (nats) of the unedited model.
    pub ce_loss_clean: f64,
    /// ... with the SAE's reconstruction in place of the hook's activation.
    pub ce_loss_sae: f64,
    /// ... with the hook's activation zeroed.
    pub ce_loss_zero: f64,
    /// (CE_zero − CE_sae) / (CE_zero − CE_clean): 1 is perfect, 0 as bad as ablation.
    pub ce_loss_recovered: Option<f64>,
    /// CE_sae − CE_clean.
    pub delta_lm_loss: f64,
    /// Mean KL(p_clean ‖ p_sae) per token (nats).
    pub kl_div_sae: f64,
    /// Mean KL(p_clean ‖ p_zero) per token.
    pub kl_div_zero: f64,
    /// (KL_zero − KL_sae) / KL_zero.
    pub kl_div_score: Option<f64>,
    /// Tokens whose next-token loss was counted.
    pub n_loss_tokens: usize,
}

/// The evaluation of one SAE on a set of token sequences. See the module docs for definitions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SaeEval {
    pub sae: String,
    pub hook: String,
    pub d_in: usize,
    pub d_sae: usize,
    pub n_sequences: usize,
    /// Non-padding tokens run through the model.
    pub n_tokens: usize,
    /// Tokens the reconstruction metrics count (no padding, BOS or EOS).
    pub n_counted_tokens: usize,
    pub l0: f64,
    pub l1: f64,
    pub mse: f64,
    pub explained_variance: f64,
    /// Fraction of variance unexplained, 1 − explained_variance.
    pub fvu: f64,
    pub cossim: f64,
    pub l2_norm_in: f64,
    pub l2_norm_out: f64,
    pub l2_ratio: f64,
    pub relative_reconstruction_bias: Option<f64>,
    pub n_dead: usize,
    pub dead_fraction: f64,
    pub n_dense: usize,
    pub dense_fraction: f64,
    pub dense_threshold: f64,
    /// None when `EvalConfig::downstream` is off.
    pub downstream: Option<Downstream>,
    /// Fraction of counted tokens on which each latent fired, [d_sae].
    pub latent_frequency: Vec<f32>,
    /// Wall-clock time of the evaluation.
    pub seconds: f64,
}

/// Evaluates `sae` on `seqs` (each a token sequence that starts with BOS where the model uses
/// one). Errors if the SAE does not fit the model (hook missing, d_in not its width).
pub fn evaluate(model: &Model, sae: &Sae, seqs: &[Vec<u32>], cfg: &EvalConfig) -> Result<SaeEval> {
    let start = Instant::now();
    sae.check_model(model)?;
    if cfg.batch_size == 0 || cfg.logit_rows == 0 {
        bail!("batch_size and logit_rows must be at least 1");
    }
    if seqs.is_empty() {
        bail!("no sequences to evaluate on");
    }
    let special = special_ids(model);
    let mut acc = Accum::new(sae.d_in(), sae.d_sae());
    for (i, rows) in seqs.chunks(cfg.batch_size).enumerate() {
        let first = i * cfg.batch_size;
        let batch = model
            .batch_from_ids(rows)
            .with_context(|| format!("evaluation sequences {first}..{}", first + rows.len()))?;
        eval_batch(model, sae, &batch, &special, cfg, &mut acc)
            .with_context(|| format!("evaluating {} on sequences {first}..{}", sae.hook, first + rows.len()))?;
    }
    acc.finish(sae, seqs.len(), cfg, start.elapsed().as_secs_f64())
}

/// BOS and EOS ids of the model's tokenizer: tokens left out of every metric.
pub fn special_ids(model: &Model) -> Vec<u32> {
    [model.tokenizer.bos, model.tokenizer.eos].into_iter().flatten().collect()
}

/// Whether each cell of a [rows × seq] batch counts: a real token that is not special.
pub fn counted_mask(batch: &Batch, special: &[u32]) -> Vec<bool> {
    let mut keep = Vec::with_capacity(batch.rows() * batch.seq_len);
    for (r, ids) in batch.ids.iter().enumerate() {
        keep.extend(ids.iter().enumerate().map(|(t, id)| t >= batch.pad[r] && !special.contains(id)));
    }
    keep
}

/// The hook's activations of a batch as rows [b·s, d_in] (hook_z flattened over heads, as
/// SAELens does for hook_z SAEs).
pub(crate) fn hook_rows(x: &Tensor, d_in: usize) -> Result<Tensor> {
    let (b, s) = (x.dim(0)?, x.dim(1)?);
    Ok(x.reshape((b * s, d_in))?)
}

fn eval_batch(
    model: &Model,
    sae: &Sae,
    batch: &Batch,
    special: &[u32],
    cfg: &EvalConfig,
    acc: &mut Accum,
) -> Result<()> {
    let hook = sae.hook;
    let (b, s) = (batch.rows(), batch.seq_len);
    let keep = counted_mask(batch, special);
    acc.n_tokens += (0..b).map(|r| batch.len_of(r)).sum::<usize>();
    let keep_idx: Vec<u32> = (0..keep.len() as u32).filter(|&i| keep[i as usize]).collect();
    if keep_idx.is_empty() {
        return Ok(());
    }
    let mut capture = vec![hook];
    if cfg.downstream {
        capture.push(HookPoint::LnFinal);
    }
    let clean = model.run(batch, &HookSpec::new().capture(capture))?;
    let x = clean.cache.get(hook)?;
    let flat = hook_rows(x, sae.d_in())?;
    let f_all = sae.encode(&flat)?;
    let xh_all = sae.decode(&f_all)?;

    let dev = flat.device();
    let idx = Tensor::from_slice(&keep_idx, keep_idx.len(), dev)?;
    acc.add_reconstruction(
        &flat.index_select(&idx, 0)?,
        &xh_all.index_select(&idx, 0)?,
        &f_all.index_select(&idx, 0)?,
    )?;

    if !cfg.downstream {
        return Ok(());
    }
    // Splice at the counted tokens only; excluded ones keep their clean activation.
    let mask = Tensor::from_vec(keep.iter().map(|&k| k as u8).collect::<Vec<_>>(), (b * s, 1), dev)?
        .broadcast_as(flat.shape())?;
    let spliced = mask.where_cond(&xh_all, &flat)?.reshape(x.shape())?;
    let zeroed = mask.where_cond(&flat.zeros_like()?, &flat)?.reshape(x.shape())?;
    let d = model.cfg().d_model;
    let final_rows = |t: &Tensor| -> Result<Tensor> { Ok(t.reshape((b * s, d))?) };
    let edited = |v: Tensor| -> Result<Tensor> {
        let spec = HookSpec::new().capture([HookPoint::LnFinal]).edit(hook, Positions::All, Intervention::Replace(v));
        final_rows(model.run(batch, &spec)?.cache.get(HookPoint::LnFinal)?)
    };
    let y_clean = final_rows(clean.cache.get(HookPoint::LnFinal)?)?;
    drop(clean);
    let y_sae = edited(spliced)?;
    let y_zero = edited(zeroed)?;

    // Losses, a few positions at a time so that logits stay small.
    for chunk in keep_idx.chunks(cfg.logit_rows) {
        let n = chunk.len();
        let ix = Tensor::from_slice(chunk, n, dev)?;
        let targets: Vec<Option<u32>> = chunk
            .iter()
            .map(|&i| {
                let (r, t) = (i as usize / s, i as usize % s);
                (t + 1 < s).then(|| batch.ids[r][t + 1])
            })
            .collect();
        let logits = |y: &Tensor| -> Result<Vec<f32>> {
            Ok(model.transformer.unembed(&y.index_select(&ix, 0)?)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let (lc, ls, lz) = (logits(&y_clean)?, logits(&y_sae)?, logits(&y_zero)?);
        let v = lc.len() / n;
        let per_row: Vec<RowLoss> = (0..n)
            .into_par_iter()
            .map(|j| {
                let (a, b) = (j * v, (j + 1) * v);
                RowLoss::new(&lc[a..b], &ls[a..b], &lz[a..b], targets[j])
            })
            .collect();
        for r in per_row {
            if let Some(ce) = r.ce {
                acc.ce.iter_mut().zip(ce).for_each(|(a, c)| *a += c);
                acc.n_ce += 1;
            }
            acc.kl[0] += r.kl[0];
            acc.kl[1] += r.kl[1];
            acc.n_kl += 1;
        }
    }
    Ok(())
}

/// One position's losses from its clean, SAE and ablated logits, in f64, without materialising
/// log-probabilities: with lse the log-sum-exp, CE = lse − z[target] and
/// KL(p_c ‖ p_e) = Σ p_c (z_c − z_e) − lse_c + lse_e.
struct RowLoss {
    /// Cross-entropy of the next token (clean, SAE, ablated), when there is one.
    ce: Option<[f64; 3]>,
    /// KL(clean ‖ SAE), KL(clean ‖ ablated).
    kl: [f64; 2],
}

impl RowLoss {
    fn new(clean: &[f32], sae: &[f32], zero: &[f32], target: Option<u32>) -> Self {
        let (lse_c, lse_s, lse_z) = (log_sum_exp(clean), log_sum_exp(sae), log_sum_exp(zero));
        let (mut ds, mut dz) = (0f64, 0f64);
        for ((&c, &s), &z) in clean.iter().zip(sae).zip(zero) {
            let p = (c - lse_c as f32).exp() as f64;
            ds += p * (c - s) as f64;
            dz += p * (c - z) as f64;
        }
        let ce = target.map(|t| {
            let t = t as usize;
            [lse_c - clean[t] as f64, lse_s - sae[t] as f64, lse_z - zero[t] as f64]
        });
        Self { ce, kl: [ds - lse_c + lse_s, dz - lse_c + lse_z] }
    }
}

fn log_sum_exp(z: &[f32]) -> f64 {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m as f64 + z.iter().map(|&x| (x - m).exp() as f64).sum::<f64>().ln()
}

/// Running sums, in f64, over every counted token.
struct Accum {
    n: usize,
    n_tokens: usize,
    l0: f64,
    l1: f64,
    sq_err: f64,
    xx: f64,
    hh: f64,
    dot: f64,
    cos: f64,
    ratio: f64,
    norm_in: f64,
    norm_out: f64,
    sum_x: Vec<f64>,
    fired: Vec<u64>,
    ce: [f64; 3],
    n_ce: usize,
    kl: [f64; 2],
    n_kl: usize,
}

impl Accum {
    fn new(d_in: usize, d_sae: usize) -> Self {
        Self {
            n: 0,
            n_tokens: 0,
            l0: 0.0,
            l1: 0.0,
            sq_err: 0.0,
            xx: 0.0,
            hh: 0.0,
            dot: 0.0,
            cos: 0.0,
            ratio: 0.0,
            norm_in: 0.0,
            norm_out: 0.0,
            sum_x: vec![0.0; d_in],
            fired: vec![0; d_sae],
            ce: [0.0; 3],
            n_ce: 0,
            kl: [0.0; 2],
            n_kl: 0,
        }
    }

    /// `x`, `xh` [n, d_in], `f` [n, d_sae] at counted tokens.
    fn add_reconstruction(&mut self, x: &Tensor, xh: &Tensor, f: &Tensor) -> Result<()> {
        let per_token = |t: Tensor| -> Result<Vec<f32>> { Ok(t.to_vec1::<f32>()?) };
        let xx = per_token(x.sqr()?.sum(1)?)?;
        let hh = per_token(xh.sqr()?.sum(1)?)?;
        let dot = per_token((x * xh)?.sum(1)?)?;
        let err = per_token((x - xh)?.sqr()?.sum(1)?)?;
        let active = f.gt(0f32)?.to_dtype(DType::F32)?;
        let l0 = per_token(active.sum(1)?)?;
        let l1 = per_token(f.sum(1)?)?;
        for i in 0..xx.len() {
            let (nx, nh) = ((xx[i] as f64).sqrt(), (hh[i] as f64).sqrt());
            self.xx += xx[i] as f64;
            self.hh += hh[i] as f64;
            self.dot += dot[i] as f64;
            self.sq_err += err[i] as f64;
            self.l0 += l0[i] as f64;
            self.l1 += l1[i] as f64;
            self.norm_in += nx;
            self.norm_out += nh;
            self.ratio += nh / if nx < 1e-4 { 1.0 } else { nx };
            if nx > 0.0 && nh > 0.0 {
                self.cos += dot[i] as f64 / (nx * nh);
            }
        }
        self.n += xx.len();
        for (s, v) in self.sum_x.iter_mut().zip(x.sum(0)?.to_vec1::<f32>()?) {
            *s += v as f64;
        }
        for (c, v) in self.fired.iter_mut().zip(active.sum(0)?.to_vec1::<f32>()?) {
            *c += v as u64;
        }
        Ok(())
    }

    fn finish(self, sae: &Sae, n_sequences: usize, cfg: &EvalConfig, seconds: f64) -> Result<SaeEval> {
        if self.n == 0 {
            bail!("no tokens to evaluate on: every token is padding, BOS or EOS");
        }
        let n = self.n as f64;
        let mean_sq_norm_of_mean: f64 = self.sum_x.iter().map(|s| (s / n) * (s / n)).sum();
        let total_variance = self.xx / n - mean_sq_norm_of_mean;
        let explained_variance = 1.0 - (self.sq_err / n) / total_variance;
        let ratio = |a: f64, b: f64| (b != 0.0 && (a / b).is_finite()).then(|| a / b);
        let n_dead = self.fired.iter().filter(|&&c| c == 0).count();
        let n_dense = self.fired.iter().filter(|&&c| c as f64 / n > cfg.dense_threshold).count();
        let d_sae = sae.d_sae();
        let downstream = (cfg.downstream && self.n_kl > 0).then(|| {
            let ce = self.ce.map(|c| c / self.n_ce.max(1) as f64);
            let kl = self.kl.map(|k| k / self.n_kl as f64);
            Downstream {
                ce_loss_clean: ce[0],
                ce_loss_sae: ce[1],
                ce_loss_zero: ce[2],
                ce_loss_recovered: if self.n_ce > 0 { ratio(ce[2] - ce[1], ce[2] - ce[0]) } else { None },
                delta_lm_loss: ce[1] - ce[0],
                kl_div_sae: kl[0],
                kl_div_zero: kl[1],
                kl_div_score: ratio(kl[1] - kl[0], kl[1]),
                n_loss_tokens: self.n_ce,
            }
        });
        Ok(SaeEval {
            sae: sae.source.display().to_string(),
            hook: sae.hook.to_string(),
            d_in: sae.d_in(),
            d_sae,
            n_sequences,
            n_tokens: self.n_tokens,
            n_counted_tokens: self.n,
            l0: self.l0 / n,
            l1: self.l1 / n,
            mse: self.sq_err / (n * sae.d_in() as f64),
            explained_variance,
            fvu: 1.0 - explained_variance,
            cossim: self.cos / n,
            l2_norm_in: self.norm_in / n,
            l2_norm_out: self.norm_out / n,
            l2_ratio: self.ratio / n,
            relative_reconstruction_bias: ratio(self.hh, self.dot),
            n_dead,
            dead_fraction: n_dead as f64 / d_sae as f64,
            n_dense,
            dense_fraction: n_dense as f64 / d_sae as f64,
            dense_threshold: cfg.dense_threshold,
            downstream,
            latent_frequency: self.fired.iter().map(|&c| (c as f64 / n) as f32).collect(),
            seconds,
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Text file → evaluation sequences.

/// Reads a UTF-8 text file and cuts it into `context`-token sequences by the corpus's one rule
/// (`corpus::text_sequences`: tokenized without BOS, BOS in front of every sequence where the
/// model uses one, the partial tail dropped). With `max_tokens`, only the first
/// ⌈max_tokens / context⌉ sequences are kept, and the text is tokenized only about as far as
/// they need. A text shorter than one sequence is evaluated whole, as one shorter sequence
/// (`corpus::sequences::short_text_sequence`).
pub fn text_file_sequences(
    model: &Model,
    path: &Path,
    context: usize,
    max_tokens: Option<usize>,
) -> Result<Vec<Vec<u32>>> {
    if context < 2 || context > model.cfg().context_length {
        bail!("--context {context}: must be between 2 and the model's context of {}", model.cfg().context_length);
    }
    if max_tokens == Some(0) {
        bail!("--tokens 0: nothing to evaluate");
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{}: cannot read as UTF-8 text", path.display()))?;
    // A token is rarely longer than 16 bytes: no need to tokenize far past what is asked for.
    let text = match max_tokens {
        Some(m) if text.len() > m.saturating_mul(16) => {
            let mut end = m * 16;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            &text[..end]
        }
        _ => text.as_str(),
    };
    let mut seqs =
        text_sequences(&model.tokenizer, text, context).with_context(|| format!("tokenizing {}", path.display()))?;
    if let Some(m) = max_tokens {
        seqs.truncate(m.div_ceil(context));
    }
    if seqs.is_empty() {
        // Shorter than one sequence: evaluated whole.
        let whole =
            short_text_sequence(&model.tokenizer, text).with_context(|| format!("tokenizing {}", path.display()))?;
        if whole.len() < 2 {
            bail!("{}: the text holds fewer than 2 tokens: nothing to evaluate", path.display());
        }
        seqs.push(whole);
    }
    Ok(seqs)
}
