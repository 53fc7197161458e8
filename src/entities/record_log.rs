//! An append-only JSONL file of finished records, the checkpoint of a long labeling run.
//!
//! Each batch's records are appended and flushed together, so a run killed at any moment loses
//! at most the batch in flight. On reopening, a torn last line (the process died mid-write) is
//! cut off, and the keys already present are skipped: nothing is lost or duplicated.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub struct RecordStore {
    path: PathBuf,
    file: BufWriter<File>,
}

/// Something stored in a `RecordStore`, identified by a key.
pub trait Keyed {
    fn key(&self) -> String;
}

impl RecordStore {
    /// Opens (or creates) the store, repairs a torn tail, and returns the records already in it.
    pub fn open<T: DeserializeOwned + Keyed>(path: &Path) -> Result<(Self, Vec<T>)> {
        let mut records = Vec::new();
        if path.exists() {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mut good_len = 0usize;
            let mut seen = HashSet::new();
            for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
                let complete = line.ends_with(b"\n");
                match serde_json::from_slice::<T>(line) {
                    Ok(r) if complete => {
                        if !seen.insert(r.key()) {
                            bail!("{}:{}: duplicate record {:?}", path.display(), i + 1, r.key());
                        }
                        records.push(r);
                        good_len += line.len();
                    }
                    // A torn final line: the run stopped while writing it. Anything unreadable
                    // before the end is damage we must not paper over.
                    _ if good_len + line.len() == bytes.len() => {
                        log::warn!(
                            "{}: dropping an unfinished last line (the previous run stopped mid-write)",
                            path.display()
                        );
                    }
                    Err(e) => bail!("{}:{}: unreadable record: {e}", path.display(), i + 1),
                    Ok(_) => unreachable!("an incomplete line is always the last"),
                }
            }
            if good_len < bytes.len() {
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(good_len as u64)?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {} for appending", path.display()))?;
        Ok((Self { path: path.to_path_buf(), file: BufWriter::new(file) }, records))
    }

    /// Appends records and flushes them to the OS as one unit.
    pub fn append<T: Serialize>(&mut self, records: &[T]) -> Result<()> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct R {
        k: String,
    }
    impl Keyed for R {
        fn key(&self) -> String {
            self.k.clone()
        }
    }

    #[test]
    fn torn_tail_is_cut_and_appending_continues() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        std::fs::write(&p, "{\"k\":\"a\"}\n{\"k\":\"b\"}\n{\"k\":\"c").unwrap();
        let (mut s, got) = RecordStore::open::<R>(&p).unwrap();
        assert_eq!(got.len(), 2);
        s.append(&[R { k: "c".into() }]).unwrap();
        drop(s);
        let (_, got) = RecordStore::open::<R>(&p).unwrap();
        assert_eq!(got.iter().map(|r| r.k.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn damage_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        std::fs::write(&p, "{\"k\":\"a\"}\nnot json\n{\"k\":\"c\"}\n").unwrap();
        let err = RecordStore::open::<R>(&p).err().unwrap().to_string();
        assert!(err.contains("s.jsonl:2"), "{err}");
    }
}
