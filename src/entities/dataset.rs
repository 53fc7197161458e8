//! Entity tables: one JSON object per line (schema in data/entities/README.md).
//!
//! Loading never stops at a bad row: each malformed line is reported with its file and line
//! number and skipped, and the caller gets the count, so nothing is dropped silently.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::questions::{self, EntityType};

/// One real (or fabricated) entity with its gold attribute values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entity {
    pub id: String,
    #[serde(rename = "type")]
    pub entity_type: EntityType,
    pub name: String,
    /// Attribute name → gold values (numbers are decimal strings).
    #[serde(default)]
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Higher is more popular; comparable within a type only.
    #[serde(default)]
    pub popularity_score: Option<f64>,
    /// 1 = most popular of its type in the full source table.
    #[serde(default)]
    pub popularity_rank: Option<u64>,
    #[serde(default)]
    pub fabricated: bool,
    #[serde(default)]
    pub source: Option<String>,
}

/// Why a row was skipped.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedRow {
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for SkippedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// The rows that loaded and the ones that did not.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub entities: Vec<Entity>,
    pub skipped: Vec<SkippedRow>,
}

/// What `load` requires of each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require {
    /// At least one attribute, all of them known to the question table (for labeling).
    Attributes,
    /// A name and a type only (fabricated names, entity lists for activations).
    NameOnly,
}

/// Loads entity rows from JSONL files. Unreadable files are errors; bad rows are skipped and
/// reported. Duplicate ids (across all files) are skipped after the first.
pub fn load(paths: &[PathBuf], require: Require) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    let mut seen = HashSet::new();
    for path in paths {
        let bytes = std::fs::read(path).with_context(|| format!("reading entity file {}", path.display()))?;
        read_rows(&bytes, path, require, &mut seen, &mut report);
    }
    Ok(report)
}

/// The rows of one entity file already in memory (named `path` in the report), appended to
/// `report`; ids in `seen` (from earlier files) count as duplicates.
pub fn read_rows(bytes: &[u8], path: &Path, require: Require, seen: &mut HashSet<String>, report: &mut LoadReport) {
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let skip = |reason: String| SkippedRow { file: path.to_path_buf(), line, reason };
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(e) => {
                report.skipped.push(skip(format!("not UTF-8 text ({e})")));
                continue;
            }
        };
        match parse_row(text, require) {
            Ok(entity) => {
                if !seen.insert(entity.id.clone()) {
                    report.skipped.push(skip(format!("duplicate id {:?}", entity.id)));
                } else {
                    report.entities.push(entity);
                }
            }
            Err(reason) => report.skipped.push(skip(reason)),
        }
    }
}

fn parse_row(text: &str, require: Require) -> std::result::Result<Entity, String> {
    let entity: Entity = serde_json::from_str(text).map_err(|e| format!("malformed row: {e}"))?;
    if entity.id.trim().is_empty() {
        return Err("empty id".into());
    }
    if entity.name.trim().is_empty() {
        return Err(format!("entity {:?} has an empty name", entity.id));
    }
    if require == Require::Attributes {
        if entity.attributes.values().all(Vec::is_empty) {
            return Err(format!("entity {:?} ({}) has no attributes", entity.id, entity.name));
        }
        for (attr, values) in &entity.attributes {
            let Some(spec) = questions::attribute(entity.entity_type, attr) else {
                let known: Vec<&str> = questions::attributes_of(entity.entity_type).map(|a| a.name).collect();
                return Err(format!(
                    "entity {:?}: unknown attribute {attr:?} for type {} (known: {})",
                    entity.id,
                    entity.entity_type,
                    known.join(", ")
                ));
            };
            if let Some(bad) = values.iter().find(|v| !spec.kind.parses(v)) {
                return Err(format!(
                    "entity {:?}: attribute {attr:?} value {bad:?} is not {}",
                    entity.id,
                    spec.kind.describe()
                ));
            }
        }
    }
    Ok(entity)
}

/// Logs each skipped row (up to `max`) and the total as warnings.
pub fn log_skipped(skipped: &[SkippedRow], max: usize) {
    for s in skipped.iter().take(max) {
        log::warn!("skipped {s}");
    }
    if skipped.len() > max {
        log::warn!("... and {} more skipped rows", skipped.len() - max);
    }
    if !skipped.is_empty() {
        log::warn!("{} rows skipped in all", skipped.len());
    }
}

/// The entity files of a dataset, as found by `discover`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetFiles {
    /// Real entities, to label.
    pub real: Vec<PathBuf>,
    /// Fabricated names: the control set, never labeled.
    pub fabricated: Vec<PathBuf>,
}

/// Real entities and fabricated names, loaded.
#[derive(Debug, Default)]
pub struct Dataset {
    pub entities: Vec<Entity>,
    pub fabricated: Vec<Entity>,
    /// Rows skipped in either set (see `log_skipped`).
    pub skipped: Vec<SkippedRow>,
}

/// Expands entity paths the way `knowlens label --entities` reads them: a file is a set of real
/// entities; a directory contributes its `*.jsonl` files, except `fabricated.jsonl`, which is the
/// fabricated-name control set. Errors when a path does not exist or nothing is found.
pub fn discover(paths: &[PathBuf]) -> Result<DatasetFiles> {
    let mut files = DatasetFiles::default();
    for p in paths {
        if p.is_dir() {
            files.real.extend(dataset_files(p)?);
            let f = p.join(FABRICATED_FILE);
            if f.is_file() {
                files.fabricated.push(f);
            }
        } else if p.is_file() {
            files.real.push(p.clone());
        } else {
            bail!("entity path {} does not exist", p.display());
        }
    }
    if files.real.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        bail!("no entity files found in {}", shown.join(", "));
    }
    Ok(files)
}

impl DatasetFiles {
    /// Loads the real entities (each with attributes to ask about) and the fabricated names.
    pub fn load(&self) -> Result<Dataset> {
        let real = load(&self.real, Require::Attributes)?;
        let fabricated = load(&self.fabricated, Require::NameOnly)?;
        let mut skipped = real.skipped;
        skipped.extend(fabricated.skipped);
        Ok(Dataset { entities: real.entities, fabricated: fabricated.entities, skipped })
    }
}

impl Dataset {
    /// Keeps only real entities of these types (all of them if `types` is empty).
    pub fn retain_types(&mut self, types: &[EntityType]) {
        if !types.is_empty() {
            self.entities.retain(|e| types.contains(&e.entity_type));
        }
    }
}

/// The file of fabricated names in a dataset directory.
pub const FABRICATED_FILE: &str = "fabricated.jsonl";

/// Entity files under a dataset directory: every `*.jsonl` except fabricated names.
pub fn dataset_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading entity directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .filter(|p| p.file_name().is_some_and(|s| s != FABRICATED_FILE))
        .collect();
    files.sort();
    Ok(files)
}
