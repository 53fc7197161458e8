//! `knowlens attention`: attention from the final token to the entity, known vs unknown, and its
//! change under steering with the entity-recognition directions (the paper's §5);
//! `knowlens patch`'s arguments are in `patch.rs`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use knowlens::causal::attention::{self, AttentionOptions, MeasureOptions, SelectOptions};
use knowlens::discover::detectors::DetectorFile;
use knowlens::entities::label_set::{LabelSet, Split};
use knowlens::entities::EntityType;
use knowlens::progress::Progress;

use super::discover::model_name;
use super::progress::{named, Bars, LogOnly};
use super::ModelArgs;

#[derive(Args)]
pub struct AttentionArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A labeling mode directory (labels.jsonl[.gz], splits.json, controls.json).
    #[arg(long, default_value = "data/labels/gemma-3-270m/estimate")]
    labels: PathBuf,
    /// Splits to read entities from (the default model has 15 known entities in test alone).
    #[arg(long, value_delimiter = ',', value_parser = named::<Split>(&Split::NAMES),
          default_value = "test,validation,train")]
    splits: Vec<Split>,
    /// Only these types (each must have known and unknown entities) [default: every type that has both].
    #[arg(long, value_delimiter = ',', value_parser = named::<EntityType>(&EntityType::NAMES))]
    types: Vec<EntityType>,
    /// At most this many entities per type and class.
    #[arg(long, default_value_t = 50)]
    per_type: usize,
    /// Prompt, with {type}, {name} and {relation} (the paper's base relation of the type).
    #[arg(long, default_value = attention::TEMPLATE)]
    template: String,
    /// A detector file from `knowlens discover` (detectors.json): steer with its directions.
    #[arg(long)]
    detectors: Option<PathBuf>,
    /// The detector used as the known direction [default: the first "known" detector].
    #[arg(long)]
    known_direction: Option<String>,
    /// The detector used as the unknown direction [default: the first "unknown" detector, else
    /// the negated known one].
    #[arg(long)]
    unknown_direction: Option<String>,
    /// Use detectors made for a model of the same shape but another name.
    #[arg(long)]
    any_model: bool,
    /// Steering strengths in mean residual norms at the direction's layer (entity's last token),
    /// comma-separated: each one steers both classes.
    #[arg(long, value_delimiter = ',', default_value = "0.05")]
    coef: Vec<f64>,
    /// Random directions of the same layer and norm (the baseline).
    #[arg(long, default_value_t = 10)]
    random: usize,
    /// Also steer at every strength and map every head's change against the random directions
    /// pooled per prompt (exploratory; the claims rank the chosen head's change per direction).
    #[arg(long)]
    per_head_steering: bool,
    /// Heads listed.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Heads whose promoted tokens are read, known prompts per head, tokens per prompt.
    #[arg(long, default_value_t = 3)]
    promoted_heads: usize,
    #[arg(long, default_value_t = 3)]
    promoted_examples: usize,
    #[arg(long, default_value_t = 10)]
    promoted_tokens: usize,
    /// Skip the value-weighted variant ‖a·v‖ (one more forward pass per batch).
    #[arg(long)]
    no_value_weighted: bool,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Bootstrap resamples of every interval.
    #[arg(long, default_value_t = 1000)]
    reps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory: attention.json, heads.csv, steering.csv, items.csv, report.html.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    no_progress: bool,
}

pub fn run(a: AttentionArgs) -> Result<()> {
    let opts = AttentionOptions {
        model_name: model_name(&a.model.model),
        select: SelectOptions {
            splits: a.splits.clone(),
            types: (!a.types.is_empty()).then(|| a.types.clone()),
            per_type: a.per_type,
            template: a.template.clone(),
            seed: a.seed,
        },
        measure: MeasureOptions { batch: a.batch, value_weighted: !a.no_value_weighted, norm_layers: Vec::new() },
        coefs: a.coef.clone(),
        n_random: a.random,
        per_head_steering: a.per_head_steering,
        top: a.top,
        promoted_heads: a.promoted_heads,
        promoted_examples: a.promoted_examples,
        promoted_tokens: a.promoted_tokens,
        reps: a.reps,
        seed: a.seed,
    };
    // Settings first: nothing loads when an argument is wrong.
    opts.validate().map_err(|e| anyhow::anyhow!("--{}", e))?;
    if a.per_type == 0 {
        bail!("--per-type must be at least 1");
    }
    let file = match &a.detectors {
        Some(p) => Some(DetectorFile::load(p)?),
        None => {
            if a.known_direction.is_some() || a.unknown_direction.is_some() {
                bail!("--known-direction / --unknown-direction name detectors of --detectors FILE, which is missing");
            }
            None
        }
    };
    let labels = LabelSet::load(&a.labels)?;
    let model = a.model.load()?;
    let directions = match (&file, &a.detectors) {
        (Some(f), Some(path)) => {
            f.check(&model, &opts.model_name, a.any_model).with_context(|| path.display().to_string())?;
            Some(
                attention::directions_from(f, a.known_direction.as_deref(), a.unknown_direction.as_deref())
                    .with_context(|| path.display().to_string())?,
            )
        }
        _ => None,
    };
    let progress: Box<dyn Progress> = if a.no_progress { Box::new(LogOnly) } else { Box::new(Bars::default()) };
    let r = attention::run(&model, &labels, &opts, directions.as_ref(), progress.as_ref())?;
    attention::write(&r, &a.out)?;
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    let counts: Vec<String> = r.counts.iter().map(|(t, [k, u])| format!("{t}: {k} known, {u} unknown")).collect();
    println!("{}", counts.join("; "));
    for &[l, h] in r.top_heads.iter().take(5) {
        if let Some(c) = r.pooled.iter().find(|c| c.layer == l && c.head == h) {
            println!(
                "L{l}H{h}: known {:.4} unknown {:.4} diff {:+.4} [{:+.4}, {:+.4}] p {}",
                c.known.value,
                c.unknown.value,
                c.diff.value,
                c.diff.lo,
                c.diff.hi,
                attention::p_text(c.diff.p)
            );
        }
    }
    for s in &r.steering {
        let best = s.heads.iter().min_by(|a, b| a.p_one_sided.total_cmp(&b.p_one_sided));
        if let Some(h) = best {
            println!(
                "{} prompts + {} (L{}, {:.1}): smallest one-sided p at L{}H{}: Δ {:+.4} vs random {:+.4}, \
                 p {} (Bonferroni {})",
                s.prompts,
                s.direction,
                s.layer,
                s.magnitude,
                h.layer,
                h.head,
                h.delta.value,
                h.random_mean,
                attention::p_text(h.p_one_sided),
                attention::p_text(h.p_bonferroni)
            );
        }
    }
    if let Some(v) = &r.verdicts {
        let c = &v.contrast;
        println!(
            "claims' head L{}H{} (chosen on train and validation): known − unknown on test within type {}; permutation null {}/{}",
            v.choice.layer,
            v.choice.head,
            c.stratified.map(|e| format!("{:+.4} [{:+.4}, {:+.4}]", e.value, e.lo, e.hi)).unwrap_or_else(|| "–".into()),
            c.null.passed,
            c.null.draws
        );
        for st in &v.steering {
            let max = st.controls.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            println!(
                "{} prompts + {} ×{} at L{}H{}: signed change {} vs {} Gaussian directions (max {:+.4}); direct edit {}",
                st.prompts,
                st.direction,
                st.coef,
                st.head.0,
                st.head.1,
                st.detector.map(|e| format!("{:+.4} [{:+.4}, {:+.4}]", e.value, e.lo, e.hi)).unwrap_or_else(|| "–".into()),
                st.controls.len(),
                max,
                st.positive.map(|e| format!("{:+.4}", e.value)).unwrap_or_else(|| "–".into())
            );
        }
    }
    println!("wrote {}", a.out.join("report.html").display());
    Ok(())
}
