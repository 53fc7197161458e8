//! A batch of token sequences, left-padded to one length.
//!
//! Left padding keeps every row's last token in the last column, which is what generation and
//! "logits at the last position" want. Each row's own positions start at 0 on its first real
//! token (as Hugging Face's `generate` does), so a padded row computes exactly what it would
//! compute alone.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

use crate::hooks::Positions;

#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids, [rows, seq], padding on the left.
    pub ids: Vec<Vec<u32>>,
    /// Number of padding tokens at the start of each row.
    pub pad: Vec<usize>,
    /// Padded length of every row.
    pub seq_len: usize,
}

impl Batch {
    /// Left-pads `rows` with `pad_id`. Every row must hold at least one token.
    pub fn new(rows: &[Vec<u32>], pad_id: u32) -> Result<Self> {
        if rows.is_empty() {
            bail!("empty batch: no prompts given");
        }
        if let Some(i) = rows.iter().position(|r| r.is_empty()) {
            bail!("prompt {i} is empty: it has no tokens (an empty prompt without BOS?)");
        }
        let seq_len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len());
        let mut pad = Vec::with_capacity(rows.len());
        for r in rows {
            let p = seq_len - r.len();
            let mut row = vec![pad_id; p];
            row.extend_from_slice(r);
            ids.push(row);
            pad.push(p);
        }
        Ok(Self { ids, pad, seq_len })
    }

    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// Real (unpadded) length of row `r`.
    pub fn len_of(&self, r: usize) -> usize {
        self.seq_len - self.pad[r]
    }

    /// The ids as a [rows, seq] u32 tensor.
    pub fn ids_tensor(&self, device: &Device) -> Result<Tensor> {
        let flat: Vec<u32> = self.ids.iter().flatten().copied().collect();
        Ok(Tensor::from_vec(flat, (self.rows(), self.seq_len), device)?)
    }

    /// Per-row positions, 0 at each row's first real token (padding gets 0 too).
    pub fn position_ids(&self) -> Vec<Vec<u32>> {
        self.pad
            .iter()
            .map(|&p| (0..self.seq_len).map(|i| i.saturating_sub(p) as u32).collect())
            .collect()
    }

    /// Whether each column of each row is a real token (keys that attention may look at).
    pub fn key_valid(&self) -> Vec<Vec<bool>> {
        self.pad
            .iter()
            .map(|&p| (0..self.seq_len).map(|i| i >= p).collect())
            .collect()
    }

    /// Resolves a position counted within row `r`'s own tokens (negative from the end) to a
    /// column of the padded batch.
    pub fn column(&self, r: usize, pos: i64) -> Result<usize> {
        let len = self.len_of(r) as i64;
        let within = if pos < 0 { len + pos } else { pos };
        if within < 0 || within >= len {
            bail!("position {pos} is past the sequence: row {r} has {len} tokens");
        }
        Ok(self.pad[r] + within as usize)
    }
}

impl Batch {
    /// The padded columns that `positions` selects, row by row, in the order given.
    pub fn columns(&self, positions: &Positions) -> Result<Vec<Vec<usize>>> {
        let b = self.rows();
        let per_row = |r: usize, ps: &[i64]| ps.iter().map(|&p| self.column(r, p)).collect::<Result<Vec<_>>>();
        match positions {
            Positions::All => Ok(vec![(0..self.seq_len).collect(); b]),
            Positions::Last => Ok(vec![vec![self.seq_len - 1]; b]),
            Positions::Each(ps) => (0..b).map(|r| per_row(r, ps)).collect(),
            Positions::Rows(rows) => {
                if rows.len() != b {
                    bail!("positions are given for {} rows but the batch has {b}", rows.len());
                }
                rows.iter().enumerate().map(|(r, ps)| per_row(r, ps)).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_pads_and_resolves_positions() {
        let b = Batch::new(&[vec![5, 6, 7], vec![8]], 0).unwrap();
        assert_eq!(b.ids, vec![vec![5, 6, 7], vec![0, 0, 8]]);
        assert_eq!(b.position_ids(), vec![vec![0, 1, 2], vec![0, 0, 0]]);
        assert_eq!(b.column(1, 0).unwrap(), 2);
        assert_eq!(b.column(1, -1).unwrap(), 2);
        assert_eq!(b.column(0, -3).unwrap(), 0);
        let err = b.column(1, 1).unwrap_err().to_string();
        assert!(err.contains("past the sequence"), "{err}");
        assert!(b.column(0, -4).is_err());
    }

    #[test]
    fn empty_prompts_are_errors() {
        assert!(Batch::new(&[], 0).is_err());
        assert!(Batch::new(&[vec![1], vec![]], 0).unwrap_err().to_string().contains("prompt 1 is empty"));
    }
}
