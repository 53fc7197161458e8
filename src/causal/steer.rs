//! The refusal-steering experiment (paper §4, Fig. 3): ask a chat model about entities and
//! count how often it refuses, as it is and while its residual stream is pushed along an
//! entity-recognition direction at the prompt's positions from the entity's last token to the
//! end (the paper's `entity_last_to_end`; never at generated tokens, the paper's convention).
//!
//! Known entities are steered with the unknown direction (does refusal rise?), unknown entities
//! with the known direction (does refusal fall, and is what replaces it a correct answer or a
//! hallucination?). The baseline is random directions of the same layer and strength: row i of a
//! condition uses random direction i mod n, so every condition costs one pass over the items
//! while the baseline still spans n directions. An orthogonalized model (the unknown direction
//! projected out of its weights) can be measured beside them.

use anyhow::{bail, Result};
use serde::Serialize;

use super::direction::{mean_resid_norm, SteeringDirection};
use super::items::{prompt_text, Item, PromptStyle};
use super::refusal::{is_refusal, RefusalRule};
use crate::entities::matching::{judge_answer, Outcome};
use crate::hooks::{HookSpec, Positions};
use crate::model::generate::{generate, GenerateOptions};
use crate::progress::Progress;
use crate::stats::{wilson, Estimate};
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
    /// Strengths, in multiples of the mean residual norm at the steered layer and positions.
    pub coefs: Vec<f64>,
    pub n_random: usize,
    pub max_tokens: usize,
    pub batch: usize,
    pub positions: Steered,
    pub rule: RefusalRule,
    /// Chat template, or the few-shot preamble of a base model.
    pub prompt: PromptStyle,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            coefs: vec![0.5, 1.0, 2.0],
            n_random: 10,
            max_tokens: 30,
            batch: 32,
            positions: Steered::EntityLastToEnd,
            rule: RefusalRule::Fixed,
            prompt: PromptStyle::Chat,
            seed: 0,
        }
    }
}

impl Options {
    pub fn check(&self) -> Result<()> {
        if self.coefs.iter().any(|c| !c.is_finite()) {
            bail!("steering coefficients must be finite numbers, got {:?}", self.coefs);
        }
        if self.batch == 0 || self.max_tokens == 0 {
            bail!("batch and max_tokens must be at least 1");
        }
        Ok(())
    }
}

/// What a condition does to the model.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Treatment {
    Original,
    /// The named direction at `coef` mean norms (`magnitude` in residual units).
    Direction {
        direction: String,
        coef: f64,
        magnitude: f64,
    },
    /// Random directions at the same layer and strength.
    Random {
        layer: usize,
        coef: f64,
        magnitude: f64,
        n: usize,
    },
    /// The model with a direction projected out of its weights.
    Orthogonalized {
        direction: String,
    },
}

impl Treatment {
    pub fn label(&self) -> String {
        match self {
            Treatment::Original => "original".into(),
            Treatment::Direction { direction, coef, .. } => format!("{direction} ×{coef}"),
            Treatment::Random { coef, .. } => format!("random ×{coef}"),
            Treatment::Orthogonalized { direction } => format!("orthogonalized ({direction})"),
        }
    }
}

/// One completion under one condition.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub item: usize,
    pub condition: usize,
    pub text: String,
    pub refusal: bool,
    pub correct: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    pub treatment: Treatment,
    /// Which items it was run on: the known or the unknown ones.
    pub known: bool,
}

/// Refusal and correct-answer rates of one condition on one type (or all types: `None`).
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub condition: usize,
    pub entity_type: Option<String>,
    pub n: usize,
    pub refusals: usize,
    pub refusal_rate: Option<Estimate>,
    pub correct: usize,
    pub correct_rate: Option<Estimate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SteerResult {
    pub options: Options,
    pub known_direction: SteeringDirection,
    pub unknown_direction: SteeringDirection,
    /// Mean residual norm at each steered layer, over the steered positions of every item.
    pub mean_norms: Vec<(usize, f64)>,
    pub cosine_known_unknown: f64,
    pub items: Vec<Item>,
    pub conditions: Vec<Condition>,
    pub answers: Vec<Answer>,
    pub cells: Vec<Cell>,
}

/// Runs the experiment. `orthogonalized`: the same model with the unknown direction projected
/// out of its weights, measured on every item when given.
pub fn run(
    model: &Model,
    orthogonalized: Option<&Model>,
    items: Vec<Item>,
    known_direction: SteeringDirection,
    unknown_direction: SteeringDirection,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<SteerResult> {
    opts.check()?;
    let d_model = model.cfg().d_model;
    let texts: Vec<String> =
        items.iter().map(|it| prompt_text(model, opts.prompt, &it.question, "")).collect::<Result<_>>()?;

    let mut mean_norms = Vec::new();
    for layer in [known_direction.layer, unknown_direction.layer] {
        if !mean_norms.iter().any(|&(l, _)| l == layer) {
            mean_norms.push((layer, steered_norm(model, &items, &texts, layer, opts)?));
        }
    }
    let norm_at = |l: usize| mean_norms.iter().find(|&&(x, _)| x == l).map(|&(_, n)| n).unwrap_or(0.0);

    // Conditions: per class, the original model, the opposite class's direction and random
    // directions at every strength, and the orthogonalized model.
    let mut conditions = Vec::new();
    for known in [true, false] {
        let dir = if known { &unknown_direction } else { &known_direction };
        conditions.push(Condition { treatment: Treatment::Original, known });
        for &coef in &opts.coefs {
            let magnitude = coef * norm_at(dir.layer);
            conditions.push(Condition {
                treatment: Treatment::Direction { direction: dir.name.clone(), coef, magnitude },
                known,
            });
            if opts.n_random > 0 {
                conditions.push(Condition {
                    treatment: Treatment::Random { layer: dir.layer, coef, magnitude, n: opts.n_random },
                    known,
                });
            }
        }
        if orthogonalized.is_some() {
            conditions.push(Condition {
                treatment: Treatment::Orthogonalized { direction: unknown_direction.name.clone() },
                known,
            });
        }
    }
    let randoms: Vec<Vec<SteeringDirection>> = [known_direction.layer, unknown_direction.layer]
        .iter()
        .map(|&l| (0..opts.n_random as u64).map(|i| SteeringDirection::random(l, d_model, opts.seed, i)).collect())
        .collect::<Result<_>>()?;

    let total: usize = conditions.iter().map(|c| items.iter().filter(|it| it.known == c.known).count()).sum();
    progress.start("steered generations", Some(total as u64));
    let gen_opts = GenerateOptions { max_tokens: opts.max_tokens, stop: opts.prompt.stop(), ..Default::default() };
    let mut answers = Vec::new();
    for (ci, cond) in conditions.iter().enumerate() {
        let rows: Vec<usize> = (0..items.len()).filter(|&i| items[i].known == cond.known).collect();
        for chunk in rows.chunks(opts.batch) {
            let prompts: Vec<(&str, &str)> =
                chunk.iter().map(|&i| (texts[i].as_str(), items[i].name.as_str())).collect();
            let m = match cond.treatment {
                Treatment::Orthogonalized { .. } => orthogonalized.expect("condition exists only with the model"),
                _ => model,
            };
            let eb = m.entity_batch(&prompts, true)?;
            let positions = match opts.positions {
                Steered::EntityLastToEnd => eb.last_to_end(),
                Steered::EntityLast => eb.last(),
            };
            let device = m.transformer.device();
            let spec = match &cond.treatment {
                Treatment::Original | Treatment::Orthogonalized { .. } => HookSpec::new(),
                Treatment::Direction { magnitude, .. } => {
                    let dir = if cond.known { &unknown_direction } else { &known_direction };
                    dir.add(HookSpec::new(), positions, *magnitude, device)?
                }
                Treatment::Random { layer, magnitude, .. } => {
                    let set = &randoms[if *layer == known_direction.layer { 0 } else { 1 }];
                    round_robin(set, chunk, &positions, *magnitude, device)?
                }
            };
            let (gens, _) = generate(m, &eb.batch, &spec, &gen_opts)?;
            for (&i, g) in chunk.iter().zip(gens) {
                let it = &items[i];
                let refusal = is_refusal(&g.text, opts.rule);
                let correct = judge_answer(it.kind, &it.gold, &g.text, &it.name) == Outcome::Correct;
                answers.push(Answer { item: i, condition: ci, text: g.text, refusal, correct });
            }
            progress.advance(chunk.len() as u64);
        }
    }
    progress.finish();
    let cells = cells(&items, &conditions, &answers);
    Ok(SteerResult {
        options: opts.clone(),
        cosine_known_unknown: known_direction.cosine(&unknown_direction),
        known_direction,
        unknown_direction,
        mean_norms,
        items,
        conditions,
        answers,
        cells,
    })
}

/// The mean residual norm at `layer` over the steered positions of every item's prompt.
fn steered_norm(model: &Model, items: &[Item], texts: &[String], layer: usize, opts: &Options) -> Result<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    let idx: Vec<usize> = (0..items.len()).collect();
    for chunk in idx.chunks(opts.batch) {
        let prompts: Vec<(&str, &str)> = chunk.iter().map(|&i| (texts[i].as_str(), items[i].name.as_str())).collect();
        let eb = model.entity_batch(&prompts, true)?;
        let positions = match opts.positions {
            Steered::EntityLastToEnd => eb.last_to_end(),
            Steered::EntityLast => eb.last(),
        };
        let count: usize = eb.batch.columns(&positions)?.iter().map(|c| c.len()).sum();
        sum += mean_resid_norm(model, &eb, layer, &positions)? * count as f64;
        n += count;
    }
    Ok(sum / n.max(1) as f64)
}

/// Row r of the chunk (item `chunk[r]`) is steered with random direction `chunk[r] mod n`.
fn round_robin(
    set: &[SteeringDirection],
    chunk: &[usize],
    positions: &Positions,
    magnitude: f64,
    device: &candle_core::Device,
) -> Result<HookSpec> {
    let Positions::Rows(rows) = positions else { bail!("random steering needs per-row positions") };
    let mut spec = HookSpec::new();
    for (k, dir) in set.iter().enumerate() {
        let mine: Vec<Vec<i64>> = chunk
            .iter()
            .zip(rows)
            .map(|(&item, ps)| if item % set.len() == k { ps.clone() } else { Vec::new() })
            .collect();
        if mine.iter().any(|p| !p.is_empty()) {
            spec = dir.add(spec, Positions::Rows(mine), magnitude, device)?;
        }
    }
    Ok(spec)
}

/// Refusal and correct rates per condition, per type and over all types.
fn cells(items: &[Item], conditions: &[Condition], answers: &[Answer]) -> Vec<Cell> {
    let mut types: Vec<String> = items.iter().map(|it| it.entity_type.to_string()).collect();
    types.sort();
    types.dedup();
    let mut out = Vec::new();
    for ci in 0..conditions.len() {
        for t in types.iter().map(Some).chain([None]) {
            let sel: Vec<&Answer> = answers
                .iter()
                .filter(|a| a.condition == ci && t.is_none_or(|t| items[a.item].entity_type.to_string() == *t))
                .collect();
            if sel.is_empty() {
                continue;
            }
            let refusals = sel.iter().filter(|a| a.refusal).count();
            let correct = sel.iter().filter(|a| a.correct).count();
            out.push(Cell {
                condition: ci,
                entity_type: t.cloned(),
                n: sel.len(),
                refusals,
                refusal_rate: wilson(refusals, sel.len()),
                correct,
                correct_rate: wilson(correct, sel.len()),
            });
        }
    }
    out
}
