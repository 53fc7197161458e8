//! The questions of the uncertainty experiment: every greedy answer to a counting (name)
//! attribute whose gold value can show recall, with whether it was judged correct, the prompt
//! rebuilt from the recorded template, and a train / test split per entity.
//!
//! Splits: an entity in the label set's splits.json keeps its split. Entities the label set
//! dropped (some but too few counting attributes correct — most of the model's mixed answers)
//! are in no split there; they are split here 50 / 10 / 40 per type over whole leak groups
//! (`decide::leak_groups`: same name across types, one movie franchise), and a group holding an
//! entity already split follows it, so no name is ever on both sides.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::entities::decide::{leak_groups, Class, EntityLabel};
use crate::entities::label_set::{LabelSet, Split};
use crate::entities::questions::{self, EntityType};
use crate::entities::rule::{self, Guessable};
use crate::entities::Entity;
use crate::rng::{shuffle, SplitMix64};
use crate::tokenizer::{ChatMessage, Tokenizer};

/// Stream tags of this experiment ("UNCQ", "UNCB").
const TAG_UNSPLIT: u64 = 0x554E_4351;
const TAG_BALANCE: u64 = 0x554E_4342;

/// How a prompt was asked: a base-model template, or the chat question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptKind {
    Base,
    Chat,
}

/// One answered question.
#[derive(Debug, Clone, Serialize)]
pub struct Question {
    pub entity_id: String,
    #[serde(rename = "type")]
    pub entity_type: EntityType,
    pub name: String,
    pub attribute: String,
    pub template: usize,
    pub prompt: String,
    pub prompt_kind: PromptKind,
    /// The greedy answer.
    pub answer: String,
    /// The answer was judged wrong (the positive class: "the model will be wrong").
    pub wrong: bool,
    #[serde(serialize_with = "split_str")]
    pub split: Split,
    /// The split came from the label set (false: assigned here, for a dropped entity).
    pub split_from_labels: bool,
    pub entity_class: Class,
    /// The entity has both correct and wrong answers among its usable counting questions.
    pub mixed: bool,
    pub popularity_rank: Option<u64>,
}

fn split_str<S: serde::Serializer>(s: &Split, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// Why records were left out, and what is left per type and split.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolCounts {
    pub records: usize,
    /// Years, genres, populations: a constant answer is often right, so correctness says little.
    pub not_counting: usize,
    /// Every gold value guessable (shared by ≥ 10% of the type) or made of the entity's own words.
    pub unusable_gold: usize,
    pub no_greedy_answer: usize,
    /// The entity is not in the entity dataset (its gold values cannot be checked).
    pub entity_not_in_dataset: usize,
    /// The entity's leak group holds entities of different splits.
    pub split_conflict: usize,
    /// type → split → [wrong, correct].
    pub per_type: BTreeMap<String, BTreeMap<String, [usize; 2]>>,
}

/// Every usable question of the label set, in label-file order.
pub fn pool(
    labels: &LabelSet,
    entities: &[Entity],
    guessable: &Guessable,
    seed: u64,
) -> Result<(Vec<Question>, PoolCounts)> {
    let by_id: HashMap<&str, &Entity> = entities.iter().map(|e| (e.id.as_str(), e)).collect();
    let splits = entity_splits(labels, seed);
    let mut counts = PoolCounts::default();
    let mut out = Vec::new();
    let mut any_greedy = false;
    for le in &labels.entities {
        let l = &le.label;
        let mut of_entity = Vec::new();
        for r in &l.records {
            counts.records += 1;
            if !rule::counts(l.entity_type, &r.attribute) {
                counts.not_counting += 1;
                continue;
            }
            let Some(g) = &r.greedy else {
                counts.no_greedy_answer += 1;
                continue;
            };
            any_greedy = true;
            let Some(e) = by_id.get(l.id.as_str()) else {
                counts.entity_not_in_dataset += 1;
                continue;
            };
            let spec = questions::attribute(l.entity_type, &r.attribute).with_context(|| {
                format!("{}: {} has no attribute {:?}", labels.dir.display(), l.entity_type, r.attribute)
            })?;
            if rule::usable_gold(e, spec, guessable).is_empty() {
                counts.unusable_gold += 1;
                continue;
            }
            let Some(&(split, from_labels)) = splits.get(l.id.as_str()) else {
                counts.split_conflict += 1;
                continue;
            };
            let prompt_kind = prompt_kind(l, spec, r.template, &r.prompt)
                .with_context(|| format!("{}: entity {:?}, attribute {}", labels.dir.display(), l.id, r.attribute))?;
            of_entity.push(Question {
                entity_id: l.id.clone(),
                entity_type: l.entity_type,
                name: l.name.clone(),
                attribute: r.attribute.clone(),
                template: r.template,
                prompt: r.prompt.clone(),
                prompt_kind,
                answer: g.text.clone(),
                wrong: !r.correct,
                split,
                split_from_labels: from_labels,
                entity_class: l.class,
                mixed: false,
                popularity_rank: l.popularity_rank,
            });
        }
        let mixed = of_entity.iter().any(|q| q.wrong) && of_entity.iter().any(|q| !q.wrong);
        for mut q in of_entity {
            q.mixed = mixed;
            let c =
                counts.per_type.entry(q.entity_type.to_string()).or_default().entry(q.split.to_string()).or_default();
            c[usize::from(!q.wrong)] += 1;
            out.push(q);
        }
    }
    if !any_greedy && counts.records > 0 {
        bail!(
            "{}: no record holds a greedy answer (mode {}): the uncertainty experiment needs the model's own answers; use a greedy label directory",
            labels.dir.display(),
            labels.mode.map(|m| m.to_string()).unwrap_or_else(|| "unknown".into())
        );
    }
    Ok((out, counts))
}

/// Which template the recorded prompt was filled from: the recorded base template, else the
/// chat question; an error if neither gives the recorded text (the prompt could not be rebuilt).
fn prompt_kind(l: &EntityLabel, spec: &questions::AttributeSpec, template: usize, prompt: &str) -> Result<PromptKind> {
    if spec.base.get(template).is_some_and(|t| questions::fill(t, &l.name) == prompt) {
        return Ok(PromptKind::Base);
    }
    if questions::fill(spec.chat, &l.name) == prompt {
        return Ok(PromptKind::Chat);
    }
    bail!(
        "the recorded prompt {prompt:?} is neither base template {template} nor the chat question filled with {:?}",
        l.name
    )
}

/// The token ids the question was asked with (as `entities::label::question` builds them).
pub fn prompt_ids(tok: &Tokenizer, q: &Question) -> Result<Vec<u32>> {
    match q.prompt_kind {
        PromptKind::Base => tok.encode_prompt(&q.prompt, false),
        PromptKind::Chat => tok.encode_chat(&[ChatMessage::user(q.prompt.clone())], true),
    }
    .with_context(|| format!("tokenizing the prompt of {:?} ({})", q.entity_id, q.attribute))
}

/// The split of every entity that gets one: (split, taken from the label set). Entities of a
/// leak group whose split entities disagree get none.
pub fn entity_splits(labels: &LabelSet, seed: u64) -> HashMap<&str, (Split, bool)> {
    let all: Vec<&EntityLabel> = labels.entities.iter().map(|e| &e.label).collect();
    let split_of: Vec<Option<Split>> = labels.entities.iter().map(|e| e.split).collect();
    let mut out = HashMap::new();
    let mut unsplit: BTreeMap<EntityType, Vec<Vec<usize>>> = BTreeMap::new();
    for mut g in leak_groups(&all) {
        g.sort_by(|&a, &b| all[a].id.cmp(&all[b].id));
        let mut known: Vec<Split> = g.iter().filter_map(|&i| split_of[i]).collect();
        known.sort();
        known.dedup();
        match known.as_slice() {
            [] => unsplit.entry(all[g[0]].entity_type).or_default().push(g),
            [s] => {
                for &i in &g {
                    out.insert(all[i].id.as_str(), (*s, split_of[i].is_some()));
                }
            }
            _ => {
                for &i in &g {
                    if let Some(s) = split_of[i] {
                        out.insert(all[i].id.as_str(), (s, true));
                    }
                }
            }
        }
    }
    // The rest: 50 / 10 / 40 per type over whole groups, like `decide::split`.
    for (t, mut gs) in unsplit {
        gs.sort_by(|a, b| all[a[0]].id.cmp(&all[b[0]].id));
        shuffle(&mut gs, &mut SplitMix64::derive(seed, TAG_UNSPLIT, t as u64));
        let n: usize = gs.iter().map(Vec::len).sum();
        let n_train = (n as f64 * 0.5).round() as usize;
        let n_val = ((n as f64 * 0.1).round() as usize).min(n - n_train);
        let (mut in_train, mut in_val) = (0, 0);
        for g in gs {
            let s = if in_train < n_train {
                in_train += g.len();
                Split::Train
            } else if in_val < n_val {
                in_val += g.len();
                Split::Validation
            } else {
                Split::Test
            };
            for i in g {
                out.insert(all[i].id.as_str(), (s, false));
            }
        }
    }
    out
}

/// At most `per_type` wrong and `per_type` correct questions of each type in each of train and
/// test (a seeded random choice; validation questions are not used), so the classes are
/// balanced wherever a type has enough of both: the balanced count is min(per_type, wrong,
/// correct) per class. Returns indices into `qs`, in order.
pub fn balanced_sample(qs: &[Question], per_type: usize, seed: u64) -> Vec<usize> {
    let mut cells: BTreeMap<(EntityType, Split, bool), Vec<usize>> = BTreeMap::new();
    for (i, q) in qs.iter().enumerate() {
        if q.split != Split::Validation {
            cells.entry((q.entity_type, q.split, q.wrong)).or_default().push(i);
        }
    }
    let mut keep = Vec::new();
    for t in EntityType::ALL {
        for s in [Split::Train, Split::Test] {
            let get = |wrong: bool| cells.get(&(t, s, wrong)).cloned().unwrap_or_default();
            let (mut w, mut c) = (get(true), get(false));
            let n = per_type.min(w.len()).min(c.len());
            for (v, wrong) in [(&mut w, true), (&mut c, false)] {
                let index = ((t as u64) << 8) | ((s as u64) << 1) | u64::from(wrong);
                shuffle(v, &mut SplitMix64::derive(seed, TAG_BALANCE, index));
                keep.extend_from_slice(&v[..n]);
            }
        }
    }
    keep.sort_unstable();
    keep
}
