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
use knowlens::entities::matching::{judge, Outcome};
use knowlens::entities::questions::{self, EntityType};
use knowlens::entities::run::{self, RunConfig, TemplateChoice};
use knowlens::progress::Silent;
use knowlens::Precision;

fn knowlens() -> Command {
    Command::new(env!("CARGO_BIN_EXE_knowlens"))
}

/// `n` synthetic movies with every attribute, as JSONL.
fn movies(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"movie/{i}","type":"movie","name":"Film number {i}","attributes":{{"director":["Jane Doe{}"],"release_year":["{}"],"genre":["Drama"]}},"popularity_rank":{}}}"#,
                i % 17,
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
    bytes.extend_from_slice(
        b"{\"id\":\"movie/w\",\"type\":\"movie\",\"name\":\"caf\xe9\",\"attributes\":{\"genre\":[\"Drama\"]}}\n",
    ); // 6: not UTF-8
    bytes.extend_from_slice(br#"{"id":"movie/0","type":"movie","name":"Again","attributes":{"genre":["Drama"]}}"#); // 7: duplicate id
    bytes.push(b'\n');
    bytes
        .extend_from_slice(br#"{"id":"movie/v","type":"movie","name":"V","attributes":{"release_year":["nineteen"]}}"#); // 8
    bytes.push(b'\n');
    bytes.extend_from_slice(br#"{"id":"movie/u","type":"spaceship","name":"U","attributes":{"genre":["Drama"]}}"#); // 9
    bytes.push(b'\n');
    std::fs::write(&path, &bytes).unwrap();

    let report = dataset::load(std::slice::from_ref(&path), Require::Attributes).unwrap();
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
    // SIGKILL after 5 stored batches of 3 questions (the hidden --abort-after-batches kills the
    // process from inside, so the kill lands mid-run whatever the machine's speed).
    let st = args("sampled")
        .args(["--samples", "4", "--abort-after-batches", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success(), "the run should have been killed");
    let store = out.join("sampled/completions.jsonl");
    let before = records(&store).len();
    assert_eq!(before, 15, "5 batches of 3 questions stored before the kill");
    assert!(!out.join("sampled/labels.jsonl").exists(), "a killed run writes no labels");
    // A torn last line, as if killed mid-write.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&store)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"entity_id\":\"mov"))
        .unwrap();

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
        .args([
            "--out",
            fresh.to_str().unwrap(),
            "--templates",
            "paper",
            "--batch-size",
            "3",
            "--mode",
            "sampled",
            "--samples",
            "4",
        ])
        .output()
        .unwrap();
    assert!(st.status.success());
    let mut a: Vec<(String, Vec<String>)> =
        after.iter().map(|r| (r.key_string(), r.samples.iter().map(|s| s.text.clone()).collect())).collect();
    let mut b: Vec<(String, Vec<String>)> = records(&fresh.join("sampled/completions.jsonl"))
        .iter()
        .map(|r| (r.key_string(), r.samples.iter().map(|s| s.text.clone()).collect()))
        .collect();
    a.sort();
    b.sort();
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    // Batches differ between the runs (padding), which can flip a near-tie of the tiny random
    // model; nearly every question must agree.
    assert!(same as f64 >= 0.95 * a.len() as f64, "{same} of {} questions agree", a.len());

    // Outputs exist and agree with each other.
    for f in
        ["labels.jsonl", "splits.json", "controls.json", "summary.md", "summary.json", "accuracy.svg", "classes.svg"]
    {
        assert!(out.join("sampled").join(f).exists(), "{f}");
    }
    let set = check_label_outputs(&out.join("sampled"));
    assert_eq!(set.entities.len(), 150);
    assert_eq!(set.mode, Some(Mode::Sampled));
    // The record of every attribute is the one in the completions file.
    for e in &set.entities {
        assert_eq!(e.label.records.len(), 3, "{}", e.id());
        for r in &e.label.records {
            let stored = after.iter().find(|a| a.entity_id == r.entity_id && a.attribute == r.attribute).unwrap();
            assert_eq!(stored.correct, r.correct);
            assert_eq!(r.correct, r.samples.iter().filter(|c| c.outcome == Outcome::Correct).count() >= 3, "{r:?}");
        }
    }
}

#[test]
fn killed_estimate_run_resumes_and_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let ents = dir.path().join("movies.jsonl");
    std::fs::write(&ents, movies(60)).unwrap();
    let run = |out: &Path, abort: Option<&str>| {
        let mut c = knowlens();
        c.args(["label", "--model", fixture("tiny/gemma3").to_str().unwrap(), "--entities", ents.to_str().unwrap()])
            .args(["--out", out.to_str().unwrap(), "--templates", "paper", "--batch-size", "4", "--mode", "estimate"]);
        if let Some(n) = abort {
            c.args(["--abort-after-batches", n]);
        }
        c.stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap()
    };
    let out = dir.path().join("out");
    assert!(!run(&out, Some("3")).success(), "the run should have been killed");
    let store = out.join("estimate/completions.jsonl");
    assert_eq!(records(&store).len(), 12, "3 batches of 4 questions stored before the kill");
    assert!(run(&out, None).success());
    // Only the counting attribute (director) is asked in estimate mode.
    let after = records(&store);
    assert_eq!(after.len(), 60);
    assert!(after.iter().all(|r| r.attribute == "director" && r.estimate.is_some_and(|p| (0.0..=1.0).contains(&p))));
    let fresh = dir.path().join("fresh");
    assert!(run(&fresh, None).success());
    let mut b = records(&fresh.join("estimate/completions.jsonl"));
    let mut a = after;
    a.sort_by_key(|r| r.entity_id.clone());
    b.sort_by_key(|r| r.entity_id.clone());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.entity_id, y.entity_id);
        assert!((x.estimate.unwrap() - y.estimate.unwrap()).abs() < 1e-4, "{x:?} {y:?}");
        assert_eq!(x.correct, x.estimate.unwrap() >= label::LabelOptions::default().threshold);
    }
    let set = check_label_outputs(&out.join("estimate"));
    assert_eq!(set.mode, Some(Mode::Estimate));
    // One counting attribute per movie, fewer than the 2 a known entity needs: all dropped, with a note.
    assert!(set.entities.iter().all(|e| e.class() == Class::Dropped && e.label.note.is_some()));
}

/// Cities a new user brings, judged as `knowlens label` judges them: country names through the
/// pycountry table, echoes and fragments never correct.
#[test]
fn new_cities_are_judged_through_country_names_without_echoes() {
    use knowlens::entities::matching::judge_answer;
    use knowlens::entities::questions::AnswerKind;
    let g = |v: &str| vec![v.to_string()];
    let cases: &[(&str, &str, &str, Outcome)] = &[
        ("Czechia", " the Czech Republic", "Ostrava", Outcome::Correct),
        ("Czech Republic", " Czechia", "Ostrava", Outcome::Correct),
        ("Russia", " the Russian Federation", "Tyumen", Outcome::Correct),
        ("Russian Federation", " Russia", "Tyumen", Outcome::Correct),
        ("Turkey", " Türkiye", "Konya", Outcome::Correct),
        ("Türkiye", " the Turkish Republic", "Konya", Outcome::Correct),
        ("South Korea", " the Republic of Korea", "Daegu", Outcome::Correct),
        ("Mexico", " the United States", "Tijuana", Outcome::Error),
        ("Tyumen Oblast", " Tyumen", "Tyumen", Outcome::Echo),
        ("St. Louis", " St", "Ozzie Smith", Outcome::Fragment),
    ];
    for (gold, answer, name, want) in cases {
        assert_eq!(judge_answer(AnswerKind::Name, &g(gold), answer, name), *want, "{gold:?} / {answer:?} / {name:?}");
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
                n_counting: 3,
                class: decide::classify(n_correct, 2),
                note: None,
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
        // The paper's types ask three or more attributes; every type has two that count
        // toward "known" (the paper's rule needs two).
        assert!(!t.is_paper_type() || questions::attributes_of(t).count() >= 3, "{t}");
        let counting = questions::attributes_of(t).filter(|a| knowlens::entities::rule::counts(t, a.name)).count();
        assert!(counting >= 2, "{t}: {counting} counting attributes");
    }
    // Per attribute: gold values, a completion that must be judged correct, one that must not.
    let cases: &[(&str, &str, &[&str], &str, &str)] = &[
        ("player", "birth_city", &["Chicago"], " Chicago, Illinois", " Boston"),
        ("player", "birth_year", &["1963"], " 1965", " 1950"),
        ("player", "team", &["Chicago Bulls"], " the Chicago Bulls", " the Boston Celtics"),
        ("movie", "director", &["Francis Ford Coppola"], " Francis Ford Coppola", " Steven Spielberg"),
        ("movie", "screenwriter", &["Mario Puzo"], " Mario Puzo and Coppola", " Robert Towne"),
        ("movie", "actor", &["Marlon Brando", "Al Pacino"], " Al Pacino", " Tom Hanks"),
        ("movie", "release_year", &["1972"], " 1973", " 1980"),
        ("movie", "genre", &["crime film"], " a crime drama", " a comedy"),
        ("city", "country", &["France"], " France", " Germany"),
        ("city", "region", &["Île-de-France"], " Île-de-France", " Bavaria"),
        ("city", "population", &["2148000"], " 2,100,000", " 100,000"),
        ("song", "artist", &["Queen"], " Queen", " The Beatles"),
        ("song", "album", &["A Night at the Opera"], " A Night at the Opera", " Abbey Road"),
        ("song", "genre", &["rock"], " rock", " jazz"),
        ("song", "release_year", &["1975"], " 1975", " 1976"),
        ("person", "country", &["Germany"], " Germany", " Austria"),
        ("person", "occupation", &["physicist", "scientist"], " a theoretical physicist", " a painter"),
        ("person", "birth_city", &["Ulm"], " Ulm, in the Kingdom of Württemberg", " Munich"),
        ("company", "country", &["Switzerland"], " Switzerland", " the Netherlands"),
        ("company", "industry", &["food", "beverages"], " food and beverages", " banking"),
    ];
    for a in questions::ATTRIBUTES {
        let Some((_, _, gold, right, wrong)) = cases.iter().find(|c| c.0 == a.entity_type.as_str() && c.1 == a.name)
        else {
            panic!("no judging case for {}.{}", a.entity_type, a.name)
        };
        let gold: Vec<String> = gold.iter().map(|g| g.to_string()).collect();
        assert!(gold.iter().all(|g| a.kind.parses(g)), "{}.{}: gold {gold:?}", a.entity_type, a.name);
        assert_eq!(
            judge(a.kind, &gold, right),
            Outcome::Correct,
            "{}.{}: {right:?} for {gold:?}",
            a.entity_type,
            a.name
        );
        assert_eq!(judge(a.kind, &gold, wrong), Outcome::Error, "{}.{}: {wrong:?} for {gold:?}", a.entity_type, a.name);
    }
    assert_eq!(cases.len(), questions::ATTRIBUTES.len());
}

/// A few-shot template names real entities as its examples ("Pablo Picasso was born in Spain.");
/// no entity of the committed dataset may be one of them, and no person or company may share an
/// example's last name or brand word ("Indira Gandhi", "Samsung SDI"): its prompt would hold its
/// own answer (tools/build_entities.py drops them). Every example is named in a template.
#[test]
fn no_entity_is_named_in_its_own_types_prompt_examples() {
    let files = dataset::discover(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("data/entities/v2")]).unwrap();
    let ds = files.load().unwrap();
    let words = |s: &str| -> Vec<String> {
        s.to_lowercase().split(|c: char| !c.is_alphanumeric()).map(str::to_string).collect()
    };
    for &(t, example) in questions::PROMPT_EXAMPLES {
        assert!(questions::attributes_of(t).any(|a| a.base.iter().any(|b| b.contains(example))), "{example}");
        let last = words(example).pop().unwrap();
        for e in ds.entities.iter().filter(|e| e.entity_type == t) {
            assert!(!e.name.eq_ignore_ascii_case(example), "{} is a prompt example", e.id);
            if !t.is_paper_type() {
                assert!(!words(&e.name).contains(&last), "{} ({}) shares {last:?} with a prompt example", e.name, e.id);
            }
        }
    }
}

/// The default model on entities it knows and on ones nobody knows, in every mode.
#[test]
fn default_model_labels_famous_and_obscure_entities() {
    let Some(model) = real_or_skip("gemma-3-270m", Precision::F32) else { return };
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
    for mode in [Mode::Greedy, Mode::Likelihood, Mode::Sampled, Mode::Estimate] {
        let opts = LabelOptions { mode, samples: 5, min_correct_samples: 3, ..Default::default() };
        let recs = label::answer(&model, &country, &opts).unwrap();
        assert!(recs[0].correct && recs[1].correct, "{mode:?}: Paris → France, Tokyo → Japan: {recs:#?}");
        // A village near Zagreb: the model does not know it is in Croatia.
        let obscure = &recs[2];
        assert!(!obscure.correct, "{mode:?}: Vrbovec Pusti → Croatia judged correct: {obscure:#?}");
        match mode {
            // It answers, confidently and wrongly.
            Mode::Greedy => {
                let g = obscure.greedy.as_ref().unwrap();
                assert!(g.text.contains("Czech Republic") && g.outcome == Outcome::Error, "{g:?}");
            }
            Mode::Likelihood => {
                assert!(recs[0].likelihood[0].first_token_prob > 0.3, "{:?}", recs[0].likelihood);
                let l = &obscure.likelihood[0];
                assert!(!l.argmax_all && l.first_token_prob < 0.2, "{l:?}");
            }
            Mode::Sampled => {
                let hits = obscure.samples.iter().filter(|c| c.outcome == Outcome::Correct).count();
                assert!(obscure.samples.len() == 5 && hits < 3, "{hits} of 5 samples say Croatia: {obscure:#?}");
            }
            // Every name of the gold country is scored ("Croatia", "Republic of Croatia", ...).
            Mode::Estimate => {
                let p = |r: &QuestionRecord| r.estimate.unwrap();
                assert!(p(&recs[0]) > 0.5 && p(&recs[1]) > 0.5, "{:?} {:?}", recs[0].likelihood, recs[1].likelihood);
                assert!(p(obscure) < 0.2 && obscure.likelihood.len() >= 2, "{obscure:#?}");
            }
        }
    }
    // A whole (tiny) run writes every output, and a rerun asks nothing new.
    let cfg = RunConfig { templates: TemplateChoice::Paper, dev_size: 2, ..RunConfig::new(dir.path().join("out")) };
    let first = run::run(&model, &entities, &[], &cfg, &Silent).unwrap();
    assert_eq!(first.asked_now, 9);
    let second = run::run(&model, &entities, &[], &cfg, &Silent).unwrap();
    assert_eq!((second.asked_now, second.already_done), (0, 9));
    assert_eq!(first.labels.len(), 3);
    // With the paper's templates the obscure city gets no attribute right: unknown.
    let zzz = first.labels.iter().find(|l| l.id == "city/zzz").unwrap();
    assert_eq!((zzz.n_correct, zzz.class), (0, Class::Unknown), "{zzz:#?}");
    let set = check_label_outputs(&dir.path().join("out/greedy"));
    assert_eq!(set.get("city/zzz").unwrap().class(), Class::Unknown);
    let classes: Vec<Class> = first.labels.iter().map(|l| l.class).collect();
    assert_eq!(set.entities.iter().map(|e| e.class()).collect::<Vec<_>>(), classes);
}
