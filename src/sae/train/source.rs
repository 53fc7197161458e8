//! Where an activation store gets its token sequences: anything that hands out fixed-length
//! token sequences one at a time. An in-memory list (`VecSource`, e.g. of `TokenCorpus::chunks`)
//! and a plain text file cut into sequences (`text_file_source`) fit behind `TokenSource`.

use std::path::Path;

use crate::corpus::text_sequences;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};

/// Token sequences for an activation store, each starting with BOS where the model uses one.
/// A source must hand out the same sequences in the same order every time it is created with
/// the same arguments: resuming a run recreates it and skips what was already used.
pub trait TokenSource {
    /// The next sequence, or `None` when the source is exhausted.
    fn next_sequence(&mut self) -> Result<Option<Vec<u32>>>;

    /// Skips `n` sequences (used when resuming). Sources that can jump should override this.
    fn skip(&mut self, n: u64) -> Result<()> {
        for _ in 0..n {
            if self.next_sequence()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// A short description for the saved SAE's metadata (`dataset_path`).
    fn describe(&self) -> String;
}

/// Sequences held in memory, optionally repeated (epochs) so that a small text can feed a
/// longer run.
pub struct VecSource {
    seqs: Vec<Vec<u32>>,
    next: u64,
    repeat: bool,
    name: String,
}

impl VecSource {
    pub fn new(seqs: Vec<Vec<u32>>, repeat: bool, name: impl Into<String>) -> Self {
        Self { seqs, next: 0, repeat, name: name.into() }
    }

    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

impl TokenSource for VecSource {
    fn next_sequence(&mut self) -> Result<Option<Vec<u32>>> {
        let n = self.seqs.len() as u64;
        if n == 0 || (!self.repeat && self.next >= n) {
            return Ok(None);
        }
        let s = self.seqs[(self.next % n) as usize].clone();
        self.next += 1;
        Ok(Some(s))
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        self.next += n;
        Ok(())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// `corpus::text_sequences` of a file, as a repeating source (a short file is read in several
/// epochs).
pub fn text_file_source(tok: &Tokenizer, path: &Path, ctx_len: usize) -> Result<VecSource> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{}: cannot read as UTF-8 text", path.display()))?;
    let seqs = text_sequences(tok, &text, ctx_len).with_context(|| path.display().to_string())?;
    if seqs.is_empty() {
        bail!("{}: fewer than {ctx_len} tokens, not one sequence of the context length", path.display());
    }
    Ok(VecSource::new(seqs, true, path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_source_repeats_and_skips() {
        let mut s = VecSource::new(vec![vec![1], vec![2], vec![3]], true, "t");
        s.skip(4).unwrap();
        assert_eq!(s.next_sequence().unwrap(), Some(vec![2]));
        let mut once = VecSource::new(vec![vec![1]], false, "t");
        assert!(once.next_sequence().unwrap().is_some() && once.next_sequence().unwrap().is_none());
    }
}
