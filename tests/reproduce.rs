//! `knowlens reproduce`: presets and configs, the stage plan, and the claim verdicts on
//! hand-made stage outputs.

use knowlens::causal::items::Item;
use knowlens::causal::steer;
use knowlens::entities::label_set::Split;
use knowlens::entities::questions::{AnswerKind, EntityType};
use knowlens::reproduce::claims;
use knowlens::reproduce::plan::{self, StageRecord};
use knowlens::reproduce::Config;
use knowlens::verdict::Verdict;

#[test]
fn presets_parse_and_typos_are_errors() {
    let q = Config::preset("quick").unwrap();
    let f = Config::preset("full").unwrap();
    assert!(f.saes.layers.len() >= 3 && f.steer.per_type >= q.steer.per_type);
    let bad = knowlens::reproduce::config::QUICK.replace("per_type = 20", "per_typo = 20");
    let e = format!("{:#}", Config::parse(&bad, "my.toml").unwrap_err());
    assert!(e.contains("my.toml") && e.contains("per_typo"), "{e}");
    let zero = knowlens::reproduce::config::QUICK.replace("layers = [6, 9]", "layers = [0, 9]");
    assert!(format!("{:#}", Config::parse(&zero, "z.toml").unwrap_err()).contains("layer 0"));
    assert!(Config::preset("huge").is_err());
}

#[test]
fn the_plan_chains_the_stages_and_fills_the_corpus_directory() {
    let c = Config::preset("quick").unwrap();
    let dir = std::env::temp_dir().join(format!("knowlens-plan-{}", std::process::id()));
    let stages = plan::stages(&c, &dir);
    let names: Vec<&str> = stages.iter().map(|s| s.name).collect();
    assert_eq!(names.first(), Some(&"fetch-base"));
    assert_eq!(names.last(), Some(&"steer"));
    // SAEs of paper layer L read blocks.{L-1}.hook_resid_post.
    let cache = stages.iter().find(|s| s.name == "sae-cache").unwrap();
    assert!(cache.args.iter().any(|a| a == "blocks.5.hook_resid_post,blocks.8.hook_resid_post"));
    // The corpus directory comes from the corpus stage's record; before it exists, an error.
    assert!(plan::resolve(&cache.args, &dir).is_err());
    let rec = StageRecord {
        name: "corpus".into(),
        args: vec![],
        seconds: 1.0,
        output: Some(serde_json::json!({"dir": "/cache/corpus/v1"})),
    };
    rec.write(&dir).unwrap();
    let args = plan::resolve(&cache.args, &dir).unwrap();
    assert!(args.iter().any(|a| a == "/cache/corpus/v1") && !args.iter().any(|a| a == plan::CORPUS_DIR));
    // The corpus stage excludes the base labels' held-out entities.
    let corpus = stages.iter().find(|s| s.name == "corpus").unwrap();
    assert!(corpus.args.iter().any(|a| a.ends_with("labels-base/estimate/splits.json")));
    // The base model is steered through the few-shot prompt with its own labels and detectors.
    let base = stages.iter().find(|s| s.name == "steer-base").unwrap();
    let arg = |st: &plan::Stage, k: &str| st.args.iter().position(|a| a == k).map(|i| st.args[i + 1].clone());
    assert_eq!(arg(base, "--model").as_deref(), Some("gemma-3-270m"));
    assert_eq!(arg(base, "--prompt").as_deref(), Some("few_shot"));
    assert!(arg(base, "--detectors").unwrap().ends_with("discover-base/detectors.json"));
    assert!(names.iter().position(|n| *n == "discover-base") < names.iter().position(|n| *n == "steer-base"));
    // The chat model is labelled on the types its experiments use only.
    let chat = stages.iter().find(|s| s.name == "label-chat").unwrap();
    assert_eq!(arg(chat, "--types").as_deref(), Some("city"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_full_preset_builds_the_sae_suite_from_one_store() {
    let c = Config::preset("full").unwrap();
    let dir = std::path::Path::new("/out");
    let stages = plan::stages(&c, dir);
    let names: Vec<&str> = stages.iter().map(|s| s.name).collect();
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap_or_else(|| panic!("no stage {n}: {names:?}"));
    assert!(at("sae-cache") < at("sae-train") && at("sae-train") < at("sae-train-wide"));
    assert!(at("sae-train-wide") < at("sae-eval") && at("sae-eval") < at("discover-base"));
    let arg = |name: &str, k: &str| {
        let st = &stages[at(name)];
        st.args.iter().position(|a| a == k).map(|i| st.args[i + 1].clone()).unwrap()
    };
    // One store holds every layer of either width; the wide SAEs read the mid-depth ones.
    assert_eq!(
        arg("sae-cache", "--hooks"),
        "blocks.2.hook_resid_post,blocks.5.hook_resid_post,blocks.8.hook_resid_post,\
         blocks.11.hook_resid_post,blocks.14.hook_resid_post"
    );
    assert_eq!(arg("sae-train-wide", "--hooks"), "blocks.5.hook_resid_post,blocks.8.hook_resid_post");
    assert_eq!(arg("sae-train-wide", "--width"), "16384");
    assert_eq!(arg("sae-train-wide", "--store"), arg("sae-train", "--store"));
    // The swept learning rate and batch size reach both trainings; the wide SAEs have their own rate.
    assert_eq!(arg("sae-train", "--batch-size"), "1024");
    assert_eq!(arg("sae-train-wide", "--batch-size"), "1024");
    assert_eq!(arg("sae-train", "--lr"), "0.0016");
    assert_eq!(arg("sae-train-wide", "--lr"), "0.0008");
    let same_lr = knowlens::reproduce::config::FULL.replace("wide_lr = 0.0008", "");
    let st = plan::stages(&Config::parse(&same_lr, "f.toml").unwrap(), dir);
    let wide = st.iter().find(|s| s.name == "sae-train-wide").unwrap();
    assert!(wide.args.windows(2).any(|w| w[0] == "--lr" && w[1] == "0.0016"), "{:?}", wide.args);
    // Every SAE is evaluated in one stage, on at least 100,000 held-out tokens.
    let saes = arg("sae-eval", "--sae");
    assert_eq!(saes.split(',').count(), 7, "{saes}");
    assert!(saes.contains("/out/saes-wide/blocks.8.hook_resid_post"));
    assert!(arg("sae-eval", "--tokens").parse::<usize>().unwrap() >= 100_000);
    assert_eq!(arg("sae-eval", "--corpus"), plan::CORPUS_DIR);
    // The quick preset has no wide SAEs and a short evaluation.
    let q = plan::stages(&Config::preset("quick").unwrap(), dir);
    assert!(!q.iter().any(|s| s.name == "sae-train-wide") && q.iter().any(|s| s.name == "sae-eval"));
    for (from, to) in [
        ("wide_width = 16384", "wide_width = 0"),
        ("batch_size = 1024", "batch_size = 0"),
        ("wide_lr = 0.0008", "wide_lr = -1.0"),
    ] {
        let bad = knowlens::reproduce::config::FULL.replace(from, to);
        assert_ne!(bad, knowlens::reproduce::config::FULL, "{from}");
        assert!(Config::parse(&bad, "f.toml").is_err(), "{to}");
    }
}

fn rate(v: f64, lo: f64, hi: f64) -> serde_json::Value {
    serde_json::json!({"value": v, "lo": lo, "hi": hi})
}

/// A steering output built by hand: `n` known test questions; the original model refuses none;
/// the detector makes `detector` of them refuse, control i makes `controls[i]`, the refusal
/// direction `positive` (None: no refusal direction), and `broken` of each control's completions
/// are broken.
fn steer_output(detector: usize, controls: &[usize], positive: Option<usize>, broken: usize) -> steer::SteerOutput {
    use knowlens::causal::outcome::Outcome;
    use knowlens::causal::steer::{Answer, Condition, Role};
    let n = 20;
    let dir = |i: u64| knowlens::causal::direction::SteeringDirection::random(3, 16, 1, i).unwrap();
    let items: Vec<Item> = (0..n)
        .map(|i| Item {
            id: format!("city/{i}"),
            entity_type: EntityType::City,
            name: format!("City {i}"),
            known: true,
            split: Split::Test,
            popularity_rank: None,
            attribute: "country",
            kind: AnswerKind::Name,
            gold: vec!["France".into()],
            question: "?".into(),
        })
        .collect();
    let mut conditions = Vec::new();
    let mut answers = Vec::new();
    let mut add = |role: Role, refusals: usize, broken: usize| {
        let ci = conditions.len();
        conditions.push(Condition {
            role,
            name: format!("{role:?}"),
            known: true,
            split: Split::Test,
            coef: 1.0,
            magnitude: 1.0,
        });
        for i in 0..n {
            let outcome = if i < refusals {
                Outcome::Refusal
            } else if i < refusals + broken {
                Outcome::Broken
            } else {
                Outcome::Correct
            };
            answers.push(Answer { item: i, condition: ci, text: String::new(), outcome });
        }
    };
    add(Role::Original, 0, 0);
    add(Role::Detector, detector, 0);
    add(Role::Opposite, 0, 0);
    if let Some(p) = positive {
        add(Role::RefusalDirection, p, 0);
    }
    for &c in controls {
        add(Role::Gaussian, c, broken);
    }
    let tallies = steer::tallies(&items, &answers);
    steer::SteerOutput {
        options: steer::Options::default(),
        known_direction: dir(0),
        unknown_direction: dir(1),
        refusal_direction: positive.map(|_| dir(2)),
        refusal_direction_note: "test".into(),
        mean_norms: vec![(3, 1.0)],
        cosine_known_unknown: 0.0,
        items,
        conditions,
        answers,
        tallies,
        strengths: Vec::new(),
        yes_no: None,
    }
}

#[test]
fn refusal_claims_rank_the_detector_among_controls_and_never_pass_on_broken_controls() {
    let verdict =
        |o: &steer::SteerOutput| steer::claims::claims(o, false).into_iter().find(|c| c.id == "refusal-up").unwrap();
    let controls: Vec<usize> = (0..20).map(|i| i % 3).collect();
    let up = verdict(&steer_output(12, &controls, Some(14), 0));
    assert_eq!(up.verdict, Verdict::Reproduced, "{}", up.evidence);
    let null = up.null.unwrap();
    assert_eq!(null.draws, 20);
    assert!(null.rate <= 0.05, "{null:?}");
    // A control as strong as the detector: its rank p is no longer below 5%.
    let mut strong = controls.clone();
    strong[3] = 12;
    assert_eq!(verdict(&steer_output(12, &strong, Some(14), 0)).verdict, Verdict::NotReproduced);
    // Controls whose outputs are 30% broken cannot support a pass.
    let c = verdict(&steer_output(12, &controls, Some(14), 6));
    assert_eq!(c.verdict, Verdict::Inconclusive, "{}", c.evidence);
    // Without a working positive control the setup cannot show the effect at all.
    assert_eq!(verdict(&steer_output(12, &controls, None, 0)).verdict, Verdict::NotTestable);
    assert_eq!(verdict(&steer_output(12, &controls, Some(1), 0)).verdict, Verdict::NotTestable);
    // Ten controls cannot reach p = 0.05.
    assert_eq!(verdict(&steer_output(12, &controls[..10], Some(14), 0)).verdict, Verdict::NotTestable);
    // Missing outputs are not testable.
    let dir = std::env::temp_dir().join(format!("knowlens-claims-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = claims::steering_claims(&dir.join("none.json"), "");
    assert!(missing.iter().all(|c| c.verdict == Verdict::NotTestable));
    assert!(claims::discovery_claims(&dir.join("none.json")).iter().all(|c| c.verdict == Verdict::NotTestable));
    std::fs::remove_dir_all(&dir).ok();
}

/// A score test as `discover` writes it: stratified AUROC and per-type AUROCs.
fn score(types: &[(&str, f64)], qualifies: bool) -> serde_json::Value {
    let strat = types.iter().map(|t| t.1).sum::<f64>() / types.len().max(1) as f64;
    serde_json::json!({
        "stratified": rate(strat, strat - 0.05, strat + 0.05),
        "per_type": types.iter().map(|(t, a)| serde_json::json!({
            "entity_type": t, "n_pos": 40, "n_neg": 60, "auroc": rate(*a, a - 0.06, a + 0.06), "qualifies": qualifies
        })).collect::<Vec<_>>(),
    })
}

fn discovery_json(types: &[(&str, f64)], qualifies: bool, random: f64, probe: f64) -> serde_json::Value {
    let randoms: Vec<serde_json::Value> = (0..20)
        .map(|i| score(&types.iter().map(|t| (t.0, random - 0.01 * (i % 5) as f64)).collect::<Vec<_>>(), qualifies))
        .collect();
    serde_json::json!({
        "model": {"n_layers": 18},
        "types_scored": ["city", "movie"],
        "excluded_types": [],
        "selected": [{
            "direction": "known", "layer": 9, "latent": 254, "train_rank": 2, "detector": "known_L9_254",
            "rule": "validation", "candidates": [{"layer": 9, "latent": 254, "train_rank": 2, "validation": 0.8}],
            "test": score(types, qualifies),
            "random_latents": (0..20).collect::<Vec<_>>(),
            "random_tests": randoms,
            "probe_test": score(&types.iter().map(|t| (t.0, probe)).collect::<Vec<_>>(), qualifies),
        }],
        "layers": [],
    })
}

#[test]
fn latent_claims_are_stratified_ranked_among_random_latents_and_need_two_types() {
    let dir = std::env::temp_dir().join(format!("knowlens-disc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("discovery.json");
    let claim = |v: serde_json::Value| {
        std::fs::write(&p, v.to_string()).unwrap();
        claims::discovery_claims(&p).into_iter().find(|c| c.id == "known-latent").unwrap()
    };
    let two = [("city", 0.8), ("movie", 0.75)];
    let c = claim(discovery_json(&two, true, 0.6, 0.9));
    assert_eq!(c.verdict, Verdict::Reproduced, "{}", c.evidence);
    assert!(c.null.unwrap().rate <= 0.05);
    assert_eq!(c.selection.unwrap().split, "validation");
    // One qualifying type: "across types" cannot be tested.
    assert_eq!(claim(discovery_json(&[("city", 0.8)], true, 0.6, 0.9)).verdict, Verdict::NotTestable);
    assert_eq!(claim(discovery_json(&two, false, 0.6, 0.9)).verdict, Verdict::NotTestable);
    // A type at chance, or random latents as good: not reproduced.
    assert_eq!(claim(discovery_json(&[("city", 0.8), ("movie", 0.5)], true, 0.4, 0.9)).verdict, Verdict::NotReproduced);
    assert_eq!(claim(discovery_json(&two, true, 0.85, 0.9)).verdict, Verdict::NotReproduced);
    // The probe cannot separate the classes either: the setup cannot show a detector.
    assert_eq!(claim(discovery_json(&two, true, 0.6, 0.5)).verdict, Verdict::NotTestable);
    std::fs::remove_dir_all(&dir).ok();
}

/// Stage records keep the output directory as `$OUT`, so a copied or moved run still resumes;
/// a path that merely starts with the same letters is left alone.
#[test]
fn stage_records_name_the_output_directory_relatively() {
    let out = std::path::Path::new("/x/run");
    let args: Vec<String> =
        ["--out", "/x/run/labels", "/x/runner", "/x/run", "7"].iter().map(|s| s.to_string()).collect();
    assert_eq!(plan::relative_args(&args, out), vec!["--out", "$OUT/labels", "/x/runner", "$OUT", "7"]);
    // Lists are rewritten item by item, and a record written before that (only the first item
    // relative) still matches the same arguments.
    let list: Vec<String> = vec!["--sae".into(), "/x/run/saes/a,/x/run/saes/b,/y/c".into()];
    assert_eq!(plan::relative_args(&list, out)[1], "$OUT/saes/a,$OUT/saes/b,/y/c");
    let old_record: Vec<String> = vec!["--sae".into(), "$OUT/saes/a,/x/run/saes/b,/y/c".into()];
    assert_eq!(plan::absolute_args(&old_record, out), list);
    assert_eq!(plan::absolute_args(&plan::relative_args(&list, out), out), list);
}

/// Unknown test questions, all refused by the original model; the unknown direction projected
/// out makes `detector` of them answered, control i `controls[i]`, the refusal direction
/// `positive`.
fn orthogonalized_output(detector: usize, controls: &[usize], positive: Option<usize>) -> steer::SteerOutput {
    use knowlens::causal::outcome::Outcome;
    use knowlens::causal::steer::{Answer, Condition, Role};
    let mut out = steer_output(0, &[], None, 0);
    let n = out.items.len();
    out.items.iter_mut().for_each(|it| it.known = false);
    out.conditions.clear();
    out.answers.clear();
    let mut add = |role: Role, answered: usize| {
        let ci = out.conditions.len();
        out.conditions.push(Condition {
            role,
            name: format!("{role:?}"),
            known: false,
            split: Split::Test,
            coef: 0.0,
            magnitude: 0.0,
        });
        for i in 0..n {
            let outcome = if i < answered { Outcome::Wrong } else { Outcome::Refusal };
            out.answers.push(Answer { item: i, condition: ci, text: String::new(), outcome });
        }
    };
    add(Role::Original, 0);
    add(Role::Orthogonalized, detector);
    for &c in controls {
        add(Role::OrthogonalizedControl, c);
    }
    if let Some(p) = positive {
        add(Role::OrthogonalizedRefusal, p);
    }
    out.tallies = steer::tallies(&out.items, &out.answers);
    out
}

#[test]
fn the_orthogonalized_model_is_ranked_among_control_projections() {
    let verdict = |o: &steer::SteerOutput| {
        steer::claims::claims(o, false).into_iter().find(|c| c.id == "orthogonalized").unwrap()
    };
    let controls: Vec<usize> = (0..20).map(|i| i % 3).collect();
    let c = verdict(&orthogonalized_output(15, &controls, Some(18)));
    assert_eq!(c.verdict, Verdict::Reproduced, "{}", c.evidence);
    assert!(c.null.unwrap().rate <= 0.05);
    // Any projection lowers refusals as much: not reproduced.
    let mut strong = controls.clone();
    strong[5] = 16;
    assert_eq!(verdict(&orthogonalized_output(15, &strong, Some(18))).verdict, Verdict::NotReproduced);
    // The refusal direction projected out changes nothing: the setup cannot show the effect.
    assert_eq!(verdict(&orthogonalized_output(15, &controls, Some(1))).verdict, Verdict::NotTestable);
    // Without controls there is no null.
    assert_eq!(verdict(&orthogonalized_output(15, &[], Some(18))).verdict, Verdict::NotTestable);
}

/// An uncertainty run as `knowlens uncertainty` writes it: a rank-0 "wrong" latent at two sites
/// (the larger train t at layer 9), its random latents, and the probes.
fn uncertainty_json(latent: f64, random_max: f64, probe: f64) -> serde_json::Value {
    let det = |layer: usize, latent_id: usize, t: f64, auroc: f64| {
        serde_json::json!({
            "name": format!("L{layer} latent {latent_id} (wrong)"), "kind": "sae_latent", "layer": layer,
            "hook": format!("blocks.{}.hook_resid_post", layer - 1), "latent": latent_id, "direction": "wrong",
            "rank": 0, "train_welch": {"t": t},
            "evals": [
                {"subset": "test", "n_wrong": 100, "n_correct": 100, "auroc": rate(auroc, auroc - 0.04, auroc + 0.04)},
                {"subset": "test: city", "n_wrong": 60, "n_correct": 60, "auroc": rate(auroc, auroc - 0.05, auroc + 0.05)},
            ],
        })
    };
    let probe = serde_json::json!({"name": "L9 probe", "kind": "probe", "layer": 9,
        "evals": [{"subset": "test", "n_wrong": 100, "n_correct": 100, "auroc": rate(probe, probe - 0.04, probe + 0.04)}]});
    let aurocs: Vec<f64> = (0..20).map(|i| random_max - 0.01 * i as f64).collect();
    serde_json::json!({
        "detectors": [det(6, 11, 3.0, 0.9), det(9, 22, 5.0, latent), probe],
        "random_baselines": [{"hook": "blocks.8.hook_resid_post", "layer": 9, "direction": "wrong", "of_latent": 22, "aurocs": aurocs}],
    })
}

/// A patching run: `heads[l][h]` recovered on every pair except where `test_head` overrides the
/// chosen head on test pairs; the last position's residual at the last layer recovers `full`.
fn patching_json(chosen_on_test: f64, full: f64) -> serde_json::Value {
    let results: Vec<serde_json::Value> = (0..24)
        .map(|i| {
            let test = i % 2 == 0;
            let heads: Vec<Vec<f64>> = (0..6)
                .map(|l| {
                    (0..4)
                        .map(|h| match (l, h) {
                            (4, 2) => {
                                if test {
                                    chosen_on_test + 0.01 * (i % 3) as f64
                                } else {
                                    0.7
                                }
                            }
                            _ => 0.01 * ((l * 4 + h + i) % 5) as f64,
                        })
                        .collect()
                })
                .collect();
            let resid: Vec<Vec<f64>> = (0..6).map(|l| vec![0.0, 0.0, 0.9, if l == 5 { full } else { 0.1 }]).collect();
            serde_json::json!({
                "pair": {"type": "city", "clean": {"split": if test { "test" } else { "train" }}, "entity": [1, 2]},
                "heads": heads, "resid": resid,
            })
        })
        .collect();
    serde_json::json!({ "results": results })
}

#[test]
fn uncertainty_and_extraction_claims_choose_without_test_and_rank_among_controls() {
    use knowlens::reproduce::{extraction_claim::extraction_claim, uncertainty_claim::uncertainty_claim};
    let dir = std::env::temp_dir().join(format!("knowlens-unc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("u.json");
    let unc = |v: serde_json::Value| {
        std::fs::write(&p, v.to_string()).unwrap();
        uncertainty_claim(&p)
    };
    let c = unc(uncertainty_json(0.7, 0.6, 0.85));
    assert_eq!(c.verdict, Verdict::Reproduced, "{}", c.evidence);
    // The larger train t is chosen, whatever the other site scores on test.
    assert!(c.selection.as_ref().unwrap().chosen.starts_with("L9 latent 22"), "{:?}", c.selection);
    assert!(c.null.unwrap().rate <= 0.05);
    assert_eq!(unc(uncertainty_json(0.7, 0.75, 0.85)).verdict, Verdict::NotReproduced);
    assert_eq!(unc(uncertainty_json(0.7, 0.6, 0.5)).verdict, Verdict::NotTestable);

    let ext = |v: serde_json::Value| {
        std::fs::write(&p, v.to_string()).unwrap();
        extraction_claim(&p)
    };
    let c = ext(patching_json(0.6, 1.0));
    assert_eq!(c.verdict, Verdict::Reproduced, "{}", c.evidence);
    assert_eq!(c.selection.as_ref().unwrap().chosen, "L4H2");
    assert!(c.null.unwrap().rate <= 0.05);
    // Chosen on the other pairs, it does nothing on the test pairs: not reproduced.
    assert_eq!(ext(patching_json(0.0, 1.0)).verdict, Verdict::NotReproduced);
    // The full residual patch does not restore the answer: the metric is broken here.
    assert_eq!(ext(patching_json(0.6, 0.4)).verdict, Verdict::NotTestable);
    assert_eq!(uncertainty_claim(&dir.join("none.json")).verdict, Verdict::NotTestable);
    assert_eq!(extraction_claim(&dir.join("none.json")).verdict, Verdict::NotTestable);
    std::fs::remove_dir_all(&dir).ok();
}

/// README's table of the quick preset is the committed `claims.json`, row for row (the table is
/// written by `tools/claims_table.py`; this keeps the two from drifting apart).
#[test]
fn the_readme_table_is_the_committed_quick_claims() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("data/reproduce/quick/claims.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let claims: Vec<knowlens::verdict::Claim> =
        serde_json::from_value(v.get("claims").cloned().unwrap_or(v)).expect("claims.json holds claims");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(claims.len() >= 10);
    for c in &claims {
        let null = c.null.filter(|n| n.draws > 0).map_or("–".to_string(), |n| format!("{}/{}", n.passed, n.draws));
        let pc = c.positive_control.as_ref().map_or("–", |p| if p.passed { "passed" } else { "failed" });
        let row =
            format!("| {} | {} | {} | {null} | {pc} |", c.id, c.verdict.as_str(), c.figure.as_deref().unwrap_or("–"));
        assert!(readme.contains(&row), "README lacks the row {row}");
    }
}
