//! SAELens directories: `cfg.json` + `sae_weights.safetensors` (+ `sparsity.safetensors`).
//!
//! Two config layouts exist. SAELens ≥ 6 nests model facts under `metadata` (`hook_name`,
//! `model_name`) and always names the `architecture`; older configs are flat (`hook_point`,
//! `activation_fn_str`, `activation_fn_kwargs.k`, often no `architecture`). SAELens tells them
//! apart by `sae_lens_version` (≥ 6.0 means the new layout) and converts old ones with
//! `handle_pre_6_0_config`; this module does the same.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde_json::{json, Map, Value};

use super::tensors::TensorFile;
use super::{Architecture, Sae, SaeFormat};
use crate::hooks::HookPoint;

pub(crate) const CFG: &str = "cfg.json";
pub(crate) const WEIGHTS: &str = "sae_weights.safetensors";
pub(crate) const SPARSITY: &str = "sparsity.safetensors";

/// Keys of a flat (pre-6.0) config that describe model and data rather than the SAE: SAELens's
/// LLM_METADATA_KEYS minus the ones knowlens holds in fields. Kept and written back on save.
const METADATA_KEYS: &[&str] = &[
    "model_class_name",
    "model_from_pretrained_kwargs",
    "prepend_bos",
    "exclude_special_tokens",
    "neuronpedia_id",
    "context_size",
    "seqpos_slice",
    "dataset_path",
    "sae_lens_training_version",
];

/// What knowlens needs from a cfg.json, whichever layout it had.
struct Cfg {
    d_in: usize,
    d_sae: usize,
    arch: ArchCfg,
    apply_b_dec_to_input: bool,
    hook_name: String,
    model_name: Option<String>,
    metadata: Map<String, Value>,
    pre6: bool,
}

enum ArchCfg {
    Standard,
    JumpRelu,
    TopK { k: usize, rescale: bool },
}

pub(crate) fn load(dir: &Path, hook: Option<HookPoint>) -> Result<Sae> {
    let read = |name: &str| -> Result<Vec<u8>> {
        let path = dir.join(name);
        if !path.is_file() {
            bail!("{}: no such file", path.display());
        }
        std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))
    };
    let cfg = read(CFG)?;
    let weights = read(WEIGHTS)?;
    let sparsity = if dir.join(SPARSITY).exists() { Some(read(SPARSITY)?) } else { None };
    from_bytes(dir, &cfg, &weights, sparsity.as_deref(), hook)
}

/// A SAELens directory's files already in memory (`cfg.json`, `sae_weights.safetensors`, and
/// `sparsity.safetensors` if any); errors name the files as they would be in `dir`.
pub(crate) fn from_bytes(
    dir: &Path,
    cfg_bytes: &[u8],
    weights: &[u8],
    sparsity: Option<&[u8]>,
    hook: Option<HookPoint>,
) -> Result<Sae> {
    let cfg_path = dir.join(CFG);
    let raw: Value = serde_json::from_slice(cfg_bytes)
        .map_err(|e| anyhow::anyhow!("{}: not valid JSON: {e}", cfg_path.display()))?;
    let cfg = parse_cfg(&raw).map_err(|e| anyhow::anyhow!("{}: {e}", cfg_path.display()))?;
    let hook = match hook {
        Some(h) => h,
        None => cfg.hook_name.parse::<HookPoint>().map_err(|e| anyhow::anyhow!("{}: {e}", cfg_path.display()))?,
    };

    let (d_in, d_sae) = (cfg.d_in, cfg.d_sae);
    let mut t = TensorFile::safetensors_bytes(weights, &dir.join(WEIGHTS))?;
    let w_enc = t.take(&["W_enc"], Some((&[d_in, d_sae], "[d_in, d_sae]")))?;
    let w_dec = t.take(&["W_dec"], Some((&[d_sae, d_in], "[d_sae, d_in]")))?;
    let b_enc = t.take(&["b_enc"], Some((&[d_sae], "[d_sae]")))?;
    let b_dec = t.take(&["b_dec"], Some((&[d_in], "[d_in]")))?;
    let arch = match cfg.arch {
        ArchCfg::Standard => Architecture::Standard,
        ArchCfg::TopK { k, rescale } => Architecture::TopK { k, rescale_acts_by_decoder_norm: rescale },
        ArchCfg::JumpRelu => {
            // Older JumpReLU checkpoints store log θ; SAELens exponentiates it on load.
            let threshold = if t.has("threshold") || !t.has("log_threshold") {
                t.take(&["threshold"], Some((&[d_sae], "[d_sae]")))?
            } else {
                t.take(&["log_threshold"], Some((&[d_sae], "[d_sae]")))?.exp()?
            };
            Architecture::JumpRelu { threshold }
        }
    };
    // A scaling factor of all ones is a leftover SAELens drops; any other value would scale the
    // latents in a way SAELens ≥ 6 no longer supports either.
    if t.has("scaling_factor") {
        let s = t.take(&["scaling_factor"], None)?;
        if s.flatten_all()?.to_vec1::<f32>()?.iter().any(|&v| v != 1.0) {
            bail!(
                "{}: 'scaling_factor' is not all ones (a finetuning scaling factor, not supported)",
                t.path.display()
            );
        }
    }
    let weights_path = t.path.clone();
    t.finish()?;

    let mut sae = Sae::new(w_enc, w_dec, b_enc, b_dec, arch, cfg.apply_b_dec_to_input, hook)
        .with_context(|| weights_path.display().to_string())?;
    let format = if cfg.pre6 { SaeFormat::SaeLensPre6 } else { SaeFormat::SaeLens };
    sae = sae.with_source(dir.to_path_buf(), format);
    sae.model_name = cfg.model_name;
    sae.extra_metadata = cfg.metadata;

    if let Some(bytes) = sparsity {
        let mut s = TensorFile::safetensors_bytes(bytes, &dir.join(SPARSITY))?;
        sae.sparsity = Some(s.take(&["sparsity"], Some((&[d_sae], "[d_sae]")))?);
        s.finish()?;
    }
    Ok(sae)
}

fn parse_cfg(raw: &Value) -> Result<Cfg> {
    let Some(obj) = raw.as_object() else { bail!("expected a JSON object") };
    let meta = obj.get("metadata").and_then(Value::as_object);
    let version =
        obj.get("sae_lens_version").or_else(|| meta.and_then(|m| m.get("sae_lens_version"))).and_then(Value::as_str);
    let pre6 = !version.is_some_and(is_v6);

    let usize_of = |key: &str| -> Result<usize> {
        match obj.get(key).and_then(Value::as_u64) {
            Some(v) if v > 0 => Ok(v as usize),
            _ => bail!("'{key}' is missing or not a positive integer"),
        }
    };
    let d_in = usize_of("d_in")?;
    let d_sae = usize_of("d_sae")?;
    // Model facts: nested in v6, top level before (SAELens also reads a v6 file's top level
    // when its version is missing, so look in both).
    let fact = |key: &str| meta.and_then(|m| m.get(key)).or_else(|| obj.get(key)).filter(|v| !v.is_null());
    let hook_name = fact("hook_name")
        .or_else(|| fact("hook_point"))
        .and_then(Value::as_str)
        .context("no hook name (metadata.hook_name, hook_name or hook_point)")?
        .to_string();
    if let Some(h) = fact("hook_head_index").or_else(|| fact("hook_point_head_index")) {
        bail!("hook_head_index {h}: SAEs on a single attention head are not supported");
    }

    let arch_name = obj.get("architecture").and_then(Value::as_str);
    let topk_k = || -> Result<usize> {
        // v6 keeps k at the top level; pre-6.0 in activation_fn_kwargs.
        obj.get("k")
            .or_else(|| obj.get("activation_fn_kwargs").and_then(|a| a.get("k")))
            .and_then(Value::as_u64)
            .map(|k| k as usize)
            .context("a topk SAE without 'k'")
    };
    let rescale = obj.get("rescale_acts_by_decoder_norm").and_then(Value::as_bool).unwrap_or(false);
    let activation_fn = obj.get("activation_fn_str").or_else(|| obj.get("activation_fn")).and_then(Value::as_str);
    let arch = match (pre6, arch_name) {
        // SAELens ≥ 6 requires the field.
        (false, None) => bail!("no 'architecture' (required in SAELens ≥ 6 configs)"),
        // Pre-6.0: a topk activation with a k makes a TopK SAE whatever `architecture` says.
        (true, _) if activation_fn == Some("topk") && topk_k().is_ok() => ArchCfg::TopK { k: topk_k()?, rescale },
        (true, None) | (_, Some("standard")) => ArchCfg::Standard,
        (_, Some("jumprelu")) => ArchCfg::JumpRelu,
        (_, Some("topk")) => ArchCfg::TopK { k: topk_k().unwrap_or(100), rescale },
        (_, Some(other)) => bail!(
            "unknown architecture '{other}' (knowlens reads standard, jumprelu and topk; \
             SAELens saves batchtopk SAEs as jumprelu)"
        ),
    };
    if pre6 {
        if let Some(f) = activation_fn.filter(|f| !matches!(*f, "relu" | "topk")) {
            bail!("activation_fn '{f}' is not supported (relu or topk)");
        }
    }
    match obj.get("normalize_activations") {
        // SAELens applies nothing at inference for expected_average_only_in (the scale is folded
        // into the weights); pre-6.0 configs spell the two as false / true, or null.
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(Value::String(s)) if s == "none" || s == "expected_average_only_in" => {}
        Some(other) => bail!("normalize_activations {other} is not supported (none or expected_average_only_in)"),
    }
    if obj.get("finetuning_scaling_factor").and_then(Value::as_bool) == Some(true) {
        bail!("finetuning_scaling_factor is not supported");
    }

    // v6 metadata is kept whole (SAELens accepts any key there); from a flat config, the keys
    // SAELens itself would move into metadata.
    let mut metadata = Map::new();
    match (pre6, meta) {
        (false, Some(m)) => metadata.extend(m.iter().map(|(k, v)| (k.clone(), v.clone()))),
        _ => {
            for key in METADATA_KEYS {
                if let Some(v) = fact(key) {
                    metadata.insert(key.to_string(), v.clone());
                }
            }
        }
    }
    for key in ["model_name", "hook_name", "hook_head_index"] {
        metadata.remove(key);
    }
    Ok(Cfg {
        d_in,
        d_sae,
        arch,
        apply_b_dec_to_input: obj.get("apply_b_dec_to_input").and_then(Value::as_bool).unwrap_or(true),
        hook_name,
        model_name: fact("model_name").and_then(Value::as_str).map(str::to_string),
        metadata,
        pre6,
    })
}

/// "6.54.12", "6.0.0-rc.0": the layout SAELens ≥ 6 writes.
fn is_v6(version: &str) -> bool {
    version.split('.').next().and_then(|m| m.parse::<u32>().ok()).is_some_and(|m| m >= 6)
}

/// The version written into saved configs. SAELens treats a config without a version ≥ 6 as the
/// old flat layout, so a v6 config must carry one; an SAE already saved by SAELens ≥ 6 keeps its
/// own, anything else gets the first version of the layout written here.
const V6_LAYOUT: &str = "6.0.0";

impl Sae {
    /// Writes `dir/cfg.json`, `dir/sae_weights.safetensors` and, when known,
    /// `dir/sparsity.safetensors` in the SAELens ≥ 6 layout, float32, so that
    /// `sae_lens.SAE.load_from_disk(dir)` loads the same SAE.
    pub fn save_saelens(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        let mut tensors: Vec<(&str, Tensor)> = vec![
            ("W_enc", self.w_enc().clone()),
            ("W_dec", self.w_dec().clone()),
            ("b_enc", self.b_enc().clone()),
            ("b_dec", self.b_dec().clone()),
        ];
        if let Architecture::JumpRelu { threshold } = self.arch() {
            tensors.push(("threshold", threshold.clone()));
        }
        let path = dir.join(WEIGHTS);
        safetensors_save(&tensors, &path)?;
        if let Some(s) = &self.sparsity {
            safetensors_save(&[("sparsity", s.clone())], &dir.join(SPARSITY))?;
        }
        let cfg_path = dir.join(CFG);
        let text = serde_json::to_string_pretty(&self.saelens_cfg())? + "\n";
        std::fs::write(&cfg_path, text).with_context(|| format!("{}: cannot write", cfg_path.display()))
    }

    /// The SAELens ≥ 6 `cfg.json` of this SAE (`SAEConfig.to_dict()` fields).
    pub fn saelens_cfg(&self) -> Value {
        let mut metadata = self.extra_metadata.clone();
        if !metadata.get("sae_lens_version").and_then(Value::as_str).is_some_and(is_v6) {
            metadata.insert("sae_lens_version".into(), json!(V6_LAYOUT));
        }
        metadata.insert("model_name".into(), json!(self.model_name));
        metadata.insert("hook_name".into(), json!(self.hook.to_string()));
        metadata.insert("saved_by".into(), json!("knowlens"));
        let mut cfg = json!({
            "architecture": self.arch().name(),
            "d_in": self.d_in(),
            "d_sae": self.d_sae(),
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": self.apply_b_dec_to_input(),
            "normalize_activations": "none",
            // SAELens flattens [.., head, d_head] itself when told the SAE reads hook_z.
            "reshape_activations": if matches!(self.hook, HookPoint::AttnZ(_)) { "hook_z" } else { "none" },
            "metadata": metadata,
        });
        if let Architecture::TopK { k, rescale_acts_by_decoder_norm } = self.arch() {
            cfg["k"] = json!(k);
            cfg["rescale_acts_by_decoder_norm"] = json!(rescale_acts_by_decoder_norm);
        }
        cfg
    }
}

/// Writes float32 tensors in a fixed order (the safetensors writer sorts them by name), so the
/// same SAE always gives the same bytes.
fn safetensors_save(tensors: &[(&str, Tensor)], path: &Path) -> Result<()> {
    let map: std::collections::HashMap<&str, Tensor> = tensors.iter().cloned().collect();
    candle_core::safetensors::save(&map, path).with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre6_topk_and_v6_configs() {
        let pre6 = json!({"d_in": 4, "d_sae": 8, "hook_point": "blocks.1.hook_resid_pre",
                          "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 3}});
        let c = parse_cfg(&pre6).unwrap();
        assert!(c.pre6 && matches!(c.arch, ArchCfg::TopK { k: 3, rescale: false }) && c.apply_b_dec_to_input);
        let v6 = json!({"d_in": 4, "d_sae": 8, "architecture": "jumprelu", "apply_b_dec_to_input": false,
                        "metadata": {"sae_lens_version": "6.54.12", "hook_name": "blocks.0.hook_mlp_out", "context_size": 9}});
        let c = parse_cfg(&v6).unwrap();
        assert!(!c.pre6 && matches!(c.arch, ArchCfg::JumpRelu) && !c.apply_b_dec_to_input);
        assert_eq!(c.hook_name, "blocks.0.hook_mlp_out");
        assert_eq!(c.metadata["context_size"], json!(9));
        let gated = json!({"d_in": 4, "d_sae": 8, "architecture": "gated",
                           "metadata": {"sae_lens_version": "6.1.0", "hook_name": "blocks.0.hook_mlp_out"}});
        let e = parse_cfg(&gated).err().unwrap().to_string();
        assert!(e.contains("unknown architecture 'gated'"), "{e}");
        let no_arch = json!({"d_in": 4, "d_sae": 8, "metadata": {"sae_lens_version": "6.1.0", "hook_name": "x"}});
        assert!(parse_cfg(&no_arch).is_err());
    }
}
