//! The training loop: one activation store feeding one trainer per hook, progress events, a JSONL
//! log, checkpoints, and one SAELens directory per hook at the end.
//!
//! Running the same command again resumes from the last checkpoint in `out` (and refuses a
//! checkpoint of a different run); a finished run is not retrained.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::checkpoint::{self, CheckpointState};
use super::config::TrainConfig;
use super::source::TokenSource;
use super::store::{ActivationStore, BatchSource, StoreConfig};
use super::trainer::{Scratch, StepStats, Trainer};
use crate::hooks::HookPoint;
use crate::model::Model;
use crate::progress::Progress;

pub const LOG: &str = "train_log.jsonl";
pub const DONE: &str = "done.json";

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    pub hooks: Vec<HookPoint>,
    /// The trainer configuration shared by every hook (`d_in` is set per hook).
    pub train: TrainConfig,
    pub batch_size: usize,
    pub buffer_batches: usize,
    pub model_batch: usize,
    pub context_size: usize,
    /// Write a checkpoint every this many steps (0: never).
    pub checkpoint_every: u64,
    /// Write a log line (per hook) every this many steps, and after the last.
    pub log_every: u64,
    /// Recorded in the saved SAEs and the fingerprint.
    pub model_name: String,
    /// Anything else that determines the result and must match on resume (e.g. the model file).
    pub fingerprint_extra: Value,
    /// Sleep after each step (tests use it to kill a run in the middle).
    pub throttle_ms: u64,
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps: u64,
    pub resumed_from: Option<u64>,
    /// The SAELens directory of each hook.
    pub sae_dirs: Vec<PathBuf>,
    /// Stats of the last step, per hook.
    pub last: Vec<StepStats>,
    /// Seconds in this process: total, in the store (model forward passes), in SAE steps.
    pub seconds: f64,
    pub store_seconds: f64,
    pub sae_seconds: f64,
    /// Activation rows trained on in this process (per hook) and tokens the model ran.
    pub rows_trained: u64,
    pub model_tokens: u64,
    pub already_done: bool,
}

/// Where hook `h`'s SAE is saved.
pub fn sae_dir(out: &Path, hook: HookPoint) -> PathBuf {
    out.join(hook.to_string())
}

fn fingerprint(o: &RunOptions, source: &str) -> String {
    let v = json!({
        "hooks": o.hooks.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        "train": serde_json::to_value(&o.train).unwrap_or(Value::Null),
        "batch_size": o.batch_size,
        "buffer_batches": o.buffer_batches,
        "model_batch": o.model_batch,
        "context_size": o.context_size,
        "model": o.model_name,
        "source": source,
        "extra": o.fingerprint_extra,
    });
    v.to_string()
}

/// Trains one SAE per hook on activations of `model` over `source` (the model in the loop).
/// `progress` sees one stage, the training steps (placed at the checkpoint's step when
/// resuming), with the last step's losses as its message.
pub fn train<'a>(
    model: &'a Model,
    source: Box<dyn TokenSource + 'a>,
    o: &RunOptions,
    progress: &dyn Progress,
) -> Result<RunSummary> {
    let store_cfg = StoreConfig {
        hooks: o.hooks.clone(),
        batch_size: o.batch_size,
        buffer_batches: o.buffer_batches,
        model_batch: o.model_batch,
        seed: o.train.seed,
    };
    let mut store = ActivationStore::new(model, source, store_cfg)?;
    let prepend_bos = model.tokenizer.add_bos && model.tokenizer.bos.is_some();
    train_on(&mut store, prepend_bos, o, progress)
}

/// Trains one SAE per hook on the batches of `store` (the model in the loop, or an activation
/// store on disk); `prepend_bos` is recorded in the saved SAEs. See `train`.
pub fn train_on(
    store: &mut dyn BatchSource,
    prepend_bos: bool,
    o: &RunOptions,
    progress: &dyn Progress,
) -> Result<RunSummary> {
    fs::create_dir_all(&o.out).with_context(|| format!("{}: cannot create", o.out.display()))?;
    let source_name = store.describe();
    let fp = fingerprint(o, &source_name);
    let done_path = o.out.join(DONE);
    if done_path.exists() {
        let done: Value = serde_json::from_str(&fs::read_to_string(&done_path)?)?;
        if done.get("fingerprint").and_then(Value::as_str) != Some(fp.as_str()) {
            bail!("{} holds a finished run with other settings; use another --out", o.out.display());
        }
        return Ok(RunSummary {
            steps: done["steps"].as_u64().unwrap_or(0),
            resumed_from: None,
            sae_dirs: o.hooks.iter().map(|&h| sae_dir(&o.out, h)).collect(),
            last: Vec::new(),
            seconds: 0.0,
            store_seconds: 0.0,
            sae_seconds: 0.0,
            rows_trained: 0,
            model_tokens: 0,
            already_done: true,
        });
    }
    if store.widths().len() != o.hooks.len() {
        bail!("the batch source gives {} hooks, the run trains {}", store.widths().len(), o.hooks.len());
    }

    let mut trainers = store
        .widths()
        .iter()
        .map(|&d| Trainer::new(TrainConfig { d_in: d, ..o.train.clone() }))
        .collect::<Result<Vec<_>>>()?;
    let total = o.train.total_steps;

    let mut start = 0u64;
    let mut elapsed_before = 0.0;
    let mut resumed_from = None;
    match checkpoint::find(&o.out)? {
        Some(ck) => {
            if ck.state.fingerprint != fp {
                bail!(
                    "{} holds a checkpoint of a run with other settings; use another --out (or delete it)",
                    o.out.display()
                );
            }
            for (i, t) in trainers.iter_mut().enumerate() {
                ck.restore_trainer(i, t)?;
            }
            store.restore(ck.state.store.clone(), ck.carry(o.hooks.len())?)?;
            start = ck.state.step;
            elapsed_before = ck.state.elapsed_s;
            resumed_from = Some(start);
            truncate_log(&o.out.join(LOG), start)?;
        }
        None => {
            let log = o.out.join(LOG);
            if log.exists() {
                fs::remove_file(&log)?;
            }
        }
    }

    progress.start("steps", Some(total));
    progress.set_position(start);
    let mut log = fs::OpenOptions::new().create(true).append(true).open(o.out.join(LOG))?;
    let t0 = Instant::now();
    let (mut store_s, mut sae_s) = (0.0, 0.0);
    let mut last = vec![StepStats::default(); trainers.len()];
    let mut rows = 0u64;
    let mut scratch = Scratch::default();
    let mut step = start;
    while step < total {
        let ts = Instant::now();
        let Some(batch) = store.next_batch()? else {
            progress.log(&format!("the token source ran out after {step} of {total} steps; saving what was trained"));
            break;
        };
        store_s += ts.elapsed().as_secs_f64();
        let tt = Instant::now();
        for (h, t) in trainers.iter_mut().enumerate() {
            // One set of [batch, width] work buffers for all hooks: they step one at a time.
            std::mem::swap(&mut t.scratch, &mut scratch);
            let stats = t.step(&batch[h]);
            std::mem::swap(&mut t.scratch, &mut scratch);
            last[h] = stats?;
        }
        sae_s += tt.elapsed().as_secs_f64();
        step += 1;
        rows += o.batch_size as u64;
        let elapsed = elapsed_before + t0.elapsed().as_secs_f64();
        if step.is_multiple_of(o.log_every.max(1)) || step == total {
            for (h, s) in last.iter().enumerate() {
                let line = json!({
                    "step": step,
                    "tokens": step * o.batch_size as u64,
                    "hook": o.hooks[h].to_string(),
                    "loss": s.loss, "mse": s.mse, "aux": s.aux, "sparsity": s.sparsity,
                    "l0": s.l0, "fvu": s.fvu, "dead_fraction": s.dead_fraction, "dense_fraction": s.dense_fraction,
                    "lr": s.lr, "dense": s.dense,
                    "elapsed_s": elapsed,
                });
                writeln!(log, "{line}")?;
            }
            log.flush()?;
        }
        progress.message(
            &o.hooks
                .iter()
                .zip(&last)
                .map(|(h, s)| {
                    format!(
                        "{}: loss {:.4} L0 {:.1} FVU {:.3} dead {:.1}%",
                        short(*h),
                        s.loss,
                        s.l0,
                        s.fvu,
                        100.0 * s.dead_fraction
                    )
                })
                .collect::<Vec<_>>()
                .join(" | "),
        );
        progress.advance(1);
        if o.checkpoint_every > 0 && step.is_multiple_of(o.checkpoint_every) && step < total {
            let state = CheckpointState {
                format: checkpoint::FORMAT.into(),
                fingerprint: fp.clone(),
                step,
                store: store.state(),
                trainers: o.hooks.iter().zip(&trainers).map(|(h, t)| checkpoint::scalars(h.to_string(), t)).collect(),
                elapsed_s: elapsed,
            };
            checkpoint::save(&o.out, &state, &trainers, store.carry())?;
        }
        if o.throttle_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(o.throttle_ms));
        }
    }
    progress.finish();

    let mut dirs = Vec::new();
    for (i, (h, t)) in o.hooks.iter().zip(&trainers).enumerate() {
        let scales = if t.dim_scale.is_empty() { vec![t.scale; t.cfg.d_in] } else { t.dim_scale.clone() };
        let mut sae = t.params.to_sae_scaled(&t.cfg.arch, t.saved_topk_threshold(), &scales, *h)?;
        sae.model_name = Some(o.model_name.clone());
        let meta = &mut sae.extra_metadata;
        meta.insert("context_size".into(), json!(o.context_size));
        meta.insert("prepend_bos".into(), json!(prepend_bos));
        meta.insert("exclude_special_tokens".into(), json!(true));
        meta.insert("dataset_path".into(), json!(source_name));
        meta.insert("training_tokens".into(), json!(step * o.batch_size as u64));
        meta.insert(
            "knowlens_training".into(),
            json!({
                "architecture": t.cfg.arch,
                "steps": step,
                "batch_size": o.batch_size,
                "lr": t.cfg.lr,
                "seed": t.cfg.seed,
                "input_scale": t.scale,
                "per_dim_scale": t.cfg.per_dim_scale,
                "last_step": serde_json::to_value(&last[i])?,
            }),
        );
        let dir = sae_dir(&o.out, *h);
        sae.save_saelens(&dir)?;
        dirs.push(dir);
    }
    let done = json!({ "fingerprint": fp, "steps": step, "tokens": step * o.batch_size as u64 });
    fs::write(&done_path, serde_json::to_string_pretty(&done)? + "\n")?;
    checkpoint::remove_all(&o.out)?;
    Ok(RunSummary {
        steps: step,
        resumed_from,
        sae_dirs: dirs,
        last,
        seconds: t0.elapsed().as_secs_f64(),
        store_seconds: store_s,
        sae_seconds: sae_s,
        rows_trained: rows,
        model_tokens: store.model_tokens(),
        already_done: false,
    })
}

/// `blocks.6.hook_resid_post` → `L6.resid_post`, for the progress bar.
fn short(h: HookPoint) -> String {
    let s = h.to_string();
    match h.layer() {
        Some(l) => format!("L{l}.{}", s.rsplit('.').next().unwrap_or("").trim_start_matches("hook_")),
        None => s,
    }
}

/// Drops log lines of steps after `step` (written after the checkpoint a run resumes from).
fn truncate_log(path: &Path, step: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let keep: Vec<String> = BufReader::new(fs::File::open(path)?)
        .lines()
        .map_while(|l| l.ok())
        .filter(|l| serde_json::from_str::<Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step))
        .collect();
    crate::fsio::write_atomic(path, keep.iter().map(|l| format!("{l}\n")).collect::<String>().as_bytes())?;
    Ok(())
}
