//! The latent-discovery experiment on the tiny models with synthetic SAEs and label sets:
//! scores against a direct computation, train-only scoring, intervals, a planted latent found
//! and held out, detectors round-tripping, the cache resuming, the SAE formats users bring, the
//! CLI, and clear errors for bad input.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{fixture, tiny};
use knowlens::discover::activations::{self, Item};
use knowlens::discover::detectors::{self, DetectorFile, DetectorKind};
use knowlens::discover::scores::{self, Direction, Group, LayerScores};
use knowlens::discover::{self, Discovery, Inputs, Options};
use knowlens::entities::label_set::LabelSet;
use knowlens::entities::{Entity, EntityType};
use knowlens::progress::Silent;
use knowlens::rng::SplitMix64;
use knowlens::sae::Architecture;
use knowlens::{HookPoint, HookSpec, Model, Sae};
use serde_json::json;

const TEMPLATE: &str = "w5 {name}";
const TYPES: [EntityType; 3] = [EntityType::Player, EntityType::Movie, EntityType::City];
/// Per type and class: train, validation, test.
const SPLIT: [(&str, usize); 3] = [("train", 8), ("validation", 2), ("test", 6)];

/// One labelled entity of the fixture.
#[derive(Clone)]
struct Ent {
    id: String,
    t: EntityType,
    name: String,
    known: bool,
    split: &'static str,
    rank: u64,
}

/// Known names end in w60..w64, unknown in w70..w74; the first word varies.
fn entities(known_of: impl Fn(EntityType) -> usize) -> Vec<Ent> {
    let mut out = Vec::new();
    for (ti, &t) in TYPES.iter().enumerate() {
        for known in [true, false] {
            let mut i = 0;
            for (split, n) in SPLIT {
                let n = if known { n.min(known_of(t)) } else { n };
                for _ in 0..n {
                    let a = 10 + (i * 7 + ti * 3) % 40;
                    let b = if known { 60 } else { 70 } + i % 5;
                    out.push(Ent {
                        id: format!("{t}/{}/{i:02}", if known { "k" } else { "u" }),
                        t,
                        name: format!("w{a} w{b}"),
                        known,
                        split,
                        rank: if known { 1 + i as u64 } else { 100 + i as u64 },
                    });
                    i += 1;
                }
            }
        }
    }
    out
}

fn fabricated() -> Vec<Entity> {
    (0..6)
        .map(|i| {
            serde_json::from_value(json!({"id": format!("fabricated/movie/{i:04}"), "type": "movie", "name": format!("w{} w8{}", 20 + i, i), "fabricated": true}))
                .unwrap()
        })
        .collect()
}

/// Writes a label set in `LabelSet`'s format.
fn write_labels(dir: &Path, ents: &[Ent]) -> LabelSet {
    std::fs::create_dir_all(dir).unwrap();
    let mut lines = String::new();
    for e in ents {
        let class = if e.known { "known" } else { "unknown" };
        let row = json!({"id": e.id, "type": e.t.to_string(), "name": e.name, "popularity_rank": e.rank, "n_attributes": 3,
            "n_correct": if e.known { 2 } else { 0 }, "class": class, "records": []});
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    std::fs::write(dir.join("labels.jsonl"), lines).unwrap();
    let ids = |split: &str, known: bool| {
        ents.iter().filter(|e| e.split == split && e.known == known).map(|e| e.id.clone()).collect::<Vec<_>>()
    };
    let part = |s: &str| json!({"known": ids(s, true), "unknown": ids(s, false)});
    let splits = json!({"seed": 0, "fractions": [0.5, 0.1, 0.4], "train": part("train"), "validation": part("validation"), "test": part("test")});
    std::fs::write(dir.join("splits.json"), splits.to_string()).unwrap();
    // Matched: the first three known and unknown of every type.
    let pick = |known: bool| {
        TYPES
            .iter()
            .flat_map(|t| ents.iter().filter(move |e| e.t == *t && e.known == known).take(3).map(|e| e.id.clone()))
            .collect::<Vec<_>>()
    };
    let fab: Vec<String> = fabricated().iter().map(|e| e.id.clone()).collect();
    let controls =
        json!({"matched_known": pick(true), "matched_unknown": pick(false), "fabricated": fab, "token_lengths": {}});
    std::fs::write(dir.join("controls.json"), controls.to_string()).unwrap();
    LabelSet::load(dir).unwrap()
}

fn options() -> Options {
    let mut o = Options::new("gemma3");
    o.template = TEMPLATE.into();
    o.probe_layers = Some(vec![1, 3]);
    o.reps = 200;
    o.n_random = 5;
    o.batch = 7;
    o.min_per_class = 3;
    o
}

fn prompt(e: &Ent) -> (String, String) {
    (detectors::prompt(TEMPLATE, &e.t.to_string(), &e.name), e.name.clone())
}

/// The activation at each entity's last token, computed directly: [n][d].
fn direct(model: &Model, ents: &[Ent], hook: HookPoint) -> Vec<Vec<f32>> {
    let ps: Vec<(String, String)> = ents.iter().map(prompt).collect();
    let pairs: Vec<(&str, &str)> = ps.iter().map(|(p, n)| (p.as_str(), n.as_str())).collect();
    let eb = model.entity_batch(&pairs, false).unwrap();
    let out = model.run(&eb.batch, &HookSpec::new().capture([hook])).unwrap();
    let g = out.cache.gather(hook, &eb.last()).unwrap().squeeze(1).unwrap();
    g.to_vec2().unwrap()
}

fn matrix(rng: &mut SplitMix64, rows: usize, cols: usize, scale: f64) -> Tensor {
    let v: Vec<f32> = (0..rows * cols).map(|_| (rng.normal() * scale) as f32).collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

/// A standard (ReLU) SAE at `hook` whose latent 0 is the train difference of means of known vs
/// unknown, centred between the classes: it fires on known entities. The rest are random.
fn planted_sae(model: &Model, ents: &[Ent], hook: HookPoint, d_sae: usize, seed: u64) -> Sae {
    let d = model.cfg().d_model;
    let train: Vec<Ent> = ents.iter().filter(|e| e.split == "train").cloned().collect();
    let x = direct(model, &train, hook);
    let mean = |known: bool| {
        let rows: Vec<&Vec<f32>> = x.iter().zip(&train).filter(|(_, e)| e.known == known).map(|(r, _)| r).collect();
        (0..d).map(|j| rows.iter().map(|r| r[j]).sum::<f32>() / rows.len() as f32).collect::<Vec<f32>>()
    };
    let (mk, mu) = (mean(true), mean(false));
    let dir: Vec<f32> = mk.iter().zip(&mu).map(|(a, b)| a - b).collect();
    let mid: f32 = mk.iter().zip(&mu).zip(&dir).map(|((a, b), w)| 0.5 * (a + b) * w).sum();
    let mut rng = SplitMix64(seed);
    let w = matrix(&mut rng, d, d_sae, 0.3);
    let mut wv: Vec<Vec<f32>> = w.to_vec2().unwrap();
    for (j, row) in wv.iter_mut().enumerate() {
        row[0] = dir[j];
    }
    let w_enc = Tensor::new(wv, &Device::Cpu).unwrap();
    let mut b: Vec<f32> = (0..d_sae).map(|_| (rng.normal() * 0.5) as f32).collect();
    b[0] = -mid;
    let b_enc = Tensor::new(b, &Device::Cpu).unwrap();
    let w_dec = matrix(&mut rng, d_sae, d, 0.2);
    let b_dec = Tensor::zeros(d, candle_core::DType::F32, &Device::Cpu).unwrap();
    Sae::new(w_enc, w_dec, b_enc, b_dec, Architecture::Standard, false, hook).unwrap()
}

fn run(model: &Model, labels: &LabelSet, saes: &[Sae], opts: &Options) -> anyhow::Result<Discovery> {
    let fab = fabricated();
    discover::run(&Inputs { model, labels, saes, corpus: None, fabricated: &fab, entities: &[] }, opts, None, &Silent)
}

fn encode(sae: &Sae, rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let x = Tensor::new(rows.to_vec(), &Device::Cpu).unwrap();
    sae.encode(&x).unwrap().to_vec2().unwrap()
}

#[test]
fn scores_equal_a_direct_computation_on_the_train_split() {
    let m = tiny("gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let ents = entities(|_| 99);
    let labels = write_labels(&tmp.path().join("labels"), &ents);
    let hook = HookPoint::ResidPost(2);
    let sae = planted_sae(&m, &ents, hook, 16, 1);
    let d = run(&m, &labels, std::slice::from_ref(&sae), &options()).unwrap();
    assert_eq!(d.types_scored, TYPES.to_vec());
    assert!(d.excluded_types.is_empty());
    let f = encode(&sae, &direct(&m, &ents, hook));
    let freq = |t: EntityType, known: bool, j: usize| {
        let rows: Vec<usize> =
            (0..ents.len()).filter(|&i| ents[i].t == t && ents[i].known == known && ents[i].split == "train").collect();
        rows.iter().filter(|&&i| f[i][j] > 1e-6).count() as f32 / rows.len() as f32
    };
    assert!(!d.ranked_known.is_empty() && !d.ranked_unknown.is_empty());
    for r in d.ranked_known.iter().chain(&d.ranked_unknown) {
        assert_eq!(r.layer, 3, "resid_post(2) is the paper's layer 3");
        let mut min = f32::INFINITY;
        for t in TYPES {
            let (fk, fu) = (freq(t, true, r.latent), freq(t, false, r.latent));
            assert!(
                (r.f_known[&t] - fk).abs() < 1e-6 && (r.f_unknown[&t] - fu).abs() < 1e-6,
                "{t} latent {}",
                r.latent
            );
            let s = if r.direction == Direction::Known { fk - fu } else { fu - fk };
            assert!((r.s[&t] - s).abs() < 1e-6);
            min = min.min(s);
        }
        assert!((r.score_min - min).abs() < 1e-6);
    }
    // Ranked by score, descending; the planted latent first, and it holds up on the test split.
    assert!(d.ranked_known.windows(2).all(|w| w[0].score_min >= w[1].score_min));
    assert_eq!(d.ranked_known[0].latent, 0);
    assert!(d.ranked_known[0].score_min > 0.5, "{}", d.ranked_known[0].score_min);
    let top = d.latent_evals.iter().find(|e| e.direction == Direction::Known && e.rank == 0).unwrap();
    let test = top.evals.iter().find(|e| e.subset == "test" && e.entity_type.is_none()).unwrap();
    assert_eq!((test.n_pos, test.n_neg), (18, 18));
    assert!(test.auroc.unwrap().value > 0.9, "{:?}", test.auroc);
    // The layer summary agrees with the ranking.
    let l3 = d.layers.iter().find(|l| l.layer == 3).unwrap();
    assert_eq!(l3.maxmin_known.unwrap().0, 0);
    // Probes at the layers asked for (1 and 3), and no other layer appears.
    assert!(l3.baseline.is_some());
    assert_eq!(
        d.layers.iter().map(|l| (l.layer, l.baseline.is_some(), l.sae_hook.is_some())).collect::<Vec<_>>(),
        vec![(1, true, false), (3, true, true)]
    );
}

#[test]
fn test_entities_do_not_change_the_scores() {
    let m = tiny("gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let ents = entities(|_| 99);
    let hook = HookPoint::ResidPost(2);
    let sae = planted_sae(&m, &ents, hook, 16, 2);
    let a = run(&m, &write_labels(&tmp.path().join("a"), &ents), std::slice::from_ref(&sae), &options()).unwrap();
    // Every test entity renamed: other tokens, other activations.
    let moved: Vec<Ent> = ents
        .iter()
        .cloned()
        .map(|mut e| {
            if e.split == "test" {
                e.name = format!("w9{} w{}", e.id.len() % 6, 40 + e.rank % 9);
            }
            e
        })
        .collect();
    let b = run(&m, &write_labels(&tmp.path().join("b"), &moved), std::slice::from_ref(&sae), &options()).unwrap();
    assert_eq!(j(&a.ranked_known), j(&b.ranked_known));
    assert_eq!(j(&a.ranked_unknown), j(&b.ranked_unknown));
    // ... while the held-out numbers did change (the test split is read there).
    assert_ne!(j(&a.latent_evals), j(&b.latent_evals));
}

/// serde_json of anything, for comparisons.
fn j<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn every_interval_contains_its_value() {
    let m = tiny("gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let ents = entities(|_| 99);
    let labels = write_labels(&tmp.path().join("labels"), &ents);
    let sae = planted_sae(&m, &ents, HookPoint::ResidPre(2), 32, 3);
    let d = run(&m, &labels, &[sae], &options()).unwrap();
    let mut n = 0;
    let mut check = |e: &knowlens::stats::Estimate, what: &str| {
        assert!(e.lo <= e.value + 1e-12 && e.value <= e.hi + 1e-12, "{what}: {e:?}");
        n += 1;
    };
    for l in &d.latent_evals {
        for e in &l.evals {
            for x in [&e.auroc, &e.balanced_accuracy].into_iter().flatten() {
                check(x, &format!("latent {} {}", l.latent, e.subset));
            }
        }
    }
    for e in d.probe_evals.iter().chain(&d.confound_baseline) {
        for x in [&e.auroc, &e.balanced_accuracy].into_iter().flatten() {
            check(x, &e.subset);
        }
    }
    for l in &d.layers {
        if let Some(b) = &l.baseline {
            for x in [&b.probe_test, &b.dom_test].into_iter().flatten() {
                check(x, &format!("layer {}", l.layer));
            }
        }
    }
    assert!(n > 50, "only {n} intervals");
    // The subsets are all there: per type, matched controls, bands, fabricated names.
    let top = &d.latent_evals[0];
    for s in [
        "test",
        "matched controls (test)",
        "popularity band 1/3 (test)",
        "popularity band 3/3 (test)",
        "known (test) vs fabricated names",
    ] {
        assert!(top.evals.iter().any(|e| e.subset == s), "{s}");
    }
    let fab = top.evals.iter().find(|e| e.subset.contains("fabricated")).unwrap();
    assert_eq!(fab.n_pos + fab.n_neg, 18 + 6);
    assert_eq!(d.random_baselines.len(), 2);
    assert!(d.random_baselines.iter().all(|r| r.latents.len() == 5 && !r.latents.contains(&r.of_latent)));
}

#[test]
fn detectors_round_trip_and_score_like_the_sae() {
    let m = tiny("gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let ents = entities(|_| 99);
    let labels = write_labels(&tmp.path().join("labels"), &ents);
    let hook = HookPoint::ResidPost(2);
    let sae = planted_sae(&m, &ents, hook, 16, 4);
    let d = run(&m, &labels, std::slice::from_ref(&sae), &options()).unwrap();
    let file = d.detectors.clone().unwrap();
    assert!(file.detectors.iter().any(|x| x.kind == DetectorKind::Probe));
    assert!(file.detectors.iter().any(|x| x.kind == DetectorKind::DiffOfMeans));
    let path = tmp.path().join("detectors.json");
    file.save(&path).unwrap();
    let back = DetectorFile::load(&path).unwrap();
    assert_eq!(back, file);
    // Scores equal the latent's pre-activation, and for a ReLU SAE relu(score) is its activation.
    let hooks = back.check(&m, "gemma3", false).unwrap();
    let rows: Vec<detectors::EntityRow> = ents
        .iter()
        .map(|e| detectors::EntityRow {
            id: e.id.clone(),
            entity_type: e.t.to_string(),
            name: e.name.clone(),
            class: None,
        })
        .collect();
    let scores = detectors::detect(&m, &back, &hooks, &rows, 5, &Silent).unwrap();
    let f = encode(&sae, &direct(&m, &ents, hook));
    let mut checked = 0;
    for (k, det) in back.detectors.iter().enumerate() {
        if det.kind != DetectorKind::SaeLatent {
            continue;
        }
        assert_eq!(det.decoder.len(), 32);
        let j = det.latent.unwrap();
        for (i, s) in scores.iter().enumerate() {
            let tol = 1e-5 * f[i][j].abs().max(1.0);
            assert!(
                (s[k].0.max(0.0) as f32 - f[i][j]).abs() <= tol,
                "detector {} row {i}: {} vs {}",
                det.name,
                s[k].0,
                f[i][j]
            );
            assert_eq!(s[k].1, s[k].0 > det.threshold as f64);
        }
        checked += 1;
    }
    assert!(checked >= 2);
    // Another model, another width, another name: errors.
    let e = format!("{:#}", back.check(&tiny("gemma2"), "gemma2", true).unwrap_err());
    assert!(e.contains("detectors were made for gemma3"), "{e}");
    let e = format!("{:#}", back.check(&m, "other", false).unwrap_err());
    assert!(e.contains("--any-model"), "{e}");
    back.check(&m, "other", true).unwrap();
    let mut wide = back.clone();
    wide.detectors[0].weights.push(0.0);
    let e = format!("{:#}", wide.check(&m, "gemma3", false).unwrap_err());
    assert!(e.contains("33 values") && e.contains("d_model is 32"), "{e}");
    let mut other = back.clone();
    other.model.d_model = 64;
    assert!(format!("{:#}", other.check(&m, "gemma3", false).unwrap_err()).contains("d_model 64"));
    std::fs::write(&path, "{\"format\": \"something else\"}").unwrap();
    assert!(format!("{:#}", DetectorFile::load(&path).unwrap_err()).contains("detectors.json"));
}

#[test]
fn bad_input_gives_clear_errors() {
    let m = tiny("gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let ents = entities(|_| 99);
    let labels = write_labels(&tmp.path().join("labels"), &ents);
    let sae = planted_sae(&m, &ents, HookPoint::ResidPost(2), 8, 5);
    // An SAE whose hook the model lacks (6 layers), one off the residual stream, one too wide.
    let mut missing = sae.clone();
    missing.hook = HookPoint::ResidPost(9);
    let e = format!("{:#}", run(&m, &labels, &[missing], &options()).unwrap_err());
    assert!(e.contains("blocks.9") || e.contains("layer 9"), "{e}");
    let mut mlp = sae.clone();
    mlp.hook = HookPoint::MlpOut(1);
    let e = format!("{:#}", run(&m, &labels, &[mlp], &options()).unwrap_err());
    assert!(e.contains("residual stream"), "{e}");
    let mut rng = SplitMix64(9);
    let wide = Sae::new(
        matrix(&mut rng, 48, 4, 1.0),
        matrix(&mut rng, 4, 48, 1.0),
        Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros(48, candle_core::DType::F32, &Device::Cpu).unwrap(),
        Architecture::Standard,
        false,
        HookPoint::ResidPre(2),
    )
    .unwrap();
    let e = format!("{:#}", run(&m, &labels, &[wide], &options()).unwrap_err());
    assert!(e.contains("d_in 48") && e.contains("width 32"), "{e}");
    let e = format!("{:#}", run(&m, &labels, &[sae.clone(), sae.clone()], &options()).unwrap_err());
    assert!(e.contains("both read layer 3"), "{e}");
    let mut o = options();
    o.probe_layers = Some(vec![6]);
    assert!(format!("{:#}", run(&m, &labels, &[], &o).unwrap_err()).contains("probe layer 6"));

    // A type without known entities is reported apart, never dropped silently ...
    let no_song_known = entities(|t| if t == EntityType::City { 0 } else { 99 });
    let l2 = write_labels(&tmp.path().join("no_city_known"), &no_song_known);
    let d = run(&m, &l2, std::slice::from_ref(&sae), &options()).unwrap();
    assert_eq!(d.types_scored, vec![EntityType::Player, EntityType::Movie]);
    assert_eq!(d.excluded_types.len(), 1);
    assert_eq!((d.excluded_types[0].entity_type, d.excluded_types[0].n_known), (EntityType::City, 0));
    assert!(d.notes.iter().any(|n| n.contains("city left out of MaxMin")), "{:?}", d.notes);
    // ... and with no type left there is nothing to score: an error naming the counts.
    let none_known = entities(|_| 0);
    let l3 = write_labels(&tmp.path().join("none_known"), &none_known);
    let e = format!("{:#}", run(&m, &l3, std::slice::from_ref(&sae), &options()).unwrap_err());
    assert!(e.contains("no entity type has at least 3 known") && e.contains("player 0 known"), "{e}");
    // Settings that would give meaningless numbers.
    for (set, needle) in [
        (Box::new(|o: &mut Options| o.reps = 0) as Box<dyn Fn(&mut Options)>, "reps"),
        (Box::new(|o: &mut Options| o.l2 = 0.0), "l2"),
        (Box::new(|o: &mut Options| o.max_corpus_freq = f32::NAN), "max_corpus_freq"),
        (Box::new(|o: &mut Options| o.min_per_class = 0), "min_per_class"),
        (Box::new(|o: &mut Options| o.template = "w5".into()), "{name}"),
    ] {
        let mut o = options();
        set(&mut o);
        let e = format!("{:#}", run(&m, &labels, &[], &o).unwrap_err());
        assert!(e.contains(needle), "{e}");
    }
}

#[test]
fn the_activation_cache_resumes_from_its_chunks() {
    let m = tiny("llama");
    let tmp = tempfile::tempdir().unwrap();
    let items: Vec<Item> = (0..10)
        .map(|i| Item::Entity { prompt: format!("w5 w{} w{}", 10 + i, 30 + i), name: format!("w{}", 30 + i) })
        .collect();
    let hooks = [HookPoint::ResidPre(1), HookPoint::ResidPost(2)];
    let a = activations::collect(&m, "t", &items, &hooks, 4, Some(tmp.path()), &Silent).unwrap();
    let dir = std::fs::read_dir(tmp.path()).unwrap().next().unwrap().unwrap().path();
    let mut chunks: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "f32"))
        .collect();
    chunks.sort();
    assert_eq!(chunks.len(), 3);
    // Direct values agree with the cache.
    let eb = m.entity_batch(&[("w5 w12 w32", "w32")], false).unwrap();
    let out = m.run(&eb.batch, &HookSpec::new().capture([HookPoint::ResidPost(2)])).unwrap();
    let v: Vec<f32> =
        out.cache.gather(HookPoint::ResidPost(2), &eb.last()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let max = v.iter().zip(a.row(2, 1)).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(max < 1e-4, "{max}");
    // A finished chunk is read back, not recomputed: zero it and the zeros come back.
    std::fs::write(&chunks[1], vec![0u8; 4 * 2 * 32 * 4]).unwrap();
    std::fs::remove_file(&chunks[2]).unwrap();
    let b = activations::collect(&m, "t", &items, &hooks, 4, Some(tmp.path()), &Silent).unwrap();
    assert!(b.row(5, 0).iter().all(|&x| x == 0.0));
    assert_eq!(b.row(9, 1), a.row(9, 1), "the missing chunk is recomputed");
    assert_eq!(b.row(0, 1), a.row(0, 1));
    // Other items land in another cache directory.
    activations::collect(&m, "t", &items[..3], &hooks, 4, Some(tmp.path()), &Silent).unwrap();
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
}

#[test]
fn corpus_tokens_are_sampled_inside_documents_and_filter_latents() {
    let docs: Vec<(Vec<u32>, usize)> = (0..5)
        .map(|d| ((0..20).map(|i| if i == 0 { 2 } else { 4 + ((d * 20 + i) % 90) as u32 }).collect(), 0))
        .collect();
    let corpus = knowlens::corpus::TokenCorpus::from_documents(docs, vec!["s".into()], Some(2), 96);
    let items = activations::corpus_items(&corpus, 50, 8, 1).unwrap();
    assert_eq!(items.len(), 50);
    for it in &items {
        let Item::Tokens(t) = it else { panic!() };
        assert!(t.len() >= 2 && t.len() <= 8 && t[0] == 2 && t[1..].iter().all(|&x| x != 2), "{t:?}");
    }
    // The ranking drops latents active on ≥ the corpus threshold.
    let f: Vec<f32> = vec![
        1.0, 1.0, 0.0, // known rows
        1.0, 1.0, 0.0, //
        0.0, 0.0, 1.0, // unknown rows
        0.0, 0.0, 1.0,
    ];
    let groups = [Group { entity_type: EntityType::Movie, known: vec![0, 1], unknown: vec![2, 3] }];
    let ls = LayerScores::new(4, "blocks.4.hook_resid_pre".into(), &f, 3, &groups, vec![0.5, 0.0, 0.0]);
    let r = scores::rank(std::slice::from_ref(&ls), Direction::Known, 0.02, 5);
    assert_eq!(r[0].latent, 1, "latent 0 fires on half the corpus");
    assert!(r.iter().all(|x| x.latent != 0));
    assert_eq!(scores::rank(&[ls], Direction::Unknown, 0.02, 5)[0].latent, 2);
}

/// Gemma Scope (npz, Gemma 2) and Gemma Scope 2 (folder, Gemma 3) SAEs load and run unchanged.
#[test]
fn gemma_scope_files_run_on_gemma2_and_gemma3() {
    let tmp = tempfile::tempdir().unwrap();
    let ents = entities(|_| 99);
    let labels = write_labels(&tmp.path().join("labels"), &ents);
    // Gemma 2: layer_1/.../params.npz → blocks.1.hook_resid_post, the paper's layer 2.
    let g2 = tiny("gemma2");
    let s = planted_sae(&g2, &ents, HookPoint::ResidPost(1), 10, 6);
    let thr = Tensor::zeros(10, candle_core::DType::F32, &Device::Cpu).unwrap();
    let npz = tmp.path().join("gemma-scope-tiny-res/layer_1/width_10/average_l0_3/params.npz");
    std::fs::create_dir_all(npz.parent().unwrap()).unwrap();
    Tensor::write_npz(
        &[("W_enc", s.w_enc()), ("W_dec", s.w_dec()), ("b_enc", s.b_enc()), ("b_dec", s.b_dec()), ("threshold", &thr)],
        &npz,
    )
    .unwrap();
    let loaded = Sae::load(&npz).unwrap();
    assert_eq!(loaded.hook, HookPoint::ResidPost(1));
    let mut o = options();
    o.model_name = "gemma2".into();
    let d = run(&g2, &labels, &[loaded], &o).unwrap();
    assert_eq!((d.ranked_known[0].layer, d.ranked_known[0].latent), (2, 0));
    let det = d.detectors.unwrap();
    assert!(det
        .detectors
        .iter()
        .any(|x| x.sae_arch.as_deref() == Some("jumprelu") && x.activation_threshold == Some(0.0)));
    // Gemma 3: a Gemma Scope 2 folder reading model.layers.3.output = blocks.3.hook_resid_post.
    let g3 = tiny("gemma3");
    let s = planted_sae(&g3, &ents, HookPoint::ResidPost(3), 10, 7);
    let dir = tmp.path().join("resid_post/layer_3_width_10_l0_small");
    std::fs::create_dir_all(&dir).unwrap();
    let tensors: std::collections::HashMap<String, Tensor> =
        [("w_enc", s.w_enc()), ("w_dec", s.w_dec()), ("b_enc", s.b_enc()), ("b_dec", s.b_dec()), ("threshold", &thr)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
    candle_core::safetensors::save(&tensors, dir.join("params.safetensors")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architecture": "jump_relu", "hf_hook_point_in": "model.layers.3.output", "width": 10}"#,
    )
    .unwrap();
    let loaded = Sae::load(&dir).unwrap();
    assert_eq!(loaded.hook, HookPoint::ResidPost(3));
    let d = run(&g3, &labels, &[loaded], &options()).unwrap();
    assert_eq!((d.ranked_known[0].layer, d.ranked_known[0].latent), (4, 0));
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knowlens")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_discover_writes_the_report_and_detect_scores_an_entity_file() {
    let m = tiny("gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let ents = entities(|_| 99);
    let labels_dir = tmp.path().join("labels");
    write_labels(&labels_dir, &ents);
    let sae = planted_sae(&m, &ents, HookPoint::ResidPost(2), 16, 8);
    let sae_dir = tmp.path().join("sae");
    sae.save_saelens(&sae_dir).unwrap();
    let fab = tmp.path().join("fabricated.jsonl");
    std::fs::write(&fab, fabricated().iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect::<String>())
        .unwrap();
    let out = tmp.path().join("out");
    let model = fixture("tiny/gemma3");
    let s = |p: &Path| p.display().to_string();
    let (ok, stdout, stderr) = cli(&[
        "discover",
        "--model",
        &s(&model),
        "--labels",
        &s(&labels_dir),
        "--sae",
        &s(&sae_dir),
        "--fabricated",
        &s(&fab),
        "--out",
        &s(&out),
        "--template",
        TEMPLATE,
        "--probe-layers",
        "1,2,3",
        "--reps",
        "100",
        "--random",
        "4",
        "--min-per-class",
        "3",
        "--no-progress",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("known   #0 layer  3 latent      0"), "{stdout}");
    for f in [
        "discovery.json",
        "layers.csv",
        "ranked.csv",
        "heldout.csv",
        "random_latents.csv",
        "detectors.json",
        "report.html",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 3 && !html.contains("<script"), "three inline charts, no scripts");
    // And a browser renders it: no console message, every chart kept, no broken link.
    if let Some(browser) = common::browser::chromium() {
        common::browser::check_page(&browser, &out.join("report.html"));
    }
    let layers = std::fs::read_to_string(out.join("layers.csv")).unwrap();
    assert_eq!(layers.lines().count(), 1 + 3, "{layers}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("discovery.json")).unwrap()).unwrap();
    assert_eq!(json["ranked_known"][0]["latent"], 0);
    // A rerun reuses the cache and gives the same numbers.
    let first = std::fs::read_to_string(out.join("ranked.csv")).unwrap();
    let (ok, _, stderr) = cli(&[
        "discover",
        "--model",
        &s(&model),
        "--labels",
        &s(&labels_dir),
        "--sae",
        &s(&sae_dir),
        "--fabricated",
        &s(&fab),
        "--out",
        &s(&out),
        "--template",
        TEMPLATE,
        "--probe-layers",
        "1,2,3",
        "--reps",
        "100",
        "--random",
        "4",
        "--min-per-class",
        "3",
        "--no-progress",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(std::fs::read_to_string(out.join("ranked.csv")).unwrap(), first);

    // detect: an entity file with labels.
    let ents_file = tmp.path().join("new.jsonl");
    let rows: String = ents
        .iter()
        .filter(|e| e.split == "test")
        .map(|e| json!({"id": e.id, "type": e.t.to_string(), "name": e.name, "class": if e.known { "known" } else { "unknown" }}).to_string() + "\n")
        .collect();
    std::fs::write(&ents_file, rows).unwrap();
    let det = out.join("detectors.json");
    let (ok, stdout, stderr) =
        cli(&["detect", "--model", &s(&model), "--detectors", &s(&det), "--entities", &s(&ents_file)]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 36);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert!(first["detectors"]["known_L3_0"]["score"].is_number(), "{first}");
    assert!(stderr.contains("known_L3_0") && stderr.contains("AUROC"), "{stderr}");
    // Another model: refused, naming both.
    let (ok, _, stderr) =
        cli(&["detect", "--model", &s(&fixture("tiny/llama")), "--detectors", &s(&det), "--entities", &s(&ents_file)]);
    assert!(!ok && stderr.contains("detectors were made for gemma3") && !stderr.contains("panicked"), "{stderr}");
    // A bad entity file: the file and line.
    std::fs::write(&ents_file, "{\"id\": \"x\", \"type\": \"movie\", \"name\": \"w10\"}\nnot json\n").unwrap();
    let (ok, _, stderr) =
        cli(&["detect", "--model", &s(&model), "--detectors", &s(&det), "--entities", &s(&ents_file)]);
    assert!(!ok && stderr.contains("new.jsonl:2"), "{stderr}");
}

/// Given a corpus, each exported latent (rank < export_top) gets a dashboard made from that
/// text: its own index, contexts drawn from the corpus documents, peaks that are its maximum.
#[test]
fn exported_latents_get_dashboards_from_corpus_text() {
    let m = tiny("gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let ents = entities(|_| 99);
    let labels = write_labels(&tmp.path().join("labels"), &ents);
    let sae = planted_sae(&m, &ents, HookPoint::ResidPost(2), 16, 8);
    let bos = m.tokenizer.bos;
    let docs: Vec<(Vec<u32>, usize)> = (0..12u32)
        .map(|d| (bos.into_iter().chain((1..40u32).map(|i| 3 + (d * 7 + i * 5) % 90)).collect(), 0))
        .collect();
    let corpus = knowlens::corpus::TokenCorpus::from_documents(docs.clone(), vec!["s".into()], bos, 96);
    let mut opts = options();
    opts.corpus_tokens = 50;
    opts.corpus_context = 8;
    opts.max_corpus_freq = 1.0;
    opts.dashboard_sequences = 6;
    opts.dashboard_tokens = 24;
    let fab = fabricated();
    let saes = [sae];
    let d = discover::run(
        &Inputs { model: &m, labels: &labels, saes: &saes, corpus: Some(&corpus), fabricated: &fab, entities: &[] },
        &opts,
        None,
        &Silent,
    )
    .unwrap();
    assert!(d.latent_evals.iter().any(|l| l.dashboard.is_some()));
    for l in &d.latent_evals {
        assert_eq!(l.dashboard.is_some(), l.rank < opts.export_top, "rank {} latent {}", l.rank, l.latent);
        let Some(dash) = &l.dashboard else { continue };
        assert_eq!(dash.latent, l.latent);
        for ex in &dash.examples {
            assert!(ex.sequence < 6 && ex.position < 24, "{} {}", ex.sequence, ex.position);
            let peak = ex.activations.iter().copied().fold(f32::MIN, f32::max);
            assert_eq!(peak, ex.max_activation);
            assert!(ex.max_activation <= dash.max_activation + 1e-6);
            assert!(ex.ids.iter().all(|&t| t < 96));
        }
    }
    let out = tmp.path().join("out");
    knowlens::discover::report::write(&d, &out).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("dashboard-"), "the report shows the dashboards");
    if let Some(browser) = common::browser::chromium() {
        common::browser::check_page(&browser, &out.join("report.html"));
    }
}
