//! Teacher-forced scoring of continuations: how likely the model finds given answers after given
//! prompts, with the work it needs and no more. Each prompt runs once however many answers it has;
//! the first token of every answer is read from one unembedding of the prompt's last position
//! (shared by all its answers); later tokens are fed after a copy of the prompt's keys and values,
//! and only the positions an answer actually has are unembedded (no logits for padding).

use anyhow::{bail, Result};
use candle_core::{Tensor, D};

use super::transformer::{ForwardInput, KvCache};
use super::Model;
use crate::batch::Batch;
use crate::hooks::{HookPoint, HookSpec};

/// One continuation token under teacher forcing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScore {
    pub logprob: f32,
    /// The token is the model's top prediction at its position.
    pub argmax: bool,
}

/// Rows per unembedding call: bounds the [rows, vocab] logits in memory.
const SUB: usize = 64;

/// Per-token scores of `rows` of normalised states against `targets`.
fn score_states(model: &Model, states: &Tensor, targets: &[u32]) -> Result<Vec<TokenScore>> {
    let t = &model.transformer;
    let mut out = Vec::with_capacity(targets.len());
    for (i, chunk) in targets.chunks(SUB).enumerate() {
        let logits = t.unembed(&states.narrow(0, i * SUB, chunk.len())?)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let argmax = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let idx = Tensor::from_slice(chunk, (chunk.len(), 1), logits.device())?;
        let lp: Vec<f32> = logp.gather(&idx, 1)?.squeeze(1)?.to_vec1()?;
        out.extend(
            lp.into_iter().zip(chunk).zip(argmax).map(|((logprob, &tg), a)| TokenScore { logprob, argmax: a == tg }),
        );
    }
    Ok(out)
}

/// Scores each continuation `(row of batch, token ids)`: per token, its log-probability given the
/// prompt of that row and the continuation's earlier tokens. A row may have any number of
/// continuations; each must be non-empty.
pub fn score_continuations(model: &Model, batch: &Batch, forms: &[(usize, Vec<u32>)]) -> Result<Vec<Vec<TokenScore>>> {
    if let Some((r, _)) = forms.iter().find(|(r, c)| *r >= batch.rows() || c.is_empty()) {
        bail!("continuation for row {r}: row out of range or no tokens");
    }
    if forms.is_empty() {
        return Ok(Vec::new());
    }
    let t = &model.transformer;
    let dev = t.device();
    let spec = HookSpec::new().capture([HookPoint::LnFinal]);
    let mut kv = KvCache::default();
    let normed = t.forward(&ForwardInput::batch(batch), &spec, Some(&mut kv))?.cache;
    let last = normed.get(HookPoint::LnFinal)?.narrow(1, batch.seq_len - 1, 1)?.squeeze(1)?.contiguous()?;

    // First tokens: one unembedding per prompt that has forms.
    let mut used: Vec<usize> = forms.iter().map(|(r, _)| *r).collect();
    used.sort_unstable();
    used.dedup();
    let used_u32: Vec<u32> = used.iter().map(|&r| r as u32).collect();
    let last_used = last.index_select(&Tensor::from_slice(&used_u32, used_u32.len(), dev)?, 0)?;
    let mut scores: Vec<Vec<TokenScore>> = vec![Vec::new(); forms.len()];
    {
        let logits_rows = used.len();
        let mut dist: Vec<(Vec<f32>, u32)> = Vec::with_capacity(logits_rows);
        for start in (0..logits_rows).step_by(SUB) {
            let m = SUB.min(logits_rows - start);
            let logits = t.unembed(&last_used.narrow(0, start, m)?)?;
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let argmax = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            // Only the first tokens asked of each prompt are read back.
            for (k, a) in argmax.into_iter().enumerate() {
                let row = used[start + k];
                let wanted: Vec<u32> = forms.iter().filter(|(r, _)| *r == row).map(|(_, c)| c[0]).collect();
                let idx = Tensor::from_slice(&wanted, wanted.len(), dev)?;
                let lp: Vec<f32> = logp.get(k)?.index_select(&idx, 0)?.to_vec1()?;
                dist.push((lp, a));
            }
        }
        let mut next_of_row: Vec<usize> = vec![0; batch.rows()];
        for (i, (r, c)) in forms.iter().enumerate() {
            let k = used.binary_search(r).expect("used row");
            let (lp, a) = &dist[k];
            let j = next_of_row[*r];
            next_of_row[*r] += 1;
            scores[i].push(TokenScore { logprob: lp[j], argmax: *a == c[0] });
        }
    }

    // Later tokens of forms longer than one token.
    let long: Vec<usize> = (0..forms.len()).filter(|&i| forms[i].1.len() > 1).collect();
    if long.is_empty() {
        return Ok(scores);
    }
    let rows: Vec<u32> = long.iter().map(|&i| forms[i].0 as u32).collect();
    kv.retain_rows(&rows)?;
    let steps = long.iter().map(|&i| forms[i].1.len() - 1).max().unwrap_or(1);
    let key_valid_prompt = batch.key_valid();
    let feed: Vec<Vec<u32>> = long
        .iter()
        .map(|&i| {
            (0..steps).map(|j| if j + 1 < forms[i].1.len() { forms[i].1[j] } else { model.tokenizer.pad }).collect()
        })
        .collect();
    let positions: Vec<Vec<u32>> =
        long.iter().map(|&i| (0..steps).map(|j| (batch.len_of(forms[i].0) + j) as u32).collect()).collect();
    let key_valid: Vec<Vec<bool>> = long
        .iter()
        .map(|&i| {
            let mut k = key_valid_prompt[forms[i].0].clone();
            k.extend(std::iter::repeat_n(true, steps));
            k
        })
        .collect();
    let out = t.forward(&ForwardInput::continuation(feed, positions, key_valid)?, &spec, Some(&mut kv))?.cache;
    let y = out.get(HookPoint::LnFinal)?.flatten(0, 1)?; // [n * steps, d]
                                                         // Only the positions that predict a form's token.
    let mut flat: Vec<u32> = Vec::new();
    let mut targets: Vec<u32> = Vec::new();
    for (n, &i) in long.iter().enumerate() {
        let c = &forms[i].1;
        for j in 0..c.len() - 1 {
            flat.push((n * steps + j) as u32);
            targets.push(c[j + 1]);
        }
    }
    let states = y.index_select(&Tensor::from_slice(&flat, flat.len(), dev)?, 0)?.contiguous()?;
    let s = score_states(model, &states, &targets)?;
    let mut it = s.into_iter();
    for &i in &long {
        for _ in 1..forms[i].1.len() {
            scores[i].push(it.next().expect("one score per target"));
        }
    }
    Ok(scores)
}
