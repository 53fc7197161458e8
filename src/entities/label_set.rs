//! Reading a labeling run's outputs back as typed values: what `knowlens label` writes into a
//! mode directory (`labels.jsonl`, `splits.json`, `controls.json`, `summary.json`), or the same
//! files committed under data/labels/ with `labels.jsonl` gzipped.
//!
//! ```no_run
//! use knowlens::entities::decide::Class;
//! use knowlens::entities::label_set::{LabelSet, Split};
//! let labels = LabelSet::load("data/labels/gemma-3-270m/greedy".as_ref())?;
//! let known_train = labels.entities(Split::Train, Class::Known);
//! let unknown_train = labels.entities(Split::Train, Class::Unknown);
//! # anyhow::Ok(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::decide::{Class, Controls, EntityLabel, Splits};
use super::label::Mode;
use super::questions::EntityType;

pub const LABELS_FILE: &str = "labels.jsonl";
pub const LABELS_FILE_GZ: &str = "labels.jsonl.gz";
pub const SPLITS_FILE: &str = "splits.json";
pub const CONTROLS_FILE: &str = "controls.json";
pub const SUMMARY_FILE: &str = "summary.json";

/// Which part of the train / validation / test split an entity is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    Train,
    Validation,
    Test,
}

crate::names::named_enum!(Split, "split", Train => "train", Validation => "validation", Test => "test");

/// A split serializes as its name ("train", "validation", "test").
impl serde::Serialize for Split {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        ser.serialize_str(self.as_str())
    }
}

/// One labeled entity: its label (with every question record) and its split.
#[derive(Debug, Clone)]
pub struct LabeledEntity {
    pub label: EntityLabel,
    /// None for dropped entities, which are in no split.
    pub split: Option<Split>,
}

impl LabeledEntity {
    pub fn id(&self) -> &str {
        &self.label.id
    }
    pub fn entity_type(&self) -> EntityType {
        self.label.entity_type
    }
    pub fn name(&self) -> &str {
        &self.label.name
    }
    pub fn class(&self) -> Class {
        self.label.class
    }
    /// 1 = most popular of its type in the source table.
    pub fn popularity_rank(&self) -> Option<u64> {
        self.label.popularity_rank
    }
}

/// The outputs of one labeling mode, loaded and cross-checked.
#[derive(Debug, Clone)]
pub struct LabelSet {
    pub dir: PathBuf,
    /// From summary.json, when present.
    pub mode: Option<Mode>,
    pub known_min: Option<usize>,
    /// In file order.
    pub entities: Vec<LabeledEntity>,
    pub splits: Splits,
    /// The matched known / unknown sets and the matched fabricated names.
    pub controls: Controls,
    index: HashMap<String, usize>,
}

impl LabelSet {
    /// Loads `dir`: `labels.jsonl` (or `labels.jsonl.gz`), `splits.json`, `controls.json` and,
    /// if present, `summary.json`. Errors name the file (and line); ids in the splits or
    /// controls that are not labeled, or are in a split of another class, are errors too.
    pub fn load(dir: &Path) -> Result<Self> {
        let labels_path = labels_file(dir)?;
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let summary_path = dir.join(SUMMARY_FILE);
        let summary = if summary_path.exists() { Some(read(&summary_path)?) } else { None };
        Self::from_bytes(
            dir,
            &labels_path,
            &read(&labels_path)?,
            &read(&dir.join(SPLITS_FILE))?,
            &read(&dir.join(CONTROLS_FILE))?,
            summary.as_deref(),
        )
    }

    /// `load` over the files' bytes: `labels` is the file at `labels_path` (gzipped if its name
    /// ends in `.gz`), the others are `splits.json`, `controls.json` and `summary.json` (if any)
    /// of `dir`. Errors name the files.
    pub fn from_bytes(
        dir: &Path,
        labels_path: &Path,
        labels: &[u8],
        splits: &[u8],
        controls: &[u8],
        summary: Option<&[u8]>,
    ) -> Result<Self> {
        let labels = parse_entity_labels(labels, labels_path)?;
        let splits: Splits = parse_json(splits, &dir.join(SPLITS_FILE))?;
        let controls: Controls = parse_json(controls, &dir.join(CONTROLS_FILE))?;
        let (mode, known_min) = match summary {
            Some(bytes) => {
                let (m, k) = parse_summary(bytes, &dir.join(SUMMARY_FILE))?;
                (Some(m), Some(k))
            }
            None => (None, None),
        };
        let labels_path = labels_path.to_path_buf();

        let mut index = HashMap::new();
        for (i, l) in labels.iter().enumerate() {
            if index.insert(l.id.clone(), i).is_some() {
                bail!("{}: entity {:?} is labeled twice", labels_path.display(), l.id);
            }
        }
        let mut split_of: Vec<Option<Split>> = vec![None; labels.len()];
        let splits_path = dir.join(SPLITS_FILE);
        for split in Split::ALL {
            for (class, ids) in split_map(&splits, split) {
                for id in ids {
                    let Some(&i) = index.get(id) else {
                        bail!("{}: {split} id {id:?} is not in {}", splits_path.display(), labels_path.display());
                    };
                    if labels[i].class != *class {
                        bail!(
                            "{}: {id:?} is listed as {class:?} in {split} but labeled {:?}",
                            splits_path.display(),
                            labels[i].class
                        );
                    }
                    if let Some(other) = split_of[i].replace(split) {
                        bail!("{}: {id:?} is in both {other} and {split}", splits_path.display());
                    }
                }
            }
        }
        let controls_path = dir.join(CONTROLS_FILE);
        for (set, ids, class) in [
            ("matched_known", &controls.matched_known, Class::Known),
            ("matched_unknown", &controls.matched_unknown, Class::Unknown),
        ] {
            for id in ids {
                match index.get(id) {
                    Some(&i) if labels[i].class == class => {}
                    Some(&i) => bail!("{}: {set} holds {id:?}, labeled {:?}", controls_path.display(), labels[i].class),
                    None => bail!("{}: {set} id {id:?} is not in {}", controls_path.display(), labels_path.display()),
                }
            }
        }
        for (split, m) in &controls.by_split {
            let split: Split = split.parse().with_context(|| format!("{}: by_split", controls_path.display()))?;
            for id in m.known.iter().chain(&m.unknown) {
                match index.get(id) {
                    Some(&i) if split_of[i] == Some(split) => {}
                    _ => bail!("{}: {id:?} is matched in {split} but is not in that split", controls_path.display()),
                }
            }
        }
        let entities = labels.into_iter().zip(split_of).map(|(label, split)| LabeledEntity { label, split }).collect();
        Ok(Self { dir: dir.to_path_buf(), mode, known_min, entities, splits, controls, index })
    }

    /// Keeps only entities of these types (an empty list keeps all), e.g. to find directions
    /// within the one type a small model knows, where a direction fitted on every type would
    /// mostly separate that type from the others. Splits and controls name entities by id;
    /// those of dropped types are no longer found.
    pub fn retain_types(&mut self, types: &[EntityType]) {
        if types.is_empty() {
            return;
        }
        self.entities.retain(|e| types.contains(&e.entity_type()));
        self.index = self.entities.iter().enumerate().map(|(i, e)| (e.id().to_string(), i)).collect();
    }

    pub fn get(&self, id: &str) -> Option<&LabeledEntity> {
        self.index.get(id).map(|&i| &self.entities[i])
    }

    /// The entities of one class in one split, in file order.
    pub fn entities(&self, split: Split, class: Class) -> Vec<&LabeledEntity> {
        self.entities.iter().filter(|e| e.split == Some(split) && e.class() == class).collect()
    }

    /// The entities of one class (in any split, or none for dropped ones).
    pub fn of_class(&self, class: Class) -> Vec<&LabeledEntity> {
        self.entities.iter().filter(|e| e.class() == class).collect()
    }

    /// The entities per type, in file order.
    pub fn by_type(&self) -> BTreeMap<EntityType, Vec<&LabeledEntity>> {
        let mut out: BTreeMap<EntityType, Vec<&LabeledEntity>> = BTreeMap::new();
        for e in &self.entities {
            out.entry(e.entity_type()).or_default().push(e);
        }
        out
    }

    /// Entities per class: [known, unknown, dropped].
    pub fn class_counts(&self) -> [usize; 3] {
        [Class::Known, Class::Unknown, Class::Dropped].map(|c| self.entities.iter().filter(|e| e.class() == c).count())
    }

    /// The known and unknown entities matched on (type, name token count), in id order.
    pub fn matched(&self) -> (Vec<&LabeledEntity>, Vec<&LabeledEntity>) {
        let get = |ids: &[String]| ids.iter().filter_map(|id| self.get(id)).collect();
        (get(&self.controls.matched_known), get(&self.controls.matched_unknown))
    }

    /// The known and unknown entities matched within one split (on type, name token count and
    /// popularity band), in id order; empty for label files written before issue 9.
    pub fn matched_in(&self, split: Split) -> (Vec<&LabeledEntity>, Vec<&LabeledEntity>) {
        let Some(m) = self.controls.by_split.get(split.as_str()) else { return (Vec::new(), Vec::new()) };
        let get = |ids: &[String]| ids.iter().filter_map(|id| self.get(id)).collect();
        (get(&m.known), get(&m.unknown))
    }

    /// Ids of the fabricated names matched to the unknown set (their rows are in the entity
    /// dataset's fabricated.jsonl, not in the labels).
    pub fn fabricated_ids(&self) -> &[String] {
        &self.controls.fabricated
    }
}

fn split_map(s: &Splits, split: Split) -> &BTreeMap<Class, Vec<String>> {
    match split {
        Split::Train => &s.train,
        Split::Validation => &s.validation,
        Split::Test => &s.test,
    }
}

/// `labels.jsonl` if the directory has it, else `labels.jsonl.gz`.
pub fn labels_file(dir: &Path) -> Result<PathBuf> {
    for name in [LABELS_FILE, LABELS_FILE_GZ] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{}: no {LABELS_FILE} or {LABELS_FILE_GZ} (is this a labeling mode directory?)", dir.display())
}

/// Per-entity labels from a `labels.jsonl` or `labels.jsonl.gz`; errors name the file and line.
pub fn read_entity_labels(path: &Path) -> Result<Vec<EntityLabel>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    entity_labels_from(file, path)
}

/// `read_entity_labels` over the file's bytes (gzipped if `path` ends in `.gz`).
pub fn parse_entity_labels(bytes: &[u8], path: &Path) -> Result<Vec<EntityLabel>> {
    entity_labels_from(bytes, path)
}

fn entity_labels_from<R: Read>(raw: R, path: &Path) -> Result<Vec<EntityLabel>> {
    let reader: Box<dyn Read + '_> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: cannot read", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not an entity label", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T> {
    serde_json::from_slice(bytes).with_context(|| format!("{}: unexpected content", path.display()))
}

/// The mode and known_min recorded in summary.json.
fn parse_summary(bytes: &[u8], path: &Path) -> Result<(Mode, usize)> {
    let v: serde_json::Value = parse_json(bytes, path)?;
    let mode = v["mode"].as_str().with_context(|| format!("{}: no \"mode\"", path.display()))?;
    let mode: Mode = mode.parse().with_context(|| path.display().to_string())?;
    let known_min = v["known_min"].as_u64().with_context(|| format!("{}: no \"known_min\"", path.display()))?;
    Ok((mode, known_min as usize))
}
