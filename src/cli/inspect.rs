//! Single-prompt inspection commands: tokenize, logits, cache, generate.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use knowlens::model::generate::{generate as run_generate, GenerateOptions};
use knowlens::tokenizer::ChatMessage;
use knowlens::{HookPoint, HookSpec, LogitsAt};
use serde_json::json;

use super::ModelArgs;

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    text: String,
    /// Do not prepend BOS.
    #[arg(long)]
    no_bos: bool,
    /// Turn control-token text such as <start_of_turn> into its id.
    #[arg(long)]
    parse_special: bool,
    /// Also report the token positions covering this substring (e.g. the entity name).
    #[arg(long)]
    find: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let m = a.model.load()?;
    let ids = m.tokenizer.encode(&a.text, !a.no_bos, a.parse_special)?;
    let tokens: Vec<String> = ids.iter().map(|&i| m.tokenizer.token(i)).collect();
    let positions = match &a.find {
        Some(needle) => Some(m.tokenizer.span_positions(&a.text, needle, !a.no_bos, a.parse_special)?),
        None => None,
    };
    if a.json {
        let mut out = json!({ "ids": ids, "tokens": tokens });
        if let Some(p) = &positions {
            out["positions"] = json!(p);
        }
        println!("{out}");
    } else {
        for (k, (i, t)) in ids.iter().zip(&tokens).enumerate() {
            let mark = if positions.as_ref().is_some_and(|p| p.contains(&(k as i64))) { "  <" } else { "" };
            println!("{k:>4}  {i:>8}  {t:?}{mark}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[arg(long)]
    parse_special: bool,
    #[arg(long)]
    json: bool,
}

/// The `k` largest entries of `v` as (index, value), largest first.
pub fn top_k(v: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..v.len() as u32).collect();
    let k = k.min(v.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| v[b as usize].total_cmp(&v[a as usize]));
    idx.truncate(k);
    idx.sort_by(|&a, &b| v[b as usize].total_cmp(&v[a as usize]));
    idx.into_iter().map(|i| (i, v[i as usize])).collect()
}

pub fn logits(a: LogitsArgs) -> Result<()> {
    let m = a.model.load()?;
    let batch = m.batch(&[a.prompt.as_str()], a.parse_special)?;
    let out = m.run(&batch, &HookSpec::new().logits(LogitsAt::Last))?;
    let row = out.logits.expect("logits were requested").get(0)?.to_vec1::<f32>()?;
    let top = top_k(&row, a.top);
    if a.json {
        let top: Vec<_> =
            top.iter().map(|&(id, l)| json!({ "id": id, "token": m.tokenizer.token(id), "logit": l })).collect();
        println!("{}", json!({ "ids": batch.ids[0], "top": top }));
    } else {
        println!("{:>4}  {:>8}  {:>9}  token", "rank", "id", "logit");
        for (r, (id, l)) in top.iter().enumerate() {
            println!("{:>4}  {id:>8}  {l:>9.4}  {:?}", r + 1, m.tokenizer.decode(&[*id])?);
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct CacheArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    /// Comma-separated TransformerLens hook names, e.g. blocks.6.hook_resid_post,blocks.6.attn.hook_pattern
    #[arg(long, value_delimiter = ',', required = true)]
    hooks: Vec<String>,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    parse_special: bool,
    #[arg(long)]
    json: bool,
}

pub fn cache(a: CacheArgs) -> Result<()> {
    let hooks = a.hooks.iter().map(|h| h.trim().parse::<HookPoint>()).collect::<Result<Vec<_>>>()?;
    let m = a.model.load()?;
    for h in &hooks {
        h.check_layer(m.cfg().n_layers)?;
    }
    let batch = m.batch(&[a.prompt.as_str()], a.parse_special)?;
    let out = m.run(&batch, &HookSpec::new().capture(hooks))?;
    out.cache.save(&a.out)?;
    let tensors: Vec<_> =
        out.cache.tensors.iter().map(|(h, t)| json!({ "name": h.to_string(), "shape": t.dims() })).collect();
    if a.json {
        println!("{}", json!({ "out": a.out, "ids": batch.ids[0], "tensors": tensors }));
    } else {
        for t in &tensors {
            println!("{}  {}", t["name"].as_str().unwrap_or_default(), t["shape"]);
        }
        println!("saved to {}", a.out.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user turn with the model's chat template.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the generated text contains this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long)]
    parse_special: bool,
    #[arg(long)]
    json: bool,
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    if a.prompt.is_empty() {
        bail!("--prompt is empty");
    }
    let m = a.model.load()?;
    let ids = if a.chat {
        m.tokenizer.encode_chat(&[ChatMessage::user(a.prompt.clone())], true)?
    } else {
        m.tokenizer.encode_prompt(&a.prompt, a.parse_special)?
    };
    let batch = m.batch_from_ids(&[ids])?;
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        seed: a.seed,
        stop: a.stop.clone(),
        ..Default::default()
    };
    let (gens, _) = run_generate(&m, &batch, &HookSpec::new(), &opts)?;
    let g = &gens[0];
    if a.json {
        println!(
            "{}",
            json!({ "prompt": a.prompt, "prompt_ids": g.prompt_ids, "ids": g.ids, "text": g.text, "stop_reason": g.stop_reason })
        );
    } else {
        println!("{}", g.text);
    }
    Ok(())
}
