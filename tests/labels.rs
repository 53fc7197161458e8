//! The committed labels (data/labels/) and a labeling run's outputs load as typed values, and
//! their files agree with each other.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::check_label_outputs;
use knowlens::entities::decide::Class;
use knowlens::entities::label::Mode;
use knowlens::entities::label_set::{LabelSet, Split};
use knowlens::entities::EntityType;

fn committed(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/labels/gemma-3-270m").join(dir)
}

/// v2/estimate/summary.md: 8,355 entities of six types; people and cities have at least 30 known
/// and 30 unknown test entities each, so a claim across types can be tested on them.
#[test]
fn committed_v2_labels_have_two_types_with_known_test_entities() {
    let set = check_label_outputs(&committed("v2/estimate"));
    assert_eq!((set.mode, set.known_min), (Some(Mode::Estimate), Some(2)));
    assert_eq!(set.entities.len(), 8355);
    assert_eq!(set.class_counts(), [349, 5598, 2408]);
    let in_test = |t: EntityType, c: Class| {
        set.by_type()[&t].iter().filter(|e| e.class() == c && e.split == Some(Split::Test)).count()
    };
    let counts: Vec<(EntityType, usize, usize)> = [EntityType::Person, EntityType::City, EntityType::Company]
        .into_iter()
        .map(|t| (t, in_test(t, Class::Known), in_test(t, Class::Unknown)))
        .collect();
    assert_eq!(
        counts,
        vec![(EntityType::Person, 75, 249), (EntityType::City, 43, 183), (EntityType::Company, 17, 235)]
    );
    assert_eq!(set.fabricated_ids().len(), 2400);
}

#[test]
fn committed_estimate_labels_match_their_summary() {
    let set = check_label_outputs(&committed("estimate"));
    assert_eq!((set.mode, set.known_min), (Some(Mode::Estimate), Some(2)));
    // estimate/summary.md: 6000 entities, 39 known, 4601 unknown, 1360 dropped; 34 matched pairs
    // (train 15, validation 4, test 15); 1600 fabricated names.
    assert_eq!(set.entities.len(), 6000);
    assert_eq!(set.class_counts(), [39, 4601, 1360]);
    let by_type = set.by_type();
    assert_eq!(by_type.len(), 4);
    assert!(by_type.values().all(|v| v.len() == 1500));
    let known_players = by_type[&EntityType::Player].iter().filter(|e| e.class() == Class::Known).count();
    assert_eq!(known_players, 0);
    assert_eq!(set.matched().0.len(), 34);
    assert_eq!(set.fabricated_ids().len(), 1600);
    // Matched pairs lie inside their split, on the same type.
    let mut pairs = 0;
    for split in Split::ALL {
        let (k, u) = set.matched_in(split);
        assert_eq!(k.len(), u.len());
        assert!(k.iter().chain(&u).all(|e| e.split == Some(split)));
        let types = |v: &[&knowlens::entities::label_set::LabeledEntity]| {
            let mut t: Vec<EntityType> = v.iter().map(|e| e.entity_type()).collect();
            t.sort();
            t
        };
        assert_eq!(types(&k), types(&u));
        pairs += k.len();
    }
    assert_eq!(pairs, 34);
    // 50 / 10 / 40 per (type, class), over whole groups.
    let train = set.entities(Split::Train, Class::Known).len();
    let val = set.entities(Split::Validation, Class::Known).len();
    let test = set.entities(Split::Test, Class::Known).len();
    assert_eq!((train, val, test), (20, 4, 15));
    // Only counting attributes are asked, each with an estimate, and known rests on them.
    let pulp = set.get("movie/tt0110912").unwrap();
    assert_eq!((pulp.name(), pulp.class(), pulp.popularity_rank()), ("Pulp Fiction", Class::Known, Some(4)));
    assert!(pulp
        .label
        .records
        .iter()
        .all(|r| r.estimate.is_some() && ["actor", "director", "screenwriter"].contains(&r.attribute.as_str())));
    // Tokyo's region is "Tokyo": matching it would echo the name, so one counting attribute is
    // left and the city cannot be known: dropped, with the reason.
    let tokyo = set.get("city/1392685764").unwrap();
    assert_eq!((tokyo.name(), tokyo.class(), tokyo.split), ("Tokyo", Class::Dropped, None));
    assert!(tokyo.label.note.as_deref().unwrap().contains("1 counting attributes"));
    // Same-name entities and franchise members share a split.
    for g in &set.splits.groups {
        let splits: Vec<Option<Split>> = g.iter().map(|id| set.get(id).unwrap().split).collect();
        assert!(splits.windows(2).all(|w| w[0] == w[1]), "{g:?}");
    }
}

/// greedy/: the 20,693 greedy answers of the first run, judged by today's rule.
const GREEDY_COUNTS: [usize; 3] = [95, 4350, 1555];

#[test]
fn committed_sampled_and_greedy_labels_load() {
    for (dir, mode, counts) in [("sampled-300", Mode::Sampled, [2, 227, 71]), ("greedy", Mode::Greedy, GREEDY_COUNTS)] {
        let set = check_label_outputs(&committed(dir));
        assert_eq!(set.mode, Some(mode), "{dir}");
        assert_eq!(set.class_counts(), counts, "{dir}");
    }
}

/// A copy of a committed mode directory with labels.jsonl uncompressed, as `knowlens label`
/// writes it.
fn uncompressed_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["splits.json", "controls.json", "summary.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(from.join("labels.jsonl.gz")).unwrap()),
        &mut text,
    )
    .unwrap();
    std::fs::write(to.join("labels.jsonl"), text).unwrap();
}

#[test]
fn plain_and_gzipped_labels_load_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("sampled");
    uncompressed_copy(&committed("sampled-300"), &plain);
    let a = LabelSet::load(&committed("sampled-300")).unwrap();
    let b = check_label_outputs(&plain);
    assert_eq!(a.entities.len(), b.entities.len());
    for (x, y) in a.entities.iter().zip(&b.entities) {
        assert_eq!(
            (x.id(), x.class(), x.split, x.label.records.len()),
            (y.id(), y.class(), y.split, y.label.records.len())
        );
    }
    // Without summary.json the labels still load (mode unknown).
    std::fs::remove_file(plain.join("summary.json")).unwrap();
    let c = LabelSet::load(&plain).unwrap();
    assert_eq!((c.mode, c.entities.len()), (None, 300));
}

#[test]
fn damaged_label_files_are_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("sampled");
    uncompressed_copy(&committed("sampled-300"), &d);
    let err = |d: &Path| format!("{:#}", LabelSet::load(d).unwrap_err());

    // A torn third line.
    let text = std::fs::read_to_string(d.join("labels.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let third = lines[2].to_string();
    lines[2] = &third[..third.len() / 2];
    std::fs::write(d.join("labels.jsonl"), lines.join("\n")).unwrap();
    let e = err(&d);
    assert!(e.contains("labels.jsonl:3"), "{e}");

    // A split listing an entity that is not labeled.
    std::fs::write(d.join("labels.jsonl"), &text).unwrap();
    let splits = std::fs::read_to_string(d.join("splits.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&splits).unwrap();
    v["test"]["unknown"].as_array_mut().unwrap().push("movie/not-labeled".into());
    std::fs::write(d.join("splits.json"), v.to_string()).unwrap();
    let e = err(&d);
    assert!(e.contains("splits.json") && e.contains("movie/not-labeled"), "{e}");
    std::fs::write(d.join("splits.json"), &splits).unwrap();
    LabelSet::load(&d).unwrap();

    // No labels at all.
    std::fs::remove_file(d.join("labels.jsonl")).unwrap();
    let e = err(&d);
    assert!(e.contains("no labels.jsonl or labels.jsonl.gz"), "{e}");

    // A corrupt gzip stream names the file.
    let mut f = std::fs::File::create(d.join("labels.jsonl.gz")).unwrap();
    f.write_all(b"\x1f\x8b\x08\x00garbage").unwrap();
    let e = err(&d);
    assert!(e.contains("labels.jsonl.gz"), "{e}");
}

#[test]
fn split_names_round_trip() {
    for s in Split::ALL {
        assert_eq!(s.to_string().parse::<Split>().unwrap(), s);
    }
    assert!("dev".parse::<Split>().unwrap_err().to_string().contains("train, validation, test"));
}
