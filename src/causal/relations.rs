//! The base-model prompts of the attention and patching experiments, and which entities they
//! read: the paper's relations (`The {type} '{name}' {relation}`), the attribute asked per type,
//! and the labelled entities of a class and split, sampled with a seed.

use anyhow::{Context, Result};

use crate::entities::decide::Class;
use crate::entities::label_set::{LabelSet, LabeledEntity, Split};
use crate::entities::EntityType;
use crate::rng::{self, SplitMix64, TAG_PICK};

/// The paper's base-model relations (`attn_analysis.py`), under our attribute names. City
/// regions are ours (the paper asks for a city's "location"); the paper's two player-birth
/// entries are swapped in its code and are given here the right way round.
pub const RELATIONS: &[(EntityType, &str, &str)] = &[
    (EntityType::Player, "birth_city", "was born in the city of"),
    (EntityType::Player, "birth_year", "was born in the year"),
    (EntityType::Player, "team", "has played for"),
    (EntityType::Movie, "director", "is directed by"),
    (EntityType::Movie, "screenwriter", "is written by"),
    (EntityType::Movie, "actor", "has starring"),
    (EntityType::Movie, "release_year", "was released in"),
    (EntityType::Movie, "genre", "has the genre"),
    (EntityType::City, "country", "is located in"),
    (EntityType::City, "region", "is located in the region of"),
    (EntityType::City, "population", "has a population of"),
    (EntityType::Song, "artist", "is sung by"),
    (EntityType::Song, "album", "appears in the album"),
    (EntityType::Song, "genre", "has the genre"),
    (EntityType::Song, "release_year", "was released in"),
    (EntityType::Person, "country", "was born in the country of"),
    (EntityType::Person, "occupation", "is best known as"),
    (EntityType::Person, "birth_city", "was born in the city of"),
    (EntityType::Company, "country", "is headquartered in"),
    (EntityType::Company, "industry", "operates in the industry of"),
];

/// The one attribute (hence relation) each type is asked about: a name attribute that counts
/// toward "known", so a known entity's answer is one the model gives.
pub fn default_attribute(t: EntityType) -> &'static str {
    match t {
        EntityType::Player => "team",
        EntityType::Movie => "director",
        EntityType::City => "country",
        EntityType::Song => "artist",
        EntityType::Person | EntityType::Company => "country",
    }
}

/// The relation text of `t.attribute`.
pub fn relation(t: EntityType, attribute: &str) -> Result<&'static str> {
    RELATIONS.iter().find(|(rt, a, _)| *rt == t && *a == attribute).map(|r| r.2).with_context(|| {
        let known: Vec<String> = RELATIONS.iter().filter(|r| r.0 == t).map(|r| r.1.to_string()).collect();
        format!("no base relation for {t}.{attribute} (known for {t}: {})", known.join(", "))
    })
}

/// `template` with `{type}`, `{relation}` and then `{name}` filled in (the name last, so a name
/// holding braces is never substituted into).
pub fn fill(template: &str, t: EntityType, name: &str, relation: &str) -> String {
    template.replace("{type}", t.as_str()).replace("{relation}", relation).replace("{name}", name)
}

/// The labeled entities of a type and class in the given splits, in file order.
pub fn candidates<'a>(labels: &'a LabelSet, t: EntityType, class: Class, splits: &[Split]) -> Vec<&'a LabeledEntity> {
    labels
        .entities
        .iter()
        .filter(|e| e.entity_type() == t && e.class() == class && e.split.is_some_and(|s| splits.contains(&s)))
        .collect()
}

/// At most `n` of `v`: all of them, or a seeded sample kept in file order.
pub fn sample<T: Clone>(v: &[T], n: usize, seed: u64, stream: u64) -> Vec<T> {
    if v.len() <= n {
        return v.to_vec();
    }
    let mut idx: Vec<usize> = (0..v.len()).collect();
    rng::shuffle(&mut idx, &mut SplitMix64::derive(seed, TAG_PICK, stream));
    idx.truncate(n);
    idx.sort_unstable();
    idx.into_iter().map(|i| v[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_cover_every_default_attribute_and_fill_the_template() {
        for t in EntityType::ALL {
            let rel = relation(t, default_attribute(t)).unwrap();
            assert!(!rel.is_empty());
        }
        let template = crate::causal::attention::TEMPLATE;
        assert_eq!(fill(template, EntityType::City, "Paris", "is located in"), "The city 'Paris' is located in");
        assert_eq!(fill(template, EntityType::City, "{relation}", "x"), "The city '{relation}' x");
        assert!(relation(EntityType::City, "team").unwrap_err().to_string().contains("country"));
    }
}
