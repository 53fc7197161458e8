//! SAE training: hand-written gradients against finite differences and a dense reference,
//! unit-norm decoder rows, learning a planted dictionary, bit-identical resume after SIGKILL
//! (through the CLI, on a tiny model), and SAELens round trips of trained SAEs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use knowlens::rng::SplitMix64;
use knowlens::sae::train::{ArchConfig, Backward, Params, TrainConfig, Trainer};
use knowlens::{HookPoint, Sae};

fn randn(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = SplitMix64(seed);
    (0..n).map(|_| r.normal() as f32 * scale).collect()
}

fn topk_cfg(d: usize, m: usize, k: usize) -> TrainConfig {
    let mut c = TrainConfig::new(d, m, ArchConfig::TopK { k }, 100);
    c.normalize = false;
    c
}

/// A trainer at a generic point: random biases (and thresholds), inputs not rescaled.
fn trainer_at(mut cfg: TrainConfig, seed: u64) -> Trainer {
    cfg.seed = seed;
    cfg.normalize = false;
    let mut t = Trainer::new(cfg).unwrap();
    let (d, m) = (t.cfg.d_in, t.cfg.width);
    t.params.b_dec = randn(d, seed + 1, 0.3);
    t.params.b_enc = randn(m, seed + 2, 0.2);
    // Encoder and decoder apart from each other, as after some training.
    let noise = randn(m * d, seed + 3, 0.2);
    t.params.w_enc_t.iter_mut().zip(&noise).for_each(|(w, n)| *w += n);
    if !t.params.threshold.is_empty() {
        t.params.threshold = randn(m, seed + 4, 0.3).into_iter().map(|v| v.abs() + 0.05).collect();
        t.params.threshold[0] = -0.1; // relu(t) = 0: a plain ReLU latent, no threshold gradient
    }
    t.initialized = true;
    t
}

/// The loss in float64, computed naively from the definition. `e0` is the (detached) residual
/// x − x̂ at the base point for AuxK; `dead` marks dead latents.
struct Ref<'a> {
    arch: &'a ArchConfig,
    x: &'a [f32],
    n: usize,
    d: usize,
    m: usize,
    dead: Vec<bool>,
    k_aux: usize,
    aux_coef: f64,
}

impl Ref<'_> {
    fn pre(&self, p: &Params) -> Vec<f64> {
        let (n, d, m) = (self.n, self.d, self.m);
        let mut pre = vec![0f64; n * m];
        for r in 0..n {
            for j in 0..m {
                let mut s = p.b_enc[j] as f64;
                for i in 0..d {
                    s += (self.x[r * d + i] as f64 - p.b_dec[i] as f64) * p.w_enc_t[j * d + i] as f64;
                }
                pre[r * m + j] = s;
            }
        }
        pre
    }

    /// Latents f [n, m].
    fn acts(&self, p: &Params, pre: &[f64]) -> Vec<f64> {
        let (n, m) = (self.n, self.m);
        let mut f = vec![0f64; n * m];
        match self.arch {
            ArchConfig::TopK { k } => {
                for r in 0..n {
                    let mut idx: Vec<usize> = (0..m).collect();
                    idx.sort_by(|&a, &b| pre[r * m + b].total_cmp(&pre[r * m + a]));
                    for &j in &idx[..*k] {
                        f[r * m + j] = pre[r * m + j].max(0.0);
                    }
                }
            }
            ArchConfig::BatchTopK { k, .. } => {
                let mut idx: Vec<usize> = (0..n * m).filter(|&e| pre[e] > 0.0).collect();
                idx.sort_by(|&a, &b| pre[b].total_cmp(&pre[a]));
                for &e in idx.iter().take(k * n) {
                    f[e] = pre[e];
                }
            }
            ArchConfig::Standard { .. } => f.iter_mut().zip(pre).for_each(|(f, &v)| *f = v.max(0.0)),
            ArchConfig::JumpRelu { .. } => {
                for e in 0..n * m {
                    let th = (p.threshold[e % m] as f64).max(0.0);
                    f[e] = if pre[e] > th { pre[e] } else { 0.0 };
                }
            }
        }
        f
    }

    fn recon(&self, p: &Params, f: &[f64]) -> Vec<f64> {
        let (n, d, m) = (self.n, self.d, self.m);
        let mut xh = vec![0f64; n * d];
        for r in 0..n {
            for i in 0..d {
                let mut s = p.b_dec[i] as f64;
                for j in 0..m {
                    s += f[r * m + j] * p.w_dec[j * d + i] as f64;
                }
                xh[r * d + i] = s;
            }
        }
        xh
    }

    /// The loss whose gradient the trainer computes (L0 terms have no gradient here).
    fn loss(&self, p: &Params, coef: f64, e0: &[f64]) -> f64 {
        let (n, d, m) = (self.n, self.d, self.m);
        let pre = self.pre(p);
        let f = self.acts(p, &pre);
        let xh = self.recon(p, &f);
        let mut loss = (0..n * d).map(|e| (xh[e] - self.x[e] as f64).powi(2)).sum::<f64>() / n as f64;
        if let ArchConfig::Standard { .. } = self.arch {
            loss += coef * f.iter().sum::<f64>() / n as f64;
        }
        if self.dead.iter().any(|&x| x) {
            let dead: Vec<usize> = (0..m).filter(|&j| self.dead[j]).collect();
            for r in 0..n {
                let mut idx = dead.clone();
                idx.sort_by(|&a, &b| pre[r * m + b].total_cmp(&pre[r * m + a]));
                let mut eh = vec![0f64; d];
                for &j in idx.iter().take(self.k_aux) {
                    for (i, e) in eh.iter_mut().enumerate() {
                        *e += pre[r * m + j] * p.w_dec[j * d + i] as f64;
                    }
                }
                loss += self.aux_coef * (0..d).map(|i| (eh[i] - e0[r * d + i]).powi(2)).sum::<f64>() / n as f64;
            }
        }
        loss
    }
}

/// Compares the trainer's gradients with central differences of the float64 loss.
fn check_gradients(cfg: TrainConfig, n: usize, seed: u64, dead: usize) {
    let (d, m) = (cfg.d_in, cfg.width);
    let mut t = trainer_at(cfg, seed);
    let x = randn(n * d, seed + 10, 1.0);
    for j in 0..dead {
        t.since_fired[m - 1 - 2 * j] = t.cfg.dead_tokens;
    }
    let (g, _) = t.gradients(&x).unwrap();
    let coef = match t.cfg.arch {
        ArchConfig::Standard { l1_coefficient, .. } => l1_coefficient as f64,
        _ => 0.0,
    };
    let dead_mask: Vec<bool> = t.since_fired.iter().map(|&s| s >= t.cfg.dead_tokens).collect();
    let n_dead = dead_mask.iter().filter(|&&b| b).count();
    let k_aux = t.cfg.k_aux().min(n_dead);
    let aux_coef = if t.cfg.arch.has_aux() && n_dead > 0 {
        t.cfg.aux_coefficient as f64 * (n_dead as f64 / t.cfg.k_aux() as f64).min(1.0)
    } else {
        0.0
    };
    let r = Ref {
        arch: &t.cfg.arch,
        x: &x,
        n,
        d,
        m,
        dead: if aux_coef > 0.0 { dead_mask } else { vec![false; m] },
        k_aux,
        aux_coef,
    };
    let p0 = t.params.clone();
    let f0 = r.acts(&p0, &r.pre(&p0));
    let xh0 = r.recon(&p0, &f0);
    let e0: Vec<f64> = (0..n * d).map(|e| x[e] as f64 - xh0[e]).collect();
    let h = 1e-3f32;
    let mut worst = 0f64;
    let mut checked = 0;
    let fields: [(&str, &[f32]); 4] =
        [("w_enc_t", &g.w_enc_t), ("w_dec", &g.w_dec), ("b_enc", &g.b_enc), ("b_dec", &g.b_dec)];
    for (name, grad) in fields {
        for idx in (0..grad.len()).step_by(3) {
            let bump = |p: &mut Params, delta: f32| {
                let v = match name {
                    "w_enc_t" => &mut p.w_enc_t,
                    "w_dec" => &mut p.w_dec,
                    "b_enc" => &mut p.b_enc,
                    _ => &mut p.b_dec,
                };
                v[idx] += delta;
            };
            let (mut pp, mut pm) = (p0.clone(), p0.clone());
            bump(&mut pp, h);
            bump(&mut pm, -h);
            let fd = (r.loss(&pp, coef, &e0) - r.loss(&pm, coef, &e0)) / (2.0 * h as f64);
            let err = (grad[idx] as f64 - fd).abs() / (1e-2 + fd.abs());
            worst = worst.max(err);
            checked += 1;
            assert!(
                err < 2e-2,
                "{} {name}[{idx}]: analytic {} vs finite difference {fd}",
                t.cfg.arch.name(),
                grad[idx]
            );
        }
    }
    println!(
        "{} ({:?}, {n_dead} dead): {checked} partials, worst relative error {worst:.1e}",
        t.cfg.arch.name(),
        t.cfg.backward
    );

    if let ArchConfig::JumpRelu { l0_coefficient, bandwidth, .. } = t.cfg.arch {
        // The threshold's straight-through gradient, from SAELens's formula.
        let pre = r.pre(&p0);
        let mut want = vec![0f64; m];
        for rr in 0..n {
            for j in 0..m {
                let th = (p0.threshold[j] as f64).max(0.0);
                if p0.threshold[j] <= 0.0 || (pre[rr * m + j] - th).abs() >= bandwidth as f64 / 2.0 {
                    continue;
                }
                let df: f64 = (0..d)
                    .map(|i| 2.0 / n as f64 * (xh0[rr * d + i] - x[rr * d + i] as f64) * p0.w_dec[j * d + i] as f64)
                    .sum();
                want[j] += -(th / bandwidth as f64) * df - l0_coefficient as f64 / (n as f64 * bandwidth as f64);
            }
        }
        let near = want.iter().filter(|v| **v != 0.0).count();
        assert!(near > 0, "no latent near its threshold: the check would be empty");
        for (j, (&got, &w)) in g.threshold.iter().zip(&want).enumerate() {
            assert!((got as f64 - w).abs() <= 1e-3 * (1.0 + w.abs()), "threshold[{j}]: {got} vs {w}");
        }
    }
}

#[test]
fn gradients_match_finite_differences_topk_with_auxk() {
    let mut c = topk_cfg(8, 24, 3);
    c.aux_k = 4;
    check_gradients(c.clone(), 10, 1, 0);
    check_gradients(c, 10, 2, 6);
}

#[test]
fn gradients_match_finite_differences_batchtopk_with_auxk() {
    let mut c = TrainConfig::new(8, 24, ArchConfig::BatchTopK { k: 3, threshold_lr: 0.01 }, 100);
    c.aux_k = 4;
    check_gradients(c.clone(), 10, 3, 0);
    check_gradients(c, 10, 4, 3);
}

#[test]
fn gradients_match_finite_differences_relu_l1_sparse_and_dense() {
    for backward in [Backward::Sparse, Backward::Dense] {
        let mut c = TrainConfig::new(8, 24, ArchConfig::Standard { l1_coefficient: 0.7, l1_warm_up_steps: 0 }, 100);
        c.backward = backward;
        check_gradients(c, 10, 5, 0);
    }
}

#[test]
fn gradients_match_finite_differences_jumprelu_sparse_and_dense() {
    for backward in [Backward::Sparse, Backward::Dense] {
        let arch =
            ArchConfig::JumpRelu { l0_coefficient: 0.5, l0_warm_up_steps: 0, bandwidth: 0.4, init_threshold: 0.1 };
        let mut c = TrainConfig::new(8, 24, arch, 100);
        c.backward = backward;
        check_gradients(c, 10, 6, 0);
    }
}

/// The TopK gradients from the sparse kernels against dense float32 matrix products (candle).
#[test]
fn topk_sparse_backward_equals_dense_reference() {
    let (n, d, m, k) = (96, 48, 1024, 12);
    let mut t = trainer_at(topk_cfg(d, m, k), 11);
    let x = randn(n * d, 12, 1.0);
    let (g, _) = t.gradients(&x).unwrap();
    let dev = Device::Cpu;
    let p = &t.params;
    let tx = Tensor::from_vec(x.clone(), (n, d), &dev).unwrap();
    let we = Tensor::from_vec(p.w_enc_t.clone(), (m, d), &dev).unwrap();
    let wd = Tensor::from_vec(p.w_dec.clone(), (m, d), &dev).unwrap();
    let be = Tensor::from_vec(p.b_enc.clone(), m, &dev).unwrap();
    let bd = Tensor::from_vec(p.b_dec.clone(), d, &dev).unwrap();
    let xc = tx.broadcast_sub(&bd).unwrap();
    let pre = xc.matmul(&we.t().unwrap()).unwrap().broadcast_add(&be).unwrap();
    // Dense TopK + ReLU mask.
    let pv = pre.to_vec2::<f32>().unwrap();
    let mut mask = vec![0f32; n * m];
    for r in 0..n {
        let mut idx: Vec<usize> = (0..m).collect();
        idx.sort_by(|&a, &b| pv[r][b].total_cmp(&pv[r][a]));
        for &j in &idx[..k] {
            if pv[r][j] > 0.0 {
                mask[r * m + j] = 1.0;
            }
        }
    }
    let mask = Tensor::from_vec(mask, (n, m), &dev).unwrap();
    let f = (&pre * &mask).unwrap();
    let xh = f.matmul(&wd).unwrap().broadcast_add(&bd).unwrap();
    let gout = ((xh - &tx).unwrap() * (2.0 / n as f64)).unwrap();
    let dpre = (gout.matmul(&wd.t().unwrap()).unwrap() * &mask).unwrap();
    let want = [
        ("w_dec", f.t().unwrap().matmul(&gout).unwrap()),
        ("w_enc_t", dpre.t().unwrap().matmul(&xc).unwrap()),
        ("b_enc", dpre.sum(0).unwrap()),
        (
            "b_dec",
            (gout.sum(0).unwrap()
                - dpre.sum(0).unwrap().unsqueeze(0).unwrap().matmul(&we).unwrap().squeeze(0).unwrap())
            .unwrap(),
        ),
    ];
    for (name, w) in want {
        let got = match name {
            "w_dec" => &g.w_dec,
            "w_enc_t" => &g.w_enc_t,
            "b_enc" => &g.b_enc,
            _ => &g.b_dec,
        };
        let got = Tensor::from_vec(got.clone(), w.dims(), &dev).unwrap();
        let err = common::rel_err(&got, &w);
        println!("{name}: relative error {err:.1e}");
        assert!(err < 1e-5, "{name}: {err}");
    }
}

/// Rows of a planted dictionary, and batches made of a few of them each.
fn planted(d: usize, atoms: usize, active: usize, n: usize, seed: u64) -> (Vec<f32>, impl FnMut() -> Vec<f32>) {
    let mut dict = randn(atoms * d, seed, 1.0);
    for row in dict.chunks_mut(d) {
        let nrm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= nrm);
    }
    let dict2 = dict.clone();
    let mut rng = SplitMix64(seed + 100);
    let gen = move || {
        let mut x = vec![0f32; n * d];
        for r in 0..n {
            for _ in 0..active {
                let a = rng.below(atoms as u64) as usize;
                let c = 0.5 + rng.next_f64() as f32;
                for i in 0..d {
                    x[r * d + i] += c * dict2[a * d + i];
                }
            }
        }
        x
    };
    (dict, gen)
}

#[test]
fn learns_a_planted_dictionary_and_keeps_decoder_rows_unit_norm() {
    let (d, atoms, active, n) = (32, 48, 3, 256);
    for arch in [
        ArchConfig::TopK { k: 3 },
        ArchConfig::BatchTopK { k: 3, threshold_lr: 0.01 },
        ArchConfig::JumpRelu { l0_coefficient: 0.02, l0_warm_up_steps: 50, bandwidth: 0.1, init_threshold: 0.1 },
        ArchConfig::Standard { l1_coefficient: 0.1, l1_warm_up_steps: 50 },
    ] {
        let steps = 400;
        let mut c = TrainConfig::new(d, 96, arch.clone(), steps);
        c.lr = 3e-3;
        c.dead_tokens = 20 * n as u64;
        c.b_dec_init = knowlens::sae::train::BDecInit::Mean;
        let mut t = Trainer::new(c).unwrap();
        let (_, mut gen) = planted(d, atoms, active, n, 21);
        let first = t.step(&gen()).unwrap();
        let mut last = first.clone();
        for _ in 1..steps {
            last = t.step(&gen()).unwrap();
        }
        println!(
            "{}: loss {:.4} -> {:.4}, FVU {:.3} -> {:.3}, L0 {:.1}",
            arch.name(),
            first.loss,
            last.loss,
            first.fvu,
            last.fvu,
            last.l0
        );
        assert!(last.loss < 0.5 * first.loss, "{}: loss did not fall", arch.name());
        if matches!(arch, ArchConfig::TopK { .. } | ArchConfig::BatchTopK { .. }) {
            assert!(last.fvu < 0.1, "{}: FVU {}", arch.name(), last.fvu);
        }
        for row in t.params.w_dec.chunks(d) {
            let nrm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((nrm - 1.0).abs() < 1e-5, "decoder row norm {nrm}");
        }
    }
}

#[test]
fn trained_saes_save_as_saelens_and_reload_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (d, n) = (16, 64);
    for arch in [
        ArchConfig::TopK { k: 4 },
        ArchConfig::BatchTopK { k: 4, threshold_lr: 0.5 },
        ArchConfig::JumpRelu { l0_coefficient: 0.1, l0_warm_up_steps: 0, bandwidth: 0.1, init_threshold: 0.05 },
        ArchConfig::Standard { l1_coefficient: 0.1, l1_warm_up_steps: 0 },
    ] {
        let mut t = Trainer::new(TrainConfig::new(d, 40, arch.clone(), 20)).unwrap();
        // Raw inputs far from unit scale, so the folded input scale matters.
        let x: Vec<f32> = randn(n * d, 5, 7.0).iter().map(|v| v + 3.0).collect();
        for _ in 0..20 {
            t.step(&x).unwrap();
        }
        assert!(t.scale != 1.0);
        let (_, stats) = t.gradients(&x).unwrap();
        let hook = HookPoint::ResidPost(3);
        let sae = t.params.to_sae(&t.cfg.arch, t.topk_threshold, t.scale, hook).unwrap();
        let out = dir.path().join(arch.name());
        sae.save_saelens(&out).unwrap();
        let back = Sae::load(&out).unwrap();
        let want_arch = if matches!(arch, ArchConfig::BatchTopK { .. }) { "jumprelu" } else { arch.name() };
        assert_eq!(back.arch().name(), want_arch);
        let tx = Tensor::from_vec(x.clone(), (n, d), &Device::Cpu).unwrap();
        assert_eq!(common::max_abs_diff(&back.encode(&tx).unwrap(), &sae.encode(&tx).unwrap()), 0.0);
        // The saved SAE reconstructs raw inputs as the trainer did scaled ones.
        if !matches!(arch, ArchConfig::BatchTopK { .. }) {
            let e = (back.forward(&tx).unwrap() - &tx)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            let mean = tx.mean(0).unwrap();
            let var =
                tx.broadcast_sub(&mean).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
            assert!(
                (e / var - stats.fvu).abs() < 1e-3 * (1.0 + stats.fvu),
                "{}: FVU {} vs {}",
                arch.name(),
                e / var,
                stats.fvu
            );
        }
    }
}

/// Per-dimension input scaling, folded into the saved weights: the saved SAE on raw inputs
/// makes exactly the trainer's error in scaled units, where a huge dimension no longer owns the
/// loss.
#[test]
fn per_dimension_scaling_is_folded_into_a_plain_saelens_sae() {
    let dir = tempfile::tempdir().unwrap();
    let (d, n) = (16, 128);
    // Dimension 3 is ~1000 times larger than the others, as Gemma's dimension 163.
    let mut x: Vec<f32> = randn(n * d, 9, 1.0);
    for r in 0..n {
        x[r * d + 3] = 2000.0 + 900.0 * x[r * d + 3];
    }
    for arch in [ArchConfig::TopK { k: 4 }, ArchConfig::BatchTopK { k: 4, threshold_lr: 0.5 }] {
        let mut c = TrainConfig::new(d, 40, arch.clone(), 30);
        c.per_dim_scale = true;
        let mut t = Trainer::new(c).unwrap();
        for _ in 0..30 {
            t.step(&x).unwrap();
        }
        assert_eq!(t.dim_scale.len(), d);
        assert!(t.dim_scale[3] < 0.01 * t.dim_scale[0], "{:?}", t.dim_scale);
        let (_, stats) = t.gradients(&x).unwrap();
        let sae = t.params.to_sae_scaled(&t.cfg.arch, t.topk_threshold, &t.dim_scale, HookPoint::ResidPost(3)).unwrap();
        let out = dir.path().join(arch.name());
        sae.save_saelens(&out).unwrap();
        let back = Sae::load(&out).unwrap();
        if matches!(arch, ArchConfig::BatchTopK { .. }) {
            continue; // saved as JumpReLU with the running threshold: not the batch rule
        }
        let tx = Tensor::from_vec(x.clone(), (n, d), &Device::Cpu).unwrap();
        let xh = back.forward(&tx).unwrap().to_vec2::<f32>().unwrap();
        let s = &t.dim_scale;
        let mut mean = vec![0f64; d];
        for r in 0..n {
            for i in 0..d {
                mean[i] += x[r * d + i] as f64 / n as f64;
            }
        }
        let (mut err, mut var) = (0f64, 0f64);
        for r in 0..n {
            for i in 0..d {
                let si = s[i] as f64;
                err += (si * (xh[r][i] - x[r * d + i]) as f64).powi(2);
                var += (si * (x[r * d + i] as f64 - mean[i])).powi(2);
            }
        }
        assert!((err / var - stats.fvu).abs() < 1e-3 * (1.0 + stats.fvu), "FVU {} vs {}", err / var, stats.fvu);
    }
}

// ---- the CLI, on the tiny Gemma 3 fixture: SIGKILL and resume give identical SAEs ----

fn knowlens() -> Command {
    Command::new(env!("CARGO_BIN_EXE_knowlens"))
}

/// A text of the tiny tokenizer's words ("w4" … "w95").
fn tiny_text(path: &Path) {
    let mut r = SplitMix64(3);
    let words: Vec<String> = (0..6000)
        .map(|i| {
            let w = format!("w{}", 4 + r.below(92));
            if i % 17 == 16 {
                format!("{w}\n")
            } else {
                w
            }
        })
        .collect();
    std::fs::write(path, words.join(" ")).unwrap();
}

fn train_args(arch: &str, text: &Path, out: &Path) -> Vec<String> {
    let model = common::fixture("tiny/gemma3");
    [
        "sae",
        "train",
        "--model",
        model.to_str().unwrap(),
        "--hooks",
        "blocks.1.hook_resid_post,blocks.3.hook_resid_post",
        "--arch",
        arch,
        "--k",
        "4",
        "--width",
        "64",
        "--tokens",
        "2560",
        "--batch-size",
        "64",
        "--context-size",
        "16",
        "--buffer-batches",
        "3",
        "--model-batch",
        "4",
        "--dead-tokens",
        "300",
        "--checkpoint-every",
        "4",
        "--log-every",
        "1",
        "--seed",
        "7",
        "--lr",
        "1e-3",
        "--text-file",
        text.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn log_without_times(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("elapsed_s");
            v
        })
        .collect()
}

/// Starts a run and SIGKILLs it once a checkpoint newer than `after` exists (plus `delay`).
fn run_and_kill(args: &[String], out: &Path, after: u64, delay: Duration) -> u64 {
    let mut child = knowlens().args(args).args(["--throttle-ms", "25"]).stdout(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    let step = loop {
        if let Ok(s) = std::fs::read_to_string(out.join("checkpoint.json")) {
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            let step = v["step"].as_u64().unwrap();
            if step > after {
                break step;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    };
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    step
}

#[test]
fn sigkill_and_resume_give_bit_identical_saes() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    tiny_text(&text);
    for arch in ["batchtopk", "jumprelu"] {
        let whole = dir.path().join(format!("{arch}-whole"));
        let cut = dir.path().join(format!("{arch}-cut"));
        let st = knowlens().args(train_args(arch, &text, &whole)).stdout(Stdio::null()).status().unwrap();
        assert!(st.success());
        let args = train_args(arch, &text, &cut);
        // Killed right after the first checkpoint, then again in the middle of later steps.
        let first = run_and_kill(&args, &cut, 0, Duration::ZERO);
        let second = run_and_kill(&args, &cut, first, Duration::from_millis(60));
        let st = knowlens().args(&args).stdout(Stdio::null()).status().unwrap();
        assert!(st.success());
        println!("{arch}: killed after checkpoints at steps {first} and {second}, resumed to the end");
        for hook in ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"] {
            for file in ["sae_weights.safetensors", "cfg.json"] {
                let a = std::fs::read(whole.join(hook).join(file)).unwrap();
                let b = std::fs::read(cut.join(hook).join(file)).unwrap();
                assert!(a == b, "{arch} {hook}/{file} differs after resuming");
            }
        }
        assert_eq!(log_without_times(&whole), log_without_times(&cut));
        assert!(!cut.join("checkpoint.json").exists(), "checkpoints are removed after a finished run");
        // A finished run is not retrained.
        let again = knowlens().args(&args).output().unwrap();
        assert!(again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already holds"));
        let sae = Sae::load(&cut.join("blocks.3.hook_resid_post")).unwrap();
        assert_eq!(sae.extra_metadata["context_size"], serde_json::json!(16));
        assert_eq!(sae.model_name.as_deref(), Some(common::fixture("tiny/gemma3").to_str().unwrap()));
    }
}

/// The same, training from an activation store on disk (`sae cache`, then `sae train --store`
/// for three epochs): killed twice, resumed, identical to an uninterrupted run; and a store run
/// never runs the model.
#[test]
fn sigkill_and_resume_from_an_activation_store_give_bit_identical_saes() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    tiny_text(&text);
    let model = common::fixture("tiny/gemma3");
    let store = dir.path().join("store");
    let st = knowlens()
        .args(["sae", "cache", "--model", model.to_str().unwrap()])
        .args(["--hooks", "blocks.1.hook_resid_post,blocks.3.hook_resid_post", "--text-file", text.to_str().unwrap()])
        .args(["--context-size", "16", "--shard-sequences", "32", "--no-progress", "--out", store.to_str().unwrap()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let args = |out: &Path| -> Vec<String> {
        let mut a = train_args("batchtopk", &text, out);
        let at = a.iter().position(|s| s == "--text-file").unwrap();
        a[at] = "--store".into();
        a[at + 1] = store.to_str().unwrap().into();
        let at = a.iter().position(|s| s == "--tokens").unwrap();
        a[at] = "--epochs".into();
        a[at + 1] = "3".into();
        a
    };
    let whole = dir.path().join("whole");
    let out = knowlens().args(args(&whole)).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 400 sequences of 16 tokens give 6,000 rows: 93 batches of 64 per epoch.
    assert_eq!(summary["steps"], serde_json::json!(279));
    assert_eq!(summary["model_tokens_per_s"], serde_json::json!(0.0), "a store run never runs the model");
    let cut = dir.path().join("cut");
    let a = args(&cut);
    let first = run_and_kill(&a, &cut, 0, Duration::ZERO);
    let second = run_and_kill(&a, &cut, first, Duration::from_millis(60));
    let st = knowlens().args(&a).stdout(Stdio::null()).status().unwrap();
    assert!(st.success());
    println!("store run: killed after checkpoints at steps {first} and {second}, resumed to the end");
    for hook in ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"] {
        for file in ["sae_weights.safetensors", "cfg.json"] {
            let x = std::fs::read(whole.join(hook).join(file)).unwrap();
            let y = std::fs::read(cut.join(hook).join(file)).unwrap();
            assert!(x == y, "{hook}/{file} differs after resuming");
        }
    }
    let log = log_without_times(&cut);
    assert_eq!(log_without_times(&whole), log);
    // The log has tokens seen and the dense fraction for curves.
    let last = log.last().unwrap();
    assert_eq!(last["tokens"], serde_json::json!(279 * 64));
    assert!(last["dense_fraction"].as_f64().is_some());
    let sae = Sae::load(&cut.join("blocks.3.hook_resid_post")).unwrap();
    assert_eq!(sae.extra_metadata["context_size"], serde_json::json!(16));
    assert_eq!(sae.extra_metadata["prepend_bos"], serde_json::json!(true));
}
