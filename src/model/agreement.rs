//! How closely two models (in practice: one GGUF file run in float32 and with its quantized
//! blocks) agree on next-token distributions: the share of positions whose top-1 token is the
//! same, and KL(reference ‖ other) per position, in nats. Both run on the same token ids, batch
//! by batch, and the time each spends in its forward passes is kept, so exactness and speed come
//! from one run (`knowlens precision`).

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::{HookSpec, LogitsAt, Model};

/// Which positions of each prompt are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    /// The next-token distribution after the whole prompt.
    Last,
    /// Every position of the prompt (padding excluded).
    All,
}

/// Per compared position: whether the top-1 tokens agree, and the KL divergence.
#[derive(Debug, Clone, Default)]
pub struct Agreement {
    pub top1_same: Vec<bool>,
    /// KL(reference ‖ other) in nats, computed in float64 from float32 logits.
    pub kl: Vec<f64>,
    /// Seconds spent in each model's forward passes.
    pub reference_seconds: f64,
    pub other_seconds: f64,
}

impl Agreement {
    pub fn positions(&self) -> usize {
        self.kl.len()
    }
    pub fn top1_agreeing(&self) -> usize {
        self.top1_same.iter().filter(|&&s| s).count()
    }
}

/// Runs both models over `rows` (token ids, `batch_size` rows per forward pass) and compares
/// their next-token distributions at the `which` positions.
pub fn compare(
    reference: &Model,
    other: &Model,
    rows: &[Vec<u32>],
    which: Compared,
    batch_size: usize,
) -> Result<Agreement> {
    if batch_size == 0 {
        bail!("batch_size must be at least 1");
    }
    if reference.cfg().vocab_size != other.cfg().vocab_size {
        bail!(
            "the models' vocabularies differ ({} vs {} tokens): their distributions cannot be compared",
            reference.cfg().vocab_size,
            other.cfg().vocab_size
        );
    }
    let spec = HookSpec::new().logits(match which {
        Compared::Last => LogitsAt::Last,
        Compared::All => LogitsAt::All,
    });
    let mut out = Agreement::default();
    for chunk in rows.chunks(batch_size) {
        let batch = reference.batch_from_ids(chunk)?;
        let t = Instant::now();
        let a = reference.run(&batch, &spec)?.logits.expect("logits were requested");
        out.reference_seconds += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let b = other.run(&batch, &spec)?.logits.expect("logits were requested");
        out.other_seconds += t.elapsed().as_secs_f64();
        let (a, b) = (rows_of(&a)?, rows_of(&b)?);
        let seq = batch.seq_len;
        for (r, &pad) in batch.pad.iter().enumerate() {
            let positions: Vec<usize> = match which {
                Compared::Last => vec![r],
                Compared::All => (pad..seq).map(|p| r * seq + p).collect(),
            };
            for i in positions {
                let (p, q) = (&a[i], &b[i]);
                out.top1_same.push(argmax(p) == argmax(q));
                out.kl.push(kl_from_logits(p, q));
            }
        }
    }
    Ok(out)
}

/// Logits [b, vocab] or [b, s, vocab] as one row per position (row-major).
fn rows_of(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    let v = t.dims()[t.rank() - 1];
    let flat = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(flat.chunks(v).map(<[f32]>::to_vec).collect())
}

/// The index of the largest value (the first of equal ones).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// KL(softmax(p) ‖ softmax(q)) = Σ P (log P − log Q), in float64.
pub fn kl_from_logits(p: &[f32], q: &[f32]) -> f64 {
    let lse = |v: &[f32]| {
        let m = v.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
        m + v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    let kl: f64 = p
        .iter()
        .zip(q)
        .map(|(&x, &y)| {
            let lpx = x as f64 - lp;
            lpx.exp() * (lpx - (y as f64 - lq))
        })
        .sum();
    // Rounding can leave a tiny negative value for identical distributions.
    kl.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_shifted_logits_and_matches_a_hand_value() {
        let p = [1.0f32, 2.0, 3.0];
        let shifted: Vec<f32> = p.iter().map(|x| x + 5.0).collect();
        assert!(kl_from_logits(&p, &shifted) < 1e-12);
        // P = (0.5, 0.5), Q = (0.8, 0.2): 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2).
        let q = [(0.8f64).ln() as f32, (0.2f64).ln() as f32];
        let want = 0.5 * (0.5f64 / 0.8).ln() + 0.5 * (0.5f64 / 0.2).ln();
        assert!((kl_from_logits(&[0.0, 0.0], &q) - want).abs() < 1e-6);
        assert_eq!(argmax(&[0.0, 3.0, 3.0, 1.0]), 1);
    }
}
