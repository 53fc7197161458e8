//! `knowlens sae train` and `knowlens sae bench`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use knowlens::progress::Progress;
use knowlens::sae::train::{self, ArchConfig, BDecInit, RunOptions, TrainConfig, Trainer};
use knowlens::HookPoint;
use serde_json::json;

use super::progress::{named, Bars, LogOnly};
use super::ModelArgs;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Arch {
    Topk,
    Batchtopk,
    Jumprelu,
    Standard,
}

/// Architecture settings shared by `train` and `bench`.
#[derive(Args, Clone)]
pub struct ArchArgs {
    /// topk: k largest per row; batchtopk: k·batch largest per batch (saved as JumpReLU);
    /// jumprelu: trained thresholds with an L0 penalty; standard: ReLU with an L1 penalty.
    #[arg(long, value_enum, default_value_t = Arch::Topk)]
    arch: Arch,
    /// Active latents per token (topk, batchtopk).
    #[arg(long, default_value_t = ArchConfig::DEFAULT_K)]
    k: usize,
    /// Number of latents (d_sae).
    #[arg(long, default_value_t = TrainConfig::DEFAULT_WIDTH)]
    width: usize,
    /// L1 coefficient (standard), ramped up over --sparsity-warm-up-steps.
    #[arg(long, default_value_t = ArchConfig::DEFAULT_L1_COEFFICIENT)]
    l1_coefficient: f32,
    /// L0 coefficient (jumprelu), ramped up over --sparsity-warm-up-steps.
    #[arg(long, default_value_t = ArchConfig::DEFAULT_L0_COEFFICIENT)]
    l0_coefficient: f32,
    #[arg(long, default_value_t = 0)]
    sparsity_warm_up_steps: u64,
    /// Width of the rectangle kernel of JumpReLU's straight-through gradients.
    #[arg(long, default_value_t = ArchConfig::DEFAULT_JUMPRELU_BANDWIDTH)]
    jumprelu_bandwidth: f32,
    #[arg(long, default_value_t = ArchConfig::DEFAULT_JUMPRELU_INIT_THRESHOLD)]
    jumprelu_init_threshold: f32,
    /// Rate of BatchTopK's running threshold.
    #[arg(long, default_value_t = ArchConfig::DEFAULT_TOPK_THRESHOLD_LR)]
    topk_threshold_lr: f64,
}

impl ArchArgs {
    fn config(&self) -> ArchConfig {
        match self.arch {
            Arch::Topk => ArchConfig::TopK { k: self.k },
            Arch::Batchtopk => ArchConfig::BatchTopK { k: self.k, threshold_lr: self.topk_threshold_lr },
            Arch::Jumprelu => ArchConfig::JumpRelu {
                l0_coefficient: self.l0_coefficient,
                l0_warm_up_steps: self.sparsity_warm_up_steps,
                bandwidth: self.jumprelu_bandwidth,
                init_threshold: self.jumprelu_init_threshold,
            },
            Arch::Standard => ArchConfig::Standard {
                l1_coefficient: self.l1_coefficient,
                l1_warm_up_steps: self.sparsity_warm_up_steps,
            },
        }
    }
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Hooks to train one SAE each on, from the same forward passes, e.g.
    /// blocks.6.hook_resid_post,blocks.9.hook_resid_post.
    #[arg(long, value_delimiter = ',', required = true)]
    hooks: Vec<String>,
    #[command(flatten)]
    arch: ArchArgs,
    /// Training tokens (activation rows per hook); steps = tokens / batch size.
    #[arg(long, default_value_t = 2_000_000)]
    tokens: u64,
    /// Activation rows per step.
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    #[arg(long, default_value_t = TrainConfig::DEFAULT_LR)]
    lr: f32,
    /// Linear learning-rate warm-up steps.
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    /// Linear decay to 0 over the last this many steps (default: a fifth of the run).
    #[arg(long)]
    decay_steps: Option<u64>,
    /// Seeds the initial weights and the shuffle buffer.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A token corpus written by `knowlens corpus` (its directory or index.json): the training
    /// split, cut into context-size sequences in a seeded document order, repeated when exhausted.
    #[arg(long, conflicts_with = "text_file", required_unless_present = "text_file")]
    corpus: Option<PathBuf>,
    /// Plain UTF-8 text, tokenized with the model's tokenizer and cut into context-size
    /// sequences (BOS first); read again from the start when exhausted.
    #[arg(long)]
    text_file: Option<PathBuf>,
    /// Tokens per sequence, BOS included (BOS positions are not trained on).
    #[arg(long, default_value_t = 128)]
    context_size: usize,
    /// Training batches per shuffle-buffer fill.
    #[arg(long, default_value_t = 16)]
    buffer_batches: usize,
    /// Sequences per forward pass of the model.
    #[arg(long, default_value_t = 16)]
    model_batch: usize,
    /// AuxK coefficient (topk, batchtopk).
    #[arg(long, default_value_t = TrainConfig::DEFAULT_AUX_COEFFICIENT)]
    aux_coefficient: f32,
    /// Dead latents AuxK uses per row (0: d_in / 2).
    #[arg(long, default_value_t = 0)]
    aux_k: usize,
    /// A latent not fired for this many tokens counts as dead.
    #[arg(long, default_value_t = TrainConfig::DEFAULT_DEAD_TOKENS)]
    dead_tokens: u64,
    #[arg(long, value_parser = named::<BDecInit>(&BDecInit::NAMES), default_value = "geometric-median")]
    b_dec_init: BDecInit,
    /// Train on raw activations instead of scaling them to mean norm sqrt(d_in) (the scale is
    /// folded into the saved weights either way).
    #[arg(long)]
    no_normalize: bool,
    /// Steps between checkpoints (0: none). Rerunning the same command resumes.
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    /// Steps between lines of DIR/train_log.jsonl.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Output directory: one SAELens directory per hook, the log, checkpoints.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    no_progress: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Sleep this long after each step (for tests that interrupt a run).
    #[arg(long, default_value_t = 0, hide = true)]
    throttle_ms: u64,
}

pub fn train(a: TrainArgs) -> Result<()> {
    let hooks = a.hooks.iter().map(|h| h.trim().parse::<HookPoint>()).collect::<Result<Vec<_>, _>>()?;
    if a.batch_size == 0 || a.tokens < a.batch_size as u64 {
        bail!("--tokens ({}) must be at least one batch (--batch-size {})", a.tokens, a.batch_size);
    }
    if a.context_size < 2 {
        bail!("--context-size must be at least 2 (BOS and one token), got {}", a.context_size);
    }
    if a.buffer_batches == 0 || a.model_batch == 0 {
        bail!("--buffer-batches ({}) and --model-batch ({}) must be at least 1", a.buffer_batches, a.model_batch);
    }
    let steps = a.tokens / a.batch_size as u64;
    let mut cfg = TrainConfig::new(0, a.arch.width, a.arch.config(), steps);
    cfg.lr = a.lr;
    cfg.warmup_steps = a.warmup_steps;
    cfg.decay_steps = a.decay_steps.unwrap_or(cfg.decay_steps);
    cfg.aux_coefficient = a.aux_coefficient;
    cfg.aux_k = a.aux_k;
    cfg.dead_tokens = a.dead_tokens;
    cfg.b_dec_init = a.b_dec_init;
    cfg.normalize = !a.no_normalize;
    cfg.seed = a.seed;
    // Settings are checked before the model loads.
    cfg.validate()?;
    let model = a.model.load()?;
    let source = match (&a.corpus, &a.text_file) {
        (Some(dir), _) => {
            let corpus = knowlens::corpus::TokenCorpus::open(dir)?;
            let seqs: Vec<Vec<u32>> = corpus.chunks(a.context_size, Some(a.seed)).collect();
            if seqs.is_empty() {
                bail!("{}: no sequence of {} tokens in the corpus", dir.display(), a.context_size);
            }
            eprintln!("corpus {}: {} sequences of {} tokens", dir.display(), seqs.len(), a.context_size);
            train::VecSource::new(seqs, true, dir.display().to_string())
        }
        (None, Some(f)) => train::text_file_source(&model.tokenizer, f, a.context_size)?,
        (None, None) => bail!("give --corpus or --text-file"),
    };
    let opts = RunOptions {
        out: a.out.clone(),
        hooks: hooks.clone(),
        train: cfg,
        batch_size: a.batch_size,
        buffer_batches: a.buffer_batches,
        model_batch: a.model_batch,
        context_size: a.context_size,
        checkpoint_every: a.checkpoint_every,
        log_every: a.log_every,
        model_name: a.model.model.clone(),
        fingerprint_extra: json!({ "model_path": model.source, "precision": format!("{:?}", model.precision) }),
        throttle_ms: a.throttle_ms,
    };
    let progress: Box<dyn Progress> = if a.no_progress { Box::new(LogOnly) } else { Box::new(Bars::default()) };
    let s = train::train(&model, Box::new(source), &opts, progress.as_ref())?;
    if s.already_done {
        eprintln!("{} already holds this finished run ({} steps)", a.out.display(), s.steps);
    }
    let rate = |x: f64| if s.seconds > 0.0 { x / s.seconds } else { 0.0 };
    let summary = json!({
        "steps": s.steps,
        "resumed_from": s.resumed_from,
        "saes": s.sae_dirs,
        "hooks": hooks.len(),
        "seconds": s.seconds,
        "store_seconds": s.store_seconds,
        "sae_seconds": s.sae_seconds,
        "tokens_per_s": rate(s.rows_trained as f64),
        "model_tokens_per_s": rate(s.model_tokens as f64),
        "last": s.last,
    });
    if a.json {
        println!("{summary}");
    } else if !s.already_done {
        println!(
            "trained {} steps ({} hooks) in {:.1} s: {:.0} tokens/s per hook (model {:.1} s, SAE steps {:.1} s)",
            s.steps,
            hooks.len(),
            s.seconds,
            rate(s.rows_trained as f64),
            s.store_seconds,
            s.sae_seconds
        );
        for (d, st) in s.sae_dirs.iter().zip(&s.last) {
            println!("  {}  L0 {:.1}  FVU {:.3}  dead {:.1}%", d.display(), st.l0, st.fvu, 100.0 * st.dead_fraction);
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    arch: ArchArgs,
    #[arg(long, default_value_t = 640)]
    d_in: usize,
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    /// Timed steps (the median is reported) after --warmup untimed ones.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// standard / jumprelu: start with encoder biases that leave about this many latents active
    /// per token (as in a trained SAE) instead of half of them (as at initialisation).
    #[arg(long)]
    active: Option<f64>,
}

/// The z with P(N(0, 1) > z) = p, by bisection on erfc (Abramowitz & Stegun 7.1.26).
fn normal_upper_quantile(p: f64) -> f64 {
    let upper = |z: f64| {
        let x = z / std::f64::consts::SQRT_2;
        let t = 1.0 / (1.0 + 0.3275911 * x.abs());
        let y = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
        let erfc = y * (-x * x).exp();
        0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
    };
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if upper(mid) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Training steps on random Gaussian activations; prints one JSON line (the same fields as
/// tools/bench_sae_torch.py).
pub fn bench(a: BenchArgs) -> Result<()> {
    let (d, n) = (a.d_in, a.batch_size);
    if a.steps == 0 {
        bail!("--steps must be at least 1 (the timed steps whose median is reported)");
    }
    if d == 0 || n == 0 {
        bail!("--d-in ({d}) and --batch-size ({n}) must be at least 1");
    }
    if let Some(active) = a.active {
        if !(active.is_finite() && active > 0.0) {
            bail!("--active must be a positive number of latents, got {active}");
        }
    }
    let mut cfg = TrainConfig::new(d, a.arch.width, a.arch.config(), (a.steps + a.warmup) as u64);
    cfg.seed = a.seed;
    cfg.decay_steps = 0;
    cfg.validate()?;
    let mut t = Trainer::new(cfg)?;
    if let Some(active) = a.active {
        // Inputs are scaled to mean norm sqrt(d_in) and encoder rows have unit norm, so each
        // pre-activation is about N(0, 1).
        let z = normal_upper_quantile((active / a.arch.width as f64).clamp(1e-9, 1.0)) as f32;
        t.params.b_enc.iter_mut().for_each(|b| *b = -z);
    }
    let mut rng = knowlens::rng::SplitMix64::derive(a.seed, 99, 0);
    let batches: Vec<Vec<f32>> = (0..2).map(|_| (0..n * d).map(|_| rng.normal() as f32).collect()).collect();
    let mut times = Vec::new();
    let mut last = None;
    for i in 0..a.warmup + a.steps {
        let t0 = Instant::now();
        let s = t.step(&batches[i % 2])?;
        if i >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
        last = Some(s);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let s = last.unwrap_or_default();
    println!(
        "{}",
        json!({
            "impl": "knowlens",
            "workload": "sae-train",
            "arch": t.cfg.arch.name(),
            "d_in": d,
            "width": a.arch.width,
            "batch": n,
            "k": a.arch.k,
            "steps": a.steps,
            "threads": rayon::current_num_threads(),
            "seconds": median,
            "step_seconds": times,
            "tokens_per_s": n as f64 / median,
            "l0": s.l0,
            "dense": s.dense,
            "active_start": a.active,
        })
    );
    Ok(())
}
