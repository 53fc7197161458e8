//! A batch of token sequences, left-padded to one length, and the positions callers name in it.
//!
//! Left padding keeps every row's last token in the last column, which is what generation and
//! "logits at the last position" want. Each row's own positions start at 0 on its first real
//! token (as Hugging Face's `generate` does), so a padded row computes exactly what it would
//! compute alone.
//!
//! `Positions` are counted within each row's own tokens; a `Layout` (the padding of each row and
//! the padded length) turns them into columns of the padded tensors. A `Batch` has a layout, and
//! so does every chunk the forward pass runs (a decoding step is a layout of length 1 without
//! padding), which is all the hook runtime needs to know.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// Token positions, counted within each row's own tokens (0 is the row's first token, usually
/// BOS), whatever left padding the batch added. Negative values count from the row's end:
/// -1 is the last token.
#[derive(Debug, Clone, PartialEq)]
pub enum Positions {
    /// Every position of every row (padding included; padding is ignored by later layers).
    All,
    /// The last token of each row.
    Last,
    /// The same positions in every row.
    Each(Vec<i64>),
    /// Positions chosen per row, e.g. the last token of the entity name in each prompt.
    Rows(Vec<Vec<i64>>),
}

/// Where each row's tokens sit in a left-padded [rows, seq_len] tensor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    /// Number of padding columns at the start of each row.
    pub pad: Vec<usize>,
    /// Padded length of every row.
    pub seq_len: usize,
}

impl Layout {
    /// `rows` rows of `seq_len` tokens without padding (e.g. one decoding step: `seq_len` 1).
    pub fn unpadded(rows: usize, seq_len: usize) -> Self {
        Self { pad: vec![0; rows], seq_len }
    }

    /// The layout of attention keys: leading invalid keys are the row's padding.
    pub fn of_keys(key_valid: &[Vec<bool>]) -> Self {
        let seq_len = key_valid.first().map(|k| k.len()).unwrap_or(0);
        let pad = key_valid.iter().map(|k| k.iter().take_while(|&&v| !v).count()).collect();
        Self { pad, seq_len }
    }

    pub fn rows(&self) -> usize {
        self.pad.len()
    }

    /// Real (unpadded) length of row `r`.
    pub fn len_of(&self, r: usize) -> usize {
        self.seq_len - self.pad[r]
    }

    /// Resolves a position counted within row `r`'s own tokens (negative from the end) to a
    /// column of the padded tensor.
    pub fn column(&self, r: usize, pos: i64) -> Result<usize> {
        let len = self.len_of(r) as i64;
        let within = if pos < 0 { len + pos } else { pos };
        if within < 0 || within >= len {
            bail!("position {pos} is past the sequence: row {r} has {len} tokens");
        }
        Ok(self.pad[r] + within as usize)
    }

    /// The padded columns that `positions` selects, row by row, in the order given.
    pub fn columns(&self, positions: &Positions) -> Result<Vec<Vec<usize>>> {
        let b = self.rows();
        let per_row = |r: usize, ps: &[i64]| ps.iter().map(|&p| self.column(r, p)).collect::<Result<Vec<_>>>();
        match positions {
            Positions::All => Ok(vec![(0..self.seq_len).collect(); b]),
            Positions::Last => Ok(vec![vec![self.seq_len.saturating_sub(1)]; b]),
            Positions::Each(ps) => (0..b).map(|r| per_row(r, ps)).collect(),
            Positions::Rows(rows) => {
                if rows.len() != b {
                    bail!("positions are given for {} rows but the batch has {b}", rows.len());
                }
                rows.iter().enumerate().map(|(r, ps)| per_row(r, ps)).collect()
            }
        }
    }

    /// A [rows * seq_len] mask with 1 at the selected columns.
    pub fn mask(&self, positions: &Positions) -> Result<Vec<u8>> {
        let s = self.seq_len;
        let mut m = vec![0u8; self.rows() * s];
        for (r, cols) in self.columns(positions)?.into_iter().enumerate() {
            cols.into_iter().for_each(|c| m[r * s + c] = 1);
        }
        Ok(m)
    }
}

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

    pub fn layout(&self) -> Layout {
        Layout { pad: self.pad.clone(), seq_len: self.seq_len }
    }

    /// Real (unpadded) length of row `r`.
    pub fn len_of(&self, r: usize) -> usize {
        self.seq_len - self.pad[r]
    }

    /// Row `r`'s tokens without padding.
    pub fn row_ids(&self, r: usize) -> &[u32] {
        &self.ids[r][self.pad[r]..]
    }

    /// The ids as a [rows, seq] u32 tensor.
    pub fn ids_tensor(&self, device: &Device) -> Result<Tensor> {
        let flat: Vec<u32> = self.ids.iter().flatten().copied().collect();
        Ok(Tensor::from_vec(flat, (self.rows(), self.seq_len), device)?)
    }

    /// Per-row positions, 0 at each row's first real token (padding gets 0 too).
    pub fn position_ids(&self) -> Vec<Vec<u32>> {
        self.pad.iter().map(|&p| (0..self.seq_len).map(|i| i.saturating_sub(p) as u32).collect()).collect()
    }

    /// Whether each column of each row is a real token (keys that attention may look at).
    pub fn key_valid(&self) -> Vec<Vec<bool>> {
        self.pad.iter().map(|&p| (0..self.seq_len).map(|i| i >= p).collect()).collect()
    }

    /// Resolves a position counted within row `r`'s own tokens (negative from the end) to a
    /// column of the padded batch.
    pub fn column(&self, r: usize, pos: i64) -> Result<usize> {
        self.layout().column(r, pos)
    }

    /// The padded columns that `positions` selects, row by row, in the order given.
    pub fn columns(&self, positions: &Positions) -> Result<Vec<Vec<usize>>> {
        self.layout().columns(positions)
    }
}

/// Prompts that each name an entity, batched, with the positions of the entity's tokens: the
/// paper reads and steers at the entity's last token.
#[derive(Debug, Clone)]
pub struct EntityBatch {
    pub batch: Batch,
    /// Per row, the positions (within the row's own tokens) of the tokens covering the entity.
    pub spans: Vec<Vec<i64>>,
}

impl EntityBatch {
    /// Per row, the position of the entity's last token.
    pub fn last_positions(&self) -> Vec<i64> {
        self.spans.iter().map(|s| *s.last().expect("spans are never empty")).collect()
    }

    /// The entity's last token of every row, as `Positions` for captures, edits and gathers.
    pub fn last(&self) -> Positions {
        Positions::Rows(self.last_positions().into_iter().map(|p| vec![p]).collect())
    }

    /// From the entity's last token to the end of each prompt (the paper's steering positions).
    pub fn last_to_end(&self) -> Positions {
        Positions::Rows(
            self.last_positions()
                .into_iter()
                .enumerate()
                .map(|(r, p)| (p..self.batch.len_of(r) as i64).collect())
                .collect(),
        )
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
    fn key_layouts_count_leading_invalid_keys_as_padding() {
        let keys = Layout::of_keys(&[vec![false, false, true, true, true], vec![true; 5]]);
        assert_eq!(keys, Layout { pad: vec![2, 0], seq_len: 5 });
        assert_eq!(keys.columns(&Positions::Each(vec![0, -1])).unwrap(), vec![vec![2, 4], vec![0, 4]]);
        assert_eq!(keys.mask(&Positions::Each(vec![1])).unwrap(), vec![0, 0, 0, 1, 0, 0, 1, 0, 0, 0]);
        assert!(keys.columns(&Positions::Rows(vec![vec![0]])).unwrap_err().to_string().contains("2"));
    }

    #[test]
    fn empty_prompts_are_errors() {
        assert!(Batch::new(&[], 0).is_err());
        assert!(Batch::new(&[vec![1], vec![]], 0).unwrap_err().to_string().contains("prompt 1 is empty"));
    }
}
