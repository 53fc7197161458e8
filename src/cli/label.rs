//! `knowlens label`: ask the model about every entity and label it known / unknown.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Result};
use clap::Args;
use knowlens::entities::dataset::{self, discover};
use knowlens::entities::decide::Class;
use knowlens::entities::label::{LabelOptions, Mode};
use knowlens::entities::rule::{AttributeSet, Guessable};
use knowlens::entities::run::{self, RunConfig, TemplateChoice};
use knowlens::entities::EntityType;
use knowlens::progress::Progress;

use super::progress::{named, Bars};
use super::ModelArgs;

#[derive(Args)]
pub struct LabelArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Entity JSONL files, or directories of them (fabricated.jsonl in a directory is read as
    /// the fabricated-name control set, not labeled).
    #[arg(long, num_args = 1.., default_value = "data/entities/v2")]
    entities: Vec<PathBuf>,
    /// Output directory (one subdirectory per mode); rerunning resumes.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_parser = named::<Mode>(&Mode::NAMES), default_value = "greedy")]
    mode: Mode,
    /// Label only this many entities per type, evenly spread over the popularity range.
    #[arg(long)]
    per_type: Option<usize>,
    /// A different count for some types, as TYPE=N (comma-separated; N = 0: the whole type),
    /// over --per-type.
    #[arg(long, value_delimiter = ',', value_parser = parse_type_count)]
    per_type_of: Vec<(EntityType, usize)>,
    /// Only these types.
    #[arg(long, value_delimiter = ',', value_parser = named::<EntityType>(&EntityType::NAMES))]
    types: Vec<EntityType>,
    #[arg(long, default_value_t = LabelOptions::default().batch_size)]
    batch_size: usize,
    /// Samples at T = 1 per question in sampled mode.
    #[arg(long, default_value_t = LabelOptions::default().samples)]
    samples: usize,
    /// Matching samples for an attribute to count as reliably correct (sampled mode).
    #[arg(long, default_value_t = LabelOptions::default().min_correct_samples)]
    min_correct_samples: usize,
    /// Estimated probability of a correct answer at T = 1 for an attribute to count as reliably
    /// correct (estimate mode).
    #[arg(long, default_value_t = LabelOptions::default().threshold)]
    threshold: f64,
    /// Attributes to ask: all, or only those that count toward known (default: all in greedy
    /// and sampled mode, counting in estimate and likelihood mode).
    #[arg(long, value_parser = named::<AttributeSet>(&AttributeSet::NAMES))]
    attributes: Option<AttributeSet>,
    /// Attributes correct for an entity to be known.
    #[arg(long, default_value_t = RunConfig::DEFAULT_KNOWN_MIN)]
    known_min: usize,
    /// Base-model templates: the paper's, or the best per attribute on a development sample.
    #[arg(long, value_parser = named::<TemplateChoice>(&TemplateChoice::NAMES), default_value = "auto")]
    templates: TemplateChoice,
    /// Most popular entities per type used to choose templates.
    #[arg(long, default_value_t = RunConfig::DEFAULT_DEV_SIZE)]
    dev_size: usize,
    /// Ask through the model's chat template (for chat models).
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of the train / validation / test split (the paper's: 42).
    #[arg(long, default_value_t = RunConfig::DEFAULT_SPLIT_SEED)]
    split_seed: u64,
    /// Kill the process (SIGKILL) once this many batches are answered and stored: for tests of
    /// resuming.
    #[arg(long, hide = true)]
    abort_after_batches: Option<u64>,
}

/// Draws the bars and kills the process after `limit` batches (`--abort-after-batches`).
struct AbortAfter {
    bars: Bars,
    limit: Option<u64>,
    batches: AtomicU64,
}

impl Progress for AbortAfter {
    fn start(&self, label: &str, total: Option<u64>) {
        self.bars.start(label, total)
    }
    fn set_position(&self, pos: u64) {
        self.bars.set_position(pos)
    }
    fn advance(&self, n: u64) {
        self.bars.advance(n);
        // The labeling run advances once per batch, after the batch's records are stored.
        if self.limit.is_some_and(|l| self.batches.fetch_add(1, Ordering::SeqCst) + 1 >= l) {
            // SIGKILL to ourselves: exactly what an interrupted run goes through.
            let _ = std::process::Command::new("kill").arg("-KILL").arg(std::process::id().to_string()).status();
            std::process::abort();
        }
    }
    fn message(&self, msg: &str) {
        self.bars.message(msg)
    }
    fn log(&self, line: &str) {
        self.bars.log(line)
    }
    fn finish(&self) {
        self.bars.finish()
    }
}

pub fn run(a: LabelArgs) -> Result<()> {
    let cfg = RunConfig {
        out: a.out.clone(),
        opts: LabelOptions {
            mode: a.mode,
            batch_size: a.batch_size,
            samples: a.samples,
            min_correct_samples: a.min_correct_samples,
            seed: a.seed,
            chat: a.chat,
            threshold: a.threshold,
            ..Default::default()
        },
        known_min: a.known_min,
        templates: a.templates,
        dev_size: a.dev_size,
        split_seed: a.split_seed,
        attributes: a.attributes,
        guessable: None,
    };
    // Settings are checked before the model loads.
    cfg.validate()?;
    let files = discover(&a.entities)?;
    let mut data = files.load()?;
    dataset::log_skipped(&data.skipped, 20);
    // Guessable gold values come from the whole dataset, so a subset is judged as the whole is.
    let cfg = RunConfig { guessable: Some(Guessable::from_entities(&data.entities)), ..cfg };
    data.retain_types(&a.types);
    if a.per_type.is_some() || !a.per_type_of.is_empty() {
        let n_of = |t: EntityType| {
            let n = a.per_type_of.iter().find(|(x, _)| *x == t).map(|x| x.1).or(a.per_type).unwrap_or(0);
            if n == 0 {
                usize::MAX
            } else {
                n
            }
        };
        data.entities = run::spread_subset_by(&data.entities, n_of);
    }
    if data.entities.is_empty() {
        bail!("no entities to label");
    }
    eprintln!("{} entities from {} files ({} rows skipped)", data.entities.len(), files.real.len(), data.skipped.len());
    let model = a.model.load()?;
    if a.chat && model.tokenizer.chat_template.is_none() {
        bail!("--chat: {} has no chat template", model.source.display());
    }
    let progress = AbortAfter { bars: Bars::default(), limit: a.abort_after_batches, batches: AtomicU64::new(0) };
    let outcome = run::run(&model, &data.entities, &data.fabricated, &cfg, &progress)?;
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

/// `TYPE=N` of `--per-type-of`.
fn parse_type_count(s: &str) -> Result<(EntityType, usize), String> {
    let (t, n) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected TYPE=N, for example city=450"))?;
    let t: EntityType = t.trim().parse().map_err(|e| format!("{e}"))?;
    let n: usize = n.trim().parse().map_err(|_| format!("{s:?}: {n:?} is not a count"))?;
    Ok((t, n))
}
