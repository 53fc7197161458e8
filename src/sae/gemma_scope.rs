//! Gemma Scope SAEs as Google publishes them.
//!
//! * Gemma Scope (Gemma 2): `layer_{L}/width_{W}/average_l0_{N}/params.npz` holding `W_enc`,
//!   `W_dec`, `b_enc`, `b_dec`, `threshold`, and nothing saying which hook it reads: the layer
//!   comes from the path and the site from the repository name (`gemma-scope-2b-pt-res`, `-mlp`,
//!   `-att`), as SAELens's loader does; `--hook` overrides.
//! * Gemma Scope 2 (Gemma 3): a folder with `params.safetensors` (lowercase `w_enc`, `w_dec`) and
//!   `config.json` naming the Hugging Face module it reads (`model.layers.10.output`).
//!
//! Both are JumpReLU SAEs that do not subtract b_dec from their input.

use std::io::{Read, Seek};
use std::path::{Component, Path};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::tensors::TensorFile;
use super::{Architecture, Sae, SaeFormat};
use crate::hooks::HookPoint;

/// A Gemma Scope `params.npz`.
pub(crate) fn load_npz(path: &Path, hook: Option<HookPoint>) -> Result<Sae> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    load_npz_from(std::io::BufReader::new(file), path, hook)
}

/// A Gemma Scope `params.npz` read from `reader`; `path` names it in errors and gives the hook.
pub(crate) fn load_npz_from<R: Read + Seek>(reader: R, path: &Path, hook: Option<HookPoint>) -> Result<Sae> {
    let hook = match hook.or_else(|| hook_from_path(path)) {
        Some(h) => h,
        None => bail!(
            "{}: cannot tell which hook this SAE reads (no layer_<L> in its path); pass --hook, e.g. blocks.12.hook_resid_post",
            path.display()
        ),
    };
    let tensors = TensorFile::new(path, super::npy::read_npz_from(reader, path)?);
    let mut sae = jumprelu_from(tensors, hook)?.with_source(path.to_path_buf(), SaeFormat::GemmaScopeNpz);
    sae.model_name = gemma_2_model_from_path(path);
    Ok(sae)
}

/// A Gemma Scope 2 folder. Without `config.json` (some early folders), the hook comes from the
/// path as for Gemma Scope.
pub(crate) fn load_folder(dir: &Path, hook: Option<HookPoint>) -> Result<Sae> {
    let cfg_path = dir.join("config.json");
    let config = if cfg_path.is_file() {
        Some(std::fs::read(&cfg_path).with_context(|| format!("{}: cannot read", cfg_path.display()))?)
    } else {
        None
    };
    let weights_path = dir.join("params.safetensors");
    if !weights_path.is_file() {
        bail!("{}: no such file", weights_path.display());
    }
    let weights = std::fs::read(&weights_path).with_context(|| format!("{}: cannot read", weights_path.display()))?;
    folder_from_bytes(dir, config.as_deref(), &weights, hook)
}

/// A Gemma Scope 2 folder's `config.json` (if any) and `params.safetensors`, already in memory.
pub(crate) fn folder_from_bytes(
    dir: &Path,
    config: Option<&[u8]>,
    weights: &[u8],
    hook: Option<HookPoint>,
) -> Result<Sae> {
    let (cfg_hook, model_name) = match config {
        Some(bytes) => parse_config(bytes, &dir.join("config.json"))?,
        None => (None, None),
    };
    let Some(hook) = hook.or(cfg_hook).or_else(|| hook_from_path(dir)) else {
        bail!(
            "{}: cannot tell which hook this SAE reads (no config.json with hf_hook_point_in); pass --hook",
            dir.display()
        );
    };
    let tensors = TensorFile::safetensors_bytes(weights, &dir.join("params.safetensors"))?;
    let mut sae = jumprelu_from(tensors, hook)?.with_source(dir.to_path_buf(), SaeFormat::GemmaScope2);
    sae.model_name = model_name;
    Ok(sae)
}

/// A Gemma Scope 2 `config.json`: the hook it names (if any) and the model; errors name `cfg_path`.
fn parse_config(bytes: &[u8], cfg_path: &Path) -> Result<(Option<HookPoint>, Option<String>)> {
    let cfg: Value =
        serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("{}: not valid JSON: {e}", cfg_path.display()))?;
    let bad = |what: String| anyhow::anyhow!("{}: {what}", cfg_path.display());
    match cfg.get("architecture").and_then(Value::as_str) {
        Some("jump_relu") => {}
        other => return Err(bad(format!("unknown architecture {other:?} (Gemma Scope 2 SAEs are 'jump_relu')"))),
    }
    if let Some(t) = cfg.get("type").and_then(Value::as_str).filter(|t| *t != "sae") {
        return Err(bad(format!("type '{t}' is not supported (only 'sae'; transcoders are not)")));
    }
    if cfg.get("affine_connection").and_then(Value::as_bool) == Some(true) {
        return Err(bad("affine_connection (a skip transcoder) is not supported".into()));
    }
    let hook = match cfg.get("hf_hook_point_in").and_then(Value::as_str) {
        Some(h) => Some(hook_from_gemma_scope_2(h).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    Ok((hook, cfg.get("model_name").and_then(Value::as_str).map(str::to_string)))
}

/// The five Gemma Scope tensors; shapes follow from W_enc.
fn jumprelu_from(mut t: TensorFile, hook: HookPoint) -> Result<Sae> {
    let w_enc = t.take(&["W_enc", "w_enc"], None)?;
    let Ok((d_in, d_sae)) = w_enc.dims2() else {
        bail!("{}: tensor 'W_enc' has shape {:?}, expected [d_in, d_sae]", t.path.display(), w_enc.dims());
    };
    let w_dec = t.take(&["W_dec", "w_dec"], Some((&[d_sae, d_in], "[d_sae, d_in]")))?;
    let b_enc = t.take(&["b_enc"], Some((&[d_sae], "[d_sae]")))?;
    let b_dec = t.take(&["b_dec"], Some((&[d_in], "[d_in]")))?;
    let threshold = t.take(&["threshold"], Some((&[d_sae], "[d_sae]")))?;
    let path = t.path.clone();
    t.finish()?;
    Sae::new(w_enc, w_dec, b_enc, b_dec, Architecture::JumpRelu { threshold }, false, hook)
        .with_context(|| path.display().to_string())
}

/// The hook a Gemma Scope path implies: `layer_{L}` (`layer_12/` or `layer_12_width_16k...`) gives
/// the block, the repository or folder names the site (`-mlp` / `mlp_out` → `hook_mlp_out`,
/// `-att` / `attn_out` → `attn.hook_z`, otherwise `hook_resid_post`). `None` without a layer, or
/// for transcoders, whose input is not a single hook.
pub fn hook_from_path(path: &Path) -> Option<HookPoint> {
    let parts: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let layer = parts.iter().rev().find_map(|p| {
        let digits: String = p.strip_prefix("layer_")?.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse::<usize>().ok()
    })?;
    let is = |f: &dyn Fn(&str) -> bool| parts.iter().any(|p| f(p));
    if is(&|p| p.contains("transcoder") || p.starts_with("clt")) {
        return None;
    }
    // Site tags are looked for only in release names, so an unrelated `my-att/` folder is no site.
    let site = |tag: &str, folder: &str| {
        is(&|p: &str| {
            let release =
                p.contains("gemma-scope") && (p.ends_with(&format!("-{tag}")) || p.contains(&format!("-{tag}-")));
            release || p.starts_with(folder)
        })
    };
    Some(if site("mlp", "mlp_out") {
        HookPoint::MlpOut(layer)
    } else if site("att", "attn_out") {
        HookPoint::AttnZ(layer)
    } else {
        HookPoint::ResidPost(layer)
    })
}

/// A Gemma Scope 2 `hf_hook_point_in` as a TransformerLens hook (SAELens's mapping).
pub fn hook_from_gemma_scope_2(hf: &str) -> Result<HookPoint> {
    let unknown = || anyhow::anyhow!("hf_hook_point_in '{hf}' is not a hook knowlens knows");
    let rest = hf.strip_prefix("model.layers.").ok_or_else(unknown)?;
    let (layer, site) = rest.split_once('.').ok_or_else(unknown)?;
    let l: usize = layer.parse().map_err(|_| unknown())?;
    Ok(match site {
        "output" => HookPoint::ResidPost(l),
        "self_attn.o_proj.input" => HookPoint::AttnZ(l),
        "post_feedforward_layernorm.output" => HookPoint::MlpOut(l),
        _ => return Err(unknown()),
    })
}

/// `gemma-scope-2b-pt-res` → `gemma-2-2b`, as SAELens names the model of a Gemma Scope release.
fn gemma_2_model_from_path(path: &Path) -> Option<String> {
    let s = path.to_string_lossy();
    let i = s.find("gemma-scope-")? + "gemma-scope-".len();
    let tail = &s[i..];
    let size = tail.split('-').next()?;
    if !["2b", "9b", "27b"].contains(&size) {
        return None;
    }
    let it = tail[size.len()..].starts_with("-it");
    Some(format!("gemma-2-{size}{}", if it { "-it" } else { "" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_from_gemma_scope_paths() {
        let h = |p: &str| hook_from_path(Path::new(p));
        assert_eq!(
            h("gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82/params.npz"),
            Some(HookPoint::ResidPost(12))
        );
        assert_eq!(
            h("/c/models--google--gemma-scope-2b-pt-mlp/snapshots/x/layer_3/width_16k/canonical"),
            Some(HookPoint::MlpOut(3))
        );
        assert_eq!(
            h("/home/matt/gemma-scope-9b-pt-att/layer_20/width_16k/average_l0_9/params.npz"),
            Some(HookPoint::AttnZ(20))
        );
        assert_eq!(h("gemma-scope-2-270m-pt/resid_post/layer_12_width_16k_l0_medium"), Some(HookPoint::ResidPost(12)));
        assert_eq!(h("gemma-scope-2-1b-pt/mlp_out_all/layer_7_width_262k_l0_big"), Some(HookPoint::MlpOut(7)));
        assert_eq!(h("gemma-scope-2-1b-pt/transcoder_all/layer_7_width_16k_l0_big"), None);
        assert_eq!(h("somewhere/params.npz"), None);
        assert_eq!(h("/data/my-att/layer_2/params.npz"), Some(HookPoint::ResidPost(2)));
    }

    #[test]
    fn hooks_from_gemma_scope_2_configs() {
        assert_eq!(hook_from_gemma_scope_2("model.layers.10.output").unwrap(), HookPoint::ResidPost(10));
        assert_eq!(hook_from_gemma_scope_2("model.layers.3.self_attn.o_proj.input").unwrap(), HookPoint::AttnZ(3));
        assert_eq!(
            hook_from_gemma_scope_2("model.layers.3.post_feedforward_layernorm.output").unwrap(),
            HookPoint::MlpOut(3)
        );
        assert!(hook_from_gemma_scope_2("model.layers.3.pre_feedforward_layernorm.output").is_err());
    }

    #[test]
    fn model_names_from_release_paths() {
        let m = |p: &str| gemma_2_model_from_path(Path::new(p));
        assert_eq!(m("gemma-scope-2b-pt-res/layer_1/width_16k/average_l0_102").as_deref(), Some("gemma-2-2b"));
        assert_eq!(m("gemma-scope-9b-it-res/layer_9/width_16k/average_l0_88").as_deref(), Some("gemma-2-9b-it"));
        assert_eq!(m("layer_1/width_16k/average_l0_102"), None);
    }
}
