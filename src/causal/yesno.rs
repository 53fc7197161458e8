//! "Are you sure you know the {type} '{name}'? Answer yes or no." (paper §4, Fig. 5): the chat
//! model's logit(" Yes") − logit(" No") after the assistant's "Answer:", as it is and steered at
//! the entity's last token: known entities with the unknown direction (does it lean to No?),
//! unknown entities with the known direction (does it lean to Yes?), and with every control
//! direction of the steering run (`steer`), each on every test item, so the verdict can rank the
//! detector among directions. A base model is asked the same after a few-shot preamble whose examples
//! answer Yes for famous entities and No for invented ones (the base-model analogue).

use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde::Serialize;

use super::direction::SteeringDirection;
use super::items::{prompt_text, Item, PromptStyle};
use super::steer::Condition;
use crate::entities::label_set::Split;
use crate::hooks::{HookSpec, LogitsAt};
use crate::progress::Progress;
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

/// The residual direction that raises logit(" No") − logit(" Yes") most directly: the
/// difference of the two unembedding rows times the final norm's weight, pushed at `layer` (the
/// yes/no claims' positive control: a direction known to move the answer). None when the model
/// keeps no float32 unembedding table.
pub fn logit_direction(model: &Model, layer: usize) -> Result<Option<SteeringDirection>> {
    let Some(table) = model.transformer.unembedding_table() else { return Ok(None) };
    let (yes, no) = (word_id(model, " Yes")?, word_id(model, " No")?);
    let row = |id: u32| -> Result<Vec<f32>> { Ok(table.get(id as usize)?.to_dtype(DType::F32)?.to_vec1()?) };
    let g: Vec<f32> = model.transformer.final_norm_weight().to_dtype(DType::F32)?.to_vec1()?;
    let raw: Vec<f32> = row(no)?.iter().zip(row(yes)?).zip(&g).map(|((n, y), g)| (n - y) * g).collect();
    Ok(Some(SteeringDirection::from_vector(&format!("logit_No−Yes@L{layer}"), layer, &raw)?))
}

/// One steered condition's values: per item of its class (test split), logit(Yes) − logit(No).
#[derive(Debug, Clone, Serialize)]
pub struct YesNoSeries {
    /// Index into the steering run's conditions.
    pub condition: usize,
    pub items: Vec<usize>,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct YesNoOutput {
    pub question: String,
    /// Per test item: (item, logit(Yes) − logit(No)) of the unsteered model.
    pub original: Vec<(usize, f64)>,
    pub steered: Vec<YesNoSeries>,
}

impl YesNoOutput {
    pub fn original_of(&self, item: usize) -> Option<f64> {
        self.original.iter().find(|(i, _)| *i == item).map(|(_, v)| *v)
    }

    pub fn series(&self, condition: usize) -> Option<&YesNoSeries> {
        self.steered.iter().find(|s| s.condition == condition)
    }
}

/// The yes/no logit difference of every test item, unsteered and under each of `steered`
/// (condition index, direction), each condition's direction pushed at the entity's last token
/// of its own class's items at the condition's magnitude.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &Model,
    items: &[Item],
    conditions: &[Condition],
    steered: &[(usize, &SteeringDirection)],
    style: PromptStyle,
    batch: usize,
    _seed: u64,
    progress: &dyn Progress,
) -> Result<YesNoOutput> {
    let yes = word_id(model, " Yes")?;
    let no = word_id(model, " No")?;
    let texts: Vec<String> =
        items.iter().map(|it| yes_no_text(model, style, it.entity_type.as_str(), &it.name)).collect::<Result<_>>()?;
    let test: Vec<usize> = (0..items.len()).filter(|&i| items[i].split == Split::Test).collect();
    let mut original = Vec::new();
    let mut series: Vec<YesNoSeries> =
        steered.iter().map(|(c, _)| YesNoSeries { condition: *c, items: Vec::new(), values: Vec::new() }).collect();
    progress.start("yes/no logit differences", Some(test.len() as u64));
    for known in [true, false] {
        let rows: Vec<usize> = test.iter().copied().filter(|&i| items[i].known == known).collect();
        for chunk in rows.chunks(batch.max(1)) {
            let prompts: Vec<(&str, &str)> =
                chunk.iter().map(|&i| (texts[i].as_str(), items[i].name.as_str())).collect();
            let eb = model.entity_batch(&prompts, true)?;
            let diff = |spec: &HookSpec| -> Result<Vec<f64>> {
                let out = model.run(&eb.batch, &spec.clone().logits(LogitsAt::Last))?;
                let l = out.logits.context("no logits")?.to_dtype(DType::F32)?;
                let y: Vec<f32> = l.narrow(1, yes as usize, 1)?.flatten_all()?.to_vec1()?;
                let n: Vec<f32> = l.narrow(1, no as usize, 1)?.flatten_all()?.to_vec1()?;
                Ok(y.iter().zip(&n).map(|(a, b)| (a - b) as f64).collect())
            };
            original.extend(chunk.iter().copied().zip(diff(&HookSpec::new())?));
            for (s, (ci, dir)) in series.iter_mut().zip(steered) {
                if conditions[*ci].known != known {
                    continue;
                }
                let spec =
                    dir.add(HookSpec::new(), eb.last(), conditions[*ci].magnitude, model.transformer.device())?;
                s.items.extend_from_slice(chunk);
                s.values.extend(diff(&spec)?);
            }
            progress.advance(chunk.len() as u64);
        }
    }
    progress.finish();
    Ok(YesNoOutput { question: QUESTION.to_string(), original, steered: series })
}
