//! What fuzzing the loaders found stays fixed, and the limits that protect the machine hold:
//! * every input the fuzzer crashed on (`tests/fixtures/fuzz/<target>/`) now meets the contract
//!   of `fuzz/harness.rs` (an error with a message naming the file, or a usable value);
//! * a header claiming a 100 GB tensor, a million-element array in a 1 KB file, deeply nested
//!   JSON and a looping chat template are refused before allocation, naming file and field;
//! * the seed corpora `tools/fuzz.sh` starts from load (and are written out for it when
//!   `KNOWLENS_FUZZ_SEEDS` names a directory).

mod common;
#[path = "../fuzz/harness.rs"]
mod harness;

use std::io::Write;
use std::path::Path;

use common::*;
use knowlens::sae::train::checkpoint::{self, CheckpointState};
use knowlens::sae::train::disk::{self, CacheOptions, StoreDtype};
use knowlens::sae::train::{ArchConfig, StoreState, TrainConfig, Trainer};
use knowlens::tokenizer::{ChatMessage, ChatTemplate, Tokenizer};
use knowlens::{HookPoint, Model, Precision, Sae};

/// The error of `r` on one line (`{:#}`); the tests print each (`-- --nocapture`) for the
/// README's bad-input matrix.
fn err<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn inputs_the_fuzzer_crashed_on_are_handled() {
    let root = fixture("fuzz");
    let mut replayed = 0;
    for target in harness::TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else { continue };
        for e in entries {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            eprintln!("replaying {}", path.display());
            harness::run(target, &bytes);
            replayed += 1;
        }
    }
    eprintln!("{replayed} crash inputs replayed");
}

/// A stored zip holding one `.npy` entry whose header says `shape` but whose data is `data`.
fn npz_with(shape: &str, data: &[u8]) -> Vec<u8> {
    let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend((h.len() as u16).to_le_bytes());
    npy.extend(h.as_bytes());
    npy.extend(data);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("W_enc.npy", opts).unwrap();
    zip.write_all(&npy).unwrap();
    zip.finish().unwrap().into_inner()
}

/// A GGUF header declaring one float32 tensor of `dims` and nothing behind it.
fn gguf_claiming(dims: &[u64]) -> Vec<u8> {
    let s = |v: &mut Vec<u8>, x: &str| {
        v.extend((x.len() as u64).to_le_bytes());
        v.extend(x.as_bytes());
    };
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(1u64.to_le_bytes()); // tensors
    v.extend(1u64.to_le_bytes()); // metadata entries
    s(&mut v, "general.architecture");
    v.extend(8u32.to_le_bytes()); // string
    s(&mut v, "llama");
    s(&mut v, "token_embd.weight");
    v.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        v.extend(d.to_le_bytes());
    }
    v.extend(0u32.to_le_bytes()); // F32
    v.extend(0u64.to_le_bytes()); // offset
    while !v.len().is_multiple_of(32) {
        v.push(0);
    }
    v.extend([0u8; 64]);
    v
}

#[test]
fn a_header_claiming_a_100_gb_tensor_is_refused() {
    // GGUF: 2^20 × 25,600 float32 = 100 GiB.
    let bytes = gguf_claiming(&[25_600, 1 << 20]);
    let e = err(Model::from_gguf_reader(std::io::Cursor::new(bytes), Path::new("huge.gguf"), Precision::F32));
    eprintln!("refused: {e}");
    assert!(e.contains("huge.gguf") && e.contains("token_embd.weight") && e.contains("truncated"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    // npz: a (160000, 163840) float32 array in a file of a few hundred bytes.
    let npz = npz_with("(160000, 163840)", &[0u8; 64]);
    let e = err(Sae::from_npz_bytes(&npz, Path::new("layer_3/params.npz"), None));
    eprintln!("refused: {e}");
    assert!(e.contains("params.npz") && e.contains("array 'W_enc'") && e.contains("[160000, 163840]"), "{e}");
    // safetensors: a header whose tensor ends 100 GB past the data.
    let header = r#"{"w_enc":{"dtype":"F32","shape":[160000,163840],"data_offsets":[0,104857600000]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend(header.as_bytes());
    st.extend([0u8; 64]);
    let e = err(Sae::from_gemma_scope_2_bytes(Path::new("layer_3"), None, &st, None));
    eprintln!("refused: {e}");
    assert!(e.contains("params.safetensors") && e.contains("not a readable safetensors file"), "{e}");
}

#[test]
fn a_million_element_array_in_a_1_kb_file_is_refused() {
    let npz = npz_with("(1000000,)", &[0u8; 512]);
    assert!(npz.len() < 1024);
    let e = err(Sae::from_npz_bytes(&npz, Path::new("layer_3/params.npz"), None));
    eprintln!("refused: {e}");
    assert!(e.contains("params.npz") && e.contains("array 'W_enc'") && e.contains("1000000 values"), "{e}");
    // A GGUF metadata array of a million strings in 1 KB.
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    v.extend(1u64.to_le_bytes());
    v.extend(21u64.to_le_bytes());
    v.extend(b"tokenizer.ggml.tokens");
    v.extend(9u32.to_le_bytes()); // array
    v.extend(8u32.to_le_bytes()); // of strings
    v.extend(1_000_000u64.to_le_bytes());
    v.resize(1000, 0);
    let e = err(Tokenizer::from_model_path(&write_temp("tokens.gguf", &v)));
    eprintln!("refused: {e}");
    assert!(e.contains("tokens.gguf") && e.contains("not a valid GGUF"), "{e}");
    // An activation-store shard listed with a million rows over a 1 KB file.
    let (dir, mut index) = small_store();
    index.shards[0].rows = 1_000_000;
    index.digest = index.recipe.digest();
    std::fs::write(dir.path().join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let e = err(knowlens::sae::train::DiskStore::open(dir.path(), false));
    eprintln!("refused: {e}");
    assert!(e.contains("shard-00000.bin") && e.contains("1000000 rows"), "{e}");
}

fn write_temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn deeply_nested_json_is_refused() {
    let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let nested = deep(100_000);
    let e = err(Sae::from_saelens_bytes(Path::new("sae"), &nested, b"", None, None));
    eprintln!("refused: {e}");
    assert!(e.contains("cfg.json") && e.contains("recursion limit"), "{e}");
    let e = err(Sae::from_gemma_scope_2_bytes(Path::new("gs2"), Some(&nested), b"", None));
    eprintln!("refused: {e}");
    assert!(e.contains("config.json") && e.contains("recursion limit"), "{e}");
    let index = [br#"{"format": "knowlens-activations/1", "recipe": {"model": "#.as_slice(), &nested, b"}}"].concat();
    let e = err(disk::StoreIndex::parse(&index, Path::new("store/index.json")));
    eprintln!("refused: {e}");
    assert!(e.contains("index.json") && e.contains("recursion limit"), "{e}");
    let tok = [br#"{"version": "1.0", "added_tokens": [], "normalizer": "#.as_slice(), &nested, b"}"].concat();
    let e = err(Tokenizer::from_hf_bytes(Path::new("tok"), &tok, None, None));
    eprintln!("refused: {e}");
    assert!(e.contains("tokenizer.json") && e.contains("recursion limit"), "{e}");
    let tok = std::fs::read(fixture("tiny/llama/tokenizer.json")).unwrap();
    let e = err(Tokenizer::from_hf_bytes(Path::new("tok"), &tok, Some(&nested), None));
    eprintln!("refused: {e}");
    assert!(e.contains("tokenizer_config.json") && e.contains("recursion limit"), "{e}");
}

#[test]
fn a_looping_chat_template_is_refused() {
    let messages = [ChatMessage::user("Hi")];
    let template = |src: &str| {
        ChatTemplate::new(src.into(), "<bos>".into(), "".into()).with_origin("m.gguf: tokenizer.chat_template".into())
    };
    // 10^10 iterations: stopped by the step budget.
    let e = err(template("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
        .render(&messages, true));
    eprintln!("refused: {e}");
    assert!(e.contains("m.gguf: tokenizer.chat_template") && e.contains("does it loop"), "{e}");
    // Unbounded recursion.
    let e = err(template("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").render(&messages, true));
    eprintln!("refused: {e}");
    assert!(e.contains("m.gguf: tokenizer.chat_template"), "{e}");
    // 10 GB of output from a short loop: stopped by the output cap.
    let long = "x".repeat(100_000);
    let e = err(template(&format!("{{% for i in range(100000) %}}{long}{{% endfor %}}")).render(&messages, true));
    eprintln!("refused: {e}");
    assert!(e.contains("m.gguf: tokenizer.chat_template") && e.contains("writes more than"), "{e}");
    // A list repeated 44 billion times (found by fuzzing: a hang, or an overflow panic in the
    // engine): refused before rendering; a string literal times a small literal stays allowed.
    let e = err(template("{{ ['content'] * 44444444444 }}").render(&messages, true));
    eprintln!("refused: {e}");
    assert!(e.contains("m.gguf: tokenizer.chat_template") && e.contains("multiplies"), "{e}");
    let e = err(template("{{ 'ab' * 3 ** 40 }}").render(&messages, true));
    assert!(e.contains("multiplies"), "{e}");
    assert_eq!(template("{{ '  ' * 2 }}{{ messages[0].content }}").render(&messages, true).unwrap(), "    Hi");
    // Through a tokenizer: the error names the file the template came from.
    let dir = fixture("tiny/llama");
    let tok = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let cfg =
        br#"{"chat_template": "{% for i in range(100000) %}{% for m in range(100000) %}{% endfor %}{% endfor %}"}"#;
    let t = Tokenizer::from_hf_bytes(&dir, &tok, Some(cfg), None).unwrap();
    let e = err(t.encode_chat(&messages, true));
    eprintln!("refused: {e}");
    assert!(e.contains("tokenizer_config.json: chat_template") && e.contains("does it loop"), "{e}");
}

#[test]
fn a_damaged_checkpoint_pointer_costs_no_checkpoint() {
    let ck = small_checkpoint();
    let pointer = ck.path().join(checkpoint::POINTER);
    let damaged =
        [("checkpoint-9", "cannot read"), ("../elsewhere", "not a plain file name"), ("x", "checkpoint-<step>")];
    for (dir, why) in damaged {
        std::fs::write(&pointer, format!(r#"{{"dir": "{dir}", "step": 9}}"#)).unwrap();
        let e = err(checkpoint::find(ck.path()));
        eprintln!("refused: {e}");
        assert!(e.contains("checkpoint") && e.contains(why), "{e}");
        assert!(ck.path().join("checkpoint-1/state.json").is_file(), "the checkpoint was removed ({dir})");
    }
}

/// A two-shard activation store of the tiny Llama model, and its index.
fn small_store() -> (tempfile::TempDir, disk::StoreIndex) {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny("llama");
    let seqs: Vec<Vec<u32>> = (0..3u32).map(|i| vec![2, 5 + i, 9, 14 + i, 30, 7]).collect();
    let o = CacheOptions {
        out: dir.path().to_path_buf(),
        hooks: vec![HookPoint::ResidPost(0), HookPoint::ResidPost(1)],
        model: serde_json::json!({"name": "tiny-llama"}),
        source: serde_json::json!({"seqs": 3}),
        source_name: "fuzz seed".into(),
        context_size: 6,
        dtype: StoreDtype::Bf16,
        shard_sequences: 2,
        model_batch: 2,
        throttle_ms: 0,
    };
    disk::cache(&model, &seqs, &o, &knowlens::progress::Silent).unwrap();
    let index = disk::StoreIndex::read(dir.path()).unwrap();
    (dir, index)
}

/// The seed corpus of every target, built from the committed fixtures and data.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut add = |t: &'static str, name: &str, bytes: Vec<u8>| out.push((t, name.to_string(), bytes));
    let read = |rel: &str| std::fs::read(fixture(rel)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("t.gguf");
    write_tiny_llama_gguf(&gguf, "llama");
    add("gguf", "tiny-llama", std::fs::read(&gguf).unwrap());
    add("gguf", "sentencepiece-vocab", sentencepiece_gguf());

    let gs2 = "sae/gemma_scope_2/resid_post/layer_5_width_128_l0_small";
    add("safetensors", "gemma-scope-2", read(&format!("{gs2}/params.safetensors")));
    for f in ["params.npz", "params_deflated.npz"] {
        add("npz", f, read(&format!("sae/gemma_scope/layer_3/width_128/average_l0_20/{f}")));
    }
    for (i, sae) in ["topk", "jumprelu", "standard", "pre6_topk"].iter().enumerate() {
        add("saelens_cfg", sae, [vec![i as u8], read(&format!("sae/{sae}/cfg.json"))].concat());
    }
    add("gemma_scope_config", "config", read(&format!("{gs2}/config.json")));

    let chatml = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'].strip() }}<|im_end|>\n\
                  {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    for arch in ["llama", "gemma3"] {
        let tok = read(&format!("tiny/{arch}/tokenizer.json"));
        add("tokenizer_json", arch, harness::join(&[&tok, &read(&format!("tiny/{arch}/tokenizer_config.json"))]));
        let cfg = serde_json::json!({"bos_token": "<bos>", "eos_token": "<eos>", "chat_template": chatml});
        add("tokenizer_json", &format!("{arch}-chat"), harness::join(&[&tok, &serde_json::to_vec(&cfg).unwrap()]));
    }
    add("chat_template", "chatml", chatml.as_bytes().to_vec());
    add("chat_template", "gemma", GEMMA_TEMPLATE.as_bytes().to_vec());

    let entities = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/entities/v2");
    for f in ["city", "movie", "player", "song", "fabricated"] {
        let text = std::fs::read_to_string(entities.join(format!("{f}.jsonl"))).unwrap();
        let head: Vec<&str> = text.lines().take(20).collect();
        add("entities_jsonl", f, (head.join("\n") + "\n").into_bytes());
    }
    let (labels, splits, controls, summary) = small_label_set();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&labels).unwrap();
    let gz = gz.finish().unwrap();
    add("labels", "plain", [vec![0], harness::join(&[&labels, &splits, &controls, &summary])].concat());
    add("labels", "gzipped", [vec![1], harness::join(&[&gz, &splits, &controls, b""])].concat());

    let (corpus_index, tokens) = small_corpus();
    add("corpus_index", "corpus", harness::join(&[&corpus_index, &tokens]));

    let (store, _) = small_store();
    let part = |name: &str| std::fs::read(store.path().join(name)).unwrap();
    add(
        "activation_store",
        "two-shards",
        harness::join(&[&part("index.json"), &part("shard-00000.bin"), &part("shard-00001.bin")]),
    );
    let ck = small_checkpoint();
    let part = |name: &str| std::fs::read(ck.path().join(name)).unwrap();
    let files = [
        "checkpoint.json",
        "checkpoint-1/state.json",
        "checkpoint-1/hook0.safetensors",
        "checkpoint-1/carry.safetensors",
    ];
    add("checkpoint", "topk", harness::join(&files.map(part).iter().map(|v| v.as_slice()).collect::<Vec<_>>()));
    out
}

#[test]
fn seed_corpora_load() {
    let seeds = seeds();
    for target in harness::TARGETS {
        assert!(seeds.iter().any(|(t, _, _)| t == target), "no seed for {target}");
    }
    let dest = std::env::var_os("KNOWLENS_FUZZ_SEEDS");
    for (target, name, bytes) in &seeds {
        assert!(harness::run(target, bytes), "the {target} seed {name} does not load");
        if let Some(dest) = &dest {
            let dir = Path::new(dest).join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}

/// Gemma 3's chat template (as in its tokenizer_config.json).
const GEMMA_TEMPLATE: &str = "\
{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}\
{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}\
{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}\
{%- for message in loop_messages -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\
{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}{%- endif -%}\
{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}\
{%- set role = message['role'] -%}{%- endif -%}\
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\
{%- if message['content'] is string -%}{{ message['content'] | trim }}{%- endif -%}\
{{ '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}";

/// A header-only GGUF with a SentencePiece ("llama") vocabulary, token types and a chat template.
fn sentencepiece_gguf() -> Vec<u8> {
    use candle_core::quantized::gguf_file::{self, Value as V};
    let pieces =
        ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n", "▁", "a", "b", "c", "▁a"];
    let tokens: Vec<V> = pieces.iter().map(|p| V::String(p.to_string())).collect();
    let types: Vec<V> = pieces.iter().enumerate().map(|(i, _)| V::I32(if i < 6 { 3 } else { 1 })).collect();
    let meta: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("gemma3".into())),
        ("tokenizer.ggml.model", V::String("llama".into())),
        ("tokenizer.ggml.tokens", V::Array(tokens)),
        ("tokenizer.ggml.token_type", V::Array(types)),
        ("tokenizer.ggml.bos_token_id", V::U32(2)),
        ("tokenizer.ggml.eos_token_id", V::U32(1)),
        ("tokenizer.chat_template", V::String(GEMMA_TEMPLATE.into())),
    ];
    let refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &refs, &[]).unwrap();
    out.into_inner()
}

/// A few labeled entities of the committed greedy labels, with splits and controls cut to them.
fn small_label_set() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    use knowlens::entities::label_set::LabelSet;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/labels/gemma-3-270m/greedy");
    let set = LabelSet::load(&dir).unwrap();
    let mut splits = set.splits.clone();
    let mut keep = std::collections::HashSet::new();
    for m in [&mut splits.train, &mut splits.validation, &mut splits.test] {
        for ids in m.values_mut() {
            ids.truncate(3);
            keep.extend(ids.iter().cloned());
        }
    }
    splits.groups.clear();
    keep.extend(set.entities.iter().filter(|e| e.split.is_none()).take(3).map(|e| e.id().to_string()));
    let mut controls = set.controls.clone();
    controls.matched_known.retain(|id| keep.contains(id));
    controls.matched_unknown.retain(|id| keep.contains(id));
    for m in controls.by_split.values_mut() {
        m.known.retain(|id| keep.contains(id));
        m.unknown.retain(|id| keep.contains(id));
    }
    controls.fabricated.truncate(3);
    controls.fabricated_by_split.clear();
    let mut labels = Vec::new();
    for e in set.entities.iter().filter(|e| keep.contains(e.id())) {
        serde_json::to_writer(&mut labels, &e.label).unwrap();
        labels.push(b'\n');
    }
    let summary = std::fs::read(dir.join("summary.json")).unwrap();
    (labels, serde_json::to_vec(&splits).unwrap(), serde_json::to_vec(&controls).unwrap(), summary)
}

/// A three-document token corpus written by the corpus store.
fn small_corpus() -> (Vec<u8>, Vec<u8>) {
    use knowlens::corpus::token_cache::{write, SourceInfo, SplitIndex};
    use knowlens::corpus::CorpusIndex;
    let train: Vec<u32> = vec![2, 10, 11, 12, 2, 13, 14, 2, 15, 16, 17, 18];
    let src = |name: &str| SourceInfo {
        name: name.into(),
        origin: "fuzz".into(),
        sha256: "0".repeat(64),
        license: "MIT".into(),
    };
    let index = CorpusIndex {
        format: knowlens::corpus::token_cache::FORMAT.into(),
        version: "1".into(),
        model: "tiny".into(),
        recipe: "fuzz".into(),
        bos: Some(2),
        vocab_size: 64,
        seed: 0,
        heldout_fraction: 0.0,
        sources: vec![src("a"), src("b")],
        stats: Vec::new(),
        train: SplitIndex { file: "tokens.bin".into(), tokens: 12, documents: vec![[0, 4, 0], [4, 3, 1], [7, 5, 0]] },
        heldout: SplitIndex { file: "heldout.bin".into(), tokens: 0, documents: Vec::new() },
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &index, &train, &[]).unwrap();
    (std::fs::read(dir.path().join("index.json")).unwrap(), std::fs::read(dir.path().join("tokens.bin")).unwrap())
}

/// A checkpoint of a TopK trainer (width 8 on 4 inputs) after one step, with carried rows.
fn small_checkpoint() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(TrainConfig::new(4, 8, ArchConfig::TopK { k: 2 }, 10)).unwrap();
    t.step(&[0.5, -1.0, 2.0, 0.25, 1.0, 0.0, -0.5, 3.0]).unwrap();
    let state = CheckpointState {
        format: checkpoint::FORMAT.into(),
        fingerprint: "fuzz".into(),
        step: 1,
        store: StoreState { filled: true, generation: 0, sequences_before: 0, batches_taken: 1 },
        trainers: vec![checkpoint::scalars("blocks.0.hook_resid_post".into(), &t)],
        elapsed_s: 0.5,
    };
    checkpoint::save(dir.path(), &state, &[t], &[vec![1.0, 2.0, 3.0, 4.0]]).unwrap();
    dir
}
