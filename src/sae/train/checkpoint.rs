//! Checkpoints that make a killed run resumable bit for bit.
//!
//! A checkpoint holds, per hook, the parameters, the Adam moments, the step, the dead-latent
//! counters, the BatchTopK threshold and the input scale; and the store's position
//! (`StoreState` plus the rows carried into its current generation). Nothing else is random:
//! initial weights and shuffles come from streams derived from the seed and counters.
//!
//! Writing is atomic. Everything goes into a fresh directory `checkpoint-<step>` (files synced
//! to disk), and only then does the pointer file `checkpoint.json` switch to it, by writing a
//! temporary file and renaming it over the old one. A process killed at any moment leaves
//! either the old pointer and its complete directory or the new ones; stray directories of an
//! interrupted write are removed at the next start.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};

use super::store::StoreState;
use super::trainer::Trainer;
use crate::fsio::{move_into_place, sync_dir, write_atomic, write_synced};

pub const FORMAT: &str = "knowlens-sae-checkpoint/1";
pub const POINTER: &str = "checkpoint.json";

/// Scalars of one hook's trainer (float values as bit patterns, so JSON cannot round them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerScalars {
    pub hook: String,
    pub step: u64,
    pub topk_threshold_bits: u64,
    pub scale_bits: u32,
    pub initialized: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: String,
    /// Everything that determines the run's result, as JSON text (compared as text: parsing
    /// JSON floats back is not exact); a checkpoint of another run is refused.
    pub fingerprint: String,
    pub step: u64,
    pub store: StoreState,
    pub trainers: Vec<TrainerScalars>,
    /// Seconds of training before this checkpoint (for the log's elapsed time).
    pub elapsed_s: f64,
}

#[derive(Serialize, Deserialize)]
struct Pointer {
    dir: String,
    step: u64,
}

/// Raw little-endian bytes with a dtype and shape, for the safetensors writer.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn f32s(v: &[f32]) -> Raw {
    Raw { dtype: Dtype::F32, shape: vec![v.len()], bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
}

fn u64s(v: &[u64]) -> Raw {
    Raw { dtype: Dtype::U64, shape: vec![v.len()], bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
}

/// The arrays of a trainer, by name.
fn trainer_arrays(t: &Trainer) -> Vec<(String, Raw)> {
    let p = &t.params;
    let mo = &t.moments;
    let mut out = vec![];
    for (name, v, m) in [
        ("w_enc_t", &p.w_enc_t, &mo.w_enc_t),
        ("w_dec", &p.w_dec, &mo.w_dec),
        ("b_enc", &p.b_enc, &mo.b_enc),
        ("b_dec", &p.b_dec, &mo.b_dec),
        ("threshold", &p.threshold, &mo.threshold),
    ] {
        if v.is_empty() {
            continue;
        }
        out.push((name.to_string(), f32s(v)));
        out.push((format!("adam_m.{name}"), f32s(&m.m)));
        out.push((format!("adam_v.{name}"), f32s(&m.v)));
    }
    out.push(("since_fired".into(), u64s(&t.since_fired)));
    if !t.dim_scale.is_empty() {
        out.push(("dim_scale".into(), f32s(&t.dim_scale)));
    }
    out
}

fn write_tensors(path: &Path, arrays: &[(String, Raw)]) -> Result<()> {
    let bytes = safetensors::tensor::serialize(arrays.iter().map(|(n, r)| (n.as_str(), r)), &None)
        .with_context(|| format!("{}: cannot serialize", path.display()))?;
    write_synced(path, &bytes)
}

/// Writes a checkpoint of `trainers` and the store into `out`, atomically, and removes older
/// ones.
pub fn save(out: &Path, state: &CheckpointState, trainers: &[Trainer], carry: &[Vec<f32>]) -> Result<()> {
    let name = format!("checkpoint-{}", state.step);
    let dir = out.join(&name);
    let tmp = crate::fsio::temp_path(&dir);
    fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    for (i, t) in trainers.iter().enumerate() {
        write_tensors(&tmp.join(format!("hook{i}.safetensors")), &trainer_arrays(t))?;
    }
    let carry_arrays: Vec<(String, Raw)> =
        carry.iter().enumerate().map(|(i, c)| (format!("carry{i}"), f32s(c))).collect();
    write_tensors(&tmp.join("carry.safetensors"), &carry_arrays)?;
    write_synced(&tmp.join("state.json"), serde_json::to_string_pretty(state)?.as_bytes())?;
    sync_dir(&tmp);
    move_into_place(&tmp, &dir)?;
    write_atomic(
        &out.join(POINTER),
        serde_json::to_string(&Pointer { dir: name.clone(), step: state.step })?.as_bytes(),
    )?;
    remove_others(out, Some(&name))
}

/// Removes checkpoint directories other than `keep` (and leftovers of interrupted writes).
pub fn remove_others(out: &Path, keep: Option<&str>) -> Result<()> {
    let Ok(entries) = fs::read_dir(out) else { return Ok(()) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let is_ckpt = name.starts_with("checkpoint-") || (name.starts_with(".checkpoint-") && name.ends_with(".tmp"));
        if is_ckpt && Some(name.as_str()) != keep && e.path().is_dir() {
            fs::remove_dir_all(e.path()).with_context(|| format!("{}: cannot remove", e.path().display()))?;
        }
        // A pointer whose write was interrupted before its rename.
        if name.starts_with(&format!(".{POINTER}.")) && name.ends_with(".tmp") && e.path().is_file() {
            fs::remove_file(e.path()).with_context(|| format!("{}: cannot remove", e.path().display()))?;
        }
    }
    Ok(())
}

/// Removes every checkpoint (after a finished run).
pub fn remove_all(out: &Path) -> Result<()> {
    let ptr = out.join(POINTER);
    if ptr.exists() {
        fs::remove_file(&ptr)?;
    }
    remove_others(out, None)
}

/// A loaded checkpoint: its state, per hook the named arrays, and the carried rows.
pub struct Loaded {
    pub state: CheckpointState,
    pub dir: PathBuf,
}

/// The checkpoint `out` points to, if any (stray directories are cleaned up).
pub fn find(out: &Path) -> Result<Option<Loaded>> {
    let ptr_path = out.join(POINTER);
    if !ptr_path.exists() {
        remove_others(out, None)?;
        return Ok(None);
    }
    let ptr_bytes = fs::read(&ptr_path).with_context(|| format!("{}: cannot read", ptr_path.display()))?;
    let ptr: Pointer = serde_json::from_slice(&ptr_bytes)
        .with_context(|| format!("{}: not a checkpoint pointer", ptr_path.display()))?;
    // Everything is checked before stray directories are removed: a damaged pointer (one that
    // names another directory) must cost no checkpoint.
    let name = crate::fsio::plain_name(&ptr.dir, &ptr_path, "dir")?;
    if !name.starts_with("checkpoint-") {
        bail!("{}: dir {name:?} is not a checkpoint directory (checkpoint-<step>)", ptr_path.display());
    }
    let dir = out.join(name);
    let state_path = dir.join("state.json");
    let state: CheckpointState = serde_json::from_slice(
        &fs::read(&state_path).with_context(|| format!("{}: cannot read", state_path.display()))?,
    )
    .with_context(|| format!("{}: not a checkpoint state", state_path.display()))?;
    if state.format != FORMAT {
        bail!("{}: format '{}', expected '{FORMAT}'", state_path.display(), state.format);
    }
    remove_others(out, Some(name))?;
    Ok(Some(Loaded { state, dir }))
}

fn read_tensors(path: &Path) -> Result<HashMap<String, (Dtype, Vec<u8>)>> {
    let bytes = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
    Ok(st.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.data().to_vec()))).collect())
}

fn to_f32(name: &str, t: Option<&(Dtype, Vec<u8>)>, len: usize) -> Result<Vec<f32>> {
    match t {
        Some((Dtype::F32, b)) if b.len() == len * 4 => {
            Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        Some(_) => bail!("checkpoint array '{name}' has the wrong type or size (expected {len} float32)"),
        None if len == 0 => Ok(Vec::new()),
        None => bail!("checkpoint array '{name}' is missing"),
    }
}

impl Loaded {
    /// Restores hook `i`'s trainer (created with the run's config) from the checkpoint.
    pub fn restore_trainer(&self, i: usize, t: &mut Trainer) -> Result<()> {
        let path = self.dir.join(format!("hook{i}.safetensors"));
        let a = read_tensors(&path)?;
        let s =
            self.state.trainers.get(i).with_context(|| {
                format!("{}: the checkpoint has no trainer {i}", self.dir.join("state.json").display())
            })?;
        let ctx = || path.display().to_string();
        let p = &mut t.params;
        let mo = &mut t.moments;
        for (name, v, m) in [
            ("w_enc_t", &mut p.w_enc_t, &mut mo.w_enc_t),
            ("w_dec", &mut p.w_dec, &mut mo.w_dec),
            ("b_enc", &mut p.b_enc, &mut mo.b_enc),
            ("b_dec", &mut p.b_dec, &mut mo.b_dec),
            ("threshold", &mut p.threshold, &mut mo.threshold),
        ] {
            let len = v.len();
            *v = to_f32(name, a.get(name), len).with_context(ctx)?;
            m.m = to_f32(name, a.get(&format!("adam_m.{name}")), len).with_context(ctx)?;
            m.v = to_f32(name, a.get(&format!("adam_v.{name}")), len).with_context(ctx)?;
        }
        match a.get("since_fired") {
            Some((Dtype::U64, b)) if b.len() == t.since_fired.len() * 8 => {
                t.since_fired = b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
            }
            _ => bail!("{}: 'since_fired' is missing or has the wrong size", path.display()),
        }
        t.dim_scale = match a.get("dim_scale") {
            Some(v) => to_f32("dim_scale", Some(v), t.cfg.d_in).with_context(ctx)?,
            None => Vec::new(),
        };
        t.step = s.step;
        t.topk_threshold = f64::from_bits(s.topk_threshold_bits);
        t.scale = f32::from_bits(s.scale_bits);
        t.initialized = s.initialized;
        Ok(())
    }

    /// The rows carried into the store's current generation, per hook.
    pub fn carry(&self, n_hooks: usize) -> Result<Vec<Vec<f32>>> {
        let path = self.dir.join("carry.safetensors");
        let a = read_tensors(&path)?;
        (0..n_hooks)
            .map(|i| {
                let name = format!("carry{i}");
                let len = a.get(&name).map(|t| t.1.len() / 4).unwrap_or(0);
                to_f32(&name, a.get(&name), len).with_context(|| path.display().to_string())
            })
            .collect()
    }
}

pub fn scalars(hook: String, t: &Trainer) -> TrainerScalars {
    TrainerScalars {
        hook,
        step: t.step,
        topk_threshold_bits: t.topk_threshold.to_bits(),
        scale_bits: t.scale.to_bits(),
        initialized: t.initialized,
    }
}
