//! Float32 products of a few rows with the tied unembedding: decoding's shape.
//!
//! At one to a few rows a matmul reads every weight once and does two flops per weight read, so
//! its speed is the memory bandwidth, not the arithmetic. The `gemm` crate behind candle's matmul
//! streams the 671 MB unembedding of Gemma 3 at ~12 GB/s on the machines measured, where numpy's
//! BLAS reaches ~30 GB/s (`tools/bench.py --roofline`, BENCHMARKS.md). This kernel reads each
//! weight row once, contiguously, for all rows of the input, and splits the work in many small
//! pieces so that two cores (or one, when another job holds the other) stay busy. (The same idea
//! for the blocks' `[in, out]` weights measured slower than the matmul and was dropped.)
//!
//! Results equal the matmul's up to float rounding (the summation order differs); the greedy
//! index's bounds (`greedy.rs`) hold for any order.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

/// Up to this many input rows the kernels here beat the matmul (measured in BENCHMARKS.md).
pub const MAX_ROWS: usize = 4;

/// Weight rows per parallel work unit for `[out, in]` weights.
const ROWS: usize = 512;

/// Runs `f` on the contiguous float32 data of `t`.
pub fn with_f32_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { bail!("a CPU tensor was expected") };
    let (start, end) = layout.contiguous_offsets().context("a contiguous tensor was expected")?;
    let data = cpu.as_slice::<f32>()?;
    f(&data[start..end])
}

/// Whether `x` [rows, in] and a weight qualify: float32 on the CPU, few rows.
pub fn applies(x: &Tensor, w: &Tensor) -> bool {
    x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.device().is_cpu()
        && w.is_contiguous()
        && x.dims().len() == 2
        && x.dim(0).is_ok_and(|m| (1..=MAX_ROWS).contains(&m))
}

/// `x Wᵀ` for W stored `[out, in]` (`Linear::DenseRows`, the tied unembedding): one dot product
/// per weight row. x [rows, in] → [rows, out].
pub fn rows_times_out_in(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    let (n, k2) = w.dims2()?;
    if k != k2 {
        bail!("gemv: input has {k} columns, the weight {k2}");
    }
    let x = x.contiguous()?;
    let xs = x.to_vec2::<f32>()?;
    // Computed [out, rows], transposed at the end.
    let mut t = vec![0f32; n * m];
    with_f32_slice(w, |w| {
        t.par_chunks_mut(ROWS * m).zip(w.par_chunks(ROWS * k)).for_each(|(o, wchunk)| {
            for (o, wrow) in o.chunks_mut(m).zip(wchunk.chunks(k)) {
                for (o, xr) in o.iter_mut().zip(&xs) {
                    *o = dot(wrow, xr);
                }
            }
        });
        Ok(())
    })?;
    let mut out = vec![0f32; m * n];
    for (i, row) in t.chunks(m).enumerate() {
        for (r, &v) in row.iter().enumerate() {
            out[r * n + i] = v;
        }
    }
    Ok(Tensor::from_vec(out, (m, n), x.device())?)
}

/// Dot product in 16 lanes with fused multiply-adds (vectorised by the compiler).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s = x.mul_add(*y, s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn close(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn rows_times_the_table_match_the_matmul() {
        let dev = Device::Cpu;
        for (m, k, n) in [(1, 64, 300), (3, 70, 129), (4, 640, 1024)] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let wt = Tensor::randn(0f32, 0.05, (k, n), &dev).unwrap();
            let want = x.matmul(&wt).unwrap();
            let w = wt.t().unwrap().contiguous().unwrap();
            assert!(close(&rows_times_out_in(&x, &w).unwrap(), &want) < 1e-4, "[out, in] {m}x{k}x{n}");
        }
    }
}
