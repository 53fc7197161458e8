//! Every hook point of every architecture against Hugging Face transformers, on tiny random
//! models (tests/fixtures/tiny, written by tools/make_tiny_models.py).

mod common;

use common::*;
use knowlens::{Batch, HookPoint, HookSpec, Intervention, LogitsAt, Positions};

const ARCHS: [&str; 3] = ["gemma3", "gemma2", "llama"];
const TOL: f32 = 2e-4;

/// The fixture's left-padded batch: rows with their padding removed, re-padded by knowlens.
fn fixture_batch(arch: &str) -> (knowlens::Model, Batch, std::collections::HashMap<String, candle_core::Tensor>) {
    let m = tiny(arch);
    let exp = expected(&format!("tiny/{arch}/expected.safetensors"));
    let ids = ids_rows(&exp["input_ids"]);
    let mask = ids_rows(&exp["attention_mask"]);
    let rows: Vec<Vec<u32>> = ids
        .iter()
        .zip(&mask)
        .map(|(r, m)| r.iter().zip(m).filter(|(_, &k)| k == 1).map(|(&t, _)| t).collect())
        .collect();
    let batch = m.batch_from_ids(&rows).unwrap();
    assert_eq!(batch.ids, ids, "{arch}: knowlens pads the fixture the same way");
    (m, batch, exp)
}

/// [b, s, vocab] logits agree at every real (unpadded) position of every row.
fn assert_logits_match(label: &str, batch: &Batch, got: &candle_core::Tensor, want: &candle_core::Tensor) {
    for r in 0..batch.rows() {
        let p = batch.pad[r];
        let g = got.get(r).unwrap().narrow(0, p, batch.seq_len - p).unwrap();
        let w = want.get(r).unwrap().narrow(0, p, batch.seq_len - p).unwrap();
        let d = max_abs_diff(&g, &w);
        assert!(d <= TOL * max_abs(&w).max(1.0), "{label} row {r}: max diff {d}");
    }
}

#[test]
fn every_hook_point_matches_transformers() {
    for arch in ARCHS {
        let (m, batch, exp) = fixture_batch(arch);
        let n = m.cfg().n_layers;
        let spec = HookSpec::new().capture(HookPoint::all(n)).logits(LogitsAt::All);
        let out = m.run(&batch, &spec).unwrap();
        for hook in HookPoint::all(n) {
            let Some(want) = exp.get(&hook.to_string()) else {
                // transformers exposes no pre-softmax scores; tests/api.rs checks that their
                // softmax is the pattern checked here, bit for bit.
                assert!(matches!(hook, HookPoint::AttnScores(_)), "{arch}: the fixture lacks {hook}");
                continue;
            };
            for r in 0..batch.rows() {
                // Compare real positions only: padding queries are undefined in both.
                let got = out.cache.row(hook, r).unwrap();
                let p = batch.pad[r];
                let s = batch.seq_len;
                let mut w = want.get(r).unwrap().narrow(hook.position_axis() - 1, p, s - p).unwrap();
                if let HookPoint::AttnPattern(_) = hook {
                    w = w.narrow(2, p, s - p).unwrap();
                }
                let d = max_abs_diff(&got, &w);
                let scale = max_abs(&w).max(1.0);
                assert!(d <= TOL * scale, "{arch} {hook} row {r}: max diff {d} (scale {scale})");
            }
        }
        assert_logits_match(&format!("{arch} logits"), &batch, &out.logits.unwrap(), &exp["logits"]);
    }
}

#[test]
fn steering_matches_transformers() {
    for arch in ARCHS {
        let (m, batch, exp) = fixture_batch(arch);
        let spec = HookSpec::new()
            .edit(
                HookPoint::ResidPre(1),
                Positions::Last,
                Intervention::Add { vector: exp["steer.vector"].clone(), scale: 4.0 },
            )
            .logits(LogitsAt::All);
        let logits = m.run(&batch, &spec).unwrap().logits.unwrap();
        assert_logits_match(&format!("{arch} steered logits"), &batch, &logits, &exp["steer.logits"]);
        // And the steering did something.
        let plain = m.run(&batch, &HookSpec::new().logits(LogitsAt::All)).unwrap().logits.unwrap();
        assert!(max_abs_diff(&plain, &logits) > 1e-3, "{arch}: steering changed nothing");
    }
}

#[test]
fn stop_at_layer_skips_later_blocks_and_agrees() {
    let (m, batch, _) = fixture_batch("gemma3");
    let hook = HookPoint::ResidPost(2);
    let early = m.run(&batch, &HookSpec::new().capture([hook])).unwrap();
    assert!(early.logits.is_none());
    assert_eq!(early.cache.tensors.len(), 1);
    let full = m.run(&batch, &HookSpec::new().capture([hook, HookPoint::ResidPost(5)]).logits(LogitsAt::Last)).unwrap();
    assert_eq!(max_abs_diff(early.cache.get(hook).unwrap(), full.cache.get(hook).unwrap()), 0.0);
    // The input of the first block not run is still reachable.
    let pre = HookPoint::ResidPre(3);
    let stopped = m.run(&batch, &HookSpec::new().capture([pre])).unwrap();
    assert_eq!(max_abs_diff(stopped.cache.get(pre).unwrap(), full.cache.get(hook).unwrap()), 0.0);
}
