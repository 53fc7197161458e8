//! `knowlens sae ...`: inspect an SAE, encode a prompt's activations, convert to SAELens
//! (training and its benchmark live in `sae_train`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use knowlens::sae::Architecture;
use knowlens::{HookPoint, HookSpec, Sae};
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
    /// Time SAE training steps on random activations (JSON, as tools/bench_sae_torch.py).
    Bench(super::sae_train::BenchArgs),
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
        SaeCommand::Convert(a) => {
            let sae = a.sae.load()?;
            sae.save_saelens(&a.out)?;
            println!("saved {} as SAELens to {}", sae.source.display(), a.out.display());
            Ok(())
        }
    }
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
            Architecture::TopK { k, rescale_acts_by_decoder_norm: r } => format!("topk (k={k}, rescale_acts_by_decoder_norm={r})"),
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
