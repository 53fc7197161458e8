//! `knowlens bench`: the fixed workloads that tools/bench.py also runs on transformers and
//! llama.cpp, so the speeds can be compared in one run. Prints one JSON line.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use knowlens::model::generate::{generate, GenerateOptions};
use knowlens::{HookPoint, HookSpec, LogitsAt};
use serde_json::json;

use super::ModelArgs;

#[derive(Clone, Copy, ValueEnum)]
pub enum Workload {
    /// Residual stream of every layer, no logits: batch × tokens.
    Cache,
    /// One prompt of `tokens` tokens, logits at the last position.
    Prefill,
    /// Greedy decoding of `new_tokens` after a short prompt, `batch` streams at once.
    Decode,
    /// The model's own weight shapes at 1 to 1,024 rows: knowlens' kernel for each as the
    /// model holds it (the packed kernel or the matmul) and the plain float32 GEMM (the `gemm`
    /// crate), one JSON line each with its GFLOP/s (tools/bench.py --roofline sets these beside
    /// numpy's BLAS and torch).
    Gemm,
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, value_enum)]
    workload: Workload,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// Timed repetitions after one warm-up run; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

/// Deterministic ids from the middle of the vocabulary (the same generator as tools/bench.py).
pub fn bench_ids(rows: usize, len: usize, bos: Option<u32>, vocab: usize) -> Vec<Vec<u32>> {
    (0..rows)
        .map(|r| {
            let mut v: Vec<u32> = bos.into_iter().collect();
            let mut x: u64 = 12345 + r as u64;
            while v.len() < len {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                v.push((1000 + (x >> 33) % (vocab as u64 / 4)) as u32);
            }
            v
        })
        .collect()
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.reps == 0 {
        bail!("--reps must be at least 1 (the timed repetitions whose median is reported)");
    }
    if a.batch == 0 || a.tokens == 0 {
        bail!("--batch ({}) and --tokens ({}) must be at least 1", a.batch, a.tokens);
    }
    if matches!(a.workload, Workload::Decode) && a.new_tokens == 0 {
        bail!("--new-tokens must be at least 1 for the decode workload");
    }
    match a.workload {
        Workload::Gemm => gemm(&a),
        Workload::Cache => forward_workload(&a, Forward::Cache),
        Workload::Prefill => forward_workload(&a, Forward::Prefill),
        Workload::Decode => forward_workload(&a, Forward::Decode),
    }
}

/// The workloads that run the model (all but `Gemm`).
#[derive(Clone, Copy)]
enum Forward {
    Cache,
    Prefill,
    Decode,
}

impl Forward {
    fn name(self) -> &'static str {
        match self {
            Forward::Cache => "cache",
            Forward::Prefill => "prefill",
            Forward::Decode => "decode",
        }
    }
}

/// Times one model workload: a warm-up run, then `reps` timed ones; prints the median.
fn forward_workload(a: &BenchArgs, w: Forward) -> Result<()> {
    let m = a.model.load()?;
    let cfg = m.cfg();
    let bos = if m.tokenizer.add_bos { m.tokenizer.bos } else { None };
    let mut times = Vec::new();
    let (rows, per_row) = match w {
        Forward::Cache => (a.batch, a.tokens),
        Forward::Prefill => (1, a.tokens),
        Forward::Decode => (a.batch, 8),
    };
    let batch = m.batch_from_ids(&bench_ids(rows, per_row, bos, cfg.vocab_size))?;
    let mut produced = 0usize;
    for rep in 0..=a.reps {
        let t0 = Instant::now();
        produced = match w {
            Forward::Cache => {
                let spec = HookSpec::new().capture((0..cfg.n_layers).map(HookPoint::ResidPost));
                let out = m.run(&batch, &spec)?;
                assert_eq!(out.cache.tensors.len(), cfg.n_layers);
                rows * per_row
            }
            Forward::Prefill => {
                let out = m.run(&batch, &HookSpec::new().logits(LogitsAt::Last))?;
                assert!(out.logits.is_some());
                per_row
            }
            Forward::Decode => {
                let opts = GenerateOptions { max_tokens: a.new_tokens, ..Default::default() };
                let (gens, _) = generate(&m, &batch, &HookSpec::new(), &opts)?;
                gens.iter().map(|g| g.ids.len()).sum()
            }
        };
        if rep > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{}",
        json!({
            "impl": "knowlens",
            "precision": format!("{:?}", m.precision).to_lowercase(),
            "workload": w.name(),
            "batch": rows,
            "tokens": produced,
            "seconds": median,
            "tokens_per_s": produced as f64 / median,
            "kernel": knowlens::model::simd_level(),
            "unembedding": m.transformer.unembedding_form(),
        })
    );
    Ok(())
}

/// The matmuls of one forward pass, as `Linear::forward` runs them: (name, in, out, how the model
/// holds the weight), from the model's header only.
type Matmul = (&'static str, usize, usize, Stored);

/// How the model holds a matmul's weight, which decides the kernel `Linear::forward` runs.
#[derive(Clone, Copy, PartialEq)]
enum Stored {
    /// Wᵀ [in, out] in float32: the matmul.
    Transposed,
    /// GGUF blocks of int8 codes times a scale (Q8_0, Q5_0, Q4_0): the packed kernel for few
    /// rows, Wᵀ for the matmul beyond.
    Packed,
    /// The tied unembedding's table [out, in]: the packed kernel up to its row limit.
    Table,
}

fn model_matmuls(a: &BenchArgs) -> Result<(usize, Vec<Matmul>)> {
    let path = knowlens::fetch::resolve_model(&a.model.model)?;
    let cfg = if path.is_dir() { a.model.load()?.cfg().clone() } else { knowlens::model::config_of_gguf(&path)? };
    let (d, q, kv, ff) = (cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.d_ff);
    // Which of layer 0's weights are GGUF blocks the packed kernel takes (as `WeightSource::linear`).
    let packed: Vec<String> = if path.is_dir() {
        Vec::new()
    } else {
        let file = std::fs::File::open(&path)?;
        let content = knowlens::model::read_gguf_header(&mut std::io::BufReader::new(file), &path)?;
        content
            .tensor_infos
            .iter()
            .filter(|(n, i)| n.starts_with("blk.0.") && knowlens::model::weights::int8_coded(i.ggml_dtype))
            .map(|(n, _)| n.clone())
            .collect()
    };
    let stored = |gguf: &str| {
        if packed.iter().any(|n| n == &format!("blk.0.{gguf}.weight")) {
            Stored::Packed
        } else {
            Stored::Transposed
        }
    };
    Ok((
        cfg.n_layers,
        vec![
            ("q", d, q, stored("attn_q")),
            ("k", d, kv, stored("attn_k")),
            ("v", d, kv, stored("attn_v")),
            ("o", q, d, stored("attn_output")),
            ("gate", d, ff, stored("ffn_gate")),
            ("up", d, ff, stored("ffn_up")),
            ("down", ff, d, stored("ffn_down")),
            ("unembed", d, cfg.vocab_size, Stored::Table),
        ],
    ))
}

/// A random [rows, cols] table on Q8_0's grid: int8 codes, one ±127 per block of 32, times a
/// float16 scale per block.
fn q8_grid(rows: usize, cols: usize) -> Result<candle_core::Tensor> {
    let mut rng = knowlens::rng::SplitMix64::derive(7, 0, 0);
    let mut v = vec![0f32; rows * cols];
    for (i, block) in v.chunks_mut(32).enumerate() {
        let scale = half::f16::from_f32(0.0002 + 0.0001 * (i % 7) as f32).to_f32();
        for (j, x) in block.iter_mut().enumerate() {
            let q = if j == 0 { 127.0 } else { ((rng.normal() * 40.0) as f32).round().clamp(-127.0, 127.0) };
            *x = q * scale;
        }
    }
    Ok(candle_core::Tensor::from_vec(v, (rows, cols), &candle_core::Device::Cpu)?)
}

fn gemm(a: &BenchArgs) -> Result<()> {
    use candle_core::{Device, Tensor};
    use knowlens::model::weights::{Linear, RowsTable};
    let dev = Device::Cpu;
    let (n_layers, matmuls) = model_matmuls(a)?;
    for (name, inp, out, stored) in matmuls {
        // The weight as the model holds it, built the same way, so each shape runs through
        // `Linear::forward` the kernel the model would use. Packed weights and the unembedding are
        // on the int8 grid of GGUF blocks (`model/unembed.rs`).
        let lin = match stored {
            Stored::Transposed => Linear::DenseT(Tensor::randn(0f32, 0.02, (inp, out), &dev)?),
            Stored::Packed => Linear::DenseRows(
                RowsTable::packed(&q8_grid(out, inp)?, true)?.context("a Q8_0-grid weight packs as int8")?,
            ),
            Stored::Table => Linear::DenseRows(RowsTable::new(q8_grid(out, inp)?)),
        };
        // The plain float32 GEMM of the same shape (the `gemm` crate through candle's matmul, on
        // Wᵀ [in, out]): one of the references the roofline takes its ceiling from, beside numpy's
        // BLAS and torch, since the packed kernel reads int8 codes and is no general GEMM.
        let wt = match &lin {
            Linear::DenseT(wt) => wt.clone(),
            _ => Tensor::randn(0f32, 0.02, (inp, out), &dev)?,
        };
        let sizes: &[usize] = &[1, 4, 8, 32, 64, 128, 1024];
        for &m in sizes {
            let x = Tensor::randn(0f32, 1.0, (m, inp), &dev)?;
            let flops = 2.0 * (m * inp * out) as f64;
            let model = median_seconds(a.reps, || lin.forward(&x).map(|_| ()))?;
            let plain = median_seconds(a.reps, || Ok(x.matmul(&wt).map(|_| ())?))?;
            for (implementation, seconds) in [("knowlens", model), ("gemm", plain)] {
                println!(
                    "{}",
                    json!({
                        "impl": implementation,
                        "workload": "gemm",
                        "matrix": name,
                        "m": m, "k": inp, "n": out,
                        "seconds": seconds,
                        "gflops": flops / seconds / 1e9,
                        "kernel": knowlens::model::simd_level(),
                        "n_layers": n_layers,
                    })
                );
            }
        }
    }
    Ok(())
}

/// The median time of `run` over enough repetitions for ~0.3 s (at least `reps`), after one
/// warm-up call.
fn median_seconds(reps: usize, run: impl Fn() -> Result<()>) -> Result<f64> {
    run()?;
    let t0 = Instant::now();
    run()?;
    let once = t0.elapsed().as_secs_f64().max(1e-6);
    let n = ((0.3 / once) as usize).clamp(reps, 10_000);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
