//! `knowlens steer`: the refusal-steering and "are you sure you know" experiments on a chat
//! model (or a base model through a few-shot preamble that teaches it to say "I don't know"),
//! with directions from a detector file written by `knowlens discover` on the same model.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use knowlens::causal::direction::SteeringDirection;
use knowlens::causal::items::PromptStyle;
use knowlens::causal::refusal::RefusalRule;
use knowlens::causal::steer::{self, Steered};
use knowlens::causal::{items, report, yesno};
use knowlens::discover::detectors::{Detector, DetectorFile, DetectorKind};
use knowlens::discover::scores::Direction;
use knowlens::entities::dataset;
use knowlens::entities::labels::{LabelSet, Split};
use knowlens::entities::questions::EntityType;
use knowlens::model::Orthogonalization;
use knowlens::progress::Progress;

use super::progress::{named, Bars, LogOnly};
use super::ModelArgs;

#[derive(Args)]
pub struct SteerArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The model's labels (for a chat model, a `knowlens label --chat` mode directory).
    #[arg(long)]
    labels: PathBuf,
    /// The entity dataset the labels were made from (gold values of the questions).
    #[arg(long, default_value = "data/entities/v1")]
    entities: PathBuf,
    /// Detectors written by `knowlens discover` on this model (detectors.json).
    #[arg(long)]
    detectors: PathBuf,
    /// The detector whose direction stands for "known" [default: the file's first known SAE
    /// latent, else its difference of means, else its probe].
    #[arg(long)]
    known_detector: Option<String>,
    /// The detector whose direction stands for "unknown" [default: the file's first unknown
    /// detector, else the known direction reversed].
    #[arg(long)]
    unknown_detector: Option<String>,
    /// Use detectors made for a model of the same shape but another name.
    #[arg(long)]
    any_model: bool,
    #[arg(long, value_delimiter = ',', value_parser = named::<EntityType>(&EntityType::NAMES))]
    types: Vec<EntityType>,
    /// Splits the entities come from (the paper: test).
    #[arg(long, value_delimiter = ',', default_value = "test", value_parser = named::<Split>(&Split::NAMES))]
    splits: Vec<Split>,
    /// Known and unknown entities per type (the paper: 100).
    #[arg(long, default_value_t = 100)]
    per_type: usize,
    /// Strengths, in multiples of the mean residual norm at the steered layer and positions.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2")]
    coefs: Vec<f64>,
    /// Random directions of the same layer and strength (the baseline).
    #[arg(long, default_value_t = 10)]
    random: usize,
    #[arg(long, default_value_t = 30)]
    max_tokens: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value = "entity_last_to_end", value_parser = named::<Steered>(&Steered::NAMES))]
    positions: Steered,
    #[arg(long, default_value = "fixed", value_parser = named::<RefusalRule>(&RefusalRule::NAMES))]
    refusal_rule: RefusalRule,
    /// How questions are put: `chat` (the model's chat template) or `few_shot` (examples with
    /// "I don't know" answers, for a base model) [default: chat if the model has a template].
    #[arg(long, value_parser = named::<PromptStyle>(&PromptStyle::NAMES))]
    prompt: Option<PromptStyle>,
    /// Also measure the model with the unknown direction projected out of its weights.
    #[arg(long)]
    orthogonalize: bool,
    /// Strength of the yes/no experiment's push (multiples of the mean norm); 0 skips it
    /// [default: the largest of --coefs].
    #[arg(long)]
    yes_no_coef: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory: steer.json, answers.jsonl, refusals.csv, yesno.csv, report.html.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    no_progress: bool,
}

/// The named detector, else the first of the class by preference: an SAE latent (the paper's),
/// then a difference of means (a steering vector by construction), then a probe (whose weights
/// can lean on directions that separate without moving the model).
pub(super) fn find<'a>(file: &'a DetectorFile, name: Option<&str>, detects: Direction) -> Option<&'a Detector> {
    if let Some(n) = name {
        return file.detectors.iter().find(|d| d.name == n);
    }
    [DetectorKind::SaeLatent, DetectorKind::DiffOfMeans, DetectorKind::Probe]
        .iter()
        .find_map(|k| file.detectors.iter().find(|d| d.detects == detects && d.kind == *k))
}

pub fn run(a: SteerArgs) -> Result<()> {
    let file = DetectorFile::load(&a.detectors)?;
    let labels = LabelSet::load(&a.labels)?;
    let files = dataset::discover(std::slice::from_ref(&a.entities))?;
    let ds = files.load()?;
    let model = a.model.load()?;
    let name = super::discover::model_name(&a.model.model);
    file.check(&model, &name, a.any_model).with_context(|| a.detectors.display().to_string())?;
    let known_det = find(&file, a.known_detector.as_deref(), Direction::Known).with_context(|| {
        format!("{}: no detector {}", a.detectors.display(), a.known_detector.as_deref().unwrap_or("for known"))
    })?;
    let known = SteeringDirection::from_detector(known_det)?;
    let unknown = match find(&file, a.unknown_detector.as_deref(), Direction::Unknown) {
        Some(d) => SteeringDirection::from_detector(d)?,
        None if a.unknown_detector.is_some() => {
            bail!("{}: no detector {}", a.detectors.display(), a.unknown_detector.as_deref().unwrap_or_default())
        }
        None => {
            let mut d = known.clone();
            d.unit.iter_mut().for_each(|x| *x = -*x);
            d.name = format!("−{}", known.name);
            d.detects = Some(Direction::Unknown);
            d
        }
    };
    let types = if a.types.is_empty() { EntityType::ALL.to_vec() } else { a.types.clone() };
    let style = a.prompt.unwrap_or_else(|| PromptStyle::for_model(&model));
    if style == PromptStyle::Chat && model.tokenizer.chat_template.is_none() {
        bail!("{}: the model has no chat template; use --prompt few_shot for a base model", a.model.model);
    }
    let picked = items::pick(&labels, &ds.entities, &types, &a.splits, a.per_type, a.seed, style)?;
    for t in &types {
        let k = picked.iter().filter(|i| i.entity_type == *t && i.known).count();
        let u = picked.iter().filter(|i| i.entity_type == *t && !i.known).count();
        eprintln!("{t}: {k} known, {u} unknown entities asked");
    }
    let ortho = if a.orthogonalize {
        let mut m = a.model.load()?;
        let d = candle_core::Tensor::from_vec(unknown.unit.clone(), unknown.unit.len(), &candle_core::Device::Cpu)?;
        m.transformer.orthogonalize(&d, Orthogonalization::NormAware)?;
        Some(m)
    } else {
        None
    };
    let opts = steer::Options {
        coefs: a.coefs.clone(),
        n_random: a.random,
        max_tokens: a.max_tokens,
        batch: a.batch,
        positions: a.positions,
        rule: a.refusal_rule,
        prompt: style,
        seed: a.seed,
    };
    let progress: Box<dyn Progress> = if a.no_progress { Box::new(LogOnly) } else { Box::new(Bars::default()) };
    let result = steer::run(&model, ortho.as_ref(), picked, known.clone(), unknown.clone(), &opts, progress.as_ref())?;
    let coef = a.yes_no_coef.unwrap_or_else(|| a.coefs.iter().copied().fold(0.0, f64::max));
    let yn = if coef != 0.0 {
        let norm = |l: usize| result.mean_norms.iter().find(|(x, _)| *x == l).map_or(0.0, |(_, n)| *n);
        Some(yesno::run(
            &model,
            &result.items,
            &known,
            &unknown,
            coef,
            (coef * norm(known.layer), coef * norm(unknown.layer)),
            a.random,
            a.seed,
            a.batch,
            style,
            progress.as_ref(),
        )?)
    } else {
        None
    };
    report::write(&result, yn.as_ref(), &name, &a.out)?;
    for c in result.cells.iter().filter(|c| c.entity_type.is_none()) {
        let cond = &result.conditions[c.condition];
        let r = c.refusal_rate.as_ref();
        println!(
            "{:<8} {:<40} refused {:>3}/{:<3} {}",
            if cond.known { "known" } else { "unknown" },
            cond.treatment.label(),
            c.refusals,
            c.n,
            r.map(|e| format!("{:.0}% [{:.0}, {:.0}]", 100.0 * e.value, 100.0 * e.lo, 100.0 * e.hi))
                .unwrap_or_default()
        );
    }
    println!("wrote {}", a.out.join("report.html").display());
    Ok(())
}
