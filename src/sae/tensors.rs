//! Named tensors read from one SAE file, taken out one by one with checks, so that every loader
//! reports a missing, mis-shaped or non-float tensor the same way: file, tensor name, problem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

pub(crate) struct TensorFile {
    pub path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl TensorFile {
    pub fn new(path: &Path, tensors: HashMap<String, Tensor>) -> Self {
        Self { path: path.to_path_buf(), tensors }
    }

    /// A safetensors file already in memory; `path` names it in errors.
    pub fn safetensors_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| anyhow::anyhow!("{}: not a readable safetensors file (truncated?): {e}", path.display()))?;
        Ok(Self::new(path, tensors))
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Removes and returns the first of `names` present (aliases such as `W_enc` / `w_enc`),
    /// as float32; `shape` (when given) must match exactly.
    pub fn take(&mut self, names: &[&str], shape: Option<(&[usize], &str)>) -> Result<Tensor> {
        let Some(name) = names.iter().find(|n| self.tensors.contains_key(**n)) else {
            let mut have: Vec<&str> = self.tensors.keys().map(|s| s.as_str()).collect();
            have.sort();
            bail!(
                "{}: tensor '{}' is missing (the file holds: {})",
                self.path.display(),
                names.join("' or '"),
                have.join(", ")
            );
        };
        let t = self.tensors.remove(*name).expect("checked above");
        if let Some((want, what)) = shape {
            if t.dims() != want {
                bail!("{}: tensor '{name}' has shape {:?}, expected {what} = {want:?}", self.path.display(), t.dims());
            }
        }
        to_f32(t).with_context(|| format!("{}: tensor '{name}'", self.path.display()))
    }

    /// Fails on tensors nobody took, as SAELens's strict `load_state_dict` does: an unexpected
    /// tensor (a gate, a skip connection) means an architecture knowlens would compute wrongly.
    pub fn finish(self) -> Result<()> {
        if !self.tensors.is_empty() {
            let mut left: Vec<&str> = self.tensors.keys().map(|s| s.as_str()).collect();
            left.sort();
            bail!(
                "{}: unexpected tensors {} (an architecture knowlens does not support?)",
                self.path.display(),
                left.join(", ")
            );
        }
        Ok(())
    }
}

/// Float storage → float32; anything else is refused.
pub(crate) fn to_f32(t: Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::F32 => Ok(t),
        DType::BF16 | DType::F16 | DType::F64 => Ok(t.to_dtype(DType::F32)?),
        other => bail!("dtype {other:?} is not a floating-point type"),
    }
}
