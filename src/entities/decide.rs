//! From per-question records to per-entity labels, splits and confound controls.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::dataset::Entity;
use super::label::QuestionRecord;
use super::questions::{self, EntityType};
use crate::rng::{shuffle, SplitMix64, TAG_CONTROLS, TAG_SPLIT};
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Known,
    Unknown,
    /// Some but too few attributes correct: neither class (the paper discards these).
    Dropped,
}

/// The paper's rule: known if at least `known_min` attributes are (reliably) correct, unknown if
/// none is, dropped otherwise. The paper's τ = 1 means known_min = 2.
pub fn classify(n_correct: usize, known_min: usize) -> Class {
    if n_correct >= known_min {
        Class::Known
    } else if n_correct == 0 {
        Class::Unknown
    } else {
        Class::Dropped
    }
}

/// One entity's label with every record it rests on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntityLabel {
    pub id: String,
    #[serde(rename = "type")]
    pub entity_type: EntityType,
    pub name: String,
    pub popularity_rank: Option<u64>,
    pub n_attributes: usize,
    pub n_correct: usize,
    pub class: Class,
    pub records: Vec<QuestionRecord>,
}

/// Labels every entity all of whose questions have a record; entities still missing answers
/// are left out (their count is returned).
pub fn label_entities(entities: &[Entity], records: &[QuestionRecord], known_min: usize) -> (Vec<EntityLabel>, usize) {
    let mut by_entity: HashMap<&str, Vec<&QuestionRecord>> = HashMap::new();
    for r in records {
        by_entity.entry(r.entity_id.as_str()).or_default().push(r);
    }
    let mut labels = Vec::new();
    let mut incomplete = 0;
    for e in entities {
        let asked: Vec<&str> = questions::attributes_of(e.entity_type)
            .filter(|s| e.attributes.get(s.name).is_some_and(|v| !v.is_empty()))
            .map(|s| s.name)
            .collect();
        let recs = by_entity.get(e.id.as_str()).cloned().unwrap_or_default();
        if asked.iter().any(|a| !recs.iter().any(|r| r.attribute == *a)) {
            incomplete += 1;
            continue;
        }
        let mut recs: Vec<QuestionRecord> = recs.into_iter().filter(|r| asked.contains(&r.attribute.as_str())).cloned().collect();
        recs.sort_by(|a, b| a.attribute.cmp(&b.attribute));
        let n_correct = recs.iter().filter(|r| r.correct).count();
        labels.push(EntityLabel {
            id: e.id.clone(),
            entity_type: e.entity_type,
            name: e.name.clone(),
            popularity_rank: e.popularity_rank,
            n_attributes: recs.len(),
            n_correct,
            class: classify(n_correct, known_min),
            records: recs,
        });
    }
    (labels, incomplete)
}

/// Train / validation / test ids per class.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Splits {
    pub seed: u64,
    pub fractions: [f64; 3],
    pub train: BTreeMap<Class, Vec<String>>,
    pub validation: BTreeMap<Class, Vec<String>>,
    pub test: BTreeMap<Class, Vec<String>>,
}

/// 50 / 10 / 40 per (type, class), seeded: each type keeps its share in every split, and an
/// entity appears in exactly one split. Dropped entities are not split. Each group's ids are
/// sorted and shuffled by a `crate::rng` stream derived from (seed, type, class), so the result
/// depends on nothing but the ids and the seed.
pub fn split(labels: &[EntityLabel], seed: u64) -> Splits {
    let fractions = [0.5, 0.1, 0.4];
    let mut s = Splits { seed, fractions, ..Default::default() };
    let mut groups: BTreeMap<(EntityType, Class), Vec<&str>> = BTreeMap::new();
    for l in labels.iter().filter(|l| l.class != Class::Dropped) {
        groups.entry((l.entity_type, l.class)).or_default().push(&l.id);
    }
    for ((t, class), mut ids) in groups {
        ids.sort_unstable();
        // One generator per group, seeded from the group, so adding a type never reshuffles another.
        shuffle(&mut ids, &mut SplitMix64::derive(seed, TAG_SPLIT, group_key(t, class as u64)));
        let n = ids.len();
        let n_train = (n as f64 * fractions[0]).round() as usize;
        let n_val = ((n as f64 * fractions[1]).round() as usize).min(n - n_train);
        let push = |m: &mut BTreeMap<Class, Vec<String>>, part: &[&str]| m.entry(class).or_default().extend(part.iter().map(|s| s.to_string()));
        push(&mut s.train, &ids[..n_train]);
        push(&mut s.validation, &ids[n_train..n_train + n_val]);
        push(&mut s.test, &ids[n_train + n_val..]);
    }
    for m in [&mut s.train, &mut s.validation, &mut s.test] {
        m.values_mut().for_each(|v| v.sort_unstable());
    }
    s
}

/// Number of tokens of the entity's name in the paper's latent-discovery prompt.
pub fn name_tokens(tok: &Tokenizer, t: EntityType, name: &str) -> Result<usize> {
    Ok(tok.span_positions(&questions::entity_prompt(t, name), name, true, false)?.len())
}

/// Sets that let later analyses separate "unknown to the model" from confounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Controls {
    /// Known and unknown ids matched one to one on (type, name token count).
    pub matched_known: Vec<String>,
    pub matched_unknown: Vec<String>,
    /// Fabricated names (not real entities), matched on (type, token count) to the matched
    /// unknown set where possible: "not a real name" kept apart from "real but obscure".
    pub fabricated: Vec<String>,
    /// Histograms of name token counts: set → type → count → entities.
    pub token_lengths: BTreeMap<String, BTreeMap<EntityType, BTreeMap<usize, usize>>>,
}

/// The stream index of a (type, class) or (type, name token count) group.
fn group_key(t: EntityType, k: u64) -> u64 {
    ((t as u64) << 32) | k
}

/// Known and unknown entities matched one to one within each (type, name token count) bucket,
/// chosen at random (each bucket's sorted ids shuffled by a stream derived from the seed and the
/// bucket), and fabricated names matched to the chosen unknown ones the same way.
pub fn controls(tok: &Tokenizer, labels: &[EntityLabel], fabricated: &[Entity], seed: u64) -> Result<Controls> {
    let mut buckets: BTreeMap<(EntityType, usize), [Vec<String>; 2]> = BTreeMap::new();
    let mut hist: BTreeMap<String, BTreeMap<EntityType, BTreeMap<usize, usize>>> = BTreeMap::new();
    let mut bump = |set: &str, t: EntityType, n: usize| *hist.entry(set.into()).or_default().entry(t).or_default().entry(n).or_default() += 1;
    for l in labels {
        let side = match l.class {
            Class::Known => 0,
            Class::Unknown => 1,
            Class::Dropped => continue,
        };
        let n = name_tokens(tok, l.entity_type, &l.name)?;
        bump(if side == 0 { "known" } else { "unknown" }, l.entity_type, n);
        buckets.entry((l.entity_type, n)).or_default()[side].push(l.id.clone());
    }
    let mut fab: BTreeMap<(EntityType, usize), Vec<String>> = BTreeMap::new();
    for f in fabricated {
        let n = name_tokens(tok, f.entity_type, &f.name)?;
        bump("fabricated_all", f.entity_type, n);
        fab.entry((f.entity_type, n)).or_default().push(f.id.clone());
    }
    let (mut mk, mut mu, mut mf) = (Vec::new(), Vec::new(), Vec::new());
    for ((t, n), [mut k, mut u]) in buckets {
        let mut rng = SplitMix64::derive(seed, TAG_CONTROLS, group_key(t, n as u64));
        k.sort_unstable();
        u.sort_unstable();
        shuffle(&mut k, &mut rng);
        shuffle(&mut u, &mut rng);
        let m = k.len().min(u.len());
        for _ in 0..m {
            bump("matched", t, n);
        }
        mk.extend(k.into_iter().take(m));
        let unknown: Vec<String> = u.into_iter().take(m).collect();
        if let Some(f) = fab.get_mut(&(t, n)) {
            f.sort_unstable();
            shuffle(f, &mut rng);
            let take = f.len().min(unknown.len());
            mf.extend(f.drain(..take));
        }
        mu.extend(unknown);
    }
    for v in [&mut mk, &mut mu, &mut mf] {
        v.sort_unstable();
    }
    Ok(Controls { matched_known: mk, matched_unknown: mu, fabricated: mf, token_lengths: hist })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(t: EntityType, i: usize, n_correct: usize) -> EntityLabel {
        EntityLabel {
            id: format!("{t}/{i}"),
            entity_type: t,
            name: format!("n{i}"),
            popularity_rank: None,
            n_attributes: 3,
            n_correct,
            class: classify(n_correct, 2),
            records: vec![],
        }
    }

    #[test]
    fn each_group_is_shuffled_by_its_own_seeded_stream() {
        let movies: Vec<EntityLabel> = (0..20).map(|i| label(EntityType::Movie, i, 3)).collect();
        let alone = split(&movies, 42);
        // The rule spelled out: the group's sorted ids, shuffled by the stream of (seed, type,
        // class), the first half to train.
        let mut ids: Vec<String> = movies.iter().map(|l| l.id.clone()).collect();
        ids.sort_unstable();
        shuffle(&mut ids, &mut SplitMix64::derive(42, TAG_SPLIT, group_key(EntityType::Movie, Class::Known as u64)));
        let mut train = ids[..10].to_vec();
        train.sort_unstable();
        assert_eq!(alone.train[&Class::Known], train);
        assert_eq!((alone.validation[&Class::Known].len(), alone.test[&Class::Known].len()), (2, 8));
        // Adding another type (or class) leaves this group's split as it was.
        let mut more = movies.clone();
        more.extend((0..20).map(|i| label(EntityType::City, i, 0)));
        more.extend((20..30).map(|i| label(EntityType::Movie, i, 0)));
        let both = split(&more, 42);
        assert_eq!(both.train[&Class::Known], alone.train[&Class::Known]);
        assert_eq!(both.test[&Class::Known], alone.test[&Class::Known]);
        assert_ne!(split(&movies, 43).train, alone.train);
    }
}
