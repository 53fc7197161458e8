//! Language models: loading (GGUF file or Hugging Face directory), the hooked forward pass and
//! generation.

mod activation;
pub mod agreement;
pub mod config;
mod gemma2;
mod gemma3;
pub mod generate;
mod llama;
mod meta;
pub mod score;
pub mod transformer;
mod unembed;
pub mod weights;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::batch::{Batch, EntityBatch};
pub use crate::gguf::read_gguf_header;
use crate::hooks::HookSpec;
use crate::tokenizer::Tokenizer;
pub use config::{Arch, ModelConfig};
use meta::{GgufMeta, HfConfig};
pub use transformer::{ForwardInput, ForwardOutput, KvCache, Orthogonalization, Transformer};
/// Row limits of the packed kernel: up to `MAX_UNEMBED_ROWS` for the unembedding, `MAX_BLOCK_ROWS` for a
/// block's layer in float32 (larger products take the matmul).
pub use unembed::{MAX_BLOCK_ROWS, MAX_ROWS as MAX_UNEMBED_ROWS};
pub use weights::Precision;

/// The configuration a GGUF header describes (no weights read).
fn config_from_gguf(content: &candle_core::quantized::gguf_file::Content, path: &Path) -> Result<ModelConfig> {
    let meta = GgufMeta::new(content, path)?;
    match meta.arch.as_str() {
        "gemma3" => gemma3::from_gguf(&meta),
        "gemma2" => gemma2::from_gguf(&meta),
        "llama" => llama::from_gguf(&meta),
        other => bail!("{}: unsupported architecture '{other}' (supported: gemma3, gemma2, llama)", path.display()),
    }
}

/// The configuration of a GGUF file, from its header alone.
pub fn config_of_gguf(path: &Path) -> Result<ModelConfig> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let content = read_gguf_header(&mut BufReader::new(file), path)?;
    config_from_gguf(&content, path)
}

/// The widest SIMD the float32 kernels can use on this CPU, detected at run time: the `gemm`
/// crate (candle's matmul) picks its AVX-512 or AVX2 kernels the same way.
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return "avx2";
        }
        "sse2"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}

/// A model ready to run: weights, configuration and tokenizer. Cloning shares the weights
/// (tensors are reference-counted); an edit such as `orthogonalize` replaces the edited ones.
#[derive(Clone)]
pub struct Model {
    pub transformer: Transformer,
    pub tokenizer: Tokenizer,
    /// Where it was loaded from.
    pub source: PathBuf,
    pub precision: Precision,
}

impl Model {
    /// Loads a GGUF file or a Hugging Face model directory (config.json, *.safetensors,
    /// tokenizer.json). Safetensors weights always run in float32.
    pub fn load(path: &Path, precision: Precision) -> Result<Self> {
        if path.is_dir() {
            Self::load_hf_dir(path)
        } else if path.is_file() {
            Self::load_gguf(path, precision)
        } else {
            bail!("{}: no such model file or directory", path.display())
        }
    }

    fn load_gguf(path: &Path, precision: Precision) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        Self::from_gguf_reader(BufReader::new(file), path, precision)
    }

    /// A GGUF model read from `reader` (a file, or its bytes in a `Cursor`); `path` names it in
    /// errors. What `load` does for a GGUF file once it is open.
    pub fn from_gguf_reader<R: std::io::Read + std::io::Seek + 'static>(
        mut reader: R,
        path: &Path,
        precision: Precision,
    ) -> Result<Self> {
        let content = read_gguf_header(&mut reader, path)?;
        let cfg = config_from_gguf(&content, path)?;
        let tokenizer = Tokenizer::from_gguf(&content, path)?;
        let mut source = weights::WeightSource::gguf(path, content, Box::new(reader));
        let mut cfg = cfg;
        if source.has("rope_freqs.weight") {
            // Llama 3.1+: per-dimension RoPE frequency divisors.
            let f = source.f32("rope_freqs.weight", &[cfg.head_dim / 2])?.to_vec1::<f32>()?;
            for layer in cfg.layers.iter_mut() {
                layer.rope_inv_freq.iter_mut().zip(&f).for_each(|(x, d)| *x /= d);
            }
        }
        let transformer = Transformer::load(cfg, &mut source, precision)?;
        Ok(Self { transformer, tokenizer, source: path.to_path_buf(), precision })
    }

    fn load_hf_dir(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).with_context(|| {
            format!("{}: cannot read (a Hugging Face model directory needs config.json)", cfg_path.display())
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", cfg_path.display()))?;
        let model_type = json.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        let text_cfg = json.get("text_config").filter(|_| model_type == "gemma3").unwrap_or(&json);
        let hf = HfConfig { json: text_cfg, path: &cfg_path };
        let (cfg, arch) = match model_type {
            "gemma3_text" => (gemma3::from_hf(&hf)?, Arch::Gemma3),
            "gemma3" => bail!(
                "{}: multimodal Gemma 3 checkpoints are not supported; use the text-only model",
                cfg_path.display()
            ),
            "gemma2" => (gemma2::from_hf(&hf)?, Arch::Gemma2),
            "llama" => (llama::from_hf(&hf)?, Arch::Llama),
            other => bail!(
                "{}: unsupported model_type '{other}' (supported: gemma3_text, gemma2, llama)",
                cfg_path.display()
            ),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{}: no *.safetensors files", dir.display());
        }
        let mut source = weights::WeightSource::safetensors(dir, arch, &files)?;
        let transformer = Transformer::load(cfg, &mut source, Precision::F32)?;
        let tokenizer = Tokenizer::from_hf_dir(dir)?;
        Ok(Self { transformer, tokenizer, source: dir.to_path_buf(), precision: Precision::F32 })
    }

    pub fn cfg(&self) -> &ModelConfig {
        &self.transformer.cfg
    }

    /// Tokenizes prompts (with the model's BOS default) and left-pads them into a batch.
    pub fn batch(&self, prompts: &[&str], parse_special: bool) -> Result<Batch> {
        let rows = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if p.is_empty() {
                    bail!("prompt {i} is empty");
                }
                self.tokenizer.encode_prompt(p, parse_special)
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch_from_ids(&rows)
    }

    pub fn batch_from_ids(&self, rows: &[Vec<u32>]) -> Result<Batch> {
        let cfg = self.cfg();
        for (i, r) in rows.iter().enumerate() {
            if r.len() > cfg.context_length {
                bail!("prompt {i} has {} tokens, longer than the model's context of {}", r.len(), cfg.context_length);
            }
            if let Some(&bad) = r.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                bail!("prompt {i} holds token id {bad}, outside the vocabulary of {}", cfg.vocab_size);
            }
        }
        Batch::new(rows, self.tokenizer.pad)
    }

    /// One hooked forward pass over a batch (see `Transformer::forward`).
    pub fn run(&self, batch: &Batch, spec: &HookSpec) -> Result<ForwardOutput> {
        self.transformer.forward(&ForwardInput::batch(batch), spec, None)
    }

    /// Prompts that each name an entity, tokenized with the model's BOS rule and batched, with
    /// the positions of the tokens that cover the entity (its first occurrence in the prompt).
    pub fn entity_batch(&self, prompts: &[(&str, &str)], parse_special: bool) -> Result<EntityBatch> {
        let mut rows = Vec::with_capacity(prompts.len());
        let mut spans = Vec::with_capacity(prompts.len());
        for (i, (prompt, entity)) in prompts.iter().enumerate() {
            if prompt.is_empty() {
                bail!("prompt {i} is empty");
            }
            rows.push(self.tokenizer.encode_prompt(prompt, parse_special)?);
            spans.push(
                self.tokenizer
                    .span_positions(prompt, entity, true, parse_special)
                    .with_context(|| format!("prompt {i}"))?,
            );
        }
        Ok(EntityBatch { batch: self.batch_from_ids(&rows)?, spans })
    }
}
