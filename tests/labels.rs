//! The committed labels (data/labels/) and a labeling run's outputs load as typed values, and
//! their files agree with each other.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::check_label_outputs;
use knowlens::entities::decide::Class;
use knowlens::entities::label::Mode;
use knowlens::entities::labels::{LabelSet, Split};
use knowlens::entities::EntityType;

fn committed(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/labels/gemma-3-270m").join(dir)
}

#[test]
fn committed_greedy_labels_match_their_summary() {
    let set = check_label_outputs(&committed("greedy"));
    assert_eq!((set.mode, set.known_min), (Some(Mode::Greedy), Some(2)));
    // greedy/summary.md: 6000 entities, 434 known, 3798 unknown, 1768 dropped; 418 matched pairs,
    // 364 fabricated names.
    assert_eq!(set.entities.len(), 6000);
    assert_eq!(set.class_counts(), [434, 3798, 1768]);
    let by_type = set.by_type();
    assert_eq!(by_type.len(), 4);
    assert!(by_type.values().all(|v| v.len() == 1500));
    let known_players = by_type[&EntityType::Player].iter().filter(|e| e.class() == Class::Known).count();
    assert_eq!(known_players, 38);
    assert_eq!(set.matched().0.len(), 418);
    assert_eq!(set.fabricated_ids().len(), 364);
    // 50 / 10 / 40 per (type, class).
    let train = set.entities(Split::Train, Class::Known).len();
    let val = set.entities(Split::Validation, Class::Known).len();
    let test = set.entities(Split::Test, Class::Known).len();
    assert_eq!(train + val + test, 434);
    assert!((train as f64 / 434.0 - 0.5).abs() < 0.02 && (test as f64 / 434.0 - 0.4).abs() < 0.02, "{train} {val} {test}");
    let tokyo = set.get("city/1392685764").unwrap();
    assert_eq!((tokyo.name(), tokyo.entity_type(), tokyo.class(), tokyo.popularity_rank()), ("Tokyo", EntityType::City, Class::Known, Some(1)));
    assert!(tokyo.split.is_some());
}

#[test]
fn committed_likelihood_and_sampled_labels_load() {
    for (dir, mode, counts) in [("likelihood-400", Mode::Likelihood, [16, 311, 73]), ("sampled-100", Mode::Sampled, [4, 68, 28])] {
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
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(from.join("labels.jsonl.gz")).unwrap()), &mut text).unwrap();
    std::fs::write(to.join("labels.jsonl"), text).unwrap();
}

#[test]
fn plain_and_gzipped_labels_load_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("sampled");
    uncompressed_copy(&committed("sampled-100"), &plain);
    let a = LabelSet::load(&committed("sampled-100")).unwrap();
    let b = check_label_outputs(&plain);
    assert_eq!(a.entities.len(), b.entities.len());
    for (x, y) in a.entities.iter().zip(&b.entities) {
        assert_eq!((x.id(), x.class(), x.split, x.label.records.len()), (y.id(), y.class(), y.split, y.label.records.len()));
    }
    // Without summary.json the labels still load (mode unknown).
    std::fs::remove_file(plain.join("summary.json")).unwrap();
    let c = LabelSet::load(&plain).unwrap();
    assert_eq!((c.mode, c.entities.len()), (None, 100));
}

#[test]
fn damaged_label_files_are_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("sampled");
    uncompressed_copy(&committed("sampled-100"), &d);
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
