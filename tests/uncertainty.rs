//! The uncertainty experiment on the tiny llama fixture (full attention, so the last prompt
//! token sees the entity's name): Welch's t against a hand computation, which questions are
//! kept and how entities are split, and a planted "will be wrong" latent found by the Welch-t
//! selection on train and holding up on test, through the library and the CLI.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use common::{fixture, tiny};
use knowlens::causal::uncertainty::questions::{self, Question};
use knowlens::causal::uncertainty::{self, report, Direction, Inputs, Options};
use knowlens::entities::label_set::{LabelSet, Split};
use knowlens::entities::questions::{attribute, fill};
use knowlens::entities::rule::Guessable;
use knowlens::entities::{Entity, EntityType};
use knowlens::progress::Silent;
use knowlens::rng::SplitMix64;
use knowlens::sae::Architecture;
use knowlens::stats::LogisticProbe;
use knowlens::{HookPoint, HookSpec, Model, Positions, Sae};
use serde_json::json;

const TYPES: [(EntityType, [&str; 2], &str); 3] = [
    (EntityType::Player, ["birth_city", "team"], "birth_year"),
    (EntityType::Movie, ["director", "screenwriter"], "release_year"),
    (EntityType::City, ["country", "region"], "population"),
];
/// Entities per type: 0..LABELLED are in the label set's splits (0..8 train, 8..12 test), the
/// rest are dropped (in no split) and get a split from the experiment.
const PER_TYPE: usize = 40;
const LABELLED: usize = 12;
/// The gold value every type's entity 1 has for its first attribute, made guessable.
const GUESSABLE_GOLD: &str = "Zland";

#[derive(Clone)]
struct Ent {
    id: String,
    t: EntityType,
    name: String,
    /// Every counting answer of the entity is wrong (else every one is correct).
    wrong: bool,
    split: Option<&'static str>,
}

/// Names are three tiny-vocabulary words; the middle one (w6x: answers correct, w7x: wrong) is
/// the planted feature. The quotes of the templates glue to the outer words.
fn ents() -> Vec<Ent> {
    let mut out = Vec::new();
    for (ti, (t, _, _)) in TYPES.iter().enumerate() {
        for i in 0..PER_TYPE {
            let wrong = i % 2 == 1;
            let a = 10 + (i * 7 + ti * 3) % 40;
            let b = if wrong { 70 } else { 60 } + i % 5;
            let c = 80 + (i * 3 + ti) % 10;
            let split = match i {
                0..8 => Some("train"),
                8..LABELLED => Some("test"),
                _ => None,
            };
            out.push(Ent { id: format!("{t}/{i:02}"), t: *t, name: format!("w{a} w{b} w{c}"), wrong, split });
        }
    }
    // A dropped movie with the name of a labelled test city: the two must share a split.
    let city_test = out.iter().find(|e| e.t == EntityType::City && e.split == Some("test")).unwrap().clone();
    let movie =
        out.iter_mut().find(|e| e.t == EntityType::Movie && e.split.is_none() && e.wrong == city_test.wrong).unwrap();
    movie.name = city_test.name.clone();
    out
}

fn dataset(ents: &[Ent]) -> Vec<Entity> {
    ents.iter()
        .map(|e| {
            let (_, attrs, other) = TYPES.iter().find(|x| x.0 == e.t).unwrap();
            let mut a = serde_json::Map::new();
            for (k, attr) in attrs.iter().enumerate() {
                let gold = if k == 0 && e.id.ends_with("/01") {
                    GUESSABLE_GOLD.to_string()
                } else {
                    format!("Gold {} {attr}", e.id)
                };
                a.insert(attr.to_string(), json!([gold]));
            }
            a.insert(other.to_string(), json!(["1990"]));
            serde_json::from_value(json!({"id": e.id, "type": e.t.to_string(), "name": e.name, "attributes": a,
                "popularity_rank": 1 + e.id.len()}))
            .unwrap()
        })
        .collect()
}

fn guessable() -> Guessable {
    let mut values = BTreeMap::new();
    for (t, attrs, _) in TYPES {
        values.insert(format!("{t}.{}", attrs[0]), BTreeMap::from([(GUESSABLE_GOLD.to_lowercase(), 0.5)]));
    }
    Guessable { values }
}

fn record(e: &Ent, attr: &str, correct: bool, prompt: Option<String>) -> serde_json::Value {
    let spec = attribute(e.t, attr).unwrap();
    let prompt = prompt.unwrap_or_else(|| fill(spec.base[1], &e.name));
    json!({"entity_id": e.id, "entity_type": e.t.to_string(), "attribute": attr, "template": 1, "prompt": prompt,
        "greedy": {"text": " w5", "outcome": if correct { "correct" } else { "error" }}, "correct": correct})
}

/// Writes a greedy label directory (and the guessable values) in `LabelSet`'s format.
fn write_labels(dir: &Path, ents: &[Ent], bad_prompt: bool) -> LabelSet {
    std::fs::create_dir_all(dir).unwrap();
    let mut lines = String::new();
    let mut splits: BTreeMap<&str, BTreeMap<&str, Vec<String>>> = BTreeMap::new();
    for e in ents {
        let (_, attrs, other) = TYPES.iter().find(|x| x.0 == e.t).unwrap();
        let mut recs: Vec<serde_json::Value> = attrs.iter().map(|a| record(e, a, !e.wrong, None)).collect();
        recs.push(record(e, other, true, None));
        if bad_prompt && e.id.ends_with("/03") {
            recs[0] = record(e, attrs[0], !e.wrong, Some("w5 w6".into()));
        }
        let class = match (e.split, e.wrong) {
            (None, _) => "dropped",
            (_, true) => "unknown",
            (_, false) => "known",
        };
        let row = json!({"id": e.id, "type": e.t.to_string(), "name": e.name, "popularity_rank": 1,
            "n_attributes": 3, "n_correct": if e.wrong { 0 } else { 2 }, "class": class, "records": recs});
        lines.push_str(&(row.to_string() + "\n"));
        if let Some(s) = e.split {
            splits.entry(s).or_default().entry(class).or_default().push(e.id.clone());
        }
    }
    std::fs::write(dir.join("labels.jsonl"), lines).unwrap();
    let part = |s: &str| json!(splits.get(s).cloned().unwrap_or_default());
    let s = json!({"seed": 0, "fractions": [0.5, 0.1, 0.4], "train": part("train"), "validation": {}, "test": part("test")});
    std::fs::write(dir.join("splits.json"), s.to_string()).unwrap();
    let controls = json!({"matched_known": [], "matched_unknown": [], "fabricated": [], "token_lengths": {}});
    std::fs::write(dir.join("controls.json"), controls.to_string()).unwrap();
    std::fs::write(dir.join("guessable.json"), serde_json::to_string(&guessable()).unwrap()).unwrap();
    LabelSet::load(dir).unwrap()
}

#[test]
fn welch_t_matches_a_hand_computation_and_selects_by_sign() {
    // Latent 0: wrong rows 2, 4, 6 (mean 4, variance 4); correct rows 1, 1, 2, 2 (mean 1.5,
    // variance 1/3). t = 2.5 / sqrt(4/3 + 1/12) = 2.1004201260; Welch df = 2.2519480519.
    // Latent 1 never fires; latent 2 fires more on correct answers.
    let col0 = [2.0, 4.0, 6.0, 1.0, 1.0, 2.0, 2.0];
    let col2 = [0.0, 0.0, 1.0, 3.0, 2.0, 3.0, 4.0];
    let f: Vec<f32> = (0..7).flat_map(|r| [col0[r], 0.0, col2[r]]).collect();
    let (wrong, correct) = ([0, 1, 2], [3, 4, 5, 6]);
    let w = uncertainty::welch_per_latent(&f, 3, &wrong, &correct);
    let w0 = w[0].unwrap();
    assert!((w0.t - 2.100420126042015).abs() < 1e-9, "{}", w0.t);
    assert!((w0.df - 2.2519480519480517).abs() < 1e-9, "{}", w0.df);
    assert!((w0.diff - 2.5).abs() < 1e-12);
    assert!(w[2].unwrap().t < -3.0);
    let freq = [1.0, 0.0, 5.0 / 7.0];
    assert_eq!(uncertainty::top_latents(&w, &freq, &[], 0.02, Direction::Wrong, 5), vec![0]);
    assert_eq!(uncertainty::top_latents(&w, &freq, &[], 0.02, Direction::Correct, 5), vec![2]);
    // A latent too frequent on corpus tokens is not selected.
    assert!(uncertainty::top_latents(&w, &freq, &[0.5, 0.0, 0.0], 0.02, Direction::Wrong, 5).is_empty());

    // Precision, recall and F1 of "wrong" at a threshold: scores of rows 0..6, rows 0..3 wrong.
    let scores = [0.9, 0.8, 0.1, 0.7, 0.2, 0.3];
    let is_wrong = [true, true, true, false, false, false];
    let m = uncertainty::metrics("all", &scores, &is_wrong, &[0, 1, 2, 3, 4, 5], 0.5, 50, 0);
    // Predicted wrong: rows 0, 1, 3 → tp 2, fp 1, fn 1.
    assert_eq!((m.precision, m.recall), (Some(2.0 / 3.0), Some(2.0 / 3.0)));
    assert!((m.f1.unwrap().value - 2.0 / 3.0).abs() < 1e-12);
    // AUROC: of the 9 (wrong, correct) pairs, 6 are ordered right (0.1 is below every correct).
    assert!((m.auroc.unwrap().value - 6.0 / 9.0).abs() < 1e-12);
}

#[test]
fn questions_are_usable_counting_answers_and_no_entity_is_in_two_splits() {
    let m = tiny("llama");
    let tmp = tempfile::tempdir().unwrap();
    let es = ents();
    let labels = write_labels(tmp.path(), &es, false);
    let (qs, counts) = questions::pool(&labels, &dataset(&es), &guessable(), 0).unwrap();
    let n = es.len();
    assert_eq!(counts.records, 3 * n);
    assert_eq!(counts.not_counting, n, "years and populations never count");
    assert_eq!(counts.unusable_gold, TYPES.len(), "one guessable gold value per type");
    assert_eq!(qs.len(), 2 * n - TYPES.len());

    let split_of = |id: &str| es.iter().find(|e| e.id == id).unwrap().split;
    let mut seen: HashMap<&str, Split> = HashMap::new();
    for q in &qs {
        assert_eq!(q.wrong, es.iter().find(|e| e.id == q.entity_id).unwrap().wrong);
        if let Some(prev) = seen.insert(&q.entity_id, q.split) {
            assert_eq!(prev, q.split, "{} is in two splits", q.entity_id);
        }
        match split_of(&q.entity_id) {
            Some(s) => {
                assert_eq!(q.split.as_str(), s, "a labelled entity keeps its split");
                assert!(q.split_from_labels);
            }
            None => assert!(!q.split_from_labels),
        }
        // The prompt is rebuilt from the recorded template and tokenized as it was asked.
        let ids = questions::prompt_ids(&m.tokenizer, q).unwrap();
        assert_eq!(ids, m.tokenizer.encode_prompt(&q.prompt, false).unwrap());
    }
    // The dropped movie named like a labelled test city follows it into test.
    let city = es.iter().find(|e| e.t == EntityType::City && e.split == Some("test")).unwrap();
    let twin = es.iter().find(|e| e.t == EntityType::Movie && e.name == city.name).unwrap();
    assert_eq!(seen[twin.id.as_str()], Split::Test);
    // Dropped entities are spread over the splits, roughly 50 / 10 / 40.
    let dropped: Vec<Split> =
        es.iter().filter(|e| e.split.is_none()).filter_map(|e| seen.get(e.id.as_str()).copied()).collect();
    let train = dropped.iter().filter(|&&s| s == Split::Train).count() as f64 / dropped.len() as f64;
    assert!((0.4..=0.6).contains(&train), "{train}");

    // Balancing: equal wrong and correct per type and split; no validation question.
    let keep = questions::balanced_sample(&qs, 6, 1);
    let mut cells: BTreeMap<(EntityType, Split), [usize; 2]> = BTreeMap::new();
    for &i in &keep {
        cells.entry((qs[i].entity_type, qs[i].split)).or_default()[usize::from(qs[i].wrong)] += 1;
    }
    assert!(cells.keys().all(|k| k.1 != Split::Validation));
    for (k, [c, w]) in &cells {
        assert_eq!(c, w, "{k:?}");
        assert!(*c <= 6);
    }

    // A record whose prompt no template gives is an error naming the entity.
    let bad = write_labels(&tmp.path().join("bad"), &es, true);
    let err = questions::pool(&bad, &dataset(&es), &guessable(), 0).unwrap_err();
    assert!(format!("{err:#}").contains("/03"), "{err:#}");
}

/// The residual at the last prompt token after block `block`, computed directly: [n][d].
fn direct(model: &Model, qs: &[&Question], block: usize) -> Vec<Vec<f32>> {
    let ids: Vec<Vec<u32>> = qs.iter().map(|q| questions::prompt_ids(&model.tokenizer, q).unwrap()).collect();
    let batch = model.batch_from_ids(&ids).unwrap();
    let hook = HookPoint::ResidPost(block);
    let out = model.run(&batch, &HookSpec::new().capture([hook])).unwrap();
    out.cache.gather(hook, &Positions::Last).unwrap().squeeze(1).unwrap().to_vec2().unwrap()
}

/// A ReLU SAE at blocks.{block}.hook_resid_post whose latent 0 is the logit of a logistic
/// probe for "wrong" fitted on the train questions (so it fires, roughly, when the answer is
/// wrong); the others are random.
fn planted_sae(model: &Model, labels: &LabelSet, es: &[Ent], block: usize, d_sae: usize) -> Sae {
    let d = model.cfg().d_model;
    let (qs, _) = questions::pool(labels, &dataset(es), &guessable(), 0).unwrap();
    let train: Vec<&Question> = qs.iter().filter(|q| q.split == Split::Train).collect();
    let x: Vec<f32> = direct(model, &train, block).concat();
    let y: Vec<bool> = train.iter().map(|q| q.wrong).collect();
    let probe = LogisticProbe::fit(&x, d, &y, 1e-2).unwrap();
    let dir = probe.raw_direction();
    // logit = Σ w_j (x_j − μ_j) / σ_j + b = dir · x + (b − dir · μ).
    let offset = probe.bias - dir.iter().zip(&probe.mean).map(|(a, m)| a * m).sum::<f32>();
    let mut rng = SplitMix64(7);
    let mut w: Vec<Vec<f32>> = (0..d).map(|_| (0..d_sae).map(|_| (rng.normal() * 0.3) as f32).collect()).collect();
    for (j, row) in w.iter_mut().enumerate() {
        row[0] = dir[j];
    }
    let mut b: Vec<f32> = (0..d_sae).map(|_| (rng.normal() * 0.5) as f32).collect();
    b[0] = offset;
    let w_dec: Vec<f32> = (0..d_sae * d).map(|_| (rng.normal() * 0.2) as f32).collect();
    Sae::new(
        Tensor::new(w, &Device::Cpu).unwrap(),
        Tensor::from_vec(w_dec, (d_sae, d), &Device::Cpu).unwrap(),
        Tensor::new(b, &Device::Cpu).unwrap(),
        Tensor::zeros(d, candle_core::DType::F32, &Device::Cpu).unwrap(),
        Architecture::Standard,
        false,
        HookPoint::ResidPost(block),
    )
    .unwrap()
}

fn options() -> Options {
    let mut o = Options::new("tiny-llama");
    o.probe_layers = vec![1, 3];
    o.per_type = 50;
    o.top = 3;
    o.n_random = 4;
    o.reps = 100;
    o.batch = 9;
    o
}

#[test]
fn the_planted_wrong_latent_is_selected_on_train_and_holds_up_on_test() {
    let m = tiny("llama");
    let tmp = tempfile::tempdir().unwrap();
    let es = ents();
    let labels = write_labels(&tmp.path().join("labels"), &es, false);
    let sae = planted_sae(&m, &labels, &es, 1, 24);
    let data = dataset(&es);
    let g = guessable();
    let inputs = Inputs {
        model: &m,
        labels: &labels,
        entities: &data,
        guessable: &g,
        saes: std::slice::from_ref(&sae),
        corpus: None,
    };
    let u = uncertainty::run(&inputs, &options(), None, &Silent).unwrap();

    // Balanced classes in both splits.
    for (split, by_type) in &u.used {
        for (t, [w, c]) in by_type {
            assert_eq!(w, c, "{split} {t}");
        }
    }
    assert_eq!(u.sites.iter().map(|s| s.layer).collect::<Vec<_>>(), vec![1, 2, 3], "probe layers plus the SAE's");
    let top = u
        .detectors
        .iter()
        .find(|d| d.kind == "sae_latent" && d.direction == Some(Direction::Wrong) && d.rank == Some(0))
        .unwrap();
    assert_eq!((top.layer, top.latent), (Some(2), Some(0)), "the planted latent ranks first");
    let t0 = top.train_welch.unwrap().t;
    assert!(u.detectors.iter().filter(|d| d.kind == "sae_latent" && d.latent != Some(0)).all(|d| d
        .train_welch
        .unwrap()
        .t
        .abs()
        < t0));
    let auroc = top.evals[0].auroc.unwrap();
    assert!(auroc.value > 0.8, "held-out AUROC of the planted latent {auroc:?}");
    assert!(auroc.lo <= auroc.value && auroc.value <= auroc.hi);
    // Random latents of its frequency do worse on average.
    let rb = u.random_baselines.iter().find(|r| r.direction == Direction::Wrong).unwrap();
    assert_eq!(rb.of_latent, 0);
    assert!(!rb.latents.contains(&0) && rb.mean.unwrap() < auroc.value);
    // The constant classifier: AUROC ½, recall 1, precision = the share of wrong answers (½).
    let c = u.detectors.iter().find(|d| d.kind == "constant").unwrap();
    let e = &c.evals[0];
    assert_eq!((e.auroc.unwrap().value, e.recall, e.precision), (0.5, Some(1.0), Some(0.5)));
    assert!(u.detectors.iter().any(|d| d.kind == "probe" && d.layer == Some(3)));
    assert!(u.detectors.iter().any(|d| d.kind == "confound_probe"));

    let out = tmp.path().join("out");
    report::write(&u, &out).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("<script"));
    let csv = std::fs::read_to_string(out.join("detectors.csv")).unwrap();
    assert!(csv.lines().count() > u.detectors.len());
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("uncertainty.json")).unwrap()).unwrap();
    assert_eq!(json["detectors"].as_array().unwrap().len(), u.detectors.len());
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knowlens")).args(args).output().unwrap();
    (
        out.status.success(),
        format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn the_cli_writes_its_outputs_and_refuses_bad_input_by_name() {
    let m = tiny("llama");
    let tmp = tempfile::tempdir().unwrap();
    let es = ents();
    let labels_dir = tmp.path().join("labels");
    let labels = write_labels(&labels_dir, &es, false);
    let sae_dir = tmp.path().join("sae");
    planted_sae(&m, &labels, &es, 1, 24).save_saelens(&sae_dir).unwrap();
    let ent_dir = tmp.path().join("entities");
    std::fs::create_dir_all(&ent_dir).unwrap();
    let rows: String = dataset(&es).iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    std::fs::write(ent_dir.join("all.jsonl"), rows).unwrap();
    let s = |p: &Path| p.display().to_string();
    let (model, labels_s, ent_s, sae_s) = (s(&fixture("tiny/llama")), s(&labels_dir), s(&ent_dir), s(&sae_dir));
    let out = tmp.path().join("out");
    let out_s = s(&out);
    let args = |labels: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "uncertainty",
            "--model",
            &model,
            "--labels",
            labels,
            "--entities",
            &ent_s,
            "--layers",
            "1,3",
            "--reps",
            "50",
            "--random",
            "3",
            "--no-progress",
            "--out",
            &out_s,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let run = |v: Vec<String>| cli(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let (ok, text) = run(args(&labels_s, &["--sae", &sae_s]));
    assert!(ok, "{text}");
    assert!(text.contains("L2 latent 0 (wrong)"), "{text}");
    for f in ["uncertainty.json", "detectors.csv", "report.html"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let (ok, text) = run(args(&labels_s, &["--per-type", "0"]));
    assert!(!ok && text.contains("per_type"), "{text}");
    let missing = s(&tmp.path().join("nope"));
    let (ok, text) = run(args(&missing, &[]));
    assert!(!ok && text.contains("nope"), "{text}");
    let (ok, text) = run(args(&labels_s, &["--layers", "9"]));
    assert!(!ok && text.contains("layer 9"), "{text}");
}
