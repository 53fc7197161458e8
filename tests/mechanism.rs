//! The mechanism experiments (attention to the entity, steering it, activation patching) on the
//! tiny Gemma 3 model with synthetic label sets: the attention metric is the captured pattern,
//! the value-weighted variant is a·‖v‖, steering by 0 changes nothing, patching everything is
//! the clean run and patching nothing the corrupted one, batched patches equal single ones, and
//! bad input stops with a clear error.

mod common;

use std::path::Path;

use common::{fixture, tiny};
use knowlens::causal::attention::{self, AttentionOptions, Expect, MeasureOptions, Prompt, SelectOptions};
use knowlens::causal::patching::{self, PairOptions, PatchOptions, Site};
use knowlens::causal::SteeringDirection;
use knowlens::discover::detectors::DetectorFile;
use knowlens::entities::label_set::{LabelSet, Split};
use knowlens::entities::EntityType;
use knowlens::progress::Silent;
use knowlens::{HookPoint, HookSpec, Intervention, Model, Positions};
use serde_json::json;

const TEMPLATE: &str = "w5 {name} w7 w8";

fn item(name: &str, known: bool) -> Prompt {
    Prompt {
        id: name.to_string(),
        entity_type: EntityType::City,
        name: name.to_string(),
        known,
        split: "test".into(),
        prompt: TEMPLATE.replace("{name}", name),
    }
}

/// Prompts of different lengths, so batches are left-padded.
fn items() -> Vec<Prompt> {
    vec![item("w10 w11", true), item("w12", true), item("w13 w14 w15", false), item("w16", false)]
}

fn opts(batch: usize, value_weighted: bool) -> MeasureOptions {
    MeasureOptions { batch, value_weighted, norm_layers: vec![2] }
}

#[test]
fn the_attention_metric_is_the_captured_pattern_at_the_final_query_and_the_entitys_last_key() {
    let m = tiny("gemma3");
    let its = items();
    let refs: Vec<&Prompt> = its.iter().collect();
    let got = attention::measure(&m, &refs, None, &opts(3, false), &Silent).unwrap();
    let (nl, nh) = (m.cfg().n_layers, m.cfg().n_heads);
    for (k, it) in its.iter().enumerate() {
        // Each prompt alone, unpadded: pattern[h, last query, entity's last key].
        let eb = m.entity_batch(&[(it.prompt.as_str(), it.name.as_str())], false).unwrap();
        let key = *eb.spans[0].last().unwrap() as usize;
        let out = m.run(&eb.batch, &HookSpec::new().capture((0..nl).map(HookPoint::AttnPattern))).unwrap();
        for l in 0..nl {
            let p: Vec<Vec<Vec<f32>>> = out.cache.row(HookPoint::AttnPattern(l), 0).unwrap().to_vec3().unwrap();
            for h in 0..nh {
                let want = p[h][p[h].len() - 1][key];
                let have = got.attention[k][l][h];
                assert!((want - have).abs() < 1e-6, "{} L{l}H{h}: {have} vs {want}", it.name);
            }
        }
    }
    // The residual norm at the entity's last token is recorded per item.
    assert_eq!(got.resid_norms[&2].len(), its.len());
    assert!(got.resid_norms[&2].iter().all(|&n| n > 0.0));
}

#[test]
fn value_weighted_attention_is_the_attention_times_the_norm_of_the_entitys_value() {
    let m = tiny("gemma3");
    let its = items();
    let refs: Vec<&Prompt> = its.iter().collect();
    let got = attention::measure(&m, &refs, None, &opts(4, true), &Silent).unwrap();
    let nl = m.cfg().n_layers;
    for (k, it) in its.iter().enumerate() {
        let eb = m.entity_batch(&[(it.prompt.as_str(), it.name.as_str())], false).unwrap();
        let n = eb.batch.seq_len as i64;
        let key = *eb.spans[0].last().unwrap();
        for l in 0..nl {
            // An independent v_j: knock out every other key of the final query at this layer only,
            // so its hook_z is v_j.
            let others: Vec<i64> = (0..n).filter(|&p| p != key).collect();
            let spec = HookSpec::new()
                .edit(HookPoint::AttnScores(l), Positions::Last, Intervention::MaskKeys(Positions::Each(others)))
                .capture([HookPoint::AttnZ(l)]);
            let out = m.run(&eb.batch, &spec).unwrap();
            let z = out.cache.get(HookPoint::AttnZ(l)).unwrap().get(0).unwrap();
            let z: Vec<Vec<f32>> = z.get(n as usize - 1).unwrap().to_vec2().unwrap();
            for (h, v) in z.iter().enumerate() {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                let want = got.attention[k][l][h] * norm;
                let have = got.value_weighted[k][l][h];
                assert!((want - have).abs() < 1e-5 * (1.0 + want.abs()), "{} L{l}H{h}: {have} vs {want}", it.name);
            }
        }
    }
}

#[test]
fn steering_by_zero_changes_nothing_and_steering_moves_only_later_layers() {
    let m = tiny("gemma3");
    let its = items();
    let known: Vec<&Prompt> = its.iter().filter(|i| i.known).collect();
    let o = opts(2, false);
    let base = attention::measure(&m, &known, None, &o, &Silent).unwrap();
    let dir = SteeringDirection::random(3, m.cfg().d_model, 7, 0).unwrap();
    let zero =
        attention::steer_class(&m, &known, &base.attention, &dir, 0.0, 0.0, 3, Expect::Decrease, &o, 100, 0, &Silent)
            .unwrap();
    assert_eq!(zero.heads.len(), (m.cfg().n_layers - 3) * m.cfg().n_heads, "heads of layers ≥ 3");
    for h in &zero.heads {
        assert_eq!((h.delta.value, h.random_mean), (0.0, 0.0), "L{}H{}", h.layer, h.head);
    }
    // A real push changes attention from the direction's layer on, and nothing before it.
    let steered = attention::measure(
        &m,
        &known,
        Some(attention::Steer { direction: &dir, magnitude: 3.0 * base.resid_norms[&2][0] }),
        &o,
        &Silent,
    )
    .unwrap();
    let mut moved = 0.0f32;
    for (s, b) in steered.attention.iter().zip(&base.attention) {
        for l in 0..m.cfg().n_layers {
            for h in 0..m.cfg().n_heads {
                if l < 3 {
                    assert_eq!(s[l][h], b[l][h], "layer {l} is before the steered layer");
                } else {
                    moved = moved.max((s[l][h] - b[l][h]).abs());
                }
            }
        }
    }
    assert!(moved > 1e-3, "steering did not move any head: {moved}");
    let real = attention::steer_class(
        &m,
        &known,
        &base.attention,
        &dir,
        3.0,
        3.0 * base.resid_norms[&2][0],
        4,
        Expect::Decrease,
        &o,
        100,
        0,
        &Silent,
    )
    .unwrap();
    assert!(real.heads.iter().all(|h| (0.0..=1.0).contains(&h.p_one_sided) && h.p_bonferroni >= h.p_one_sided));
    // A base measurement of other items is refused.
    let err = attention::steer_class(&m, &known, &[], &dir, 1.0, 1.0, 2, Expect::Decrease, &o, 10, 0, &Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unsteered"), "{err}");
}

#[test]
fn promoted_tokens_are_the_heads_output_through_the_final_norm_and_unembedding() {
    let m = tiny("gemma3");
    let its = items();
    let refs: Vec<&Prompt> = its.iter().collect();
    let got = attention::promoted_tokens(&m, &refs, &[(0, 4, 1), (1, 2, 3)], 5, 8).unwrap();
    // Directly: zero every other head of the layer at the last position, read attn_out there.
    for (&(i, l, h), top) in [(0usize, 4usize, 1usize), (1, 2, 3)].iter().zip(&got) {
        let eb = m.entity_batch(&[(refs[i].prompt.as_str(), refs[i].name.as_str())], false).unwrap();
        let mut spec = HookSpec::new().capture([HookPoint::AttnOut(l)]);
        for other in (0..m.cfg().n_heads).filter(|&o| o != h) {
            spec = spec.edit_head(HookPoint::AttnZ(l), other, Positions::Last, Intervention::Zero);
        }
        let out = m.run(&eb.batch, &spec).unwrap();
        let y = out.cache.get(HookPoint::AttnOut(l)).unwrap().get(0).unwrap();
        let y = y.get(y.dim(0).unwrap() - 1).unwrap().unsqueeze(0).unwrap();
        let y = y.broadcast_mul(m.transformer.final_norm_weight()).unwrap();
        let logits: Vec<f32> = m.transformer.unembed_linear(&y).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let want: Vec<u32> = order[..5].iter().map(|&x| x as u32).collect();
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), want);
        assert!((top[0].1 - logits[order[0]]).abs() < 1e-4);
    }
}

fn pair_ids(m: &Model) -> (Vec<u32>, Vec<u32>) {
    let c = m.tokenizer.encode_prompt("w5 w10 w11 w7 w8", false).unwrap();
    let u = m.tokenizer.encode_prompt("w5 w12 w13 w7 w8", false).unwrap();
    (c, u)
}

#[test]
fn patching_everything_at_layer_0_is_the_clean_run_and_patching_nothing_the_corrupted_one() {
    let m = tiny("gemma3");
    let (c, u) = pair_ids(&m);
    let n = c.len() as i64;
    let sites = vec![
        Site::Resid { layer: 0, positions: (0..n).collect() },
        Site::Resid { layer: 0, positions: vec![] },
        Site::Resid { layer: 3, positions: (0..n).collect() },
        Site::Resid { layer: 1, positions: vec![0] },
    ];
    let r = patching::patch(&m, &c, &u, [40, 41], &sites, 16).unwrap();
    assert!(r.ld_clean != r.ld_corrupt);
    assert!((r.normalised[0] - 1.0).abs() < 1e-6, "all of resid_pre 0: {}", r.normalised[0]);
    assert_eq!(r.normalised[1], 0.0, "no position patched");
    assert!((r.normalised[2] - 1.0).abs() < 1e-4, "all of resid_pre 3: {}", r.normalised[2]);
    // Position 0 is the same token in both prompts: nothing changes.
    assert!(r.normalised[3].abs() < 1e-5, "{}", r.normalised[3]);
    assert_eq!(r.ld.len(), sites.len());
}

#[test]
fn batched_patches_equal_patches_run_one_at_a_time() {
    let m = tiny("gemma3");
    let (c, u) = pair_ids(&m);
    let (nl, nh) = (m.cfg().n_layers, m.cfg().n_heads);
    let mut sites = Vec::new();
    for l in 0..nl {
        sites.extend((2..c.len() as i64).map(|p| Site::Resid { layer: l, positions: vec![p] }));
        sites.extend((0..nh).map(|h| Site::Head { layer: l, head: h, position: -1 }));
    }
    let batched = patching::patch(&m, &c, &u, [40, 41], &sites, 64).unwrap();
    let single = patching::patch(&m, &c, &u, [40, 41], &sites, 3).unwrap();
    for (k, (a, b)) in batched.normalised.iter().zip(&single.normalised).enumerate() {
        assert!((a - b).abs() < 1e-4, "site {k} {:?}: {a} vs {b}", sites[k]);
    }
    // Some head matters somewhat, and not every one equally.
    let heads: Vec<f64> = sites
        .iter()
        .zip(&batched.normalised)
        .filter(|(s, _)| matches!(s, Site::Head { .. }))
        .map(|(_, &v)| v)
        .collect();
    assert!(heads.iter().any(|v| v.abs() > 1e-3), "{heads:?}");
}

#[test]
fn patching_refuses_prompts_of_different_lengths_and_bad_sites() {
    let m = tiny("gemma3");
    let (c, _) = pair_ids(&m);
    let short = m.tokenizer.encode_prompt("w5 w12 w7 w8", false).unwrap();
    let err = patching::patch(&m, &c, &short, [40, 41], &[], 8).unwrap_err().to_string();
    assert!(err.contains("same length"), "{err}");
    let err = patching::patch(&m, &c, &c, [40, 41], &[Site::Resid { layer: 0, positions: vec![9] }], 8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the prompt"), "{err}");
    let err = patching::patch(&m, &c, &c, [40, 41], &[Site::Head { layer: 0, head: 4, position: -1 }], 8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("4 heads"), "{err}");
    let err = patching::patch(&m, &c, &c, [40, 999], &[], 8).unwrap_err().to_string();
    assert!(err.contains("vocabulary"), "{err}");
    assert!(patching::patch(&m, &c, &c, [40, 41], &[], 2).is_err());
}

/// A label set of cities (known and unknown) and players (unknown only), with records that
/// carry the gold value the labels scored. Names are two tiny-vocabulary words.
fn write_labels(dir: &Path) -> LabelSet {
    std::fs::create_dir_all(dir).unwrap();
    let mut lines = String::new();
    let mut ids: std::collections::BTreeMap<(&str, &str, &str), Vec<String>> = Default::default();
    let mut add = |t: &'static str, i: usize, known: bool, split: &'static str| {
        let id = format!("{t}/{}{i}", if known { "k" } else { "u" });
        let name = format!("w{} w{}", 10 + i, if known { 60 } else { 70 } + i % 5);
        let attr = if t == "city" { "country" } else { "team" };
        let rec = json!({"entity_id": id, "entity_type": t, "attribute": attr, "template": 0, "prompt": "",
            "likelihood": [{"value": format!(" w{}", i % 7 + if known { 40 } else { 50 }), "tokens": 1,
            "logprob": -1.0, "first_token_prob": 0.3, "argmax_all": true}], "correct": known});
        let row = json!({"id": id, "type": t, "name": name, "popularity_rank": i + 1, "n_attributes": 1,
            "n_correct": if known { 2 } else { 0 }, "class": if known { "known" } else { "unknown" },
            "records": [rec]});
        lines.push_str(&(row.to_string() + "\n"));
        ids.entry((split, if known { "known" } else { "unknown" }, t)).or_default().push(id);
    };
    for i in 0..6 {
        add("city", i, true, if i < 4 { "train" } else { "test" });
        add("city", i, false, if i < 4 { "train" } else { "test" });
        add("player", i, false, "test");
    }
    std::fs::write(dir.join("labels.jsonl"), lines).unwrap();
    let part = |s: &str| {
        let get =
            |c: &str| ids.iter().filter(|(k, _)| k.0 == s && k.1 == c).flat_map(|(_, v)| v.clone()).collect::<Vec<_>>();
        json!({"known": get("known"), "unknown": get("unknown")})
    };
    let splits = json!({"seed": 0, "fractions": [0.5, 0.1, 0.4], "train": part("train"),
        "validation": part("validation"), "test": part("test")});
    std::fs::write(dir.join("splits.json"), splits.to_string()).unwrap();
    let controls = json!({"matched_known": [], "matched_unknown": [], "fabricated": [], "token_lengths": {}});
    std::fs::write(dir.join("controls.json"), controls.to_string()).unwrap();
    LabelSet::load(dir).unwrap()
}

fn select_opts(types: Option<Vec<EntityType>>) -> SelectOptions {
    SelectOptions { splits: vec![Split::Train, Split::Test], types, per_type: 50, template: TEMPLATE.into(), seed: 0 }
}

#[test]
fn selection_keeps_types_with_both_classes_and_refuses_a_chosen_type_without_known_entities() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write_labels(dir.path());
    let sel = attention::select(&labels, &select_opts(None)).unwrap();
    assert_eq!(sel.types, vec![EntityType::City]);
    assert!(sel.notes.iter().any(|n| n.contains("player: 0 known")), "{:?}", sel.notes);
    assert_eq!(sel.items.iter().filter(|i| i.known).count(), 6);
    let first_unknown = sel.items.iter().position(|i| !i.known).unwrap();
    assert!(sel.items[first_unknown..].iter().all(|i| !i.known), "known items first, then unknown");
    let err = attention::select(&labels, &select_opts(Some(vec![EntityType::Player]))).unwrap_err().to_string();
    assert!(err.contains("player: 0 known and 6 unknown") && err.contains("needs both"), "{err}");
    let mut o = select_opts(None);
    o.splits = vec![Split::Validation];
    let err = attention::select(&labels, &o).unwrap_err().to_string();
    assert!(err.contains("no entity type has both"), "{err}");
    o.splits = vec![Split::Test];
    o.per_type = 1;
    assert_eq!(attention::select(&labels, &o).unwrap().items.len(), 2);
}

#[test]
fn pairs_have_the_same_length_and_entity_positions_and_different_answers() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write_labels(dir.path());
    let m = tiny("gemma3");
    let mut o = PairOptions {
        splits: vec![Split::Train, Split::Test],
        types: None,
        template: TEMPLATE.into(),
        max_pairs: 32,
        candidates: 3,
        min_gap: -1e9,
        batch: 5,
        seed: 0,
    };
    let p = patching::find_pairs(&m, &labels, &o).unwrap();
    assert_eq!(p.pairs.len(), 6, "every known city gets a partner");
    assert_eq!(p.per_type["city"].paired, 6);
    let mut used = std::collections::HashSet::new();
    for pair in &p.pairs {
        assert_eq!(pair.clean.ids.len(), pair.corrupt.ids.len());
        assert_ne!(pair.clean.answer_token, pair.corrupt.answer_token);
        assert!(used.insert(pair.corrupt.id.clone()), "an unknown entity is used once");
        assert_eq!(pair.entity[1] - pair.entity[0], 1, "two-word names");
        assert!(pair.ld_clean.is_finite() && pair.ld_corrupt.is_finite());
    }
    o.max_pairs = 2;
    assert_eq!(patching::find_pairs(&m, &labels, &o).unwrap().pairs.len(), 2);
    o.min_gap = 1e9;
    let err = patching::find_pairs(&m, &labels, &o).unwrap_err().to_string();
    assert!(err.contains("no candidate pair reaches"), "{err}");
    o.min_gap = 0.0;
    o.types = Some(vec![EntityType::Player]);
    let err = patching::find_pairs(&m, &labels, &o).unwrap_err().to_string();
    assert!(err.contains("player: 0 known"), "{err}");
}

#[test]
fn the_patching_experiment_reports_heatmaps_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write_labels(&dir.path().join("labels"));
    let m = tiny("gemma3");
    let o = PatchOptions {
        model_name: "gemma3".into(),
        pairs: PairOptions {
            splits: vec![Split::Train, Split::Test],
            types: None,
            template: TEMPLATE.into(),
            max_pairs: 3,
            candidates: 2,
            min_gap: 0.01,
            batch: 8,
            seed: 1,
        },
        rows: 20,
        reps: 100,
        seed: 0,
    };
    let r = patching::run(&m, &labels, &o, &Silent).unwrap();
    assert!(!r.results.is_empty() && r.results.len() <= 3);
    let nl = m.cfg().n_layers;
    for pr in &r.results {
        assert!(pr.ld_clean - pr.ld_corrupt >= 0.01);
        // The template's prefix is shared: the first token that differs is the entity's first.
        assert_eq!(pr.first_differing, pr.pair.entity[0] as usize);
        assert!(pr.resid.iter().all(|row| row[..pr.first_differing].iter().all(|&v| v == 0.0)));
        assert!(pr.resid.iter().flatten().chain(pr.heads.iter().flatten()).all(|v| v.is_finite()));
    }
    let h = &r.resid[0];
    assert_eq!(h.scope, "all types");
    assert_eq!(h.cells.len(), nl);
    assert!(h.columns.iter().any(|c| c == "entity last") && h.columns.last().unwrap().starts_with("last"));
    assert_eq!(r.heads[0].columns.len(), m.cfg().n_heads);
    let out = dir.path().join("out");
    patching::write(&r, &out).unwrap();
    for f in ["patching.json", "resid.csv", "heads.csv", "report.html"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("entity last"));
    if let Some(browser) = common::browser::chromium() {
        common::browser::check_page(&browser, &out.join("report.html"));
    }
}

fn detector_file(dir: &Path, n_layers: usize) -> std::path::PathBuf {
    let d: Vec<f32> = (0..32).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
    let e: Vec<f32> = (0..32).map(|i| ((i * 5 % 13) as f32 - 6.0) / 6.0).collect();
    let f = json!({"format": "knowlens-detectors", "version": 1,
        "model": {"name": "gemma3", "arch": "gemma3", "n_layers": n_layers, "d_model": 32, "vocab_size": 96},
        "template": "w5 {name}",
        "detectors": [{"name": "probe_L2", "kind": "probe", "detects": "known", "layer": 2,
            "hook": "blocks.2.hook_resid_pre", "weights": d, "bias": 0.0, "threshold": 0.0, "decoder": d},
            {"name": "dom_L3", "kind": "diff_of_means", "detects": "known", "layer": 3,
            "hook": "blocks.3.hook_resid_pre", "weights": e, "bias": 0.0, "threshold": 0.0, "decoder": e}]});
    let p = dir.join(format!("detectors{n_layers}.json"));
    std::fs::write(&p, f.to_string()).unwrap();
    p
}

#[test]
fn the_attention_experiment_steers_with_a_probe_and_its_negation() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write_labels(&dir.path().join("labels"));
    let m = tiny("gemma3");
    let file = DetectorFile::load(&detector_file(dir.path(), 6)).unwrap();
    let d = attention::directions_from(&file, None, None).unwrap();
    assert_eq!(d.unknown.name, "−probe_L2");
    assert!((d.known.cosine(&d.unknown) + 1.0).abs() < 1e-6);
    assert!(d.notes[0].contains("negation of probe_L2"), "{:?}", d.notes);
    // The other direction is the negation of the one chosen, not of the file's first detector.
    let dom = attention::directions_from(&file, Some("dom_L3"), None).unwrap();
    assert_eq!((dom.known.name.as_str(), dom.unknown.name.as_str(), dom.unknown.layer), ("dom_L3", "−dom_L3", 3));
    let named = attention::directions_from(&file, None, Some("dom_L3")).unwrap();
    assert_eq!((named.known.name.as_str(), named.unknown.name.as_str()), ("probe_L2", "−dom_L3"));
    let err = attention::directions_from(&file, Some("nope"), None).unwrap_err().to_string();
    assert!(err.contains("probe_L2"), "{err}");
    let mut o = AttentionOptions {
        model_name: "gemma3".into(),
        select: select_opts(None),
        measure: MeasureOptions { batch: 4, value_weighted: true, norm_layers: Vec::new() },
        coefs: vec![0.0],
        n_random: 2,
        per_head_steering: true,
        top: 3,
        promoted_heads: 2,
        promoted_examples: 2,
        promoted_tokens: 4,
        reps: 100,
        seed: 0,
    };
    let r = attention::run(&m, &labels, &o, Some(&d), &Silent).unwrap();
    assert_eq!(r.counts["city"], [6, 6]);
    // The claims' head test: a head chosen outside the test split, its contrast tested on test.
    let v = r.verdicts.as_ref().expect("head test");
    assert!(v.choice.layer < m.cfg().n_layers && v.choice.head < m.cfg().n_heads);
    assert!(v.contrast.null.draws > 0);
    assert_eq!(r.pooled.len(), m.cfg().n_layers * m.cfg().n_heads);
    assert_eq!(r.steering.len(), 2);
    assert_eq!((r.steering[0].prompts.as_str(), r.steering[0].expect), ("known", Expect::Decrease));
    assert_eq!(r.steering[1].direction, "probe_L2");
    for s in &r.steering {
        assert!(s.heads.iter().all(|h| h.delta.value == 0.0 && h.random_mean == 0.0), "coef 0 moves nothing");
    }
    assert_eq!(r.promoted.len(), 4);
    // The pooled contrast of a head is the difference of the class means.
    let c = &r.pooled[5];
    let mean = |known: bool| {
        let v: Vec<f64> = r
            .items
            .iter()
            .zip(&r.measured.attention)
            .filter(|(i, _)| i.known == known)
            .map(|(_, g)| g[c.layer][c.head] as f64)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!((c.diff.value - (mean(true) - mean(false))).abs() < 1e-12);
    o.coefs = vec![2.0, 0.5];
    let r = attention::run(&m, &labels, &o, Some(&d), &Silent).unwrap();
    assert_eq!(r.steering.len(), 4, "two classes at two strengths");
    assert!((r.steering[0].magnitude - 4.0 * r.steering[2].magnitude).abs() < 1e-9);
    assert!(r.steering.iter().any(|s| s.heads.iter().any(|h| h.delta.value != 0.0)));
    let out = dir.path().join("out");
    attention::write(&r, &out).unwrap();
    for f in ["attention.json", "heads.csv", "steering.csv", "items.csv", "report.html"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    if let Some(browser) = common::browser::chromium() {
        common::browser::check_page(&browser, &out.join("report.html"));
    }
}

/// `base` with `flag=value` (replacing the flag where `base` has it: clap refuses it twice).
fn with(base: &[&str], flag: &str, value: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut skip = false;
    for a in base {
        if std::mem::take(&mut skip) {
            continue;
        }
        if *a == flag {
            skip = true;
        } else {
            v.push(a.to_string());
        }
    }
    v.push(format!("{flag}={value}"));
    v
}

fn cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knowlens")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout))
}

#[test]
fn the_commands_run_on_the_tiny_model_and_refuse_bad_arguments_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let labels_dir = dir.path().join("labels");
    write_labels(&labels_dir);
    let model = fixture("tiny/gemma3");
    let (m, l) = (model.to_str().unwrap(), labels_dir.to_str().unwrap());
    let det = detector_file(dir.path(), 6);
    let out = dir.path().join("att");
    let base = [
        "attention",
        "--model",
        m,
        "--labels",
        l,
        "--template",
        TEMPLATE,
        "--splits",
        "train,test",
        "--random",
        "2",
        "--reps",
        "50",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, msg) = cli(&[&base[..], &["--detectors", det.to_str().unwrap()]].concat());
    assert!(ok, "{msg}");
    assert!(msg.contains("city: 6 known, 6 unknown") && msg.contains("−probe_L2"), "{msg}");
    assert!(out.join("report.html").is_file());
    for (flag, value, needle) in [
        ("--coef", "-1", "--coef"),
        ("--coef", "NaN", "--coef"),
        ("--batch", "0", "--batch"),
        ("--random", "0", "--random"),
        ("--reps", "0", "--reps"),
        ("--top", "0", "--top"),
        ("--per-type", "0", "--per-type"),
        ("--types", "player", "player: 0 known"),
        ("--known-direction", "probe_L2", "--detectors"),
    ] {
        let (ok, msg) = cli(&with(&base, flag, value));
        assert!(!ok && !msg.contains("panicked") && msg.contains(needle), "{flag} {value}: {msg}");
    }
    // Detectors made for another model are refused before anything runs.
    let other = detector_file(dir.path(), 12);
    let (ok, msg) = cli(&[&base[..], &["--detectors", other.to_str().unwrap()]].concat());
    assert!(!ok && msg.contains("detectors were made for gemma3") && msg.contains("12 layers"), "{msg}");

    let out = dir.path().join("patch");
    let base = [
        "patch",
        "--model",
        m,
        "--labels",
        l,
        "--template",
        TEMPLATE,
        "--splits",
        "train,test",
        "--min-gap",
        "0",
        "--pairs",
        "2",
        "--reps",
        "50",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, msg) = cli(&base);
    assert!(ok, "{msg}");
    assert!(msg.contains("city:") && msg.contains("patched runs"), "{msg}");
    assert!(out.join("patching.json").is_file());
    for (flag, value, needle) in [
        ("--rows", "2", "--rows"),
        ("--pairs", "0", "--pairs"),
        ("--candidates", "0", "--candidates"),
        ("--min-gap", "NaN", "--min-gap"),
        ("--reps", "0", "--reps"),
        ("--min-gap", "1e9", "no candidate pair reaches"),
    ] {
        let (ok, msg) = cli(&with(&base, flag, value));
        assert!(!ok && !msg.contains("panicked") && msg.contains(needle), "{flag} {value}: {msg}");
    }
}
