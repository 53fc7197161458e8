//! From pre-activations to the sparse set of latents that take part in the backward pass.
//! Everything after the encoder's matrix product touches only these entries, so they are kept
//! as compressed rows (`Csr`). Pre-activations arrive without `b_enc`, which is added on the
//! fly (`pre[r, j] + b_enc[j]`), so the [n, d_sae] matrix is written once, by the matmul.

use rayon::prelude::*;

/// Sparse rows: row r holds `idx[offsets[r]..offsets[r+1]]` (ascending) with values `val`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Csr {
    pub offsets: Vec<usize>,
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
}

impl Csr {
    pub fn empty(n: usize) -> Self {
        Self { offsets: vec![0; n + 1], idx: Vec::new(), val: Vec::new() }
    }

    pub fn nnz(&self) -> usize {
        self.idx.len()
    }

    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.offsets[r], self.offsets[r + 1]);
        (&self.idx[a..b], &self.val[a..b])
    }

    /// Concatenates per-row lists (each sorted here by latent index).
    fn from_rows(rows: Vec<Vec<(u32, f32)>>) -> Self {
        let mut c = Csr { offsets: Vec::with_capacity(rows.len() + 1), ..Default::default() };
        c.offsets.push(0);
        let total = rows.iter().map(Vec::len).sum();
        c.idx.reserve(total);
        c.val.reserve(total);
        for mut r in rows {
            r.sort_unstable_by_key(|e| e.0);
            for (j, v) in r {
                c.idx.push(j);
                c.val.push(v);
            }
            c.offsets.push(c.idx.len());
        }
        c
    }
}

/// Orders (value, index) pairs by value, largest first, then by index: a total order, so the
/// selected set is the same whatever algorithm picks it.
fn larger_first(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// The k largest of `vals` (with their indices), in no particular order.
fn top_of(mut cands: Vec<(f32, u32)>, k: usize) -> Vec<(f32, u32)> {
    if cands.len() > k {
        cands.select_nth_unstable_by(k - 1, larger_first);
        cands.truncate(k);
    }
    cands
}

/// Latents per block in `topk_rows`.
const BLOCK: usize = 64;

/// TopK then ReLU per row (SAELens `TopK`): the k largest of `pre + b_enc`, of which the
/// positive ones are kept. One vectorised pass takes the maximum of each block of 64 latents;
/// the k-th largest block maximum is a lower bound for the row's k-th largest value (k block
/// maxima are at least that large), so only the blocks whose maximum reaches it are scanned
/// again (from cache) for candidates, and the k largest candidates are exact.
pub fn topk_rows(pre: &[f32], b_enc: &[f32], k: usize) -> Csr {
    let m = b_enc.len();
    let k = k.min(m);
    let rows: Vec<Vec<(u32, f32)>> = pre
        .par_chunks(m)
        .map(|row| {
            if k == 0 {
                return Vec::new();
            }
            let nb = m / BLOCK;
            let mut cands: Vec<(f32, u32)> = Vec::new();
            if nb >= k {
                let mut maxes = Vec::with_capacity(nb);
                for (blk, bb) in row.chunks_exact(BLOCK).zip(b_enc.chunks_exact(BLOCK)) {
                    let (blk, bb): (&[f32; BLOCK], &[f32; BLOCK]) =
                        (blk.try_into().expect("block"), bb.try_into().expect("block"));
                    let mut mx = [f32::NEG_INFINITY; 16];
                    for g in 0..BLOCK / 16 {
                        for l in 0..16 {
                            let v = blk[g * 16 + l] + bb[g * 16 + l];
                            mx[l] = if v > mx[l] { v } else { mx[l] };
                        }
                    }
                    maxes.push(mx.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a }));
                }
                let mut sorted = maxes.clone();
                sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                let floor = sorted[k - 1];
                for (bi, &mx) in maxes.iter().enumerate() {
                    if mx >= floor {
                        for t in bi * BLOCK..(bi + 1) * BLOCK {
                            let v = row[t] + b_enc[t];
                            if v >= floor {
                                cands.push((v, t as u32));
                            }
                        }
                    }
                }
                for t in nb * BLOCK..m {
                    let v = row[t] + b_enc[t];
                    if v >= floor {
                        cands.push((v, t as u32));
                    }
                }
            } else {
                cands = (0..m).map(|t| (row[t] + b_enc[t], t as u32)).collect();
            }
            top_of(cands, k).into_iter().filter(|e| e.0 > 0.0).map(|(v, i)| (i, v)).collect()
        })
        .collect();
    Csr::from_rows(rows)
}

/// Per row, the `k` largest of `pre + b_enc` among the latents listed in `among` (ascending),
/// without a ReLU (the AuxK latents of dead latents).
pub fn topk_among(pre: &[f32], b_enc: &[f32], among: &[u32], k: usize) -> Csr {
    let m = b_enc.len();
    let rows: Vec<Vec<(u32, f32)>> = pre
        .par_chunks(m)
        .map(|row| {
            let cands = among.iter().map(|&j| (row[j as usize] + b_enc[j as usize], j)).collect();
            top_of(cands, k).into_iter().map(|(v, j)| (j, v)).collect()
        })
        .collect();
    Csr::from_rows(rows)
}

/// Entries `(j, pre + b_enc)` of each row for which `keep(j, pre + b_enc)` holds.
fn rows_where(pre: &[f32], b_enc: &[f32], keep: impl Fn(usize, f32) -> bool + Sync) -> Csr {
    let m = b_enc.len();
    let rows: Vec<Vec<(u32, f32)>> = pre
        .par_chunks(m)
        .map(|row| {
            (0..m).map(|j| (j, row[j] + b_enc[j])).filter(|&(j, v)| keep(j, v)).map(|(j, v)| (j as u32, v)).collect()
        })
        .collect();
    Csr::from_rows(rows)
}

/// Entries with `pre + b_enc > θ_j` (θ = 0 for a plain ReLU when `threshold` is empty).
pub fn above_rows(pre: &[f32], b_enc: &[f32], threshold: &[f32]) -> Csr {
    rows_where(pre, b_enc, |j, v| v > if threshold.is_empty() { 0.0 } else { threshold[j] })
}

/// Number of entries with `pre + b_enc > θ_j`.
pub fn count_above(pre: &[f32], b_enc: &[f32], threshold: &[f32]) -> usize {
    let m = b_enc.len();
    pre.par_chunks(m)
        .map(|row| {
            (0..m).filter(|&j| row[j] + b_enc[j] > if threshold.is_empty() { 0.0 } else { threshold[j] }).count()
        })
        .sum()
}

/// Entries with `|pre + b_enc − θ_j| < half_width` (JumpReLU's rectangle kernel), with
/// their pre-activation.
pub fn near_rows(pre: &[f32], b_enc: &[f32], threshold: &[f32], half_width: f32) -> Csr {
    rows_where(pre, b_enc, |j, v| (v - threshold[j]).abs() < half_width)
}

/// BatchTopK: the `kk` largest positive values of `relu(pre + b_enc)` over the whole batch
/// (ties at the boundary go to the earlier entry in row-major order). Positive float32 values
/// order like their bit patterns, so the kk-th largest is found exactly with two 16-bit
/// histogram passes instead of a sort.
pub fn batch_topk(pre: &[f32], b_enc: &[f32], kk: usize) -> Csr {
    let m = b_enc.len();
    let n = pre.len() / m;
    let bits = |r: &[f32], j: usize| -> Option<u32> {
        let v = r[j] + b_enc[j];
        (v > 0.0).then(|| v.to_bits())
    };
    let hist = |select: &(dyn Fn(u32) -> Option<usize> + Sync)| -> Vec<u64> {
        pre.par_chunks(m * 64)
            .map(|rows| {
                let mut h = vec![0u64; 1 << 16];
                for row in rows.chunks(m) {
                    for j in 0..m {
                        if let Some(b) = bits(row, j) {
                            if let Some(bin) = select(b) {
                                h[bin] += 1;
                            }
                        }
                    }
                }
                h
            })
            .reduce(
                || vec![0u64; 1 << 16],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            )
    };
    // Finds the bin holding the `want`-th largest (1-based) and how many lie above it.
    let locate = |h: &[u64], want: u64| -> (usize, u64) {
        let mut above = 0u64;
        for bin in (0..h.len()).rev() {
            if above + h[bin] >= want {
                return (bin, above);
            }
            above += h[bin];
        }
        (0, above)
    };
    let h_hi = hist(&|b| Some((b >> 16) as usize));
    let positive: u64 = h_hi.iter().sum();
    let (cut_bits, take_equal) = if positive <= kk as u64 {
        (1u32, u64::MAX) // every positive value (bits ≥ 1)
    } else {
        let (hi, above_hi) = locate(&h_hi, kk as u64);
        let h_lo = hist(&|b| ((b >> 16) as usize == hi).then_some((b & 0xffff) as usize));
        let (lo, above_lo) = locate(&h_lo, kk as u64 - above_hi);
        let cut = ((hi as u32) << 16) | lo as u32;
        (cut, kk as u64 - above_hi - above_lo)
    };
    // Ties with the cut value are rare; give them out in row-major order.
    let equal_per_row: Vec<u64> = if take_equal == u64::MAX {
        vec![u64::MAX; n]
    } else {
        let counts: Vec<u64> =
            pre.par_chunks(m).map(|row| (0..m).filter(|&j| bits(row, j) == Some(cut_bits)).count() as u64).collect();
        let mut left = take_equal;
        counts
            .into_iter()
            .map(|c| {
                let t = c.min(left);
                left -= t;
                t
            })
            .collect()
    };
    let rows: Vec<Vec<(u32, f32)>> = pre
        .par_chunks(m)
        .zip(equal_per_row.par_iter())
        .map(|(row, &eq)| {
            let mut eq_left = eq;
            let mut out = Vec::new();
            for j in 0..m {
                if let Some(b) = bits(row, j) {
                    if b > cut_bits || (b == cut_bits && eq_left > 0) {
                        if b == cut_bits && eq_left != u64::MAX {
                            eq_left -= 1;
                        }
                        out.push((j as u32, f32::from_bits(b)));
                    }
                }
            }
            out
        })
        .collect();
    Csr::from_rows(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, m: usize) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64(7);
        (0..n * m).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn topk_matches_a_sort() {
        // Few blocks (every value is a candidate) and many (the block-maximum bound is used).
        for (n, m, k) in [(7, 300, 9), (7, 2048 + 40, 9), (5, 4096, 64), (3, 1024, 16)] {
            check_topk(n, m, k);
        }
    }

    fn check_topk(n: usize, m: usize, k: usize) {
        let pre = values(n, m);
        let b: Vec<f32> = (0..m).map(|j| 0.0001 * j as f32 - 0.1).collect();
        let c = topk_rows(&pre, &b, k);
        for r in 0..n {
            let mut all: Vec<(f32, u32)> = (0..m).map(|j| (pre[r * m + j] + b[j], j as u32)).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut want: Vec<u32> = all[..k].iter().filter(|e| e.0 > 0.0).map(|e| e.1).collect();
            want.sort();
            assert_eq!(c.row(r).0, &want[..]);
        }
    }

    #[test]
    fn batch_topk_keeps_exactly_the_largest() {
        let (n, m, k) = (6, 200, 5);
        let mut pre = values(n, m);
        pre[3] = pre[7]; // a tie somewhere
        let b = vec![0.0; m];
        let c = batch_topk(&pre, &b, k * n);
        assert_eq!(c.nnz(), k * n);
        let mut all: Vec<f32> = pre.iter().copied().filter(|v| *v > 0.0).collect();
        all.sort_by(|a, b| b.total_cmp(a));
        let cut = all[k * n - 1];
        assert!(c.val.iter().all(|&v| v >= cut));
        assert_eq!(batch_topk(&pre, &b, n * m).nnz(), all.len());
    }
}
