//! The prompts the causal experiments ask: one question per labelled entity, about one of its
//! name attributes, in the model's chat template (or plain, for base models), with the gold
//! values its answer is judged against.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::entities::dataset::Entity;
use crate::entities::decide::Class;
use crate::entities::labels::{LabelSet, Split};
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
    pub popularity_rank: Option<u64>,
    pub attribute: &'static str,
    #[serde(skip)]
    pub kind: AnswerKind,
    pub gold: Vec<String>,
    /// The user's question (chat models) or the plain prompt (base models).
    pub question: String,
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
/// is a change from a correct answer. Rows come per type, known first.
pub fn pick(
    labels: &LabelSet,
    entities: &[Entity],
    types: &[EntityType],
    splits: &[Split],
    per_type: usize,
    seed: u64,
) -> Result<Vec<Item>> {
    let by_id: HashMap<&str, &Entity> = entities.iter().map(|e| (e.id.as_str(), e)).collect();
    let guessable = Guessable::from_entities(entities);
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
                out.push(Item {
                    id: le.id().to_string(),
                    entity_type: t,
                    name: le.name().to_string(),
                    known: class == Class::Known,
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
