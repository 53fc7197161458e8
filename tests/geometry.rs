//! Detection vs refusal geometry: the stratified refusal direction on synthetic data, the
//! cosine nulls, and the whole experiment on the tiny Llama with planted refusals, where a
//! push read at the steered layer must move the projection by exactly magnitude · cosine.

mod common;

use common::tiny;
use knowlens::causal::direction::{Source, SteeringDirection};
use knowlens::causal::geometry::{self, ChatPrompt, Inputs, RefusalPrompt};
use knowlens::causal::refusal::RefusalRule;
use knowlens::discover::scores::Direction;
use knowlens::entities::questions::EntityType;
use knowlens::progress::Silent;
use knowlens::rng::SplitMix64;

#[test]
fn the_stratified_difference_of_means_removes_a_template_confound() {
    // Two templates: template 0 is refused 80% of the time, template 1 20%. Each template moves
    // the residual by its own offset; refusal adds the planted direction.
    let d = 24;
    let planted: Vec<f32> = (0..d).map(|j| if j < 4 { 1.0 } else { 0.0 }).collect();
    let offset: Vec<f32> = (0..d).map(|j| if (8..16).contains(&j) { 3.0 } else { 0.0 }).collect();
    let mut rng = SplitMix64::derive(1, 99, 0);
    let (mut x, mut y, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..400 {
        let stratum = i % 2;
        let refused = if stratum == 0 { i % 10 < 8 } else { i % 10 < 2 };
        for j in 0..d {
            let v = if stratum == 0 { offset[j] } else { 0.0 }
                + if refused { planted[j] } else { 0.0 }
                + 0.1 * rng.normal() as f32;
            x.push(v);
        }
        y.push(refused);
        s.push(stratum);
    }
    let plain = knowlens::stats::diff_of_means(&x, d, &y).unwrap();
    let strat = geometry::stratified_diff_of_means(&x, d, &y, &s, &|_| true, &|_| true).unwrap();
    let (cp, cs) = (geometry::cosine(&plain, &planted), geometry::cosine(&strat, &planted));
    assert!(cs > 0.99, "stratified: cos {cs}");
    assert!(cp < 0.5, "the plain difference of means should be dominated by the template offset: cos {cp}");
    // Rows restricted to one stratum with one class only: no contrast, an error.
    let e = geometry::stratified_diff_of_means(&x, d, &y, &s, &|_| true, &|r| r < 1).unwrap_err();
    assert!(e.to_string().contains("both classes"), "{e}");
}

#[test]
fn the_cosine_nulls_have_the_expected_spread() {
    // Isotropic: E|cos| = sqrt(2/pi)/sqrt(d) = 0.0332 for d = 576.
    let v: Vec<f32> = (0..576).map(|j| if j == 7 { 1.0 } else { 0.0 }).collect();
    let iso = geometry::isotropic_null(&v, 3, 2000, 5).unwrap();
    assert!((iso.mean_abs - 0.0332).abs() < 0.003, "{iso:?}");
    assert!(iso.p95_abs > 0.06 && iso.p95_abs < 0.1, "{iso:?}");
    // Shuffled labels over anisotropic rows (axis 0 carries all the variance): a difference of
    // means of random halves lies along axis 0, so v = axis 0 is aligned by chance, far beyond
    // the isotropic band, while an axis without variance is not.
    let d = 64;
    let mut rng = SplitMix64::derive(2, 99, 0);
    let mut x = Vec::new();
    for _ in 0..200 {
        for j in 0..d {
            x.push(if j == 0 { 10.0 * rng.normal() as f32 } else { 0.01 * rng.normal() as f32 });
        }
    }
    let y: Vec<bool> = (0..200).map(|i| i % 2 == 0).collect();
    let axis = |k: usize| -> Vec<f32> { (0..d).map(|j| if j == k { 1.0 } else { 0.0 }).collect() };
    let aligned = geometry::permutation_null(&axis(0), &x, d, &y, 100, 1).unwrap();
    let quiet = geometry::permutation_null(&axis(5), &x, d, &y, 100, 1).unwrap();
    assert!(aligned.mean_abs > 0.9, "{aligned:?}");
    assert!(quiet.p95_abs < 0.05, "{quiet:?}");
}

/// Refusal prompts in the tiny vocabulary: refused questions end with w50, answered with w51;
/// two templates (strata); half of each in train.
fn planted_refusals() -> (Vec<RefusalPrompt>, Vec<ChatPrompt>) {
    planted_refusals_ending_with("")
}

/// The same, with `tail` appended to every prompt (a shared last token, like a chat template's).
fn planted_refusals_ending_with(tail: &str) -> (Vec<RefusalPrompt>, Vec<ChatPrompt>) {
    let mut prompts = Vec::new();
    let mut texts = Vec::new();
    for i in 0..64usize {
        let stratum = i % 2;
        let name = format!("w{}", 20 + (i / 2) % 20);
        let refused = if stratum == 0 { (i / 2) % 2 == 0 } else { (i / 2) % 3 == 0 };
        let text = format!("w{} {name} w9 {}{tail}", 8 + stratum, if refused { "w50" } else { "w51" });
        prompts.push(RefusalPrompt {
            id: format!("player/{i}"),
            entity_type: EntityType::Player,
            attribute: if stratum == 0 { "birth_city".into() } else { "team".into() },
            name: name.clone(),
            question: text.clone(),
            answer: String::new(),
            refused,
            train: (i / 2) % 4 < 2,
        });
        texts.push((text, name));
    }
    (prompts, texts)
}

fn entity_prompts(n: usize) -> (Vec<ChatPrompt>, Vec<bool>) {
    (0..n)
        .map(|i| {
            let name = format!("w{}", 20 + i % 20);
            ((format!("w5 w6 {name} w7"), name), i % 20 < 10)
        })
        .unzip()
}

#[test]
fn a_push_read_at_the_steered_layer_moves_the_projection_by_magnitude_times_cosine() {
    let model = tiny("llama");
    let d = model.cfg().d_model;
    let (refusal, refusal_texts) = planted_refusals();
    let (detection, detection_known) = entity_prompts(40);
    let (steer, steer_known) = entity_prompts(20);
    // The refusal direction at layer 1 as the experiment fits it (train half, used strata),
    // planted as the "known" direction: its cosine with itself is 1, so a push of m moves the
    // projection read at layer 1 by exactly m.
    let acts = geometry::site_activations(&model, &refusal_texts, 8, &Silent).unwrap();
    let y: Vec<bool> = refusal.iter().map(|p| p.refused).collect();
    let (strata, idx) = geometry::strata(&refusal, 3);
    assert!(strata.iter().all(|s| s.used), "{strata:?}");
    let r1 = geometry::stratified_diff_of_means(&acts.last[1], d, &y, &idx, &|_| true, &|r| refusal[r].train).unwrap();
    let r1 = geometry::unit(&r1, "r1").unwrap();
    let known = SteeringDirection {
        name: "planted".into(),
        source: Source::DiffOfMeans,
        detects: Some(Direction::Known),
        layer: 1,
        unit: r1.clone(),
    };
    let mut unknown = SteeringDirection::random(1, d, 77, 0).unwrap();
    unknown.name = "random-unknown".into();
    let opts = geometry::Options {
        coefs: vec![1.0, 2.0],
        n_random: 3,
        n_null: 200,
        n_permutations: 50,
        min_per_class: 3,
        batch: 8,
        ..Default::default()
    };
    let inputs = Inputs {
        refusal: refusal.clone(),
        refusal_texts: refusal_texts.clone(),
        detection: detection.clone(),
        detection_known: detection_known.clone(),
        steer: steer.clone(),
        steer_known: steer_known.clone(),
        known_direction: known.clone(),
        unknown_direction: unknown.clone(),
        extra: vec![&known],
        rule: RefusalRule::Fixed,
    };
    let g = geometry::run(&model, inputs, &opts, &Silent).unwrap();
    assert_eq!(g.layers.len(), model.cfg().n_layers);
    assert!(g.skipped_layers.is_empty());
    // Layer 0 is the last token's embedding: w50 vs w51 whatever the prompt, so the direction is
    // the same in both halves and separates perfectly.
    let l0 = &g.layers[0];
    assert!(l0.stability > 0.9999, "{l0:?}");
    assert_eq!(l0.heldout_auroc.unwrap().value, 1.0);
    assert_eq!(l0.heldout_auroc_within, Some(1.0));
    assert!(l0.heldout_gap > 0.0);
    assert!((g.layers[1].detectors[0].1 - 1.0).abs() < 1e-5, "{:?}", g.layers[1].detectors);
    assert!(g.layers[0].detectors.is_empty());
    for l in &g.layers {
        assert!(l.null_isotropic.p95_abs > 0.0 && l.null_isotropic.p95_abs < 1.0);
        assert!(l.cos_dom_entity.abs() <= 1.0 && l.cos_probe_entity.is_some());
    }
    // Unknown questions are pushed along the planted direction, known ones along a random one.
    assert!(g.mean_norms.iter().all(|&(_, n)| n > 0.0));
    for s in &g.shifts {
        assert_eq!(s.n, 10);
        let want = s.magnitude * s.cos_with_refusal;
        let got = s.shift.unwrap().value;
        if s.read_layer == s.steer_layer {
            assert!((got - want).abs() < 1e-3 * s.magnitude, "{s:?}: shift {got}, want {want}");
            // Every question moves by the same amount, so the interval collapses on it.
            let e = s.shift.unwrap();
            assert!(e.hi - e.lo < 1e-3 * s.magnitude, "{e:?}");
        } else {
            assert!(got.is_finite() && s.read_layer > s.steer_layer);
        }
        assert_eq!(s.random_means.len(), 3);
        if !s.known && s.read_layer == 1 {
            assert!((got - s.magnitude).abs() < 1e-3 * s.magnitude);
            assert!(s.z_vs_random.unwrap() > 3.0, "{s:?}");
        }
    }
    // The random baseline at the steered layer: each random direction moves every question by
    // magnitude · cos(random, refusal).
    let s = g.shifts.iter().find(|s| !s.known && s.read_layer == 1 && s.coef == 2.0).unwrap();
    for (k, &m) in s.random_means.iter().enumerate() {
        let rd = SteeringDirection::random(1, d, opts.seed, k as u64).unwrap();
        let want = s.magnitude * geometry::cosine(&rd.unit, &r1);
        assert!((m - want).abs() < 1e-3 * s.magnitude, "random {k}: {m} vs {want}");
    }

    // A direction of another width is refused, naming it.
    let mut narrow = known.clone();
    narrow.unit.truncate(d - 1);
    let inputs = Inputs {
        refusal,
        refusal_texts,
        detection,
        detection_known,
        steer,
        steer_known,
        known_direction: narrow,
        unknown_direction: unknown,
        extra: vec![],
        rule: RefusalRule::Fixed,
    };
    let e = geometry::run(&model, inputs, &opts, &Silent).unwrap_err().to_string();
    assert!(e.contains("planted") && e.contains("does not fit"), "{e}");
}

#[test]
fn no_refusal_contrast_is_an_error_that_gives_the_counts() {
    let model = tiny("llama");
    let (mut refusal, refusal_texts) = planted_refusals();
    refusal.iter_mut().for_each(|p| p.refused = false);
    let (detection, detection_known) = entity_prompts(20);
    let dir = SteeringDirection::random(1, model.cfg().d_model, 1, 0).unwrap();
    let inputs = Inputs {
        refusal,
        refusal_texts,
        detection: detection.clone(),
        detection_known: detection_known.clone(),
        steer: detection,
        steer_known: detection_known,
        known_direction: dir.clone(),
        unknown_direction: dir,
        extra: vec![],
        rule: RefusalRule::Fixed,
    };
    let e = geometry::run(&model, inputs, &geometry::Options::default(), &Silent).unwrap_err().to_string();
    assert!(e.contains("no question template") && e.contains("player.birth_city 0+0 refused of 16+16"), "{e}");
}

#[test]
fn a_layer_where_refused_and_answered_cannot_differ_is_skipped_not_fatal() {
    // Every prompt ends with w60: block 0's input at the last token is w60's embedding in every
    // prompt, so there is no contrast there; later layers see the earlier tokens.
    let model = tiny("llama");
    let (refusal, refusal_texts) = planted_refusals_ending_with(" w60");
    let (detection, detection_known) = entity_prompts(20);
    let dir = SteeringDirection::random(0, model.cfg().d_model, 1, 0).unwrap();
    let opts = geometry::Options {
        coefs: vec![1.0],
        n_random: 2,
        n_null: 50,
        n_permutations: 10,
        min_per_class: 3,
        batch: 8,
        ..Default::default()
    };
    let inputs = Inputs {
        refusal,
        refusal_texts,
        detection: detection.clone(),
        detection_known: detection_known.clone(),
        steer: detection,
        steer_known: detection_known,
        known_direction: dir.clone(),
        unknown_direction: dir,
        extra: vec![],
        rule: RefusalRule::Fixed,
    };
    let g = geometry::run(&model, inputs, &opts, &Silent).unwrap();
    assert_eq!(g.skipped_layers, vec![0]);
    assert_eq!(g.layers.iter().map(|l| l.layer).collect::<Vec<_>>(), vec![1, 2]);
    // Steering at layer 0 is read at the fitted layers only.
    let read: Vec<usize> = g.shifts.iter().map(|s| s.read_layer).collect();
    assert!(!read.is_empty() && read.iter().all(|&l| l >= 1), "{read:?}");
}
