//! The demonstration run on the default model: next-token predictions for entity prompts, and a
//! summary of the residual stream at each prompt's last token across layers.

use anyhow::Result;
use clap::Args;
use knowlens::{HookPoint, HookSpec, LogitsAt};

use super::inspect::top_k;
use super::ModelArgs;

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    model: ModelArgs,
}

const PROMPTS: &[&str] = &[
    "Michael Jordan plays the sport of",
    "Lionel Messi plays the sport of",
    "The movie The Godfather was directed by",
    "Paris is a city in the country of",
    "Tokyo is a city in the country of",
    "Kragujevac is a city in the country of",
];

pub fn run(a: DemoArgs) -> Result<()> {
    let m = a.model.load()?;
    let cfg = m.cfg();
    println!(
        "model: {} ({}, {} layers, d_model {}, {:?})",
        m.source.display(),
        cfg.arch.name(),
        cfg.n_layers,
        cfg.d_model,
        m.precision
    );
    let batch = m.batch(PROMPTS, false)?;
    let spec = HookSpec::new().capture((0..cfg.n_layers).map(HookPoint::ResidPost)).logits(LogitsAt::Last);
    let started = std::time::Instant::now();
    let out = m.run(&batch, &spec)?;
    let elapsed = started.elapsed();
    let logits = out.logits.expect("logits were requested");

    println!("\nNext-token predictions (top 3, float logits):");
    for (r, prompt) in PROMPTS.iter().enumerate() {
        let top = top_k(&logits.get(r)?.to_vec1::<f32>()?, 3);
        let shown: Vec<String> =
            top.iter().map(|&(id, l)| format!("{:?} {l:.2}", m.tokenizer.decode(&[id]).unwrap_or_default())).collect();
        println!("  {prompt:<42} → {}", shown.join(" | "));
    }

    println!("\nResidual stream norm ‖blocks.L.hook_resid_post‖ at the last token (rows: prompts):");
    let header: Vec<String> = (0..cfg.n_layers).map(|l| format!("{l:>6}")).collect();
    println!("  {:<10}{}", "L", header.join(""));
    for r in 0..PROMPTS.len() {
        let mut cells = Vec::new();
        for l in 0..cfg.n_layers {
            let t = out.cache.row(HookPoint::ResidPost(l), r)?;
            let last = t.get(t.dim(0)? - 1)?;
            let n = last.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
            cells.push(format!("{n:>6.0}"));
        }
        println!("  prompt {r:<3}{}", cells.join(""));
    }
    let tokens: usize = (0..batch.rows()).map(|r| batch.len_of(r)).sum();
    println!(
        "\n{} prompts, {tokens} tokens, one batched forward pass in {:.2} s",
        PROMPTS.len(),
        elapsed.as_secs_f64()
    );
    Ok(())
}
