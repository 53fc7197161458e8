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
use knowlens::causal::{items, report};
use knowlens::discover::detectors::{Detector, DetectorFile, DetectorKind};
use knowlens::discover::scores::Direction;
use knowlens::entities::dataset;
use knowlens::entities::label_set::{LabelSet, Split};
use knowlens::entities::questions::EntityType;
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
    #[arg(long, default_value = "data/entities/v2")]
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
    /// Known and unknown test entities per type, where the verdicts are computed (the paper: 100).
    #[arg(long, default_value_t = 100)]
    per_type: usize,
    /// Known and unknown validation entities per type, where the strength is chosen
    /// [default: --per-type].
    #[arg(long)]
    select_per_type: Option<usize>,
    /// Strengths tried on validation, in multiples of the mean residual norm at the steered
    /// layer and positions.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2")]
    coefs: Vec<f64>,
    /// Gaussian control directions on the test entities (a rank test needs at least 19
    /// controls in all, with the random SAE latents of the detector file).
    #[arg(long, alias = "random", default_value_t = 20)]
    gaussian: usize,
    /// Random SAE latents of the detector's frequency on the test entities, at most as many
    /// as the detector file carries (0: none).
    #[arg(long, default_value_t = 20)]
    random_latents: usize,
    /// Gaussian directions run beside the detector at each strength on validation.
    #[arg(long, default_value_t = 2)]
    select_controls: usize,
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
    /// Also measure the model with the unknown direction projected out of its weights, and with
    /// each control direction (its null) and the refusal direction (its positive control) instead.
    #[arg(long)]
    orthogonalize: bool,
    /// Skip the yes/no logit differences.
    #[arg(long)]
    no_yes_no: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory: steer.json, answers.jsonl, refusals.csv, yesno.csv, report.html.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    no_progress: bool,
}

/// The named detector, else the one the file's discovery selected for the class (on
/// validation), else the first of the class by preference: an SAE latent (the paper's), then a
/// difference of means (a steering vector by construction), then a probe (whose weights can lean
/// on directions that separate without moving the model).
pub(super) fn find<'a>(file: &'a DetectorFile, name: Option<&str>, detects: Direction) -> Option<&'a Detector> {
    if let Some(n) = name {
        return file.detectors.iter().find(|d| d.name == n);
    }
    if let Some(sel) = &file.selected {
        let n = if detects == Direction::Known { &sel.known } else { &sel.unknown };
        if let Some(d) = file.detectors.iter().find(|d| &d.name == n && d.detects == detects) {
            return Some(d);
        }
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
    let select_n = a.select_per_type.unwrap_or(a.per_type);
    let mut picked = items::pick(&labels, &ds.entities, &types, &[Split::Validation], select_n, a.seed, style)?;
    picked.extend(items::pick(&labels, &ds.entities, &types, &[Split::Test], a.per_type, a.seed, style)?);
    let progress: Box<dyn Progress> = if a.no_progress { Box::new(LogOnly) } else { Box::new(Bars::default()) };
    for t in &types {
        for split in [Split::Validation, Split::Test] {
            let n = |known: bool| {
                picked.iter().filter(|i| i.entity_type == *t && i.known == known && i.split == split).count()
            };
            progress.log(&format!("{t}, {split}: {} known, {} unknown entities asked", n(true), n(false)));
        }
    }
    let controls = |det: &str, layer: usize| -> Vec<SteeringDirection> {
        file.controls
            .iter()
            .find(|c| c.of == det)
            .map(|c| {
                c.latents
                    .iter()
                    .zip(&c.decoders)
                    .take(a.random_latents)
                    .filter_map(|(j, dec)| {
                        SteeringDirection::from_vector(&format!("latent-{j}@L{layer}"), layer, dec).ok()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let dirs = steer::Directions {
        known_controls: controls(&known.name, known.layer),
        unknown_controls: controls(&unknown.name, unknown.layer),
        known,
        unknown,
    };
    // Where the detector file has fewer random latents than asked (a chat model's probes have no
    // SAE), Gaussian directions take the missing places: the rank test keeps its control count.
    let have = dirs.known_controls.len().min(dirs.unknown_controls.len());
    let n_gaussian = a.gaussian + a.random_latents.saturating_sub(have);
    if have < a.random_latents {
        progress.log(&format!(
            "{} random SAE latents of {} asked in {}: {} Gaussian directions instead of {}",
            have,
            a.random_latents,
            a.detectors.display(),
            n_gaussian,
            a.gaussian
        ));
    }
    let opts = steer::Options {
        coefs: a.coefs.clone(),
        n_gaussian,
        n_select_controls: a.select_controls,
        max_tokens: a.max_tokens,
        batch: a.batch,
        positions: a.positions,
        rule: a.refusal_rule,
        prompt: style,
        yes_no: !a.no_yes_no,
        seed: a.seed,
    };
    let result = steer::run(&model, a.orthogonalize, picked, &dirs, &opts, progress.as_ref())?;
    let claims = report::write(&result, &name, style == PromptStyle::FewShot, &a.out)?;
    for c in &claims {
        println!("{:<22} {:<18} {}", c.id, c.verdict.as_str(), c.evidence);
    }
    println!("wrote {}", a.out.join("report.html").display());
    Ok(())
}
