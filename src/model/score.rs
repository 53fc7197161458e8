//! Teacher-forced scoring of continuations: how likely the model finds given answers after given
//! prompts, with each prompt run once however many answers it has (the prompts' keys and values
//! are computed once, then copied to one row per answer).

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

/// Rows of `logits` ([n, vocab]) scored against `targets` (one per row).
fn score_rows(logits: &Tensor, targets: &[u32]) -> Result<Vec<TokenScore>> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let argmax = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let idx = Tensor::from_slice(targets, (targets.len(), 1), logits.device())?;
    let lp: Vec<f32> = logp.gather(&idx, 1)?.squeeze(1)?.to_vec1()?;
    Ok(lp
        .into_iter()
        .zip(targets)
        .zip(argmax)
        .map(|((logprob, &t), a)| TokenScore { logprob, argmax: a == t })
        .collect())
}

/// Scores each continuation `(row of batch, token ids)`: per token, its log-probability given
/// the prompt of that row and the continuation's earlier tokens. A row may have any number of
/// continuations; each must be non-empty.
pub fn score_continuations(
    model: &Model,
    batch: &Batch,
    continuations: &[(usize, Vec<u32>)],
) -> Result<Vec<Vec<TokenScore>>> {
    if let Some((r, _)) = continuations.iter().find(|(r, c)| *r >= batch.rows() || c.is_empty()) {
        bail!("continuation for row {r}: row out of range or no tokens");
    }
    if continuations.is_empty() {
        return Ok(Vec::new());
    }
    let t = &model.transformer;
    let dev = t.device();
    // The final norm's output, unembedded here in bounded chunks of rows: the full logits of
    // every continuation position at once would not fit in memory with a 262k vocabulary.
    let spec = HookSpec::new().capture([HookPoint::LnFinal]);

    // The prompts, once, keeping their keys and values.
    let mut kv = KvCache::default();
    let normed = t.forward(&ForwardInput::batch(batch), &spec, Some(&mut kv))?.cache;
    let last = normed.get(HookPoint::LnFinal)?.narrow(1, batch.seq_len - 1, 1)?.squeeze(1)?.contiguous()?;
    let key_valid = batch.key_valid();

    // First tokens are predicted at each prompt's last position.
    let rows: Vec<u32> = continuations.iter().map(|(r, _)| *r as u32).collect();
    let first_targets: Vec<u32> = continuations.iter().map(|(_, c)| c[0]).collect();
    let row_idx = Tensor::from_slice(&rows, rows.len(), dev)?;
    let mut scores: Vec<Vec<TokenScore>> = Vec::with_capacity(continuations.len());
    let last = last.index_select(&row_idx, 0)?;
    const SUB: usize = 32; // rows per unembedding call: bounds the [rows, t, vocab] logits
    for (i, chunk) in first_targets.chunks(SUB).enumerate() {
        let logits = t.unembed(&last.narrow(0, i * SUB, chunk.len())?)?;
        scores.extend(score_rows(&logits, chunk)?.into_iter().map(|s| vec![s]));
    }

    // Later tokens: feed each continuation but its last token after a copy of its prompt's cache.
    // Shorter continuations are right-padded; padding only precedes nothing that is read.
    let tmax = continuations.iter().map(|(_, c)| c.len()).max().unwrap_or(1);
    if tmax == 1 {
        return Ok(scores);
    }
    kv.retain_rows(&rows)?;
    let n = continuations.len();
    let steps = tmax - 1;
    let feed: Vec<Vec<u32>> = continuations
        .iter()
        .map(|(_, c)| {
            (0..steps).map(|j| c.get(j).copied().filter(|_| j + 1 < c.len()).unwrap_or(model.tokenizer.pad)).collect()
        })
        .collect();
    let positions: Vec<Vec<u32>> =
        continuations.iter().map(|(r, _)| (0..steps).map(|j| (batch.len_of(*r) + j) as u32).collect()).collect();
    let key_valid: Vec<Vec<bool>> = continuations
        .iter()
        .map(|(r, _)| {
            let mut k = key_valid[*r].clone();
            k.extend(std::iter::repeat_n(true, steps));
            k
        })
        .collect();
    let out = t.forward(&ForwardInput::continuation(feed, positions, key_valid)?, &spec, Some(&mut kv))?.cache;
    let y = out.get(HookPoint::LnFinal)?; // [n, steps, d]
    for start in (0..n).step_by(SUB) {
        let m = SUB.min(n - start);
        let logits = t.unembed(&y.narrow(0, start, m)?.flatten(0, 1)?)?; // [m*steps, vocab]
        for i in 0..m {
            let c = &continuations[start + i].1;
            let k = c.len() - 1;
            if k == 0 {
                continue;
            }
            let s = score_rows(&logits.narrow(0, i * steps, k)?, &c[1..])?;
            scores[start + i].extend(s);
        }
    }
    Ok(scores)
}
