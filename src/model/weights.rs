//! Weights from GGUF files or Hugging Face safetensors, under one naming scheme.
//!
//! Tensors are named as GGUF names them (`blk.3.attn_q.weight`, `token_embd.weight`): a
//! GGUF loads with no mapping, and a safetensors directory maps each name to its Hugging Face
//! spelling in `hf_name`. Linear layers are either dense float32 (exact; what the reference
//! comparisons use) or quantized matmuls straight from the GGUF blocks (fast).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::config::Arch;
pub use super::unembed::RowsTable;

/// How linear layers are stored.
/// Parsed from and displayed as `f32` / `quantized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Precision {
    /// Dequantize everything to float32: matches Hugging Face transformers (float32).
    F32,
    /// Keep the GGUF's quantized blocks and use quantized matmuls (as llama.cpp does).
    Quantized,
}

crate::names::named_enum!(Precision, "precision", F32 => "f32", Quantized => "quantized");

/// A linear map `y = x W^T` (W is [out, in] in the checkpoints).
#[derive(Debug, Clone)]
pub enum Linear {
    /// Wᵀ stored contiguous, [in, out]: the matmul then reads it without repacking, which is up
    /// to 10× faster at the few rows of prefill and decoding (measured in BENCHMARKS.md).
    DenseT(Tensor),
    /// W [out, in] for the packed kernel (`unembed.rs`): the tied unembedding, which shares the
    /// embedding table, and the GGUF layers whose blocks are int8 codes times one scale
    /// (`int8_coded`); larger products than the kernel's row limit take the matmul.
    DenseRows(RowsTable),
    Quant(QMatMul),
}

impl Linear {
    /// `x`: [..., in] → [..., out].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let inner = *dims.last().context("linear input has no dimensions")?;
        let rows = x.elem_count() / inner.max(1);
        let x2 = x.reshape((rows, inner))?;
        let y = match self {
            // Decoding's and scoring's few rows through the packed kernel (BENCHMARKS.md).
            Linear::DenseRows(t) if t.applies(&x2) => t.product(&x2)?,
            Linear::DenseT(wt) => x2.matmul(wt)?,
            Linear::DenseRows(t) => t.matmul(&x2)?,
            Linear::Quant(q) => q.forward(&x2)?,
        };
        let mut out = dims;
        *out.last_mut().unwrap() = y.dim(1)?;
        Ok(y.reshape(out)?)
    }
}

impl Linear {
    /// The float32 table of a tied unembedding ([out, in]), if this is one.
    pub fn rows_f32(&self) -> Option<&Tensor> {
        match self {
            Linear::DenseRows(t) => t.tensor().filter(|w| w.dtype() == DType::F32),
            _ => None,
        }
    }

    /// Each row's argmax of `forward(x)` for x [rows, in], where the packed unembedding kernel
    /// takes it (it never writes the [rows, out] product); `None` elsewhere.
    pub fn rows_argmax(&self, x: &Tensor) -> Result<Option<Vec<u32>>> {
        match self {
            Linear::DenseRows(t) if t.applies(x) => Ok(Some(t.argmax(x)?)),
            _ => Ok(None),
        }
    }

    /// The packed unembedding kernel's weight form, once it has run: "int8" (a table exactly on
    /// Q8_0's grid, kept as codes and scales) or "f32"; `None` before, or for other layers.
    pub fn packed_form(&self) -> Option<&'static str> {
        match self {
            Linear::DenseRows(t) => t.is_int8().map(|q| if q { "int8" } else { "f32" }),
            _ => None,
        }
    }

    /// The same map with the component of every output along `u` removed: `W ← (I − ûûᵀ) W`,
    /// so `forward(x) · û = 0` for every x. Float32 weights only.
    pub fn without_output_direction(&self, u: &Tensor) -> Result<Linear> {
        let u = unit(u)?;
        // Wᵀ [in, out]: Wᵀ − (Wᵀ û) ûᵀ. (Edited weights leave the int8 grid: no panels.)
        let edit_t = |wt: &Tensor| -> Result<Linear> {
            Ok(Linear::DenseT((wt - wt.matmul(&u.unsqueeze(1)?)?.matmul(&u.unsqueeze(0)?)?)?))
        };
        Ok(match self {
            Linear::DenseT(wt) => edit_t(wt)?,
            Linear::DenseRows(t) => match (t.tensor(), t.transposed()) {
                // W [out, in]: W − û (ûᵀ W).
                (Some(w), _) => {
                    Linear::DenseRows(RowsTable::new((w - u.unsqueeze(1)?.matmul(&u.unsqueeze(0)?.matmul(w)?)?)?))
                }
                (None, Some(wt)) => edit_t(wt)?,
                (None, None) => bail!("orthogonalizing weights needs float32 weights (load with --precision f32)"),
            },
            Linear::Quant(_) => bail!("orthogonalizing weights needs float32 weights (load with --precision f32)"),
        })
    }
}

/// `u / ‖u‖` as float32; errors on a zero vector.
fn unit(u: &Tensor) -> Result<Tensor> {
    let u = u.to_dtype(DType::F32)?.flatten_all()?;
    let norm = u.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    if !(norm > 0.0 && norm.is_finite()) {
        bail!("the direction has norm {norm}: it must be a finite, non-zero vector");
    }
    Ok((u / norm as f64)?)
}

/// The token embedding table, [vocab, d].
#[derive(Debug, Clone)]
pub enum Embedding {
    Dense(Tensor),
    Quant(Arc<QTensor>),
}

impl Embedding {
    /// `ids`: [b, s] u32 → [b, s, d] f32.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Embedding::Dense(w) => {
                let (b, s) = ids.dims2()?;
                w.index_select(&ids.flatten_all()?, 0)?.reshape((b, s, w.dim(1)?))?
            }
            Embedding::Quant(q) => q.embedding(ids)?,
        })
    }

    /// The table with every row's component along `u` removed. Float32 weights only.
    pub fn without_direction(&self, u: &Tensor) -> Result<Embedding> {
        let u = unit(u)?;
        Ok(match self {
            Embedding::Dense(w) => Embedding::Dense((w - w.matmul(&u.unsqueeze(1)?)?.matmul(&u.unsqueeze(0)?)?)?),
            Embedding::Quant(_) => bail!("orthogonalizing weights needs float32 weights (load with --precision f32)"),
        })
    }

    /// The same table used as the (tied) unembedding.
    pub fn as_linear(&self) -> Result<Linear> {
        Ok(match self {
            Embedding::Dense(w) => Linear::DenseRows(RowsTable::new(w.clone())),
            // Q8_0 (the default GGUF's table): the packed kernel's exact float32 products of the
            // blocks' weights, faster than candle's int8 matmul and not rounded to 8-bit inputs.
            Embedding::Quant(q) => match q.dtype() {
                GgmlDType::Q8_0 => {
                    let (out, d) = q.shape().dims2()?;
                    Linear::DenseRows(RowsTable::from_q8_0_blocks(&q.data()?, out, d)?)
                }
                _ => Linear::Quant(QMatMul::from_arc(q.clone())?),
            },
        })
    }
}

/// Anything a GGUF file's tensors can be read from: the file, or its bytes in memory.
pub trait ReadSeek: std::io::Read + std::io::Seek {}
impl<T: std::io::Read + std::io::Seek> ReadSeek for T {}

/// Where tensors come from.
pub enum WeightSource {
    Gguf { path: PathBuf, content: gguf_file::Content, reader: Box<dyn ReadSeek> },
    SafeTensors { dir: PathBuf, arch: Arch, st: candle_core::safetensors::MmapedSafetensors, names: HashSet<String> },
}

impl WeightSource {
    pub fn gguf(path: &Path, content: gguf_file::Content, reader: Box<dyn ReadSeek>) -> Self {
        WeightSource::Gguf { path: path.to_path_buf(), content, reader }
    }

    pub fn safetensors(dir: &Path, arch: Arch, files: &[PathBuf]) -> Result<Self> {
        // SAFETY: the files are memory-mapped read-only; knowlens never writes to them while
        // a model is loaded.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }
            .with_context(|| format!("{}: cannot read the safetensors files", dir.display()))?;
        let names = st.tensors().into_iter().map(|(n, _)| n).collect();
        Ok(WeightSource::SafeTensors { dir: dir.to_path_buf(), arch, st, names })
    }

    pub fn origin(&self) -> String {
        match self {
            WeightSource::Gguf { path, .. } => path.display().to_string(),
            WeightSource::SafeTensors { dir, .. } => dir.display().to_string(),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        match self {
            WeightSource::Gguf { content, .. } => content.tensor_infos.contains_key(name),
            WeightSource::SafeTensors { arch, names, .. } => {
                hf_name(*arch, name).map(|n| names.contains(&n)).unwrap_or(false)
            }
        }
    }

    fn missing(&self, name: &str) -> anyhow::Error {
        match self {
            WeightSource::Gguf { path, .. } => {
                anyhow::anyhow!("{}: tensor '{name}' is missing from the GGUF file", path.display())
            }
            WeightSource::SafeTensors { dir, arch, .. } => anyhow::anyhow!(
                "{}: tensor '{}' is missing from the safetensors files",
                dir.display(),
                hf_name(*arch, name).unwrap_or_else(|| name.to_string())
            ),
        }
    }

    fn check_shape(&self, name: &str, got: &[usize], want: &[usize]) -> Result<()> {
        if got != want {
            bail!("{}: tensor '{name}' has shape {got:?}, expected {want:?}", self.origin());
        }
        Ok(())
    }

    /// A GGUF tensor in its stored (possibly quantized) form.
    fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let WeightSource::Gguf { path, content, reader } = self else {
            unreachable!("qtensor is only called for GGUF sources")
        };
        let info = content
            .tensor_infos
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("{}: tensor '{name}' is missing from the GGUF file", path.display()))?;
        if info.shape.dims() != shape {
            bail!("{}: tensor '{name}' has shape {:?}, expected {shape:?}", path.display(), info.shape.dims());
        }
        let q = content
            .tensor(reader, name, &Device::Cpu)
            .with_context(|| format!("{}: cannot read tensor '{name}'", path.display()))?;
        Ok(q)
    }

    /// A tensor as float32 with the expected shape. `norm_offset` is added to Hugging Face Gemma
    /// norm weights, which store `w` for a `(1 + w)` scale (llama.cpp bakes the +1 into GGUF).
    pub fn f32(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        match self {
            WeightSource::Gguf { .. } => Ok(self.qtensor(name, shape)?.dequantize(&Device::Cpu)?),
            WeightSource::SafeTensors { arch, st, .. } => {
                let arch = *arch;
                let Some(hf) = hf_name(arch, name) else { return Err(self.missing(name)) };
                let t = match st.load(&hf, &Device::Cpu) {
                    Ok(t) => t,
                    Err(_) => return Err(self.missing(name)),
                };
                let t = t.to_dtype(DType::F32)?;
                self.check_shape(&hf, t.dims(), shape)?;
                if matches!(arch, Arch::Gemma2 | Arch::Gemma3) && name.ends_with("norm.weight") {
                    Ok((t + 1.0)?)
                } else {
                    Ok(t)
                }
            }
        }
    }

    /// A linear layer stored [out, in].
    ///
    /// GGUF blocks that are int8 codes times one scale per 32 values (Q8_0, Q5_0, Q4_0: the
    /// default model's q, k, v, gate and up) also get the packed kernel's panels (`unembed.rs`),
    /// which decoding's few rows read at ~1.1 bytes per weight instead of 4, with the exact
    /// float32 weights. In quantized mode the panels replace candle's quantized matmul (whose
    /// inputs are rounded to 8 bits, and whose Q5_0 path re-quantized the weights) at every row
    /// count: prefill 128 433 → 1,100 tok/s, batch-32 decoding 259 → 490. At one row candle's
    /// int8 dot products were faster on a quiet machine (~105 vs ~90 tok/s) but fell to 29–39
    /// tok/s with one core busy (its spinning pool beside rayon's), against 46–60 for the
    /// panels alone (BENCHMARKS.md), so one kernel serves every row count.
    pub fn linear(&mut self, name: &str, out: usize, inp: usize, precision: Precision) -> Result<Linear> {
        if !matches!(self, WeightSource::Gguf { .. }) {
            return Ok(Linear::DenseT(self.f32(name, &[out, inp])?.t()?.contiguous()?));
        }
        let q = self.qtensor(name, &[out, inp])?;
        // Dequantized blocks of these types are always on the grid, unless the file holds
        // non-finite values: those (dequantized once more, rarely) go the other types' way.
        if int8_coded(q.dtype()) {
            if let Some(table) = RowsTable::packed(&q.dequantize(&Device::Cpu)?, precision == Precision::F32)? {
                return Ok(Linear::DenseRows(table));
            }
        }
        Ok(match precision {
            Precision::Quantized => Linear::Quant(QMatMul::from_qtensor(requantize(q)?)?),
            Precision::F32 => Linear::DenseT(q.dequantize(&Device::Cpu)?.t()?.contiguous()?),
        })
    }

    pub fn embedding(&mut self, name: &str, vocab: usize, d: usize, precision: Precision) -> Result<Embedding> {
        match (&*self, precision) {
            (WeightSource::Gguf { .. }, Precision::Quantized) => {
                let q = self.qtensor(name, &[vocab, d])?;
                Ok(Embedding::Quant(Arc::new(requantize(q)?)))
            }
            _ => Ok(Embedding::Dense(self.f32(name, &[vocab, d])?)),
        }
    }
}

/// GGUF block types whose values are int8 codes times one scale per 32 values, which the packed
/// kernel (`unembed.rs`) reads as exact float32 weights: Q8_0, Q5_0, Q4_0.
pub fn int8_coded(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q5_0 | GgmlDType::Q4_0)
}

/// Quantized types without a fast CPU dot product are re-quantized at load.
/// Q5_0 (in the default Gemma 3 file) goes to Q8_0: see BENCHMARKS.md for the measurement.
fn requantize(q: QTensor) -> Result<QTensor> {
    match q.dtype() {
        GgmlDType::Q5_0 | GgmlDType::Q5_1 => {
            let t = q.dequantize(&Device::Cpu)?;
            Ok(QTensor::quantize(&t, GgmlDType::Q8_0)?)
        }
        _ => Ok(q),
    }
}

/// The Hugging Face name of a GGUF-style tensor name.
pub fn hf_name(arch: Arch, gguf: &str) -> Option<String> {
    let global = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(g) = global {
        return Some(g.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let gemma = matches!(arch, Arch::Gemma2 | Arch::Gemma3);
    let module = match tail {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "post_attention_norm.weight" if gemma => "post_attention_layernorm.weight",
        "ffn_norm.weight" if gemma => "pre_feedforward_layernorm.weight",
        // Llama's "post_attention_layernorm" is the norm *before* the MLP.
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "post_ffw_norm.weight" if gemma => "post_feedforward_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{module}"))
}
