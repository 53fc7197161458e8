//! Shared helpers for the integration tests: fixture paths, the real models, tensor comparison.
#![allow(dead_code)]

pub mod browser;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use knowlens::{Model, Precision};

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

pub fn tiny(arch: &str) -> Model {
    Model::load(&fixture(&format!("tiny/{arch}")), Precision::F32).expect("tiny model loads")
}

/// Expected tensors written by tools/make_tiny_models.py or tools/make_golden_real.py.
pub fn expected(rel: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(rel), &Device::Cpu).expect("fixture loads")
}

/// A real model by preset name, fetched into the cache on first use.
pub fn real(name: &str, precision: Precision) -> Model {
    let preset = knowlens::fetch::preset(name).expect("known preset");
    let path = knowlens::fetch::ensure(preset).expect("model fetch");
    Model::load(&path, precision).expect("real model loads")
}

/// The switch for machines without network: with `KNOWLENS_OFFLINE=1` (or `true`), tests that
/// would fetch a model not already in the cache skip (printing why) instead of failing.
pub const OFFLINE_VAR: &str = "KNOWLENS_OFFLINE";

pub fn offline() -> bool {
    std::env::var(OFFLINE_VAR).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// `real`, or None (with the reason on stderr) when offline and the model is not cached:
/// `let Some(model) = real_or_skip(name, precision) else { return };`
pub fn real_or_skip(name: &str, precision: Precision) -> Option<Model> {
    let preset = knowlens::fetch::preset(name).expect("known preset");
    if offline() && knowlens::fetch::cached(preset).expect("cache directory").is_none() {
        let path = knowlens::fetch::cached_path(preset).expect("cache directory");
        eprintln!("skipped: {OFFLINE_VAR} is set and {name} is not in the cache ({})", path.display());
        return None;
    }
    Some(real(name, precision))
}

/// A fixed, non-degenerate [d] vector (values in [-1, 1)) for steering and projection tests.
pub fn direction(d: usize, seed: u64) -> Tensor {
    let v: Vec<f32> = (0..d).map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0).collect();
    Tensor::from_vec(v, d, &Device::Cpu).unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

pub fn max_abs(a: &Tensor) -> f32 {
    a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let num = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
    let den = b.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
    num / den
}

pub fn ids_rows(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_dtype(candle_core::DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|x| x as u32).collect())
        .collect()
}

/// Writes the tiny Llama fixture as a GGUF file the way llama.cpp's converter does: GGUF tensor
/// names, q/k rows permuted for interleaved RoPE, a byte-free toy vocabulary.
pub fn write_tiny_llama_gguf(path: &std::path::Path, arch_name: &str) {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let dir = fixture("tiny/llama");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let get = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let (n_layers, d, nh, nkv, ff, vocab) = (
        get("num_hidden_layers"),
        get("hidden_size"),
        get("num_attention_heads"),
        get("num_key_value_heads"),
        get("intermediate_size"),
        get("vocab_size"),
    );
    let st = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let permute = |w: &Tensor, heads: usize| -> Tensor {
        let (out, inp) = w.dims2().unwrap();
        w.reshape((heads, 2, out / heads / 2, inp)).unwrap().transpose(1, 2).unwrap().reshape((out, inp)).unwrap()
    };
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut put = |name: String, t: &Tensor| tensors.push((name, QTensor::quantize(t, GgmlDType::F32).unwrap()));
    put("token_embd.weight".into(), &st["model.embed_tokens.weight"]);
    put("output_norm.weight".into(), &st["model.norm.weight"]);
    for l in 0..n_layers {
        let hf = |s: &str| st[&format!("model.layers.{l}.{s}.weight")].clone();
        put(format!("blk.{l}.attn_norm.weight"), &hf("input_layernorm"));
        put(format!("blk.{l}.attn_q.weight"), &permute(&hf("self_attn.q_proj"), nh));
        put(format!("blk.{l}.attn_k.weight"), &permute(&hf("self_attn.k_proj"), nkv));
        put(format!("blk.{l}.attn_v.weight"), &hf("self_attn.v_proj"));
        put(format!("blk.{l}.attn_output.weight"), &hf("self_attn.o_proj"));
        put(format!("blk.{l}.ffn_norm.weight"), &hf("post_attention_layernorm"));
        put(format!("blk.{l}.ffn_gate.weight"), &hf("mlp.gate_proj"));
        put(format!("blk.{l}.ffn_up.weight"), &hf("mlp.up_proj"));
        put(format!("blk.{l}.ffn_down.weight"), &hf("mlp.down_proj"));
    }
    use gguf_file::Value as V;
    let a = |k: &str| format!("{arch_name}.{k}");
    let tokens: Vec<V> = (0..vocab).map(|i| V::String(format!("t{i}"))).collect();
    let meta: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(arch_name.into())),
        (a("block_count"), V::U32(n_layers as u32)),
        (a("context_length"), V::U32(get("max_position_embeddings") as u32)),
        (a("embedding_length"), V::U32(d as u32)),
        (a("feed_forward_length"), V::U32(ff as u32)),
        (a("attention.head_count"), V::U32(nh as u32)),
        (a("attention.head_count_kv"), V::U32(nkv as u32)),
        (a("attention.layer_norm_rms_epsilon"), V::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32)),
        (a("rope.freq_base"), V::F32(cfg["rope_theta"].as_f64().unwrap_or(10000.0) as f32)),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), V::String("default".into())),
        ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
        ("tokenizer.ggml.merges".into(), V::Array(vec![])),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(2)),
    ];
    let meta_refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
}

/// Loads a labeling mode directory and checks that its files agree: every class follows the
/// rule from its records (counting attributes only, a note for entities dropped otherwise), summary.json counts what labels.jsonl holds (per type and in all),
/// every known / unknown entity is in exactly one split and no dropped one is, and the control
/// sets have the sizes the summary reports.
pub fn check_label_outputs(dir: &std::path::Path) -> knowlens::entities::label_set::LabelSet {
    use knowlens::entities::decide::{classify, Class};
    use knowlens::entities::label_set::LabelSet;
    let set = LabelSet::load(dir).unwrap_or_else(|e| panic!("{e:#}"));
    let known_min = set.known_min.expect("summary.json gives known_min");
    for e in &set.entities {
        let l = &e.label;
        assert_eq!(l.n_attributes, l.records.len(), "{}", l.id);
        // Only counting attributes (names) count toward known; an entity dropped for a reason
        // other than its answers says why.
        let counting = l
            .records
            .iter()
            .filter(|r| r.correct && knowlens::entities::rule::counts(l.entity_type, &r.attribute))
            .count();
        assert_eq!(l.n_correct, counting, "{}", l.id);
        let want = if l.note.is_some() { Class::Dropped } else { classify(l.n_correct, known_min) };
        assert_eq!(l.class, want, "{}: {} of {} correct", l.id, l.n_correct, l.n_attributes);
        assert!(l.records.iter().all(|r| r.entity_id == l.id && r.entity_type == l.entity_type), "{}", l.id);
        assert_eq!(e.split.is_none(), l.class == Class::Dropped, "{}: {:?} in split {:?}", l.id, l.class, e.split);
    }
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let [k, u, d] = set.class_counts();
    let all = &summary["all"];
    assert_eq!(
        [all["entities"].as_u64(), all["known"].as_u64(), all["unknown"].as_u64(), all["dropped"].as_u64()],
        [Some(set.entities.len() as u64), Some(k as u64), Some(u as u64), Some(d as u64)]
    );
    for (t, of) in set.by_type() {
        let count = |c: Class| of.iter().filter(|e| e.class() == c).count() as u64;
        let s = &summary["types"][t.as_str()];
        assert_eq!(s["entities"].as_u64(), Some(of.len() as u64), "{t}");
        assert_eq!(
            [s["known"].as_u64(), s["unknown"].as_u64(), s["dropped"].as_u64()],
            [Some(count(Class::Known)), Some(count(Class::Unknown)), Some(count(Class::Dropped))]
        );
    }
    let in_splits: usize = [&set.splits.train, &set.splits.validation, &set.splits.test]
        .iter()
        .flat_map(|m| m.values())
        .map(Vec::len)
        .sum();
    assert_eq!(in_splits, k + u, "every known and unknown entity in one split");
    let (mk, mu) = set.matched();
    assert_eq!(mk.len(), mu.len());
    assert_eq!(summary["matched_pairs"].as_u64(), Some(mk.len() as u64));
    assert_eq!(summary["fabricated_matched"].as_u64(), Some(set.fabricated_ids().len() as u64));
    set
}
