//! SAE evaluation and dashboards on the tiny fixture models: SAEs whose metrics are known in
//! closed form (a perfect one, a zero one), metrics recomputed directly from captured
//! activations and per-sequence logits, the dashboard's HTML, and bad input.

mod common;

use candle_core::{DType, Device, Tensor, D};
use common::*;
use knowlens::sae::dashboard::{self, ContextWindow, Dashboards, Histogram, LatentDashboard, LogitEntry};
use knowlens::sae::eval::{evaluate, EvalConfig};
use knowlens::sae::{Architecture, DashboardConfig, LatentSelection};
use knowlens::{HookPoint, HookSpec, LogitsAt, Sae};

const HOOK: HookPoint = HookPoint::ResidPost(1);
const D: usize = 32;

/// BOS-led sequences of ordinary tokens (ids 4..96); one is shorter, so batches get padding.
fn sequences() -> Vec<Vec<u32>> {
    let mut state = 12345u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        4 + ((state >> 33) % 92) as u32
    };
    [12usize, 12, 7, 12, 12].iter().map(|&n| std::iter::once(2).chain((1..n).map(|_| next())).collect()).collect()
}

/// Small batches and logit chunks, to exercise the batching and the chunked unembedding.
fn cfg() -> EvalConfig {
    EvalConfig { batch_size: 2, logit_rows: 5, ..EvalConfig::default() }
}

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

/// `W_enc = [I, −I]`, `W_dec = [I; −I]`, ReLU: relu(x) − relu(−x) = x exactly.
fn identity_sae(d: usize, hook: HookPoint) -> Sae {
    let eye = Tensor::eye(d, DType::F32, &Device::Cpu).unwrap();
    let w_enc = Tensor::cat(&[&eye, &eye.neg().unwrap()], 1).unwrap();
    let w_dec = Tensor::cat(&[&eye, &eye.neg().unwrap()], 0).unwrap();
    Sae::new(w_enc, w_dec, zeros(&[2 * d]), zeros(&[d]), Architecture::Standard, false, hook).unwrap()
}

fn zero_sae(d: usize, d_sae: usize, hook: HookPoint) -> Sae {
    Sae::new(zeros(&[d, d_sae]), zeros(&[d_sae, d]), zeros(&[d_sae]), zeros(&[d]), Architecture::Standard, false, hook)
        .unwrap()
}

/// Deterministic pseudo-normal numbers (sums of uniforms), scaled.
fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed;
    let mut uniform = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n).map(|_| ((0..4).map(|_| uniform()).sum::<f32>() - 2.0) * scale).collect()
}

/// A random SAE whose latent 0 always fires (dense, with a zero decoder row so that it does not
/// spoil the reconstruction) and latent 1 never does (dead).
fn random_sae(d: usize, d_sae: usize, hook: HookPoint) -> Sae {
    let dev = &Device::Cpu;
    let w_enc = Tensor::from_vec(noise(d * d_sae, 1, 0.5), (d, d_sae), dev).unwrap();
    let mut dec = noise(d_sae * d, 2, 0.5);
    dec[..d].iter_mut().for_each(|v| *v = 0.0);
    let w_dec = Tensor::from_vec(dec, (d_sae, d), dev).unwrap();
    let mut b = noise(d_sae, 3, 0.5);
    b[0] = 1e3;
    b[1] = -1e6;
    let b_enc = Tensor::from_vec(b, d_sae, dev).unwrap();
    let b_dec = Tensor::from_vec(noise(d, 4, 0.1), d, dev).unwrap();
    Sae::new(w_enc, w_dec, b_enc, b_dec, Architecture::Standard, true, hook).unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

#[test]
fn a_perfect_sae_explains_everything_and_recovers_the_loss() {
    for arch in ["gemma3", "gemma2", "llama"] {
        let m = tiny(arch);
        let r = evaluate(&m, &identity_sae(D, HOOK), &sequences(), &cfg()).unwrap();
        assert_eq!(r.n_tokens, 55);
        assert_eq!(r.n_counted_tokens, 50, "{arch}: BOS is not counted");
        assert!(r.fvu.abs() < 1e-6 && r.mse < 1e-10, "{arch}: fvu {} mse {}", r.fvu, r.mse);
        assert!((r.cossim - 1.0).abs() < 1e-5 && (r.l2_ratio - 1.0).abs() < 1e-5, "{arch}: {r:?}");
        assert!((r.relative_reconstruction_bias.unwrap() - 1.0).abs() < 1e-5);
        assert_eq!(r.l0, D as f64, "{arch}: one of each ±pair fires per dimension");
        let d = r.downstream.unwrap();
        assert_eq!(d.n_loss_tokens, 45, "{arch}: one prediction per counted token but each row's last");
        // (A random-weight model: ablation changes its loss, not necessarily for the worse.)
        assert!((d.ce_loss_zero - d.ce_loss_clean).abs() > 1e-3, "{arch}: ablation matters: {d:?}");
        assert!((d.ce_loss_sae - d.ce_loss_clean).abs() < 1e-6, "{arch}: {d:?}");
        assert!((d.ce_loss_recovered.unwrap() - 1.0).abs() < 1e-5, "{arch}: {d:?}");
        assert!(d.kl_div_sae.abs() < 1e-6 && d.kl_div_zero > 0.0, "{arch}: {d:?}");
        assert!((d.kl_div_score.unwrap() - 1.0).abs() < 1e-5, "{arch}: {d:?}");
    }
}

#[test]
fn a_zero_sae_is_as_bad_as_ablation() {
    let m = tiny("gemma3");
    let r = evaluate(&m, &zero_sae(D, 8, HOOK), &sequences(), &cfg()).unwrap();
    let d = r.downstream.unwrap();
    assert_eq!(d.ce_loss_sae, d.ce_loss_zero, "the reconstruction is the ablation");
    assert_eq!(d.ce_loss_recovered, Some(0.0));
    assert_eq!(d.kl_div_sae, d.kl_div_zero);
    assert_eq!(d.kl_div_score, Some(0.0));
    assert!((d.delta_lm_loss - (d.ce_loss_zero - d.ce_loss_clean)).abs() < 1e-12);
    assert_eq!((r.l0, r.n_dead, r.dead_fraction, r.n_dense), (0.0, 8, 1.0, 0));
    assert_eq!(r.cossim, 0.0, "cosine with a zero vector counts as 0");
    assert_eq!(r.relative_reconstruction_bias, None, "0/0 is undefined");
    assert!(r.latent_frequency.iter().all(|&f| f == 0.0));
}

/// Several SAEs evaluated together (two hooks, a shared clean pass and shared ablations) give
/// what each gives alone; the ablations on a subset take the ratios on that subset; mean
/// ablation and the bootstrap interval behave as defined.
#[test]
fn many_saes_at_once_match_one_at_a_time() {
    use knowlens::sae::eval::evaluate_many;
    let m = tiny("gemma3");
    let other = HookPoint::ResidPost(0);
    let (a, b, c) = (random_sae(D, 48, HOOK), identity_sae(D, other), zero_sae(D, 8, HOOK));
    let seqs = sequences();
    let cfg = EvalConfig { mean_ablation: true, bootstrap: 200, ..cfg() };
    let together = evaluate_many(&m, &[&a, &b, &c], &seqs, &cfg).unwrap();
    for (sae, t) in [&a, &b, &c].into_iter().zip(&together) {
        let alone = evaluate(&m, sae, &seqs, &cfg).unwrap();
        assert_eq!(t.hook, alone.hook);
        for (x, y) in [(t.l0, alone.l0), (t.fvu, alone.fvu), (t.cossim, alone.cossim)] {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
        let (dt, da) = (t.downstream.as_ref().unwrap(), alone.downstream.as_ref().unwrap());
        for (x, y) in [
            (dt.ce_loss_sae, da.ce_loss_sae),
            (dt.ce_loss_zero, da.ce_loss_zero),
            (dt.kl_div_sae, da.kl_div_sae),
            (dt.ce_loss_mean_ablation.unwrap(), da.ce_loss_mean_ablation.unwrap()),
        ] {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
        let [lo, hi] = dt.delta_lm_loss_ci95.unwrap();
        assert!(lo <= dt.delta_lm_loss + 1e-12 && dt.delta_lm_loss <= hi + 1e-12, "{dt:?}");
    }
    // The perfect SAE recovers everything against either ablation; the zero SAE is the zero
    // ablation and recovers nothing.
    let perfect = together[1].downstream.as_ref().unwrap();
    assert!((perfect.ce_loss_recovered_mean_ablation.unwrap() - 1.0).abs() < 1e-5, "{perfect:?}");
    assert!((perfect.ce_loss_recovered.unwrap() - 1.0).abs() < 1e-5);
    assert_eq!(together[2].downstream.as_ref().unwrap().ce_loss_recovered, Some(0.0));

    // Ablations on the first two sequences only: the SAE's own loss still uses every token,
    // the ablated loss equals that of an evaluation on those two sequences alone.
    let sub = EvalConfig { ablation_sequences: Some(2), ..cfg.clone() };
    let part = evaluate_many(&m, &[&a], &seqs, &sub).unwrap().pop().unwrap();
    let first_two = evaluate(&m, &a, &seqs[..2], &cfg).unwrap();
    let (dp, d2, dall) =
        (part.downstream.unwrap(), first_two.downstream.unwrap(), together[0].downstream.clone().unwrap());
    assert!((dp.ce_loss_sae - dall.ce_loss_sae).abs() < 1e-9);
    assert!((dp.ce_loss_zero - d2.ce_loss_zero).abs() < 1e-9);
    assert!((dp.ce_loss_recovered.unwrap() - d2.ce_loss_recovered.unwrap()).abs() < 1e-9);
    assert!((dp.kl_div_score.unwrap() - d2.kl_div_score.unwrap()).abs() < 1e-9);
    assert_eq!(dp.n_ablation_loss_tokens, d2.n_loss_tokens);
    assert!(dp.n_ablation_loss_tokens < dp.n_loss_tokens);
    // Spliced passes on the first three sequences only: reconstruction metrics unchanged, the
    // losses those of an evaluation on the three alone.
    let down = EvalConfig { downstream_sequences: Some(3), ablation_sequences: Some(2), ..cfg.clone() };
    let short = evaluate_many(&m, &[&a], &seqs, &down).unwrap().pop().unwrap();
    let first_three = evaluate(&m, &a, &seqs[..3], &cfg).unwrap();
    assert!(
        (short.fvu - together[0].fvu).abs() < 1e-6 && short.n_counted_tokens == together[0].n_counted_tokens,
        "{} {} {} {}",
        short.fvu,
        together[0].fvu,
        short.n_counted_tokens,
        together[0].n_counted_tokens
    );
    let (ds, d3) = (short.downstream.unwrap(), first_three.downstream.unwrap());
    assert!((ds.ce_loss_sae - d3.ce_loss_sae).abs() < 1e-9 && ds.n_loss_tokens == d3.n_loss_tokens);
    assert!((ds.ce_loss_zero - d2.ce_loss_zero).abs() < 1e-9);
    // The table has a header, a rule and one row per SAE.
    let table = knowlens::sae::eval::markdown_table(&together);
    assert_eq!(table.lines().count(), 5, "{table}");
}

/// Every metric again, from activations captured one sequence at a time and each sequence's
/// full logits.
#[test]
fn metrics_match_a_direct_computation() {
    let m = tiny("gemma3");
    let sae = random_sae(D, 48, HOOK);
    let seqs = sequences();
    let r = evaluate(&m, &sae, &seqs, &cfg()).unwrap();

    let (mut xs, mut xhs, mut fs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ce_sum, mut ce_n) = (0f64, 0usize);
    for s in &seqs {
        let batch = m.batch_from_ids(std::slice::from_ref(s)).unwrap();
        let out = m.run(&batch, &HookSpec::new().capture([HOOK]).logits(LogitsAt::All)).unwrap();
        let x = out.cache.row(HOOK, 0).unwrap().narrow(0, 1, s.len() - 1).unwrap(); // drop BOS
        xhs.extend(sae.forward(&x).unwrap().to_vec2::<f32>().unwrap());
        fs.extend(sae.encode(&x).unwrap().to_vec2::<f32>().unwrap());
        xs.extend(x.to_vec2::<f32>().unwrap());
        let lp = candle_nn::ops::log_softmax(&out.logits.unwrap().get(0).unwrap(), D::Minus1).unwrap();
        let lp = lp.to_vec2::<f32>().unwrap();
        for t in 1..s.len() - 1 {
            ce_sum -= lp[t][s[t + 1] as usize] as f64;
            ce_n += 1;
        }
    }
    let n = xs.len() as f64;
    let mean: Vec<f64> = (0..D).map(|j| xs.iter().map(|x| x[j] as f64).sum::<f64>() / n).collect();
    let total_var: f64 =
        xs.iter().map(|x| (0..D).map(|j| (x[j] as f64 - mean[j]).powi(2)).sum::<f64>()).sum::<f64>() / n;
    let sq_err: f64 =
        xs.iter().zip(&xhs).map(|(x, h)| (0..D).map(|j| (x[j] as f64 - h[j] as f64).powi(2)).sum::<f64>()).sum::<f64>()
            / n;
    let ev = 1.0 - sq_err / total_var;
    let norm = |v: &[f32]| v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    let cos = xs
        .iter()
        .zip(&xhs)
        .map(|(x, h)| x.iter().zip(h).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() / (norm(x) * norm(h)))
        .sum::<f64>()
        / n;
    let l0 = fs.iter().map(|f| f.iter().filter(|&&v| v > 0.0).count() as f64).sum::<f64>() / n;
    let l1 = fs.iter().map(|f| f.iter().map(|&v| v as f64).sum::<f64>()).sum::<f64>() / n;

    assert!(ev.is_finite() && ev < 0.999, "a random SAE does not explain everything: {ev}");
    assert!(close(r.explained_variance, ev, 1e-5), "explained variance {} vs direct {ev}", r.explained_variance);
    assert!(close(r.fvu, 1.0 - ev, 1e-5));
    assert!(close(r.mse, sq_err / D as f64, 1e-5), "mse {} vs {}", r.mse, sq_err / D as f64);
    assert!(close(r.cossim, cos, 1e-5), "cossim {} vs {cos}", r.cossim);
    assert!(close(r.l0, l0, 1e-9) && close(r.l1, l1, 1e-5), "l0 {} vs {l0}, l1 {} vs {l1}", r.l0, r.l1);
    let d = r.downstream.as_ref().unwrap();
    assert_eq!(d.n_loss_tokens, ce_n);
    assert!(
        close(d.ce_loss_clean, ce_sum / ce_n as f64, 1e-5),
        "CE clean {} vs {}",
        d.ce_loss_clean,
        ce_sum / ce_n as f64
    );
    assert!(d.ce_loss_recovered.is_some_and(|x| x.is_finite()));
    // Latent 0 always fires, latent 1 never.
    assert_eq!(r.latent_frequency[0], 1.0);
    assert_eq!(r.latent_frequency[1], 0.0);
    assert!(r.n_dense >= 1 && r.n_dead >= 1);
    let dense = r.latent_frequency.iter().filter(|&&f| f as f64 > 0.1).count();
    assert_eq!(r.n_dense, dense);

    // Reconstruction only: the same numbers, no downstream block.
    let only = evaluate(&m, &sae, &seqs, &EvalConfig { downstream: false, ..cfg() }).unwrap();
    assert!(only.downstream.is_none());
    assert_eq!(only.explained_variance, r.explained_variance);
}

#[test]
fn dashboards_show_top_contexts_density_and_logits() {
    let m = tiny("gemma3");
    let sae = random_sae(D, 48, HOOK);
    let seqs = sequences();
    let cfg = DashboardConfig { batch_size: 2, n_examples: 3, window: 2, n_logits: 4, ..DashboardConfig::default() };
    let d = dashboard::collect(&m, &sae, &seqs, &LatentSelection::List(vec![0, 5, 1]), &cfg).unwrap();
    assert_eq!(d.n_tokens, 50);
    assert_eq!(d.latents.iter().map(|l| l.latent).collect::<Vec<_>>(), vec![0, 5, 1]);
    let always = &d.latents[0];
    assert_eq!((always.n_fired, always.density), (50, 1.0));
    assert_eq!(always.histogram.counts.iter().sum::<u64>(), 50);
    assert!(d.latents[2].examples.is_empty() && d.latents[2].n_fired == 0, "latent 1 never fires");

    // Latent 5's examples peak at their centre, come in decreasing order, and the best one is
    // its maximum over the text (recomputed directly).
    let l5 = &d.latents[1];
    let (mut best, mut fired) = (0f32, 0usize);
    for s in &seqs {
        let batch = m.batch_from_ids(std::slice::from_ref(s)).unwrap();
        let x = m.run(&batch, &HookSpec::new().capture([HOOK])).unwrap().cache.row(HOOK, 0).unwrap();
        let f = sae.encode(&x.narrow(0, 1, s.len() - 1).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        best = f.iter().map(|r| r[5]).fold(best, f32::max);
        fired += f.iter().filter(|r| r[5] > 0.0).count();
    }
    assert_eq!(l5.n_fired, fired);
    assert_eq!(l5.histogram.counts.iter().sum::<u64>() as usize, fired);
    let ex = &l5.examples;
    assert_eq!(ex.len(), 3, "latent 5 fires in at least 3 sequences");
    assert!((ex[0].max_activation - best).abs() <= 1e-5 * best, "{} vs {best}", ex[0].max_activation);
    assert_eq!(l5.max_activation, ex[0].max_activation);
    for w in ex {
        assert_eq!(w.activations[w.center], w.max_activation);
        assert_eq!(w.tokens.len(), w.ids.len());
        assert!(w.ids.len() <= 2 * 2 + 1);
        assert_eq!(seqs[w.sequence][w.position], w.ids[w.center]);
    }
    assert!(ex.windows(2).all(|p| p[0].max_activation >= p[1].max_activation));
    let seqs_used: std::collections::HashSet<_> = ex.iter().map(|w| w.sequence).collect();
    assert_eq!(seqs_used.len(), ex.len(), "at most one window per sequence");

    // Logit effects: (W_dec[j] ⊙ w_norm) · W_U, sorted.
    let l = &d.latents[1];
    assert_eq!((l.promoted.len(), l.suppressed.len()), (4, 4));
    assert!(l.promoted.windows(2).all(|p| p[0].value >= p[1].value));
    assert!(l.suppressed.windows(2).all(|p| p[0].value <= p[1].value));
    let dir = sae.w_dec().get(5).unwrap().broadcast_mul(m.transformer.final_norm_weight()).unwrap();
    let direct =
        m.transformer.unembed_linear(&dir.unsqueeze(0).unwrap()).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap();
    let top = direct.iter().copied().fold(f32::MIN, f32::max);
    assert!((l.promoted[0].value - top).abs() < 1e-5);
    assert!((direct[l.promoted[0].id as usize] - top).abs() < 1e-5);
    assert!(d.logits_method.contains("fold"));

    let html = dashboard::render_html(&d);
    for needle in [
        "<!DOCTYPE html>",
        "Latent #0",
        "Latent #5",
        "Top activations",
        "Activation density",
        "Logit effects",
        "<svg",
        "never fired",
    ] {
        assert!(html.contains(needle), "missing {needle}");
    }
    assert!(!html.contains("<script"), "no scripts");
    assert!(!html.replace("http://www.w3.org/2000/svg", "").contains("http"), "nothing fetched from the network");
    assert!(html.contains("&lt;bos&gt;"), "BOS in a context window is escaped");
    assert!(!html.contains("<bos>"));

    // The most frequent latents: latent 0 (fires everywhere) comes first.
    let top = dashboard::collect(&m, &sae, &seqs, &LatentSelection::MostFrequent(3), &cfg).unwrap();
    assert_eq!(top.latents.len(), 3);
    assert_eq!(top.latents[0].latent, 0);
    assert!(top.latents.windows(2).all(|p| p[0].n_fired >= p[1].n_fired));
}

#[test]
fn dashboard_html_escapes_token_text() {
    let evil = "<script>alert('x')</script>";
    let d = Dashboards {
        sae: "sae<b>".into(),
        hook: "blocks.1.hook_resid_post".into(),
        model: "m&m".into(),
        d_in: 2,
        d_sae: 1,
        n_sequences: 1,
        n_tokens: 3,
        logits_method: "W_dec[j] · W_U".into(),
        latents: vec![LatentDashboard {
            latent: 0,
            n_fired: 1,
            density: 1.0 / 3.0,
            max_activation: 2.0,
            mean_activation: 2.0,
            examples: vec![ContextWindow {
                sequence: 0,
                position: 1,
                ids: vec![5, 6],
                tokens: vec![evil.into(), "a\"b\n\u{200C}".into()],
                activations: vec![2.0, 0.0],
                center: 0,
                max_activation: 2.0,
            }],
            histogram: Histogram { max: 2.0, counts: vec![0, 1] },
            promoted: vec![LogitEntry { id: 5, token: evil.into(), value: 1.0 }],
            suppressed: vec![LogitEntry { id: 6, token: "</td>".into(), value: -1.0 }],
        }],
    };
    let html = dashboard::render_html(&d);
    assert!(!html.contains("<script"), "raw <script> in the HTML");
    assert!(!html.contains("</script>"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("sae&lt;b&gt;") && html.contains("m&amp;m") && html.contains("&lt;/td&gt;"));
    assert!(html.contains("a&quot;b↵⟨U+200C⟩"), "quotes escaped, newline and zero-width joiner made visible");
}

#[test]
fn an_sae_of_the_wrong_width_is_a_clear_error() {
    let m = tiny("gemma3");
    let sae = identity_sae(16, HOOK);
    let err = evaluate(&m, &sae, &sequences(), &cfg()).unwrap_err().to_string();
    assert!(err.contains("d_in 16") && err.contains("width 32"), "{err}");
    let err = dashboard::collect(&m, &sae, &sequences(), &LatentSelection::List(vec![0]), &DashboardConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("d_in 16"), "{err}");

    let sae = identity_sae(D, HOOK);
    let err = evaluate(&m, &sae, &[], &cfg()).unwrap_err().to_string();
    assert!(err.contains("no sequences"), "{err}");
    let err = evaluate(&m, &sae, &[vec![2]], &cfg()).unwrap_err().to_string();
    assert!(err.contains("no tokens"), "{err}");
    let err = evaluate(&m, &sae, &[vec![2, 500]], &cfg()).unwrap_err().to_string();
    assert!(format!("{err:#}").contains("outside the vocabulary") || err.contains("sequences 0..1"), "{err:#}");
    let err = dashboard::collect(&m, &sae, &sequences(), &LatentSelection::List(vec![64]), &DashboardConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("latent 64 does not exist"), "{err}");
    let err = evaluate(&m, &identity_sae(D, HookPoint::ResidPost(9)), &sequences(), &cfg()).unwrap_err();
    assert!(format!("{err:#}").contains("6 blocks"), "{err:#}");
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knowlens")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout))
}

#[test]
fn cli_evaluates_and_draws_dashboards_from_a_text_file() {
    let dir = tempfile::tempdir().unwrap();
    let sae_dir = dir.path().join("sae");
    identity_sae(D, HOOK).save_saelens(&sae_dir).unwrap();
    let text = dir.path().join("text.txt");
    let words: Vec<String> = (0..60).map(|i| format!("w{}", 4 + (i * 37) % 92)).collect();
    std::fs::write(&text, words.join(" ")).unwrap();
    let model = fixture("tiny/gemma3");
    let (sae_s, model_s, text_s) = (sae_dir.to_str().unwrap(), model.to_str().unwrap(), text.to_str().unwrap());

    let (ok, out) =
        cli(&["sae", "eval", "--sae", sae_s, "--model", model_s, "--text-file", text_s, "--context", "16", "--json"]);
    assert!(ok, "{out}");
    let r: knowlens::sae::SaeEval = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!((r.n_sequences, r.n_tokens, r.n_counted_tokens), (4, 64, 60), "60 words in 4 BOS-led sequences of 16");
    assert!(r.fvu.abs() < 1e-6 && (r.downstream.unwrap().ce_loss_recovered.unwrap() - 1.0).abs() < 1e-5);
    assert!(r.latent_frequency.is_empty(), "per-latent frequencies only with --per-latent");

    let (ok, out) = cli(&[
        "sae",
        "eval",
        "--sae",
        sae_s,
        "--model",
        model_s,
        "--text-file",
        text_s,
        "--context",
        "16",
        "--tokens",
        "20",
    ]);
    assert!(
        ok && out.contains("explained variance") && out.contains("CE loss recovered") && out.contains("2 sequences"),
        "{out}"
    );

    let html = dir.path().join("dash.html");
    let html_s = html.to_str().unwrap();
    let (ok, out) = cli(&[
        "sae",
        "dashboard",
        "--sae",
        sae_s,
        "--model",
        model_s,
        "--text-file",
        text_s,
        "--context",
        "16",
        "--top",
        "3",
        "--out",
        html_s,
    ]);
    assert!(ok, "{out}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<section class=\"latent\"").count(), 3);
    let (ok, out) = cli(&[
        "sae",
        "dashboard",
        "--sae",
        sae_s,
        "--model",
        model_s,
        "--text-file",
        text_s,
        "--latents",
        "1,2",
        "--out",
        html_s,
    ]);
    assert!(ok, "{out}");
    let (ok, out) =
        cli(&["sae", "dashboard", "--sae", sae_s, "--model", model_s, "--text-file", text_s, "--out", html_s]);
    assert!(!ok && out.contains("--latents"), "{out}");
    let (ok, out) =
        cli(&["sae", "eval", "--sae", sae_s, "--model", model_s, "--text-file", "/nonexistent.txt", "--context", "16"]);
    assert!(!ok && out.contains("/nonexistent.txt"), "{out}");
}
