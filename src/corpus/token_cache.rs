//! The token cache: `tokens.bin` / `heldout.bin` (u32 little-endian token ids, documents back
//! to back, each starting with BOS where the model has one) and `index.json` (document
//! boundaries, the source of each document, and how the corpus was made). `TokenCorpus` reads
//! them back and hands out documents or fixed-length chunks in a seeded order.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Written into every index; readers refuse other formats.
pub const FORMAT: &str = "knowlens-corpus/1";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SourceInfo {
    pub name: String,
    /// `package==version` / `package@version`, or the entity files.
    pub origin: String,
    pub sha256: String,
    pub license: String,
}

/// Per-source counts (after cleaning and deduplication).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SourceStats {
    pub name: String,
    pub documents: u64,
    pub tokens: u64,
    pub heldout_documents: u64,
    pub heldout_tokens: u64,
    pub chars: u64,
    /// Paragraphs dropped as (near-)duplicates of an earlier one.
    pub duplicate_paragraphs: u64,
    /// Documents dropped as too short.
    pub short_documents: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SplitIndex {
    pub file: String,
    pub tokens: u64,
    /// `[start, length, source index]` per document, in file order.
    pub documents: Vec<[u64; 3]>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CorpusIndex {
    pub format: String,
    pub version: String,
    pub model: String,
    /// A digest of everything that went in (sources, options, tokenizer); a cache whose recipe
    /// differs is rebuilt.
    pub recipe: String,
    pub bos: Option<u32>,
    pub vocab_size: usize,
    pub seed: u64,
    pub heldout_fraction: f64,
    pub sources: Vec<SourceInfo>,
    pub stats: Vec<SourceStats>,
    pub train: SplitIndex,
    pub heldout: SplitIndex,
}

impl CorpusIndex {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Self::parse(&bytes, path)
    }

    /// An index already in memory; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let index: CorpusIndex =
            serde_json::from_slice(bytes).with_context(|| format!("{}: not a corpus index", path.display()))?;
        if index.format != FORMAT {
            bail!("{}: format '{}', expected '{FORMAT}'", path.display(), index.format);
        }
        Ok(index)
    }
}

/// Writes the two token files and the index into `dir`. The index is removed first and
/// written last, so a directory with an `index.json` always holds a finished corpus.
pub fn write(dir: &Path, index: &CorpusIndex, train: &[u32], heldout: &[u32]) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let index_path = dir.join("index.json");
    if index_path.exists() {
        fs::remove_file(&index_path).with_context(|| format!("removing {}", index_path.display()))?;
    }
    for (name, tokens) in [(&index.train.file, train), (&index.heldout.file, heldout)] {
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        crate::fsio::write_atomic(&dir.join(name), &bytes)?;
    }
    crate::fsio::write_atomic(&index_path, serde_json::to_string(index)?.as_bytes())?;
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Heldout,
}

/// A tokenized corpus split, in memory.
pub struct TokenCorpus {
    pub index: CorpusIndex,
    pub split: Split,
    tokens: Vec<u32>,
    /// (start, len, source index)
    docs: Vec<(usize, usize, usize)>,
}

impl TokenCorpus {
    /// The training split of the corpus at `path` (its directory or its `index.json`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_split(path, Split::Train)
    }

    /// One split of the corpus at `path`, checked: file length, document bounds, token ids
    /// within the vocabulary. Errors name the file.
    pub fn open_split(path: impl AsRef<Path>, split: Split) -> Result<Self> {
        let path = path.as_ref();
        let index_path: PathBuf = if path.is_dir() { path.join("index.json") } else { path.to_path_buf() };
        let index = CorpusIndex::read(&index_path)?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let s = match split {
            Split::Train => &index.train,
            Split::Heldout => &index.heldout,
        };
        let field = match split {
            Split::Train => "train.file",
            Split::Heldout => "heldout.file",
        };
        let file = dir.join(crate::fsio::plain_name(&s.file, &index_path, field)?);
        let bytes = fs::read(&file).with_context(|| format!("{}: cannot read", file.display()))?;
        Self::from_parts(index, &index_path, &bytes, &file, split)
    }

    /// A split from its index (read from `index_path`) and its token file's bytes (read from
    /// `file`), checked as `open_split` checks them.
    pub fn from_parts(index: CorpusIndex, index_path: &Path, bytes: &[u8], file: &Path, split: Split) -> Result<Self> {
        let s = match split {
            Split::Train => &index.train,
            Split::Heldout => &index.heldout,
        };
        if s.tokens.checked_mul(4) != Some(bytes.len() as u64) {
            bail!(
                "{}: {} bytes, but {} says {} tokens ({} bytes): truncated or from another build",
                file.display(),
                bytes.len(),
                index_path.display(),
                s.tokens,
                s.tokens as u128 * 4
            );
        }
        let tokens: Vec<u32> = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if let Some((i, t)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= index.vocab_size) {
            bail!("{}: token {i} is id {t}, outside the vocabulary of {}", file.display(), index.vocab_size);
        }
        let mut docs = Vec::with_capacity(s.documents.len());
        let mut expected_start = 0u64;
        for (k, &[start, len, src]) in s.documents.iter().enumerate() {
            let end = start.checked_add(len).filter(|&e| e <= s.tokens);
            let Some(end) = end.filter(|_| start == expected_start && len > 0 && src < index.sources.len() as u64)
            else {
                bail!("{}: document {k} ([{start}, {len}, {src}]) is out of bounds", index_path.display());
            };
            expected_start = end;
            docs.push((start as usize, len as usize, src as usize));
        }
        if expected_start != s.tokens {
            bail!("{}: documents cover {expected_start} of {} tokens", index_path.display(), s.tokens);
        }
        Ok(Self { index, split, tokens, docs })
    }

    /// An in-memory corpus (for tests and callers that tokenize themselves): documents with
    /// their source index into `sources`.
    pub fn from_documents(
        docs: Vec<(Vec<u32>, usize)>,
        sources: Vec<String>,
        bos: Option<u32>,
        vocab_size: usize,
    ) -> Self {
        let mut tokens = Vec::new();
        let mut spans = Vec::new();
        for (d, src) in docs {
            spans.push((tokens.len(), d.len(), src));
            tokens.extend(d);
        }
        let index = CorpusIndex {
            format: FORMAT.into(),
            version: String::new(),
            model: String::new(),
            recipe: String::new(),
            bos,
            vocab_size,
            seed: 0,
            heldout_fraction: 0.0,
            sources: sources
                .into_iter()
                .map(|name| SourceInfo { name, origin: String::new(), sha256: String::new(), license: String::new() })
                .collect(),
            stats: Vec::new(),
            train: SplitIndex {
                file: String::new(),
                tokens: tokens.len() as u64,
                documents: spans.iter().map(|&(s, l, k)| [s as u64, l as u64, k as u64]).collect(),
            },
            heldout: SplitIndex { file: String::new(), tokens: 0, documents: Vec::new() },
        };
        Self { index, split: Split::Train, tokens, docs: spans }
    }

    pub fn n_documents(&self) -> usize {
        self.docs.len()
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.index.bos
    }

    /// All tokens of the split, documents back to back.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The tokens of document `i` (starting with BOS where the model has one).
    pub fn document(&self, i: usize) -> &[u32] {
        let (s, l, _) = self.docs[i];
        &self.tokens[s..s + l]
    }

    /// The name of the source document `i` came from.
    pub fn source_of(&self, i: usize) -> &str {
        &self.index.sources[self.docs[i].2].name
    }

    /// Document indices in file order (`seed: None`) or shuffled by `seed`.
    pub fn order(&self, seed: Option<u64>) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.docs.len()).collect();
        if let Some(seed) = seed {
            shuffle(&mut order, seed);
        }
        order
    }

    /// The documents, in file order or shuffled by `seed`.
    pub fn documents(&self, seed: Option<u64>) -> impl Iterator<Item = &[u32]> + '_ {
        self.order(seed).into_iter().map(move |i| self.document(i))
    }

    /// Fixed-length token sequences for an activation store: the documents, in the order `seed`
    /// gives, back to back, cut by the one rule of `corpus::sequences` (every chunk starts with
    /// BOS where the model has one, prepended to a chunk that begins inside a document; chunks
    /// span document boundaries; the last partial chunk is dropped). Panics if `ctx_len < 2`.
    pub fn chunks(&self, ctx_len: usize, seed: Option<u64>) -> impl Iterator<Item = Vec<u32>> + '_ {
        assert!(ctx_len >= 2, "chunks: ctx_len must be at least 2 (got {ctx_len})");
        let tokens = self.order(seed).into_iter().flat_map(move |i| self.document(i).iter().copied());
        super::sequences::sequences(tokens, self.bos(), ctx_len)
    }
}

/// Fisher–Yates with a SplitMix64 seeded by `seed` (`crate::rng`), so a seed gives the same order
/// on every machine and with every version of the dependencies.
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    crate::rng::shuffle(v, &mut crate::rng::SplitMix64(seed));
}
