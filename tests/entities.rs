//! Entity datasets and labeling: bad rows reported and skipped, resumable runs that neither lose
//! nor duplicate answers, splits without leaks, and the real default model on famous entities.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use knowlens::entities::dataset::{self, Require};
use knowlens::entities::decide::{self, Class};
use knowlens::entities::label::{self, LabelOptions, Mode, QuestionRecord, TemplateTable};
use knowlens::entities::questions::{self, EntityType};
use knowlens::entities::run::{self, RunConfig, TemplateChoice};
use knowlens::Precision;

fn knowlens() -> Command {
    Command::new(env!("CARGO_BIN_EXE_knowlens"))
}

/// `n` synthetic movies with every attribute, as JSONL.
fn movies(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"movie/{i}","type":"movie","name":"Film number {i}","attributes":{{"director":["Jane Doe"],"release_year":["{}"],"genre":["Drama"]}},"popularity_rank":{}}}"#,
                1950 + i % 60,
                i + 1
            ) + "\n"
        })
        .collect()
}

#[test]
fn bad_rows_are_reported_with_file_and_line_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.jsonl");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(movies(2).as_bytes()); // lines 1-2: good
    bytes.extend_from_slice(b"{\"id\": \"movie/x\", \"type\": \"movie\", \"name\": \n"); // 3: malformed
    bytes.extend_from_slice(br#"{"id":"movie/y","type":"movie","name":"Y","attributes":{"budget":["3"]}}"#); // 4
    bytes.push(b'\n');
    bytes.extend_from_slice(br#"{"id":"movie/z","type":"movie","name":"Z","attributes":{}}"#); // 5: no attributes
    bytes.push(b'\n');
    bytes.extend_from_slice(b"{\"id\":\"movie/w\",\"type\":\"movie\",\"name\":\"caf\xe9\",\"attributes\":{\"genre\":[\"Drama\"]}}\n"); // 6: not UTF-8
    bytes.extend_from_slice(br#"{"id":"movie/0","type":"movie","name":"Again","attributes":{"genre":["Drama"]}}"#); // 7: duplicate id
    bytes.push(b'\n');
    bytes.extend_from_slice(br#"{"id":"movie/v","type":"movie","name":"V","attributes":{"release_year":["nineteen"]}}"#); // 8
    bytes.push(b'\n');
    bytes.extend_from_slice(br#"{"id":"movie/u","type":"spaceship","name":"U","attributes":{"genre":["Drama"]}}"#); // 9
    bytes.push(b'\n');
    std::fs::write(&path, &bytes).unwrap();

    let report = dataset::load(&[path.clone()], Require::Attributes).unwrap();
    assert_eq!(report.entities.len(), 2);
    let lines: Vec<usize> = report.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9]);
    let text: Vec<String> = report.skipped.iter().map(|s| s.to_string()).collect();
    assert!(text.iter().all(|t| t.contains("mixed.jsonl:")), "{text:?}");
    assert!(text[1].contains("unknown attribute \"budget\""), "{}", text[1]);
    assert!(text[2].contains("no attributes"), "{}", text[2]);
    assert!(text[3].contains("not UTF-8"), "{}", text[3]);
    assert!(text[4].contains("duplicate id"), "{}", text[4]);
    assert!(text[5].contains("not a non-negative integer"), "{}", text[5]);
    assert!(text[6].contains("malformed row"), "{}", text[6]);

    // The command prints every skipped row and the count, and goes on with the rest.
    let out = knowlens()
        .args(["label", "--model", fixture("tiny/gemma3").to_str().unwrap(), "--entities", path.to_str().unwrap()])
        .args(["--out", dir.path().join("out").to_str().unwrap(), "--templates", "paper"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("7 rows skipped in all"), "{err}");
    assert!(err.contains("mixed.jsonl:4: entity \"movie/y\": unknown attribute"), "{err}");
}

#[test]
fn a_missing_entity_file_is_an_error_naming_it() {
    let err = dataset::load(&["/nonexistent/e.jsonl".into()], Require::Attributes).err().unwrap();
    assert!(format!("{err:#}").contains("/nonexistent/e.jsonl"));
}

fn records(path: &Path) -> Vec<QuestionRecord> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn killed_labeling_resumes_without_losing_or_duplicating_answers() {
    let dir = tempfile::tempdir().unwrap();
    let ents = dir.path().join("movies.jsonl");
    std::fs::write(&ents, movies(150)).unwrap();
    let out = dir.path().join("out");
    let args = |mode: &str| {
        let mut c = knowlens();
        c.args(["label", "--model", fixture("tiny/gemma3").to_str().unwrap(), "--entities", ents.to_str().unwrap()])
            .args(["--out", out.to_str().unwrap(), "--templates", "paper", "--batch-size", "3", "--mode", mode]);
        c
    };
    // Kill -9 once the first answers are on disk.
    let mut child = args("sampled").arg("--samples").arg("4").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let store = out.join("sampled/completions.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::metadata(&store).map(|m| m.len()).unwrap_or(0) == 0 && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = records(&store).len();
    assert!(before > 0 && before < 450, "the kill should land mid-run ({before} of 450 answered)");
    // A torn last line, as if killed mid-write.
    std::fs::OpenOptions::new().append(true).open(&store).and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"entity_id\":\"mov")).unwrap();

    let st = args("sampled").arg("--samples").arg("4").output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let after = records(&store);
    assert_eq!(after.len(), 450, "150 entities × 3 attributes");
    let keys: HashSet<String> = after.iter().map(|r| format!("{}\t{}", r.entity_id, r.attribute)).collect();
    assert_eq!(keys.len(), 450, "no duplicates");
    assert!(after.iter().all(|r| r.samples.len() == 4 && r.greedy.is_some()));
    // Samples are seeded by what is asked, not by the batch: a fresh uninterrupted run agrees.
    let fresh = dir.path().join("fresh");
    let st = knowlens()
        .args(["label", "--model", fixture("tiny/gemma3").to_str().unwrap(), "--entities", ents.to_str().unwrap()])
        .args(["--out", fresh.to_str().unwrap(), "--templates", "paper", "--batch-size", "3", "--mode", "sampled", "--samples", "4"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let mut a: Vec<(String, Vec<String>)> = after.iter().map(|r| (r.key_string(), r.samples.iter().map(|s| s.text.clone()).collect())).collect();
    let mut b: Vec<(String, Vec<String>)> =
        records(&fresh.join("sampled/completions.jsonl")).iter().map(|r| (r.key_string(), r.samples.iter().map(|s| s.text.clone()).collect())).collect();
    a.sort();
    b.sort();
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    // Batches differ between the runs (padding), which can flip a near-tie of the tiny random
    // model; nearly every question must agree.
    assert!(same as f64 >= 0.95 * a.len() as f64, "{same} of {} questions agree", a.len());

    // Outputs exist, and the splits partition the labeled entities.
    for f in ["labels.jsonl", "splits.json", "controls.json", "summary.md", "summary.json", "accuracy.svg", "classes.svg"] {
        assert!(out.join("sampled").join(f).exists(), "{f}");
    }
}

trait KeyString {
    fn key_string(&self) -> String;
}
impl KeyString for QuestionRecord {
    fn key_string(&self) -> String {
        format!("{}\t{}", self.entity_id, self.attribute)
    }
}

#[test]
fn splits_are_disjoint_stratified_and_seeded() {
    let mut labels = Vec::new();
    for t in [EntityType::Movie, EntityType::City] {
        for i in 0..100 {
            let n_correct = if i % 3 == 0 { 3 } else { 0 };
            labels.push(decide::EntityLabel {
                id: format!("{t}/{i}"),
                entity_type: t,
                name: format!("n{i}"),
                popularity_rank: None,
                n_attributes: 3,
                n_correct,
                class: decide::classify(n_correct, 2),
                records: vec![],
            });
        }
    }
    let s = decide::split(&labels, 42);
    let all: Vec<&String> = [&s.train, &s.validation, &s.test].iter().flat_map(|m| m.values().flatten()).collect();
    assert_eq!(all.len(), 200);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 200, "an entity in two splits");
    // 50/10/40 within each (type, class): 34 known movies → 17 / 3 / 14.
    let known_train_movies = s.train[&Class::Known].iter().filter(|i| i.starts_with("movie/")).count();
    assert_eq!(known_train_movies, 17);
    assert_eq!(s.test[&Class::Unknown].len(), 2 * 26);
    let again = decide::split(&labels, 42);
    assert_eq!(again.train, s.train);
    assert_ne!(decide::split(&labels, 7).train, s.train);
}

#[test]
fn every_attribute_has_a_template_per_type_and_answers_are_judged() {
    for a in questions::ATTRIBUTES {
        assert!(!a.base.is_empty() && a.base.iter().all(|t| t.contains("{e}")), "{}.{}", a.entity_type, a.name);
        assert!(a.chat.contains("{e}"));
    }
    for t in EntityType::ALL {
        assert!(questions::attributes_of(t).count() >= 3, "{t}");
    }
}

/// The default model on entities it knows and on ones nobody knows, in every mode.
#[test]
fn default_model_labels_famous_and_obscure_entities() {
    let model = real("gemma-3-270m", Precision::F32);
    let dir = tempfile::tempdir().unwrap();
    let rows = r#"{"id":"city/paris","type":"city","name":"Paris","attributes":{"country":["France"],"region":["Île-de-France"],"population":["2148000"]},"popularity_rank":1}
{"id":"city/tokyo","type":"city","name":"Tokyo","attributes":{"country":["Japan"],"region":["Tōkyō"],"population":["37977000"]},"popularity_rank":2}
{"id":"city/zzz","type":"city","name":"Vrbovec Pusti","attributes":{"country":["Croatia"],"region":["Zagrebačka"],"population":["1200"]},"popularity_rank":30000}
"#;
    let path = dir.path().join("cities.jsonl");
    std::fs::write(&path, rows).unwrap();
    let entities = dataset::load(&[path], Require::Attributes).unwrap().entities;
    let templates: TemplateTable = [(label::template_key(EntityType::City, "country"), 1)].into_iter().collect();
    let qs = label::questions_for(&model, &entities, &templates, false).unwrap();
    let country: Vec<&label::Question> = qs.iter().filter(|q| q.spec.name == "country").collect();
    assert_eq!(country[0].prompt, "The city of 'Paris' is located in the country of");
    for mode in [Mode::Greedy, Mode::Likelihood, Mode::Sampled] {
        let opts = LabelOptions { mode, samples: 5, min_correct_samples: 3, ..Default::default() };
        let recs = label::answer(&model, &country, &opts).unwrap();
        assert!(recs[0].correct && recs[1].correct, "{mode:?}: Paris → France, Tokyo → Japan: {recs:#?}");
        if mode == Mode::Likelihood {
            assert!(recs[0].likelihood[0].first_token_prob > 0.3, "{:?}", recs[0].likelihood);
        }
    }
    // A whole (tiny) run writes every output, and a rerun asks nothing new.
    let cfg = RunConfig {
        out: dir.path().join("out"),
        opts: LabelOptions::default(),
        known_min: 2,
        templates: TemplateChoice::Paper,
        dev_size: 2,
        split_seed: 42,
        quiet: true,
    };
    let first = run::run(&model, &entities, &[], &cfg).unwrap();
    assert_eq!(first.asked_now, 9);
    let second = run::run(&model, &entities, &[], &cfg).unwrap();
    assert_eq!((second.asked_now, second.already_done), (0, 9));
    assert_eq!(first.labels.len(), 3);
}
