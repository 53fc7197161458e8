//! Text and token streams → fixed-length training sequences: the one rule every consumer uses
//! (`TokenCorpus::chunks`, the SAE trainer's text files, the SAE evaluation's text files).
//!
//! # The rule
//!
//! A token stream (documents back to back, each starting with BOS where the model has one, or
//! a plain text tokenized without BOS) is cut into sequences of exactly `ctx_len` tokens, in
//! order, none skipped. Where the model has a BOS token every sequence starts with it: a
//! sequence whose first stream token is BOS (a document start) takes it from the stream; any
//! other (one starting inside a document, or in a text without BOS) gets BOS prepended and
//! takes `ctx_len − 1` stream tokens. Sequences span document boundaries (the next document's
//! BOS sits inside the sequence), as is usual when training SAEs. The tail shorter than a whole
//! sequence is dropped, so every sequence has the same length; a stream shorter than one
//! sequence gives none. A caller that can use one shorter sequence (the SAE evaluation of a
//! short text) asks for it explicitly with `short_text_sequence`.

use anyhow::{bail, Result};
use rayon::prelude::*;

use crate::tokenizer::Tokenizer;

/// The sequences of a token stream (see the module comment), as an iterator.
pub struct Sequences<I: Iterator<Item = u32>> {
    tokens: std::iter::Peekable<I>,
    bos: Option<u32>,
    ctx_len: usize,
}

/// Cuts `tokens` into `ctx_len`-token sequences by the module's rule. `ctx_len` must be at
/// least 2 (checked by the callers that take it from a user: `check_ctx_len`).
pub fn sequences<I: IntoIterator<Item = u32>>(tokens: I, bos: Option<u32>, ctx_len: usize) -> Sequences<I::IntoIter> {
    Sequences { tokens: tokens.into_iter().peekable(), bos, ctx_len }
}

impl<I: Iterator<Item = u32>> Iterator for Sequences<I> {
    type Item = Vec<u32>;

    fn next(&mut self) -> Option<Vec<u32>> {
        let mut seq = Vec::with_capacity(self.ctx_len);
        if let Some(b) = self.bos {
            if *self.tokens.peek()? != b {
                seq.push(b);
            }
        }
        while seq.len() < self.ctx_len {
            seq.push(self.tokens.next()?);
        }
        Some(seq)
    }
}

/// An error unless `ctx_len` leaves room for text after BOS.
pub fn check_ctx_len(ctx_len: usize) -> Result<()> {
    if ctx_len < 2 {
        bail!("context length must be at least 2 (got {ctx_len})");
    }
    Ok(())
}

/// A plain UTF-8 text as `ctx_len`-token sequences: tokenized without BOS (in pieces of about
/// 64 KiB that end at a line end, in parallel, so a token never spans two pieces), then cut by
/// the module's rule with the model's BOS where it uses one.
pub fn text_sequences(tok: &Tokenizer, text: &str, ctx_len: usize) -> Result<Vec<Vec<u32>>> {
    check_ctx_len(ctx_len)?;
    let pieces = split_at_lines(text, 1 << 16);
    let ids: Vec<Vec<u32>> = pieces.par_iter().map(|p| tok.encode(p, false, false)).collect::<Result<_>>()?;
    let bos = if tok.add_bos { tok.bos } else { None };
    Ok(sequences(ids.into_iter().flatten(), bos, ctx_len).collect())
}

/// A text too short for one `text_sequences` sequence, whole, as one shorter sequence: BOS
/// (where the model uses one) and all its tokens.
pub fn short_text_sequence(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let bos = if tok.add_bos { tok.bos } else { None };
    Ok(bos.into_iter().chain(tok.encode(text, false, false)?).collect())
}

/// Pieces of at least `target` bytes that end at a line end (the last may be shorter).
fn split_at_lines(text: &str, target: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + target).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let end = match text[end..].find('\n') {
            Some(i) => end + i + 1,
            None => text.len(),
        };
        out.push(&text[start..end]);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(tokens: &[u32], bos: Option<u32>, ctx_len: usize) -> Vec<Vec<u32>> {
        sequences(tokens.iter().copied(), bos, ctx_len).collect()
    }

    #[test]
    fn a_text_without_bos_gets_bos_on_every_sequence_and_loses_its_tail() {
        let ids: Vec<u32> = (10..20).collect();
        assert_eq!(cut(&ids, Some(2), 4), vec![vec![2, 10, 11, 12], vec![2, 13, 14, 15], vec![2, 16, 17, 18]]);
        assert_eq!(cut(&ids, None, 4), vec![vec![10, 11, 12, 13], vec![14, 15, 16, 17]]);
        assert!(cut(&ids[..2], Some(2), 8).is_empty(), "shorter than one sequence: none");
        assert!(cut(&[], Some(2), 8).is_empty());
    }

    #[test]
    fn a_document_start_keeps_its_own_bos() {
        // Documents [1 a b] [1 c d e f]: the second sequence starts inside a document.
        let stream = [1, 101, 102, 1, 201, 202, 203, 204];
        assert_eq!(cut(&stream, Some(1), 3), vec![vec![1, 101, 102], vec![1, 201, 202], vec![1, 203, 204]]);
        assert_eq!(cut(&stream, Some(1), 4), vec![vec![1, 101, 102, 1], vec![1, 201, 202, 203]]);
    }

    #[test]
    fn pieces_cover_the_text_and_end_at_lines() {
        let text = "ab\ncdé\nfg\nh";
        let p = split_at_lines(text, 2);
        assert_eq!(p.concat(), text);
        assert!(p[..p.len() - 1].iter().all(|s| s.ends_with('\n')));
        assert!(check_ctx_len(1).is_err() && check_ctx_len(2).is_ok());
    }
}
