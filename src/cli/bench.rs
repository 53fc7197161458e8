//! `knowlens bench`: the fixed workloads that tools/bench.py also runs on transformers and
//! llama.cpp, so the speeds can be compared in one run. Prints one JSON line.

use std::time::Instant;

use anyhow::{bail, Result};
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
    let m = a.model.load()?;
    let cfg = m.cfg();
    let bos = if m.tokenizer.add_bos { m.tokenizer.bos } else { None };
    let mut times = Vec::new();
    let (rows, per_row) = match a.workload {
        Workload::Cache => (a.batch, a.tokens),
        Workload::Prefill => (1, a.tokens),
        Workload::Decode => (a.batch, 8),
    };
    let batch = m.batch_from_ids(&bench_ids(rows, per_row, bos, cfg.vocab_size))?;
    let mut produced = 0usize;
    for rep in 0..=a.reps {
        let t0 = Instant::now();
        produced = match a.workload {
            Workload::Cache => {
                let spec = HookSpec::new().capture((0..cfg.n_layers).map(HookPoint::ResidPost));
                let out = m.run(&batch, &spec)?;
                assert_eq!(out.cache.tensors.len(), cfg.n_layers);
                rows * per_row
            }
            Workload::Prefill => {
                let out = m.run(&batch, &HookSpec::new().logits(LogitsAt::Last))?;
                assert!(out.logits.is_some());
                per_row
            }
            Workload::Decode => {
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
            "workload": match a.workload { Workload::Cache => "cache", Workload::Prefill => "prefill", Workload::Decode => "decode" },
            "batch": rows,
            "tokens": produced,
            "seconds": median,
            "tokens_per_s": produced as f64 / median,
        })
    );
    Ok(())
}
