//! `knowlens sae ...`: inspect an SAE, encode a prompt's activations, convert to SAELens,
//! evaluate it on text, build latent dashboards (training and its benchmark live in `sae_train`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use knowlens::sae::eval::{self, EvalConfig};
use knowlens::sae::{dashboard, Architecture, DashboardConfig, LatentSelection};
use knowlens::{HookPoint, HookSpec, Model, Sae};
use serde_json::json;

use super::inspect::top_k;
use super::ModelArgs;

#[derive(Subcommand)]
pub enum SaeCommand {
    /// Format, architecture, widths, hook and model of an SAE.
    Info(InfoArgs),
    /// Run the model on a prompt, capture the SAE's hook and print the top latents per token.
    Encode(EncodeArgs),
    /// Save an SAE (any format knowlens reads) as a SAELens directory.
    Convert(ConvertArgs),
    /// Train SAEs (one per hook) on the model's activations over a text.
    Train(super::sae_train::TrainArgs),
    /// Run the model once over a corpus and store the hooks' activations on disk (float16
    /// shards, resumable) for `sae train --store`.
    Cache(super::sae_train::CacheArgs),
    /// An activation store's index and per-dimension statistics (optionally an SAE's error per
    /// dimension).
    StoreInfo(super::sae_train::StoreInfoArgs),
    /// Time SAE training steps on random activations (JSON, as tools/bench_sae_torch.py).
    Bench(super::sae_train::BenchArgs),
    /// Evaluate an SAE on a text file: L0, explained variance, CE loss recovered, KL score, ...
    Eval(EvalArgs),
    /// Per-latent dashboards (top contexts, activation density, logit effects) as one HTML file.
    Dashboard(DashboardArgs),
}

/// The held-out text: the held-out split of a `knowlens corpus`, or a UTF-8 file, cut into
/// BOS-led sequences of the model's tokens.
#[derive(Args)]
pub struct TextArgs {
    /// A token corpus written by `knowlens corpus` (directory or index.json): its held-out split,
    /// which training never reads.
    #[arg(long, conflicts_with = "text_file", required_unless_present = "text_file")]
    corpus: Option<PathBuf>,
    /// A plain UTF-8 text file.
    #[arg(long)]
    text_file: Option<PathBuf>,
    /// Use about this many tokens (rounded up to whole sequences); default: the whole file.
    #[arg(long)]
    tokens: Option<usize>,
    /// Tokens per sequence, BOS included [default: 128, or the model's context if shorter].
    #[arg(long)]
    context: Option<usize>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
}

impl TextArgs {
    fn sequences(&self, m: &Model) -> Result<Vec<Vec<u32>>> {
        let context = self.context.unwrap_or(128.min(m.cfg().context_length));
        if context < 2 {
            bail!("--context {context}: must be at least 2 (BOS and one token)");
        }
        match (&self.corpus, &self.text_file) {
            (Some(dir), _) => {
                let corpus = knowlens::corpus::TokenCorpus::open_split(dir, knowlens::corpus::Split::Heldout)?;
                let n = self.tokens.map(|t| t.div_ceil(context)).unwrap_or(usize::MAX);
                let seqs: Vec<Vec<u32>> = corpus.chunks(context, None).take(n).collect();
                if seqs.is_empty() {
                    bail!("{}: the held-out split has no sequence of {context} tokens", dir.display());
                }
                Ok(seqs)
            }
            (None, Some(f)) => eval::text_file_sequences(m, f, context, self.tokens),
            (None, None) => bail!("give --corpus or --text-file"),
        }
    }
}

#[derive(Args)]
pub struct EvalArgs {
    /// One SAE, or several separated by commas (any hooks): they are evaluated together on the
    /// same tokens, sharing the clean forward pass and each hook's ablations.
    #[arg(long = "sae", value_delimiter = ',', required = true)]
    saes: Vec<PathBuf>,
    /// Read at this hook instead of the one the SAE names (one SAE only).
    #[arg(long)]
    hook: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    text: TextArgs,
    /// A latent firing on more than this fraction of tokens counts as dense.
    #[arg(long, default_value_t = eval::DEFAULT_DENSE_THRESHOLD)]
    dense_threshold: f64,
    /// Skip the spliced forward passes (no CE loss / KL metrics; about 3x faster).
    #[arg(long)]
    no_downstream: bool,
    /// Positions unembedded at once: memory is about 3 × this × vocab floats.
    #[arg(long, default_value_t = 64)]
    logit_rows: usize,
    /// Run the zero (and mean) ablations on about this many tokens only, the first sequences
    /// (default: all). The ablated losses are large and stable, so a subset fixes CE loss
    /// recovered well; the delta LM loss and KL still use every token.
    #[arg(long)]
    ablation_tokens: Option<usize>,
    /// Run the spliced passes (CE loss, delta LM loss, KL) on about this many tokens only, the
    /// first sequences (default: all); reconstruction and sparsity use every token.
    #[arg(long)]
    downstream_tokens: Option<usize>,
    /// Also measure CE loss recovered against mean ablation (the hook's mean activation).
    #[arg(long)]
    mean_ablation: bool,
    /// Bootstrap resamples of sequences for the delta LM loss's 95% interval (0: none).
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Include every latent's firing frequency in the JSON output.
    #[arg(long)]
    per_latent: bool,
    /// Print JSON: one object for one SAE, an array for several.
    #[arg(long)]
    json: bool,
    /// Also write the results as a Markdown table (one row per SAE) to this file.
    #[arg(long)]
    table: Option<PathBuf>,
    /// Also write the results as a JSON array (one object per SAE) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    sae: SaeSource,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    text: TextArgs,
    /// Latents to show, e.g. 12,40,7.
    #[arg(long, value_delimiter = ',', conflicts_with = "top", required_unless_present = "top")]
    latents: Vec<usize>,
    /// Show the N latents that fire most often.
    #[arg(long)]
    top: Option<usize>,
    /// Top-activating contexts per latent.
    #[arg(long, default_value_t = 10)]
    examples: usize,
    /// Tokens shown on each side of a context's peak.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// List W_dec[j] · W_U as is, without folding the final norm's weight into W_U.
    #[arg(long)]
    no_fold_norm: bool,
    /// Output HTML file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct SaeSource {
    /// A Gemma Scope params.npz, a Gemma Scope 2 folder or a SAELens directory.
    #[arg(long = "sae")]
    path: PathBuf,
    /// Read at this hook instead of the one the SAE names (Gemma Scope npz files name none; the
    /// default comes from a layer_<L> in the path), e.g. blocks.12.hook_resid_post.
    #[arg(long)]
    hook: Option<String>,
}

impl SaeSource {
    fn load(&self) -> Result<Sae> {
        let hook = self.hook.as_deref().map(str::parse::<HookPoint>).transpose()?;
        Sae::load_with_hook(&self.path, hook)
    }
}

#[derive(Args)]
pub struct InfoArgs {
    /// The SAE (same as --sae elsewhere).
    path: PathBuf,
    #[arg(long)]
    hook: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    sae: SaeSource,
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    /// Latents shown per token (only active ones).
    #[arg(long, default_value_t = 5)]
    top: usize,
    #[arg(long)]
    parse_special: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    sae: SaeSource,
    /// Output directory (cfg.json, sae_weights.safetensors[, sparsity.safetensors]).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: SaeCommand) -> Result<()> {
    match cmd {
        SaeCommand::Info(a) => info(a),
        SaeCommand::Encode(a) => encode(a),
        SaeCommand::Train(a) => super::sae_train::train(a),
        SaeCommand::Bench(a) => super::sae_train::bench(a),
        SaeCommand::Cache(a) => super::sae_train::cache(a),
        SaeCommand::StoreInfo(a) => super::sae_train::store_info(a),
        SaeCommand::Convert(a) => {
            let sae = a.sae.load()?;
            sae.save_saelens(&a.out)?;
            println!("saved {} as SAELens to {}", sae.source.display(), a.out.display());
            Ok(())
        }
        SaeCommand::Eval(a) => run_eval(a),
        SaeCommand::Dashboard(a) => run_dashboard(a),
    }
}

fn run_eval(a: EvalArgs) -> Result<()> {
    if a.hook.is_some() && a.saes.len() > 1 {
        bail!("--hook applies to one SAE; {} were given", a.saes.len());
    }
    let hook = a.hook.as_deref().map(str::parse::<HookPoint>).transpose()?;
    let saes = a.saes.iter().map(|p| Sae::load_with_hook(p, hook)).collect::<Result<Vec<_>>>()?;
    let m = a.model.load()?;
    for sae in &saes {
        sae.check_model(&m)?;
    }
    let seqs = a.text.sequences(&m)?;
    let context = seqs.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let ablation_sequences = match a.ablation_tokens {
        Some(0) => bail!("--ablation-tokens 0: the ablations need at least one sequence"),
        Some(t) => Some(t.div_ceil(context)),
        None => None,
    };
    let downstream_sequences = match a.downstream_tokens {
        Some(0) => bail!("--downstream-tokens 0: use --no-downstream to skip the spliced passes"),
        Some(t) => Some(t.div_ceil(context)),
        None => None,
    };
    let cfg = EvalConfig {
        downstream_sequences,
        batch_size: a.text.batch,
        dense_threshold: a.dense_threshold,
        downstream: !a.no_downstream,
        logit_rows: a.logit_rows,
        ablation_sequences,
        mean_ablation: a.mean_ablation,
        bootstrap: a.bootstrap,
        seed: 0,
    };
    let refs: Vec<&Sae> = saes.iter().collect();
    let mut results = eval::evaluate_many(&m, &refs, &seqs, &cfg)?;
    if !a.per_latent {
        results.iter_mut().for_each(|r| r.latent_frequency.clear());
    }
    if let Some(path) = &a.table {
        knowlens::fsio::write_atomic(path, eval::markdown_table(&results).as_bytes())?;
    }
    if let Some(path) = &a.out {
        knowlens::fsio::write_atomic(path, serde_json::to_string_pretty(&results)?.as_bytes())?;
    }
    if a.json {
        match results.as_slice() {
            [one] => println!("{}", serde_json::to_string(one)?),
            many => println!("{}", serde_json::to_string(many)?),
        }
        return Ok(());
    }
    if results.len() > 1 {
        print!("{}", eval::markdown_table(&results));
        return Ok(());
    }
    let r = &results[0];
    let opt = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "undefined".into());
    println!("{} at {} (d_in {}, d_sae {})", r.sae, r.hook, r.d_in, r.d_sae);
    println!(
        "{} sequences, {} tokens ({} counted: no BOS/EOS/padding), {:.1} s ({:.2} s per 1k tokens)",
        r.n_sequences,
        r.n_tokens,
        r.n_counted_tokens,
        r.seconds,
        1000.0 * r.seconds / r.n_tokens.max(1) as f64
    );
    let mut rows: Vec<(&str, String)> = vec![
        ("L0", format!("{:.2}", r.l0)),
        ("L1", format!("{:.4}", r.l1)),
        ("MSE (per element)", format!("{:.6}", r.mse)),
        ("explained variance", format!("{:.4}", r.explained_variance)),
        ("FVU", format!("{:.4}", r.fvu)),
        ("cosine(x, x_hat)", format!("{:.4}", r.cossim)),
        ("l2 in / out", format!("{:.3} / {:.3}", r.l2_norm_in, r.l2_norm_out)),
        ("l2 ratio", format!("{:.4}", r.l2_ratio)),
        ("rel. reconstruction bias", opt(r.relative_reconstruction_bias)),
        ("dead latents", format!("{} ({:.2}%)", r.n_dead, 100.0 * r.dead_fraction)),
        (
            "dense latents",
            format!(
                "{} ({:.2}%, firing on > {}% of tokens)",
                r.n_dense,
                100.0 * r.dense_fraction,
                100.0 * r.dense_threshold
            ),
        ),
    ];
    if let Some(d) = &r.downstream {
        let ci = d.delta_lm_loss_ci95.map(|[lo, hi]| format!(" [{lo:.4}, {hi:.4}]")).unwrap_or_default();
        rows.extend([
            ("CE loss clean", format!("{:.4}", d.ce_loss_clean)),
            ("CE loss with SAE", format!("{:.4}", d.ce_loss_sae)),
            ("CE loss zero-ablated", format!("{:.4}", d.ce_loss_zero)),
            ("CE loss recovered", opt(d.ce_loss_recovered)),
            ("delta LM loss", format!("{:.4}{ci}", d.delta_lm_loss)),
            ("KL with SAE / ablated", format!("{:.4} / {:.4}", d.kl_div_sae, d.kl_div_zero)),
            ("KL score", opt(d.kl_div_score)),
        ]);
        if let Some(ce) = d.ce_loss_mean_ablation {
            rows.push(("CE loss mean-ablated", format!("{ce:.4}")));
            rows.push(("CE recovered (mean abl.)", opt(d.ce_loss_recovered_mean_ablation)));
        }
        if d.n_ablation_loss_tokens != d.n_loss_tokens {
            rows.push(("ablation loss tokens", format!("{} of {}", d.n_ablation_loss_tokens, d.n_loss_tokens)));
        }
    }
    for (k, v) in rows {
        println!("  {k:<26} {v}");
    }
    Ok(())
}

fn run_dashboard(a: DashboardArgs) -> Result<()> {
    let sae = a.sae.load()?;
    let m = a.model.load()?;
    sae.check_model(&m)?;
    let selection = match a.top {
        Some(0) => bail!("--top must be at least 1"),
        Some(n) => LatentSelection::MostFrequent(n),
        None => LatentSelection::List(a.latents.clone()),
    };
    let seqs = a.text.sequences(&m)?;
    let cfg = DashboardConfig {
        batch_size: a.text.batch,
        n_examples: a.examples,
        window: a.window,
        fold_final_norm: !a.no_fold_norm,
        ..DashboardConfig::default()
    };
    let d = dashboard::collect(&m, &sae, &seqs, &selection, &cfg)?;
    dashboard::write_html(&d, &a.out)?;
    println!("{} latents over {} tokens -> {}", d.latents.len(), d.n_tokens, a.out.display());
    Ok(())
}

fn info(a: InfoArgs) -> Result<()> {
    let sae = SaeSource { path: a.path, hook: a.hook }.load()?;
    let arch = match sae.arch() {
        Architecture::Standard => json!({ "name": "standard" }),
        Architecture::JumpRelu { .. } => json!({ "name": "jumprelu" }),
        Architecture::TopK { k, rescale_acts_by_decoder_norm } => {
            json!({ "name": "topk", "k": k, "rescale_acts_by_decoder_norm": rescale_acts_by_decoder_norm })
        }
    };
    let out = json!({
        "path": sae.source,
        "format": sae.format.to_string(),
        "architecture": arch,
        "d_in": sae.d_in(),
        "d_sae": sae.d_sae(),
        "apply_b_dec_to_input": sae.apply_b_dec_to_input(),
        "hook": sae.hook.to_string(),
        "model": sae.model_name,
        "sparsity": sae.sparsity.is_some(),
    });
    if a.json {
        println!("{out}");
    } else {
        let arch = match sae.arch() {
            Architecture::TopK { k, rescale_acts_by_decoder_norm: r } => {
                format!("topk (k={k}, rescale_acts_by_decoder_norm={r})")
            }
            other => other.name().to_string(),
        };
        let model = sae.model_name.as_deref().unwrap_or("(not recorded)");
        let sparsity = if sae.sparsity.is_some() { "yes" } else { "no" };
        for (k, v) in [
            ("path", sae.source.display().to_string()),
            ("format", sae.format.to_string()),
            ("architecture", arch),
            ("d_in", sae.d_in().to_string()),
            ("d_sae", sae.d_sae().to_string()),
            ("b_dec on input", sae.apply_b_dec_to_input().to_string()),
            ("hook", sae.hook.to_string()),
            ("model", model.to_string()),
            ("sparsity", sparsity.to_string()),
        ] {
            println!("{k:<15} {v}");
        }
    }
    Ok(())
}

fn encode(a: EncodeArgs) -> Result<()> {
    let sae = a.sae.load()?;
    let m = a.model.load()?;
    sae.check_model(&m)?;
    let batch = m.batch(&[a.prompt.as_str()], a.parse_special)?;
    let out = m.run(&batch, &HookSpec::new().capture([sae.hook]))?;
    // [s, d] (hook_z: [s, head, d_head], flattened as SAELens does for hook_z SAEs).
    let acts = out.cache.row(sae.hook, 0)?;
    let s = acts.dim(0)?;
    let latents = sae.encode(&acts.reshape((s, ()))?)?.to_vec2::<f32>()?;
    let ids = &batch.ids[0][batch.pad[0]..];
    let rows: Vec<_> = latents
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(pos, (row, &id))| {
            let top: Vec<(u32, f32)> = top_k(row, a.top).into_iter().filter(|&(_, v)| v > 0.0).collect();
            let active = row.iter().filter(|&&v| v > 0.0).count();
            (pos, id, m.tokenizer.token(id), active, top)
        })
        .collect();
    if a.json {
        let tokens: Vec<_> = rows
            .iter()
            .map(|(pos, id, tok, active, top)| {
                let top: Vec<_> = top.iter().map(|&(l, v)| json!({ "latent": l, "act": v })).collect();
                json!({ "pos": pos, "id": id, "token": tok, "active": active, "top": top })
            })
            .collect();
        println!("{}", json!({ "sae": sae.source, "hook": sae.hook.to_string(), "tokens": tokens }));
    } else {
        println!("{} at {} ({} latents)", sae.source.display(), sae.hook, sae.d_sae());
        for (pos, _, tok, active, top) in &rows {
            let top: Vec<String> = top.iter().map(|(l, v)| format!("{l}:{v:.3}")).collect();
            println!("{pos:>4}  {tok:<16?} L0 {active:>4}  {}", top.join("  "));
        }
    }
    Ok(())
}
