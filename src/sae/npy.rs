//! NumPy `.npz` archives (a zip of `.npy` files), as Gemma Scope publishes its SAEs.
//!
//! Written here rather than with candle's `read_npz` because some Gemma Scope files are
//! zip-*deflated* (`np.savez_compressed`), which candle's zip build cannot read, and because a
//! bad file must give an error naming the file and the array, not a panic. Data is decoded in
//! chunks straight into the f32 buffer, so a multi-GB entry is never held twice.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

/// Every array of an `.npz` file, keyed by name without `.npy`.
pub(crate) fn read_npz(path: &Path) -> Result<HashMap<String, Tensor>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| anyhow::anyhow!("{}: not a valid npz (zip) archive (truncated?): {e}", path.display()))?;
    let mut out = HashMap::new();
    for i in 0..zip.len() {
        let mut entry =
            zip.by_index(i).map_err(|e| anyhow::anyhow!("{}: zip entry {i} unreadable: {e}", path.display()))?;
        let name = entry.name().map(|n| n.to_string()).unwrap_or_else(|_| format!("entry {i}"));
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let t = read_npy(&mut entry).with_context(|| format!("{}: array '{key}'", path.display()))?;
        out.insert(key, t);
    }
    Ok(out)
}

/// One `.npy` stream: magic, version, header dict, then C-order data.
fn read_npy<R: Read>(r: &mut R) -> Result<Tensor> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).context("truncated before the .npy header")?;
    if &magic[..6] != b"\x93NUMPY" {
        bail!("not a .npy array (bad magic)");
    }
    let header_len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).context("truncated .npy header")?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).context("truncated .npy header")?;
            u32::from_le_bytes(b) as usize
        }
        v => bail!(".npy format version {v} is not supported"),
    };
    if header_len > 1 << 20 {
        bail!(".npy header of {header_len} bytes is implausible (corrupt file?)");
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
    let data =
        read_values(r, n, item).with_context(|| format!("data of shape {:?} is truncated or corrupt", h.shape))?;
    Ok(Tensor::from_vec(data, h.shape, &Device::Cpu)?)
}

#[derive(Clone, Copy)]
enum Item {
    F32,
    F16,
}

fn read_values<R: Read>(r: &mut R, n: usize, item: Item) -> Result<Vec<f32>> {
    let size = match item {
        Item::F32 => 4,
        Item::F16 => 2,
    };
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; (1 << 20) * size];
    let mut left = n;
    while left > 0 {
        let take = left.min(1 << 20);
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
        let t = read_npy(&mut &npy("<f4", false, "(2, 3)", &data)[..]).unwrap();
        assert_eq!(t.to_vec2::<f32>().unwrap(), vec![vec![1.0, -2.5, 3.0], vec![0.25, 5.0, 6.0]]);
        let half: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        let t = read_npy(&mut &npy("<f2", false, "(2,)", &half)[..]).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![1.5, -2.0]);
        let e = format!("{:#}", read_npy(&mut &npy("<f4", true, "(2, 3)", &data)[..]).unwrap_err());
        assert!(e.contains("Fortran order"), "{e}");
        let e = format!("{:#}", read_npy(&mut &npy("<i8", false, "(3,)", &data)[..]).unwrap_err());
        assert!(e.contains("'<i8'"), "{e}");
        let e = format!("{:#}", read_npy(&mut &npy("<f4", false, "(2, 3)", &data[..20])[..]).unwrap_err());
        assert!(e.contains("truncated"), "{e}");
    }
}
