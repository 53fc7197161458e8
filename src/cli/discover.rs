//! `knowlens discover`: the latent-discovery experiment and its report; `knowlens detect`:
//! score an entity file with exported detectors.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use knowlens::discover::{self, detectors, Inputs, Options};
use knowlens::entities::dataset::{self, Require};
use knowlens::entities::label_set::LabelSet;
use knowlens::progress::Progress;
use knowlens::Sae;

use super::progress::{Bars, LogOnly};
use super::ModelArgs;

#[derive(Args)]
pub struct DiscoverArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A labeling mode directory (labels.jsonl[.gz], splits.json, controls.json).
    #[arg(long, default_value = "data/labels/gemma-3-270m/greedy")]
    labels: PathBuf,
    /// Only these types (e.g. the one type a small model knows; default: every type).
    #[arg(long, value_delimiter = ',', value_parser = super::progress::named::<knowlens::entities::questions::EntityType>(&knowlens::entities::questions::EntityType::NAMES))]
    types: Vec<knowlens::entities::questions::EntityType>,
    /// SAEs (any format `Sae::load` reads), one per layer, on resid_pre or resid_post; repeat or
    /// separate with commas. Without any, only the probe and confound baselines run.
    #[arg(long, value_delimiter = ',')]
    sae: Vec<PathBuf>,
    /// A token corpus (`knowlens corpus` output): random tokens of its held-out split give each
    /// latent's generic firing rate (latents active on ≥ --max-corpus-freq are dropped).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Random corpus tokens to read, and the context before each.
    #[arg(long, default_value_t = 2000)]
    corpus_tokens: usize,
    #[arg(long, default_value_t = 64)]
    corpus_context: usize,
    #[arg(long, default_value_t = 0.02)]
    max_corpus_freq: f32,
    /// Corpus documents read for the exported latents' dashboards (top contexts, promoted
    /// tokens; their first --dashboard-tokens tokens); 0 skips them.
    #[arg(long, default_value_t = 64)]
    dashboard_sequences: usize,
    #[arg(long, default_value_t = 128)]
    dashboard_tokens: usize,
    /// The entity dataset's fabricated names (those in the labels' controls are scored apart).
    #[arg(long, default_value = "data/entities/v2/fabricated.jsonl")]
    fabricated: PathBuf,
    /// The entity dataset (directory or files) the labels were made from: a type's matching
    /// attribute (a city's country) is read from it, and held-out tests compare known with
    /// unknown entities only within one of its values. A missing path turns matching off, with
    /// a note.
    #[arg(long, default_value = "data/entities/v2")]
    entities: PathBuf,
    /// Output directory: discovery.json, CSVs, detectors.json, report.html.
    #[arg(long)]
    out: PathBuf,
    /// Activation cache (resumable) [default: OUT/cache].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Prompt, with {type} and {name}.
    #[arg(long, default_value = discover::TEMPLATE)]
    template: String,
    /// Layers (resid_pre) for the probe and difference-of-means baselines: "all", "none" or a
    /// comma-separated list.
    #[arg(long, default_value = "all")]
    probe_layers: String,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// A type enters MaxMin only with at least this many known and unknown train entities.
    #[arg(long, default_value_t = 5)]
    min_per_class: usize,
    /// Ranked list length; latents tested on held-out data; latents exported per direction.
    #[arg(long, default_value_t = 20)]
    top: usize,
    #[arg(long, default_value_t = 10)]
    evaluate_top: usize,
    #[arg(long, default_value_t = 3)]
    export_top: usize,
    /// Random latents of the same firing frequency.
    #[arg(long, default_value_t = 20)]
    random: usize,
    /// L2 strength of the probes.
    #[arg(long, default_value_t = 1e-2)]
    l2: f64,
    /// Bootstrap resamples of every interval.
    #[arg(long, default_value_t = 1000)]
    reps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    no_progress: bool,
}

pub fn run(a: DiscoverArgs) -> Result<()> {
    let mut labels = LabelSet::load(&a.labels)?;
    labels.retain_types(&a.types);
    let saes: Vec<Sae> = a.sae.iter().map(|p| Sae::load(p)).collect::<Result<_>>()?;
    let model = a.model.load()?;
    let fabricated = if a.fabricated.is_file() {
        let rep = dataset::load(std::slice::from_ref(&a.fabricated), Require::NameOnly)?;
        dataset::log_skipped(&rep.skipped, 5);
        rep.entities
    } else if labels.fabricated_ids().is_empty() {
        Vec::new()
    } else {
        bail!(
            "--fabricated {}: no such file (the labels' controls name {} fabricated entities)",
            a.fabricated.display(),
            labels.fabricated_ids().len()
        );
    };
    let real = if a.entities.exists() {
        let files = if a.entities.is_dir() { dataset::dataset_files(&a.entities)? } else { vec![a.entities.clone()] };
        let rep = dataset::load(&files, Require::NameOnly)?;
        dataset::log_skipped(&rep.skipped, 5);
        rep.entities
    } else {
        Vec::new()
    };
    let corpus = match &a.corpus {
        Some(c) => Some(knowlens::corpus::TokenCorpus::open_split(c, knowlens::corpus::Split::Heldout)?),
        None => None,
    };
    let mut opts = Options::new(&model_name(&a.model.model));
    opts.template = a.template.clone();
    opts.probe_layers = match a.probe_layers.as_str() {
        "all" => None,
        "none" => Some(Vec::new()),
        s => Some(
            s.split(',')
                .map(|x| {
                    x.trim()
                        .parse::<usize>()
                        .with_context(|| format!("--probe-layers {s:?}: {x:?} is not a layer number"))
                })
                .collect::<Result<_>>()?,
        ),
    };
    opts.corpus_tokens = a.corpus_tokens;
    opts.corpus_context = a.corpus_context;
    opts.max_corpus_freq = a.max_corpus_freq;
    opts.dashboard_sequences = a.dashboard_sequences;
    opts.dashboard_tokens = a.dashboard_tokens;
    opts.batch = a.batch;
    opts.min_per_class = a.min_per_class;
    opts.top = a.top;
    opts.evaluate_top = a.evaluate_top;
    opts.export_top = a.export_top;
    opts.n_random = a.random;
    opts.l2 = a.l2;
    opts.reps = a.reps;
    opts.seed = a.seed;
    let cache = a.cache.clone().unwrap_or_else(|| a.out.join("cache"));
    let progress: Box<dyn Progress> = if a.no_progress { Box::new(LogOnly) } else { Box::new(Bars::default()) };
    let inputs = Inputs {
        model: &model,
        labels: &labels,
        saes: &saes,
        corpus: corpus.as_ref(),
        fabricated: &fabricated,
        entities: &real,
    };
    let d = discover::run(&inputs, &opts, Some(&cache), progress.as_ref())?;
    discover::report::write(&d, &a.out)?;
    for n in &d.notes {
        eprintln!("note: {n}");
    }
    for r in d.ranked_known.iter().take(3).chain(d.ranked_unknown.iter().take(3)) {
        let e = d.latent_evals.iter().find(|e| e.direction == r.direction && e.rank == r.rank);
        let auroc = e.and_then(|e| e.evals.first()).and_then(|e| e.auroc);
        println!(
            "{:<7} #{} layer {:>2} latent {:>6}  MaxMin {:.3}  test AUROC {}",
            r.direction.as_str(),
            r.rank,
            r.layer,
            r.latent,
            r.score_min,
            auroc.map(|e| format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi)).unwrap_or_else(|| "–".into())
        );
    }
    if let Some(l) = d.probe_layer {
        let e = d.probe_evals.first().and_then(|e| e.auroc);
        println!(
            "probe at layer {l}: test AUROC {}",
            e.map(|e| format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi)).unwrap_or_default()
        );
    }
    for s in &d.selected {
        let per_type: Vec<String> = s
            .test
            .per_type
            .iter()
            .map(|t| {
                let a = t.auroc.map(|e| format!("{:.3}", e.value)).unwrap_or_else(|| "–".into());
                format!("{} {a}{}", t.entity_type, if t.qualifies { "" } else { " (too few)" })
            })
            .collect();
        println!(
            "selected {:<7} {} (train rank {}): stratified test AUROC {} [{}]",
            s.direction.as_str(),
            s.detector,
            s.train_rank,
            s.test
                .stratified
                .map(|e| format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi))
                .unwrap_or_else(|| "–".into()),
            per_type.join(", ")
        );
    }
    println!("wrote {}", a.out.join("report.html").display());
    Ok(())
}

/// The name recorded for a model: the preset name, or a path's file name.
pub fn model_name(arg: &str) -> String {
    let p = std::path::Path::new(arg);
    if p.exists() {
        p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| arg.to_string())
    } else {
        arg.to_string()
    }
}

#[derive(Args)]
pub struct DetectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A detector file written by `knowlens discover` (detectors.json).
    #[arg(long)]
    detectors: PathBuf,
    /// Entities to score: JSONL with id, type, name (and optionally class: known / unknown).
    #[arg(long)]
    entities: PathBuf,
    /// Output JSONL (one row per entity: every detector's score and decision) [default: stdout].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use detectors made for a model of the same shape but another name.
    #[arg(long)]
    any_model: bool,
    #[arg(long, default_value_t = 32)]
    batch: usize,
}

pub fn detect(a: DetectArgs) -> Result<()> {
    let file = detectors::DetectorFile::load(&a.detectors)?;
    let rows = detectors::read_entities(&a.entities)?;
    let model = a.model.load()?;
    let hooks = file
        .check(&model, &model_name(&a.model.model), a.any_model)
        .with_context(|| format!("{}", a.detectors.display()))?;
    let scores = detectors::detect(&model, &file, &hooks, &rows, a.batch, &knowlens::progress::Silent)?;
    let mut out = String::new();
    for (r, s) in rows.iter().zip(&scores) {
        let dets: serde_json::Map<String, serde_json::Value> = file
            .detectors
            .iter()
            .zip(s)
            .map(|(d, (v, fire))| (d.name.clone(), serde_json::json!({"score": v, "fires": fire})))
            .collect();
        out.push_str(&serde_json::to_string(&serde_json::json!({"id": r.id, "type": r.entity_type, "name": r.name, "class": r.class, "detectors": dets}))?);
        out.push('\n');
    }
    match &a.out {
        Some(p) => knowlens::fsio::write_atomic(p, out.as_bytes())?,
        None => print!("{out}"),
    }
    // With labels: each detector's AUROC and accuracy on this file.
    if rows.iter().any(|r| r.class.is_some()) {
        for (k, d) in file.detectors.iter().enumerate() {
            let (mut pos, mut neg) = (Vec::new(), Vec::new());
            for (r, s) in rows.iter().zip(&scores) {
                let is_pos = match (r.class.as_deref(), d.detects) {
                    (Some("known"), discover::scores::Direction::Known)
                    | (Some("unknown"), discover::scores::Direction::Unknown) => true,
                    (Some(_), _) => false,
                    (None, _) => continue,
                };
                if is_pos {
                    pos.push(s[k].0);
                } else {
                    neg.push(s[k].0);
                }
            }
            let e = discover::heldout::evaluate("file", None, &pos, &neg, d.threshold as f64, 1000, 0);
            eprintln!(
                "{:<28} AUROC {}  balanced accuracy {}  ({} positive, {} negative)",
                d.name,
                e.auroc.map(|e| format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi)).unwrap_or_else(|| "–".into()),
                e.balanced_accuracy.map(|e| format!("{:.3}", e.value)).unwrap_or_else(|| "–".into()),
                e.n_pos,
                e.n_neg
            );
        }
    }
    Ok(())
}
