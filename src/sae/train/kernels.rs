//! The few numeric kernels training needs: dot products and axpy over one activation row (with
//! a fixed summation order, so results never depend on how work was split between threads),
//! and dense float32 matrix products through the `gemm` crate (which candle's CPU matmul also
//! uses; it picks AVX-512 / AVX2 kernels at run time).

/// `a · b` with 16 independent fused multiply-add lanes, combined in a fixed order.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        let (x, y): (&[f32; 16], &[f32; 16]) = (x.try_into().expect("16"), y.try_into().expect("16"));
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail = x.mul_add(*y, tail);
    }
    combine(&acc, tail)
}

/// `a · b` (as `dot`) while adding `s a` to `y`: one pass over `a` for both.
#[inline]
pub fn dot_axpy(a: &[f32], b: &[f32], y: &mut [f32], s: f32) -> f32 {
    debug_assert!(a.len() == b.len() && a.len() == y.len());
    let mut acc = [0f32; 16];
    let n16 = a.len() / 16 * 16;
    for ((x, w), o) in a[..n16].chunks_exact(16).zip(b[..n16].chunks_exact(16)).zip(y[..n16].chunks_exact_mut(16)) {
        let (x, w): (&[f32; 16], &[f32; 16]) = (x.try_into().expect("16"), w.try_into().expect("16"));
        let o: &mut [f32; 16] = o.try_into().expect("16");
        for i in 0..16 {
            acc[i] = x[i].mul_add(w[i], acc[i]);
            o[i] = x[i].mul_add(s, o[i]);
        }
    }
    let mut tail = 0f32;
    for i in n16..a.len() {
        tail = a[i].mul_add(b[i], tail);
        y[i] = a[i].mul_add(s, y[i]);
    }
    combine(&acc, tail)
}

fn combine(acc: &[f32; 16], tail: f32) -> f32 {
    let mut s8 = [0f32; 8];
    for i in 0..8 {
        s8[i] = acc[i] + acc[i + 8];
    }
    let s4 = [s8[0] + s8[4], s8[1] + s8[5], s8[2] + s8[6], s8[3] + s8[7]];
    (s4[0] + s4[2]) + (s4[1] + s4[3]) + tail
}

/// `y += a x`.
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    debug_assert_eq!(y.len(), x.len());
    for (y, x) in y.iter_mut().zip(x) {
        *y = x.mul_add(a, *y);
    }
}

/// Asks the CPU to start loading `row` into cache (rows are read at random places, where the
/// hardware prefetcher cannot guess the next one). No effect on results.
#[inline(always)]
pub fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = row.as_ptr() as *const i8;
        for off in (0..row.len() * 4).step_by(64) {
            // SAFETY: the address lies inside `row`; a prefetch never faults.
            unsafe { _mm_prefetch(p.add(off), _MM_HINT_T0) };
        }
    }
}

/// A matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major [rows, cols] matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major [cols, rows] matrix, as a [rows, cols] view.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: 1, cs: rows }
    }

    fn check(&self) {
        assert!(self.rows > 0 && self.cols > 0);
        let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
        assert!(last < self.data.len(), "matrix view out of bounds");
    }
}

/// `dst = a · b` with `dst` row-major [a.rows, b.cols].
pub fn matmul(dst: &mut [f32], a: Mat, b: Mat) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!(dst.len(), a.rows * b.cols, "destination has the wrong size");
    a.check();
    b.check();
    let threads = rayon::current_num_threads();
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: every view was bounds-checked above and `dst` is exclusively borrowed, distinct
    // from the inputs.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst.as_mut_ptr(),
            1,
            b.cols as isize,
            false,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_naive_in_every_layout() {
        let (n, k, m) = (5, 7, 3);
        let a: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * m).map(|i| (i as f32 * 0.71).cos()).collect();
        let bt: Vec<f32> = (0..m * k).map(|i| b[(i % k) * m + i / k]).collect();
        let naive: Vec<f32> = (0..n * m).map(|i| (0..k).map(|t| a[(i / m) * k + t] * b[t * m + i % m]).sum()).collect();
        for bv in [Mat::rows(&b, k, m), Mat::transposed(&bt, k, m)] {
            let mut c = vec![0f32; n * m];
            matmul(&mut c, Mat::rows(&a, n, k), bv);
            for (x, y) in c.iter().zip(&naive) {
                assert!((x - y).abs() < 1e-5);
            }
        }
        let x: Vec<f32> = (0..37).map(|i| i as f32).collect();
        assert_eq!(dot(&x, &x), (0..37).map(|i| (i * i) as f32).sum::<f32>());
    }
}
