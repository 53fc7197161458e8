//! Bad input gives an error that names the file or argument and the problem: never a panic,
//! never a silent wrong answer.

mod common;

use common::*;
use knowlens::{HookPoint, HookSpec, LogitsAt, Model, Precision};
use proptest::prelude::*;

fn err_of(r: anyhow::Result<Model>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_gguf_written_like_llamacpp_runs_like_the_safetensors_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-llama.gguf");
    write_tiny_llama_gguf(&path, "llama");
    let from_gguf = Model::load(&path, Precision::F32).unwrap();
    let from_st = tiny("llama");
    let ids = vec![vec![1u32, 5, 9, 14, 30, 7]];
    let spec = HookSpec::new().capture([HookPoint::AttnPattern(1)]).logits(LogitsAt::All);
    let a = from_gguf.run(&from_gguf.batch_from_ids(&ids).unwrap(), &spec).unwrap();
    let b = from_st.run(&from_st.batch_from_ids(&ids).unwrap(), &spec).unwrap();
    assert!(max_abs_diff(a.logits.as_ref().unwrap(), b.logits.as_ref().unwrap()) < 1e-4);
    let pa = a.cache.get(HookPoint::AttnPattern(1)).unwrap();
    assert!(max_abs_diff(pa, b.cache.get(HookPoint::AttnPattern(1)).unwrap()) < 1e-5);
}

#[test]
fn truncated_gguf_names_the_file_and_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    write_tiny_llama_gguf(&path, "llama");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = err_of(Model::load(&path, Precision::F32));
    assert!(e.contains("cut.gguf") && e.contains("truncated"), "{e}");
    // Cut inside the header too.
    std::fs::write(&path, &bytes[..200]).unwrap();
    let e = err_of(Model::load(&path, Precision::F32));
    assert!(e.contains("cut.gguf") && e.contains("not a valid GGUF"), "{e}");
}

#[test]
fn garbage_and_unsupported_architectures_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not a model file").unwrap();
    let e = err_of(Model::load(&junk, Precision::F32));
    assert!(e.contains("junk.gguf") && e.contains("not a valid GGUF"), "{e}");
    let qwen = dir.path().join("qwen.gguf");
    write_tiny_llama_gguf(&qwen, "qwen2");
    let e = err_of(Model::load(&qwen, Precision::Quantized));
    assert!(e.contains("qwen.gguf") && e.contains("unsupported architecture 'qwen2'"), "{e}");
    let e = err_of(Model::load(&dir.path().join("absent.gguf"), Precision::F32));
    assert!(e.contains("absent.gguf") && e.contains("no such model"), "{e}");
}

#[test]
fn safetensors_directory_missing_a_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("tiny/llama");
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut st = expected("tiny/llama/model.safetensors");
    st.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&st, dir.path().join("model.safetensors")).unwrap();
    let e = err_of(Model::load(dir.path(), Precision::F32));
    assert!(e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("missing"), "{e}");
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
    // A mis-shaped tensor.
    let mut st = expected("tiny/llama/model.safetensors");
    let w = st["model.layers.0.self_attn.o_proj.weight"].t().unwrap().contiguous().unwrap();
    let w = w.narrow(0, 0, 16).unwrap();
    st.insert("model.layers.0.self_attn.o_proj.weight".into(), w);
    candle_core::safetensors::save(&st, dir.path().join("model.safetensors")).unwrap();
    let e = err_of(Model::load(dir.path(), Precision::F32));
    assert!(e.contains("o_proj") && e.contains("shape"), "{e}");
    // An unknown model type.
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "mamba"}"#).unwrap();
    let e = err_of(Model::load(dir.path(), Precision::F32));
    assert!(e.contains("config.json") && e.contains("unsupported model_type 'mamba'"), "{e}");
}

#[test]
fn prompts_that_cannot_run() {
    let m = tiny("gemma3");
    let e = m.batch(&[""], false).unwrap_err().to_string();
    assert!(e.contains("prompt 0 is empty"), "{e}");
    let long = vec![5u32; m.cfg().context_length + 1];
    let e = m.batch_from_ids(&[long]).unwrap_err().to_string();
    assert!(e.contains("longer than the model's context"), "{e}");
    let e = m.batch_from_ids(&[vec![2, 100_000]]).unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
    let b = m.batch_from_ids(&[vec![2, 5]]).unwrap();
    let e = format!("{:#}", m.run(&b, &HookSpec::new().capture([HookPoint::ResidPost(99)])).err().unwrap());
    assert!(e.contains("blocks.99.hook_resid_post") && e.contains("6 blocks"), "{e}");
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knowlens")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout))
}

#[test]
fn command_line_errors_exit_non_zero_with_a_message() {
    let model = fixture("tiny/gemma3");
    let model = model.to_str().unwrap();
    let (ok, msg) = cli(&[
        "cache",
        "--model",
        model,
        "--prompt",
        "t5 t6",
        "--hooks",
        "blocks.0.hook_foo",
        "--out",
        "/tmp/x.safetensors",
    ]);
    assert!(!ok && msg.contains("unknown hook point 'blocks.0.hook_foo'"), "{msg}");
    let (ok, msg) = cli(&["logits", "--model", model, "--prompt", ""]);
    assert!(!ok && msg.contains("empty"), "{msg}");
    // A float32 checkpoint has no quantized precision to compare with.
    let (ok, msg) = cli(&["precision", "--model", model, "--per-type", "0"]);
    assert!(!ok && msg.contains("float32 weights") && msg.contains("tiny/gemma3"), "{msg}");
    let (ok, msg) = cli(&["logits", "--model", "/nonexistent/model.gguf", "--prompt", "x"]);
    assert!(!ok && msg.contains("/nonexistent/model.gguf"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
}

#[test]
fn the_cache_command_writes_tensors_named_by_hook() {
    let model = fixture("tiny/gemma3");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("acts.safetensors");
    let (ok, msg) = cli(&[
        "cache",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "t5 t6 t7",
        "--hooks",
        "blocks.2.hook_resid_post,blocks.1.attn.hook_pattern",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{msg}");
    let t = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<_> = t.keys().cloned().collect();
    names.sort();
    assert_eq!(names, vec!["blocks.1.attn.hook_pattern", "blocks.2.hook_resid_post"]);
    assert_eq!(t["blocks.2.hook_resid_post"].dim(2).unwrap(), 32);
}

fn header_of_tiny_gguf() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    write_tiny_llama_gguf(&path, "llama");
    std::fs::read(&path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn gguf_header_parsing_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut c = std::io::Cursor::new(bytes);
        let _ = knowlens::model::read_gguf_header(&mut c, std::path::Path::new("random.gguf"));
    }

    #[test]
    fn gguf_header_parsing_never_panics_on_corrupted_headers(
        flips in proptest::collection::vec((0usize..2048, any::<u8>()), 1..8),
        cut in 16usize..4096,
    ) {
        let mut bytes = header_of_tiny_gguf();
        for (i, b) in flips {
            let i = i % bytes.len();
            bytes[i] = b;
        }
        bytes.truncate(cut.min(bytes.len()));
        let mut c = std::io::Cursor::new(bytes);
        let _ = knowlens::model::read_gguf_header(&mut c, std::path::Path::new("corrupt.gguf"));
    }
}
