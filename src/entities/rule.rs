//! What makes an entity known (issue 9): which attributes count, which gold values can show
//! recall at all, and the threshold of the full-scale estimator.
//!
//! * Name attributes count (player birth city and team; movie director, screenwriter and actor;
//!   city country and region; song artist and album). Years, genres and populations never count:
//!   a single constant answer is right for a large share of entities ("Drama" for 49% of movies,
//!   "2000" for 83% of Billboard songs), so a correct one says little about the entity. They are
//!   still asked in the greedy and sampled modes, for the chance rates (`chance`).
//! * A gold value is *guessable* when at least `GUESSABLE_SHARE` of the type's entities that have
//!   the attribute share it (the New York Yankees, China): a constant answer would be right that
//!   often, so matching it does not count. A gold value made only of the entity's own words
//!   ("Tokyo" as the region of Tokyo) cannot be matched without echoing the entity and does not
//!   count either (`matching::gold_usable`).
//! * Known: at least `known_min` counting attributes reliably correct; unknown: none; dropped
//!   otherwise, and also when the entity has fewer than `known_min` counting attributes with a
//!   usable gold value (it could never be known, so calling it unknown would mislabel it).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::dataset::Entity;
use super::matching::gold_usable;
use super::questions::{self, AnswerKind, AttributeSpec, EntityType};

/// Attributes that count toward "known".
pub const COUNTING: &[(EntityType, &str)] = &[
    (EntityType::Player, "birth_city"),
    (EntityType::Player, "team"),
    (EntityType::Movie, "director"),
    (EntityType::Movie, "screenwriter"),
    (EntityType::Movie, "actor"),
    (EntityType::City, "country"),
    (EntityType::City, "region"),
    (EntityType::Song, "artist"),
    (EntityType::Song, "album"),
    (EntityType::Person, "country"),
    (EntityType::Person, "occupation"),
    (EntityType::Person, "birth_city"),
    (EntityType::Company, "country"),
    (EntityType::Company, "industry"),
];

pub fn counts(t: EntityType, attribute: &str) -> bool {
    COUNTING.iter().any(|&(ct, a)| ct == t && a == attribute)
}

/// A gold value shared by at least this share of a type's entities (that have the attribute) is
/// guessable.
pub const GUESSABLE_SHARE: f64 = 0.10;
/// ... and by at least this many of them (a small entity file proves nothing).
pub const GUESSABLE_MIN: usize = 5;

/// The smallest per-sample probability p of a correct answer for which 10 samples at T = 1 give
/// at least 3 correct with probability ≥ 1/2 (P(Binomial(10, p) ≥ 3) = 0.5 at p ≈ 0.2586): the
/// paper's "≥ 3 of 10" rule read as a threshold on the probability it estimates.
pub const ESTIMATE_THRESHOLD: f64 = 0.2586;

/// Guessable gold values per attribute (`type.attribute` → lowercased value → share).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Guessable {
    pub values: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Guessable {
    /// From the gold values of `entities` (the whole dataset, before any subset is taken).
    pub fn from_entities(entities: &[Entity]) -> Self {
        let mut counts: HashMap<(EntityType, String), (usize, HashMap<String, usize>)> = HashMap::new();
        for e in entities {
            for (attr, values) in &e.attributes {
                if !counts_or_name(e.entity_type, attr) || values.is_empty() {
                    continue;
                }
                let c = counts.entry((e.entity_type, attr.clone())).or_default();
                c.0 += 1;
                let mut seen: Vec<String> = values.iter().map(|v| v.trim().to_lowercase()).collect();
                seen.sort_unstable();
                seen.dedup();
                for v in seen {
                    *c.1.entry(v).or_default() += 1;
                }
            }
        }
        let mut values: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for ((t, attr), (n, by_value)) in counts {
            for (v, k) in by_value {
                let share = k as f64 / n as f64;
                if k >= GUESSABLE_MIN && share >= GUESSABLE_SHARE {
                    values.entry(format!("{t}.{attr}")).or_default().insert(v, (share * 1e4).round() / 1e4);
                }
            }
        }
        Self { values }
    }

    pub fn contains(&self, t: EntityType, attribute: &str, value: &str) -> bool {
        self.values.get(&format!("{t}.{attribute}")).is_some_and(|m| m.contains_key(&value.trim().to_lowercase()))
    }
}

fn counts_or_name(t: EntityType, attr: &str) -> bool {
    counts(t, attr) || questions::attribute(t, attr).is_some_and(|s| s.kind == AnswerKind::Name)
}

/// The gold values an answer is judged against: for a counting attribute, those that are neither
/// guessable nor made of the entity's own words; for the others, all of them.
pub fn usable_gold(entity: &Entity, spec: &AttributeSpec, guessable: &Guessable) -> Vec<String> {
    let gold = entity.attributes.get(spec.name).cloned().unwrap_or_default();
    if !counts(entity.entity_type, spec.name) {
        return gold;
    }
    gold.into_iter()
        .filter(|g| gold_usable(g, &entity.name) && !guessable.contains(entity.entity_type, spec.name, g))
        .collect()
}

/// Which attributes a run asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttributeSet {
    /// Every attribute (chance rates need the non-counting ones too).
    All,
    /// Only the counting attributes with a usable gold value.
    Counting,
}

impl AttributeSet {
    pub const NAMES: [&'static str; 2] = ["all", "counting"];
    pub fn as_str(self) -> &'static str {
        match self {
            AttributeSet::All => "all",
            AttributeSet::Counting => "counting",
        }
    }
}

impl std::fmt::Display for AttributeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AttributeSet {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "all" => Ok(AttributeSet::All),
            "counting" => Ok(AttributeSet::Counting),
            _ => anyhow::bail!("unknown attribute set {s:?} (valid: all, counting)"),
        }
    }
}

/// Whether a run with this attribute set asks about `spec` for `entity`.
pub fn asks(entity: &Entity, spec: &AttributeSpec, set: AttributeSet, guessable: &Guessable) -> bool {
    if entity.attributes.get(spec.name).is_none_or(|v| v.is_empty()) {
        return false;
    }
    match set {
        AttributeSet::All => true,
        AttributeSet::Counting => {
            counts(entity.entity_type, spec.name) && !usable_gold(entity, spec, guessable).is_empty()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_where_three_of_ten_is_a_coin_flip() {
        let at_least_3 =
            |p: f64| 1.0 - (0..3).map(|k| binom(10, k) * p.powi(k as i32) * (1.0 - p).powi(10 - k as i32)).sum::<f64>();
        fn binom(n: u64, k: u64) -> f64 {
            (0..k).map(|i| (n - i) as f64 / (i + 1) as f64).product()
        }
        assert!((at_least_3(ESTIMATE_THRESHOLD) - 0.5).abs() < 1e-3, "{}", at_least_3(ESTIMATE_THRESHOLD));
    }
}
