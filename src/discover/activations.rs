//! Residual-stream activations at one token per row (an entity's last token, or a random corpus
//! token), at a set of hooks, cached on disk in chunks so a killed run resumes where it stopped.
//!
//! Cache layout: `<cache>/<kind>-<key>/meta.json` (what the rows are) and `chunk_NNNNN.f32`
//! (rows of `hooks.len() × d` little-endian float32, `chunk` rows per file, written atomically).
//! `key` hashes the model, the hooks and every row's tokens, so a changed input never reuses a
//! stale cache: it lands in another directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::progress::Progress;
use crate::{HookPoint, HookSpec, Model, Positions};

/// Rows of activations at several hooks: `data[(row * hooks.len() + h) * d ..][..d]`.
#[derive(Debug, Clone)]
pub struct Activations {
    pub hooks: Vec<HookPoint>,
    pub d: usize,
    pub n: usize,
    data: Vec<f32>,
}

impl Activations {
    pub fn new(hooks: Vec<HookPoint>, d: usize, n: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != n * hooks.len() * d {
            bail!("{} activation values for {n} rows × {} hooks × {d}", data.len(), hooks.len());
        }
        Ok(Self { hooks, d, n, data })
    }

    pub fn hook_index(&self, hook: HookPoint) -> Result<usize> {
        self.hooks.iter().position(|h| *h == hook).with_context(|| format!("activations at {hook} were not collected"))
    }

    /// Row `r` at hook number `h`.
    pub fn row(&self, r: usize, h: usize) -> &[f32] {
        let at = (r * self.hooks.len() + h) * self.d;
        &self.data[at..at + self.d]
    }

    /// Rows `rows` at hook number `h`, back to back ([rows.len() × d]).
    pub fn matrix(&self, h: usize, rows: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * self.d);
        for &r in rows {
            out.extend_from_slice(self.row(r, h));
        }
        out
    }
}

/// One prompt and the token to read in it.
#[derive(Debug, Clone)]
pub enum Item {
    /// A prompt naming an entity: read at the entity's last token.
    Entity { prompt: String, name: String },
    /// Token ids (BOS included where the model has one): read at the last one.
    Tokens(Vec<u32>),
}

/// Collects `items` at `hooks`, `batch` rows per forward pass, through the chunk cache in
/// `cache` (None: in memory only). Every hook must exist in the model and have width d_model.
pub fn collect(
    model: &Model,
    kind: &str,
    items: &[Item],
    hooks: &[HookPoint],
    batch: usize,
    cache: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Activations> {
    let cfg = model.cfg();
    let d = cfg.d_model;
    for &h in hooks {
        let w = cfg.hook_width(h).with_context(|| format!("{kind} activations"))?;
        if w != d {
            bail!("{kind} activations: hook {h} has width {w}, not the residual width {d}");
        }
    }
    if hooks.is_empty() {
        bail!("{kind} activations: no hook to collect");
    }
    let batch = batch.max(1);
    let tokens: Vec<Vec<u32>> = items
        .iter()
        .map(|it| match it {
            Item::Entity { prompt, .. } => model.tokenizer.encode_prompt(prompt, false),
            Item::Tokens(t) => Ok(t.clone()),
        })
        .collect::<Result<_>>()?;
    let dir = cache.map(|c| c.join(format!("{kind}-{}", cache_key(model, hooks, items, &tokens, batch))));
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let meta = serde_json::json!({
            "kind": kind, "model": model.source.display().to_string(), "d_model": d,
            "hooks": hooks.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            "rows": items.len(), "chunk_rows": batch, "format": "little-endian f32 [rows, hooks, d_model] per chunk",
        });
        crate::fsio::write_atomic(&dir.join("meta.json"), serde_json::to_string_pretty(&meta)?.as_bytes())?;
    }
    let row_len = hooks.len() * d;
    let mut data = vec![0f32; items.len() * row_len];
    let n_chunks = items.len().div_ceil(batch);
    progress.start(&format!("{kind} activations"), Some(items.len() as u64));
    let mut resumed = 0u64;
    for c in 0..n_chunks {
        let lo = c * batch;
        let hi = (lo + batch).min(items.len());
        let out = &mut data[lo * row_len..hi * row_len];
        let file = dir.as_ref().map(|d| chunk_path(d, c));
        if let Some(f) = file.as_ref().filter(|f| f.is_file()) {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            if bytes.len() == out.len() * 4 {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                resumed += (hi - lo) as u64;
                progress.set_position(resumed);
                continue;
            }
        }
        run_chunk(model, &items[lo..hi], &tokens[lo..hi], hooks, out)
            .with_context(|| format!("{kind} activations, rows {lo}..{hi}"))?;
        if let Some(f) = &file {
            let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
            crate::fsio::write_atomic(f, &bytes)?;
        }
        progress.advance((hi - lo) as u64);
    }
    progress.finish();
    Activations::new(hooks.to_vec(), d, items.len(), data)
}

fn chunk_path(dir: &Path, c: usize) -> PathBuf {
    dir.join(format!("chunk_{c:05}.f32"))
}

fn cache_key(model: &Model, hooks: &[HookPoint], items: &[Item], tokens: &[Vec<u32>], batch: usize) -> String {
    let cfg = model.cfg();
    let mut h = Sha256::new();
    h.update(format!("{}|{}|{}|{}|{batch}|", model.source.display(), cfg.n_layers, cfg.d_model, cfg.vocab_size));
    for hook in hooks {
        h.update(hook.to_string());
        h.update(b"|");
    }
    for (it, t) in items.iter().zip(tokens) {
        if let Item::Entity { name, .. } = it {
            h.update(name.as_bytes());
        }
        h.update(b"#");
        for id in t {
            h.update(id.to_le_bytes());
        }
        h.update(b"\n");
    }
    let digest = h.finalize();
    crate::fsio::hex(&digest[..8])
}

fn run_chunk(model: &Model, items: &[Item], tokens: &[Vec<u32>], hooks: &[HookPoint], out: &mut [f32]) -> Result<()> {
    let d = model.cfg().d_model;
    let (batch, positions) = if let Some(Item::Entity { .. }) = items.first() {
        let pairs: Vec<(&str, &str)> = items
            .iter()
            .map(|it| match it {
                Item::Entity { prompt, name } => Ok((prompt.as_str(), name.as_str())),
                Item::Tokens(_) => bail!("a chunk mixes entity prompts and token rows"),
            })
            .collect::<Result<_>>()?;
        let eb = model.entity_batch(&pairs, false)?;
        let pos = eb.last();
        (eb.batch, pos)
    } else {
        (model.batch_from_ids(tokens)?, Positions::Last)
    };
    let spec = HookSpec::new().capture(hooks.iter().copied());
    let run = model.run(&batch, &spec)?;
    for (h, &hook) in hooks.iter().enumerate() {
        let g = run.cache.gather(hook, &positions)?; // [b, 1, d]
        let v: Vec<f32> = g.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        for r in 0..items.len() {
            let dst = (r * hooks.len() + h) * d;
            out[dst..dst + d].copy_from_slice(&v[r * d..(r + 1) * d]);
        }
    }
    Ok(())
}

/// `n` random corpus tokens with up to `context - 1` tokens of their document before them
/// (BOS first where the corpus has one); never a BOS itself. Seeded by `seed`.
pub fn corpus_items(corpus: &crate::corpus::TokenCorpus, n: usize, context: usize, seed: u64) -> Result<Vec<Item>> {
    let lens: Vec<usize> = (0..corpus.n_documents()).map(|i| corpus.document(i).len()).collect();
    let bos = corpus.bos();
    // Candidate positions: every token after a document's first (which is BOS where there is one).
    let skip = usize::from(bos.is_some());
    let mut starts = Vec::with_capacity(lens.len());
    let mut total = 0usize;
    for &l in &lens {
        starts.push(total);
        total += l.saturating_sub(skip);
    }
    if total == 0 {
        bail!("the corpus has no token to sample");
    }
    let context = context.max(2);
    let mut rng = crate::rng::SplitMix64::derive(seed, TAG_CORPUS_TOKENS, 0);
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let g = rng.below(total as u64) as usize;
        let doc = starts.partition_point(|&s| s <= g) - 1;
        let p = g - starts[doc] + skip;
        let tokens = corpus.document(doc);
        let keep = if bos.is_some() { context - 1 } else { context };
        let lo = (p + 1).saturating_sub(keep).max(skip);
        let mut row = Vec::with_capacity(context);
        if let Some(b) = bos {
            row.push(b);
        }
        row.extend_from_slice(&tokens[lo..=p]);
        items.push(Item::Tokens(row));
    }
    Ok(items)
}

/// Stream tag for the corpus token sample (distinct from the crate's other tags).
const TAG_CORPUS_TOKENS: u64 = 0x4449_5343; // "DISC"
