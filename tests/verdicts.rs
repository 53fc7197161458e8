//! The calibrated verdict on a model where the truth is known: a direction planted to raise one
//! token's logit is found by the direction-as-unit rule (`verdict::direction_passes`) against
//! Gaussian controls, a random direction in its place is not, and the rule's null rate over the
//! controls stays at or below 5%.

mod common;

use candle_core::{DType, Device, Tensor};
use knowlens::causal::direction::SteeringDirection;
use knowlens::stats::calibrate::{null_rate, paired_mean_diff};
use knowlens::verdict::{direction_passes, ALPHA};
use knowlens::{HookPoint, HookSpec, LogitsAt, Positions};

/// Per prompt, the chosen token's logit at the last position, with `dir` pushed there at
/// `magnitude` (None: the original model).
fn target_logits(
    model: &knowlens::Model,
    prompts: &[String],
    target: u32,
    edit: Option<(&SteeringDirection, f64)>,
) -> Vec<f64> {
    let refs: Vec<&str> = prompts.iter().map(|s| s.as_str()).collect();
    let batch = model.batch(&refs, false).unwrap();
    let mut spec = HookSpec::new().logits(LogitsAt::Last);
    if let Some((d, m)) = edit {
        spec = d.add(spec, Positions::Each(vec![-1]), m, &Device::Cpu).unwrap();
    }
    let out = model.run(&batch, &spec).unwrap();
    let l = out.logits.unwrap().to_dtype(DType::F32).unwrap();
    l.narrow(1, target as usize, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&x| x as f64)
        .collect()
}

#[test]
fn a_planted_direction_is_found_and_a_random_one_is_not() {
    let model = common::tiny("gemma3");
    let (d, layer) = (model.cfg().d_model, model.cfg().n_layers - 1);
    let prompts: Vec<String> =
        (0..24).map(|i| format!("w{} w{} w{}", 4 + i % 30, 5 + (i * 7) % 40, 6 + (i * 3) % 50)).collect();
    let target = model.tokenizer.encode("w9", false, false).unwrap()[0];
    // The planted direction: the target's unembedding row through the final norm's weight, pushed
    // into the residual stream entering the last block, at the last position.
    let table = model.transformer.unembedding_table().expect("the tiny model keeps its float32 table");
    let row: Vec<f32> = table.get(target as usize).unwrap().to_vec1().unwrap();
    let g: Vec<f32> = model.transformer.final_norm_weight().to_dtype(DType::F32).unwrap().to_vec1().unwrap();
    let raw: Vec<f32> = row.iter().zip(&g).map(|(r, g)| r * g).collect();
    let planted = SteeringDirection::from_vector("planted", layer, &raw).unwrap();
    // One mean residual norm at that layer and position.
    let refs: Vec<&str> = prompts.iter().map(|s| s.as_str()).collect();
    let batch = model.batch(&refs, false).unwrap();
    let hook = HookPoint::ResidPre(layer);
    let cache = model.run(&batch, &HookSpec::new().capture([hook])).unwrap().cache;
    let last: Tensor = cache.gather(hook, &Positions::Each(vec![-1])).unwrap();
    let norms: Vec<f32> =
        last.sqr().unwrap().sum_keepdim(2).unwrap().sqrt().unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let magnitude = norms.iter().map(|&x| x as f64).sum::<f64>() / norms.len() as f64;

    let original = target_logits(&model, &prompts, target, None);
    let effect_of = |dir: &SteeringDirection| {
        let v = target_logits(&model, &prompts, target, Some((dir, magnitude)));
        let e = paired_mean_diff(&v, &original, 1000, 0).unwrap();
        (e.value, e.lo)
    };
    let controls: Vec<(f64, f64)> =
        (0..20).map(|i| effect_of(&SteeringDirection::random(layer, d, 11, i).unwrap())).collect();
    let values: Vec<f64> = controls.iter().map(|c| c.0).collect();

    let (planted_effect, planted_lo) = effect_of(&planted);
    let (found, p) = direction_passes(planted_effect, planted_lo, &values, None);
    assert!(found, "planted effect {planted_effect} (lo {planted_lo}) vs controls {values:?}: rank p {p}");
    assert!(p <= ALPHA);

    let (random_effect, random_lo) = effect_of(&SteeringDirection::random(layer, d, 12, 0).unwrap());
    let (false_find, _) = direction_passes(random_effect, random_lo, &values, None);
    assert!(!false_find, "a random direction passed: {random_effect} vs {values:?}");

    let null = null_rate(controls.len(), |i, others| {
        let o: Vec<f64> = others.iter().map(|&j| values[j]).collect();
        direction_passes(controls[i].0, controls[i].1, &o, None).0
    });
    assert!(null.rate <= ALPHA, "{null:?}");
}
