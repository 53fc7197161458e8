//! `knowlens corpus`: fetch, clean, deduplicate and tokenize the SAE training text.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use knowlens::corpus::{self, sources, BuildOptions};
use knowlens::fetch;
use serde_json::json;

#[derive(Args)]
pub struct CorpusArgs {
    /// The model whose tokenizer to use: a known name or a path (only the tokenizer is read).
    #[arg(long, default_value = fetch::DEFAULT_MODEL)]
    model: String,
    /// Comma-separated source names (default: all; see --list).
    #[arg(long)]
    sources: Option<String>,
    /// JSON-lines entity files to mix in as short sentences (e.g. data/entities/v2/*.jsonl).
    #[arg(long, num_args = 1..)]
    entities: Vec<PathBuf>,
    /// A labeling run's splits.json (e.g. data/labels/gemma-3-270m/greedy/splits.json): its
    /// validation and test entities get no sentence. Repeatable; part of the recipe.
    #[arg(long, requires = "entities")]
    exclude_splits: Vec<PathBuf>,
    /// A file of entity ids (one per line) that get no sentence. Repeatable; part of the recipe.
    #[arg(long, requires = "entities")]
    exclude_ids: Vec<PathBuf>,
    /// Share of documents held out for evaluation (heldout.bin), chosen by a seeded hash.
    #[arg(long, default_value_t = 0.02)]
    heldout: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Version directory name (default: v1 for the default recipe, v1-<digest> otherwise).
    #[arg(long)]
    version: Option<String>,
    /// Rebuild even if the cache already holds this recipe.
    #[arg(long)]
    force: bool,
    /// List the sources and exit.
    #[arg(long)]
    list: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(a: CorpusArgs) -> Result<()> {
    if a.list {
        for s in corpus::SOURCES {
            println!("{:<16} {:<40} {}\n{:<16} {} [{:?}]", s.name, s.spec(), s.license, "", s.description, s.format);
        }
        return Ok(());
    }
    if !(0.0..1.0).contains(&a.heldout) {
        bail!("--heldout {} must be in [0, 1)", a.heldout);
    }
    let mut opts = BuildOptions::new(&a.model);
    opts.sources = sources::select(a.sources.as_deref())?;
    opts.entities = a.entities;
    for p in &a.exclude_splits {
        opts.exclude_entities.extend(corpus::entities::heldout_ids(p)?);
    }
    for p in &a.exclude_ids {
        opts.exclude_entities.extend(corpus::entities::read_ids(p)?);
    }
    opts.heldout_fraction = a.heldout;
    opts.seed = a.seed;
    opts.version = a.version;
    opts.force = a.force;
    let t0 = Instant::now();
    let report = corpus::build(&opts, &super::progress::Bars::default())?;
    let wall = t0.elapsed().as_secs_f64();
    let stats = &report.index.stats;
    let total_tokens: u64 = stats.iter().map(|s| s.tokens + s.heldout_tokens).sum();
    let share = |s: &corpus::SourceStats| 100.0 * (s.tokens + s.heldout_tokens) as f64 / total_tokens.max(1) as f64;
    if a.json {
        let rows: Vec<_> = stats
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["percent"] = json!((share(s) * 100.0).round() / 100.0);
                v
            })
            .collect();
        let out = json!({
            "dir": report.dir,
            "model": report.index.model,
            "version": report.index.version,
            "cached": report.cached,
            "sources": rows,
            "total": {
                "documents": stats.iter().map(|s| s.documents).sum::<u64>(),
                "tokens": report.index.train.tokens,
                "heldout_documents": stats.iter().map(|s| s.heldout_documents).sum::<u64>(),
                "heldout_tokens": report.index.heldout.tokens,
            },
            "duplicate_paragraphs": report.duplicate_paragraphs(),
            "wall_s": (wall * 10.0).round() / 10.0,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{:<16} {:>9} {:>12} {:>7} {:>9} {:>10} {:>8}",
        "source", "documents", "tokens", "share", "held-out", "duplicates", "short"
    );
    for s in stats {
        println!(
            "{:<16} {:>9} {:>12} {:>6.1}% {:>9} {:>10} {:>8}",
            s.name,
            s.documents,
            s.tokens,
            share(s),
            s.heldout_tokens,
            s.duplicate_paragraphs,
            s.short_documents
        );
    }
    println!(
        "{:<16} {:>9} {:>12} {:>6.1}% {:>9} {:>10} {:>8}",
        "total",
        stats.iter().map(|s| s.documents).sum::<u64>(),
        report.index.train.tokens,
        100.0,
        report.index.heldout.tokens,
        report.duplicate_paragraphs(),
        stats.iter().map(|s| s.short_documents).sum::<u64>()
    );
    println!(
        "tokens, held-out: documents' tokens (BOS included) in tokens.bin / heldout.bin; duplicates: paragraphs dropped; short: documents dropped"
    );
    println!("{} ({:.1} s{})", report.dir.display(), wall, if report.cached { ", cached" } else { "" });
    Ok(())
}
