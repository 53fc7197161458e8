//! `knowlens patch`: activation patching from known-entity prompts into unknown-entity prompts
//! (the paper's §5): residual stream per layer × position and each head at the last position.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use knowlens::causal::attention::TEMPLATE;
use knowlens::causal::patching::{self, PairOptions, PatchOptions};
use knowlens::entities::label_set::{LabelSet, Split};
use knowlens::entities::EntityType;
use knowlens::progress::Progress;

use super::discover::model_name;
use super::progress::{named, Bars, LogOnly};
use super::ModelArgs;

#[derive(Args)]
pub struct PatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A labeling mode directory whose records hold scored gold values (estimate or likelihood).
    #[arg(long, default_value = "data/labels/gemma-3-270m/estimate")]
    labels: PathBuf,
    /// Splits to read entities from.
    #[arg(long, value_delimiter = ',', value_parser = named::<Split>(&Split::NAMES),
          default_value = "test,validation,train")]
    splits: Vec<Split>,
    /// Only these types (each must have pairs) [default: every type that has both classes].
    #[arg(long, value_delimiter = ',', value_parser = named::<EntityType>(&EntityType::NAMES))]
    types: Vec<EntityType>,
    /// Prompt, with {type}, {name} and {relation}.
    #[arg(long, default_value = TEMPLATE)]
    template: String,
    /// At most this many pairs (the paper: 32).
    #[arg(long, default_value_t = 32)]
    pairs: usize,
    /// Unknown partners tried per known entity.
    #[arg(long, default_value_t = 4)]
    candidates: usize,
    /// Smallest LD_clean − LD_corr (logits) for a pair to be used.
    #[arg(long, default_value_t = 1.0)]
    min_gap: f64,
    /// Rows per forward pass (patch sites, plus the clean and corrupted references).
    #[arg(long, default_value_t = 64)]
    rows: usize,
    /// Bootstrap resamples of every interval.
    #[arg(long, default_value_t = 1000)]
    reps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory: patching.json, resid.csv, heads.csv, report.html.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    no_progress: bool,
}

pub fn run(a: PatchArgs) -> Result<()> {
    if a.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    if a.candidates == 0 {
        bail!("--candidates must be at least 1");
    }
    if !a.min_gap.is_finite() {
        bail!("--min-gap must be a finite number, got {}", a.min_gap);
    }
    if a.rows < 3 {
        bail!("--rows must be at least 3 (the clean and corrupted references and one patch)");
    }
    if a.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let labels = LabelSet::load(&a.labels)?;
    let model = a.model.load()?;
    let opts = PatchOptions {
        model_name: model_name(&a.model.model),
        pairs: PairOptions {
            splits: a.splits.clone(),
            types: (!a.types.is_empty()).then(|| a.types.clone()),
            template: a.template.clone(),
            max_pairs: a.pairs,
            candidates: a.candidates,
            min_gap: a.min_gap,
            batch: a.rows,
            seed: a.seed,
        },
        rows: a.rows,
        reps: a.reps,
        seed: a.seed,
    };
    let progress: Box<dyn Progress> = if a.no_progress { Box::new(LogOnly) } else { Box::new(Bars::default()) };
    let r = patching::run(&model, &labels, &opts, progress.as_ref())?;
    patching::write(&r, &a.out)?;
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    for (t, c) in &r.per_type {
        println!(
            "{t}: {} known / {} unknown usable, {} with a same-length partner, {} below the gap, {} pairs",
            c.known, c.unknown, c.with_partner, c.below_gap, c.paired
        );
    }
    for h in r.resid.iter().take(1).chain(r.heads.iter().take(1)) {
        let mut best: Vec<(usize, usize, f64)> = h
            .cells
            .iter()
            .enumerate()
            .flat_map(|(l, row)| {
                row.iter().enumerate().filter_map(move |(j, c)| c.as_ref().map(|c| (l, j, c.mean.value)))
            })
            .collect();
        best.sort_by(|x, y| y.2.total_cmp(&x.2));
        let top: Vec<String> = best.iter().take(5).map(|(l, j, v)| format!("L{l} {} {v:.3}", h.columns[*j])).collect();
        println!("{} ({} pairs), largest cells: {}", h.scope, h.n_pairs, top.join("; "));
    }
    println!("{} patched runs; wrote {}", r.patched_runs, a.out.join("report.html").display());
    Ok(())
}
