//! Greedy decoding's next token without the full float32 unembedding, and provably the same token.
//!
//! Greedy decoding needs only the index of the largest logit, yet the float32 unembedding of
//! Gemma 3 (262,144 × 640, 671 MB) is read in full for every decoded token: at one stream it is
//! most of a decoding step. An int8 copy of the table (one scale per row, 168 MB) gives every logit
//! within a bound that is computed, not guessed. Only the tokens whose upper bound reaches the best
//! lower bound can be the argmax; those few are recomputed from the float32 rows, and the winner is
//! accepted only when it is provably the index that the full float32 product's argmax returns
//! (rounding of both computations included). Otherwise that row falls back to the full product.
//! The output is therefore identical to the full product's, not approximately equal.
//!
//! The bounds, with u = 2⁻²⁴, d the hidden size, γ = d·u / (1 − d·u), h the final normalised hidden
//! state, w_i a row of the table, s_i = max_j |w_ij| / 127 its scale and q_i its int8 codes:
//! - rounding to int8: |w_ij − s_i q_ij| ≤ s_i (1/2 + 130 u);
//! - the int8 dot in float32 (any summation order): error ≤ γ · 127 s_i ‖h‖₁;
//! - the full float32 product, as any GEMM computes it: |full_i − w_i·h| ≤ γ Σ_j |w_ij h_j|
//!   ≤ γ · 127 s_i (1 + u) ‖h‖₁.
//!
//! So full_i lies within β s_i ‖h‖₁ of s_i (q_i·h), β = 1/2 + 130 u + 260 γ (0.5099 at d = 640).
//! Candidates are re-scored in float64 (exact products, negligible sum error), and the full
//! product's value of a candidate lies within γ Σ_j |w_ij h_j| of that.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

/// Above this many rows the full product is cheaper: it is a GEMM whose cost per row falls with
/// the batch, while the int8 pass costs the same per row (measured in BENCHMARKS.md).
pub const MAX_ROWS: usize = 8;

/// More candidates than this means the bound did not separate the top tokens; the full product
/// is then the cheaper way to the answer.
const MAX_CANDIDATES: usize = 4096;

/// Rows of the table per parallel work unit: small enough that a core left behind by a busy
/// machine only delays a sliver of the pass.
const CHUNK_ROWS: usize = 512;

/// The int8 copy of an unembedding table and the float32 table it came from.
pub struct ArgmaxIndex {
    d: usize,
    vocab: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// The float32 table, [vocab, d], contiguous.
    table: Tensor,
    beta: f64,
    gamma: f64,
    fast: AtomicU64,
    fallback: AtomicU64,
}

/// How many greedy picks the int8 pass settled, and how many needed the full product.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GreedyStats {
    pub fast: u64,
    pub fallback: u64,
}

/// Runs `f` on the contiguous float32 data of `t`.
fn with_f32_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { bail!("the greedy index needs a CPU tensor") };
    let (start, end) = layout.contiguous_offsets().context("the greedy index needs a contiguous table")?;
    let data = cpu.as_slice::<f32>()?;
    f(&data[start..end])
}

impl ArgmaxIndex {
    /// Builds the int8 copy of `table` ([vocab, d] float32).
    pub fn new(table: &Tensor) -> Result<Self> {
        if table.dtype() != DType::F32 {
            bail!("the greedy index needs a float32 table, got {:?}", table.dtype());
        }
        let (vocab, d) = table.dims2()?;
        let table = table.contiguous()?;
        let mut codes = vec![0i8; vocab * d];
        let mut scales = vec![0f32; vocab];
        with_f32_slice(&table, |w| {
            codes.par_chunks_mut(d).zip(scales.par_iter_mut()).zip(w.par_chunks(d)).for_each(|((q, s), row)| {
                let max = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
                if max > 0.0 && max.is_finite() {
                    *s = max / 127.0;
                    for (q, &x) in q.iter_mut().zip(row) {
                        *q = (x / *s).round().clamp(-127.0, 127.0) as i8;
                    }
                } else {
                    // A zero row has exact codes; a non-finite one can never be bounded, so its
                    // scale makes every bound infinite and every pick fall back.
                    *s = if max == 0.0 { 0.0 } else { f32::INFINITY };
                }
            });
            Ok(())
        })?;
        let u = f64::powi(2.0, -24);
        let gamma = d as f64 * u / (1.0 - d as f64 * u);
        let beta = 0.5 + 130.0 * u + 260.0 * gamma;
        Ok(Self { d, vocab, codes, scales, table, beta, gamma, fast: AtomicU64::new(0), fallback: AtomicU64::new(0) })
    }

    pub fn stats(&self) -> GreedyStats {
        GreedyStats { fast: self.fast.load(Ordering::Relaxed), fallback: self.fallback.load(Ordering::Relaxed) }
    }

    /// For each row of `h` ([rows][d]), the index of the largest logit of `table · h` when it is
    /// provably the full float32 product's argmax; `None` where the row needs the full product.
    pub fn argmax(&self, h: &[Vec<f32>]) -> Result<Vec<Option<u32>>> {
        let b = h.len();
        if let Some(r) = h.iter().position(|r| r.len() != self.d) {
            bail!("greedy index: row {r} has {} values, the table {}", h[r].len(), self.d);
        }
        if b == 0 {
            return Ok(Vec::new());
        }
        let norms: Vec<f64> = h.iter().map(|r| r.iter().map(|&x| (x as f64).abs()).sum()).collect();
        // Approximate logits s_i (q_i · h), laid out [vocab][b].
        let mut approx = vec![0f32; self.vocab * b];
        approx.par_chunks_mut(CHUNK_ROWS * b).zip(self.codes.par_chunks(CHUNK_ROWS * self.d)).for_each(
            |(out, codes)| {
                let mut row = vec![0f32; self.d];
                for (o, q) in out.chunks_mut(b).zip(codes.chunks(self.d)) {
                    for (x, &c) in row.iter_mut().zip(q) {
                        *x = c as f32;
                    }
                    for (o, hr) in o.iter_mut().zip(h) {
                        *o = dot(&row, hr);
                    }
                }
            },
        );
        with_f32_slice(&self.table, |table| {
            let mut picks = Vec::with_capacity(b);
            for r in 0..b {
                let pick = if norms[r].is_finite() { self.pick_row(table, &approx, h, &norms, r) } else { None };
                match pick {
                    Some(_) => self.fast.fetch_add(1, Ordering::Relaxed),
                    None => self.fallback.fetch_add(1, Ordering::Relaxed),
                };
                picks.push(pick);
            }
            Ok(picks)
        })
    }

    /// The proof for one row: candidates from the bounds, exact rescoring, strict separation.
    fn pick_row(&self, table: &[f32], approx: &[f32], h: &[Vec<f32>], norms: &[f64], r: usize) -> Option<u32> {
        let b = h.len();
        let hr = &h[r];
        let margin = |i: usize| self.beta * self.scales[i] as f64 * norms[r];
        let value = |i: usize| self.scales[i] as f64 * approx[i * b + r] as f64;
        // The largest lower bound: the argmax's full value is at least this.
        let mut floor = f64::NEG_INFINITY;
        for i in 0..self.vocab {
            floor = floor.max(value(i) - margin(i));
        }
        if !floor.is_finite() {
            return None;
        }
        let mut candidates = Vec::new();
        for i in 0..self.vocab {
            if value(i) + margin(i) >= floor {
                if candidates.len() == MAX_CANDIDATES {
                    return None;
                }
                candidates.push(i);
            }
        }
        // Exact rescoring: float32 products are exact in float64; the full product's value lies
        // within `slack` of the exact one.
        let scored: Vec<(usize, f64, f64)> = candidates
            .iter()
            .map(|&i| {
                let w = &table[i * self.d..(i + 1) * self.d];
                let (mut e, mut s) = (0f64, 0f64);
                for (&a, &x) in w.iter().zip(hr) {
                    let p = a as f64 * x as f64;
                    e += p;
                    s += p.abs();
                }
                (i, e, (self.gamma * 1.001 + 1e-12) * s)
            })
            .collect();
        let &(best, e, slack) = scored.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
        let low = e - slack;
        let separated = scored.iter().all(|&(i, ei, si)| i == best || ei + si < low);
        (separated && low.is_finite()).then_some(best as u32)
    }
}

/// Float32 dot product in 16 lanes (vectorised by the compiler for the target's SIMD width).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn full_argmax(table: &Tensor, h: &[Vec<f32>]) -> Vec<u32> {
        let d = h[0].len();
        let ht = Tensor::from_vec(h.concat(), (h.len(), d), &Device::Cpu).unwrap();
        ht.matmul(&table.t().unwrap()).unwrap().argmax(1).unwrap().to_vec1::<u32>().unwrap()
    }

    #[test]
    fn picks_equal_the_full_products_argmax() {
        let dev = Device::Cpu;
        let table = Tensor::randn(0f32, 0.05, (5000, 64), &dev).unwrap();
        let index = ArgmaxIndex::new(&table).unwrap();
        let h: Vec<Vec<f32>> =
            (0..6).map(|s| Tensor::randn(0f32, 1.0 + s as f32, 64, &dev).unwrap().to_vec1().unwrap()).collect();
        let picks = index.argmax(&h).unwrap();
        let full = full_argmax(&table, &h);
        for (p, f) in picks.iter().zip(&full) {
            if let Some(p) = p {
                assert_eq!(p, f);
            }
        }
        assert!(index.stats().fast > 0, "random rows should mostly be settled by the bound: {:?}", index.stats());
    }

    #[test]
    fn an_exact_tie_falls_back() {
        let dev = Device::Cpu;
        // Rows 3 and 7 are equal: no proof can separate them, so the row must fall back.
        let mut rows = Tensor::randn(0f32, 0.05, (16, 32), &dev).unwrap().to_vec2::<f32>().unwrap();
        rows[3] = vec![0.5; 32];
        rows[7] = vec![0.5; 32];
        let table = Tensor::from_vec(rows.concat(), (16, 32), &dev).unwrap();
        let index = ArgmaxIndex::new(&table).unwrap();
        let picks = index.argmax(&[vec![1.0; 32]]).unwrap();
        assert_eq!(picks, vec![None]);
        assert_eq!(index.stats(), GreedyStats { fast: 0, fallback: 1 });
    }

    #[test]
    fn non_finite_inputs_fall_back() {
        let dev = Device::Cpu;
        let table = Tensor::randn(0f32, 0.05, (100, 16), &dev).unwrap();
        let index = ArgmaxIndex::new(&table).unwrap();
        let mut h = vec![1.0f32; 16];
        h[3] = f32::NAN;
        assert_eq!(index.argmax(&[h]).unwrap(), vec![None]);
    }
}
