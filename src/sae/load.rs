//! `Sae::load`: one entry point for every format, chosen from what is on disk.

use std::path::Path;

use anyhow::{bail, Result};

use super::{gemma_scope, saelens, Sae};
use crate::HookPoint;

const EXPECTED: &str = "expected a Gemma Scope params.npz, a Gemma Scope 2 folder (params.safetensors + config.json) \
                        or a SAELens directory (cfg.json + sae_weights.safetensors)";

impl Sae {
    /// Loads an SAE from a file or directory, telling the format from its contents:
    /// * `params.npz` (or any `.npz` / zip file): Gemma Scope;
    /// * a directory with `cfg.json`: SAELens (v6 or pre-6.0 config);
    /// * a directory with `params.safetensors`: Gemma Scope 2;
    /// * a directory with `params.npz`: Gemma Scope.
    ///
    /// A path to `cfg.json`, `sae_weights.safetensors` or `params.safetensors` means its folder.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_hook(path, None)
    }

    /// As `load`, reading at `hook` instead of the hook the files name or the path implies
    /// (Gemma Scope `params.npz` files name none).
    pub fn load_with_hook(path: &Path, hook: Option<HookPoint>) -> Result<Self> {
        if !path.exists() {
            bail!("{}: no such file or directory", path.display());
        }
        if path.is_file() {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let dir = path.parent().unwrap_or(Path::new("."));
            return match name.as_str() {
                saelens::CFG | saelens::WEIGHTS | saelens::SPARSITY => saelens::load(dir, hook),
                "params.safetensors" | "config.json" => gemma_scope::load_folder(dir, hook),
                _ if name.ends_with(".npz") || starts_like_zip(path) => gemma_scope::load_npz(path, hook),
                _ => bail!("{}: not an SAE file knowlens reads ({EXPECTED})", path.display()),
            };
        }
        if path.join(saelens::CFG).is_file() {
            saelens::load(path, hook)
        } else if path.join("params.safetensors").is_file() {
            gemma_scope::load_folder(path, hook)
        } else if path.join("params.npz").is_file() {
            gemma_scope::load_npz(&path.join("params.npz"), hook)
        } else {
            bail!("{}: no SAE here ({EXPECTED})", path.display())
        }
    }
}

/// The same loaders over files already in memory: what `load` runs once it has read the files,
/// for callers that hold the bytes (and for the fuzz targets). `path` / `dir` is where the
/// files would be: errors name it, and Gemma Scope takes the hook from it.
impl Sae {
    /// A Gemma Scope `params.npz` (stored or deflated zip).
    pub fn from_npz_bytes(bytes: &[u8], path: &Path, hook: Option<HookPoint>) -> Result<Self> {
        gemma_scope::load_npz_from(std::io::Cursor::new(bytes), path, hook)
    }

    /// A Gemma Scope 2 folder: `config.json` (optional) and `params.safetensors`.
    pub fn from_gemma_scope_2_bytes(
        dir: &Path,
        config: Option<&[u8]>,
        weights: &[u8],
        hook: Option<HookPoint>,
    ) -> Result<Self> {
        gemma_scope::folder_from_bytes(dir, config, weights, hook)
    }

    /// A SAELens directory: `cfg.json`, `sae_weights.safetensors` and `sparsity.safetensors` (optional).
    pub fn from_saelens_bytes(
        dir: &Path,
        cfg: &[u8],
        weights: &[u8],
        sparsity: Option<&[u8]>,
        hook: Option<HookPoint>,
    ) -> Result<Self> {
        saelens::from_bytes(dir, cfg, weights, sparsity, hook)
    }
}

/// Zip archives (npz) start with a local file header, "PK\x03\x04".
fn starts_like_zip(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"PK\x03\x04"
}
