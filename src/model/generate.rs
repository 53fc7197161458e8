//! Batched generation with a KV cache: greedy or seeded temperature sampling, stopping at EOS,
//! stop strings or a token budget. Interventions apply to the prompt's positions (the paper's
//! convention) unless `steer_generated` asks for every generated position too.

use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::transformer::{Chunk, KvCache};
use super::Model;
use crate::batch::Batch;
use crate::hooks::{ActivationCache, Edit, HookRuntime, HookSpec, Positions};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// Row r samples with seed `seed + r`, so a prompt's sample does not depend on its batch.
    pub seed: u64,
    /// One seed per row instead (e.g. derived from what the row asks), when a row's sample must
    /// not depend on where it sits in a batch.
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
pub fn generate(model: &Model, batch: &Batch, spec: &HookSpec, opts: &GenerateOptions) -> Result<(Vec<Generation>, ActivationCache)> {
    if opts.temperature < 0.0 || !opts.temperature.is_finite() {
        bail!("temperature must be ≥ 0, got {}", opts.temperature);
    }
    let t = &model.transformer;
    let cfg = &t.cfg;
    spec.check(cfg.n_layers)?;
    if batch.seq_len + opts.max_tokens > cfg.context_length {
        bail!(
            "prompt ({} tokens) plus max tokens ({}) exceeds the model's context of {}",
            batch.seq_len,
            opts.max_tokens,
            cfg.context_length
        );
    }
    let dev = t.device();
    let b = batch.rows();
    let ends = end_ids(model);
    let mut rngs: Vec<StdRng> = match &opts.row_seeds {
        Some(seeds) if seeds.len() != b => bail!("{} row seeds for a batch of {b} rows", seeds.len()),
        Some(seeds) => seeds.iter().map(|&s| StdRng::seed_from_u64(s)).collect(),
        None => (0..b).map(|r| StdRng::seed_from_u64(opts.seed.wrapping_add(r as u64))).collect(),
    };

    // Prefill.
    let mut kv = KvCache::default();
    let ids = batch.ids_tensor(dev)?;
    let positions = batch.position_ids();
    let mut key_valid = batch.key_valid();
    let mut hooks = HookRuntime::new(spec, batch, dev)?;
    let chunk = Chunk { ids: &ids, positions: &positions, key_valid: &key_valid };
    let x = t.blocks_forward(&chunk, cfg.n_layers, Some(&mut kv), &mut hooks)?;
    let y = t.final_norm(&x.narrow(1, batch.seq_len - 1, 1)?, &mut hooks)?;
    let mut logits = t.unembed(&y.squeeze(1)?)?;
    let prompt_cache = ActivationCache { tensors: hooks.into_captured(), pad: batch.pad.clone() };

    // Edits for generated positions, if asked: the same ops at every new position.
    let step_spec = HookSpec {
        capture: Default::default(),
        edits: if opts.steer_generated {
            spec.edits
                .iter()
                .map(|e| Edit { hook: e.hook, positions: Positions::All, op: e.op.clone() })
                .collect()
        } else {
            Vec::new()
        },
        logits: Default::default(),
    };
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done: Vec<Option<StopReason>> = vec![None; b];
    let mut texts: Vec<String> = vec![String::new(); b];
    // Rows still decoding, as indices into the batch; `logits`, the KV cache and `key_valid` hold
    // these rows only, in this order. Finished rows are dropped so they cost nothing.
    let mut active: Vec<usize> = (0..b).collect();
    for step in 0..opts.max_tokens {
        let next = pick(&logits, opts.temperature, &mut rngs, &active)?;
        for (&r, &tok) in active.iter().zip(&next) {
            if ends.contains(&tok) {
                done[r] = Some(StopReason::Eos);
                continue;
            }
            out[r].push(tok);
            if !opts.stop.is_empty() {
                let text = model.tokenizer.decode(&out[r])?;
                if let Some(cut) = opts.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                    texts[r] = text[..cut].to_string();
                    done[r] = Some(StopReason::StopString);
                }
            }
        }
        let keep: Vec<u32> = (0..active.len()).filter(|&i| done[active[i]].is_none()).map(|i| i as u32).collect();
        if keep.is_empty() || step + 1 == opts.max_tokens {
            break;
        }
        let mut next = next;
        if keep.len() < active.len() {
            kv.retain_rows(&keep)?;
            key_valid = keep.iter().map(|&i| std::mem::take(&mut key_valid[i as usize])).collect();
            next = keep.iter().map(|&i| next[i as usize]).collect();
            active = keep.iter().map(|&i| active[i as usize]).collect();
        }
        let n = active.len();
        let ids = Tensor::from_vec(next, (n, 1), dev)?;
        let positions: Vec<Vec<u32>> = active.iter().map(|&r| vec![(batch.len_of(r) + step) as u32]).collect();
        key_valid.iter_mut().for_each(|k| k.push(true));
        let step_batch = Batch { ids: vec![vec![0]; n], pad: vec![0; n], seq_len: 1 };
        let mut hooks = HookRuntime::new(&step_spec, &step_batch, dev)?;
        let chunk = Chunk { ids: &ids, positions: &positions, key_valid: &key_valid };
        let x = t.blocks_forward(&chunk, cfg.n_layers, Some(&mut kv), &mut hooks)?;
        let y = t.final_norm(&x, &mut hooks)?;
        logits = t.unembed(&y.squeeze(1)?)?;
    }

    let gens = (0..b)
        .map(|r| {
            let reason = done[r].unwrap_or(StopReason::MaxTokens);
            let text = match reason {
                StopReason::StopString => texts[r].clone(),
                _ => model.tokenizer.decode(&out[r])?,
            };
            Ok(Generation {
                prompt_ids: batch.ids[r][batch.pad[r]..].to_vec(),
                ids: out[r].clone(),
                text,
                stop_reason: reason,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((gens, prompt_cache))
}

/// Next token per active row: argmax, or a sample from softmax(logits / temperature) drawn with
/// that row's own generator.
fn pick(logits: &Tensor, temperature: f64, rngs: &mut [StdRng], active: &[usize]) -> Result<Vec<u32>> {
    if temperature == 0.0 {
        return Ok(logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?);
    }
    let rows = logits.to_vec2::<f32>()?;
    rows.iter()
        .zip(active)
        .map(|(row, &r)| {
            let rng = &mut rngs[r];
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let w: Vec<f64> = row.iter().map(|&l| (((l - max) as f64) / temperature).exp()).collect();
            let dist = WeightedIndex::new(&w).map_err(|e| anyhow::anyhow!("sampling: {e}"))?;
            Ok(dist.sample(rng) as u32)
        })
        .collect()
}
