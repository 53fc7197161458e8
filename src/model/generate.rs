//! Batched generation with a KV cache: greedy or seeded temperature sampling, stopping at EOS,
//! stop strings or a token budget. Interventions apply to the prompt's positions (the paper's
//! convention) unless `steer_generated` asks for every generated position too.

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
    if batch.seq_len + opts.max_tokens > cfg.context_length {
        bail!(
            "prompt ({} tokens) plus max tokens ({}) exceeds the model's context of {}",
            batch.seq_len,
            opts.max_tokens,
            cfg.context_length
        );
    }
    let b = batch.rows();
    let ends = end_ids(model);
    let mut rngs: Vec<SplitMix64> = match &opts.row_seeds {
        Some(seeds) if seeds.len() != b => bail!("{} row seeds for a batch of {b} rows", seeds.len()),
        Some(seeds) => seeds.iter().map(|&s| SplitMix64::derive(s, TAG_SAMPLE, 0)).collect(),
        None => (0..b).map(|r| SplitMix64::derive(opts.seed.wrapping_add(r as u64), TAG_SAMPLE, 0)).collect(),
    };

    // Prefill: the caller's captures and edits, logits at each prompt's last token.
    let mut kv = KvCache::default();
    let prefill_spec = HookSpec { logits: LogitsAt::Last, ..spec.clone() };
    let prefill = t.forward(&ForwardInput::batch(batch), &prefill_spec, Some(&mut kv))?;
    let mut logits = prefill.logits.expect("logits were asked for");
    let prompt_cache = prefill.cache;
    let mut key_valid = batch.key_valid();

    // Edits for generated positions, if asked: the same ops at every new position.
    let step_spec = HookSpec {
        capture: Default::default(),
        edits: if opts.steer_generated {
            spec.edits.iter().map(|e| Edit { positions: Positions::All, ..e.clone() }).collect()
        } else {
            Vec::new()
        },
        logits: LogitsAt::Last,
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
        let positions: Vec<Vec<u32>> = active.iter().map(|&r| vec![(batch.len_of(r) + step) as u32]).collect();
        key_valid.iter_mut().for_each(|k| k.push(true));
        let input = ForwardInput::continuation(next.iter().map(|&id| vec![id]).collect(), positions, key_valid.clone())?;
        logits = t.forward(&input, &step_spec, Some(&mut kv))?.logits.expect("logits were asked for");
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
fn pick(logits: &Tensor, temperature: f64, rngs: &mut [SplitMix64], active: &[usize]) -> Result<Vec<u32>> {
    if temperature == 0.0 {
        return Ok(logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?);
    }
    let rows = logits.to_vec2::<f32>()?;
    rows.iter().zip(active).map(|(row, &r)| sample(row, temperature, &mut rngs[r])).collect()
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
