//! Command definitions (clap) and dispatch.

mod attention;
mod bench;
mod corpus;
mod demo;
mod discover;
mod geometry;
mod inspect;
mod label;
mod patch;
mod precision;
mod progress;
mod reproduce;
mod sae;
mod sae_train;
mod steer;
mod uncertainty;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use knowlens::fetch;
use knowlens::model::Precision;
use knowlens::Model;

#[derive(Parser)]
#[command(name = "knowlens", version, about = "Find, measure and steer what a language model knows it knows")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A known model name (fetched on first use) or a path to a GGUF file or a Hugging Face
    /// model directory.
    #[arg(long, default_value = fetch::DEFAULT_MODEL)]
    pub model: String,
    /// f32: dequantize to float32 (exact, matches transformers); quantized: GGUF blocks as stored.
    #[arg(long, value_parser = progress::named::<Precision>(&["f32", "quantized"]), default_value = "f32")]
    pub precision: Precision,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model> {
        let path = fetch::resolve_model(&self.model)?;
        let model = Model::load(&path, self.precision)?;
        if model.precision != self.precision {
            eprintln!("note: {} holds float32 weights; running in float32", path.display());
        }
        Ok(model)
    }
}

#[derive(Subcommand)]
enum Command {
    /// The main demonstration: what the model predicts after a few entity prompts, and how the
    /// residual stream at the entity's last token grows through the layers.
    Demo(demo::DemoArgs),
    /// Token ids of a text.
    Tokenize(inspect::TokenizeArgs),
    /// Top next-token logits at the last position of a prompt.
    Logits(inspect::LogitsArgs),
    /// Capture activations at hook points and save them as safetensors.
    Cache(inspect::CacheArgs),
    /// Continue a prompt (greedy or sampled).
    Generate(inspect::GenerateArgs),
    /// Time a fixed workload (used by tools/bench.py to compare with transformers and llama.cpp).
    Bench(bench::BenchArgs),
    /// What `--precision quantized` costs in exactness and buys in speed against float32: top-1
    /// agreement and KL of next-token distributions, identical greedy answers, seconds of each.
    Precision(precision::PrecisionArgs),
    /// Ask the model about every entity's attributes and label entities known / unknown.
    Label(label::LabelArgs),
    /// Sparse autoencoders: info, encode a prompt, convert to SAELens, train, benchmark training.
    #[command(subcommand)]
    Sae(sae::SaeCommand),
    /// Find the entity-recognition latents: separation scores per layer, held-out tests,
    /// baselines, portable detectors and an HTML report.
    Discover(discover::DiscoverArgs),
    /// Score an entity file with detectors exported by `discover`.
    Detect(discover::DetectArgs),
    /// Steer a chat model with the entity-recognition directions: refusal rates, answers'
    /// correctness and the "are you sure you know" logit difference, against random directions.
    Steer(steer::SteerArgs),
    /// The refusal direction (refused − answered questions) against the entity-recognition
    /// directions per layer, with null bands, and whether detection steering moves it.
    Geometry(geometry::GeometryArgs),
    /// The whole paper, resumable: fetch, label, corpus, activation store, SAEs, discovery, chat
    /// labels and directions, steering; one HTML page with a verdict per claim.
    Reproduce(reproduce::ReproduceArgs),
    /// Attention from the final token to the entity, known vs unknown, and under steering.
    Attention(attention::AttentionArgs),
    /// Activation patching from known-entity prompts into unknown-entity prompts.
    Patch(patch::PatchArgs),
    /// Latents and probes at the last prompt token that tell whether the model's answer will be
    /// wrong (the paper's uncertainty directions), against probes, popularity and random latents.
    Uncertainty(uncertainty::UncertaintyArgs),
    /// Fetch, clean, deduplicate and tokenize the text used to train SAEs (cached per model).
    Corpus(corpus::CorpusArgs),
    /// Fetch a known model into the cache (done automatically on first use).
    Fetch {
        #[arg(long, default_value = fetch::DEFAULT_MODEL)]
        model: String,
    },
    /// List the known models and where they are cached.
    Models,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Corpus(a) => corpus::run(a),
        Command::Discover(a) => discover::run(a),
        Command::Detect(a) => discover::detect(a),
        Command::Steer(a) => steer::run(a),
        Command::Geometry(a) => geometry::run(a),
        Command::Reproduce(a) => reproduce::run(a),
        Command::Attention(a) => attention::run(a),
        Command::Patch(a) => patch::run(a),
        Command::Uncertainty(a) => uncertainty::run(a),
        Command::Tokenize(a) => inspect::tokenize(a),
        Command::Logits(a) => inspect::logits(a),
        Command::Cache(a) => inspect::cache(a),
        Command::Generate(a) => inspect::generate(a),
        Command::Label(a) => label::run(a),
        Command::Precision(a) => precision::run(a),
        Command::Sae(c) => sae::run(c),
        Command::Fetch { model } => {
            let path = fetch::resolve_model(&model)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Models => {
            for p in fetch::PRESETS {
                let state = match fetch::cached(p)? {
                    Some(path) => path.display().to_string(),
                    None => format!("not fetched ({})", fetch::cached_path(p)?.display()),
                };
                println!("{:<24} {}\n{:<24} {}", p.name, p.description, "", state);
            }
            Ok(())
        }
    }
}
