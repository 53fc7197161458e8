//! From per-question records to per-entity labels, splits and confound controls.
//!
//! * `label_entities`: each record judged again by today's judge against the entity's usable gold
//!   values, then the entity classed by its counting attributes (`rule`).
//! * `dedupe`: near-identical names of one type (case, accents, punctuation, a leading "the")
//!   keep only the most popular entity; the others are dropped with a note.
//! * `split`: 50 / 10 / 40 per (type, class), assigning whole groups: every entity sharing a
//!   normalized name (across types too: the movie and the song "Sunday Bloody Sunday") and every
//!   movie of one franchise or remake family ("Iron Man", "Iron Man 2"; "Die Hard", "Die Hard
//!   with a Vengeance"; "Star Wars: Episode V ...") and a person with every entity whose name
//!   holds the person's full name ("Walt Disney", "The Walt Disney Company") land in one split.
//! * `controls`: within each split, known and unknown matched one to one on type, name token
//!   count and popularity band; fabricated names are their own control set, split by seed.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::dataset::Entity;
use super::label::{rejudge, LabelOptions, QuestionRecord};
use super::matching::thefuzz_process;
use super::questions::{self, EntityType};
use super::rule::{self, AttributeSet, Guessable};
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
    /// Counting attributes (`rule::counts`) reliably correct.
    pub n_correct: usize,
    /// Counting attributes asked with a usable gold value (0 in files written before issue 9).
    #[serde(default)]
    pub n_counting: usize,
    pub class: Class,
    /// Why an entity is dropped other than by its answers (near-duplicate name, too few usable
    /// counting attributes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub records: Vec<QuestionRecord>,
}

/// How records become classes.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub known_min: usize,
    /// The mode's judging options (min_correct_samples for sampled records).
    pub opts: &'a LabelOptions,
    pub attributes: AttributeSet,
    pub guessable: &'a Guessable,
}

/// Labels every entity all of whose questions have a record; entities still missing answers
/// are left out (their count is returned). Greedy and sampled records are judged again against
/// the usable gold values (`label::rejudge`).
pub fn label_entities(entities: &[Entity], records: &[QuestionRecord], rules: &Rules) -> (Vec<EntityLabel>, usize) {
    let mut by_entity: HashMap<&str, Vec<&QuestionRecord>> = HashMap::new();
    for r in records {
        by_entity.entry(r.entity_id.as_str()).or_default().push(r);
    }
    let mut labels = Vec::new();
    let mut incomplete = 0;
    for e in entities {
        let asked: Vec<&'static questions::AttributeSpec> = questions::attributes_of(e.entity_type)
            .filter(|s| rule::asks(e, s, rules.attributes, rules.guessable))
            .collect();
        let recs = by_entity.get(e.id.as_str()).cloned().unwrap_or_default();
        if asked.iter().any(|a| !recs.iter().any(|r| r.attribute == a.name)) {
            incomplete += 1;
            continue;
        }
        let mut out: Vec<QuestionRecord> = Vec::new();
        let mut n_counting = 0;
        let mut n_correct = 0;
        for spec in &asked {
            let mut r = recs.iter().find(|r| r.attribute == spec.name).map(|r| (*r).clone()).expect("checked above");
            let gold = rule::usable_gold(e, spec, rules.guessable);
            rejudge(&mut r, spec.kind, &gold, &e.name, rules.opts);
            if rule::counts(e.entity_type, spec.name) && !gold.is_empty() {
                n_counting += 1;
                n_correct += usize::from(r.correct);
            }
            out.push(r);
        }
        out.sort_by(|a, b| a.attribute.cmp(&b.attribute));
        let (class, note) = if n_counting < rules.known_min {
            (
                Class::Dropped,
                Some(format!(
                    "{n_counting} counting attributes with a usable gold value (fewer than {})",
                    rules.known_min
                )),
            )
        } else {
            (classify(n_correct, rules.known_min), None)
        };
        labels.push(EntityLabel {
            id: e.id.clone(),
            entity_type: e.entity_type,
            name: e.name.clone(),
            popularity_rank: e.popularity_rank,
            n_attributes: out.len(),
            n_correct,
            n_counting,
            class,
            note,
            records: out,
        });
    }
    (labels, incomplete)
}

/// A name as compared for duplicates: thefuzz's processing (lowercase, punctuation to spaces,
/// U+0080–U+00FF dropped, so "1º" = "1°"), a leading "the" removed, spaces collapsed.
pub fn name_key(name: &str) -> String {
    let p = thefuzz_process(name);
    let words: Vec<&str> = p.split_whitespace().collect();
    let words = if words.len() > 1 && words[0] == "the" { &words[1..] } else { &words[..] };
    words.join(" ")
}

/// A movie's franchise key: its name key before a subtitle (":" or " - "), without trailing
/// sequel markers (numbers, roman numerals, "part N", "chapter N", "episode N").
pub fn franchise_key(title: &str) -> String {
    let head = title.split(':').next().unwrap_or(title);
    let head = head.split(" - ").next().unwrap_or(head);
    let key = name_key(head);
    let mut words: Vec<&str> = key.split_whitespace().collect();
    const ROMAN: &[&str] = &["ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x"];
    while words.len() > 1 {
        let last = *words.last().expect("non-empty");
        if last.chars().all(|c| c.is_ascii_digit()) || ROMAN.contains(&last) {
            words.pop();
            if words.len() > 1
                && ["part", "chapter", "episode", "vol", "volume"].contains(words.last().expect("non-empty"))
            {
                words.pop();
            }
        } else {
            break;
        }
    }
    words.join(" ")
}

/// Drops all but the most popular of each set of entities of one type whose names have the same
/// `name_key`; returns how many were dropped.
pub fn dedupe(labels: &mut [EntityLabel]) -> usize {
    let mut best: HashMap<(EntityType, String), usize> = HashMap::new();
    for (i, l) in labels.iter().enumerate() {
        let k = (l.entity_type, name_key(&l.name));
        match best.get(&k) {
            Some(&j)
                if (labels[j].popularity_rank.unwrap_or(u64::MAX), &labels[j].id)
                    <= (l.popularity_rank.unwrap_or(u64::MAX), &l.id) => {}
            _ => {
                best.insert(k, i);
            }
        }
    }
    let mut n = 0;
    for i in 0..labels.len() {
        let k = (labels[i].entity_type, name_key(&labels[i].name));
        let j = best[&k];
        if j != i {
            let other = labels[j].id.clone();
            labels[i].class = Class::Dropped;
            labels[i].note = Some(format!("near-duplicate name of {other}"));
            n += 1;
        }
    }
    n
}

/// Union-find over entity indices.
struct Groups(Vec<usize>);

impl Groups {
    fn find(&mut self, i: usize) -> usize {
        let mut r = i;
        while self.0[r] != r {
            r = self.0[r];
        }
        let mut i = i;
        while self.0[i] != r {
            let next = self.0[i];
            self.0[i] = r;
            i = next;
        }
        r
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// Indices of `labels` that must share a split: same name key (any types), one movie franchise,
/// a person and whatever is named after them.
pub fn leak_groups(labels: &[&EntityLabel]) -> Vec<Vec<usize>> {
    let mut g = Groups((0..labels.len()).collect());
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut by_franchise: HashMap<String, usize> = HashMap::new();
    for (i, l) in labels.iter().enumerate() {
        if let Some(&j) = by_name.get(&name_key(&l.name)) {
            g.union(i, j);
        } else {
            by_name.insert(name_key(&l.name), i);
        }
        if l.entity_type == EntityType::Movie {
            let fk = franchise_key(&l.name);
            if let Some(&j) = by_franchise.get(&fk) {
                g.union(i, j);
            } else {
                by_franchise.insert(fk, i);
            }
        }
    }
    // A franchise title that starts another movie's title ("Die Hard" → "Die Hard with a
    // Vengeance"); one-word keys need 6 letters ("Psycho"), so "Up" or "Heat" starts nothing.
    for (i, l) in labels.iter().enumerate().filter(|(_, l)| l.entity_type == EntityType::Movie) {
        let key = name_key(&l.name);
        let words: Vec<&str> = key.split_whitespace().collect();
        for k in 1..words.len() {
            let prefix = words[..k].join(" ");
            if k == 1 && prefix.chars().count() < 6 {
                continue;
            }
            if let Some(&j) = by_franchise.get(&prefix) {
                g.union(i, j);
            }
        }
    }
    // A person's full name inside another entity's name ("Walt Disney" in "The Walt Disney
    // Company", "Emile Zola" in "The Life of Emile Zola"): knowing one gives the other away.
    let people: HashMap<String, usize> = labels
        .iter()
        .enumerate()
        .filter(|(_, l)| l.entity_type == EntityType::Person)
        .map(|(i, l)| (name_key(&l.name), i))
        .filter(|(k, _)| k.split_whitespace().count() >= 2)
        .collect();
    for (i, l) in labels.iter().enumerate().filter(|(_, l)| l.entity_type != EntityType::Person) {
        let key = name_key(&l.name);
        let words: Vec<&str> = key.split_whitespace().collect();
        for a in 0..words.len() {
            for b in a + 2..=words.len() {
                if let Some(&j) = people.get(&words[a..b].join(" ")) {
                    g.union(i, j);
                }
            }
        }
    }
    let mut out: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..labels.len() {
        let r = g.find(i);
        out.entry(r).or_default().push(i);
    }
    out.into_values().collect()
}

/// Train / validation / test ids per class.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Splits {
    pub seed: u64,
    pub fractions: [f64; 3],
    pub train: BTreeMap<Class, Vec<String>>,
    pub validation: BTreeMap<Class, Vec<String>>,
    pub test: BTreeMap<Class, Vec<String>>,
    /// Groups of more than one entity kept in one split (same name, one franchise), as ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Vec<String>>,
}

/// 50 / 10 / 40 per (type, class), seeded, over whole `leak_groups`: a group belongs to the
/// (type, class) of its smallest id; each such stratum's groups (sorted by smallest id) are
/// shuffled by a `crate::rng` stream derived from (seed, type, class) and filled into train until
/// half the stratum's entities are there, then validation to a tenth, then test. Dropped entities
/// are not split. With no group of two, this is a plain per-(type, class) shuffle and cut.
pub fn split(labels: &[EntityLabel], seed: u64) -> Splits {
    let fractions = [0.5, 0.1, 0.4];
    let mut s = Splits { seed, fractions, ..Default::default() };
    let kept: Vec<&EntityLabel> = labels.iter().filter(|l| l.class != Class::Dropped).collect();
    let groups = leak_groups(&kept);
    let mut strata: BTreeMap<(EntityType, Class), Vec<Vec<&EntityLabel>>> = BTreeMap::new();
    for g in &groups {
        let mut members: Vec<&EntityLabel> = g.iter().map(|&i| kept[i]).collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        if members.len() > 1 {
            s.groups.push(members.iter().map(|l| l.id.clone()).collect());
        }
        strata.entry((members[0].entity_type, members[0].class)).or_default().push(members);
    }
    for ((t, class), mut gs) in strata {
        gs.sort_by(|a, b| a[0].id.cmp(&b[0].id));
        // One generator per stratum, seeded from it, so adding a type never reshuffles another.
        shuffle(&mut gs, &mut SplitMix64::derive(seed, TAG_SPLIT, group_key(t, class as u64)));
        let n: usize = gs.iter().map(Vec::len).sum();
        let n_train = (n as f64 * fractions[0]).round() as usize;
        let n_val = ((n as f64 * fractions[1]).round() as usize).min(n - n_train);
        let (mut in_train, mut in_val) = (0, 0);
        for g in gs {
            let m = if in_train < n_train {
                in_train += g.len();
                &mut s.train
            } else if in_val < n_val {
                in_val += g.len();
                &mut s.validation
            } else {
                &mut s.test
            };
            for l in g {
                m.entry(l.class).or_default().push(l.id.clone());
            }
        }
    }
    for m in [&mut s.train, &mut s.validation, &mut s.test] {
        m.values_mut().for_each(|v| v.sort_unstable());
    }
    s.groups.sort();
    s
}

/// Number of tokens of the entity's name in the paper's latent-discovery prompt.
pub fn name_tokens(tok: &Tokenizer, t: EntityType, name: &str) -> Result<usize> {
    Ok(tok.span_positions(&questions::entity_prompt(t, name), name, true, false)?.len())
}

/// Known and unknown ids matched one to one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Matched {
    pub known: Vec<String>,
    pub unknown: Vec<String>,
}

/// Sets that let later analyses separate "unknown to the model" from confounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Controls {
    /// Known and unknown ids matched one to one on (split, type, name token count, popularity
    /// band): the union over splits.
    pub matched_known: Vec<String>,
    pub matched_unknown: Vec<String>,
    /// The matched pairs of each split (train / validation / test).
    #[serde(default)]
    pub by_split: BTreeMap<String, Matched>,
    /// Fabricated names (not real entities): their own control set, all of them.
    pub fabricated: Vec<String>,
    /// The fabricated names per split (50 / 10 / 40 per type, seeded).
    #[serde(default)]
    pub fabricated_by_split: BTreeMap<String, Vec<String>>,
    /// Popularity bands: per type, the upper popularity ranks of bands 0..4 (quintiles of the
    /// type's known and unknown entities); band 5 has no rank.
    #[serde(default)]
    pub popularity_bands: BTreeMap<EntityType, Vec<u64>>,
    /// Histograms of name token counts: set → type → count → entities.
    pub token_lengths: BTreeMap<String, BTreeMap<EntityType, BTreeMap<usize, usize>>>,
}

/// The stream index of a (type, class) or (type, name token count) group.
fn group_key(t: EntityType, k: u64) -> u64 {
    ((t as u64) << 32) | k
}

/// Band 0..4 of a popularity rank among `cuts` (quintile upper bounds); 5 without a rank.
fn band(rank: Option<u64>, cuts: &[u64]) -> usize {
    match rank {
        None => 5,
        Some(r) => cuts.iter().position(|&c| r <= c).unwrap_or(cuts.len().saturating_sub(1)),
    }
}

/// Within each split, known and unknown entities matched one to one in each (type, name token
/// count, popularity band) bucket, chosen at random (each bucket's sorted ids shuffled by a
/// stream derived from the seed and the bucket). Fabricated names are split 50 / 10 / 40 per type
/// by seed and kept apart.
pub fn controls(
    tok: &Tokenizer,
    labels: &[EntityLabel],
    splits: &Splits,
    fabricated: &[Entity],
    seed: u64,
) -> Result<Controls> {
    let split_of: HashMap<&str, &str> =
        [("train", &splits.train), ("validation", &splits.validation), ("test", &splits.test)]
            .into_iter()
            .flat_map(|(name, m)| m.values().flatten().map(move |id| (id.as_str(), name)))
            .collect();
    let mut cuts: BTreeMap<EntityType, Vec<u64>> = BTreeMap::new();
    for t in EntityType::ALL {
        let mut ranks: Vec<u64> = labels
            .iter()
            .filter(|l| l.entity_type == t && l.class != Class::Dropped)
            .filter_map(|l| l.popularity_rank)
            .collect();
        if ranks.is_empty() {
            continue;
        }
        ranks.sort_unstable();
        let q: Vec<u64> = (1..=5).map(|k| ranks[(k * ranks.len()).div_ceil(5).saturating_sub(1)]).collect();
        cuts.insert(t, q);
    }
    let mut buckets: BTreeMap<(&str, EntityType, usize, usize), [Vec<String>; 2]> = BTreeMap::new();
    let mut hist: BTreeMap<String, BTreeMap<EntityType, BTreeMap<usize, usize>>> = BTreeMap::new();
    let mut bump = |set: &str, t: EntityType, n: usize| {
        *hist.entry(set.into()).or_default().entry(t).or_default().entry(n).or_default() += 1
    };
    for l in labels {
        let side = match l.class {
            Class::Known => 0,
            Class::Unknown => 1,
            Class::Dropped => continue,
        };
        let Some(&split) = split_of.get(l.id.as_str()) else { continue };
        let n = name_tokens(tok, l.entity_type, &l.name)?;
        bump(if side == 0 { "known" } else { "unknown" }, l.entity_type, n);
        let b = band(l.popularity_rank, cuts.get(&l.entity_type).map(Vec::as_slice).unwrap_or(&[]));
        buckets.entry((split, l.entity_type, n, b)).or_default()[side].push(l.id.clone());
    }
    let mut by_split: BTreeMap<String, Matched> = BTreeMap::new();
    for ((split, t, n, b), [mut k, mut u]) in buckets {
        let split_index = ["train", "validation", "test"].iter().position(|s| *s == split).unwrap_or(0) as u64;
        let index = group_key(t, ((split_index * 8 + b as u64) << 16) | n as u64);
        let mut rng = SplitMix64::derive(seed, TAG_CONTROLS, index);
        k.sort_unstable();
        u.sort_unstable();
        shuffle(&mut k, &mut rng);
        shuffle(&mut u, &mut rng);
        let m = k.len().min(u.len());
        for _ in 0..m {
            bump("matched", t, n);
        }
        let entry = by_split.entry(split.to_string()).or_default();
        entry.known.extend(k.into_iter().take(m));
        entry.unknown.extend(u.into_iter().take(m));
    }
    let (mut mk, mut mu) = (Vec::new(), Vec::new());
    for m in by_split.values_mut() {
        m.known.sort_unstable();
        m.unknown.sort_unstable();
        mk.extend(m.known.iter().cloned());
        mu.extend(m.unknown.iter().cloned());
    }
    mk.sort_unstable();
    mu.sort_unstable();
    let mut fabricated_by_split: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut all_fab = Vec::new();
    for t in EntityType::ALL {
        let mut ids: Vec<String> = fabricated.iter().filter(|f| f.entity_type == t).map(|f| f.id.clone()).collect();
        for f in fabricated.iter().filter(|f| f.entity_type == t) {
            bump("fabricated_all", t, name_tokens(tok, t, &f.name)?);
        }
        ids.sort_unstable();
        all_fab.extend(ids.iter().cloned());
        shuffle(&mut ids, &mut SplitMix64::derive(seed, TAG_CONTROLS, group_key(t, 1 << 30)));
        let n = ids.len();
        let n_train = (n as f64 * 0.5).round() as usize;
        let n_val = ((n as f64 * 0.1).round() as usize).min(n - n_train);
        for (name, part) in [
            ("train", &ids[..n_train]),
            ("validation", &ids[n_train..n_train + n_val]),
            ("test", &ids[n_train + n_val..]),
        ] {
            fabricated_by_split.entry(name.to_string()).or_default().extend(part.iter().cloned());
        }
    }
    fabricated_by_split.values_mut().for_each(|v| v.sort_unstable());
    all_fab.sort_unstable();
    Ok(Controls {
        matched_known: mk,
        matched_unknown: mu,
        by_split,
        fabricated: all_fab,
        fabricated_by_split,
        popularity_bands: cuts,
        token_lengths: hist,
    })
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
            n_counting: 3,
            class: classify(n_correct, 2),
            note: None,
            records: vec![],
        }
    }

    fn named(t: EntityType, id: &str, name: &str) -> EntityLabel {
        EntityLabel { id: id.into(), name: name.into(), ..label(t, 0, 3) }
    }

    #[test]
    fn franchises_remakes_and_shared_names_stay_in_one_split() {
        assert_eq!(franchise_key("Iron Man 2"), "iron man");
        assert_eq!(franchise_key("Star Wars: Episode V - The Empire Strikes Back"), "star wars");
        assert_eq!(franchise_key("Rocky III"), "rocky");
        assert_eq!(name_key("1º De Julho"), name_key("1° de Julho"));
        assert_eq!(name_key("The Matrix"), "matrix");
        let mut labels = vec![
            named(EntityType::Movie, "movie/a", "Iron Man"),
            named(EntityType::Movie, "movie/b", "Iron Man 2"),
            named(EntityType::Movie, "movie/c", "Die Hard"),
            named(EntityType::Movie, "movie/d", "Die Hard with a Vengeance"),
            named(EntityType::Movie, "movie/e", "Sunday Bloody Sunday"),
            EntityLabel {
                class: Class::Unknown,
                n_correct: 0,
                ..named(EntityType::Song, "song/e", "Sunday Bloody Sunday")
            },
            named(EntityType::Movie, "movie/f", "Up"),
            named(EntityType::Movie, "movie/g", "Up in the Air"),
            named(EntityType::Person, "person/a", "Walt Disney"),
            named(EntityType::Company, "company/a", "The Walt Disney Company"),
            named(EntityType::Person, "person/b", "Emile Zola"),
            named(EntityType::Movie, "movie/h", "The Life of Emile Zola"),
            named(EntityType::Person, "person/c", "Nelson"),
            named(EntityType::Movie, "movie/i", "Nelson Mandela"),
        ];
        labels.extend((0..40).map(|i| label(EntityType::Movie, i + 100, 3)));
        for seed in 0..20 {
            let s = split(&labels, seed);
            let where_is = |id: &str| {
                [&s.train, &s.validation, &s.test].iter().position(|m| m.values().flatten().any(|x| x == id)).unwrap()
            };
            assert_eq!(where_is("movie/a"), where_is("movie/b"));
            assert_eq!(where_is("movie/c"), where_is("movie/d"));
            assert_eq!(where_is("movie/e"), where_is("song/e"));
            assert_eq!(where_is("person/a"), where_is("company/a"));
            assert_eq!(where_is("person/b"), where_is("movie/h"));
        }
        let s = split(&labels, 0);
        assert!(!s.groups.iter().any(|g| g.contains(&"movie/f".to_string())), "{:?}", s.groups);
        // A one-word name ("Nelson") is no full name: it joins nothing.
        assert!(!s.groups.iter().any(|g| g.contains(&"person/c".to_string())), "{:?}", s.groups);
        // Near-duplicates of one type: only the most popular stays.
        let mut dup = vec![
            EntityLabel { popularity_rank: Some(5), ..named(EntityType::Song, "song/1", "Knockin' On Heaven's Door") },
            EntityLabel { popularity_rank: Some(9), ..named(EntityType::Song, "song/2", "Knockin' on Heaven's Door") },
        ];
        assert_eq!(dedupe(&mut dup), 1);
        assert_eq!((dup[0].class, dup[1].class), (Class::Known, Class::Dropped));
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
        // Adding another type (or class) leaves this group's split as it was (names differ: a
        // city named like a movie would share its split).
        let mut more = movies.clone();
        more.extend((0..20).map(|i| EntityLabel { name: format!("c{i}"), ..label(EntityType::City, i, 0) }));
        more.extend((20..30).map(|i| label(EntityType::Movie, i, 0)));
        let both = split(&more, 42);
        assert_eq!(both.train[&Class::Known], alone.train[&Class::Known]);
        assert_eq!(both.test[&Class::Known], alone.test[&Class::Known]);
        assert_ne!(split(&movies, 43).train, alone.train);
    }
}
