//! Short factual sentences generated from entity rows, to mix into the corpus.
//!
//! A row (one JSON object per line) is `{"id", "type", "name", "attributes": {attr: [values]}, ...}`
//! with type movie, city, player or song. Each entity becomes one document: one sentence per
//! attribute, e.g. "The movie 'Heat' was directed by Michael Mann."

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Deserialize, Debug, Clone)]
pub struct EntityRow {
    #[serde(default)]
    pub id: serde_json::Value,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, AttrValues>,
}

/// An attribute's values: a list, or a single value.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum AttrValues {
    Many(Vec<serde_json::Value>),
    One(serde_json::Value),
}

impl AttrValues {
    fn strings(&self) -> Vec<String> {
        let one = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.trim().to_string(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        match self {
            AttrValues::Many(v) => v.iter().map(one).filter(|s| !s.is_empty()).collect(),
            AttrValues::One(v) => Some(one(v)).filter(|s| !s.is_empty()).into_iter().collect(),
        }
    }
}

/// Reads JSON-lines files of entity rows (blank lines skipped); errors name the file and line.
pub fn read_rows(paths: &[impl AsRef<Path>]) -> Result<Vec<EntityRow>> {
    let mut rows = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        for (k, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row: EntityRow = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not an entity row", path.display(), k + 1))?;
            rows.push(row);
        }
    }
    if rows.is_empty() {
        bail!("--entities: no entity rows in {} file(s)", paths.len());
    }
    Ok(rows)
}

/// "a, b and c".
fn join_and(v: &[String]) -> String {
    match v {
        [] => String::new(),
        [a] => a.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The sentences about one entity, one per attribute with values (attributes in name order;
/// at most three values each).
pub fn sentences(row: &EntityRow) -> Vec<String> {
    let kind = row.kind.trim().to_lowercase();
    let name = row.name.trim();
    let mut out = Vec::new();
    for (attr, values) in &row.attributes {
        let mut vals = values.strings();
        vals.truncate(3);
        if vals.is_empty() {
            continue;
        }
        let v = join_and(&vals);
        // Attribute keys: "director", "movie_directors", "birth year" are all accepted.
        let key = attr.to_lowercase().replace(['_', '-'], " ");
        let key = key.strip_prefix(&format!("{kind} ")).unwrap_or(&key).trim().to_string();
        let s = match (kind.as_str(), key.as_str()) {
            ("movie", "director" | "directors") => format!("The movie '{name}' was directed by {v}."),
            ("movie", "writer" | "writers" | "screenwriter" | "screenwriters") => format!("The movie '{name}' was written by {v}."),
            ("movie", "cast" | "actor" | "actors" | "star" | "stars") => format!("The movie '{name}' stars {v}."),
            ("movie", "year" | "release year") => format!("The movie '{name}' was released in {v}."),
            ("movie", "genre" | "genres") => format!("The movie '{name}' is a {} film.", v.to_lowercase()),
            ("movie", "country") => format!("The movie '{name}' was made in {v}."),
            ("movie", "language") => format!("The movie '{name}' is in {v}."),
            ("movie", "duration" | "durations" | "runtime") => format!("The movie '{name}' runs {v} minutes."),
            ("city", "country") => format!("{name} is a city in {v}."),
            ("city", "region" | "admin name" | "state" | "province") => format!("The city of {name} is in {v}."),
            ("city", "population") => format!("The city of {name} has a population of {v}."),
            ("city", "elevation") => format!("The city of {name} lies {v} metres above sea level."),
            ("city", "capital") if matches!(v.as_str(), "true" | "primary" | "yes") => {
                format!("{name} is a capital city.")
            }
            ("city", "capital") => continue,
            ("player", "birth year" | "birthyear" | "date birth" | "year of birth") => format!("{name} was born in {v}."),
            ("player", "birthplace" | "birth place" | "place birth" | "birth city" | "place of birth") => {
                format!("{name} was born in {v}.")
            }
            ("player", "team" | "teams" | "teams list") => format!("{name} played for {v}."),
            ("player", "position") => format!("{name} played as {v}."),
            ("song", "artist" | "artists" | "performer" | "performers") => format!("The song '{name}' is performed by {v}."),
            ("song", "album") => format!("The song '{name}' appears on the album '{v}'."),
            ("song", "genre" | "genres") => format!("The song '{name}' is a {} song.", v.to_lowercase()),
            ("song", "composer" | "composers" | "writer") => format!("The song '{name}' was written by {v}."),
            ("song", "year" | "publication year") => format!("The song '{name}' was released in {v}."),
            (_, key) => format!("The {kind} '{name}' has {key} {v}."),
        };
        out.push(s);
    }
    out
}

/// One document per entity with at least one sentence.
pub fn documents(rows: &[EntityRow]) -> Vec<String> {
    rows.iter().map(sentences).filter(|s| !s.is_empty()).map(|s| s.join(" ")).collect()
}
