//! `knowlens precision`: what `--precision quantized` costs in exactness and buys in speed,
//! against float32 from the same GGUF file, in one run: top-1 agreement and KL of next-token
//! distributions (on a prompt file at every position, and after each labelling question), and
//! greedy answers to the labelling questions (identical text, same judgment), with the time each
//! precision took.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use knowlens::entities::dataset::discover;
use knowlens::entities::label::{answer, answer_batches, questions_for, LabelOptions, Question, TemplateTable};
use knowlens::entities::matching::Outcome;
use knowlens::entities::run::spread_subset;
use knowlens::model::agreement::{compare, Agreement, Compared};
use knowlens::model::{simd_level, Precision};
use knowlens::stats::{quantile_sorted, wilson};
use knowlens::{fetch, Model};
use serde_json::{json, Value};

#[derive(Args)]
pub struct PrecisionArgs {
    /// A known model name or a GGUF file; both precisions are read from it.
    #[arg(long, default_value = fetch::DEFAULT_MODEL)]
    model: String,
    /// Prompts compared at every position: a JSON file with `"prompts": [{"text": ...}]` (the
    /// golden files under tests/fixtures/) or a text file with one prompt per line.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Entity JSONL files or directories whose labelling questions are asked (paper templates).
    #[arg(long, num_args = 1.., default_value = "data/entities/v2")]
    entities: Vec<PathBuf>,
    /// Entities per type, spread over the popularity range (0: no questions).
    #[arg(long, default_value_t = 12)]
    per_type: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: PrecisionArgs) -> Result<()> {
    let path = fetch::resolve_model(&a.model)?;
    let f32m = Model::load(&path, Precision::F32)?;
    let qm = Model::load(&path, Precision::Quantized)?;
    if qm.precision != Precision::Quantized {
        bail!("{} holds float32 weights: there is no quantized precision to compare", path.display());
    }
    let mut report = json!({
        "model": path.display().to_string(),
        "simd": simd_level(),
        "threads": rayon::current_num_threads(),
    });
    let mut lines = Vec::new();

    if let Some(p) = &a.prompts {
        let texts = read_prompts(p)?;
        let rows = texts.iter().map(|t| f32m.tokenizer.encode_prompt(t, false)).collect::<Result<Vec<_>>>()?;
        let ag = compare(&f32m, &qm, &rows, Compared::All, a.batch_size)?;
        lines.push(distribution_line(&format!("{} prompts, every position", texts.len()), &ag));
        report["prompts"] = distribution_json(p, texts.len(), &ag);
    }

    if a.per_type > 0 {
        let data = discover(&a.entities)?.load()?;
        let entities = spread_subset(&data.entities, a.per_type);
        let qs = questions_for(&f32m, &entities, &TemplateTable::new(), false)?;
        if qs.is_empty() {
            bail!("no labelling questions for the entities of {:?}", a.entities);
        }
        let rows: Vec<Vec<u32>> = qs.iter().map(|q| q.ids.clone()).collect();
        let ag = compare(&f32m, &qm, &rows, Compared::Last, a.batch_size)?;
        lines.push(distribution_line(&format!("{} labelling questions, next token", qs.len()), &ag));
        report["questions"] = distribution_json(&a.entities[0], qs.len(), &ag);

        let (ra, ta) = greedy_answers(&f32m, &qs, a.batch_size)?;
        let (rb, tb) = greedy_answers(&qm, &qs, a.batch_size)?;
        let same_text = ra.iter().filter(|(k, v)| rb.get(*k).is_some_and(|w| w.0 == v.0)).count();
        let same_judgment = ra.iter().filter(|(k, v)| rb.get(*k).is_some_and(|w| w.1 == v.1)).count();
        let correct = |m: &Answers| m.values().filter(|v| v.1).count();
        let n = qs.len();
        lines.push(format!(
            "greedy answers: identical text {}, same judgment {}; correct f32 {} / quantized {}; seconds f32 {ta:.1} / quantized {tb:.1} ({:.2}x)",
            rate(same_text, n),
            rate(same_judgment, n),
            correct(&ra),
            correct(&rb),
            ta / tb
        ));
        report["greedy"] = json!({
            "questions": n,
            "identical_text": same_text,
            "identical_text_ci": wilson(same_text, n),
            "same_judgment": same_judgment,
            "same_judgment_ci": wilson(same_judgment, n),
            "correct_f32": correct(&ra),
            "correct_quantized": correct(&rb),
            "seconds_f32": ta,
            "seconds_quantized": tb,
        });
    }

    if let Some(out) = &a.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if a.json {
        println!("{report}");
    } else {
        println!(
            "quantized against float32, {} ({} kernels, {} threads)",
            path.display(),
            simd_level(),
            rayon::current_num_threads()
        );
        for l in lines {
            println!("  {l}");
        }
    }
    Ok(())
}

/// Question key → (greedy completion, judged correct).
type Answers = BTreeMap<String, (String, bool)>;

/// Greedy answers of one model, and the seconds they took.
fn greedy_answers(model: &Model, qs: &[Question], batch_size: usize) -> Result<(Answers, f64)> {
    let opts = LabelOptions { batch_size, ..Default::default() };
    let mut order: Vec<&Question> = qs.iter().collect();
    let mut out = BTreeMap::new();
    let t = Instant::now();
    for range in answer_batches(&mut order, batch_size) {
        let batch = &order[range];
        for (q, r) in batch.iter().zip(answer(model, batch, &opts)?) {
            let g = r.greedy.context("a greedy record without its completion")?;
            out.insert(q.key(), (g.text, g.outcome == Outcome::Correct));
        }
    }
    Ok((out, t.elapsed().as_secs_f64()))
}

/// Prompts from a golden JSON file (`"prompts": [{"text": ...}]`) or one per line of a text file.
fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let prompts: Vec<String> = if path.extension().is_some_and(|e| e == "json") {
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let items = v["prompts"].as_array().with_context(|| format!("{}: no \"prompts\" array", path.display()))?;
        items
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p["text"]
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("{}: prompt {i} has no \"text\"", path.display()))
            })
            .collect::<Result<_>>()?
    } else {
        text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
    };
    if prompts.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(prompts)
}

fn rate(k: usize, n: usize) -> String {
    match wilson(k, n) {
        Some(e) => format!("{k}/{n} ({:.1}% [{:.1}, {:.1}])", 100.0 * e.value, 100.0 * e.lo, 100.0 * e.hi),
        None => format!("{k}/{n}"),
    }
}

fn kl_summary(ag: &Agreement) -> (f64, f64, f64, f64) {
    let mut kl = ag.kl.clone();
    kl.sort_by(f64::total_cmp);
    let mean = kl.iter().sum::<f64>() / kl.len().max(1) as f64;
    (mean, quantile_sorted(&kl, 0.5), quantile_sorted(&kl, 0.95), *kl.last().unwrap_or(&f64::NAN))
}

fn distribution_line(what: &str, ag: &Agreement) -> String {
    let (mean, med, p95, max) = kl_summary(ag);
    format!(
        "{what}: top-1 same {}; KL(f32 || quantized) mean {mean:.4}, median {med:.4}, 95th pct {p95:.4}, max {max:.4} nats; forward seconds f32 {:.2} / quantized {:.2}",
        rate(ag.top1_agreeing(), ag.positions()),
        ag.reference_seconds,
        ag.other_seconds
    )
}

fn distribution_json(source: &Path, prompts: usize, ag: &Agreement) -> Value {
    let (mean, med, p95, max) = kl_summary(ag);
    json!({
        "source": source.display().to_string(),
        "prompts": prompts,
        "positions": ag.positions(),
        "top1_same": ag.top1_agreeing(),
        "top1_same_ci": wilson(ag.top1_agreeing(), ag.positions()),
        "kl_mean": mean, "kl_median": med, "kl_p95": p95, "kl_max": max,
        "forward_seconds_f32": ag.reference_seconds,
        "forward_seconds_quantized": ag.other_seconds,
    })
}
