//! "Are you sure you know the {type} '{name}'? Answer yes or no." (paper §4, Fig. 5): the chat
//! model's logit(" Yes") − logit(" No") after the assistant's "Answer:", as it is and steered at
//! the entity's last token: known entities with the unknown direction (does it lean to No?),
//! unknown entities with the known direction (does it lean to Yes?), against random directions of
//! the same strength. A base model is asked the same after a few-shot preamble whose examples
//! answer Yes for famous entities and No for invented ones (the base-model analogue).

use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde::Serialize;

use super::direction::SteeringDirection;
use super::items::{prompt_text, Item, PromptStyle};
use crate::hooks::{HookSpec, LogitsAt};
use crate::progress::Progress;
use crate::stats::{bootstrap, Estimate};
use crate::Model;

pub const QUESTION: &str = "Are you sure you know the {type} '{name}'? Answer yes or no.";
pub const PREFILL: &str = "Answer:";

/// The base model's yes/no examples: the entities of `items::FEW_SHOT`, famous ones answered
/// Yes and invented ones No.
pub const FEW_SHOT: &[(&str, &str, &str)] = &[
    ("city", "Paris", "Yes"),
    ("movie", "The Lantern Keepers of Vossberg", "No"),
    ("song", "Bohemian Rhapsody", "Yes"),
    ("city", "Drelmonty", "No"),
    ("movie", "Titanic", "Yes"),
    ("player", "Carvin Oestraad", "No"),
];

fn question(entity_type: &str, name: &str) -> String {
    QUESTION.replace("{type}", entity_type).replace("{name}", name)
}

/// The yes/no prompt of one entity in `style`; its next token is the answer (" Yes" / " No").
pub fn yes_no_text(model: &Model, style: PromptStyle, entity_type: &str, name: &str) -> Result<String> {
    match style {
        PromptStyle::Chat => prompt_text(model, style, &question(entity_type, name), PREFILL),
        PromptStyle::FewShot => {
            let mut text: String =
                FEW_SHOT.iter().map(|(t, n, a)| format!("Q: {}\nA: {a}\n", question(t, n))).collect();
            text.push_str(&format!("Q: {}\nA:", question(entity_type, name)));
            Ok(text)
        }
    }
}

/// The single token of `word` as the model writes it after "Answer:" (with a leading space).
fn word_id(model: &Model, word: &str) -> Result<u32> {
    let ids = model.tokenizer.encode(word, false, false)?;
    match ids.as_slice() {
        [id] => Ok(*id),
        _ => bail!("{word:?} is {} tokens for this model, the yes/no metric needs one", ids.len()),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct YesNoCell {
    /// "original", "direction ×c" or "random ×c".
    pub condition: String,
    pub known: bool,
    pub entity_type: Option<String>,
    pub n: usize,
    /// Mean logit(Yes) − logit(No) with a bootstrap 95% interval.
    pub mean: Option<Estimate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct YesNoResult {
    pub question: String,
    pub coef: f64,
    pub magnitude_known: f64,
    pub magnitude_unknown: f64,
    /// Per item: (original, steered with the opposite direction, steered with a random direction).
    pub per_item: Vec<[f64; 3]>,
    pub cells: Vec<YesNoCell>,
}

/// `magnitudes`: the strength (residual units) of the known and unknown direction's push.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &Model,
    items: &[Item],
    known: &SteeringDirection,
    unknown: &SteeringDirection,
    coef: f64,
    magnitudes: (f64, f64),
    n_random: usize,
    seed: u64,
    batch: usize,
    style: PromptStyle,
    progress: &dyn Progress,
) -> Result<YesNoResult> {
    let yes = word_id(model, " Yes")?;
    let no = word_id(model, " No")?;
    let d = model.cfg().d_model;
    let texts: Vec<String> =
        items.iter().map(|it| yes_no_text(model, style, it.entity_type.as_str(), &it.name)).collect::<Result<_>>()?;
    let mut per_item = vec![[0.0; 3]; items.len()];
    progress.start("yes/no logit differences", Some(items.len() as u64));
    let idx: Vec<usize> = (0..items.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let prompts: Vec<(&str, &str)> = chunk.iter().map(|&i| (texts[i].as_str(), items[i].name.as_str())).collect();
        let eb = model.entity_batch(&prompts, true)?;
        let device = model.transformer.device();
        let diff = |spec: &HookSpec| -> Result<Vec<f64>> {
            let out = model.run(&eb.batch, &spec.clone().logits(LogitsAt::Last))?;
            let l = out.logits.context("no logits")?.to_dtype(DType::F32)?;
            let y: Vec<f32> = l.narrow(1, yes as usize, 1)?.flatten_all()?.to_vec1()?;
            let n: Vec<f32> = l.narrow(1, no as usize, 1)?.flatten_all()?.to_vec1()?;
            Ok(y.iter().zip(&n).map(|(a, b)| (a - b) as f64).collect())
        };
        let orig = diff(&HookSpec::new())?;
        // Each row is steered with the direction opposite to its class, so build one edit per
        // class (rows of the other class get no positions) and one per random direction.
        let last = eb.last_positions();
        let rows_where = |pick: &dyn Fn(usize) -> bool| -> crate::Positions {
            crate::Positions::Rows(
                chunk.iter().zip(&last).map(|(&i, &p)| if pick(i) { vec![p] } else { Vec::new() }).collect(),
            )
        };
        let mut steer = HookSpec::new();
        steer = unknown.add(steer, rows_where(&|i| items[i].known), magnitudes.1, device)?;
        steer = known.add(steer, rows_where(&|i| !items[i].known), magnitudes.0, device)?;
        let steered = diff(&steer)?;
        let mut rand = HookSpec::new();
        for k in 0..n_random.max(1) as u64 {
            let dir_for = |known_row: bool| {
                let layer = if known_row { unknown.layer } else { known.layer };
                SteeringDirection::random(layer, d, seed, k)
            };
            for known_row in [true, false] {
                let m = if known_row { magnitudes.1 } else { magnitudes.0 };
                let pick = |i: usize| items[i].known == known_row && (i as u64) % n_random.max(1) as u64 == k;
                rand = dir_for(known_row)?.add(rand, rows_where(&pick), m, device)?;
            }
        }
        let randomised = diff(&rand)?;
        for (r, &i) in chunk.iter().enumerate() {
            per_item[i] = [orig[r], steered[r], randomised[r]];
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();

    let mut types: Vec<String> = items.iter().map(|it| it.entity_type.to_string()).collect();
    types.sort();
    types.dedup();
    let mut cells = Vec::new();
    for (k, name) in ["original", "direction", "random"].iter().enumerate() {
        for known_class in [true, false] {
            for t in types.iter().map(Some).chain([None]) {
                let v: Vec<f64> = items
                    .iter()
                    .zip(&per_item)
                    .filter(|(it, _)| it.known == known_class && t.is_none_or(|t| it.entity_type.to_string() == *t))
                    .map(|(_, p)| p[k])
                    .collect();
                if v.is_empty() {
                    continue;
                }
                cells.push(YesNoCell {
                    condition: if k == 0 { name.to_string() } else { format!("{name} ×{coef}") },
                    known: known_class,
                    entity_type: t.cloned(),
                    n: v.len(),
                    mean: bootstrap(&v, 1000, seed, |s| s.iter().sum::<f64>() / s.len() as f64),
                });
            }
        }
    }
    Ok(YesNoResult {
        question: QUESTION.to_string(),
        coef,
        magnitude_known: magnitudes.0,
        magnitude_unknown: magnitudes.1,
        per_item,
        cells,
    })
}
