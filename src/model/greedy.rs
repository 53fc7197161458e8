//! Greedy decoding's next token without the full float32 unembedding, and provably the same token.
//!
//! Greedy decoding needs only the index of the largest logit, yet the float32 unembedding of
//! Gemma 3 (262,144 × 640, 671 MB) is read in full for every decoded token: at one stream it is
//! most of a decoding step. An int8 copy of the table (one scale per block of 32 values, 189 MB)
//! gives every logit within a bound that is computed, not guessed. Only the tokens whose upper
//! bound reaches the best lower bound can be the argmax; those few are recomputed from the float32
//! rows, and the winner is accepted only when it is provably the index that the full float32
//! product's argmax returns (rounding of both computations included). Otherwise that row falls
//! back to the full product. The output is therefore identical to the full product's, not
//! approximately equal. A table dequantized from GGUF Q8_0 blocks (the default model's) is
//! represented exactly by the copy, so only rounding is left in the bound.
//!
//! The bounds, with u = 2⁻²⁴, γ_n = n·u / (1 − n·u), h the final normalised hidden state, h_b its
//! block b, w_i a row of the table, s_ib = max_{j∈b} |w_ij| / 127 the block's scale, q_i the int8
//! codes, e_i = w_i − s_i q_i the rounding, and A_i = Σ_b s_ib ‖h_b‖₁:
//! - rounding to int8: |e_i · h| ≤ min((1/2 + 130 u) A_i, ‖e_i‖₂ ‖h‖₂) (the second by
//!   Cauchy–Schwarz, with ‖e_i‖₂ measured when the copy is built; it is 0 for a Q8_0 table);
//! - the blockwise int8 dot in float32 (any summation order): error ≤ γ_{33+blocks} · 127 A_i;
//! - the full float32 product, as any GEMM computes it: |full_i − w_i·h| ≤ γ_d Σ_j |w_ij h_j|
//!   ≤ γ_d · 127 (1 + 2u) A_i.
//!
//! Candidates are re-scored in float64 (exact products, negligible sum error), and the full
//! product's value of a candidate lies within γ_d Σ_j |w_ij h_j| of that.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::gemv::with_f32_slice;
use rayon::prelude::*;

/// Above this many rows the full product is cheaper (measured: 1.14× at one row, 1.11× at two,
/// 0.90× at four, BENCHMARKS.md): its cost per row falls with the batch, the int8 pass's does not.
pub const MAX_ROWS: usize = 2;

/// More candidates than this means the bound did not separate the top tokens; the full product
/// is then the cheaper way to the answer.
const MAX_CANDIDATES: usize = 32_768;

/// Values per scale: GGUF's Q8_0 block, so a table dequantized from Q8_0 is copied exactly.
const BLOCK: usize = 32;

/// Rows of the table per parallel work unit: small enough that a core left behind by a busy
/// machine only delays a sliver of the pass.
const CHUNK_ROWS: usize = 512;

/// The int8 copy of an unembedding table and the float32 table it came from.
pub struct ArgmaxIndex {
    d: usize,
    vocab: usize,
    /// Blocks per row (the last may be shorter than `BLOCK`).
    blocks: usize,
    codes: Vec<i8>,
    /// One scale per block, [vocab][blocks].
    scales: Vec<f32>,
    /// ‖w_i − s_i q_i‖₂ per row, rounded up.
    errors: Vec<f32>,
    /// The float32 table, [vocab, d], contiguous.
    table: Tensor,
    /// The rounding part of the bound per unit of A_i.
    rounding: f64,
    /// γ_d: the full product's rounding per unit of Σ_j |w_ij h_j|.
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

impl ArgmaxIndex {
    /// Builds the int8 copy of `table` ([vocab, d] float32); `None` if the table holds a
    /// non-finite value, which no bound covers (every pick then takes the full product).
    pub fn new(table: &Tensor) -> Result<Option<Self>> {
        if table.dtype() != DType::F32 {
            bail!("the greedy index needs a float32 table, got {:?}", table.dtype());
        }
        let (vocab, d) = table.dims2()?;
        let table = table.contiguous()?;
        let blocks = d.div_ceil(BLOCK);
        let mut codes = vec![0i8; vocab * d];
        let mut scales = vec![0f32; vocab * blocks];
        let mut errors = vec![0f32; vocab];
        with_f32_slice(&table, |w| {
            codes
                .par_chunks_mut(d)
                .zip(scales.par_chunks_mut(blocks).zip(errors.par_iter_mut()))
                .zip(w.par_chunks(d))
                .for_each(|((q, (s, e)), row)| {
                    let mut sq = 0f64;
                    for ((q, s), row) in q.chunks_mut(BLOCK).zip(s.iter_mut()).zip(row.chunks(BLOCK)) {
                        let max = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
                        if !max.is_finite() {
                            sq = f64::INFINITY;
                            continue;
                        }
                        *s = max / 127.0;
                        if max == 0.0 {
                            continue;
                        }
                        for (q, &x) in q.iter_mut().zip(row) {
                            *q = (x / *s).round().clamp(-127.0, 127.0) as i8;
                            let r = x as f64 - *s as f64 * *q as f64;
                            sq += r * r;
                        }
                    }
                    // Rounded up so the stored norm is never below the true one.
                    *e = ((sq.sqrt() * (1.0 + 1e-6)) as f32) * (1.0 + f32::EPSILON);
                });
            Ok(())
        })?;
        if errors.iter().any(|e| !e.is_finite()) {
            return Ok(None);
        }
        let u = f64::powi(2.0, -24);
        let gamma_n = |n: usize| n as f64 * u / (1.0 - n as f64 * u);
        // Rounding of the copy's dot and of the full product, per unit of A_i.
        let rounding = 127.0 * (1.0 + 2.0 * u) * (gamma_n(33 + blocks) + gamma_n(d));
        Ok(Some(Self {
            d,
            vocab,
            blocks,
            codes,
            scales,
            errors,
            table,
            rounding,
            gamma: gamma_n(d),
            fast: AtomicU64::new(0),
            fallback: AtomicU64::new(0),
        }))
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
        let l2: Vec<f64> =
            h.iter().map(|r| r.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt() * (1.0 + 1e-12)).collect();
        // ‖h_b‖₁ per row and block.
        let block_l1: Vec<Vec<f32>> =
            h.iter().map(|r| r.chunks(BLOCK).map(|c| c.iter().map(|x| x.abs()).sum()).collect()).collect();
        // Approximate logits Σ_b s_ib (q_ib · h_b) and A_i, laid out [vocab][b].
        let mut approx = vec![0f32; self.vocab * b];
        let mut weight = vec![0f32; self.vocab * b];
        let (d, nb) = (self.d, self.blocks);
        approx
            .par_chunks_mut(CHUNK_ROWS * b)
            .zip(weight.par_chunks_mut(CHUNK_ROWS * b))
            .zip(self.codes.par_chunks(CHUNK_ROWS * d).zip(self.scales.par_chunks(CHUNK_ROWS * nb)))
            .for_each(|((out, wout), (codes, scales))| {
                let mut row = vec![0f32; d];
                let rows = out.chunks_mut(b).zip(wout.chunks_mut(b)).zip(codes.chunks(d).zip(scales.chunks(nb)));
                for ((o, wo), (q, s)) in rows {
                    for (x, &c) in row.iter_mut().zip(q) {
                        *x = c as f32;
                    }
                    for (k, hr) in h.iter().enumerate() {
                        // Lane-wise sums scaled per block; one horizontal sum per row.
                        let mut lanes = [0f32; 8];
                        let mut a = 0f32;
                        for ((&sb, x), y) in s.iter().zip(row.chunks(BLOCK)).zip(hr.chunks(BLOCK)) {
                            let p = lane_dot(x, y);
                            for l in 0..8 {
                                lanes[l] += sb * p[l];
                            }
                        }
                        for (&sb, &n1) in s.iter().zip(&block_l1[k]) {
                            a += sb * n1;
                        }
                        let acc: f32 = lanes.iter().sum();
                        o[k] = acc;
                        wo[k] = a;
                    }
                }
            });
        with_f32_slice(&self.table, |table| {
            let mut picks = Vec::with_capacity(b);
            for (r, &norm) in l2.iter().enumerate() {
                let pick = if norm.is_finite() { self.pick_row(table, &approx, &weight, h, norm, r) } else { None };
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
    fn pick_row(
        &self,
        table: &[f32],
        approx: &[f32],
        weight: &[f32],
        h: &[Vec<f32>],
        l2: f64,
        r: usize,
    ) -> Option<u32> {
        let b = h.len();
        let hr = &h[r];
        let u = f64::powi(2.0, -24);
        let margin = |i: usize| {
            // A_i as computed, raised past its own rounding.
            let a = weight[i * b + r] as f64 * (1.0 + 1e-4);
            ((0.5 + 130.0 * u) * a).min(self.errors[i] as f64 * l2) + self.rounding * a
        };
        let value = |i: usize| approx[i * b + r] as f64;
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
            .par_iter()
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

/// Lane-wise products summed in 8 lanes, for a block of `BLOCK` values (a shorter last block is
/// padded with nothing: its missing lanes add zero).
#[inline(always)]
fn lane_dot(x: &[f32], y: &[f32]) -> [f32; 8] {
    let mut p = [0f32; 8];
    if x.len() == BLOCK && y.len() == BLOCK {
        for c in 0..BLOCK / 8 {
            for l in 0..8 {
                p[l] += x[c * 8 + l] * y[c * 8 + l];
            }
        }
    } else {
        for (j, (a, b)) in x.iter().zip(y).enumerate() {
            p[j % 8] += a * b;
        }
    }
    p
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
        let index = ArgmaxIndex::new(&table).unwrap().unwrap();
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
        let index = ArgmaxIndex::new(&table).unwrap().unwrap();
        let picks = index.argmax(&[vec![1.0; 32]]).unwrap();
        assert_eq!(picks, vec![None]);
        assert_eq!(index.stats(), GreedyStats { fast: 0, fallback: 1 });
    }

    #[test]
    fn a_table_with_a_non_finite_value_gets_no_index() {
        let mut rows = vec![vec![0.1f32; 8]; 4];
        rows[2][5] = f32::INFINITY;
        let table = Tensor::from_vec(rows.concat(), (4, 8), &Device::Cpu).unwrap();
        assert!(ArgmaxIndex::new(&table).unwrap().is_none());
    }

    /// A table on Q8_0's grid (int8 codes times one float16 scale per 32 values, as GGUF
    /// dequantizes it) is copied exactly.
    #[test]
    fn a_q8_0_table_is_copied_exactly() {
        let dev = Device::Cpu;
        let codes =
            Tensor::randn(0f32, 40.0, (300, 64), &dev).unwrap().clamp(-127f32, 127f32).unwrap().round().unwrap();
        let mut rows = codes.to_vec2::<f32>().unwrap();
        for row in rows.iter_mut() {
            row[0] = 127.0;
            row[32] = -127.0;
            for (j, x) in row.iter_mut().enumerate() {
                *x *= if j < 32 { 3.0 / 1024.0 } else { 23.0 / 32768.0 };
            }
        }
        let table = Tensor::from_vec(rows.concat(), (300, 64), &dev).unwrap();
        let index = ArgmaxIndex::new(&table).unwrap().unwrap();
        assert!(
            index.errors.iter().all(|&e| e == 0.0),
            "max error {:?}",
            index.errors.iter().cloned().fold(0f32, f32::max)
        );
    }

    #[test]
    fn non_finite_inputs_fall_back() {
        let dev = Device::Cpu;
        let table = Tensor::randn(0f32, 0.05, (100, 16), &dev).unwrap();
        let index = ArgmaxIndex::new(&table).unwrap().unwrap();
        let mut h = vec![1.0f32; 16];
        h[3] = f32::NAN;
        assert_eq!(index.argmax(&[h]).unwrap(), vec![None]);
    }
}
