//! `knowlens reproduce`: presets and configs, the stage plan, and the claim verdicts on
//! hand-made stage outputs.

use knowlens::reproduce::claims::{self, Verdict};
use knowlens::reproduce::plan::{self, StageRecord};
use knowlens::reproduce::Config;

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

fn steer_json(known_dir: (f64, f64, f64), random: (f64, f64, f64), unknown_orig: f64) -> serde_json::Value {
    let cond = |kind: &str, known: bool| serde_json::json!({"known": known, "treatment": {"kind": kind, "coef": 4.0, "direction": "d"}});
    let cell = |c: usize, r: serde_json::Value| serde_json::json!({"condition": c, "entity_type": null, "n": 40, "refusal_rate": r});
    serde_json::json!({
        "options": {"coefs": [1.0, 4.0]},
        "conditions": [cond("original", true), cond("direction", true), cond("random", true),
                       cond("original", false), cond("direction", false), cond("random", false)],
        "cells": [cell(0, rate(0.05, 0.01, 0.16)), cell(1, rate(known_dir.0, known_dir.1, known_dir.2)),
                  cell(2, rate(random.0, random.1, random.2)), cell(3, rate(unknown_orig, 0.0, unknown_orig + 0.1)),
                  cell(4, rate(0.0, 0.0, 0.09)), cell(5, rate(0.02, 0.0, 0.1))],
    })
}

#[test]
fn refusal_claims_need_the_direction_to_beat_the_original_and_random_directions() {
    let dir = std::env::temp_dir().join(format!("knowlens-claims-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("steer.json");
    let verdict = |id: &str| claims::steering_claims(&p).into_iter().find(|c| c.id == id).unwrap().verdict;
    std::fs::write(&p, steer_json((0.6, 0.45, 0.73), (0.1, 0.04, 0.23), 0.0).to_string()).unwrap();
    assert_eq!(verdict("refusal-up"), Verdict::Reproduced);
    // No refusal to lower on unknown entities: not testable, not "reproduced".
    assert_eq!(verdict("refusal-down"), Verdict::NotTestable);
    // A random direction of the same strength does as much: not reproduced.
    std::fs::write(&p, steer_json((0.6, 0.45, 0.73), (0.55, 0.4, 0.69), 0.0).to_string()).unwrap();
    assert_eq!(verdict("refusal-up"), Verdict::NotReproduced);
    // Strengths are tried weakest first: at ×1 the direction beats random, at ×4 random breaks
    // the model as much; the verdict names ×1.
    let cond = |kind: &str, coef: f64| serde_json::json!({"known": true, "treatment": {"kind": kind, "coef": coef, "direction": "d"}});
    let cell = |c: usize, v: f64, lo: f64, hi: f64| serde_json::json!({"condition": c, "entity_type": null, "n": 40, "refusal_rate": rate(v, lo, hi)});
    let two = serde_json::json!({
        "options": {"coefs": [4.0, 1.0]},
        "conditions": [cond("original", 0.0), cond("direction", 1.0), cond("random", 1.0), cond("direction", 4.0), cond("random", 4.0)],
        "cells": [cell(0, 0.05, 0.01, 0.16), cell(1, 0.5, 0.35, 0.65), cell(2, 0.05, 0.01, 0.16),
                  cell(3, 0.9, 0.77, 0.96), cell(4, 0.9, 0.77, 0.96)],
    });
    std::fs::write(&p, two.to_string()).unwrap();
    let up = claims::steering_claims(&p).into_iter().find(|c| c.id == "refusal-up").unwrap();
    assert_eq!(up.verdict, Verdict::Reproduced, "{}", up.evidence);
    assert!(up.evidence.contains("random ×1") && up.evidence.contains("2 strengths tried"), "{}", up.evidence);
    // Missing outputs are not testable.
    let missing = claims::steering_claims(&dir.join("none.json"));
    assert!(missing.iter().all(|c| c.verdict == Verdict::NotTestable));
    assert!(claims::discovery_claims(&dir.join("none.json")).iter().all(|c| c.verdict == Verdict::NotTestable));
    std::fs::remove_dir_all(&dir).ok();
}

fn discovery_json(types: &[&str], per_type_lo: &[f64], random_max: f64) -> serde_json::Value {
    let mut evals = vec![serde_json::json!({"subset": "test", "entity_type": null, "n_pos": 30, "n_neg": 90,
                                            "auroc": rate(0.8, 0.72, 0.87)})];
    for (t, lo) in types.iter().zip(per_type_lo) {
        evals.push(serde_json::json!({"subset": "test", "entity_type": t, "auroc": rate(lo + 0.1, *lo, lo + 0.2)}));
    }
    serde_json::json!({
        "model": {"n_layers": 18},
        "types_scored": types,
        "excluded_types": [],
        "latent_evals": [{"direction": "known", "rank": 0, "layer": 9, "latent": 254, "evals": evals}],
        "random_baselines": [{"direction": "known", "of_latent": 254, "max": random_max}],
        "layers": [],
    })
}

#[test]
fn latent_claims_need_every_scored_type_and_more_than_one_type() {
    let dir = std::env::temp_dir().join(format!("knowlens-disc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("discovery.json");
    let verdict = |v: serde_json::Value| {
        std::fs::write(&p, v.to_string()).unwrap();
        claims::discovery_claims(&p).into_iter().find(|c| c.id == "known-latent").unwrap().verdict
    };
    assert_eq!(verdict(discovery_json(&["city", "movie"], &[0.6, 0.55], 0.6)), Verdict::Reproduced);
    // One type: a pooled AUROC also separates that type from the rest.
    assert_eq!(verdict(discovery_json(&["city"], &[0.6], 0.6)), Verdict::NotTestable);
    // A type where the latent is at chance, or random latents as good: not reproduced.
    assert_eq!(verdict(discovery_json(&["city", "movie"], &[0.6, 0.45], 0.6)), Verdict::NotReproduced);
    assert_eq!(verdict(discovery_json(&["city", "movie"], &[0.6, 0.55], 0.75)), Verdict::NotReproduced);
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
