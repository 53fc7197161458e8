//! The steering experiments: directions, the refusal rule against a hand-read sample, and the
//! refusal / yes-no experiments on the real chat model (SmolLM2-135M-Instruct).

mod common;

use common::real_or_skip;
use knowlens::causal::direction::SteeringDirection;
use knowlens::causal::items::{chat_text, few_shot_preamble, prompt_text, Item, PromptStyle, FEW_SHOT};
use knowlens::causal::refusal::{is_refusal, RefusalRule};
use knowlens::causal::steer::{self, Role};
use knowlens::discover::scores::Direction;
use knowlens::entities::label_set::Split;
use knowlens::entities::questions::{AnswerKind, EntityType};
use knowlens::progress::Silent;
use knowlens::Precision;

#[test]
fn random_directions_are_seeded_unit_and_distinct() {
    let a = SteeringDirection::random(3, 640, 7, 0).unwrap();
    let b = SteeringDirection::random(3, 640, 7, 0).unwrap();
    let c = SteeringDirection::random(3, 640, 7, 1).unwrap();
    let d = SteeringDirection::random(4, 640, 7, 0).unwrap();
    assert_eq!(a.unit, b.unit);
    assert!((a.cosine(&a) - 1.0).abs() < 1e-5);
    // Independent Gaussian directions in 640 dimensions: |cos| ~ 1/sqrt(640) = 0.04.
    assert!(a.cosine(&c).abs() < 0.2, "{}", a.cosine(&c));
    assert!(a.cosine(&d).abs() < 0.2, "another layer gives another direction");
    assert!(SteeringDirection::random(0, 0, 0, 0).is_err(), "an empty direction cannot steer");
}

/// Each line of the fixture is a completion read by eye and marked refusal or not; the fixed
/// rule must agree with the reader on at least 95% of them and do no worse than the paper's.
#[test]
fn the_fixed_refusal_rule_agrees_with_the_hand_read_sample() {
    let text = std::fs::read_to_string(common::fixture("refusals/hand_read.jsonl")).unwrap();
    let (mut n, mut fixed_ok, mut paper_ok) = (0usize, 0usize, 0usize);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = v["text"].as_str().unwrap();
        let truth = v["refusal"].as_bool().unwrap();
        n += 1;
        fixed_ok += (is_refusal(t, RefusalRule::Fixed) == truth) as usize;
        paper_ok += (is_refusal(t, RefusalRule::Paper) == truth) as usize;
    }
    eprintln!("agreement with the reader: fixed rule {fixed_ok}/{n}, paper rule {paper_ok}/{n}");
    assert!(n >= 100, "the sample holds {n} completions");
    assert!(fixed_ok as f64 >= 0.95 * n as f64, "fixed rule: {fixed_ok}/{n}");
    assert!(fixed_ok >= paper_ok, "fixed {fixed_ok} vs paper {paper_ok} of {n}");
}

fn item(name: &str, t: EntityType, known: bool, question: &str, gold: &str) -> Item {
    Item {
        id: name.to_string(),
        entity_type: t,
        name: name.to_string(),
        known,
        split: Split::Test,
        popularity_rank: None,
        attribute: "director",
        kind: AnswerKind::Name,
        gold: vec![gold.to_string()],
        question: question.to_string(),
    }
}

/// The items of `v` asked on validation (where the strength is chosen) and again on test.
fn both_splits(v: Vec<Item>) -> Vec<Item> {
    let mut out: Vec<Item> = v
        .iter()
        .cloned()
        .map(|mut i| {
            i.split = Split::Validation;
            i
        })
        .collect();
    out.extend(v);
    out
}

fn chat_items() -> Vec<Item> {
    vec![
        item("Titanic", EntityType::Movie, true, "Who directed the movie 'Titanic'?", "James Cameron"),
        item("Paris", EntityType::City, true, "In which country is the city 'Paris'?", "France"),
        item("Quorvath Blenning", EntityType::Movie, false, "Who directed the movie 'Quorvath Blenning'?", "Ann Lee"),
        item("Zelmora Fitch", EntityType::City, false, "In which country is the city 'Zelmora Fitch'?", "Peru"),
    ]
}

fn directions(d: usize, layer: usize, seed: u64) -> steer::Directions {
    let mut known = SteeringDirection::random(layer, d, seed, 0).unwrap();
    known.detects = Some(Direction::Known);
    let mut unknown = SteeringDirection::random(layer, d, seed, 1).unwrap();
    unknown.detects = Some(Direction::Unknown);
    steer::Directions { known, unknown, known_controls: Vec::new(), unknown_controls: Vec::new() }
}

/// The answer of `item` under the first condition of its class and split matching `pick`.
fn answer_of(r: &steer::SteerOutput, item: usize, pick: &dyn Fn(&steer::Condition) -> bool) -> String {
    let it = &r.items[item];
    let c = r.conditions.iter().position(|c| c.known == it.known && c.split == it.split && pick(c)).expect("condition");
    r.answers.iter().find(|a| a.item == item && a.condition == c).expect("answer").text.clone()
}

#[test]
fn steering_at_zero_strength_changes_nothing_and_strong_steering_changes_answers() {
    let Some(model) = real_or_skip("smollm2-135m-instruct", Precision::F32) else { return };
    let text = chat_text(&model, "Who directed the movie 'Titanic'?", "").unwrap();
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text:?}");
    let opts = steer::Options {
        coefs: vec![0.0, 8.0],
        n_gaussian: 1,
        n_select_controls: 1,
        max_tokens: 12,
        batch: 4,
        yes_no: false,
        ..Default::default()
    };
    let dirs = directions(model.cfg().d_model, 10, 99);
    let r = steer::run(&model, false, both_splits(chat_items()), &dirs, &opts, &Silent).unwrap();
    assert!(r.mean_norms.iter().all(|&(_, n)| n > 0.0 && n.is_finite()));
    let mut changed = 0;
    for i in (0..r.items.len()).filter(|&i| r.items[i].split == Split::Validation) {
        let orig = answer_of(&r, i, &|c| c.role == Role::Original);
        let zero = answer_of(&r, i, &|c| c.role == Role::Detector && c.coef == 0.0);
        let strong = answer_of(&r, i, &|c| c.role == Role::Detector && c.coef == 8.0);
        assert_eq!(orig, zero, "item {i}: a zero-strength push changed the answer");
        changed += (strong != orig) as usize;
    }
    assert!(changed >= 2, "a push of 8 mean norms changed only {changed} of 4 answers");
    // Both classes chose a strength on validation and ran the test conditions at it: the
    // original, the detector, the opposite direction and one Gaussian control (the refusal
    // direction only when the model refused and answered enough validation questions).
    for known in [true, false] {
        let s = r.strengths.iter().find(|s| s.known == known).unwrap();
        assert_eq!(s.candidates.len(), 2);
        let coef = s.coef.expect("a strength was chosen");
        let test: Vec<&steer::Condition> =
            r.conditions.iter().filter(|c| c.known == known && c.split == Split::Test).collect();
        for role in [Role::Original, Role::Detector, Role::Opposite, Role::Gaussian] {
            assert!(test.iter().any(|c| c.role == role), "{role:?} missing on test");
        }
        assert!(test.iter().filter(|c| c.role != Role::Original).all(|c| c.coef == coef));
    }
    // Every test condition ran on its class's two test items, and the tallies count them.
    for t in r.tallies.iter().filter(|t| t.entity_type.is_none()) {
        assert_eq!(t.n, 2, "{:?}", r.conditions[t.condition]);
        assert_eq!(t.correct + t.wrong + t.refusal + t.broken, t.n);
    }
    // Four test questions per class at most: every claim says it cannot be tested.
    let claims = steer::claims::claims(&r, false);
    assert!(claims.iter().all(|c| c.verdict == knowlens::verdict::Verdict::NotTestable), "{claims:?}");
}

#[test]
fn yes_no_logit_difference_is_unchanged_at_zero_strength() {
    let Some(model) = real_or_skip("smollm2-135m-instruct", Precision::F32) else { return };
    let dirs = directions(model.cfg().d_model, 12, 5);
    let run = |coef: f64| {
        let opts = steer::Options {
            coefs: vec![coef],
            n_gaussian: 2,
            n_select_controls: 0,
            max_tokens: 2,
            batch: 4,
            ..Default::default()
        };
        steer::run(&model, false, both_splits(chat_items()), &dirs, &opts, &Silent).unwrap()
    };
    let zero = run(0.0);
    let yn = zero.yes_no.as_ref().unwrap();
    assert_eq!(yn.original.len(), 4);
    for s in &yn.steered {
        for (k, &i) in s.items.iter().enumerate() {
            let o = yn.original_of(i).unwrap();
            assert!(o.is_finite() && (s.values[k] - o).abs() < 1e-4, "{:?}", zero.conditions[s.condition]);
        }
    }
    let strong = run(8.0);
    let yn = strong.yes_no.as_ref().unwrap();
    assert!(yn.steered.iter().any(|s| s
        .items
        .iter()
        .zip(&s.values)
        .any(|(&i, v)| (v - yn.original_of(i).unwrap()).abs() > 0.1)));
}

/// The base model's few-shot preamble: half its examples decline, no example names an entity the
/// test asks about, and a question ends where the answer starts.
#[test]
fn the_few_shot_preamble_teaches_declining_and_ends_at_the_answer() {
    let refusals = FEW_SHOT.iter().filter(|(_, a)| is_refusal(a, RefusalRule::Fixed)).count();
    assert_eq!(refusals, FEW_SHOT.len() / 2, "half the examples say \"I don't know\"");
    assert!(FEW_SHOT.iter().filter(|(_, a)| !is_refusal(a, RefusalRule::Fixed)).all(|(_, a)| !a.is_empty()));
    let p = few_shot_preamble();
    assert_eq!(p.lines().count(), 2 * FEW_SHOT.len());
    for it in base_items() {
        assert!(!p.contains(&it.name), "{} is named in the preamble", it.name);
    }
}

fn base_items() -> Vec<Item> {
    vec![
        item("Jaws", EntityType::Movie, true, "Who is the director of the movie 'Jaws'?", "Steven Spielberg"),
        item("London", EntityType::City, true, "What country contains the city of 'London'?", "United Kingdom"),
        item(
            "Quorvath Blenning",
            EntityType::Movie,
            false,
            "Who is the director of the movie 'Quorvath Blenning'?",
            "Ann Lee",
        ),
        item("Zelmora Fitch", EntityType::City, false, "What country contains the city of 'Zelmora Fitch'?", "Peru"),
    ]
}

#[test]
fn a_base_model_is_asked_through_the_few_shot_preamble_and_answers_one_line() {
    let Some(model) = real_or_skip("gemma-3-270m", Precision::F32) else { return };
    assert_eq!(PromptStyle::for_model(&model), PromptStyle::FewShot, "Gemma 3 270M base has no chat template");
    let text = prompt_text(&model, PromptStyle::FewShot, "Who is the director of the movie 'Jaws'?", "").unwrap();
    assert!(text.starts_with("Q: ") && text.ends_with("'Jaws'?\nA:"), "{text:?}");
    let dirs = directions(model.cfg().d_model, 6, 3);
    let opts = steer::Options {
        coefs: vec![0.0],
        n_gaussian: 0,
        n_select_controls: 0,
        max_tokens: 12,
        batch: 4,
        prompt: PromptStyle::FewShot,
        ..Default::default()
    };
    let r = steer::run(&model, false, both_splits(base_items()), &dirs, &opts, &Silent).unwrap();
    let orig: Vec<_> = r.answers.iter().filter(|a| r.conditions[a.condition].role == Role::Original).collect();
    assert_eq!(orig.len(), 8, "four questions, on validation and on test");
    for a in &orig {
        assert!(!a.text.contains('\n'), "a few-shot answer stops at its line: {:?}", a.text);
    }
    // The steered-at-zero answers equal the original ones of the same split.
    for a in r.answers.iter().filter(|a| r.conditions[a.condition].role == Role::Detector) {
        let c = &r.conditions[a.condition];
        let o = orig.iter().find(|o| o.item == a.item && r.conditions[o.condition].split == c.split).unwrap();
        assert_eq!(a.text, o.text);
    }
    eprintln!("{:?}", orig.iter().map(|a| (&r.items[a.item].name, &a.text, a.outcome)).collect::<Vec<_>>());
    // "Are you sure you know" in the few-shot form: " Yes" and " No" are single tokens, and at
    // zero strength the steered values equal the original ones.
    let yn = r.yes_no.as_ref().unwrap();
    assert_eq!(yn.original.len(), 4);
    for s in &yn.steered {
        for (k, &i) in s.items.iter().enumerate() {
            assert!((s.values[k] - yn.original_of(i).unwrap()).abs() < 1e-4);
        }
    }
}

/// The outcome classifier against completions a person labelled by reading them
/// (tests/fixtures/outcomes/hand_labelled.jsonl, drawn at random from the committed SmolLM2
/// steering answers): overall agreement and the broken class, which decides whether a control
/// counts, must both hold.
#[test]
fn outcome_classifier_agrees_with_hand_labels() {
    use knowlens::causal::outcome::{classify, Outcome};
    use knowlens::causal::refusal::RefusalRule;
    use knowlens::entities::questions::AnswerKind;
    let text = std::fs::read_to_string("tests/fixtures/outcomes/hand_labelled.jsonl").unwrap();
    let (mut agree, mut n) = (0, 0);
    let (mut broken_hit, mut broken_said, mut broken_true) = (0, 0, 0);
    let mut misses = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let gold: Vec<String> = v["gold"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_string()).collect();
        let said = classify(
            v["text"].as_str().unwrap(),
            AnswerKind::Name,
            &gold,
            v["name"].as_str().unwrap(),
            RefusalRule::Fixed,
        );
        let want: Outcome = v["label"].as_str().unwrap().parse().unwrap();
        n += 1;
        if said == want {
            agree += 1;
        } else {
            misses.push(format!("{:?} said {:?} for {:?}", want, said, v["text"]));
        }
        broken_said += (said == Outcome::Broken) as usize;
        broken_true += (want == Outcome::Broken) as usize;
        broken_hit += (said == Outcome::Broken && want == Outcome::Broken) as usize;
    }
    let rate = agree as f64 / n as f64;
    eprintln!(
        "agreement {agree}/{n}; broken: {broken_hit} of {broken_true} found, {broken_said} said; misses:\n{}",
        misses.join("\n")
    );
    assert!(rate >= 0.8, "agreement {agree}/{n}; misses:\n{}", misses.join("\n"));
    assert!(broken_hit as f64 >= 0.75 * broken_true as f64, "broken recall {broken_hit}/{broken_true}");
    assert!(broken_hit as f64 >= 0.9 * broken_said as f64, "broken precision {broken_hit}/{broken_said}");
}
