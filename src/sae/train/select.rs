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

/// Latents per block in `topk_rows` and `batch_topk`.
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
            let per_row = m.div_ceil(BLOCK);
            let mut cands: Vec<(f32, u32)> = Vec::new();
            if per_row >= k {
                let mut maxes = vec![0f32; per_row];
                block_maxima(row, b_enc, &mut maxes);
                let mut sorted = maxes.clone();
                sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                let floor = sorted[k - 1];
                for (bi, &mx) in maxes.iter().enumerate() {
                    if mx >= floor {
                        for t in bi * BLOCK..((bi + 1) * BLOCK).min(m) {
                            let v = row[t] + b_enc[t];
                            if v >= floor {
                                cands.push((v, t as u32));
                            }
                        }
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
/// (ties at the boundary go to the earlier entry in row-major order).
///
/// The kk-th largest block maximum (blocks of `BLOCK` latents within a row) is a lower bound
/// for the batch's kk-th largest value, since kk blocks each hold a value at least that large.
/// One vectorised pass takes every block's maximum; only the blocks whose maximum reaches the
/// bound are scanned again for candidates, and the exact cut is chosen among those few (about
/// kk of them on trained and random activations alike) instead of among all n · d_sae values.
pub fn batch_topk(pre: &[f32], b_enc: &[f32], kk: usize) -> Csr {
    let m = b_enc.len();
    let n = pre.len() / m;
    if kk == 0 || n == 0 {
        return Csr::empty(n);
    }
    let per_row = m.div_ceil(BLOCK);
    let mut maxes = vec![0f32; n * per_row];
    maxes.par_chunks_mut(per_row).zip(pre.par_chunks(m)).for_each(|(mx, row)| block_maxima(row, b_enc, mx));
    // Candidates must be positive (the ReLU) and reach the bound.
    let floor = if maxes.len() > kk {
        let mut sorted = maxes.clone();
        sorted.select_nth_unstable_by(kk - 1, |a, b| b.total_cmp(a));
        sorted[kk - 1]
    } else {
        f32::NEG_INFINITY
    };
    let keep = |v: f32| v > 0.0 && v >= floor;
    let mut cands: Vec<Vec<(f32, u32)>> = pre
        .par_chunks(m)
        .zip(maxes.par_chunks(per_row))
        .map(|(row, mx)| {
            let mut out = Vec::new();
            for (bi, &bm) in mx.iter().enumerate() {
                if keep(bm) {
                    for t in bi * BLOCK..((bi + 1) * BLOCK).min(m) {
                        let v = row[t] + b_enc[t];
                        if keep(v) {
                            out.push((v, t as u32));
                        }
                    }
                }
            }
            out
        })
        .collect();
    let total: usize = cands.iter().map(Vec::len).sum();
    if total > kk {
        // The exact cut: the kk-th entry in the order (value descending, then row-major).
        let mut flat: Vec<(f32, u64)> = Vec::with_capacity(total);
        for (r, c) in cands.iter().enumerate() {
            flat.extend(c.iter().map(|&(v, j)| (v, (r * m) as u64 + j as u64)));
        }
        let order = |a: &(f32, u64), b: &(f32, u64)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        flat.select_nth_unstable_by(kk - 1, order);
        let cut = flat[kk - 1];
        cands.par_iter_mut().enumerate().for_each(|(r, c)| {
            c.retain(|&(v, j)| order(&(v, (r * m) as u64 + j as u64), &cut) != std::cmp::Ordering::Greater)
        });
    }
    Csr::from_rows(cands.into_iter().map(|c| c.into_iter().map(|(v, j)| (j, v)).collect()).collect())
}

/// The maximum of `row + b_enc` over each block of `BLOCK` latents (the last may be shorter),
/// into `out` (one per block).
fn block_maxima(row: &[f32], b_enc: &[f32], out: &mut [f32]) {
    let full = row.len() / BLOCK;
    for ((blk, bb), o) in row.chunks_exact(BLOCK).zip(b_enc.chunks_exact(BLOCK)).zip(out.iter_mut()) {
        let (blk, bb): (&[f32; BLOCK], &[f32; BLOCK]) = (blk.try_into().expect("block"), bb.try_into().expect("block"));
        let mut mx = [f32::NEG_INFINITY; 16];
        for g in 0..BLOCK / 16 {
            for l in 0..16 {
                let v = blk[g * 16 + l] + bb[g * 16 + l];
                mx[l] = if v > mx[l] { v } else { mx[l] };
            }
        }
        *o = mx.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    }
    if full < out.len() {
        out[full] = (full * BLOCK..row.len()).map(|t| row[t] + b_enc[t]).fold(f32::NEG_INFINITY, f32::max);
    }
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

    /// BatchTopK by a full sort: the kk largest positive values, ties in row-major order.
    fn batch_topk_by_sort(pre: &[f32], b: &[f32], kk: usize) -> Csr {
        let m = b.len();
        let n = pre.len() / m;
        let mut all: Vec<(f32, usize)> = (0..n * m).map(|i| (pre[i] + b[i % m], i)).filter(|e| e.0 > 0.0).collect();
        all.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        all.truncate(kk);
        let mut rows = vec![Vec::new(); n];
        for (v, i) in all {
            rows[i / m].push((i as u32 % m as u32, v));
        }
        Csr::from_rows(rows)
    }

    #[test]
    fn batch_topk_keeps_exactly_the_largest() {
        // Shapes with and without a short last block; values on a coarse grid so that many
        // ties fall on the cut; biases that leave few positives; kk beyond the positives.
        for (n, m, kk, grid, shift) in [
            (6, 200, 30, 0.0, 0.0),
            (6, 200, 30, 0.25, 0.0),
            (9, 4096 + 40, 9 * 16, 0.0, 0.0),
            (9, 4096 + 40, 9 * 16, 0.5, -1.0),
            (5, 1024, 5 * 64, 0.0, -2.5),
            (4, 130, 4 * 130, 0.0, 0.0),
            (3, 64, 1, 1.0, 0.0),
        ] {
            let mut pre = values(n, m);
            if grid > 0.0 {
                pre.iter_mut().for_each(|v| *v = (*v / grid).round() * grid);
            }
            pre[3] = pre[7];
            let b: Vec<f32> = (0..m).map(|j| shift + 0.001 * (j % 7) as f32).collect();
            let got = batch_topk(&pre, &b, kk);
            assert_eq!(got, batch_topk_by_sort(&pre, &b, kk), "n {n} m {m} kk {kk} grid {grid} shift {shift}");
            assert!(got.nnz() <= kk);
        }
    }
}
