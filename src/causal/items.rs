//! The prompts the causal experiments ask: one question per labelled entity, about one of its
//! name attributes, in the model's chat template or, for a base model, after a few-shot
//! preamble whose examples include "I don't know" answers (so that refusal is something the base
//! model can do), with the gold values its answer is judged against.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::entities::dataset::Entity;
use crate::entities::decide::Class;
use crate::entities::label_set::{LabelSet, Split};
use crate::entities::questions::{self, AnswerKind, EntityType};
use crate::entities::rule::{self, Guessable};
use crate::rng::{shuffle, SplitMix64, TAG_PICK};
use crate::tokenizer::ChatMessage;
use crate::Model;

/// One question about one entity.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub id: String,
    #[serde(rename = "type")]
    pub entity_type: EntityType,
    pub name: String,
    pub known: bool,
    /// The split the entity is in: strengths are chosen on validation, verdicts read test.
    pub split: Split,
    pub popularity_rank: Option<u64>,
    pub attribute: &'static str,
    #[serde(skip)]
    pub kind: AnswerKind,
    pub gold: Vec<String>,
    /// The user's question (chat models) or the plain prompt (base models).
    pub question: String,
}

/// How a question is put to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptStyle {
    /// The model's chat template (a chat model).
    Chat,
    /// `FEW_SHOT` examples, then `Q: {question}\nA:` (a base model; the paper's §4 refusal
    /// experiment needs a model that can decline, which a base model learns from the examples).
    FewShot,
}

crate::names::named_enum!(PromptStyle, "prompt style", Chat => "chat", FewShot => "few_shot");

impl PromptStyle {
    /// Chat for a model with a chat template, few-shot otherwise.
    pub fn for_model(model: &Model) -> Self {
        if model.tokenizer.chat_template.is_some() {
            PromptStyle::Chat
        } else {
            PromptStyle::FewShot
        }
    }

    /// Where a few-shot answer ends (the next example's line); nothing for chat answers.
    pub fn stop(self) -> Vec<String> {
        match self {
            PromptStyle::Chat => Vec::new(),
            PromptStyle::FewShot => vec!["\n".to_string()],
        }
    }
}

/// The base model's examples: three facts any web text states and three questions about names
/// invented for this preamble (no entity of the dataset), answered "I don't know". Mixed types
/// and alternating, so neither the answer's kind nor the refusal follows from the position.
pub const FEW_SHOT: &[(&str, &str)] = &[
    ("What country contains the city of 'Paris'?", "France"),
    ("Who is the director of the movie 'The Lantern Keepers of Vossberg'?", "I don't know"),
    ("Who is the performer of the song 'Bohemian Rhapsody'?", "Queen"),
    ("What country contains the city of 'Drelmonty'?", "I don't know"),
    ("Who is the director of the movie 'Titanic'?", "James Cameron"),
    ("What team (name at least one) signed the player 'Carvin Oestraad'?", "I don't know"),
];

/// The few-shot preamble: every example as `Q: …\nA: …\n`.
pub fn few_shot_preamble() -> String {
    FEW_SHOT.iter().map(|(q, a)| format!("Q: {q}\nA: {a}\n")).collect()
}

/// `question` put to the model in `style`; `prefill` starts the answer ("Answer:" for the yes/no
/// experiment; a few-shot answer already follows "A:", so there it is left out).
pub fn prompt_text(model: &Model, style: PromptStyle, question: &str, prefill: &str) -> Result<String> {
    match style {
        PromptStyle::Chat => chat_text(model, question, prefill),
        PromptStyle::FewShot => Ok(format!("{}Q: {question}\nA:", few_shot_preamble())),
    }
}

/// Renders a user turn (and an optional start of the assistant's answer) with the model's chat
/// template, as text whose tokenization with the model's BOS rule is the template's tokens: a
/// leading BOS written by the template is removed, because encoding adds it again (the paper's
/// code removes `<bos>` for the same reason).
pub fn chat_text(model: &Model, user: &str, prefill: &str) -> Result<String> {
    let tok = &model.tokenizer;
    let Some(t) = &tok.chat_template else {
        bail!("this model has no chat template (a base model?); the chat experiments need a chat model");
    };
    let mut text = t.render(&[ChatMessage::user(user)], true)?;
    if tok.add_bos && tok.bos.is_some() && !t.bos_token.is_empty() {
        if let Some(rest) = text.strip_prefix(t.bos_token.as_str()) {
            text = rest.to_string();
        }
    }
    text.push_str(prefill);
    Ok(text)
}

/// Up to `per_type` known and `per_type` unknown entities of each type from the given splits,
/// drawn with `seed`, each with one name attribute that has a usable gold value. A known entity
/// is asked about an attribute it answered correctly when labelled, so a refusal under steering
/// is a change from a correct answer. Rows come per type, known first. With the few-shot style,
/// entities named in the preamble are left out.
pub fn pick(
    labels: &LabelSet,
    entities: &[Entity],
    types: &[EntityType],
    splits: &[Split],
    per_type: usize,
    seed: u64,
    style: PromptStyle,
) -> Result<Vec<Item>> {
    let by_id: HashMap<&str, &Entity> = entities.iter().map(|e| (e.id.as_str(), e)).collect();
    let guessable = Guessable::from_entities(entities);
    // An entity named inside the few-shot preamble would be located there, not in its question.
    let preamble = if style == PromptStyle::FewShot { few_shot_preamble() } else { String::new() };
    let mut out = Vec::new();
    for (ti, &t) in types.iter().enumerate() {
        for (ci, class) in [Class::Known, Class::Unknown].into_iter().enumerate() {
            let mut pool: Vec<_> = labels
                .entities
                .iter()
                .filter(|e| e.entity_type() == t && e.class() == class && e.split.is_some_and(|s| splits.contains(&s)))
                .collect();
            pool.sort_by(|a, b| a.id().cmp(b.id()));
            let mut rng = SplitMix64::derive(seed, TAG_PICK, (ti * 2 + ci) as u64);
            shuffle(&mut pool, &mut rng);
            let mut taken = 0;
            for le in pool {
                if taken == per_type {
                    break;
                }
                let entity = by_id.get(le.id()).with_context(|| {
                    format!(
                        "entity {} of the labels is not in the entity dataset (labels of another dataset?)",
                        le.id()
                    )
                })?;
                // Attributes asked when labelling, name attributes only; a known entity's must
                // have been answered correctly.
                let chosen = le.label.records.iter().find_map(|r| {
                    let spec = questions::attribute(t, &r.attribute)?;
                    if spec.kind != AnswerKind::Name || (class == Class::Known && !r.correct) {
                        return None;
                    }
                    let gold = rule::usable_gold(entity, spec, &guessable);
                    (!gold.is_empty()).then_some((spec, gold))
                });
                let Some((spec, gold)) = chosen else { continue };
                if !preamble.is_empty() && preamble.contains(le.name()) {
                    continue;
                }
                out.push(Item {
                    id: le.id().to_string(),
                    entity_type: t,
                    name: le.name().to_string(),
                    known: class == Class::Known,
                    split: le.split.expect("filtered to entities in a split"),
                    popularity_rank: le.popularity_rank(),
                    attribute: spec.name,
                    kind: spec.kind,
                    gold,
                    question: questions::fill(spec.chat, le.name()),
                });
                taken += 1;
            }
        }
    }
    if out.is_empty() {
        bail!("{}: no known or unknown entity of the asked types in the asked splits", labels.dir.display());
    }
    Ok(out)
}
