//! The contract every loader of outside bytes keeps, checked on arbitrary input: an error with a
//! message (naming the file where the loader is given one), or a value that passes the loader's
//! own validation and can be used. A panic, an abort or a hang is a failure; so is an allocation
//! beyond what the input can back (the fuzz script runs libFuzzer with a malloc limit).
//!
//! Shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`, one per loader) and by
//! `tests/fuzz_regressions.rs`, which replays every input the fuzzer once crashed on
//! (`tests/fixtures/fuzz/<target>/`) and checks that the seed corpora load.
//!
//! Loaders that read several files take one input holding all of them, joined by `PART`.
//! Each function returns whether the input loaded (the seed check wants the seeds to).

#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use knowlens::entities::dataset::{self, LoadReport, Require};
use knowlens::entities::label_set::LabelSet;
use knowlens::sae::train::checkpoint;
use knowlens::sae::train::disk::{dim_stats, StoreIndex};
use knowlens::sae::train::{ArchConfig, BatchSource, DiskBatches, DiskStore, TrainConfig, Trainer};
use knowlens::tokenizer::{ChatMessage, ChatTemplate, Tokenizer};
use knowlens::{HookPoint, HookSpec, Model, Precision, Sae};

/// In the fuzz binaries, an allocation this large is a failure: no input the fuzzer makes (at most
/// a few hundred KB) can justify it, even inflated at deflate's largest ratio (1032:1). Checked
/// by the allocator itself, because libFuzzer's own malloc limit needs a sanitizer runtime.
#[cfg(fuzzing)]
pub const MAX_ALLOCATION: usize = 256 << 20;

#[cfg(fuzzing)]
struct CappedAllocator;

#[cfg(fuzzing)]
unsafe impl std::alloc::GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            // No formatting here: it would allocate.
            let _ = std::io::Write::write_all(&mut std::io::stderr(), b"==fuzz== allocation beyond the limit\n");
            std::process::abort();
        }
        std::alloc::System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), b"==fuzz== allocation beyond the limit\n");
            std::process::abort();
        }
        std::alloc::System.realloc(ptr, layout, new_size)
    }
}

#[cfg(fuzzing)]
#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

/// Separates the files of a multi-file input.
pub const PART: &[u8] = b"\n#--knowlens-fuzz-part--#\n";

/// Every target, by the name of its fuzz binary and corpus directory.
pub const TARGETS: &[&str] = &[
    "gguf",
    "safetensors",
    "npz",
    "saelens_cfg",
    "gemma_scope_config",
    "tokenizer_json",
    "chat_template",
    "entities_jsonl",
    "labels",
    "corpus_index",
    "activation_store",
    "checkpoint",
];

/// For the fuzz binaries: libfuzzer-sys aborts on every panic, even one a loader catches on
/// purpose (`gguf.rs` turns a panic of candle's header parser into an error); this prints the
/// panic instead. A panic that escapes the target still aborts the run (libfuzzer-sys checks).
pub fn fuzz_init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}"))));
}

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "gguf" => gguf(data),
        "safetensors" => safetensors(data),
        "npz" => npz(data),
        "saelens_cfg" => saelens_cfg(data),
        "gemma_scope_config" => gemma_scope_config(data),
        "tokenizer_json" => tokenizer_json(data),
        "chat_template" => chat_template(data),
        "entities_jsonl" => entities_jsonl(data),
        "labels" => labels(data),
        "corpus_index" => corpus_index(data),
        "activation_store" => activation_store(data),
        "checkpoint" => checkpoint(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// Splits a multi-file input into exactly `n` parts (missing ones are empty).
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(PART.len()).position(|w| w == PART) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + PART.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out.resize(n, &[][..]);
    out
}

/// Joins files into one multi-file input (for seeds).
pub fn join(files: &[&[u8]]) -> Vec<u8> {
    files.join(PART)
}

/// The contract on a result: `Ok`, or an error whose message is not empty and, when `file` is
/// given, names it.
fn outcome<T>(r: anyhow::Result<T>, file: Option<&str>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(!msg.trim().is_empty(), "an error without a message");
            if let Some(f) = file {
                assert!(msg.contains(f), "the error does not name {f}: {msg}");
            }
            None
        }
    }
}

/// A loaded SAE must encode and decode a batch of its width.
fn use_sae(sae: &Sae) {
    let x = Tensor::zeros((2, sae.d_in()), DType::F32, &Device::Cpu).unwrap();
    let f = sae.encode(&x).expect("a loaded SAE encodes");
    assert_eq!(f.dims(), &[2, sae.d_sae()]);
    let r = sae.decode(&f).expect("a loaded SAE decodes");
    assert_eq!(r.dims(), &[2, sae.d_in()]);
}

/// A GGUF model file: header, tensor table, configuration, tokenizer and weights; a model that
/// loads runs a forward pass. The tokenizer is also built alone (it needs only the header).
/// Loaded: the tokenizer or the model.
pub fn gguf(data: &[u8]) -> bool {
    let path = Path::new("fuzz/model.gguf");
    let mut reader = Cursor::new(data);
    let mut loaded = false;
    if let Some(content) = outcome(knowlens::gguf::read_gguf_header(&mut reader, path), Some("model.gguf")) {
        if let Some(tok) = outcome(Tokenizer::from_gguf(&content, path), Some("model.gguf")) {
            use_tokenizer(&tok);
            loaded = true;
        }
    }
    for precision in [Precision::F32, Precision::Quantized] {
        let model = Model::from_gguf_reader(Cursor::new(data.to_vec()), path, precision);
        if let Some(model) = outcome(model, Some("model.gguf")) {
            let ids = vec![vec![(model.cfg().vocab_size - 1) as u32]];
            let batch = model.batch_from_ids(&ids).expect("an in-vocabulary token makes a batch");
            let out = model.run(&batch, &HookSpec::new().logits(knowlens::LogitsAt::Last));
            let logits = out.expect("a loaded model runs").logits.expect("logits were asked for");
            assert_eq!(logits.dims(), &[1, model.cfg().vocab_size]);
            loaded = true;
        }
    }
    loaded
}

/// A tokenizer that loaded must encode, decode and find spans without panicking.
fn use_tokenizer(tok: &Tokenizer) {
    for text in ["Hello world", "<bos>The movie 'Heat' was\n directed by  \u{00e9}\u{4e2d}"] {
        for special in [false, true] {
            if let Ok(ids) = tok.encode(text, true, special) {
                let _ = tok.decode(&ids);
            }
        }
    }
    let _ = tok.span_positions("The movie 'Heat' was", "Heat", true, false);
    let _ = tok.token(u32::MAX);
}

/// A safetensors file as a Gemma Scope 2 SAE's `params.safetensors` (the header parser and the
/// tensor checks every safetensors loader shares).
pub fn safetensors(data: &[u8]) -> bool {
    let dir = Path::new("fuzz/layer_3/width_16k");
    let r = Sae::from_gemma_scope_2_bytes(dir, None, data, None);
    outcome(r, Some("params.safetensors")).map(|s| use_sae(&s)).is_some()
}

/// A Gemma Scope `params.npz`, stored or deflated.
pub fn npz(data: &[u8]) -> bool {
    let path = Path::new("fuzz/layer_3/width_16k/params.npz");
    outcome(Sae::from_npz_bytes(data, path, None), Some("params.npz")).map(|s| use_sae(&s)).is_some()
}

/// The weights the config targets pair their config with (committed fixtures).
const SAELENS_WEIGHTS: &[&[u8]] = &[
    include_bytes!("../tests/fixtures/sae/topk/sae_weights.safetensors"),
    include_bytes!("../tests/fixtures/sae/jumprelu/sae_weights.safetensors"),
    include_bytes!("../tests/fixtures/sae/standard/sae_weights.safetensors"),
    include_bytes!("../tests/fixtures/sae/pre6_topk/sae_weights.safetensors"),
];

/// A SAELens `cfg.json`. The first byte picks which fixture's weights go with it.
pub fn saelens_cfg(data: &[u8]) -> bool {
    let Some((&pick, cfg)) = data.split_first() else { return false };
    let weights = SAELENS_WEIGHTS[pick as usize % SAELENS_WEIGHTS.len()];
    let r = Sae::from_saelens_bytes(Path::new("fuzz/saelens"), cfg, weights, None, None);
    outcome(r, Some("fuzz/saelens")).map(|s| use_sae(&s)).is_some()
}

/// A Gemma Scope 2 `config.json`, with the committed fixture's weights.
pub fn gemma_scope_config(data: &[u8]) -> bool {
    const WEIGHTS: &[u8] =
        include_bytes!("../tests/fixtures/sae/gemma_scope_2/resid_post/layer_5_width_128_l0_small/params.safetensors");
    let r = Sae::from_gemma_scope_2_bytes(Path::new("fuzz/gs2"), Some(data), WEIGHTS, None);
    outcome(r, Some("fuzz/gs2")).map(|s| use_sae(&s)).is_some()
}

/// `tokenizer.json` and `tokenizer_config.json` (two parts).
pub fn tokenizer_json(data: &[u8]) -> bool {
    let p = parts(data, 2);
    let config = (!p[1].is_empty()).then_some(p[1]);
    let r = Tokenizer::from_hf_bytes(Path::new("fuzz/tok"), p[0], config, None);
    match outcome(r, Some("fuzz/tok")) {
        Some(tok) => {
            use_tokenizer(&tok);
            if let Some(t) = &tok.chat_template {
                let _ = t.render(&[ChatMessage::user("Hi")], true);
            }
            true
        }
        None => false,
    }
}

/// A chat template (the whole input, as text), rendered over a short conversation.
pub fn chat_template(data: &[u8]) -> bool {
    let source = String::from_utf8_lossy(data).into_owned();
    let t = ChatTemplate::new(source, "<bos>".into(), "<eos>".into()).with_origin("fuzz/chat_template".into());
    let messages = [
        ChatMessage { role: "system".into(), content: "Be brief.".into() },
        ChatMessage::user("Who directed 'Heat'?"),
        ChatMessage { role: "assistant".into(), content: "Michael Mann.".into() },
        ChatMessage::user("  And 'Alien'? "),
    ];
    outcome(t.render(&messages, true), Some("fuzz/chat_template")).is_some()
}

/// An entity JSONL file, read both ways: every row loads or is reported skipped with its line.
pub fn entities_jsonl(data: &[u8]) -> bool {
    let path = Path::new("fuzz/entities.jsonl");
    let lines = data.split(|&b| b == b'\n').count();
    let mut loaded = false;
    for require in [Require::Attributes, Require::NameOnly] {
        let mut report = LoadReport::default();
        dataset::read_rows(data, path, require, &mut Default::default(), &mut report);
        assert!(report.entities.len() + report.skipped.len() <= lines);
        for s in &report.skipped {
            assert!(s.line >= 1 && s.line <= lines && !s.reason.is_empty(), "{s}");
        }
        for e in &report.entities {
            assert!(!e.id.trim().is_empty() && !e.name.trim().is_empty());
        }
        loaded |= !report.entities.is_empty();
    }
    loaded
}

/// A labeling run's outputs: labels (gzipped when the first byte is odd), splits.json,
/// controls.json and summary.json (five parts; an empty summary means none).
pub fn labels(data: &[u8]) -> bool {
    let Some((&pick, rest)) = data.split_first() else { return false };
    let p = parts(rest, 4);
    let dir = Path::new("fuzz/labels");
    let name = if pick & 1 == 1 { "labels.jsonl.gz" } else { "labels.jsonl" };
    let summary = (!p[3].is_empty()).then_some(p[3]);
    let r = LabelSet::from_bytes(dir, &dir.join(name), p[0], p[1], p[2], summary);
    match outcome(r, Some("fuzz/labels")) {
        Some(set) => {
            for e in &set.entities {
                assert!(set.get(e.id()).is_some());
            }
            let (k, u) = set.matched();
            assert_eq!(k.len(), set.controls.matched_known.len());
            assert_eq!(u.len(), set.controls.matched_unknown.len());
            let _ = set.by_type();
            true
        }
        None => false,
    }
}

/// A token corpus: `index.json` and the train split's token file (two parts).
pub fn corpus_index(data: &[u8]) -> bool {
    use knowlens::corpus::{CorpusIndex, Split, TokenCorpus};
    let p = parts(data, 2);
    let index_path = Path::new("fuzz/corpus/index.json");
    let Some(index) = outcome(CorpusIndex::parse(p[0], index_path), Some("index.json")) else { return false };
    let file = Path::new("fuzz/corpus/tokens.bin");
    let r = TokenCorpus::from_parts(index, index_path, p[1], file, Split::Train);
    match outcome(r, Some("fuzz/corpus")) {
        Some(c) => {
            let total: usize = c.documents(Some(7)).map(|d| d.len()).sum();
            assert_eq!(total, c.n_tokens());
            for i in 0..c.n_documents() {
                let _ = c.source_of(i);
            }
            let _ = c.chunks(4, Some(3)).take(64).count();
            true
        }
        None => false,
    }
}

/// A scratch directory for the targets whose loaders read a directory, emptied for each input.
fn scratch(name: &str) -> PathBuf {
    thread_local! {
        static ROOT: tempfile::TempDir = {
            let shm = Path::new("/dev/shm");
            if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("a scratch directory")
        };
    }
    let dir = ROOT.with(|r| r.path().join(name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// An activation store: `index.json` then its shards (`shard-00000.bin`, ...). An index that
/// parses gets its digest recomputed first, so the fuzzer reaches the checks behind it.
pub fn activation_store(data: &[u8]) -> bool {
    let p = parts(data, 4);
    let dir = scratch("store");
    let index = match serde_json::from_slice::<StoreIndex>(p[0]) {
        Ok(mut index) => {
            index.digest = index.recipe.digest();
            serde_json::to_vec(&index).unwrap()
        }
        Err(_) => p[0].to_vec(),
    };
    std::fs::write(dir.join("index.json"), index).unwrap();
    for (i, shard) in p[1..].iter().enumerate() {
        std::fs::write(dir.join(format!("shard-{i:05}.bin")), shard).unwrap();
    }
    let Some(store) = outcome(DiskStore::open(&dir, true), Some(&dir.display().to_string())) else { return false };
    let hooks: Vec<HookPoint> = store.hooks().iter().filter_map(|h| h.parse().ok()).collect();
    for h in 0..store.hooks().len() {
        let s = dim_stats(&store, h, 8);
        assert!(s.rows <= store.rows().max(1));
    }
    if hooks.is_empty() {
        return true;
    }
    let widths: Vec<usize> = hooks.iter().map(|&h| store.index.recipe.widths[store.hook_index(h).unwrap()]).collect();
    let Ok(mut batches) = DiskBatches::new(store, &hooks, 2, 0) else { return true };
    for _ in 0..3 {
        let b = batches.next_batch().expect("a checked store reads").expect("a store is never spent");
        for (x, &d) in b.iter().zip(&widths) {
            assert_eq!(x.len(), 2 * d);
        }
    }
    true
}

/// A training checkpoint: `checkpoint.json`, then `state.json`, `hook0.safetensors` and
/// `carry.safetensors` of the directory `checkpoint-1` (four parts), restored into a TopK
/// trainer of width 8 on 4 inputs, which then trains one step.
pub fn checkpoint(data: &[u8]) -> bool {
    let p = parts(data, 4);
    let out = scratch("checkpoint");
    let ck = out.join("checkpoint-1");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(out.join(checkpoint::POINTER), p[0]).unwrap();
    for (name, bytes) in [("state.json", p[1]), ("hook0.safetensors", p[2]), ("carry.safetensors", p[3])] {
        std::fs::write(ck.join(name), bytes).unwrap();
    }
    let found = checkpoint::find(&out);
    let Some(Some(loaded)) = outcome(found, Some(&out.display().to_string())) else { return false };
    let mut t = Trainer::new(TrainConfig::new(4, 8, ArchConfig::TopK { k: 2 }, 10)).unwrap();
    let restored = loaded.restore_trainer(0, &mut t).map(|()| loaded.carry(1));
    match outcome(restored, Some(&out.display().to_string())) {
        Some(Ok(carry)) => {
            assert_eq!(carry.len(), 1);
            let _ = t.step(&[0.5; 8]);
            true
        }
        Some(Err(e)) => {
            outcome::<()>(Err(e), Some(&out.display().to_string()));
            false
        }
        None => false,
    }
}
