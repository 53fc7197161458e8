//! The activation store: runs the model over token sequences, keeps the activations of several
//! hooks at once and hands out shuffled training batches, one per hook, of the same tokens.
//!
//! The store works in generations. A generation fills a buffer of `buffer_batches ×
//! batch_size` rows per hook: the rows left over from the previous generation first, then the
//! model's activations at every position of the next sequences except BOS (and left padding),
//! one forward pass per `model_batch` sequences capturing all hooks (the pass stops after the
//! deepest one). Rows beyond the buffer's size are carried over to the next generation. The
//! buffer is then read in a seeded random order (the same order for every hook, so batch i of
//! every hook holds the same tokens), one batch at a time.
//!
//! Resuming exactly: a generation is a pure function of (sequences consumed before it, the
//! rows carried into it, its index), so `StoreState` holds those three plus the number of
//! batches already handed out. `restore` skips the source, refills the same buffer (the forward
//! pass is deterministic) and skips the batches, instead of writing the buffer to disk.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::source::TokenSource;
use crate::hooks::{HookPoint, HookSpec};
use crate::model::Model;
use crate::rng::{shuffle, SplitMix64, TAG_SHUFFLE};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub hooks: Vec<HookPoint>,
    /// Activation rows per training batch.
    pub batch_size: usize,
    /// Training batches per buffer fill: how many sequences each batch is mixed from.
    pub buffer_batches: usize,
    /// Sequences per forward pass.
    pub model_batch: usize,
    pub seed: u64,
}

/// Where the store stands, enough to rebuild it exactly (see the module comment). The rows
/// carried into the current generation are kept beside it (`ActivationStore::carry`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoreState {
    /// Whether the current generation has been filled (false only before the first batch).
    pub filled: bool,
    pub generation: u64,
    /// Sequences taken from the source before the current generation's fill.
    pub sequences_before: u64,
    /// Batches already handed out from the current generation.
    pub batches_taken: u64,
}

/// Where training batches come from: the model in the loop (`ActivationStore`) or an activation
/// store on disk (`disk::DiskBatches`). Batch i holds the same tokens for every hook; the state
/// and the carried rows are all a checkpoint needs to rebuild the source exactly.
pub trait BatchSource {
    /// The width of each hook's rows.
    fn widths(&self) -> &[usize];
    /// The next batch: per hook, `batch_size` rows, row-major. `None` once the source is spent.
    fn next_batch(&mut self) -> Result<Option<Vec<Vec<f32>>>>;
    fn state(&self) -> StoreState;
    /// Per hook: rows to save with a checkpoint (those carried into the current generation).
    fn carry(&self) -> &[Vec<f32>];
    /// Rebuilds the position of a checkpoint on a freshly created source (same arguments).
    fn restore(&mut self, state: StoreState, carry: Vec<Vec<f32>>) -> Result<()>;
    /// A description for the run's fingerprint and the SAEs' `dataset_path`.
    fn describe(&self) -> String;
    /// Tokens the model ran in this process (0 when reading a store).
    fn model_tokens(&self) -> u64;
}

impl BatchSource for ActivationStore<'_> {
    fn widths(&self) -> &[usize] {
        &self.widths
    }
    fn next_batch(&mut self) -> Result<Option<Vec<Vec<f32>>>> {
        ActivationStore::next_batch(self)
    }
    fn state(&self) -> StoreState {
        self.state.clone()
    }
    fn carry(&self) -> &[Vec<f32>] {
        &self.carry_in
    }
    fn restore(&mut self, state: StoreState, carry: Vec<Vec<f32>>) -> Result<()> {
        ActivationStore::restore(self, state, carry)
    }
    fn describe(&self) -> String {
        self.source.describe()
    }
    fn model_tokens(&self) -> u64 {
        self.tokens_seen
    }
}

pub struct ActivationStore<'a> {
    model: &'a Model,
    source: Box<dyn TokenSource + 'a>,
    cfg: StoreConfig,
    widths: Vec<usize>,
    bos: Option<u32>,
    /// Per hook: rows of the current generation, in fill order.
    buffers: Vec<Vec<f32>>,
    /// Reading order of the buffer rows.
    order: Vec<u32>,
    n_batches: u64,
    state: StoreState,
    /// Per hook: rows carried into the current generation / out of it.
    carry_in: Vec<Vec<f32>>,
    carry_out: Vec<Vec<f32>>,
    /// Sequences taken from the source so far.
    sequences: u64,
    exhausted: bool,
    /// Tokens run through the model (for throughput figures).
    pub tokens_seen: u64,
}

impl<'a> ActivationStore<'a> {
    pub fn new(model: &'a Model, source: Box<dyn TokenSource + 'a>, cfg: StoreConfig) -> Result<Self> {
        if cfg.hooks.is_empty() {
            bail!("no hooks to train on");
        }
        if cfg.batch_size == 0 || cfg.buffer_batches == 0 || cfg.model_batch == 0 {
            bail!("batch size, buffer batches and model batch must be positive");
        }
        let widths = cfg.hooks.iter().map(|&h| model.cfg().hook_width(h)).collect::<Result<Vec<_>>>()?;
        let n = cfg.hooks.len();
        let bos = model.tokenizer.bos;
        Ok(Self {
            model,
            source,
            cfg,
            widths,
            bos,
            buffers: vec![Vec::new(); n],
            order: Vec::new(),
            n_batches: 0,
            state: StoreState::default(),
            carry_in: vec![Vec::new(); n],
            carry_out: vec![Vec::new(); n],
            sequences: 0,
            exhausted: false,
            tokens_seen: 0,
        })
    }

    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    pub fn hooks(&self) -> &[HookPoint] {
        &self.cfg.hooks
    }

    pub fn describe_source(&self) -> String {
        self.source.describe()
    }

    pub fn state(&self) -> &StoreState {
        &self.state
    }

    /// Per hook: the rows carried into the current generation (saved with a checkpoint).
    pub fn carry(&self) -> &[Vec<f32>] {
        &self.carry_in
    }

    /// Rebuilds the store of a checkpoint on a freshly created store (same source and config).
    pub fn restore(&mut self, state: StoreState, carry: Vec<Vec<f32>>) -> Result<()> {
        if self.state.filled || self.sequences > 0 {
            bail!("restore needs a fresh store");
        }
        if carry.len() != self.cfg.hooks.len() {
            bail!("checkpoint holds carried rows for {} hooks, the store has {}", carry.len(), self.cfg.hooks.len());
        }
        self.state = state.clone();
        if !state.filled {
            return Ok(());
        }
        self.source.skip(state.sequences_before)?;
        self.sequences = state.sequences_before;
        self.carry_in = carry;
        self.fill()?;
        if state.batches_taken > self.n_batches {
            bail!("checkpoint says {} batches were taken from a generation of {}", state.batches_taken, self.n_batches);
        }
        self.state.batches_taken = state.batches_taken;
        Ok(())
    }

    /// The next training batch: per hook, `batch_size` rows of its width, row-major. `None` once
    /// the source cannot fill another batch.
    pub fn next_batch(&mut self) -> Result<Option<Vec<Vec<f32>>>> {
        if !self.state.filled || self.state.batches_taken == self.n_batches {
            if self.exhausted {
                return Ok(None);
            }
            if self.state.filled {
                self.state.generation += 1;
                let empty = vec![Vec::new(); self.cfg.hooks.len()];
                self.carry_in = std::mem::replace(&mut self.carry_out, empty);
            }
            self.state.sequences_before = self.sequences;
            self.state.batches_taken = 0;
            self.state.filled = true;
            self.fill()?;
            if self.n_batches == 0 {
                return Ok(None);
            }
        }
        let bs = self.cfg.batch_size;
        let b = self.state.batches_taken as usize;
        let rows = &self.order[b * bs..(b + 1) * bs];
        let out = self
            .buffers
            .iter()
            .zip(&self.widths)
            .map(|(buf, &d)| {
                let mut x = Vec::with_capacity(bs * d);
                for &r in rows {
                    x.extend_from_slice(&buf[r as usize * d..(r as usize + 1) * d]);
                }
                x
            })
            .collect();
        self.state.batches_taken += 1;
        Ok(Some(out))
    }

    /// Fills the current generation's buffer from `carry_in` and the source; see the module
    /// comment.
    fn fill(&mut self) -> Result<()> {
        let target = self.cfg.batch_size * self.cfg.buffer_batches;
        let d0 = self.widths[0];
        self.buffers = self.carry_in.clone();
        let mut rows = self.buffers[0].len() / d0;
        while rows < target {
            // Take only the sequences needed: each gives one row per non-BOS token.
            let mut group = Vec::new();
            let mut planned = rows;
            while group.len() < self.cfg.model_batch && planned < target {
                match self.source.next_sequence()? {
                    Some(seq) => {
                        self.sequences += 1;
                        planned += seq.iter().filter(|&&t| Some(t) != self.bos).count();
                        if !seq.is_empty() {
                            group.push(seq);
                        }
                    }
                    None => {
                        self.exhausted = true;
                        break;
                    }
                }
            }
            if group.is_empty() {
                break;
            }
            rows += self.run_group(&group)?;
            if self.exhausted {
                break;
            }
        }
        // Rows past the buffer's size go to the next generation.
        let keep = rows.min(target);
        for (h, &d) in self.widths.iter().enumerate() {
            self.carry_out[h] = self.buffers[h].split_off(keep * d);
        }
        self.n_batches = (keep / self.cfg.batch_size) as u64;
        let mut order: Vec<u32> = (0..keep as u32).collect();
        let mut rng = SplitMix64::derive(self.cfg.seed, TAG_SHUFFLE, self.state.generation);
        shuffle(&mut order, &mut rng);
        self.order = order;
        Ok(())
    }

    /// One forward pass over `group`, appending every kept position's activation to each hook's
    /// buffer. Returns the number of rows added.
    fn run_group(&mut self, group: &[Vec<u32>]) -> Result<usize> {
        let batch = self.model.batch_from_ids(group)?;
        let out = self
            .model
            .run(&batch, &HookSpec::new().capture(self.cfg.hooks.iter().copied()))
            .context("activation store forward pass")?;
        self.tokens_seen += group.iter().map(|s| s.len() as u64).sum::<u64>();
        let s = batch.seq_len;
        let mut added = 0;
        for (h, (&hook, &d)) in self.cfg.hooks.iter().zip(&self.widths).enumerate() {
            let t = out.cache.get(hook)?;
            let flat = t.flatten_all()?.to_vec1::<f32>()?;
            if flat.len() != batch.rows() * s * d {
                bail!("{hook}: captured {} values, expected {}", flat.len(), batch.rows() * s * d);
            }
            added = 0;
            for r in 0..batch.rows() {
                for p in batch.pad[r]..s {
                    if Some(batch.ids[r][p]) == self.bos {
                        continue;
                    }
                    let at = (r * s + p) * d;
                    self.buffers[h].extend_from_slice(&flat[at..at + d]);
                    added += 1;
                }
            }
        }
        Ok(added)
    }
}
