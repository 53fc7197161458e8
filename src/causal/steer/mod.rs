//! The refusal-steering experiment (paper §4, Fig. 3): ask a model about entities and classify
//! each completion as correct, wrong, refusal or broken (`causal::outcome`), as it is and while
//! its residual stream is pushed along an entity-recognition direction at the prompt's positions
//! from the entity's last token to the end (the paper's `entity_last_to_end`; never at generated
//! tokens, the paper's convention).
//!
//! Known entities are steered with the unknown direction (does refusal rise?), unknown entities
//! with the known direction (does the model answer, i.e. hallucinate, where it declined?).
//!
//! The design is the verdict's (`claims`), in two phases so that nothing is chosen on the
//! prompts a verdict is computed on:
//! 1. **Selection, validation entities.** The original model, the detector's direction at every
//!    strength, and a few Gaussian directions at every strength (to see where random pushes
//!    start to break the output). The strength is the one whose effect most exceeds the
//!    Gaussian directions' among those where neither breaks more than `verdict::MAX_BROKEN` of
//!    the output. The completions the model refused and answered here give the positive
//!    control: the model's own refusal direction (difference of the residual means over refused
//!    and answered completions).
//! 2. **Test entities, one strength.** The original model; the detector's direction; the
//!    opposite class's direction; the refusal direction; random SAE latents of the detector's
//!    firing frequency (the paper's control, when the detector file carries them); Gaussian
//!    directions. Every direction is pushed at the same magnitude (a multiple of the mean
//!    residual norm), so a latent's decoder norm cannot matter, and each is run on every test
//!    question: the unit of the verdict is the direction.
//!
//! The orthogonalized model (the unknown direction projected out of its weights) can be
//! measured beside them on the test entities, with its own null (each control direction of the
//! unknown class projected out instead) and positive control (the refusal direction projected
//! out), and the "are you sure you know" logit difference (`yesno`) for every direction of
//! phase 2.

pub mod claims;

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::Serialize;

use super::direction::{mean_resid_norm, SteeringDirection};
use super::items::{prompt_text, Item, PromptStyle};
use super::outcome::{classify, Outcome};
use super::refusal::RefusalRule;
use super::yesno::{self, YesNoOutput};
use crate::entities::label_set::Split;
use crate::hooks::{HookPoint, HookSpec, Positions};
use crate::model::generate::{generate, GenerateOptions, Generation};
use crate::progress::Progress;
use crate::verdict::MAX_BROKEN;
use crate::Model;

/// Which prompt positions are steered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Steered {
    /// The entity's last token through the end of the prompt (the paper's refusal setting).
    EntityLastToEnd,
    /// The entity's last token only (the paper's "are you sure" and attention settings).
    EntityLast,
}

crate::names::named_enum!(Steered, "steered positions", EntityLastToEnd => "entity_last_to_end", EntityLast => "entity_last");

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Strengths tried on validation, in multiples of the mean residual norm at the steered
    /// layer and positions; the verdict uses the one chosen there.
    pub coefs: Vec<f64>,
    /// Gaussian control directions on the test entities.
    pub n_gaussian: usize,
    /// Gaussian directions run beside the detector at every strength on validation.
    pub n_select_controls: usize,
    pub max_tokens: usize,
    pub batch: usize,
    pub positions: Steered,
    pub rule: RefusalRule,
    /// Chat template, or the few-shot preamble of a base model.
    pub prompt: PromptStyle,
    /// Also measure the yes/no logit difference for every test direction.
    pub yes_no: bool,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            coefs: vec![0.5, 1.0, 2.0],
            n_gaussian: 20,
            n_select_controls: 2,
            max_tokens: 30,
            batch: 32,
            positions: Steered::EntityLastToEnd,
            rule: RefusalRule::Fixed,
            prompt: PromptStyle::Chat,
            yes_no: true,
            seed: 0,
        }
    }
}

impl Options {
    pub fn check(&self) -> Result<()> {
        if self.coefs.is_empty() || self.coefs.iter().any(|c| !c.is_finite()) {
            bail!("steering needs at least one finite strength, got {:?}", self.coefs);
        }
        if self.batch == 0 || self.max_tokens == 0 {
            bail!("batch and max_tokens must be at least 1");
        }
        Ok(())
    }
}

/// What a condition's direction is, relative to the claim it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Original,
    /// The detector's direction of the class opposite to the items' (the claim's direction).
    Detector,
    /// The items' own class's direction (specificity: it should not do the same).
    Opposite,
    /// The model's own refusal direction: + for known items, − for unknown ones.
    RefusalDirection,
    /// The unembedding's No − Yes direction (+ for known, − for unknown): the yes/no claims'
    /// positive control; measured on the yes/no question only, never generated.
    LogitDirection,
    /// A random SAE latent of the detector's firing frequency (the paper's control).
    RandomLatent,
    /// A seeded Gaussian direction.
    Gaussian,
    /// The model with the unknown direction projected out of its weights.
    Orthogonalized,
    /// The model with a control direction (a random SAE latent or a Gaussian direction of the
    /// unknown detector's layer) projected out: the orthogonalization's null.
    OrthogonalizedControl,
    /// The model with its own refusal direction projected out: the orthogonalization's positive
    /// control (unknown items only).
    OrthogonalizedRefusal,
}

impl Role {
    pub fn is_control(self) -> bool {
        matches!(self, Role::RandomLatent | Role::Gaussian)
    }

    /// Measured on a copy of the model with the direction projected out of its weights, not by
    /// steering.
    pub fn is_weight_edit(self) -> bool {
        matches!(self, Role::Orthogonalized | Role::OrthogonalizedControl | Role::OrthogonalizedRefusal)
    }
}

/// One condition: a direction (or none) at one strength on one class's items of one split.
#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    pub role: Role,
    /// The direction's name ("original" without one).
    pub name: String,
    pub known: bool,
    pub split: Split,
    pub coef: f64,
    /// `coef` × the mean residual norm at the direction's layer.
    pub magnitude: f64,
}

impl Condition {
    pub fn label(&self) -> String {
        match self.role {
            Role::Original => "original".into(),
            Role::Orthogonalized | Role::OrthogonalizedControl | Role::OrthogonalizedRefusal => {
                format!("orthogonalized ({})", self.name)
            }
            _ => format!("{} ×{}", self.name, self.coef),
        }
    }
}

/// One completion under one condition.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub item: usize,
    pub condition: usize,
    pub text: String,
    pub outcome: Outcome,
}

/// Outcome counts of one condition on one type (or all types: `None`).
#[derive(Debug, Clone, Serialize)]
pub struct Tally {
    pub condition: usize,
    pub entity_type: Option<String>,
    pub n: usize,
    pub correct: usize,
    pub wrong: usize,
    pub refusal: usize,
    pub broken: usize,
}

impl Tally {
    pub fn rate(&self, k: usize) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            k as f64 / self.n as f64
        }
    }
}

/// The strength chosen for one class on validation, and every candidate's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StrengthChoice {
    pub known: bool,
    pub n_validation: usize,
    /// None when no validation entity of the class was asked.
    pub coef: Option<f64>,
    /// Per strength: (coef, detector effect, Gaussian mean effect, detector broken, Gaussian broken).
    pub candidates: Vec<[f64; 5]>,
    pub rule: String,
}

/// Everything the experiment measured.
#[derive(Debug, Clone, Serialize)]
pub struct SteerOutput {
    pub options: Options,
    pub known_direction: SteeringDirection,
    pub unknown_direction: SteeringDirection,
    /// Built from the validation completions; None when too few were refused or answered.
    pub refusal_direction: Option<SteeringDirection>,
    pub refusal_direction_note: String,
    /// Mean residual norm at each steered layer, over the steered positions of every item.
    pub mean_norms: Vec<(usize, f64)>,
    pub cosine_known_unknown: f64,
    pub items: Vec<Item>,
    pub conditions: Vec<Condition>,
    pub answers: Vec<Answer>,
    pub tallies: Vec<Tally>,
    pub strengths: Vec<StrengthChoice>,
    pub yes_no: Option<YesNoOutput>,
}

/// The directions a run steers with.
pub struct Directions {
    pub known: SteeringDirection,
    pub unknown: SteeringDirection,
    /// Random SAE latents of the known / unknown detector's firing frequency (may be empty).
    pub known_controls: Vec<SteeringDirection>,
    pub unknown_controls: Vec<SteeringDirection>,
}

/// Fewer refused (or answered) validation completions than this and no refusal direction is
/// built: a mean over two completions is noise.
pub const MIN_REFUSAL_EXAMPLES: usize = 3;

/// Per-item value of a completion for a class's claim: refusals for known items (the unknown
/// direction should raise them), answers of the asked kind for unknown ones (the known direction
/// should make the model answer where it declined).
pub fn metric(known: bool, o: Outcome) -> f64 {
    let hit = if known { o == Outcome::Refusal } else { o.answered() };
    hit as u8 as f64
}

/// Runs both phases. `orthogonalize`: also measure the test items on copies of the model with
/// the unknown direction projected out of its weights (both classes), and, for unknown items,
/// with each control direction and the refusal direction projected out instead.
pub fn run(
    model: &Model,
    orthogonalize: bool,
    items: Vec<Item>,
    dirs: &Directions,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<SteerOutput> {
    opts.check()?;
    let d_model = model.cfg().d_model;
    let texts: Vec<String> =
        items.iter().map(|it| prompt_text(model, opts.prompt, &it.question, "")).collect::<Result<_>>()?;
    let mut mean_norms = Vec::new();
    for layer in [dirs.known.layer, dirs.unknown.layer] {
        if !mean_norms.iter().any(|&(l, _)| l == layer) {
            mean_norms.push((layer, steered_norm(model, &items, &texts, layer, opts)?));
        }
    }
    let norm_at = |l: usize| mean_norms.iter().find(|&&(x, _)| x == l).map_or(0.0, |&(_, n)| n);
    let rows_of = |known: bool, split: Split| -> Vec<usize> {
        (0..items.len()).filter(|&i| items[i].known == known && items[i].split == split).collect()
    };
    let push_dir = |known: bool| if known { &dirs.unknown } else { &dirs.known };
    let mut run = Runner { items: &items, texts: &texts, opts, answers: Vec::new(), gens: Vec::new() };

    // Phase 1: validation.
    let mut conditions: Vec<Condition> = Vec::new();
    let mut directions: Vec<Option<SteeringDirection>> = Vec::new();
    for known in [true, false] {
        let d = push_dir(known);
        let add = |c: &mut Vec<Condition>,
                   v: &mut Vec<Option<SteeringDirection>>,
                   role,
                   dir: Option<SteeringDirection>,
                   coef: f64| {
            let name = dir.as_ref().map_or("original".to_string(), |d| d.name.clone());
            let magnitude = dir.as_ref().map_or(0.0, |d| coef * norm_at(d.layer));
            c.push(Condition { role, name, known, split: Split::Validation, coef, magnitude });
            v.push(dir);
        };
        add(&mut conditions, &mut directions, Role::Original, None, 0.0);
        for &coef in &opts.coefs {
            add(&mut conditions, &mut directions, Role::Detector, Some(d.clone()), coef);
            for i in 0..opts.n_select_controls {
                let g = gaussian(d.layer, d_model, opts.seed, 1000 + i as u64, "validation")?;
                add(&mut conditions, &mut directions, Role::Gaussian, Some(g), coef);
            }
        }
    }
    let total: usize = conditions.iter().map(|c| rows_of(c.known, c.split).len()).sum();
    progress.start("steering: validation (choosing the strength)", Some(total as u64));
    let rows_for = |c: &Condition| rows_of(c.known, c.split);
    let all: Vec<(usize, &Condition, Option<&SteeringDirection>)> =
        (0..conditions.len()).map(|ci| (ci, &conditions[ci], directions[ci].as_ref())).collect();
    run.conditions(model, &all, &rows_for, progress)?;
    progress.finish();
    let strengths: Vec<StrengthChoice> = [true, false]
        .into_iter()
        .map(|known| choose_strength(known, &conditions, &run.answers, rows_of(known, Split::Validation).len(), opts))
        .collect();

    // The positive control: the model's refusal direction from the validation completions.
    let (refusal_direction, refusal_direction_note) = refusal_direction(model, &run, &conditions, dirs)?;

    // Phase 2: test, one strength per class.
    let first_test = conditions.len();
    for known in [true, false] {
        let Some(coef) = strengths.iter().find(|s| s.known == known).and_then(|s| s.coef) else { continue };
        let d = push_dir(known);
        let own = if known { &dirs.known } else { &dirs.unknown };
        let mut add = |role, dir: Option<SteeringDirection>| {
            let name = dir.as_ref().map_or("original".to_string(), |d| d.name.clone());
            let magnitude = dir.as_ref().map_or(0.0, |d| coef * norm_at(d.layer));
            let coef = if dir.is_some() { coef } else { 0.0 };
            conditions.push(Condition { role, name, known, split: Split::Test, coef, magnitude });
            directions.push(dir);
        };
        add(Role::Original, None);
        add(Role::Detector, Some(d.clone()));
        add(Role::Opposite, Some(at_layer(own, d.layer)));
        if let Some(r) = &refusal_direction {
            add(Role::RefusalDirection, Some(if known { r.clone() } else { negated(r) }));
        }
        if opts.yes_no {
            if let Some(l) = yesno::logit_direction(model, d.layer)? {
                add(Role::LogitDirection, Some(if known { l } else { negated(&l) }));
            }
        }
        for c in if known { &dirs.unknown_controls } else { &dirs.known_controls } {
            add(Role::RandomLatent, Some(c.clone()));
        }
        for i in 0..opts.n_gaussian {
            add(Role::Gaussian, Some(gaussian(d.layer, d_model, opts.seed, i as u64, "test")?));
        }
        if orthogonalize {
            let mut add_orth = |role, d: Option<SteeringDirection>| {
                let name = d.as_ref().map_or_else(|| dirs.unknown.name.clone(), |d| d.name.clone());
                conditions.push(Condition { role, name, known, split: Split::Test, coef: 0.0, magnitude: 0.0 });
                directions.push(d);
            };
            add_orth(Role::Orthogonalized, Some(dirs.unknown.clone()));
        }
    }
    let generated = |c: &Condition| c.role != Role::LogitDirection;
    let total: usize = conditions[first_test..]
        .iter()
        .filter(|c| generated(c) && !c.role.is_weight_edit())
        .map(|c| rows_of(c.known, c.split).len())
        .sum();
    progress.start("steering: test (the verdict's conditions)", Some(total as u64));
    let on_model: Vec<(usize, &Condition, Option<&SteeringDirection>)> = (first_test..conditions.len())
        .filter(|&ci| generated(&conditions[ci]) && !conditions[ci].role.is_weight_edit())
        .map(|ci| (ci, &conditions[ci], directions[ci].as_ref()))
        .collect();
    run.conditions(model, &on_model, &rows_for, progress)?;
    // The orthogonalization's null (the unknown class's own controls, those the known items are
    // steered with, each projected out in the detector's place) and positive control (the
    // refusal direction projected out), on unknown items; only where the original model
    // refuses enough of them for the claim to be testable (`claims::MIN_REFUSAL_TO_LOWER`).
    if orthogonalize && original_refusal_rate(&conditions, &run.answers, first_test) >= claims::MIN_REFUSAL_TO_LOWER {
        let mut add_orth = |role, d: SteeringDirection| {
            conditions.push(Condition {
                role,
                name: d.name.clone(),
                known: false,
                split: Split::Test,
                coef: 0.0,
                magnitude: 0.0,
            });
            directions.push(Some(d));
        };
        for c in &dirs.unknown_controls {
            add_orth(Role::OrthogonalizedControl, c.clone());
        }
        for i in 0..opts.n_gaussian {
            add_orth(Role::OrthogonalizedControl, gaussian(dirs.unknown.layer, d_model, opts.seed, i as u64, "test")?);
        }
        if let Some(r) = &refusal_direction {
            add_orth(Role::OrthogonalizedRefusal, r.clone());
        }
    }
    progress.finish();
    // One weight edit at a time: a copy shares every weight the edit leaves alone.
    let edits: Vec<usize> = (first_test..conditions.len()).filter(|&ci| conditions[ci].role.is_weight_edit()).collect();
    let edit_rows: usize = edits.iter().map(|&ci| rows_for(&conditions[ci]).len()).sum();
    progress.start("steering: orthogonalized models", Some(edit_rows as u64));
    for ci in edits {
        let Some(d) = directions[ci].as_ref() else { continue };
        let mut edited = model.clone();
        let t = candle_core::Tensor::from_vec(d.unit.clone(), d.unit.len(), model.transformer.device())?;
        edited.transformer.orthogonalize(&t, crate::model::Orthogonalization::NormAware)?;
        run.conditions(&edited, &[(ci, &conditions[ci], None)], &rows_for, progress)?;
    }
    progress.finish();

    let yes_no = if opts.yes_no {
        let picked: Vec<(usize, &SteeringDirection)> = (first_test..conditions.len())
            .filter(|&ci| !conditions[ci].role.is_weight_edit())
            .filter_map(|ci| directions[ci].as_ref().map(|d| (ci, d)))
            .collect();
        Some(yesno::run(model, &items, &conditions, &picked, opts.prompt, opts.batch, opts.seed, progress)?)
    } else {
        None
    };
    let tallies = tallies(&items, &run.answers);
    Ok(SteerOutput {
        options: opts.clone(),
        cosine_known_unknown: dirs.known.cosine(&dirs.unknown),
        known_direction: dirs.known.clone(),
        unknown_direction: dirs.unknown.clone(),
        refusal_direction,
        refusal_direction_note,
        mean_norms,
        items: items.clone(),
        conditions,
        answers: run.answers,
        tallies,
        strengths,
        yes_no,
    })
}

/// The original model's refusal rate on the unknown test items (0 when it was not run).
fn original_refusal_rate(conditions: &[Condition], answers: &[Answer], first_test: usize) -> f64 {
    let Some(orig) = (first_test..conditions.len()).find(|&ci| {
        conditions[ci].role == Role::Original && !conditions[ci].known && conditions[ci].split == Split::Test
    }) else {
        return 0.0;
    };
    let of: Vec<&Answer> = answers.iter().filter(|a| a.condition == orig).collect();
    if of.is_empty() {
        return 0.0;
    }
    of.iter().filter(|a| a.outcome == Outcome::Refusal).count() as f64 / of.len() as f64
}

/// Generation for one condition at a time, keeping every completion.
struct Runner<'a> {
    items: &'a [Item],
    texts: &'a [String],
    opts: &'a Options,
    answers: Vec<Answer>,
    /// (condition, item, prompt ids, generated ids) of the validation completions, for the
    /// refusal direction.
    gens: Vec<(usize, usize, Vec<u32>, Vec<u32>)>,
}

impl Runner<'_> {
    /// Generates every (condition, item) pair of `conds` on `model`, packed into batches of
    /// `opts.batch` rows across conditions (a condition of 20 questions alone would leave most
    /// of a batch empty): each row is pushed along its own condition's direction only, one
    /// edit per direction with positions on its rows. Greedy decoding makes a row's completion
    /// independent of its batch neighbours up to float rounding.
    fn conditions(
        &mut self,
        model: &Model,
        conds: &[(usize, &Condition, Option<&SteeringDirection>)],
        rows_of: &dyn Fn(&Condition) -> Vec<usize>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let gen_opts =
            GenerateOptions { max_tokens: self.opts.max_tokens, stop: self.opts.prompt.stop(), ..Default::default() };
        let pairs: Vec<(usize, usize)> =
            conds.iter().enumerate().flat_map(|(k, (_, c, _))| rows_of(c).into_iter().map(move |i| (k, i))).collect();
        for chunk in pairs.chunks(self.opts.batch) {
            let prompts: Vec<(&str, &str)> =
                chunk.iter().map(|&(_, i)| (self.texts[i].as_str(), self.items[i].name.as_str())).collect();
            let eb = model.entity_batch(&prompts, true)?;
            let Positions::Rows(rows) = (match self.opts.positions {
                Steered::EntityLastToEnd => eb.last_to_end(),
                Steered::EntityLast => eb.last(),
            }) else {
                bail!("steering needs per-row positions");
            };
            let mut spec = HookSpec::new();
            let mut used: Vec<usize> = chunk.iter().map(|p| p.0).collect();
            used.dedup();
            for k in used {
                let (_, cond, dir) = conds[k];
                let Some(d) = dir else { continue };
                let mine: Vec<Vec<i64>> =
                    chunk.iter().zip(&rows).map(|(p, ps)| if p.0 == k { ps.clone() } else { Vec::new() }).collect();
                spec = d.add(spec, Positions::Rows(mine), cond.magnitude, model.transformer.device())?;
            }
            let (gens, _): (Vec<Generation>, _) = generate(model, &eb.batch, &spec, &gen_opts)?;
            for (&(k, i), g) in chunk.iter().zip(gens) {
                let (ci, cond, _) = conds[k];
                let it = &self.items[i];
                let outcome = classify(&g.text, it.kind, &it.gold, &it.name, self.opts.rule);
                if cond.split == Split::Validation {
                    self.gens.push((ci, i, g.prompt_ids.clone(), g.ids.clone()));
                }
                self.answers.push(Answer { item: i, condition: ci, text: g.text, outcome });
            }
            progress.advance(chunk.len() as u64);
        }
        Ok(())
    }
}

fn gaussian(layer: usize, d_model: usize, seed: u64, index: u64, what: &str) -> Result<SteeringDirection> {
    let mut g = SteeringDirection::random(layer, d_model, seed, index)?;
    g.name = format!("gaussian-{what}-{index}@L{layer}");
    Ok(g)
}

fn negated(d: &SteeringDirection) -> SteeringDirection {
    d.negated()
}

/// `d` pushed at `layer` instead of its own (the opposite class's direction at the claim
/// direction's layer, so both push the same residual stream by the same magnitude).
fn at_layer(d: &SteeringDirection, layer: usize) -> SteeringDirection {
    let mut x = d.clone();
    x.layer = layer;
    x
}

/// The mean of `metric` over a condition's answers, with the broken fraction.
fn effect_of(answers: &[Answer], ci: usize, known: bool) -> (f64, f64, usize) {
    let a: Vec<&Answer> = answers.iter().filter(|a| a.condition == ci).collect();
    if a.is_empty() {
        return (f64::NAN, f64::NAN, 0);
    }
    let m = a.iter().map(|a| metric(known, a.outcome)).sum::<f64>() / a.len() as f64;
    let b = a.iter().filter(|a| a.outcome == Outcome::Broken).count() as f64 / a.len() as f64;
    (m, b, a.len())
}

/// The validation rule: among strengths where neither the detector nor the Gaussian
/// directions break more than `MAX_BROKEN` of the output, the one whose effect (change of the
/// class's metric from the original model) most exceeds the Gaussian directions' mean effect;
/// the weakest on ties. With none acceptable, the weakest strength (its verdict will say why).
fn choose_strength(
    known: bool,
    conds: &[Condition],
    answers: &[Answer],
    n_val: usize,
    opts: &Options,
) -> StrengthChoice {
    let rule = format!(
        "validation entities: the strength whose effect most exceeds the mean of {} Gaussian directions, among those where neither breaks more than {:.0}% of completions; the weakest on ties",
        opts.n_select_controls,
        100.0 * MAX_BROKEN
    );
    let idx = |role: Role, coef: f64| -> Vec<usize> {
        (0..conds.len())
            .filter(|&i| {
                let c = &conds[i];
                c.known == known
                    && c.split == Split::Validation
                    && c.role == role
                    && (role == Role::Original || c.coef == coef)
            })
            .collect()
    };
    let Some(&orig) = idx(Role::Original, 0.0).first() else {
        return StrengthChoice { known, n_validation: 0, coef: None, candidates: Vec::new(), rule };
    };
    if n_val == 0 {
        return StrengthChoice { known, n_validation: 0, coef: None, candidates: Vec::new(), rule };
    }
    let base = effect_of(answers, orig, known).0;
    let mut candidates = Vec::new();
    for &coef in &opts.coefs {
        let det =
            idx(Role::Detector, coef).first().map(|&i| effect_of(answers, i, known)).unwrap_or((f64::NAN, f64::NAN, 0));
        let gs: Vec<(f64, f64, usize)> =
            idx(Role::Gaussian, coef).iter().map(|&i| effect_of(answers, i, known)).collect();
        let g_eff = if gs.is_empty() { 0.0 } else { gs.iter().map(|g| g.0).sum::<f64>() / gs.len() as f64 - base };
        let g_broken = if gs.is_empty() { 0.0 } else { gs.iter().map(|g| g.1).sum::<f64>() / gs.len() as f64 };
        candidates.push([coef, det.0 - base, g_eff, det.1, g_broken]);
    }
    let ok: Vec<&[f64; 5]> = candidates.iter().filter(|c| c[3] <= MAX_BROKEN && c[4] <= MAX_BROKEN).collect();
    let coef = ok
        .iter()
        .fold(None::<&[f64; 5]>, |best, c| match best {
            Some(b) if b[1] - b[2] >= c[1] - c[2] || !(c[1] - c[2]).is_finite() => Some(b),
            _ => Some(c),
        })
        .map(|c| c[0])
        .or_else(|| opts.coefs.iter().copied().reduce(f64::min));
    StrengthChoice { known, n_validation: n_val, coef, candidates, rule }
}

/// The difference of the residual means (at each steered layer) over validation completions
/// the model refused and those it answered, each completion run unsteered through the model with
/// its prompt and averaged over the completion's own tokens.
fn refusal_direction(
    model: &Model,
    run: &Runner,
    conds: &[Condition],
    dirs: &Directions,
) -> Result<(Option<SteeringDirection>, String)> {
    let mut refused = Vec::new();
    let mut answered = Vec::new();
    for (ci, item, prompt, ids) in &run.gens {
        if ids.is_empty() || conds[*ci].split != Split::Validation {
            continue;
        }
        let Some(a) = run.answers.iter().find(|a| a.condition == *ci && a.item == *item) else { continue };
        match a.outcome {
            Outcome::Refusal => refused.push((prompt, ids)),
            o if o.answered() => answered.push((prompt, ids)),
            _ => {}
        }
    }
    if refused.len() < MIN_REFUSAL_EXAMPLES || answered.len() < MIN_REFUSAL_EXAMPLES {
        return Ok((
            None,
            format!(
                "{} refused and {} answered validation completions (at least {MIN_REFUSAL_EXAMPLES} of each needed)",
                refused.len(),
                answered.len()
            ),
        ));
    }
    // Balanced and bounded: at most 64 of each, the first in run order.
    let n = refused.len().min(answered.len()).min(64);
    let layer = dirs.unknown.layer;
    let mean = |set: &[(&Vec<u32>, &Vec<u32>)]| -> Result<Vec<f64>> {
        let mut acc = vec![0f64; model.cfg().d_model];
        for (prompt, ids) in set.iter().take(n) {
            let row: Vec<u32> = prompt.iter().chain(ids.iter()).copied().collect();
            let batch = model.batch_from_ids(&[row])?;
            let hook = HookPoint::ResidPre(layer);
            let out = model.run(&batch, &HookSpec::new().capture([hook]))?;
            let t = out.cache.get(hook)?.to_dtype(candle_core::DType::F32)?.get(0)?;
            let len = batch.len_of(0);
            let part = t.narrow(0, len - ids.len(), ids.len())?.mean(0)?.to_vec1::<f32>()?;
            acc.iter_mut().zip(part).for_each(|(a, p)| *a += p as f64 / n as f64);
        }
        Ok(acc)
    };
    let r = mean(&refused)?;
    let a = mean(&answered)?;
    let raw: Vec<f32> = r.iter().zip(&a).map(|(x, y)| (x - y) as f32).collect();
    let norm = raw.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if !(norm > 0.0 && norm.is_finite()) {
        return Ok((None, "refused and answered completions have the same mean residual".into()));
    }
    let dir = SteeringDirection {
        name: format!("refusal_direction_L{layer}"),
        source: super::direction::Source::DiffOfMeans,
        detects: None,
        layer,
        unit: raw.iter().map(|&x| (x as f64 / norm) as f32).collect(),
    };
    Ok((
        Some(dir),
        format!("difference of means over {n} refused and {n} answered validation completions, layer {layer}"),
    ))
}

/// The mean residual norm at `layer` over the steered positions of every item's prompt.
fn steered_norm(model: &Model, items: &[Item], texts: &[String], layer: usize, opts: &Options) -> Result<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    let idx: Vec<usize> = (0..items.len()).collect();
    for chunk in idx.chunks(opts.batch) {
        let prompts: Vec<(&str, &str)> = chunk.iter().map(|&i| (texts[i].as_str(), items[i].name.as_str())).collect();
        let eb = model.entity_batch(&prompts, true)?;
        let positions: Positions = match opts.positions {
            Steered::EntityLastToEnd => eb.last_to_end(),
            Steered::EntityLast => eb.last(),
        };
        let count: usize = eb.batch.columns(&positions)?.iter().map(|c| c.len()).sum();
        sum += mean_resid_norm(model, &eb, layer, &positions)? * count as f64;
        n += count;
    }
    Ok(sum / n.max(1) as f64)
}

/// Outcome counts per condition, per type and over all types.
pub fn tallies(items: &[Item], answers: &[Answer]) -> Vec<Tally> {
    let mut by: BTreeMap<(usize, Option<String>), Tally> = BTreeMap::new();
    for a in answers {
        let t = items[a.item].entity_type.to_string();
        for key in [(a.condition, Some(t)), (a.condition, None)] {
            let e = by.entry(key.clone()).or_insert(Tally {
                condition: key.0,
                entity_type: key.1.clone(),
                n: 0,
                correct: 0,
                wrong: 0,
                refusal: 0,
                broken: 0,
            });
            e.n += 1;
            match a.outcome {
                Outcome::Correct => e.correct += 1,
                Outcome::Wrong => e.wrong += 1,
                Outcome::Refusal => e.refusal += 1,
                Outcome::Broken => e.broken += 1,
            }
        }
    }
    by.into_values().collect()
}
