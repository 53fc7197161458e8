//! Short factual sentences about entities, to mix into the corpus.
//!
//! Rows are the project's entity schema (`entities::dataset`, data/entities/README.md), read by
//! `dataset::load`: a malformed row is skipped and reported with its file and line. Each entity
//! becomes one document: one sentence per attribute that has a declarative template in the
//! question table (`entities::questions::declarative`), in table order, the template filled
//! with the name and completed by up to three values, e.g. "The movie 'Heat' was directed by
//! Michael Mann.". Attributes the table does not know are skipped.
//!
//! Entities can be excluded by id, e.g. the validation and test entities of a labeling run
//! (`heldout_ids`), so that an SAE trained on the corpus never read about held-out entities.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::entities::dataset::{self, Entity, LoadReport, Require};
use crate::entities::decide::Splits;
use crate::entities::questions::{self, EntityType};

/// At most this many values of an attribute go into its sentence.
pub const MAX_VALUES: usize = 3;

/// Reads entity files with `dataset::load` (name and type required; attributes optional).
/// Bad rows are skipped and listed in the report, each naming its file and line; an unreadable
/// file, or files with no entity at all, are errors.
pub fn load(paths: &[PathBuf]) -> Result<LoadReport> {
    let report = dataset::load(paths, Require::NameOnly)?;
    if report.entities.is_empty() {
        let first = report.skipped.first().map(|s| format!(" (first skipped row: {s})")).unwrap_or_default();
        bail!("--entities: no entity rows in {} file(s){first}", paths.len());
    }
    Ok(report)
}

/// "a, b and c".
fn join_and(v: &[&str]) -> String {
    match v {
        [] => String::new(),
        [a] => a.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The sentences about one entity: one per attribute with a declarative template and at least
/// one non-blank value, in the order of the question table.
pub fn sentences(entity: &Entity) -> Vec<String> {
    let name = entity.name.trim();
    let mut out = Vec::new();
    for spec in questions::attributes_of(entity.entity_type) {
        let (Some(template), Some(values)) =
            (questions::declarative(spec.entity_type, spec.name), entity.attributes.get(spec.name))
        else {
            continue;
        };
        let values: Vec<&str> = values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()).take(MAX_VALUES).collect();
        if !values.is_empty() {
            out.push(questions::statement(template, name, &join_and(&values)));
        }
    }
    out
}

/// The attributes (type, name) of these entities that have no declarative template and so
/// give no sentence, with how many entities carry each.
pub fn untemplated(entities: &[Entity]) -> BTreeMap<(EntityType, String), usize> {
    let mut out = BTreeMap::new();
    for e in entities {
        for (attr, values) in &e.attributes {
            if !values.is_empty() && questions::declarative(e.entity_type, attr).is_none() {
                *out.entry((e.entity_type, attr.clone())).or_insert(0) += 1;
            }
        }
    }
    out
}

/// One document per entity with at least one sentence, skipping entities whose id is in
/// `exclude`.
pub fn documents(entities: &[Entity], exclude: &BTreeSet<String>) -> Vec<String> {
    entities
        .iter()
        .filter(|e| !exclude.contains(&e.id))
        .map(sentences)
        .filter(|s| !s.is_empty())
        .map(|s| s.join(" "))
        .collect()
}

/// The ids of the validation and test splits (all classes) of a labeling run's `splits.json`.
/// Dropped entities are in no split and so are not returned.
pub fn heldout_ids(splits_json: &Path) -> Result<BTreeSet<String>> {
    let bytes = std::fs::read(splits_json).with_context(|| format!("{}: cannot read", splits_json.display()))?;
    let splits: Splits = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a splits.json of a labeling run", splits_json.display()))?;
    Ok(splits.validation.into_values().chain(splits.test.into_values()).flatten().collect())
}

/// Entity ids from a text file, one per line (blank lines and lines starting with `#` skipped).
pub fn read_ids(path: &Path) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect())
}

/// A digest of everything besides the rows that decides the entity documents: the templates
/// of the question table, the value limit and the excluded ids. Part of the corpus recipe.
pub fn recipe_digest(exclude: &BTreeSet<String>) -> String {
    let mut h = Sha256::new();
    h.update(b"entity sentences v2: questions::declarative + questions::statement\n");
    for spec in questions::ATTRIBUTES {
        let t = questions::declarative(spec.entity_type, spec.name).unwrap_or("");
        h.update(format!("{}\t{}\t{t}\n", spec.entity_type, spec.name).as_bytes());
    }
    h.update(format!("max_values {MAX_VALUES}\n").as_bytes());
    for id in exclude {
        h.update(format!("exclude {id}\n").as_bytes());
    }
    crate::fsio::hex(&h.finalize())
}
