//! Batched generation with a KV cache: greedy or seeded temperature sampling, stopping at EOS,
//! stop strings or a token budget. Interventions apply to the prompt's positions (the paper's
//! convention) unless `steer_generated` asks for every generated position too.
//!
//! One decoding engine (`Decoder`) serves both entries: `generate` runs one batch to the end;
//! `generate_many` keeps the batch full from a queue of prompts (rows that finish leave, queued
//! prompts are prefilled and join) and draws several samples of a prompt from one prefill (its
//! keys and values are copied to one row per sample).

use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::Serialize;

use super::transformer::{ForwardInput, KvCache};
use super::Model;
use crate::batch::Batch;
use crate::hooks::{ActivationCache, Edit, HookSpec, LogitsAt, Positions};
use crate::rng::{SplitMix64, TAG_SAMPLE};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// Row (prompt) r samples with seed `seed + r`, so a prompt's sample does not depend on its
    /// batch.
    pub seed: u64,
    /// One seed per row (prompt) instead (e.g. derived from what the row asks), when a row's
    /// sample must not depend on where it sits in a batch. Sample s of a prompt with seed x
    /// draws from the stream (x, s): sample 0 is what `generate` draws.
    pub row_seeds: Option<Vec<u64>>,
    pub stop: Vec<String>,
    /// Apply the spec's edits at every generated position as well as at the prompt.
    pub steer_generated: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_tokens: 32, temperature: 0.0, seed: 0, row_seeds: None, stop: Vec::new(), steer_generated: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    StopString,
    MaxTokens,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    /// Generated ids: the end-of-sequence token excluded, the token that completed a stop string
    /// included.
    pub ids: Vec<u32>,
    /// Generated text, cut before a stop string.
    pub text: String,
    pub stop_reason: StopReason,
}

/// Ids that end a turn: EOS and the chat end-of-turn markers that the vocabulary has.
fn end_ids(model: &Model) -> Vec<u32> {
    let mut ids: Vec<u32> = model.tokenizer.eos.into_iter().collect();
    for t in ["<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>"] {
        if let Ok(v) = model.tokenizer.encode(t, false, true) {
            if v.len() == 1 && !ids.contains(&v[0]) {
                ids.push(v[0]);
            }
        }
    }
    ids
}

/// Generates a continuation for every row of `batch`. Returns the generations and the
/// activations the spec captured on the prompt.
pub fn generate(
    model: &Model,
    batch: &Batch,
    spec: &HookSpec,
    opts: &GenerateOptions,
) -> Result<(Vec<Generation>, ActivationCache)> {
    check_options(model, batch.seq_len, opts)?;
    let b = batch.rows();
    let seeds = prompt_seeds(opts, b)?;
    let mut dec = Decoder::new(model, spec, opts);
    let slots: Vec<Slot> = (0..b).map(|r| Slot { batch_row: r, output: r, seed: seeds[r], sample: 0 }).collect();
    let prompt_cache = dec.admit(batch, spec, &slots)?;
    let mut out: Vec<Option<Generation>> = vec![None; b];
    while !dec.rows.is_empty() {
        for (slot, g) in dec.step()? {
            out[slot] = Some(g);
        }
    }
    Ok((out.into_iter().map(|g| g.expect("every row finishes")).collect(), prompt_cache))
}

/// Generates `samples` continuations of each prompt (token ids, BOS included where the model
/// uses one), keeping up to `max_rows` rows decoding at once: rows that finish leave the batch and
/// queued prompts are prefilled and take their place. The samples of a prompt share its prefill.
/// Returns, per prompt, its samples in order. Edits may use `Positions::All`, `Last` or `Each`
/// (they apply to each prompt as it is admitted); per-row positions and captures need `generate`.
/// With the same seeds, sample 0 of each prompt is what `generate` produces for it.
pub fn generate_many(
    model: &Model,
    prompts: &[Vec<u32>],
    spec: &HookSpec,
    opts: &GenerateOptions,
    samples: usize,
    max_rows: usize,
) -> Result<Vec<Vec<Generation>>> {
    if samples == 0 {
        bail!("samples must be at least 1");
    }
    if max_rows < samples {
        bail!("max_rows ({max_rows}) must hold the {samples} samples of one prompt");
    }
    if !spec.capture.is_empty() {
        bail!("generate_many returns no captures: capture with generate, one batch at a time");
    }
    if spec.edits.iter().any(|e| matches!(e.positions, Positions::Rows(_))) {
        bail!("generate_many admits prompts in any grouping, so edits cannot use per-row positions (Positions::Rows); use generate");
    }
    if let Some((i, _)) = prompts.iter().enumerate().find(|(_, p)| p.is_empty()) {
        bail!("prompt {i} is empty");
    }
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    check_options(model, longest, opts)?;
    let seeds = prompt_seeds(opts, prompts.len())?;
    let mut dec = Decoder::new(model, spec, opts);
    let mut out: Vec<Vec<Option<Generation>>> = prompts.iter().map(|_| vec![None; samples]).collect();
    let mut next = 0;
    // Admit in groups of at least an eighth of the batch, so prefills stay batched too.
    let min_group = (max_rows / 8).max(samples);
    loop {
        let free = max_rows - dec.rows.len();
        let waiting = prompts.len() - next;
        if waiting > 0 && (free >= min_group || dec.rows.is_empty() || free >= waiting * samples) {
            let take = (free / samples).min(waiting);
            let group: Vec<Vec<u32>> = prompts[next..next + take].to_vec();
            let batch = model.batch_from_ids(&group)?;
            let slots: Vec<Slot> = (0..take)
                .flat_map(|i| (0..samples).map(move |s| (i, s)))
                .map(|(i, s)| Slot {
                    batch_row: i,
                    output: (next + i) * samples + s,
                    seed: seeds[next + i],
                    sample: s as u64,
                })
                .collect();
            dec.admit(&batch, spec, &slots)?;
            next += take;
        }
        if dec.rows.is_empty() {
            break;
        }
        for (slot, g) in dec.step()? {
            out[slot / samples][slot % samples] = Some(g);
        }
    }
    Ok(out.into_iter().map(|v| v.into_iter().map(|g| g.expect("every sample finishes")).collect()).collect())
}

fn check_options(model: &Model, longest_prompt: usize, opts: &GenerateOptions) -> Result<()> {
    if opts.temperature < 0.0 || !opts.temperature.is_finite() {
        bail!("temperature must be ≥ 0, got {}", opts.temperature);
    }
    let ctx = model.cfg().context_length;
    if longest_prompt + opts.max_tokens > ctx {
        bail!(
            "prompt ({longest_prompt} tokens) plus max tokens ({}) exceeds the model's context of {ctx}",
            opts.max_tokens
        );
    }
    Ok(())
}

/// The seed of each prompt: `row_seeds`, or `seed + index`.
fn prompt_seeds(opts: &GenerateOptions, n: usize) -> Result<Vec<u64>> {
    match &opts.row_seeds {
        Some(seeds) if seeds.len() != n => bail!("{} row seeds for {n} prompts", seeds.len()),
        Some(seeds) => Ok(seeds.clone()),
        None => Ok((0..n).map(|r| opts.seed.wrapping_add(r as u64)).collect()),
    }
}

/// Where an admitted row comes from and where its generation goes.
struct Slot {
    /// Row of the admitted batch whose prompt it continues.
    batch_row: usize,
    /// Index of its output.
    output: usize,
    seed: u64,
    /// Which sample of its prompt (the index of its random stream).
    sample: u64,
}

/// A row being decoded.
struct Row {
    output: usize,
    prompt_ids: Vec<u32>,
    /// RoPE position of the next token fed.
    next_position: u32,
    ids: Vec<u32>,
    text: Option<String>,
    rng: SplitMix64,
}

/// What decides each row's next token: its logits (sampling), or the greedy pick itself, which
/// the forward pass computes without full logits where it can (`LogitsAt::GreedyLast`).
enum Pending {
    Logits(Tensor),
    Tokens(Vec<u32>),
}

/// The decoding state: rows, their KV cache and key masks, and what decides each row's next
/// token (all in the order of `rows`).
struct Decoder<'a> {
    model: &'a Model,
    opts: &'a GenerateOptions,
    ends: Vec<u32>,
    step_spec: HookSpec,
    rows: Vec<Row>,
    kv: KvCache,
    key_valid: Vec<Vec<bool>>,
    pending: Option<Pending>,
    /// What the forward passes return: greedy picks, or logits to sample from.
    next_at: LogitsAt,
}

impl<'a> Decoder<'a> {
    fn new(model: &'a Model, spec: &HookSpec, opts: &'a GenerateOptions) -> Self {
        let next_at = if opts.temperature == 0.0 { LogitsAt::GreedyLast } else { LogitsAt::Last };
        // Edits for generated positions, if asked: the same ops at every new position.
        let step_spec = HookSpec {
            capture: Default::default(),
            edits: if opts.steer_generated {
                spec.edits.iter().map(|e| Edit { positions: Positions::All, ..e.clone() }).collect()
            } else {
                Vec::new()
            },
            logits: next_at.clone(),
        };
        Self {
            model,
            opts,
            ends: end_ids(model),
            step_spec,
            rows: Vec::new(),
            kv: KvCache::default(),
            key_valid: Vec::new(),
            pending: None,
            next_at,
        }
    }

    /// Prefills `batch` with the spec's captures and edits and adds one decoding row per slot
    /// (a batch row may have several: its samples share the prefill). Returns the captures.
    fn admit(&mut self, batch: &Batch, spec: &HookSpec, slots: &[Slot]) -> Result<ActivationCache> {
        let t = &self.model.transformer;
        let mut kv = KvCache::default();
        let prefill_spec = HookSpec { logits: self.next_at.clone(), ..spec.clone() };
        let out = t.forward(&ForwardInput::batch(batch), &prefill_spec, Some(&mut kv))?;
        let mut next = pending_of(out.logits, out.greedy);
        let from: Vec<u32> = slots.iter().map(|s| s.batch_row as u32).collect();
        if from.iter().enumerate().any(|(i, &r)| i != r as usize) || from.len() != batch.rows() {
            kv.retain_rows(&from)?;
            next = match next {
                Pending::Logits(l) => {
                    Pending::Logits(l.index_select(&Tensor::from_slice(&from, from.len(), l.device())?, 0)?)
                }
                Pending::Tokens(t) => Pending::Tokens(from.iter().map(|&r| t[r as usize]).collect()),
            };
        }
        let mut key_valid: Vec<Vec<bool>> = {
            let kvalid = batch.key_valid();
            from.iter().map(|&r| kvalid[r as usize].clone()).collect()
        };
        let (pad_self, pad_new) = self.kv.append_rows(kv)?;
        for k in self.key_valid.iter_mut() {
            k.splice(0..0, std::iter::repeat_n(false, pad_self));
        }
        for k in key_valid.iter_mut() {
            k.splice(0..0, std::iter::repeat_n(false, pad_new));
        }
        self.key_valid.extend(key_valid);
        self.pending = Some(match (self.pending.take(), next) {
            (None, next) => next,
            (Some(Pending::Logits(old)), Pending::Logits(new)) => Pending::Logits(Tensor::cat(&[&old, &new], 0)?),
            (Some(Pending::Tokens(mut old)), Pending::Tokens(new)) => {
                old.extend(new);
                Pending::Tokens(old)
            }
            _ => unreachable!("one decoder asks for one kind of output"),
        });
        for s in slots {
            self.rows.push(Row {
                output: s.output,
                prompt_ids: batch.row_ids(s.batch_row).to_vec(),
                next_position: batch.len_of(s.batch_row) as u32,
                ids: Vec::new(),
                text: None,
                rng: SplitMix64::derive(s.seed, TAG_SAMPLE, s.sample),
            });
        }
        Ok(out.cache)
    }

    /// Picks every row's next token; finished rows leave (returned with their output index);
    /// the others run one step, which leaves their next logits.
    fn step(&mut self) -> Result<Vec<(usize, Generation)>> {
        let pending = self.pending.take().expect("rows always have a pending next token");
        if self.opts.max_tokens == 0 {
            self.kv = KvCache::default();
            self.key_valid.clear();
            return Ok(self
                .rows
                .drain(..)
                .map(|r| {
                    (
                        r.output,
                        Generation {
                            prompt_ids: r.prompt_ids,
                            ids: Vec::new(),
                            text: String::new(),
                            stop_reason: StopReason::MaxTokens,
                        },
                    )
                })
                .collect());
        }
        let next = match pending {
            Pending::Tokens(t) => t,
            Pending::Logits(l) => pick(&l, self.opts.temperature, &mut self.rows)?,
        };
        let mut finished = Vec::new();
        let mut keep: Vec<u32> = Vec::with_capacity(self.rows.len());
        for (i, (row, &tok)) in self.rows.iter_mut().zip(&next).enumerate() {
            let reason = if self.ends.contains(&tok) {
                Some(StopReason::Eos)
            } else {
                row.ids.push(tok);
                let mut reason = None;
                if !self.opts.stop.is_empty() {
                    let text = self.model.tokenizer.decode(&row.ids)?;
                    if let Some(cut) = self.opts.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                        row.text = Some(text[..cut].to_string());
                        reason = Some(StopReason::StopString);
                    }
                }
                reason.or((row.ids.len() >= self.opts.max_tokens).then_some(StopReason::MaxTokens))
            };
            match reason {
                Some(r) => finished.push((i, r)),
                None => keep.push(i as u32),
            }
        }
        let mut done = Vec::with_capacity(finished.len());
        for &(i, reason) in finished.iter().rev() {
            let row = self.rows.remove(i);
            let text = match row.text {
                Some(t) if reason == StopReason::StopString => t,
                _ => self.model.tokenizer.decode(&row.ids)?,
            };
            done.push((row.output, Generation { prompt_ids: row.prompt_ids, ids: row.ids, text, stop_reason: reason }));
        }
        if keep.is_empty() {
            self.kv = KvCache::default();
            self.key_valid.clear();
            return Ok(done);
        }
        let next: Vec<u32> = keep.iter().map(|&i| next[i as usize]).collect();
        if keep.len() < self.key_valid.len() {
            self.kv.retain_rows(&keep)?;
            self.key_valid = keep.iter().map(|&i| std::mem::take(&mut self.key_valid[i as usize])).collect();
        }
        // Columns that are padding in every remaining row are dropped, so a batch that keeps
        // admitting prompts does not grow its keys without bound.
        let common_pad = self.key_valid.iter().map(|k| k.iter().take_while(|&&v| !v).count()).min().unwrap_or(0);
        if common_pad > 0 {
            self.kv.trim_front(common_pad)?;
            self.key_valid.iter_mut().for_each(|k| {
                k.drain(..common_pad);
            });
        }
        let positions: Vec<Vec<u32>> = self.rows.iter().map(|r| vec![r.next_position]).collect();
        self.rows.iter_mut().for_each(|r| r.next_position += 1);
        self.key_valid.iter_mut().for_each(|k| k.push(true));
        let input =
            ForwardInput::continuation(next.iter().map(|&id| vec![id]).collect(), positions, self.key_valid.clone())?;
        let out = self.model.transformer.forward(&input, &self.step_spec, Some(&mut self.kv))?;
        self.pending = Some(pending_of(out.logits, out.greedy));
        Ok(done)
    }
}

fn pending_of(logits: Option<Tensor>, greedy: Option<Vec<u32>>) -> Pending {
    match (logits, greedy) {
        (Some(l), _) => Pending::Logits(l),
        (None, Some(t)) => Pending::Tokens(t),
        (None, None) => unreachable!("the decoder always asks for logits or greedy picks"),
    }
}

/// Next token per row: argmax, or a sample from softmax(logits / temperature) drawn with that
/// row's own generator.
fn pick(logits: &Tensor, temperature: f64, rows: &mut [Row]) -> Result<Vec<u32>> {
    if temperature == 0.0 {
        return Ok(logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?);
    }
    let l = logits.to_vec2::<f32>()?;
    l.iter().zip(rows.iter_mut()).map(|(row, r)| sample(row, temperature, &mut r.rng)).collect()
}

/// One draw from softmax(logits / temperature) by inverting the cumulative weights with a
/// uniform number from the row's own generator (fixed by its definition, like every seeded
/// stream of knowlens).
fn sample(logits: &[f32], temperature: f64, rng: &mut SplitMix64) -> Result<u32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        bail!("sampling: the logits are not finite (max {max})");
    }
    let w: Vec<f64> = logits.iter().map(|&l| (((l - max) as f64) / temperature).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.next_f64() * total;
    for (i, &wi) in w.iter().enumerate() {
        if u < wi {
            return Ok(i as u32);
        }
        u -= wi;
    }
    // Rounding left u just above the last weight: the last token with any weight.
    Ok(w.iter().rposition(|&x| x > 0.0).unwrap_or(0) as u32)
}
