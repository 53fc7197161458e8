//! The `Sae` value: weights, architecture, and which hook of which model it reads.
//!
//! Orientation follows SAELens and Gemma Scope: `x · W_enc` with W_enc [d_in, d_sae], and the
//! decoder rows W_dec [d_sae, d_in] are the latent directions. Everything is float32 whatever the
//! file held, so encodings do not depend on the storage dtype.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

use super::Architecture;
use crate::hooks::HookPoint;
use crate::model::Model;

/// Where an SAE came from; `sae info` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaeFormat {
    /// Gemma Scope (Gemma 2): one `params.npz`, no config.
    GemmaScopeNpz,
    /// Gemma Scope 2 (Gemma 3): `params.safetensors` + `config.json`.
    GemmaScope2,
    /// SAELens ≥ 6: `cfg.json` (nested `metadata`) + `sae_weights.safetensors`.
    SaeLens,
    /// SAELens < 6: a flat `cfg.json` (`hook_point`, `activation_fn_str`, ...).
    SaeLensPre6,
    /// Built in code (`Sae::new`).
    InMemory,
}

impl fmt::Display for SaeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SaeFormat::GemmaScopeNpz => "gemma-scope-npz",
            SaeFormat::GemmaScope2 => "gemma-scope-2",
            SaeFormat::SaeLens => "saelens",
            SaeFormat::SaeLensPre6 => "saelens-pre-6.0",
            SaeFormat::InMemory => "in-memory",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Sae {
    w_enc: Tensor,
    w_dec: Tensor,
    b_enc: Tensor,
    b_dec: Tensor,
    arch: Architecture,
    /// Subtract b_dec from the input before encoding. SAELens applies this to every architecture
    /// (`process_sae_in`), so it is not a Standard-only flag: SAELens-trained JumpReLU SAEs
    /// default to true, Gemma Scope's are false.
    apply_b_dec_to_input: bool,
    /// The activation the SAE reads, e.g. `blocks.12.hook_resid_post`.
    pub hook: HookPoint,
    pub model_name: Option<String>,
    /// log10 feature density per latent [d_sae], when the file had one (SAELens `sparsity`).
    pub sparsity: Option<Tensor>,
    /// The file or directory it was loaded from, for error messages.
    pub source: PathBuf,
    pub format: SaeFormat,
    /// Other SAELens metadata (context_size, prepend_bos, dataset_path, ...), written back on save.
    pub extra_metadata: serde_json::Map<String, serde_json::Value>,
}

impl Sae {
    /// An SAE from its weights; checks that the shapes agree with each other.
    pub fn new(
        w_enc: Tensor,
        w_dec: Tensor,
        b_enc: Tensor,
        b_dec: Tensor,
        arch: Architecture,
        apply_b_dec_to_input: bool,
        hook: HookPoint,
    ) -> Result<Self> {
        let f32 = |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.contiguous()?) };
        let (d_in, d_sae) = w_enc.dims2().context("W_enc must be [d_in, d_sae]")?;
        let expect = |name: &str, t: &Tensor, want: &[usize], what: &str| -> Result<()> {
            if t.dims() != want {
                bail!("{name} has shape {:?}, expected {what} = {want:?}", t.dims());
            }
            Ok(())
        };
        expect("W_dec", &w_dec, &[d_sae, d_in], "[d_sae, d_in]")?;
        expect("b_enc", &b_enc, &[d_sae], "[d_sae]")?;
        expect("b_dec", &b_dec, &[d_in], "[d_in]")?;
        let arch = match arch {
            Architecture::JumpRelu { threshold } => {
                expect("threshold", &threshold, &[d_sae], "[d_sae]")?;
                Architecture::JumpRelu { threshold: f32(threshold)? }
            }
            other => other,
        };
        Ok(Self {
            w_enc: f32(w_enc)?,
            w_dec: f32(w_dec)?,
            b_enc: f32(b_enc)?,
            b_dec: f32(b_dec)?,
            arch,
            apply_b_dec_to_input,
            hook,
            model_name: None,
            sparsity: None,
            source: PathBuf::from("<in memory>"),
            format: SaeFormat::InMemory,
            extra_metadata: Default::default(),
        })
    }

    pub fn d_in(&self) -> usize {
        self.w_enc.dims()[0]
    }

    pub fn d_sae(&self) -> usize {
        self.w_enc.dims()[1]
    }

    pub fn arch(&self) -> &Architecture {
        &self.arch
    }

    pub fn apply_b_dec_to_input(&self) -> bool {
        self.apply_b_dec_to_input
    }

    /// [d_in, d_sae]
    pub fn w_enc(&self) -> &Tensor {
        &self.w_enc
    }

    /// [d_sae, d_in]: row i is latent i's direction in the model's activation space.
    pub fn w_dec(&self) -> &Tensor {
        &self.w_dec
    }

    /// [d_sae]
    pub fn b_enc(&self) -> &Tensor {
        &self.b_enc
    }

    /// [d_in]
    pub fn b_dec(&self) -> &Tensor {
        &self.b_dec
    }

    /// Latents of activations `x` [.., d_in] → [.., d_sae], as SAELens's `encode`:
    /// `pre = (x − b_dec·apply_b_dec_to_input) W_enc + b_enc`, then the architecture's activation.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let (x, lead) = self.flatten_rows(x)?;
        let x = if self.apply_b_dec_to_input { x.broadcast_sub(&self.b_dec)? } else { x };
        let pre = x.matmul(&self.w_enc)?.broadcast_add(&self.b_enc)?;
        let f = self.arch.activate(&pre, self.rescale_norms()?.as_ref())?;
        Ok(f.reshape(with_last(&lead, self.d_sae()))?)
    }

    /// Reconstruction from latents `f` [.., d_sae] → [.., d_in]: `f W_dec + b_dec` (TopK SAEs that
    /// rescale by decoder norm divide the latents by the norms first, as SAELens does).
    pub fn decode(&self, f: &Tensor) -> Result<Tensor> {
        let dims = f.dims().to_vec();
        if dims.last() != Some(&self.d_sae()) {
            bail!("SAE {}: latents have shape {dims:?}, expected [.., {}]", self.source.display(), self.d_sae());
        }
        let lead = &dims[..dims.len() - 1];
        let f = f.to_dtype(DType::F32)?.reshape(((), self.d_sae()))?;
        let f = match self.rescale_norms()? {
            // SAELens multiplies by the reciprocal rather than dividing; so does this.
            Some(n) => f.broadcast_mul(&n.recip()?)?,
            None => f,
        };
        let x = f.matmul(&self.w_dec)?.broadcast_add(&self.b_dec)?;
        Ok(x.reshape(with_last(lead, self.d_in()))?)
    }

    /// `decode(encode(x))`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.decode(&self.encode(x)?)
    }

    /// What the SAE misses: `x − forward(x)`, same shape as `x` (SAELens's error term, which is
    /// added back to keep a model exact while it runs through the SAE).
    pub fn reconstruction_error(&self, x: &Tensor) -> Result<Tensor> {
        Ok((x.to_dtype(DType::F32)? - self.forward(x)?)?)
    }

    /// Refuses activations of the wrong width before any matmul can fail obscurely.
    pub fn check_width(&self, d: usize) -> Result<()> {
        if d != self.d_in() {
            bail!("SAE {} has d_in {} but its input ({}) has width {d}", self.source.display(), self.d_in(), self.hook);
        }
        Ok(())
    }

    /// Checks that the model has this SAE's hook and that the hook's width is d_in.
    pub fn check_model(&self, model: &Model) -> Result<()> {
        let cfg = model.cfg();
        let name = || format!("SAE {}", self.source.display());
        let width = cfg.hook_width(self.hook).with_context(name)?;
        if width != self.d_in() {
            bail!(
                "{} has d_in {} but {} of {} has width {width}",
                name(),
                self.d_in(),
                self.hook,
                model.source.display()
            );
        }
        Ok(())
    }

    /// Decoder row norms [d_sae], only for TopK SAEs that select on norm-scaled activations.
    fn rescale_norms(&self) -> Result<Option<Tensor>> {
        match self.arch {
            Architecture::TopK { rescale_acts_by_decoder_norm: true, .. } => {
                Ok(Some(self.w_dec.sqr()?.sum(1)?.sqrt()?))
            }
            _ => Ok(None),
        }
    }

    /// `x` [.., d_in] as float32 rows [n, d_in], and its leading dimensions.
    fn flatten_rows(&self, x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
        let dims = x.dims().to_vec();
        let Some(&d) = dims.last() else {
            bail!("SAE {}: cannot encode a scalar", self.source.display());
        };
        self.check_width(d)?;
        let x = x.to_dtype(DType::F32)?.reshape(((), d))?;
        Ok((x, dims[..dims.len() - 1].to_vec()))
    }

    /// Records where a loaded SAE came from.
    pub(crate) fn with_source(mut self, source: PathBuf, format: SaeFormat) -> Self {
        self.source = source;
        self.format = format;
        self
    }
}

fn with_last(lead: &[usize], last: usize) -> Vec<usize> {
    let mut v = lead.to_vec();
    v.push(last);
    v
}
