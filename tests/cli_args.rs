//! No value a user can type into a numeric argument makes the command line panic: each one
//! either works or stops with an error that names the argument.

mod common;

use std::path::Path;

use common::fixture;

fn cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knowlens")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout))
}

fn fails_with<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], needle: &str) {
    let (ok, msg) = cli(args);
    assert!(!ok, "{args:?} should fail: {msg}");
    assert!(!msg.contains("panicked"), "{args:?} panicked: {msg}");
    assert!(msg.contains(needle), "{args:?}: expected {needle:?} in: {msg}");
}

/// `base` with `flag` set to `value` (as `flag=value`, so negative numbers read as values),
/// replacing the flag where `base` has it: clap refuses a flag given twice.
fn set<S: AsRef<str>>(base: &[S], flag: &str, value: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut skip = false;
    for a in base {
        let a = a.as_ref();
        if skip {
            skip = false;
        } else if a == flag {
            skip = true;
        } else if !a.starts_with(&format!("{flag}=")) {
            v.push(a.to_string());
        }
    }
    v.push(format!("{flag}={value}"));
    v
}

fn no_panic(args: &[String]) {
    let (_, msg) = cli(args);
    assert!(!msg.contains("panicked") && !msg.contains("RUST_BACKTRACE"), "{args:?} panicked: {msg}");
}

/// A plain text file of the tiny model's tokens ("w5 w6 ...").
fn text_file(dir: &Path) -> String {
    let words: Vec<String> = (0..400).map(|i| format!("w{}", 4 + (i * 37) % 92)).collect();
    let p = dir.join("text.txt");
    std::fs::write(&p, words.join(" ")).unwrap();
    p.to_str().unwrap().to_string()
}

fn entities_file(dir: &Path) -> String {
    let rows: String = (0..6)
        .map(|i| format!(r#"{{"id":"movie/{i}","type":"movie","name":"Film {i}","attributes":{{"director":["Jane Doe"],"release_year":["{}"],"genre":["Drama"]}},"popularity_rank":{}}}"#, 1960 + i, i + 1) + "\n")
        .collect();
    let p = dir.join("movies.jsonl");
    std::fs::write(&p, rows).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn zero_repetitions_steps_and_sizes_are_errors_not_panics() {
    let model = fixture("tiny/gemma3");
    let m = model.to_str().unwrap();
    fails_with(&["bench", "--model", m, "--workload", "prefill", "--reps", "0"], "--reps");
    fails_with(&["bench", "--model", m, "--workload", "cache", "--batch", "0"], "--batch");
    fails_with(&["bench", "--model", m, "--workload", "decode", "--new-tokens", "0"], "--new-tokens");
    let sae_bench = ["sae", "bench", "--d-in", "8", "--batch-size", "16", "--width", "32", "--k", "4", "--warmup", "0"];
    fails_with(&set(&sae_bench, "--steps", "0"), "--steps");
    fails_with(&set(&set(&sae_bench, "--steps", "1"), "--k", "33"), "k must be between 1 and the width (32)");
    fails_with(&set(&set(&sae_bench, "--steps", "1"), "--width", "0"), "width");
    fails_with(&set(&set(&sae_bench, "--steps", "1"), "--batch-size", "0"), "--batch-size");
    fails_with(&set(&set(&set(&sae_bench, "--steps", "1"), "--arch", "standard"), "--active", "-3"), "--active");
    fails_with(
        &set(&set(&set(&sae_bench, "--steps", "1"), "--arch", "batchtopk"), "--topk-threshold-lr", "-1"),
        "threshold rate",
    );
    let (ok, msg) = cli(&set(&sae_bench, "--steps", "1"));
    assert!(ok && msg.contains("\"workload\":\"sae-train\""), "{msg}");
}

#[test]
fn training_settings_are_checked_before_the_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let text = text_file(dir.path());
    let out = dir.path().join("out");
    // A model path that does not exist: a settings error must come first.
    let base = [
        "sae",
        "train",
        "--model",
        "/nonexistent/model.gguf",
        "--hooks",
        "blocks.1.hook_resid_post",
        "--text-file",
        &text,
    ];
    let base = [
        &base[..],
        &["--out", out.to_str().unwrap(), "--tokens", "64", "--batch-size", "16", "--width", "32", "--k", "4"],
    ]
    .concat();
    fails_with(&set(&base, "--context-size", "1"), "--context-size");
    fails_with(&set(&base, "--k", "0"), "k must be between 1");
    fails_with(&set(&base, "--lr", "0"), "learning rate");
    fails_with(&set(&base, "--buffer-batches", "0"), "--buffer-batches");
    fails_with(&set(&base, "--warmup-steps", "5"), "warm-up steps (5) exceed the run's steps (4)");
    fails_with(&set(&base, "--b-dec-init", "median"), "geometric-median");
}

#[test]
fn labeling_settings_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ents = entities_file(dir.path());
    let out = dir.path().join("out");
    let model = fixture("tiny/gemma3");
    let base = [
        "label",
        "--model",
        model.to_str().unwrap(),
        "--entities",
        &ents,
        "--out",
        out.to_str().unwrap(),
        "--templates",
        "paper",
    ];
    fails_with(&set(&base, "--batch-size", "0"), "batch_size must be at least 1");
    fails_with(&set(&set(&base, "--mode", "sampled"), "--samples", "0"), "samples must be at least 1");
    fails_with(
        &set(&set(&set(&base, "--mode", "sampled"), "--samples", "2"), "--min-correct-samples", "3"),
        "min_correct_samples (3)",
    );
    fails_with(&set(&base, "--known-min", "0"), "known_min");
    // A typo in a name is refused with the valid ones.
    fails_with(&set(&base, "--types", "movie,moive"), "player, movie, city, song");
    fails_with(&set(&base, "--mode", "greedily"), "greedy, sampled, likelihood");
    fails_with(&set(&base, "--precision", "f16"), "f32, quantized");
    fails_with(
        &[
            "label",
            "--model",
            model.to_str().unwrap(),
            "--entities",
            "/nonexistent/e.jsonl",
            "--out",
            out.to_str().unwrap(),
        ],
        "/nonexistent/e.jsonl",
    );
    // --types filters (only movies here, so asking for cities leaves nothing).
    fails_with(&set(&base, "--types", "city"), "no entities to label");
    let (ok, msg) = cli(&set(&set(&base, "--types", "movie"), "--per-type", "2"));
    assert!(ok && msg.contains("2 entities"), "{msg}");
    // The possible values are in --help.
    let (ok, help) = cli(&["label", "--help"]);
    assert!(ok && help.contains("greedy, sampled, likelihood") && help.contains("paper, auto"), "{help}");
}

/// Every numeric argument of every command at 0 (and a few other edge values): an answer or an
/// error, never a panic.
#[test]
fn no_numeric_argument_panics() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny/gemma3");
    let m = model.to_str().unwrap();
    let text = text_file(dir.path());
    let ents = entities_file(dir.path());
    // An SAE for the tiny model, trained by the command line itself.
    let sae_out = dir.path().join("sae");
    let (ok, msg) = cli(&[
        "sae",
        "train",
        "--model",
        m,
        "--hooks",
        "blocks.1.hook_resid_post",
        "--text-file",
        &text,
        "--out",
        sae_out.to_str().unwrap(),
        "--tokens",
        "64",
        "--batch-size",
        "16",
        "--context-size",
        "8",
        "--width",
        "32",
        "--k",
        "4",
        "--no-progress",
    ]);
    assert!(ok, "{msg}");
    let sae = sae_out.join("blocks.1.hook_resid_post");
    let sae = sae.to_str().unwrap();
    let html = dir.path().join("d.html");
    let html = html.to_str().unwrap();

    let mut n = 0;
    let mut run = |base: &[String], flags: &[&str], values: &[&str]| {
        for flag in flags {
            for v in values {
                let out = dir.path().join(format!("out{n}"));
                n += 1;
                let base: Vec<&str> =
                    base.iter().map(|s| if s == "OUT" { out.to_str().unwrap() } else { s.as_str() }).collect();
                no_panic(&set(&base, flag, v));
            }
        }
    };
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let zero = &["0"][..];
    run(&owned(&["logits", "--model", m, "--prompt", "w5 w6"]), &["--top"], &["0", "1000000"]);
    run(&owned(&["generate", "--model", m, "--prompt", "w5 w6"]), &["--max-tokens", "--temperature"], zero);
    run(&owned(&["generate", "--model", m, "--prompt", "w5 w6", "--seed", "3"]), &["--temperature"], &["-1", "1e9"]);
    for w in ["cache", "prefill", "decode"] {
        run(
            &owned(&["bench", "--model", m, "--workload", w, "--reps", "1"]),
            &["--batch", "--tokens", "--new-tokens", "--reps"],
            zero,
        );
    }
    let label = owned(&["label", "--model", m, "--entities", &ents, "--out", "OUT", "--templates", "paper"]);
    run(&label, &["--batch-size", "--known-min", "--per-type"], zero);
    run(&set(&label, "--mode", "sampled"), &["--samples", "--min-correct-samples"], &["0", "100"]);
    run(
        &owned(&["label", "--model", m, "--entities", &ents, "--out", "OUT", "--templates", "auto"]),
        &["--dev-size"],
        zero,
    );
    for arch in ["topk", "batchtopk", "jumprelu", "standard"] {
        let b = owned(&[
            "sae",
            "bench",
            "--arch",
            arch,
            "--d-in",
            "8",
            "--batch-size",
            "16",
            "--width",
            "32",
            "--k",
            "4",
            "--steps",
            "1",
            "--warmup",
            "0",
        ]);
        run(&b, &["--steps", "--warmup", "--d-in", "--width", "--k", "--batch-size"], zero);
        run(&b, &["--k"], &["1000"]);
        run(
            &b,
            &[
                "--l1-coefficient",
                "--l0-coefficient",
                "--jumprelu-bandwidth",
                "--jumprelu-init-threshold",
                "--topk-threshold-lr",
            ],
            &["0", "-1", "NaN"],
        );
    }
    let train = owned(&[
        "sae",
        "train",
        "--model",
        m,
        "--hooks",
        "blocks.1.hook_resid_post",
        "--text-file",
        &text,
        "--out",
        "OUT",
        "--tokens",
        "64",
        "--batch-size",
        "16",
        "--context-size",
        "8",
        "--width",
        "32",
        "--k",
        "4",
        "--no-progress",
    ]);
    run(
        &train,
        &[
            "--tokens",
            "--batch-size",
            "--context-size",
            "--buffer-batches",
            "--model-batch",
            "--width",
            "--k",
            "--checkpoint-every",
            "--log-every",
            "--dead-tokens",
            "--aux-k",
            "--warmup-steps",
            "--decay-steps",
            "--lr",
            "--aux-coefficient",
        ],
        zero,
    );
    run(&train, &["--context-size"], &["1", "100000"]);
    let eval = owned(&["sae", "eval", "--sae", sae, "--model", m, "--text-file", &text]);
    run(&eval, &["--context", "--tokens", "--batch", "--logit-rows"], zero);
    run(&eval, &["--context"], &["1", "100000"]);
    let dash = owned(&[
        "sae",
        "dashboard",
        "--sae",
        sae,
        "--model",
        m,
        "--text-file",
        &text,
        "--context",
        "16",
        "--out",
        html,
    ]);
    run(&set(&dash, "--top", "3"), &["--examples", "--window", "--batch", "--context", "--tokens"], zero);
    run(&dash, &["--top"], &["0", "1000"]);
    run(&dash, &["--latents"], &["0", "1000"]);
    run(&owned(&["sae", "encode", "--sae", sae, "--model", m, "--prompt", "w5 w6"]), &["--top"], &["0", "1000"]);
}
