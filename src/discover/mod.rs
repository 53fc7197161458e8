//! The latent-discovery experiment (paper §3): which SAE latents at an entity's last token fire
//! on entities the model knows and which on entities it does not, how general they are across
//! entity types and depth, whether they hold up on held-out entities, matched controls and
//! popularity bands, and whether they beat probes, popularity and random latents.
//!
//! Layer convention (the paper's): "layer L" is the residual stream entering block L,
//! `blocks.L.hook_resid_pre` = `blocks.{L-1}.hook_resid_post`, so a Gemma Scope `layer_{L-1}`
//! SAE belongs to layer L. Scores use the train split only; held-out numbers use the test split;
//! the validation split picks the exported probe's layer.
//!
//! ```no_run
//! # use knowlens::{Model, Precision, Sae};
//! # use knowlens::entities::label_set::LabelSet;
//! use knowlens::discover::{self, Inputs, Options};
//! let model = Model::load("model.gguf".as_ref(), Precision::F32)?;
//! let labels = LabelSet::load("data/labels/gemma-3-270m/greedy".as_ref())?;
//! let saes = vec![Sae::load("sae/blocks.6.hook_resid_post".as_ref())?];
//! let inputs = Inputs { model: &model, labels: &labels, saes: &saes, corpus: None, fabricated: &[], entities: &[] };
//! let result = discover::run(&inputs, &Options::new("gemma-3-270m"), None, &knowlens::progress::Silent)?;
//! discover::report::write(&result, "out".as_ref())?;
//! # anyhow::Ok(())
//! ```

pub mod activations;
pub mod baselines;
pub mod detectors;
pub mod heldout;
pub mod report;
pub mod scores;
pub mod select;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;

use self::activations::{Activations, Item};
use self::baselines::{Dom, LayerBaseline};
use self::detectors::{Detector, DetectorFile, DetectorKind, ModelId};
use self::heldout::Eval;
use self::scores::{Direction, ExcludedType, Group, LayerScores, Ranked};
use crate::corpus::TokenCorpus;
use crate::entities::decide::Class;
use crate::entities::label_set::{LabelSet, Split};
use crate::entities::questions::EntityType;
use crate::entities::Entity;
use crate::progress::Progress;
use crate::stats::Estimate;
use crate::{HookPoint, Model, Sae};

/// The paper's prompt for latent discovery.
pub const TEMPLATE: &str = "The {type} '{name}'";

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// The model's name recorded in the detector file (checked by `detect`).
    pub model_name: String,
    /// Prompt with `{type}` and `{name}`.
    pub template: String,
    /// Layers (resid_pre) for the probe and difference-of-means baselines; None: every layer.
    pub probe_layers: Option<Vec<usize>>,
    /// Random corpus tokens for the generic-text filter, and their context length.
    pub corpus_tokens: usize,
    pub corpus_context: usize,
    /// Prompts per forward pass (and rows per cache chunk).
    pub batch: usize,
    /// A type enters MaxMin only with at least this many known and unknown train entities.
    pub min_per_class: usize,
    /// Latents active on at least this fraction of corpus tokens are dropped (paper: 0.02).
    pub max_corpus_freq: f32,
    /// Length of each ranked list, latents evaluated on held-out data, detectors exported.
    pub top: usize,
    pub evaluate_top: usize,
    pub export_top: usize,
    /// Random latents of the same frequency (paper: 10 for steering; issue: 20).
    pub n_random: usize,
    pub l2: f64,
    pub reps: usize,
    pub seed: u64,
    /// Popularity bands (quantiles of the popularity rank within each type).
    pub bands: usize,
    /// Corpus documents (their first `dashboard_tokens` tokens) read for the exported latents'
    /// dashboards: top contexts, activation density, promoted tokens. 0: no dashboards.
    pub dashboard_sequences: usize,
    pub dashboard_tokens: usize,
}

impl Options {
    pub fn new(model_name: &str) -> Self {
        Self {
            model_name: model_name.to_string(),
            template: TEMPLATE.to_string(),
            probe_layers: None,
            corpus_tokens: 2000,
            corpus_context: 64,
            batch: 32,
            min_per_class: 5,
            max_corpus_freq: 0.02,
            top: 20,
            evaluate_top: 10,
            export_top: 3,
            n_random: 20,
            l2: 1e-2,
            reps: 1000,
            seed: 0,
            bands: 3,
            dashboard_sequences: 64,
            dashboard_tokens: 128,
        }
    }
}

impl Options {
    /// Refuses settings that would give meaningless numbers, naming the setting.
    pub fn check(&self) -> Result<()> {
        if self.reps == 0 {
            bail!("reps (bootstrap resamples) must be at least 1");
        }
        if !(self.l2 > 0.0 && self.l2.is_finite()) {
            bail!("l2 must be a positive number, got {}", self.l2);
        }
        if !(self.max_corpus_freq > 0.0 && self.max_corpus_freq <= 1.0) {
            bail!("max_corpus_freq must be in (0, 1], got {}", self.max_corpus_freq);
        }
        if self.min_per_class == 0 {
            bail!("min_per_class must be at least 1 (a type needs known and unknown entities to be scored)");
        }
        if !self.template.contains("{name}") {
            bail!("template {:?} has no {{name}}", self.template);
        }
        Ok(())
    }
}

/// What the experiment reads.
pub struct Inputs<'a> {
    pub model: &'a Model,
    pub labels: &'a LabelSet,
    /// One SAE per layer, each reading the residual stream (resid_pre or resid_post).
    pub saes: &'a [Sae],
    /// Random tokens from it give each latent's generic firing rate (None: no filter).
    pub corpus: Option<&'a TokenCorpus>,
    /// Fabricated names (rows of the entity dataset's fabricated.jsonl); those in the label
    /// set's controls are scored as a held-out "not a real entity" set.
    pub fabricated: &'a [Entity],
    /// The dataset's real entities, read only for each type's matching attribute (a city's
    /// country). Empty: no matching, with a note when a type has such an attribute.
    pub entities: &'a [Entity],
}

/// The class of a row: labelled known / unknown, or a fabricated name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowClass {
    Known,
    Unknown,
    Fabricated,
}

/// One entity the experiment reads.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub entity_type: EntityType,
    pub name: String,
    pub class: RowClass,
    pub split: Option<Split>,
    pub popularity_rank: Option<u64>,
    pub name_tokens: usize,
    pub matched: bool,
    /// The value of the type's matching attribute (`EntityType::matching_attribute`, a city's
    /// country); held-out tests compare known with unknown only within one value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stratum: Option<String>,
}

/// The paper's layer of an SAE hook: resid_pre(L) → L, resid_post(L-1) → L.
pub fn layer_of(hook: HookPoint) -> Result<usize> {
    match hook {
        HookPoint::ResidPre(l) => Ok(l),
        HookPoint::ResidPost(l) => Ok(l + 1),
        other => bail!(
            "discover reads the residual stream; an SAE on {other} is not supported (use resid_pre / resid_post SAEs)"
        ),
    }
}

/// One latent's held-out results.
#[derive(Debug, Clone, Serialize)]
pub struct LatentEval {
    pub direction: Direction,
    pub rank: usize,
    pub layer: usize,
    pub latent: usize,
    /// Chosen on train (activation > threshold ⇒ the latent's class).
    pub threshold: f64,
    pub evals: Vec<Eval>,
    /// Entities of the test split that activate it most / least (id, name, activation).
    pub top_entities: Vec<(String, String, f32)>,
    pub bottom_entities: Vec<(String, String, f32)>,
    /// For the exported latents, given a corpus: what the latent does on ordinary text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<crate::sae::dashboard::LatentDashboard>,
}

/// Random latents at a top latent's layer with the closest firing frequency.
#[derive(Debug, Clone, Serialize)]
pub struct RandomBaseline {
    pub direction: Direction,
    pub layer: usize,
    pub of_latent: usize,
    pub of_auroc: Option<f64>,
    pub latents: Vec<usize>,
    pub aurocs: Vec<Option<f64>>,
    pub mean: Option<f64>,
    pub max: Option<f64>,
}

/// f_known / f_unknown of every latent at one layer on the test split (the paper's Fig. 1).
#[derive(Debug, Clone, Serialize)]
pub struct Scatter {
    pub layer: usize,
    pub f_known: Vec<f32>,
    pub f_unknown: Vec<f32>,
    /// Latents in the train top lists at this layer (known, unknown).
    pub top_known: Vec<usize>,
    pub top_unknown: Vec<usize>,
    pub passes_filter: Vec<bool>,
}

/// A layer's summary row.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub layer: usize,
    pub sae_hook: Option<String>,
    pub maxmin_known: Option<(usize, f32)>,
    pub maxmin_unknown: Option<(usize, f32)>,
    pub best_known_per_type: BTreeMap<EntityType, f32>,
    pub best_unknown_per_type: BTreeMap<EntityType, f32>,
    /// Held-out AUROC of the layer's MaxMin known latent (activation as score).
    pub top_known_auroc: Option<Estimate>,
    pub top_unknown_auroc: Option<Estimate>,
    /// The same known latent's test AUROC within types (stratified over types with enough
    /// entities, `select::MIN_TYPE_TEST`): what the depth claim compares across layers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_known_stratified: Option<Estimate>,
    pub baseline: Option<LayerBaseline>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    /// [split][class] → n, per type; fabricated rows under "fabricated".
    pub per_type: BTreeMap<String, BTreeMap<String, usize>>,
    pub corpus_tokens: usize,
}

/// Everything `discover` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Discovery {
    pub model: ModelId,
    pub labels: String,
    pub label_mode: Option<String>,
    pub options: Options,
    pub counts: Counts,
    pub types_scored: Vec<EntityType>,
    pub excluded_types: Vec<ExcludedType>,
    pub layers: Vec<LayerSummary>,
    pub ranked_known: Vec<Ranked>,
    pub ranked_unknown: Vec<Ranked>,
    pub latent_evals: Vec<LatentEval>,
    pub random_baselines: Vec<RandomBaseline>,
    pub confound_baseline: Vec<Eval>,
    /// The probe and difference-of-means at the layer validation picked, per subset.
    pub probe_evals: Vec<Eval>,
    pub probe_layer: Option<usize>,
    /// Per direction, the latent its detection claim rests on (chosen on validation) and its tests.
    pub selected: Vec<select::Selected>,
    pub scatter: Option<Scatter>,
    pub notes: Vec<String>,
    pub seconds: BTreeMap<String, f64>,
    #[serde(skip)]
    pub detectors: Option<DetectorFile>,
}

/// Runs the experiment. `cache`: where entity and corpus activations are kept between runs.
pub fn run(inp: &Inputs, opts: &Options, cache: Option<&Path>, progress: &dyn Progress) -> Result<Discovery> {
    opts.check()?;
    let model = inp.model;
    let cfg = model.cfg();
    let mut notes = Vec::new();
    let mut seconds = BTreeMap::new();
    let t0 = Instant::now();

    // SAEs: on the model, on the residual stream, one per layer.
    let mut sae_layers: Vec<(usize, &Sae)> = Vec::new();
    for sae in inp.saes {
        sae.check_model(model)?;
        let l = layer_of(sae.hook).with_context(|| format!("SAE {}", sae.source.display()))?;
        if let Some((_, other)) = sae_layers.iter().find(|(m, _)| *m == l) {
            bail!("SAEs {} and {} both read layer {l}", other.source.display(), sae.source.display());
        }
        sae_layers.push((l, sae));
    }
    sae_layers.sort_by_key(|x| x.0);
    if sae_layers.is_empty() {
        notes.push("no SAE given: only the probe, difference-of-means and confound baselines were computed".into());
    }
    let probe_layers: Vec<usize> = match &opts.probe_layers {
        Some(v) => v.clone(),
        None => (0..cfg.n_layers).collect(),
    };
    for &l in &probe_layers {
        if l >= cfg.n_layers {
            bail!("probe layer {l}: the model has layers 0..{}", cfg.n_layers - 1);
        }
    }

    // Rows: labelled known / unknown entities in a split, then the matched fabricated names.
    let rows = entity_rows(inp, opts, &mut notes)?;
    let idx_of = |pred: &dyn Fn(&Row) -> bool| -> Vec<usize> { (0..rows.len()).filter(|&i| pred(&rows[i])).collect() };

    // Groups of train rows per type, and which types enter MaxMin.
    let mut groups = Vec::new();
    for t in EntityType::ALL {
        let known =
            idx_of(&|r: &Row| r.entity_type == t && r.split == Some(Split::Train) && r.class == RowClass::Known);
        let unknown =
            idx_of(&|r: &Row| r.entity_type == t && r.split == Some(Split::Train) && r.class == RowClass::Unknown);
        if known.len() + unknown.len() > 0 {
            groups.push(Group { entity_type: t, known, unknown });
        }
    }
    let (groups, excluded_types) = scores::eligible(groups, opts.min_per_class);
    if groups.is_empty() {
        let why: Vec<String> = excluded_types
            .iter()
            .map(|e| format!("{} {} known / {} unknown", e.entity_type, e.n_known, e.n_unknown))
            .collect();
        bail!(
            "{}: no entity type has at least {} known and {} unknown train entities ({}); nothing to score",
            inp.labels.dir.display(),
            opts.min_per_class,
            opts.min_per_class,
            if why.is_empty() { "no train entities".to_string() } else { why.join(", ") }
        );
    }
    for e in &excluded_types {
        notes.push(format!(
            "{} left out of MaxMin: {} known / {} unknown train entities ({})",
            e.entity_type, e.n_known, e.n_unknown, e.reason
        ));
    }

    // Activations: every probe layer and every SAE hook, for every row.
    let mut hooks: Vec<HookPoint> = probe_layers.iter().map(|&l| HookPoint::ResidPre(l)).collect();
    for (_, s) in &sae_layers {
        if !hooks.contains(&s.hook) {
            hooks.push(s.hook);
        }
    }
    let items: Vec<Item> = rows
        .iter()
        .map(|r| Item::Entity {
            prompt: detectors::prompt(&opts.template, r.entity_type.as_str(), &r.name),
            name: r.name.clone(),
        })
        .collect();
    let acts = activations::collect(model, "entities", &items, &hooks, opts.batch, cache, progress)?;
    seconds.insert("entity_activations".into(), t0.elapsed().as_secs_f64());

    let t1 = Instant::now();
    let sae_hooks: Vec<HookPoint> = sae_layers.iter().map(|(_, s)| s.hook).collect();
    let corpus_acts = match inp.corpus {
        Some(c) if opts.corpus_tokens > 0 && !sae_hooks.is_empty() => {
            let items = activations::corpus_items(c, opts.corpus_tokens, opts.corpus_context, opts.seed)?;
            Some(activations::collect(model, "corpus", &items, &sae_hooks, opts.batch, cache, progress)?)
        }
        _ => {
            if !sae_hooks.is_empty() {
                notes.push("no corpus tokens: the generic-text filter (latents active on ≥ 2% of corpus tokens) was not applied".into());
            }
            None
        }
    };
    seconds.insert("corpus_activations".into(), t1.elapsed().as_secs_f64());

    // Pass 1: scores per SAE layer from the train rows.
    let t2 = Instant::now();
    progress.start("separation scores", Some(sae_layers.len() as u64));
    let mut layer_scores = Vec::new();
    for (l, sae) in &sae_layers {
        let h = acts.hook_index(sae.hook)?;
        let f = encode_rows(sae, &acts, h, &(0..rows.len()).collect::<Vec<_>>())?;
        let corpus_freq = match &corpus_acts {
            Some(ca) => {
                let hc = ca.hook_index(sae.hook)?;
                let fc = encode_rows(sae, ca, hc, &(0..ca.n).collect::<Vec<_>>())?;
                scores::active_fraction(&fc, sae.d_sae(), &(0..ca.n).collect::<Vec<_>>())
            }
            None => Vec::new(),
        };
        layer_scores.push(LayerScores::new(*l, sae.hook.to_string(), &f, sae.d_sae(), &groups, corpus_freq));
        progress.advance(1);
    }
    progress.finish();
    let ranked_known = scores::rank(&layer_scores, Direction::Known, opts.max_corpus_freq, opts.top);
    let ranked_unknown = scores::rank(&layer_scores, Direction::Unknown, opts.max_corpus_freq, opts.top);
    seconds.insert("scores".into(), t2.elapsed().as_secs_f64());

    // Pass 2: held-out tests of the top latents, the per-layer MaxMin latents, random latents.
    let t3 = Instant::now();
    let split_rows = |s: Split| idx_of(&|r: &Row| r.split == Some(s));
    let (train, validation, test) = (split_rows(Split::Train), split_rows(Split::Validation), split_rows(Split::Test));
    let fabricated = idx_of(&|r: &Row| r.class == RowClass::Fabricated);
    let ctx = EvalContext { rows: &rows, train: &train, test: &test, fabricated: &fabricated, opts };

    let mut latent_evals = Vec::new();
    let mut random_baselines = Vec::new();
    let mut layers: Vec<LayerSummary> = Vec::new();
    let mut scatter = None;
    let mut exported: Vec<Detector> = Vec::new();
    let mut candidate_scores: Vec<(Direction, usize, usize, usize, Vec<f64>)> = Vec::new();
    progress.start("held-out tests", Some(sae_layers.len() as u64));
    for ((l, sae), ls) in sae_layers.iter().zip(&layer_scores) {
        let h = acts.hook_index(sae.hook)?;
        let f = encode_rows(sae, &acts, h, &(0..rows.len()).collect::<Vec<_>>())?;
        let d_sae = sae.d_sae();
        let column = |j: usize| -> Vec<f64> { (0..rows.len()).map(|r| f[r * d_sae + j] as f64).collect() };
        let mut summary = LayerSummary {
            layer: *l,
            sae_hook: Some(sae.hook.to_string()),
            maxmin_known: ls.maxmin(Direction::Known, opts.max_corpus_freq),
            maxmin_unknown: ls.maxmin(Direction::Unknown, opts.max_corpus_freq),
            best_known_per_type: ls.best_per_type(Direction::Known, opts.max_corpus_freq),
            best_unknown_per_type: ls.best_per_type(Direction::Unknown, opts.max_corpus_freq),
            top_known_auroc: None,
            top_unknown_auroc: None,
            top_known_stratified: None,
            baseline: None,
        };
        for dir in Direction::ALL {
            if let Some((j, _)) = ls.maxmin(dir, opts.max_corpus_freq) {
                let e = ctx.pooled_test(dir, &column(j));
                match dir {
                    Direction::Known => {
                        summary.top_known_auroc = e;
                        summary.top_known_stratified =
                            select::score_test(&rows, &test, dir, &column(j), opts.reps, opts.seed).stratified;
                    }
                    Direction::Unknown => summary.top_unknown_auroc = e,
                }
            }
        }
        layers.push(summary);
        for (dir, ranked) in [(Direction::Known, &ranked_known), (Direction::Unknown, &ranked_unknown)] {
            for r in ranked.iter().filter(|r| r.layer == *l && r.rank < opts.evaluate_top.max(opts.export_top)) {
                let values = column(r.latent);
                if r.rank < opts.evaluate_top {
                    latent_evals.push(ctx.latent_eval(dir, r.rank, *l, r.latent, &values));
                    candidate_scores.push((dir, *l, r.latent, r.rank, values.clone()));
                }
                if r.rank == 0 && opts.n_random > 0 {
                    // Not the latent itself nor another of the evaluated top latents of this direction.
                    let exclude: Vec<usize> = ranked
                        .iter()
                        .filter(|x| x.layer == *l && x.rank < opts.evaluate_top.max(1))
                        .map(|x| x.latent)
                        .collect();
                    let pick = baselines::same_frequency_latents(
                        &ls.entity_freq,
                        ls.entity_freq[r.latent],
                        &exclude,
                        opts.n_random,
                    );
                    let aurocs: Vec<Option<f64>> =
                        pick.iter().map(|&j| ctx.pooled_test(dir, &column(j)).map(|e| e.value)).collect();
                    let vals: Vec<f64> = aurocs.iter().flatten().copied().collect();
                    random_baselines.push(RandomBaseline {
                        direction: dir,
                        layer: *l,
                        of_latent: r.latent,
                        of_auroc: ctx.pooled_test(dir, &values).map(|e| e.value),
                        latents: pick,
                        mean: (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64),
                        max: vals.iter().copied().reduce(f64::max),
                        aurocs,
                    });
                }
                if r.rank < opts.export_top {
                    exported.push(ctx.latent_detector(sae, &acts, h, dir, r)?);
                }
            }
        }
        if ranked_known.first().is_some_and(|r| r.layer == *l) {
            let test_known: Vec<usize> = test.iter().copied().filter(|&i| rows[i].class == RowClass::Known).collect();
            let test_unknown: Vec<usize> =
                test.iter().copied().filter(|&i| rows[i].class == RowClass::Unknown).collect();
            let top = |v: &[Ranked]| v.iter().filter(|r| r.layer == *l).map(|r| r.latent).take(10).collect();
            scatter = Some(Scatter {
                layer: *l,
                f_known: scores::active_fraction(&f, d_sae, &test_known),
                f_unknown: scores::active_fraction(&f, d_sae, &test_unknown),
                top_known: top(&ranked_known),
                top_unknown: top(&ranked_unknown),
                passes_filter: (0..d_sae).map(|j| ls.passes(j, opts.max_corpus_freq)).collect(),
            });
        }
        progress.advance(1);
    }
    progress.finish();
    seconds.insert("heldout".into(), t3.elapsed().as_secs_f64());

    // Baselines per layer: difference of means and a logistic probe on the raw residual.
    let t4 = Instant::now();
    let fit_rows: Vec<usize> = train.iter().copied().filter(|&i| rows[i].class != RowClass::Fabricated).collect();
    let y_fit: Vec<bool> = fit_rows.iter().map(|&i| rows[i].class == RowClass::Known).collect();
    let mut probes: Vec<FittedBaseline> = Vec::new();
    progress.start("probes", Some(probe_layers.len() as u64));
    for &l in &probe_layers {
        let h = acts.hook_index(HookPoint::ResidPre(l))?;
        let x = acts.matrix(h, &fit_rows);
        let d = acts.d;
        let dom = Dom::fit(&x, d, &y_fit).with_context(|| format!("difference of means at layer {l}"))?;
        let (probe, keep) =
            baselines::fit_probe(&x, d, &y_fit, opts.l2).with_context(|| format!("probe at layer {l}"))?;
        let dom_scores: Vec<f64> = (0..rows.len()).map(|r| dom.score(acts.row(r, h))).collect();
        let probe_scores: Vec<f64> =
            (0..rows.len()).map(|r| baselines::probe_logit(&probe, &keep, acts.row(r, h))).collect();
        let val = |s: &[f64]| ctx.auroc_on(&validation, s);
        let b = LayerBaseline {
            layer: l,
            hook: HookPoint::ResidPre(l).to_string(),
            dom_test: ctx.pooled_test(Direction::Known, &dom_scores),
            probe_test: ctx.pooled_test(Direction::Known, &probe_scores),
            dom_validation: val(&dom_scores),
            probe_validation: val(&probe_scores),
            probe_train: ctx.auroc_on(&train, &probe_scores),
        };
        probes.push(FittedBaseline {
            layer: l,
            probe_pick: b.probe_validation.or(b.probe_train).unwrap_or(f64::NAN),
            probe,
            keep,
            dom,
            dom_pick: b.dom_validation.unwrap_or(f64::NAN),
        });
        match layers.iter_mut().find(|s| s.layer == l) {
            Some(s) => s.baseline = Some(b),
            None => layers.push(LayerSummary {
                layer: l,
                sae_hook: None,
                maxmin_known: None,
                maxmin_unknown: None,
                best_known_per_type: BTreeMap::new(),
                best_unknown_per_type: BTreeMap::new(),
                top_known_auroc: None,
                top_unknown_auroc: None,
                top_known_stratified: None,
                baseline: Some(b),
            }),
        }
        progress.advance(1);
    }
    progress.finish();
    layers.sort_by_key(|s| s.layer);
    if validation.is_empty() && !probe_layers.is_empty() {
        notes.push("no validation split: the exported probe's layer was chosen by train AUROC".into());
    }
    let mut probe_evals = Vec::new();
    let mut probe_layer = None;
    let mut probe_scores: Option<Vec<f64>> = None;
    // The exported probe and difference of means: the layer with the best validation AUROC
    // (ties to the shallower layer).
    let best_by = |pick: fn(&FittedBaseline) -> f64| {
        probes
            .iter()
            .filter(|p| pick(p).is_finite())
            .max_by(|a, b| pick(a).total_cmp(&pick(b)).then(b.layer.cmp(&a.layer)))
    };
    if let Some(FittedBaseline { layer: l, probe, keep, .. }) = best_by(|p| p.probe_pick) {
        let h = acts.hook_index(HookPoint::ResidPre(*l))?;
        let s: Vec<f64> = (0..rows.len()).map(|r| baselines::probe_logit(probe, keep, acts.row(r, h))).collect();
        probe_evals = ctx.latent_eval(Direction::Known, 0, *l, 0, &s).evals;
        probe_layer = Some(*l);
        probe_scores = Some(s.clone());
        let mut weights = vec![0f32; acts.d];
        let mut center = vec![0f32; acts.d];
        let mut scale = vec![1f32; acts.d];
        for (k, &j) in keep.iter().enumerate() {
            weights[j] = probe.weights[k];
            center[j] = probe.mean[k];
            scale[j] = probe.scale[k];
        }
        let raw: Vec<f32> = weights.iter().zip(&scale).map(|(w, s)| w / s).collect();
        exported.push(ctx.linear_detector(
            DetectorKind::Probe,
            &format!("probe_L{l}"),
            *l,
            weights,
            center,
            scale,
            probe.bias,
            raw,
            &s,
        ));
    }
    if let Some(FittedBaseline { layer: l, dom, .. }) = best_by(|p| p.dom_pick) {
        let h = acts.hook_index(HookPoint::ResidPre(*l))?;
        let s: Vec<f64> = (0..rows.len()).map(|r| dom.score(acts.row(r, h))).collect();
        exported.push(ctx.linear_detector(
            DetectorKind::DiffOfMeans,
            &format!("diff_of_means_L{l}"),
            *l,
            dom.direction.clone(),
            dom.center.clone(),
            Vec::new(),
            0.0,
            dom.direction.clone(),
            &s,
        ));
    }

    // The latent each detection claim rests on: chosen on validation, tested once on test.
    let mut selected = Vec::new();
    let mut controls = Vec::new();
    for dir in Direction::ALL {
        let candidates: Vec<select::Candidate> = candidate_scores
            .iter()
            .filter(|c| c.0 == dir)
            .map(|(_, l, j, rank, v)| select::Candidate {
                layer: *l,
                latent: *j,
                train_rank: *rank,
                validation: select::stratified_on(&rows, &validation, dir, v, select::MIN_TYPE_VALIDATION),
            })
            .collect();
        let Some(best) = select::choose(&candidates).cloned() else { continue };
        let Some((l, sae)) = sae_layers.iter().find(|(l, _)| *l == best.layer) else { continue };
        let ls = layer_scores.iter().find(|s| s.layer == *l).context("layer scores of the selected latent")?;
        let h = acts.hook_index(sae.hook)?;
        let f = encode_rows(sae, &acts, h, &(0..rows.len()).collect::<Vec<_>>())?;
        let d_sae = sae.d_sae();
        let column = |j: usize| -> Vec<f64> { (0..rows.len()).map(|r| f[r * d_sae + j] as f64).collect() };
        let exclude: Vec<usize> = candidates.iter().filter(|c| c.layer == *l).map(|c| c.latent).collect();
        let random_latents =
            baselines::same_frequency_latents(&ls.entity_freq, ls.entity_freq[best.latent], &exclude, opts.n_random);
        let random_tests: Vec<select::ScoreTest> = random_latents
            .iter()
            .map(|&j| select::score_test(&rows, &test, dir, &column(j), opts.reps, opts.seed))
            .collect();
        let list = if dir == Direction::Known { &ranked_known } else { &ranked_unknown };
        let ranked =
            list.iter().find(|r| r.layer == *l && r.latent == best.latent).context("the selected latent's ranking")?;
        let det = ctx.latent_detector(sae, &acts, h, dir, ranked)?;
        let detector = det.name.clone();
        if !exported.iter().any(|d| d.name == det.name) {
            exported.push(det);
        }
        let decoders: Vec<Vec<f32>> =
            random_latents.iter().map(|&j| Ok(sae.w_dec().get(j)?.to_vec1::<f32>()?)).collect::<Result<_>>()?;
        controls.push(detectors::ControlLatents { of: detector.clone(), latents: random_latents.clone(), decoders });
        let probe_test = probe_scores.as_ref().map(|s| {
            let signed: Vec<f64> = s.iter().map(|x| if dir == Direction::Known { *x } else { -x }).collect();
            select::score_test(&rows, &test, dir, &signed, opts.reps, opts.seed)
        });
        selected.push(select::Selected {
            direction: dir,
            layer: *l,
            latent: best.latent,
            train_rank: best.train_rank,
            detector,
            rule: select::RULE.to_string(),
            test: select::score_test(&rows, &test, dir, &column(best.latent), opts.reps, opts.seed),
            candidates,
            random_latents,
            random_tests,
            probe_test,
        });
    }

    // Popularity and name token count alone.
    let confound_baseline = confound_baseline(&ctx, opts)?;
    seconds.insert("baselines".into(), t4.elapsed().as_secs_f64());
    // Dashboards of the exported latents on corpus text: a latent that detects "known entity"
    // should show it in its top contexts and promoted tokens, not only in the scores.
    let t5 = Instant::now();
    if let (Some(c), true) = (inp.corpus, opts.dashboard_sequences > 0) {
        let seqs: Vec<Vec<u32>> = c
            .documents(Some(opts.seed))
            .filter(|d| d.len() >= 8)
            .take(opts.dashboard_sequences)
            .map(|d| d[..d.len().min(opts.dashboard_tokens.max(8))].to_vec())
            .collect();
        let cfg = crate::sae::dashboard::DashboardConfig { n_examples: 8, ..Default::default() };
        progress.start("latent dashboards", Some(sae_layers.len() as u64));
        for (l, sae) in &sae_layers {
            let picked: Vec<usize> = (0..latent_evals.len())
                .filter(|&i| latent_evals[i].layer == *l && latent_evals[i].rank < opts.export_top)
                .collect();
            if picked.is_empty() || seqs.is_empty() {
                progress.advance(1);
                continue;
            }
            let mut latents: Vec<usize> = picked.iter().map(|&i| latent_evals[i].latent).collect();
            latents.sort_unstable();
            latents.dedup();
            let d = crate::sae::dashboard::collect(
                model,
                sae,
                &seqs,
                &crate::sae::dashboard::LatentSelection::List(latents),
                &cfg,
            )?;
            for i in picked {
                latent_evals[i].dashboard = d.latents.iter().find(|x| x.latent == latent_evals[i].latent).cloned();
            }
            progress.advance(1);
        }
        progress.finish();
    }
    seconds.insert("dashboards".into(), t5.elapsed().as_secs_f64());
    seconds.insert("total".into(), t0.elapsed().as_secs_f64());

    let model_id = ModelId::of(model, &opts.model_name);
    let detectors = (!exported.is_empty()).then(|| {
        let mut f = DetectorFile::new(model_id.clone(), &opts.template, exported);
        f.controls = controls;
        let name = |d: Direction| selected.iter().find(|s| s.direction == d).map(|s| s.detector.clone());
        if let (Some(known), Some(unknown)) = (name(Direction::Known), name(Direction::Unknown)) {
            f.selected = Some(detectors::SelectedDetectors { known, unknown, rule: select::RULE.to_string() });
        }
        f
    });
    Ok(Discovery {
        model: model_id,
        labels: inp.labels.dir.display().to_string(),
        label_mode: inp.labels.mode.map(|m| m.to_string()),
        options: opts.clone(),
        counts: counts(&rows, corpus_acts.as_ref().map(|c| c.n).unwrap_or(0)),
        types_scored: groups.iter().map(|g| g.entity_type).collect(),
        excluded_types,
        layers,
        ranked_known,
        ranked_unknown,
        latent_evals,
        random_baselines,
        confound_baseline,
        probe_evals,
        probe_layer,
        selected,
        scatter,
        notes,
        seconds,
        detectors,
    })
}

/// A layer's fitted baselines on the raw residual, and the validation AUROCs they are picked by
/// (NaN where there is none).
struct FittedBaseline {
    layer: usize,
    probe_pick: f64,
    probe: crate::stats::LogisticProbe,
    /// The residual dimensions the probe reads (`baselines::fit_probe`).
    keep: Vec<usize>,
    dom: Dom,
    dom_pick: f64,
}

fn counts(rows: &[Row], corpus_tokens: usize) -> Counts {
    let mut per_type: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for r in rows {
        let key = match (r.class, r.split) {
            (RowClass::Fabricated, _) => "fabricated".to_string(),
            (c, Some(s)) => format!("{s} {}", if c == RowClass::Known { "known" } else { "unknown" }),
            (_, None) => "no split".to_string(),
        };
        *per_type.entry(r.entity_type.to_string()).or_default().entry(key).or_default() += 1;
    }
    Counts { per_type, corpus_tokens }
}

fn entity_rows(inp: &Inputs, opts: &Options, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let tok = &inp.model.tokenizer;
    let (mk, mu) = inp.labels.matched();
    let matched: std::collections::HashSet<&str> = mk.iter().chain(&mu).map(|e| e.id()).collect();
    let name_tokens = |t: EntityType, name: &str| -> Result<usize> {
        let p = detectors::prompt(&opts.template, t.as_str(), name);
        Ok(tok.span_positions(&p, name, true, false).with_context(|| format!("entity {name:?}: prompt {p:?}"))?.len())
    };
    let real: HashMap<&str, &Entity> = inp.entities.iter().map(|e| (e.id.as_str(), e)).collect();
    let stratum = |t: EntityType, id: &str| -> Option<String> {
        let attr = t.matching_attribute()?;
        real.get(id)?.attributes.get(attr)?.first().map(|v| v.trim().to_string())
    };
    let mut unmatched: BTreeMap<EntityType, usize> = BTreeMap::new();
    let mut rows = Vec::new();
    for e in &inp.labels.entities {
        let class = match e.class() {
            Class::Known => RowClass::Known,
            Class::Unknown => RowClass::Unknown,
            Class::Dropped => continue,
        };
        if e.split.is_none() {
            continue;
        }
        rows.push(Row {
            id: e.id().to_string(),
            entity_type: e.entity_type(),
            name: e.name().to_string(),
            class,
            split: e.split,
            popularity_rank: e.popularity_rank(),
            name_tokens: name_tokens(e.entity_type(), e.name())?,
            matched: matched.contains(e.id()),
            stratum: stratum(e.entity_type(), e.id()),
        });
        if e.entity_type().matching_attribute().is_some() && rows.last().is_some_and(|r| r.stratum.is_none()) {
            *unmatched.entry(e.entity_type()).or_default() += 1;
        }
    }
    for (t, n) in unmatched {
        notes.push(format!(
            "{n} {t} entities have no {} in the entity dataset{}: held-out tests leave them out",
            t.matching_attribute().unwrap_or_default(),
            if inp.entities.is_empty() { " (none given)" } else { "" }
        ));
    }
    let wanted = inp.labels.fabricated_ids();
    if !wanted.is_empty() {
        let by_id: HashMap<&str, &Entity> = inp.fabricated.iter().map(|e| (e.id.as_str(), e)).collect();
        let mut missing = 0;
        for id in wanted {
            match by_id.get(id.as_str()) {
                Some(e) => rows.push(Row {
                    id: e.id.clone(),
                    entity_type: e.entity_type,
                    name: e.name.clone(),
                    class: RowClass::Fabricated,
                    split: None,
                    popularity_rank: None,
                    name_tokens: name_tokens(e.entity_type, &e.name)?,
                    matched: true,
                    stratum: None,
                }),
                None => missing += 1,
            }
        }
        if missing > 0 {
            notes.push(format!(
                "{missing} of the {} fabricated names in the controls were not found in the fabricated entity file{}",
                wanted.len(),
                if inp.fabricated.is_empty() { " (none given)" } else { "" }
            ));
        }
    }
    Ok(rows)
}

/// Encodes rows of one hook with an SAE, in blocks of 1,024: [rows, d_sae] back to back.
fn encode_rows(sae: &Sae, acts: &Activations, h: usize, rows: &[usize]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(rows.len() * sae.d_sae());
    for block in rows.chunks(1024) {
        let x = Tensor::from_vec(acts.matrix(h, block), (block.len(), acts.d), &Device::Cpu)?;
        let f = sae.encode(&x)?;
        out.extend(f.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

struct EvalContext<'a> {
    rows: &'a [Row],
    train: &'a [usize],
    test: &'a [usize],
    fabricated: &'a [usize],
    opts: &'a Options,
}

impl EvalContext<'_> {
    /// Positive / negative scores of `subset` rows for a detector of `dir` (real entities only).
    fn pos_neg(&self, dir: Direction, subset: &[usize], scores: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (mut k, mut u) = (Vec::new(), Vec::new());
        for &i in subset {
            match self.rows[i].class {
                RowClass::Known => k.push(scores[i]),
                RowClass::Unknown => u.push(scores[i]),
                RowClass::Fabricated => {}
            }
        }
        match dir {
            Direction::Known => (k, u),
            Direction::Unknown => (u, k),
        }
    }

    fn pooled_test(&self, dir: Direction, scores: &[f64]) -> Option<Estimate> {
        let (p, n) = self.pos_neg(dir, self.test, scores);
        crate::stats::auroc_ci(&p, &n, self.opts.reps, self.opts.seed)
    }

    fn auroc_on(&self, subset: &[usize], scores: &[f64]) -> Option<f64> {
        let (p, n) = self.pos_neg(Direction::Known, subset, scores);
        crate::stats::auroc(&p, &n)
    }

    fn threshold(&self, dir: Direction, scores: &[f64]) -> f64 {
        let (p, n) = self.pos_neg(dir, self.train, scores);
        heldout::train_threshold(&p, &n)
    }

    /// Every held-out test of one score: test pooled and per type, matched controls, popularity
    /// bands, and known vs real unknown vs fabricated.
    fn latent_eval(&self, dir: Direction, rank: usize, layer: usize, latent: usize, scores: &[f64]) -> LatentEval {
        let o = self.opts;
        let thr = self.threshold(dir, scores);
        let ev = |name: &str, t: Option<EntityType>, subset: &[usize]| {
            let (p, n) = self.pos_neg(dir, subset, scores);
            heldout::evaluate(name, t, &p, &n, thr, o.reps, o.seed)
        };
        let mut evals = vec![ev("test", None, self.test)];
        for t in EntityType::ALL {
            let sub: Vec<usize> = self.test.iter().copied().filter(|&i| self.rows[i].entity_type == t).collect();
            if !sub.is_empty() {
                evals.push(ev("test", Some(t), &sub));
            }
        }
        let matched: Vec<usize> = self.test.iter().copied().filter(|&i| self.rows[i].matched).collect();
        evals.push(ev("matched controls (test)", None, &matched));
        for b in 0..o.bands.max(1) {
            let sub = self.band(b);
            evals.push(ev(&format!("popularity band {}/{} (test)", b + 1, o.bands.max(1)), None, &sub));
        }
        // Real-obscure vs fabricated: the known test rows against each kind of "unknown".
        let known: Vec<f64> =
            self.test.iter().filter(|&&i| self.rows[i].class == RowClass::Known).map(|&i| scores[i]).collect();
        let fab: Vec<f64> = self.fabricated.iter().map(|&i| scores[i]).collect();
        let (p, n) = match dir {
            Direction::Known => (known, fab),
            Direction::Unknown => (fab, known),
        };
        evals.push(heldout::evaluate("known (test) vs fabricated names", None, &p, &n, thr, o.reps, o.seed));
        let mut test_sorted: Vec<(f32, usize)> = self.test.iter().map(|&i| (scores[i] as f32, i)).collect();
        test_sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let entry = |&(v, i): &(f32, usize)| (self.rows[i].id.clone(), self.rows[i].name.clone(), v);
        LatentEval {
            direction: dir,
            rank,
            layer,
            latent,
            threshold: thr,
            evals,
            top_entities: test_sorted.iter().take(5).map(entry).collect(),
            bottom_entities: test_sorted.iter().rev().take(5).map(entry).collect(),
            dashboard: None,
        }
    }

    /// Test rows in popularity band b: within each type, rows with a popularity rank are cut
    /// into `bands` equal groups by rank (band 0 = most popular).
    fn band(&self, b: usize) -> Vec<usize> {
        let bands = self.opts.bands.max(1);
        let mut out = Vec::new();
        for t in EntityType::ALL {
            let mut sub: Vec<(u64, usize)> = self
                .test
                .iter()
                .filter(|&&i| self.rows[i].entity_type == t)
                .filter_map(|&i| self.rows[i].popularity_rank.map(|r| (r, i)))
                .collect();
            sub.sort();
            let n = sub.len();
            out.extend(sub.iter().enumerate().filter(|(k, _)| k * bands / n.max(1) == b).map(|(_, x)| x.1));
        }
        out.sort();
        out
    }

    fn latent_detector(&self, sae: &Sae, acts: &Activations, h: usize, dir: Direction, r: &Ranked) -> Result<Detector> {
        let j = r.latent;
        let weights: Vec<f32> = sae.w_enc().narrow(1, j, 1)?.flatten_all()?.to_vec1()?;
        let bias: f32 = sae.b_enc().get(j)?.to_scalar()?;
        let center: Vec<f32> = if sae.apply_b_dec_to_input() { sae.b_dec().to_vec1()? } else { Vec::new() };
        let decoder: Vec<f32> = sae.w_dec().get(j)?.to_vec1()?;
        let activation_threshold = match sae.arch() {
            crate::sae::Architecture::Standard => Some(0.0),
            crate::sae::Architecture::JumpRelu { threshold } => Some(threshold.get(j)?.to_scalar::<f32>()?),
            crate::sae::Architecture::TopK { .. } => None,
        };
        let mut d = Detector {
            name: format!("{}_L{}_{}", dir.as_str(), r.layer, j),
            kind: DetectorKind::SaeLatent,
            detects: dir,
            layer: r.layer,
            hook: sae.hook.to_string(),
            sae: Some(sae.source.display().to_string()),
            latent: Some(j),
            sae_arch: Some(sae.arch().name().to_string()),
            activation_threshold,
            center,
            scale: Vec::new(),
            weights,
            bias,
            threshold: 0.0,
            decoder,
            test_auroc: None,
        };
        let s: Vec<f64> = (0..self.rows.len()).map(|i| d.score(acts.row(i, h))).collect();
        d.threshold = self.threshold(dir, &s) as f32;
        d.test_auroc = self.pooled_test(dir, &s).map(rounded);
        Ok(d)
    }

    #[allow(clippy::too_many_arguments)]
    fn linear_detector(
        &self,
        kind: DetectorKind,
        name: &str,
        layer: usize,
        weights: Vec<f32>,
        center: Vec<f32>,
        scale: Vec<f32>,
        bias: f32,
        decoder: Vec<f32>,
        scores: &[f64],
    ) -> Detector {
        Detector {
            name: name.to_string(),
            kind,
            detects: Direction::Known,
            layer,
            hook: HookPoint::ResidPre(layer).to_string(),
            sae: None,
            latent: None,
            sae_arch: None,
            activation_threshold: None,
            center,
            scale,
            weights,
            bias,
            threshold: self.threshold(Direction::Known, scores) as f32,
            decoder,
            test_auroc: self.pooled_test(Direction::Known, scores).map(rounded),
        }
    }
}

/// An interval to 6 decimals, so that it reads back from JSON bit for bit.
fn rounded(e: Estimate) -> [f64; 3] {
    [e.value, e.lo, e.hi].map(|v| (v * 1e6).round() / 1e6)
}

/// A probe on popularity rank and name token count (and type), fitted on train, tested on test.
fn confound_baseline(ctx: &EvalContext, opts: &Options) -> Result<Vec<Eval>> {
    let real = |s: &[usize]| -> Vec<usize> {
        s.iter().copied().filter(|&i| ctx.rows[i].class != RowClass::Fabricated).collect()
    };
    let n_types = EntityType::ALL.len();
    let feats = |i: usize| {
        let r = &ctx.rows[i];
        let ti = EntityType::ALL.iter().position(|t| *t == r.entity_type).unwrap_or(0);
        baselines::confound_features(r.popularity_rank, r.name_tokens, ti, n_types)
    };
    let d = 3 + n_types;
    let fit = real(ctx.train);
    let x: Vec<f32> = fit.iter().flat_map(|&i| feats(i)).collect();
    let y: Vec<bool> = fit.iter().map(|&i| ctx.rows[i].class == RowClass::Known).collect();
    let (probe, keep) = baselines::fit_probe(&x, d, &y, opts.l2).context("popularity / name-length baseline")?;
    let scores: Vec<f64> = (0..ctx.rows.len()).map(|i| baselines::probe_logit(&probe, &keep, &feats(i))).collect();
    let mut evals = ctx.latent_eval(Direction::Known, 0, 0, 0, &scores).evals;
    // Fabricated names have no popularity rank by construction: that comparison says nothing.
    evals.retain(|e| !e.subset.contains("fabricated"));
    Ok(evals)
}
