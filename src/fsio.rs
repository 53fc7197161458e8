//! Atomic file output: a reader (or a later run after a kill or a power cut) sees either the old
//! file or the complete new one, never half of it.
//!
//! Every file knowlens writes whole (labels, corpus token files, checkpoints, logs rewritten on
//! resume) goes through `write_atomic`: the bytes go to a temporary file in the same directory
//! (so the rename never crosses a filesystem), which is synced and then renamed over the target;
//! the directory is synced after the rename. Things built in several steps (a checkpoint
//! directory, an unpacked download, a file streamed while it is hashed) are built under a name
//! from `temp_path` and moved into place with `move_into_place`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// Lower-case hexadecimal of bytes (a sha256 digest as people write it).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A name beside `path`, unique to this process and call: `.{file name}.{pid}.{n}.tmp`. Hidden
/// (leading dot) and ending in `.tmp`, so a leftover from a killed process is easy to recognise.
pub fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Checks that `name`, read from the index or pointer file `listed_in` (field `field`), is a plain
/// file name inside that file's directory: an edited index must not make knowlens read
/// `/dev/zero` or a file elsewhere on the machine.
pub fn plain_name<'a>(name: &'a str, listed_in: &Path, field: &str) -> Result<&'a str> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(std::path::Component::Normal(n)), None) if n.to_str() == Some(name) => Ok(name),
        _ => anyhow::bail!("{}: {field} {name:?} is not a plain file name", listed_in.display()),
    }
}

/// Creates (or truncates) `path`, writes `bytes` and syncs the file to disk. Not atomic by
/// itself: for files inside a directory that is moved into place afterwards.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    f.write_all(bytes).with_context(|| format!("{}: cannot write", path.display()))?;
    f.sync_all().with_context(|| format!("{}: cannot sync", path.display()))
}

/// Syncs a directory, so that renames inside it survive a power cut. Best effort: not every
/// platform can open a directory (a kill does not need it).
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes `bytes` to `path` atomically (see the module comment). The parent directory must
/// exist. On an error the temporary file is removed and `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = write_synced(&tmp, bytes).and_then(|()| {
        fs::rename(&tmp, path).with_context(|| format!("{}: cannot move {} into place", path.display(), tmp.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(parent(path));
    Ok(())
}

/// Renames the finished file or directory `from` to `to` (same filesystem), replacing what is
/// there: an existing directory at `to` is removed first (a rename cannot replace a non-empty
/// directory), an existing file is replaced atomically. A file at `from` is synced first; the
/// parent of `to` is synced after.
pub fn move_into_place(from: &Path, to: &Path) -> Result<()> {
    if from.is_file() {
        fs::File::open(from).and_then(|f| f.sync_all()).with_context(|| format!("{}: cannot sync", from.display()))?;
    }
    if to.is_dir() {
        fs::remove_dir_all(to).with_context(|| format!("{}: cannot remove the old copy", to.display()))?;
    }
    fs::rename(from, to).with_context(|| format!("{}: cannot move {} into place", to.display(), from.display()))?;
    sync_dir(parent(to));
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("knowlens-fsio-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let dir = scratch("write");
        let f = dir.join("a.json");
        write_atomic(&f, b"first").unwrap();
        write_atomic(&f, b"second").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        // A missing directory is an error that names the file; nothing is left behind.
        let err = format!("{:#}", write_atomic(&dir.join("no/such/b.json"), b"x").unwrap_err());
        assert!(err.contains("b.json"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temp_paths_are_unique_hidden_siblings() {
        let p = Path::new("/x/y/state.json");
        let (a, b) = (temp_path(p), temp_path(p));
        assert_ne!(a, b);
        assert_eq!(a.parent(), p.parent());
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".state.json.") && name.ends_with(".tmp"), "{name}");
    }

    #[test]
    fn move_into_place_replaces_a_directory() {
        let dir = scratch("move");
        let (old, new) = (dir.join("ckpt"), dir.join(".ckpt.tmp"));
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("stale"), b"1").unwrap();
        fs::create_dir_all(&new).unwrap();
        write_synced(&new.join("state.json"), b"{}").unwrap();
        move_into_place(&new, &old).unwrap();
        assert!(!new.exists() && !old.join("stale").exists());
        assert_eq!(fs::read(old.join("state.json")).unwrap(), b"{}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
