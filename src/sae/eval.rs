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
    /// Run the ablation baselines (zero, and mean if `mean_ablation`) on the first this many
    /// sequences only (None: all). CE loss recovered and the KL score are ratios taken on that
    /// subset; CE with the SAE, the delta LM loss and KL(clean ‖ SAE) use every sequence.
    pub ablation_sequences: Option<usize>,
    /// Run the spliced passes (CE loss, KL, ablations) on the first this many sequences only
    /// (None: all); the reconstruction and sparsity metrics use every sequence. The unembedding
    /// of Gemma's 262k vocabulary makes a spliced pass several times dearer than the forward pass
    /// to the hook, so long evaluations take their losses on a subset.
    pub downstream_sequences: Option<usize>,
    /// Also replace the hook's activation by its mean over the ablated subset's counted tokens.
    pub mean_ablation: bool,
    /// Bootstrap resamples of sequences for the delta LM loss's 95% interval (0: none).
    pub bootstrap: usize,
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            batch_size: 8,
            logit_rows: 64,
            dense_threshold: DEFAULT_DENSE_THRESHOLD,
            downstream: true,
            ablation_sequences: None,
            downstream_sequences: None,
            mean_ablation: false,
            bootstrap: 0,
            seed: 0,
        }
    }
}

/// What splicing the SAE into the forward pass does to the model's predictions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Downstream {
    /// Mean next-token cross-entropy (nats) of the unedited model.
    pub ce_loss_clean: f64,
    /// ... with the SAE's reconstruction in place of the hook's activation.
    pub ce_loss_sae: f64,
    /// ... with the hook's activation zeroed (on the ablated subset).
    pub ce_loss_zero: f64,
    /// (CE_zero − CE_sae) / (CE_zero − CE_clean) on the ablated subset: 1 is perfect, 0 as bad
    /// as ablation.
    pub ce_loss_recovered: Option<f64>,
    /// CE_sae − CE_clean.
    pub delta_lm_loss: f64,
    /// 95% interval of the delta LM loss from resampling sequences (with `bootstrap` > 0).
    #[serde(default)]
    pub delta_lm_loss_ci95: Option<[f64; 2]>,
    /// Mean KL(p_clean ‖ p_sae) per token (nats).
    pub kl_div_sae: f64,
    /// Mean KL(p_clean ‖ p_zero) per token (on the ablated subset).
    pub kl_div_zero: f64,
    /// (KL_zero − KL_sae) / KL_zero on the ablated subset.
    pub kl_div_score: Option<f64>,
    /// CE loss with the hook's activation replaced by its mean (with `mean_ablation`).
    #[serde(default)]
    pub ce_loss_mean_ablation: Option<f64>,
    /// (CE_mean − CE_sae) / (CE_mean − CE_clean) on the ablated subset.
    #[serde(default)]
    pub ce_loss_recovered_mean_ablation: Option<f64>,
    #[serde(default)]
    pub kl_div_mean_ablation: Option<f64>,
    /// Tokens whose next-token loss was counted.
    pub n_loss_tokens: usize,
    /// ... of them in the ablated subset.
    #[serde(default)]
    pub n_ablation_loss_tokens: usize,
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
    Ok(evaluate_many(model, &[sae], seqs, cfg)?.pop().expect("one SAE in, one evaluation out"))
}

/// Evaluates several SAEs (any hooks) on the same sequences in one pass over them: one clean
/// forward pass and one clean unembedding per batch serve every SAE, and the zero / mean
/// ablations run once per distinct hook (on the first `cfg.ablation_sequences` sequences). The
/// results are those `evaluate` gives for each SAE alone with the same configuration.
pub fn evaluate_many(model: &Model, saes: &[&Sae], seqs: &[Vec<u32>], cfg: &EvalConfig) -> Result<Vec<SaeEval>> {
    let start = Instant::now();
    for sae in saes {
        match sae.check_model(model) {
            Err(e) if saes.len() > 1 => return Err(e.context(format!("SAE {}", sae.source.display()))),
            r => r?,
        }
    }
    if saes.is_empty() {
        bail!("no SAE to evaluate");
    }
    if cfg.batch_size == 0 || cfg.logit_rows == 0 {
        bail!("batch_size and logit_rows must be at least 1");
    }
    if seqs.is_empty() {
        bail!("no sequences to evaluate on");
    }
    let special = special_ids(model);
    let mut hooks: Vec<HookPoint> = Vec::new();
    for sae in saes {
        if !hooks.contains(&sae.hook) {
            hooks.push(sae.hook);
        }
    }
    let n_down = if cfg.downstream { cfg.downstream_sequences.unwrap_or(seqs.len()).min(seqs.len()) } else { 0 };
    let n_abl = cfg.ablation_sequences.unwrap_or(seqs.len()).min(n_down);
    let means = if cfg.downstream && cfg.mean_ablation {
        hook_means(model, &hooks, &seqs[..n_abl], &special, cfg.batch_size)?
    } else {
        Vec::new()
    };
    let mut run = Run {
        model,
        saes,
        hooks: &hooks,
        means: &means,
        special: &special,
        cfg,
        recon: saes.iter().map(|s| Accum::new(s.d_in(), s.d_sae())).collect(),
        loss: vec![LossAccum::default(); saes.len()],
        ablation: vec![AblationAccum::default(); hooks.len()],
    };
    // Batches never straddle the end of the ablated or the downstream subset.
    let ranges = [(0, n_abl, true, true), (n_abl, n_down, false, true), (n_down, seqs.len(), false, false)];
    for (lo, hi, ablate, downstream) in ranges {
        for first in (lo..hi).step_by(cfg.batch_size) {
            let last = (first + cfg.batch_size).min(hi);
            let batch = model
                .batch_from_ids(&seqs[first..last])
                .with_context(|| format!("evaluation sequences {first}..{last}"))?;
            run.batch(&batch, first, ablate, downstream)
                .with_context(|| format!("evaluating on sequences {first}..{last}"))?;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let Run { recon, loss, ablation, .. } = run;
    recon
        .into_iter()
        .zip(loss)
        .zip(saes)
        .map(|((acc, loss), sae)| {
            let h = hooks.iter().position(|&h| h == sae.hook).expect("every SAE's hook is listed");
            let downstream = cfg.downstream.then(|| loss.finish(&ablation[h], cfg)).flatten();
            acc.finish(sae, seqs.len(), cfg, downstream, seconds)
        })
        .collect()
}

/// The mean activation of each hook over the counted tokens of `seqs`: what mean ablation puts in
/// place of the activation.
fn hook_means(
    model: &Model,
    hooks: &[HookPoint],
    seqs: &[Vec<u32>],
    special: &[u32],
    batch_size: usize,
) -> Result<Vec<Tensor>> {
    let mut sums: Vec<Option<Tensor>> = vec![None; hooks.len()];
    let mut n = 0usize;
    for rows in seqs.chunks(batch_size) {
        let batch = model.batch_from_ids(rows)?;
        let keep = counted_mask(&batch, special);
        let keep_idx = counted_rows(&keep);
        if keep_idx.is_empty() {
            continue;
        }
        n += keep_idx.len();
        let out = model.run(&batch, &HookSpec::new().capture(hooks.iter().copied()))?;
        for (h, sum) in hooks.iter().zip(sums.iter_mut()) {
            let x = out.cache.get(*h)?;
            let flat = hook_rows(x, x.elem_count() / (batch.rows() * batch.seq_len))?;
            let idx = Tensor::from_slice(&keep_idx, keep_idx.len(), flat.device())?;
            let s = flat.index_select(&idx, 0)?.sum(0)?;
            *sum = Some(match sum.take() {
                Some(t) => (t + s)?,
                None => s,
            });
        }
    }
    if n == 0 {
        bail!("no tokens to take the mean activation over: every token is padding, BOS or EOS");
    }
    sums.into_iter().map(|s| Ok((s.expect("n > 0") / n as f64)?)).collect()
}

/// The state of one `evaluate_many` pass.
struct Run<'a> {
    model: &'a Model,
    saes: &'a [&'a Sae],
    hooks: &'a [HookPoint],
    /// Mean activation per hook (empty without mean ablation).
    means: &'a [Tensor],
    special: &'a [u32],
    cfg: &'a EvalConfig,
    recon: Vec<Accum>,
    loss: Vec<LossAccum>,
    ablation: Vec<AblationAccum>,
}

impl Run<'_> {
    /// One batch; `first` is the index of its first sequence; `downstream`: it runs the spliced
    /// passes; `ablate`: also the ablations.
    fn batch(&mut self, batch: &Batch, first: usize, ablate: bool, downstream: bool) -> Result<()> {
        let (model, cfg) = (self.model, self.cfg);
        let (b, s) = (batch.rows(), batch.seq_len);
        let keep = counted_mask(batch, self.special);
        let n_tokens = (0..b).map(|r| batch.len_of(r)).sum::<usize>();
        self.recon.iter_mut().for_each(|a| a.n_tokens += n_tokens);
        let keep_idx = counted_rows(&keep);
        if keep_idx.is_empty() {
            return Ok(());
        }
        let mut capture = self.hooks.to_vec();
        if downstream {
            capture.push(HookPoint::LnFinal);
        }
        let clean = model.run(batch, &HookSpec::new().capture(capture))?;
        let dev = clean.cache.get(self.hooks[0])?.device().clone();
        let idx = Tensor::from_slice(&keep_idx, keep_idx.len(), &dev)?;
        // Splice at the counted tokens only; excluded ones keep their clean activation.
        let mask_col = Tensor::from_vec(keep.iter().map(|&k| k as u8).collect::<Vec<_>>(), (b * s, 1), &dev)?;
        let d = model.cfg().d_model;
        let final_rows = |t: &Tensor| -> Result<Tensor> { Ok(t.reshape((b * s, d))?) };
        let edited = |hook: HookPoint, v: Tensor| -> Result<Tensor> {
            let spec =
                HookSpec::new().capture([HookPoint::LnFinal]).edit(hook, Positions::All, Intervention::Replace(v));
            final_rows(model.run(batch, &spec)?.cache.get(HookPoint::LnFinal)?)
        };
        let mut y_sae = Vec::with_capacity(self.saes.len());
        for (sae, acc) in self.saes.iter().zip(self.recon.iter_mut()) {
            let x = clean.cache.get(sae.hook)?;
            let flat = hook_rows(x, sae.d_in())?;
            let f_all = sae.encode(&flat)?;
            let xh_all = sae.decode(&f_all)?;
            acc.add_reconstruction(
                &flat.index_select(&idx, 0)?,
                &xh_all.index_select(&idx, 0)?,
                &f_all.index_select(&idx, 0)?,
            )?;
            if downstream {
                let mask = mask_col.broadcast_as(flat.shape())?;
                y_sae.push(edited(sae.hook, mask.where_cond(&xh_all, &flat)?.reshape(x.shape())?)?);
            }
        }
        if !downstream {
            return Ok(());
        }
        // Ablations per hook: zero, and the mean activation where asked for.
        let mut y_abl: Vec<Vec<Tensor>> = Vec::new();
        if ablate {
            for (h, hook) in self.hooks.iter().enumerate() {
                let x = clean.cache.get(*hook)?;
                let flat = hook_rows(x, x.elem_count() / (b * s))?;
                let mask = mask_col.broadcast_as(flat.shape())?;
                let mut ys = vec![edited(*hook, mask.where_cond(&flat.zeros_like()?, &flat)?.reshape(x.shape())?)?];
                if let Some(mean) = self.means.get(h) {
                    let m = mean.unsqueeze(0)?.broadcast_as(flat.shape())?;
                    ys.push(edited(*hook, mask.where_cond(&m, &flat)?.reshape(x.shape())?)?);
                }
                y_abl.push(ys);
            }
        }
        let y_clean = final_rows(clean.cache.get(HookPoint::LnFinal)?)?;
        drop(clean);

        // Losses, a few positions at a time so that logits stay small: the clean logits of a
        // chunk are computed once and compared with each edited run's in turn.
        for chunk in keep_idx.chunks(cfg.logit_rows) {
            let n = chunk.len();
            let ix = Tensor::from_slice(chunk, n, &dev)?;
            let targets: Vec<Option<u32>> = chunk
                .iter()
                .map(|&i| {
                    let (r, t) = (i as usize / s, i as usize % s);
                    (t + 1 < s).then(|| batch.ids[r][t + 1])
                })
                .collect();
            let seq_of: Vec<usize> = chunk.iter().map(|&i| first + i as usize / s).collect();
            let logits = |y: &Tensor| -> Result<Vec<f32>> {
                Ok(model.transformer.unembed(&y.index_select(&ix, 0)?)?.flatten_all()?.to_vec1::<f32>()?)
            };
            let clean = CleanRows::new(logits(&y_clean)?, n, &targets);
            for (y, acc) in y_sae.iter().zip(self.loss.iter_mut()) {
                let rows = clean.compare(&logits(y)?, &targets);
                acc.add(&clean, &rows, &seq_of, ablate);
            }
            for (ys, acc) in y_abl.iter().zip(self.ablation.iter_mut()) {
                for (k, y) in ys.iter().enumerate() {
                    let rows = clean.compare(&logits(y)?, &targets);
                    acc.add(k, &rows);
                }
            }
        }
        Ok(())
    }
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

/// The rows of a flattened batch that count (`counted_mask`), as indices for `index_select`.
fn counted_rows(keep: &[bool]) -> Vec<u32> {
    (0..keep.len() as u32).filter(|&i| keep[i as usize]).collect()
}

/// The hook's activations of a batch as rows [b·s, d_in] (hook_z flattened over heads, as
/// SAELens does for hook_z SAEs).
pub(crate) fn hook_rows(x: &Tensor, d_in: usize) -> Result<Tensor> {
    let (b, s) = (x.dim(0)?, x.dim(1)?);
    Ok(x.reshape((b * s, d_in))?)
}

/// The clean logits of a chunk of positions, with what every comparison needs: each row's
/// log-sum-exp, its probabilities and the clean cross-entropy of the next token. Losses are in
/// f64 and never materialise log-probabilities: with lse the log-sum-exp, CE = lse − z[target]
/// and KL(p_c ‖ p_e) = Σ p_c (z_c − z_e) − lse_c + lse_e.
struct CleanRows {
    logits: Vec<f32>,
    probs: Vec<f32>,
    lse: Vec<f64>,
    ce: Vec<Option<f64>>,
    vocab: usize,
}

/// One edited run's losses at one position.
struct RowLoss {
    /// Cross-entropy of the next token, when there is one.
    ce: Option<f64>,
    /// KL(clean ‖ edited).
    kl: f64,
}

impl CleanRows {
    fn new(logits: Vec<f32>, n: usize, targets: &[Option<u32>]) -> Self {
        let vocab = logits.len() / n;
        let lse: Vec<f64> = logits.par_chunks(vocab).map(log_sum_exp).collect();
        let mut probs = vec![0f32; logits.len()];
        probs.par_chunks_mut(vocab).zip(logits.par_chunks(vocab)).zip(&lse).for_each(|((p, z), &l)| {
            p.iter_mut().zip(z).for_each(|(p, &z)| *p = (z - l as f32).exp());
        });
        let ce = targets
            .iter()
            .enumerate()
            .map(|(j, t)| t.map(|t| lse[j] - logits[j * vocab + t as usize] as f64))
            .collect();
        Self { logits, probs, lse, ce, vocab }
    }

    fn compare(&self, edited: &[f32], targets: &[Option<u32>]) -> Vec<RowLoss> {
        let v = self.vocab;
        (0..self.lse.len())
            .into_par_iter()
            .map(|j| {
                let (c, e, p) =
                    (&self.logits[j * v..(j + 1) * v], &edited[j * v..(j + 1) * v], &self.probs[j * v..(j + 1) * v]);
                let lse_e = log_sum_exp(e);
                let d: f64 = c.iter().zip(e).zip(p).map(|((&c, &e), &p)| p as f64 * (c - e) as f64).sum();
                RowLoss { ce: targets[j].map(|t| lse_e - e[t as usize] as f64), kl: d - self.lse[j] + lse_e }
            })
            .collect()
    }
}

fn log_sum_exp(z: &[f32]) -> f64 {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m as f64 + z.iter().map(|&x| (x - m).exp() as f64).sum::<f64>().ln()
}

/// An SAE's loss sums: over every sequence, and over the ablated subset (where the ratios
/// against the ablations are taken), with per-sequence sums of CE_sae − CE_clean for the
/// bootstrap interval of the delta LM loss.
#[derive(Clone, Default)]
struct LossAccum {
    /// CE clean, CE with the SAE; tokens with a next token; KL sum; positions.
    ce: [f64; 2],
    n_ce: usize,
    kl: f64,
    n_kl: usize,
    /// The same over the ablated subset.
    sub_ce: [f64; 2],
    sub_n_ce: usize,
    sub_kl: f64,
    /// Sequence index → (Σ CE_sae − CE_clean, tokens).
    per_seq: std::collections::BTreeMap<usize, (f64, usize)>,
}

impl LossAccum {
    fn add(&mut self, clean: &CleanRows, rows: &[RowLoss], seq_of: &[usize], ablated: bool) {
        for ((r, c), &q) in rows.iter().zip(&clean.ce).zip(seq_of) {
            if let (Some(c), Some(e)) = (c, r.ce) {
                self.ce[0] += c;
                self.ce[1] += e;
                self.n_ce += 1;
                let s = self.per_seq.entry(q).or_default();
                s.0 += e - c;
                s.1 += 1;
                if ablated {
                    self.sub_ce[0] += c;
                    self.sub_ce[1] += e;
                    self.sub_n_ce += 1;
                }
            }
            self.kl += r.kl;
            self.n_kl += 1;
            if ablated {
                self.sub_kl += r.kl;
            }
        }
    }

    fn finish(&self, abl: &AblationAccum, cfg: &EvalConfig) -> Option<Downstream> {
        if self.n_kl == 0 {
            return None;
        }
        let ratio = |a: f64, b: f64| (b != 0.0 && (a / b).is_finite()).then(|| a / b);
        let mean = |s: f64, n: usize| if n > 0 { s / n as f64 } else { f64::NAN };
        let (ce_clean, ce_sae) = (mean(self.ce[0], self.n_ce), mean(self.ce[1], self.n_ce));
        // Ratios against an ablation use the subset it ran on, for all three terms.
        let (sub_clean, sub_sae) = (mean(self.sub_ce[0], self.sub_n_ce), mean(self.sub_ce[1], self.sub_n_ce));
        let sub_kl = mean(self.sub_kl, abl.n_kl);
        let recovered =
            |ce_abl: f64| if self.sub_n_ce > 0 { ratio(ce_abl - sub_sae, ce_abl - sub_clean) } else { None };
        let ce_zero = mean(abl.ce[0], abl.n_ce);
        let kl_zero = mean(abl.kl[0], abl.n_kl);
        let (ce_mean, kl_mean) = if abl.has_mean {
            (Some(mean(abl.ce[1], abl.n_ce)), Some(mean(abl.kl[1], abl.n_kl)))
        } else {
            (None, None)
        };
        let seqs: Vec<(f64, usize)> = self.per_seq.values().copied().collect();
        let delta_ci = (cfg.bootstrap > 0 && seqs.len() > 1)
            .then(|| {
                crate::stats::bootstrap(&seqs, cfg.bootstrap, cfg.seed, |v| {
                    let (s, n) = v.iter().fold((0.0, 0usize), |(s, n), x| (s + x.0, n + x.1));
                    s / n.max(1) as f64
                })
            })
            .flatten()
            .map(|e| [e.lo, e.hi]);
        Some(Downstream {
            ce_loss_clean: ce_clean,
            ce_loss_sae: ce_sae,
            ce_loss_zero: ce_zero,
            ce_loss_recovered: recovered(ce_zero),
            delta_lm_loss: ce_sae - ce_clean,
            delta_lm_loss_ci95: delta_ci,
            kl_div_sae: mean(self.kl, self.n_kl),
            kl_div_zero: kl_zero,
            kl_div_score: ratio(kl_zero - sub_kl, kl_zero),
            ce_loss_mean_ablation: ce_mean,
            ce_loss_recovered_mean_ablation: ce_mean.and_then(recovered),
            kl_div_mean_ablation: kl_mean,
            n_loss_tokens: self.n_ce,
            n_ablation_loss_tokens: abl.n_ce,
        })
    }
}

/// A hook's ablation sums over the ablated subset: [zero, mean].
#[derive(Clone, Default)]
struct AblationAccum {
    ce: [f64; 2],
    n_ce: usize,
    kl: [f64; 2],
    n_kl: usize,
    has_mean: bool,
}

impl AblationAccum {
    /// `k`: 0 zero ablation, 1 mean ablation (added after the zero one of the same rows).
    fn add(&mut self, k: usize, rows: &[RowLoss]) {
        for r in rows {
            if let Some(c) = r.ce {
                self.ce[k] += c;
                if k == 0 {
                    self.n_ce += 1;
                }
            }
            self.kl[k] += r.kl;
            if k == 0 {
                self.n_kl += 1;
            }
        }
        if k == 1 {
            self.has_mean = true;
        }
    }
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

    fn finish(
        self,
        sae: &Sae,
        n_sequences: usize,
        cfg: &EvalConfig,
        downstream: Option<Downstream>,
        seconds: f64,
    ) -> Result<SaeEval> {
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

/// One Markdown table row per evaluation: the suite's summary (what data/saes/ commits).
pub fn markdown_table(results: &[SaeEval]) -> String {
    let mut out = String::from(
        "| SAE | hook | width | tokens | L0 | FVU | cosine | dead | dense | loss tokens (ablations) | CE clean | CE with SAE \
         | Δ LM loss [95% CI] | CE zero | recovered (zero) | recovered (mean) | KL score |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n",
    );
    let opt = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into());
    for r in results {
        let ds = r.downstream.as_ref();
        // The folder and its parent: `saes/blocks.5...` and `saes-wide/blocks.5...` differ.
        let parts: Vec<_> = Path::new(&r.sae).components().rev().take(2).collect();
        let name = parts.iter().rev().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        let loss_tokens =
            ds.map(|d| format!("{} ({})", d.n_loss_tokens, d.n_ablation_loss_tokens)).unwrap_or_else(|| "–".into());
        let pct = |x: f64| format!("{:.2}%", 100.0 * x);
        let delta = ds
            .map(|d| match d.delta_lm_loss_ci95 {
                Some([lo, hi]) => format!("{:.3} [{lo:.3}, {hi:.3}]", d.delta_lm_loss),
                None => format!("{:.3}", d.delta_lm_loss),
            })
            .unwrap_or_else(|| "–".into());
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {:.1} | {:.3} | {:.3} | {} | {} | {loss_tokens} | {} | {} | {delta} | {} | {} | {} | {} |\n",
            r.hook,
            r.d_sae,
            r.n_counted_tokens,
            r.l0,
            r.fvu,
            r.cossim,
            pct(r.dead_fraction),
            pct(r.dense_fraction),
            opt(ds.map(|d| d.ce_loss_clean)),
            opt(ds.map(|d| d.ce_loss_sae)),
            opt(ds.map(|d| d.ce_loss_zero)),
            opt(ds.and_then(|d| d.ce_loss_recovered)),
            opt(ds.and_then(|d| d.ce_loss_recovered_mean_ablation)),
            opt(ds.and_then(|d| d.kl_div_score)),
        ));
    }
    out
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
