//! The steering experiments: directions, the refusal rule against a hand-read sample, and the
//! refusal / yes-no experiments on the real chat model (SmolLM2-135M-Instruct).

mod common;

use common::real_or_skip;
use knowlens::causal::direction::SteeringDirection;
use knowlens::causal::items::{chat_text, few_shot_preamble, prompt_text, Item, PromptStyle, FEW_SHOT};
use knowlens::causal::refusal::{is_refusal, RefusalRule};
use knowlens::causal::steer::{self, Treatment};
use knowlens::causal::yesno;
use knowlens::discover::scores::Direction;
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
        popularity_rank: None,
        attribute: "director",
        kind: AnswerKind::Name,
        gold: vec![gold.to_string()],
        question: question.to_string(),
    }
}

fn chat_items() -> Vec<Item> {
    vec![
        item("Titanic", EntityType::Movie, true, "Who directed the movie 'Titanic'?", "James Cameron"),
        item("Paris", EntityType::City, true, "In which country is the city 'Paris'?", "France"),
        item("Quorvath Blenning", EntityType::Movie, false, "Who directed the movie 'Quorvath Blenning'?", "Ann Lee"),
        item("Zelmora Fitch", EntityType::City, false, "In which country is the city 'Zelmora Fitch'?", "Peru"),
    ]
}

#[test]
fn steering_at_zero_strength_changes_nothing_and_strong_steering_changes_answers() {
    let Some(model) = real_or_skip("smollm2-135m-instruct", Precision::F32) else { return };
    let d = model.cfg().d_model;
    let mut known = SteeringDirection::random(10, d, 99, 0).unwrap();
    known.detects = Some(Direction::Known);
    let mut unknown = SteeringDirection::random(10, d, 99, 1).unwrap();
    unknown.detects = Some(Direction::Unknown);
    let text = chat_text(&model, "Who directed the movie 'Titanic'?", "").unwrap();
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text:?}");
    let opts = steer::Options { coefs: vec![0.0, 8.0], n_random: 2, max_tokens: 12, batch: 4, ..Default::default() };
    let r = steer::run(&model, None, chat_items(), known, unknown, &opts, &Silent).unwrap();
    assert!(r.mean_norms.iter().all(|&(_, n)| n > 0.0 && n.is_finite()));
    let answer = |item: usize, pick: &dyn Fn(&Treatment) -> bool| {
        let c =
            r.conditions.iter().position(|c| c.known == r.items[item].known && pick(&c.treatment)).expect("condition");
        r.answers.iter().find(|a| a.item == item && a.condition == c).expect("answer").text.clone()
    };
    let mut changed = 0;
    for i in 0..r.items.len() {
        let orig = answer(i, &|t| matches!(t, Treatment::Original));
        let zero = answer(i, &|t| matches!(t, Treatment::Direction { coef, .. } if *coef == 0.0));
        let strong = answer(i, &|t| matches!(t, Treatment::Direction { coef, .. } if *coef == 8.0));
        assert_eq!(orig, zero, "item {i}: a zero-strength push changed the answer");
        changed += (strong != orig) as usize;
    }
    assert!(changed >= 2, "a push of 8 mean norms changed only {changed} of 4 answers");
    // Every condition ran on its class's items only, and the cells count them.
    let all = r.cells.iter().filter(|c| c.entity_type.is_none()).collect::<Vec<_>>();
    assert_eq!(all.len(), r.conditions.len());
    assert!(all.iter().all(|c| c.n == 2));
}

#[test]
fn yes_no_logit_difference_is_unchanged_at_zero_strength() {
    let Some(model) = real_or_skip("smollm2-135m-instruct", Precision::F32) else { return };
    let d = model.cfg().d_model;
    let known = SteeringDirection::random(12, d, 5, 0).unwrap();
    let unknown = SteeringDirection::random(12, d, 5, 1).unwrap();
    let items = chat_items();
    let zero =
        yesno::run(&model, &items, &known, &unknown, 0.0, (0.0, 0.0), 2, 0, 4, PromptStyle::Chat, &Silent).unwrap();
    for p in &zero.per_item {
        assert!(p[0].is_finite());
        assert!((p[0] - p[1]).abs() < 1e-4 && (p[0] - p[2]).abs() < 1e-4, "{p:?}");
    }
    let strong =
        yesno::run(&model, &items, &known, &unknown, 8.0, (200.0, 200.0), 2, 0, 4, PromptStyle::Chat, &Silent).unwrap();
    assert!(strong.per_item.iter().zip(&zero.per_item).any(|(s, z)| (s[1] - z[0]).abs() > 0.1));
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
    let d = model.cfg().d_model;
    let known = SteeringDirection::random(6, d, 3, 0).unwrap();
    let unknown = SteeringDirection::random(6, d, 3, 1).unwrap();
    let opts = steer::Options {
        coefs: vec![0.0],
        n_random: 0,
        max_tokens: 12,
        batch: 4,
        prompt: PromptStyle::FewShot,
        ..Default::default()
    };
    let r = steer::run(&model, None, base_items(), known.clone(), unknown.clone(), &opts, &Silent).unwrap();
    let orig: Vec<_> =
        r.answers.iter().filter(|a| matches!(r.conditions[a.condition].treatment, Treatment::Original)).collect();
    assert_eq!(orig.len(), 4);
    for a in &orig {
        assert!(!a.text.contains('\n'), "a few-shot answer stops at its line: {:?}", a.text);
    }
    // The steered-at-zero answers equal the original ones.
    for a in r.answers.iter().filter(|a| matches!(r.conditions[a.condition].treatment, Treatment::Direction { .. })) {
        let o = orig.iter().find(|o| o.item == a.item).unwrap();
        assert_eq!(a.text, o.text);
    }
    eprintln!("{:?}", orig.iter().map(|a| (&r.items[a.item].name, &a.text, a.refusal, a.correct)).collect::<Vec<_>>());
    // "Are you sure you know" in the few-shot form: " Yes" and " No" are single tokens.
    let yn =
        yesno::run(&model, &base_items(), &known, &unknown, 0.0, (0.0, 0.0), 1, 0, 4, PromptStyle::FewShot, &Silent)
            .unwrap();
    assert!(yn.per_item.iter().all(|p| p[0].is_finite() && (p[0] - p[1]).abs() < 1e-4));
}
