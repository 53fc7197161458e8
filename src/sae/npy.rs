//! NumPy `.npz` archives (a zip of `.npy` files), as Gemma Scope publishes its SAEs.
//!
//! Written here rather than with candle's `read_npz` because some Gemma Scope files are
//! zip-*deflated* (`np.savez_compressed`), which candle's zip build cannot read, and because a
//! bad file must give an error naming the file and the array, not a panic. Data is decoded in
//! chunks straight into the f32 buffer, so a multi-GB entry is never held twice.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

/// Deflate cannot expand data by more than about 1032:1; an entry that claims more is a lie.
const MAX_DEFLATE_RATIO: u64 = 1100;

/// Every array of an `.npz` archive read from `reader` (a file, or a buffer in memory), keyed by
/// name without `.npy`; `path` names it in errors.
pub(crate) fn read_npz_from<R: Read + Seek>(reader: R, path: &Path) -> Result<HashMap<String, Tensor>> {
    let mut zip = zip::ZipArchive::new(reader)
        .map_err(|e| anyhow::anyhow!("{}: not a valid npz (zip) archive (truncated?): {e}", path.display()))?;
    let mut out = HashMap::new();
    for i in 0..zip.len() {
        let mut entry =
            zip.by_index(i).map_err(|e| anyhow::anyhow!("{}: zip entry {i} unreadable: {e}", path.display()))?;
        let name = entry.name().map(|n| n.to_string()).unwrap_or_else(|_| format!("entry {i}"));
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let (size, packed) = (entry.size(), entry.compressed_size());
        let stored = entry.compression() == zip::CompressionMethod::Stored;
        let bound = if stored { packed } else { packed.saturating_mul(MAX_DEFLATE_RATIO) };
        if size > bound {
            bail!(
                "{}: array '{key}': the zip entry claims {size} bytes from {packed} stored bytes (corrupt archive?)",
                path.display()
            );
        }
        let t = read_npy(&mut entry, size).with_context(|| format!("{}: array '{key}'", path.display()))?;
        out.insert(key, t);
    }
    Ok(out)
}

/// One `.npy` stream of `size` bytes (as its zip entry says): magic, version, header dict, then
/// C-order data. A header whose shape needs more bytes than the entry holds is refused before
/// anything is allocated.
fn read_npy<R: Read>(r: &mut R, size: u64) -> Result<Tensor> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).context("truncated before the .npy header")?;
    if &magic[..6] != b"\x93NUMPY" {
        bail!("not a .npy array (bad magic)");
    }
    let (header_len, prefix) = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).context("truncated .npy header")?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).context("truncated .npy header")?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => bail!(".npy format version {v} is not supported"),
    };
    if header_len as u64 > size.saturating_sub(prefix) {
        bail!(".npy header of {header_len} bytes is longer than the {size}-byte array (corrupt file?)");
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header).context("truncated .npy header")?;
    let header = String::from_utf8_lossy(&header);
    let h = Header::parse(&header)?;
    if h.fortran_order {
        bail!("stored in Fortran order; knowlens reads C-order arrays only");
    }
    let item = match h.descr.as_str() {
        "<f4" => Item::F32,
        "<f2" => Item::F16,
        other => bail!("dtype '{other}' is not supported (knowlens reads '<f4' and '<f2')"),
    };
    let n: usize = h.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).context("shape overflows")?;
    let data_bytes = size - prefix - header_len as u64;
    if (n as u64).checked_mul(item.size() as u64) != Some(data_bytes) {
        bail!(
            "shape {:?} needs {n} values of {} bytes but the array holds {data_bytes} bytes of data \
             (truncated or corrupt)",
            h.shape,
            item.size()
        );
    }
    let data =
        read_values(r, n, item).with_context(|| format!("data of shape {:?} is truncated or corrupt", h.shape))?;
    Ok(Tensor::from_vec(data, h.shape, &Device::Cpu)?)
}

#[derive(Clone, Copy)]
enum Item {
    F32,
    F16,
}

impl Item {
    fn size(self) -> usize {
        match self {
            Item::F32 => 4,
            Item::F16 => 2,
        }
    }
}

/// Reads `n` values in chunks; memory grows only as data actually arrives, so a lying entry
/// size cannot make it reserve more than a chunk ahead.
fn read_values<R: Read>(r: &mut R, n: usize, item: Item) -> Result<Vec<f32>> {
    const CHUNK: usize = 1 << 20;
    let size = item.size();
    let mut out = Vec::with_capacity(n.min(CHUNK));
    let mut buf = vec![0u8; n.min(CHUNK) * size];
    let mut left = n;
    while left > 0 {
        let take = left.min(CHUNK);
        let chunk = &mut buf[..take * size];
        r.read_exact(chunk)?;
        match item {
            Item::F32 => out.extend(chunk.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Item::F16 => out.extend(chunk.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        }
        left -= take;
    }
    Ok(out)
}

/// The Python dict literal of a .npy header:
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2304, 16384), }`.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl Header {
    fn parse(text: &str) -> Result<Self> {
        let bad = || anyhow::anyhow!("malformed .npy header {:?}", text.trim_end());
        let mut p = Lexer { s: text.trim().as_bytes(), i: 0 };
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        p.expect(b'{').ok_or_else(bad)?;
        loop {
            p.ws();
            if p.eat(b'}') {
                break;
            }
            let key = p.string().ok_or_else(bad)?;
            p.ws();
            p.expect(b':').ok_or_else(bad)?;
            p.ws();
            match key.as_str() {
                "descr" => descr = Some(p.string().ok_or_else(bad)?),
                "fortran_order" => fortran = Some(p.boolean().ok_or_else(bad)?),
                "shape" => shape = Some(p.tuple().ok_or_else(bad)?),
                _ => return Err(bad()),
            }
            p.ws();
            p.eat(b',');
        }
        Ok(Header {
            descr: descr.ok_or_else(bad)?,
            fortran_order: fortran.ok_or_else(bad)?,
            shape: shape.ok_or_else(bad)?,
        })
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.s.get(self.i) == Some(&c);
        self.i += hit as usize;
        hit
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }

    fn string(&mut self) -> Option<String> {
        let q = *self.s.get(self.i)?;
        if q != b'\'' && q != b'"' {
            return None;
        }
        let start = self.i + 1;
        let len = self.s[start..].iter().position(|&c| c == q)?;
        self.i = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec()).ok()
    }

    fn boolean(&mut self) -> Option<bool> {
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Some(v);
            }
        }
        None
    }

    /// `()`, `(5,)`, `(2304, 16384)`.
    fn tuple(&mut self) -> Option<Vec<usize>> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Some(dims);
            }
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            dims.push(std::str::from_utf8(&self.s[start..self.i]).ok()?.parse().ok()?);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                return Some(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_as_numpy_writes_them() {
        let h = Header::parse("{'descr': '<f4', 'fortran_order': False, 'shape': (2304, 16384), }    \n").unwrap();
        assert_eq!(h, Header { descr: "<f4".into(), fortran_order: false, shape: vec![2304, 16384] });
        assert_eq!(Header::parse("{'descr': '<f2', 'fortran_order': True, 'shape': (5,), }").unwrap().shape, vec![5]);
        assert_eq!(
            Header::parse("{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":()}").unwrap().shape,
            Vec::<usize>::new()
        );
        for bad in
            ["", "{", "{'descr': '<f4'}", "{'descr': <f4, 'fortran_order': False, 'shape': (1,)}", "{'shape': (1,2"]
        {
            assert!(Header::parse(bad).is_err(), "{bad}");
        }
    }

    fn parse(bytes: &[u8]) -> Result<Tensor> {
        read_npy(&mut &bytes[..], bytes.len() as u64)
    }

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let f = if fortran { "True" } else { "False" };
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend((h.len() as u16).to_le_bytes());
        v.extend(h.as_bytes());
        v.extend(data);
        v
    }

    #[test]
    fn reads_f4_and_f2_and_refuses_the_rest() {
        let data: Vec<u8> = [1f32, -2.5, 3.0, 0.25, 5.0, 6.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = parse(&npy("<f4", false, "(2, 3)", &data)).unwrap();
        assert_eq!(t.to_vec2::<f32>().unwrap(), vec![vec![1.0, -2.5, 3.0], vec![0.25, 5.0, 6.0]]);
        let half: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        let t = parse(&npy("<f2", false, "(2,)", &half)).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![1.5, -2.0]);
        let e = format!("{:#}", parse(&npy("<f4", true, "(2, 3)", &data)).unwrap_err());
        assert!(e.contains("Fortran order"), "{e}");
        let e = format!("{:#}", parse(&npy("<i8", false, "(3,)", &data)).unwrap_err());
        assert!(e.contains("'<i8'"), "{e}");
        let e = format!("{:#}", parse(&npy("<f4", false, "(2, 3)", &data[..20])).unwrap_err());
        assert!(e.contains("truncated"), "{e}");
    }
}
