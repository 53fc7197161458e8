//! `knowlens sae train`, `knowlens sae cache` (the activation store on disk), `knowlens sae
//! store-info` and `knowlens sae bench`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use knowlens::fetch;
use knowlens::progress::Progress;
use knowlens::sae::train::disk::{self, CacheOptions, StoreDtype};
use knowlens::sae::train::{
    self, ArchConfig, BDecInit, BatchSource, DiskBatches, DiskStore, RunOptions, TrainConfig, Trainer,
};
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
    /// Training tokens (activation rows per hook); steps = tokens / batch size [default:
    /// 2,000,000; with --store: --epochs passes over the store].
    #[arg(long)]
    tokens: Option<u64>,
    /// With --store: passes over the store (each in a new seeded order).
    #[arg(long, requires = "store")]
    epochs: Option<u64>,
    /// Activation rows per step.
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    #[arg(long, default_value_t = TrainConfig::DEFAULT_LR)]
    lr: f32,
    /// Linear learning-rate warm-up steps [default: a twentieth of the run, at most 1,000].
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// Linear decay to 0 over the last this many steps (default: a fifth of the run).
    #[arg(long)]
    decay_steps: Option<u64>,
    /// Seeds the initial weights and the shuffle buffer.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A token corpus written by `knowlens corpus` (its directory or index.json): the training
    /// split, cut into context-size sequences in a seeded document order, repeated when exhausted.
    #[arg(long, conflicts_with_all = ["text_file", "store"], required_unless_present_any = ["text_file", "store"])]
    corpus: Option<PathBuf>,
    /// Plain UTF-8 text, tokenized with the model's tokenizer and cut into context-size
    /// sequences (BOS first); read again from the start when exhausted.
    #[arg(long, conflicts_with = "store")]
    text_file: Option<PathBuf>,
    /// An activation store written by `knowlens sae cache` (made by --model, holding --hooks):
    /// training reads it, shuffled across shards, and never runs the model.
    #[arg(long)]
    store: Option<PathBuf>,
    /// With --store: check every shard's sha256 before training (sizes are always checked).
    #[arg(long, requires = "store")]
    verify_store: bool,
    /// Tokens per sequence, BOS included (BOS positions are not trained on; with --store, the
    /// store's).
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
    /// A latent not fired for this many tokens counts as dead (AuxK trains it) [default: a
    /// tenth of the run's tokens, at most 10,000,000].
    #[arg(long)]
    dead_tokens: Option<u64>,
    #[arg(long, value_parser = named::<BDecInit>(&BDecInit::NAMES), default_value = "geometric-median")]
    b_dec_init: BDecInit,
    /// Train on raw activations instead of scaling them to mean norm sqrt(d_in) (the scale is
    /// folded into the saved weights either way).
    #[arg(long)]
    no_normalize: bool,
    /// Scale each input dimension by 1 / its standard deviation (on the first batch) instead of
    /// one factor for all, so that the few huge dimensions of Gemma's residual stream do not own
    /// the loss; folded into the saved weights (a plain SAELens SAE on raw activations).
    #[arg(long, conflicts_with = "no_normalize")]
    per_dim_scale: bool,
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
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(t) = a.tokens {
        if t < a.batch_size as u64 {
            bail!("--tokens ({t}) must be at least one batch (--batch-size {})", a.batch_size);
        }
    }
    if a.epochs == Some(0) {
        bail!("--epochs must be at least 1");
    }
    if a.tokens.is_some() && a.epochs.is_some() {
        bail!("give --tokens or --epochs, not both");
    }
    if a.context_size < 2 {
        bail!("--context-size must be at least 2 (BOS and one token), got {}", a.context_size);
    }
    if a.buffer_batches == 0 || a.model_batch == 0 {
        bail!("--buffer-batches ({}) and --model-batch ({}) must be at least 1", a.buffer_batches, a.model_batch);
    }
    // With --store: the store, checked against --model and --hooks; the model is not loaded.
    let disk = match &a.store {
        Some(dir) => {
            let store = DiskStore::open(dir, a.verify_store)?;
            let path = fetch::resolve_model(&a.model.model)?;
            store.check_model(&disk::model_identity(&path, a.model.precision)?)?;
            Some((DiskBatches::new(store, &hooks, a.batch_size, a.seed)?, path))
        }
        None => None,
    };
    let steps = match (&disk, a.tokens) {
        (_, Some(t)) => t / a.batch_size as u64,
        (Some((b, _)), None) => a.epochs.unwrap_or(1) * b.batches_per_epoch(),
        (None, None) => 2_000_000 / a.batch_size as u64,
    };
    if steps == 0 {
        bail!("the run has no step: fewer tokens than one batch of {}", a.batch_size);
    }
    let mut cfg = TrainConfig::new(0, a.arch.width, a.arch.config(), steps);
    cfg.scale_to_run(a.batch_size);
    cfg.lr = a.lr;
    cfg.warmup_steps = a.warmup_steps.unwrap_or(cfg.warmup_steps);
    cfg.decay_steps = a.decay_steps.unwrap_or(cfg.decay_steps);
    cfg.aux_coefficient = a.aux_coefficient;
    cfg.aux_k = a.aux_k;
    cfg.dead_tokens = a.dead_tokens.unwrap_or(cfg.dead_tokens);
    cfg.b_dec_init = a.b_dec_init;
    cfg.normalize = !a.no_normalize;
    cfg.per_dim_scale = a.per_dim_scale;
    cfg.seed = a.seed;
    // Settings are checked before the model loads.
    cfg.validate()?;
    let mut opts = RunOptions {
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
        fingerprint_extra: json!(null),
        throttle_ms: a.throttle_ms,
    };
    let progress: Box<dyn Progress> = if a.no_progress { Box::new(LogOnly) } else { Box::new(Bars::default()) };
    let s = match disk {
        Some((mut batches, path)) => {
            let index = &batches.store().index;
            opts.context_size = index.recipe.context_size;
            // The batch layout of a store run: buffer and model batch play no part.
            opts.buffer_batches = 0;
            opts.model_batch = 0;
            opts.fingerprint_extra = json!({ "store": index.digest, "model_path": path });
            let prepend_bos = index.prepend_bos;
            eprintln!(
                "activation store {}: {} rows of {} in {} shards; {} steps = {:.2} epochs",
                batches.store().dir.display(),
                batches.store().rows(),
                index.recipe.hooks.join(", "),
                index.shards.len(),
                steps,
                steps as f64 / batches.batches_per_epoch() as f64
            );
            train::train_on(&mut batches, prepend_bos, &opts, progress.as_ref())?
        }
        None => {
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
                (None, None) => bail!("give --corpus, --text-file or --store"),
            };
            opts.fingerprint_extra =
                json!({ "model_path": model.source, "precision": format!("{:?}", model.precision) });
            train::train(&model, Box::new(source), &opts, progress.as_ref())?
        }
    };
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
    /// Real activations instead of random ones: batches read from this activation store (the
    /// reading is timed with the step); --d-in is the hook's width.
    #[arg(long, requires = "hook")]
    store: Option<PathBuf>,
    /// The store's hook to read (with --store).
    #[arg(long)]
    hook: Option<String>,
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
    let mut store = match (&a.store, &a.hook) {
        (Some(dir), Some(h)) => {
            let hook = h.trim().parse::<HookPoint>()?;
            Some(DiskBatches::new(DiskStore::open(dir, false)?, &[hook], a.batch_size, a.seed)?)
        }
        _ => None,
    };
    let d = store.as_ref().map(|s| s.widths()[0]).unwrap_or(a.d_in);
    let n = a.batch_size;
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
        let s = match store.as_mut() {
            Some(st) => {
                let x = st.next_batch()?.context("the activation store gave no batch")?;
                t.step(&x[0])?
            }
            None => t.step(&batches[i % 2])?,
        };
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
            "data": if store.is_some() { "activation store" } else { "random" },
        })
    );
    Ok(())
}

#[derive(Args)]
pub struct CacheArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Hooks whose activations to store, from the same forward passes, e.g.
    /// blocks.6.hook_resid_post,blocks.9.hook_resid_post.
    #[arg(long, value_delimiter = ',', required = true)]
    hooks: Vec<String>,
    /// A token corpus written by `knowlens corpus` (its directory or index.json): the training
    /// split, cut into context-size sequences in the document order --seed gives.
    #[arg(long, conflicts_with = "text_file", required_unless_present = "text_file")]
    corpus: Option<PathBuf>,
    /// Plain UTF-8 text, tokenized with the model's tokenizer and cut into context-size
    /// sequences (BOS first).
    #[arg(long)]
    text_file: Option<PathBuf>,
    /// Store about this many tokens (activation rows per hook; whole sequences) [default: the
    /// whole corpus or file, once].
    #[arg(long)]
    tokens: Option<u64>,
    /// Tokens per sequence, BOS included (BOS positions are not stored).
    #[arg(long, default_value_t = 128)]
    context_size: usize,
    /// Orders the corpus's documents.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// bf16 (8 significant bits, float32's range) or f16 (11 bits, values up to 65,504, which
    /// Gemma's largest residual dimensions come close to).
    #[arg(long, value_parser = named::<StoreDtype>(&StoreDtype::NAMES), default_value = "bf16")]
    dtype: StoreDtype,
    /// Sequences per shard (the unit written atomically and resumed from).
    #[arg(long, default_value_t = 256)]
    shard_sequences: usize,
    /// Sequences per forward pass of the model.
    #[arg(long, default_value_t = 16)]
    model_batch: usize,
    /// The store's directory. Rerunning the same command continues (or repairs) it.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    no_progress: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Sleep this long after each forward pass (for tests that interrupt a run).
    #[arg(long, default_value_t = 0, hide = true)]
    throttle_ms: u64,
}

fn sha256_file(path: &std::path::Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(knowlens::fsio::hex(&Sha256::digest(&bytes)))
}

/// `knowlens sae cache`: the model runs once over the tokens and the hooks' activations go into
/// an activation store on disk (`sae::train::disk`).
pub fn cache(a: CacheArgs) -> Result<()> {
    let hooks = a.hooks.iter().map(|h| h.trim().parse::<HookPoint>()).collect::<Result<Vec<_>, _>>()?;
    if a.context_size < 2 {
        bail!("--context-size must be at least 2 (BOS and one token), got {}", a.context_size);
    }
    if a.shard_sequences == 0 || a.model_batch == 0 {
        bail!("--shard-sequences ({}) and --model-batch ({}) must be at least 1", a.shard_sequences, a.model_batch);
    }
    if a.tokens == Some(0) {
        bail!("--tokens 0: nothing to store");
    }
    let path = fetch::resolve_model(&a.model.model)?;
    let identity = disk::model_identity(&path, a.model.precision)?;
    let model = a.model.load()?;
    let (mut seqs, source, source_name) = match (&a.corpus, &a.text_file) {
        (Some(dir), _) => {
            let corpus = knowlens::corpus::TokenCorpus::open(dir)?;
            let seqs: Vec<Vec<u32>> = corpus.chunks(a.context_size, Some(a.seed)).collect();
            let ix = &corpus.index;
            let source = json!({
                "corpus": ix.recipe, "version": ix.version, "model": ix.model, "split": "train",
                "tokens": corpus.n_tokens(), "order_seed": a.seed,
            });
            (seqs, source, dir.display().to_string())
        }
        (None, Some(f)) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("{}: cannot read as UTF-8 text", f.display()))?;
            let seqs = knowlens::corpus::text_sequences(&model.tokenizer, &text, a.context_size)
                .with_context(|| f.display().to_string())?;
            let name = f.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            (seqs, json!({ "text_file": name, "sha256": sha256_file(f)? }), f.display().to_string())
        }
        (None, None) => bail!("give --corpus or --text-file"),
    };
    if let Some(t) = a.tokens {
        // Each sequence gives context - 1 rows (its BOS is left out).
        seqs.truncate(t.div_ceil(a.context_size as u64 - 1) as usize);
    }
    if seqs.is_empty() {
        bail!("no sequence of {} tokens in the input", a.context_size);
    }
    let opts = CacheOptions {
        out: a.out.clone(),
        hooks: hooks.clone(),
        model: identity,
        source,
        source_name,
        context_size: a.context_size,
        dtype: a.dtype,
        shard_sequences: a.shard_sequences,
        model_batch: a.model_batch,
        throttle_ms: a.throttle_ms,
    };
    let progress: Box<dyn Progress> = if a.no_progress { Box::new(LogOnly) } else { Box::new(Bars::default()) };
    let s = disk::cache(&model, &seqs, &opts, progress.as_ref())?;
    let per_mtok = if s.rows > 0 { s.bytes as f64 / s.rows as f64 * 1e6 } else { 0.0 };
    let rate = |x: f64| if s.seconds > 0.0 { x / s.seconds } else { 0.0 };
    let summary = json!({
        "out": a.out,
        "digest": s.digest,
        "already_complete": s.already_complete,
        "shards_before": s.shards_before,
        "shards_written": s.shards_written,
        "sequences": s.sequences,
        "rows": s.rows,
        "bytes": s.bytes,
        "bytes_per_million_tokens": per_mtok,
        "seconds": s.seconds,
        "model_seconds": s.model_seconds,
        "write_seconds": s.write_seconds,
        "model_tokens_per_s": rate(s.model_tokens as f64),
        "bytes_written_per_s": rate(s.bytes_written as f64),
        "write_only_bytes_per_s": if s.write_seconds > 0.0 { s.bytes_written as f64 / s.write_seconds } else { 0.0 },
    });
    if a.json {
        println!("{summary}");
    } else if s.already_complete {
        eprintln!(
            "{} already holds this complete store ({} rows per hook, {:.1} MB)",
            a.out.display(),
            s.rows,
            s.bytes as f64 / 1e6
        );
    } else {
        println!(
            "{}: {} rows per hook of {} hooks, {:.1} MB ({:.0} MB per million tokens); this run: {} shards in {:.1} s ({:.0} model tokens/s, {:.1} MB/s)",
            a.out.display(),
            s.rows,
            hooks.len(),
            s.bytes as f64 / 1e6,
            per_mtok / 1e6,
            s.shards_written,
            s.seconds,
            rate(s.model_tokens as f64),
            rate(s.bytes_written as f64) / 1e6
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct StoreInfoArgs {
    /// The activation store (a directory written by `knowlens sae cache`).
    #[arg(long)]
    store: PathBuf,
    /// Rows sampled (evenly over the store) for the per-dimension statistics.
    #[arg(long, default_value_t = 20_000)]
    rows: u64,
    /// Dimensions listed per hook, largest mean square first.
    #[arg(long, default_value_t = 8)]
    top: usize,
    /// Also an SAE of one of the store's hooks: its reconstruction error per dimension on the
    /// sampled rows.
    #[arg(long)]
    sae: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// `knowlens sae store-info`: the index, and per hook where the energy and the variance sit
/// (Gemma's residual stream has a few dimensions with very large values), optionally where an
/// SAE's reconstruction error sits.
pub fn store_info(a: StoreInfoArgs) -> Result<()> {
    let store = DiskStore::open(&a.store, false)?;
    let ix = &store.index;
    let mut out = json!({
        "dir": a.store, "digest": ix.digest, "complete": ix.complete, "source": ix.source_name,
        "model": ix.recipe.model, "hooks": ix.recipe.hooks, "widths": ix.recipe.widths,
        "dtype": ix.recipe.dtype, "context_size": ix.recipe.context_size, "rows": ix.rows,
        "sequences": ix.sequences, "shards": ix.shards.len(), "bytes": ix.bytes,
    });
    let sae = a.sae.as_ref().map(|p| knowlens::Sae::load(p)).transpose()?;
    let mut per_hook = Vec::new();
    for (h, name) in ix.recipe.hooks.iter().enumerate() {
        let st = disk::dim_stats(&store, h, a.rows);
        let d = st.var.len();
        let tot_var: f64 = st.var.iter().sum();
        let tot_sq: f64 = st.mean_sq.iter().sum();
        let mut by_sq: Vec<usize> = (0..d).collect();
        by_sq.sort_by(|&x, &y| st.mean_sq[y].total_cmp(&st.mean_sq[x]));
        let top: Vec<usize> = by_sq.iter().copied().take(a.top).collect();
        let mut hook_out = json!({
            "hook": name,
            "rows_sampled": st.rows,
            "total_variance": tot_var,
            "mean_squared_norm": tot_sq,
            "top_dims": top.iter().map(|&i| json!({
                "dim": i, "mean": st.mean[i], "std": st.var[i].sqrt(), "max_abs": st.max_abs[i],
                "share_of_squared_norm": st.mean_sq[i] / tot_sq, "share_of_variance": st.var[i] / tot_var,
            })).collect::<Vec<_>>(),
            "top_share_of_squared_norm": top.iter().map(|&i| st.mean_sq[i]).sum::<f64>() / tot_sq,
            "top_share_of_variance": top.iter().map(|&i| st.var[i]).sum::<f64>() / tot_var,
        });
        if let Some(sae) = sae.as_ref().filter(|s| s.hook.to_string() == *name) {
            let (fvu, err_share, per_dim_err) = sae_error_by_dim(&store, h, sae, a.rows, &st.mean)?;
            let top_err: f64 = top.iter().map(|&i| per_dim_err[i]).sum();
            let top_var: f64 = top.iter().map(|&i| st.var[i]).sum();
            hook_out["sae"] = json!({
                "path": sae.source, "fvu": fvu,
                "fvu_top_dims": top_err / (top_var * st.rows as f64).max(f64::MIN_POSITIVE),
                "fvu_other_dims": (err_share - top_err) / ((tot_var - top_var) * st.rows as f64).max(f64::MIN_POSITIVE),
                "top_dims_share_of_error": top_err / err_share,
                "top_dims_error": top.iter().map(|&i| json!({
                    "dim": i, "share_of_error": per_dim_err[i] / err_share,
                    "fvu_of_dim": per_dim_err[i] / (st.var[i] * st.rows as f64).max(f64::MIN_POSITIVE),
                })).collect::<Vec<_>>(),
            });
        }
        per_hook.push(hook_out);
    }
    out["per_hook"] = json!(per_hook);
    if a.json {
        println!("{out}");
        return Ok(());
    }
    println!(
        "{}: {} rows x {} hooks ({}), {} shards, {:.1} MB, {}, context {}, digest {}",
        a.store.display(),
        ix.rows,
        ix.recipe.hooks.len(),
        ix.recipe.hooks.join(", "),
        ix.shards.len(),
        ix.bytes as f64 / 1e6,
        ix.recipe.dtype,
        ix.recipe.context_size,
        &ix.digest[..16]
    );
    for h in &per_hook {
        println!(
            "{} ({} rows sampled): the top {} dims by mean square hold {:.1}% of the squared norm and {:.1}% of the variance",
            h["hook"].as_str().unwrap_or(""),
            h["rows_sampled"],
            a.top,
            100.0 * h["top_share_of_squared_norm"].as_f64().unwrap_or(0.0),
            100.0 * h["top_share_of_variance"].as_f64().unwrap_or(0.0)
        );
        for t in h["top_dims"].as_array().into_iter().flatten() {
            println!(
                "  dim {:>4}  mean {:>9.2}  std {:>8.2}  max |x| {:>9.1}  {:>5.1}% of norm^2  {:>5.1}% of variance",
                t["dim"],
                t["mean"].as_f64().unwrap_or(0.0),
                t["std"].as_f64().unwrap_or(0.0),
                t["max_abs"].as_f64().unwrap_or(0.0),
                100.0 * t["share_of_squared_norm"].as_f64().unwrap_or(0.0),
                100.0 * t["share_of_variance"].as_f64().unwrap_or(0.0)
            );
        }
        if let Some(s) = h.get("sae") {
            println!(
                "  SAE {}: FVU {:.4} (top dims {:.4}, the other dims {:.4}); the top dims hold {:.1}% of its squared error",
                s["path"].as_str().unwrap_or(""),
                s["fvu"].as_f64().unwrap_or(0.0),
                s["fvu_top_dims"].as_f64().unwrap_or(0.0),
                s["fvu_other_dims"].as_f64().unwrap_or(0.0),
                100.0 * s["top_dims_share_of_error"].as_f64().unwrap_or(0.0)
            );
            for t in s["top_dims_error"].as_array().into_iter().flatten() {
                println!(
                    "    dim {:>4}  {:>5.1}% of the error, FVU of the dim {:.3}",
                    t["dim"],
                    100.0 * t["share_of_error"].as_f64().unwrap_or(0.0),
                    t["fvu_of_dim"].as_f64().unwrap_or(0.0)
                );
            }
        }
    }
    Ok(())
}

/// An SAE's reconstruction on (up to) `max_rows` rows of hook `h`, spread evenly over the store:
/// its FVU, its total squared error and the squared error per dimension.
fn sae_error_by_dim(
    store: &DiskStore,
    h: usize,
    sae: &knowlens::Sae,
    max_rows: u64,
    mean: &[f64],
) -> Result<(f64, f64, Vec<f64>)> {
    let d = store.index.recipe.widths[h];
    if sae.d_in() != d {
        bail!("the SAE reads {} dimensions, the store's hook {} has {d}", sae.d_in(), store.index.recipe.hooks[h]);
    }
    let total = store.rows();
    let n = max_rows.min(total).max(1);
    let step = (total / n).max(1);
    let rows: Vec<u64> = (0..n).map(|i| i * step).filter(|&r| r < total).collect();
    let mut err = vec![0f64; d];
    let mut var = 0f64;
    for chunk in rows.chunks(1024) {
        let mut x = vec![0f32; chunk.len() * d];
        for (o, &r) in x.chunks_mut(d).zip(chunk) {
            store.read_row(h, r, o);
        }
        let t = candle_core::Tensor::from_vec(x.clone(), (chunk.len(), d), &candle_core::Device::Cpu)?;
        let xh = sae.forward(&t)?.flatten_all()?.to_vec1::<f32>()?;
        for (row, rh) in x.chunks(d).zip(xh.chunks(d)) {
            for i in 0..d {
                let e = (rh[i] - row[i]) as f64;
                err[i] += e * e;
                var += (row[i] as f64 - mean[i]).powi(2);
            }
        }
    }
    let total_err: f64 = err.iter().sum();
    Ok((total_err / var.max(f64::MIN_POSITIVE), total_err, err))
}
