//! `knowlens label`: ask the model about every entity and label it known / unknown.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use knowlens::entities::dataset::{self, Require};
use knowlens::entities::decide::Class;
use knowlens::entities::label::{LabelOptions, Mode};
use knowlens::entities::run::{self, RunConfig, TemplateChoice};

use super::ModelArgs;

#[derive(Args)]
pub struct LabelArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Entity JSONL files, or directories of them (fabricated.jsonl in a directory is read as
    /// the fabricated-name control set, not labeled).
    #[arg(long, num_args = 1.., default_value = "data/entities/v1")]
    entities: Vec<PathBuf>,
    /// Output directory (one subdirectory per mode); rerunning resumes.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t = Mode::Greedy)]
    mode: Mode,
    /// Label only this many entities per type, evenly spread over the popularity range.
    #[arg(long)]
    per_type: Option<usize>,
    /// Only these types (player, movie, city, song).
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Samples at T = 1 per question in sampled mode.
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Matching samples for an attribute to count as reliably correct (sampled mode).
    #[arg(long, default_value_t = 3)]
    min_correct_samples: usize,
    /// Attributes correct for an entity to be known.
    #[arg(long, default_value_t = 2)]
    known_min: usize,
    /// Base-model templates: the paper's, or the best per attribute on a development sample.
    #[arg(long, value_enum, default_value_t = TemplateChoice::Auto)]
    templates: TemplateChoice,
    /// Most popular entities per type used to choose templates.
    #[arg(long, default_value_t = 48)]
    dev_size: usize,
    /// Ask through the model's chat template (for chat models).
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of the train / validation / test split (the paper's: 42).
    #[arg(long, default_value_t = 42)]
    split_seed: u64,
}

pub fn run(a: LabelArgs) -> Result<()> {
    let mut files = Vec::new();
    let mut fabricated_files = Vec::new();
    for p in &a.entities {
        if p.is_dir() {
            files.extend(dataset::dataset_files(p)?);
            let f = p.join("fabricated.jsonl");
            if f.exists() {
                fabricated_files.push(f);
            }
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        bail!("no entity files found in {:?}", a.entities);
    }
    let report = dataset::load(&files, Require::Attributes)?;
    dataset::print_skipped(&report.skipped, 20);
    let mut entities = report.entities;
    if !a.types.is_empty() {
        entities.retain(|e| a.types.iter().any(|t| t == e.entity_type.as_str()));
    }
    if let Some(n) = a.per_type {
        entities = run::spread_subset(&entities, n);
    }
    if entities.is_empty() {
        bail!("no entities to label");
    }
    let fabricated = if fabricated_files.is_empty() {
        Vec::new()
    } else {
        let r = dataset::load(&fabricated_files, Require::NameOnly)?;
        dataset::print_skipped(&r.skipped, 20);
        r.entities
    };
    eprintln!("{} entities from {} files ({} rows skipped)", entities.len(), files.len(), report.skipped.len());
    let model = a.model.load()?;
    if a.chat && model.tokenizer.chat_template.is_none() {
        bail!("--chat: {} has no chat template", model.source.display());
    }
    let cfg = RunConfig {
        out: a.out.clone(),
        opts: LabelOptions {
            mode: a.mode,
            batch_size: a.batch_size,
            samples: a.samples,
            min_correct_samples: a.min_correct_samples,
            seed: a.seed,
            chat: a.chat,
            ..Default::default()
        },
        known_min: a.known_min,
        templates: a.templates,
        dev_size: a.dev_size,
        split_seed: a.split_seed,
        quiet: false,
    };
    let outcome = run::run(&model, &entities, &fabricated, &cfg)?;
    let count = |c: Class| outcome.labels.iter().filter(|l| l.class == c).count();
    println!(
        "{} entities: {} known, {} unknown, {} dropped; {} questions asked now ({:.0} s, {:.1}/s), {} resumed",
        outcome.labels.len(),
        count(Class::Known),
        count(Class::Unknown),
        count(Class::Dropped),
        outcome.asked_now,
        outcome.seconds,
        outcome.asked_now as f64 / outcome.seconds.max(1e-9),
        outcome.already_done
    );
    println!("summary: {}", run::mode_dir(&a.out, a.mode).join("summary.md").display());
    Ok(())
}
