//! Products of a few to a few hundred rows with the tied unembedding table: the shape of
//! decoding (1–32 rows) and of answer scoring.
//!
//! Why not the matmul: the `gemm` crate behind candle's matmul repacks its right-hand side at
//! every call, and for the 262,144 × 640 table of Gemma 3 that is 671 MB read and written again
//! per decoding step: at 32 rows it ran at 176 GFLOP/s where the same crate reaches 450 on
//! well-shaped products (BENCHMARKS.md). This kernel packs the table once, the first time it is
//! used, in the layout its inner loop reads: panels of 16 table rows, stored k-major, so one
//! vector load gives 16 outputs' weights for one input column, and each input value is broadcast
//! against it (an outer-product update, no horizontal sums).
//!
//! Why it is still the exact float32 product: the default model's table comes from GGUF Q8_0
//! blocks, i.e. every 32 consecutive values of a row are int8 codes times one scale. When every
//! block reproduces its float32 values exactly (`scale × code == value`, checked bit for bit when
//! the panels are built), the panels keep the codes and scales, 189 MB instead of 671 MB, and
//! the kernel rebuilds each weight exactly before its multiply-add. Any other table (a Hugging
//! Face checkpoint's, an edited one) is packed as float32. Either way the result is a float32 dot
//! product of the exact weights with the input, each output summed in input order; it differs
//! from the matmul's only in summation order (as any two GEMMs do).
//!
//! Kernels are chosen at run time: AVX-512, AVX2 with FMA, or portable code.

use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

/// Outputs per panel: one AVX-512 vector of float32 (two AVX2 vectors).
const LANES: usize = 16;

/// Values per scale in the int8 form: GGUF's Q8_0 block.
const BLOCK: usize = 32;

/// Panels per parallel work unit at most (384 table rows): many small pieces, so that a core
/// slowed by another job delays only a sliver of the product; a multiple of every tile's panel
/// count. Small matrices are cut finer, into at least `MIN_TASKS_PER_THREAD` per thread.
const PANELS_PER_TASK: usize = 24;
const MIN_TASKS_PER_THREAD: usize = 2;

/// Up to this many rows the kernel beats the matmul on the unembedding (measured in
/// BENCHMARKS.md: 1.1× at 128 rows, 0.95× at 256).
pub const MAX_ROWS: usize = 128;

/// The same for the blocks' smaller matrices (640 × 256 to 640 × 2048): level with the matmul
/// at 32 rows, behind it from 64 (BENCHMARKS.md).
pub const MAX_BLOCK_ROWS: usize = 32;

/// Runs `f` on the contiguous float32 data of `t`.
pub fn with_f32_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { bail!("a CPU tensor was expected") };
    let (start, end) = layout.contiguous_offsets().context("a contiguous tensor was expected")?;
    let data = cpu.as_slice::<f32>()?;
    f(&data[start..end])
}

/// A map `x Wᵀ` with W [out, in] (the tied unembedding; a block's linear layer whose GGUF
/// blocks are int8 codes times one scale), its panels, and the float32 weights the matmul takes
/// for products of more than `MAX_ROWS` rows.
#[derive(Clone)]
pub struct RowsTable {
    w: Fallback,
    dims: (usize, usize),
    panels: Arc<OnceLock<Panels>>,
}

/// What products too large for the kernel run on.
#[derive(Clone)]
enum Fallback {
    /// W as stored, [out, in] (the tied unembedding, shared with the embedding).
    Rows(Tensor),
    /// Wᵀ stored contiguous, [in, out], which the matmul reads without repacking.
    Transposed(Tensor),
    /// Nothing: quantized mode keeps only the int8 panels; every product takes the kernel.
    None,
}

impl std::fmt::Debug for RowsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowsTable").field("dims", &self.dims).finish()
    }
}

/// The table in the kernel's layout.
struct Panels {
    out: usize,
    d: usize,
    source: PanelSource,
}

enum PanelSource {
    /// codes [panel][k][lane], scales [panel][k / BLOCK][lane]; rows past the table are zero.
    Int8 { codes: Vec<i8>, scales: Vec<f32> },
    /// weights [panel][k][lane].
    F32(Vec<f32>),
}

impl RowsTable {
    /// A float32 table [out, in] (a dtype other than float32, or a non-2-D tensor, is an error
    /// when the kernel first runs; `applies` keeps such tables on the matmul).
    pub fn new(w: Tensor) -> Self {
        let dims = w.dims2().unwrap_or((0, 0));
        Self { w: Fallback::Rows(w), dims, panels: Arc::new(OnceLock::new()) }
    }

    /// The int8 panels of W [out, in] (float32 values of GGUF blocks) if every block of 32 is
    /// exactly int8 codes times one scale (Q8_0, Q5_0, Q4_0 blocks are), else `None`. `keep`:
    /// also keep Wᵀ in float32 for the matmul to take products of more than `MAX_ROWS` rows;
    /// without it every product takes the kernel.
    pub fn packed(w: &Tensor, keep: bool) -> Result<Option<Self>> {
        let panels = Panels::new(w)?;
        if !matches!(panels.source, PanelSource::Int8 { .. }) {
            return Ok(None);
        }
        let fallback = if keep { Fallback::Transposed(w.t()?.contiguous()?) } else { Fallback::None };
        let dims = (panels.out, panels.d);
        Ok(Some(Self { w: fallback, dims, panels: Arc::new(OnceLock::from(panels)) }))
    }

    /// The int8 panels straight from GGUF Q8_0 blocks (per block of 32: a float16 scale, then
    /// 32 int8 codes), for products only (no float32 table): quantized mode's tied unembedding,
    /// whose float32 copy (671 MB for Gemma 3's 262k × 640) would otherwise exist while the
    /// panels are built. The same codes and scales the blocks dequantize to.
    pub fn from_q8_0_blocks(bytes: &[u8], out: usize, d: usize) -> Result<Self> {
        const BLOCK_BYTES: usize = 2 + BLOCK;
        if !d.is_multiple_of(BLOCK) {
            bail!("Q8_0 table [{out}, {d}]: rows of {d} values are not whole blocks of {BLOCK}");
        }
        let nb = d / BLOCK;
        if bytes.len() != out * nb * BLOCK_BYTES {
            bail!("Q8_0 table [{out}, {d}]: {} bytes, expected {}", bytes.len(), out * nb * BLOCK_BYTES);
        }
        let source = int8_panels_with(out, d, |row, b, codes| {
            let block = &bytes[(row * nb + b) * BLOCK_BYTES..(row * nb + b + 1) * BLOCK_BYTES];
            for (c, &byte) in codes.iter_mut().zip(&block[2..]) {
                *c = byte as i8;
            }
            Some(half::f16::from_le_bytes([block[0], block[1]]).to_f32())
        })
        .expect("every Q8_0 block has a scale");
        Ok(Self { w: Fallback::None, dims: (out, d), panels: Arc::new(OnceLock::from(Panels { out, d, source })) })
    }

    /// The float32 table as stored, [out, in], if this is a tied unembedding's.
    pub fn tensor(&self) -> Option<&Tensor> {
        match &self.w {
            Fallback::Rows(w) => Some(w),
            _ => None,
        }
    }

    /// Wᵀ [in, out] in float32, if this is a block's layer loaded in float32.
    pub fn transposed(&self) -> Option<&Tensor> {
        match &self.w {
            Fallback::Transposed(wt) => Some(wt),
            _ => None,
        }
    }

    /// `x Wᵀ` through the matmul (products too large for the kernel). x [rows, in].
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        match &self.w {
            Fallback::Rows(w) => Ok(x.matmul(&w.t()?)?),
            Fallback::Transposed(wt) => Ok(x.matmul(wt)?),
            Fallback::None => bail!("the packed weights take float32 inputs on the CPU, got {:?}", x.dtype()),
        }
    }

    /// Whether this kernel takes `x` [rows, in]: float32 on the CPU, 1..=MAX_ROWS rows (any
    /// number when there is no float32 table to hand larger products to the matmul).
    pub fn applies(&self, x: &Tensor) -> bool {
        let (table_ok, max) = match &self.w {
            Fallback::Rows(w) => (w.dtype() == DType::F32 && w.device().is_cpu() && w.dims().len() == 2, MAX_ROWS),
            Fallback::Transposed(_) => (true, MAX_BLOCK_ROWS),
            Fallback::None => (true, usize::MAX),
        };
        table_ok
            && x.dtype() == DType::F32
            && x.device().is_cpu()
            && x.dims().len() == 2
            && x.dim(0).is_ok_and(|m| (1..=max).contains(&m))
    }

    /// Whether the panels hold int8 codes (the table is exactly on a Q8_0 grid), once built.
    pub fn is_int8(&self) -> Option<bool> {
        self.panels.get().map(|p| matches!(p.source, PanelSource::Int8 { .. }))
    }

    fn panels(&self) -> Result<&Panels> {
        if let Some(p) = self.panels.get() {
            return Ok(p);
        }
        let Fallback::Rows(w) = &self.w else { unreachable!("packed tables are built with their panels") };
        let built = Panels::new(w)?;
        Ok(self.panels.get_or_init(|| built))
    }

    /// The index of each row's largest output of `x Wᵀ` (the lowest among equal ones), without
    /// materializing the [rows, out] product: greedy decoding's pick. x [rows, in].
    pub fn argmax(&self, x: &Tensor) -> Result<Vec<u32>> {
        let (m, k) = x.dims2()?;
        let k2 = self.dims.1;
        if k != k2 {
            bail!("unembedding: input has {k} columns, the table {k2}");
        }
        let panels = self.panels()?;
        let x = x.contiguous()?;
        let best = with_f32_slice(&x, |xs| Ok(panels.argmax(xs, m)))?;
        if let Some(r) = best.iter().position(|b| b.1 == u32::MAX) {
            bail!("unembedding: row {r} has no comparable logit (all NaN)");
        }
        Ok(best.into_iter().map(|b| b.1).collect())
    }

    /// `x Wᵀ`: x [rows, in] → [rows, out].
    pub fn product(&self, x: &Tensor) -> Result<Tensor> {
        let (m, k) = x.dims2()?;
        let (n, k2) = self.dims;
        if k != k2 {
            bail!("unembedding: input has {k} columns, the table {k2}");
        }
        let panels = self.panels()?;
        let x = x.contiguous()?;
        let mut out = vec![0f32; m * n];
        with_f32_slice(&x, |xs| {
            panels.product(xs, m, &mut out);
            Ok(())
        })?;
        Ok(Tensor::from_vec(out, (m, n), x.device())?)
    }
}

impl Panels {
    fn new(w: &Tensor) -> Result<Self> {
        if w.dtype() != DType::F32 {
            bail!("the unembedding kernel needs a float32 table, got {:?}", w.dtype());
        }
        let (out, d) = w.dims2()?;
        let w = w.contiguous()?;
        let source = with_f32_slice(&w, |w| Ok(int8_panels(w, out, d).unwrap_or_else(|| f32_panels(w, out, d))))?;
        Ok(Self { out, d, source })
    }

    /// out [m][self.out] = x [m][d] · tableᵀ, with the widest kernels this CPU has.
    fn product(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.product_with(x, m, out, super::simd_level())
    }

    /// The same with the kernels of `level` ("avx512", "avx2", anything else: portable code).
    fn product_with(&self, x: &[f32], m: usize, out: &mut [f32], level: &str) {
        assert_eq!(out.len(), m * self.out, "output size");
        let dst = SharedOut(out.as_mut_ptr());
        self.for_each_task(x, m, level, |first, n, acc| {
            for r in 0..m {
                for j in 0..n {
                    let p = first + j;
                    let valid = LANES.min(self.out - p * LANES);
                    // SAFETY: each task writes only its own panels' columns of each output row,
                    // inside `out` ([m][self.out]); no two tasks share a column.
                    unsafe {
                        let at = dst.at(r * self.out + p * LANES);
                        std::ptr::copy_nonoverlapping(acc[r * n + j].as_ptr(), at, valid);
                    }
                }
            }
        });
    }

    /// Each row's largest output and its index (the lowest index among equal values; NaN never
    /// wins), without writing the [m][out] product out.
    fn argmax(&self, x: &[f32], m: usize) -> Vec<(f32, u32)> {
        let none = (f32::NEG_INFINITY, u32::MAX);
        let best = std::sync::Mutex::new(vec![none; m]);
        self.for_each_task(x, m, super::simd_level(), |first, n, acc| {
            let mut local = vec![none; m];
            for (r, l) in local.iter_mut().enumerate() {
                for j in 0..n {
                    let p = first + j;
                    for (lane, &v) in acc[r * n + j].iter().enumerate().take(LANES.min(self.out - p * LANES)) {
                        if v > l.0 || (l.1 == u32::MAX && v == l.0) {
                            *l = (v, (p * LANES + lane) as u32);
                        }
                    }
                }
            }
            let mut best = best.lock().unwrap_or_else(|e| e.into_inner());
            for (b, l) in best.iter_mut().zip(local) {
                if l.0 > b.0 || (l.0 == b.0 && l.1 < b.1) {
                    *b = l;
                }
            }
        });
        best.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the product in parallel tasks of up to `PANELS_PER_TASK` panels and hands each task's
    /// results to `visit(first panel, panels, acc)`, acc[r * panels + j] being row r's 16
    /// outputs of panel `first + j`.
    fn for_each_task(&self, x: &[f32], m: usize, level: &str, visit: impl Fn(usize, usize, &[[f32; LANES]]) + Sync) {
        let d = self.d;
        // x transposed, [d][m]: the m values broadcast at one input column are contiguous.
        let mut xt = vec![0f32; d * m];
        for (r, row) in x.chunks(d).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                xt[k * m + r] = v;
            }
        }
        let n_panels = self.out.div_ceil(LANES);
        let nb = d.div_ceil(BLOCK);
        let per_task =
            PANELS_PER_TASK.min(n_panels.div_ceil(MIN_TASKS_PER_THREAD * rayon::current_num_threads()).max(1));
        (0..n_panels.div_ceil(per_task)).into_par_iter().for_each(|task| {
            let first = task * per_task;
            let n = per_task.min(n_panels - first);
            // Int8 weights are rebuilt inside the tiles (measured faster at every row count than
            // rebuilding a panel once into a float32 scratch that the tiles share).
            let panels = match &self.source {
                PanelSource::Int8 { codes, scales } => PanelRef::Int8 {
                    codes: &codes[first * d * LANES..(first + n) * d * LANES],
                    scales: &scales[first * nb * LANES..(first + n) * nb * LANES],
                },
                PanelSource::F32(w) => PanelRef::F32(&w[first * d * LANES..(first + n) * d * LANES]),
            };
            let mut acc = vec![[0f32; LANES]; m * n];
            panels_times_rows(panels, n, &xt, m, d, &mut acc, level);
            visit(first, n, &acc);
        });
    }
}

/// The output pointer shared by the tasks, which write disjoint columns.
struct SharedOut(*mut f32);
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

impl SharedOut {
    fn at(&self, i: usize) -> *mut f32 {
        // SAFETY (of the callers): `i` stays inside the output the pointer was taken from.
        unsafe { self.0.add(i) }
    }
}

/// The int8 panels, if every block of every row is exactly `scale × code` in float32.
fn int8_panels(w: &[f32], out: usize, d: usize) -> Option<PanelSource> {
    int8_panels_with(out, d, |row, b, codes| {
        let block = &w[row * d + b * BLOCK..row * d + b * BLOCK + codes.len()];
        let scale = block_scale(block)?;
        for (c, &v) in codes.iter_mut().zip(block) {
            *c = if scale == 0.0 { 0 } else { (v / scale).round() as i8 };
        }
        Some(scale)
    })
}

/// The panel layout of int8 codes and block scales, filled block by block: `block(row, b, codes)`
/// writes the codes of block `b` of `row` (BLOCK of them, fewer for a short last block) and
/// returns its scale, or `None` when the table has no such form (then so does this).
fn int8_panels_with(
    out: usize,
    d: usize,
    block: impl Fn(usize, usize, &mut [i8]) -> Option<f32> + Sync,
) -> Option<PanelSource> {
    let n_panels = out.div_ceil(LANES);
    let nb = d.div_ceil(BLOCK);
    let mut codes = vec![0i8; n_panels * d * LANES];
    let mut scales = vec![0f32; n_panels * nb * LANES];
    let complete = codes.par_chunks_mut(d * LANES).zip(scales.par_chunks_mut(nb * LANES)).enumerate().all(
        |(p, (codes, scales))| {
            let mut scratch = [0i8; BLOCK];
            for lane in 0..LANES.min(out - p * LANES) {
                for b in 0..nb {
                    let len = BLOCK.min(d - b * BLOCK);
                    let Some(scale) = block(p * LANES + lane, b, &mut scratch[..len]) else { return false };
                    scales[b * LANES + lane] = scale;
                    for (j, &c) in scratch[..len].iter().enumerate() {
                        codes[(b * BLOCK + j) * LANES + lane] = c;
                    }
                }
            }
            true
        },
    );
    complete.then_some(PanelSource::Int8 { codes, scales })
}

/// The scale s that makes every value of `block` exactly `s × code` with integer codes in
/// −127..=127, if there is one of the form max|v| / c: Q8_0 blocks have c = 127, Q5_0 blocks
/// 16 or 15 (their codes are −16..=15), Q4_0 blocks 8 or 7; other c are tried last.
fn block_scale(block: &[f32]) -> Option<f32> {
    let max = block.iter().fold(0f32, |m, &v| m.max(v.abs()));
    if !max.is_finite() || block.iter().any(|v| v.is_nan()) {
        return None;
    }
    if max == 0.0 {
        return Some(0.0);
    }
    let exact = |s: f32| {
        block.iter().all(|&v| {
            let q = (v / s).round();
            q.abs() <= 127.0 && s * q == v
        })
    };
    [127u8, 16, 15, 8, 7].into_iter().chain((1..=126).rev()).map(|c| max / c as f32).find(|&s| exact(s))
}

fn f32_panels(w: &[f32], out: usize, d: usize) -> PanelSource {
    let n_panels = out.div_ceil(LANES);
    let mut panels = vec![0f32; n_panels * d * LANES];
    panels.par_chunks_mut(d * LANES).enumerate().for_each(|(p, panel)| {
        for lane in 0..LANES.min(out - p * LANES) {
            let row = &w[(p * LANES + lane) * d..(p * LANES + lane + 1) * d];
            for (k, &v) in row.iter().enumerate() {
                panel[k * LANES + lane] = v;
            }
        }
    });
    PanelSource::F32(panels)
}

/// A run of consecutive panels as a kernel reads them: float32, or int8 codes rebuilt exactly
/// in the kernel (`scale × code`, checked when packed).
#[derive(Clone, Copy)]
enum PanelRef<'a> {
    F32(&'a [f32]),
    Int8 { codes: &'a [i8], scales: &'a [f32] },
}

/// acc[r * n + j] = Σ_k x[r][k] · w_j[k] (16 lanes, k in order) for every row r of the input (xt
/// is [d][m]) and each of the `n` panels j. Every output is summed the same way whatever the
/// tile, so a row's logits do not depend on the other rows.
fn panels_times_rows(w: PanelRef, n: usize, xt: &[f32], m: usize, d: usize, acc: &mut [[f32; LANES]], level: &str) {
    match w {
        PanelRef::F32(w) => assert!(w.len() >= n * d * LANES),
        PanelRef::Int8 { codes, scales } => {
            assert!(codes.len() >= n * d * LANES && scales.len() >= n * d.div_ceil(BLOCK) * LANES)
        }
    }
    assert!(xt.len() >= d * m && acc.len() >= m * n);
    #[cfg(target_arch = "x86_64")]
    {
        if level == "avx512" {
            // SAFETY: AVX-512F was detected at run time; the lengths were checked above.
            return unsafe { x86::panels_avx512(w, n, xt, m, d, acc) };
        }
        if level == "avx2" {
            // SAFETY: AVX2 and FMA were detected at run time; the lengths were checked above.
            return unsafe { x86::panels_avx2(w, n, xt, m, d, acc) };
        }
    }
    let _ = level;
    let nb = d.div_ceil(BLOCK);
    for r in 0..m {
        for j in 0..n {
            let a = &mut acc[r * n + j];
            *a = [0f32; LANES];
            for k in 0..d {
                let x = xt[k * m + r];
                for l in 0..LANES {
                    let wl = match w {
                        PanelRef::F32(w) => w[(j * d + k) * LANES + l],
                        PanelRef::Int8 { codes, scales } => {
                            codes[(j * d + k) * LANES + l] as f32 * scales[(j * nb + k / BLOCK) * LANES + l]
                        }
                    };
                    a[l] = x.mul_add(wl, a[l]);
                }
            }
        }
    }
}

/// Row tiles of at most `tile` rows, as even as possible: (first row, rows).
fn tiles(m: usize, tile: usize) -> impl Iterator<Item = (usize, usize)> {
    let n = m.div_ceil(tile).max(1);
    let (base, extra) = (m / n, m % n);
    (0..n).scan(0, move |start, t| {
        let rows = base + usize::from(t < extra);
        let at = *start;
        *start += rows;
        Some((at, rows))
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Register tiles of P panels × R rows: P·R accumulators, P weight vectors per input column
    //! (each used R times) and one broadcast input value per row (used P times). Few rows take
    //! more panels, so that enough independent sums are in flight to hide the multiply-add
    //! latency; many rows take fewer, so that the weights' loads and int8 rebuilding are shared.

    use super::{tiles, PanelRef, BLOCK, LANES};
    use std::arch::x86_64::*;

    /// Rows per tile: AVX-512 has 32 vector registers (at most 24 accumulators here).
    const ROWS_512: usize = 12;
    /// Rows per tile for 13 to 32 rows (batched decoding): one panel × 16 rows shares each rebuilt
    /// int8 weight vector among more rows than two panels × 11 (unembedding at 32 rows 322 → 334
    /// GFLOP/s, batch-32 decoding ~485 → ~505 tok/s); more rows keep `ROWS_512` (64 and 128 rows
    /// measured 5–10% slower with 16).
    const ROWS_512_BATCH: usize = 16;
    /// AVX2 has 16 (at most 12 accumulators of two 8-lane halves).
    const ROWS_256: usize = 6;

    type Tile = unsafe fn(*const f32, *const i8, *const f32, usize, *const f32, usize, *mut [f32; LANES], usize);

    /// The tile for `rows` rows: (panels per tile, the tile, the one-panel tile for leftovers).
    macro_rules! choose {
        ($f:ident, $q:literal, $rows:expr, $($r:literal => $p:literal),+) => {
            match $rows {
                $($r => ($p, $f::<$p, $r, $q> as Tile, $f::<1, $r, $q> as Tile),)+
                _ => unreachable!("tile rows are 1..=the tile"),
            }
        };
    }

    /// Runs the tiles over `n` panels and `m` rows with the given (panels, tile, leftover tile).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        w: PanelRef,
        n: usize,
        xt: &[f32],
        m: usize,
        d: usize,
        acc: &mut [[f32; LANES]],
        max_rows: usize,
        pick: impl Fn(usize, bool) -> (usize, Tile, Tile),
    ) {
        let nb = d.div_ceil(BLOCK);
        for (r0, rows) in tiles(m, max_rows) {
            let (p, tile, one) = pick(rows, matches!(w, PanelRef::Int8 { .. }));
            let mut j = 0;
            while j < n {
                let (f, step) = if j + p <= n { (tile, p) } else { (one, 1) };
                let (wp, cp, sp) = match w {
                    PanelRef::F32(w) => (w.as_ptr().add(j * d * LANES), std::ptr::null(), std::ptr::null()),
                    PanelRef::Int8 { codes, scales } => {
                        (std::ptr::null(), codes.as_ptr().add(j * d * LANES), scales.as_ptr().add(j * nb * LANES))
                    }
                };
                f(wp, cp, sp, d, xt.as_ptr().add(r0), m, acc.as_mut_ptr().add(r0 * n + j), n);
                j += step;
            }
        }
    }

    /// The caller has checked the panels', `xt`'s and `acc`'s lengths.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn panels_avx512(w: PanelRef, n: usize, xt: &[f32], m: usize, d: usize, acc: &mut [[f32; LANES]]) {
        let max_rows = if (ROWS_512 + 1..=2 * ROWS_512_BATCH).contains(&m) { ROWS_512_BATCH } else { ROWS_512 };
        run(w, n, xt, m, d, acc, max_rows, |rows, q| {
            if q {
                choose!(tile_avx512, true, rows, 1 => 8, 2 => 6, 3 => 4, 4 => 4, 5 => 3, 6 => 3, 7 => 3, 8 => 3, 9 => 2, 10 => 2, 11 => 2, 12 => 2, 13 => 1, 14 => 1, 15 => 1, 16 => 1)
            } else {
                choose!(tile_avx512, false, rows, 1 => 8, 2 => 6, 3 => 4, 4 => 4, 5 => 3, 6 => 3, 7 => 3, 8 => 3, 9 => 2, 10 => 2, 11 => 2, 12 => 2, 13 => 1, 14 => 1, 15 => 1, 16 => 1)
            }
        })
    }

    /// P panels × R rows. `Q`: int8 codes and scales (w unused), else float32 panels.
    /// Panels are `d * LANES` apart; acc row r, panel j is at `acc + r * stride + j`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_avx512<const P: usize, const R: usize, const Q: bool>(
        w: *const f32,
        codes: *const i8,
        scales: *const f32,
        d: usize,
        x: *const f32,
        m: usize,
        acc: *mut [f32; LANES],
        stride: usize,
    ) {
        let nb = d.div_ceil(BLOCK);
        let mut a = [[_mm512_setzero_ps(); P]; R];
        // Block by block, so each panel's scales are loaded once per 32 columns.
        for b in 0..nb {
            let mut s = [_mm512_setzero_ps(); P];
            if Q {
                for (j, s) in s.iter_mut().enumerate() {
                    *s = _mm512_loadu_ps(scales.add((j * nb + b) * LANES));
                }
            }
            for k in b * BLOCK..d.min((b + 1) * BLOCK) {
                let mut wk = [_mm512_setzero_ps(); P];
                for (j, wk) in wk.iter_mut().enumerate() {
                    *wk = if Q {
                        let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(codes.add((j * d + k) * LANES) as *const __m128i));
                        _mm512_mul_ps(_mm512_cvtepi32_ps(q), s[j])
                    } else {
                        _mm512_loadu_ps(w.add((j * d + k) * LANES))
                    };
                }
                let xk = x.add(k * m);
                for (r, a) in a.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*xk.add(r));
                    for (a, &wk) in a.iter_mut().zip(&wk) {
                        *a = _mm512_fmadd_ps(b, wk, *a);
                    }
                }
            }
        }
        for (r, a) in a.iter().enumerate() {
            for (j, a) in a.iter().enumerate() {
                _mm512_storeu_ps((*acc.add(r * stride + j)).as_mut_ptr(), *a);
            }
        }
    }

    /// The caller has checked the panels', `xt`'s and `acc`'s lengths.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn panels_avx2(w: PanelRef, n: usize, xt: &[f32], m: usize, d: usize, acc: &mut [[f32; LANES]]) {
        run(w, n, xt, m, d, acc, ROWS_256, |rows, q| {
            if q {
                choose!(tile_avx2, true, rows, 1 => 3, 2 => 2, 3 => 1, 4 => 1, 5 => 1, 6 => 1)
            } else {
                choose!(tile_avx2, false, rows, 1 => 3, 2 => 2, 3 => 1, 4 => 1, 5 => 1, 6 => 1)
            }
        })
    }

    /// P panels (two 8-lane halves each) × R rows; the layout of `tile_avx512`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_avx2<const P: usize, const R: usize, const Q: bool>(
        w: *const f32,
        codes: *const i8,
        scales: *const f32,
        d: usize,
        x: *const f32,
        m: usize,
        acc: *mut [f32; LANES],
        stride: usize,
    ) {
        let nb = d.div_ceil(BLOCK);
        let mut a = [[[_mm256_setzero_ps(); 2]; P]; R];
        for b in 0..nb {
            let mut s = [[_mm256_setzero_ps(); 2]; P];
            if Q {
                for (j, s) in s.iter_mut().enumerate() {
                    for (h, s) in s.iter_mut().enumerate() {
                        *s = _mm256_loadu_ps(scales.add((j * nb + b) * LANES + h * 8));
                    }
                }
            }
            for k in b * BLOCK..d.min((b + 1) * BLOCK) {
                let mut wk = [[_mm256_setzero_ps(); 2]; P];
                for (j, wk) in wk.iter_mut().enumerate() {
                    for (h, wk) in wk.iter_mut().enumerate() {
                        *wk = if Q {
                            let c = codes.add((j * d + k) * LANES + h * 8);
                            let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(c as *const __m128i));
                            _mm256_mul_ps(_mm256_cvtepi32_ps(q), s[j][h])
                        } else {
                            _mm256_loadu_ps(w.add((j * d + k) * LANES + h * 8))
                        };
                    }
                }
                let xk = x.add(k * m);
                for (r, a) in a.iter_mut().enumerate() {
                    let b = _mm256_broadcast_ss(&*xk.add(r));
                    for (a, wk) in a.iter_mut().zip(&wk) {
                        a[0] = _mm256_fmadd_ps(b, wk[0], a[0]);
                        a[1] = _mm256_fmadd_ps(b, wk[1], a[1]);
                    }
                }
            }
        }
        for (r, a) in a.iter().enumerate() {
            for (j, a) in a.iter().enumerate() {
                let p = (*acc.add(r * stride + j)).as_mut_ptr();
                _mm256_storeu_ps(p, a[0]);
                _mm256_storeu_ps(p.add(8), a[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// A table on Q8_0's grid: int8 codes (one ±127 per block) times one scale per 32 values.
    fn q8_table(out: usize, d: usize) -> Tensor {
        let dev = Device::Cpu;
        let codes = Tensor::randn(0f32, 40.0, (out, d), &dev).unwrap().clamp(-127f32, 127f32).unwrap().round().unwrap();
        let mut rows = codes.to_vec2::<f32>().unwrap();
        for (i, row) in rows.iter_mut().enumerate() {
            for (b, block) in row.chunks_mut(BLOCK).enumerate() {
                block[0] = if (i + b) % 2 == 0 { 127.0 } else { -127.0 };
                let scale = half::f16::from_f32(0.0004 * (1 + (i * 7 + b) % 13) as f32).to_f32();
                block.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Tensor::from_vec(rows.concat(), (out, d), &dev).unwrap()
    }

    #[test]
    fn every_kernel_matches_the_matmul_for_both_table_forms() {
        let dev = Device::Cpu;
        // Odd sizes: a short last panel, a short last block, tiles cut in the middle.
        for (m, d, out) in
            [(1, 64, 300), (3, 70, 129), (7, 96, 33), (13, 96, 50), (30, 640, 1000), (32, 64, 40), (57, 40, 17)]
        {
            let x = Tensor::randn(0f32, 1.0, (m, d), &dev).unwrap();
            for (form, w) in [("f32", Tensor::randn(0f32, 0.05, (out, d), &dev).unwrap()), ("int8", q8_table(out, d))] {
                let want = x.matmul(&w.t().unwrap()).unwrap();
                let table = RowsTable::new(w.clone());
                let got = table.product(&x).unwrap();
                assert_eq!(table.is_int8(), Some(form == "int8"), "{form} table {out}x{d}");
                assert!(max_diff(&got, &want) < 1e-4, "{form} {m}x{d}x{out}");
                // Every kernel this machine has, and the portable one, on the same panels.
                let panels = table.panels().unwrap();
                let xs = x.to_vec2::<f32>().unwrap().concat();
                let mut base = vec![0f32; m * out];
                panels.product_with(&xs, m, &mut base, "portable");
                for level in ["avx2", "avx512"].into_iter().filter(|&l| supported(l)) {
                    let mut o = vec![0f32; m * out];
                    panels.product_with(&xs, m, &mut o, level);
                    let diff = o.iter().zip(&base).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert!(diff < 1e-4, "{level} vs portable, {form} {m}x{d}x{out}: {diff}");
                }
            }
        }
    }

    fn supported(level: &str) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match level {
                "avx512" => std::arch::is_x86_feature_detected!("avx512f"),
                "avx2" => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
                _ => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            level == "portable"
        }
    }

    #[test]
    fn argmax_is_the_products_argmax_with_ties_to_the_lowest_index() {
        let dev = Device::Cpu;
        for (m, d, out) in [(1, 64, 1000), (5, 40, 17), (13, 96, 777)] {
            let mut rows = q8_table(out, d).to_vec2::<f32>().unwrap();
            // Two equal rows far apart (other tasks' panels), 64 times longer than any other
            // (a power of two keeps them on the grid): x along them makes them tie for the top.
            rows[3].iter_mut().for_each(|v| *v *= 64.0);
            rows[out - 1] = rows[3].clone();
            let w = Tensor::from_vec(rows.concat(), (out, d), &dev).unwrap();
            let mut xs = Tensor::randn(0f32, 1.0, (m, d), &dev).unwrap().to_vec2::<f32>().unwrap();
            xs[0] = w.get(3).unwrap().to_vec1::<f32>().unwrap();
            let x = Tensor::from_vec(xs.concat(), (m, d), &dev).unwrap();
            let table = RowsTable::new(w);
            let logits = table.product(&x).unwrap().to_vec2::<f32>().unwrap();
            let picks = table.argmax(&x).unwrap();
            for (r, (row, &pick)) in logits.iter().zip(&picks).enumerate() {
                let best = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let first = row.iter().position(|&v| v == best).unwrap();
                assert_eq!(pick as usize, first, "row {r} of {m}x{d}x{out}");
            }
            assert_eq!(picks[0], 3, "the tie goes to the lower index");
        }
    }

    #[test]
    fn a_table_off_the_int8_grid_or_not_finite_is_kept_as_float32() {
        let dev = Device::Cpu;
        let mut rows = q8_table(20, 64).to_vec2::<f32>().unwrap();
        rows[5][3] += 1e-7;
        let table = RowsTable::new(Tensor::from_vec(rows.concat(), (20, 64), &dev).unwrap());
        table.product(&Tensor::ones((1, 64), DType::F32, &dev).unwrap()).unwrap();
        assert_eq!(table.is_int8(), Some(false));
        let mut rows = q8_table(20, 64).to_vec2::<f32>().unwrap();
        rows[2][9] = f32::INFINITY;
        let table = RowsTable::new(Tensor::from_vec(rows.concat(), (20, 64), &dev).unwrap());
        table.product(&Tensor::ones((1, 64), DType::F32, &dev).unwrap()).unwrap();
        assert_eq!(table.is_int8(), Some(false));
    }

    #[test]
    fn gguf_blocks_of_int8_codes_times_one_scale_pack_exactly() {
        use candle_core::quantized::{GgmlDType, QTensor};
        let dev = Device::Cpu;
        let (out, d) = (48, 96);
        let w = Tensor::randn(0f32, 0.05, (out, d), &dev).unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0, GgmlDType::Q4_0] {
            let deq = QTensor::quantize(&w, dtype).unwrap().dequantize(&dev).unwrap();
            for keep in [true, false] {
                let table = RowsTable::packed(&deq, keep).unwrap().expect("on the int8 grid");
                assert_eq!(table.is_int8(), Some(true));
                assert_eq!(table.transposed().is_some(), keep);
                // The kernel's rows, and (packed only) a product larger than any row limit.
                for m in [1, 5, MAX_BLOCK_ROWS, if keep { MAX_BLOCK_ROWS + 1 } else { MAX_ROWS + 3 }] {
                    let x = Tensor::randn(0f32, 1.0, (m, d), &dev).unwrap();
                    let want = x.matmul(&deq.t().unwrap()).unwrap();
                    let got = if table.applies(&x) { table.product(&x) } else { table.matmul(&x) }.unwrap();
                    assert!(max_diff(&got, &want) < 1e-4, "{dtype:?} keep={keep} m={m}");
                    assert_eq!(table.applies(&x), !keep || m <= MAX_BLOCK_ROWS, "{dtype:?} keep={keep} m={m}");
                }
            }
        }
        // Q8_0 read straight from its blocks: the same products as its dequantized table.
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let deq = q.dequantize(&dev).unwrap();
        let table = RowsTable::from_q8_0_blocks(&q.data().unwrap(), out, d).unwrap();
        for m in [1, 7, MAX_ROWS + 1] {
            let x = Tensor::randn(0f32, 1.0, (m, d), &dev).unwrap();
            assert!(table.applies(&x));
            let diff = max_diff(&table.product(&x).unwrap(), &x.matmul(&deq.t().unwrap()).unwrap());
            assert!(diff < 1e-4, "Q8_0 blocks, m={m}: {diff}");
        }
        let err = RowsTable::from_q8_0_blocks(&q.data().unwrap()[1..], out, d).unwrap_err().to_string();
        assert!(err.contains("bytes, expected"), "{err}");
        // Q4_K's six-bit sub-block scales and minimums are not one scale per 32 codes.
        let k = QTensor::quantize(&Tensor::randn(0f32, 0.05, (4, 256), &dev).unwrap(), GgmlDType::Q4K).unwrap();
        assert!(RowsTable::packed(&k.dequantize(&dev).unwrap(), false).unwrap().is_none());
    }
}
