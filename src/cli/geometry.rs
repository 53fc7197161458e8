//! `knowlens geometry`: the refusal direction of a chat model (refused − answered questions,
//! judged on its own stored greedy answers) against its entity-recognition directions, per
//! layer, and whether steering along a detection direction moves the refusal projection.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use knowlens::causal::direction::{Source, SteeringDirection};
use knowlens::causal::geometry::{self, ChatPrompt, Inputs};
use knowlens::causal::geometry_report;
use knowlens::causal::items::{self, chat_text};
use knowlens::causal::refusal::RefusalRule;
use knowlens::discover::detectors::DetectorFile;
use knowlens::discover::scores::Direction;
use knowlens::entities::dataset;
use knowlens::entities::label_set::{LabelSet, Split};
use knowlens::entities::questions::EntityType;
use knowlens::progress::Progress;
use knowlens::rng::{shuffle, SplitMix64};
use knowlens::stats;

use super::progress::{named, Bars, LogOnly};
use super::steer::find;
use super::ModelArgs;

#[derive(Args)]
pub struct GeometryArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The chat model's labels (a `knowlens label --chat --mode greedy` directory): its stored
    /// greedy answers are judged refused / answered.
    #[arg(long)]
    labels: PathBuf,
    /// The entity dataset the labels were made from (gold values of the steered questions).
    #[arg(long, default_value = "data/entities/v2")]
    entities: PathBuf,
    /// Detectors written by `knowlens discover` on this model; their directions are steered and
    /// their cosines reported. Without: the known − unknown difference of means at the entity's
    /// last token at --steer-layer, fitted on the training questions.
    #[arg(long)]
    detectors: Option<PathBuf>,
    #[arg(long)]
    known_detector: Option<String>,
    #[arg(long)]
    unknown_detector: Option<String>,
    /// Use detectors made for a model of the same shape but another name.
    #[arg(long)]
    any_model: bool,
    /// The layer steered when no detector file is given.
    #[arg(long)]
    steer_layer: Option<usize>,
    /// Types of the detection directions and the steered questions (the types the model knows).
    #[arg(long, value_delimiter = ',', default_value = "city", value_parser = named::<EntityType>(&EntityType::NAMES))]
    types: Vec<EntityType>,
    /// Types whose questions make the refusal contrast [default: all].
    #[arg(long, value_delimiter = ',', value_parser = named::<EntityType>(&EntityType::NAMES))]
    refusal_types: Vec<EntityType>,
    /// Splits the steered questions come from.
    #[arg(long, value_delimiter = ',', default_value = "validation,test", value_parser = named::<Split>(&Split::NAMES))]
    splits: Vec<Split>,
    /// Known and unknown entities steered per type.
    #[arg(long, default_value_t = 60)]
    per_type: usize,
    /// Known and unknown training entities per type for the detection directions.
    #[arg(long, default_value_t = 1000)]
    detection_per_type: usize,
    /// Strengths, in multiples of the mean residual norm at the steered positions.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    coefs: Vec<f64>,
    #[arg(long, default_value_t = 10)]
    random: usize,
    /// Random directions of the isotropic cosine null.
    #[arg(long, default_value_t = 1000)]
    null: usize,
    /// Label shuffles of the permutation cosine null.
    #[arg(long, default_value_t = 200)]
    permutations: usize,
    /// Refused and answered questions a template needs in each half to enter the refusal fit.
    #[arg(long, default_value_t = 5)]
    min_per_class: usize,
    #[arg(long, default_value = "fixed", value_parser = named::<RefusalRule>(&RefusalRule::NAMES))]
    refusal_rule: RefusalRule,
    /// The read layer of the page's shift table [default: the last block's input].
    #[arg(long)]
    read_layer: Option<usize>,
    /// Stored answers to regenerate, checking that they are this model's greedy answers.
    #[arg(long, default_value_t = 16)]
    check_answers: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory: geometry.json, cosines.csv, shifts.csv, report.html.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    no_progress: bool,
}

/// The known and unknown directions of a detector file (steer's defaults: an unknown detector,
/// else the known one reversed), and every detector's direction for the cosine table.
fn file_directions(
    file: &DetectorFile,
    path: &std::path::Path,
    known_name: Option<&str>,
    unknown_name: Option<&str>,
) -> Result<(SteeringDirection, SteeringDirection, Vec<SteeringDirection>)> {
    let known_det = find(file, known_name, Direction::Known)
        .with_context(|| format!("{}: no detector {}", path.display(), known_name.unwrap_or("for known")))?;
    let known = SteeringDirection::from_detector(known_det)?;
    let unknown = match find(file, unknown_name, Direction::Unknown) {
        Some(d) => SteeringDirection::from_detector(d)?,
        None if unknown_name.is_some() => bail!("{}: no detector {}", path.display(), unknown_name.unwrap_or_default()),
        None => reversed(&known),
    };
    let all = file.detectors.iter().map(SteeringDirection::from_detector).collect::<Result<_>>()?;
    Ok((known, unknown, all))
}

fn reversed(known: &SteeringDirection) -> SteeringDirection {
    let mut d = known.clone();
    d.unit.iter_mut().for_each(|x| *x = -*x);
    d.name = format!("−{}", known.name);
    d.detects = Some(Direction::Unknown);
    d
}

pub fn run(a: GeometryArgs) -> Result<()> {
    let labels = LabelSet::load(&a.labels)?;
    let files = dataset::discover(std::slice::from_ref(&a.entities))?;
    let ds = files.load()?;
    let model = a.model.load()?;
    let name = super::discover::model_name(&a.model.model);
    let progress: Box<dyn Progress> = if a.no_progress { Box::new(LogOnly) } else { Box::new(Bars::default()) };
    let rule = a.refusal_rule;

    // The refusal contrast: every stored greedy answer of the refusal types.
    let refusal_types = if a.refusal_types.is_empty() { EntityType::ALL.to_vec() } else { a.refusal_types.clone() };
    let refusal = geometry::refusal_prompts(&labels, &refusal_types, rule)?;
    let (strata, _) = geometry::strata(&refusal, a.min_per_class);
    for s in &strata {
        eprintln!(
            "{:<22} refused {:>3}/{:<3} train, {:>3}/{:<3} held out{}",
            s.name,
            s.train_refused,
            s.train_refused + s.train_answered,
            s.heldout_refused,
            s.heldout_refused + s.heldout_answered,
            if s.used { "" } else { "  (not used)" }
        );
    }
    // Only the used templates need the model.
    let used: Vec<String> = strata.iter().filter(|s| s.used).map(|s| s.name.clone()).collect();
    let refusal: Vec<_> = refusal.into_iter().filter(|p| used.contains(&p.stratum())).collect();
    let refusal_texts: Vec<ChatPrompt> =
        refusal.iter().map(|p| Ok((chat_text(&model, &p.question, "")?, p.name.clone()))).collect::<Result<_>>()?;

    // Detection training questions and the steered questions.
    let as_prompts = |its: &[items::Item]| -> Result<(Vec<ChatPrompt>, Vec<bool>)> {
        let p =
            its.iter().map(|it| Ok((chat_text(&model, &it.question, "")?, it.name.clone()))).collect::<Result<_>>()?;
        Ok((p, its.iter().map(|it| it.known).collect()))
    };
    let det_items = items::pick(
        &labels,
        &ds.entities,
        &a.types,
        &[Split::Train],
        a.detection_per_type,
        a.seed,
        items::PromptStyle::Chat,
    )?;
    let (detection, detection_known) = as_prompts(&det_items)?;
    let steer_items =
        items::pick(&labels, &ds.entities, &a.types, &a.splits, a.per_type, a.seed, items::PromptStyle::Chat)?;
    let (steer, steer_known) = as_prompts(&steer_items)?;
    eprintln!(
        "detection: {} known / {} unknown training questions; steered: {} known / {} unknown",
        detection_known.iter().filter(|&&k| k).count(),
        detection_known.iter().filter(|&&k| !k).count(),
        steer_known.iter().filter(|&&k| k).count(),
        steer_known.iter().filter(|&&k| !k).count()
    );

    let (known, unknown, extra) = match &a.detectors {
        Some(path) => {
            let file = DetectorFile::load(path)?;
            file.check(&model, &name, a.any_model).with_context(|| path.display().to_string())?;
            file_directions(&file, path, a.known_detector.as_deref(), a.unknown_detector.as_deref())?
        }
        None => {
            let layer = a.steer_layer.context("give --detectors FILE or --steer-layer L")?;
            if layer >= model.cfg().n_layers {
                bail!("--steer-layer {layer}: the model has {} layers", model.cfg().n_layers);
            }
            let acts = geometry::site_activations(&model, &detection, a.batch, progress.as_ref())?;
            let dom = stats::diff_of_means(&acts.entity[layer], acts.d, &detection_known)?;
            let known = SteeringDirection {
                name: format!("diff_of_means_L{layer}"),
                source: Source::DiffOfMeans,
                detects: Some(Direction::Known),
                layer,
                unit: geometry::unit(&dom, "known − unknown difference of means")?,
            };
            let unknown = reversed(&known);
            (known, unknown, Vec::new())
        }
    };

    // Are the stored answers this model's? Regenerate a seeded sample.
    let check = if a.check_answers > 0 {
        let mut idx: Vec<usize> = (0..refusal.len()).collect();
        shuffle(&mut idx, &mut SplitMix64::derive(a.seed, 0x6E0_0002, 0));
        idx.truncate(a.check_answers);
        let c = geometry::check_answers(&model, &refusal, &refusal_texts, &idx, 32, rule, a.batch)?;
        eprintln!(
            "stored answers regenerated: {}/{} identical, {}/{} same verdict",
            c.same_text, c.n, c.same_verdict, c.n
        );
        Some(c)
    } else {
        None
    };

    let opts = geometry::Options {
        coefs: a.coefs.clone(),
        n_random: a.random,
        n_null: a.null,
        n_permutations: a.permutations,
        min_per_class: a.min_per_class,
        batch: a.batch,
        seed: a.seed,
        ..Default::default()
    };
    let inputs = Inputs {
        refusal,
        refusal_texts,
        detection,
        detection_known,
        steer,
        steer_known,
        known_direction: known,
        unknown_direction: unknown,
        extra: extra.iter().collect(),
        rule,
    };
    let mut result = geometry::run(&model, inputs, &opts, progress.as_ref())?;
    result.answer_check = check;
    geometry_report::write(&result, &name, a.read_layer, &a.out)?;

    println!("layer  AUROC(held-out)  within  stability  cos DoM@ent  cos DoM@last  cos probe  null rnd95  perm95@ent  perm95@last");
    for l in &result.layers {
        println!(
            "{:>5}  {:>15}  {:>6}  {:>9.3}  {:>+11.3}  {:>+12.3}  {:>9}  {:>10.3}  {:>10.3}  {:>11.3}",
            l.layer,
            l.heldout_auroc.map_or(String::new(), |e| format!("{:.3} [{:.2},{:.2}]", e.value, e.lo, e.hi)),
            l.heldout_auroc_within.map_or(String::new(), |v| format!("{v:.3}")),
            l.stability,
            l.cos_dom_entity,
            l.cos_dom_last,
            l.cos_probe_entity.map_or(String::new(), |c| format!("{c:+.3}")),
            l.null_isotropic.p95_abs,
            l.null_permutation.p95_abs,
            l.null_permutation_last.p95_abs
        );
        for (n, c) in &l.detectors {
            println!("       detector {n}: cos {c:+.3}");
        }
    }
    let shown = geometry_report::shown_read_layer(&result, a.read_layer);
    for s in result.shifts.iter().filter(|s| Some(s.read_layer) == shown || s.read_layer == s.steer_layer) {
        println!(
            "{:<8} {:<24} ×{:<4} read L{:<3} shift {}  random {}  welch p {}  z {}",
            if s.known { "known" } else { "unknown" },
            s.direction,
            s.coef,
            s.read_layer,
            s.shift.map_or(String::new(), |e| format!("{:+.3} [{:+.3}, {:+.3}]", e.value, e.lo, e.hi)),
            s.random_shift.map_or(String::new(), |e| format!("{:+.3} [{:+.3}, {:+.3}]", e.value, e.lo, e.hi)),
            s.welch.map_or(String::new(), |w| format!("{:.2e}", w.p)),
            s.z_vs_random.map_or(String::new(), |z| format!("{z:+.2}"))
        );
    }
    println!("wrote {}", a.out.join("report.html").display());
    Ok(())
}
