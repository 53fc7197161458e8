//! The activation store on disk (`sae::train::disk`, `knowlens sae cache`): what it stores, that
//! training reads every row once per epoch, and bad input: a full disk, a truncated shard, an
//! edited index, another model or hook, an incomplete store, a killed cache run.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use knowlens::corpus::text_sequences;
use knowlens::progress::Silent;
use knowlens::rng::SplitMix64;
use knowlens::sae::train::disk::{self, CacheOptions, StoreDtype};
use knowlens::sae::train::{BatchSource, DiskBatches, DiskStore};
use knowlens::{HookPoint, HookSpec, Model, Precision};
use serde_json::json;

const HOOKS: [HookPoint; 2] = [HookPoint::ResidPost(1), HookPoint::ResidPost(3)];

/// A text of the tiny tokenizer's words ("w4" … "w95").
fn tiny_text() -> String {
    let mut r = SplitMix64(3);
    let words: Vec<String> = (0..3000)
        .map(|i| {
            let w = format!("w{}", 4 + r.below(92));
            if i % 17 == 16 {
                format!("{w}\n")
            } else {
                w
            }
        })
        .collect();
    words.join(" ")
}

fn model_path() -> PathBuf {
    common::fixture("tiny/gemma3")
}

fn setup() -> (Model, Vec<Vec<u32>>) {
    let model = common::tiny("gemma3");
    let seqs = text_sequences(&model.tokenizer, &tiny_text(), 16).unwrap();
    assert!(seqs.len() >= 100, "{} sequences", seqs.len());
    (model, seqs)
}

fn options(out: &Path) -> CacheOptions {
    CacheOptions {
        out: out.to_path_buf(),
        hooks: HOOKS.to_vec(),
        model: disk::model_identity(&model_path(), Precision::F32).unwrap(),
        source: json!({ "test": "tiny text" }),
        source_name: "tiny text".into(),
        context_size: 16,
        dtype: StoreDtype::F16,
        shard_sequences: 24,
        model_batch: 4,
        throttle_ms: 0,
    }
}

/// Every file of a store, by name (temporary files included, so leftovers show).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn assert_same_store(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(fa.iter().map(|f| &f.0).collect::<Vec<_>>(), fb.iter().map(|f| &f.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(x == y, "{name} differs");
    }
}

#[test]
fn the_store_holds_the_models_activations_without_bos_in_f16() {
    let (model, seqs) = setup();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store");
    let s = disk::cache(&model, &seqs, &options(&out), &Silent).unwrap();
    assert_eq!(s.sequences, seqs.len() as u64);
    // One row per non-BOS token; every sequence starts with BOS.
    assert_eq!(s.rows, seqs.len() as u64 * 15);
    assert_eq!(s.shards_written, seqs.len().div_ceil(24));
    assert_eq!(s.bytes, s.rows * (32 + 32) * 2);
    let store = DiskStore::open(&out, true).unwrap();
    assert!(store.index.prepend_bos);
    // Sequence 5's activations, read back, equal the model's rounded to float16.
    let batch = model.batch_from_ids(&seqs[5..6]).unwrap();
    let res = model.run(&batch, &HookSpec::new().capture(HOOKS)).unwrap();
    let mut row = vec![0f32; 32];
    for (h, &hook) in HOOKS.iter().enumerate() {
        let want = res.cache.row(hook, 0).unwrap().to_vec2::<f32>().unwrap();
        for (p, want_p) in want.iter().enumerate().take(16).skip(1) {
            store.read_row(h, 5 * 15 + (p as u64 - 1), &mut row);
            for (i, (&got, &w)) in row.iter().zip(want_p).enumerate() {
                let tol = (w.abs() * 2f32.powi(-11)).max(1e-7);
                assert!((got - w).abs() <= tol, "{hook} pos {p} dim {i}: {got} vs {w}");
            }
        }
    }
}

#[test]
fn training_batches_read_every_row_once_per_epoch_in_a_seeded_order() {
    let (model, seqs) = setup();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store");
    disk::cache(&model, &seqs, &options(&out), &Silent).unwrap();
    let rows = DiskStore::open(&out, false).unwrap().rows() as usize;
    let bs = 50;
    let epoch = |seed: u64| {
        let store = DiskStore::open(&out, false).unwrap();
        let mut b = DiskBatches::new(store, &[HookPoint::ResidPost(3), HookPoint::ResidPost(1)], bs, seed).unwrap();
        assert_eq!(b.batches_per_epoch() as usize, rows / bs);
        let mut first = Vec::new();
        for _ in 0..b.batches_per_epoch() {
            let x = b.next_batch().unwrap().unwrap();
            assert_eq!(x.len(), 2);
            assert_eq!(x[0].len(), bs * 32);
            first.extend(x[0].chunks(32).map(|r| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>()));
        }
        let next = b.next_batch().unwrap().unwrap();
        assert_eq!(b.state().generation, 1, "the next batch starts epoch 1");
        (first, next)
    };
    let (a, next_a) = epoch(1);
    let (b, _) = epoch(1);
    let (c, _) = epoch(2);
    assert_eq!(a, b, "same seed, same order");
    assert_ne!(a, c, "another seed, another order");
    // Within an epoch no row is read twice: each row value occurs at most as often as in the
    // store (the tiny model gives some tokens identical rows).
    let store = DiskStore::open(&out, false).unwrap();
    let mut row = vec![0f32; 32];
    let mut left: std::collections::HashMap<Vec<u32>, i64> = std::collections::HashMap::new();
    for r in 0..rows as u64 {
        store.read_row(1, r, &mut row);
        *left.entry(row.iter().map(|v| v.to_bits()).collect()).or_default() += 1;
    }
    for x in &a {
        let c = left.get_mut(x).expect("a batch row that is not in the store");
        *c -= 1;
        assert!(*c >= 0, "a row was read twice in one epoch");
    }
    // An order across shards: the first batch does not come from one shard.
    let shard_of = |bits: &Vec<u32>| {
        (0..rows as u64)
            .find(|&r| {
                store.read_row(1, r, &mut row);
                row.iter().map(|v| v.to_bits()).collect::<Vec<_>>() == *bits
            })
            .unwrap()
            / (24 * 15)
    };
    let shards: std::collections::HashSet<u64> = a[..bs].iter().map(shard_of).collect();
    assert!(shards.len() > 2, "the first batch comes from shards {shards:?}");
    // Epoch 1 is another order.
    let next_bits: Vec<Vec<u32>> = next_a[0].chunks(32).map(|r| r.iter().map(|v| v.to_bits()).collect()).collect();
    assert_ne!(next_bits, a[..bs].to_vec());
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_rerun_finishes_the_same_store() {
    let (model, seqs) = setup();
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    disk::cache(&model, &seqs, &options(&whole), &Silent).unwrap();
    let cut = dir.path().join("cut");
    // The third shard's write hits a full disk: /dev/full fails every write with ENOSPC.
    let mut n = 0;
    let mut writer = |p: &Path, b: &[u8]| -> anyhow::Result<()> {
        n += 1;
        if n == 3 {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().write(true).open("/dev/full")?;
            f.write_all(b)?;
            f.flush()?;
            f.sync_all()?;
            return Ok(());
        }
        knowlens::fsio::write_synced(p, b)
    };
    let err = disk::cache_with_writer(&model, &seqs, &options(&cut), &Silent, &mut writer).unwrap_err();
    let msg = format!("{err:#}");
    println!("{msg}");
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(msg.contains("shard-00002.bin") && msg.contains("rerun the same command"), "{msg}");
    // Two shards are published, nothing else is left behind, and the store is incomplete.
    let names: Vec<String> = files(&cut).into_iter().map(|f| f.0).collect();
    assert_eq!(names, ["index.json", "shard-00000.bin", "shard-00001.bin"]);
    let open = format!("{:#}", DiskStore::open(&cut, false).err().expect("an incomplete store is refused"));
    assert!(open.contains("incomplete") && open.contains("48 of"), "{open}");
    let s = disk::cache(&model, &seqs, &options(&cut), &Silent).unwrap();
    assert_eq!(s.shards_before, 2);
    assert_same_store(&whole, &cut);
}

#[test]
fn a_truncated_shard_is_an_error_and_rerunning_the_cache_repairs_it() {
    let (model, seqs) = setup();
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    disk::cache(&model, &seqs, &options(&whole), &Silent).unwrap();
    let out = dir.path().join("store");
    disk::cache(&model, &seqs, &options(&out), &Silent).unwrap();
    let shard = out.join("shard-00001.bin");
    let len = fs::metadata(&shard).unwrap().len();
    fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len - 100).unwrap();
    let err = format!("{:#}", DiskStore::open(&out, false).err().expect("a truncated shard is refused"));
    assert!(err.contains("shard-00001.bin") && err.contains("truncated") && err.contains("rerun"), "{err}");
    // Same size, other bytes: only the checksum sees it.
    fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len).unwrap();
    DiskStore::open(&out, false).unwrap();
    let err = format!("{:#}", DiskStore::open(&out, true).err().expect("a damaged shard is refused"));
    assert!(err.contains("shard-00001.bin") && err.contains("sha256"), "{err}");
    let s = disk::cache(&model, &seqs, &options(&out), &Silent).unwrap();
    assert_eq!((s.shards_before, s.already_complete), (1, false));
    assert_same_store(&whole, &out);
}

#[test]
fn another_recipe_model_or_hook_is_refused() {
    let (model, seqs) = setup();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store");
    disk::cache(&model, &seqs, &options(&out), &Silent).unwrap();
    // Caching another recipe into it.
    let mut other = options(&out);
    other.hooks = vec![HookPoint::ResidPost(2)];
    let err = format!("{:#}", disk::cache(&model, &seqs, &other, &Silent).unwrap_err());
    assert!(err.contains("another recipe") && err.contains("another --out"), "{err}");
    // Training another hook from it.
    let store = DiskStore::open(&out, false).unwrap();
    let err = format!("{:#}", DiskBatches::new(store, &[HookPoint::ResidPost(2)], 8, 0).err().unwrap());
    assert!(
        err.contains("holds blocks.1.hook_resid_post, blocks.3.hook_resid_post, not blocks.2.hook_resid_post"),
        "{err}"
    );
    // Another model.
    let store = DiskStore::open(&out, false).unwrap();
    let llama = disk::model_identity(&common::fixture("tiny/llama"), Precision::F32).unwrap();
    let err = format!("{:#}", store.check_model(&llama).unwrap_err());
    assert!(err.contains("made by model") && err.contains("gemma3") && err.contains("llama"), "{err}");
    store.check_model(&disk::model_identity(&model_path(), Precision::F32).unwrap()).unwrap();
    // An index whose recipe was edited no longer matches its digest.
    let path = out.join("index.json");
    let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    v["recipe"]["context_size"] = json!(32);
    fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let err = format!("{:#}", DiskStore::open(&out, false).err().unwrap());
    assert!(err.contains("index.json") && err.contains("edited or is damaged"), "{err}");
    // Not a store at all.
    let err = format!("{:#}", DiskStore::open(dir.path(), false).err().unwrap());
    assert!(err.contains("not an activation store"), "{err}");
}

// ---- the CLI: a killed `sae cache` resumes to the same store; `sae train --store` refuses
// another model ----

fn knowlens() -> Command {
    Command::new(env!("CARGO_BIN_EXE_knowlens"))
}

fn cache_args(text: &Path, out: &Path) -> Vec<String> {
    [
        "sae",
        "cache",
        "--model",
        model_path().to_str().unwrap(),
        "--hooks",
        "blocks.1.hook_resid_post,blocks.3.hook_resid_post",
        "--text-file",
        text.to_str().unwrap(),
        "--context-size",
        "16",
        "--shard-sequences",
        "8",
        "--model-batch",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn shards_in_index(out: &Path) -> usize {
    fs::read_to_string(out.join("index.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .map(|v| v["shards"].as_array().map(|a| a.len()).unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn a_killed_cache_run_resumes_to_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    fs::write(&text, tiny_text()).unwrap();
    let whole = dir.path().join("whole");
    let st = knowlens().args(cache_args(&text, &whole)).stdout(Stdio::null()).status().unwrap();
    assert!(st.success());
    let cut = dir.path().join("cut");
    let args = cache_args(&text, &cut);
    let mut killed_at = Vec::new();
    for after in [0, 3] {
        let mut child = knowlens().args(&args).args(["--throttle-ms", "20"]).stdout(Stdio::null()).spawn().unwrap();
        let t0 = Instant::now();
        while shards_in_index(&cut) <= after {
            assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
            assert!(t0.elapsed() < Duration::from_secs(120), "no shard appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(30));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        killed_at.push(shards_in_index(&cut));
    }
    let out = knowlens().args(&args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("killed with {killed_at:?} shards published; resumed: {summary}");
    assert_eq!(summary["shards_before"].as_u64().unwrap() as usize, killed_at[1]);
    assert_same_store(&whole, &cut);

    // Training from it with another model than the one that made it.
    let train = knowlens()
        .args(["sae", "train", "--model", common::fixture("tiny/llama").to_str().unwrap()])
        .args(["--hooks", "blocks.1.hook_resid_post", "--store", cut.to_str().unwrap()])
        .args(["--k", "4", "--width", "64", "--batch-size", "64", "--no-progress", "--out"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&train.stderr);
    assert!(!train.status.success() && err.contains("made by model"), "{err}");
}
