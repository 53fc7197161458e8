//! Generation from a queue of prompts (`generate_many`): rows that finish leave, queued prompts
//! join, samples share a prefill; checked against `generate` on each prompt alone.

mod common;

use common::*;
use knowlens::model::generate::{generate, generate_many, GenerateOptions, Generation};
use knowlens::{HookPoint, HookSpec, Intervention, Model, Positions};

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![2, 10, 11],
        vec![2, 20, 21, 22, 23, 24],
        vec![2, 30],
        vec![2, 40, 41, 42],
        vec![2, 50, 51, 52, 53],
        vec![2, 60, 61],
    ]
}

fn alone(m: &Model, p: &[u32], spec: &HookSpec, opts: &GenerateOptions) -> Generation {
    let b = m.batch_from_ids(&[p.to_vec()]).unwrap();
    generate(m, &b, spec, opts).unwrap().0.remove(0)
}

#[test]
fn a_full_queue_gives_what_each_prompt_gives_alone() {
    for arch in ["gemma3", "llama", "gemma2"] {
        let m = tiny(arch);
        // A stop token that some rows meet early makes rows finish at different steps.
        let opts = GenerateOptions { max_tokens: 7, ..Default::default() };
        for max_rows in [1, 2, 4, 16] {
            let got = generate_many(&m, &prompts(), &HookSpec::new(), &opts, 1, max_rows).unwrap();
            for (i, p) in prompts().iter().enumerate() {
                let want = alone(&m, p, &HookSpec::new(), &opts);
                assert_eq!(got[i][0].ids, want.ids, "{arch} max_rows {max_rows} prompt {i}");
                assert_eq!(got[i][0].prompt_ids, *p);
            }
        }
    }
}

#[test]
fn rows_of_different_lengths_finish_at_different_steps_and_are_replaced() {
    let m = tiny("gemma3");
    // Stop strings end some rows after one or two tokens, others run to max_tokens.
    let first = alone(&m, &prompts()[0], &HookSpec::new(), &GenerateOptions { max_tokens: 3, ..Default::default() });
    let stop = m.tokenizer.decode(&first.ids[..1]).unwrap();
    let opts = GenerateOptions { max_tokens: 9, stop: vec![stop], ..Default::default() };
    let got = generate_many(&m, &prompts(), &HookSpec::new(), &opts, 1, 3).unwrap();
    let lens: Vec<usize> = got.iter().map(|g| g[0].ids.len()).collect();
    assert!(lens.iter().min() < lens.iter().max(), "rows finish at different steps: {lens:?}");
    for (i, p) in prompts().iter().enumerate() {
        let want = alone(&m, p, &HookSpec::new(), &opts);
        assert_eq!(
            (&got[i][0].ids, &got[i][0].text, got[i][0].stop_reason),
            (&want.ids, &want.text, want.stop_reason),
            "prompt {i}"
        );
    }
}

#[test]
fn samples_share_a_prefill_and_do_not_depend_on_the_batch() {
    let m = tiny("llama");
    let opts = GenerateOptions {
        max_tokens: 6,
        temperature: 1.0,
        row_seeds: Some(vec![11, 12, 13, 14, 15, 16]),
        ..Default::default()
    };
    let a = generate_many(&m, &prompts(), &HookSpec::new(), &opts, 4, 4).unwrap();
    let b = generate_many(&m, &prompts(), &HookSpec::new(), &opts, 4, 24).unwrap();
    for (i, p) in prompts().iter().enumerate() {
        let ids = |v: &Vec<Generation>| v.iter().map(|g| g.ids.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a[i]), ids(&b[i]), "prompt {i}: samples depend on the batch");
        // Sample 0 is what generate draws for this prompt with its seed.
        let one = GenerateOptions { row_seeds: Some(vec![opts.row_seeds.as_ref().unwrap()[i]]), ..opts.clone() };
        assert_eq!(a[i][0].ids, alone(&m, p, &HookSpec::new(), &one).ids, "prompt {i}");
    }
    let distinct: std::collections::BTreeSet<Vec<u32>> = a.iter().flatten().map(|g| g.ids.clone()).collect();
    assert!(distinct.len() > prompts().len(), "samples of a prompt differ: {} distinct", distinct.len());
}

#[test]
fn steering_applies_to_every_admitted_prompt() {
    let m = tiny("gemma3");
    let v = candle_core::Tensor::ones(m.cfg().d_model, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let spec =
        HookSpec::new().edit(HookPoint::ResidPre(2), Positions::Last, Intervention::Add { vector: v, scale: 30.0 });
    let opts = GenerateOptions { max_tokens: 5, steer_generated: true, ..Default::default() };
    let got = generate_many(&m, &prompts(), &spec, &opts, 1, 2).unwrap();
    for (i, p) in prompts().iter().enumerate() {
        assert_eq!(got[i][0].ids, alone(&m, p, &spec, &opts).ids, "prompt {i}");
    }
}

#[test]
fn bad_requests_are_errors() {
    let m = tiny("gemma3");
    let o = GenerateOptions::default();
    let e = |r: anyhow::Result<Vec<Vec<Generation>>>| r.unwrap_err().to_string();
    assert!(e(generate_many(&m, &prompts(), &HookSpec::new(), &o, 0, 4)).contains("at least 1"));
    assert!(e(generate_many(&m, &prompts(), &HookSpec::new(), &o, 5, 4)).contains("max_rows"));
    assert!(e(generate_many(&m, &prompts(), &HookSpec::new().capture([HookPoint::ResidPre(1)]), &o, 1, 4))
        .contains("captures"));
    let rows = HookSpec::new().edit(HookPoint::ResidPre(1), Positions::Rows(vec![vec![0]]), Intervention::Zero);
    assert!(e(generate_many(&m, &prompts(), &rows, &o, 1, 4)).contains("per-row positions"));
    assert!(e(generate_many(&m, &[vec![2], vec![]], &HookSpec::new(), &o, 1, 4)).contains("prompt 1 is empty"));
    let long = GenerateOptions { max_tokens: 1000, ..Default::default() };
    assert!(e(generate_many(&m, &prompts(), &HookSpec::new(), &long, 1, 4)).contains("context"));
    let none = GenerateOptions { max_tokens: 0, ..Default::default() };
    assert!(generate_many(&m, &prompts(), &HookSpec::new(), &none, 2, 4)
        .unwrap()
        .iter()
        .flatten()
        .all(|g| g.ids.is_empty()));
}

/// Greedy decoding with its KV cache picks, at every step, the argmax of the logits that one
/// forward pass over the whole sequence gives at that position: plain and steered, batched and
/// alone (decoding's few rows take the packed unembedding kernel, `model/unembed.rs`).
#[test]
fn greedy_tokens_are_the_argmax_of_a_full_passs_logits() {
    use knowlens::hooks::LogitsAt;
    for arch in ["gemma3", "llama", "gemma2"] {
        let m = tiny(arch);
        // Steering at every generated position too, as the full pass steers every position.
        let opts = GenerateOptions { max_tokens: 9, steer_generated: true, ..Default::default() };
        let d = m.cfg().d_model;
        let steer = HookSpec::new().edit(
            HookPoint::ResidPost(0),
            Positions::All,
            Intervention::Add { vector: direction(d, 3), scale: 2.0 },
        );
        for spec in [HookSpec::new(), steer] {
            for max_rows in [1, 4] {
                let got = generate_many(&m, &prompts(), &spec, &opts, 1, max_rows).unwrap();
                for (p, g) in prompts().iter().zip(&got) {
                    let ids = &g[0].ids;
                    assert!(!ids.is_empty(), "{arch}: nothing generated");
                    let mut seq = p.clone();
                    seq.extend(&ids[..ids.len() - 1]);
                    let b = m.batch_from_ids(&[seq]).unwrap();
                    let logits = m.run(&b, &spec.clone().logits(LogitsAt::All)).unwrap().logits.unwrap();
                    let picks = logits.squeeze(0).unwrap().argmax(1).unwrap().to_vec1::<u32>().unwrap();
                    assert_eq!(&picks[p.len() - 1..], &ids[..], "{arch}, {max_rows} rows: prompt {p:?}");
                }
            }
        }
    }
}
