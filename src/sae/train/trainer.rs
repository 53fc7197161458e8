//! One SAE's training step, with hand-written gradients in float32.
//!
//! The step is: `pre = (x − b_dec)·W_enc` (one dense matrix product, the only O(n·d·d_sae)
//! work), selection of the active latents (`select`), then everything else on the sparse set:
//! the reconstruction, the AuxK reconstruction of dead latents, and a single pass over latents
//! that computes each latent's decoder / encoder / bias / threshold gradient from the rows it
//! is active in and immediately applies Adam to that latent's parameters (so no dense gradient
//! matrix is ever written). A ReLU or JumpReLU SAE whose latents are not yet sparse takes the
//! dense route instead (four more matrix products), chosen per step by `Backward`.
//!
//! Loss (SAELens conventions): `mse = mean_rows ‖x̂ − x‖²`, plus
//! * Standard: `λ · mean_rows Σ_j f_j` (decoder rows have unit norm, so SAELens's ‖W_dec,j‖
//!   weight is 1);
//! * JumpReLU: `λ · mean_rows L0`, with SAELens's straight-through threshold gradients;
//! * TopK / BatchTopK: AuxK, `α · min(dead / k_aux, 1) · mean_rows ‖ê − (x − x̂)‖²` where ê
//!   decodes the k_aux largest pre-activations of dead latents without bias and the residual is
//!   treated as a constant (Gao et al. 2024, as SAELens).
//!
//! `KNOWLENS_PROFILE_SAE=1` prints the time of each phase of a step to stderr.
//!
//! Before Adam, the component of each decoder-row gradient along the row is removed, and after
//! it the row is scaled back to unit norm. Every reduction runs in a fixed order, so a step is
//! a deterministic function of the state and the batch whatever the thread scheduling.

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::adam::{AdamStep, Moments};
use super::config::{ArchConfig, Backward, TrainConfig, DENSE_ABOVE};
use super::kernels::{axpy, dot, dot_axpy, matmul, prefetch, Mat};
use super::params::{b_dec_start, dim_scales, norm_scale, normalize, Params};
use super::select::{above_rows, batch_topk, count_above, near_rows, topk_among, topk_rows, Csr};

/// A latent firing on more than this fraction of a batch's rows counts as dense in `StepStats`
/// (the evaluation's default threshold).
pub const DENSE_LATENT_ABOVE: f64 = 0.1;

/// Latents per parallel task in the latent pass.
const CHUNK: usize = 32;

const MAIN: u8 = 0;
const AUX: u8 = 1;
const NEAR: u8 = 2;

/// Adam moments of every parameter array (`threshold` empty unless JumpReLU).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamMoments {
    pub w_enc_t: Moments,
    pub w_dec: Moments,
    pub b_enc: Moments,
    pub b_dec: Moments,
    pub threshold: Moments,
}

/// Gradients of the loss (before the decoder projection), for checks.
#[derive(Debug, Clone, Default)]
pub struct Grads {
    pub w_enc_t: Vec<f32>,
    pub w_dec: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub b_dec: Vec<f32>,
    pub threshold: Vec<f32>,
}

/// What one step measured (losses in the units of the scaled inputs).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StepStats {
    pub loss: f64,
    pub mse: f64,
    pub aux: f64,
    pub sparsity: f64,
    /// Mean number of active latents per row.
    pub l0: f64,
    /// Fraction of variance unexplained: Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over the batch.
    pub fvu: f64,
    /// Latents that have not fired for `dead_tokens` tokens, after this step.
    pub dead_fraction: f64,
    /// Latents that fired on more than `DENSE_LATENT_ABOVE` of this batch's rows.
    pub dense_fraction: f64,
    pub lr: f32,
    /// Whether the dense route was taken.
    pub dense: bool,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub params: Params,
    pub moments: ParamMoments,
    /// Steps taken.
    pub step: u64,
    /// Per latent: tokens since it last fired.
    pub since_fired: Vec<u64>,
    /// BatchTopK's running threshold (float64, as SAELens).
    pub topk_threshold: f64,
    /// Input scale (1 unless `normalize`), set from the first batch.
    pub scale: f32,
    /// Per-dimension input scales (`per_dim_scale`; empty otherwise), set from the first batch.
    pub dim_scale: Vec<f32>,
    /// Whether the first batch has set `scale` and `b_dec`.
    pub initialized: bool,
    /// Work buffers; see `Scratch`.
    pub scratch: Scratch,
}

/// The [batch, width] work buffers of a step (pre-activations, and dL/dpre on the dense route):
/// the largest allocations of training. Trainers that step one after another (one per hook)
/// can share one set by swapping it in and out (`std::mem::swap(&mut t.scratch, &mut shared)`).
#[derive(Debug, Default)]
pub struct Scratch {
    pre: Vec<f32>,
    dense_buf: Vec<f32>,
}

/// Column-sparse copy of the active entries: latent j's entries are
/// `start[j]..start[j+1]`, main entries first, then AuxK, then near-threshold ones, each in
/// row order.
struct Csc {
    start: Vec<usize>,
    row: Vec<u32>,
    kind: Vec<u8>,
    val: Vec<f32>,
}

fn build_csc(m: usize, parts: &[(&Csr, u8)]) -> Csc {
    let mut start = vec![0usize; m + 1];
    for (c, _) in parts {
        for &j in &c.idx {
            start[j as usize + 1] += 1;
        }
    }
    for j in 0..m {
        start[j + 1] += start[j];
    }
    let total = start[m];
    let mut csc = Csc { row: vec![0; total], kind: vec![0; total], val: vec![0.0; total], start };
    let mut fill = csc.start[..m].to_vec();
    for (c, kind) in parts {
        for r in 0..c.offsets.len() - 1 {
            for e in c.offsets[r]..c.offsets[r + 1] {
                let j = c.idx[e] as usize;
                let at = fill[j];
                csc.row[at] = r as u32;
                csc.kind[at] = *kind;
                csc.val[at] = c.val[e];
                fill[j] += 1;
            }
        }
    }
    csc
}

/// Gradients of the latent-indexed parameters when the dense route computed them.
struct DenseGrads {
    w_dec: Vec<f32>,
    w_enc_t: Vec<f32>,
    b_enc: Vec<f32>,
    threshold: Vec<f32>,
}

/// Everything the latent pass needs from the forward and output-side backward.
struct Pass {
    n: usize,
    xc: Vec<f32>,
    /// dL/dx̂ [n, d]
    g: Vec<f32>,
    /// dL/dê of AuxK [n, d] (empty without dead latents)
    gaux: Vec<f32>,
    csc: Option<Csc>,
    dense: Option<DenseGrads>,
    /// Added to dL/dpre of every active entry (L1: λ/n).
    l1: f32,
    /// JumpReLU: (bandwidth, the L0 term's threshold gradient per near entry).
    jump: Option<(f32, f32)>,
    /// Σ_r g[r]: the decoder side of the b_dec gradient.
    g_sum: Vec<f32>,
    /// Which latents fired (f > 0) in this batch.
    fired: Vec<bool>,
    stats: StepStats,
    /// BatchTopK: the smallest kept activation.
    min_kept: Option<f32>,
}

/// One latent's gradients.
struct LatentGrad {
    gdec: Vec<f32>,
    genc: Vec<f32>,
    gbenc: f32,
    gthr: f32,
}

impl Trainer {
    pub fn new(cfg: TrainConfig) -> Result<Self> {
        if cfg.d_in == 0 || cfg.width == 0 {
            bail!("d_in and width must be positive");
        }
        match cfg.arch {
            ArchConfig::TopK { k } | ArchConfig::BatchTopK { k, .. } if k == 0 || k > cfg.width => {
                bail!("k must be between 1 and the width ({}), got {k}", cfg.width)
            }
            _ => {}
        }
        let params = Params::init(&cfg);
        Ok(Self::from_params(cfg, params, false))
    }

    /// A trainer starting from given parameters. `initialized` says whether the first batch
    /// should still set the input scale and b_dec.
    pub fn from_params(cfg: TrainConfig, params: Params, initialized: bool) -> Self {
        let (d, m) = (cfg.d_in, cfg.width);
        let moments = ParamMoments {
            w_enc_t: Moments::zeros(d * m),
            w_dec: Moments::zeros(d * m),
            b_enc: Moments::zeros(m),
            b_dec: Moments::zeros(d),
            threshold: Moments::zeros(params.threshold.len()),
        };
        Self {
            cfg,
            params,
            moments,
            step: 0,
            since_fired: vec![0; m],
            topk_threshold: 0.0,
            scale: 1.0,
            dim_scale: Vec::new(),
            initialized,
            scratch: Scratch::default(),
        }
    }

    /// One optimiser step on a batch `x` [n, d_in] of raw activations.
    pub fn step(&mut self, x: &[f32]) -> Result<StepStats> {
        if !self.initialized {
            self.initialize(x);
        }
        let xs = self.scaled(x)?;
        let pass = self.forward_backward(&xs)?;
        let tp = std::time::Instant::now();
        self.apply_update(&pass);
        prof("update", tp);
        let n = pass.n as u64;
        for (s, &f) in self.since_fired.iter_mut().zip(&pass.fired) {
            *s = if f { 0 } else { s.saturating_add(n) };
        }
        if let (ArchConfig::BatchTopK { threshold_lr, .. }, Some(min)) = (&self.cfg.arch, pass.min_kept) {
            self.topk_threshold = (1.0 - threshold_lr) * self.topk_threshold + threshold_lr * min as f64;
        }
        self.step += 1;
        let mut stats = pass.stats;
        stats.dead_fraction = self.dead_fraction();
        Ok(stats)
    }

    /// The gradients at the current parameters for a batch (no update, nothing else changes).
    pub fn gradients(&mut self, x: &[f32]) -> Result<(Grads, StepStats)> {
        let xs = self.scaled(x)?;
        let pass = self.forward_backward(&xs)?;
        let (d, m) = (self.cfg.d_in, self.cfg.width);
        let mut gr = Grads {
            w_enc_t: vec![0.0; m * d],
            w_dec: vec![0.0; m * d],
            b_enc: vec![0.0; m],
            b_dec: vec![0.0; d],
            threshold: vec![0.0; self.params.threshold.len()],
        };
        let p = &self.params;
        let mut lg = LatentGrad { gdec: vec![0.0; d], genc: vec![0.0; d], gbenc: 0.0, gthr: 0.0 };
        let mut enc_side = vec![0f32; d];
        for j in 0..m {
            let theta = p.threshold.get(j).map(|t| t.max(0.0));
            latent_grad(&pass, d, j, &p.w_dec[j * d..(j + 1) * d], theta, &mut lg);
            gr.w_dec[j * d..(j + 1) * d].copy_from_slice(&lg.gdec);
            gr.w_enc_t[j * d..(j + 1) * d].copy_from_slice(&lg.genc);
            gr.b_enc[j] = lg.gbenc;
            if !gr.threshold.is_empty() {
                gr.threshold[j] = if p.threshold[j] > 0.0 { lg.gthr } else { 0.0 };
            }
            axpy(&mut enc_side, lg.gbenc, &p.w_enc_t[j * d..(j + 1) * d]);
        }
        gr.b_dec = pass.g_sum.iter().zip(&enc_side).map(|(a, b)| a - b).collect();
        Ok((gr, pass.stats))
    }

    /// BatchTopK's threshold for the saved JumpReLU SAE: the running average of the smallest
    /// kept activation, divided by 1 − (1 − rate)^steps because it starts at 0 (as Adam's
    /// moments are bias-corrected). Without the correction a run of 50 steps at rate 0.01 would
    /// save 39% of the threshold (and far more than k latents per token would fire).
    pub fn saved_topk_threshold(&self) -> f64 {
        match self.cfg.arch {
            ArchConfig::BatchTopK { threshold_lr, .. } if self.step > 0 => {
                let seen = 1.0 - (1.0 - threshold_lr).powf(self.step as f64);
                if seen > 0.0 {
                    self.topk_threshold / seen
                } else {
                    self.topk_threshold
                }
            }
            _ => self.topk_threshold,
        }
    }

    pub fn dead_fraction(&self) -> f64 {
        let dead = self.since_fired.iter().filter(|&&s| s >= self.cfg.dead_tokens).count();
        dead as f64 / self.cfg.width as f64
    }

    /// Sets the input scale and b_dec from the first batch.
    fn initialize(&mut self, x: &[f32]) {
        let d = self.cfg.d_in;
        if self.cfg.per_dim_scale {
            self.dim_scale = dim_scales(x, d);
            self.scale = 1.0;
        } else {
            self.scale = if self.cfg.normalize { norm_scale(x, d) } else { 1.0 };
        }
        self.initialized = true;
        let xs = self.scaled(x).unwrap_or_else(|_| x.to_vec());
        self.params.b_dec = b_dec_start(&xs, d, self.cfg.b_dec_init);
    }

    fn scaled(&self, x: &[f32]) -> Result<Vec<f32>> {
        let d = self.cfg.d_in;
        if x.is_empty() || !x.len().is_multiple_of(d) {
            bail!("a batch of {} values is not a whole number of rows of width {d}", x.len());
        }
        if !self.dim_scale.is_empty() {
            let s = &self.dim_scale;
            let mut out = x.to_vec();
            out.par_chunks_mut(d).for_each(|r| r.iter_mut().zip(s).for_each(|(v, f)| *v *= f));
            return Ok(out);
        }
        Ok(if self.scale == 1.0 { x.to_vec() } else { x.par_iter().map(|v| v * self.scale).collect() })
    }

    fn forward_backward(&mut self, xs: &[f32]) -> Result<Pass> {
        let (d, m) = (self.cfg.d_in, self.cfg.width);
        let n = xs.len() / d;
        let p = &self.params;
        let mut xc = xs.to_vec();
        xc.par_chunks_mut(d).for_each(|r| r.iter_mut().zip(&p.b_dec).for_each(|(v, b)| *v -= b));
        let tp = std::time::Instant::now();
        self.scratch.pre.resize(n * m, 0.0);
        matmul(&mut self.scratch.pre, Mat::rows(&xc, n, d), Mat::transposed(&p.w_enc_t, d, m));
        prof("gemm", tp);
        let pre = &self.scratch.pre;
        let s = self.step;
        let theta: Vec<f32> = p.threshold.iter().map(|t| t.max(0.0)).collect();

        let (l1, jump) = match self.cfg.arch {
            ArchConfig::Standard { l1_coefficient, l1_warm_up_steps } => {
                (TrainConfig::ramp(l1_coefficient, l1_warm_up_steps, s) / n as f32, None)
            }
            ArchConfig::JumpRelu { l0_coefficient, l0_warm_up_steps, bandwidth, .. } => {
                let c = TrainConfig::ramp(l0_coefficient, l0_warm_up_steps, s);
                (0.0, Some((bandwidth, -c / (n as f32 * bandwidth))))
            }
            _ => (0.0, None),
        };
        let dense = match (&self.cfg.arch, self.cfg.backward) {
            (ArchConfig::TopK { .. } | ArchConfig::BatchTopK { .. }, _) | (_, Backward::Sparse) => false,
            (_, Backward::Dense) => true,
            (_, Backward::Auto) => count_above(pre, &p.b_enc, &theta) as f64 > DENSE_ABOVE * (n * m) as f64,
        };
        let mut stats = StepStats { lr: self.cfg.lr_at(s), dense, ..Default::default() };
        let total_var = total_variance(xs, d);
        let sparsity_coef = match self.cfg.arch {
            ArchConfig::Standard { .. } => l1 * n as f32,
            ArchConfig::JumpRelu { .. } => jump.map(|(bw, t)| -t * n as f32 * bw).unwrap_or(0.0),
            _ => 0.0,
        };
        let near = match jump {
            Some((bw, _)) => near_rows(pre, &p.b_enc, &theta, bw / 2.0),
            None => Csr::empty(n),
        };

        if dense {
            return self.dense_backward(xs, xc, near, l1, jump, stats, total_var, sparsity_coef);
        }

        let main = match self.cfg.arch {
            ArchConfig::TopK { k } => topk_rows(pre, &p.b_enc, k),
            ArchConfig::BatchTopK { k, .. } => batch_topk(pre, &p.b_enc, k * n),
            ArchConfig::Standard { .. } | ArchConfig::JumpRelu { .. } => above_rows(pre, &p.b_enc, &theta),
        };
        prof("select", tp);
        // Reconstruction and dL/dx̂ per row.
        let mut g = vec![0f32; n * d];
        let mut row_err = vec![0f64; n];
        g.par_chunks_mut(d).zip(row_err.par_iter_mut()).enumerate().for_each(|(r, (gr, err))| {
            gr.copy_from_slice(&p.b_dec);
            let (idx, val) = main.row(r);
            for (e, (&j, &f)) in idx.iter().zip(val).enumerate() {
                if let Some(&next) = idx.get(e + 2) {
                    prefetch(&p.w_dec[next as usize * d..(next as usize + 1) * d]);
                }
                axpy(gr, f, &p.w_dec[j as usize * d..(j as usize + 1) * d]);
            }
            let x = &xs[r * d..(r + 1) * d];
            let mut e2 = 0f64;
            for (v, &xv) in gr.iter_mut().zip(x) {
                let e = *v - xv;
                e2 += (e as f64) * (e as f64);
                *v = e * (2.0 / n as f32);
            }
            *err = e2;
        });
        let sse: f64 = row_err.iter().sum();
        stats.mse = sse / n as f64;
        stats.fvu = sse / total_var.max(f64::MIN_POSITIVE);

        prof("decode", tp);
        // AuxK on dead latents.
        let mut aux = Csr::empty(n);
        let mut gaux = Vec::new();
        if self.cfg.arch.has_aux() {
            let dead: Vec<u32> =
                (0..m as u32).filter(|&j| self.since_fired[j as usize] >= self.cfg.dead_tokens).collect();
            if !dead.is_empty() {
                let k_aux = self.cfg.k_aux();
                let scale = (dead.len() as f64 / k_aux as f64).min(1.0) as f32;
                let coef = self.cfg.aux_coefficient * scale;
                aux = topk_among(pre, &p.b_enc, &dead, k_aux.min(dead.len()));
                gaux = vec![0f32; n * d];
                let mut aux_err = vec![0f64; n];
                let gscale = 2.0 * coef / n as f32;
                let half_n = n as f32 / 2.0;
                gaux.par_chunks_mut(d).zip(aux_err.par_iter_mut()).enumerate().for_each(|(r, (ga, err))| {
                    let (idx, val) = aux.row(r);
                    for (&j, &z) in idx.iter().zip(val) {
                        axpy(ga, z, &p.w_dec[j as usize * d..(j as usize + 1) * d]);
                    }
                    // ê − (x − x̂) = ê + e, with e = g·n/2.
                    let mut a2 = 0f64;
                    for (v, &gv) in ga.iter_mut().zip(&g[r * d..(r + 1) * d]) {
                        let diff = *v + gv * half_n;
                        a2 += (diff as f64) * (diff as f64);
                        *v = diff * gscale;
                    }
                    *err = a2;
                });
                stats.aux = coef as f64 * aux_err.iter().sum::<f64>() / n as f64;
            }
        }

        let mut fired = vec![false; m];
        let mut counts = vec![0u32; m];
        let mut sum_f = 0f64;
        for (&j, &f) in main.idx.iter().zip(&main.val) {
            if f > 0.0 {
                fired[j as usize] = true;
                counts[j as usize] += 1;
            }
            sum_f += f as f64;
        }
        stats.dense_fraction = dense_fraction(&counts, n);
        stats.l0 = main.val.iter().filter(|&&f| f > 0.0).count() as f64 / n as f64;
        stats.sparsity = match self.cfg.arch {
            ArchConfig::Standard { .. } => sparsity_coef as f64 * sum_f / n as f64,
            ArchConfig::JumpRelu { .. } => sparsity_coef as f64 * stats.l0,
            _ => 0.0,
        };
        stats.loss = stats.mse + stats.aux + stats.sparsity;
        let min_kept = main.val.iter().copied().filter(|&f| f > 0.0).reduce(f32::min);
        let g_sum = column_sums(&g, d);
        prof("aux+stats", tp);
        let csc = build_csc(m, &[(&main, MAIN), (&aux, AUX), (&near, NEAR)]);
        prof("csc", tp);
        Ok(Pass { n, xc, g, gaux, csc: Some(csc), dense: None, l1, jump, g_sum, fired, stats, min_kept })
    }

    /// The dense route (ReLU / JumpReLU while many latents are active): f, dL/dpre and the
    /// latent gradients as full matrices.
    #[allow(clippy::too_many_arguments)]
    fn dense_backward(
        &mut self,
        xs: &[f32],
        xc: Vec<f32>,
        near: Csr,
        l1: f32,
        jump: Option<(f32, f32)>,
        mut stats: StepStats,
        total_var: f64,
        sparsity_coef: f32,
    ) -> Result<Pass> {
        let (d, m) = (self.cfg.d_in, self.cfg.width);
        let n = xs.len() / d;
        let p = &self.params;
        let theta: Vec<f32> = p.threshold.iter().map(|t| t.max(0.0)).collect();
        // f in place of pre.
        let f = &mut self.scratch.pre;
        f.par_chunks_mut(m).for_each(|row| {
            for j in 0..m {
                let v = row[j] + p.b_enc[j];
                let th = if theta.is_empty() { 0.0 } else { theta[j] };
                row[j] = if v > th { v } else { 0.0 };
            }
        });
        let f = &self.scratch.pre;
        let mut g = vec![0f32; n * d];
        matmul(&mut g, Mat::rows(f, n, m), Mat::rows(&p.w_dec, m, d));
        let mut row_err = vec![0f64; n];
        g.par_chunks_mut(d).zip(row_err.par_iter_mut()).enumerate().for_each(|(r, (gr, err))| {
            let x = &xs[r * d..(r + 1) * d];
            let mut e2 = 0f64;
            for ((v, &xv), &b) in gr.iter_mut().zip(x).zip(&p.b_dec) {
                let e = *v + b - xv;
                e2 += (e as f64) * (e as f64);
                *v = e * (2.0 / n as f32);
            }
            *err = e2;
        });
        let sse: f64 = row_err.iter().sum();
        stats.mse = sse / n as f64;
        stats.fvu = sse / total_var.max(f64::MIN_POSITIVE);

        // dL/df, then dL/dpre in place.
        self.scratch.dense_buf.resize(n * m, 0.0);
        let dpre = &mut self.scratch.dense_buf;
        matmul(dpre, Mat::rows(&g, n, d), Mat::transposed(&p.w_dec, d, m));
        let mut gthr = vec![0f32; theta.len()];
        if let Some((bw, l0_term)) = jump {
            for r in 0..n {
                let (idx, _) = near.row(r);
                for &j in idx {
                    let j = j as usize;
                    gthr[j] += -(theta[j] / bw) * dpre[r * m + j] + l0_term;
                }
            }
        }
        dpre.par_chunks_mut(m).zip(f.par_chunks(m)).for_each(|(dr, fr)| {
            for (dv, &fv) in dr.iter_mut().zip(fr) {
                *dv = if fv > 0.0 { *dv + l1 } else { 0.0 };
            }
        });
        let dpre = &self.scratch.dense_buf;
        let mut gdec = vec![0f32; m * d];
        matmul(&mut gdec, Mat::transposed(f, m, n), Mat::rows(&g, n, d));
        let mut genc = vec![0f32; m * d];
        matmul(&mut genc, Mat::transposed(dpre, m, n), Mat::rows(&xc, n, d));
        let gbenc = column_sums(dpre, m);
        let (fired, col_counts, counts, sums) = column_activity(f, m);
        stats.l0 = counts as f64 / n as f64;
        stats.dense_fraction = dense_fraction(&col_counts, n);
        stats.sparsity = match self.cfg.arch {
            ArchConfig::Standard { .. } => sparsity_coef as f64 * sums / n as f64,
            _ => sparsity_coef as f64 * stats.l0,
        };
        stats.loss = stats.mse + stats.aux + stats.sparsity;
        let g_sum = column_sums(&g, d);
        Ok(Pass {
            n,
            xc,
            g,
            gaux: Vec::new(),
            csc: None,
            dense: Some(DenseGrads { w_dec: gdec, w_enc_t: genc, b_enc: gbenc, threshold: gthr }),
            l1,
            jump,
            g_sum,
            fired,
            stats,
            min_kept: None,
        })
    }

    /// The latent pass with Adam, then b_dec.
    fn apply_update(&mut self, pass: &Pass) {
        let (d, m) = (self.cfg.d_in, self.cfg.width);
        let c = &self.cfg;
        let adam = AdamStep::new(c.lr_at(self.step), c.beta1, c.beta2, c.eps, self.step + 1);
        let p = &mut self.params;
        let mo = &mut self.moments;
        let has_thr = !p.threshold.is_empty();
        let n_chunks = m.div_ceil(CHUNK);
        let mut partials = vec![0f32; n_chunks * d];
        let mut tasks = Vec::with_capacity(n_chunks);
        {
            let mut wd = p.w_dec.as_mut_slice();
            let mut wdm = mo.w_dec.m.as_mut_slice();
            let mut wdv = mo.w_dec.v.as_mut_slice();
            let mut we = p.w_enc_t.as_mut_slice();
            let mut wem = mo.w_enc_t.m.as_mut_slice();
            let mut wev = mo.w_enc_t.v.as_mut_slice();
            let mut be = p.b_enc.as_mut_slice();
            let mut bem = mo.b_enc.m.as_mut_slice();
            let mut bev = mo.b_enc.v.as_mut_slice();
            let mut th = p.threshold.as_mut_slice();
            let mut thm = mo.threshold.m.as_mut_slice();
            let mut thv = mo.threshold.v.as_mut_slice();
            let mut part = partials.as_mut_slice();
            for ci in 0..n_chunks {
                let len = CHUNK.min(m - ci * CHUNK);
                let tl = if has_thr { len } else { 0 };
                tasks.push(ChunkMut {
                    j0: ci * CHUNK,
                    len,
                    w_dec: [take(&mut wd, len * d), take(&mut wdm, len * d), take(&mut wdv, len * d)],
                    w_enc: [take(&mut we, len * d), take(&mut wem, len * d), take(&mut wev, len * d)],
                    b_enc: [take(&mut be, len), take(&mut bem, len), take(&mut bev, len)],
                    thr: [take(&mut th, tl), take(&mut thm, tl), take(&mut thv, tl)],
                    partial: take(&mut part, d),
                });
            }
        }
        tasks.into_par_iter().for_each(|t| {
            let ChunkMut { j0, len, w_dec, w_enc, b_enc, thr, partial } = t;
            let [wd, wdm, wdv] = w_dec;
            let [we, wem, wev] = w_enc;
            let [be, bem, bev] = b_enc;
            let [th, thm, thv] = thr;
            let mut lg = LatentGrad { gdec: vec![0.0; d], genc: vec![0.0; d], gbenc: 0.0, gthr: 0.0 };
            for l in 0..len {
                let j = j0 + l;
                let rows = l * d..(l + 1) * d;
                let theta = th.get(l).map(|t| t.max(0.0));
                latent_grad(pass, d, j, &wd[rows.clone()], theta, &mut lg);
                // b_dec's encoder-side gradient uses this latent's encoder row before its update.
                axpy(partial, lg.gbenc, &we[rows.clone()]);
                let w = &mut wd[rows.clone()];
                let along = dot(&lg.gdec, w);
                axpy(&mut lg.gdec, -along, w);
                adam.update(w, &lg.gdec, &mut wdm[rows.clone()], &mut wdv[rows.clone()]);
                normalize(w);
                adam.update(&mut we[rows.clone()], &lg.genc, &mut wem[rows.clone()], &mut wev[rows.clone()]);
                adam.update1(&mut be[l], lg.gbenc, &mut bem[l], &mut bev[l]);
                if !th.is_empty() {
                    let gt = if th[l] > 0.0 { lg.gthr } else { 0.0 };
                    adam.update1(&mut th[l], gt, &mut thm[l], &mut thv[l]);
                }
            }
        });
        let mut gb = pass.g_sum.clone();
        for part in partials.chunks(d) {
            gb.iter_mut().zip(part).for_each(|(a, b)| *a -= b);
        }
        adam.update(&mut p.b_dec, &gb, &mut mo.b_dec.m, &mut mo.b_dec.v);
    }
}

/// One task of the latent pass: CHUNK latents' parameters and moments.
struct ChunkMut<'a> {
    j0: usize,
    len: usize,
    w_dec: [&'a mut [f32]; 3],
    w_enc: [&'a mut [f32]; 3],
    b_enc: [&'a mut [f32]; 3],
    thr: [&'a mut [f32]; 3],
    partial: &'a mut [f32],
}

fn take<'a>(s: &mut &'a mut [f32], n: usize) -> &'a mut [f32] {
    let (a, b) = std::mem::take(s).split_at_mut(n);
    *s = b;
    a
}

/// Latent j's gradients from the entries it takes part in (or from the dense route's rows).
fn latent_grad(pass: &Pass, d: usize, j: usize, w_dec_j: &[f32], theta: Option<f32>, lg: &mut LatentGrad) {
    if let Some(dg) = &pass.dense {
        lg.gdec.copy_from_slice(&dg.w_dec[j * d..(j + 1) * d]);
        lg.genc.copy_from_slice(&dg.w_enc_t[j * d..(j + 1) * d]);
        lg.gbenc = dg.b_enc[j];
        lg.gthr = dg.threshold.get(j).copied().unwrap_or(0.0);
        return;
    }
    let csc = pass.csc.as_ref().expect("sparse pass");
    lg.gdec.iter_mut().for_each(|v| *v = 0.0);
    lg.genc.iter_mut().for_each(|v| *v = 0.0);
    lg.gbenc = 0.0;
    lg.gthr = 0.0;
    let end = csc.start[j + 1];
    for e in csc.start[j]..end {
        if e + 2 < end {
            let next = csc.row[e + 2] as usize * d;
            let src = if csc.kind[e + 2] == AUX { &pass.gaux } else { &pass.g };
            prefetch(&src[next..next + d]);
            prefetch(&pass.xc[next..next + d]);
        }
        let r = csc.row[e] as usize;
        let rows = r * d..(r + 1) * d;
        let val = csc.val[e];
        match csc.kind[e] {
            MAIN => {
                let g = &pass.g[rows.clone()];
                let dpre = dot_axpy(g, w_dec_j, &mut lg.gdec, val) + pass.l1;
                axpy(&mut lg.genc, dpre, &pass.xc[rows]);
                lg.gbenc += dpre;
            }
            AUX => {
                let ga = &pass.gaux[rows.clone()];
                let dpre = dot_axpy(ga, w_dec_j, &mut lg.gdec, val);
                axpy(&mut lg.genc, dpre, &pass.xc[rows]);
                lg.gbenc += dpre;
            }
            _ => {
                let (bw, l0_term) = pass.jump.expect("near entries only for JumpReLU");
                let df = dot(&pass.g[rows], w_dec_j);
                lg.gthr += -(theta.unwrap_or(0.0) / bw) * df + l0_term;
            }
        }
    }
}

/// Σ over rows of a row-major [rows, w] matrix, per column, in row order.
fn column_sums(a: &[f32], w: usize) -> Vec<f32> {
    let mut cols: Vec<f32> = vec![0.0; w];
    cols.par_chunks_mut(256).enumerate().for_each(|(b, out)| {
        let c0 = b * 256;
        let len = out.len();
        for row in a.chunks_exact(w) {
            out.iter_mut().zip(&row[c0..c0 + len]).for_each(|(o, v)| *o += v);
        }
    });
    cols
}

/// Per column of f [n, m]: whether any entry is positive and how many are; the count and sum
/// of all positive entries.
fn column_activity(f: &[f32], m: usize) -> (Vec<bool>, Vec<u32>, usize, f64) {
    let parts: Vec<(Vec<bool>, Vec<u32>, usize, f64)> = (0..m.div_ceil(256))
        .into_par_iter()
        .map(|b| {
            let (c0, c1) = (b * 256, ((b + 1) * 256).min(m));
            let mut fired = vec![false; c1 - c0];
            let mut cols = vec![0u32; c1 - c0];
            let (mut count, mut sum) = (0usize, 0f64);
            for row in f.chunks_exact(m) {
                for (k, &v) in row[c0..c1].iter().enumerate() {
                    if v > 0.0 {
                        fired[k] = true;
                        cols[k] += 1;
                        count += 1;
                        sum += v as f64;
                    }
                }
            }
            (fired, cols, count, sum)
        })
        .collect();
    let mut fired = Vec::with_capacity(m);
    let mut col_counts = Vec::with_capacity(m);
    let (mut count, mut sum) = (0, 0.0);
    for (f, cc, c, s) in parts {
        fired.extend(f);
        col_counts.extend(cc);
        count += c;
        sum += s;
    }
    (fired, col_counts, count, sum)
}

/// The fraction of latents active on more than `DENSE_LATENT_ABOVE` of `n` rows.
fn dense_fraction(counts: &[u32], n: usize) -> f64 {
    let limit = DENSE_LATENT_ABOVE * n as f64;
    counts.iter().filter(|&&c| c as f64 > limit).count() as f64 / counts.len().max(1) as f64
}

/// Σ_r ‖x_r − mean(x)‖².
fn total_variance(x: &[f32], d: usize) -> f64 {
    let n = x.len() / d;
    let mut mean = vec![0f64; d];
    for row in x.chunks_exact(d) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    x.chunks_exact(d).map(|row| row.iter().zip(&mean).map(|(&v, m)| (v as f64 - m).powi(2)).sum::<f64>()).sum()
}

/// With `KNOWLENS_PROFILE_SAE` set, prints the time since `t` at the end of each phase of a step
/// (cumulative within the forward/backward, separately for the update) as a log line.
fn prof(name: &str, t: std::time::Instant) {
    if std::env::var_os("KNOWLENS_PROFILE_SAE").is_some() {
        log::info!("{name:>10} {:.3} s (process CPU {:.3} s)", t.elapsed().as_secs_f64(), cpu_seconds());
    }
}

/// CPU time of all threads of this process so far (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ns as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_batch_topk_threshold_is_bias_corrected() {
        let mut t =
            Trainer::new(TrainConfig::new(4, 8, ArchConfig::BatchTopK { k: 2, threshold_lr: 0.01 }, 100)).unwrap();
        // The running average of a constant 2.0 after 50 updates from 0.
        for _ in 0..50 {
            t.topk_threshold = 0.99 * t.topk_threshold + 0.01 * 2.0;
        }
        t.step = 50;
        assert!((t.topk_threshold - 2.0 * (1.0 - 0.99f64.powi(50))).abs() < 1e-12);
        assert!((t.saved_topk_threshold() - 2.0).abs() < 1e-9, "{}", t.saved_topk_threshold());
        let topk = Trainer::new(TrainConfig::new(4, 8, ArchConfig::TopK { k: 2 }, 100)).unwrap();
        assert_eq!(topk.saved_topk_threshold(), 0.0);
    }
}
