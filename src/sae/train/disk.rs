//! The activation store on disk: the model runs once over a token corpus (`cache`), the chosen
//! hooks' activations are written as bfloat16 (or float16) shards, and training reads them back,
//! memory-mapped, for as many epochs as it is asked (`DiskBatches`), never running the model.
//!
//! Layout of a store directory:
//! * `index.json`: the format, the recipe (what determines every byte: the model's identity,
//!   hooks and widths, the token source, context size, dtype, sequences per shard and per forward
//!   pass) and its sha256 digest, whether the store is complete, and per shard its file name,
//!   sequences, rows, bytes and sha256;
//! * `shard-00000.bin`, ...: per shard, for each hook in the index's order, `rows × width`
//!   little-endian 16-bit floats, one row per non-BOS, non-padding token, in sequence order
//!   (row r of every hook is the same token).
//!
//! Writing is resumable: a shard is written to a temporary file, synced and renamed into place,
//! and only then is the index (rewritten atomically) extended by it. A process killed at any
//! moment leaves an index that lists only complete shards; rerunning the same command skips the
//! sequences those hold and continues (the forward pass is deterministic, so the store ends up
//! byte-identical to an uninterrupted one). A shard that is missing, truncated or fails its
//! checksum when the command is rerun is rewritten from there on.
//!
//! Why bfloat16 by default: the values of Gemma's residual stream reach the thousands and
//! beyond in a few dimensions. Over 204,400 tokens of gemma-3-270m, dimension 163 of
//! `blocks.9.hook_resid_post` reached 62,912, 96% of float16's largest value (65,504), so a
//! longer corpus or a deeper layer would overflow float16; bfloat16 has float32's range. Its 8
//! significant bits (float16 has 11) cost little: the rounding error is at most 2⁻⁹ of each value,
//! 1.9·10⁻⁵ (blocks.6) and 3.1·10⁻⁵ (blocks.9) of the total variance of those activations
//! (measured against a float16 copy of the same store), far below any SAE's error. `--dtype f16` is there for models whose activations are small; a value outside
//! its range is an error that names the hook, never an infinity.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::store::{BatchSource, StoreState};
use crate::fsio::{move_into_place, temp_path, write_atomic, write_synced};
use crate::model::Precision;
use crate::progress::Progress;
use crate::rng::{shuffle, SplitMix64, TAG_SHUFFLE};
use crate::{HookPoint, HookSpec, Model};

pub const FORMAT: &str = "knowlens-activations/1";
pub const INDEX: &str = "index.json";

/// The widest hook a store may record: far above any model's residual stream (Gemma 2 27B has
/// 4,608), low enough that a row's byte count cannot overflow.
pub const MAX_WIDTH: usize = 1 << 20;

/// How activations are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    F16,
    Bf16,
}

impl StoreDtype {
    pub const NAMES: [&'static str; 2] = ["f16", "bf16"];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreDtype::F16 => "f16",
            StoreDtype::Bf16 => "bf16",
        }
    }

    fn encode(self, v: f32) -> u16 {
        match self {
            StoreDtype::F16 => f16::from_f32(v).to_bits(),
            StoreDtype::Bf16 => bf16::from_f32(v).to_bits(),
        }
    }

    fn decode(self, bits: u16) -> f32 {
        match self {
            StoreDtype::F16 => f16::from_bits(bits).to_f32(),
            StoreDtype::Bf16 => bf16::from_bits(bits).to_f32(),
        }
    }

    /// The largest finite magnitude.
    fn max(self) -> f32 {
        match self {
            StoreDtype::F16 => f16::MAX.to_f32(),
            StoreDtype::Bf16 => bf16::MAX.to_f32(),
        }
    }
}

impl std::fmt::Display for StoreDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StoreDtype {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f16" => Ok(StoreDtype::F16),
            "bf16" => Ok(StoreDtype::Bf16),
            _ => bail!("unknown store dtype {s:?} (valid: f16, bf16)"),
        }
    }
}

/// Which model made a store, without loading it: the file (or directory) name, its size in
/// bytes and the precision it runs at. Training from a store compares it with `--model`.
pub fn model_identity(path: &Path, precision: Precision) -> Result<Value> {
    let meta = fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let (bytes, precision) = if meta.is_dir() {
        let mut total = 0u64;
        for e in fs::read_dir(path).with_context(|| format!("{}: cannot list", path.display()))? {
            let e = e?;
            if e.file_type()?.is_file() {
                total += e.metadata()?.len();
            }
        }
        // Safetensors directories always run in float32.
        (total, Precision::F32)
    } else {
        (meta.len(), precision)
    };
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(json!({ "name": name, "bytes": bytes, "precision": precision.to_string() }))
}

/// One shard of a store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardInfo {
    pub file: String,
    pub sequences: u64,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// What determines a store's bytes; its digest is the store's recipe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recipe {
    pub format: String,
    pub model: Value,
    pub hooks: Vec<String>,
    pub widths: Vec<usize>,
    /// The token source (a corpus's recipe and order seed, or a text file's digest).
    pub source: Value,
    pub context_size: usize,
    pub dtype: StoreDtype,
    /// Sequences per shard and per forward pass.
    pub shard_sequences: usize,
    pub model_batch: usize,
    /// Sequences the store holds when complete.
    pub sequences: u64,
    /// BOS (and left padding) positions are left out.
    pub exclude: String,
}

impl Recipe {
    pub fn digest(&self) -> String {
        let text = serde_json::to_string(self).expect("a recipe serialises");
        crate::fsio::hex(&Sha256::digest(text.as_bytes()))
    }

    /// Bytes of one row of every hook.
    pub fn row_bytes(&self) -> u64 {
        self.widths.iter().sum::<usize>() as u64 * 2
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoreIndex {
    pub format: String,
    /// sha256 of `recipe`'s JSON.
    pub digest: String,
    pub recipe: Recipe,
    /// A description of the token source (for the SAEs' `dataset_path`).
    pub source_name: String,
    /// Whether the model puts BOS first (recorded in the SAEs' metadata).
    pub prepend_bos: bool,
    pub complete: bool,
    /// Totals over the shards.
    pub sequences: u64,
    pub rows: u64,
    pub bytes: u64,
    pub shards: Vec<ShardInfo>,
}

impl StoreIndex {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(INDEX);
        let bytes =
            fs::read(&path).with_context(|| format!("{}: cannot read (not an activation store?)", path.display()))?;
        Self::parse(&bytes, &path)
    }

    /// An index already in memory (`path` names it in errors), checked: format, digest, and a
    /// layout that reading can trust (one width per hook, widths from 1 to `MAX_WIDTH`, shard
    /// files that are plain names in the store's directory).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let index: StoreIndex = serde_json::from_slice(bytes)
            .with_context(|| format!("{}: not an activation-store index", path.display()))?;
        if index.format != FORMAT {
            bail!("{}: format '{}', expected '{FORMAT}'", path.display(), index.format);
        }
        let digest = index.recipe.digest();
        if index.digest != digest {
            bail!(
                "{}: the recipe's digest is {digest} but the index records {}: the index was edited or is damaged",
                path.display(),
                index.digest
            );
        }
        let r = &index.recipe;
        if r.hooks.is_empty() || r.hooks.len() != r.widths.len() {
            let (h, w) = (r.hooks.len(), r.widths.len());
            bail!("{}: recipe.hooks has {h} hooks but recipe.widths {w} widths", path.display());
        }
        if let Some(w) = r.widths.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
            bail!("{}: recipe.widths holds {w}, outside 1..={MAX_WIDTH}", path.display());
        }
        for sh in &index.shards {
            crate::fsio::plain_name(&sh.file, path, "shards[].file")?;
        }
        Ok(index)
    }

    fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(INDEX), serde_json::to_string_pretty(self)?.as_bytes())
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::fsio::hex(&Sha256::digest(bytes))
}

fn shard_name(i: usize) -> String {
    format!("shard-{i:05}.bin")
}

/// What `cache` does.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    pub out: PathBuf,
    pub hooks: Vec<HookPoint>,
    /// The model's identity (`model_identity`).
    pub model: Value,
    /// The token source's identity (part of the recipe) and description.
    pub source: Value,
    pub source_name: String,
    pub context_size: usize,
    pub dtype: StoreDtype,
    pub shard_sequences: usize,
    pub model_batch: usize,
    /// Sleep after each forward pass (tests use it to kill a run in the middle).
    pub throttle_ms: u64,
}

#[derive(Debug, Clone, Default)]
pub struct CacheSummary {
    pub digest: String,
    /// Shards already in the store when this process started (resumed), and written now.
    pub shards_before: usize,
    pub shards_written: usize,
    pub sequences: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Tokens run through the model, bytes written and seconds, in this process.
    pub model_tokens: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    pub model_seconds: f64,
    pub write_seconds: f64,
    pub already_complete: bool,
}

/// Writes one shard's bytes to a path (the default is `fsio::write_synced`; tests inject
/// failures such as a full disk).
pub type ShardWriter<'a> = &'a mut dyn FnMut(&Path, &[u8]) -> Result<()>;

/// Runs `model` over `seqs` and writes the activations of `o.hooks` into the store `o.out`,
/// continuing a store of the same recipe that a killed run left (see the module comment).
pub fn cache(model: &Model, seqs: &[Vec<u32>], o: &CacheOptions, progress: &dyn Progress) -> Result<CacheSummary> {
    cache_with_writer(model, seqs, o, progress, &mut |p: &Path, b: &[u8]| write_synced(p, b))
}

pub fn cache_with_writer(
    model: &Model,
    seqs: &[Vec<u32>],
    o: &CacheOptions,
    progress: &dyn Progress,
    writer: ShardWriter,
) -> Result<CacheSummary> {
    if o.hooks.is_empty() {
        bail!("no hooks to cache");
    }
    if o.shard_sequences == 0 || o.model_batch == 0 {
        bail!(
            "sequences per shard ({}) and per forward pass ({}) must be at least 1",
            o.shard_sequences,
            o.model_batch
        );
    }
    if seqs.is_empty() {
        bail!("no token sequences to cache");
    }
    let widths = o.hooks.iter().map(|&h| model.cfg().hook_width(h)).collect::<Result<Vec<_>>>()?;
    let recipe = Recipe {
        format: FORMAT.into(),
        model: o.model.clone(),
        hooks: o.hooks.iter().map(|h| h.to_string()).collect(),
        widths: widths.clone(),
        source: o.source.clone(),
        context_size: o.context_size,
        dtype: o.dtype,
        shard_sequences: o.shard_sequences,
        model_batch: o.model_batch,
        sequences: seqs.len() as u64,
        exclude: "bos+padding".into(),
    };
    let digest = recipe.digest();
    fs::create_dir_all(&o.out).with_context(|| format!("{}: cannot create", o.out.display()))?;
    let bos = model.tokenizer.bos;
    let mut index = if o.out.join(INDEX).exists() {
        let old = StoreIndex::read(&o.out)?;
        if old.digest != digest {
            bail!(
                "{} holds an activation store of another recipe (digest {}, this command's is {}): use another --out",
                o.out.display(),
                &old.digest[..12],
                &digest[..12]
            );
        }
        old
    } else {
        StoreIndex {
            format: FORMAT.into(),
            digest: digest.clone(),
            recipe: recipe.clone(),
            source_name: o.source_name.clone(),
            prepend_bos: model.tokenizer.add_bos && bos.is_some(),
            complete: false,
            sequences: 0,
            rows: 0,
            bytes: 0,
            shards: Vec::new(),
        }
    };
    // Keep the listed shards that are whole; rewrite from the first that is not.
    let good = verified_prefix(&o.out, &index, progress)?;
    if good < index.shards.len() {
        index.shards.truncate(good);
        index.complete = false;
        retotal(&mut index);
        index.write(&o.out)?;
    }
    let mut s = CacheSummary { digest: digest.clone(), shards_before: index.shards.len(), ..Default::default() };
    if index.complete {
        s.already_complete = true;
        s.sequences = index.sequences;
        s.rows = index.rows;
        s.bytes = index.bytes;
        return Ok(s);
    }
    remove_strays(&o.out)?;
    let t0 = Instant::now();
    progress.start("sequences cached", Some(seqs.len() as u64));
    progress.set_position(index.sequences);
    let mut next = index.sequences as usize;
    while next < seqs.len() {
        let end = (next + o.shard_sequences).min(seqs.len());
        let shard = &seqs[next..end];
        let tm = Instant::now();
        let mut per_hook: Vec<Vec<u16>> = vec![Vec::new(); o.hooks.len()];
        let mut rows = 0u64;
        for group in shard.chunks(o.model_batch) {
            rows += run_group(model, group, &o.hooks, &widths, bos, o.dtype, &mut per_hook)?;
            s.model_tokens += group.iter().map(|q| q.len() as u64).sum::<u64>();
            progress.advance(group.len() as u64);
            if o.throttle_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(o.throttle_ms));
            }
        }
        s.model_seconds += tm.elapsed().as_secs_f64();
        let tw = Instant::now();
        let mut bytes = Vec::with_capacity(rows as usize * recipe.row_bytes() as usize);
        for h in &per_hook {
            for v in h {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        let i = index.shards.len();
        let file = shard_name(i);
        let path = o.out.join(&file);
        let tmp = temp_path(&path);
        let written = writer(&tmp, &bytes).and_then(|()| move_into_place(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e.context(format!(
                "{}: cannot write shard {i} of the activation store (disk full or not writable?); the {} shards before it are kept, rerun the same command to continue",
                path.display(),
                i
            )));
        }
        index.shards.push(ShardInfo {
            file,
            sequences: shard.len() as u64,
            rows,
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
        retotal(&mut index);
        index.complete = end == seqs.len();
        index.write(&o.out).with_context(|| format!("{}: cannot update the index", o.out.display()))?;
        s.write_seconds += tw.elapsed().as_secs_f64();
        s.shards_written += 1;
        s.bytes_written += bytes.len() as u64;
        next = end;
    }
    progress.finish();
    s.seconds = t0.elapsed().as_secs_f64();
    s.sequences = index.sequences;
    s.rows = index.rows;
    s.bytes = index.bytes;
    Ok(s)
}

fn retotal(index: &mut StoreIndex) {
    index.sequences = index.shards.iter().map(|s| s.sequences).sum();
    index.rows = index.shards.iter().map(|s| s.rows).sum();
    index.bytes = index.shards.iter().map(|s| s.bytes).sum();
}

/// The number of leading shards of `index` whose files exist with the recorded size and
/// checksum; the first that fails is reported through `progress`.
fn verified_prefix(dir: &Path, index: &StoreIndex, progress: &dyn Progress) -> Result<usize> {
    let ok: Vec<Option<String>> = index
        .shards
        .par_iter()
        .map(|sh| match check_shard(dir, sh, true) {
            Ok(()) => None,
            Err(e) => Some(format!("{e:#}")),
        })
        .collect();
    match ok.iter().position(Option::is_some) {
        Some(i) => {
            progress.log(&format!(
                "knowlens: {}; rewriting the store from shard {i} on",
                ok[i].as_deref().unwrap_or_default()
            ));
            Ok(i)
        }
        None => Ok(index.shards.len()),
    }
}

/// Errors if a shard's file is missing, has another size, or (with `checksum`) other bytes.
fn check_shard(dir: &Path, sh: &ShardInfo, checksum: bool) -> Result<()> {
    let path = dir.join(&sh.file);
    let len = fs::metadata(&path).with_context(|| format!("{}: shard missing", path.display()))?.len();
    if len != sh.bytes {
        bail!("{}: {len} bytes, the index says {}: the shard is truncated or damaged", path.display(), sh.bytes);
    }
    if checksum {
        let bytes = fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        if sha256_hex(&bytes) != sh.sha256 {
            bail!("{}: sha256 differs from the index: the shard is damaged", path.display());
        }
    }
    Ok(())
}

/// Removes temporary files of interrupted shard writes.
fn remove_strays(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".shard-") && name.ends_with(".tmp") {
            fs::remove_file(e.path()).with_context(|| format!("{}: cannot remove", e.path().display()))?;
        }
    }
    Ok(())
}

/// One forward pass over `group`, appending every non-BOS, non-padding position's activation
/// of each hook (encoded) to `out`. Returns the rows added.
fn run_group(
    model: &Model,
    group: &[Vec<u32>],
    hooks: &[HookPoint],
    widths: &[usize],
    bos: Option<u32>,
    dtype: StoreDtype,
    out: &mut [Vec<u16>],
) -> Result<u64> {
    let batch = model.batch_from_ids(group)?;
    let res =
        model.run(&batch, &HookSpec::new().capture(hooks.iter().copied())).context("activation store forward pass")?;
    let s = batch.seq_len;
    let max = dtype.max();
    let mut added = 0;
    for (h, (&hook, &d)) in hooks.iter().zip(widths).enumerate() {
        let flat = res.cache.get(hook)?.flatten_all()?.to_vec1::<f32>()?;
        if flat.len() != batch.rows() * s * d {
            bail!("{hook}: captured {} values, expected {}", flat.len(), batch.rows() * s * d);
        }
        added = 0;
        for r in 0..batch.rows() {
            for p in batch.pad[r]..s {
                if Some(batch.ids[r][p]) == bos {
                    continue;
                }
                let row = &flat[(r * s + p) * d..(r * s + p + 1) * d];
                if let Some(v) = row.iter().find(|v| !v.is_finite() || v.abs() > max) {
                    bail!(
                        "{hook}: activation {v} cannot be stored as {dtype} (largest finite value {max}){}",
                        if dtype == StoreDtype::F16 { "; use --dtype bf16" } else { "" }
                    );
                }
                out[h].extend(row.iter().map(|&v| dtype.encode(v)));
                added += 1;
            }
        }
    }
    Ok(added)
}

/// A complete store, checked and memory-mapped.
pub struct DiskStore {
    pub dir: PathBuf,
    pub index: StoreIndex,
    maps: Vec<Mmap>,
    /// First global row of each shard, and the total at the end.
    starts: Vec<u64>,
}

impl DiskStore {
    /// Opens the store at `dir`: the index's digest, completeness and every shard's size are
    /// checked (and, with `checksums`, every shard's sha256). Errors name the file.
    pub fn open(dir: &Path, checksums: bool) -> Result<Self> {
        let index = StoreIndex::read(dir)?;
        if !index.complete {
            bail!(
                "{}: the activation store is incomplete ({} of {} sequences): rerun the `knowlens sae cache` command that made it to finish it",
                dir.display(),
                index.sequences,
                index.recipe.sequences
            );
        }
        let row_bytes = index.recipe.row_bytes();
        index
            .shards
            .par_iter()
            .map(|sh| {
                if sh.rows.checked_mul(row_bytes) != Some(sh.bytes) {
                    bail!(
                        "{}: the index gives shard {} {} bytes for {} rows of {row_bytes}",
                        dir.display(),
                        sh.file,
                        sh.bytes,
                        sh.rows
                    );
                }
                check_shard(dir, sh, checksums)
                    .context("rerun `knowlens sae cache` with the same arguments to rewrite it")
            })
            .collect::<Result<Vec<()>>>()?;
        let mut maps = Vec::with_capacity(index.shards.len());
        let mut starts = vec![0u64];
        for sh in &index.shards {
            let path = dir.join(&sh.file);
            let f = fs::File::open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
            // Safety: shards are never modified after they are renamed into place; a store is
            // read while no `cache` run rewrites it (a rewrite only happens to damaged shards).
            let map = unsafe { Mmap::map(&f) }.with_context(|| format!("{}: cannot map", path.display()))?;
            if map.len() as u64 != sh.bytes {
                bail!("{}: {} bytes mapped, the index says {}", path.display(), map.len(), sh.bytes);
            }
            maps.push(map);
            // Cannot overflow: every shard's rows are backed by at least 2 bytes each on disk.
            starts.push(starts.last().copied().unwrap_or(0) + sh.rows);
        }
        Ok(Self { dir: dir.to_path_buf(), index, maps, starts })
    }

    pub fn rows(&self) -> u64 {
        *self.starts.last().unwrap_or(&0)
    }

    pub fn hooks(&self) -> &[String] {
        &self.index.recipe.hooks
    }

    /// The position of `hook` among the store's hooks, or an error listing them.
    pub fn hook_index(&self, hook: HookPoint) -> Result<usize> {
        let name = hook.to_string();
        self.hooks().iter().position(|h| *h == name).with_context(|| {
            format!("{}: the activation store holds {}, not {name}", self.dir.display(), self.hooks().join(", "))
        })
    }

    /// Errors unless the store was made by the model of this identity (`model_identity`).
    pub fn check_model(&self, identity: &Value) -> Result<()> {
        if &self.index.recipe.model != identity {
            bail!(
                "{}: the activation store was made by model {} but this run uses {}: cache the activations of this model first",
                self.dir.display(),
                self.index.recipe.model,
                identity
            );
        }
        Ok(())
    }

    /// Decodes global row `r` of hook `h` into `out` (its width).
    pub fn read_row(&self, h: usize, r: u64, out: &mut [f32]) {
        let shard = self.starts.partition_point(|&s| s <= r) - 1;
        let local = (r - self.starts[shard]) as usize;
        let rows = self.index.shards[shard].rows as usize;
        let widths = &self.index.recipe.widths;
        let d = widths[h];
        let offset = 2 * rows * widths[..h].iter().sum::<usize>() + 2 * local * d;
        let bytes = &self.maps[shard][offset..offset + 2 * d];
        let dtype = self.index.recipe.dtype;
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = dtype.decode(u16::from_le_bytes([b[0], b[1]]));
        }
    }
}

/// Training batches from a `DiskStore`: every epoch reads all rows once in a seeded random order
/// over the whole store (so a batch mixes tokens from every shard), `batch_size` rows at a time
/// (the rows left over at the end of an epoch are not used), the same rows for every hook.
/// Epoch e's order is a pure function of (seed, e), so the position (epoch, batches taken) is
/// all a checkpoint needs.
pub struct DiskBatches {
    store: DiskStore,
    /// The store's hook of each trained hook.
    hook_idx: Vec<usize>,
    widths: Vec<usize>,
    batch_size: usize,
    seed: u64,
    order: Vec<u32>,
    per_epoch: u64,
    state: StoreState,
    no_carry: Vec<Vec<f32>>,
    /// Rows handed out in this process.
    pub rows_read: u64,
}

impl DiskBatches {
    pub fn new(store: DiskStore, hooks: &[HookPoint], batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 {
            bail!("the batch size must be at least 1");
        }
        let hook_idx = hooks.iter().map(|&h| store.hook_index(h)).collect::<Result<Vec<_>>>()?;
        let widths = hook_idx.iter().map(|&i| store.index.recipe.widths[i]).collect();
        let rows = store.rows();
        if rows > u32::MAX as u64 {
            bail!("{}: {rows} rows; at most {} per store", store.dir.display(), u32::MAX);
        }
        let per_epoch = rows / batch_size as u64;
        if per_epoch == 0 {
            bail!("{}: {rows} rows, fewer than one batch of {batch_size}", store.dir.display());
        }
        let n = hooks.len();
        Ok(Self {
            store,
            hook_idx,
            widths,
            batch_size,
            seed,
            order: Vec::new(),
            per_epoch,
            state: StoreState::default(),
            no_carry: vec![Vec::new(); n],
            rows_read: 0,
        })
    }

    pub fn store(&self) -> &DiskStore {
        &self.store
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.per_epoch
    }

    fn shuffle_epoch(&mut self) {
        let mut order: Vec<u32> = (0..self.store.rows() as u32).collect();
        let mut rng = SplitMix64::derive(self.seed, TAG_SHUFFLE, self.state.generation);
        shuffle(&mut order, &mut rng);
        self.order = order;
    }
}

impl BatchSource for DiskBatches {
    fn widths(&self) -> &[usize] {
        &self.widths
    }

    fn next_batch(&mut self) -> Result<Option<Vec<Vec<f32>>>> {
        if !self.state.filled || self.state.batches_taken == self.per_epoch {
            if self.state.filled {
                self.state.generation += 1;
            }
            self.state.filled = true;
            self.state.batches_taken = 0;
            self.shuffle_epoch();
        }
        let bs = self.batch_size;
        let b = self.state.batches_taken as usize;
        let rows = &self.order[b * bs..(b + 1) * bs];
        let store = &self.store;
        let out = self
            .hook_idx
            .iter()
            .zip(&self.widths)
            .map(|(&h, &d)| {
                let mut x = vec![0f32; bs * d];
                x.par_chunks_mut(d).zip(rows.par_iter()).for_each(|(o, &r)| store.read_row(h, r as u64, o));
                x
            })
            .collect();
        self.state.batches_taken += 1;
        self.rows_read += bs as u64;
        Ok(Some(out))
    }

    fn state(&self) -> StoreState {
        self.state.clone()
    }

    fn carry(&self) -> &[Vec<f32>] {
        &self.no_carry
    }

    fn restore(&mut self, state: StoreState, _carry: Vec<Vec<f32>>) -> Result<()> {
        if state.batches_taken > self.per_epoch {
            bail!("checkpoint says {} batches of an epoch of {} were taken", state.batches_taken, self.per_epoch);
        }
        self.state = state;
        if self.state.filled {
            self.shuffle_epoch();
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} (activation store, recipe {})", self.store.index.source_name, &self.store.index.digest[..16])
    }

    fn model_tokens(&self) -> u64 {
        0
    }
}

/// Per-dimension statistics of one hook's activations over (up to) `max_rows` rows of a store,
/// spread evenly over it: mean, variance, mean square; and each dimension's share of the total
/// variance.
pub struct DimStats {
    pub rows: u64,
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub mean_sq: Vec<f64>,
    pub max_abs: Vec<f64>,
}

pub fn dim_stats(store: &DiskStore, hook: usize, max_rows: u64) -> DimStats {
    let d = store.index.recipe.widths[hook];
    let total = store.rows();
    let n = max_rows.min(total).max(1);
    let step = (total / n).max(1);
    let mut sum = vec![0f64; d];
    let mut sq = vec![0f64; d];
    let mut mx = vec![0f64; d];
    let mut row = vec![0f32; d];
    let mut count = 0u64;
    let mut r = 0;
    while r < total && count < n {
        store.read_row(hook, r, &mut row);
        for i in 0..d {
            let v = row[i] as f64;
            sum[i] += v;
            sq[i] += v * v;
            mx[i] = mx[i].max(v.abs());
        }
        count += 1;
        r += step;
    }
    let c = count.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / c).collect();
    let mean_sq: Vec<f64> = sq.iter().map(|s| s / c).collect();
    let var = mean.iter().zip(&mean_sq).map(|(m, q)| (q - m * m).max(0.0)).collect();
    DimStats { rows: count, mean, var, mean_sq, max_abs: mx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtypes_round_trip_and_f16_is_finer() {
        for dt in [StoreDtype::F16, StoreDtype::Bf16] {
            assert_eq!(dt.as_str().parse::<StoreDtype>().unwrap(), dt);
            assert_eq!(dt.decode(dt.encode(1.5)), 1.5);
        }
        let x = 1234.567f32;
        let e16 = (StoreDtype::F16.decode(StoreDtype::F16.encode(x)) - x).abs();
        let eb16 = (StoreDtype::Bf16.decode(StoreDtype::Bf16.encode(x)) - x).abs();
        assert!(e16 < 0.5 && eb16 > e16, "{e16} {eb16}");
        assert!("f32".parse::<StoreDtype>().unwrap_err().to_string().contains("f16, bf16"));
    }

    #[test]
    fn recipe_digest_changes_with_any_field() {
        let r = Recipe {
            format: FORMAT.into(),
            model: json!({"name": "m"}),
            hooks: vec!["blocks.1.hook_resid_post".into()],
            widths: vec![8],
            source: json!({"text": "x"}),
            context_size: 16,
            dtype: StoreDtype::F16,
            shard_sequences: 4,
            model_batch: 2,
            sequences: 10,
            exclude: "bos+padding".into(),
        };
        let d = r.digest();
        assert_eq!(d.len(), 64);
        assert_ne!(Recipe { context_size: 17, ..r.clone() }.digest(), d);
        assert_ne!(Recipe { dtype: StoreDtype::Bf16, ..r.clone() }.digest(), d);
        assert_ne!(Recipe { hooks: vec!["blocks.2.hook_resid_post".into()], ..r }.digest(), d);
    }
}
