//! `knowlens uncertainty`: which latents and probes at the last prompt token tell, before the
//! model answers, that its answer will be wrong (the paper's §6).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use knowlens::causal::uncertainty::{self, report, Inputs, Options};
use knowlens::entities::dataset;
use knowlens::entities::label_set::LabelSet;
use knowlens::entities::rule::Guessable;
use knowlens::progress::Progress;
use knowlens::Sae;

use super::discover::model_name;
use super::progress::{Bars, LogOnly};
use super::ModelArgs;

#[derive(Args)]
pub struct UncertaintyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A greedy labeling mode directory (its records hold the model's answers and judgments).
    #[arg(long, default_value = "data/labels/gemma-3-270m/greedy")]
    labels: PathBuf,
    /// The entity dataset the labels were made from (gold values tell which answers can show
    /// recall).
    #[arg(long, default_value = "data/entities/v2")]
    entities: PathBuf,
    /// SAEs on the residual stream (any format `Sae::load` reads); repeat or separate with
    /// commas. Without any, only the probes and baselines run.
    #[arg(long, value_delimiter = ',')]
    sae: Vec<PathBuf>,
    /// Layers of the probe and difference of means (layer L = blocks.{L-1}.hook_resid_post);
    /// every SAE's layer is added.
    #[arg(long, value_delimiter = ',', default_value = "6,9,12")]
    layers: Vec<usize>,
    /// At most this many wrong and this many correct questions per type in each of train and test.
    #[arg(long, default_value_t = 200)]
    per_type: usize,
    /// Latents kept per direction per SAE.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Random latents of the same firing frequency per top latent.
    #[arg(long, default_value_t = 20)]
    random: usize,
    /// A token corpus (`knowlens corpus` output): latents active on ≥ --max-corpus-freq of its
    /// random held-out tokens are not selected.
    #[arg(long)]
    corpus: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    corpus_tokens: usize,
    #[arg(long, default_value_t = 32)]
    corpus_context: usize,
    #[arg(long, default_value_t = 0.02)]
    max_corpus_freq: f32,
    /// L2 strength of the probes.
    #[arg(long, default_value_t = 1e-2)]
    l2: f64,
    /// Bootstrap resamples of every interval.
    #[arg(long, default_value_t = 1000)]
    reps: usize,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory: uncertainty.json, detectors.csv, report.html.
    #[arg(long)]
    out: PathBuf,
    /// Activation cache (resumable); none by default.
    #[arg(long)]
    cache: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
}

pub fn run(a: UncertaintyArgs) -> Result<()> {
    let labels = LabelSet::load(&a.labels)?;
    let data = dataset::discover(std::slice::from_ref(&a.entities))?.load()?;
    dataset::log_skipped(&data.skipped, 5);
    // The labeling run's guessable values when it wrote them (the judgments rest on those).
    let gpath = a.labels.join("guessable.json");
    let guessable: Guessable = if gpath.is_file() {
        serde_json::from_slice(&std::fs::read(&gpath).with_context(|| format!("reading {}", gpath.display()))?)
            .with_context(|| format!("{}: not a guessable-values file", gpath.display()))?
    } else {
        Guessable::from_entities(&data.entities)
    };
    let saes: Vec<Sae> = a.sae.iter().map(|p| Sae::load(p)).collect::<Result<_>>()?;
    if saes.is_empty() && a.layers.is_empty() {
        bail!("nothing to measure: give --sae or --layers");
    }
    let corpus = match &a.corpus {
        Some(c) => Some(knowlens::corpus::TokenCorpus::open_split(c, knowlens::corpus::Split::Heldout)?),
        None => None,
    };
    let model = a.model.load()?;
    let mut opts = Options::new(&model_name(&a.model.model));
    opts.probe_layers = a.layers.clone();
    opts.per_type = a.per_type;
    opts.top = a.top;
    opts.n_random = a.random;
    opts.l2 = a.l2;
    opts.reps = a.reps;
    opts.seed = a.seed;
    opts.batch = a.batch;
    opts.corpus_tokens = a.corpus_tokens;
    opts.corpus_context = a.corpus_context;
    opts.max_corpus_freq = a.max_corpus_freq;
    let progress: Box<dyn Progress> = if a.no_progress { Box::new(LogOnly) } else { Box::new(Bars::default()) };
    let inputs = Inputs {
        model: &model,
        labels: &labels,
        entities: &data.entities,
        guessable: &guessable,
        saes: &saes,
        corpus: corpus.as_ref(),
    };
    let u = uncertainty::run(&inputs, &opts, a.cache.as_deref(), progress.as_ref())?;
    report::write(&u, &a.out)?;
    for n in &u.notes {
        eprintln!("note: {n}");
    }
    for (split, by_type) in &u.used {
        let parts: Vec<String> = by_type.iter().map(|(t, [w, c])| format!("{t} {w} wrong / {c} correct")).collect();
        println!("{split}: {}", parts.join(", "));
    }
    for d in u.detectors.iter().filter(|d| d.rank.is_none_or(|r| r == 0)) {
        let m = &d.evals[0];
        let auroc = m.auroc.map(|e| format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi)).unwrap_or_else(|| "-".into());
        let f1 = m.f1.map(|e| format!("{:.3}", e.value)).unwrap_or_else(|| "-".into());
        println!("{:<48} test AUROC {auroc}  F1 {f1}", d.name);
    }
    println!("wrote {}", a.out.join("report.html").display());
    Ok(())
}
