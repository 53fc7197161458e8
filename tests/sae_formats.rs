//! SAEs in every format knowlens reads encode and reconstruct exactly as SAELens does
//! (fixtures and SAELens's own outputs from tools/make_sae_fixtures.py), survive a save/load round
//! trip unchanged, load in SAELens after knowlens saved them (tools/check_saelens_load.py), and
//! bad files give errors that name the file.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::*;
use knowlens::sae::{Architecture, SaeFormat};
use knowlens::{HookPoint, Sae};
use proptest::prelude::*;
use serde_json::{json, Value};

const TOL: f32 = 1e-5;

/// (name in expected.safetensors, path) for every fixture.
fn fixtures() -> Vec<(&'static str, PathBuf)> {
    let gs = fixture("sae/gemma_scope/layer_3/width_128/average_l0_20");
    vec![
        ("standard", fixture("sae/standard")),
        ("jumprelu", fixture("sae/jumprelu")),
        ("topk", fixture("sae/topk")),
        ("batchtopk", fixture("sae/batchtopk")),
        ("pre6_topk", fixture("sae/pre6_topk")),
        ("gemma_scope", gs.join("params.npz")),
        ("gemma_scope", gs.join("params_deflated.npz")),
        ("gemma_scope_2", fixture("sae/gemma_scope_2/resid_post/layer_5_width_128_l0_small")),
    ]
}

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn every_format_encodes_and_reconstructs_like_saelens() {
    let exp = expected("sae/expected.safetensors");
    let x = &exp["x"];
    for (name, path) in fixtures() {
        let sae = Sae::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        let f = sae.encode(x).unwrap();
        let r = sae.decode(&f).unwrap();
        let (de, dr) =
            (max_abs_diff(&f, &exp[&format!("{name}.encode")]), max_abs_diff(&r, &exp[&format!("{name}.decode")]));
        let file = path.file_name().unwrap().to_string_lossy();
        println!("{name:14} {file:28} encode max|Δ| {de:.2e}  decode max|Δ| {dr:.2e}");
        assert!(de <= TOL && dr <= TOL, "{name} ({file}): encode {de:e}, decode {dr:e}");
        assert_eq!(max_abs_diff(&sae.forward(x).unwrap(), &r), 0.0);
        let err = sae.reconstruction_error(x).unwrap();
        assert!(max_abs_diff(&(&err + &r).unwrap(), x) < 1e-6);
    }
}

#[test]
fn formats_architectures_and_hooks_are_read_from_the_files() {
    let load = |p: &str| Sae::load(&fixture(p)).unwrap();
    let s = load("sae/standard");
    assert_eq!((s.format, s.hook, s.d_in(), s.d_sae()), (SaeFormat::SaeLens, HookPoint::AttnZ(1), 64, 256));
    assert!(matches!(s.arch(), Architecture::Standard) && s.apply_b_dec_to_input());
    assert_eq!(s.model_name.as_deref(), Some("knowlens-sae-fixture"));
    assert_eq!(s.sparsity.as_ref().unwrap().dims(), &[256]);
    assert_eq!(s.extra_metadata["context_size"], json!(128));
    let t = load("sae/topk");
    assert!(matches!(t.arch(), Architecture::TopK { k: 8, rescale_acts_by_decoder_norm: true }));
    assert_eq!(t.hook, HookPoint::MlpOut(4));
    let b = load("sae/batchtopk");
    assert!(matches!(b.arch(), Architecture::JumpRelu { .. }) && !b.apply_b_dec_to_input());
    let p = load("sae/pre6_topk");
    assert_eq!((p.format, p.hook), (SaeFormat::SaeLensPre6, HookPoint::ResidPre(5)));
    assert!(matches!(p.arch(), Architecture::TopK { k: 8, rescale_acts_by_decoder_norm: false }));
    let g = load("sae/gemma_scope/layer_3/width_128/average_l0_20/params.npz");
    assert_eq!((g.format, g.hook, g.d_sae()), (SaeFormat::GemmaScopeNpz, HookPoint::ResidPost(3), 128));
    assert!(matches!(g.arch(), Architecture::JumpRelu { .. }) && !g.apply_b_dec_to_input());
    // A directory holding params.npz, and an explicit hook, work too.
    let d = load("sae/gemma_scope/layer_3/width_128/average_l0_20");
    assert_eq!(d.format, SaeFormat::GemmaScopeNpz);
    let h = Sae::load_with_hook(&g.source, Some(HookPoint::MlpOut(7))).unwrap();
    assert_eq!(h.hook, HookPoint::MlpOut(7));
    let g2 = load("sae/gemma_scope_2/resid_post/layer_5_width_128_l0_small");
    assert_eq!((g2.format, g2.hook), (SaeFormat::GemmaScope2, HookPoint::ResidPost(5)));
    assert_eq!(g2.model_name.as_deref(), Some("google/gemma-3-270m-pt"));
}

fn assert_same_sae(a: &Sae, b: &Sae) {
    let what = a.source.display().to_string();
    for (x, y) in [(a.w_enc(), b.w_enc()), (a.w_dec(), b.w_dec()), (a.b_enc(), b.b_enc()), (a.b_dec(), b.b_dec())] {
        assert_eq!(max_abs_diff(x, y), 0.0, "{what}");
    }
    match (a.arch(), b.arch()) {
        (Architecture::Standard, Architecture::Standard) => {}
        (Architecture::JumpRelu { threshold: t }, Architecture::JumpRelu { threshold: u }) => {
            assert_eq!(max_abs_diff(t, u), 0.0, "{what}")
        }
        (
            Architecture::TopK { k, rescale_acts_by_decoder_norm: r },
            Architecture::TopK { k: k2, rescale_acts_by_decoder_norm: r2 },
        ) => {
            assert_eq!((k, r), (k2, r2), "{what}")
        }
        (x, y) => panic!("{what}: {} became {}", x.name(), y.name()),
    }
    assert_eq!(a.apply_b_dec_to_input(), b.apply_b_dec_to_input(), "{what}");
    assert_eq!((a.hook, &a.model_name), (b.hook, &b.model_name), "{what}");
    match (&a.sparsity, &b.sparsity) {
        (Some(s), Some(t)) => assert_eq!(max_abs_diff(s, t), 0.0),
        (None, None) => {}
        _ => panic!("{what}: sparsity lost or invented"),
    }
}

#[test]
fn save_saelens_then_load_gives_the_same_sae() {
    let x = &expected("sae/expected.safetensors")["x"];
    let tmp = tempfile::tempdir().unwrap();
    for (i, (_, path)) in fixtures().into_iter().enumerate() {
        let a = Sae::load(&path).unwrap();
        let dir = tmp.path().join(format!("{i}"));
        a.save_saelens(&dir).unwrap();
        let b = Sae::load(&dir).unwrap();
        assert_eq!(b.format, SaeFormat::SaeLens);
        assert_same_sae(&a, &b);
        assert_eq!(max_abs_diff(&a.encode(x).unwrap(), &b.encode(x).unwrap()), 0.0);
        // Saving again writes the same bytes.
        let again = tmp.path().join(format!("{i}-again"));
        b.save_saelens(&again).unwrap();
        for f in ["cfg.json", "sae_weights.safetensors"] {
            assert_eq!(std::fs::read(dir.join(f)).unwrap(), std::fs::read(again.join(f)).unwrap(), "{f}");
        }
        if path.ends_with("standard") {
            assert!(dir.join("sparsity.safetensors").exists());
            assert_eq!(b.extra_metadata["context_size"], json!(128));
        }
    }
}

#[test]
fn lowercase_npz_keys_are_accepted() {
    let g = Sae::load(&fixture("sae/gemma_scope/layer_3/width_128/average_l0_20/params.npz")).unwrap();
    let Architecture::JumpRelu { threshold } = g.arch() else { panic!() };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("layer_4").join("params.npz");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let named = [
        ("w_enc", g.w_enc()),
        ("w_dec", g.w_dec()),
        ("b_enc", g.b_enc()),
        ("b_dec", g.b_dec()),
        ("threshold", threshold),
    ];
    Tensor::write_npz(&named, &path).unwrap();
    let l = Sae::load(&path).unwrap();
    assert_eq!(l.hook, HookPoint::ResidPost(4));
    assert_eq!(max_abs_diff(l.w_enc(), g.w_enc()), 0.0);
    assert_eq!(max_abs_diff(l.w_dec(), g.w_dec()), 0.0);
}

// ---- SAELens loads what knowlens saves ---------------------------------------------------------

/// The SAEs saved into tests/fixtures/sae/knowlens_saved/, from these fixtures.
const SAVED: [(&str, &str); 2] =
    [("gemma_scope", "sae/gemma_scope/layer_3/width_128/average_l0_20/params.npz"), ("topk", "sae/topk")];

fn rows(v: &Value) -> Tensor {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).expect("a list of rows");
    let (n, d) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (n, d), &Device::Cpu).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Regenerates tests/fixtures/sae/knowlens_saved/: each SAE of SAVED saved by knowlens, plus
/// `<name>.knowlens.json` with inputs and knowlens's encodings for tools/check_saelens_load.py.
/// Run: cargo test --release --test sae_formats -- --ignored write_knowlens_saved
#[test]
#[ignore]
fn write_knowlens_saved() {
    let x = &expected("sae/expected.safetensors")["x"];
    let out = fixture("sae/knowlens_saved");
    for (name, src) in SAVED {
        let sae = Sae::load(&fixture(src)).unwrap();
        let dir = out.join(name);
        sae.save_saelens(&dir).unwrap();
        let f = sae.encode(x).unwrap();
        let r = sae.decode(&f).unwrap();
        let doc = json!({
            "sae": name,
            "source": src,
            "x": x.to_vec2::<f32>().unwrap(),
            "encode": f.to_vec2::<f32>().unwrap(),
            "decode": r.to_vec2::<f32>().unwrap(),
        });
        std::fs::write(out.join(format!("{name}.knowlens.json")), serde_json::to_string(&doc).unwrap() + "\n").unwrap();
    }
}

#[test]
fn saelens_loads_the_saes_knowlens_saved_with_the_same_encodings() {
    let out = fixture("sae/knowlens_saved");
    let tmp = tempfile::tempdir().unwrap();
    for (name, src) in SAVED {
        // The committed directory is what save_saelens writes today.
        let fresh = tmp.path().join(name);
        Sae::load(&fixture(src)).unwrap().save_saelens(&fresh).unwrap();
        for f in ["cfg.json", "sae_weights.safetensors"] {
            let committed = std::fs::read(out.join(name).join(f)).unwrap();
            assert_eq!(
                committed,
                std::fs::read(fresh.join(f)).unwrap(),
                "{name}/{f} is stale: rerun write_knowlens_saved"
            );
        }
        // SAELens's encodings of that directory (tools/check_saelens_load.py) match knowlens's.
        let check = read_json(&out.join(format!("{name}.saelens_check.json")));
        let inputs = read_json(&out.join(format!("{name}.knowlens.json")));
        let sae = Sae::load(&out.join(name)).unwrap();
        let x = rows(&inputs["x"]);
        let f = sae.encode(&x).unwrap();
        let de = max_abs_diff(&f, &rows(&check["encode"]));
        let dr = max_abs_diff(&sae.decode(&f).unwrap(), &rows(&check["decode"]));
        println!(
            "{name}: SAELens {} ({}) vs knowlens: encode {de:.2e} decode {dr:.2e}",
            check["sae_lens_version"], check["class"]
        );
        assert!(de <= TOL && dr <= TOL, "{name}: encode {de:e} decode {dr:e}");
        assert!(check["max_abs_diff_encode"].as_f64().unwrap() <= TOL as f64);
    }
}

// ---- bad input ---------------------------------------------------------------------------------

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

#[test]
fn truncated_or_garbage_npz_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("sae/gemma_scope/layer_3/width_128/average_l0_20/params_deflated.npz")).unwrap();
    let cut = tmp.path().join("layer_1").join("cut.npz");
    std::fs::create_dir_all(cut.parent().unwrap()).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(Sae::load(&cut));
    assert!(e.contains("cut.npz") && e.contains("truncated"), "{e}");
    let junk = tmp.path().join("layer_1").join("junk.npz");
    std::fs::write(&junk, b"not a zip at all").unwrap();
    let e = err_of(Sae::load(&junk));
    assert!(e.contains("junk.npz") && e.contains("not a valid npz"), "{e}");
    // No layer in the path and no --hook.
    let nameless = tmp.path().join("params.npz");
    std::fs::write(&nameless, &bytes).unwrap();
    let e = err_of(Sae::load(&nameless));
    assert!(e.contains("params.npz") && e.contains("--hook"), "{e}");
    let e = err_of(Sae::load(&tmp.path().join("absent")));
    assert!(e.contains("absent") && e.contains("no such file"), "{e}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = err_of(Sae::load(&empty));
    assert!(e.contains("empty") && e.contains("no SAE here"), "{e}");
}

#[test]
fn safetensors_missing_or_misshaped_tensors_name_the_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sae");
    copy_dir(&fixture("sae/jumprelu"), &dir);
    let weights = dir.join("sae_weights.safetensors");
    let full = expected("sae/jumprelu/sae_weights.safetensors");

    let mut st = full.clone();
    st.remove("threshold");
    candle_core::safetensors::save(&st, &weights).unwrap();
    let e = err_of(Sae::load(&dir));
    assert!(e.contains("sae_weights.safetensors") && e.contains("'threshold' is missing"), "{e}");

    let mut st = full.clone();
    st.insert("W_dec".into(), full["W_dec"].narrow(0, 0, 100).unwrap());
    candle_core::safetensors::save(&st, &weights).unwrap();
    let e = err_of(Sae::load(&dir));
    assert!(e.contains("sae_weights.safetensors") && e.contains("'W_dec' has shape [100, 64]"), "{e}");

    let mut st = full.clone();
    st.insert("b_gate".into(), full["b_enc"].clone());
    candle_core::safetensors::save(&st, &weights).unwrap();
    let e = err_of(Sae::load(&dir));
    assert!(e.contains("unexpected tensors b_gate"), "{e}");

    let bytes = std::fs::read(fixture("sae/jumprelu/sae_weights.safetensors")).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() - 1000]).unwrap();
    let e = err_of(Sae::load(&dir));
    assert!(e.contains("sae_weights.safetensors") && e.contains("not a readable safetensors"), "{e}");

    // Gemma Scope 2: lowercase names in the message, the folder's file named.
    let g2 = tmp.path().join("layer_5_width_128_l0_small");
    copy_dir(&fixture("sae/gemma_scope_2/resid_post/layer_5_width_128_l0_small"), &g2);
    let mut st = expected("sae/gemma_scope_2/resid_post/layer_5_width_128_l0_small/params.safetensors");
    st.remove("w_dec");
    candle_core::safetensors::save(&st, g2.join("params.safetensors")).unwrap();
    let e = err_of(Sae::load(&g2));
    assert!(e.contains("params.safetensors") && e.contains("'W_dec' or 'w_dec' is missing"), "{e}");
}

#[test]
fn unknown_architectures_and_bad_configs_name_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sae");
    copy_dir(&fixture("sae/standard"), &dir);
    let cfg_path = dir.join("cfg.json");
    let cfg = read_json(&cfg_path);
    let write = |f: &dyn Fn(&mut Value)| {
        let mut c = cfg.clone();
        f(&mut c);
        std::fs::write(&cfg_path, c.to_string()).unwrap();
    };
    write(&|c| c["architecture"] = json!("gated"));
    let e = err_of(Sae::load(&dir));
    assert!(e.contains("cfg.json") && e.contains("unknown architecture 'gated'"), "{e}");
    write(&|c| c["d_sae"] = json!(300));
    let e = err_of(Sae::load(&dir));
    assert!(e.contains("'W_enc' has shape [64, 256], expected [d_in, d_sae] = [64, 300]"), "{e}");
    write(&|c| c["metadata"]["hook_name"] = json!("blocks.1.hook_q"));
    let e = err_of(Sae::load(&dir));
    assert!(e.contains("cfg.json") && e.contains("unknown hook point 'blocks.1.hook_q'"), "{e}");
    std::fs::write(&cfg_path, "{ not json").unwrap();
    let e = err_of(Sae::load(&dir));
    assert!(e.contains("cfg.json") && e.contains("not valid JSON"), "{e}");

    let g2 = tmp.path().join("g2");
    copy_dir(&fixture("sae/gemma_scope_2/resid_post/layer_5_width_128_l0_small"), &g2);
    std::fs::write(g2.join("config.json"), r#"{"architecture": "relu", "hf_hook_point_in": "model.layers.5.output"}"#)
        .unwrap();
    let e = err_of(Sae::load(&g2));
    assert!(e.contains("config.json") && e.contains("unknown architecture"), "{e}");
}

#[test]
fn an_sae_of_the_wrong_width_is_refused_by_name() {
    let model = tiny("gemma3"); // d_model 32; the fixtures have d_in 64
    let sae = Sae::load(&fixture("sae/jumprelu")).unwrap();
    let e = err_of(sae.check_model(&model));
    assert!(e.contains("sae/jumprelu") && e.contains("d_in 64") && e.contains("blocks.2.hook_resid_post"), "{e}");
    assert!(e.contains("width 32"), "{e}");
    let x = Tensor::zeros((3, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = err_of(sae.encode(&x));
    assert!(e.contains("sae/jumprelu") && e.contains("d_in 64") && e.contains("width 32"), "{e}");
    let far = Sae::load_with_hook(&sae.source, Some(HookPoint::ResidPost(40))).unwrap();
    let e = err_of(far.check_model(&model));
    assert!(e.contains("sae/jumprelu") && e.contains("blocks.40.hook_resid_post"), "{e}");
}

// ---- command line ------------------------------------------------------------------------------

fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knowlens")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout))
}

/// A random SAE that fits the tiny models (d_model 32; hook_z 4 heads × 8).
fn tiny_sae(hook: HookPoint, arch: Architecture) -> Sae {
    let d = &Device::Cpu;
    let w_enc = (Tensor::randn(0f32, 1.0, (32, 48), d).unwrap() * 0.5).unwrap();
    let w_dec = w_enc.t().unwrap().contiguous().unwrap();
    let b_enc = Tensor::full(0.1f32, 48, d).unwrap();
    let b_dec = Tensor::zeros(32, candle_core::DType::F32, d).unwrap();
    Sae::new(w_enc, w_dec, b_enc, b_dec, arch, true, hook).unwrap()
}

#[test]
fn sae_info_and_encode_commands() {
    let (ok, msg) = cli(&["sae", "info", fixture("sae/topk").to_str().unwrap(), "--json"]);
    assert!(ok, "{msg}");
    let v: Value = serde_json::from_str(msg.trim()).unwrap();
    assert_eq!((v["format"].as_str(), v["d_in"].as_u64(), v["d_sae"].as_u64()), (Some("saelens"), Some(64), Some(256)));
    assert_eq!((v["architecture"]["k"].as_u64(), v["hook"].as_str()), (Some(8), Some("blocks.4.hook_mlp_out")));

    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny/gemma3");
    let model = model.to_str().unwrap();
    for (name, hook, arch) in [
        ("resid", HookPoint::ResidPost(2), Architecture::TopK { k: 3, rescale_acts_by_decoder_norm: false }),
        ("z", HookPoint::AttnZ(1), Architecture::Standard),
    ] {
        let dir = tmp.path().join(name);
        let sae = tiny_sae(hook, arch);
        sae.save_saelens(&dir).unwrap();
        let (ok, msg) = cli(&[
            "sae",
            "encode",
            "--sae",
            dir.to_str().unwrap(),
            "--model",
            model,
            "--prompt",
            "w5 w6 w7",
            "--top",
            "2",
            "--json",
        ]);
        assert!(ok, "{msg}");
        let v: Value = serde_json::from_str(msg.trim()).unwrap();
        let tokens = v["tokens"].as_array().unwrap();
        // The command's top latent at the last token is the library's.
        let m = tiny("gemma3");
        let batch = m.batch(&["w5 w6 w7"], false).unwrap();
        let s = batch.seq_len;
        assert_eq!(tokens.len(), s, "{msg}");
        let out = m.run(&batch, &knowlens::HookSpec::new().capture([hook])).unwrap();
        let acts = out.cache.row(hook, 0).unwrap();
        let f = sae.encode(&acts.reshape((s, 32)).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        let last = &f[s - 1];
        let best = (0..48).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
        assert_eq!(tokens[s - 1]["top"][0]["latent"].as_u64(), Some(best as u64), "{msg}");
        if name == "resid" {
            assert!(tokens.iter().all(|t| t["active"].as_u64().unwrap() <= 3), "{msg}");
        }
    }
    // Wrong width: the jumprelu fixture (d_in 64) on the tiny model (32).
    let (ok, msg) =
        cli(&["sae", "encode", "--sae", fixture("sae/jumprelu").to_str().unwrap(), "--model", model, "--prompt", "w5"]);
    assert!(!ok && msg.contains("d_in 64") && msg.contains("width 32") && !msg.contains("panicked"), "{msg}");
    let (ok, msg) = cli(&["sae", "info", "/nonexistent/params.npz"]);
    assert!(!ok && msg.contains("/nonexistent/params.npz") && !msg.contains("panicked"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Corrupted npz bytes give an error or (if the damage missed) an SAE, never a panic.
    #[test]
    fn corrupted_npz_never_panics(flips in proptest::collection::vec((0usize..70_000, any::<u8>()), 1..6), cut in 0usize..70_000) {
        let mut bytes = std::fs::read(fixture("sae/gemma_scope/layer_3/width_128/average_l0_20/params_deflated.npz")).unwrap();
        for (i, b) in flips {
            let i = i % bytes.len();
            bytes[i] = b;
        }
        bytes.truncate(cut.max(1));
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("layer_0").join("params.npz");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let _ = Sae::load(&path);
    }
}
